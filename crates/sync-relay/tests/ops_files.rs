//! The monitoring files in `ops/`: the Prometheus alert rules and the Grafana dashboard use
//! only metrics a live relay exports (scraped here from its `/metrics`), with reasons it can
//! report, and are well-formed for the tools that load them (`promtool check rules`, from the
//! Debian package `prometheus`, for the rules).

mod common;

use std::collections::BTreeSet;

use common::*;
use serde::Deserialize;
use sync_types::{ErrorCode, Message};

fn ops(path: &str) -> String {
    let file = ops_file(path);
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// The metric names a live relay exports, after one push (so every family has a sample).
async fn live_metric_names() -> BTreeSet<String> {
    let relay = TestRelay::start(|_| {}).await;
    let (mut c, _) = Client::open(&relay, &keys(1)).await;
    assert!(matches!(c.push(blob(1), b"x").await, Message::PushAck(_)));
    let (status, text) = http_get(relay.handle.http_addr(), "/metrics").await;
    assert_eq!(status, 200);
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

/// Every `sync_relay_…` name in a query.
fn names_in(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("sync_relay_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

/// Every `reason="…"` value in a query.
fn reasons_in(expr: &str) -> Vec<String> {
    expr.split("reason=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .map(str::to_string)
        .collect()
}

fn check_expr(expr: &str, live: &BTreeSet<String>, whose: &str) {
    let names = names_in(expr);
    assert!(
        !names.is_empty() || expr.contains("up{"),
        "{whose}: no relay metric in {expr}"
    );
    for name in names {
        assert!(
            live.contains(&name),
            "{whose}: {name} is not exported by the relay"
        );
    }
    for reason in reasons_in(expr) {
        assert!(
            ErrorCode::ALL.iter().any(|c| c.name() == reason),
            "{whose}: no refusal reason {reason}"
        );
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    groups: Vec<RuleGroup>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleGroup {
    name: String,
    rules: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    alert: String,
    expr: String,
    #[serde(rename = "for")]
    for_: Option<String>,
    labels: std::collections::BTreeMap<String, String>,
    annotations: std::collections::BTreeMap<String, String>,
}

#[tokio::test]
async fn alert_rules_use_only_exported_metrics_and_cover_the_operators_cases() {
    let live = live_metric_names().await;
    let file: RuleFile = yaml_serde::from_str(&ops("prometheus/alerts.yml")).expect("rule file");
    assert_eq!(file.groups.len(), 1);
    assert_eq!(file.groups[0].name, "sync-relay");
    let rules = &file.groups[0].rules;
    let mut seen = BTreeSet::new();
    for rule in rules {
        assert!(seen.insert(rule.alert.clone()), "{} twice", rule.alert);
        check_expr(&rule.expr, &live, &rule.alert);
        assert!(
            matches!(
                rule.labels.get("severity").map(String::as_str),
                Some("warning" | "critical")
            ),
            "{}: severity",
            rule.alert
        );
        assert!(rule.annotations.contains_key("summary"), "{}", rule.alert);
        if let Some(d) = &rule.for_ {
            assert!(
                d.ends_with('m') || d.ends_with('s') || d.ends_with('h'),
                "{}: for {d}",
                rule.alert
            );
        }
    }
    for wanted in [
        "SyncRelayDown",
        "SyncRelayRefusalsSpiking",
        "SyncRelayPushLatencyHigh",
        "SyncRelayGroupsAtQuota",
        "SyncRelaySessionsNearLimit",
    ] {
        assert!(seen.contains(wanted), "no {wanted} alert");
    }
}

#[test]
fn promtool_accepts_the_alert_rules() {
    let (ok, said) = run_check(
        std::process::Command::new("promtool")
            .args(["check", "rules"])
            .arg(ops_file("prometheus/alerts.yml")),
        "promtool (Debian package prometheus) is installed",
    );
    assert!(ok, "{said}");
    let parsed: RuleFile = yaml_serde::from_str(&ops("prometheus/alerts.yml")).expect("rules");
    let count: usize = parsed.groups.iter().map(|g| g.rules.len()).sum();
    assert!(
        said.contains(&format!("SUCCESS: {count} rules found")),
        "{said}"
    );
}

#[tokio::test]
async fn the_dashboard_queries_only_exported_metrics() {
    let live = live_metric_names().await;
    let dash: serde_json::Value =
        serde_json::from_str(&ops("grafana/0k-sync-relay.json")).expect("dashboard JSON");
    assert_eq!(dash["uid"], "zk-sync-relay");
    let panels = dash["panels"].as_array().expect("panels");
    assert!(panels.len() >= 8);
    let mut ids = BTreeSet::new();
    let mut queried = BTreeSet::new();
    for panel in panels {
        let title = panel["title"].as_str().expect("title");
        assert!(
            ids.insert(panel["id"].as_u64().expect("id")),
            "{title}: id twice"
        );
        assert!(panel["gridPos"]["w"].as_u64().is_some(), "{title}: gridPos");
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            check_expr(expr, &live, title);
            queried.extend(names_in(expr));
        }
    }
    // The figures an operator looks at first are all there.
    for name in [
        "sync_relay_sessions",
        "sync_relay_pushes_total",
        "sync_relay_pulls_total",
        "sync_relay_bytes_in_total",
        "sync_relay_bytes_out_total",
        "sync_relay_push_commit_seconds_bucket",
        "sync_relay_notifies_total",
        "sync_relay_stored_bytes",
        "sync_relay_rejections_total",
        "sync_relay_admission_refusals_total",
    ] {
        assert!(queried.contains(name), "the dashboard does not show {name}");
    }
}
