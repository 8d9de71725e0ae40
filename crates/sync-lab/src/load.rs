//! `sync-stress load`: many devices against one relay ([`sync_lab::loadgen`]): fan-out latency,
//! refusals at the session limit, connection churn. One JSON summary on stdout.
//!
//! Exit codes: 0 clean; 3 when messages were lost or duplicated, a pusher could not flush, or
//! churn left ghost sessions; 1 on errors (relay not reachable, bad arguments).

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use sync_lab::impair::parse_duration;
use sync_lab::loadgen::{ChurnConfig, LoadConfig, RelayTarget, run_churn, run_load};
use tokio::sync::mpsc;

/// How long the relay child may take to start or stop.
const CHILD_TIMEOUT: Duration = Duration::from_secs(30);

fn duration(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}

/// Runs N devices in groups of G against a relay, pushing R messages/s in total for S seconds,
/// and reports fan-out latency per receiver (p50/p95/p99), refusals (above the relay's max
/// sessions), lost and duplicated messages; with --churn, also many short connections, after
/// which the relay's session gauge must return to its baseline.
#[derive(Debug, clap::Args)]
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
    /// --local: the relay's max concurrent sessions.
    #[arg(long, value_name = "N", default_value_t = 10_000, requires = "local")]
    max_sessions: u32,
    /// Devices.
    #[arg(long, default_value_t = 10)]
    clients: usize,
    /// Messages per second, all devices together.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Push phase length in seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Devices per group.
    #[arg(long, default_value_t = 5)]
    group_size: usize,
    /// Plaintext bytes per message (64 to 65536).
    #[arg(long, default_value_t = 256)]
    payload: usize,
    /// After the push phase, how long flushing and delivery may take.
    #[arg(long, value_name = "DURATION", value_parser = duration, default_value = "30s")]
    drain_timeout: Duration,
    /// Also run connection churn (after the load; alone with --clients 0).
    #[arg(long)]
    churn: bool,
    /// Churn: short-lived connections.
    #[arg(long, default_value_t = 50)]
    churn_connections: usize,
    /// Churn: how long each stays connected.
    #[arg(long, value_name = "DURATION", value_parser = duration, default_value = "2s")]
    churn_lifetime: Duration,
    /// Churn: about how many are open at once.
    #[arg(long, default_value_t = 10)]
    churn_overlap: usize,
    /// Seed of the group secrets.
    #[arg(long)]
    seed: Option<u64>,
}

/// The relay child of `--local`; stopped (SIGTERM, then SIGKILL) when dropped or stopped.
struct LocalRelay {
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl LocalRelay {
    async fn start(bin: &Path, max_sessions: u32) -> anyhow::Result<(LocalRelay, RelayTarget)> {
        let dir = tempfile::Builder::new()
            .prefix("sync-stress-load-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        let log = dir.path().join("relay.log");
        let err = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let mut child = Command::new(bin)
            .arg("--data-dir")
            .arg(dir.path().join("relay"))
            .args(["--bind", "127.0.0.1:0", "--http-bind", "127.0.0.1:0"])
            .args(["--max-sessions", &max_sessions.to_string()])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(err))
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let (tx, mut rx) = mpsc::unbounded_channel();
        if let Some(out) = child.stdout.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let mut relay = LocalRelay {
            child: Some(child),
            _dir: dir,
        };
        let lines = tokio::time::timeout(CHILD_TIMEOUT, async {
            let (mut dial, mut health) = (None, None);
            while let Some(line) = rx.recv().await {
                if let Some(v) = line.strip_prefix("dial:") {
                    dial.get_or_insert_with(|| v.trim().to_string());
                }
                if let Some(v) = line.strip_prefix("health:") {
                    health = Some(v.trim().to_string());
                }
                if dial.is_some() && health.is_some() {
                    break;
                }
            }
            (dial, health)
        })
        .await;
        let Ok((Some(dial), Some(health))) = lines else {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            let last = tail.lines().last().unwrap_or("").to_string();
            relay.stop().await;
            bail!("the relay did not start (no dial/health line): {last}");
        };
        let http: SocketAddr = health
            .trim_start_matches("http://")
            .trim_end_matches("/health")
            .parse()
            .context("unexpected relay health line")?;
        let target = RelayTarget::parse_dial(&dial, Some(http))?;
        Ok((relay, target))
    }

    async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        #[allow(clippy::cast_possible_wrap)]
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + CHILD_TIMEOUT;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        })
        .await;
    }
}

impl Drop for LocalRelay {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The relay binary: `explicit`, else `sync-relay` next to this executable, else on PATH.
fn find_relay(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        if p.is_file() {
            return Ok(p.to_path_buf());
        }
        bail!("relay binary {} not found", p.display());
    }
    let mut dirs: Vec<PathBuf> = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
        .into_iter()
        .collect();
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs.into_iter()
        .map(|d| d.join("sync-relay"))
        .find(|p| p.is_file())
        .context(
            "no sync-relay binary next to sync-stress or on PATH (build it with `cargo build -p sync-relay`, or pass --relay-bin)",
        )
}

/// Runs the load (and churn) and prints the JSON summary.
pub(crate) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    if !(args.duration.is_finite() && (0.0..=3600.0).contains(&args.duration)) {
        bail!("--duration must be 0 to 3600 seconds");
    }
    if args.clients == 0 && !args.churn {
        bail!("nothing to do: --clients 0 without --churn");
    }
    let mut local = None;
    let target = if args.local {
        let bin = find_relay(args.relay_bin.as_deref())?;
        let (relay, target) = LocalRelay::start(&bin, args.max_sessions).await?;
        local = Some(relay);
        target
    } else {
        let dial = args
            .relay
            .as_deref()
            .context("--relay or --local is required")?;
        RelayTarget::parse_dial(dial, args.http)?
    };
    let outcome = run_with(&args, &target).await;
    if let Some(mut relay) = local {
        relay.stop().await;
    }
    let (summary, clean) = outcome?;
    println!("{summary}");
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

async fn run_with(args: &Args, target: &RelayTarget) -> anyhow::Result<(serde_json::Value, bool)> {
    let mut summary = serde_json::Map::new();
    let mut clean = true;
    if args.clients > 0 {
        let config = LoadConfig {
            clients: args.clients,
            rate: args.rate,
            duration: Duration::from_secs_f64(args.duration),
            group_size: args.group_size,
            payload: args.payload,
            drain_timeout: args.drain_timeout,
            seed: args.seed,
            ..LoadConfig::default()
        };
        let report = run_load(target, &config).await.context("load")?;
        clean &= report.clean();
        summary.insert("load".into(), serde_json::to_value(&report)?);
    }
    if args.churn {
        let config = ChurnConfig {
            connections: args.churn_connections,
            lifetime: args.churn_lifetime,
            overlap: args.churn_overlap,
            group_size: args.group_size,
            seed: args.seed,
            ..ChurnConfig::default()
        };
        let report = run_churn(target, &config).await.context("churn")?;
        clean &= report.ghost_sessions == 0;
        summary.insert("churn".into(), serde_json::to_value(&report)?);
    }
    summary.insert("clean".into(), serde_json::Value::Bool(clean));
    Ok((serde_json::Value::Object(summary), clean))
}
