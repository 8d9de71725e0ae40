//! `sync-stress load`: many devices against one relay ([`sync_lab::loadgen`]): fan-out latency,
//! refusals at the session limit, connection churn (with the relay's open FDs when its pid is
//! known). One JSON summary on stdout, a short text summary on stderr.
//!
//! Exit codes: 0 clean; 3 when messages were lost or duplicated, a pusher could not flush,
//! nothing was measured (no delivery expected, e.g. groups of one), or churn left ghost
//! sessions, failed pushes or more open FDs than before; 1 on errors (relay not reachable: no
//! device accepted; /metrics or /proc not readable); 2 bad command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use sync_lab::loadgen::{ChurnConfig, LoadConfig, LoadTarget, run_churn, run_load};
use sync_lab::values::{parse_duration, parse_number, parse_rate_within};
use sync_testkit::{RelayProcess, find_relay_bin};

/// A timeout: 10 ms to 1 h.
fn timeout(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s).map_err(|e| e.to_string())?;
    if !(Duration::from_millis(10)..=Duration::from_secs(3600)).contains(&d) {
        return Err("must be 10ms to 1h".into());
    }
    Ok(d)
}

/// `--rate`: total messages/s, 0.001 to 20000.
fn rate(s: &str) -> Result<f64, String> {
    parse_rate_within(s, 0.001, 20_000.0, "")
}

/// `--duration`: seconds, more than 0 and at most 3600.
fn seconds(s: &str) -> Result<f64, String> {
    parse_number(
        s,
        |d| d > 0.0 && d <= 3600.0,
        "must be more than 0 and at most 3600 seconds",
    )
}

/// Fastest pace of one device: one push per millisecond.
const MAX_RATE_PER_DEVICE: f64 = 1000.0;

/// Shown after `--help`.
const AFTER_HELP: &str = "Exit codes: 0 clean; 3 something lost, duplicated, unflushed, not \
measured (no delivery expected), or churn left ghost sessions, unacknowledged pushes or more \
open relay FDs than before; 1 error (relay unreachable: no device accepted; /metrics or \
/proc/PID not readable); 2 bad command line.";

/// Runs N devices in groups of G against a relay, pushing R messages/s in total for S seconds,
/// and reports fan-out latency per receiver (p50/p95/p99), refusals (above the relay's max
/// sessions), lost and duplicated messages; with --churn, also many short connections, after
/// which the relay's session gauge must return to its baseline.
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub(crate) struct Args {
    /// The relay to load: HEXID@IP:PORT (its `dial:` line).
    #[arg(
        long,
        value_name = "HEXID@IP:PORT",
        conflicts_with = "local",
        required_unless_present = "local"
    )]
    relay: Option<String>,
    /// The relay's HTTP address (for /metrics: refusals, sessions, churn).
    #[arg(long, value_name = "IP:PORT", conflicts_with = "local")]
    http: Option<SocketAddr>,
    /// Start a relay process on loopback (on a temporary directory) for the run.
    #[arg(long)]
    local: bool,
    /// The sync-relay binary for --local (default: next to sync-stress, then PATH).
    #[arg(long, value_name = "PATH", requires = "local")]
    relay_bin: Option<PathBuf>,
    /// The relay's process id, when it runs on this machine: its open FDs (/proc/PID/fd) are
    /// sampled around the churn (automatic with --local).
    #[arg(long, value_name = "PID", conflicts_with = "local")]
    relay_pid: Option<u32>,
    /// --local: the relay's max concurrent sessions.
    #[arg(long, value_name = "N", default_value_t = 10_000, requires = "local")]
    max_sessions: u32,
    /// Devices.
    #[arg(long, default_value_t = 10)]
    clients: usize,
    /// Messages per second, all devices together (0.001 to 20000, at most 1000 per device).
    #[arg(long, default_value_t = 100.0, value_parser = rate)]
    rate: f64,
    /// Push phase length in seconds (more than 0, at most 3600).
    #[arg(long, default_value_t = 10.0, value_parser = seconds)]
    duration: f64,
    /// Devices per group.
    #[arg(long, default_value_t = 5)]
    group_size: usize,
    /// Plaintext bytes per message (64 to 65536).
    #[arg(long, default_value_t = 256)]
    payload: usize,
    /// After the push phase, how long flushing and delivery may take.
    #[arg(long, value_name = "DURATION", value_parser = timeout, default_value = "30s")]
    drain_timeout: Duration,
    /// How long each device's dial, and then its handshake, may take.
    #[arg(long, value_name = "DURATION", value_parser = timeout, default_value = "10s")]
    connect_timeout: Duration,
    /// Also run connection churn (after the load; alone with --clients 0).
    #[arg(long)]
    churn: bool,
    /// Churn: short-lived connections.
    #[arg(long, default_value_t = 50)]
    churn_connections: usize,
    /// Churn: how long each stays connected.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "2s")]
    churn_lifetime: Duration,
    /// Churn: about how many are open at once.
    #[arg(long, default_value_t = 10)]
    churn_overlap: usize,
    /// Churn: how long a device's push may wait for its acknowledgement (then it counts as
    /// failed).
    #[arg(long, value_name = "DURATION", value_parser = timeout, default_value = "10s")]
    churn_push_timeout: Duration,
    /// Churn: the relay's open FDs afterwards may exceed those before by this many.
    #[arg(long, value_name = "N", default_value_t = 2)]
    fd_slack: u64,
    /// Seed of the group secrets.
    #[arg(long)]
    seed: Option<u64>,
}

/// Starts the relay of `--local` (loopback, free ports, a temporary data dir) and waits until
/// it reports ready.
async fn start_local_relay(
    bin: Option<&std::path::Path>,
    max_sessions: u32,
) -> anyhow::Result<(RelayProcess, LoadTarget)> {
    let bin = find_relay_bin(bin)?;
    let relay = tokio::task::spawn_blocking(move || {
        RelayProcess::builder()
            .bin(bin)
            .args(["--max-sessions", &max_sessions.to_string()])
            .start()
    })
    .await
    .context("the relay start was cancelled")??;
    let target = LoadTarget {
        relay: relay.relay_addr(),
        http: Some(relay.http_addr()),
    };
    Ok((relay, target))
}

/// Runs the load (and churn) and prints the JSON summary.
pub(crate) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.clients == 0 && !args.churn {
        bail!("nothing to do: --clients 0 without --churn");
    }
    #[allow(clippy::cast_precision_loss)]
    let per_device = args.rate / args.clients.max(1) as f64;
    if args.clients > 0 && per_device > MAX_RATE_PER_DEVICE {
        eprintln!(
            "sync-stress: --rate {} over {} devices is more than {MAX_RATE_PER_DEVICE} messages/s per device (a push period under 1 ms)",
            args.rate, args.clients
        );
        return Ok(ExitCode::from(2));
    }
    let mut local = None;
    let (target, relay_pid) = if args.local {
        let (relay, target) =
            start_local_relay(args.relay_bin.as_deref(), args.max_sessions).await?;
        let pid = relay.pid();
        local = Some(relay);
        (target, pid)
    } else {
        let dial = args
            .relay
            .as_deref()
            .context("--relay or --local is required")?;
        (LoadTarget::parse_dial(dial, args.http)?, args.relay_pid)
    };
    let outcome = run_with(&args, &target, relay_pid).await;
    if let Some(mut relay) = local {
        tokio::task::block_in_place(|| relay.stop());
    }
    let outcome = outcome?;
    println!("{}", outcome.summary);
    for line in &outcome.text {
        eprintln!("{line}");
    }
    if let Some(fatal) = outcome.fatal {
        bail!("{fatal}");
    }
    Ok(if outcome.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

/// What a run came to.
struct Outcome {
    /// The JSON summary (stdout).
    summary: serde_json::Value,
    /// The text summary (stderr).
    text: Vec<String>,
    /// Why it is not clean (exit 3).
    problems: Vec<String>,
    /// Why nothing could be measured at all (exit 1).
    fatal: Option<String>,
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.1} ms"))
}

async fn run_with(
    args: &Args,
    target: &LoadTarget,
    relay_pid: Option<u32>,
) -> anyhow::Result<Outcome> {
    let mut summary = serde_json::Map::new();
    let mut problems = Vec::new();
    let mut text = Vec::new();
    let addrs = target.relay.addrs.join(", ");
    if args.clients > 0 {
        let config = LoadConfig {
            clients: args.clients,
            rate: args.rate,
            duration: Duration::from_secs_f64(args.duration),
            group_size: args.group_size,
            payload: args.payload,
            drain_timeout: args.drain_timeout,
            connect_timeout: args.connect_timeout,
            seed: args.seed,
            ..LoadConfig::default()
        };
        let report = run_load(target, &config).await.context("load")?;
        let r = &report;
        text.push(format!(
            "load: {} of {} devices accepted ({} refused), {} pushed ({} msg/s), {} of {} deliveries, {} lost, {} duplicated, fan-out p50 {} p99 {}",
            r.accepted,
            r.clients,
            r.refused,
            r.pushed,
            r.achieved_rate,
            r.delivered,
            r.expected_deliveries,
            r.lost,
            r.duplicates,
            ms(r.latency.p50_ms),
            ms(r.latency.p99_ms)
        ));
        summary.insert("load".into(), serde_json::to_value(&report)?);
        if r.accepted == 0 {
            let fatal = format!(
                "the relay at {addrs} accepted none of the {} devices (within --connect-timeout {:?}; {} refused as TooManySessions): is it reachable?",
                r.clients,
                args.connect_timeout,
                r.refused_too_many_sessions
                    .map_or_else(|| "unknown how many".to_string(), |n| n.to_string())
            );
            return Ok(finish(summary, text, problems, Some(fatal)));
        }
        problems.extend(report.problems());
    }
    if args.churn {
        let config = ChurnConfig {
            connections: args.churn_connections,
            lifetime: args.churn_lifetime,
            overlap: args.churn_overlap,
            group_size: args.group_size,
            connect_timeout: args.connect_timeout,
            push_timeout: args.churn_push_timeout,
            relay_pid,
            fd_slack: args.fd_slack,
            seed: args.seed,
            ..ChurnConfig::default()
        };
        let report = run_churn(target, &config).await.context("churn")?;
        let r = &report;
        text.push(format!(
            "churn: {} of {} connected, {} pushes acknowledged, sessions {} → peak {} → {} ({} ghost)",
            r.connected,
            r.connections,
            r.pushes_acked,
            r.sessions_baseline,
            r.sessions_peak,
            r.sessions_final,
            r.ghost_sessions
        ));
        text.push(match &r.relay_fds {
            Some(f) => format!(
                "churn: relay open FDs (pid {}) baseline {}, peak {}, end {} (slack {}): {}",
                f.pid,
                f.baseline,
                f.peak,
                f.end,
                f.slack,
                if f.ok() {
                    "back to baseline"
                } else {
                    "NOT back to baseline"
                }
            ),
            None => {
                "churn: relay open FDs not sampled (pid unknown: use --local or --relay-pid)".into()
            }
        });
        summary.insert("churn".into(), serde_json::to_value(&report)?);
        if r.connected == 0 {
            let fatal = format!(
                "the relay at {addrs} accepted none of the {} churn devices: is it reachable?",
                r.connections
            );
            return Ok(finish(summary, text, problems, Some(fatal)));
        }
        problems.extend(report.problems());
    }
    Ok(finish(summary, text, problems, None))
}

fn finish(
    mut summary: serde_json::Map<String, serde_json::Value>,
    mut text: Vec<String>,
    problems: Vec<String>,
    fatal: Option<String>,
) -> Outcome {
    let clean = problems.is_empty() && fatal.is_none();
    summary.insert("clean".into(), serde_json::Value::Bool(clean));
    summary.insert("problems".into(), serde_json::json!(problems));
    // A fatal outcome is reported as the command's error.
    if fatal.is_none() {
        text.push(if clean {
            "clean".to_string()
        } else {
            format!("NOT CLEAN: {}", problems.join("; "))
        });
    }
    Outcome {
        summary: serde_json::Value::Object(summary),
        text,
        problems,
        fatal,
    }
}
