//! The failover phase: a private PostgreSQL server, two relay processes on one database of it
//! (they share one log per group), and the phase's devices — `--failover-pushers` pushers and
//! a reader, in this process, in a new group of their own — each configured with both relays,
//! the first one first. The pushers push at `--failover-rate` each until `--failover-messages`
//! are pushed; once a third of them were acknowledged, the relay the devices use is SIGKILLed
//! and the pushers keep pushing (into their outboxes) while the devices notice the loss and
//! move to the other relay. Measured:
//!
//! - messages lost (pushed, never read by the reader) and duplicated (read more than once):
//!   both must be 0;
//! - the interruption: from the last push acknowledged before the kill to the first one
//!   acknowledged by the next relay;
//! - per device, the loss-detection time (kill → its session ended) and the time to reconnect
//!   (session ended → connected to the other relay).
//!
//! The kill is marked on the charts. The campaign device and the responder take no part.

mod tally;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::json;
use sync_client::{
    ClientError, ClientOptions, GroupMaterial, IrohConfig, StreamExt as _, SyncClient, SyncEvent,
};
use sync_testkit::{PostgresServer, RelayProcess};
use sync_types::{RelayAddr, RelayId};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use self::tally::{Got, Pushed, count, interruption, message_text, parse_message};
use super::Args;
use super::group::{close_all, connect_with, spawn_batches, until_members};
use super::local::{CHILD_TIMEOUT, log_filter};
use super::phases::{self, begin, finish, ms_since};
use super::session::Session;
use super::verdict::{FAILOVER_PHASE, FailoverCheck, Interruption, Thresholds};
use crate::device;
use crate::events::round3;
use crate::report::PhaseResult;
use crate::stats::Summary;

/// How long the devices may take to move to the other relay after the kill (the loss is
/// noticed within the client's idle timeout, about 6 s).
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the reader pulls even without an announcement (a safety net).
const READER_POLL: Duration = Duration::from_secs(2);
/// What the failover phase needs from the campaign: the relay binary and where logs go.
#[derive(Debug, Clone)]
pub(in crate::campaign) struct FailoverTarget {
    /// The `sync-relay` binary (the one `--local` runs).
    pub(in crate::campaign) relay_bin: PathBuf,
    /// The campaign's output directory (the relays' logs).
    pub(in crate::campaign) out: PathBuf,
}

/// The PostgreSQL server, the relays and the devices of the phase. The server and the relays
/// are killed when dropped, whatever happens.
struct Lab {
    relays: Vec<RelayProcess>,
    /// Pushers first, the reader last.
    clients: Vec<SyncClient>,
    // Last: the relays go first.
    _pg: Option<PostgresServer>,
}

/// What the phase's tasks record.
#[derive(Debug, Default)]
struct State {
    pushed: HashMap<(usize, u32), Pushed>,
    got: HashMap<(usize, u32), Got>,
    /// Every acknowledgement a pusher saw, when.
    acks: Vec<Instant>,
    push_failures: u64,
    /// The kill, and the relay killed.
    kill: Option<(Instant, RelayId)>,
    /// Per device: its first session loss after the kill.
    lost: Vec<Option<Instant>>,
    /// Per device: its first session on another relay after the kill.
    moved: Vec<Option<(Instant, RelayId)>>,
}

/// The phase's shared record and its wake-ups.
struct Shared {
    state: Mutex<State>,
    changed: Notify,
    session: Arc<Session>,
    names: Vec<String>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn name(&self, d: usize) -> &str {
        self.names.get(d).map_or("?", String::as_str)
    }

    /// Waits until `done` holds for the state or `deadline`; whether it held.
    async fn until(&self, deadline: tokio::time::Instant, done: impl Fn(&State) -> bool) -> bool {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if done(&self.state()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return done(&self.state());
            }
        }
    }

    /// Every device is on another relay than the one killed.
    fn all_moved(st: &State) -> bool {
        st.moved.iter().all(Option::is_some)
    }
}

/// Runs the failover phase with the relay binary and output directory of `target`.
pub(in crate::campaign) async fn run(
    session: &Arc<Session>,
    args: &Args,
    target: &FailoverTarget,
) -> (PhaseResult, FailoverCheck) {
    let pushers = usize::from(args.failover_pushers);
    let start = begin(
        session,
        FAILOVER_PHASE,
        &[
            ("messages", json!(args.failover_messages)),
            ("pushers", json!(pushers)),
            ("rate_per_pusher", json!(args.failover_rate)),
            (
                "setup",
                json!("PostgreSQL and two relays on it; a new group, its devices in this process"),
            ),
        ],
    );
    let limits = args.thresholds();
    let dir = match tempfile::Builder::new()
        .prefix("sync-stress-failover-")
        .tempdir()
    {
        Ok(d) => d,
        Err(e) => {
            let why = format!("cannot create a temporary directory: {e}");
            return setup_failed(session, &limits, start, &why, args);
        }
    };
    let setup_started = Instant::now();
    let mut lab = Lab {
        relays: Vec::new(),
        clients: Vec::new(),
        _pg: None,
    };
    let mut step = String::new();
    let ready = tokio::time::timeout(
        CHILD_TIMEOUT * 2,
        setup(target, dir.path(), pushers, &mut lab, &mut step),
    )
    .await
    .unwrap_or_else(|_| Err(format!("not ready within {:?}: {step}", CHILD_TIMEOUT * 2)));
    if let Err(why) = ready {
        close_all(&lab.clients).await;
        return setup_failed(session, &limits, start, &why, args);
    }
    let names: Vec<String> = lab.clients.iter().map(|c| c.device_id().short()).collect();
    let relay_ids: Vec<String> = lab.relays.iter().map(|r| r.id().short()).collect();
    session.emit(
        FAILOVER_PHASE,
        "failover_ready",
        &[
            ("relays", json!(relay_ids)),
            ("pushers", json!(names[..pushers])),
            ("reader", json!(names[pushers])),
            ("setup_ms", json!(round3(ms_since(setup_started)))),
        ],
    );
    let devices = lab.clients.len();
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            lost: vec![None; devices],
            moved: vec![None; devices],
            ..State::default()
        }),
        changed: Notify::new(),
        session: Arc::clone(session),
        names,
    });
    let mut tasks: Vec<JoinHandle<()>> = lab
        .clients
        .iter()
        .enumerate()
        .map(|(d, c)| spawn_follower(&shared, d, c, d < pushers))
        .collect();
    if let Some(reader) = lab.clients.get(pushers) {
        tasks.push(spawn_reader(&shared, reader));
    }
    let ran = traffic(&shared, args, &mut lab, pushers).await;
    let outboxes: usize = lab.clients.iter().map(|c| c.status().outbox_len).sum();
    close_all(&lab.clients).await;
    for t in tasks {
        t.abort();
    }
    let stopped = stop_relays(&mut lab.relays);
    drop(lab);
    drop(dir);
    report(
        session, &limits, start, &shared, &ran, outboxes, &stopped, args,
    )
}

/// Starts PostgreSQL (fsync on) and two relays on one database of it, then connects the
/// devices (the first pusher first: it writes the group's genesis and is its admin), each
/// configured with both relays. `lab` receives everything as it starts; `step` says what is
/// under way.
async fn setup(
    target: &FailoverTarget,
    dir: &Path,
    pushers: usize,
    lab: &mut Lab,
    step: &mut String,
) -> Result<(), String> {
    *step = "starting PostgreSQL".into();
    let started = tokio::task::spawn_blocking(|| {
        let mut pg = PostgresServer::start_with(true)?;
        let url = pg.create_database()?;
        Ok::<_, sync_testkit::TestkitError>((pg, url))
    })
    .await
    .map_err(|e| format!("the PostgreSQL start was cancelled: {e}"))?;
    let (pg, url) = started.map_err(|e| format!("PostgreSQL: {e}"))?;
    lab._pg = Some(pg);
    for n in 1..=2 {
        *step = format!("starting relay {n} on PostgreSQL");
        let builder = RelayProcess::builder()
            .bin(&target.relay_bin)
            .args(["--storage", "postgres", "--postgres-url", &url])
            .args(["--session-push-rate", "0", "--global-push-rate", "0"])
            .args(["--stats-interval", "1h"])
            .env("RUST_LOG", log_filter("SYNC_STRESS_RELAY_LOG"))
            .log(target.out.join(format!("relay-failover-{n}.log")));
        let relay = tokio::task::spawn_blocking(move || builder.start())
            .await
            .map_err(|e| format!("the relay start was cancelled: {e}"))?
            .map_err(|e| format!("relay {n}: {e}"))?;
        lab.relays.push(relay);
    }
    let addrs: Vec<RelayAddr> = lab.relays.iter().map(RelayProcess::relay_addr).collect();
    let material = {
        let mut rng = device::os_rng().map_err(|e| e.to_string())?;
        GroupMaterial::random(&mut rng)
    };
    for d in 0..=pushers {
        let name = if d < pushers {
            format!("failover pusher {d}")
        } else {
            "failover reader".to_string()
        };
        *step = format!("connecting the {name}");
        let c = connect(&addrs, &material, &dir.join(format!("device-{d}")), &name)
            .await
            .map_err(|e| format!("the {name} could not connect: {e}"))?;
        lab.clients.push(c.clone());
        if d == 0 {
            *step = "waiting for the admin's genesis record".into();
            until_members(&c, |m| m.iter().any(|m| m.this_device && m.admin)).await?;
        }
    }
    Ok(())
}

/// Connects a device with its state in `dir` to the group `material`, configured with every
/// relay of `relays`, the first one first.
async fn connect(
    relays: &[RelayAddr],
    material: &GroupMaterial,
    dir: &Path,
    name: &str,
) -> Result<SyncClient, ClientError> {
    let iroh = IrohConfig::for_relays(relays)
        .ok_or_else(|| ClientError::Internal("no relay to connect to".into()))?
        .with_bind_addr(SocketAddr::from(([127, 0, 0, 1], 0)));
    connect_with(iroh, ClientOptions::for_tests(), material, dir, name).await
}

/// Stops the relays still running (SIGTERM, bounded; the killed one is skipped); how each
/// went.
fn stop_relays(relays: &mut [RelayProcess]) -> Vec<String> {
    tokio::task::block_in_place(|| {
        relays
            .iter_mut()
            .enumerate()
            .filter_map(|(n, r)| {
                r.is_running()
                    .then(|| format!("relay {}: {}", n + 1, r.stop()))
            })
            .collect()
    })
}

/// Follows device `d`'s events: acknowledgements (pushers), the session lost after the kill,
/// the session on the other relay.
fn spawn_follower(
    shared: &Arc<Shared>,
    d: usize,
    client: &SyncClient,
    pusher: bool,
) -> JoinHandle<()> {
    let shared = Arc::clone(shared);
    let mut events = client.subscribe();
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            let now = Instant::now();
            {
                let mut st = shared.state();
                match event {
                    SyncEvent::PushAcked { .. } if pusher => st.acks.push(now),
                    SyncEvent::Disconnected { .. } if st.kill.is_some() => {
                        if let Some(slot @ None) = st.lost.get_mut(d) {
                            *slot = Some(now);
                        }
                    }
                    SyncEvent::Connected { relay_id, .. } => {
                        let killed = st.kill.map(|(_, r)| r);
                        if killed.is_some_and(|k| k != relay_id)
                            && let Some(slot @ None) = st.moved.get_mut(d)
                        {
                            *slot = Some((now, relay_id));
                        }
                    }
                    _ => continue,
                }
            }
            shared.changed.notify_waiters();
        }
    })
}

/// The reader: pulls on every announcement (and every [`READER_POLL`]), records what it
/// received, commits each batch.
fn spawn_reader(shared: &Arc<Shared>, client: &SyncClient) -> JoinHandle<()> {
    let shared = Arc::clone(shared);
    spawn_batches(
        client,
        READER_POLL,
        "failover reader".into(),
        move |batch| {
            let now = Instant::now();
            {
                let mut st = shared.state();
                for b in &batch.blobs {
                    let Some(key) = parse_message(&b.data) else {
                        continue;
                    };
                    st.got
                        .entry(key)
                        .and_modify(|g| g.copies += 1)
                        .or_insert(Got {
                            first: now,
                            copies: 1,
                        });
                }
            }
            shared.changed.notify_waiters();
        },
    )
}

/// Pushes `count` messages from pusher `p`, one every `period` (missed ticks caught up).
fn spawn_pacer(
    shared: &Arc<Shared>,
    p: usize,
    client: &SyncClient,
    count: u32,
    period: Duration,
    timeout: Duration,
) -> JoinHandle<()> {
    let shared = Arc::clone(shared);
    let client = client.clone();
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(period);
        for seq in 1..=count {
            ticker.tick().await;
            let at = Instant::now();
            let at_s = shared.session.log.elapsed_s();
            let text = message_text(p, seq);
            // Queued in the outbox (durably, on the device) whether or not a relay is there.
            let queued = tokio::time::timeout(timeout, client.push_queued(text.as_bytes())).await;
            let mut st = shared.state();
            match queued {
                Ok(Ok(_)) => {
                    st.pushed.insert((p, seq), Pushed { at, at_s });
                }
                Ok(Err(e)) => {
                    st.push_failures += 1;
                    tracing::warn!(error = %e, pusher = p, "failover push failed");
                }
                Err(_) => {
                    st.push_failures += 1;
                    tracing::warn!(pusher = p, "failover push not queued in time");
                }
            }
        }
    })
}

/// What the traffic came to.
#[derive(Debug, Default)]
struct Ran {
    /// The kill happened (the third of the messages were acknowledged first).
    killed: bool,
    /// Every device reached the other relay within [`FAILOVER_TIMEOUT`].
    moved: bool,
    /// Every pusher's outbox emptied.
    flushed: bool,
    /// The reader got every message before the phase gave up waiting.
    drained: bool,
}

/// The pushers push; once a third of the messages were acknowledged, the first relay is
/// SIGKILLed; the devices move to the second; the pushers finish and flush; the reader gets
/// the last messages (each wait bounded).
async fn traffic(shared: &Arc<Shared>, args: &Args, lab: &mut Lab, pushers: usize) -> Ran {
    let mut ran = Ran::default();
    let total = args.failover_messages;
    let n = u32::from(args.failover_pushers).max(1);
    let period = Duration::from_secs_f64(1.0 / args.failover_rate).max(Duration::from_millis(1));
    let timeout = Duration::from_secs(args.reply_timeout);
    let pacers: Vec<JoinHandle<()>> = lab.clients[..pushers]
        .iter()
        .enumerate()
        .zip(0u32..)
        .map(|((p, c), i)| {
            let count = total / n + u32::from(i < total % n);
            spawn_pacer(shared, p, c, count, period, timeout)
        })
        .collect();
    #[allow(clippy::cast_precision_loss)]
    let pushing = Duration::from_secs_f64(f64::from(total / n + 1) / args.failover_rate);
    let want = (total / 3).max(1) as usize;
    let acked = shared
        .until(tokio::time::Instant::now() + pushing + timeout, |st| {
            st.acks.len() >= want
        })
        .await;
    if acked && let Some(relay) = lab.relays.first_mut() {
        let id = relay.id();
        let acks = shared.state().acks.len();
        let at = Instant::now();
        shared.state().kill = Some((at, id));
        tokio::task::block_in_place(|| relay.kill());
        ran.killed = true;
        shared
            .session
            .mark(format!("relay 1 ({}) SIGKILLed", id.short()));
        shared.session.emit(
            FAILOVER_PHASE,
            "relay_killed",
            &[
                ("relay", json!(id.short())),
                ("acked_before", json!(acks)),
                ("signal", json!("SIGKILL")),
            ],
        );
        ran.moved = shared
            .until(
                tokio::time::Instant::now() + FAILOVER_TIMEOUT,
                Shared::all_moved,
            )
            .await;
        report_moves(shared, at);
    }
    for p in pacers {
        let _ = p.await;
    }
    let flushes: Vec<_> = lab.clients[..pushers]
        .iter()
        .cloned()
        .map(|c| tokio::spawn(async move { c.flush(timeout).await.is_ok() }))
        .collect();
    ran.flushed = true;
    for f in flushes {
        ran.flushed &= f.await.unwrap_or(false);
    }
    ran.drained = shared
        .until(tokio::time::Instant::now() + timeout, |st| {
            st.pushed.keys().all(|k| st.got.contains_key(k))
        })
        .await;
    ran
}

/// Writes one `failed_over` event per device (how long it took to notice the loss and to be on
/// the other relay) and marks the first ack on the next relay.
fn report_moves(shared: &Shared, kill: Instant) {
    let (lost, moved) = {
        let st = shared.state();
        (st.lost.clone(), st.moved.clone())
    };
    for (d, (l, m)) in lost.iter().zip(&moved).enumerate() {
        shared.session.emit(
            FAILOVER_PHASE,
            "failed_over",
            &[
                ("device", json!(shared.name(d))),
                ("detect_ms", json!(l.map(|l| round3(ms_between(kill, l))))),
                (
                    "reconnect_ms",
                    json!(l.zip(*m).map(|(l, (m, _))| round3(ms_between(l, m)))),
                ),
                ("relay", json!(m.map(|(_, r)| r.short()))),
            ],
        );
    }
}

/// Milliseconds from `from` to `to` (0 when `to` came first).
fn ms_between(from: Instant, to: Instant) -> f64 {
    to.saturating_duration_since(from).as_secs_f64() * 1000.0
}

/// The phase when its relays or devices could not be set up: failed, nothing measured.
fn setup_failed(
    session: &Session,
    limits: &Thresholds,
    start: f64,
    why: &str,
    args: &Args,
) -> (PhaseResult, FailoverCheck) {
    let check = FailoverCheck {
        messages: 0,
        lost: 0,
        duplicated: 0,
        interruption: None,
    };
    let note = format!(
        "the failover setup (PostgreSQL, two relays, {} devices) failed: {why}",
        args.failover_pushers + 1
    );
    let result = phases::setup_failed(session, limits, FAILOVER_PHASE, start, why, note);
    (result, check)
}

/// Counts what the phase measured, writes its `failover_stats` and `phase_end` events, and the
/// report's notes.
#[allow(clippy::too_many_arguments)]
fn report(
    session: &Session,
    limits: &Thresholds,
    start: f64,
    shared: &Shared,
    ran: &Ran,
    outboxes: usize,
    stopped: &[String],
    args: &Args,
) -> (PhaseResult, FailoverCheck) {
    let st = shared.state();
    let c = count(&st.pushed, &st.got);
    let kill = st.kill;
    // The first session on the next relay: acks before it came from the killed relay.
    let split = st.moved.iter().flatten().map(|(t, _)| *t).min();
    let acks_ms = kill
        .zip(split)
        .and_then(|((k, _), s)| interruption(&st.acks, k, s))
        .map(|d| d.as_secs_f64() * 1000.0);
    let detect_ms = kill.and_then(|(k, _)| {
        st.lost
            .iter()
            .map(|l| l.map(|l| ms_between(k, l)))
            .collect::<Option<Vec<f64>>>()
            .and_then(|v| v.into_iter().max_by(f64::total_cmp))
    });
    let reconnect_ms = st
        .lost
        .iter()
        .zip(&st.moved)
        .map(|(l, m)| l.zip(*m).map(|(l, (m, _))| ms_between(l, m)))
        .collect::<Option<Vec<f64>>>()
        .and_then(|v| v.into_iter().max_by(f64::total_cmp));
    let resumed = split.and_then(|s| st.acks.iter().filter(|a| **a > s).min().copied());
    let push_failures = st.push_failures;
    let acks = st.acks.len();
    drop(st);
    if let Some(at) = resumed {
        session.mark_at(at, "pushes acknowledged again, by relay 2".into());
    }
    if let Some(ms) = acks_ms {
        session.emit(
            FAILOVER_PHASE,
            "interruption",
            &[
                ("interruption_ms", json!(round3(ms))),
                ("detect_ms", json!(detect_ms.map(round3))),
                ("reconnect_ms", json!(reconnect_ms.map(round3))),
            ],
        );
    }
    session.record_points(&c.points);
    session.emit(
        FAILOVER_PHASE,
        "failover_stats",
        &[
            ("messages", json!(c.messages)),
            ("delivered", json!(c.delivered)),
            ("lost", json!(c.lost)),
            ("duplicated", json!(c.duplicated)),
            ("foreign", json!(c.foreign)),
            ("push_failures", json!(push_failures)),
            ("acks", json!(acks)),
            ("outbox_at_end", json!(outboxes)),
            ("killed", json!(ran.killed)),
            ("all_moved", json!(ran.moved)),
            ("interruption_ms", json!(acks_ms.map(round3))),
            ("detect_ms", json!(detect_ms.map(round3))),
            ("reconnect_ms", json!(reconnect_ms.map(round3))),
        ],
    );
    let mut notes = vec![
        format!(
            "{} pushers at {}/s each and a reader, in a new group on two relays sharing one PostgreSQL database (fsync on); each device knows both relays, the first one first; relay 1 SIGKILLed once a third of the {} messages were acknowledged",
            args.failover_pushers, args.failover_rate, args.failover_messages
        ),
        format!(
            "{}/{} messages read by the reader, {} lost, {} duplicated; latency: from the push until the reader had it (messages pushed before the loss was noticed wait for the next relay, so this phase's p99 is not held against --max-p99-ms)",
            c.delivered, c.messages, c.lost, c.duplicated
        ),
    ];
    notes.push(match acks_ms {
        Some(ms) => format!(
            "interruption: {ms:.1} ms from the last ack before the kill to the first ack by the next relay; loss noticed {} after the kill, next relay connected {} later (slowest device)",
            fmt_ms(detect_ms),
            fmt_ms(reconnect_ms)
        ),
        None if !ran.killed => "the relay was never killed: a third of the messages were not acknowledged in time".into(),
        None => "no push was acknowledged by the next relay after the kill".into(),
    });
    if !ran.moved && ran.killed {
        notes.push(format!(
            "not every device reached the other relay within {FAILOVER_TIMEOUT:?}"
        ));
    }
    if !ran.flushed || outboxes > 0 {
        notes.push(format!(
            "{outboxes} pushes still in the outboxes at the end (not acknowledged within --reply-timeout)"
        ));
    }
    if !ran.drained {
        notes.push(format!(
            "after the traffic, {} s (--reply-timeout) were not enough for the reader to get every message",
            args.reply_timeout
        ));
    }
    if push_failures > 0 || c.foreign > 0 {
        notes.push(format!(
            "{push_failures} pushes could not be queued; {} blobs read that no pusher of this run pushed",
            c.foreign
        ));
    }
    notes.push(format!("at the end: {}", stopped.join("; ")));
    let check = FailoverCheck {
        messages: c.messages,
        lost: c.lost,
        duplicated: c.duplicated,
        interruption: acks_ms.map(|acks_ms| Interruption {
            acks_ms,
            detect_ms,
            reconnect_ms,
        }),
    };
    let summary = Summary::new(c.messages, c.lost, &c.latencies_ms);
    // The outage is in the latencies on purpose: the p99 limit does not apply here.
    let lenient = Thresholds {
        max_p99_ms: f64::INFINITY,
        ..*limits
    };
    let ok = check.ok() && ran.killed;
    let result = finish(session, &lenient, FAILOVER_PHASE, start, summary, notes, ok);
    (result, check)
}

/// `12.3 ms`, or `–`.
fn fmt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.1} ms"))
}
