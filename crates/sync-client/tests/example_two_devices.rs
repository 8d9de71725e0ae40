//! The repository's `examples/two_devices.rs` runs against the real relay binary and prints
//! what the phone received: the walkthrough the README points to keeps working.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;

use sync_testkit::{GUARD, RelayProcess, run_bounded};

/// The example binary beside the test binaries (`target/<profile>/examples/`). A plain
/// `cargo test` builds examples; `cargo test --test …` does not, so it is built here when
/// missing (same target dir, the `test` profile of `cargo test`).
fn example_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let bin = profile_dir.join("examples").join("two_devices");
    if !bin.is_file() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let built = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "-p",
                "sync-client",
                "--example",
                "two_devices",
            ])
            .args(["--profile", "test", "--target-dir"])
            .arg(profile_dir.parent().unwrap())
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap();
        assert!(built.success(), "cargo build --example two_devices failed");
    }
    assert!(bin.is_file(), "{} not built", bin.display());
    bin
}

#[test]
fn the_two_devices_example_syncs_through_a_real_relay() {
    let relay = RelayProcess::start();
    for target in [relay.http_url(), relay.relay_addr().to_string()] {
        let out = run_bounded(Command::new(example_bin()).arg(&target), GUARD);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{target}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("laptop pushed blob"), "{stdout}");
        assert!(
            stdout.contains("phone received: hello from the laptop"),
            "{stdout}"
        );
    }
}
