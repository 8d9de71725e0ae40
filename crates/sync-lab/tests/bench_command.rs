//! `sync-stress bench`: a quick run against the real relay binary prints every figure, every
//! baseline and every target line, and exits 0 (no timing is asserted: the figures depend on
//! the machine); bad counts exit 2; a missing relay binary exits 1 with a readable message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Output};
use std::time::Duration;

use sync_testkit::{relay_bin, run_bounded};

/// Bounds a whole quick run (well under a minute on an idle machine; a loaded 2-core CI host
/// with debug binaries is far slower).
const GUARD: Duration = Duration::from_secs(600);
const BIN: &str = env!("CARGO_BIN_EXE_sync-stress");

fn run_bin(args: &[&str]) -> Output {
    run_bounded(Command::new(BIN).args(args).env("RUST_LOG", "warn"), GUARD)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
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

/// The lines of the targets: the last word(s) are the verdict.
const TARGET_LINES: &[&str] = &[
    "relay throughput / raw SQLite, 1 device:",
    "relay throughput / raw SQLite, 16 devices:",
    "idle push p99:",
    "push→notify p99:",
    "5000-blob group / empty group (1-device run of the fresh relay):",
    "5000-blob group / empty group (same relay):",
];

#[test]
fn quick_run_prints_every_figure_baseline_and_verdict() {
    let relay = relay_bin();
    let out = run_bin(&["bench", "--quick", "--relay-bin", relay.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        text(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    for start in FIGURE_LINES {
        let line = lines
            .iter()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no line starting {start:?} in:\n{stdout}"));
        assert!(
            line.chars().any(|c| c.is_ascii_digit()),
            "no figure on {line:?}"
        );
    }
    // Every relay throughput figure is followed by the relay's CPU line.
    let cpu_lines = lines
        .iter()
        .filter(|l| l.starts_with("    (relay process CPU "))
        .count();
    assert_eq!(cpu_lines, 4, "{stdout}");
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
