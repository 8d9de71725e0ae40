//! `pair`: create a group and share it (`--create`), or join one by invite string or short code
//! (`--join`), with or without a passphrase.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;
use sync_client::{GroupMaterial, Transport as _};
use sync_core::{Invite, QR_PREFIX, ShortCode};
use sync_crypto::{GroupDescriptor, GroupSecret};
use sync_types::{GroupId, unix_ms};
use zeroize::Zeroizing;

use super::invite::{ShareArgs, check_expiry, share};
use crate::device::{Ctx, remember_invite, rng, save_membership, stored_relays_opt};
use crate::fail::{Failure, Kind, from_fetch, from_invite, from_store};
use crate::out::{self, note, outln};
use crate::relay::{self, Relays};
use crate::secret;

/// Arguments of `pair`.
#[derive(Debug, Args)]
pub(crate) struct PairArgs {
    /// Create a new group on this device and print an invite, a QR code and a short code. The
    /// group syncs through the --relay relays (all of them go into the invite), else through
    /// the relays already configured with `sync-cli relays add`.
    #[arg(long, conflicts_with = "join", required_unless_present = "join")]
    create: bool,

    /// Join the group of an invite string (`0ksync1:…`) or a short code (XXXX-XXXX-XXXX-XXXX;
    /// needs --relay). The device keeps every relay the invite names, in its order. Write `--join -` (or `--join` alone) to keep it off the command line:
    /// it is then prompted without echo on a terminal, or read from the first line of standard
    /// input. An invite of a group without passphrase holds the group key: an invite given
    /// here is visible to other users (`ps`) and kept in the shell history.
    #[arg(
        long,
        value_name = "INVITE_OR_CODE",
        num_args = 0..=1,
        default_missing_value = "-"
    )]
    join: Option<String>,

    /// Protect the new group with a passphrase (--create), or give the group's passphrase
    /// (--join; asked anyway when the invite needs it). Never write the passphrase here: it
    /// is prompted without echo, or read from standard input / --passphrase-file.
    #[arg(long, num_args = 0..=1, value_name = "NO_VALUE")]
    passphrase: Option<Option<String>>,

    /// Read the passphrase from the first line of FILE (`-` = standard input).
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,

    #[command(flatten)]
    share: ShareArgs,
}

impl PairArgs {
    /// Whether a passphrase was asked for (`--passphrase` or `--passphrase-file`).
    fn wants_passphrase(&self) -> bool {
        self.passphrase.is_some() || self.passphrase_file.is_some()
    }

    /// The passphrase, from --passphrase-file, a hidden prompt or standard input.
    fn read_passphrase(&self, confirm: bool) -> Result<Zeroizing<String>, Failure> {
        secret::read_passphrase(self.passphrase_file.as_deref(), confirm)
    }
}

/// Creates a group (`--create`) or joins one (`--join`).
pub(crate) async fn run(ctx: &Ctx, args: &PairArgs) -> Result<(), Failure> {
    if matches!(args.passphrase, Some(Some(_))) {
        return Err(Failure::bad_input(
            "refusing a passphrase on the command line (other users can read it): write `--passphrase` alone to be prompted, or use --passphrase-file FILE",
        ));
    }
    match &args.join {
        Some(join) => join_group(ctx, join, args).await,
        None => create_group(ctx, args).await,
    }
}

/// RAM of this machine (for the passphrase KDF tier), 4 GiB if unknown.
fn ram_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(4 << 30, |kb| kb.saturating_mul(1024))
}

async fn create_group(ctx: &Ctx, args: &PairArgs) -> Result<(), Failure> {
    let (store, _device) = ctx.open_device()?;
    if let Some(id) = store.group_ids().map_err(from_store)?.first() {
        return Err(Failure::bad_input(format!(
            "this device is already in group {id}: use `sync-cli invite` to add a device"
        )));
    }
    let relays = relays_for(
        ctx,
        &args.share,
        &store,
        "--relay is needed: ENDPOINT_ID@HOST:PORT from the relay's `dial:` line, or its http:// URL (once per relay of the deployment)",
    )
    .await?;
    check_expiry(args.share.expires_in)?;
    let mut rng = rng()?;
    let with_passphrase = args.wants_passphrase();
    let group = if with_passphrase {
        let passphrase = args.read_passphrase(true)?;
        let descriptor = GroupDescriptor::new_passphrase(&mut rng, ram_bytes());
        let secret = descriptor
            .derive_secret(&passphrase)
            .map_err(|e| Failure::new(Kind::Other, format!("passphrase derivation failed: {e}")))?;
        GroupMaterial { descriptor, secret }
    } else {
        GroupMaterial {
            descriptor: GroupDescriptor::Random,
            secret: GroupSecret::random(&mut rng),
        }
    };
    let group_id = save_membership(&store, &group, &relays)?;
    drop(store);
    if !ctx.json {
        let kind = if with_passphrase {
            "passphrase"
        } else {
            "random key"
        };
        outln!("Group created ({kind}): {group_id}")?;
    }
    share(ctx, &relays, group_id, &group, &args.share, with_passphrase).await
}

/// The invite or short code: from argv, or (`-`) from a hidden prompt / standard input.
/// The relays named on the command line (resolved), else those the device stores; `missing`
/// says what to do when there are neither.
async fn relays_for(
    ctx: &Ctx,
    share: &ShareArgs,
    store: &sync_client::Store,
    missing: &str,
) -> Result<Relays, Failure> {
    if share.relay.is_empty() {
        return stored_relays_opt(store)?.ok_or_else(|| Failure::bad_input(missing.to_owned()));
    }
    relay::resolve_all(&share.relay, share.relay_id.as_deref(), ctx.connect_timeout).await
}

fn join_input(arg: &str) -> Result<Zeroizing<String>, Failure> {
    if arg.trim() == "-" {
        return secret::read_join_input();
    }
    if arg.trim().starts_with(QR_PREFIX) {
        note!(
            "sync-cli: warning: an invite on the command line is visible to other users (ps) and kept in the shell history; use `--join -` to paste it at a hidden prompt"
        );
    }
    Ok(Zeroizing::new(arg.to_string()))
}

async fn join_group(ctx: &Ctx, arg: &str, args: &PairArgs) -> Result<(), Failure> {
    let (mut store, device) = ctx.open_device()?;
    let input = join_input(arg)?;
    let input = input.trim();
    let in_group = |group_id: Option<GroupId>| -> Result<(), Failure> {
        let existing = store.group_ids().map_err(from_store)?;
        match existing.iter().find(|g| Some(**g) != group_id) {
            Some(other) => Err(Failure::bad_input(format!(
                "this device is already in group {other} (use another --data-dir for a second group){}",
                if group_id.is_none() {
                    "; the short code was not used"
                } else {
                    ""
                }
            ))),
            None => Ok(()),
        }
    };
    // Everything local comes first (the group check, a requested passphrase): a short code is
    // single use, and fetching it uses it up.
    let invite_text = input.starts_with(QR_PREFIX);
    let code = if invite_text {
        None
    } else {
        let code = ShortCode::parse(input).map_err(|e| {
            Failure::bad_input(format!(
                "`--join` takes an invite (0ksync1:…) or a short code XXXX-XXXX-XXXX-XXXX: {e}"
            ))
        })?;
        in_group(None)?;
        Some(code)
    };
    let mut passphrase = if args.wants_passphrase() {
        Some(args.read_passphrase(false)?)
    } else {
        None
    };
    let invite = match code {
        None => {
            let invite = Invite::from_qr_payload(input).map_err(from_invite)?;
            invite.check(unix_ms()).map_err(from_invite)?;
            invite
        }
        Some(code) => {
            let relays = relays_for(
                ctx,
                &args.share,
                &store,
                "joining by short code needs --relay (the relay shown on the inviting device)",
            )
            .await?;
            let t = ctx.transport(&relays).await?;
            let fetched =
                sync_client::fetch_invite(t.as_ref(), &device, &code, ctx.connect_timeout * 2)
                    .await;
            t.shutdown().await;
            fetched.map_err(|e| from_fetch(e, &relays.to_string()))?
        }
    };
    // Every relay the invite names, in its order (the inviting device's preference).
    let mut listed = Vec::new();
    let mut relays = invite.relays();
    relays.retain(|r| {
        let new = !listed.contains(&r.id);
        listed.push(r.id);
        new
    });
    let relays = Relays::new(relays)
        .map_err(|e| Failure::bad_input(format!("the invite's relay list cannot be used: {e}")))?;
    let group_id = invite.group_id();
    in_group(Some(group_id))?;
    if matches!(invite.group(), GroupDescriptor::Passphrase { .. }) && passphrase.is_none() {
        passphrase = Some(args.read_passphrase(false)?);
    }
    let joined = invite
        .into_group(passphrase.as_deref().map(|p| p.as_str()), unix_ms())
        .map_err(from_invite)?;
    let saved = save_membership(&store, &joined.group, &relays)?;
    remember_invite(&mut store, saved, &joined)?;
    drop(store);

    let (client, online) = ctx.connect(&relays).await?;
    ctx.finish(&client, online).await;
    let in_use = ctx
        .relay_in_use()
        .and_then(|id| relays.iter().find(|r| r.id == id))
        .unwrap_or(relays.first());
    if ctx.json {
        out::json(&json!({
            "group_id": group_id.to_string(),
            "relay": in_use.to_string(),
            "relays": relays.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "device_id": device.device_id().to_string(),
            "online": online,
        }))?;
    } else {
        outln!("Joined group {group_id}")?;
        if relays.len() > 1 {
            outln!(
                "Relays (in order; `sync-cli relays list`): {}",
                relays
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )?;
        }
        if online {
            outln!("Relay {in_use}: connected. Try `sync-cli pull` or `sync-cli watch`.")?;
        } else {
            note!(
                "sync-cli: relay unreachable at {relays} right now; this device syncs once it is reachable"
            );
        }
    }
    Ok(())
}
