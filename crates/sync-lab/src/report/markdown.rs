//! `campaign-report.md`.

use std::fmt::Write as _;

use super::{PhaseResult, Report, figures};

/// The Markdown report.
pub fn markdown(r: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# {}\n", r.title);
    let _ = writeln!(o, "**Result: {}**\n", r.verdict);
    let _ = writeln!(o, "## Setup\n");
    for (k, v) in &r.setup {
        let _ = writeln!(o, "- {k}: {v}");
    }
    let _ = writeln!(o, "\n## Results\n");
    let _ = writeln!(
        o,
        "| Phase | Status | Messages | Loss | Avg RTT | p50 | p95 | p99 | Max |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|");
    for p in &r.phases {
        match &p.summary {
            Some(s) => {
                let _ = writeln!(
                    o,
                    "| {} | {} | {} |",
                    p.name,
                    p.status.label(),
                    figures(s).join(" | ")
                );
            }
            None => {
                let _ = writeln!(
                    o,
                    "| {} | {} | – | – | – | – | – | – | – |",
                    p.name,
                    p.status.label()
                );
            }
        }
    }
    if !r.markers.is_empty() {
        let _ = writeln!(o, "\n### Key events\n");
        let _ = writeln!(o, "| At | Event |");
        let _ = writeln!(o, "|---|---|");
        for m in &r.markers {
            let _ = writeln!(o, "| {:.3} s | {} |", m.at_s, m.label);
        }
    }
    let noted: Vec<&PhaseResult> = r.phases.iter().filter(|p| !p.notes.is_empty()).collect();
    if !noted.is_empty() {
        let _ = writeln!(o, "\n### Notes\n");
        for p in noted {
            for n in &p.notes {
                let _ = writeln!(o, "- {}: {n}", p.name);
            }
        }
    }
    let _ = writeln!(o, "\n## Thresholds\n");
    let _ = writeln!(o, "| Threshold | Limit | Observed | |");
    let _ = writeln!(o, "|---|---|---|---|");
    for t in &r.thresholds {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} |",
            t.name,
            t.limit,
            t.observed,
            if t.ok { "ok" } else { "**FAILED**" }
        );
    }
    let _ = writeln!(o, "\n## Relay soak\n");
    let _ = writeln!(o, "Sampling: {}.\n", r.sampling);
    if let (Some(first), Some(last)) = (r.samples.first(), r.samples.last()) {
        let f = |v: Option<u64>| v.map_or("–".to_string(), |v| v.to_string());
        let mib = |v: Option<u64>| {
            #[allow(clippy::cast_precision_loss)]
            v.map_or("–".to_string(), |v| {
                format!("{:.1} MiB", v as f64 / 1024.0)
            })
        };
        let peak_rss = r.samples.iter().filter_map(|s| s.rss_kb).max();
        let peak_fds = r.samples.iter().filter_map(|s| s.fds).max();
        let peak_sessions = r.samples.iter().filter_map(|s| s.sessions).max();
        let sess = |v: Option<i64>| v.map_or("–".to_string(), |v| v.to_string());
        let _ = writeln!(o, "| Figure | First | Last | Peak |");
        let _ = writeln!(o, "|---|---|---|---|");
        let _ = writeln!(
            o,
            "| RSS | {} | {} | {} |",
            mib(first.rss_kb),
            mib(last.rss_kb),
            mib(peak_rss)
        );
        let _ = writeln!(
            o,
            "| Open FDs | {} | {} | {} |",
            f(first.fds),
            f(last.fds),
            f(peak_fds)
        );
        let _ = writeln!(
            o,
            "| Sessions | {} | {} | {} |",
            sess(first.sessions),
            sess(last.sessions),
            sess(peak_sessions)
        );
        let _ = writeln!(o, "\n{} samples.", r.samples.len());
    } else {
        let _ = writeln!(o, "No samples.");
    }
    if let Some(v) = &r.soak {
        let _ = writeln!(o, "\nEndurance leak checks:\n");
        let _ = writeln!(o, "- RSS growth: {} — {}", v.rss.label(), v.rss.detail());
        let _ = writeln!(o, "- Open FDs: {} — {}", v.fds.label(), v.fds.detail());
    }
    if !r.impairments.is_empty() {
        let _ = writeln!(o, "\n## Impairment\n");
        for i in &r.impairments {
            let _ = writeln!(o, "- {:.1} s – {:.1} s: `{}`", i.from_s, i.to_s, i.spec);
        }
    }
    o
}
