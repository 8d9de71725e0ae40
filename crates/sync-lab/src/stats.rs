//! Latency statistics: percentiles (nearest rank) and per-phase summaries.

use serde::Serialize;

/// Summary of one set of round-trip times (milliseconds) and its message counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Messages sent.
    pub sent: u64,
    /// Answers received (each sent message answered at most once).
    pub received: u64,
    /// Messages not answered within the reply timeout.
    pub lost: u64,
    /// `lost / sent` in percent (0 when nothing was sent).
    pub loss_pct: f64,
    /// Mean RTT, `None` without answers.
    pub avg_rtt_ms: Option<f64>,
    /// Median RTT.
    pub p50_ms: Option<f64>,
    /// 95th percentile RTT.
    pub p95_ms: Option<f64>,
    /// 99th percentile RTT.
    pub p99_ms: Option<f64>,
    /// Largest RTT.
    pub max_ms: Option<f64>,
}

/// The `q`-quantile (0..=1) of sorted values by nearest rank: the smallest value with at least
/// `q` of the values at or below it. `None` for no values.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    // Nearest rank: ceil(q * n), clamped to 1..=n.
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    let rank = ((q.clamp(0.0, 1.0) * n as f64).ceil() as usize).clamp(1, n);
    sorted.get(rank - 1).copied()
}

impl Summary {
    /// Summarizes `rtts_ms` (one per answered message) for `sent` messages, `lost` of which
    /// were not answered.
    pub fn new(sent: u64, lost: u64, rtts_ms: &[f64]) -> Summary {
        let mut sorted: Vec<f64> = rtts_ms.iter().copied().filter(|v| v.is_finite()).collect();
        sorted.sort_by(f64::total_cmp);
        #[allow(clippy::cast_precision_loss)]
        let avg = (!sorted.is_empty()).then(|| sorted.iter().sum::<f64>() / sorted.len() as f64);
        #[allow(clippy::cast_precision_loss)]
        let loss_pct = if sent == 0 {
            0.0
        } else {
            lost as f64 * 100.0 / sent as f64
        };
        Summary {
            sent,
            received: sorted.len() as u64,
            lost,
            loss_pct,
            avg_rtt_ms: avg,
            p50_ms: percentile(&sorted, 0.50),
            p95_ms: percentile(&sorted, 0.95),
            p99_ms: percentile(&sorted, 0.99),
            max_ms: sorted.last().copied(),
        }
    }
}

/// Rounds to two decimals (for JSON and reports).
pub fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(50.0));
        assert_eq!(percentile(&v, 0.95), Some(95.0));
        assert_eq!(percentile(&v, 0.99), Some(99.0));
        assert_eq!(percentile(&v, 1.0), Some(100.0));
        assert_eq!(percentile(&[3.0], 0.99), Some(3.0));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn summary_counts_and_loss() {
        let s = Summary::new(4, 1, &[10.0, 30.0, 20.0]);
        assert_eq!((s.sent, s.received, s.lost), (4, 3, 1));
        assert_eq!(s.loss_pct, 25.0);
        assert_eq!(s.avg_rtt_ms, Some(20.0));
        assert_eq!(s.p50_ms, Some(20.0));
        assert_eq!(s.max_ms, Some(30.0));
        let empty = Summary::new(0, 0, &[]);
        assert_eq!(empty.loss_pct, 0.0);
        assert_eq!(empty.p99_ms, None);
    }
}
