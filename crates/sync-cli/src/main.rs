//! `sync-cli`: a 0k-sync device on the command line — identity, pairing (invite string, QR
//! code, short code, passphrase), push / pull / watch, status, devices, and an offline outbox.
//!
//! Every command works on one data directory (`--data-dir`): a SQLite store, mode 0600 in a
//! 0700 directory, holding the device key, the group, the relay, the per-relay cursor and the
//! outbox, used by one `sync-cli` process at a time (a lock file, see `lock`). See
//! `sync-cli --help` for the exit codes.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod fail;
mod lock;
mod out;
mod relay;
mod secret;
mod show;

use std::io::{IsTerminal as _, Read as _};
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use serde_json::json;
use sync_client::{
    Blob, ClientConfig, ClientError, ClientOptions, GroupChoice, GroupMaterial, IrohConfig,
    IrohTransport, PullBatch, STORE_FILE_NAME, Store, StoreLocation, StoreSync, StreamExt,
    SyncClient, SyncEvent, Transport, WatchEvent, WatchOptions,
};
use sync_core::{ConnectionStatus, Invite, InviteParams, QR_PREFIX, ShortCode};
use sync_crypto::{DeviceKey, GroupDescriptor, GroupSecret};
use sync_types::{Cursor, GroupId, unix_ms};
use zeroize::Zeroizing;

use crate::fail::{
    About, EXIT_CODES, Failure, Kind, from_client, from_client_about, from_fetch, from_invite,
    from_store,
};
use crate::out::{note, outln};
use crate::relay::RelayAddr;

/// Store setting holding the relay this device syncs through (`ID@HOST:PORT,…`).
const RELAY_SETTING: &str = "relay";
/// Name of the data directory under the platform data dir.
const DATA_DIR_NAME: &str = "0k-sync";
/// Longest lifetime of an invite (the relay keeps mailbox entries at most an hour).
const MAX_INVITE_SECS: u64 = 3600;
/// Longest --connect-timeout / --wait accepted: a day (larger values would overflow the
/// clock arithmetic, and no command should wait that long anyway).
const MAX_WAIT_SECS: f64 = 86_400.0;

/// A 0k-sync device on the command line: end-to-end encrypted sync of small blobs between your
/// devices through a relay that cannot read them.
///
/// Start: `sync-cli init --name laptop`, then `sync-cli pair --create --relay ID@HOST:PORT` on
/// the first device and `sync-cli pair --join - --relay ID@HOST:PORT` on the next one (it asks
/// for the short code or invite without echoing it).
///
/// Passphrases are never taken from the command line (other users can see it): they are
/// prompted without echo on a terminal, read from the first line of standard input when it is
/// not a terminal, or from the first line of --passphrase-file FILE.
///
/// One sync-cli process at a time per data directory: while one runs (e.g. `watch`), another
/// command on the same directory exits 10 at once (`devices` excepted, it only reads).
#[derive(Debug, Parser)]
#[command(name = "sync-cli", version, max_term_width = 100, after_help = EXIT_CODES)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Args)]
struct Global {
    /// Data directory of this device [default: $XDG_DATA_HOME/0k-sync, else
    /// ~/.local/share/0k-sync].
    #[arg(long, global = true, env = "SYNC_CLI_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// Print data as JSON (one document; `watch` prints one JSON object per line).
    #[arg(long, global = true)]
    json: bool,

    /// Seconds to try to reach the relay before working offline (at most 86400).
    #[arg(
        long,
        global = true,
        env = "SYNC_CLI_CONNECT_TIMEOUT",
        value_name = "SECS",
        default_value_t = 5.0
    )]
    connect_timeout: f64,

    /// Seconds to wait for the relay: to acknowledge pushes (push, flush, and queued pushes
    /// sent by any command that connects), to answer a pull or take a short code (at most
    /// 86400).
    #[arg(
        long,
        global = true,
        env = "SYNC_CLI_WAIT",
        value_name = "SECS",
        default_value_t = 30.0
    )]
    wait: f64,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Create this device's identity (key and name) in the data directory; again to rename.
    #[command(after_help = EXIT_CODES)]
    Init {
        /// A name for this device (shown by `devices` on this device).
        #[arg(long)]
        name: String,
    },
    /// Create a group and share it (--create), or join one (--join).
    #[command(after_help = EXIT_CODES)]
    Pair(PairArgs),
    /// A fresh invite and short code for the group this device is in (for one more device).
    #[command(after_help = EXIT_CODES)]
    Invite(ShareArgs),
    /// Seal and send TEXT, or a file (--file F, `-` for standard input). Queued on this device
    /// when the relay is unreachable, and sent by the next command that connects.
    #[command(after_help = EXIT_CODES)]
    Push {
        /// The text to send.
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        text: Option<String>,
        /// Send this file's bytes (`-` reads standard input).
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// Print what the other devices sent since the last pull.
    #[command(after_help = EXIT_CODES)]
    Pull {
        /// Re-read everything after this cursor instead (this device's own blobs included); the
        /// next plain `pull` is not affected.
        #[arg(long, value_name = "N")]
        after_cursor: Option<u64>,
        /// Write only the blobs' bytes, concatenated, to standard output (e.g. a file).
        #[arg(long, conflicts_with = "json")]
        raw: bool,
    },
    /// Print arrivals as they come, until Ctrl-C or SIGTERM (exit 0).
    #[command(after_help = EXIT_CODES)]
    Watch,
    /// Device, group, relay, whether the relay answers now, cursor, pushes waiting to be sent.
    #[command(after_help = EXIT_CODES)]
    Status,
    /// Devices seen in the group (senders of pulled blobs, and this device), last activity.
    /// Only reads: it works while another sync-cli (e.g. `watch`) uses the data directory.
    #[command(after_help = EXIT_CODES)]
    Devices,
    /// Send the queued pushes now and wait for the relay to acknowledge them.
    #[command(after_help = EXIT_CODES)]
    Flush,
}

#[derive(Debug, Args)]
struct PairArgs {
    /// Create a new group on this device and print an invite, a QR code and a short code.
    #[arg(long, conflicts_with = "join", required_unless_present = "join")]
    create: bool,

    /// Join the group of an invite string (`0ksync1:…`) or a short code (XXXX-XXXX-XXXX-XXXX;
    /// needs --relay). Write `--join -` (or `--join` alone) to keep it off the command line:
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

#[derive(Debug, Args)]
struct ShareArgs {
    /// The relay: ENDPOINT_ID@HOST:PORT (as `sync-relay` prints it in its `dial:` lines) or its
    /// HTTP URL (e.g. http://relay.example:7441). Default: the relay this device uses.
    #[arg(long, value_name = "RELAY")]
    relay: Option<String>,

    /// Lifetime of the invite and the short code, in seconds (at most 3600).
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    expires_in: u64,

    /// Do not print the QR code.
    #[arg(long)]
    no_qr: bool,
}

/// Settings every command uses.
struct Ctx {
    data_dir: PathBuf,
    json: bool,
    connect_timeout: Duration,
    wait: Duration,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let ctx = match make_ctx(&cli.global) {
        Ok(c) => c,
        Err(f) => return report(&f),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            note!("sync-cli: cannot start the async runtime: {e}");
            return ExitCode::from(Kind::Other.code());
        }
    };
    match runtime.block_on(run(&ctx, cli.cmd)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => report(&f),
    }
}

fn report(f: &Failure) -> ExitCode {
    // A reader that went away (`| head`) wants no more output, not even an error line.
    if f.kind != Kind::OutputClosed {
        note!("sync-cli: {}", f.msg);
    }
    ExitCode::from(f.kind.code())
}

/// Logs (none by default: every failure is reported as one line; `RUST_LOG=debug` to see them)
/// go to stderr, never secrets or data.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn secs(what: &str, v: f64) -> Result<Duration, Failure> {
    Some(v)
        .filter(|v| *v <= MAX_WAIT_SECS)
        .and_then(|v| Duration::try_from_secs_f64(v).ok())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            Failure::new(
                Kind::BadInput,
                format!(
                    "--{what} must be a positive number of seconds, at most {MAX_WAIT_SECS} (a day)"
                ),
            )
        })
}

fn make_ctx(g: &Global) -> Result<Ctx, Failure> {
    Ok(Ctx {
        data_dir: g.data_dir.clone().unwrap_or_else(default_data_dir),
        json: g.json,
        connect_timeout: secs("connect-timeout", g.connect_timeout)?,
        wait: secs("wait", g.wait)?,
    })
}

/// `$XDG_DATA_HOME/0k-sync`, else `$HOME/.local/share/0k-sync`, else `./0k-sync`.
fn default_data_dir() -> PathBuf {
    let from_env = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    if let Some(xdg) = from_env("XDG_DATA_HOME") {
        return xdg.join(DATA_DIR_NAME);
    }
    if let Some(home) = from_env("HOME") {
        return home.join(".local").join("share").join(DATA_DIR_NAME);
    }
    PathBuf::from(DATA_DIR_NAME)
}

async fn run(ctx: &Ctx, cmd: Cmd) -> Result<(), Failure> {
    // Held until the command is done. `init` locks once it has made the directory; `devices`
    // only reads; without a store the command fails as "not initialised" anyway.
    let _lock = match cmd {
        Cmd::Init { .. } | Cmd::Devices => None,
        _ if ctx.data_dir.join(STORE_FILE_NAME).exists() => Some(lock::lock(&ctx.data_dir)?),
        _ => None,
    };
    match cmd {
        Cmd::Init { name } => init(ctx, &name),
        Cmd::Pair(args) => {
            if let Some(join) = &args.join {
                pair_join(ctx, join, &args).await
            } else {
                pair_create(ctx, &args).await
            }
        }
        Cmd::Invite(share) => invite(ctx, &share).await,
        Cmd::Push { text, file } => push(ctx, text, file.as_deref()).await,
        Cmd::Pull { after_cursor, raw } => pull(ctx, after_cursor, raw).await,
        Cmd::Watch => watch(ctx).await,
        Cmd::Status => status(ctx).await,
        Cmd::Devices => devices(ctx),
        Cmd::Flush => flush(ctx).await,
    }
}

// ----- local state -----

fn rng() -> Result<ChaCha20Rng, Failure> {
    let mut seed = Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut_slice())
        .map_err(|_| Failure::new(Kind::Other, "the OS random number generator failed"))?;
    Ok(ChaCha20Rng::from_seed(*seed))
}

fn store_err(e: sync_client::StoreError) -> Failure {
    from_store(e)
}

/// The device's store; `NotInitialised` if `init` never ran in this data dir.
fn open_device(ctx: &Ctx) -> Result<(Store, DeviceKey), Failure> {
    let not_init = || {
        Failure::new(
            Kind::NotInitialised,
            format!(
                "no device in {}: run `sync-cli init --name NAME` first (or pass the right --data-dir)",
                ctx.data_dir.display()
            ),
        )
    };
    if !ctx.data_dir.join(STORE_FILE_NAME).exists() {
        return Err(not_init());
    }
    let store = Store::open_dir(&ctx.data_dir, StoreSync::Normal).map_err(store_err)?;
    let device = store
        .device_key()
        .map_err(store_err)?
        .ok_or_else(not_init)?;
    Ok((store, device))
}

/// The group of this device (the CLI keeps one).
fn stored_group(store: &Store) -> Result<(GroupId, GroupMaterial), Failure> {
    let group = store.select_group(None).map_err(store_err)?;
    Ok((group.keys().group_id(), group))
}

fn stored_relay(store: &Store) -> Result<RelayAddr, Failure> {
    match store.setting(RELAY_SETTING).map_err(store_err)? {
        Some(text) => text.parse().map_err(|e| {
            Failure::new(
                Kind::BadInput,
                format!("the relay stored on this device (`{text}`) is not valid: {e}"),
            )
        }),
        None => Err(Failure::new(
            Kind::NotInitialised,
            "no relay known on this device: run `sync-cli pair` first",
        )),
    }
}

/// The transport to `relay`; resolving its addresses is bounded by --connect-timeout.
async fn transport(ctx: &Ctx, relay: &RelayAddr) -> Result<Arc<IrohTransport>, Failure> {
    let addrs = relay::socket_addrs(relay, ctx.connect_timeout).await?;
    Ok(Arc::new(IrohTransport::new(IrohConfig::new(
        relay.id, addrs,
    ))))
}

/// Connects to the relay (bounded by --connect-timeout); `online` tells whether a session is up.
async fn connect(ctx: &Ctx, relay: &RelayAddr) -> Result<(SyncClient, bool), Failure> {
    let mut options = ClientOptions::default();
    options.connection.connect_timeout = ctx.connect_timeout;
    options.connection.handshake_timeout = ctx.connect_timeout;
    let config = ClientConfig::new(
        StoreLocation::Dir(ctx.data_dir.clone()),
        transport(ctx, relay).await?,
        GroupChoice::Stored(None),
    )
    .with_options(options);
    let client = SyncClient::connect(config)
        .await
        .map_err(|e| from_client(e, &relay.to_string()))?;
    let online = client.status().connection == ConnectionStatus::Connected;
    Ok((client, online))
}

/// Lets queued pushes reach the relay (bounded by --wait), then closes.
async fn finish(ctx: &Ctx, client: &SyncClient, online: bool) {
    if online {
        let _ = client.flush(ctx.wait).await;
    }
    client.close().await;
}

fn unreachable(relay: &RelayAddr) -> Failure {
    Failure::new(Kind::Unreachable, format!("relay unreachable at {relay}"))
}

fn print_json(v: &serde_json::Value) -> Result<(), Failure> {
    outln!("{v}")
}

// ----- commands -----

fn init(ctx: &Ctx, name: &str) -> Result<(), Failure> {
    let name = name.trim();
    if name.is_empty() || name.len() > 64 {
        return Err(Failure::new(
            Kind::BadInput,
            "the device name must be 1 to 64 characters",
        ));
    }
    let existed = ctx.data_dir.join(STORE_FILE_NAME).exists();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&ctx.data_dir)
        .map_err(|e| Failure::new(Kind::Other, format!("{}: {e}", ctx.data_dir.display())))?;
    let _lock = lock::lock(&ctx.data_dir)?;
    let store = Store::open_dir(&ctx.data_dir, StoreSync::Normal).map_err(store_err)?;
    // An existing directory keeps its mode unless we tighten it: it holds secrets.
    std::fs::set_permissions(&ctx.data_dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Failure::new(Kind::Other, format!("{}: {e}", ctx.data_dir.display())))?;
    let created = store.device_key().map_err(store_err)?.is_none();
    let device = store.device_key_or_create().map_err(store_err)?;
    store.set_device_name(name).map_err(store_err)?;
    if ctx.json {
        print_json(&json!({
            "device_id": device.device_id().to_string(),
            "name": name,
            "data_dir": ctx.data_dir.display().to_string(),
            "created": created,
        }))?;
    } else if created || !existed {
        outln!("Device \"{name}\" created: {}", device.device_id())?;
        outln!("Data directory: {}", ctx.data_dir.display())?;
        outln!(
            "Next: `sync-cli pair --create --relay RELAY` (first device) or `sync-cli pair --join …`"
        )?;
    } else {
        outln!("Device renamed to \"{name}\": {}", device.device_id())?;
    }
    Ok(())
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

fn refuse_argv_passphrase(args: &PairArgs) -> Result<(), Failure> {
    if matches!(args.passphrase, Some(Some(_))) {
        return Err(Failure::new(
            Kind::BadInput,
            "refusing a passphrase on the command line (other users can read it): write `--passphrase` alone to be prompted, or use --passphrase-file FILE",
        ));
    }
    Ok(())
}

async fn pair_create(ctx: &Ctx, args: &PairArgs) -> Result<(), Failure> {
    refuse_argv_passphrase(args)?;
    let (store, _device) = open_device(ctx)?;
    if let Some(id) = store.group_ids().map_err(store_err)?.first() {
        return Err(Failure::new(
            Kind::BadInput,
            format!("this device is already in group {id}: use `sync-cli invite` to add a device"),
        ));
    }
    let relay_text = match &args.share.relay {
        Some(r) => r.clone(),
        None => store.setting(RELAY_SETTING).map_err(store_err)?.ok_or_else(|| {
            Failure::new(
                Kind::BadInput,
                "--relay is needed: ENDPOINT_ID@HOST:PORT from the relay's `dial:` line, or its http:// URL",
            )
        })?,
    };
    let relay = relay::resolve(&relay_text, ctx.connect_timeout).await?;
    check_expiry(args.share.expires_in)?;
    let mut rng = rng()?;
    let with_passphrase = args.passphrase.is_some() || args.passphrase_file.is_some();
    let group = if with_passphrase {
        let passphrase = secret::read_passphrase(args.passphrase_file.as_deref(), true)?;
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
    let group_id = store.save_group(&group).map_err(store_err)?;
    store
        .set_setting(RELAY_SETTING, &relay.to_string())
        .map_err(store_err)?;
    drop(store);
    if !ctx.json {
        let kind = if with_passphrase {
            "passphrase"
        } else {
            "random key"
        };
        outln!("Group created ({kind}): {group_id}")?;
    }
    share(ctx, &relay, group_id, &group, &args.share, with_passphrase).await
}

fn check_expiry(secs: u64) -> Result<(), Failure> {
    if secs == 0 || secs > MAX_INVITE_SECS {
        return Err(Failure::new(
            Kind::BadInput,
            format!("--expires-in must be 1 to {MAX_INVITE_SECS} seconds"),
        ));
    }
    Ok(())
}

async fn invite(ctx: &Ctx, args: &ShareArgs) -> Result<(), Failure> {
    check_expiry(args.expires_in)?;
    let (store, _device) = open_device(ctx)?;
    let (group_id, group) = stored_group(&store)?;
    let relay = match &args.relay {
        Some(r) => relay::resolve(r, ctx.connect_timeout).await?,
        None => stored_relay(&store)?,
    };
    drop(store);
    let passphrase = matches!(group.descriptor, GroupDescriptor::Passphrase { .. });
    share(ctx, &relay, group_id, &group, args, passphrase).await
}

/// Prints an invite string, its QR code and a short code left in the relay's mailbox.
async fn share(
    ctx: &Ctx,
    relay: &RelayAddr,
    group_id: GroupId,
    group: &GroupMaterial,
    args: &ShareArgs,
    passphrase: bool,
) -> Result<(), Failure> {
    let mut rng = rng()?;
    let now = unix_ms();
    let invite = Invite::create(
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
    .map_err(from_invite)?;
    let payload = invite.to_qr_payload();
    let code = ShortCode::random(&mut rng);

    // The short code needs the relay's mailbox.
    let (client, online) = connect(ctx, relay).await?;
    let put = if online {
        match tokio::time::timeout(ctx.wait, client.put_invite(&invite, &code)).await {
            Ok(r) => r.map_err(|e| from_client_about(e, &relay.to_string(), About::Invite)),
            Err(_) => Err(Failure::new(
                Kind::Unreachable,
                format!(
                    "relay at {relay} did not take the short code within --wait {}s",
                    ctx.wait.as_secs_f64()
                ),
            )),
        }
    } else {
        Err(unreachable(relay))
    };
    finish(ctx, &client, online).await;

    let expires = show::utc(invite.expires_at_ms());
    let pass_flag = if passphrase { " --passphrase" } else { "" };
    if ctx.json {
        print_json(&json!({
            "group_id": group_id.to_string(),
            "relay": relay.to_string(),
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
            outln!("  sync-cli pair --join - --relay {relay}{pass_flag}")?;
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

/// The invite or short code: from argv, or (`-`) from a hidden prompt / standard input.
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

async fn pair_join(ctx: &Ctx, arg: &str, args: &PairArgs) -> Result<(), Failure> {
    refuse_argv_passphrase(args)?;
    let (store, device) = open_device(ctx)?;
    let input = join_input(arg)?;
    let input = input.trim();
    let in_group = |group_id: Option<GroupId>| -> Result<(), Failure> {
        let existing = store.group_ids().map_err(store_err)?;
        match existing.iter().find(|g| Some(**g) != group_id) {
            Some(other) => Err(Failure::new(
                Kind::BadInput,
                format!(
                    "this device is already in group {other} (use another --data-dir for a second group){}",
                    if group_id.is_none() {
                        "; the short code was not used"
                    } else {
                        ""
                    }
                ),
            )),
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
            Failure::new(
                Kind::BadInput,
                format!(
                    "`--join` takes an invite (0ksync1:…) or a short code XXXX-XXXX-XXXX-XXXX: {e}"
                ),
            )
        })?;
        in_group(None)?;
        Some(code)
    };
    let mut passphrase = if args.passphrase.is_some() || args.passphrase_file.is_some() {
        Some(secret::read_passphrase(
            args.passphrase_file.as_deref(),
            false,
        )?)
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
            let relay = match &args.share.relay {
                Some(r) => relay::resolve(r, ctx.connect_timeout).await?,
                None => stored_relay(&store).map_err(|_| {
                    Failure::new(
                        Kind::BadInput,
                        "joining by short code needs --relay (the relay shown on the inviting device)",
                    )
                })?,
            };
            let t = transport(ctx, &relay).await?;
            let fetched =
                sync_client::fetch_invite(t.as_ref(), &device, &code, ctx.connect_timeout * 2)
                    .await;
            t.shutdown().await;
            fetched.map_err(|e| from_fetch(e, &relay.to_string()))?
        }
    };
    let group_id = invite.group_id();
    in_group(Some(group_id))?;
    if matches!(invite.group(), GroupDescriptor::Passphrase { .. }) && passphrase.is_none() {
        passphrase = Some(secret::read_passphrase(
            args.passphrase_file.as_deref(),
            false,
        )?);
    }
    let joined = invite
        .into_group(passphrase.as_deref().map(|p| p.as_str()), unix_ms())
        .map_err(from_invite)?;
    let relay = joined.relay;
    store.save_group(&joined.group).map_err(store_err)?;
    store
        .set_setting(RELAY_SETTING, &relay.to_string())
        .map_err(store_err)?;
    drop(store);

    let (client, online) = connect(ctx, &relay).await?;
    finish(ctx, &client, online).await;
    if ctx.json {
        print_json(&json!({
            "group_id": group_id.to_string(),
            "relay": relay.to_string(),
            "device_id": device.device_id().to_string(),
            "online": online,
        }))?;
    } else {
        outln!("Joined group {group_id}")?;
        if online {
            outln!("Relay {relay}: connected. Try `sync-cli pull` or `sync-cli watch`.")?;
        } else {
            note!(
                "sync-cli: relay unreachable at {relay} right now; this device syncs once it is reachable"
            );
        }
    }
    Ok(())
}

fn read_input(text: Option<String>, file: Option<&Path>) -> Result<Vec<u8>, Failure> {
    match (text, file) {
        (Some(t), _) => Ok(t.into_bytes()),
        (None, Some(f)) if f == Path::new("-") => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| Failure::new(Kind::BadInput, format!("standard input: {e}")))?;
            Ok(buf)
        }
        (None, Some(f)) => std::fs::read(f)
            .map_err(|e| Failure::new(Kind::BadInput, format!("{}: {e}", f.display()))),
        (None, None) => Err(Failure::new(Kind::BadInput, "give TEXT or --file FILE")),
    }
}

/// The device's group and relay, checked before touching the network.
fn ready(ctx: &Ctx) -> Result<(Store, DeviceKey, GroupId, RelayAddr), Failure> {
    let (store, device) = open_device(ctx)?;
    let (group_id, _) = stored_group(&store)?;
    let relay = stored_relay(&store)?;
    Ok((store, device, group_id, relay))
}

async fn push(ctx: &Ctx, text: Option<String>, file: Option<&Path>) -> Result<(), Failure> {
    let data = read_input(text, file)?;
    let (store, _device, _group, relay) = ready(ctx)?;
    drop(store);
    let (client, online) = connect(ctx, &relay).await?;
    let deadline = tokio::time::Instant::now() + ctx.wait;
    let mut events = client.subscribe();
    let result = if online {
        match tokio::time::timeout_at(deadline, client.push(&data)).await {
            Ok(Err(ClientError::Deferred {
                blob_id,
                code,
                message,
                retry_after,
            })) => {
                // Rate limit or quota: the client re-sends after the relay's hint; wait for the
                // outcome within --wait before reporting the refusal.
                match tokio::time::timeout_at(deadline, push_outcome(&mut events, blob_id)).await {
                    Ok(Some(r)) => r.map(Some),
                    _ => Err(ClientError::Deferred {
                        blob_id,
                        code,
                        message,
                        retry_after,
                    }),
                }
            }
            Ok(r) => r.map(Some),
            Err(_) => Err(ClientError::Timeout { blob_id: None }),
        }
    } else {
        client.push_queued(&data).await.map(|_| None)
    };
    let outcome = match result {
        Ok(Some(receipt)) => Ok((Some(receipt), 0)),
        Ok(None) | Err(ClientError::Offline { .. } | ClientError::Timeout { .. }) => {
            Ok((None, client.status().outbox_len))
        }
        Err(e) => Err(from_client(e, &relay.to_string())),
    };
    if outcome.is_ok() {
        finish(ctx, &client, online).await;
    } else {
        // Refused or deferred past --wait: do not wait again, the outbox keeps what is queued.
        client.close().await;
    }
    let (receipt, queued) = outcome?;
    match receipt {
        Some(r) => {
            if ctx.json {
                print_json(&json!({
                    "status": "sent",
                    "blob_id": r.blob_id.to_string(),
                    "cursor": r.cursor.get(),
                    "bytes": data.len(),
                }))?;
            } else {
                outln!(
                    "sent {} bytes: blob {} at cursor {}",
                    data.len(),
                    r.blob_id,
                    r.cursor
                )?;
            }
        }
        None => {
            let pending = queued;
            if ctx.json {
                print_json(&json!({
                    "status": "queued",
                    "relay": relay.to_string(),
                    "pending": pending,
                    "bytes": data.len(),
                }))?;
            }
            note!(
                "sync-cli: queued on this device ({} bytes; {pending} push(es) waiting): relay {} at {relay}; it is sent by the next command that connects (e.g. `sync-cli flush`)",
                data.len(),
                if online {
                    "did not acknowledge in time"
                } else {
                    "unreachable"
                },
            );
        }
    }
    Ok(())
}

/// The relay's final word on a deferred push, from the client's events (`None` if the events
/// end first).
async fn push_outcome(
    events: &mut (impl sync_client::Stream<Item = SyncEvent> + Unpin),
    blob_id: sync_types::BlobId,
) -> Option<Result<sync_client::Receipt, ClientError>> {
    while let Some(event) = events.next().await {
        match event {
            SyncEvent::PushAcked { receipt } if receipt.blob_id == blob_id => {
                return Some(Ok(receipt));
            }
            SyncEvent::PushRejected {
                blob_id: id,
                code,
                message,
            } if id == blob_id => {
                return Some(Err(ClientError::Rejected {
                    blob_id: Some(id),
                    code,
                    message,
                    retry_after: None,
                }));
            }
            _ => {}
        }
    }
    None
}

/// Writes blobs to standard output and flushes it: once this returns `Ok`, they were handed to
/// the reader.
fn print_blobs(
    ctx: &Ctx,
    blobs: &[Blob],
    own: sync_types::DeviceId,
    raw: bool,
) -> Result<(), Failure> {
    for b in blobs {
        if raw {
            out::bytes(&b.data)?;
        } else if ctx.json {
            outln!("{}", show::blob_json(b, own))?;
        } else {
            outln!("{}", show::blob_line(b, own))?;
        }
    }
    out::flush()
}

/// A pull that did not answer within --wait.
fn pull_timeout(ctx: &Ctx, relay: &RelayAddr) -> Failure {
    Failure::new(
        Kind::Unreachable,
        format!(
            "relay at {relay} did not answer the pull within --wait {}s; nothing pulled",
            ctx.wait.as_secs_f64()
        ),
    )
}

/// Pulls, prints, and only then moves the cursor (plain `pull`): blobs that did not reach
/// standard output come again with the next pull.
async fn pull_print_commit(
    ctx: &Ctx,
    client: &SyncClient,
    relay: &RelayAddr,
    own: sync_types::DeviceId,
    after: Option<u64>,
    raw: bool,
) -> Result<(), Failure> {
    enum Pulled {
        Reread(Vec<Blob>),
        Batch(PullBatch),
    }
    let pulled = match tokio::time::timeout(ctx.wait, async {
        match after {
            Some(n) => client.pull_after(Cursor::new(n)).await.map(Pulled::Reread),
            None => client.pull_uncommitted().await.map(Pulled::Batch),
        }
    })
    .await
    {
        Ok(r) => r.map_err(|e| from_client(e, &relay.to_string()))?,
        Err(_) => return Err(pull_timeout(ctx, relay)),
    };
    let (blobs, resume) = match &pulled {
        Pulled::Reread(blobs) => (blobs.as_slice(), client.status().resume_cursor),
        Pulled::Batch(batch) => (batch.blobs.as_slice(), batch.resume_cursor),
    };
    if ctx.json {
        let list: Vec<_> = blobs.iter().map(|b| show::blob_json(b, own)).collect();
        print_json(&json!({ "blobs": list, "resume_cursor": resume.get() }))?;
    } else {
        print_blobs(ctx, blobs, own, raw)?;
        if !raw && blobs.is_empty() {
            note!("nothing new");
        }
    }
    if let Pulled::Batch(batch) = &pulled {
        client.commit_pull(batch).await.map_err(|e| {
            Failure::new(
                Kind::Other,
                format!(
                    "the blobs were printed but the cursor could not be saved ({}); the next pull prints them again",
                    from_client(e, &relay.to_string()).msg
                ),
            )
        })?;
    }
    Ok(())
}

async fn pull(ctx: &Ctx, after: Option<u64>, raw: bool) -> Result<(), Failure> {
    let (store, device, _group, relay) = ready(ctx)?;
    drop(store);
    let (client, online) = connect(ctx, &relay).await?;
    if !online {
        finish(ctx, &client, online).await;
        return Err(Failure::new(
            Kind::Unreachable,
            format!("relay unreachable at {relay}; nothing pulled"),
        ));
    }
    let result = pull_print_commit(ctx, &client, &relay, device.device_id(), after, raw).await;
    if result.is_ok() {
        // Printed and committed: now let queued pushes go out (bounded by --wait).
        finish(ctx, &client, online).await;
    } else {
        client.close().await;
    }
    result
}

async fn watch(ctx: &Ctx) -> Result<(), Failure> {
    use tokio::signal::unix::{SignalKind, signal};
    let (store, device, group, relay) = ready(ctx)?;
    drop(store);
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| Failure::new(Kind::Other, format!("cannot watch SIGTERM: {e}")))?;
    let mut int = signal(SignalKind::interrupt())
        .map_err(|e| Failure::new(Kind::Other, format!("cannot watch SIGINT: {e}")))?;
    let (client, online) = connect(ctx, &relay).await?;
    let mut watcher = client.watch(WatchOptions {
        pull_timeout: ctx.wait,
        ..WatchOptions::default()
    });
    let own = device.device_id();
    if online {
        note!("watching group {group} via {relay} (Ctrl-C to stop)");
    } else {
        note!("relay unreachable at {relay}; waiting for it (Ctrl-C to stop)");
    }
    let mut result = Ok(());
    while result.is_ok() {
        let event = tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            event = watcher.next() => event,
        };
        result = match event {
            // Printed first, committed after: a batch cut short by a signal comes again.
            Some(WatchEvent::Batch(batch)) => print_blobs(ctx, &batch.blobs, own, false)
                .and(client.commit_pull(&batch).await.map(drop).map_err(|e| {
                    Failure::new(
                        Kind::Other,
                        format!(
                            "the cursor could not be saved ({}); the blobs printed last come again next time",
                            from_client(e, "the relay").msg
                        ),
                    )
                })),
            Some(WatchEvent::Connected { .. }) => {
                note!("connected to {relay}");
                Ok(())
            }
            Some(WatchEvent::Disconnected { reason }) => {
                note!("disconnected ({reason}); reconnecting");
                Ok(())
            }
            Some(WatchEvent::Rejected { cursor, sender, error, .. }) => {
                note!(
                    "warning: blob at cursor {cursor} from device {} failed verification ({error}); not shown",
                    sender.short()
                );
                Ok(())
            }
            Some(WatchEvent::PullFailed { error, retry_in }) => {
                note!(
                    "pull failed ({error}); retrying in {:.0}s",
                    retry_in.as_secs_f64()
                );
                Ok(())
            }
            Some(WatchEvent::Failed(e)) => Err(from_client(e, "the relay")),
            Some(_) => Ok(()),
            None => break,
        };
    }
    client.close().await;
    result
}

async fn status(ctx: &Ctx) -> Result<(), Failure> {
    let (store, device) = open_device(ctx)?;
    let name = store.device_name().map_err(store_err)?.unwrap_or_default();
    let (group_id, group) = stored_group(&store)?;
    let relay = stored_relay(&store)?;
    let stored_cursor = store.cursor(&group_id, &relay.id).map_err(store_err)?;
    drop(store);
    let (client, online) = connect(ctx, &relay).await?;
    let before = client.status();
    if online {
        let _ = client.flush(ctx.wait).await;
    }
    let after = client.status();
    client.close().await;
    let sent_now = before.outbox_len.saturating_sub(after.outbox_len);
    let resume = if online {
        after.resume_cursor
    } else {
        stored_cursor
    };
    let kind = match group.descriptor {
        GroupDescriptor::Passphrase { .. } => "passphrase",
        _ => "random key",
    };
    if ctx.json {
        print_json(&json!({
            "device_id": device.device_id().to_string(),
            "device_name": name,
            "group_id": group_id.to_string(),
            "relay": relay.to_string(),
            "online": online,
            "resume_cursor": resume.get(),
            "relay_max_cursor": online.then(|| after.relay_max_cursor.get()),
            "pending": after.outbox_len,
            "sent_now": sent_now,
        }))?;
    } else {
        outln!("device:     {} ({name})", device.device_id())?;
        outln!("group:      {group_id} ({kind})")?;
        outln!("relay:      {relay}")?;
        if online {
            outln!("connection: online")?;
            outln!(
                "cursor:     pulled up to {resume}; relay is at {}",
                after.relay_max_cursor
            )?;
        } else {
            outln!("connection: offline (relay unreachable at {relay})")?;
            outln!("cursor:     pulled up to {resume}")?;
        }
        let sent = if sent_now > 0 {
            format!(" ({sent_now} sent just now)")
        } else {
            String::new()
        };
        outln!(
            "pending:    {} push(es) in the outbox{sent}",
            after.outbox_len
        )?;
    }
    Ok(())
}

fn devices(ctx: &Ctx) -> Result<(), Failure> {
    let (store, device) = open_device(ctx)?;
    let (group_id, _) = stored_group(&store)?;
    let name = store.device_name().map_err(store_err)?.unwrap_or_default();
    let seen = store.devices(&group_id).map_err(store_err)?;
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
        print_json(&json!({ "group_id": group_id.to_string(), "devices": list }))?;
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

async fn flush(ctx: &Ctx) -> Result<(), Failure> {
    let (store, _device, _group, relay) = ready(ctx)?;
    drop(store);
    let (client, online) = connect(ctx, &relay).await?;
    let before = client.status().outbox_len;
    if !online {
        client.close().await;
        return Err(Failure::new(
            Kind::Unreachable,
            format!("relay unreachable at {relay}; {before} push(es) stay queued"),
        ));
    }
    let result = client.flush(ctx.wait).await;
    let left = client.status().outbox_len;
    client.close().await;
    if ctx.json {
        print_json(&json!({ "sent": before.saturating_sub(left), "pending": left }))?;
    } else {
        outln!(
            "sent {} queued push(es); {left} pending",
            before.saturating_sub(left)
        )?;
    }
    result.map_err(|e| from_client(e, &relay.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_positive_and_at_most_a_day() {
        assert_eq!(secs("wait", 1.5).unwrap(), Duration::from_millis(1500));
        assert_eq!(secs("wait", 86_400.0).unwrap(), Duration::from_secs(86_400));
        for bad in [0.0, -1.0, 86_400.5, 1e19, f64::INFINITY, f64::NAN] {
            let e = secs("wait", bad).unwrap_err();
            assert_eq!(e.kind, Kind::BadInput, "{bad}");
            assert!(e.msg.contains("--wait"), "{}", e.msg);
        }
    }
}
