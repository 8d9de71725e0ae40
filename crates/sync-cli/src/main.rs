//! `sync-cli`: a 0k-sync device on the command line — identity, pairing (invite string, QR
//! code, short code, passphrase), push / pull / watch, status, devices, and an offline outbox.
//!
//! Every command works on one data directory (`--data-dir`): a SQLite store, mode 0600 in a
//! 0700 directory, holding the device key, the group, the relays (in order of preference), the
//! per-relay cursor and the outbox, used by one `sync-cli` process at a time (a lock file, see `lock`). See
//! `sync-cli --help` for the exit codes.
//!
//! This file holds the command line, the runtime and the exit codes; each command lives in its
//! own module under `cmd`, and what they share (the settings, the device's store, a session
//! with the relay) in `device`.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod cmd;
mod content;
mod device;
mod fail;
mod lock;
mod out;
mod relay;
mod secret;
mod show;

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::cmd::init::InitArgs;
use crate::cmd::invite::ShareArgs;
use crate::cmd::pair::PairArgs;
use crate::cmd::pull::PullArgs;
use crate::cmd::push::PushArgs;
use crate::device::Ctx;
use crate::fail::{EXIT_CODES, Failure, Kind};
use crate::out::note;

/// A 0k-sync device on the command line: end-to-end encrypted sync of small blobs between your
/// devices through a relay that cannot read them.
///
/// Start: `sync-cli init --name laptop`, then `sync-cli pair --create --relay ID@HOST:PORT` on
/// the first device and `sync-cli pair --join - --relay ID@HOST:PORT` on the next one (it asks
/// for the short code or invite without echoing it).
///
/// A deployment with several relays: give `--relay` once per relay, in order of preference
/// (the device dials the first and fails over to the next); the invite carries them all, and
/// `sync-cli relays` lists or changes a device's list.
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
    command: Command,
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

    /// The relay operator's admission token, for relays that admit only devices holding one.
    /// Kept in this device's store once given, and sent by every later command.
    #[arg(
        long,
        global = true,
        env = "SYNC_CLI_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,

    /// Days large content stays in this device's store (under the data directory's
    /// `content/`) after it was last sent or received; older content is removed when a command
    /// opens the store. 0 keeps it for ever. Files written to `--out` are never touched.
    #[arg(
        long,
        global = true,
        env = "SYNC_CLI_KEEP_CONTENT",
        value_name = "DAYS",
        default_value_t = 30.0
    )]
    keep_content: f64,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create this device's identity (key and name) in the data directory; again to rename.
    #[command(after_help = EXIT_CODES)]
    Init(InitArgs),
    /// Create a group and share it (--create), or join one (--join).
    #[command(after_help = EXIT_CODES)]
    Pair(PairArgs),
    /// A fresh invite and short code for the group this device is in (for one more device).
    #[command(after_help = EXIT_CODES)]
    Invite(ShareArgs),
    /// Seal and send TEXT, or a file (--file F, `-` for standard input). Queued on this device
    /// when the relay is unreachable, and sent by the next command that connects. A file larger
    /// than one blob (or any file with --content) and a folder (--dir D) go as large content
    /// (needs the relay now; fetched by the other devices from this one while `watch` runs
    /// here, or from the relay's content store).
    #[command(after_help = EXIT_CODES)]
    Push(PushArgs),
    /// Print what the other devices sent since the last pull; files and folders sent as large
    /// content are fetched and written under --out.
    #[command(after_help = EXIT_CODES)]
    Pull(PullArgs),
    /// Print arrivals as they come, until Ctrl-C or SIGTERM (exit 0); files and folders sent
    /// as large content are fetched and written under --out, and this device's own large
    /// content is served to the group's devices while it runs.
    #[command(after_help = EXIT_CODES)]
    Watch(cmd::watch::WatchArgs),
    /// Device, group, relays, whether a relay answers now, cursor, pushes waiting to be sent.
    #[command(after_help = EXIT_CODES)]
    Status,
    /// The relays this device syncs through, in order of preference: `relays list`,
    /// `relays add ID@HOST:PORT [--first]`, `relays remove ID` (not the last one).
    #[command(after_help = EXIT_CODES)]
    Relays(cmd::relays::RelaysArgs),
    /// Devices seen in the group (senders of pulled blobs, and this device), last activity.
    /// Only reads: it works while another sync-cli (e.g. `watch`) uses the data directory.
    /// `devices members | revoke DEVICE | promote DEVICE` ask the relay and change membership.
    #[command(after_help = EXIT_CODES)]
    Devices(cmd::devices::DevicesArgs),
    /// Rotate the group's keys (admins only): a fresh key for everything written from now on,
    /// sent to every other member sealed with post-quantum hybrid encryption.
    #[command(after_help = EXIT_CODES)]
    Rotate,
    /// Send the queued pushes now and wait for the relay to acknowledge them.
    #[command(after_help = EXIT_CODES)]
    Flush,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let g = cli.global;
    let ctx = match Ctx::new(
        g.data_dir,
        g.json,
        g.connect_timeout,
        g.wait,
        g.token.as_deref(),
        g.keep_content,
    ) {
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
    match runtime.block_on(run(&ctx, cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => report(&f),
    }
}

/// The failure's line on standard error, and its exit code.
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

async fn run(ctx: &Ctx, command: Command) -> Result<(), Failure> {
    // Held until the command is done. `init` locks once it has made the directory; `devices`
    // only reads; without a store the command fails as "not initialised" anyway.
    let _lock = match command {
        Command::Init(_) | Command::Devices(cmd::devices::DevicesArgs { action: None }) => None,
        _ if ctx.has_store() => Some(lock::lock(&ctx.data_dir)?),
        _ => None,
    };
    match command {
        Command::Init(args) => cmd::init::run(ctx, &args),
        Command::Pair(args) => cmd::pair::run(ctx, &args).await,
        Command::Invite(args) => cmd::invite::run(ctx, &args).await,
        Command::Push(args) => cmd::push::run(ctx, args).await,
        Command::Pull(args) => cmd::pull::run(ctx, &args).await,
        Command::Watch(args) => cmd::watch::run(ctx, &args).await,
        Command::Status => cmd::status::run(ctx).await,
        Command::Relays(args) => cmd::relays::run(ctx, &args).await,
        Command::Devices(args) => cmd::devices::run(ctx, args).await,
        Command::Rotate => cmd::devices::rotate(ctx).await,
        Command::Flush => cmd::flush::run(ctx).await,
    }
}
