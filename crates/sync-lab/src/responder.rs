//! `sync-stress responder`: a device that answers the campaign (`PING:<n>` → `PONG:<n>`,
//! `BURST:<n>` → `BURST-ACK:<n>`, anything else → `ECHO:<text>`; replies are never answered)
//! until SIGINT or SIGTERM.
//!
//! It prints one line on stdout once connected — `responder ready: device <id> group <id>` —
//! and logs (stderr) counts and connection changes, never payloads or secrets.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sync_lab::device::{self, INVITE_ENV, Incoming};
use sync_lab::protocol::{self, Kind};
use sync_relay::StopSignals;
use sync_types::{Cursor, bind_addr_for};
use tokio::sync::mpsc;

/// Arguments of `sync-stress responder`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Invite string (`0ksync1:…`) of the group to answer in. Prefer the environment variable:
    /// a command-line argument is visible to other local users.
    #[arg(long, env = INVITE_ENV, hide_env_values = true, value_name = "INVITE")]
    invite: String,
    /// Directory of this device's state (key, cursor, outbox). Default: a temporary directory
    /// removed on exit (a new device each run).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Also answer messages that were in the group before this responder first connected
    /// (default: only new ones, so a fresh responder does not replay an old campaign).
    #[arg(long)]
    answer_history: bool,
    /// Local address of the device's QUIC endpoint. Default: any address of the relay's
    /// family, port 0.
    #[arg(long, value_name = "ADDR")]
    bind: Option<SocketAddr>,
    /// Reconnect after 20–200 ms instead of 1–30 s (for a relay on loopback).
    #[arg(long)]
    fast_reconnect: bool,
    /// How often to log counts.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    stats_every: u64,
}

/// Logs to stderr (`RUST_LOG`, default `info`), without colours when stderr is not a terminal.
pub(crate) fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

#[derive(Debug, Default)]
struct Counts {
    ping: u64,
    burst: u64,
    other: u64,
    replies_ignored: u64,
    history_skipped: u64,
    rejected: u64,
    push_failed: u64,
}

/// Runs the responder until SIGINT/SIGTERM; exit 0 after a clean stop.
pub(crate) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    init_logging();
    let joined = device::parse_invite(&args.invite).context("cannot use the invite")?;
    let temp;
    let data_dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => {
            temp = tempfile::tempdir().context("cannot create a temporary data dir")?;
            temp.path().to_path_buf()
        }
    };
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let bind = args
        .bind
        .unwrap_or_else(|| bind_addr_for(&joined.relay.socket_addrs()));
    // Watch the signals before connecting so a stop during the connect is not lost.
    let mut signals = StopSignals::watch().context("cannot watch SIGTERM and SIGINT")?;
    let stop = signals.recv();
    tokio::pin!(stop);
    let client = tokio::select! {
        c = device::connect(&joined, &data_dir, None, bind, "sync-stress responder", args.fast_reconnect) => {
            c.context("cannot start the device")?
        }
        () = &mut stop => {
            tracing::info!("stopped before connecting");
            return Ok(ExitCode::SUCCESS);
        }
    };
    let status = client.status();
    let me = client.device_id();
    // Blobs up to here were in the group before this run (unless this device already pulled
    // them in an earlier run, in which case pull never returns them).
    let history_end = if args.answer_history {
        Cursor::ZERO
    } else {
        status.relay_max_cursor
    };
    tracing::info!(
        device = %me.short(),
        group = %status.group_id.short(),
        relays = ?joined.relay.addrs,
        connection = ?status.connection,
        history_end = %history_end,
        "responder started"
    );
    println!("responder ready: device {me} group {}", status.group_id);

    let (tx, mut rx) = mpsc::unbounded_channel();
    let receiver = device::spawn_receiver(client.clone(), tx, Duration::from_secs(5));
    let mut counts = Counts::default();
    let mut stats = tokio::time::interval(Duration::from_secs(args.stats_every.max(1)));
    stats.tick().await;
    let started = Instant::now();
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = stats.tick() => log_counts(&counts, started),
            msg = rx.recv() => {
                let Some(msg) = msg else { break };
                match msg {
                    Incoming::Blob(blob) => {
                        if blob.cursor <= history_end {
                            counts.history_skipped += 1;
                            continue;
                        }
                        let kind = protocol::classify(&blob.data);
                        let Some(reply) = protocol::reply_to(&blob.data) else {
                            counts.replies_ignored += 1;
                            continue;
                        };
                        match client.push_queued(&reply).await {
                            Ok(_) => {
                                match kind {
                                    Kind::Ping => counts.ping += 1,
                                    Kind::Burst => counts.burst += 1,
                                    _ => counts.other += 1,
                                }
                                tracing::debug!(
                                    kind = kind.name(),
                                    len = blob.data.len(),
                                    cursor = %blob.cursor,
                                    from = %blob.sender.short(),
                                    "answered"
                                );
                            }
                            Err(e) => {
                                counts.push_failed += 1;
                                tracing::warn!(kind = kind.name(), cursor = %blob.cursor, error = %e, "cannot queue the answer");
                            }
                        }
                    }
                    Incoming::Rejected { sender } => {
                        counts.rejected += 1;
                        tracing::warn!(from = %sender.short(), "a blob failed verification and was skipped");
                    }
                    Incoming::Connected => tracing::info!("connected"),
                    Incoming::Disconnected { reason } => tracing::warn!(%reason, "disconnected; reconnecting"),
                    Incoming::PullFailed { reason } => tracing::warn!(%reason, "pull failed"),
                    _ => {}
                }
            }
        }
    }
    tracing::info!("signal received, stopping");
    receiver.abort();
    if let Err(e) = client.flush(Duration::from_secs(5)).await {
        tracing::warn!(error = %e, outbox = client.status().outbox_len, "answers still queued at exit");
    }
    client.close().await;
    log_counts(&counts, started);
    Ok(ExitCode::SUCCESS)
}

fn log_counts(c: &Counts, started: Instant) {
    tracing::info!(
        uptime_s = started.elapsed().as_secs(),
        pongs = c.ping,
        burst_acks = c.burst,
        echoes = c.other,
        replies_ignored = c.replies_ignored,
        history_skipped = c.history_skipped,
        rejected = c.rejected,
        push_failed = c.push_failed,
        "responder counts"
    );
}
