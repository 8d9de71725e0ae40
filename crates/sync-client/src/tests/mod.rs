//! Client behaviour against the test kit's in-process relay, scripted per test (see
//! `fake_relay`); the same relay over real iroh is in `tests/hostile_relay.rs`.

mod delivery_props;
mod fake_relay;

use std::sync::Arc;
use std::time::Duration;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use sync_core::{BackoffConfig, ConnectionConfig, ConnectionStatus, SyncStatus};
use sync_crypto::{DeviceKey, GroupKeys, seal};
use sync_testkit::devices::group as material;
use sync_testkit::{GUARD, guard};
use sync_types::{BlobId, Cursor, ErrorCode, Limits, WireError};

use self::fake_relay::{FakeRelay, PullTrick};
use crate::IntegrityProblem;
use crate::{
    ClientConfig, ClientError, ClientOptions, GroupChoice, GroupMaterial, Receipt, Store,
    StoreLocation, StreamExt, SyncClient, SyncEvent,
};

fn fast_options() -> ClientOptions {
    ClientOptions {
        connection: ConnectionConfig {
            backoff: BackoffConfig {
                base: Duration::from_millis(5),
                cap: Duration::from_millis(20),
                max_jitter: Duration::from_millis(5),
            },
            connect_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(5),
            after_loss: Duration::from_millis(5),
        },
        ..ClientOptions::default()
    }
}

fn config(relay: &FakeRelay, store: StoreLocation, group: GroupChoice) -> ClientConfig {
    ClientConfig::new(store, Arc::new(fake_relay::transport(relay)), group)
        .with_options(fast_options())
}

/// A client of `relay` with its state in `store`, connected (or working offline).
async fn connect(relay: &FakeRelay, store: StoreLocation, group: GroupChoice) -> SyncClient {
    guard("connect", SyncClient::connect(config(relay, store, group)))
        .await
        .unwrap()
}

/// A client of `group` with its state in memory.
async fn client(relay: &FakeRelay, group: &GroupMaterial) -> SyncClient {
    connect(
        relay,
        StoreLocation::InMemory,
        GroupChoice::Use(group.clone()),
    )
    .await
}

/// A client of `group` with its state in memory and `fast_options` changed by `tune`.
async fn tuned_client(
    relay: &FakeRelay,
    group: &GroupMaterial,
    tune: impl FnOnce(&mut ClientOptions),
) -> SyncClient {
    let mut options = fast_options();
    tune(&mut options);
    let cfg = config(
        relay,
        StoreLocation::InMemory,
        GroupChoice::Use(group.clone()),
    );
    guard("connect", SyncClient::connect(cfg.with_options(options)))
        .await
        .unwrap()
}

/// Two clients of group 1 (devices A and B).
async fn two_clients(relay: &FakeRelay) -> (SyncClient, SyncClient) {
    let g = material(1);
    (client(relay, &g).await, client(relay, &g).await)
}

/// Another device of `group` that pushed the blobs `[0]`, `[1]`, … (`count` of them).
async fn pushed_by_another_device(
    relay: &FakeRelay,
    group: &GroupMaterial,
    count: u8,
) -> SyncClient {
    let other = client(relay, group).await;
    for i in 0..count {
        guard("push", other.push(&[i])).await.unwrap();
    }
    other
}

/// Takes the relay offline and cuts its sessions; returns once `events` reported it.
async fn cut_off(relay: &FakeRelay, events: &mut (impl crate::Stream<Item = SyncEvent> + Unpin)) {
    relay.set_online(false);
    relay.drop_sessions();
    wait_for(events, |e| matches!(e, SyncEvent::Disconnected { .. })).await;
}

async fn wait_for(
    events: &mut (impl crate::Stream<Item = SyncEvent> + Unpin),
    mut pred: impl FnMut(&SyncEvent) -> bool,
) -> SyncEvent {
    guard("an event", async {
        loop {
            let e = events.next().await.expect("event stream ended");
            if pred(&e) {
                return e;
            }
        }
    })
    .await
}

/// Opens the device whose store is `store` in group `g`, pulls (expecting `n` blobs) and closes
/// it: a device that had received everything so far.
async fn pull_and_close(relay: &FakeRelay, store: &StoreLocation, g: &GroupMaterial, n: usize) {
    let b = connect(relay, store.clone(), GroupChoice::Use(g.clone())).await;
    assert_eq!(guard("pull", b.pull()).await.unwrap().len(), n);
    b.close().await;
}

/// Device A has pushed to a fresh relay and device B, its store on disk, has pulled it all and
/// closed.
struct Pulled {
    relay: FakeRelay,
    g: GroupMaterial,
    /// Device A, still connected.
    a: SyncClient,
    /// A's receipts, one a push.
    pushed: Vec<Receipt>,
    /// B's store (in `_dir`).
    store: StoreLocation,
    _dir: tempfile::TempDir,
}

/// A pushes each of `blobs`, then B pulls them into a new store.
async fn pulled_by_b(blobs: &[&[u8]]) -> Pulled {
    let relay = FakeRelay::new();
    let g = material(1);
    let dir = tempfile::tempdir().unwrap();
    let store = StoreLocation::Dir(dir.path().join("b"));
    let a = client(&relay, &g).await;
    let mut pushed = Vec::new();
    for data in blobs {
        pushed.push(guard("push", a.push(data)).await.unwrap());
    }
    pull_and_close(&relay, &store, &g, blobs.len()).await;
    Pulled {
        relay,
        g,
        a,
        pushed,
        store,
        _dir: dir,
    }
}

/// A fresh relay and group, and device A connected to it.
async fn one_device() -> (FakeRelay, GroupMaterial, SyncClient) {
    let relay = FakeRelay::new();
    let g = material(1);
    let a = client(&relay, &g).await;
    (relay, g, a)
}

/// [`one_device`] after A pushed one one-byte blob `[i]` for each `i`.
async fn a_pushed(bytes: impl IntoIterator<Item = u8>) -> (FakeRelay, GroupMaterial, SyncClient) {
    let (relay, g, a) = one_device().await;
    for i in bytes {
        guard("push", a.push(&[i])).await.unwrap();
    }
    (relay, g, a)
}

/// A client's event stream, apart from the client.
type Events = Box<dyn crate::Stream<Item = SyncEvent> + Unpin>;

/// A client whose first push (`x`) the relay refuses with `refusal`: the client, its events
/// from before the push, and the push's error.
async fn first_push_refused(
    relay: &FakeRelay,
    refusal: WireError,
) -> (SyncClient, Events, ClientError) {
    let c = client(relay, &material(1)).await;
    let events: Events = Box::new(c.subscribe());
    relay.refuse_next_push(refusal);
    let err = guard("push", c.push(b"x")).await.unwrap_err();
    (c, events, err)
}

async fn wait_connected(c: &SyncClient) {
    let mut events = c.subscribe();
    if c.status().connection == ConnectionStatus::Connected {
        return;
    }
    wait_for(&mut events, |e| matches!(e, SyncEvent::Connected { .. })).await;
}

#[tokio::test]
async fn handshake_connects_sends_the_resume_cursor_and_keeps_the_name_local() {
    let relay = FakeRelay::new();
    let g = material(1);
    let cfg = config(&relay, StoreLocation::InMemory, GroupChoice::Use(g.clone()))
        .with_device_name("phone");
    let c = guard("connect", SyncClient::connect(cfg)).await.unwrap();
    let st = c.status();
    assert_eq!(st.connection, ConnectionStatus::Connected);
    assert_eq!(st.group_id, g.keys().group_id());
    let hellos = relay.hellos();
    assert_eq!(hellos.len(), 1);
    assert_eq!(hellos[0].0, c.device_id());
    assert_eq!(hellos[0].1, Cursor::ZERO);
    // The name stays on the device: it never travels to the relay.
    assert!(!hellos[0].2.is_empty());
    assert!(
        !hellos[0].2.windows(5).any(|w| w == b"phone"),
        "the device name is in the Hello"
    );
    c.close().await;
    guard("Bye", relay.wait_byes(1)).await; // close says Bye
    assert_eq!(c.status().connection, ConnectionStatus::Disconnected);
}

#[tokio::test]
async fn a_device_the_relay_refuses_gets_a_typed_error() {
    let relay = FakeRelay::new();
    relay.allow_only(GroupKeys::derive(&material(1).secret).group_id());
    let cfg = config(
        &relay,
        StoreLocation::InMemory,
        GroupChoice::Use(material(2)),
    );
    let err = guard("connect", SyncClient::connect(cfg))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Rejected {
                code: ErrorCode::Unauthorized,
                blob_id: None,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_busy_relay_is_retried_after_its_hint() {
    let relay = FakeRelay::new();
    relay.refuse_hello(WireError::new(ErrorCode::TooManySessions, "full").retry_after_ms(10));
    let c = client(&relay, &material(1)).await;
    // Not an error: the client works offline and retries.
    wait_connected(&c).await;
    assert_eq!(relay.hellos().len(), 2);
    guard("push", c.push(b"after the retry")).await.unwrap();
    c.close().await;
}

#[tokio::test]
async fn push_is_acknowledged_with_its_cursor() {
    let relay = FakeRelay::new();
    let c = client(&relay, &material(1)).await;
    let r1 = guard("push", c.push(b"one")).await.unwrap();
    let r2 = guard("push", c.push(b"two")).await.unwrap();
    assert_eq!((r1.cursor, r2.cursor), (Cursor::new(1), Cursor::new(2)));
    let stored = relay.blobs();
    assert_eq!(stored[0].blob_id, r1.blob_id);
    assert_eq!(stored[0].sender, c.device_id());
    // The relay holds ciphertext only.
    assert!(!stored[0].payload.windows(3).any(|w| w == b"one"));
    let st = c.status();
    assert_eq!(st.outbox_len, 0);
    assert_eq!(st.sync, SyncStatus::Synced);
    // Own pushes at 1, 2 with nothing missing: the resume cursor covers them.
    assert_eq!(st.resume_cursor, Cursor::new(2));
    c.close().await;
}

#[tokio::test]
async fn pipelined_pushes_all_land_once() {
    let relay = FakeRelay::new();
    let c = client(&relay, &material(1)).await;
    let mut tasks = Vec::new();
    for i in 0..500u32 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move { c.push(&i.to_be_bytes()).await }));
    }
    let mut cursors = Vec::new();
    for t in tasks {
        cursors.push(guard("pusher", t).await.unwrap().unwrap().cursor.get());
    }
    cursors.sort_unstable();
    assert_eq!(cursors, (1..=500).collect::<Vec<_>>());
    assert_eq!(relay.blobs().len(), 500);
    c.close().await;
}

#[tokio::test]
async fn permanent_refusal_is_rejected_never_queued() {
    let relay = FakeRelay::new();
    let (c, mut events, err) =
        first_push_refused(&relay, WireError::new(ErrorCode::BlobTooLarge, "too big")).await;
    let ClientError::Rejected {
        blob_id: Some(id),
        code: ErrorCode::BlobTooLarge,
        ..
    } = err
    else {
        panic!("{err:?}")
    };
    assert!(!err.is_queued());
    wait_for(
        &mut events,
        |e| matches!(e, SyncEvent::PushRejected { blob_id, .. } if *blob_id == id),
    )
    .await;
    assert_eq!(c.status().outbox_len, 0);
    assert_eq!(c.status().sync, SyncStatus::SyncFailed);
    // Later pushes still work; the refused one was never re-sent.
    guard("push", c.push(b"y")).await.unwrap();
    assert_eq!(relay.push_count(&id), 1);
    assert!(relay.blobs().iter().all(|b| b.blob_id != id));
    c.close().await;
}

#[tokio::test]
async fn an_absurd_retry_hint_is_clamped() {
    // A broken or hostile relay asks the device to wait u64::MAX ms: the push stays queued and
    // the wait is clamped to the device's own ceiling.
    let relay = FakeRelay::new();
    let refusal = WireError::new(ErrorCode::RateLimited, "wait forever").retry_after_ms(u64::MAX);
    let (c, _events, err) = first_push_refused(&relay, refusal).await;
    let ClientError::Deferred { retry_after, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*retry_after, Some(crate::driver::MAX_RETRY_HINT));
    assert!(err.is_queued());
    c.close().await;
}

#[tokio::test]
async fn rate_limited_push_stays_queued_and_lands_after_the_hint() {
    let relay = FakeRelay::new();
    let refusal = WireError::new(ErrorCode::RateLimited, "slow down").retry_after_ms(30);
    let (c, mut events, err) = first_push_refused(&relay, refusal).await;
    let ClientError::Deferred {
        blob_id,
        code: ErrorCode::RateLimited,
        retry_after,
        ..
    } = err
    else {
        panic!("{err:?}")
    };
    assert_eq!(retry_after, Some(Duration::from_millis(30)));
    assert!(err.is_queued());
    wait_for(
        &mut events,
        |e| matches!(e, SyncEvent::PushAcked { receipt } if receipt.blob_id == blob_id),
    )
    .await;
    assert_eq!(relay.push_count(&blob_id), 2, "refused once, accepted once");
    assert_eq!(relay.blobs().len(), 1);
    guard("flush", c.flush(GUARD)).await.unwrap();
    c.close().await;
}

#[tokio::test]
async fn oversized_push_is_refused_locally() {
    let relay = FakeRelay::new();
    relay.set_limits(Limits {
        max_blob_bytes: 1000,
        ..Limits::DEFAULT
    });
    let c = client(&relay, &material(1)).await;
    let err = guard("push", c.push(&[0u8; 2000])).await.unwrap_err();
    assert!(
        matches!(err, ClientError::TooLarge { max: 1000, .. }),
        "{err:?}"
    );
    assert!(!err.is_queued());
    assert_eq!(c.status().outbox_len, 0);
    assert!(relay.blobs().is_empty());
    c.close().await;
}

#[tokio::test]
async fn offline_push_is_durable_and_sent_exactly_once_on_connect() {
    let relay = FakeRelay::new();
    relay.set_online(false);
    let c = client(&relay, &material(1)).await;
    assert!(matches!(
        c.status().connection,
        ConnectionStatus::Reconnecting { .. }
    ));
    let mut events = c.subscribe();
    let queued = guard("push", c.push_queued(b"while offline"))
        .await
        .unwrap();
    let err = guard("push", c.push(b"also offline")).await.unwrap_err();
    let Some(second) = err.queued_blob_id() else {
        panic!("{err:?}")
    };
    assert!(matches!(err, ClientError::Offline { .. }));
    assert_eq!(c.status().outbox_len, 2);
    assert_eq!(c.status().sync, SyncStatus::Offline);
    assert!(matches!(c.pull().await, Err(ClientError::NotConnected)));

    relay.set_online(true);
    let mut acked = Vec::new();
    while acked.len() < 2 {
        if let SyncEvent::PushAcked { receipt } =
            wait_for(&mut events, |e| matches!(e, SyncEvent::PushAcked { .. })).await
        {
            acked.push(receipt);
        }
    }
    assert_eq!(acked[0].blob_id, queued, "sent in queue order");
    assert_eq!(acked[1].blob_id, second);
    assert_eq!(relay.push_count(&queued), 1);
    assert_eq!(relay.push_count(&second), 1);
    guard("flush", c.flush(GUARD)).await.unwrap();
    c.close().await;
}

#[tokio::test]
async fn restart_from_the_same_data_dir_resumes_cursor_and_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let relay = FakeRelay::new();
    let g = material(1);
    let other = pushed_by_another_device(&relay, &g, 5).await;

    let store = StoreLocation::Dir(dir.path().join("device"));
    let a = connect(&relay, store.clone(), GroupChoice::Use(g.clone())).await;
    let device = a.device_id();
    let got = guard("pull", a.pull()).await.unwrap();
    assert_eq!(got.len(), 5);
    assert_eq!(a.status().resume_cursor, Cursor::new(5));
    cut_off(&relay, &mut a.subscribe()).await;
    let pending = guard("push", a.push_queued(b"queued before the restart"))
        .await
        .unwrap();
    a.close().await;
    assert_eq!(relay.push_count(&pending), 0);

    // The store holds it.
    let s = Store::open_dir(&dir.path().join("device"), crate::StoreSync::Normal).unwrap();
    let gid = g.keys().group_id();
    assert_eq!(s.outbox(&gid).unwrap().len(), 1);
    drop(s);

    relay.set_online(true);
    let hellos_before = relay.hellos().len();
    let b = connect(&relay, store, GroupChoice::Stored(None)).await;
    assert_eq!(b.device_id(), device, "same device key");
    let hello = relay.hellos()[hellos_before].clone();
    assert_eq!(hello.1, Cursor::new(5), "Hello carries the stored cursor");
    guard("flush", b.flush(GUARD)).await.unwrap();
    assert_eq!(relay.push_count(&pending), 1);
    assert_eq!(relay.blobs().last().unwrap().blob_id, pending);
    assert!(
        guard("pull", b.pull()).await.unwrap().is_empty(),
        "nothing pulled twice"
    );
    b.close().await;
    other.close().await;
}

#[tokio::test]
async fn a_replayed_blob_is_reported_and_never_delivered_twice() {
    let (relay, g, a) = one_device().await;
    let first = guard("push", a.push(b"pay 10 to bob")).await.unwrap();
    let b = client(&relay, &g).await;
    let got = guard("pull", b.pull()).await.unwrap();
    assert_eq!(got.len(), 1);

    // The relay serves the same sealed blob again under a new cursor, then an honest blob.
    let again = relay.replay(&first.blob_id).expect("stored");
    assert_ne!(again, first.cursor);
    guard("push", a.push(b"fresh")).await.unwrap();
    let batch = guard("pull", b.pull_uncommitted()).await.unwrap();
    let data: Vec<&[u8]> = batch.blobs.iter().map(|b| b.data.as_slice()).collect();
    assert_eq!(data, vec![b"fresh".as_slice()], "the replay is not data");
    assert_eq!(
        batch.problems,
        vec![IntegrityProblem::Replayed {
            cursor: again,
            blob_id: first.blob_id,
            first_cursor: first.cursor,
        }]
    );
    guard("commit", b.commit_pull(&batch)).await.unwrap();
    assert!(guard("pull", b.pull()).await.unwrap().is_empty());
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn a_replay_is_caught_after_the_device_restarts() {
    let p = pulled_by_b(&[b"once"]).await;
    let first = &p.pushed[0];
    let again = p.relay.replay(&first.blob_id).expect("stored");
    let b = connect(&p.relay, p.store, GroupChoice::Stored(None)).await;
    let batch = guard("pull", b.pull_uncommitted()).await.unwrap();
    assert!(batch.blobs.is_empty());
    assert!(matches!(
        batch.problems.as_slice(),
        [IntegrityProblem::Replayed { cursor, first_cursor, .. }]
            if *cursor == again && *first_cursor == first.cursor
    ));
    p.a.close().await;
    b.close().await;
}

#[tokio::test]
async fn a_relay_restored_from_an_older_copy_skips_nothing_pushed_afterwards() {
    let p = pulled_by_b(&[b"1", b"2", b"3", b"4"]).await;
    // The relay is restored from a copy taken at cursor 2 (same store id); three blobs are
    // pushed afterwards: they get cursors 3, 4, 5, at or below B's resume cursor 4.
    p.relay.roll_back_to(Cursor::new(2));
    let a = client(&p.relay, &p.g).await;
    for text in [b"x", b"y", b"z"] {
        guard("push", a.push(text)).await.unwrap();
    }
    let b = connect(&p.relay, p.store.clone(), GroupChoice::Stored(None)).await;
    let got = guard("pull", b.pull()).await.unwrap();
    let data: Vec<&[u8]> = got.iter().map(|b| b.data.as_slice()).collect();
    assert_eq!(data, vec![b"x".as_slice(), b"y", b"z"], "nothing skipped");
    // The relay had grown past B's cursor (5 > 4): the blob B received at cursor 4 is not the
    // one the relay holds there, so B pulled again from 0; blobs 1 and 2 were not delivered
    // twice.
    assert_eq!(
        b.status().relay_rewound,
        Some((Cursor::new(4), Cursor::ZERO))
    );
    b.close().await;

    // Reported once: the next run finds the log where it left it.
    let b = connect(&p.relay, p.store, GroupChoice::Stored(None)).await;
    assert!(guard("pull", b.pull()).await.unwrap().is_empty());
    assert_eq!(b.status().relay_rewound, None);
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn a_relay_restored_behind_the_device_resumes_from_its_max() {
    let (relay, g, a) = a_pushed(*b"1234").await;
    let b = client(&relay, &g).await;
    let mut events = b.subscribe();
    assert_eq!(guard("pull", b.pull()).await.unwrap().len(), 4);
    // A is gone (it would push again what the relay lost: see the next test).
    a.close().await;
    // Restored from a copy taken at cursor 2; B reconnects to a relay at 2, behind its 4.
    relay.roll_back_to(Cursor::new(2));
    let e = wait_for(&mut events, |e| matches!(e, SyncEvent::RelayRewound { .. })).await;
    assert!(matches!(
        e,
        SyncEvent::RelayRewound { relay_max, resume_was, resume_from, fresh_log: false, .. }
            if relay_max == Cursor::new(2)
                && resume_was == Cursor::new(4)
                && resume_from == Cursor::new(2)
    ));
    assert_eq!(b.status().resume_cursor, Cursor::new(2));
    let a = client(&relay, &g).await;
    guard("push", a.push(b"after")).await.unwrap();
    let got = guard("pull", b.pull()).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].data, b"after");
    assert_eq!(
        got[0].cursor,
        Cursor::new(3),
        "at a cursor B had passed before"
    );
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn a_device_pushes_again_what_a_relay_restored_from_an_older_copy_lost() {
    let (relay, g, a) = a_pushed(*b"1234").await;
    let mut a_events = a.subscribe();
    let b = client(&relay, &g).await;
    assert_eq!(guard("pull", b.pull()).await.unwrap().len(), 4);
    let mut b_events = b.subscribe();
    // The relay comes back from a copy taken at cursor 2: "3" and "4" are gone, and another
    // device's push may take cursor 3 before A is back.
    relay.roll_back_to(Cursor::new(2));
    let c = client(&relay, &g).await;
    guard("push", c.push(b"x")).await.unwrap();
    // A finds the log behind it and checks from its cursor 2 (then it pushes again "3" and
    // "4"), or finds another blob at its cursor 3 if C was first (then it pulls from 0 and
    // pushes again all four; the relay keeps "1" and "2" where they are).
    let e = wait_for(&mut a_events, |e| {
        matches!(e, SyncEvent::RelayRewound { .. })
    })
    .await;
    let SyncEvent::RelayRewound { resent, .. } = e else {
        unreachable!()
    };
    assert!(
        resent == 2 || resent == 4,
        "A queues its lost pushes again: {e:?}"
    );
    for _ in 0..resent {
        wait_for(&mut a_events, |e| matches!(e, SyncEvent::PushAcked { .. })).await;
    }
    wait_for(&mut b_events, |e| matches!(e, SyncEvent::Connected { .. })).await;
    // B, which had everything, gets only what is new, and no false alarm for the blobs it had
    // that came back under other cursors.
    let batch = guard("pull", b.pull_uncommitted()).await.unwrap();
    let texts: Vec<&[u8]> = batch.blobs.iter().map(|b| b.data.as_slice()).collect();
    assert_eq!(texts, vec![b"x".as_slice()]);
    assert!(batch.problems.is_empty(), "{:?}", batch.problems);
    // A device that joins now finds the whole history, each blob once.
    let d = client(&relay, &g).await;
    let mut all: Vec<Vec<u8>> = guard("pull", d.pull())
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.data)
        .collect();
    all.sort();
    assert_eq!(
        all,
        vec![
            b"1".to_vec(),
            b"2".to_vec(),
            b"3".to_vec(),
            b"4".to_vec(),
            b"x".to_vec()
        ]
    );
    for client in [a, b, c, d] {
        client.close().await;
    }
}

#[tokio::test]
async fn a_relay_log_started_afresh_is_pulled_from_zero_without_repeats() {
    let p = pulled_by_b(&[b"before"]).await;
    let kept = &p.pushed[0];
    let stored = p
        .relay
        .blobs()
        .into_iter()
        .find(|s| s.blob_id == kept.blob_id)
        .unwrap();
    // A new database: the same relay identity, an empty log with a new store id. A new blob,
    // then the blob B already has comes again (as a device re-sending what the relay lost
    // would), at another cursor.
    p.relay.reset_store();
    let a = client(&p.relay, &p.g).await;
    guard("push", a.push(b"after")).await.unwrap();
    p.relay.insert_raw(
        stored.sender,
        kept.blob_id,
        stored.payload.as_slice().to_vec(),
    );
    let b = connect(&p.relay, p.store, GroupChoice::Stored(None)).await;
    let batch = guard("pull", b.pull_uncommitted()).await.unwrap();
    let data: Vec<&[u8]> = batch.blobs.iter().map(|b| b.data.as_slice()).collect();
    assert_eq!(
        data,
        vec![b"after".as_slice()],
        "new data once, old data not again"
    );
    // The log that held it is gone, so its coming back elsewhere is what recovery looks like,
    // not a replay.
    assert!(batch.problems.is_empty(), "{:?}", batch.problems);
    assert_eq!(
        b.status().relay_rewound,
        Some((Cursor::new(1), Cursor::ZERO))
    );
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn a_push_the_relay_dropped_without_a_hole_is_missing_from_its_sender() {
    let (relay, g, a) = one_device().await;
    let b = tuned_client(&relay, &g, |o| o.missing_grace = Duration::ZERO).await;
    guard("push", a.push(b"1")).await.unwrap();
    guard("push", a.push(b"2")).await.unwrap();
    // The relay acknowledges A's third push and drops it; the fourth takes its cursor.
    relay.swallow_next_pushes(1);
    let dropped = guard("push", a.push(b"3")).await.unwrap();
    let next = guard("push", a.push(b"4")).await.unwrap();
    assert_eq!(dropped.cursor, next.cursor, "no hole in the log");
    // One of A's blobs expired on the way (the relay says so): not a problem.
    guard("push", a.push(b"5")).await.unwrap();
    let expired = guard("push", a.push(b"6")).await.unwrap();
    guard("push", a.push(b"7")).await.unwrap();
    relay.expire(expired.cursor);
    let batch = guard("pull", b.pull_uncommitted()).await.unwrap();
    let data: Vec<&[u8]> = batch.blobs.iter().map(|b| b.data.as_slice()).collect();
    assert_eq!(data, vec![b"1".as_slice(), b"2", b"4", b"5", b"7"]);
    assert_eq!(
        batch.problems,
        vec![IntegrityProblem::MissingFromSender {
            sender: a.device_id(),
            from: 3,
            to: 3,
            noticed_at: next.cursor,
        }],
        "the cursors look whole; A's numbering does not"
    );
    guard("commit", b.commit_pull(&batch)).await.unwrap();
    // Reported once.
    guard("push", a.push(b"8")).await.unwrap();
    let later = guard("pull", b.pull_uncommitted()).await.unwrap();
    assert_eq!(later.blobs.len(), 1);
    assert!(later.problems.is_empty(), "{:?}", later.problems);
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn a_withheld_blob_is_reported_and_an_expired_one_is_not() {
    let (relay, g, a) = a_pushed(1..=8u8).await;
    relay.expire(Cursor::new(2));
    relay.withhold(Cursor::new(4));
    relay.withhold(Cursor::new(5));
    relay.expire(Cursor::new(8));
    let b = client(&relay, &g).await;
    let batch = guard("pull", b.pull_uncommitted()).await.unwrap();
    let got: Vec<u8> = batch.blobs.iter().map(|b| b.data[0]).collect();
    assert_eq!(got, vec![1, 3, 6, 7]);
    // The span holds one unexplained stretch of two cursors among two removals: reported with
    // its count over the span.
    assert_eq!(
        batch.problems,
        vec![IntegrityProblem::Withheld {
            from: Cursor::new(1),
            to: Cursor::new(8),
            count: 2,
        }]
    );
    // The cursor moves past them (the relay does not have them to give); nothing is repeated.
    guard("commit", b.commit_pull(&batch)).await.unwrap();
    assert_eq!(b.status().resume_cursor, Cursor::new(8));
    let again = guard("pull", b.pull_uncommitted()).await.unwrap();
    assert!(again.blobs.is_empty() && again.problems.is_empty());
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn withheld_cursors_are_reported_exactly_when_nothing_expired() {
    let (relay, g, a) = a_pushed(1..=6u8).await;
    relay.withhold(Cursor::new(2));
    relay.withhold(Cursor::new(5));
    relay.withhold(Cursor::new(6));
    let b = client(&relay, &g).await;
    let batch = guard("pull", b.pull_uncommitted()).await.unwrap();
    assert_eq!(batch.blobs.len(), 3);
    assert_eq!(
        batch.problems,
        vec![
            IntegrityProblem::Withheld {
                from: Cursor::new(2),
                to: Cursor::new(2),
                count: 1,
            },
            IntegrityProblem::Withheld {
                from: Cursor::new(5),
                to: Cursor::new(6),
                count: 2,
            },
        ]
    );
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn a_large_backlog_comes_in_bounded_batches_each_blob_once() {
    let relay = FakeRelay::new();
    relay.set_page_limit(2);
    let g = material(1);
    let a = client(&relay, &g).await;
    for i in 0..10u8 {
        guard("push", a.push(&vec![i; 100_000])).await.unwrap();
    }
    let b = tuned_client(&relay, &g, |o| o.pull_round_bytes = 250_000).await;
    let mut got = Vec::new();
    let mut batches = 0;
    loop {
        let batch = guard("pull", b.pull_uncommitted()).await.unwrap();
        batches += 1;
        let bytes: usize = batch.blobs.iter().map(|b| b.data.len()).sum();
        // The bound, plus at most the page that crossed it.
        assert!(bytes <= 250_000 + 2 * 100_000, "{bytes}");
        got.extend(batch.blobs.iter().map(|b| b.data[0]));
        guard("commit", b.commit_pull(&batch)).await.unwrap();
        if !batch.more {
            break;
        }
        assert!(batches < 10, "the batches end");
    }
    assert_eq!(
        got,
        (0..10).collect::<Vec<u8>>(),
        "each blob once, in order"
    );
    assert!(batches > 1, "{batches}");
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn a_frame_announcing_4_gib_ends_the_session_and_the_next_one_delivers() {
    let (relay, g, a) = a_pushed(0..3u8).await;
    let b = client(&relay, &g).await;
    let mut events = b.subscribe();
    relay.set_pull_trick(Some(PullTrick::HugeFrame));
    // Refused from its 4-byte header (above MAX_FRAME_LIMIT): nothing is reserved for it, the
    // session ends, the pull fails with a typed error.
    let first = guard("pull", b.pull()).await;
    assert!(matches!(first, Err(ClientError::NotConnected)), "{first:?}");
    wait_for(&mut events, |e| matches!(e, SyncEvent::Connected { .. })).await;
    let got = guard("pull", b.pull()).await.unwrap();
    let data: Vec<u8> = got.iter().map(|b| b.data[0]).collect();
    assert_eq!(
        data,
        vec![0, 1, 2],
        "the next session delivers everything once"
    );
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn endless_pages_end_a_pull_at_its_byte_bound() {
    let (relay, g, a) = one_device().await;
    guard("push", a.push(b"real")).await.unwrap();
    let b = tuned_client(&relay, &g, |o| o.pull_round_bytes = 10_000).await;
    // Every page says "more", forever, repeating the one real blob under new cursors.
    relay.set_pull_trick(Some(PullTrick::EndlessPages));
    let batch = guard("pull", b.pull_uncommitted()).await.unwrap();
    assert!(batch.more);
    assert_eq!(batch.blobs.len(), 1, "the real blob once");
    assert!(
        !batch.problems.is_empty() && batch.problems.len() < 100,
        "{} problems: the round stopped at its bound",
        batch.problems.len()
    );
    assert!(
        batch
            .problems
            .iter()
            .all(|p| matches!(p, IntegrityProblem::Replayed { .. }))
    );
    // Not committed; an honest relay again: the blob arrives once.
    relay.set_pull_trick(None);
    let got = guard("pull", b.pull_uncommitted()).await.unwrap();
    assert_eq!(got.blobs.len(), 1);
    assert_eq!(got.blobs[0].data, b"real");
    assert!(got.problems.is_empty() && !got.more);
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn tampered_blob_is_an_error_event_not_data() {
    let relay = FakeRelay::new();
    let g = material(1);
    let keys = GroupKeys::derive(&g.secret);
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let evil = DeviceKey::random(&mut rng);
    let key = keys.epoch_key(keys.current_epoch()).unwrap();
    let good_id = BlobId::random(&mut rng);
    let good = seal(
        &mut rng,
        &key,
        &keys.group_id(),
        &evil,
        &good_id,
        1,
        b"fine",
    )
    .unwrap();
    let bad_id = BlobId::random(&mut rng);
    let mut bad = seal(&mut rng, &key, &keys.group_id(), &evil, &bad_id, 2, b"evil").unwrap();
    bad[70] ^= 1; // inside the ciphertext
    relay.insert_raw(evil.device_id(), bad_id, bad);
    relay.insert_raw(evil.device_id(), good_id, good);

    let c = client(&relay, &g).await;
    let mut events = c.subscribe();
    let got = guard("pull", c.pull()).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].data, b"fine");
    assert_eq!(got[0].cursor, Cursor::new(2));
    let e = wait_for(&mut events, |e| matches!(e, SyncEvent::Integrity { .. })).await;
    assert!(
        matches!(e, SyncEvent::Integrity { problem: IntegrityProblem::Rejected { cursor, blob_id, .. } }
        if cursor == Cursor::new(1) && blob_id == bad_id)
    );
    // The bad blob's cursor counts as received: sync does not stall on it.
    assert_eq!(c.status().resume_cursor, Cursor::new(2));
    assert!(guard("pull", c.pull()).await.unwrap().is_empty());
    c.close().await;
}

#[tokio::test]
async fn subscribers_hear_about_other_devices_pushes() {
    let relay = FakeRelay::new();
    let (a, b) = two_clients(&relay).await;
    let mut events = b.subscribe();
    let r = guard("push", a.push(b"hello b")).await.unwrap();
    let e = wait_for(&mut events, |e| {
        matches!(e, SyncEvent::BlobsAvailable { .. })
    })
    .await;
    assert_eq!(
        e,
        SyncEvent::BlobsAvailable {
            cursor: r.cursor,
            sender: Some(a.device_id())
        }
    );
    let got = guard("pull", b.pull()).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].data, b"hello b");
    assert_eq!(got[0].sender, a.device_id());
    assert_eq!(got[0].blob_id, r.blob_id);
    wait_for(&mut events, |e| {
        matches!(e, SyncEvent::Received { count: 1, .. })
    })
    .await;
    a.close().await;
    b.close().await;
}

/// A device's own acknowledgements never move its pull cursor past other devices' blobs.
#[tokio::test]
async fn own_push_never_skips_an_earlier_blob_of_another_device() {
    let relay = FakeRelay::new();
    let (a, b) = two_clients(&relay).await;
    let x = guard("push", a.push(b"x")).await.unwrap();
    assert_eq!(x.cursor, Cursor::new(1));
    let y = guard("push", b.push(b"y")).await.unwrap();
    assert_eq!(y.cursor, Cursor::new(2));
    assert_eq!(
        b.status().resume_cursor,
        Cursor::ZERO,
        "B's own ack at 2 must not skip A's blob at 1"
    );
    let got = guard("pull", b.pull()).await.unwrap();
    assert_eq!(got.len(), 1, "B gets x, and not its own y back");
    assert_eq!(got[0].cursor, Cursor::new(1));
    assert_eq!(got[0].data, b"x");
    assert_eq!(got[0].blob_id, x.blob_id);
    assert_eq!(b.status().resume_cursor, Cursor::new(2));
    // A sees y.
    let got = guard("pull", a.pull()).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].blob_id, y.blob_id);
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn pulls_page_and_concurrent_pulls_never_duplicate() {
    let relay = FakeRelay::new();
    relay.set_page_limit(7);
    let (a, b) = two_clients(&relay).await;
    for i in 0..100u32 {
        guard("push", a.push_queued(&i.to_be_bytes()))
            .await
            .unwrap();
    }
    guard("flush", a.flush(GUARD)).await.unwrap();
    let (p1, p2, p3) = guard("pulls", async {
        tokio::join!(b.pull(), b.pull(), b.pull())
    })
    .await;
    let mut all: Vec<u64> = [p1.unwrap(), p2.unwrap(), p3.unwrap()]
        .into_iter()
        .flatten()
        .map(|blob| blob.cursor.get())
        .collect();
    all.sort_unstable();
    assert_eq!(all, (1..=100).collect::<Vec<_>>());
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn dropped_session_reconnects_and_resends_with_the_same_blob_ids() {
    let relay = FakeRelay::new();
    let c = client(&relay, &material(1)).await;
    let mut events = c.subscribe();
    cut_off(&relay, &mut events).await;
    let mut ids = Vec::new();
    for i in 0..50u32 {
        ids.push(
            guard("push", c.push_queued(&i.to_be_bytes()))
                .await
                .unwrap(),
        );
    }
    relay.set_online(true);
    wait_for(&mut events, |e| matches!(e, SyncEvent::Connected { .. })).await;
    guard("flush", c.flush(GUARD)).await.unwrap();
    let stored: Vec<BlobId> = relay.blobs().iter().map(|b| b.blob_id).collect();
    assert_eq!(stored, ids, "each exactly once, in push order");
    for id in &ids {
        assert_eq!(relay.push_count(id), 1);
    }
    assert!(relay.hellos().len() >= 2);
    wait_connected(&c).await;
    c.close().await;
}

#[tokio::test]
async fn a_silent_relay_is_detected_and_the_client_reconnects() {
    let relay = FakeRelay::new();
    let c = tuned_client(&relay, &material(1), |o| {
        o.ping_interval = Duration::from_millis(20);
    })
    .await;
    let mut events = c.subscribe();
    relay.set_mute(true);
    let e = wait_for(&mut events, |e| matches!(e, SyncEvent::Disconnected { .. })).await;
    assert!(matches!(e, SyncEvent::Disconnected { reason } if reason.contains("silent")));
    assert_ne!(c.status().connection, ConnectionStatus::Connected);
    relay.set_mute(false);
    wait_for(&mut events, |e| matches!(e, SyncEvent::Connected { .. })).await;
    guard("push", c.push(b"after the hang")).await.unwrap();
    c.close().await;
}

#[tokio::test]
async fn uncommitted_pull_moves_the_cursor_only_on_commit() {
    let dir = tempfile::tempdir().unwrap();
    let relay = FakeRelay::new();
    relay.set_page_limit(2);
    let g = material(1);
    let other = pushed_by_another_device(&relay, &g, 3).await;
    let store = StoreLocation::Dir(dir.path().join("device"));

    // Pulled but never committed (the app died before handing the blobs on): they come again,
    // after a restart too.
    let a = connect(&relay, store.clone(), GroupChoice::Use(g.clone())).await;
    let batch = guard("pull", a.pull_uncommitted()).await.unwrap();
    assert_eq!(batch.blobs.len(), 3);
    assert_eq!(batch.resume_cursor, Cursor::new(3), "what a commit gives");
    assert_eq!(a.status().resume_cursor, Cursor::ZERO, "nothing recorded");
    let again = guard("pull", a.pull_uncommitted()).await.unwrap();
    assert_eq!(again.blobs, batch.blobs);
    a.close().await;

    let hellos_before = relay.hellos().len();
    let a = connect(&relay, store.clone(), GroupChoice::Stored(None)).await;
    assert_eq!(relay.hellos()[hellos_before].1, Cursor::ZERO);
    let batch = guard("pull", a.pull_uncommitted()).await.unwrap();
    assert_eq!(batch.blobs.len(), 3, "not lost");
    // Committed: recorded and stored before commit_pull returns.
    assert_eq!(
        guard("commit", a.commit_pull(&batch)).await.unwrap(),
        Cursor::new(3)
    );
    assert_eq!(a.status().resume_cursor, Cursor::new(3));
    assert_eq!(
        guard("commit", a.commit_pull(&batch)).await.unwrap(),
        Cursor::new(3),
        "twice is harmless"
    );
    assert!(
        guard("pull", a.pull_uncommitted())
            .await
            .unwrap()
            .blobs
            .is_empty()
    );
    a.close().await;

    let hellos_before = relay.hellos().len();
    let a = connect(&relay, store, GroupChoice::Stored(None)).await;
    assert_eq!(relay.hellos()[hellos_before].1, Cursor::new(3), "persisted");
    assert!(guard("pull", a.pull()).await.unwrap().is_empty());
    a.close().await;
    other.close().await;
}
