//! Soak sampling of a relay: resident memory and open file descriptors from `/proc/<pid>/`
//! (when the relay runs on this machine and its pid is known) and the session count from its
//! `/metrics` (when its HTTP address is reachable), plus the leak verdict the endurance phase
//! applies to the samples.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Longest a `/metrics` request may take.
const METRICS_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest `/metrics` response read.
const METRICS_MAX_BYTES: u64 = 4 << 20;

/// What is sampled and where from.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// The relay's process id, when it runs on this machine.
    pub pid: Option<u32>,
    /// The relay's HTTP address (`/metrics`), when reachable.
    pub http: Option<SocketAddr>,
}

impl Target {
    /// Which figures this target can give, for reports: e.g. "RSS, FDs (pid 42), sessions
    /// (/metrics at 127.0.0.1:7441)".
    pub fn describe(&self) -> String {
        let proc_part = match self.pid {
            Some(pid) => format!("RSS and open FDs from /proc/{pid}"),
            None => "RSS and open FDs not sampled (relay pid unknown: remote relay)".to_string(),
        };
        let http_part = match self.http {
            Some(a) => format!("sessions from http://{a}/metrics"),
            None => "sessions not sampled (no metrics address)".to_string(),
        };
        format!("{proc_part}; {http_part}")
    }
}

/// One sample; a figure is `None` when it could not be read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Sample {
    /// Seconds since the campaign started.
    pub elapsed_s: f64,
    /// Resident set size in KiB (`VmRSS`).
    pub rss_kb: Option<u64>,
    /// Open file descriptors (entries of `/proc/<pid>/fd`).
    pub fds: Option<u64>,
    /// Sessions open on the relay (`sync_relay_sessions`).
    pub sessions: Option<i64>,
}

/// `VmRSS` of `pid` in KiB.
pub fn read_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(PathBuf::from(format!("/proc/{pid}/status"))).ok()?;
    parse_vm_rss(&status)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Number of open file descriptors of `pid`.
pub fn read_fd_count(pid: u32) -> Option<u64> {
    let dir = std::fs::read_dir(PathBuf::from(format!("/proc/{pid}/fd"))).ok()?;
    Some(dir.filter(Result::is_ok).count() as u64)
}

/// The value of the metric `name` (a line `name value`) in Prometheus text.
pub fn parse_metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let mut parts = l.split_whitespace();
        (parts.next() == Some(name))
            .then(|| parts.next())
            .flatten()
            .and_then(|v| v.parse().ok())
    })
}

/// `GET /metrics` from `addr` (HTTP/1.1, `Connection: close`, so the relay's socket is closed
/// when this returns and does not count as a leaked descriptor). The body, or `None`.
pub async fn fetch_metrics(addr: SocketAddr) -> Option<String> {
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut raw = Vec::new();
        stream
            .take(METRICS_MAX_BYTES)
            .read_to_end(&mut raw)
            .await
            .ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.1 200").then(|| body.to_string())
    };
    tokio::time::timeout(METRICS_TIMEOUT, fetch)
        .await
        .ok()
        .flatten()
}

/// Takes one sample of `target` at `elapsed_s`.
pub async fn sample(target: &Target, elapsed_s: f64) -> Sample {
    let (rss_kb, fds) = match target.pid {
        Some(pid) => (read_rss_kb(pid), read_fd_count(pid)),
        None => (None, None),
    };
    let sessions = match target.http {
        Some(addr) => fetch_metrics(addr)
            .await
            .and_then(|body| parse_metric(&body, "sync_relay_sessions"))
            .map(|v| {
                #[allow(clippy::cast_possible_truncation)]
                let n = v as i64;
                n
            }),
        None => None,
    };
    Sample {
        elapsed_s,
        rss_kb,
        fds,
        sessions,
    }
}

/// Limits of the leak verdict.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LeakLimits {
    /// Samples in the first `warmup_s` seconds of the window are not used for RSS growth.
    pub warmup_s: f64,
    /// RSS growth is judged only over at least this many seconds after warm-up (shorter runs
    /// extrapolate noise to an hourly rate).
    pub min_window_s: f64,
    /// Largest allowed RSS growth after warm-up, percent per hour (linear fit).
    pub max_rss_growth_pct_per_hour: f64,
    /// Open FDs at the end may exceed the baseline (first sample) by this many.
    pub fd_slack: u64,
}

impl Default for LeakLimits {
    fn default() -> Self {
        LeakLimits {
            warmup_s: 300.0,
            min_window_s: 600.0,
            max_rss_growth_pct_per_hour: 10.0,
            fd_slack: 2,
        }
    }
}

/// Outcome of one leak check.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum Check {
    /// Within limits.
    Pass {
        /// The figure and how it compares.
        detail: String,
    },
    /// Outside limits.
    Fail {
        /// The figure and how it compares.
        detail: String,
    },
    /// Not enough data to judge (not a pass).
    NotJudged {
        /// Why.
        detail: String,
    },
}

impl Check {
    /// Whether this check failed.
    pub fn failed(&self) -> bool {
        matches!(self, Check::Fail { .. })
    }

    /// "PASS", "FAIL" or "NOT JUDGED".
    pub fn label(&self) -> &'static str {
        match self {
            Check::Pass { .. } => "PASS",
            Check::Fail { .. } => "FAIL",
            Check::NotJudged { .. } => "NOT JUDGED",
        }
    }

    /// The detail text.
    pub fn detail(&self) -> &str {
        match self {
            Check::Pass { detail } | Check::Fail { detail } | Check::NotJudged { detail } => detail,
        }
    }
}

/// The leak verdict over one window of samples (in time order).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// RSS growth after warm-up.
    pub rss: Check,
    /// Open FDs back to the baseline at the end.
    pub fds: Check,
}

/// Least-squares slope of `(x, y)` points, `None` for fewer than two distinct x.
fn slope(points: &[(f64, f64)]) -> Option<f64> {
    #[allow(clippy::cast_precision_loss)]
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

/// Judges `samples` (one window, e.g. the endurance phase) against `limits`.
pub fn judge(samples: &[Sample], limits: &LeakLimits) -> Verdict {
    let rss: Vec<(f64, f64)> = samples
        .iter()
        .filter_map(|s| {
            #[allow(clippy::cast_precision_loss)]
            s.rss_kb.map(|r| (s.elapsed_s, r as f64))
        })
        .collect();
    let rss_check = match (rss.first(), rss.last()) {
        (None, _) | (_, None) => Check::NotJudged {
            detail: "RSS not sampled".into(),
        },
        (Some(first), Some(last)) => {
            let start = first.0 + limits.warmup_s;
            let window: Vec<(f64, f64)> = rss.iter().copied().filter(|p| p.0 >= start).collect();
            let span = window.last().map_or(0.0, |l| l.0) - window.first().map_or(0.0, |f| f.0);
            if span < limits.min_window_s {
                Check::NotJudged {
                    detail: format!(
                        "RSS {:.1} → {:.1} MiB; window after {:.0} s warm-up is {:.0} s < {:.0} s",
                        first.1 / 1024.0,
                        last.1 / 1024.0,
                        limits.warmup_s,
                        span.max(0.0),
                        limits.min_window_s
                    ),
                }
            } else {
                let base = window.first().map_or(1.0, |p| p.1.max(1.0));
                let growth = slope(&window).unwrap_or(0.0) * 3600.0 / base * 100.0;
                let detail = format!(
                    "RSS {:.1} → {:.1} MiB, growth after warm-up {growth:.2} %/h (limit {:.1} %/h)",
                    base / 1024.0,
                    last.1 / 1024.0,
                    limits.max_rss_growth_pct_per_hour
                );
                if growth > limits.max_rss_growth_pct_per_hour {
                    Check::Fail { detail }
                } else {
                    Check::Pass { detail }
                }
            }
        }
    };
    let fds: Vec<u64> = samples.iter().filter_map(|s| s.fds).collect();
    let fd_check = match fds.first() {
        None => Check::NotJudged {
            detail: "open FDs not sampled".into(),
        },
        Some(&baseline) => {
            // The smallest of the last three samples: a descriptor open for an instant (an
            // HTTP request being served) is not a leak.
            let tail = &fds[fds.len().saturating_sub(3)..];
            let end = tail.iter().copied().min().unwrap_or(baseline);
            let peak = fds.iter().copied().max().unwrap_or(baseline);
            let detail = format!(
                "open FDs baseline {baseline}, peak {peak}, end {end} (slack {})",
                limits.fd_slack
            );
            if end > baseline.saturating_add(limits.fd_slack) {
                Check::Fail { detail }
            } else {
                Check::Pass { detail }
            }
        }
    };
    Verdict {
        rss: rss_check,
        fds: fd_check,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t: f64, rss: u64, fds: u64) -> Sample {
        Sample {
            elapsed_s: t,
            rss_kb: Some(rss),
            fds: Some(fds),
            sessions: None,
        }
    }

    #[test]
    fn parses_proc_status_and_metrics() {
        let status = "Name:\tsync-relay\nVmPeak:\t  999 kB\nVmRSS:\t   12345 kB\n";
        assert_eq!(parse_vm_rss(status), Some(12345));
        let text = "# HELP sync_relay_sessions x\n# TYPE sync_relay_sessions gauge\n\
                    sync_relay_sessions 3\nsync_relay_sessions_total 9\n";
        assert_eq!(parse_metric(text, "sync_relay_sessions"), Some(3.0));
        assert_eq!(parse_metric(text, "sync_relay_sessions_total"), Some(9.0));
        assert_eq!(parse_metric(text, "nope"), None);
    }

    #[test]
    fn own_process_is_readable() {
        let pid = std::process::id();
        assert!(read_rss_kb(pid).unwrap() > 0);
        assert!(read_fd_count(pid).unwrap() >= 3);
    }

    #[test]
    fn steady_memory_passes_and_growth_fails() {
        let limits = LeakLimits::default();
        // One hour, a sample a minute, flat after a warm-up bump.
        let flat: Vec<Sample> = (0..=60u32)
            .map(|m| {
                s(
                    f64::from(m) * 60.0,
                    if m < 3 { 50_000 } else { 100_000 },
                    20,
                )
            })
            .collect();
        let v = judge(&flat, &limits);
        assert!(matches!(v.rss, Check::Pass { .. }), "{v:?}");
        assert!(matches!(v.fds, Check::Pass { .. }), "{v:?}");
        // +1 % per 3 minutes = +20 %/h.
        let growing: Vec<Sample> = (0..=60u32)
            .map(|m| s(f64::from(m) * 60.0, 100_000 + u64::from(m) * 333, 20))
            .collect();
        assert!(judge(&growing, &limits).rss.failed());
    }

    #[test]
    fn fds_must_return_to_baseline() {
        let limits = LeakLimits::default();
        let back: Vec<Sample> = [20, 40, 60, 21, 20, 20]
            .iter()
            .enumerate()
            .map(|(i, &f)| s(i as f64, 1000, f))
            .collect();
        assert!(!judge(&back, &limits).fds.failed());
        let leak: Vec<Sample> = [20, 40, 60, 50, 45, 40]
            .iter()
            .enumerate()
            .map(|(i, &f)| s(i as f64, 1000, f))
            .collect();
        assert!(judge(&leak, &limits).fds.failed());
        // A huge slack saturates instead of overflowing.
        let lenient = LeakLimits {
            fd_slack: u64::MAX,
            ..limits
        };
        assert!(!judge(&leak, &lenient).fds.failed());
    }

    #[test]
    fn short_windows_are_not_judged() {
        let short: Vec<Sample> = (0..10u32)
            .map(|i| s(f64::from(i), 1000 + 100 * u64::from(i), 5))
            .collect();
        let v = judge(&short, &LeakLimits::default());
        assert!(matches!(v.rss, Check::NotJudged { .. }));
        assert!(matches!(
            judge(&[], &LeakLimits::default()).fds,
            Check::NotJudged { .. }
        ));
    }
}
