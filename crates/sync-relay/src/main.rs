//! `sync-relay`: runs a 0k-sync relay until SIGTERM or SIGINT; `sync-relay token …` creates
//! operator keys and issues admission tokens.
//!
//! Exit codes: 0 after a clean shutdown, 1 when the relay fails at runtime, 2 for a bad
//! command line or configuration.

mod token_command;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use sync_relay::Storage as _;
use sync_relay::{ConfigOverrides, LogFormat, RelayConfig, StopSignals};
use token_command::TokenCommand;

/// A 0k-sync relay: stores end-to-end encrypted blobs for sync groups, orders them with
/// per-group cursors and notifies the group's devices, over QUIC (iroh).
///
/// Configuration comes from a TOML file (--config), environment variables (SYNC_RELAY_<KEY>)
/// and flags, in increasing precedence; keys not set anywhere keep the built-in defaults, so no
/// argument is needed to start. Durations are written 250ms, 10s, 5m, 2h, 7d or 1h30m. Log
/// level: RUST_LOG (default info).
#[derive(Debug, Parser)]
#[command(
    name = "sync-relay",
    version,
    max_term_width = 100,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// TOML configuration file (see relay.example.toml); keys it leaves out keep their
    /// defaults, unknown keys are an error.
    #[arg(long, env = "SYNC_RELAY_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,

    /// Print the effective configuration (file + env + flags) as TOML and exit.
    #[arg(long)]
    print_config: bool,

    /// Check the configuration (file + env + flags) and exit without starting anything: 0 and
    /// one line if it is valid, 2 and the reason if not (a service manager's pre-start check).
    #[arg(long, conflicts_with = "print_config")]
    check_config: bool,

    /// Once ready, print one JSON object on a line of stdout instead of the text banner:
    /// `relay_id` (hex), `addrs` (dialable `ip:port`), `dial` (`ID@ADDR,…`), `http` (`ip:port`),
    /// `pid`, `data_dir`, `version`. For scripts and test harnesses.
    #[arg(long)]
    ready_json: bool,

    #[command(flatten)]
    overrides: ConfigOverrides,
}

/// What to do instead of running the relay.
#[derive(Debug, Subcommand)]
enum Command {
    /// Operator admission tokens: `keygen` makes the operator key, `issue` signs tokens.
    #[command(subcommand)]
    Token(TokenCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Token(command)) = cli.command {
        return token_command::run(command);
    }
    let config = match RelayConfig::load(cli.config.as_deref(), cli.overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sync-relay: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.print_config {
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    if cli.check_config {
        println!(
            "sync-relay: configuration is valid (data dir {}, QUIC on {}, HTTP on {})",
            config.data_dir.display(),
            config.bind,
            config.http_bind
        );
        return ExitCode::SUCCESS;
    }
    init_logging(config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sync-relay: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config, cli.ready_json)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sync-relay: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, without repeating a cause that an outer message
/// already quotes.
fn one_line(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn run(config: RelayConfig, ready_json: bool) -> anyhow::Result<()> {
    // Watched before anything is printed: a supervisor may signal as soon as it reads the
    // banner, and that signal must drain the relay, not kill it.
    let mut stop = StopSignals::watch().context("cannot watch SIGTERM and SIGINT")?;
    let data_dir = config.data_dir.clone();
    let relay = sync_relay::start(config)
        .await
        .with_context(|| format!("cannot start the relay (data dir {})", data_dir.display()))?;

    let id = relay.endpoint_id();
    let addrs = relay.direct_addrs();
    let listed = addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let banner = if ready_json {
        let ready = serde_json::json!({
            "relay_id": id.to_string(),
            "addrs": addrs,
            "dial": format!("{id}@{listed}"),
            "http": relay.http_addr(),
            "pid": std::process::id(),
            "data_dir": data_dir,
            "storage": relay.storage().kind(),
            "store_id": format!("{:016x}", relay.storage().store_id()),
            "version": env!("CARGO_PKG_VERSION"),
        });
        format!("{ready}\n")
    } else {
        let mut text = format!(
            "relay id:   {id}\naddresses:  {}\n",
            listed.replace(',', ", ")
        );
        for addr in &addrs {
            text.push_str(&format!("dial:       {id}@{addr}\n"));
        }
        text.push_str(&format!(
            "health:     http://{}/health\n",
            relay.http_addr()
        ));
        text.push_str(&format!("data dir:   {}\n", data_dir.display()));
        text.push_str(&format!(
            "storage:    {} (store {:016x})\n",
            relay.storage().kind(),
            relay.storage().store_id()
        ));
        text
    };
    // A closed stdout (a supervisor that does not read it) is not a reason to stop serving.
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(banner.as_bytes()).and_then(|()| out.flush());
    drop(out);

    stop.recv().await;
    tracing::info!("signal received");
    relay.shutdown().await.context("shutdown failed")?;
    Ok(())
}
