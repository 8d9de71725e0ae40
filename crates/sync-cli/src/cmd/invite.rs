//! `invite`: a fresh invite string, QR code and short code for the group this device is in.
//! `pair --create` shares the new group the same way.

use std::time::Duration;

use clap::Args;
use serde_json::json;
use sync_client::GroupMaterial;
use sync_core::{Invite, InviteParams, ShortCode};
use sync_crypto::GroupDescriptor;
use sync_types::{GroupId, unix_ms};

use crate::device::{Ctx, rng, stored_group, stored_relays};
use crate::fail::{self, About, Failure, Kind, from_client_about, from_invite, from_store};
use crate::out::{self, outln};
use crate::relay::{self, Relays};
use crate::show;

/// Longest lifetime of an invite (the relay keeps mailbox entries at most an hour).
const MAX_INVITE_SECS: u64 = 3600;

/// How an invite is made and shown (`invite`, and `pair --create`).
#[derive(Debug, Args)]
pub(crate) struct ShareArgs {
    /// The relay: ENDPOINT_ID@HOST:PORT (as `sync-relay` prints it in its `dial:` lines) or its
    /// HTTP URL (e.g. http://relay.example:7441). Give it once per relay of the deployment (at
    /// most 9), in order of preference: devices dial the first one first and fail over to the
    /// next; every one goes into the invite (`pair --create` also keeps the list on this
    /// device, see `sync-cli relays`). Default: the relays this device uses.
    #[arg(long, value_name = "RELAY")]
    pub(crate) relay: Vec<String>,

    /// The first --relay's id (64 hex characters, as `sync-relay` prints it) to pin: the relay
    /// found at an http:// --relay must announce exactly this id, or the command refuses.
    /// Without it, an id read over plain http is trusted on first use (and printed).
    #[arg(long, value_name = "HEX", requires = "relay")]
    pub(crate) relay_id: Option<String>,

    /// Lifetime of the invite and the short code, in seconds (at most 3600).
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub(crate) expires_in: u64,

    /// Do not print the QR code.
    #[arg(long)]
    no_qr: bool,

    /// Withhold the group's history from the device that joins: it gets the key of the
    /// current epoch (and epoch 0's, which is the group secret), not those of the epochs
    /// between. By default this device grants them, sealed to the new device, once it sees
    /// it enroll.
    #[arg(long)]
    pub(crate) no_history: bool,
}

/// Prints a fresh invite for the device's group.
pub(crate) async fn run(ctx: &Ctx, args: &ShareArgs) -> Result<(), Failure> {
    check_expiry(args.expires_in)?;
    let (store, _device) = ctx.open_device()?;
    let (group_id, group) = stored_group(&store)?;
    let relays = if args.relay.is_empty() {
        stored_relays(&store)?
    } else {
        relay::resolve_all(&args.relay, args.relay_id.as_deref(), ctx.connect_timeout).await?
    };
    drop(store);
    let passphrase = matches!(group.descriptor, GroupDescriptor::Passphrase { .. });
    share(ctx, &relays, group_id, &group, args, passphrase).await
}

/// `--expires-in` is 1 to [`MAX_INVITE_SECS`] seconds.
pub(crate) fn check_expiry(secs: u64) -> Result<(), Failure> {
    if secs == 0 || secs > MAX_INVITE_SECS {
        return Err(Failure::bad_input(format!(
            "--expires-in must be 1 to {MAX_INVITE_SECS} seconds"
        )));
    }
    Ok(())
}

/// Prints an invite string naming every relay of `relays`, its QR code and a short code left
/// in the mailbox of the relay reached.
pub(crate) async fn share(
    ctx: &Ctx,
    relays: &Relays,
    group_id: GroupId,
    group: &GroupMaterial,
    args: &ShareArgs,
    passphrase: bool,
) -> Result<(), Failure> {
    let mut rng = rng()?;
    let now = unix_ms();
    // The short code needs the relay's mailbox; the invite needs the group's current epoch
    // (read fresh from the relay when it is reachable).
    let (client, online) = ctx.connect(relays).await?;
    if online {
        let _ = tokio::time::timeout(ctx.wait, client.members()).await;
    }
    let relay = relays.first();
    let made = Invite::create(
        &mut rng,
        InviteParams {
            relay_id: *relay.id.as_bytes(),
            relay_addrs: relay.addrs.clone(),
            group_id,
            group: group.descriptor.clone(),
            secret: (!passphrase).then(|| group.secret.clone()),
            ttl: Duration::from_secs(args.expires_in),
        },
        now,
    )
    .and_then(|invite| invite.with_further_relays(relays.rest()));
    let invite = match made {
        Ok(invite) => invite,
        Err(e) => {
            ctx.finish(&client, online).await;
            return Err(from_invite(e));
        }
    };
    let invite = match client.current_epoch_secret() {
        Some((epoch, secret)) => invite.with_epoch(epoch, &secret),
        None => invite,
    };
    let noted = ctx.open_device().and_then(|(store, _)| {
        store
            .note_issued_invite(*invite.invite_id(), !args.no_history)
            .map_err(from_store)
    });
    if let Err(e) = noted {
        ctx.finish(&client, online).await;
        return Err(e);
    }
    let payload = invite.to_qr_payload();
    let code = ShortCode::random(&mut rng);

    let put = if online {
        match tokio::time::timeout(ctx.wait, client.put_invite(&invite, &code)).await {
            Ok(r) => r.map_err(|e| from_client_about(e, &relays.to_string(), About::Invite)),
            Err(_) => Err(Failure::new(
                Kind::Unreachable,
                format!(
                    "relay at {relays} did not take the short code within --wait {}s",
                    ctx.wait.as_secs_f64()
                ),
            )),
        }
    } else {
        Err(fail::unreachable(&relays.to_string()))
    };
    // The short code is in the mailbox of the relay reached: the new device asks that one.
    let code_relay = ctx
        .relay_in_use()
        .and_then(|id| relays.iter().find(|r| r.id == id))
        .unwrap_or(relay);
    ctx.finish(&client, online).await;

    let expires = show::utc(invite.expires_at_ms());
    let pass_flag = if passphrase { " --passphrase" } else { "" };
    if ctx.json {
        out::json(&json!({
            "group_id": group_id.to_string(),
            "relay": code_relay.to_string(),
            "relays": relays.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "invite": payload.as_str(),
            "short_code": put.as_ref().ok().map(|()| code.to_string()),
            "expires_at_ms": invite.expires_at_ms(),
            "passphrase": passphrase,
        }))?;
    } else {
        outln!()?;
        outln!(
            "Invite (valid until {expires}; any device can use it until then; it {}):",
            if passphrase {
                "needs the passphrase too"
            } else {
                "holds the group key, share it privately"
            }
        )?;
        outln!("{}", payload.as_str())?;
        if !args.no_qr {
            match show::qr(payload.as_str()) {
                Some(qr) => outln!("\n{}", qr.trim_end_matches('\n'))?,
                None => outln!("(invite too long for a QR code)")?,
            }
        }
        if put.is_ok() {
            outln!()?;
            outln!("Short code (single use, valid until {expires}): {code}")?;
            outln!()?;
            outln!("On the new device (`--join -` asks for the code without echoing it):")?;
            outln!("  sync-cli init --name NAME")?;
            outln!("  sync-cli pair --join - --relay {code_relay}{pass_flag}")?;
            outln!(
                "or paste the invite string at the same prompt: sync-cli pair --join -{pass_flag}"
            )?;
        }
    }
    put.map_err(|f| {
        Failure::new(
            f.kind,
            format!(
                "{}; no short code was made (the invite string above works without it; `sync-cli invite` makes a new code later)",
                f.msg
            ),
        )
    })
}
