//! The HTML report's charts: inline SVG, one x axis in seconds since the campaign started,
//! phase starts as dashed lines, impairment periods shaded, key events as purple lines, lost
//! messages as red ticks.

use std::fmt::Write as _;

use super::{Impairment, Marker, PhaseResult, Point, escape};

const W: f64 = 900.0;
const H: f64 = 260.0;
const ML: f64 = 60.0;
const MR: f64 = 15.0;
const MT: f64 = 25.0;
const MB: f64 = 35.0;

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Style {
    /// One dot a point.
    Dots,
    /// A polyline through the points.
    Line,
}

pub(super) struct Series<'a> {
    pub(super) label: &'a str,
    pub(super) color: &'a str,
    pub(super) style: Style,
    pub(super) points: Vec<(f64, f64)>,
}

pub(super) struct Chart<'a> {
    pub(super) title: &'a str,
    pub(super) y_label: &'a str,
    pub(super) x_max: f64,
    pub(super) series: Vec<Series<'a>>,
    /// x positions (seconds) of messages never answered: red ticks along the top.
    pub(super) lost: Vec<f64>,
    pub(super) phases: &'a [PhaseResult],
    pub(super) shades: &'a [Impairment],
    /// Key events: a purple line each, labelled at the foot of the plot.
    pub(super) markers: &'a [Marker],
}

/// The colour of key event markers.
const MARKER_COLOR: &str = "#7b2cbf";

pub(super) fn nice_max(v: f64) -> f64 {
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

pub(super) fn chart(c: &Chart<'_>) -> String {
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
    // Key events: labels at three heights in turn, so events close together stay legible.
    for (i, m) in c.markers.iter().enumerate() {
        let x = sx(m.at_s);
        #[allow(clippy::cast_precision_loss)]
        let ly = MT + ph - 4.0 - 11.0 * (i % 3) as f64;
        let _ = write!(
            o,
            r#"<g class="marker"><title>{t} at {at:.1} s</title><line x1="{x:.1}" y1="{MT}" x2="{x:.1}" y2="{b:.1}" stroke="{MARKER_COLOR}" stroke-width="1.5"/><text x="{tx:.1}" y="{ly:.1}" font-size="10" fill="{MARKER_COLOR}">{t}</text></g>"#,
            t = escape(&m.label),
            at = m.at_s,
            b = MT + ph,
            tx = x + 2.0,
        );
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
pub(super) fn rate_series(points: &[Point], x_max: f64) -> Vec<(f64, f64)> {
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
