//! The relay's structured log, as a log shipper reads it (`--log-format json`): the audit trail
//! of sessions and refusals, and the stats line (every `stats_interval`, and a last one when the
//! relay stops), each one JSON object per line, with no full id and no payload in it.

mod common;

use common::*;
use iroh::EndpointId;
use serde_json::Value;
use sync_testkit::RelayProcess;
use sync_types::ErrorCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_and_the_stats_line_are_one_json_object_per_line() {
    let mut relay = RelayProcess::builder()
        .args(["--log-format", "json", "--stats-interval", "1h"])
        .env("RUST_LOG", "info")
        .start()
        .expect("relay starts");
    let id = EndpointId::from_bytes(relay.id().as_bytes()).expect("relay id");
    let addr = relay.addrs()[0];
    let group = keys(7);
    let (mut device, _) = Client::open_at(id, addr, &group).await;
    device.push_acked(blob(1), b"secret payload").await;
    device.push_acked(blob(2), b"secret payload").await;
    // One audited refusal: another payload under a blob id already stored.
    let refused = device.push(blob(2), b"other payload").await;
    assert_eq!(expect_error(&refused).code, ErrorCode::Conflict);
    device.close().await;
    let stopped = relay.stop();
    assert!(stopped.is_clean(), "{stopped:?}: {}", relay.log_tail(20));

    let log = std::fs::read_to_string(relay.log_path()).expect("the relay's log");
    let lines: Vec<Value> = log
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        log.lines()
            .filter(|l| !l.trim().is_empty())
            .all(|l| l.starts_with('{')),
        "every log line is JSON:\n{log}"
    );
    let target = |t: &str| {
        lines
            .iter()
            .filter(|v| v["target"] == t)
            .cloned()
            .collect::<Vec<_>>()
    };
    let audit = target("sync_relay::audit");
    let event = |name: &str| {
        audit
            .iter()
            .find(|v| v["fields"]["event"] == name)
            .unwrap_or_else(|| panic!("no {name} audit line in:\n{log}"))
            .clone()
    };
    let open = event("session_open");
    let close = event("session_close");
    assert_eq!(open["fields"]["session"], close["fields"]["session"]);
    // Ids are pseudonymous: a short hash, never the id itself.
    let short = open["fields"]["group"].as_str().expect("group").to_string();
    assert_eq!(short.len(), 8, "{open}");
    assert_eq!(open["fields"]["device"].as_str().map(str::len), Some(8));
    let conflict = event("push_refused");
    assert_eq!(conflict["fields"]["reason"], ErrorCode::Conflict.name());
    assert_eq!(conflict["fields"]["group"], short.as_str());

    // The interval is an hour: the only stats line is the last one, at shutdown.
    let stats = target("sync_relay::stats");
    assert_eq!(stats.len(), 1, "{log}");
    let s = &stats[0]["fields"];
    assert_eq!(s["message"], "stats");
    assert_eq!(s["at_shutdown"], true);
    assert_eq!(s["stored_blobs"], 2);
    assert_eq!(s["groups"], 1);
    for field in [
        "sessions",
        "pushes_per_s",
        "pulls_per_s",
        "notifies_per_s",
        "bytes_in_per_s",
        "bytes_out_per_s",
        "rejections_per_s",
        "stored_bytes",
    ] {
        assert!(s[field].is_number(), "{field} in {s}");
    }

    // Nothing that opens or names a group in full.
    let group_hex = hex_id(group.group_id().as_bytes());
    assert!(!log.contains(&group_hex), "a full group id in the log");
    assert!(!log.contains("secret payload"), "a payload in the log");
}
