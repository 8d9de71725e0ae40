//! [`run_load`]: devices in groups pushing at a total rate, every other member of the group
//! receiving; fan-out latency, losses, duplicates and refusals.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sync_client::{GroupMaterial, StreamExt, SyncClient, SyncEvent};
use sync_core::ConnectionStatus;
use tokio::sync::watch;

use super::report::{Latency, LoadReport, ReceiverReport};
use super::{
    LoadError, LoadTarget, MAX_TIMEOUT, MIN_TIMEOUT, SESSIONS_METRIC, TOO_MANY_SESSIONS_METRIC,
    connect, group_materials, message, parse_message, settle_sessions, unix_nanos,
};

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
    pub(super) fn validate(&self) -> Result<(), LoadError> {
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

/// Shortest period between two pushes of one device: the timer's resolution. A device asked
/// for more than 1000 messages/s (e.g. when refusals leave fewer devices to share the rate)
/// pushes at this pace, and `achieved_rate` says so.
const MIN_PUSH_PERIOD: Duration = Duration::from_millis(1);

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

/// Connects `config.clients` devices with bounded concurrency, in index order; the accepted
/// ones (by index) and how many the relay did not accept (those are closed at once).
async fn connect_all(
    target: &LoadTarget,
    config: &LoadConfig,
    materials: &[GroupMaterial],
) -> Result<(Vec<(usize, SyncClient)>, usize), LoadError> {
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
    Ok((accepted, refused))
}

/// Pushes from every accepted device (the total rate split evenly) until the push phase ends,
/// then flushes each; messages pushed per device, and how many devices flushed in time.
async fn push_all(
    accepted: &[(usize, SyncClient)],
    config: &LoadConfig,
) -> Result<(HashMap<usize, u64>, usize), LoadError> {
    let deadline = Instant::now() + config.duration;
    let mut pushers = Vec::new();
    for (i, c) in accepted {
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
    Ok((pushed_by, pushers_flushed))
}

/// Runs the load described by `config` against `target`; see the module documentation.
pub async fn run_load(target: &LoadTarget, config: &LoadConfig) -> Result<LoadReport, LoadError> {
    config.validate()?;
    let started = Instant::now();
    let materials = group_materials(config.clients, config.group_size, config.seed);
    let sessions_before = target.metric(SESSIONS_METRIC).await.map(|v| v as u64);
    let refusals_before = target.metric(TOO_MANY_SESSIONS_METRIC).await;
    let (accepted, refused) = connect_all(target, config, &materials).await?;
    let refused_too_many_sessions = match (
        refusals_before,
        target.metric(TOO_MANY_SESSIONS_METRIC).await,
    ) {
        (Some(a), Some(b)) => Some((b - a).max(0.0) as u64),
        _ => None,
    };

    // Receivers subscribe before anything is pushed.
    let mut expected_senders = HashMap::new();
    let mut receivers = Vec::new();
    for (i, c) in &accepted {
        let (tx, rx) = watch::channel(None);
        expected_senders.insert(*i, tx);
        receivers.push((*i, tokio::spawn(receive(c.clone(), rx))));
    }
    let (pushed_by, pushers_flushed) = push_all(&accepted, config).await?;
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
    let pushed: u64 = pushed_by.values().sum();
    Ok(LoadReport {
        clients: config.clients,
        group_size: config.group_size,
        groups: materials.len(),
        accepted: accepted.len(),
        refused,
        refused_too_many_sessions,
        rate: config.rate,
        duration_s: config.duration.as_secs_f64(),
        pushed,
        achieved_rate: if config.duration.is_zero() {
            0.0
        } else {
            (pushed as f64 / config.duration.as_secs_f64() * 100.0).round() / 100.0
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
