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
