//! What the relay recorded of the attack: its refusal counters in `/metrics`
//! (`admission_refusals_total` and `rejections_total`, by reason) and `connections_total`,
//! before and after; and its resident memory, sampled from `/proc/<pid>/status` while the
//! attack runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::soak::read_rss_kb;

/// The counter families read, by their name without the relay's metric prefix.
const FAMILIES: [&str; 2] = ["admission_refusals_total", "rejections_total"];
/// The relay's count of incoming connections.
const CONNECTIONS: &str = "connections_total";
/// How often the relay's resident memory is sampled.
pub(super) const RSS_EVERY: Duration = Duration::from_millis(20);

/// The counters of [`FAMILIES`] (by `family{reason="…"}`) and [`CONNECTIONS`], from one
/// `/metrics` text.
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct Counters(Vec<(String, f64)>);

impl Counters {
    /// Reads the counters out of a `/metrics` text (lines without a value are skipped).
    pub(super) fn parse(text: &str) -> Self {
        let prefix = sync_relay::METRIC_PREFIX;
        let wanted = |name: &str| {
            name == CONNECTIONS
                || FAMILIES
                    .iter()
                    .any(|f| name.strip_prefix(f).is_some_and(|r| r.starts_with('{')))
        };
        let counters = text
            .lines()
            .filter_map(|l| {
                let (name, value) = l.strip_prefix(prefix)?.split_once(' ')?;
                let value: f64 = value.trim().parse().ok()?;
                wanted(name).then(|| (name.to_string(), value))
            })
            .collect();
        Self(counters)
    }

    fn get(&self, name: &str) -> f64 {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0.0, |(_, v)| *v)
    }

    /// What rose since `before`: one line part per family (`family: reason n, …`, or `none`),
    /// then `connections_total +n`.
    pub(super) fn since(&self, before: &Self) -> String {
        let mut parts: Vec<String> = FAMILIES
            .iter()
            .map(|family| {
                let rose: Vec<String> = self
                    .0
                    .iter()
                    .filter_map(|(name, value)| {
                        let reason = name
                            .strip_prefix(family)?
                            .strip_prefix("{reason=\"")?
                            .strip_suffix("\"}")?;
                        let delta = value - before.get(name);
                        (delta > 0.0).then(|| format!("{reason} {delta:.0}"))
                    })
                    .collect();
                let rose = if rose.is_empty() {
                    "none".to_string()
                } else {
                    rose.join(", ")
                };
                format!("{family}: {rose}")
            })
            .collect();
        parts.push(format!(
            "{CONNECTIONS} +{:.0}",
            self.get(CONNECTIONS) - before.get(CONNECTIONS)
        ));
        parts.join("; ")
    }
}

/// The largest resident memory of a process seen since [`RssPeak::start`], sampled every
/// [`RSS_EVERY`] by a task that ends when this is dropped.
pub(super) struct RssPeak {
    peak_kib: Arc<AtomicU64>,
    sampler: JoinHandle<()>,
}

impl RssPeak {
    /// Starts sampling process `pid`.
    pub(super) fn start(pid: u32) -> Self {
        let peak_kib = Arc::new(AtomicU64::new(read_rss_kb(pid).unwrap_or(0)));
        let peak = Arc::clone(&peak_kib);
        let sampler = tokio::spawn(async move {
            let mut every = tokio::time::interval(RSS_EVERY);
            loop {
                every.tick().await;
                if let Some(kib) = read_rss_kb(pid) {
                    peak.fetch_max(kib, Ordering::Relaxed);
                }
            }
        });
        Self { peak_kib, sampler }
    }

    /// The peak so far, in KiB.
    pub(super) fn peak_kib(&self) -> u64 {
        self.peak_kib.load(Ordering::Relaxed)
    }
}

impl Drop for RssPeak {
    fn drop(&mut self) {
        self.sampler.abort();
    }
}

/// KiB as MiB.
#[allow(clippy::cast_precision_loss)]
pub(super) fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "\
# HELP sync_relay_admission_refusals_total Refusals.
sync_relay_admission_refusals_total{reason=\"pre_auth_deadline\"} 1
sync_relay_admission_refusals_total{reason=\"sessions_full\"} 0
sync_relay_rejections_total{reason=\"FrameTooLarge\"} 2
sync_relay_connections_total 10
sync_relay_sessions 3
";

    const AFTER: &str = "\
sync_relay_admission_refusals_total{reason=\"pre_auth_deadline\"} 5
sync_relay_admission_refusals_total{reason=\"sessions_full\"} 0
sync_relay_rejections_total{reason=\"FrameTooLarge\"} 2
sync_relay_connections_total 42
sync_relay_sessions 1
";

    #[test]
    fn only_what_rose_is_reported_by_family_and_reason() {
        let before = Counters::parse(BEFORE);
        assert_eq!(before.0.len(), 4, "{before:?}");
        let after = Counters::parse(AFTER);
        assert_eq!(
            after.since(&before),
            "admission_refusals_total: pre_auth_deadline 4; rejections_total: none; \
             connections_total +32"
        );
    }

    #[test]
    fn an_unreadable_text_counts_nothing() {
        let empty = Counters::parse("");
        assert_eq!(empty, Counters::default());
        assert_eq!(
            Counters::parse(AFTER).since(&empty),
            "admission_refusals_total: pre_auth_deadline 5; rejections_total: FrameTooLarge 2; \
             connections_total +42"
        );
    }
}
