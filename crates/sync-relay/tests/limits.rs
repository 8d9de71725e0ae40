//! Limits and hostile input over real iroh QUIC: every refusal is a typed Error frame, the
//! offending session ends, and everyone else keeps working.

mod common;

use std::time::Duration;

use common::*;
use sync_types::{Bye, ErrorCode, Message};

/// A session of group 1 that still works: push, and the other session sees the Notify.
async fn still_serving(a: &mut Client, b: &mut Client, n: u64) {
    a.push_acked(blob(n), b"still here").await;
    match b.rx.next().await {
        Some(Message::Notify(notify)) => assert_eq!(notify.blob_id, blob(n)),
        other => panic!("expected Notify, got {other:?}"),
    }
}

/// Two sessions of group 1 on `relay`, for [`still_serving`].
async fn two_sessions(relay: &TestRelay) -> (Client, Client) {
    let (a, _) = Client::open(relay, &keys(1)).await;
    let (b, _) = Client::open(relay, &keys(1)).await;
    (a, b)
}

#[tokio::test]
async fn session_limit_refuses_cleanly_and_existing_sessions_keep_working() {
    let relay = relay_with!(max_sessions = 2).await;
    let k = keys(1);
    let (mut a, mut b) = two_sessions(&relay).await;

    let mut c = Client::connect(&relay).await;
    let reply = c.hello(&k).await;
    let err = expect_error(&reply);
    assert_eq!(err.code, ErrorCode::TooManySessions);
    assert!(err.retry_after_ms.is_some_and(|ms| ms > 0));
    assert!(
        c.rx.until_end().await.is_empty(),
        "refused session is closed"
    );
    c.close().await;

    still_serving(&mut a, &mut b, 1).await;

    // A leaves; its slot is free once its stream has ended.
    a.tx.send(&Message::Bye(Bye { reason: None })).await;
    assert!(a.rx.until_end().await.is_empty());
    let (mut d, _) = Client::open(&relay, &k).await;
    still_serving(&mut d, &mut b, 2).await;
    assert_eq!(relay.rejections(ErrorCode::TooManySessions), 1);
    relay.stop([a, b, d]).await;
}

#[tokio::test]
async fn a_two_gib_frame_header_is_rejected_before_allocation() {
    let relay = TestRelay::start(|_| {}).await;
    let k = keys(1);
    let (mut a, mut b) = two_sessions(&relay).await;
    let (mut evil, _) = Client::open(&relay, &k).await;
    // 2 GiB announced, no body follows: the relay must answer from the header alone.
    evil.tx.raw(&0x8000_0000u32.to_be_bytes()).await;
    evil.rx.expect_refusal(ErrorCode::FrameTooLarge).await;

    // Before Hello, too.
    let mut evil2 = Client::connect(&relay).await;
    evil2.tx.raw(&u32::MAX.to_be_bytes()).await;
    evil2.rx.expect_refusal(ErrorCode::FrameTooLarge).await;

    still_serving(&mut a, &mut b, 1).await;
    relay.stop([a, b, evil, evil2]).await;
}

#[tokio::test]
async fn garbage_gets_a_typed_error_and_the_relay_keeps_serving() {
    let relay = TestRelay::start(|_| {}).await;
    let k = keys(1);
    let (mut a, mut b) = two_sessions(&relay).await;

    let cases: [(&[u8], ErrorCode); 4] = [
        // A frame of 8 bytes that are not MessagePack of a message.
        (
            &[0, 0, 0, 8, 0xff, 0xfe, 0xfd, 0xfc, 0xc1, 0xc1, 0xc1, 0xc1],
            ErrorCode::Malformed,
        ),
        // A well-formed envelope with an unknown type byte.
        (&[0, 0, 0, 3, 0x92, 0x66, 0x90], ErrorCode::UnknownType),
        // A zero-length frame.
        (&[0, 0, 0, 0], ErrorCode::Malformed),
        // A relay-to-client message sent by a client.
        (
            &[0, 0, 0, 4, 0x92, 0x21, 0x91, 0x05],
            ErrorCode::UnexpectedMessage,
        ),
    ];
    for (bytes, code) in cases {
        let (mut evil, _) = Client::open(&relay, &k).await;
        evil.tx.raw(bytes).await;
        assert_eq!(evil.rx.next_error().await.code, code, "for {bytes:02x?}");
        assert!(evil.rx.until_end().await.is_empty(), "session closed");
        evil.close().await;
    }
    // Garbage as the very first bytes of a connection.
    let mut evil = Client::connect(&relay).await;
    evil.tx.raw(b"GET / HTTP/1.1\r\n\r\n").await;
    assert_eq!(evil.rx.next_error().await.code, ErrorCode::FrameTooLarge);
    evil.close().await;

    still_serving(&mut a, &mut b, 1).await;
    let (mut fresh, _) = Client::open(&relay, &k).await;
    fresh.ping().await;
    relay.stop([a, b, fresh]).await;
}

#[tokio::test]
async fn hello_timeout_sends_a_typed_error() {
    let relay = relay_with!(hello_timeout = Duration::from_secs(2)).await;
    // Half a header: the stream exists but no Hello arrives.
    let mut slow = Client::connect(&relay).await;
    slow.tx.raw(&[0, 0]).await;
    slow.rx.expect_refusal(ErrorCode::HelloTimeout).await;
    slow.close().await;

    // A connection that never opens a stream is closed.
    let silent = Client::connect(&relay).await;
    let _ = guard("the relay to close the connection", silent.conn.closed()).await;
    silent.close().await;

    // Over in-memory pipes: same error.
    let s = relay
        .handle
        .connect_in_memory(sync_types::DeviceId::from_bytes([1; 32]))
        .expect("memory");
    FrameReader::new(s.reader)
        .expect_refusal(ErrorCode::HelloTimeout)
        .await;
    assert!(relay.rejections(ErrorCode::HelloTimeout) >= 3);
    relay.handle.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn idle_sessions_are_closed_with_a_typed_error() {
    let relay = relay_with!(idle_timeout = Duration::from_millis(500)).await;
    let (mut idle, welcome) = Client::open(&relay, &keys(1)).await;
    assert_eq!(
        welcome.limits.idle_timeout_secs, 0,
        "announced in whole seconds"
    );
    let err = idle.rx.expect_refusal(ErrorCode::IdleTimeout).await;
    assert_eq!(err.request_id, None);
    relay.stop([idle]).await;
}

#[tokio::test]
async fn rate_limited_pushes_get_a_retry_hint_and_are_not_stored() {
    let relay = relay_with!(session_push_rate = 1, session_push_burst = 2).await;
    let (c, _) = Client::open(&relay, &keys(1)).await;
    let Client { mut tx, mut rx, .. } = c;
    // Ten pipelined pushes: a bucket of 2 refilling at 1/s cannot take them all.
    for n in 0..10u64 {
        tx.send(&push_msg(100 + n, blob(n), b"x")).await;
    }
    let mut acked = 0;
    let mut limited = 0;
    for _ in 0..10 {
        match rx.next().await.expect("reply") {
            Message::PushAck(_) => acked += 1,
            Message::Error(e) => {
                assert_eq!(e.code, ErrorCode::RateLimited);
                assert!(e.request_id.is_some_and(|id| (100..110).contains(&id)));
                assert!(e.retry_after_ms.is_some_and(|ms| ms > 0), "{e:?}");
                limited += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(limited > 0, "the bucket refused some");
    assert_eq!(acked + limited, 10);
    let stats = relay.handle.storage().audit().await.expect("audit");
    assert_eq!(stats.blobs, acked, "refused pushes are not stored");
    assert_eq!(relay.rejections(ErrorCode::RateLimited), limited);
    relay.handle.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn group_quotas_and_blob_size_are_typed_refusals() {
    let relay = relay_with!(
        group_max_blobs = 3,
        group_max_bytes = 1000,
        max_blob_bytes = 600
    )
    .await;
    let (mut c, _) = Client::open(&relay, &keys(1)).await;
    for n in 0..3u64 {
        c.push_acked(blob(n), &[1; 10]).await;
    }
    let reply = c.push(blob(3), &[1; 10]).await;
    let err = expect_error(&reply);
    assert_eq!(err.code, ErrorCode::QuotaExceeded);
    assert!(
        err.retry_after_ms.is_some(),
        "quota refusals carry a retry hint"
    );

    // Bytes quota in another group.
    let (mut d, _) = Client::open(&relay, &keys(2)).await;
    d.push_acked(blob(0), &[1; 600]).await;
    let reply = d.push(blob(1), &[1; 500]).await;
    assert_eq!(expect_error(&reply).code, ErrorCode::QuotaExceeded);
    let reply = d.push(blob(2), &[1; 601]).await;
    assert_eq!(expect_error(&reply).code, ErrorCode::BlobTooLarge);
    // The session is still open after request-level refusals.
    d.ping().await;
    assert_eq!(relay.rejections(ErrorCode::QuotaExceeded), 2);
    relay.stop([c, d]).await;
}
