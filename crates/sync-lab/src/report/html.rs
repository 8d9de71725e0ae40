//! `report.html`: self-contained (inline SVG charts, no script, no network).

use std::fmt::Write as _;

use super::chart::{Chart, Series, Style, chart, rate_series};
use super::{Report, Sample, escape, figures};

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
    if !r.markers.is_empty() {
        o.push_str("<h2>Key events</h2><table><tr><th>At</th><th>Event</th></tr>");
        for m in &r.markers {
            let _ = write!(
                o,
                "<tr><td>{:.3} s</td><td>{}</td></tr>",
                m.at_s,
                escape(&m.label)
            );
        }
        o.push_str("</table>\n");
    }
    let mut answered = Vec::new();
    let mut lost = Vec::new();
    for p in &r.points {
        match p.rtt_ms {
            Some(v) => answered.push((p.sent_s, v)),
            None => lost.push(p.sent_s),
        }
    }
    o.push_str("<h2>Round-trip time</h2><p>Each dot is one message (x: when it was sent, y: its round trip through the relay and the responder; in the group phase, the time until the last remaining member had pulled and opened it). Red ticks at the top: messages never answered (never delivered to every remaining member). Dashed lines: phase starts. Purple lines: key events (rotation, revocation, the revoked device refused). Shaded: impairment.</p>\n");
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
        markers: &r.markers,
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
        markers: &r.markers,
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
            markers: &r.markers,
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
