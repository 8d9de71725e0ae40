//! The campaign's group phase for real: `sync-stress campaign --phase group` with the real
//! binaries (this crate's `sync-stress`, the `sync-relay` binary) over QUIC on 127.0.0.1. An
//! admin and its devices exchange sealed messages across a key rotation and a revocation; the
//! revoked device must be refused and read nothing sealed after it. Every wait is on a process
//! exit, with a timeout as a guard (the process is killed and the test fails after it). The
//! latency and refusal limits are set out of reach: no wall-clock figure is asserted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{events, exited, html_with_markers, report_with, run_stress_with_relay, stress};
use serde_json::Value;
use sync_testkit::{RelayProcess, run_bounded};

const GUARD: Duration = Duration::from_secs(300);

/// Thresholds that time cannot miss, so only the counts decide.
const NO_TIME_LIMITS: [&str; 4] = ["--max-p99-ms", "600000", "--max-refusal-ms", "600000"];

fn of<'a>(evs: &'a [Value], event: &str) -> Vec<&'a Value> {
    common::of_phase(evs, "group", event)
}

fn one<'a>(evs: &'a [Value], event: &str) -> &'a Value {
    common::one_of_phase(evs, "group", event)
}

/// The figures every clean group phase shows, for `devices` devices in all (the admin
/// included, the last one revoked).
fn assert_clean_group(evs: &[Value], devices: usize) {
    let ready = one(evs, "group_ready");
    assert_eq!(ready["devices"].as_array().unwrap().len(), devices);
    let rotation = one(evs, "rotation");
    assert_eq!(rotation["epoch"], 1);
    let revocation = one(evs, "revocation");
    assert_eq!(revocation["epoch"], 2);
    assert_eq!(revocation["device"], ready["to_revoke"]);
    assert!(
        rotation["elapsed_s"].as_f64() < revocation["elapsed_s"].as_f64(),
        "the rotation comes first"
    );
    // The revoked device saw the relay refuse it: its session ended, or its reconnect was
    // refused, with DeviceRevoked.
    let refusal = one(evs, "refusal");
    assert_eq!(refusal["device"], ready["to_revoke"]);
    assert!(
        refusal["how"].as_str().unwrap().contains("DeviceRevoked"),
        "{refusal}"
    );
    assert!(refusal["after_revoke_call_ms"].as_f64().unwrap() >= 0.0);
    // It kept trying afterwards: every reconnect was refused.
    let reconnects = of(evs, "revoked_reconnect");
    assert!(!reconnects.is_empty());
    for r in &reconnects {
        assert_eq!(r["result"], "refused: DeviceRevoked(203)", "{r}");
    }
    // Every remaining device came to hold both new epochs.
    let spread = of(evs, "epoch_propagated");
    let epochs: Vec<(u64, u64)> = spread
        .iter()
        .map(|e| (e["epoch"].as_u64().unwrap(), e["devices"].as_u64().unwrap()))
        .collect();
    let all = devices as u64;
    assert_eq!(epochs, [(1, all), (2, all - 1)]);

    let stats = one(evs, "group_stats");
    let n = |k: &str| stats[k].as_u64().unwrap_or_else(|| panic!("{k}: {stats}"));
    assert!(n("messages") > 0, "{stats}");
    assert_eq!(n("delivered"), n("messages"), "{stats}");
    assert_eq!(n("lost"), 0, "{stats}");
    assert_eq!(n("deliveries"), n("deliveries_due"), "{stats}");
    for zero in [
        "duplicates",
        "undecryptable",
        "integrity_problems",
        "push_failures",
        "revoked_reads",
        "revoked_admitted",
    ] {
        assert_eq!(n(zero), 0, "{zero}: {stats}");
    }
    assert_eq!(n("revoked_reconnects_refused"), n("revoked_reconnects"));
    let mut end_epochs = vec![2; devices - 1];
    end_epochs.push(1);
    assert_eq!(stats["epochs"], serde_json::json!(end_epochs), "{stats}");

    let end = one(evs, "phase_end");
    assert_eq!(end["status"], "PASS", "{end}");
    assert_eq!(end["lost"], 0);
}

#[test]
fn a_local_group_phase_loses_nothing_across_rotation_and_revocation() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("run");
    let mut argv = vec![
        "campaign",
        "--local",
        "--phase",
        "group",
        "--group-duration",
        "6",
        "--sample-interval",
        "1",
        "--out",
        dir.to_str().unwrap(),
    ];
    argv.extend_from_slice(&NO_TIME_LIMITS);
    let o = run_stress_with_relay(&argv, GUARD);
    exited(&o, 0);
    let evs = events(&dir);
    assert_clean_group(&evs, 5);
    let stopped: Vec<&Value> = evs
        .iter()
        .filter(|v| v["event"] == "process_stopped")
        .collect();
    assert_eq!(stopped.len(), 2);
    for s in stopped {
        assert_eq!(s["result"], "stopped cleanly (SIGTERM, exit 0)");
    }

    let md = report_with(
        &dir,
        &[
            "**Result: PASS (exit 0)**",
            "| group | PASS |",
            "### Key events",
            "key rotation → epoch 1 |",
            "→ epoch 2 |",
            " refused (",
            "| group: key rotation, then revocation, by the admin | both done | rotation epoch 1 in ",
            "| group: messages lost across the rotation and revocation (remaining members) | 0 | 0 of ",
            "| group: blobs undecryptable, other integrity problems (remaining members) | 0, 0 | 0, 0 | ok |",
            "| group: revoked device's reads of blobs sealed after its revocation, sessions admitted after it | 0, 0 | 0, 0 | ok |",
            "group: revoked device refused",
        ],
    );
    // The refusal row passed too (how the device saw it — its session ended, or its
    // reconnect refused — depends on which came first).
    assert!(!md.contains("**FAILED**"), "{md}");
    // Three key events (rotation, revocation, refusal) on each chart: RTT, rate and the three
    // relay samples.
    let html = html_with_markers(&dir, 3 * 5);
    assert!(html.contains("<h2>Key events</h2>"));
}

#[test]
fn a_group_phase_against_a_relay_it_did_not_start_works_too() {
    // The relay is not the campaign's (no --local): the phase still makes a group of its own
    // on it, its devices in the campaign's process.
    let mut relay = RelayProcess::start();
    let invite =
        sync_lab::device::new_group_invite(&relay.relay_addr(), Duration::from_secs(600)).unwrap();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("run");
    let mut argv = vec![
        "campaign",
        "--phase",
        "group",
        "--group-devices",
        "2",
        "--group-duration",
        "3",
        "--out",
        dir.to_str().unwrap(),
    ];
    argv.extend_from_slice(&NO_TIME_LIMITS);
    let mut cmd = stress(&argv);
    cmd.env(sync_lab::device::INVITE_ENV, &invite);
    let o = run_bounded(&mut cmd, GUARD);
    exited(&o, 0);
    assert_clean_group(&events(&dir), 3);
    assert!(relay.stop().is_clean(), "the relay stops cleanly");
}
