//! Session protocol over real iroh QUIC on 127.0.0.1, relay in-process.

mod common;

use common::*;
use sync_types::{
    Bye, ContentRef, Cursor, DeviceId, ErrorCode, InviteGet, InvitePut, Message, PROTOCOL_VERSION,
    Payload,
};

#[tokio::test]
async fn hello_with_a_group_signature_gets_welcome() {
    let relay = TestRelay::start(|_| {}).await;
    let (c, welcome) = Client::open(&relay, &keys(1)).await;
    assert_eq!(welcome.relay_id, relay.handle.relay_id());
    assert_eq!(welcome.max_cursor, Cursor::ZERO);
    assert_eq!(welcome.limits.max_blob_bytes, 1 << 20);
    assert_eq!(welcome.limits.max_pull_count, 1000);
    assert_eq!(welcome.limits.idle_timeout_secs, 60);
    assert_eq!(welcome.request_id, 2, "Welcome echoes the Hello request id");
    relay.stop([c]).await;
}

#[tokio::test]
async fn a_client_that_cannot_sign_for_the_group_is_unauthorized() {
    let relay = TestRelay::start(|_| {}).await;
    let mut c = Client::connect(&relay).await;
    // Signed by group 2's key but claiming group 1.
    let mut hello = c.signed_hello(&keys(2), 7);
    hello.group_id = keys(1).group_id();
    c.tx.send(&hello.into()).await;
    let err = c.rx.expect_refusal(ErrorCode::Unauthorized).await;
    assert_eq!(err.request_id, Some(7));

    // A signature over another connection's binding is refused too (no replay).
    let mut c2 = Client::connect(&relay).await;
    let replayed = signed_hello(&keys(1), &c.binding, &c2.relay_id, &c2.device, 1);
    c2.tx.send(&replayed.into()).await;
    assert_eq!(c2.rx.next_error().await.code, ErrorCode::Unauthorized);
    assert_eq!(relay.rejections(ErrorCode::Unauthorized), 2);
    relay.stop([c, c2]).await;
}

#[tokio::test]
async fn wrong_version_and_non_hello_first_frames_are_refused() {
    let relay = TestRelay::start(|_| {}).await;
    let mut c = Client::connect(&relay).await;
    let mut hello = c.signed_hello(&keys(1), 3);
    hello.version = PROTOCOL_VERSION + 1;
    c.tx.send(&hello.into()).await;
    c.rx.expect_refusal(ErrorCode::BadVersion).await;

    let mut c2 = Client::connect(&relay).await;
    c2.tx.send(&pull_msg(1, 0, 10)).await;
    c2.rx.expect_refusal(ErrorCode::NotHelloFirst).await;
    relay.stop([c, c2]).await;
}

#[tokio::test]
async fn pushes_get_cursors_one_to_n_and_a_retry_gets_the_original_cursor() {
    let relay = TestRelay::start(|_| {}).await;
    let (mut c, _) = Client::open(&relay, &keys(1)).await;
    for n in 1..=5u64 {
        let ack = c
            .push_acked(blob(n), format!("sealed {n}").as_bytes())
            .await;
        assert_eq!(ack.cursor, Cursor::new(n));
        assert_eq!(ack.blob_id, blob(n));
        assert!(ack.server_time_ms > 0);
    }
    // Retry of blob 3 (same id): the original cursor, nothing new stored.
    let ack = c.push_acked(blob(3), b"sealed 3").await;
    assert_eq!(ack.cursor, Cursor::new(3));
    let m = relay.handle.metrics();
    assert_eq!(m.pushes_total.get(), 5);
    assert_eq!(m.push_duplicates_total.get(), 1);
    let stats = relay.handle.storage().audit().await.expect("audit");
    assert_eq!(stats.blobs, 5);
    // A new session learns the group's max cursor in Welcome.
    let (c2, welcome) = Client::open(&relay, &keys(1)).await;
    assert_eq!(welcome.max_cursor, Cursor::new(5));
    relay.stop([c, c2]).await;
}

#[tokio::test]
async fn the_other_session_gets_notify_then_pulls_the_bytes() {
    let relay = TestRelay::start(|_| {}).await;
    let (mut a, _) = Client::open(&relay, &keys(1)).await;
    let (mut b, _) = Client::open(&relay, &keys(1)).await;
    let (mut other_group, _) = Client::open(&relay, &keys(2)).await;
    let payload = b"ciphertext bytes".to_vec();
    a.push_acked(blob(42), &payload).await;

    let n = match b.rx.next().await.expect("notify") {
        Message::Notify(n) => n,
        other => panic!("expected Notify, got {other:?}"),
    };
    assert_eq!(n.cursor, Cursor::new(1));
    assert_eq!(n.blob_id, blob(42));
    assert_eq!(n.sender, a.device);
    assert_eq!(n.size, payload.len() as u32);

    match b.pull(0, 100).await {
        Message::PullResponse(r) => {
            assert_eq!(r.entries.len(), 1);
            assert!(!r.has_more);
            assert_eq!(r.max_cursor, Cursor::new(1));
            let e = &r.entries[0];
            assert_eq!(e.payload.as_slice(), &payload[..]);
            assert_eq!(e.sender, a.device);
            assert_eq!(e.cursor, Cursor::new(1));
        }
        other => panic!("expected PullResponse, got {other:?}"),
    }
    // The pusher gets no Notify of its own push; another group sees nothing.
    a.ping().await;
    other_group.ping().await;
    assert!(a.notifies.is_empty());
    assert!(other_group.notifies.is_empty());
    relay.stop([a, b, other_group]).await;
}

#[tokio::test]
async fn a_thousand_pipelined_pushes_get_cursors_in_send_order() {
    const N: u64 = 1000;
    let relay = TestRelay::start(|_| {}).await;
    let (c, _) = Client::open(&relay, &keys(1)).await;
    let Client { mut tx, mut rx, .. } = c;
    let writer = tokio::spawn(async move {
        for n in 0..N {
            tx.send(&push_msg(1000 + n, blob(n), &n.to_be_bytes()))
                .await;
        }
        tx
    });
    let mut cursors = vec![0u64; N as usize];
    for _ in 0..N {
        match rx.next().await.expect("ack") {
            Message::PushAck(ack) => {
                let i = (ack.request_id - 1000) as usize;
                assert_eq!(ack.blob_id, blob(i as u64));
                cursors[i] = ack.cursor.get();
            }
            other => panic!("expected PushAck, got {other:?}"),
        }
    }
    let expected: Vec<u64> = (1..=N).collect();
    assert_eq!(cursors, expected, "cursor i+1 for the i-th push sent");
    let mut tx = writer.await.expect("writer");
    tx.send(&Message::Bye(Bye { reason: None })).await;
    assert!(rx.until_end().await.is_empty());
    let w = relay.handle.storage().writer_metrics();
    assert!(w.ops >= N, "{w:?}");
    relay.handle.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn pull_is_clamped_by_count_and_bounded_by_bytes() {
    let relay = relay_with!(max_pull_count = 3, session_push_burst = 100).await;
    let (mut c, welcome) = Client::open(&relay, &keys(1)).await;
    let max = welcome.limits.max_blob_bytes as usize;
    // Mixed sizes, including maximum-size blobs.
    let sizes = [10, max, 1, max, max - 1, 100, 7, max, 3];
    for (n, size) in sizes.iter().enumerate() {
        c.push_acked(blob(n as u64), &vec![n as u8; *size]).await;
    }
    let mut after = 0u64;
    let mut got = Vec::new();
    loop {
        match c.pull(after, 1000).await {
            Message::PullResponse(r) => {
                assert!(!r.entries.is_empty() || !r.has_more);
                assert!(r.entries.len() <= 3, "clamped to max_pull_count");
                let payload_bytes: usize = r.entries.iter().map(|e| e.payload.len()).sum();
                assert!(
                    r.entries.len() == 1 || payload_bytes <= max,
                    "bounded by bytes: {payload_bytes}"
                );
                for e in &r.entries {
                    assert_eq!(e.cursor.get(), after + 1, "no gaps");
                    after = e.cursor.get();
                    got.push(e.payload.len());
                }
                if !r.has_more {
                    break;
                }
            }
            other => panic!("expected PullResponse, got {other:?}"),
        }
    }
    assert_eq!(got, sizes);
    relay.stop([c]).await;
}

/// A `ContentRef` for one chunk of one plaintext byte (17 sealed bytes).
fn one_chunk_content_ref(request_id: u64) -> Message {
    Message::ContentRef(ContentRef {
        request_id,
        blob_id: blob(2),
        hash: [0; 32],
        size: 17,
        chunk_size: 1,
        chunks: 1,
    })
}

#[tokio::test]
async fn content_refs_are_not_supported_with_the_content_store_off() {
    let relay = relay_with!(content_store = false).await;
    let (mut c, _) = Client::open(&relay, &keys(1)).await;
    let id = c.next_id();
    let reply = c.request(one_chunk_content_ref(id)).await;
    let err = expect_error(&reply);
    assert_eq!(err.code, ErrorCode::NotSupported);
    assert_eq!(err.request_id, Some(id));
    // The session stays open.
    c.ping().await;
    relay.stop([c]).await;
}

#[tokio::test]
async fn ping_delete_invites_and_unsupported_requests() {
    let relay = TestRelay::start(|_| {}).await;
    let (mut c, _) = Client::open(&relay, &keys(1)).await;
    c.ping().await;
    c.push_acked(blob(1), b"x").await;

    let reply = c.delete(blob(1)).await;
    assert!(matches!(reply, Message::DeleteAck(_)), "{reply:?}");
    let reply = c.delete(blob(1)).await;
    assert_eq!(expect_error(&reply).code, ErrorCode::NotFound);

    // ContentRef: a reservation in the content store (on by default), acknowledged.
    let id = c.next_id();
    let reply = c.request(one_chunk_content_ref(id)).await;
    match reply {
        Message::ContentAck(ack) => {
            assert_eq!(ack.request_id, id);
            assert_eq!(ack.blob_id, blob(2));
        }
        other => panic!("expected ContentAck, got {other:?}"),
    }
    c.ping().await;

    // A member leaves an invite; a device that is not in the group yet fetches it with a
    // one-shot InviteGet as its first frame, once.
    let id = c.next_id();
    let reply = c
        .request(Message::InvitePut(InvitePut {
            request_id: id,
            lookup_id: "ABCD2345".into(),
            sealed: Payload::copy_from_slice(b"sealed invite"),
            ttl_secs: 0,
        }))
        .await;
    assert!(matches!(reply, Message::InviteStored(_)), "{reply:?}");
    for round in 0..2 {
        let mut joiner = Client::connect(&relay).await;
        joiner
            .tx
            .send(&Message::InviteGet(InviteGet {
                request_id: 9,
                lookup_id: "ABCD2345".into(),
            }))
            .await;
        let reply = joiner.rx.next().await.expect("answer");
        if round == 0 {
            match reply {
                Message::InviteFound(f) => assert_eq!(f.sealed.as_slice(), b"sealed invite"),
                other => panic!("expected InviteFound, got {other:?}"),
            }
        } else {
            assert_eq!(expect_error(&reply).code, ErrorCode::NotFound, "single use");
        }
        assert!(joiner.rx.until_end().await.is_empty(), "one-shot");
        joiner.close().await;
    }
    relay.stop([c]).await;
}

#[tokio::test]
async fn in_memory_sessions_run_the_same_protocol() {
    let relay = relay_with!(max_sessions = 2).await;
    let k = keys(1);
    let mut sessions = Vec::new();
    for d in 1..=2u8 {
        let device = DeviceId::from_bytes([d; 32]);
        let s = relay
            .handle
            .connect_in_memory(device)
            .expect("memory session");
        let mut tx = FrameWriter::new(s.writer);
        let mut rx = FrameReader::new(s.reader);
        let hello = signed_hello(&k, &s.binding, &s.relay_id, &device, 1);
        tx.send(&hello.into()).await;
        assert!(matches!(rx.next().await, Some(Message::Welcome(_))));
        sessions.push((tx, rx));
    }
    // A third one is over the limit (a slot is taken only after a valid Hello).
    let third = DeviceId::from_bytes([3; 32]);
    let s = relay
        .handle
        .connect_in_memory(third)
        .expect("memory session");
    let mut tx3 = FrameWriter::new(s.writer);
    let hello = signed_hello(&k, &s.binding, &s.relay_id, &third, 1);
    tx3.send(&hello.into()).await;
    let err = FrameReader::new(s.reader).next_error().await;
    assert_eq!(err.code, ErrorCode::TooManySessions);
    assert!(err.retry_after_ms.is_some());

    let (tx1, _) = &mut sessions[0];
    tx1.send(&push_msg(5, blob(1), b"hi")).await;
    let (_, rx1) = &mut sessions[0];
    assert!(matches!(rx1.next().await, Some(Message::PushAck(_))));
    let (_, rx2) = &mut sessions[1];
    assert!(matches!(rx2.next().await, Some(Message::Notify(_))));
    relay.handle.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_stalled_reader_never_blocks_the_pusher_and_its_notifies_are_coalesced() {
    let relay = relay_with!(session_queue = 4, session_push_burst = 10_000).await;
    let k = keys(1);
    let (mut a, welcome) = Client::open(&relay, &k).await;
    let (b, _) = Client::open(&relay, &k).await;
    let big = vec![7u8; welcome.limits.max_blob_bytes as usize];
    let mut last = 0;
    for n in 0..4u64 {
        last = a.push_acked(blob(n), &big).await.cursor.get();
    }
    // B asks for far more than QUIC buffers (about 24 MiB of pull responses) and reads
    // nothing: its writer blocks, its queue fills.
    let Client {
        tx: mut b_tx,
        rx: mut b_rx,
        conn: b_conn,
        endpoint: b_endpoint,
        ..
    } = b;
    for i in 0..24u64 {
        b_tx.send(&pull_msg(500 + i, i % 4, 1)).await;
    }
    // A keeps pushing and every push is acknowledged while B is stalled, until the relay
    // reports that B's notifications are being coalesced.
    let mut n = 100u64;
    while relay.handle.metrics().notifies_coalesced_total.get() == 0 {
        assert!(n < 100_000, "B's queue never filled");
        last = a.push_acked(blob(n), b"small").await.cursor.get();
        n += 1;
    }
    for _ in 0..10 {
        last = a.push_acked(blob(n), b"small").await.cursor.get();
        n += 1;
    }
    // B reads again: all its pull responses arrive, and a Notify for the last cursor.
    let mut responses = 0;
    let mut highest = 0;
    while responses < 24 || highest < last {
        match b_rx.next().await.expect("frame") {
            Message::PullResponse(r) => {
                assert_eq!(r.entries.len(), 1);
                responses += 1;
            }
            Message::Notify(notify) => highest = highest.max(notify.cursor.get()),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(highest, last);
    b_conn.close(0u32.into(), b"done");
    b_endpoint.close().await;
    relay.stop([a]).await;
}
