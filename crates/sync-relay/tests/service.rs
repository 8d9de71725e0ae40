//! Running the relay as a service: `--check-config` (a pre-start check that starts nothing) and
//! the systemd unit in `ops/systemd/`, checked by `systemd-analyze verify` against this build's
//! binary.

mod common;

use std::process::Command;

use common::{ops_file, run_check};

const BIN: &str = env!("CARGO_BIN_EXE_sync-relay");

#[test]
fn check_config_accepts_a_valid_configuration_and_starts_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let file = dir.path().join("relay.toml");
    std::fs::write(&file, "max_sessions = 5\nhttp_bind = \"127.0.0.1:7999\"\n").expect("write");
    let out = Command::new(BIN)
        .args(["--config", file.to_str().expect("path"), "--check-config"])
        .env("SYNC_RELAY_DATA_DIR", &data)
        .output()
        .expect("run");
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8(out.stdout).expect("utf8");
    assert!(said.contains("configuration is valid"), "{said}");
    assert!(said.contains("127.0.0.1:7999"), "{said}");
    assert!(!data.exists(), "a check creates no data directory");
}

#[test]
fn check_config_refuses_a_bad_configuration_with_exit_code_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("relay.toml");
    for (text, named) in [
        ("max_sesions = 1\n", "max_sesions"),
        ("idle_timeout = \"soon\"\n", "idle_timeout"),
    ] {
        std::fs::write(&file, text).expect("write");
        let out = Command::new(BIN)
            .args(["--config", file.to_str().expect("path"), "--check-config"])
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "{text}: {out:?}");
        let err = String::from_utf8(out.stderr).expect("utf8");
        assert!(err.contains(named), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
    let out = Command::new(BIN)
        .args(["--check-config", "--max-sessions", "many"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn the_systemd_unit_verifies_against_this_binary() {
    let unit = ops_file("systemd/sync-relay.service");
    let text = std::fs::read_to_string(&unit).expect("the unit file");
    for must in [
        "DynamicUser=yes",
        "StateDirectory=0k-sync-relay",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "Restart=on-failure",
        "ExecStartPre=/usr/local/bin/sync-relay --check-config",
    ] {
        assert!(text.contains(must), "{must} missing from the unit");
    }
    // The drain must fit in systemd's stop timeout.
    let stop: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .and_then(|v| v.trim_end_matches('s').parse().ok())
        .expect("TimeoutStopSec in seconds");
    let drain = sync_relay::RelayConfig::default().drain_timeout.as_secs();
    assert!(
        stop > drain,
        "TimeoutStopSec {stop}s must exceed the drain timeout {drain}s"
    );

    // `systemd-analyze verify` checks every directive and that the binary is executable.
    let dir = tempfile::tempdir().expect("tempdir");
    let local = dir.path().join("sync-relay.service");
    std::fs::write(&local, text.replace("/usr/local/bin/sync-relay", BIN)).expect("write");
    let (ok, said) = run_check(
        Command::new("systemd-analyze").arg("verify").arg(&local),
        "systemd-analyze (package systemd) is installed",
    );
    assert!(ok, "{said}");
    assert!(
        !said.contains("sync-relay.service"),
        "systemd-analyze has something to say about the unit:\n{said}"
    );
}
