//! Running the `sync-stress` binary from the lab's command tests.

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
