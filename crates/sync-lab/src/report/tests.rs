use super::chart::nice_max;
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
                status: PhaseStatus::Pass,
                summary: Some(Summary::new(2, 0, &[4.0, 6.0])),
                span_s: Some((1.0, 3.0)),
                notes: vec![],
            },
            PhaseResult {
                name: "failover".into(),
                status: PhaseStatus::NotAvailable,
                summary: None,
                span_s: None,
                notes: vec!["run it with --local".into()],
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
        markers: vec![
            Marker {
                at_s: 1.5,
                label: "key rotation → epoch 1".into(),
            },
            Marker {
                at_s: 2.5,
                label: "revoked <dev> → epoch 2".into(),
            },
        ],
        duration_s: 3.0,
    }
}

#[test]
fn markdown_has_the_tables() {
    let md = markdown(&sample_report());
    assert!(md.contains("| ping | PASS | 2/3 | 33.33 % |"), "{md}");
    assert!(md.contains("| group | PASS | 2/2 | 0 % |"), "{md}");
    assert!(md.contains("| failover | NOT AVAILABLE |"));
    assert!(md.contains("### Key events"), "{md}");
    assert!(md.contains("| 1.500 s | key rotation → epoch 1 |"), "{md}");
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
    // A marker for each key event on each chart (RTT, rate, RSS, FDs, sessions), escaped.
    assert_eq!(h.matches("<g class=\"marker\">").count(), 2 * 5, "{h}");
    assert!(h.contains("revoked &lt;dev&gt; → epoch 2 at 2.5 s"), "{h}");
    assert!(h.contains("<td>2.500 s</td><td>revoked &lt;dev&gt; → epoch 2</td>"));
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
