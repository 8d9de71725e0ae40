//! T-CONN-01: the relay process is SIGKILLed in the middle of a 5,000-push burst and restarted
//! on the same data dir. Every push it acknowledged is present exactly once with the cursor it
//! acknowledged, and the client's unacknowledged pushes land exactly once after the restart.
//!
//! Real processes, real signals, real QUIC on 127.0.0.1, the real SQLite file. No sleeps: every
//! wait is on an event (a printed line, an ack, a disconnect), with a timeout only as a guard.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use sync_client::{
    ClientConfig, ClientOptions, GroupChoice, GroupMaterial, IrohConfig, IrohTransport,
    StoreLocation, StreamExt, SyncClient, SyncEvent,
};
use sync_crypto::{GroupDescriptor, GroupSecret};
use sync_types::{BlobId, Cursor};

const BIN: &str = env!("CARGO_BIN_EXE_sync-relay");
const GUARD: Duration = Duration::from_secs(300);
const BURST: usize = 5_000;

async fn guard<F: std::future::Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(GUARD, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out (guard) waiting for {what}"),
    }
}

/// Starts the relay binary and waits for its `dial: ID@ADDR` line.
async fn spawn_relay(data_dir: &Path, bind: SocketAddr) -> (Child, [u8; 32], SocketAddr) {
    let mut child = Command::new(BIN)
        .args(["--data-dir", data_dir.to_str().unwrap()])
        .args(["--bind", &bind.to_string(), "--http-bind", "127.0.0.1:0"])
        // Pushes are the thing under test here, not the rate limiter.
        .args(["--session-push-rate", "0", "--global-push-rate", "0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sync-relay");
    let stdout = child.stdout.take().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let dial = loop {
        let line = guard("the dial line", rx.recv())
            .await
            .expect("relay printed its address");
        if let Some(rest) = line.strip_prefix("dial:") {
            break rest.trim().to_string();
        }
    };
    let (id, addr) = dial.split_once('@').unwrap();
    let id: iroh::EndpointId = id.parse().unwrap();
    (child, *id.as_bytes(), addr.parse().unwrap())
}

async fn client(
    relay_id: [u8; 32],
    addr: SocketAddr,
    group: &GroupMaterial,
    dir: &Path,
) -> SyncClient {
    let transport = Arc::new(IrohTransport::new(
        IrohConfig::new(relay_id, vec![addr]).with_bind_addr(SocketAddr::from(([127, 0, 0, 1], 0))),
    ));
    let config = ClientConfig::new(
        StoreLocation::Dir(dir.to_path_buf()),
        transport,
        GroupChoice::Use(group.clone()),
    )
    .with_options(ClientOptions::for_tests());
    guard("connect", SyncClient::connect(config)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_burst_keeps_every_acked_push_once_and_lands_the_rest_once() {
    let data = tempfile::tempdir().unwrap();
    let devices = tempfile::tempdir().unwrap();
    // A fixed port for both runs, so the device dials the restarted relay where it dialed before.
    let bind = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (mut relay, relay_id, addr) = spawn_relay(data.path(), bind).await;
    let group = GroupMaterial {
        descriptor: GroupDescriptor::Random,
        secret: GroupSecret::random(&mut ChaCha20Rng::seed_from_u64(7)),
    };
    let a = client(relay_id, addr, &group, &devices.path().join("a")).await;
    let mut events = a.subscribe();

    let pusher = a.clone();
    let burst = tokio::spawn(async move {
        let mut ids = Vec::with_capacity(BURST);
        for i in 0..BURST {
            ids.push(pusher.push_queued(format!("{i}").as_bytes()).await.unwrap());
        }
        ids
    });

    // Collect acks; SIGKILL once a fifth of the burst is acknowledged.
    let mut acked: HashMap<BlobId, Cursor> = HashMap::new();
    guard("acks before the kill", async {
        while acked.len() < BURST / 5 {
            match events.next().await.unwrap() {
                SyncEvent::PushAcked { receipt } => {
                    assert!(acked.insert(receipt.blob_id, receipt.cursor).is_none());
                }
                SyncEvent::Lagged { missed } => panic!("event stream lagged by {missed}"),
                _ => {}
            }
        }
    })
    .await;
    relay.kill().expect("SIGKILL the relay");
    relay.wait().expect("reap");
    // Acks already on the way before the kill still count: drain events until the disconnect.
    guard("the disconnect", async {
        loop {
            match events.next().await.unwrap() {
                SyncEvent::PushAcked { receipt } => {
                    assert!(acked.insert(receipt.blob_id, receipt.cursor).is_none());
                }
                SyncEvent::Disconnected { .. } => break,
                SyncEvent::Lagged { missed } => panic!("event stream lagged by {missed}"),
                _ => {}
            }
        }
    })
    .await;
    let pushed = guard("the whole burst queued", burst).await.unwrap();
    let unacked = a.status().outbox_len;
    assert!(acked.len() < BURST, "the kill landed mid-burst");
    assert_eq!(
        unacked + acked.len(),
        BURST,
        "every push is either acked or still queued"
    );

    let (mut relay, restarted_id, _) = spawn_relay(data.path(), bind).await;
    assert_eq!(restarted_id, relay_id, "identity survives the kill");
    guard("flush after restart", a.flush(GUARD)).await.unwrap();

    // A second device pulls the whole group.
    let b = client(relay_id, addr, &group, &devices.path().join("b")).await;
    let mut got = Vec::new();
    let mut b_events = b.subscribe();
    got.extend(b.pull().await.unwrap());
    while got.len() < BURST {
        let e = guard("blobs on b", b_events.next()).await.unwrap();
        if matches!(
            e,
            SyncEvent::BlobsAvailable { .. } | SyncEvent::Lagged { .. }
        ) {
            got.extend(b.pull().await.unwrap());
        }
    }
    assert_eq!(got.len(), BURST, "nothing pulled twice");
    let ids: HashSet<BlobId> = got.iter().map(|b| b.blob_id).collect();
    assert_eq!(ids.len(), BURST, "no duplicates");
    assert_eq!(ids, pushed.iter().copied().collect(), "every push landed");
    let cursors: Vec<u64> = got.iter().map(|b| b.cursor.get()).collect();
    assert_eq!(
        cursors,
        (1..=BURST as u64).collect::<Vec<_>>(),
        "cursors dense, no gaps"
    );
    for blob in &got {
        if let Some(cursor) = acked.get(&blob.blob_id) {
            assert_eq!(
                *cursor, blob.cursor,
                "an acked push keeps the cursor it was acked with"
            );
        }
    }
    // Per-sender order: A pushed "0".."4999" in order.
    let seqs: Vec<usize> = got
        .iter()
        .map(|b| String::from_utf8_lossy(&b.data).parse().unwrap())
        .collect();
    assert_eq!(seqs, (0..BURST).collect::<Vec<_>>(), "push order kept");
    println!(
        "T-CONN-01: {} acked before SIGKILL, {unacked} re-sent after restart, {BURST} pulled once each",
        acked.len()
    );

    a.close().await;
    b.close().await;
    relay.kill().ok();
    relay.wait().ok();
}
