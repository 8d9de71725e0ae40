//! A malicious relay (the test kit's `HostileRelay`) speaking the real wire protocol over real
//! iroh on 127.0.0.1 (QUIC, TLS, the Hello bound to the connection), against devices built from
//! the public API only: it damages, replays and withholds blobs, rolls its log back and grows it
//! again, announces a 4 GiB frame, serves endless pages and asks for an endless wait. Each trick
//! is a typed problem or error, never garbage data, and an honest session afterwards delivers
//! everything once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use iroh::SecretKey;
use sync_client::{
    ClientConfig, ClientError, ClientOptions, GroupChoice, IntegrityProblem, IrohConfig,
    IrohTransport, StoreLocation, Stream, StreamExt, SyncClient, SyncEvent, self_hosted_endpoint,
};
use sync_core::MAX_RETRY_HINT;
use sync_testkit::devices::group as material;
use sync_testkit::guard;
use sync_testkit::hostile_relay::{HostileRelay, PullTrick};
use sync_types::{Cursor, ErrorCode, WireError};

/// A device with its store in memory and the test options, in group `g`.
async fn in_memory_device(relay: &IrohConfig, g: &sync_client::GroupMaterial) -> SyncClient {
    device(
        relay,
        StoreLocation::InMemory,
        GroupChoice::Use(g.clone()),
        ClientOptions::for_tests(),
    )
    .await
}

/// A hostile relay (honest until told otherwise) behind its own iroh endpoint on 127.0.0.1, with
/// the configuration that dials it.
async fn hostile_relay(key: u8) -> (HostileRelay, IrohConfig, iroh::Endpoint) {
    let (relay, addr, endpoint) = HostileRelay::new()
        .over_iroh(self_hosted_endpoint(SecretKey::from_bytes(&[key; 32])))
        .await
        .expect("relay endpoint");
    let transport = IrohConfig::new(relay.relay_id(), vec![addr])
        .with_bind_addr(SocketAddr::from(([127, 0, 0, 1], 0)));
    (relay, transport, endpoint)
}

/// The next event matching `pred` (bounded).
async fn wait_for(
    events: &mut (impl Stream<Item = SyncEvent> + Unpin),
    mut pred: impl FnMut(&SyncEvent) -> bool,
) -> SyncEvent {
    guard("event", async {
        while let Some(e) = events.next().await {
            if pred(&e) {
                return e;
            }
        }
        panic!("event stream ended");
    })
    .await
}

/// A device with its own iroh endpoint, dialling the relay of `relay`.
async fn device(
    relay: &IrohConfig,
    store: StoreLocation,
    group: GroupChoice,
    options: ClientOptions,
) -> SyncClient {
    let transport = Arc::new(IrohTransport::new(relay.clone()));
    let config = ClientConfig::new(store, transport, group).with_options(options);
    guard("connect", SyncClient::connect(config))
        .await
        .expect("connect")
}

#[tokio::test]
async fn every_trick_of_a_malicious_relay_over_iroh_is_caught() {
    let (relay, transport, endpoint) = hostile_relay(0x5e).await;
    let g = material(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let b_store = StoreLocation::Dir(dir.path().join("b"));
    let a = in_memory_device(&transport, &g).await;
    let b = device(
        &transport,
        b_store.clone(),
        GroupChoice::Use(g.clone()),
        ClientOptions::for_tests(),
    )
    .await;
    let mut events = b.subscribe();
    for i in 1..=6u8 {
        guard("push", a.push(&[i])).await.expect("push");
    }
    assert_eq!(guard("pull", b.pull()).await.expect("pull").len(), 6);

    // Damage, replay, withhold: only the honest blob is data; each trick is named.
    for i in 7..=9u8 {
        guard("push", a.push(&[i])).await.expect("push");
    }
    assert!(relay.tamper(Cursor::new(7)));
    relay.withhold(Cursor::new(8));
    let first = relay.blobs()[0].blob_id;
    let replayed_at = relay.replay(&first).expect("stored");
    let batch = guard("pull", b.pull_uncommitted()).await.expect("pull");
    let data: Vec<u8> = batch.blobs.iter().map(|b| b.data[0]).collect();
    assert_eq!(data, vec![9]);
    assert!(
        matches!(
            batch.problems.as_slice(),
            [
                IntegrityProblem::Rejected { cursor: c7, .. },
                IntegrityProblem::Withheld { from, to, count: 1 },
                IntegrityProblem::Replayed { cursor: c10, first_cursor, .. },
            ] if c7.get() == 7 && from.get() == 8 && to.get() == 8
                && *c10 == replayed_at && first_cursor.get() == 1
        ),
        "{:?}",
        batch.problems
    );
    guard("commit", b.commit_pull(&batch))
        .await
        .expect("commit");

    // An endless wait is clamped.
    relay.refuse_next_push(
        WireError::new(ErrorCode::RateLimited, "forever").retry_after_ms(u64::MAX),
    );
    let deferred = guard("push", b.push(b"own")).await.expect_err("deferred");
    assert!(
        matches!(&deferred, ClientError::Deferred { retry_after: Some(w), .. }
            if *w == MAX_RETRY_HINT),
        "{deferred:?}"
    );

    // A 4 GiB frame ends the session (refused from its header); the device reconnects.
    relay.set_pull_trick(Some(PullTrick::HugeFrame));
    assert!(matches!(
        guard("pull", b.pull()).await,
        Err(ClientError::NotConnected)
    ));
    wait_for(&mut events, |e| matches!(e, SyncEvent::Connected { .. })).await;
    assert!(guard("pull", b.pull()).await.expect("pull").is_empty());

    // Endless pages end at the round's byte bound.
    let mut bounded = ClientOptions::for_tests();
    bounded.pull_round_bytes = 10_000;
    let c = device(
        &transport,
        StoreLocation::InMemory,
        GroupChoice::Use(g.clone()),
        bounded,
    )
    .await;
    relay.set_pull_trick(Some(PullTrick::EndlessPages));
    let endless = guard("pull", c.pull_uncommitted()).await.expect("pull");
    assert!(endless.more && endless.blobs.len() == 1 && endless.problems.len() < 100);
    relay.set_pull_trick(None);
    c.close().await;

    // The relay is restored from a copy taken at cursor 6 and grows again by three blobs, to
    // a max below B's resume cursor: B checks a blob it has against the log, resumes from it,
    // and gets the three new blobs once.
    b.close().await;
    a.close().await;
    relay.roll_back_to(Cursor::new(6));
    let a = in_memory_device(&transport, &g).await;
    for i in 20..=22u8 {
        guard("push", a.push(&[i])).await.expect("push");
    }
    let b = device(
        &transport,
        b_store,
        GroupChoice::Stored(None),
        ClientOptions::for_tests(),
    )
    .await;
    let got: Vec<u8> = guard("pull", b.pull())
        .await
        .expect("pull")
        .iter()
        .map(|b| b.data[0])
        .collect();
    assert_eq!(got, vec![20, 21, 22], "nothing skipped, nothing twice");
    assert!(b.status().relay_rewound.is_some());
    a.close().await;
    b.close().await;
    endpoint.close().await;
}

#[tokio::test]
async fn a_push_acknowledged_and_dropped_without_a_trace_is_missing_from_its_sender() {
    let (relay, transport, endpoint) = hostile_relay(0x5f).await;
    let g = material(2);
    let a = in_memory_device(&transport, &g).await;
    let mut watchful = ClientOptions::for_tests();
    watchful.missing_grace = Duration::ZERO;
    let b = device(
        &transport,
        StoreLocation::InMemory,
        GroupChoice::Use(g.clone()),
        watchful,
    )
    .await;
    guard("push", a.push(b"one")).await.expect("push");
    relay.swallow_next_pushes(2);
    for text in [b"two".as_slice(), b"three", b"four"] {
        guard("push", a.push(text)).await.expect("push");
    }
    let batch = guard("pull", b.pull_uncommitted()).await.expect("pull");
    let data: Vec<&[u8]> = batch.blobs.iter().map(|b| b.data.as_slice()).collect();
    assert_eq!(data, vec![b"one".as_slice(), b"four"]);
    assert!(
        matches!(
            batch.problems.as_slice(),
            [IntegrityProblem::MissingFromSender { sender, from: 2, to: 3, .. }]
                if *sender == a.device_id()
        ),
        "{:?}",
        batch.problems
    );
    a.close().await;
    b.close().await;
    endpoint.close().await;
}
