//! The campaign's failover phase for real: `sync-stress campaign --local --phase failover` with
//! the real binaries (this crate's `sync-stress`, the `sync-relay` binary), a private
//! PostgreSQL server and two relays on it, over QUIC on 127.0.0.1. The relay the devices use is
//! SIGKILLed mid-traffic; nothing may be lost or duplicated, and the report must name the
//! interruption. Every wait is on a process exit, with a timeout as a guard (the process is
//! killed and the test fails after it; the campaign kills its PostgreSQL and relays on its way
//! out, whatever happens). No wall-clock figure is asserted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{events, exited, html_with_markers, report_with, run_stress_with_relay};
use serde_json::Value;

const GUARD: Duration = Duration::from_secs(300);

fn of<'a>(evs: &'a [Value], event: &str) -> Vec<&'a Value> {
    common::of_phase(evs, "failover", event)
}

fn one<'a>(evs: &'a [Value], event: &str) -> &'a Value {
    common::one_of_phase(evs, "failover", event)
}

#[test]
fn a_relay_killed_mid_traffic_loses_and_duplicates_nothing_and_the_report_names_the_interruption() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("run");
    let o = run_stress_with_relay(
        &[
            "campaign",
            "--local",
            "--phase",
            "failover",
            "--failover-messages",
            "60",
            "--failover-pushers",
            "2",
            "--failover-rate",
            "20",
            "--sample-interval",
            "1",
            "--out",
            dir.to_str().unwrap(),
        ],
        GUARD,
    );
    exited(&o, 0);
    let evs = events(&dir);
    let ready = one(&evs, "failover_ready");
    assert_eq!(ready["relays"].as_array().unwrap().len(), 2);
    assert_eq!(ready["pushers"].as_array().unwrap().len(), 2);
    let killed = one(&evs, "relay_killed");
    assert_eq!(killed["relay"], ready["relays"][0]);
    assert!(killed["acked_before"].as_u64().unwrap() >= 20, "{killed}");
    // Every device (two pushers and the reader) noticed the loss and moved to relay 2.
    let moved = of(&evs, "failed_over");
    assert_eq!(moved.len(), 3, "{moved:?}");
    for m in moved {
        assert_eq!(m["relay"], ready["relays"][1], "{m}");
        assert!(m["detect_ms"].is_number(), "{m}");
        assert!(m["reconnect_ms"].is_number(), "{m}");
    }
    let stats = one(&evs, "failover_stats");
    let n = |k: &str| stats[k].as_u64().unwrap_or_else(|| panic!("{k}: {stats}"));
    assert_eq!(n("messages"), 60, "{stats}");
    assert_eq!(n("delivered"), 60, "{stats}");
    for zero in [
        "lost",
        "duplicated",
        "foreign",
        "push_failures",
        "outbox_at_end",
    ] {
        assert_eq!(n(zero), 0, "{zero}: {stats}");
    }
    assert!(stats["interruption_ms"].is_number(), "{stats}");
    let end = one(&evs, "phase_end");
    assert_eq!(end["status"], "PASS", "{end}");
    assert_eq!(
        (end["sent"].as_u64(), end["lost"].as_u64()),
        (Some(60), Some(0))
    );

    let md = report_with(
        &dir,
        &[
            "**Result: PASS (exit 0)**",
            "| failover | PASS | 60/60 | 0 % |",
            "failover: interruption: ",
            " ms from the last ack before the kill to the first ack by the next relay; loss noticed ",
            "| failover: messages lost, duplicated across the relay's kill | 0, 0 | 0 of 60, 0 | ok |",
            "| failover: pushes acknowledged by the next relay after the kill | resumed | interruption ",
            "SIGKILLed |",
            "relay 2: stopped cleanly (SIGTERM, exit 0)",
        ],
    );
    assert!(!md.contains("NOT AVAILABLE"), "{md}");
    // The kill and the resumption are marked on each chart: RTT, rate and the three relay
    // samples.
    let html = html_with_markers(&dir, 2 * 5);
    assert!(html.contains("SIGKILLed at "), "{html}");
    assert!(dir.join("relay-failover-1.log").is_file());
    assert!(dir.join("relay-failover-2.log").is_file());
}
