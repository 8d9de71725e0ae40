//! Multi-client load and churn against an in-process relay over real iroh on 127.0.0.1, and the
//! `sync-stress load` command against the same kind of relay. Every run is bounded in clients,
//! messages and time; nothing sleeps to wait for an event (the load waits on notifications and
//! the relay's own session gauge).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::{run_stress, run_stress_with_relay};

use sync_lab::loadgen::{ChurnConfig, LoadConfig, LoadTarget, run_churn, run_load};
use sync_relay::{RelayConfig, RelayHandle};
use sync_types::{ErrorCode, RelayAddr, RelayId};

const GUARD: Duration = Duration::from_secs(240);

/// Runs `sync-stress` with `args` to completion (killed if it outlives the guard).
fn run_bin(args: &[&str]) -> Output {
    run_stress(args, GUARD)
}

async fn start_relay(dir: &Path, max_sessions: u32) -> RelayHandle {
    let mut config = RelayConfig::for_tests(dir);
    config.max_sessions = max_sessions;
    sync_relay::start(config).await.expect("relay starts")
}

/// Waits for a load or churn run (bounded by [`GUARD`]), prints its report as JSON and
/// returns it.
async fn bounded<R: serde::Serialize, E: std::fmt::Debug>(
    run: impl Future<Output = Result<R, E>>,
) -> R {
    let report = tokio::time::timeout(GUARD, run)
        .await
        .expect("bounded run")
        .unwrap();
    println!("{}", serde_json::to_string(&report).unwrap());
    report
}

fn target(relay: &RelayHandle) -> LoadTarget {
    LoadTarget {
        relay: RelayAddr::new(RelayId::from_bytes(relay.relay_id()), &relay.direct_addrs()),
        http: Some(relay.http_addr()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_over_the_session_limit_refuses_cleanly_and_the_others_lose_nothing() {
    const MAX: u32 = 6;
    let dir = tempfile::tempdir().unwrap();
    let relay = start_relay(dir.path(), MAX).await;
    let config = LoadConfig {
        clients: 9,
        rate: 60.0,
        duration: Duration::from_secs(2),
        group_size: 3,
        connect_concurrency: 1,
        seed: Some(9),
        ..LoadConfig::default()
    };
    let report = bounded(run_load(&target(&relay), &config)).await;
    assert_eq!(
        report.accepted, MAX as usize,
        "exactly max_sessions accepted"
    );
    assert_eq!(report.refused, 3);
    assert!(
        report.refused_too_many_sessions.unwrap() >= 3,
        "refused as TooManySessions"
    );
    assert!(
        relay
            .metrics()
            .rejections_total
            .get(ErrorCode::TooManySessions)
            >= 3
    );
    // The accepted devices (two full groups) worked: everything pushed was delivered to every
    // other member of its group, once.
    assert!(report.pushed >= 60, "pushed {}", report.pushed);
    assert_eq!(report.pushers_flushed, MAX as usize);
    assert_eq!(report.expected_deliveries, 2 * report.pushed);
    assert_eq!(report.delivered, report.expected_deliveries);
    assert_eq!((report.lost, report.duplicates), (0, 0));
    assert_eq!(relay.metrics().pushes_total.get(), report.pushed);
    assert!(report.clean());
    assert_eq!(report.latency.count as u64, report.delivered);
    assert_eq!(report.sessions_after, Some(0), "every session closed");
    relay.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_leaves_no_ghost_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let relay = start_relay(dir.path(), 1000).await;
    let config = ChurnConfig {
        connections: 50,
        lifetime: Duration::from_secs(1),
        overlap: 10,
        group_size: 5,
        settle_timeout: Duration::from_secs(20),
        seed: Some(4),
        ..ChurnConfig::default()
    };
    let report = bounded(run_churn(&target(&relay), &config)).await;
    assert_eq!(report.connected, 50);
    assert_eq!(report.pushes_acked, 50);
    assert_eq!(report.push_failures, 0);
    assert!(report.clean(), "{:?}", report.problems());
    assert_eq!(report.sessions_baseline, 0);
    assert!(
        report.sessions_peak >= 2,
        "connections overlapped: {report:?}"
    );
    assert_eq!(report.sessions_final, 0);
    assert_eq!(report.ghost_sessions, 0);
    assert_eq!(relay.metrics().sessions.get(), 0);
    assert_eq!(relay.metrics().sessions_total.get(), 50);
    relay.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_command_prints_a_json_summary() {
    let dir = tempfile::tempdir().unwrap();
    let relay = start_relay(dir.path(), 1000).await;
    let dial = format!("{}@{}", relay.endpoint_id(), relay.direct_addrs()[0]);
    let http = relay.http_addr().to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_sync-stress"))
            .args(["load", "--relay", &dial, "--http", &http])
            .args([
                "--clients",
                "4",
                "--group-size",
                "2",
                "--rate",
                "40",
                "--duration",
                "1",
            ])
            .args([
                "--churn",
                "--churn-connections",
                "6",
                "--churn-lifetime",
                "300ms",
            ])
            .args(["--churn-overlap", "3"])
            .output()
            .unwrap()
    });
    let out = tokio::time::timeout(GUARD, out).await.unwrap().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    println!("{v}");
    assert_eq!(v["clean"], true);
    assert_eq!(v["load"]["accepted"], 4);
    assert_eq!(v["load"]["lost"], 0);
    assert_eq!(v["load"]["duplicates"], 0);
    assert!(v["load"]["latency"]["p99_ms"].is_number());
    assert_eq!(v["churn"]["connected"], 6);
    assert_eq!(v["churn"]["ghost_sessions"], 0);
    relay.shutdown().await.unwrap();
}

#[test]
fn an_unreachable_relay_is_an_error_not_a_clean_run() {
    // A port nobody listens on: bind one, note it, close it.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let id = iroh::SecretKey::from_bytes(&[9; 32]).public();
    let dial = format!("{id}@127.0.0.1:{port}");
    let o = run_bin(&[
        "load",
        "--relay",
        &dial,
        "--clients",
        "2",
        "--group-size",
        "2",
        "--rate",
        "10",
        "--duration",
        "1",
        "--connect-timeout",
        "300ms",
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("accepted none of the 2 devices"),
        "{stderr}"
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["clean"], false);
    assert_eq!(v["load"]["accepted"], 0);
    assert_eq!(v["load"]["refused"], 2);
}

#[test]
fn rates_without_a_period_are_a_bad_command_line() {
    let dial = format!(
        "{}@127.0.0.1:9",
        iroh::SecretKey::from_bytes(&[9; 32]).public()
    );
    for args in [
        &["--rate", "1e9"][..],
        &["--rate", "0"],
        &["--rate", "NaN"],
        &["--duration", "0"],
        &["--clients", "1", "--rate", "5000"],
    ] {
        let mut argv = vec!["load", "--relay", &dial];
        argv.extend_from_slice(args);
        let o = run_bin(&argv);
        assert_eq!(
            o.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn local_churn_samples_the_relay_fds_and_they_return_to_baseline() {
    let o = run_stress_with_relay(
        &[
            "load",
            "--local",
            "--clients",
            "0",
            "--churn",
            "--churn-connections",
            "20",
            "--churn-lifetime",
            "300ms",
            "--churn-overlap",
            "5",
            "--seed",
            "3",
        ],
        GUARD,
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "stderr: {stderr}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    println!("{v}");
    eprintln!("{stderr}");
    assert_eq!(v["clean"], true);
    let churn = &v["churn"];
    assert_eq!(churn["connected"], 20);
    assert_eq!(churn["pushes_acked"], 20);
    assert_eq!(churn["ghost_sessions"], 0);
    let fds = &churn["relay_fds"];
    let (baseline, peak, end) = (
        fds["baseline"].as_u64().unwrap(),
        fds["peak"].as_u64().unwrap(),
        fds["end"].as_u64().unwrap(),
    );
    assert!(baseline > 0, "{fds}");
    assert!(peak >= baseline && peak >= end, "{fds}");
    assert!(end <= baseline + fds["slack"].as_u64().unwrap(), "{fds}");
    assert!(fds["pid"].as_u64().unwrap() > 0);
    assert!(stderr.contains("relay open FDs"), "text summary: {stderr}");
}
