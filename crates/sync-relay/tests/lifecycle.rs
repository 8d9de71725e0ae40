//! Lifecycle: HTTP endpoints on a real socket, identity across restarts, orderly shutdown, and
//! the real `sync-relay` binary (CLI, config precedence, SIGTERM).

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use common::*;
use sync_testkit::{ChildProcess, RelayProcess};
use sync_types::{Bye, Cursor, Message};

const BIN: &str = env!("CARGO_BIN_EXE_sync-relay");

#[tokio::test]
async fn health_metrics_and_well_known_answer_on_the_http_port() {
    let relay = TestRelay::start(|_| {}).await;
    let (mut c, _) = Client::open(&relay, &keys(1)).await;
    assert!(matches!(
        c.push(blob(1), b"0123456789").await,
        Message::PushAck(_)
    ));
    let http = relay.handle.http_addr();

    let (status, body) = http_get(http, "/health").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["status"], "ok");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["sessions"], 1);
    assert_eq!(v["groups"], 1);
    assert_eq!(v["active_groups"], 1);
    assert_eq!(v["blobs"], 1);
    assert_eq!(v["bytes_stored"], 10);
    assert!(v["uptime_secs"].is_u64());

    let (status, body) = http_get(http, "/metrics").await;
    assert_eq!(status, 200);
    for needle in [
        "sync_relay_sessions 1\n",
        "sync_relay_sessions_total 1\n",
        "sync_relay_pushes_total 1\n",
        "sync_relay_push_duplicates_total 0\n",
        "sync_relay_pulls_total 0\n",
        "sync_relay_notifies_total 0\n",
        "sync_relay_notifies_coalesced_total 0\n",
        "sync_relay_rejections_total{reason=\"RateLimited\"} 0\n",
        "sync_relay_push_commit_seconds_count 1\n",
        "sync_relay_stored_blobs 1\n",
        "sync_relay_stored_bytes 10\n",
        "# TYPE sync_relay_bytes_in_total counter\n",
        "# TYPE sync_relay_bytes_out_total counter\n",
    ] {
        assert!(body.contains(needle), "{needle:?} missing from /metrics");
    }

    let (status, body) = http_get(http, "/.well-known/0k-sync").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["relay_id"], relay.handle.endpoint_id().to_string());
    assert_eq!(v["addrs"][0], relay.addr().to_string());
    c.close().await;
    relay.handle.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn identity_and_data_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = sync_relay::RelayConfig::for_tests(dir.path());
    let first = sync_relay::start(config.clone()).await.expect("start");
    let id = first.endpoint_id();
    let relay = TestRelay {
        handle: first,
        dir: tempfile::tempdir().expect("unused"),
    };
    let (mut c, _) = Client::open(&relay, &keys(1)).await;
    assert!(matches!(
        c.push(blob(1), b"kept").await,
        Message::PushAck(_)
    ));
    c.close().await;
    relay.handle.shutdown().await.expect("shutdown");

    let second = sync_relay::start(config).await.expect("restart");
    assert_eq!(second.endpoint_id(), id, "same identity after restart");
    let relay = TestRelay {
        handle: second,
        dir: tempfile::tempdir().expect("unused"),
    };
    // Devices that signed for the old id reach the same relay id; data is still there.
    let (mut c, welcome) = Client::open(&relay, &keys(1)).await;
    assert_eq!(welcome.relay_id, *id.as_bytes());
    assert_eq!(welcome.max_cursor, Cursor::new(1));
    match c.pull(0, 10).await {
        Message::PullResponse(r) => assert_eq!(r.entries[0].payload.as_slice(), b"kept"),
        other => panic!("expected PullResponse, got {other:?}"),
    }
    c.close().await;
    relay.handle.shutdown().await.expect("shutdown");
    drop(dir);
}

#[tokio::test]
async fn shutdown_says_bye_to_open_sessions_and_flushes_storage() {
    let relay = TestRelay::start(|_| {}).await;
    let (mut c, _) = Client::open(&relay, &keys(1)).await;
    assert!(matches!(c.push(blob(1), b"x").await, Message::PushAck(_)));
    let handle = relay.handle.clone();
    let stopping = tokio::spawn(async move { handle.shutdown().await });
    let rest = c.rx.until_end().await;
    assert!(
        matches!(rest.as_slice(), [Message::Bye(Bye { reason: Some(_) })]),
        "{rest:?}"
    );
    guard("shutdown", stopping)
        .await
        .expect("task")
        .expect("clean shutdown");
    // Second call: no-op.
    relay.handle.shutdown().await.expect("idempotent");
    assert!(relay.handle.connect_in_memory(c.device).is_err());
    // The WAL was checkpointed and the database closed.
    let wal = relay.dir.path().join("relay.db-wal");
    assert!(
        !wal.exists() || std::fs::metadata(&wal).expect("wal").len() == 0,
        "WAL checkpointed"
    );
    c.close().await;
}

#[test]
fn help_documents_every_flag_and_env_var() {
    let out = Command::new(BIN).arg("--help").output().expect("run");
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).expect("utf8");
    for (key, env) in sync_relay::RelayConfig::KEYS {
        let flag = format!("--{}", key.replace('_', "-"));
        assert!(help.contains(&flag), "{flag} missing from --help");
        assert!(help.contains(env), "{env} missing from --help");
    }
    assert!(help.contains("--config"));
    assert!(help.contains("SYNC_RELAY_CONFIG"));
}

#[test]
fn config_precedence_is_file_then_env_then_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("relay.toml");
    std::fs::write(
        &file,
        "max_sessions = 11\nmax_pull_count = 12\nidle_timeout = \"13s\"\n",
    )
    .expect("write");
    let out = Command::new(BIN)
        .args(["--config", file.to_str().expect("path"), "--print-config"])
        .env("SYNC_RELAY_MAX_PULL_COUNT", "22")
        .env("SYNC_RELAY_IDLE_TIMEOUT", "23s")
        .args(["--idle-timeout", "33s"])
        .output()
        .expect("run");
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8(out.stdout).expect("utf8");
    let config = sync_relay::RelayConfig::from_toml(&printed).expect("printed config parses");
    assert_eq!(config.max_sessions, 11, "file");
    assert_eq!(config.max_pull_count, 22, "env beats file");
    assert_eq!(config.idle_timeout.as_secs(), 33, "flag beats env");

    // Unknown keys: one readable line, exit code 2.
    std::fs::write(&file, "max_sesions = 1\n").expect("write");
    let out = Command::new(BIN)
        .args(["--config", file.to_str().expect("path"), "--print-config"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).expect("utf8");
    assert!(err.starts_with("sync-relay: invalid config file"), "{err}");
    assert!(err.contains("max_sesions"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[test]
fn a_startup_failure_is_one_readable_line_and_exit_code_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"").expect("write");
    let out = Command::new(BIN)
        .args(["--data-dir", file.join("data").to_str().expect("path")])
        .args(["--bind", "127.0.0.1:0", "--http-bind", "127.0.0.1:0"])
        .env("RUST_LOG", "off")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).expect("utf8");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.starts_with("sync-relay: cannot start the relay"),
        "{err}"
    );
    assert_eq!(
        err.matches("Not a directory").count(),
        1,
        "no repeated causes: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_sessions_and_exits_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut process = RelayProcess::builder()
        .data_dir(dir.path())
        .env("RUST_LOG", "info")
        .start()
        .expect("relay starts");
    let ready = process.ready().clone();
    assert_eq!(ready.data_dir, dir.path());
    assert_eq!(ready.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(Some(ready.pid), process.pid());
    let id = iroh::EndpointId::from_bytes(ready.relay_id.as_bytes()).expect("endpoint id");
    let addr = ready.addrs[0];

    let mut c = Client::connect_to(id, addr).await;
    assert!(matches!(c.hello(&keys(1)).await, Message::Welcome(_)));
    let secret_payload = b"PAYLOAD-MUST-NOT-BE-LOGGED";
    assert!(matches!(
        c.push(blob(1), secret_payload).await,
        Message::PushAck(_)
    ));

    // SIGTERM: the session is drained with Bye, then the process exits 0.
    let stopping = tokio::task::spawn_blocking(move || {
        let outcome = process.stop();
        (process, outcome)
    });
    let rest = c.rx.until_end().await;
    assert!(
        matches!(rest.as_slice(), [Message::Bye(_)]),
        "drained with Bye: {rest:?}"
    );
    c.close().await;
    let (process, outcome) = guard("the relay to exit", stopping).await.expect("join");
    assert!(outcome.is_clean(), "clean exit after SIGTERM: {outcome}");
    let logs = std::fs::read_to_string(process.log_path()).expect("relay log");
    assert!(logs.contains("session_open"), "audit log: {logs}");
    assert!(logs.contains("relay stopped"), "{logs}");
    assert!(!logs.contains("PAYLOAD-MUST-NOT-BE-LOGGED"));
    let full_group = keys(1).group_id().to_string();
    assert!(!logs.contains(&full_group), "ids are shortened in logs");

    // Restart on the same data dir: the push is there, the WAL was checkpointed.
    let relay = TestRelay {
        handle: sync_relay::start(sync_relay::RelayConfig::for_tests(dir.path()))
            .await
            .expect("restart"),
        dir: tempfile::tempdir().expect("unused"),
    };
    assert_eq!(relay.handle.endpoint_id(), id);
    let (mut c, welcome) = Client::open(&relay, &keys(1)).await;
    assert_eq!(welcome.max_cursor, Cursor::new(1));
    match c.pull(0, 10).await {
        Message::PullResponse(r) => assert_eq!(r.entries[0].payload.as_slice(), secret_payload),
        other => panic!("expected PullResponse, got {other:?}"),
    }
    c.close().await;
    relay.handle.shutdown().await.expect("shutdown");
}

/// Without `--ready-json` the relay prints a banner for people: its id, addresses, one `dial:`
/// line per address and the health URL, agreeing with what it reports to scripts.
#[test]
fn the_text_banner_names_the_same_relay_as_the_readiness_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut first = RelayProcess::builder()
        .data_dir(dir.path())
        .start()
        .expect("relay starts");
    let ready = first.ready().clone();
    assert!(first.stop().is_clean());

    let mut child = Command::new(BIN)
        .args(["--data-dir", dir.path().to_str().expect("path")])
        .args(["--bind", "127.0.0.1:0", "--http-bind", "127.0.0.1:0"])
        .env("RUST_LOG", "off")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sync-relay");
    let stdout = child.stdout.take().expect("stdout");
    let mut process = ChildProcess::new("sync-relay", child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut banner = Vec::new();
    while !banner.iter().any(|l: &String| l.starts_with("storage:")) {
        banner.push(rx.recv_timeout(GUARD).expect("a banner line"));
    }
    assert!(process.stop(GUARD).is_clean());
    let field = |name: &str| -> Vec<String> {
        banner
            .iter()
            .filter_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .collect()
    };
    assert_eq!(
        field("relay id:"),
        [ready.relay_id.to_string()],
        "{banner:?}"
    );
    let dial = field("dial:");
    assert_eq!(dial.len(), 1, "one dial line per address: {banner:?}");
    let (id, addr) = dial[0].split_once('@').expect("ID@ADDR");
    assert_eq!(id, ready.relay_id.to_string());
    assert!(
        addr.parse::<SocketAddr>()
            .expect("ip:port")
            .ip()
            .is_loopback()
    );
    assert!(
        field("health:")[0].starts_with("http://127.0.0.1:"),
        "{banner:?}"
    );
    assert_eq!(field("data dir:"), [dir.path().display().to_string()]);
    assert_eq!(
        field("storage:"),
        [format!("sqlite (store {})", ready.store_id)],
        "the banner names the storage and the store id --ready-json gives"
    );
}
