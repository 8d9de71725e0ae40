//! `sync-stress responder` (the real binary) against a relay over real QUIC on 127.0.0.1: it
//! answers each message kind, never answers replies or messages from before it started, logs
//! no payload or invite, and exits 0 on SIGTERM. Every wait is on an event or a printed line,
//! with a timeout only as a guard.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use sync_client::{StreamExt, SyncClient, SyncEvent};
use sync_lab::device;
use sync_relay::RelayConfig;
use sync_testkit::{ChildProcess, GUARD, guard};
use sync_types::{DeviceId, RelayAddr, RelayId};

const BIN: &str = env!("CARGO_BIN_EXE_sync-stress");
/// Pulls until `n` blobs from other devices arrived (waiting on events between pulls).
async fn pull_n(client: &SyncClient, n: usize) -> Vec<(DeviceId, Vec<u8>)> {
    let mut events = client.subscribe();
    let mut got = Vec::new();
    loop {
        for b in client.pull().await.unwrap() {
            got.push((b.sender, b.data));
        }
        if got.len() >= n {
            return got;
        }
        loop {
            match events.next().await {
                Some(SyncEvent::BlobsAvailable { .. } | SyncEvent::Lagged { .. }) => break,
                Some(_) => {}
                None => panic!("event stream ended"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responder_answers_each_kind_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let relay = sync_relay::start(RelayConfig::for_tests(&dir.path().join("relay")))
        .await
        .unwrap();
    let addrs: Vec<SocketAddr> = relay.direct_addrs();
    let invite = device::new_group_invite(
        &RelayAddr::new(RelayId::from_bytes(relay.relay_id()), &addrs),
        Duration::from_secs(600),
    )
    .unwrap();
    let joined = device::parse_invite(&invite).unwrap();
    let me = guard(
        "campaign device",
        device::connect(
            &joined,
            &dir.path().join("me"),
            None,
            SocketAddr::from(([127, 0, 0, 1], 0)),
            "test",
            true,
        ),
    )
    .await
    .unwrap();
    // Before the responder exists: must never be answered (history).
    guard("push", me.push(b"PING:0")).await.unwrap();

    let err_log = dir.path().join("responder.log");
    let mut child = Command::new(BIN)
        .args([
            "responder",
            "--fast-reconnect",
            "--bind",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path().join("responder"))
        .env("SYNC_STRESS_INVITE", &invite)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(&err_log).unwrap()))
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // Killed whatever happens below; stopped with SIGTERM at the end.
    let mut child = ChildProcess::new("responder", child);
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("responder ready: device ")
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(rest.split_whitespace().next().unwrap().to_string());
            }
        }
    });
    let responder_id: DeviceId = guard("the ready line", rx).await.unwrap().parse().unwrap();

    let secret_text = "hello, this text must not reach the logs";
    for msg in [
        "PING:1".as_bytes(),
        b"BURST:2",
        secret_text.as_bytes(),
        b"PONG:9",
        b"BURST-ACK:3",
        b"ECHO:x",
        &[0xff, 0xfe],
        b"PING:last",
    ] {
        guard("push", me.push(msg)).await.unwrap();
    }
    // Answers come in the order of the messages (one sender, cursor order): once PONG:last is
    // in, every answer the responder would give to the earlier ones is in too.
    let got = guard("the answers", pull_n(&me, 5)).await;
    let texts: Vec<Vec<u8>> = got.iter().map(|(_, d)| d.clone()).collect();
    let mut echo_bytes = b"ECHO:".to_vec();
    echo_bytes.extend_from_slice(&[0xff, 0xfe]);
    assert_eq!(
        texts,
        vec![
            b"PONG:1".to_vec(),
            b"BURST-ACK:2".to_vec(),
            format!("ECHO:{secret_text}").into_bytes(),
            echo_bytes,
            b"PONG:last".to_vec(),
        ]
    );
    // Each answer was verified by our client as signed by the responder's device.
    assert!(got.iter().all(|(s, _)| *s == responder_id));

    // SIGTERM: exit 0.
    let outcome = tokio::task::spawn_blocking(move || child.stop(GUARD))
        .await
        .unwrap();
    assert!(outcome.is_clean(), "responder: {outcome}");

    let log = std::fs::read_to_string(&err_log).unwrap();
    assert!(log.contains("responder started"), "{log}");
    assert!(log.contains("answered"), "debug log names answers: {log}");
    assert!(!log.contains(secret_text), "payload in the log: {log}");
    assert!(!log.contains(&invite[8..]), "invite in the log");
    me.close().await;
    relay.shutdown().await.unwrap();
}
