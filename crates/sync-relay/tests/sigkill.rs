//! T-CONN-01: the relay process is SIGKILLed in the middle of a 5,000-push burst and restarted
//! on the same data dir. Every push it acknowledged is present exactly once with the cursor it
//! acknowledged, and the client's unacknowledged pushes land exactly once after the restart.
//!
//! Real processes, real signals, real QUIC on 127.0.0.1, the real SQLite file. No sleeps: every
//! wait is on an event (a printed line, an ack, a disconnect), with a timeout only as a guard.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, HashSet};

use sync_client::{StoreLocation, StreamExt, SyncEvent};
use sync_testkit::devices::{self, pull_until};
use sync_testkit::{GUARD, RelayProcess, guard};
use sync_types::{BlobId, Cursor};

const BURST: usize = 5_000;

/// The relay binary with its push rate limits off: pushes are the thing under test here.
fn start_relay() -> RelayProcess {
    RelayProcess::builder()
        .args(["--session-push-rate", "0", "--global-push-rate", "0"])
        .start()
        .expect("relay starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_burst_keeps_every_acked_push_once_and_lands_the_rest_once() {
    let stores = tempfile::tempdir().unwrap();
    let mut relay = start_relay();
    let dial = relay.relay_addr();
    let group = devices::group(7);
    let a = devices::connect(&dial, &group, StoreLocation::Dir(stores.path().join("a"))).await;
    let mut events = a.subscribe();

    let burst = devices::push_numbered(&a, BURST);

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
    relay.kill();
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

    // Same data dir and address, so the device dials the restarted relay where it dialed before.
    relay.restart().expect("relay restarts");
    assert_eq!(
        relay.relay_addr(),
        dial,
        "identity and address survive the kill"
    );
    guard("flush after restart", a.flush(GUARD)).await.unwrap();

    // A second device pulls the whole group.
    let b = devices::connect(&dial, &group, StoreLocation::Dir(stores.path().join("b"))).await;
    let got = pull_until(&b, BURST).await;
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
    assert_eq!(
        devices::numbers(&got),
        (0..BURST).collect::<Vec<_>>(),
        "push order kept"
    );
    println!(
        "T-CONN-01: {} acked before SIGKILL, {unacked} re-sent after restart, {BURST} pulled once each",
        acked.len()
    );

    a.close().await;
    b.close().await;
    assert!(relay.stop().is_clean(), "the restarted relay stops cleanly");
}
