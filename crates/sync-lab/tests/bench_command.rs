//! `sync-stress bench`: a quick run with the runs under attack against the real relay binary
//! prints every figure, every baseline, every target line and what the attackers achieved, and
//! exits 0 (no timing is asserted: the figures depend on the machine); bad counts exit 2; a
//! missing relay binary exits 1 with a readable message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Output;
use std::time::Duration;

use common::{run_stress, run_stress_with_relay, succeeded, text};

/// Bounds a whole quick run (well under a minute on an idle machine; a loaded 2-core CI host
/// with debug binaries is far slower).
const GUARD: Duration = Duration::from_secs(600);

fn run_bin(args: &[&str]) -> Output {
    run_stress(args, GUARD)
}

/// Every line a run prints a figure on, by its start.
const FIGURE_LINES: &[&str] = &[
    "[device] sealing one blob",
    "[baseline] raw SQLite inserts (100 rows/txn):",
    "[baseline] raw iroh echo RTT 64 B (echo process):",
    "[baseline] raw iroh pipelined 1 KiB frames",
    "    (echo process CPU ",
    "[1] push→ack throughput, 1 device:",
    "[1] push→ack throughput, 16 devices (own groups):",
    "[2] idle push latency:",
    "[3] push(A)→notify(B) latency:",
    "[4] preloaded 5000 blobs through the storage API at",
    "[4] push→ack throughput, 1 device, empty group in that relay:",
    "[4] push→ack throughput, 1 device, group holding 5000:",
    "## Ratios and this project's targets",
    "relay throughput / raw SQLite, 1 device:",
    "relay throughput / raw SQLite, 16 devices:",
    "relay throughput / raw iroh pipelined echo:",
    "relay CPU per push / raw SQLite CPU per row:",
    "idle push p99:",
    "push→notify p99:",
    "5000-blob group / empty group (1-device run of the fresh relay):",
    "5000-blob group / empty group (same relay):",
    "total wall time:",
];

/// The lines of the runs under attack that carry a figure, by their start.
const ATTACK_LINES: &[&str] = &[
    "[attack] 20 hostile connections from 127.0.0.2, the devices from 127.0.0.1",
    "[attack] push→ack throughput, 16 devices (own groups):",
    "    (quiet run: ",
    "[attack] idle push latency:",
    "[attack] the attackers ran",
    "[attack] the relay's counters during the attack: admission_refusals_total:",
    "[attack] relay RSS:",
    "16-device throughput under attack / quiet:",
    "idle push p99 under attack / quiet:",
    "relay CPU per push under attack / quiet, 16 devices:",
];

/// The kinds of attacker, as the per-kind lines name them.
const ATTACKER_KINDS: &[&str] = &[
    "silent",
    "stream flood",
    "pulls never read",
    "garbage before Hello",
    "invite-lookup sweep",
];

/// The lines of the targets: the last word(s) are the verdict.
const TARGET_LINES: &[&str] = &[
    "relay throughput / raw SQLite, 1 device:",
    "relay throughput / raw SQLite, 16 devices:",
    "idle push p99:",
    "push→notify p99:",
    "5000-blob group / empty group (1-device run of the fresh relay):",
    "5000-blob group / empty group (same relay):",
    "16-device throughput under attack / quiet:",
    "idle push p99 under attack / quiet:",
];

/// The line starting with `start`, which must carry a figure.
fn figure_line<'a>(lines: &[&'a str], start: &str, stdout: &str) -> &'a str {
    let line = lines
        .iter()
        .find(|l| l.starts_with(start))
        .unwrap_or_else(|| panic!("no line starting {start:?} in:\n{stdout}"));
    assert!(
        line.chars().any(|c| c.is_ascii_digit()),
        "no figure on {line:?}"
    );
    line
}

#[test]
fn quick_run_prints_every_figure_baseline_and_verdict() {
    let out = run_stress_with_relay(&["bench", "--quick", "--attack"], GUARD);
    let stdout = succeeded(&out);
    let lines: Vec<&str> = stdout.lines().collect();
    for start in FIGURE_LINES.iter().chain(ATTACK_LINES) {
        figure_line(&lines, start, &stdout);
    }
    // Every relay throughput figure is followed by the relay's CPU line: four quiet runs and
    // the 16-device run under attack, which also shows the attackers' own thread.
    let cpu_lines: Vec<_> = lines
        .iter()
        .filter(|l| l.starts_with("    (relay process CPU "))
        .collect();
    assert_eq!(cpu_lines.len(), 5, "{stdout}");
    assert_eq!(
        cpu_lines
            .iter()
            .filter(|l| l.contains(", attackers "))
            .count(),
        1,
        "{stdout}"
    );
    for start in TARGET_LINES {
        let line = lines.iter().find(|l| l.starts_with(start)).unwrap();
        assert!(
            line.ends_with("   met") || line.ends_with("   not met"),
            "no verdict on {line:?}"
        );
    }
    assert!(
        stdout.contains("(200 samples, 0 without a notify"),
        "every notify sample of the quick run arrives:\n{stdout}"
    );
    attack_outcomes(&lines, &stdout);
}

/// What the attackers achieved, one line per kind after the summary line: every kind
/// connected; the stream floods got no extra stream; garbage was refused with typed errors;
/// the relay counted refusals by reason.
fn attack_outcomes(lines: &[&str], stdout: &str) {
    let at = lines
        .iter()
        .position(|l| l.starts_with("[attack] the attackers ran"))
        .unwrap();
    let per_kind = &lines[at + 1..at + 1 + ATTACKER_KINDS.len()];
    for (line, kind) in per_kind.iter().zip(ATTACKER_KINDS) {
        assert!(
            line.starts_with(&format!("    {kind}: connections ")),
            "{line:?} in:\n{stdout}"
        );
    }
    let outcome = |kind: usize, what: &str| -> Option<u64> {
        let (_, rest) = per_kind[kind].split_once(&format!(" {what} "))?;
        rest.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    assert_eq!(
        outcome(1, "extra streams opened"),
        Some(0),
        "the relay lets a session open no stream beyond its own:\n{stdout}"
    );
    assert!(
        outcome(3, "FrameTooLarge").is_some_and(|n| n > 0),
        "garbage is refused with typed errors:\n{stdout}"
    );
    let counters = figure_line(
        lines,
        "[attack] the relay's counters during the attack:",
        stdout,
    );
    assert!(
        counters.contains("rejections_total: ") && counters.contains("FrameTooLarge "),
        "{counters}"
    );
}

#[test]
fn counts_out_of_range_exit_2_and_a_missing_relay_exits_1() {
    for args in [
        ["bench", "--pushes", "15"],
        ["bench", "--samples", "0"],
        ["bench", "--preload", "x"],
    ] {
        let out = run_bin(&args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let out = run_bin(&["bench", "--quick", "--relay-bin", "/nonexistent/sync-relay"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("/nonexistent/sync-relay") && stderr.contains("not found"),
        "{stderr}"
    );
}
