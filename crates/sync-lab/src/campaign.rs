//! `sync-stress campaign`: drives the phases against a responder through a relay, writes
//! `events.jsonl`, `campaign-report.md` and `report.html`, and sets the exit code from the
//! thresholds.
//!
//! Exit codes: 0 every phase that ran met its thresholds and at least one measured something;
//! 3 a threshold was missed; 4 nothing was measured (only phases that are not available ran);
//! 1 setup or runtime error (relay unreachable, responder silent, files not writable); 2 bad
//! command line.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, IsTerminal as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};
use sync_client::SyncClient;
use sync_lab::device::{self, Incoming};
use sync_lab::events::{EventLog, round3};
use sync_lab::impair::{self, DirectionConfig, ImpairConfig, Proxy, ProxyHandle, ProxyStats};
use sync_lab::report::{self, Impairment, PhaseResult, PhaseStatus, Point, Report, ThresholdRow};
use sync_lab::soak::{self, LeakLimits, Sample, Target};
use sync_lab::stats::{Summary, round2};
use sync_testkit::{ChildProcess, RelayProcess, find_relay_bin};
use sync_types::{DeviceId, bind_addr_for, unix_ms};
use tokio::sync::{mpsc, oneshot};

use crate::responder::INVITE_ENV;

/// Exit code when a threshold is missed.
const EXIT_THRESHOLD: u8 = 3;
/// Exit code when no phase that ran measured anything (e.g. `--phase group`): not a pass.
const EXIT_NOTHING_MEASURED: u8 = 4;
/// Fastest endurance rate: one message per millisecond (a shorter period is no period at all
/// for the timer).
const MAX_RATE: f64 = 1000.0;
/// Slowest endurance rate.
const MIN_RATE: f64 = 0.001;

/// `--rate`: messages per second, from [`MIN_RATE`] to [`MAX_RATE`].
fn parse_rate(s: &str) -> Result<f64, String> {
    let r: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))?;
    if !(r.is_finite() && (MIN_RATE..=MAX_RATE).contains(&r)) {
        return Err(format!(
            "must be {MIN_RATE} to {MAX_RATE} messages/s (a period of at least 1 ms)"
        ));
    }
    Ok(r)
}

/// A threshold: a finite number ≥ 0 (NaN would make every comparison pass).
fn parse_threshold(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))?;
    if !(v.is_finite() && v >= 0.0) {
        return Err("must be a finite number ≥ 0".into());
    }
    Ok(v)
}

/// Shown after `--help`.
const AFTER_HELP: &str = "Exit codes: 0 every phase that ran passed and at least one measured \
something; 3 a threshold was missed; 4 nothing was measured (only phases that are not \
available, e.g. --phase group or --phase failover); 1 setup or runtime error; 2 bad command line.";
/// How long the local relay and responder get to start and to stop.
const CHILD_TIMEOUT: Duration = Duration::from_secs(30);

/// Which phases to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum PhaseArg {
    /// RTT baseline.
    Ping,
    /// Loss under load.
    Burst,
    /// Encryption and signatures verified end to end.
    E2e,
    /// Group traffic across a key rotation (not available yet).
    Group,
    /// Primary relay killed (not available yet).
    Failover,
    /// 1 msg/s for --duration, rolling stats, relay soak checks.
    Endurance,
    /// Every phase in order.
    All,
}

/// Arguments of `sync-stress campaign`.
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
#[allow(clippy::struct_excessive_bools)]
pub(crate) struct Args {
    /// Invite string (`0ksync1:…`) of the group the responder answers in. Prefer the
    /// environment variable. Not needed with --local.
    #[arg(long, env = INVITE_ENV, hide_env_values = true, value_name = "INVITE",
          required_unless_present = "local", conflicts_with = "local")]
    invite: Option<String>,
    /// Start a relay (the `sync-relay` binary) and a responder (`sync-stress responder`) on
    /// loopback, create the group, run the campaign and stop them.
    #[arg(long)]
    local: bool,
    /// The relay binary for --local. Default: `sync-relay` next to this binary, then on PATH.
    #[arg(long, value_name = "PATH", requires = "local")]
    relay_bin: Option<PathBuf>,
    /// Phase to run.
    #[arg(long, value_enum, default_value_t = PhaseArg::All)]
    phase: PhaseArg,
    /// With --local: route the campaign device's traffic through the UDP impairment proxy with
    /// these impairments, both directions, e.g. `loss=5%,delay=20ms`. Keys: delay, jitter, loss,
    /// reorder, duplicate, rate. The relay then listens on [::1] only and the device on
    /// 127.0.0.1 only, so iroh cannot migrate to a direct path around the proxy.
    #[arg(long, value_name = "SPEC", requires = "local")]
    impair: Option<String>,
    /// Phases during which --impair applies (comma-separated; default: every phase that
    /// runs). Outside them the proxy forwards untouched.
    #[arg(
        long,
        value_name = "PHASES",
        value_enum,
        value_delimiter = ',',
        requires = "impair"
    )]
    impair_phases: Vec<PhaseArg>,
    /// Length of the endurance phase in seconds (1 to 2592000, 30 days).
    #[arg(long, value_name = "SECONDS", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(1..=2_592_000))]
    duration: u64,
    /// Output directory (created). Default: `campaign-<UTC date>-<time>`.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// The relay's HTTP address (`host:port`, as printed after `health:`) for session counts,
    /// when the relay is not local. Only reachable figures are sampled.
    #[arg(long, value_name = "ADDR", conflicts_with = "local")]
    relay_http: Option<SocketAddr>,
    /// The relay's process id, when it runs on this machine (RSS and FDs from /proc).
    #[arg(long, value_name = "PID", conflicts_with = "local")]
    relay_pid: Option<u32>,
    /// Directory of the campaign device's state. Default: temporary (a new device each run).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Text for the report's setup line (e.g. "MacBook (WiFi) ↔ NAS (LAN)").
    #[arg(long, value_name = "TEXT")]
    setup: Option<String>,

    /// Messages in the ping phase (1 to 1,000,000).
    #[arg(long, value_name = "N", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    ping_count: u32,
    /// Pause between pings, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 500)]
    ping_gap_ms: u64,
    /// Rounds in the burst phase (1 to 10,000).
    #[arg(long, value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    burst_rounds: u32,
    /// Messages per burst round, sent back to back (1 to 100,000).
    #[arg(long, value_name = "N", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    burst_size: u32,
    /// Messages in the e2e phase (1 to 1,000,000).
    #[arg(long, value_name = "N", default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    e2e_count: u32,
    /// Messages per second in the endurance phase (0.001 to 1000).
    #[arg(long, value_name = "RATE", default_value_t = 1.0, value_parser = parse_rate)]
    rate: f64,
    /// Length of an endurance rolling-stats window, in seconds (1 to 86400).
    #[arg(long, value_name = "SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    rolling_interval: u64,
    /// Interval between relay samples (RSS, FDs, sessions), in seconds (1 to 86400).
    #[arg(long, value_name = "SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    sample_interval: u64,
    /// A message not answered within this many seconds counts as lost (1 to 86400).
    #[arg(long, value_name = "SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    reply_timeout: u64,

    /// Threshold: largest loss of any phase, percent.
    #[arg(long, value_name = "PCT", default_value_t = 0.0, value_parser = parse_threshold)]
    max_loss_pct: f64,
    /// Threshold: largest p99 RTT of any phase, milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 2000.0, value_parser = parse_threshold)]
    max_p99_ms: f64,
    /// Threshold: largest relay RSS growth after warm-up in the endurance phase, percent per
    /// hour (judged only over at least --min-soak-window seconds).
    #[arg(long, value_name = "PCT", default_value_t = 10.0, value_parser = parse_threshold)]
    max_rss_growth: f64,
    /// Endurance seconds not used for RSS growth (warm-up).
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    rss_warmup: u64,
    /// Shortest window after warm-up over which RSS growth is judged, seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    min_soak_window: u64,
    /// Threshold: open FDs of the relay at the end of endurance may exceed those at its start by
    /// this many.
    #[arg(long, value_name = "N", default_value_t = 2)]
    fd_slack: u64,
}

/// Parses an impairment spec (`loss=5%,delay=20ms,…`) into one direction's configuration.
fn parse_impair(spec: &str) -> anyhow::Result<DirectionConfig> {
    let mut d = DirectionConfig::default();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .with_context(|| format!("--impair: {part:?} is not key=value"))?;
        let v = v.trim();
        match k.trim() {
            "delay" => d.delay = impair::parse_duration(v)?,
            "jitter" => d.jitter = impair::parse_duration(v)?,
            "loss" => d.loss = impair::parse_probability(v)?,
            "reorder" => d.reorder = impair::parse_probability(v)?,
            "duplicate" => d.duplicate = impair::parse_probability(v)?,
            "rate" => d.rate = Some(impair::parse_rate(v)?),
            other => bail!(
                "--impair: unknown key {other:?} (delay, jitter, loss, reorder, duplicate, rate)"
            ),
        }
    }
    d.validate()?;
    Ok(d)
}

/// The impairment proxy between the campaign device and the relay (`--local --impair`).
struct Impair {
    proxy: ProxyHandle,
    spec: String,
    config: ImpairConfig,
    phases: Vec<PhaseArg>,
    periods: Mutex<Vec<Impairment>>,
}

/// Counters when an impaired phase began.
struct ImpairMark {
    from_s: f64,
    stats: ProxyStats,
}

impl Impair {
    fn applies(&self, phase: PhaseArg) -> bool {
        self.phases.is_empty()
            || self.phases.contains(&phase)
            || self.phases.contains(&PhaseArg::All)
    }
}

/// Switches the impairment on for `phase` (when it applies); the mark to end it with.
fn impair_begin(ctx: &Ctx, phase: PhaseArg, name: &str) -> Option<ImpairMark> {
    let imp = ctx.impair.as_ref()?;
    if !imp.applies(phase) {
        return None;
    }
    if let Err(e) = imp.proxy.set_config(imp.config.clone()) {
        tracing::warn!(error = %e, "cannot apply the impairment");
        return None;
    }
    ctx.emit(name, "impairment_start", &[("spec", json!(imp.spec))]);
    Some(ImpairMark {
        from_s: ctx.log.elapsed_s(),
        stats: imp.proxy.stats(),
    })
}

/// Switches the impairment off, records the period and checks that the phase's traffic went
/// through the proxy (a bypass would make the phase meaningless: it then fails).
fn impair_end(ctx: &Ctx, mark: Option<ImpairMark>, result: &mut PhaseResult) {
    let (Some(imp), Some(mark)) = (ctx.impair.as_ref(), mark) else {
        return;
    };
    let _ = imp.proxy.set_config(ImpairConfig::default());
    let now = imp.proxy.stats();
    let to_s = ctx.log.elapsed_s();
    let up = now.up.received - mark.stats.up.received;
    let down = now.down.received - mark.stats.down.received;
    let dropped = (now.up.dropped() + now.down.dropped())
        - (mark.stats.up.dropped() + mark.stats.down.dropped());
    ctx.emit(
        &result.name,
        "impairment_end",
        &[
            ("spec", json!(imp.spec)),
            ("packets_up", json!(up)),
            ("packets_down", json!(down)),
            ("dropped", json!(dropped)),
        ],
    );
    if let Ok(mut p) = imp.periods.lock() {
        p.push(Impairment {
            from_s: mark.from_s,
            to_s,
            spec: imp.spec.clone(),
        });
    }
    result.notes.push(format!(
        "impaired ({}): the proxy carried {up} packets up and {down} down, dropped {dropped}",
        imp.spec
    ));
    let sent = result.summary.as_ref().map_or(0, |s| s.sent);
    if sent > 0 && (up == 0 || down == 0) {
        result.status = PhaseStatus::Fail;
        result
            .notes
            .push("traffic bypassed the impairment proxy: results are not impaired".into());
    }
}

/// A message waiting for its answer.
struct Waiter {
    sent: Instant,
    tx: oneshot::Sender<Answer>,
}

/// An answer as received (verified and decrypted by the client).
#[derive(Debug)]
struct Answer {
    rtt_ms: f64,
    sender: DeviceId,
    data: Vec<u8>,
}

/// A message on its way.
struct Sent {
    sent_s: f64,
    deadline: tokio::time::Instant,
    rx: oneshot::Receiver<Answer>,
}

/// What one message came to.
#[derive(Debug)]
struct Outcome {
    seq: u32,
    sent_s: f64,
    answer: Option<Answer>,
}

/// Shared state of a running campaign.
struct Ctx {
    client: SyncClient,
    log: Arc<EventLog>,
    bar: ProgressBar,
    waiters: Arc<Mutex<HashMap<u64, Waiter>>>,
    next_wire: AtomicU64,
    rejected: Arc<AtomicU64>,
    phase: Arc<Mutex<String>>,
    points: Mutex<Vec<Point>>,
    samples: Arc<Mutex<Vec<Sample>>>,
    target: Target,
    reply_timeout: Duration,
    responder: Mutex<Option<DeviceId>>,
    impair: Option<Impair>,
}

/// The number in an answer (`PONG:<n>`, `BURST-ACK:<n>`, `ECHO:E2E:<n>:…`).
fn answer_number(data: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(data).ok()?;
    let rest = text
        .strip_prefix("PONG:")
        .or_else(|| text.strip_prefix("BURST-ACK:"))
        .or_else(|| text.strip_prefix("ECHO:E2E:"))?;
    rest.split(':').next()?.parse().ok()
}

impl Ctx {
    /// The path the campaign device's packets take, as far as this command knows it: it dials
    /// the relay at its direct address with iroh relay servers and discovery disabled
    /// (`direct`), or the impairment proxy in front of the relay (`impair-proxy`, with
    /// `--impair`, whether or not the current phase is impaired).
    fn path(&self) -> &'static str {
        if self.impair.is_some() {
            "impair-proxy"
        } else {
            "direct"
        }
    }

    fn set_phase(&self, name: &str) {
        if let Ok(mut p) = self.phase.lock() {
            *p = name.to_string();
        }
        self.bar.set_message(name.to_string());
    }

    fn emit(&self, phase: &str, event: &str, fields: &[(&str, Value)]) {
        self.log.emit(phase, event, fields);
    }

    /// Sends `text(n)` with a fresh wire number `n` and waits for its answer (or the reply
    /// timeout).
    async fn exchange(&self, seq: u32, text: impl FnOnce(u64) -> String) -> Outcome {
        let rx = match self.send(text).await {
            Ok(rx) => rx,
            Err(e) => {
                tracing::warn!(error = %e, "push failed");
                return Outcome {
                    seq,
                    sent_s: self.log.elapsed_s(),
                    answer: None,
                };
            }
        };
        self.wait(seq, rx).await
    }

    async fn send(
        &self,
        text: impl FnOnce(u64) -> String,
    ) -> Result<Sent, sync_client::ClientError> {
        let n = self.next_wire.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let sent_s = self.log.elapsed_s();
        let deadline = tokio::time::Instant::now() + self.reply_timeout;
        if let Ok(mut w) = self.waiters.lock() {
            w.insert(
                n,
                Waiter {
                    sent: Instant::now(),
                    tx,
                },
            );
        }
        if let Err(e) = self.client.push_queued(text(n).as_bytes()).await {
            if let Ok(mut w) = self.waiters.lock() {
                w.remove(&n);
            }
            return Err(e);
        }
        Ok(Sent {
            sent_s,
            deadline,
            rx,
        })
    }

    /// Waits for the answer until the message's own deadline (so waiting for many messages one
    /// after the other never extends anyone's timeout).
    async fn wait(&self, seq: u32, sent: Sent) -> Outcome {
        let Sent {
            sent_s,
            deadline,
            rx,
        } = sent;
        let answer = tokio::time::timeout_at(deadline, rx)
            .await
            .ok()
            .and_then(Result::ok);
        self.bar.inc(1);
        if let Ok(mut p) = self.points.lock() {
            p.push(Point {
                sent_s,
                rtt_ms: answer.as_ref().map(|a| a.rtt_ms),
            });
        }
        Outcome {
            seq,
            sent_s,
            answer,
        }
    }

    async fn sample_now(&self) -> Sample {
        let s = soak::sample(&self.target, self.log.elapsed_s()).await;
        let phase = self.phase.lock().map(|p| p.clone()).unwrap_or_default();
        emit_sample(&self.log, &phase, &s);
        if let Ok(mut v) = self.samples.lock() {
            v.push(s);
        }
        s
    }
}

fn emit_sample(log: &EventLog, phase: &str, s: &Sample) {
    log.emit(
        phase,
        "soak_sample",
        &[
            ("rss_kb", json!(s.rss_kb)),
            ("fds", json!(s.fds)),
            ("sessions", json!(s.sessions)),
        ],
    );
}

/// Routes answers from the receiver to their waiters; reports connection changes.
fn spawn_dispatcher(
    mut rx: mpsc::UnboundedReceiver<Incoming>,
    waiters: Arc<Mutex<HashMap<u64, Waiter>>>,
    rejected: Arc<AtomicU64>,
    log: Arc<EventLog>,
    phase: Arc<Mutex<String>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let current = || phase.lock().map(|p| p.clone()).unwrap_or_default();
        while let Some(msg) = rx.recv().await {
            match msg {
                Incoming::Blob(blob) => {
                    let Some(n) = answer_number(&blob.data) else {
                        continue;
                    };
                    let waiter = waiters.lock().ok().and_then(|mut w| w.remove(&n));
                    if let Some(w) = waiter {
                        let rtt_ms = w.sent.elapsed().as_secs_f64() * 1000.0;
                        let _ = w.tx.send(Answer {
                            rtt_ms,
                            sender: blob.sender,
                            data: blob.data,
                        });
                    }
                }
                Incoming::Rejected { sender } => {
                    rejected.fetch_add(1, Ordering::Relaxed);
                    log.emit(
                        &current(),
                        "blob_rejected",
                        &[("sender", json!(sender.short()))],
                    );
                }
                Incoming::Connected => log.emit(&current(), "connected", &[]),
                Incoming::Disconnected { reason } => {
                    log.emit(&current(), "disconnected", &[("reason", json!(reason))]);
                }
                Incoming::PullFailed { reason } => {
                    log.emit(&current(), "pull_failed", &[("reason", json!(reason))]);
                }
                _ => {}
            }
        }
    })
}

fn opt_ms(v: Option<f64>) -> Value {
    v.map_or(Value::Null, |v| json!(round3(v)))
}

fn summary_fields(s: &Summary) -> Vec<(&'static str, Value)> {
    vec![
        ("sent", json!(s.sent)),
        ("received", json!(s.received)),
        ("lost", json!(s.lost)),
        ("loss_pct", json!(round2(s.loss_pct))),
        ("avg_rtt_ms", opt_ms(s.avg_rtt_ms)),
        ("p50_ms", opt_ms(s.p50_ms)),
        ("p95_ms", opt_ms(s.p95_ms)),
        ("p99_ms", opt_ms(s.p99_ms)),
        ("max_ms", opt_ms(s.max_ms)),
    ]
}

fn summarize(outcomes: &[Outcome]) -> Summary {
    let rtts: Vec<f64> = outcomes
        .iter()
        .filter_map(|o| o.answer.as_ref().map(|a| a.rtt_ms))
        .collect();
    let sent = outcomes.len() as u64;
    Summary::new(sent, sent - rtts.len() as u64, &rtts)
}

/// Checks loss and p99 of a phase against the thresholds; failures as notes.
fn check_summary(args: &Args, s: &Summary, notes: &mut Vec<String>) -> bool {
    let mut ok = true;
    if s.sent == 0 {
        notes.push("nothing was sent: the phase measured nothing".into());
        ok = false;
    }
    if s.sent > 0 && s.received == 0 {
        notes.push("no answer at all (is the responder running in this group?)".into());
        ok = false;
    }
    if s.loss_pct > args.max_loss_pct {
        notes.push(format!(
            "loss {:.2} % above the limit {} %",
            s.loss_pct, args.max_loss_pct
        ));
        ok = false;
    }
    if let Some(p99) = s.p99_ms
        && p99 > args.max_p99_ms
    {
        notes.push(format!(
            "p99 RTT {p99:.1} ms above the limit {} ms",
            args.max_p99_ms
        ));
        ok = false;
    }
    ok
}

fn finish_phase(
    ctx: &Ctx,
    args: &Args,
    name: &str,
    start_s: f64,
    summary: Summary,
    mut notes: Vec<String>,
    extra_ok: bool,
) -> PhaseResult {
    let ok = check_summary(args, &summary, &mut notes) && extra_ok;
    let status = if ok {
        PhaseStatus::Pass
    } else {
        PhaseStatus::Fail
    };
    let mut fields = vec![("status", json!(status.label()))];
    fields.extend(summary_fields(&summary));
    fields.push(("notes", json!(notes)));
    ctx.emit(name, "phase_end", &fields);
    PhaseResult {
        name: name.to_string(),
        status,
        summary: Some(summary),
        span_s: Some((start_s, ctx.log.elapsed_s())),
        notes,
    }
}

async fn phase_ping(ctx: &Ctx, args: &Args) -> PhaseResult {
    let start = ctx.log.elapsed_s();
    ctx.set_phase("ping");
    ctx.emit(
        "ping",
        "phase_start",
        &[("messages", json!(args.ping_count))],
    );
    let mut outcomes = Vec::new();
    for seq in 1..=args.ping_count {
        let o = ctx.exchange(seq, |n| format!("PING:{n}")).await;
        match &o.answer {
            Some(a) => {
                note_responder(ctx, a.sender);
                ctx.emit(
                    "ping",
                    "ping",
                    &[
                        ("seq", json!(seq)),
                        ("rtt_ms", json!(round3(a.rtt_ms))),
                        ("path", json!(ctx.path())),
                    ],
                );
            }
            None => ctx.emit(
                "ping",
                "ping",
                &[("seq", json!(seq)), ("lost", json!(true))],
            ),
        }
        outcomes.push(o);
        if seq < args.ping_count {
            tokio::time::sleep(Duration::from_millis(args.ping_gap_ms)).await;
        }
    }
    finish_phase(
        ctx,
        args,
        "ping",
        start,
        summarize(&outcomes),
        Vec::new(),
        true,
    )
}

fn note_responder(ctx: &Ctx, sender: DeviceId) {
    if let Ok(mut r) = ctx.responder.lock()
        && r.is_none()
    {
        *r = Some(sender);
    }
}

async fn phase_burst(ctx: &Ctx, args: &Args) -> PhaseResult {
    let start = ctx.log.elapsed_s();
    ctx.set_phase("burst");
    ctx.emit(
        "burst",
        "phase_start",
        &[
            ("rounds", json!(args.burst_rounds)),
            ("size", json!(args.burst_size)),
        ],
    );
    let mut all = Vec::new();
    let mut notes = Vec::new();
    for round in 1..=args.burst_rounds {
        let mut pending = Vec::new();
        let mut failed = 0u32;
        for i in 1..=args.burst_size {
            let seq = (round - 1) * args.burst_size + i;
            match ctx.send(|n| format!("BURST:{n}")).await {
                Ok(rx) => pending.push((seq, rx)),
                Err(e) => {
                    failed += 1;
                    tracing::warn!(error = %e, "burst push failed");
                }
            }
        }
        if failed > 0 {
            notes.push(format!("round {round}: {failed} pushes refused"));
        }
        let mut outcomes = Vec::with_capacity(pending.len());
        for (seq, sent) in pending {
            outcomes.push(ctx.wait(seq, sent).await);
        }
        for _ in 0..failed {
            outcomes.push(Outcome {
                seq: 0,
                sent_s: ctx.log.elapsed_s(),
                answer: None,
            });
        }
        let s = summarize(&outcomes);
        ctx.emit(
            "burst",
            "burst_round",
            &[
                ("round", json!(round)),
                ("sent", json!(s.sent)),
                ("acked", json!(s.received)),
                ("lost", json!(s.lost)),
                ("avg_rtt_ms", opt_ms(s.avg_rtt_ms)),
                ("p99_ms", opt_ms(s.p99_ms)),
            ],
        );
        all.extend(outcomes);
    }
    finish_phase(ctx, args, "burst", start, summarize(&all), notes, true)
}

fn random_hex(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    if getrandom::fill(&mut bytes).is_err() {
        // Still unique per message thanks to the wire number; only the content check weakens.
        return "0".repeat(len * 2);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The scan of the relay's storage for the e2e phase's plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PlaintextScan {
    /// Remote relay: its storage is not on this machine (not a failure, and said so).
    NotScanned,
    /// Scanned: how many of the messages' plaintexts were found (must be 0).
    Found(usize),
    /// The scan was due (`--local`) but could not be done: the check fails.
    Failed(String),
}

impl PlaintextScan {
    fn ok(&self) -> bool {
        matches!(self, PlaintextScan::NotScanned | PlaintextScan::Found(0))
    }

    fn describe(&self) -> String {
        match self {
            PlaintextScan::NotScanned => "not scanned (remote relay)".into(),
            PlaintextScan::Found(n) => n.to_string(),
            PlaintextScan::Failed(e) => format!("scan FAILED ({e})"),
        }
    }
}

/// What the e2e phase verified.
#[derive(Debug, Clone)]
struct E2eCheck {
    /// Answers whose content, signer or decryption did not check out.
    failed: u32,
    /// Blobs the client rejected (signature or AEAD) during the phase.
    rejected: u64,
    /// The relay storage scan.
    plaintext: PlaintextScan,
}

impl E2eCheck {
    fn ok(&self) -> bool {
        self.failed == 0 && self.rejected == 0 && self.plaintext.ok()
    }
}

async fn phase_e2e(ctx: &Ctx, args: &Args, relay_data: Option<&Path>) -> (PhaseResult, E2eCheck) {
    let start = ctx.log.elapsed_s();
    ctx.set_phase("e2e");
    ctx.emit("e2e", "phase_start", &[("messages", json!(args.e2e_count))]);
    let rejected_before = ctx.rejected.load(Ordering::Relaxed);
    let me = ctx.client.device_id();
    let mut outcomes = Vec::new();
    let mut bad = 0u32;
    let mut markers = Vec::new();
    for seq in 1..=args.e2e_count {
        // 16..=271 random bytes: every message differs in content and length.
        let len = 16 + (seq as usize * 37) % 256;
        let body = random_hex(len);
        let mut sent_text = String::new();
        let o = ctx
            .exchange(seq, |n| {
                sent_text = format!("E2E:{n}:{body}");
                sent_text.clone()
            })
            .await;
        markers.push(body);
        match &o.answer {
            Some(a) => {
                note_responder(ctx, a.sender);
                let expected = ctx.responder.lock().ok().and_then(|r| *r);
                // Decrypted: the client only hands over blobs whose AEAD opened under the group
                // key, and the responder could only echo our exact text if it opened ours.
                let intact = a.data == format!("ECHO:{sent_text}").into_bytes();
                // Signed: the client verified the signature of `sender`; it must be the
                // responder, not us or a third device.
                let signed = a.sender != me && expected == Some(a.sender);
                if !(intact && signed) {
                    bad += 1;
                }
                ctx.emit(
                    "e2e",
                    "message",
                    &[
                        ("seq", json!(seq)),
                        ("encrypted", json!(intact)),
                        ("signed", json!(signed)),
                        ("bytes", json!(sent_text.len())),
                        ("rtt_ms", json!(round3(a.rtt_ms))),
                    ],
                );
            }
            None => ctx.emit(
                "e2e",
                "message",
                &[("seq", json!(seq)), ("lost", json!(true))],
            ),
        }
        outcomes.push(o);
    }
    let rejected = ctx.rejected.load(Ordering::Relaxed) - rejected_before;
    let mut notes = vec![format!(
        "{} answers verified (signature of the responder's device, AEAD, exact echo); {bad} failed; {rejected} blobs rejected by verification",
        outcomes.iter().filter(|o| o.answer.is_some()).count()
    )];
    let mut check = E2eCheck {
        failed: bad,
        rejected,
        plaintext: PlaintextScan::NotScanned,
    };
    if let Some(dir) = relay_data {
        // Reads the whole database: off the async workers.
        let (owned_dir, count) = (dir.to_path_buf(), markers.len());
        let scan = tokio::task::spawn_blocking(move || plaintext_in(&owned_dir, &markers))
            .await
            .map_err(|e| format!("scan task: {e}"))
            .and_then(|r| r.map_err(|e| e.to_string()));
        check.plaintext = match scan {
            Ok(Scanned {
                files,
                bytes,
                found,
            }) => {
                if found == 0 {
                    notes.push(format!(
                        "relay storage scanned ({}, {files} files, {bytes} bytes): no plaintext of the {count} messages found",
                        dir.display(),
                    ));
                } else {
                    notes.push(format!(
                        "PLAINTEXT of {found} messages found in the relay's storage"
                    ));
                }
                PlaintextScan::Found(found)
            }
            Err(e) => {
                notes.push(format!(
                    "relay storage scan FAILED ({}): {e}",
                    dir.display()
                ));
                PlaintextScan::Failed(e)
            }
        };
    }
    ctx.emit(
        "e2e",
        "verification",
        &[
            ("failed", json!(bad)),
            ("rejected", json!(rejected)),
            ("plaintext", json!(check.plaintext.describe())),
        ],
    );
    let summary = summarize(&outcomes);
    let ok = check.ok();
    (
        finish_phase(ctx, args, "e2e", start, summary, notes, ok),
        check,
    )
}

/// What [`plaintext_in`] read and found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Scanned {
    files: usize,
    bytes: usize,
    found: usize,
}

/// How many of `markers` occur in any file under `dir` (the relay's database and WAL). An
/// empty directory is an error: finding nothing in nothing proves nothing.
fn plaintext_in(dir: &Path, markers: &[String]) -> std::io::Result<Scanned> {
    let mut haystack = Vec::new();
    let mut files = 0;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_file() {
            haystack.extend(std::fs::read(&path)?);
            files += 1;
        }
    }
    if haystack.is_empty() {
        return Err(std::io::Error::other(
            "no relay storage found (no file with any content)",
        ));
    }
    let found = markers
        .iter()
        .filter(|m| {
            let needle = &m.as_bytes()[..m.len().min(64)];
            !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
        })
        .count();
    Ok(Scanned {
        files,
        bytes: haystack.len(),
        found,
    })
}

async fn phase_endurance(ctx: &Arc<Ctx>, args: &Args) -> (PhaseResult, soak::Verdict) {
    let start = ctx.log.elapsed_s();
    ctx.set_phase("endurance");
    ctx.emit(
        "endurance",
        "phase_start",
        &[
            ("duration_s", json!(args.duration)),
            ("rate", json!(args.rate)),
        ],
    );
    let first_sample = ctx.samples.lock().map(|v| v.len()).unwrap_or(0);
    ctx.sample_now().await;
    let (tx, mut rx) = mpsc::unbounded_channel::<Outcome>();
    // --rate is 0.001..=1000 (parse_rate): the period is 1 ms to 1000 s, never zero.
    let period = Duration::from_secs_f64(1.0 / args.rate.clamp(MIN_RATE, MAX_RATE))
        .max(Duration::from_millis(1));
    let total = Duration::from_secs(args.duration);
    let sender = {
        let ctx = Arc::clone(ctx);
        tokio::spawn(async move {
            let began = Instant::now();
            let mut ticker = tokio::time::interval(period);
            let mut seq = 0u32;
            let mut tasks = Vec::new();
            loop {
                ticker.tick().await;
                if began.elapsed() >= total {
                    break;
                }
                seq += 1;
                let ctx = Arc::clone(&ctx);
                let tx = tx.clone();
                tasks.push(tokio::spawn(async move {
                    let o = ctx.exchange(seq, |n| format!("PING:{n}")).await;
                    let _ = tx.send(o);
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
        })
    };
    let window = Duration::from_secs(args.rolling_interval.max(1));
    let mut roll = tokio::time::interval_at(tokio::time::Instant::now() + window, window);
    let mut all: Vec<Outcome> = Vec::new();
    let mut win: Vec<Outcome> = Vec::new();
    let mut minute = 0u32;
    let emit_window = |minute: u32, win: &[Outcome]| {
        let s = summarize(win);
        ctx.emit(
            "endurance",
            "rolling_stats",
            &[
                ("minute", json!(minute)),
                ("window_s", json!(args.rolling_interval)),
                ("sent", json!(s.sent)),
                ("received", json!(s.received)),
                ("lost", json!(s.lost)),
                ("loss_pct", json!(round2(s.loss_pct))),
                ("avg_rtt_ms", opt_ms(s.avg_rtt_ms)),
                ("p99_ms", opt_ms(s.p99_ms)),
            ],
        );
    };
    loop {
        tokio::select! {
            o = rx.recv() => {
                let Some(o) = o else { break };
                match &o.answer {
                    Some(a) => ctx.emit("endurance", "message", &[
                        ("seq", json!(o.seq)), ("rtt_ms", json!(round3(a.rtt_ms))),
                    ]),
                    None => ctx.emit("endurance", "message", &[
                        ("seq", json!(o.seq)), ("lost", json!(true)),
                    ]),
                }
                win.push(o);
            }
            _ = roll.tick() => {
                minute += 1;
                emit_window(minute, &win);
                all.append(&mut win);
            }
        }
    }
    let _ = sender.await;
    if !win.is_empty() || minute == 0 {
        minute += 1;
        emit_window(minute, &win);
        all.append(&mut win);
    }
    all.sort_by(|a, b| a.sent_s.total_cmp(&b.sent_s));
    ctx.sample_now().await;
    let samples: Vec<Sample> = ctx
        .samples
        .lock()
        .map(|v| {
            v.get(first_sample..)
                .map(<[Sample]>::to_vec)
                .unwrap_or_default()
        })
        .unwrap_or_default();
    #[allow(clippy::cast_precision_loss)]
    let limits = LeakLimits {
        warmup_s: args.rss_warmup as f64,
        min_window_s: args.min_soak_window as f64,
        max_rss_growth_pct_per_hour: args.max_rss_growth,
        fd_slack: args.fd_slack,
    };
    let verdict = soak::judge(&samples, &limits);
    ctx.emit(
        "endurance",
        "soak_verdict",
        &[("rss", json!(verdict.rss)), ("fds", json!(verdict.fds))],
    );
    let mut notes = Vec::new();
    for (what, c) in [("RSS growth", &verdict.rss), ("open FDs", &verdict.fds)] {
        notes.push(format!("{what}: {} — {}", c.label(), c.detail()));
    }
    let leak_ok = !verdict.rss.failed() && !verdict.fds.failed();
    let result = finish_phase(
        ctx,
        args,
        "endurance",
        start,
        summarize(&all),
        notes,
        leak_ok,
    );
    (result, verdict)
}

fn not_available(ctx: &Ctx, name: &str, why: &str) -> PhaseResult {
    ctx.emit(name, "not_available", &[("reason", json!(why))]);
    PhaseResult {
        name: name.to_string(),
        status: PhaseStatus::NotAvailable,
        summary: None,
        span_s: None,
        notes: vec![why.to_string()],
    }
}

fn skipped(name: &str) -> PhaseResult {
    PhaseResult {
        name: name.to_string(),
        status: PhaseStatus::Skipped,
        summary: None,
        span_s: None,
        notes: Vec::new(),
    }
}

/// `YYYY-MM-DD HH:MM` (UTC) of a unix time in seconds.
fn utc(secs: u64) -> (String, String) {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        format!("{y:04}-{m:02}-{d:02}"),
        format!("{:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60),
    )
}

/// Spawns `cmd` with stdout piped (stderr to `log`) and returns the guard and its stdout lines.
fn spawn_with_lines(
    name: &'static str,
    mut cmd: Command,
    log: &Path,
) -> anyhow::Result<(ChildProcess, mpsc::UnboundedReceiver<String>)> {
    let err =
        std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::from(err))
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start the {name}"))?;
    let (tx, rx) = mpsc::unbounded_channel();
    if let Some(out) = child.stdout.take() {
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    Ok((ChildProcess::new(name, child), rx))
}

/// Waits for the first stdout line with `prefix`; its remainder, trimmed.
async fn wait_line(
    name: &str,
    rx: &mut mpsc::UnboundedReceiver<String>,
    prefix: &str,
    log: &Path,
) -> anyhow::Result<String> {
    let found = tokio::time::timeout(CHILD_TIMEOUT, async {
        while let Some(line) = rx.recv().await {
            if let Some(rest) = line.strip_prefix(prefix) {
                return Some(rest.trim().to_string());
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(v)) => Ok(v),
        Ok(None) => bail!(
            "the {name} exited before printing {prefix:?}; see {}: {}",
            log.display(),
            last_line(log)
        ),
        Err(_) => bail!(
            "the {name} did not print {prefix:?} within {CHILD_TIMEOUT:?}; see {}",
            log.display()
        ),
    }
}

fn last_line(path: &Path) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| {
            t.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(str::to_string)
        })
        .unwrap_or_default()
}

/// The relay and responder of `--local`.
struct LocalLab {
    _temp: tempfile::TempDir,
    relay: RelayProcess,
    responder: ChildProcess,
    relay_bin: PathBuf,
    invite: String,
    responder_id: DeviceId,
}

impl LocalLab {
    async fn start(args: &Args, out: &Path) -> anyhow::Result<LocalLab> {
        let relay_bin = find_relay_bin(args.relay_bin.as_deref())?;
        // Behind the impairment proxy the relay (and the responder, which dials it directly)
        // live on [::1] only, the campaign device on 127.0.0.1 only: no direct path exists for
        // iroh to migrate to, so every campaign packet crosses the proxy.
        let relay_bind: SocketAddr = if args.impair.is_some() {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 0))
        } else {
            SocketAddr::from(([127, 0, 0, 1], 0))
        };
        let temp = tempfile::Builder::new()
            .prefix("sync-stress-local-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        let relay = RelayProcess::builder()
            .bin(&relay_bin)
            .data_dir(temp.path().join("relay"))
            .bind(relay_bind)
            .args(["--stats-interval", "1h"])
            .env(
                "RUST_LOG",
                std::env::var("SYNC_STRESS_RELAY_LOG").unwrap_or_else(|_| "info".into()),
            )
            .log(out.join("relay.log"));
        let relay = tokio::task::spawn_blocking(move || relay.start())
            .await
            .context("the relay start was cancelled")??;
        let invite = device::new_group_invite(
            &relay.relay_addr(),
            Duration::from_secs(24 * 3600)
                .min(Duration::from_secs(args.duration.saturating_add(3600))),
        )
        .context("cannot create the group invite")?;
        let exe = std::env::current_exe().context("cannot find this executable")?;
        let mut cmd = Command::new(exe);
        cmd.arg("responder")
            .arg("--data-dir")
            .arg(temp.path().join("responder"))
            .arg("--bind")
            .arg(relay_bind.to_string())
            .arg("--fast-reconnect")
            .env(INVITE_ENV, &invite)
            .env(
                "RUST_LOG",
                std::env::var("SYNC_STRESS_RESPONDER_LOG").unwrap_or_else(|_| "info".into()),
            );
        let responder_log = out.join("responder.log");
        let (responder, mut rlines) = spawn_with_lines("responder", cmd, &responder_log)?;
        let ready = wait_line(
            "responder",
            &mut rlines,
            "responder ready: device",
            &responder_log,
        )
        .await?;
        let responder_id: DeviceId = ready
            .split_whitespace()
            .next()
            .and_then(|s| s.parse().ok())
            .context("unexpected responder output (ready line)")?;
        Ok(LocalLab {
            _temp: temp,
            relay,
            responder,
            relay_bin,
            invite,
            responder_id,
        })
    }
}

fn default_out() -> PathBuf {
    let secs = unix_ms() / 1000;
    let (d, t) = utc(secs);
    PathBuf::from(format!("campaign-{d}-{}", t.replace(':', "")))
}

/// Runs the campaign; see the module documentation for exit codes.
#[allow(clippy::too_many_lines)]
pub(crate) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    crate::responder::init_logging();
    let impair_dir = args.impair.as_deref().map(parse_impair).transpose()?;
    let out = args.out.clone().unwrap_or_else(default_out);
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let started_unix = unix_ms() / 1000;
    let t0 = Instant::now();

    let mut local = if args.local {
        Some(
            LocalLab::start(&args, &out)
                .await
                .context("--local setup failed")?,
        )
    } else {
        None
    };
    let invite = match (&local, &args.invite) {
        (Some(l), _) => l.invite.clone(),
        (None, Some(i)) => i.clone(),
        (None, None) => bail!("--invite (or {INVITE_ENV}) is required without --local"),
    };
    let joined = device::parse_invite(&invite).context("cannot use the invite")?;
    let target = match &local {
        Some(l) => Target {
            pid: l.relay.pid(),
            http: Some(l.relay.http_addr()),
        },
        None => Target {
            pid: args.relay_pid,
            http: args.relay_http,
        },
    };

    // Progress bar on a terminal only; the JSONL goes to stdout either way.
    let bar = if std::io::stderr().is_terminal() {
        let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        b.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {msg:>10} {wide_bar} {pos}/{len}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    } else {
        ProgressBar::hidden()
    };
    let echo_bar = bar.clone();
    let echo: sync_lab::events::Echo = Box::new(move |line: &str| {
        echo_bar.suspend(|| {
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "{line}");
            let _ = stdout.flush();
        });
    });
    let log = Arc::new(
        EventLog::create(&out.join("events.jsonl"), t0, echo)
            .with_context(|| format!("cannot write {}", out.join("events.jsonl").display()))?,
    );

    let temp_device;
    let device_dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => {
            temp_device = tempfile::tempdir().context("cannot create a temporary data dir")?;
            temp_device.path().to_path_buf()
        }
    };
    std::fs::create_dir_all(&device_dir)
        .with_context(|| format!("cannot create {}", device_dir.display()))?;
    let bind = if local.is_some() {
        SocketAddr::from(([127, 0, 0, 1], 0))
    } else {
        bind_addr_for(&joined.relay.socket_addrs())
    };
    let mut impair_state = None;
    let mut dial = None;
    if let (Some(dir), Some(spec)) = (&impair_dir, &args.impair) {
        let upstream = *joined
            .relay
            .socket_addrs()
            .first()
            .context("the relay has no address")?;
        let proxy = Proxy::start(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            upstream,
            ImpairConfig::default(),
        )
        .await
        .context("cannot start the impairment proxy")?;
        dial = Some(vec![proxy.local_addr()]);
        impair_state = Some(Impair {
            proxy,
            spec: spec.clone(),
            config: ImpairConfig::symmetric(dir.clone()),
            phases: args.impair_phases.clone(),
            periods: Mutex::new(Vec::new()),
        });
    }
    let client = tokio::time::timeout(
        CHILD_TIMEOUT,
        device::connect(
            &joined,
            &device_dir,
            dial,
            bind,
            "sync-stress campaign",
            local.is_some(),
        ),
    )
    .await
    .context("connecting to the relay timed out")?
    .context("cannot start the campaign device")?;
    if !matches!(
        client.status().connection,
        sync_core::ConnectionStatus::Connected
    ) {
        client.close().await;
        bail!(
            "cannot reach the relay at {} (connection {:?})",
            joined.relay.addrs.join(", "),
            client.status().connection
        );
    }

    let selected = |p: PhaseArg| args.phase == PhaseArg::All || args.phase == p;
    let planned: u64 = [
        (PhaseArg::Ping, u64::from(args.ping_count)),
        (
            PhaseArg::Burst,
            u64::from(args.burst_rounds) * u64::from(args.burst_size),
        ),
        (PhaseArg::E2e, u64::from(args.e2e_count)),
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        (
            PhaseArg::Endurance,
            (args.duration as f64 * args.rate) as u64,
        ),
    ]
    .iter()
    .filter(|(p, _)| selected(*p))
    .map(|(_, n)| n)
    .sum();
    bar.set_length(planned);

    let waiters = Arc::new(Mutex::new(HashMap::new()));
    let rejected = Arc::new(AtomicU64::new(0));
    let phase = Arc::new(Mutex::new("setup".to_string()));
    let (tx, rx) = mpsc::unbounded_channel();
    let receiver = device::spawn_receiver(client.clone(), tx, Duration::from_secs(2));
    let dispatcher = spawn_dispatcher(
        rx,
        Arc::clone(&waiters),
        Arc::clone(&rejected),
        Arc::clone(&log),
        Arc::clone(&phase),
    );
    // Wire numbers start at a random base so answers to an earlier run in the same group are
    // never taken for this run's.
    let mut base = [0u8; 4];
    let _ = getrandom::fill(&mut base);
    let base = u64::from(u32::from_le_bytes(base)) * 1_000_000 + 1;
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        log: Arc::clone(&log),
        bar: bar.clone(),
        waiters,
        next_wire: AtomicU64::new(base),
        rejected,
        phase: Arc::clone(&phase),
        points: Mutex::new(Vec::new()),
        samples: Arc::new(Mutex::new(Vec::new())),
        target: target.clone(),
        reply_timeout: Duration::from_secs(args.reply_timeout.max(1)),
        responder: Mutex::new(local.as_ref().map(|l| l.responder_id)),
        impair: impair_state,
    });

    let status = client.status();
    let mode = if local.is_some() {
        "local (relay and responder started by this command on 127.0.0.1)"
    } else {
        "remote relay"
    };
    log.emit(
        "setup",
        "campaign_start",
        &[
            ("mode", json!(mode)),
            ("relay_addrs", json!(joined.relay.addrs)),
            ("device", json!(status.device_id.short())),
            ("group", json!(status.group_id.short())),
            ("phase", json!(format!("{:?}", args.phase).to_lowercase())),
            ("sampling", json!(target.describe())),
        ],
    );

    // Periodic relay samples for the whole run.
    let sampler = {
        let ctx = Arc::clone(&ctx);
        let every = Duration::from_secs(args.sample_interval.max(1));
        tokio::spawn(async move {
            let mut t = tokio::time::interval(every);
            loop {
                t.tick().await;
                ctx.sample_now().await;
            }
        })
    };

    let mut phases = Vec::new();
    let mut soak_verdict = None;
    let relay_data = local.as_ref().map(|l| l.relay.data_dir().to_path_buf());
    phases.push(if selected(PhaseArg::Ping) {
        let mark = impair_begin(&ctx, PhaseArg::Ping, "ping");
        let mut p = phase_ping(&ctx, &args).await;
        impair_end(&ctx, mark, &mut p);
        p
    } else {
        skipped("ping")
    });
    phases.push(if selected(PhaseArg::Burst) {
        let mark = impair_begin(&ctx, PhaseArg::Burst, "burst");
        let mut p = phase_burst(&ctx, &args).await;
        impair_end(&ctx, mark, &mut p);
        p
    } else {
        skipped("burst")
    });
    let mut e2e_check = None;
    phases.push(if selected(PhaseArg::E2e) {
        let mark = impair_begin(&ctx, PhaseArg::E2e, "e2e");
        let (mut p, c) = phase_e2e(&ctx, &args, relay_data.as_deref()).await;
        impair_end(&ctx, mark, &mut p);
        e2e_check = Some(c);
        p
    } else {
        skipped("e2e")
    });
    phases.push(if selected(PhaseArg::Group) {
        not_available(&ctx, "group", "group encryption with key rotation is not implemented yet (no key rotation in sync-crypto/sync-client)")
    } else {
        skipped("group")
    });
    phases.push(if selected(PhaseArg::Failover) {
        not_available(
            &ctx,
            "failover",
            "relay failover is not implemented yet (a client dials one relay)",
        )
    } else {
        skipped("failover")
    });
    if selected(PhaseArg::Endurance) {
        let mark = impair_begin(&ctx, PhaseArg::Endurance, "endurance");
        let (mut p, v) = phase_endurance(&ctx, &args).await;
        impair_end(&ctx, mark, &mut p);
        phases.push(p);
        soak_verdict = Some(v);
    } else {
        phases.push(skipped("endurance"));
    }
    ctx.set_phase("teardown");
    sampler.abort();
    if let Some(i) = &ctx.impair {
        let st = i.proxy.stats();
        log.emit(
            "teardown",
            "proxy_stats",
            &[("up", json!(st.up)), ("down", json!(st.down))],
        );
    }
    ctx.sample_now().await;
    receiver.abort();
    client.close().await;
    dispatcher.abort();
    if let Some(i) = &ctx.impair {
        i.proxy.shutdown();
    }

    // Stop the local processes (SIGTERM) and note how they went.
    let mut setup_notes = Vec::new();
    let mut stop_ok = true;
    if let Some(l) = local.as_mut() {
        let stopped = tokio::task::block_in_place(|| {
            [
                ("responder", l.responder.stop(CHILD_TIMEOUT)),
                ("relay", l.relay.stop()),
            ]
        });
        for (name, outcome) in stopped {
            stop_ok &= outcome.is_clean();
            let how = outcome.to_string();
            log.emit(
                "teardown",
                "process_stopped",
                &[("process", json!(name)), ("result", json!(how))],
            );
            setup_notes.push((format!("local {name}"), how));
        }
    }

    // Thresholds and verdict.
    let ran: Vec<&PhaseResult> = phases.iter().filter(|p| p.summary.is_some()).collect();
    let worst_loss = ran
        .iter()
        .filter_map(|p| p.summary.as_ref().map(|s| (p.name.clone(), s.loss_pct)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    let worst_p99 = ran
        .iter()
        .filter_map(|p| {
            p.summary
                .as_ref()
                .and_then(|s| s.p99_ms.map(|v| (p.name.clone(), v)))
        })
        .max_by(|a, b| a.1.total_cmp(&b.1));
    let mut thresholds = vec![
        ThresholdRow {
            name: "loss, each phase (--max-loss-pct)".into(),
            limit: format!("≤ {} %", args.max_loss_pct),
            observed: worst_loss
                .as_ref()
                .map_or("–".into(), |(n, v)| format!("{v:.2} % ({n})")),
            ok: worst_loss
                .as_ref()
                .is_none_or(|(_, v)| *v <= args.max_loss_pct),
        },
        ThresholdRow {
            name: "p99 RTT, each phase (--max-p99-ms)".into(),
            limit: format!("≤ {} ms", args.max_p99_ms),
            observed: worst_p99
                .as_ref()
                .map_or("–".into(), |(n, v)| format!("{v:.1} ms ({n})")),
            ok: worst_p99
                .as_ref()
                .is_none_or(|(_, v)| *v <= args.max_p99_ms),
        },
    ];
    if let Some(c) = e2e_check {
        thresholds.push(ThresholdRow {
            name: "e2e: answers failing verification, blobs rejected, plaintext at the relay"
                .into(),
            limit: "0, 0, 0".into(),
            observed: format!("{}, {}, {}", c.failed, c.rejected, c.plaintext.describe()),
            ok: c.ok(),
        });
    }
    if let Some(v) = &soak_verdict {
        thresholds.push(ThresholdRow {
            name: "relay RSS growth after warm-up (--max-rss-growth)".into(),
            limit: format!(
                "≤ {} %/h over ≥ {} s",
                args.max_rss_growth, args.min_soak_window
            ),
            observed: format!("{}: {}", v.rss.label(), v.rss.detail()),
            ok: !v.rss.failed(),
        });
        thresholds.push(ThresholdRow {
            name: "relay open FDs back to baseline (--fd-slack)".into(),
            limit: format!("≤ baseline + {}", args.fd_slack),
            observed: format!("{}: {}", v.fds.label(), v.fds.detail()),
            ok: !v.fds.failed(),
        });
    }
    let any_fail = phases.iter().any(|p| p.status == PhaseStatus::Fail);
    // A campaign passes only on what it measured: phases that are not available (or sent
    // nothing) never make a PASS on their own.
    let measured = phases
        .iter()
        .any(|p| p.summary.as_ref().is_some_and(|s| s.sent > 0));
    let (end_status, verdict, code) = if any_fail {
        ("FAIL", "FAIL: a threshold was missed", EXIT_THRESHOLD)
    } else if !measured {
        (
            "NOT MEASURED",
            "NOT MEASURED: no phase that ran measured anything",
            EXIT_NOTHING_MEASURED,
        )
    } else {
        ("PASS", "PASS", 0)
    };
    let verdict = format!("{verdict} (exit {code})");
    let duration_s = log.elapsed_s();
    log.emit(
        "summary",
        "campaign_end",
        &[
            ("status", json!(end_status)),
            ("exit_code", json!(code)),
            ("duration_s", json!(round3(duration_s))),
            (
                "phases",
                json!(
                    phases
                        .iter()
                        .map(|p| json!({"phase": p.name, "status": p.status.label()}))
                        .collect::<Vec<_>>()
                ),
            ),
        ],
    );
    bar.finish_and_clear();

    let (date, time) = utc(started_unix);
    let mut setup = vec![
        ("date".to_string(), format!("{date} {time} UTC")),
        (
            "setup".to_string(),
            args.setup.clone().unwrap_or_else(|| {
                if local.is_some() {
                    "one machine, loopback (--local)".to_string()
                } else {
                    "campaign device ↔ relay ↔ responder device".to_string()
                }
            }),
        ),
        ("mode".to_string(), mode.to_string()),
        (
            "impairment".to_string(),
            ctx.impair.as_ref().map_or_else(
                || "none".to_string(),
                |i| {
                    format!(
                        "`{}` both directions during {}; campaign device (127.0.0.1) → proxy {} → relay {}; the responder dials the relay directly",
                        i.spec,
                        if i.phases.is_empty() || i.phases.contains(&PhaseArg::All) {
                            "every phase".to_string()
                        } else {
                            i.phases
                                .iter()
                                .map(|p| format!("{p:?}").to_lowercase())
                                .collect::<Vec<_>>()
                                .join(", ")
                        },
                        i.proxy.local_addr(),
                        i.proxy.upstream()
                    )
                },
            ),
        ),
        (
            "relay".to_string(),
            format!(
                "{} at {}",
                joined.relay.id.short(),
                joined.relay.addrs.join(", ")
            ),
        ),
        ("campaign device".to_string(), status.device_id.short()),
        (
            "responder device".to_string(),
            ctx.responder
                .lock()
                .ok()
                .and_then(|r| r.map(|d| d.short()))
                .unwrap_or_else(|| "never answered".into()),
        ),
        ("group".to_string(), status.group_id.short()),
        (
            "message path".to_string(),
            "campaign → relay → responder → relay → campaign; RTT = push until the answer is pulled, verified and decrypted".to_string(),
        ),
        (
            "counts".to_string(),
            format!(
                "ping {} (gap {} ms), burst {}×{}, e2e {}, endurance {} s at {}/s (windows of {} s), reply timeout {} s",
                args.ping_count, args.ping_gap_ms, args.burst_rounds, args.burst_size, args.e2e_count,
                args.duration, args.rate, args.rolling_interval, args.reply_timeout
            ),
        ),
    ];
    if let Some(l) = &local {
        setup.push((
            "relay binary".to_string(),
            l.relay_bin.display().to_string(),
        ));
    }
    setup.extend(setup_notes);
    setup.push(("output".to_string(), out.display().to_string()));
    let samples = ctx.samples.lock().map(|v| v.clone()).unwrap_or_default();
    let mut points = ctx.points.lock().map(|v| v.clone()).unwrap_or_default();
    points.sort_by(|a, b| a.sent_s.total_cmp(&b.sent_s));
    let rep = Report {
        title: format!("sync-stress campaign — {date} {time} UTC"),
        setup,
        phases,
        thresholds,
        verdict,
        points,
        samples,
        sampling: target.describe(),
        soak: soak_verdict,
        impairments: ctx
            .impair
            .as_ref()
            .and_then(|i| i.periods.lock().ok().map(|p| p.clone()))
            .unwrap_or_default(),
        duration_s,
    };
    log.finish().context("cannot write events.jsonl")?;
    std::fs::write(out.join("campaign-report.md"), report::markdown(&rep))
        .context("cannot write campaign-report.md")?;
    std::fs::write(out.join("report.html"), report::html(&rep))
        .context("cannot write report.html")?;
    eprintln!(
        "sync-stress: {} — reports in {}",
        rep.verdict,
        out.display()
    );
    if !stop_ok {
        bail!(
            "a local process did not stop cleanly (see the report's setup and {})",
            out.display()
        );
    }
    Ok(ExitCode::from(code))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn answer_numbers() {
        assert_eq!(answer_number(b"PONG:42"), Some(42));
        assert_eq!(answer_number(b"BURST-ACK:7"), Some(7));
        assert_eq!(answer_number(b"ECHO:E2E:9:abcd"), Some(9));
        assert_eq!(answer_number(b"ECHO:hello"), None);
        assert_eq!(answer_number(b"PING:1"), None);
    }

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(extra: &[&str]) -> Result<Args, clap::Error> {
        use clap::Parser as _;
        let mut argv = vec!["campaign", "--local"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).map(|c| c.args)
    }

    #[test]
    fn counts_that_measure_nothing_and_rates_without_a_period_are_refused() {
        assert!(parse(&[]).is_ok());
        for bad in [
            &["--ping-count", "0"][..],
            &["--e2e-count", "0"],
            &["--burst-size", "0"],
            &["--burst-rounds", "0"],
            &["--duration", "0"],
            &["--rate", "0"],
            &["--rate", "1e9"],
            &["--rate", "1000.5"],
            &["--rate", "NaN"],
            &["--rate", "inf"],
            &["--reply-timeout", "18446744073709551615"],
            &["--max-loss-pct", "NaN"],
            &["--max-p99-ms", "-1"],
        ] {
            let e = parse(bad).expect_err(&format!("{bad:?} must be refused"));
            assert_eq!(e.exit_code(), 2, "{bad:?}: a bad command line");
        }
        let a = parse(&["--rate", "1000", "--duration", "5"]).unwrap();
        assert!((a.rate - 1000.0).abs() < f64::EPSILON);
    }

    #[test]
    fn a_phase_that_sent_nothing_fails() {
        let args = parse(&[]).unwrap();
        let mut notes = Vec::new();
        assert!(!check_summary(&args, &Summary::new(0, 0, &[]), &mut notes));
        assert!(notes[0].contains("measured nothing"), "{notes:?}");
        let mut notes = Vec::new();
        assert!(check_summary(
            &args,
            &Summary::new(2, 0, &[1.0, 2.0]),
            &mut notes
        ));
    }

    #[test]
    fn the_plaintext_scan_finds_markers_and_a_failed_scan_fails_the_check() {
        let dir = tempfile::tempdir().unwrap();
        let markers = vec!["aaaa1111".to_string(), "bbbb2222".to_string()];
        // Nothing to scan is an error, not a clean result.
        assert!(plaintext_in(dir.path(), &markers).is_err());
        assert!(plaintext_in(&dir.path().join("missing"), &markers).is_err());
        std::fs::write(dir.path().join("relay.db"), b"xx aaaa1111 yy").unwrap();
        let s = plaintext_in(dir.path(), &markers).unwrap();
        assert_eq!((s.files, s.found), (1, 1));

        let check = |plaintext| E2eCheck {
            failed: 0,
            rejected: 0,
            plaintext,
        };
        assert!(check(PlaintextScan::NotScanned).ok());
        assert!(check(PlaintextScan::Found(0)).ok());
        assert!(!check(PlaintextScan::Found(1)).ok());
        let failed = PlaintextScan::Failed("permission denied".into());
        assert!(failed.describe().contains("FAILED"));
        assert!(!check(failed).ok(), "with --local a scan error fails e2e");
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), ("1970-01-01".into(), "00:00:00".into()));
        assert_eq!(
            utc(1_795_305_600 + 3661),
            ("2026-11-22".into(), "01:01:01".into())
        );
    }
}
