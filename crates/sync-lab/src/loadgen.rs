//! Multi-client load against one relay: many real devices ([`SyncClient`] over iroh), in groups,
//! pushing at a total rate; fan-out latency per receiver, refusals at the relay's session limit,
//! and connection churn with a check that the relay's session gauge returns to its baseline.
//!
//! Every run is bounded: in clients, in time (`duration` plus a drain timeout) and in messages
//! (`rate × duration`).
//!
//! - [`run_load`]: `clients` devices in groups of `group_size` (each group a fresh random group
//!   secret), connected with bounded concurrency. A device the relay does not accept on its
//!   first attempt (e.g. `TooManySessions` above `max_sessions`) is counted as refused and
//!   closed; the accepted ones push `rate` messages per second in total for `duration`. Each
//!   message carries its sender, sequence number and send time (Unix ns) inside the
//!   plaintext; every other accepted member of the group pulls it on notification, and the
//!   latency is arrival − send time (one clock: all devices run in this process). After the
//!   pushers flush, receivers wait for everything their group pushed; missing and duplicated
//!   messages are counted.
//! - [`run_churn`]: `connections` short-lived devices (each connects, pushes one message,
//!   stays `lifetime`, closes), a new one every `lifetime / overlap`, so about `overlap` are
//!   open at once; afterwards the relay's `sync_relay_sessions` gauge (from `/metrics`) must
//!   return to the value it had before (no ghost sessions) and, when the relay's pid is known
//!   (same machine), its open file descriptors (`/proc/<pid>/fd`) must return to within a
//!   slack of theirs.
//!
//! A run that measured nothing is not clean: no device accepted, nothing pushed or no delivery
//! expected (groups of one) for the load; no device connected for the churn.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use serde::Serialize;
use sync_client::{
    ClientConfig, ClientOptions, GroupChoice, GroupMaterial, IrohConfig, IrohTransport,
    StoreLocation, StreamExt, SyncClient, SyncEvent,
};
use sync_core::ConnectionStatus;
use sync_types::RelayAddr;
use tokio::sync::watch;

use crate::soak::{fetch_metrics, parse_metric, read_fd_count};
use crate::stats::percentile;

/// The relay's session gauge in `/metrics`.
pub const SESSIONS_METRIC: &str = "sync_relay_sessions";
/// The relay's `TooManySessions` refusal counter in `/metrics`.
pub const TOO_MANY_SESSIONS_METRIC: &str =
    "sync_relay_rejections_total{reason=\"TooManySessions\"}";

/// Errors of a load or churn run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// A parameter is out of range.
    #[error("invalid load parameter: {0}")]
    Invalid(String),
    /// The relay's `/metrics` could not be read (churn needs it).
    #[error("cannot read the relay's /metrics at {0}")]
    Metrics(SocketAddr),
    /// A device could not be set up locally (store, key).
    #[error("device setup failed: {0}")]
    Device(String),
    /// The relay's open file descriptors could not be read.
    #[error("cannot read /proc/{0}/fd (is the relay running on this machine with that pid?)")]
    Proc(u32),
}

/// The relay a load runs against: where devices reach it, and its HTTP address for
/// `/metrics` when reachable (sessions gauge and refusal counters are read there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadTarget {
    /// The relay.
    pub relay: RelayAddr,
    /// Its HTTP address, if reachable.
    pub http: Option<SocketAddr>,
}

impl LoadTarget {
    /// Parses the relay's dial string `ID@IP:PORT[,IP:PORT…]` (host names are not resolved).
    pub fn parse_dial(dial: &str, http: Option<SocketAddr>) -> Result<Self, LoadError> {
        let relay: RelayAddr = dial
            .parse()
            .map_err(|e| LoadError::Invalid(format!("relay {dial:?}: {e}")))?;
        if relay.socket_addrs().len() != relay.addrs.len() {
            return Err(LoadError::Invalid(format!(
                "relay {dial:?}: addresses must be IP:PORT"
            )));
        }
        Ok(Self { relay, http })
    }

    async fn metric(&self, name: &str) -> Option<f64> {
        let text = fetch_metrics(self.http?).await?;
        parse_metric(&text, name)
    }
}

/// Parameters of [`run_load`].
#[derive(Debug, Clone, PartialEq)]
pub struct LoadConfig {
    /// Devices (1..=2000).
    pub clients: usize,
    /// Messages per second, all pushers together (0..=20000).
    pub rate: f64,
    /// How long the pushers push (at most 1 h).
    pub duration: Duration,
    /// Devices per group (≥ 1; the last group may be smaller).
    pub group_size: usize,
    /// Plaintext size of each message in bytes (≥ 64, ≤ 64 KiB).
    pub payload: usize,
    /// Devices connecting at the same time.
    pub connect_concurrency: usize,
    /// After the pushers stop, how long flushing and delivery may take.
    pub drain_timeout: Duration,
    /// How long a device's dial, and then its handshake, may take (a relay that does not
    /// answer within it leaves the device unaccepted).
    pub connect_timeout: Duration,
    /// Seed of the group secrets (`None`: from the clock).
    pub seed: Option<u64>,
}

impl Default for LoadConfig {
    fn default() -> Self {
        Self {
            clients: 10,
            rate: 100.0,
            duration: Duration::from_secs(10),
            group_size: 5,
            payload: 256,
            connect_concurrency: 16,
            drain_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            seed: None,
        }
    }
}

impl LoadConfig {
    fn validate(&self) -> Result<(), LoadError> {
        let bad = |m: &str| Err(LoadError::Invalid(m.to_string()));
        if !(1..=2000).contains(&self.clients) {
            return bad("clients must be 1 to 2000");
        }
        if !(self.rate.is_finite() && (0.0..=20_000.0).contains(&self.rate)) {
            return bad("rate must be 0 to 20000 messages/s");
        }
        if self.duration > Duration::from_secs(3600) {
            return bad("duration must be at most 1 h");
        }
        if self.group_size == 0 {
            return bad("group size must be at least 1");
        }
        if !(64..=65_536).contains(&self.payload) {
            return bad("payload must be 64 bytes to 64 KiB");
        }
        if self.connect_concurrency == 0 {
            return bad("connect concurrency must be at least 1");
        }
        if !(MIN_TIMEOUT..=MAX_TIMEOUT).contains(&self.connect_timeout)
            || self.drain_timeout > MAX_TIMEOUT
        {
            return bad("connect timeout must be 10 ms to 1 h, drain timeout at most 1 h");
        }
        Ok(())
    }
}

/// Shortest connect timeout accepted.
const MIN_TIMEOUT: Duration = Duration::from_millis(10);
/// Longest connect, drain, push or settle timeout accepted.
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
/// Shortest period between two pushes of one device: the timer's resolution. A device asked
/// for more than 1000 messages/s (e.g. when refusals leave fewer devices to share the rate)
/// pushes at this pace, and `achieved_rate` says so.
const MIN_PUSH_PERIOD: Duration = Duration::from_millis(1);

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Samples.
    pub count: usize,
    /// Median.
    pub p50_ms: Option<f64>,
    /// 95th percentile.
    pub p95_ms: Option<f64>,
    /// 99th percentile.
    pub p99_ms: Option<f64>,
    /// Largest.
    pub max_ms: Option<f64>,
}

impl Latency {
    fn of(mut ms: Vec<f64>) -> Self {
        ms.sort_by(f64::total_cmp);
        let r = |v: Option<f64>| v.map(|x| (x * 100.0).round() / 100.0);
        Self {
            count: ms.len(),
            p50_ms: r(percentile(&ms, 0.50)),
            p95_ms: r(percentile(&ms, 0.95)),
            p99_ms: r(percentile(&ms, 0.99)),
            max_ms: r(ms.last().copied()),
        }
    }
}

/// One receiving device's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReceiverReport {
    /// Device index (0-based, in connection order).
    pub device: usize,
    /// Group index.
    pub group: usize,
    /// Messages its group's other members pushed.
    pub expected: u64,
    /// Distinct messages received.
    pub received: u64,
    /// Messages received more than once (extra copies).
    pub duplicates: u64,
    /// Fan-out latency (send → pulled here).
    pub latency: Latency,
}

/// The result of [`run_load`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadReport {
    /// Devices started.
    pub clients: usize,
    /// Devices per group.
    pub group_size: usize,
    /// Groups.
    pub groups: usize,
    /// Devices the relay accepted.
    pub accepted: usize,
    /// Devices not accepted on their first attempt (closed at once).
    pub refused: usize,
    /// Increase of the relay's `TooManySessions` counter during the connect phase (`None`
    /// without `/metrics`).
    pub refused_too_many_sessions: Option<u64>,
    /// Requested total rate, messages/s.
    pub rate: f64,
    /// Push phase length, seconds.
    pub duration_s: f64,
    /// Messages queued by the pushers.
    pub pushed: u64,
    /// `pushed / duration`: the rate reached (below `rate` when the devices cannot keep up).
    pub achieved_rate: f64,
    /// Pushers whose outbox emptied (all acknowledged) within the drain timeout.
    pub pushers_flushed: usize,
    /// Deliveries expected (each message × the other accepted members of its group).
    pub expected_deliveries: u64,
    /// Distinct deliveries.
    pub delivered: u64,
    /// Expected deliveries that did not arrive.
    pub lost: u64,
    /// Extra copies delivered.
    pub duplicates: u64,
    /// Fan-out latency over all receivers.
    pub latency: Latency,
    /// Per receiver.
    pub receivers: Vec<ReceiverReport>,
    /// The relay's session gauge before the run and after every device closed (`None` without
    /// `/metrics`).
    pub sessions_before: Option<u64>,
    /// See `sessions_before`.
    pub sessions_after: Option<u64>,
    /// Wall time of the whole run, seconds.
    pub elapsed_s: f64,
}

impl LoadReport {
    /// What makes this run not clean, in words (empty when clean).
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.accepted == 0 {
            p.push("no device was accepted by the relay: nothing was measured".into());
        } else if self.pushed == 0 {
            p.push("nothing was pushed: nothing was measured".into());
        } else if self.expected_deliveries == 0 {
            p.push("no delivery was expected (groups of one device?): nothing was measured".into());
        }
        if self.lost > 0 {
            p.push(format!("{} deliveries lost", self.lost));
        }
        if self.duplicates > 0 {
            p.push(format!("{} duplicate deliveries", self.duplicates));
        }
        if self.pushers_flushed != self.accepted {
            p.push(format!(
                "{} of {} pushers did not flush within the drain timeout",
                self.accepted - self.pushers_flushed.min(self.accepted),
                self.accepted
            ));
        }
        p
    }

    /// Something was measured (devices accepted, messages pushed, deliveries expected), and
    /// nothing was lost or duplicated, every pusher flushed.
    pub fn clean(&self) -> bool {
        self.problems().is_empty()
    }
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn clock_seed() -> u64 {
    unix_nanos() ^ (u64::from(std::process::id()) << 32)
}

fn options(connect_timeout: Duration) -> ClientOptions {
    let mut o = ClientOptions::for_tests();
    o.connection.connect_timeout = connect_timeout;
    o.connection.handshake_timeout = connect_timeout;
    o
}

async fn connect(
    target: &LoadTarget,
    group: &GroupMaterial,
    name: String,
    connect_timeout: Duration,
) -> Result<SyncClient, LoadError> {
    let transport = Arc::new(IrohTransport::new(IrohConfig::new(
        target.relay.id,
        target.relay.socket_addrs(),
    )));
    let cfg = ClientConfig::new(
        StoreLocation::InMemory,
        transport,
        GroupChoice::Use(group.clone()),
    )
    .with_device_name(name)
    .with_options(options(connect_timeout));
    SyncClient::connect(cfg)
        .await
        .map_err(|e| LoadError::Device(e.to_string()))
}

fn material(rng: &mut ChaCha20Rng) -> GroupMaterial {
    GroupMaterial::random(rng)
}

/// `sender:seq:unix_ns:` then padding.
fn message(sender: usize, seq: u64, size: usize) -> Vec<u8> {
    let mut m = format!("{sender}:{seq}:{}:", unix_nanos()).into_bytes();
    if m.len() < size {
        m.resize(size, b'.');
    }
    m
}

fn parse_message(data: &[u8]) -> Option<(usize, u64, u64)> {
    let text = std::str::from_utf8(data.get(..data.len().min(64))?).ok()?;
    let mut parts = text.split(':');
    let sender = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    let sent = parts.next()?.parse().ok()?;
    Some((sender, seq, sent))
}

struct Received {
    unique: HashSet<(usize, u64)>,
    duplicates: u64,
    latency_ms: Vec<f64>,
}

/// Pulls on every notification until `expected` (once known) distinct messages arrived, or the
/// deadline that comes with it passes.
async fn receive(
    client: SyncClient,
    mut expected: watch::Receiver<Option<(u64, Instant)>>,
) -> Received {
    let mut events = client.subscribe();
    let mut r = Received {
        unique: HashSet::new(),
        duplicates: 0,
        latency_ms: Vec::new(),
    };
    let mut pull = true;
    loop {
        if pull {
            pull = false;
            if let Ok(blobs) = client.pull().await {
                let now = unix_nanos();
                for b in blobs {
                    if let Some((sender, seq, sent)) = parse_message(&b.data) {
                        if r.unique.insert((sender, seq)) {
                            r.latency_ms
                                .push(now.saturating_sub(sent) as f64 / 1_000_000.0);
                        } else {
                            r.duplicates += 1;
                        }
                    }
                }
            }
        }
        let target = *expected.borrow();
        if let Some((want, deadline)) = target
            && (r.unique.len() as u64 >= want || Instant::now() >= deadline)
        {
            return r;
        }
        let deadline = target.map(|(_, d)| tokio::time::Instant::from_std(d));
        tokio::select! {
            e = events.next() => match e {
                Some(SyncEvent::BlobsAvailable { .. } | SyncEvent::Lagged { .. }
                    | SyncEvent::Connected { .. }) => pull = true,
                Some(_) => {}
                None => return r,
            },
            changed = expected.changed() => {
                if changed.is_err() {
                    return r;
                }
                // The pushers are done: pull once more in case a notification was coalesced.
                pull = true;
            }
            () = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => pull = true,
        }
    }
}

/// Runs the load described by `config` against `target`; see the module documentation.
pub async fn run_load(target: &LoadTarget, config: &LoadConfig) -> Result<LoadReport, LoadError> {
    config.validate()?;
    let started = Instant::now();
    let mut rng = ChaCha20Rng::seed_from_u64(config.seed.unwrap_or_else(clock_seed));
    let groups = config.clients.div_ceil(config.group_size);
    let materials: Vec<GroupMaterial> = (0..groups).map(|_| material(&mut rng)).collect();
    let sessions_before = target.metric(SESSIONS_METRIC).await.map(|v| v as u64);
    let refusals_before = target.metric(TOO_MANY_SESSIONS_METRIC).await;

    // Connect with bounded concurrency; keep connection order stable by index.
    let sem = Arc::new(tokio::sync::Semaphore::new(config.connect_concurrency));
    let mut connecting = Vec::with_capacity(config.clients);
    for i in 0..config.clients {
        let target = target.clone();
        let group = materials[i / config.group_size].clone();
        let timeout = config.connect_timeout;
        // The permit is taken here, in index order, not inside the task: spawned tasks start in
        // any order, and with a concurrency of 1 the devices must connect in index order (the
        // first `max_sessions` are the accepted ones, so groups fill up in order).
        let permit = Arc::clone(&sem)
            .acquire_owned()
            .await
            .map_err(|e| LoadError::Device(format!("connect limiter: {e}")))?;
        connecting.push(tokio::spawn(async move {
            let _permit = permit;
            connect(&target, &group, format!("load-{i}"), timeout).await
        }));
    }
    let mut accepted: Vec<(usize, SyncClient)> = Vec::new();
    let mut refused = 0usize;
    for (i, task) in connecting.into_iter().enumerate() {
        let client = task
            .await
            .map_err(|e| LoadError::Device(format!("connect task: {e}")))??;
        if client.status().connection == ConnectionStatus::Connected {
            accepted.push((i, client));
        } else {
            refused += 1;
            client.close().await;
        }
    }
    let refused_too_many_sessions = match (
        refusals_before,
        target.metric(TOO_MANY_SESSIONS_METRIC).await,
    ) {
        (Some(a), Some(b)) => Some((b - a).max(0.0) as u64),
        _ => None,
    };

    // Receivers subscribe before anything is pushed.
    let (expected_tx, _) = watch::channel::<Option<(u64, Instant)>>(None);
    let mut expected_senders = HashMap::new();
    let mut receivers = Vec::new();
    for (i, c) in &accepted {
        let (tx, rx) = watch::channel(None);
        expected_senders.insert(*i, tx);
        receivers.push((*i, tokio::spawn(receive(c.clone(), rx))));
    }
    drop(expected_tx);

    // Pushers: the total rate split evenly over the accepted devices.
    let deadline = Instant::now() + config.duration;
    let mut pushers = Vec::new();
    for (i, c) in &accepted {
        let (i, c) = (*i, c.clone());
        let per_device = config.rate / accepted.len() as f64;
        let payload = config.payload;
        let drain = config.drain_timeout;
        let config_duration = config.duration;
        pushers.push(tokio::spawn(async move {
            let mut pushed = 0u64;
            if per_device > 0.0 {
                // At least the timer's resolution (never a zero period, which panics), at most
                // past the deadline (one push at the start; a huge period would overflow).
                let period = Duration::try_from_secs_f64(1.0 / per_device)
                    .unwrap_or(Duration::MAX)
                    .clamp(MIN_PUSH_PERIOD, MIN_PUSH_PERIOD + config_duration);
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    if Instant::now() >= deadline {
                        break;
                    }
                    if c.push_queued(&message(i, pushed, payload)).await.is_ok() {
                        pushed += 1;
                    }
                }
            }
            let flushed = c.flush(drain).await.is_ok();
            (i, pushed, flushed)
        }));
    }
    let mut pushed_by: HashMap<usize, u64> = HashMap::new();
    let mut pushers_flushed = 0;
    for p in pushers {
        let (i, n, flushed) = p
            .await
            .map_err(|e| LoadError::Device(format!("pusher task: {e}")))?;
        pushed_by.insert(i, n);
        pushers_flushed += usize::from(flushed);
    }
    let drain_deadline = Instant::now() + config.drain_timeout;
    let group_of = |i: usize| i / config.group_size;
    for (i, tx) in &expected_senders {
        let want: u64 = pushed_by
            .iter()
            .filter(|(j, _)| *j != i && group_of(**j) == group_of(*i))
            .map(|(_, n)| *n)
            .sum();
        let _ = tx.send(Some((want, drain_deadline)));
    }
    let mut reports = Vec::new();
    let mut all_latency = Vec::new();
    let (mut expected_total, mut delivered, mut duplicates) = (0u64, 0u64, 0u64);
    for (i, task) in receivers {
        let r = task
            .await
            .map_err(|e| LoadError::Device(format!("receiver task: {e}")))?;
        let expected = expected_senders
            .get(&i)
            .and_then(|tx| *tx.borrow())
            .map_or(0, |(w, _)| w);
        // Only messages that were supposed to reach this device count as delivered.
        let received = r
            .unique
            .iter()
            .filter(|(s, seq)| {
                *s != i && group_of(*s) == group_of(i) && pushed_by.get(s).is_some_and(|n| seq < n)
            })
            .count() as u64;
        expected_total += expected;
        delivered += received;
        duplicates += r.duplicates;
        all_latency.extend_from_slice(&r.latency_ms);
        reports.push(ReceiverReport {
            device: i,
            group: group_of(i),
            expected,
            received,
            duplicates: r.duplicates,
            latency: Latency::of(r.latency_ms),
        });
    }
    for (_, c) in &accepted {
        c.close().await;
    }
    let sessions_after = match sessions_before {
        Some(before) => settle_sessions(target, before, config.drain_timeout).await,
        None => None,
    };
    Ok(LoadReport {
        clients: config.clients,
        group_size: config.group_size,
        groups,
        accepted: accepted.len(),
        refused,
        refused_too_many_sessions,
        rate: config.rate,
        duration_s: config.duration.as_secs_f64(),
        pushed: pushed_by.values().sum(),
        achieved_rate: if config.duration.is_zero() {
            0.0
        } else {
            (pushed_by.values().sum::<u64>() as f64 / config.duration.as_secs_f64() * 100.0).round()
                / 100.0
        },
        pushers_flushed,
        expected_deliveries: expected_total,
        delivered,
        lost: expected_total.saturating_sub(delivered),
        duplicates,
        latency: Latency::of(all_latency),
        receivers: reports,
        sessions_before,
        sessions_after,
        elapsed_s: started.elapsed().as_secs_f64(),
    })
}

/// Reads the session gauge until it is back to `baseline` or `timeout` passes; returns the last
/// value read.
async fn settle_sessions(target: &LoadTarget, baseline: u64, timeout: Duration) -> Option<u64> {
    let deadline = Instant::now() + timeout;
    // The gauge lives in another process (or task): poll it, bounded in time.
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut last = None;
    loop {
        tick.tick().await;
        last = target
            .metric(SESSIONS_METRIC)
            .await
            .map(|v| v as u64)
            .or(last);
        if last == Some(baseline) || Instant::now() >= deadline {
            return last;
        }
    }
}

/// Parameters of [`run_churn`].
#[derive(Debug, Clone, PartialEq)]
pub struct ChurnConfig {
    /// Short-lived devices (1..=5000).
    pub connections: usize,
    /// How long each stays connected (at most 10 min).
    pub lifetime: Duration,
    /// About how many are open at once (1..=5000; a new one starts every `lifetime / overlap`).
    pub overlap: usize,
    /// Devices per group.
    pub group_size: usize,
    /// After the last one closed, how long the relay may take to drop its sessions (and,
    /// separately, to close its file descriptors).
    pub settle_timeout: Duration,
    /// How long a device's dial, and then its handshake, may take.
    pub connect_timeout: Duration,
    /// How long a device's push may wait for its acknowledgement; a push not acknowledged in
    /// time counts as failed (a stalled relay never hangs the run).
    pub push_timeout: Duration,
    /// The relay's process id when it runs on this machine: its open file descriptors
    /// (`/proc/<pid>/fd`) are sampled before, during and after the churn.
    pub relay_pid: Option<u32>,
    /// Open FDs after the churn may exceed those before it by this many.
    pub fd_slack: u64,
    /// Seed of the group secrets (`None`: from the clock).
    pub seed: Option<u64>,
}

impl Default for ChurnConfig {
    fn default() -> Self {
        Self {
            connections: 50,
            lifetime: Duration::from_secs(2),
            overlap: 10,
            group_size: 5,
            settle_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            push_timeout: Duration::from_secs(10),
            relay_pid: None,
            fd_slack: 2,
            seed: None,
        }
    }
}

/// The relay's open file descriptors around a churn run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FdReport {
    /// The relay's pid.
    pub pid: u32,
    /// Open FDs before the churn.
    pub baseline: u64,
    /// The most sampled during the churn (every 100 ms).
    pub peak: u64,
    /// Open FDs after the churn settled (or the settle timeout passed).
    pub end: u64,
    /// Allowed excess of `end` over `baseline`.
    pub slack: u64,
    /// Time from the last close until `end` was within the slack, milliseconds (`None` if it
    /// never was).
    pub settle_ms: Option<u64>,
}

impl FdReport {
    /// Back within the slack of the baseline.
    pub fn ok(&self) -> bool {
        self.end <= self.baseline.saturating_add(self.slack)
    }
}

/// The result of [`run_churn`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChurnReport {
    /// Devices started.
    pub connections: usize,
    /// Lifetime of each, milliseconds.
    pub lifetime_ms: u64,
    /// Target number open at once.
    pub overlap: usize,
    /// Devices the relay accepted.
    pub connected: usize,
    /// Devices not accepted on their first attempt.
    pub refused: usize,
    /// Pushes acknowledged (one per accepted device).
    pub pushes_acked: usize,
    /// Accepted devices whose push failed or was not acknowledged within the push timeout.
    pub push_failures: usize,
    /// The session gauge before the run.
    pub sessions_baseline: u64,
    /// The highest session gauge sampled during the run.
    pub sessions_peak: u64,
    /// The gauge after the run settled (or the settle timeout passed).
    pub sessions_final: u64,
    /// `sessions_final − sessions_baseline` (sessions the relay still holds for devices that
    /// are gone).
    pub ghost_sessions: u64,
    /// Time from the last close to the gauge back at baseline, milliseconds (`None` if it
    /// never returned).
    pub settle_ms: Option<u64>,
    /// The relay's open file descriptors (`None` when its pid is not known).
    pub relay_fds: Option<FdReport>,
    /// Wall time of the whole run, seconds.
    pub elapsed_s: f64,
}

impl ChurnReport {
    /// What makes this run not clean, in words (empty when clean).
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.connected == 0 {
            p.push("no churn device was accepted by the relay: nothing was measured".into());
        }
        if self.push_failures > 0 {
            p.push(format!(
                "{} churn pushes failed or were not acknowledged in time",
                self.push_failures
            ));
        }
        if self.ghost_sessions > 0 {
            p.push(format!("{} ghost sessions", self.ghost_sessions));
        }
        if let Some(f) = &self.relay_fds
            && !f.ok()
        {
            p.push(format!(
                "relay open FDs did not return to baseline: {} → {} (slack {})",
                f.baseline, f.end, f.slack
            ));
        }
        p
    }

    /// Devices connected, each push acknowledged, no ghost sessions, FDs back to baseline
    /// (when sampled).
    pub fn clean(&self) -> bool {
        self.problems().is_empty()
    }
}

/// Reads the relay's open FDs until they are within `slack` of `baseline` or `timeout`
/// passes; the last value read and whether it got there.
async fn settle_fds(pid: u32, baseline: u64, slack: u64, timeout: Duration) -> (Option<u64>, bool) {
    let deadline = Instant::now() + timeout;
    // Another process's descriptors: poll them, bounded in time.
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut last = None;
    loop {
        tick.tick().await;
        last = read_fd_count(pid).or(last);
        let back = last.is_some_and(|n| n <= baseline.saturating_add(slack));
        if back || Instant::now() >= deadline {
            return (last, back);
        }
    }
}

/// Runs connection churn against `target` (needs its `/metrics`); see the module documentation.
pub async fn run_churn(
    target: &LoadTarget,
    config: &ChurnConfig,
) -> Result<ChurnReport, LoadError> {
    if !(1..=5000).contains(&config.connections)
        || !(1..=5000).contains(&config.overlap)
        || config.group_size == 0
        || config.lifetime > Duration::from_secs(600)
    {
        return Err(LoadError::Invalid(
            "churn: 1 to 5000 connections, overlap 1 to 5000, group size ≥ 1, lifetime ≤ 10 min"
                .into(),
        ));
    }
    if !(MIN_TIMEOUT..=MAX_TIMEOUT).contains(&config.connect_timeout)
        || !(MIN_TIMEOUT..=MAX_TIMEOUT).contains(&config.push_timeout)
        || config.settle_timeout > MAX_TIMEOUT
    {
        return Err(LoadError::Invalid(
            "churn: connect and push timeouts 10 ms to 1 h, settle timeout at most 1 h".into(),
        ));
    }
    let http = target.http.ok_or_else(|| {
        LoadError::Invalid("churn needs the relay's HTTP address (/metrics)".into())
    })?;
    let started = Instant::now();
    let baseline = target
        .metric(SESSIONS_METRIC)
        .await
        .ok_or(LoadError::Metrics(http))? as u64;
    let fd_baseline = match config.relay_pid {
        Some(pid) => Some((pid, read_fd_count(pid).ok_or(LoadError::Proc(pid))?)),
        None => None,
    };
    let mut rng = ChaCha20Rng::seed_from_u64(config.seed.unwrap_or_else(clock_seed));
    let groups = config.connections.div_ceil(config.group_size);
    let materials: Vec<GroupMaterial> = (0..groups).map(|_| material(&mut rng)).collect();

    // Sample the gauge (and the relay's FDs) while the churn runs.
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let sampler = {
        let target = target.clone();
        tokio::spawn(async move {
            let mut peak = baseline;
            let mut fd_peak = fd_baseline.map_or(0, |(_, n)| n);
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        if let Some(v) = target.metric(SESSIONS_METRIC).await {
                            peak = peak.max(v as u64);
                        }
                        if let Some(n) = fd_baseline.and_then(|(pid, _)| read_fd_count(pid)) {
                            fd_peak = fd_peak.max(n);
                        }
                    }
                    _ = stop_rx.changed() => return (peak, fd_peak),
                }
            }
        })
    };

    // `overlap` is 1..=5000 (checked above): the conversion and the division cannot fail.
    let overlap = u32::try_from(config.overlap).unwrap_or(u32::MAX).max(1);
    let spacing = config.lifetime / overlap;
    let mut tick = tokio::time::interval(spacing.max(Duration::from_millis(1)));
    let mut tasks = Vec::new();
    for i in 0..config.connections {
        tick.tick().await;
        let target = target.clone();
        let group = materials[i / config.group_size].clone();
        let (lifetime, connect_timeout, push_timeout) =
            (config.lifetime, config.connect_timeout, config.push_timeout);
        tasks.push(tokio::spawn(async move {
            let born = tokio::time::Instant::now();
            let client = connect(&target, &group, format!("churn-{i}"), connect_timeout).await?;
            let connected = client.status().connection == ConnectionStatus::Connected;
            let mut acked = false;
            if connected {
                // Bounded: a relay that stalls makes this push a failure, not a hang.
                acked = tokio::time::timeout(push_timeout, client.push(&message(i, 0, 64)))
                    .await
                    .is_ok_and(|r| r.is_ok());
                // The device's lifetime (the churn's shape, not a wait for an event).
                tokio::time::sleep_until(born + lifetime).await;
            }
            client.close().await;
            Ok::<_, LoadError>((connected, acked))
        }));
    }
    let (mut connected, mut refused, mut acked, mut push_failures) = (0, 0, 0, 0);
    for t in tasks {
        let (c, a) = t
            .await
            .map_err(|e| LoadError::Device(format!("churn task: {e}")))??;
        if c {
            connected += 1;
            if !a {
                push_failures += 1;
            }
        } else {
            refused += 1;
        }
        acked += usize::from(a);
    }
    let closed = Instant::now();
    let last = settle_sessions(target, baseline, config.settle_timeout).await;
    let settle_ms = (last == Some(baseline)).then(|| closed.elapsed().as_millis() as u64);
    let relay_fds = match fd_baseline {
        Some((pid, base)) => {
            let (end, back) = settle_fds(pid, base, config.fd_slack, config.settle_timeout).await;
            Some((pid, base, end.ok_or(LoadError::Proc(pid))?, back))
        }
        None => None,
    };
    let fds_settled = closed.elapsed().as_millis() as u64;
    let _ = stop_tx.send(true);
    let (peak, fd_peak) = sampler
        .await
        .unwrap_or((baseline, fd_baseline.map_or(0, |(_, n)| n)));
    let sessions_final = last.ok_or(LoadError::Metrics(http))?;
    Ok(ChurnReport {
        connections: config.connections,
        lifetime_ms: config.lifetime.as_millis() as u64,
        overlap: config.overlap,
        connected,
        refused,
        pushes_acked: acked,
        push_failures,
        sessions_baseline: baseline,
        sessions_peak: peak,
        sessions_final,
        ghost_sessions: sessions_final.saturating_sub(baseline),
        settle_ms,
        relay_fds: relay_fds.map(|(pid, baseline, end, back)| FdReport {
            pid,
            baseline,
            peak: fd_peak.max(baseline).max(end),
            end,
            slack: config.fd_slack,
            settle_ms: back.then_some(fds_settled),
        }),
        elapsed_s: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let m = message(12, 345, 256);
        assert_eq!(m.len(), 256);
        let (s, q, t) = parse_message(&m).unwrap();
        assert_eq!((s, q), (12, 345));
        assert!(t > 0);
        assert!(parse_message(b"garbage").is_none());
    }

    fn load_report(accepted: usize, pushed: u64, expected: u64, delivered: u64) -> LoadReport {
        LoadReport {
            clients: accepted,
            group_size: 2,
            groups: 1,
            accepted,
            refused: 0,
            refused_too_many_sessions: None,
            rate: 10.0,
            duration_s: 1.0,
            pushed,
            achieved_rate: 10.0,
            pushers_flushed: accepted,
            expected_deliveries: expected,
            delivered,
            lost: expected.saturating_sub(delivered),
            duplicates: 0,
            latency: Latency::default(),
            receivers: Vec::new(),
            sessions_before: None,
            sessions_after: None,
            elapsed_s: 1.0,
        }
    }

    #[test]
    fn a_load_that_measured_nothing_is_not_clean() {
        assert!(load_report(2, 10, 10, 10).clean());
        assert!(!load_report(2, 10, 10, 9).clean(), "a loss");
        for (r, why) in [
            (load_report(0, 0, 0, 0), "no device was accepted"),
            (load_report(2, 0, 0, 0), "nothing was pushed"),
            (load_report(2, 10, 0, 0), "no delivery was expected"),
        ] {
            assert!(!r.clean());
            assert!(r.problems()[0].contains(why), "{:?}", r.problems());
        }
    }

    #[test]
    fn churn_needs_connections_acks_no_ghosts_and_fds_back() {
        let fds = |end| FdReport {
            pid: 1,
            baseline: 20,
            peak: 30,
            end,
            slack: 2,
            settle_ms: None,
        };
        let report = |connected, acked, ghosts, relay_fds| ChurnReport {
            connections: 10,
            lifetime_ms: 100,
            overlap: 2,
            connected,
            refused: 10 - connected,
            pushes_acked: acked,
            push_failures: connected - acked,
            sessions_baseline: 0,
            sessions_peak: 2,
            sessions_final: ghosts,
            ghost_sessions: ghosts,
            settle_ms: None,
            relay_fds,
            elapsed_s: 1.0,
        };
        assert!(report(10, 10, 0, None).clean());
        assert!(report(10, 10, 0, Some(fds(22))).clean());
        assert!(!report(10, 10, 0, Some(fds(23))).clean(), "FDs leaked");
        assert!(!report(0, 0, 0, None).clean(), "nothing connected");
        assert!(!report(10, 9, 0, None).clean(), "a push timed out");
        assert!(!report(10, 10, 1, None).clean(), "a ghost session");
        let huge = FdReport {
            slack: u64::MAX,
            ..fds(u64::MAX)
        };
        assert!(huge.ok(), "no overflow");
    }

    #[test]
    fn dial_lines_parse() {
        let id = iroh::SecretKey::from_bytes(&[7; 32]).public();
        let t = LoadTarget::parse_dial(&format!("{id}@127.0.0.1:7440"), None).unwrap();
        assert_eq!(t.relay.id.as_bytes(), id.as_bytes());
        assert_eq!(
            t.relay.socket_addrs(),
            vec!["127.0.0.1:7440".parse().unwrap()]
        );
        assert!(LoadTarget::parse_dial("nope", None).is_err());
        assert!(LoadTarget::parse_dial(&format!("{id}@relay.example:1"), None).is_err());
        assert!(LoadTarget::parse_dial("zz@127.0.0.1:1", None).is_err());
    }
}
