//! End-to-end: clients over real iroh QUIC on 127.0.0.1 against the real relay binary, known
//! only through the wire (its settings are its command-line flags).
//!
//! No test sleeps to wait for something: each waits on events or results, with a generous
//! timeout only as a guard against hangs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use sync_client::{GroupMaterial, StoreLocation, Stream, StreamExt, SyncClient, SyncEvent};
use sync_core::ConnectionStatus;
use sync_crypto::SEAL_OVERHEAD;
use sync_testkit::devices::{connect, group, pull_until};
use sync_testkit::{GUARD, RelayProcess, guard};
use sync_types::{BlobId, DeviceId, RelayAddr};

/// The relay binary on loopback with the test kit's defaults and these flags.
fn start_relay(flags: &[&str]) -> RelayProcess {
    RelayProcess::builder()
        .args(flags)
        .start()
        .expect("relay starts")
}

/// A device of `group` in memory, connected to `relay`.
async fn device(relay: &RelayAddr, group: &GroupMaterial) -> SyncClient {
    device_at(relay, group, StoreLocation::InMemory).await
}

/// A device of `group` with its state in `store`, connected to `relay`.
async fn device_at(relay: &RelayAddr, group: &GroupMaterial, store: StoreLocation) -> SyncClient {
    let c = connect(relay, group, store).await;
    assert_eq!(c.status().connection, ConnectionStatus::Connected);
    c
}

/// Waits until `events` yields an event `pred` accepts.
async fn wait_for(
    events: &mut (impl Stream<Item = SyncEvent> + Unpin),
    what: &str,
    pred: impl Fn(&SyncEvent) -> bool,
) {
    guard(what, async {
        while !pred(&events.next().await.unwrap()) {}
    })
    .await;
}

/// Closes every client, then stops the relay.
async fn close_all(clients: impl IntoIterator<Item = SyncClient>, relay: RelayProcess) {
    for c in clients {
        c.close().await;
    }
    relay.stop_clean().await;
}

async fn converge(devices: usize, per_device: usize) {
    let relay = start_relay(&[]);
    let dial = relay.relay_addr();
    let g = group(devices as u64);
    let mut clients = Vec::new();
    for _ in 0..devices {
        clients.push(device(&dial, &g).await);
    }
    let mut expected: HashMap<DeviceId, HashSet<Vec<u8>>> = HashMap::new();
    let mut tasks = Vec::new();
    for (d, c) in clients.iter().enumerate() {
        let mut mine = HashSet::new();
        for i in 0..per_device {
            mine.insert(format!("{d}:{i}").into_bytes());
        }
        expected.insert(c.device_id(), mine);
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_device {
                c.push_queued(format!("{d}:{i}").as_bytes()).await.unwrap();
            }
            c.flush(GUARD).await.unwrap();
        }));
    }
    for t in tasks {
        guard("pushers", t).await.unwrap();
    }
    let total = devices * per_device;
    for c in &clients {
        let got = pull_until(c, total - per_device).await;
        assert_eq!(got.len(), total - per_device, "no duplicates");
        let mut by_sender: HashMap<DeviceId, HashSet<Vec<u8>>> = HashMap::new();
        for b in got {
            assert_ne!(b.sender, c.device_id(), "own blobs are not returned");
            by_sender.entry(b.sender).or_default().insert(b.data);
        }
        for (dev, want) in &expected {
            if *dev != c.device_id() {
                assert_eq!(by_sender.get(dev), Some(want));
            }
        }
        assert_eq!(c.status().resume_cursor.get(), total as u64);
    }
    close_all(clients, relay).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_devices_converge_over_iroh() {
    converge(2, 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_devices_converge_over_iroh() {
    converge(5, 200).await;
}

/// 4 concurrent pushers while a 5th device pulls on every notification: 0 missed, 0 duplicated
/// over 20,000 blobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_pushers_and_a_puller_miss_nothing_and_duplicate_nothing() {
    const PUSHERS: usize = 4;
    const PER_PUSHER: usize = 5_000;
    let relay = start_relay(&["--session-push-rate", "0", "--global-push-rate", "0"]);
    let dial = relay.relay_addr();
    let g = group(20_000);
    let reader = device(&dial, &g).await;
    let mut events = reader.subscribe();
    let mut pushers = Vec::new();
    for _ in 0..PUSHERS {
        pushers.push(device(&dial, &g).await);
    }
    let mut pushed: HashSet<BlobId> = HashSet::new();
    let (id_tx, mut id_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for (p, c) in pushers.iter().enumerate() {
        let c = c.clone();
        let id_tx = id_tx.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..PER_PUSHER {
                let id = c.push_queued(format!("{p}:{i}").as_bytes()).await.unwrap();
                id_tx.send(id).unwrap();
            }
            c.flush(GUARD).await.unwrap();
        }));
    }
    drop(id_tx);

    let total = PUSHERS * PER_PUSHER;
    let mut seen: HashSet<BlobId> = HashSet::new();
    let mut last_seq: HashMap<DeviceId, i64> = HashMap::new();
    let mut pulls = 0usize;
    guard("20k blobs", async {
        while seen.len() < total {
            let e = events.next().await.unwrap();
            if !matches!(
                e,
                SyncEvent::BlobsAvailable { .. } | SyncEvent::Lagged { .. }
            ) {
                continue;
            }
            pulls += 1;
            for b in reader.pull().await.unwrap() {
                assert!(seen.insert(b.blob_id), "duplicate blob {}", b.blob_id);
                let text = String::from_utf8(b.data).unwrap();
                let seq: i64 = text.split(':').nth(1).unwrap().parse().unwrap();
                let last = last_seq.entry(b.sender).or_insert(-1);
                assert!(seq > *last, "per-sender order kept");
                *last = seq;
            }
        }
    })
    .await;
    for t in tasks {
        guard("pushers", t).await.unwrap();
    }
    while let Ok(id) = id_rx.try_recv() {
        pushed.insert(id);
    }
    assert_eq!(pushed.len(), total);
    assert_eq!(seen, pushed, "0 missed, 0 duplicated");
    assert!(pulls > 0);
    assert_eq!(reader.status().resume_cursor.get(), total as u64);
    close_all(pushers.into_iter().chain([reader]), relay).await;
}

/// Every blob up to the maximum size can be pulled, whatever the mix of sizes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_sizes_up_to_the_maximum_always_pull_completely() {
    let relay = start_relay(&[]);
    let dial = relay.relay_addr();
    let g = group(7);
    let a = device(&dial, &g).await;
    let b = device(&dial, &g).await;
    let max_plain = (1usize << 20) - SEAL_OVERHEAD;
    let sizes = [
        0,
        1,
        100,
        4096,
        65_536,
        max_plain,
        300_000,
        max_plain,
        2,
        max_plain - 1,
        700_000,
        10,
        max_plain,
    ];
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let mut sent = Vec::new();
    for &n in &sizes {
        let mut data = vec![0u8; n];
        rng.fill_bytes(&mut data);
        guard("push", a.push(&data)).await.unwrap();
        sent.push(data);
    }
    // One more than the maximum is refused before queueing.
    let err = a.push(&vec![0u8; max_plain + 1]).await.unwrap_err();
    assert!(!err.is_queued(), "{err:?}");
    let got = pull_until(&b, sizes.len()).await;
    let got: Vec<Vec<u8>> = got.into_iter().map(|b| b.data).collect();
    assert_eq!(got.len(), sent.len());
    assert!(got == sent, "every blob, in order, intact");
    close_all([a, b], relay).await;
}

/// The relay restarts on the same data dir (same identity, same address) in the middle of a
/// push burst: acked pushes are still there, unacked ones are re-sent and land exactly once,
/// nothing is pulled twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_restart_mid_burst_loses_nothing_and_duplicates_nothing() {
    const BURST: usize = 3_000;
    let devices = tempfile::tempdir().unwrap();
    // Rate limits off: a deferred push overtaken by later in-flight pushes would break push
    // order (see `rate_limited_burst_lands_exactly_once`). A drain timeout of 0 cuts sessions
    // at once on stop: pushes stay unacked.
    let relay = start_relay(&["--session-push-rate", "0", "--drain-timeout", "0"]);
    let dial = relay.relay_addr();
    let g = group(3);
    let a_store = StoreLocation::Dir(devices.path().join("a"));
    let b_store = StoreLocation::Dir(devices.path().join("b"));
    let a = device_at(&dial, &g, a_store).await;
    let b = device_at(&dial, &g, b_store).await;
    let mut a_events = a.subscribe();

    let pusher = a.clone();
    let burst = tokio::spawn(async move {
        let mut ids = Vec::new();
        for i in 0..BURST {
            ids.push(pusher.push_queued(format!("{i}").as_bytes()).await.unwrap());
        }
        ids
    });
    // Stop the relay once the burst is being acknowledged, while it is still being queued.
    wait_for(&mut a_events, "first ack", |e| {
        matches!(e, SyncEvent::PushAcked { .. })
    })
    .await;
    let mut relay = relay.stop_clean().await;
    wait_for(&mut a_events, "disconnect", |e| {
        matches!(e, SyncEvent::Disconnected { .. })
    })
    .await;
    let mut all = guard("burst", burst).await.unwrap();
    let left = a.status().outbox_len;
    // More pushes while the relay is down.
    for i in BURST..BURST + 100 {
        all.push(a.push_queued(format!("{i}").as_bytes()).await.unwrap());
    }

    // The same data dir, UDP address and flags.
    relay = tokio::task::spawn_blocking(move || {
        relay.restart().expect("relay restarts");
        relay
    })
    .await
    .unwrap();
    assert_eq!(
        relay.relay_addr(),
        dial,
        "identity and address survive restarts"
    );
    guard("flush after restart", a.flush(GUARD)).await.unwrap();
    let got = pull_until(&b, all.len()).await;
    let ids: Vec<BlobId> = got.iter().map(|b| b.blob_id).collect();
    assert_eq!(
        ids.len(),
        all.len(),
        "nothing pulled twice (queued at the stop: {left})"
    );
    let want: HashSet<BlobId> = all.iter().copied().collect();
    let have: HashSet<BlobId> = ids.iter().copied().collect();
    assert_eq!(have.len(), ids.len(), "no blob pulled twice");
    let missing = want.difference(&have).count();
    assert_eq!(missing, 0, "every pushed blob arrived");
    let seqs: Vec<usize> = got
        .iter()
        .map(|b| String::from_utf8_lossy(&b.data).parse().unwrap())
        .collect();
    let first_out_of_order = seqs.iter().enumerate().position(|(i, s)| *s != i);
    assert_eq!(
        first_out_of_order,
        None,
        "in push order: {:?}",
        first_out_of_order.map(|i| &seqs[i.saturating_sub(3)..(i + 5).min(seqs.len())])
    );
    close_all([a, b], relay).await;
}

/// A rate-limited burst: the relay defers pushes with a retry hint; they stay queued and all
/// land exactly once, in push order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_burst_lands_exactly_once() {
    let relay = start_relay(&["--session-push-rate", "200", "--session-push-burst", "50"]);
    let dial = relay.relay_addr();
    let g = group(11);
    let a = device(&dial, &g).await;
    let b = device(&dial, &g).await;
    let mut events = a.subscribe();
    let mut ids = HashSet::new();
    for i in 0..400u32 {
        ids.insert(a.push_queued(&i.to_be_bytes()).await.unwrap());
    }
    assert_eq!(ids.len(), 400);
    guard("flush", a.flush(GUARD)).await.unwrap();
    let mut deferred = 0;
    // Drain what is already buffered (a zero timeout still polls once).
    while let Ok(Some(e)) = tokio::time::timeout(Duration::ZERO, events.next()).await {
        if matches!(e, SyncEvent::PushDeferred { .. }) {
            deferred += 1;
        }
    }
    assert!(deferred > 0, "the burst exceeded the limit");
    let got = pull_until(&b, 400).await;
    // The relay refuses every push behind a rate-limited one until that one is sent again, so
    // deferred pushes never overtake each other: A's blobs arrive in push order.
    let seqs: Vec<u32> = got
        .iter()
        .map(|b| u32::from_be_bytes(b.data.as_slice().try_into().unwrap()))
        .collect();
    assert_eq!(
        seqs,
        (0..400).collect::<Vec<_>>(),
        "push order kept under rate limiting"
    );
    let got: HashSet<BlobId> = got.into_iter().map(|b| b.blob_id).collect();
    assert_eq!(got, ids);
    close_all([a, b], relay).await;
}
