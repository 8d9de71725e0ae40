//! `devices`: the devices seen in the group and their last activity (only reads the store, so
//! it takes no lock and works while another `sync-cli` uses the data directory); `devices
//! members` asks the relay for the group's membership (checked on this device); `devices
//! revoke` and `devices promote` change it (admins only).

use clap::{Args, Subcommand};
use serde_json::json;
use sync_client::MemberInfo;
use sync_types::DeviceId;

use crate::device::{Ctx, stored_group};
use crate::fail::{Failure, from_store};
use crate::out::{self, outln};
use crate::show;

/// `devices` and its subcommands.
#[derive(Debug, Args)]
pub(crate) struct DevicesArgs {
    #[command(subcommand)]
    pub(crate) action: Option<DevicesAction>,
}

/// What `devices` does besides listing the devices seen.
#[derive(Debug, Subcommand)]
pub(crate) enum DevicesAction {
    /// The group's members as the relay's signed records say (checked here): admins, revoked
    /// devices, names.
    Members,
    /// Revoke a device (admins only): the group's keys rotate without it; the relay ends its
    /// sessions and refuses it, and nothing written from now on opens with its keys.
    Revoke {
        /// The device id (43 characters, as `devices members` prints it).
        device: String,
    },
    /// Make a device an admin too (admins only).
    Promote {
        /// The device id.
        device: String,
    },
}

fn parse_device(text: &str) -> Result<DeviceId, Failure> {
    text.trim().parse().map_err(|e| {
        Failure::bad_input(format!(
            "{text:?} is not a device id ({e}); `sync-cli devices members` lists them"
        ))
    })
}

/// Runs `devices` or one of its subcommands.
pub(crate) async fn run(ctx: &Ctx, args: DevicesArgs) -> Result<(), Failure> {
    match args.action {
        None => seen(ctx),
        Some(DevicesAction::Members) => {
            let members = with_client(ctx, |c| async move { c.members().await }).await?;
            print_members(ctx, &members)
        }
        Some(DevicesAction::Revoke { device }) => {
            let device = parse_device(&device)?;
            let epoch = with_client(ctx, |c| async move { c.revoke(&[device]).await }).await?;
            if ctx.json {
                out::json(&json!({ "revoked": device.to_string(), "epoch": epoch.0 }))?;
            } else {
                outln!(
                    "revoked {device}; the group's keys are now at epoch {}",
                    epoch.0
                )?;
            }
            Ok(())
        }
        Some(DevicesAction::Promote { device }) => {
            let device = parse_device(&device)?;
            let members = with_client(ctx, |c| async move {
                let mut admins: Vec<DeviceId> = c
                    .members()
                    .await?
                    .into_iter()
                    .filter(|m| m.admin)
                    .map(|m| m.device)
                    .collect();
                if !admins.contains(&device) {
                    admins.push(device);
                }
                c.set_admins(&admins).await?;
                c.members().await
            })
            .await?;
            if !ctx.json {
                outln!("{device} is now an admin")?;
            }
            print_members(ctx, &members)
        }
    }
}

/// `rotate`: a new key epoch for the group.
pub(crate) async fn rotate(ctx: &Ctx) -> Result<(), Failure> {
    let epoch = with_client(ctx, |c| async move { c.rotate().await }).await?;
    if ctx.json {
        out::json(&json!({ "epoch": epoch.0 }))?;
    } else {
        outln!("the group's keys are now at epoch {}", epoch.0)?;
    }
    Ok(())
}

/// Connects, runs `f` on the client, closes.
async fn with_client<T, F, Fut>(ctx: &Ctx, f: F) -> Result<T, Failure>
where
    F: FnOnce(sync_client::SyncClient) -> Fut,
    Fut: std::future::Future<Output = Result<T, sync_client::ClientError>>,
{
    let (_device, _group, relay) = ctx.ready()?;
    let client = ctx.connect_online(&relay, "").await?;
    let result = ctx
        .within_wait(&relay, "the request", "", f(client.clone()))
        .await;
    ctx.finish(&client, true).await;
    result
}

fn print_members(ctx: &Ctx, members: &[MemberInfo]) -> Result<(), Failure> {
    if ctx.json {
        let list: Vec<_> = members
            .iter()
            .map(|m| {
                json!({
                    "device_id": m.device.to_string(),
                    "name": m.name,
                    "admin": m.admin,
                    "revoked_at_epoch": m.revoked_at,
                    "this_device": m.this_device,
                })
            })
            .collect();
        return out::json(&json!({ "members": list }));
    }
    for m in members {
        let mut tags = Vec::new();
        if m.this_device {
            tags.push("this device".to_string());
        }
        if m.admin {
            tags.push("admin".to_string());
        }
        if let Some(e) = m.revoked_at {
            tags.push(format!("revoked at epoch {e}"));
        }
        let name = m.name.as_deref().unwrap_or("(name not readable)");
        outln!("  {}  {name}  {}", m.device, tags.join(", "))?;
    }
    Ok(())
}

/// Lists the senders of pulled blobs, and this device.
fn seen(ctx: &Ctx) -> Result<(), Failure> {
    let (store, device) = ctx.open_device()?;
    let (group_id, _) = stored_group(&store)?;
    let name = store.device_name().map_err(from_store)?.unwrap_or_default();
    let seen = store.devices(&group_id).map_err(from_store)?;
    let own = device.device_id();
    if ctx.json {
        let list: Vec<_> = seen
            .iter()
            .map(|d| {
                json!({
                    "device_id": d.device_id.to_string(),
                    "this_device": d.device_id == own,
                    "last_seen_ms": d.last_seen_ms,
                    "blobs": d.blobs,
                })
            })
            .collect();
        out::json(&json!({ "group_id": group_id.to_string(), "devices": list }))?;
        return Ok(());
    }
    outln!("group {group_id}")?;
    if !seen.iter().any(|d| d.device_id == own) {
        outln!("  {own}  this device ({name}), nothing sent yet")?;
    }
    for d in &seen {
        let who = if d.device_id == own {
            format!("this device ({name})")
        } else {
            "other device".to_string()
        };
        outln!(
            "  {}  {who}, {} blob(s), last active {}",
            d.device_id,
            d.blobs,
            show::utc(d.last_seen_ms)
        )?;
    }
    if seen.iter().all(|d| d.device_id == own) {
        outln!("(other devices appear here once you have pulled something from them)")?;
    }
    Ok(())
}
