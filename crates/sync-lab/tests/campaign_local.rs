//! `sync-stress campaign --local` end to end: the real binaries (this crate's `sync-stress`,
//! the `sync-relay` binary), real QUIC on 127.0.0.1, real SQLite files. Short phases; every
//! wait is on a process exit with a timeout as a guard.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{run_stress_with_relay, stress};
use serde_json::Value;
use sync_testkit::{RelayProcess, run_bounded};

const GUARD: Duration = Duration::from_secs(300);

/// Runs `cmd` to completion, killing it and failing the test after [`GUARD`].
fn guarded(mut cmd: Command) -> Output {
    run_bounded(&mut cmd, GUARD)
}

/// A finished `campaign --local` and its output directory.
struct Campaign {
    output: Output,
    dir: PathBuf,
    _out: tempfile::TempDir,
}

/// Runs `campaign --local` with `args`, writing into a fresh directory.
fn campaign(args: &[&str]) -> Campaign {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("run");
    let mut argv = vec!["campaign", "--local"];
    argv.extend_from_slice(args);
    argv.extend_from_slice(&["--out", dir.to_str().unwrap()]);
    Campaign {
        output: run_stress_with_relay(&argv, GUARD),
        dir,
        _out: out,
    }
}

impl Campaign {
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// Asserts the exit code (the campaign's stderr in the message).
    fn exited(&self, code: i32) -> &Self {
        assert_eq!(
            self.output.status.code(),
            Some(code),
            "stderr: {}",
            self.stderr()
        );
        self
    }

    fn events(&self) -> Vec<Value> {
        events(&self.dir)
    }

    fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap()
    }

    fn markdown(&self) -> String {
        self.file("campaign-report.md")
    }

    fn html(&self) -> String {
        self.file("report.html")
    }
}

fn events(dir: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(dir.join("events.jsonl")).unwrap();
    text.lines()
        .map(|l| {
            let v: Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSONL {l:?}: {e}"));
            assert!(v["phase"].is_string(), "{l}");
            assert!(v["event"].is_string(), "{l}");
            assert!(v["elapsed_s"].is_number(), "{l}");
            v
        })
        .collect()
}

fn of<'a>(evs: &'a [Value], phase: &str, event: &str) -> Vec<&'a Value> {
    evs.iter()
        .filter(|v| v["phase"] == phase && v["event"] == event)
        .collect()
}

/// Runs the ping phase alone, three pings 10 ms apart, with `args` added.
fn three_pings(args: &[&str]) -> Campaign {
    let mut argv = vec![
        "--phase",
        "ping",
        "--ping-count",
        "3",
        "--ping-gap-ms",
        "10",
    ];
    argv.extend_from_slice(args);
    campaign(&argv)
}

#[test]
fn local_campaign_passes_and_writes_reports_that_parse() {
    let started = Instant::now();
    let c = campaign(&[
        "--phase",
        "all",
        "--duration",
        "5",
        "--ping-count",
        "5",
        "--ping-gap-ms",
        "20",
        "--burst-rounds",
        "2",
        "--burst-size",
        "20",
        "--e2e-count",
        "5",
        "--failover-messages",
        "20",
        "--failover-rate",
        "20",
        "--rolling-interval",
        "2",
        "--sample-interval",
        "1",
        // One message a device, at the start: the group phase runs (its rotation and
        // revocation under traffic are in tests/campaign_group.rs).
        "--group-rate",
        "0.1",
    ]);
    c.exited(0);
    eprintln!("campaign took {:?}", started.elapsed());

    // Stdout is the same JSONL as the file.
    let stdout = String::from_utf8(c.output.stdout.clone()).unwrap();
    assert_eq!(stdout, c.file("events.jsonl"));

    let evs = c.events();
    let pings = of(&evs, "ping", "ping");
    assert_eq!(pings.len(), 5);
    for p in &pings {
        assert!(p["rtt_ms"].as_f64().unwrap() > 0.0, "{p}");
        assert_eq!(p["path"], "direct");
    }
    let rounds = of(&evs, "burst", "burst_round");
    assert_eq!(rounds.len(), 2);
    for r in &rounds {
        assert_eq!(r["sent"], 20);
        assert_eq!(r["acked"], 20);
        assert_eq!(r["lost"], 0);
        assert!(r["avg_rtt_ms"].is_number());
    }
    let e2e = of(&evs, "e2e", "message");
    assert_eq!(e2e.len(), 5);
    for m in &e2e {
        assert_eq!(m["encrypted"], true, "{m}");
        assert_eq!(m["signed"], true, "{m}");
        assert!(m["rtt_ms"].is_number());
    }
    let rolling = of(&evs, "endurance", "rolling_stats");
    assert!(!rolling.is_empty());
    let sent: u64 = rolling.iter().map(|r| r["sent"].as_u64().unwrap()).sum();
    let received: u64 = rolling
        .iter()
        .map(|r| r["received"].as_u64().unwrap())
        .sum();
    assert!(sent >= 4, "endurance sent {sent}");
    assert_eq!(sent, received);
    for r in &rolling {
        for f in ["minute", "loss_pct"] {
            assert!(r[f].is_number(), "{r}");
        }
    }
    let samples: Vec<&Value> = evs.iter().filter(|v| v["event"] == "soak_sample").collect();
    assert!(samples.len() >= 3);
    for s in &samples {
        assert!(s["rss_kb"].as_u64().unwrap() > 0, "{s}");
        assert!(s["fds"].as_u64().unwrap() > 0, "{s}");
        assert!(s["sessions"].as_i64().unwrap() >= 1, "{s}");
    }
    assert!(of(&evs, "group", "not_available").is_empty());
    assert_eq!(of(&evs, "group", "rotation").len(), 1);
    assert_eq!(of(&evs, "group", "revocation").len(), 1);
    assert_eq!(of(&evs, "group", "refusal").len(), 1);
    let group = of(&evs, "group", "group_stats");
    assert_eq!(group[0]["messages"], 5, "{}", group[0]);
    assert_eq!(group[0]["lost"], 0);
    assert_eq!(group[0]["revoked_reads"], 0);
    assert!(of(&evs, "failover", "not_available").is_empty());
    let failover = of(&evs, "failover", "failover_stats");
    assert_eq!(failover[0]["messages"], 20, "{}", failover[0]);
    assert_eq!(failover[0]["lost"], 0);
    assert_eq!(failover[0]["duplicated"], 0);
    let end = of(&evs, "summary", "campaign_end");
    assert_eq!(end.len(), 1);
    assert_eq!(end[0]["status"], "PASS");
    assert_eq!(end[0]["exit_code"], 0);
    let stopped = of(&evs, "teardown", "process_stopped");
    assert_eq!(stopped.len(), 2);
    for s in stopped {
        assert_eq!(s["result"], "stopped cleanly (SIGTERM, exit 0)");
    }

    let md = c.markdown();
    for needle in [
        "**Result: PASS (exit 0)**",
        "| Phase | Status | Messages | Loss | Avg RTT | p50 | p95 | p99 | Max |",
        "| ping | PASS | 5/5 | 0 % |",
        "| burst | PASS | 40/40 | 0 % |",
        "| e2e | PASS | 5/5 | 0 % |",
        "| group | PASS | 5/5 | 0 % |",
        "### Key events",
        "| failover | PASS | 20/20 | 0 % |",
        "| endurance | PASS |",
        "## Thresholds",
        "no plaintext of the 5 messages found",
        "| Open FDs |",
    ] {
        assert!(md.contains(needle), "report lacks {needle:?}:\n{md}");
    }
    let html = c.html();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(
        html.matches("<svg").count() >= 3,
        "RTT, rate and soak charts"
    );
    assert!(html.contains("RTT over time"));
    assert!(!html.contains("<script"));
    assert!(!html.contains("https://"));
    assert!(c.dir.join("relay.log").is_file());
    assert!(c.dir.join("responder.log").is_file());
}

#[test]
fn an_impossible_threshold_exits_with_the_threshold_code() {
    let c = three_pings(&["--max-p99-ms", "0.001"]);
    c.exited(3);
    let md = c.markdown();
    assert!(md.contains("| ping | FAIL | 3/3 |"), "{md}");
    assert!(md.contains("| burst | SKIPPED |"), "{md}");
    assert!(md.contains("**FAILED**"), "{md}");
    let evs = c.events();
    let end = of(&evs, "summary", "campaign_end");
    assert_eq!(end[0]["exit_code"], 3);
}

#[test]
fn a_bad_invite_is_a_setup_error_on_one_line() {
    let out = tempfile::tempdir().unwrap();
    let mut cmd = stress(&["campaign", "--invite", "0ksync1:not-an-invite", "--out"]);
    cmd.arg(out.path().join("run")).env("RUST_LOG", "off");
    let o = guarded(cmd);
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("invite"), "{stderr}");
    assert!(
        !stderr.contains("not-an-invite"),
        "the invite is not echoed: {stderr}"
    );
}

#[test]
fn a_campaign_through_the_impairment_proxy_at_5_percent_loss_loses_nothing() {
    let c = campaign(&[
        "--phase",
        "burst",
        "--burst-rounds",
        "1",
        "--burst-size",
        "50",
        "--impair",
        "loss=5%,delay=10ms",
    ]);
    c.exited(0);
    let evs = c.events();
    let start = of(&evs, "burst", "impairment_start");
    let end = of(&evs, "burst", "impairment_end");
    assert_eq!((start.len(), end.len()), (1, 1));
    // The traffic crossed the proxy (no direct path around it)...
    assert!(end[0]["packets_up"].as_u64().unwrap() > 0);
    assert!(end[0]["packets_down"].as_u64().unwrap() > 0);
    let round = of(&evs, "burst", "burst_round");
    assert_eq!(round[0]["acked"], 50);
    assert_eq!(round[0]["lost"], 0);
    // ...and carried its delay: a round trip crosses the proxy twice each way (≥ 40 ms).
    assert!(
        round[0]["avg_rtt_ms"].as_f64().unwrap() >= 40.0,
        "{}",
        round[0]
    );
    let md = c.markdown();
    assert!(md.contains("## Impairment"), "{md}");
    assert!(md.contains("| burst | PASS | 50/50 | 0 % |"), "{md}");
    let html = c.html();
    assert!(
        html.contains("class=\"impair\""),
        "impairment period shaded"
    );
}

#[test]
fn a_campaign_that_measures_nothing_does_not_pass() {
    // Counts that measure nothing are refused before anything starts.
    for bad in [
        ["--ping-count", "0"],
        ["--duration", "0"],
        ["--rate", "1e9"],
    ] {
        let mut cmd = stress(&["campaign", "--local"]);
        cmd.args(bad).env("RUST_LOG", "off");
        let o = guarded(cmd);
        assert_eq!(o.status.code(), Some(2), "{bad:?}");
    }
    // Only a phase that is not available (failover needs --local: it starts PostgreSQL and
    // relays of its own): nothing measured, exit 4, never PASS.
    let mut relay = RelayProcess::start();
    let invite =
        sync_lab::device::new_group_invite(&relay.relay_addr(), Duration::from_secs(600)).unwrap();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("run");
    let mut cmd = stress(&["campaign", "--phase", "failover", "--out"]);
    cmd.arg(&dir)
        .env(sync_lab::device::INVITE_ENV, &invite)
        .env("RUST_LOG", "off");
    let o = guarded(cmd);
    assert_eq!(o.status.code(), Some(4), "{o:?}");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("NOT MEASURED"), "{stderr}");
    let evs = events(&dir);
    let na = of(&evs, "failover", "not_available");
    assert_eq!(na.len(), 1);
    assert!(
        na[0]["reason"].as_str().unwrap().contains("--local"),
        "{}",
        na[0]
    );
    let end = of(&evs, "summary", "campaign_end");
    assert_eq!(end[0]["status"], "NOT MEASURED");
    assert_eq!(end[0]["exit_code"], 4);
    let md = std::fs::read_to_string(dir.join("campaign-report.md")).unwrap();
    assert!(md.contains("| failover | NOT AVAILABLE |"), "{md}");
    assert!(
        md.contains("**Result: NOT MEASURED: no phase that ran measured anything (exit 4)**"),
        "{md}"
    );
    assert!(!md.contains("PASS"), "{md}");
    assert!(relay.stop().is_clean(), "the relay stops cleanly");
}

#[test]
fn pings_through_the_proxy_report_the_proxy_as_their_path() {
    let c = three_pings(&["--impair", "delay=5ms"]);
    c.exited(0);
    let evs = c.events();
    let pings = of(&evs, "ping", "ping");
    assert_eq!(pings.len(), 3);
    for p in &pings {
        assert_eq!(p["path"], "impair-proxy", "{p}");
        // Two crossings of the 5 ms proxy each way at least.
        assert!(p["rtt_ms"].as_f64().unwrap() >= 20.0, "{p}");
    }
}
