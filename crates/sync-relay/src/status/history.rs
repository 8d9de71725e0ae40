//! The last [`SAMPLES_KEPT`] samples of the relay's figures (an hour at the default
//! `status_interval` of 5 s), for the status page: rates and latencies computed from the
//! metrics' counters between two samples, in a ring buffer of fixed size.

use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use crate::metrics::{LATENCY_BUCKETS, Metrics};
use crate::storage::StorageStats;

/// Samples kept: an hour of them at the default interval.
pub(crate) const SAMPLES_KEPT: usize = 720;

/// One interval of the relay's life.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Sample {
    /// End of the interval, milliseconds since the Unix epoch.
    pub(crate) t_ms: u64,
    pub(crate) sessions: i64,
    pub(crate) pre_auth: i64,
    pub(crate) pushes_per_s: f64,
    pub(crate) pulls_per_s: f64,
    pub(crate) bytes_in_per_s: f64,
    pub(crate) bytes_out_per_s: f64,
    pub(crate) notifies_per_s: f64,
    pub(crate) notifies_coalesced_per_s: f64,
    /// Push→commit latency of the interval's pushes (none without pushes), milliseconds.
    pub(crate) push_p50_ms: Option<f64>,
    pub(crate) push_p99_ms: Option<f64>,
    pub(crate) stored_blobs: u64,
    pub(crate) stored_bytes: u64,
    pub(crate) groups: u64,
    /// Refusals in the interval by reason (wire errors and admission refusals), those above 0.
    pub(crate) refusals: BTreeMap<&'static str, u64>,
}

/// The counters a sample is the difference of.
#[derive(Debug, Clone, Default)]
struct Counters {
    pushes: u64,
    pulls: u64,
    bytes_in: u64,
    bytes_out: u64,
    notifies: u64,
    coalesced: u64,
    latency: Vec<u64>,
    refusals: BTreeMap<&'static str, u64>,
}

impl Counters {
    fn read(m: &Metrics) -> Self {
        let mut refusals = BTreeMap::new();
        for (reason, n) in m
            .rejections_total
            .counts()
            .into_iter()
            .chain(m.admission_refusals_total.counts())
        {
            *refusals.entry(reason).or_insert(0) += n;
        }
        Self {
            pushes: m.pushes_total.get(),
            pulls: m.pulls_total.get(),
            bytes_in: m.bytes_in_total.get(),
            bytes_out: m.bytes_out_total.get(),
            notifies: m.notifies_total.get(),
            coalesced: m.notifies_coalesced_total.get(),
            latency: m.push_commit_seconds.buckets(),
            refusals,
        }
    }
}

/// The ring buffer and the counters of the last sample.
#[derive(Debug, Default)]
pub(crate) struct History {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    last: Option<(u64, Counters)>,
    samples: VecDeque<Sample>,
}

impl History {
    /// Takes a sample at `now_ms`: the first call only sets the starting point.
    pub(crate) fn sample(&self, m: &Metrics, stored: StorageStats, now_ms: u64) {
        let now = Counters::read(m);
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((then_ms, then)) = &inner.last {
            let secs = (now_ms.saturating_sub(*then_ms) as f64 / 1000.0).max(0.001);
            let rate = |a: u64, b: u64| ((a.saturating_sub(b) as f64 / secs) * 10.0).round() / 10.0;
            let latency: Vec<u64> = now
                .latency
                .iter()
                .zip(&then.latency)
                .map(|(a, b)| a.saturating_sub(*b))
                .collect();
            let refusals = now
                .refusals
                .iter()
                .filter_map(|(reason, n)| {
                    let d = n.saturating_sub(then.refusals.get(reason).copied().unwrap_or(0));
                    (d > 0).then_some((*reason, d))
                })
                .collect();
            let sample = Sample {
                t_ms: now_ms,
                sessions: m.sessions.get(),
                pre_auth: m.pre_auth_connections.get(),
                pushes_per_s: rate(now.pushes, then.pushes),
                pulls_per_s: rate(now.pulls, then.pulls),
                bytes_in_per_s: rate(now.bytes_in, then.bytes_in),
                bytes_out_per_s: rate(now.bytes_out, then.bytes_out),
                notifies_per_s: rate(now.notifies, then.notifies),
                notifies_coalesced_per_s: rate(now.coalesced, then.coalesced),
                push_p50_ms: quantile_ms(&latency, 0.5),
                push_p99_ms: quantile_ms(&latency, 0.99),
                stored_blobs: stored.blobs,
                stored_bytes: stored.bytes,
                groups: stored.groups,
                refusals,
            };
            if inner.samples.len() == SAMPLES_KEPT {
                inner.samples.pop_front();
            }
            inner.samples.push_back(sample);
        }
        inner.last = Some((now_ms, now));
    }

    /// The samples kept, oldest first.
    pub(crate) fn samples(&self) -> Vec<Sample> {
        let inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.samples.iter().cloned().collect()
    }
}

/// The `q` quantile of observations counted per latency bucket (not cumulative), in
/// milliseconds, interpolated within its bucket; `None` without observations.
fn quantile_ms(buckets: &[u64], q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    let mut lower = 0.0;
    for (i, n) in buckets.iter().enumerate() {
        // Observations above the last bound count in a last bucket at twice that bound.
        let upper = LATENCY_BUCKETS.get(i).copied().unwrap_or(lower * 2.0);
        if *n > 0 && (below + n) as f64 >= rank {
            let within = (rank - below as f64) / *n as f64;
            let secs = lower + (upper - lower) * within.clamp(0.0, 1.0);
            return Some((secs * 1_000_000.0).round() / 1000.0);
        }
        below += n;
        lower = upper;
    }
    Some(lower * 1000.0)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn rates_and_latencies_come_from_the_counters_between_two_samples() {
        let m = Metrics::default();
        let history = History::default();
        history.sample(&m, StorageStats::default(), 10_000);
        assert!(
            history.samples().is_empty(),
            "the first call is the starting point"
        );
        for _ in 0..50 {
            m.pushes_total.inc();
            m.push_commit_seconds.observe(Duration::from_micros(300));
        }
        m.push_commit_seconds.observe(Duration::from_millis(20));
        m.bytes_in_total.add(5_000);
        m.reject(sync_types::ErrorCode::RateLimited);
        history.sample(&m, StorageStats::default(), 15_000);
        let s = &history.samples()[0];
        assert_eq!(s.pushes_per_s, 10.0);
        assert_eq!(s.bytes_in_per_s, 1000.0);
        let p50 = s.push_p50_ms.expect("p50");
        assert!((0.25..=0.5).contains(&p50), "{p50}");
        let p99 = s.push_p99_ms.expect("p99");
        assert!((10.0..=25.0).contains(&p99), "{p99}");
        assert_eq!(s.refusals.get("RateLimited"), Some(&1));
        assert_eq!(s.refusals.len(), 1);
        // Nothing happened in the next interval.
        history.sample(&m, StorageStats::default(), 20_000);
        let quiet = &history.samples()[1];
        assert_eq!((quiet.pushes_per_s, quiet.push_p99_ms), (0.0, None));
        assert!(quiet.refusals.is_empty());
    }

    #[test]
    fn an_hour_of_samples_is_kept() {
        let m = Metrics::default();
        let history = History::default();
        for i in 0..(SAMPLES_KEPT as u64 + 10) {
            history.sample(&m, StorageStats::default(), i * 5_000);
        }
        let samples = history.samples();
        assert_eq!(samples.len(), SAMPLES_KEPT);
        assert_eq!(
            samples.last().map(|s| s.t_ms),
            Some((SAMPLES_KEPT as u64 + 9) * 5_000)
        );
    }
}
