//! What a load or churn run came to, as serializable reports, and what makes one not clean.

use serde::Serialize;

use crate::stats::percentile;

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
    pub(super) fn of(mut ms: Vec<f64>) -> Self {
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

/// The result of [`run_load`](super::run_load).
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

/// The result of [`run_churn`](super::run_churn).
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
