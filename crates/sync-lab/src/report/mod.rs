//! The campaign's reports: `campaign-report.md` (setup, per-phase results, thresholds, soak)
//! and `report.html` (self-contained: inline SVG charts of RTT over time, message rate and the
//! relay's soak figures, impairment periods shaded, key events marked; no script, no network).

mod chart;
mod html;
mod markdown;
#[cfg(test)]
mod tests;

use crate::soak::{Sample, Verdict};
use crate::stats::Summary;

pub use html::html;
pub use markdown::markdown;

/// How a phase ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PhaseStatus {
    /// Ran and met every threshold.
    Pass,
    /// Ran and missed a threshold (or could not finish).
    Fail,
    /// Not selected for this run.
    Skipped,
    /// The feature it tests does not exist yet: never counted as passed.
    NotAvailable,
}

impl PhaseStatus {
    /// Upper-case label used in reports.
    pub fn label(self) -> &'static str {
        match self {
            PhaseStatus::Pass => "PASS",
            PhaseStatus::Fail => "FAIL",
            PhaseStatus::Skipped => "SKIPPED",
            PhaseStatus::NotAvailable => "NOT AVAILABLE",
        }
    }
}

/// One phase's outcome.
#[derive(Debug, Clone)]
pub struct PhaseResult {
    /// Phase name (`ping`, `burst`, …).
    pub name: String,
    /// Outcome.
    pub status: PhaseStatus,
    /// Message counts and RTT figures (phases that ran).
    pub summary: Option<Summary>,
    /// Seconds since the start when the phase began and ended.
    pub span_s: Option<(f64, f64)>,
    /// Notes: failed checks, verification counts, why not available.
    pub notes: Vec<String>,
}

/// One threshold and how the run compares.
#[derive(Debug, Clone)]
pub struct ThresholdRow {
    /// What is limited, e.g. "loss (each phase)".
    pub name: String,
    /// The limit, e.g. "≤ 0 %".
    pub limit: String,
    /// The worst value observed.
    pub observed: String,
    /// Whether the run is within the limit.
    pub ok: bool,
}

/// One message on the RTT chart.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Seconds since the start when it was sent.
    pub sent_s: f64,
    /// Its RTT, `None` if it was never answered.
    pub rtt_ms: Option<f64>,
}

/// A period when the network was impaired.
#[derive(Debug, Clone, PartialEq)]
pub struct Impairment {
    /// Start, seconds since the campaign started.
    pub from_s: f64,
    /// End.
    pub to_s: f64,
    /// What was applied (e.g. `loss=5%,delay=20ms`).
    pub spec: String,
}

/// A key event (a key rotation, a revocation, a device refused), marked on every chart and
/// listed in the reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Marker {
    /// When, seconds since the campaign started.
    pub at_s: f64,
    /// What happened, e.g. `key rotation → epoch 1`.
    pub label: String,
}

/// Everything the reports show.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Title line (e.g. `sync-stress campaign — 2026-11-22 08:10 UTC`).
    pub title: String,
    /// Setup as (label, value) pairs.
    pub setup: Vec<(String, String)>,
    /// Phases in run order (including not available ones).
    pub phases: Vec<PhaseResult>,
    /// Thresholds.
    pub thresholds: Vec<ThresholdRow>,
    /// Overall verdict line (e.g. `PASS (exit 0)`).
    pub verdict: String,
    /// Every message sent.
    pub points: Vec<Point>,
    /// Relay samples.
    pub samples: Vec<Sample>,
    /// What the samples cover.
    pub sampling: String,
    /// The leak verdict of the endurance phase.
    pub soak: Option<Verdict>,
    /// Impairment periods.
    pub impairments: Vec<Impairment>,
    /// Key events, in time order.
    pub markers: Vec<Marker>,
    /// Total duration in seconds.
    pub duration_s: f64,
}

/// Milliseconds with one decimal, `–` for none.
fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_string(), |v| format!("{v:.1} ms"))
}

/// A percentage with two decimals (`0 %` exactly when nothing was lost).
fn pct(v: f64) -> String {
    if v == 0.0 {
        "0 %".into()
    } else {
        format!("{v:.2} %")
    }
}

/// A phase's figures as the results tables show them: messages answered/sent, loss, average,
/// p50, p95, p99 and largest RTT.
fn figures(s: &Summary) -> [String; 7] {
    [
        format!("{}/{}", s.received, s.sent),
        pct(s.loss_pct),
        ms(s.avg_rtt_ms),
        ms(s.p50_ms),
        ms(s.p95_ms),
        ms(s.p99_ms),
        ms(s.max_ms),
    ]
}

/// Escapes text for HTML.
pub fn escape(text: &str) -> String {
    let mut o = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}
