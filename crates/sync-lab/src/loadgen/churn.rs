//! [`run_churn`]: many short-lived devices, then the relay's sessions (and open file
//! descriptors) must return to where they were.

use std::time::{Duration, Instant};

use sync_client::GroupMaterial;
use sync_core::ConnectionStatus;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::report::{ChurnReport, FdReport};
use super::{
    LoadError, LoadTarget, MAX_TIMEOUT, MIN_TIMEOUT, SESSIONS_METRIC, connect, group_materials,
    message, settle, settle_sessions,
};
use crate::soak::read_fd_count;

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

/// Reads the relay's open FDs until they are within `slack` of `baseline` or `timeout`
/// passes; the last value read and whether it got there.
async fn settle_fds(pid: u32, baseline: u64, slack: u64, timeout: Duration) -> (Option<u64>, bool) {
    let back = |n: u64| n <= baseline.saturating_add(slack);
    settle(timeout, || async move { read_fd_count(pid) }, back).await
}

impl ChurnConfig {
    fn validate(&self) -> Result<(), LoadError> {
        if !(1..=5000).contains(&self.connections)
            || !(1..=5000).contains(&self.overlap)
            || self.group_size == 0
            || self.lifetime > Duration::from_secs(600)
        {
            return Err(LoadError::Invalid(
                "churn: 1 to 5000 connections, overlap 1 to 5000, group size ≥ 1, lifetime ≤ 10 min"
                    .into(),
            ));
        }
        if !(MIN_TIMEOUT..=MAX_TIMEOUT).contains(&self.connect_timeout)
            || !(MIN_TIMEOUT..=MAX_TIMEOUT).contains(&self.push_timeout)
            || self.settle_timeout > MAX_TIMEOUT
        {
            return Err(LoadError::Invalid(
                "churn: connect and push timeouts 10 ms to 1 h, settle timeout at most 1 h".into(),
            ));
        }
        Ok(())
    }
}

/// Samples the session gauge (and the relay's FDs, with its pid) every 100 ms until told to
/// stop; then the peaks seen, starting from the baselines.
fn spawn_peaks(
    target: &LoadTarget,
    baseline: u64,
    fd_baseline: Option<(u32, u64)>,
) -> (watch::Sender<bool>, JoinHandle<(u64, u64)>) {
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let target = target.clone();
    let sampler = tokio::spawn(async move {
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
    });
    (stop_tx, sampler)
}

/// What the churn's devices came to.
#[derive(Default)]
struct Tally {
    connected: usize,
    refused: usize,
    acked: usize,
    push_failures: usize,
}

/// Starts a device every `lifetime / overlap`; each connects, pushes one message, stays its
/// lifetime and closes. Returns when the last one closed.
async fn churn_devices(
    target: &LoadTarget,
    config: &ChurnConfig,
    materials: &[GroupMaterial],
) -> Result<Tally, LoadError> {
    // `overlap` is 1..=5000 (validated): the conversion and the division cannot fail.
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
    let mut tally = Tally::default();
    for t in tasks {
        let (c, a) = t
            .await
            .map_err(|e| LoadError::Device(format!("churn task: {e}")))??;
        if c {
            tally.connected += 1;
            if !a {
                tally.push_failures += 1;
            }
        } else {
            tally.refused += 1;
        }
        tally.acked += usize::from(a);
    }
    Ok(tally)
}

/// Runs connection churn against `target` (needs its `/metrics`); see the module documentation.
pub async fn run_churn(
    target: &LoadTarget,
    config: &ChurnConfig,
) -> Result<ChurnReport, LoadError> {
    config.validate()?;
    let http = target.http.ok_or_else(|| {
        LoadError::Invalid("churn needs the relay's HTTP address (/metrics)".into())
    })?;
    let started = Instant::now();
    let baseline = target
        .metric(SESSIONS_METRIC)
        .await
        .ok_or(LoadError::Metrics(http))? as u64;
    let fd_baseline = match config.relay_pid {
        Some(pid) => {
            // A relay may open pooled connections on demand and keep them (PostgreSQL's pool
            // does; SQLite's readers are all open from the start): one round of `overlap`
            // devices first opens them, so the baseline is the relay at work, and what the
            // churn leaves above it is what it leaked.
            let warm = ChurnConfig {
                connections: config.overlap.min(config.connections),
                seed: config.seed.map(|s| s.wrapping_add(1)),
                ..config.clone()
            };
            let warm_groups = group_materials(warm.connections, warm.group_size, warm.seed);
            churn_devices(target, &warm, &warm_groups).await?;
            settle_sessions(target, baseline, config.settle_timeout).await;
            Some((pid, read_fd_count(pid).ok_or(LoadError::Proc(pid))?))
        }
        None => None,
    };
    let materials = group_materials(config.connections, config.group_size, config.seed);
    // Sample the gauge (and the relay's FDs) while the churn runs.
    let (stop_tx, sampler) = spawn_peaks(target, baseline, fd_baseline);
    let tally = churn_devices(target, config, &materials).await?;
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
        connected: tally.connected,
        refused: tally.refused,
        pushes_acked: tally.acked,
        push_failures: tally.push_failures,
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
