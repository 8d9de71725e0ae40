//! The campaign's reports: `campaign-report.md` (setup, per-phase results, thresholds, soak)
//! and `report.html` (self-contained: inline SVG charts of RTT over time, message rate and the
//! relay's soak figures, impairment periods shaded; no script, no network).

use std::fmt::Write as _;

use crate::soak::{Sample, Verdict};
use crate::stats::Summary;

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
    /// Total duration in seconds.
    pub duration_s: f64,
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_string(), |v| format!("{v:.1} ms"))
}

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

const W: f64 = 900.0;
const H: f64 = 260.0;
const ML: f64 = 60.0;
const MR: f64 = 15.0;
const MT: f64 = 25.0;
const MB: f64 = 35.0;

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    Dots,
    Line,
}

struct Series<'a> {
    label: &'a str,
    color: &'a str,
    style: Style,
    points: Vec<(f64, f64)>,
}

struct Chart<'a> {
    title: &'a str,
    y_label: &'a str,
    x_max: f64,
    series: Vec<Series<'a>>,
    /// x positions (seconds) of messages never answered: red ticks along the top.
    lost: Vec<f64>,
    phases: &'a [PhaseResult],
    shades: &'a [Impairment],
}

fn nice_max(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * mag >= v {
            return m * mag;
        }
    }
    10.0 * mag
}

fn chart(c: &Chart<'_>) -> String {
    let x_max = if c.x_max > 0.0 { c.x_max } else { 1.0 };
    let y_data = c
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0f64, f64::max);
    let y_max = nice_max(y_data);
    let pw = W - ML - MR;
    let ph = H - MT - MB;
    let sx = |x: f64| ML + (x / x_max).clamp(0.0, 1.0) * pw;
    let sy = |y: f64| MT + ph - (y / y_max).clamp(0.0, 1.0) * ph;
    let mut o = String::new();
    let _ = write!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{t}">"#,
        t = escape(c.title)
    );
    let _ = write!(
        o,
        r##"<rect x="0" y="0" width="{W}" height="{H}" fill="#fff"/><text x="{ML}" y="16" font-size="13" font-weight="bold">{}</text>"##,
        escape(c.title)
    );
    for s in c.shades {
        let x0 = sx(s.from_s);
        let x1 = sx(s.to_s);
        let _ = write!(
            o,
            r##"<rect class="impair" x="{x0:.1}" y="{MT}" width="{:.1}" height="{ph}" fill="#f4a261" fill-opacity="0.25"><title>impairment {}</title></rect>"##,
            (x1 - x0).max(1.0),
            escape(&s.spec)
        );
    }
    for p in c.phases {
        if let Some((a, _)) = p.span_s {
            let x = sx(a);
            let _ = write!(
                o,
                r##"<line x1="{x:.1}" y1="{MT}" x2="{x:.1}" y2="{:.1}" stroke="#999" stroke-dasharray="3,3"/><text x="{:.1}" y="{:.1}" font-size="10" fill="#555">{}</text>"##,
                MT + ph,
                x + 2.0,
                MT + 10.0,
                escape(&p.name)
            );
        }
    }
    // Axes and ticks.
    let _ = write!(
        o,
        r##"<line x1="{ML}" y1="{MT}" x2="{ML}" y2="{b:.1}" stroke="#333"/><line x1="{ML}" y1="{b:.1}" x2="{r:.1}" y2="{b:.1}" stroke="#333"/>"##,
        b = MT + ph,
        r = ML + pw
    );
    for i in 0..=4 {
        let v = y_max * f64::from(i) / 4.0;
        let y = sy(v);
        let _ = write!(
            o,
            r##"<line x1="{:.1}" y1="{y:.1}" x2="{ML}" y2="{y:.1}" stroke="#333"/><text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end">{}</text>"##,
            ML - 4.0,
            ML - 6.0,
            y + 3.0,
            trim_num(v)
        );
        let xv = x_max * f64::from(i) / 4.0;
        let x = sx(xv);
        let _ = write!(
            o,
            r##"<text x="{x:.1}" y="{:.1}" font-size="10" text-anchor="middle">{} s</text>"##,
            MT + ph + 14.0,
            trim_num(xv)
        );
    }
    let _ = write!(
        o,
        r##"<text x="14" y="{:.1}" font-size="10" transform="rotate(-90 14 {:.1})" text-anchor="middle">{}</text>"##,
        MT + ph / 2.0,
        MT + ph / 2.0,
        escape(c.y_label)
    );
    for s in &c.series {
        match s.style {
            Style::Dots => {
                for &(x, y) in &s.points {
                    let _ = write!(
                        o,
                        r#"<circle cx="{:.1}" cy="{:.1}" r="1.8" fill="{}"/>"#,
                        sx(x),
                        sy(y),
                        s.color
                    );
                }
            }
            Style::Line => {
                if !s.points.is_empty() {
                    let pts: Vec<String> = s
                        .points
                        .iter()
                        .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
                        .collect();
                    let _ = write!(
                        o,
                        r#"<polyline fill="none" stroke="{}" stroke-width="1.5" points="{}"/>"#,
                        s.color,
                        pts.join(" ")
                    );
                }
            }
        }
    }
    for &x in &c.lost {
        let _ = write!(
            o,
            r##"<line class="lost" x1="{x:.1}" y1="{MT}" x2="{x:.1}" y2="{:.1}" stroke="#d62828" stroke-width="1.5"/>"##,
            MT + 8.0,
            x = sx(x)
        );
    }
    // Legend.
    let mut lx = ML + pw - 10.0;
    for s in c.series.iter().rev() {
        lx -= 8.0 * s.label.len() as f64 + 24.0;
        let _ = write!(
            o,
            r#"<rect x="{lx:.1}" y="8" width="10" height="10" fill="{}"/><text x="{:.1}" y="17" font-size="11">{}</text>"#,
            s.color,
            lx + 14.0,
            escape(s.label)
        );
    }
    o.push_str("</svg>");
    o
}

fn trim_num(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Messages sent per second in bins over `[0, x_max]`: (bin centre, rate).
fn rate_series(points: &[Point], x_max: f64) -> Vec<(f64, f64)> {
    let width = (x_max / 120.0).max(1.0);
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let bins = (x_max / width).ceil().max(1.0) as usize;
    let mut counts = vec![0u64; bins];
    for p in points {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let i = ((p.sent_s / width) as usize).min(bins - 1);
        if let Some(c) = counts.get_mut(i) {
            *c += 1;
        }
    }
    counts
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            #[allow(clippy::cast_precision_loss)]
            ((i as f64 + 0.5) * width, c as f64 / width)
        })
        .collect()
}

/// The HTML report (self-contained).
pub fn html(r: &Report) -> String {
    let x_max = r
        .duration_s
        .max(r.points.iter().map(|p| p.sent_s).fold(0.0, f64::max))
        .max(1.0);
    let mut o = String::new();
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>body{{font-family:sans-serif;margin:20px;color:#222}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}td:first-child,th:first-child{{text-align:left}}\
         .PASS{{color:#2a9d8f;font-weight:bold}}.FAIL{{color:#d62828;font-weight:bold}}</style></head><body>\n\
         <h1>{t}</h1><p><b>Result: {v}</b></p>\n",
        t = escape(&r.title),
        v = escape(&r.verdict)
    );
    o.push_str("<h2>Setup</h2><ul>");
    for (k, v) in &r.setup {
        let _ = write!(o, "<li>{}: {}</li>", escape(k), escape(v));
    }
    o.push_str("</ul>\n<h2>Results</h2><table><tr><th>Phase</th><th>Status</th><th>Messages</th><th>Loss</th><th>Avg RTT</th><th>p50</th><th>p95</th><th>p99</th><th>Max</th></tr>");
    for p in &r.phases {
        let label = p.status.label();
        let cls = label.replace(' ', "_");
        match &p.summary {
            Some(s) => {
                let _ = write!(
                    o,
                    "<tr><td>{}</td><td class=\"{cls}\">{label}</td><td>{}</td></tr>",
                    escape(&p.name),
                    figures(s).join("</td><td>")
                );
            }
            None => {
                let _ = write!(
                    o,
                    "<tr><td>{}</td><td class=\"{cls}\">{label}</td><td colspan=\"7\">–</td></tr>",
                    escape(&p.name)
                );
            }
        }
    }
    o.push_str("</table>\n");
    let mut answered = Vec::new();
    let mut lost = Vec::new();
    for p in &r.points {
        match p.rtt_ms {
            Some(v) => answered.push((p.sent_s, v)),
            None => lost.push(p.sent_s),
        }
    }
    o.push_str("<h2>Round-trip time</h2><p>Each dot is one message (x: when it was sent, y: its round trip through the relay and the responder). Red ticks at the top: messages never answered. Dashed lines: phase starts. Shaded: impairment.</p>\n");
    o.push_str(&chart(&Chart {
        title: "RTT over time",
        y_label: "RTT (ms)",
        x_max,
        series: vec![Series {
            label: "RTT",
            color: "#264653",
            style: Style::Dots,
            points: answered,
        }],
        lost,
        phases: &r.phases,
        shades: &r.impairments,
    }));
    o.push_str("\n<h2>Message rate</h2>\n");
    o.push_str(&chart(&Chart {
        title: "Messages sent per second",
        y_label: "msg/s",
        x_max,
        series: vec![Series {
            label: "sent",
            color: "#2a9d8f",
            style: Style::Line,
            points: rate_series(&r.points, x_max),
        }],
        lost: Vec::new(),
        phases: &r.phases,
        shades: &r.impairments,
    }));
    let _ = write!(o, "\n<h2>Relay soak</h2><p>{}</p>\n", escape(&r.sampling));
    #[allow(clippy::cast_precision_loss)]
    let pick = |f: &dyn Fn(&Sample) -> Option<f64>| -> Vec<(f64, f64)> {
        r.samples
            .iter()
            .filter_map(|s| f(s).map(|v| (s.elapsed_s, v)))
            .collect()
    };
    #[allow(clippy::cast_precision_loss)]
    let rss = pick(&|s| s.rss_kb.map(|v| v as f64 / 1024.0));
    #[allow(clippy::cast_precision_loss)]
    let fds = pick(&|s| s.fds.map(|v| v as f64));
    #[allow(clippy::cast_precision_loss)]
    let sessions = pick(&|s| s.sessions.map(|v| v as f64));
    for (title, unit, color, pts) in [
        ("Relay RSS", "MiB", "#e76f51", rss),
        ("Relay open file descriptors", "FDs", "#6d597a", fds),
        ("Relay sessions", "sessions", "#457b9d", sessions),
    ] {
        if pts.is_empty() {
            let _ = write!(o, "<p>{}: not sampled.</p>", escape(title));
            continue;
        }
        o.push_str(&chart(&Chart {
            title,
            y_label: unit,
            x_max,
            series: vec![Series {
                label: unit,
                color,
                style: Style::Line,
                points: pts,
            }],
            lost: Vec::new(),
            phases: &r.phases,
            shades: &r.impairments,
        }));
    }
    if let Some(v) = &r.soak {
        let _ = write!(
            o,
            "<ul><li>RSS growth: {} — {}</li><li>Open FDs: {} — {}</li></ul>",
            v.rss.label(),
            escape(v.rss.detail()),
            v.fds.label(),
            escape(v.fds.detail())
        );
    }
    o.push_str("\n<h2>Thresholds</h2><table><tr><th>Threshold</th><th>Limit</th><th>Observed</th><th></th></tr>");
    for t in &r.thresholds {
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td></tr>",
            escape(&t.name),
            escape(&t.limit),
            escape(&t.observed),
            if t.ok { "PASS" } else { "FAIL" },
            if t.ok { "ok" } else { "FAILED" }
        );
    }
    o.push_str("</table>\n</body></html>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_report() -> Report {
        Report {
            title: "t <x>".into(),
            setup: vec![("relay".into(), "local".into())],
            phases: vec![
                PhaseResult {
                    name: "ping".into(),
                    status: PhaseStatus::Pass,
                    summary: Some(Summary::new(3, 1, &[1.0, 2.0])),
                    span_s: Some((0.0, 3.0)),
                    notes: vec![],
                },
                PhaseResult {
                    name: "group".into(),
                    status: PhaseStatus::NotAvailable,
                    summary: None,
                    span_s: None,
                    notes: vec!["needs key rotation".into()],
                },
            ],
            thresholds: vec![ThresholdRow {
                name: "loss".into(),
                limit: "≤ 0 %".into(),
                observed: "33 %".into(),
                ok: false,
            }],
            verdict: "FAIL".into(),
            points: vec![
                Point {
                    sent_s: 0.1,
                    rtt_ms: Some(1.0),
                },
                Point {
                    sent_s: 0.2,
                    rtt_ms: Some(2.0),
                },
                Point {
                    sent_s: 0.3,
                    rtt_ms: None,
                },
            ],
            samples: vec![Sample {
                elapsed_s: 1.0,
                rss_kb: Some(2048),
                fds: Some(9),
                sessions: Some(2),
            }],
            sampling: "test".into(),
            soak: None,
            impairments: vec![Impairment {
                from_s: 1.0,
                to_s: 2.0,
                spec: "loss=5%".into(),
            }],
            duration_s: 3.0,
        }
    }

    #[test]
    fn markdown_has_the_tables() {
        let md = markdown(&sample_report());
        assert!(md.contains("| ping | PASS | 2/3 | 33.33 % |"), "{md}");
        assert!(md.contains("| group | NOT AVAILABLE |"));
        assert!(md.contains("**FAILED**"));
        assert!(md.contains("`loss=5%`"));
    }

    #[test]
    fn html_is_self_contained_with_charts_and_shading() {
        let h = html(&sample_report());
        assert!(h.contains("<svg"));
        assert!(h.contains("class=\"impair\""));
        assert!(h.contains("class=\"lost\""));
        assert!(
            h.contains("<td>2/3</td><td>33.33 %</td><td>1.5 ms</td>"),
            "{h}"
        );
        assert!(h.contains("t &lt;x&gt;"));
        assert!(!h.contains("<script"));
        assert!(!h.contains("http://") || h.contains("http://www.w3.org/2000/svg"));
        assert!(!h.contains("https://"));
    }

    #[test]
    fn nice_axis_maxima() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(7.0), 10.0);
        assert_eq!(nice_max(42.0), 50.0);
        assert_eq!(nice_max(120.0), 200.0);
    }
}
