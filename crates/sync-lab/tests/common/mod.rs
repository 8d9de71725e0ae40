//! Running the `sync-stress` binary from the lab's command tests.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use sync_testkit::{relay_bin, run_bounded};

/// `sync-stress` with `args` and `RUST_LOG=warn`, ready to run.
pub(crate) fn stress(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sync-stress"));
    cmd.args(args).env("RUST_LOG", "warn");
    cmd
}

/// Runs `sync-stress` with `args` to completion (killed, and the test failed, after `guard`).
pub(crate) fn run_stress(args: &[&str], guard: Duration) -> Output {
    run_bounded(&mut stress(args), guard)
}

/// [`run_stress`] with `--relay-bin` naming the relay binary built for the tests.
pub(crate) fn run_stress_with_relay(args: &[&str], guard: Duration) -> Output {
    let relay = relay_bin();
    let mut argv = args.to_vec();
    argv.extend(["--relay-bin", relay.to_str().unwrap()]);
    run_stress(&argv, guard)
}

/// The events a campaign wrote to `dir/events.jsonl`, one JSON object per line.
#[allow(dead_code)] // each test file uses what it needs
pub(crate) fn events(dir: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("events.jsonl")).expect("events.jsonl");
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSONL {l:?}: {e}")))
        .collect()
}

/// The events named `event` of phase `phase`.
#[allow(dead_code)]
pub(crate) fn of_phase<'a>(
    evs: &'a [serde_json::Value],
    phase: &str,
    event: &str,
) -> Vec<&'a serde_json::Value> {
    evs.iter()
        .filter(|v| v["phase"] == phase && v["event"] == event)
        .collect()
}

/// The one event named `event` of phase `phase` (there must be exactly one).
#[allow(dead_code)]
pub(crate) fn one_of_phase<'a>(
    evs: &'a [serde_json::Value],
    phase: &str,
    event: &str,
) -> &'a serde_json::Value {
    let found = of_phase(evs, phase, event);
    assert_eq!(found.len(), 1, "one {event} event: {found:?}");
    found[0]
}

/// A process's output as text (invalid UTF-8 replaced).
#[allow(dead_code)]
pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts that `out` exited with status 0 (its stdout and stderr in the message); its stdout.
#[allow(dead_code)]
pub(crate) fn succeeded(out: &Output) -> String {
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        text(&out.stderr)
    );
    stdout
}

/// Asserts that `out` exited with `code` (its stderr in the message).
#[allow(dead_code)]
pub(crate) fn exited(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stderr: {}",
        text(&out.stderr)
    );
}

/// The campaign's Markdown report in `dir`, which must contain each of `needles`.
#[allow(dead_code)]
pub(crate) fn report_with(dir: &Path, needles: &[&str]) -> String {
    let md = std::fs::read_to_string(dir.join("campaign-report.md")).unwrap();
    for needle in needles {
        assert!(md.contains(needle), "report lacks {needle:?}:\n{md}");
    }
    md
}

/// The campaign's HTML report in `dir`, which must show `markers` event markers in all.
#[allow(dead_code)]
pub(crate) fn html_with_markers(dir: &Path, markers: usize) -> String {
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert_eq!(
        html.matches("<g class=\"marker\">").count(),
        markers,
        "{html}"
    );
    html
}
