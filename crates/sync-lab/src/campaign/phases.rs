//! The campaign's phases that exchange plain messages with the responder — ping (RTT
//! baseline), burst (loss under load), endurance (a steady rate for a long time, rolling
//! statistics and the relay's leak checks) — and the phases that are not available yet. The
//! e2e phase has its own module.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::args::{Args, MAX_RATE, MIN_RATE};
use super::session::{Exchange, Session};
use super::verdict::{Thresholds, check_phase};
use crate::events::round3;
use crate::report::{PhaseResult, PhaseStatus};
use crate::soak::{self, Sample};
use crate::stats::{Summary, round2};

/// A round-trip time for an event, rounded; `null` when there is none.
fn opt_ms(v: Option<f64>) -> Value {
    v.map_or(Value::Null, |v| json!(round3(v)))
}

/// The fields of a `phase_end` event's figures.
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

/// The figures of some messages.
pub(super) fn summarize(exchanges: &[Exchange]) -> Summary {
    let rtts: Vec<f64> = exchanges
        .iter()
        .filter_map(|o| o.answer.as_ref().map(|a| a.rtt_ms))
        .collect();
    let sent = exchanges.len() as u64;
    Summary::new(sent, sent - rtts.len() as u64, &rtts)
}

/// The event of one message: its RTT, or that it was lost.
pub(super) fn message_fields(e: &Exchange) -> Vec<(&'static str, Value)> {
    match &e.answer {
        Some(a) => vec![("seq", json!(e.seq)), ("rtt_ms", json!(round3(a.rtt_ms)))],
        None => vec![("seq", json!(e.seq)), ("lost", json!(true))],
    }
}

/// Ends a phase: holds its figures against the thresholds (and `extra_ok`, the phase's own
/// checks), writes `phase_end` and returns the result.
pub(super) fn finish(
    session: &Session,
    limits: &Thresholds,
    name: &str,
    start_s: f64,
    summary: Summary,
    mut notes: Vec<String>,
    extra_ok: bool,
) -> PhaseResult {
    let failures = check_phase(&summary, limits);
    let status = if failures.is_empty() && extra_ok {
        PhaseStatus::Pass
    } else {
        PhaseStatus::Fail
    };
    notes.extend(failures);
    let mut fields = vec![("status", json!(status.label()))];
    fields.extend(summary_fields(&summary));
    fields.push(("notes", json!(notes)));
    session.emit(name, "phase_end", &fields);
    PhaseResult {
        name: name.to_string(),
        status,
        summary: Some(summary),
        span_s: Some((start_s, session.log.elapsed_s())),
        notes,
    }
}

/// Marks the start of phase `name` with its parameters; the start time.
pub(super) fn begin(session: &Session, name: &str, fields: &[(&str, Value)]) -> f64 {
    let start = session.log.elapsed_s();
    session.set_phase(name);
    session.emit(name, "phase_start", fields);
    start
}

/// Ping: one message at a time, `--ping-gap-ms` apart.
pub(super) async fn ping(session: &Session, args: &Args) -> PhaseResult {
    let start = begin(session, "ping", &[("messages", json!(args.ping_count))]);
    let mut exchanges = Vec::new();
    for seq in 1..=args.ping_count {
        let e = session.exchange(seq, |n| format!("PING:{n}")).await;
        let mut fields = message_fields(&e);
        if let Some(a) = &e.answer {
            session.note_responder(a.sender);
            fields.push(("path", json!(session.path())));
        }
        session.emit("ping", "ping", &fields);
        exchanges.push(e);
        if seq < args.ping_count {
            tokio::time::sleep(Duration::from_millis(args.ping_gap_ms)).await;
        }
    }
    let summary = summarize(&exchanges);
    finish(
        session,
        &args.thresholds(),
        "ping",
        start,
        summary,
        Vec::new(),
        true,
    )
}

/// Burst: `--burst-rounds` rounds of `--burst-size` messages sent back to back.
pub(super) async fn burst(session: &Session, args: &Args) -> PhaseResult {
    let start = begin(
        session,
        "burst",
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
            match session.send(|n| format!("BURST:{n}")).await {
                Ok(sent) => pending.push((seq, sent)),
                Err(e) => {
                    failed += 1;
                    tracing::warn!(error = %e, "burst push failed");
                }
            }
        }
        if failed > 0 {
            notes.push(format!("round {round}: {failed} pushes refused"));
        }
        let mut exchanges = Vec::with_capacity(pending.len());
        for (seq, sent) in pending {
            exchanges.push(session.wait(seq, sent).await);
        }
        exchanges.extend((0..failed).map(|_| session.unsent(0)));
        let s = summarize(&exchanges);
        session.emit(
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
        all.extend(exchanges);
    }
    let summary = summarize(&all);
    finish(
        session,
        &args.thresholds(),
        "burst",
        start,
        summary,
        notes,
        true,
    )
}

/// Pings at `--rate` for `--duration`, each message on its own task (a slow answer never
/// delays the next message); every exchange is sent to `tx`.
fn spawn_pacer(
    session: &Arc<Session>,
    args: &Args,
    tx: mpsc::UnboundedSender<Exchange>,
) -> tokio::task::JoinHandle<()> {
    // --rate is MIN_RATE..=MAX_RATE (checked on the command line): the period is 1 ms to
    // 1000 s, never zero.
    let period = Duration::from_secs_f64(1.0 / args.rate.clamp(MIN_RATE, MAX_RATE))
        .max(Duration::from_millis(1));
    let total = Duration::from_secs(args.duration);
    let session = Arc::clone(session);
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
            let session = Arc::clone(&session);
            let tx = tx.clone();
            tasks.push(tokio::spawn(async move {
                let e = session.exchange(seq, |n| format!("PING:{n}")).await;
                let _ = tx.send(e);
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    })
}

/// Endurance: pings at `--rate` for `--duration` with rolling statistics every
/// `--rolling-interval`, then the relay's leak checks over the samples taken meanwhile.
pub(super) async fn endurance(session: &Arc<Session>, args: &Args) -> (PhaseResult, soak::Verdict) {
    let start = begin(
        session,
        "endurance",
        &[
            ("duration_s", json!(args.duration)),
            ("rate", json!(args.rate)),
        ],
    );
    let first_sample = session.samples.lock().map(|v| v.len()).unwrap_or(0);
    session.sample_now().await;
    let (tx, mut rx) = mpsc::unbounded_channel::<Exchange>();
    let pacer = spawn_pacer(session, args, tx);
    let window = Duration::from_secs(args.rolling_interval.max(1));
    let mut roll = tokio::time::interval_at(tokio::time::Instant::now() + window, window);
    let mut all: Vec<Exchange> = Vec::new();
    let mut win: Vec<Exchange> = Vec::new();
    let mut minute = 0u32;
    let emit_window = |minute: u32, win: &[Exchange]| {
        let s = summarize(win);
        session.emit(
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
            e = rx.recv() => {
                let Some(e) = e else { break };
                session.emit("endurance", "message", &message_fields(&e));
                win.push(e);
            }
            _ = roll.tick() => {
                minute += 1;
                emit_window(minute, &win);
                all.append(&mut win);
            }
        }
    }
    let _ = pacer.await;
    if !win.is_empty() || minute == 0 {
        minute += 1;
        emit_window(minute, &win);
        all.append(&mut win);
    }
    all.sort_by(|a, b| a.sent_s.total_cmp(&b.sent_s));
    session.sample_now().await;
    let samples: Vec<Sample> = session
        .samples
        .lock()
        .map(|v| {
            v.get(first_sample..)
                .map(<[Sample]>::to_vec)
                .unwrap_or_default()
        })
        .unwrap_or_default();
    let limits = args.thresholds();
    let verdict = soak::judge(&samples, &limits.leak_limits());
    session.emit(
        "endurance",
        "soak_verdict",
        &[("rss", json!(verdict.rss)), ("fds", json!(verdict.fds))],
    );
    let notes = [("RSS growth", &verdict.rss), ("open FDs", &verdict.fds)]
        .iter()
        .map(|(what, c)| format!("{what}: {} — {}", c.label(), c.detail()))
        .collect();
    let leak_ok = !verdict.rss.failed() && !verdict.fds.failed();
    let summary = summarize(&all);
    let result = finish(
        session,
        &limits,
        "endurance",
        start,
        summary,
        notes,
        leak_ok,
    );
    (result, verdict)
}

/// Ends phase `name` when it could not be set up: writes `setup_failed` with `why`, then a
/// failed `phase_end` that measured nothing, with `note`.
pub(super) fn setup_failed(
    session: &Session,
    limits: &Thresholds,
    name: &str,
    start_s: f64,
    why: &str,
    note: String,
) -> PhaseResult {
    session.emit(name, "setup_failed", &[("error", json!(why))]);
    finish(
        session,
        limits,
        name,
        start_s,
        Summary::new(0, 0, &[]),
        vec![note],
        false,
    )
}

/// Milliseconds since `t`.
pub(super) fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// A selected phase whose feature does not exist yet: never counted as passed.
pub(super) fn not_available(session: &Session, name: &str, why: &str) -> PhaseResult {
    session.emit(name, "not_available", &[("reason", json!(why))]);
    PhaseResult {
        name: name.to_string(),
        status: PhaseStatus::NotAvailable,
        summary: None,
        span_s: None,
        notes: vec![why.to_string()],
    }
}

/// A phase not selected for this run.
pub(super) fn skipped(name: &str) -> PhaseResult {
    PhaseResult {
        name: name.to_string(),
        status: PhaseStatus::Skipped,
        summary: None,
        span_s: None,
        notes: Vec::new(),
    }
}
