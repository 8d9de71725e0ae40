//! Relay metrics: one struct of lock-free counters whose fields carry their help text, rendered
//! as Prometheus text for `/metrics`.
//!
//! Updating a metric is one relaxed atomic operation; rendering never touches storage beyond
//! its in-memory counters (no table scans).

use std::fmt::Write as _;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use sync_types::ErrorCode;

use crate::admission::Refusals;
use crate::storage::{StorageStats, WriterMetrics};

/// Prefix of every metric name.
pub const METRIC_PREFIX: &str = "sync_relay_";

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        header(out, name, help, "counter");
        let _ = writeln!(out, "{METRIC_PREFIX}{name} {}", self.get());
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Sets the value.
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// Subtracts one.
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        header(out, name, help, "gauge");
        let _ = writeln!(out, "{METRIC_PREFIX}{name} {}", self.get());
    }
}

/// Upper bounds (seconds) of the latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
    5.0,
];

/// A latency histogram with fixed buckets ([`LATENCY_BUCKETS`]).
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b)
            && let Some(bucket) = self.buckets.get(i)
        {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Observations recorded.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Observations per bucket of [`LATENCY_BUCKETS`] (not cumulative), then those above the
    /// last bound.
    pub fn buckets(&self) -> Vec<u64> {
        let within: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let above = self.count().saturating_sub(within.iter().sum());
        within.into_iter().chain(std::iter::once(above)).collect()
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        header(out, name, help, "histogram");
        let mut cumulative = 0u64;
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&self.buckets) {
            cumulative = cumulative.saturating_add(bucket.load(Ordering::Relaxed));
            let _ = writeln!(
                out,
                "{METRIC_PREFIX}{name}_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = self.count();
        let _ = writeln!(out, "{METRIC_PREFIX}{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{METRIC_PREFIX}{name}_sum {sum}");
        let _ = writeln!(out, "{METRIC_PREFIX}{name}_count {count}");
    }
}

/// What a [`ByReason`] counter is labelled by: a fixed list of values with stable names.
pub trait Reason: Copy + PartialEq + 'static {
    /// Every value, in the order they are rendered.
    const ALL: &'static [Self];

    /// The value of the `reason` label.
    fn label(self) -> &'static str;
}

impl Reason for ErrorCode {
    const ALL: &'static [Self] = ErrorCode::ALL;

    fn label(self) -> &'static str {
        self.name()
    }
}

/// Counts by reason: one counter per value of `R`, rendered as `name{reason="…"}`.
#[derive(Debug)]
pub struct ByReason<R> {
    counts: Vec<AtomicU64>,
    reasons: PhantomData<R>,
}

/// Rejections counted by reason: one counter per wire [`ErrorCode`] the relay sends.
pub type Rejections = ByReason<ErrorCode>;

impl<R: Reason> Default for ByReason<R> {
    fn default() -> Self {
        Self {
            counts: R::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
            reasons: PhantomData,
        }
    }
}

impl<R: Reason> ByReason<R> {
    /// Counts one with this reason.
    pub fn inc(&self, reason: R) {
        if let Some(c) = self.slot(reason) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// How many were counted with this reason.
    pub fn get(&self, reason: R) -> u64 {
        self.slot(reason).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Every reason's label with its count.
    pub fn counts(&self) -> Vec<(&'static str, u64)> {
        R::ALL
            .iter()
            .zip(&self.counts)
            .map(|(r, c)| (r.label(), c.load(Ordering::Relaxed)))
            .collect()
    }

    /// All of them.
    pub fn total(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    fn slot(&self, reason: R) -> Option<&AtomicU64> {
        R::ALL
            .iter()
            .position(|r| *r == reason)
            .and_then(|i| self.counts.get(i))
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        header(out, name, help, "counter");
        for (reason, count) in R::ALL.iter().zip(&self.counts) {
            let _ = writeln!(
                out,
                "{METRIC_PREFIX}{name}{{reason=\"{}\"}} {}",
                reason.label(),
                count.load(Ordering::Relaxed)
            );
        }
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {METRIC_PREFIX}{name} {help}");
    let _ = writeln!(out, "# TYPE {METRIC_PREFIX}{name} {kind}");
}

macro_rules! relay_metrics {
    ($( #[doc = $help:literal] $name:ident : $kind:ty, )+) => {
        /// Every metric of the relay. Each field's doc line is its Prometheus help text.
        #[derive(Debug, Default)]
        pub struct Metrics {
            $( #[doc = $help] pub $name: $kind, )+
        }

        impl Metrics {
            fn render_fields(&self, out: &mut String) {
                $( self.$name.render(stringify!($name), $help.trim(), out); )+
            }
        }
    };
}

relay_metrics! {
    /// Sessions open now (after Welcome).
    sessions: Gauge,
    /// Sessions opened (Welcome sent) since start.
    sessions_total: Counter,
    /// Connections accepted (including those refused before Welcome).
    connections_total: Counter,
    /// Blobs committed by pushes, counted at the commit, pushing session or not (no retries).
    pushes_total: Counter,
    /// Pushes of a blob stored or remembered before, answered with its original cursor.
    push_duplicates_total: Counter,
    /// Pull requests answered.
    pulls_total: Counter,
    /// Blobs sent in pull responses.
    pulled_blobs_total: Counter,
    /// Blobs deleted by request.
    deletes_total: Counter,
    /// Blobs removed by TTL cleanup.
    expired_total: Counter,
    /// Frame bytes received from devices (length prefixes included).
    bytes_in_total: Counter,
    /// Frame bytes sent to devices (length prefixes included).
    bytes_out_total: Counter,
    /// Notify frames queued to sessions.
    notifies_total: Counter,
    /// Notifications folded into a later Notify because the session's queue was full.
    notifies_coalesced_total: Counter,
    /// Error frames sent, by reason (wire error code name).
    rejections_total: Rejections,
    /// Sessions closed because their device accepted no byte for write_stall_timeout.
    write_stalls_total: Counter,
    /// Ids of removed blobs forgotten by the cleanup (their memory ran out).
    forgotten_ids_total: Counter,
    /// Groups deleted by the cleanup: no blob and no session for group_idle_ttl.
    idle_groups_deleted_total: Counter,
    /// Time from reading a Push to its commit (the PushAck is queued right after).
    push_commit_seconds: Histogram,
    /// Connections without a valid Hello yet (TLS handshake, stream and first frame pending).
    pre_auth_connections: Gauge,
    /// Connections, sessions and requests refused at admission, by reason.
    admission_refusals_total: Refusals,
    /// Invite lookups answered from the mailbox (rate-limited lookups not included).
    invite_lookups_total: Counter,
    /// Invite lookups that found no invite to take (unknown, expired, too many attempts).
    invite_lookups_failed_total: Counter,
    /// Audit lines of refusals not written because more were due than the audit rate allows.
    audit_suppressed_total: Counter,
    /// Pieces of large content uploaded completely and held now (each counted once).
    content_items: Gauge,
    /// Bytes of large content uploaded completely and held now (each piece counted once).
    content_bytes: Gauge,
    /// Content reservations (ContentRef) refused because the group's content quota is full.
    content_reservations_refused_total: Counter,
    /// Content uploads completed (iroh-blobs push of a reserved hash).
    content_uploads_total: Counter,
    /// Content downloads allowed (iroh-blobs get requests served).
    content_served_total: Counter,
    /// Content transfers refused (not reserved, not uploaded, not a member, or not allowed).
    content_requests_refused_total: Counter,
    /// The configured limit of open sessions (`max_sessions`), for alerts on `sessions`.
    max_sessions: Gauge,
    /// The configured limit of connections waiting for a valid Hello (`max_pre_auth`).
    max_pre_auth: Gauge,
}

impl Metrics {
    /// Counts one rejection with this code.
    pub fn reject(&self, code: ErrorCode) {
        self.rejections_total.inc(code);
    }

    /// Renders everything as Prometheus text (format 0.0.4), including the storage counters.
    pub fn render(&self, storage: StorageStats, writer: WriterMetrics) -> String {
        let mut out = String::with_capacity(8 * 1024);
        self.render_fields(&mut out);
        let gauges: [(&str, &str, u64); 3] = [
            ("stored_blobs", "Blobs stored now.", storage.blobs),
            ("stored_bytes", "Payload bytes stored now.", storage.bytes),
            ("groups", "Groups with a log on this relay.", storage.groups),
        ];
        for (name, help, value) in gauges {
            header(&mut out, name, help, "gauge");
            let _ = writeln!(out, "{METRIC_PREFIX}{name} {value}");
        }
        let counters: [(&str, &str, u64); 3] = [
            (
                "storage_commits_total",
                "Storage write transactions committed (group commit: many pushes each).",
                writer.commits,
            ),
            (
                "storage_ops_total",
                "Storage writes answered from committed transactions.",
                writer.ops,
            ),
            (
                "storage_failed_commits_total",
                "Storage write transactions rolled back.",
                writer.failed_commits,
            ),
        ];
        for (name, help, value) in counters {
            header(&mut out, name, help, "counter");
            let _ = writeln!(out, "{METRIC_PREFIX}{name} {value}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_has_help_type_and_values() {
        let m = Metrics::default();
        m.sessions.inc();
        m.pushes_total.add(3);
        m.reject(ErrorCode::RateLimited);
        m.reject(ErrorCode::RateLimited);
        m.push_commit_seconds.observe(Duration::from_micros(300));
        m.push_commit_seconds.observe(Duration::from_secs(60));
        let text = m.render(
            StorageStats {
                groups: 1,
                blobs: 2,
                bytes: 3,
            },
            WriterMetrics::default(),
        );
        assert!(text.contains("# HELP sync_relay_sessions Sessions open now (after Welcome).\n"));
        assert!(text.contains("# TYPE sync_relay_sessions gauge\nsync_relay_sessions 1\n"));
        assert!(text.contains("sync_relay_pushes_total 3\n"));
        assert!(text.contains("sync_relay_rejections_total{reason=\"RateLimited\"} 2\n"));
        assert!(text.contains("sync_relay_rejections_total{reason=\"Unauthorized\"} 0\n"));
        assert!(text.contains("sync_relay_push_commit_seconds_bucket{le=\"0.0005\"} 1\n"));
        assert!(text.contains("sync_relay_push_commit_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("sync_relay_push_commit_seconds_count 2\n"));
        assert!(text.contains("sync_relay_stored_blobs 2\n"));
        assert!(text.contains("sync_relay_stored_bytes 3\n"));
        assert_eq!(m.rejections_total.total(), 2);
        // Every line is a comment or `name{labels} value`.
        for line in text.lines() {
            assert!(
                line.starts_with("# HELP sync_relay_")
                    || line.starts_with("# TYPE sync_relay_")
                    || line.starts_with("sync_relay_"),
                "{line}"
            );
        }
    }
}
