//! The data path under clients that misbehave, over real iroh QUIC on 127.0.0.1 (relay
//! in-process): notifications follow the commit even when the pusher vanishes, a reused blob id
//! is a typed conflict, and a device that stops reading is cut after the write-stall timeout.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use sync_relay::Storage;
use sync_types::{BlobId, Cursor, ErrorCode, GroupId, Message, Notify, PullResponse};
use tokio::sync::watch;

/// Polls `cond` until it holds (bounded by the guard): for relay-side states that no frame
/// announces, such as a session having ended on the relay.
async fn until(what: &str, cond: impl Fn() -> bool) {
    guard(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// Every blob id the relay stores for `group`, read from its storage.
async fn stored_ids(relay: &TestRelay, group: GroupId) -> HashSet<BlobId> {
    let mut ids = HashSet::new();
    let mut after = Cursor::ZERO;
    loop {
        let page = relay
            .handle
            .storage()
            .pull(group, after, 1000, u64::MAX)
            .await
            .expect("pull");
        for e in &page.entries {
            ids.insert(e.blob_id);
            after = e.cursor;
        }
        if !page.has_more {
            return ids;
        }
    }
}

/// A device that pulls only when told to: on each `Notify` above what it holds, it pulls
/// (page by page) and publishes every blob id it received.
fn watcher(
    mut b: Client,
) -> (
    watch::Receiver<HashSet<BlobId>>,
    tokio::task::JoinHandle<Client>,
) {
    let (seen_tx, seen) = watch::channel(HashSet::new());
    let task = tokio::spawn(async move {
        let mut have = 0u64;
        let mut announced = 0u64;
        let mut pulling = false;
        while let Some(msg) = b.rx.next().await {
            match msg {
                Message::Notify(Notify { cursor, .. }) => {
                    announced = announced.max(cursor.get());
                }
                Message::PullResponse(PullResponse {
                    entries, has_more, ..
                }) => {
                    pulling = false;
                    seen_tx.send_modify(|seen| {
                        for e in &entries {
                            seen.insert(e.blob_id);
                            have = have.max(e.cursor.get());
                        }
                    });
                    if has_more {
                        announced = announced.max(have + 1);
                    }
                }
                other => panic!("the watcher got {other:?}"),
            }
            if !pulling && announced > have {
                let id = b.next_id();
                b.tx.send(&pull_msg(id, have, 1000)).await;
                pulling = true;
            }
        }
        b
    });
    (seen, task)
}

/// A pushes 200 pipelined blobs and drops its connection at once, without reading an ack;
/// B, which pulls only on `Notify`, still receives every blob the relay committed, and
/// `pushes_total` rises by exactly the committed count. Eight rounds, the drop 0–10 ms after
/// the last frame is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_committed_push_is_announced_even_when_the_pusher_drops_at_once() {
    const ROUNDS: u64 = 8;
    const PUSHES: u64 = 200;
    let relay = relay_with!(session_push_rate = 0, global_push_rate = 0).await;
    let k = keys(1);
    let group = k.group_id();
    let (b, _) = Client::open(&relay, &k).await;
    let (mut seen, watcher) = watcher(b);
    let metrics = relay.handle.metrics();
    let mut committed_total = 0usize;
    for round in 0..ROUNDS {
        let pushes_before = metrics.pushes_total.get();
        let (mut a, _) = Client::open(&relay, &k).await;
        assert_eq!(metrics.sessions.get(), 2);
        for i in 0..PUSHES {
            let id = a.next_id();
            let n = round * 1000 + i;
            // 4 KiB each: the connection drops while some of them are still on the way.
            a.tx.send(&push_msg(id, blob(n), &[n as u8; 4096])).await;
        }
        tokio::time::sleep(Duration::from_millis(round * 10 / (ROUNDS - 1))).await;
        a.close().await;

        // Once A's session has ended on the relay, all of its pushes that were read are queued
        // to storage; a write queued after them (a delete of nothing) returns once they are
        // committed, and their notifications are on the way.
        until("A's session to end", || metrics.sessions.get() == 1).await;
        let barrier = relay
            .handle
            .storage()
            .delete(keys(99).group_id(), blob(0), 0)
            .await;
        assert!(!barrier.expect("barrier write"));

        let committed = stored_ids(&relay, group).await;
        let new = committed.len() - committed_total;
        committed_total = committed.len();
        let started = Instant::now();
        let received = guard(
            "B to receive every committed blob",
            seen.wait_for(|seen| *seen == committed),
        )
        .await
        .expect("watcher running")
        .len();
        assert_eq!(received, committed_total);
        assert_eq!(
            metrics.pushes_total.get() - pushes_before,
            new as u64,
            "pushes_total counts every committed push, once"
        );
        println!(
            "round {round}: {new} of {PUSHES} pushes committed, all announced to B within {:?}",
            started.elapsed()
        );
    }
    assert!(committed_total > 0, "some pushes were committed");
    watcher.abort();
    relay.handle.shutdown().await.expect("shutdown");
}

/// The same blob id with other bytes is refused with `Conflict`, while the blob is stored and
/// after it was deleted; a retry with the same bytes after the delete is answered with the
/// original cursor and stores nothing.
#[tokio::test]
async fn a_reused_blob_id_is_a_typed_conflict_and_a_retry_after_delete_a_duplicate() {
    let relay = TestRelay::start(|_| {}).await;
    let (mut c, _) = Client::open(&relay, &keys(1)).await;
    let (mut other, _) = Client::open(&relay, &keys(1)).await;
    assert_eq!(
        c.push_acked(blob(1), b"sealed one").await.cursor,
        Cursor::new(1)
    );
    let reply = c.push(blob(1), b"other bytes").await;
    let err = expect_error(&reply);
    assert_eq!(err.code, ErrorCode::Conflict);
    assert!(err.request_id.is_some());

    assert!(matches!(c.delete(blob(1)).await, Message::DeleteAck(_)));
    let retry = c.push_acked(blob(1), b"sealed one").await;
    assert_eq!(retry.cursor, Cursor::new(1), "the original cursor");
    let reply = c.push(blob(1), b"other bytes").await;
    assert_eq!(expect_error(&reply).code, ErrorCode::Conflict);
    c.ping().await;

    // One notification (the first push); nothing stored after the delete.
    match other.rx.next().await {
        Some(Message::Notify(n)) => assert_eq!(n.cursor, Cursor::new(1)),
        got => panic!("expected Notify, got {got:?}"),
    }
    other.ping().await;
    assert!(other.notifies.is_empty(), "{:?}", other.notifies);
    let m = relay.handle.metrics();
    assert_eq!(m.pushes_total.get(), 1);
    assert_eq!(m.push_duplicates_total.get(), 1);
    assert_eq!(relay.rejections(ErrorCode::Conflict), 2);
    assert_eq!(
        relay.handle.storage().audit().await.expect("audit").blobs,
        0
    );
    relay.stop([c, other]).await;
}

/// A device that pipelines pulls of a 1 MiB blob and reads nothing is cut after the write-stall
/// timeout: its connection is closed with the write-stall code, the stall is counted, and the
/// other devices of the group keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_stops_reading_is_cut_after_the_write_stall_timeout() {
    let relay = relay_with!(write_stall_timeout = Duration::from_secs(2)).await;
    let k = keys(1);
    let (mut a, welcome) = Client::open(&relay, &k).await;
    let big = vec![7u8; welcome.limits.max_blob_bytes as usize];
    a.push_acked(blob(1), &big).await;
    let (mut stalled, _) = Client::open(&relay, &k).await;
    for i in 0..64 {
        stalled.tx.send(&pull_msg(1000 + i, 0, 1)).await;
    }
    let started = Instant::now();
    let closed = guard(
        "the relay to cut the stalled session",
        stalled.conn.closed(),
    )
    .await;
    let text = format!("{closed:?}");
    assert!(text.contains("write stalled"), "{text}");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "not before the timeout"
    );
    assert_eq!(relay.handle.metrics().write_stalls_total.get(), 1);
    until("the stalled session to end", || {
        relay.handle.metrics().sessions.get() == 1
    })
    .await;
    a.push_acked(blob(2), b"still here").await;
    relay.stop([a, stalled]).await;
}
