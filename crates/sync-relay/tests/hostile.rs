//! Strangers on the relay's UDP port, against the real relay binary (RelayProcess) or an
//! in-process relay over real iroh on loopback: silent connections, stream floods and garbage
//! before the Hello. The relay stays up, frees what they held, and real devices keep working.
//! Waits are on events, bounded by the test kit's guard.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use iroh::EndpointId;
use iroh::endpoint::{Connection, Endpoint};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use sync_relay::Refusal;
use sync_testkit::RelayProcess;
use sync_types::{ErrorCode, Message};
use tokio::task::JoinSet;

/// Where a relay process is reached: its id, its UDP address, its HTTP address.
fn dial(relay: &RelayProcess) -> (EndpointId, SocketAddr, SocketAddr) {
    let id = EndpointId::from_bytes(relay.id().as_bytes()).expect("relay id");
    (id, relay.addrs()[0], relay.http_addr())
}

/// The relay process's resident memory, in MiB.
fn rss_mib(relay: &RelayProcess) -> f64 {
    let pid = relay.pid().expect("running");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib / 1024.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_hold_no_session_slot_and_are_closed_by_the_deadline() {
    let relay = RelayProcess::builder()
        .args(["--max-sessions", "20", "--hello-timeout", "6s"])
        .start()
        .expect("relay starts");
    let (id, addr, http) = dial(&relay);
    let baseline = metric(http, "sessions").await;
    let rss_before = rss_mib(&relay);

    // 20 connections that open no stream, 20 that open one and send half a frame header.
    let mut silent: Vec<(Endpoint, Connection)> = Vec::new();
    for _ in 0..20 {
        silent.push(quic_connect(id, addr).await);
    }
    let mut half_hello = Vec::new();
    for _ in 0..20 {
        let mut c = Client::connect_to(id, addr).await;
        c.tx.raw(&[0, 0]).await;
        half_hello.push(c);
    }
    let waiting = metric(http, "pre_auth_connections").await;
    let rss_waiting = rss_mib(&relay);

    // More connections wait for their Hello than there are session slots, and a real device
    // is admitted and its push acknowledged.
    assert!(waiting > 20.0, "{waiting} connections waiting");
    let (mut device, _) = Client::open_at(id, addr, &keys(1)).await;
    device.push_acked(blob(1), b"a real device").await;

    // The deadline closes every silent one; the half-frame ones get a typed error first.
    for (endpoint, conn) in silent {
        guard("the deadline to close a silent connection", conn.closed()).await;
        endpoint.close().await;
    }
    for mut c in half_hello {
        let err = c.rx.expect_refusal(ErrorCode::HelloTimeout).await;
        assert_eq!(err.request_id, None);
        c.close().await;
    }
    device.leave().await;
    let sessions = metric(http, "sessions").await;
    let deadline = metric(
        http,
        "admission_refusals_total{reason=\"pre_auth_deadline\"}",
    )
    .await;
    let full = metric(http, "admission_refusals_total{reason=\"sessions_full\"}").await;
    let after = metric(http, "pre_auth_connections").await;
    println!(
        "silent: {waiting} connections waiting for a Hello while the device got in \
         (relay RSS {rss_before:.1} → {rss_waiting:.1} MiB); deadline refusals {deadline}, \
         session-full refusals {full}; sessions {baseline} → {sessions}, waiting afterwards \
         {after}"
    );
    assert_eq!(sessions, baseline);
    assert_eq!(deadline, 40.0);
    assert_eq!(full, 0.0);
    assert_eq!(after, 0.0);
}

/// One flooder: a session of its own group, then 100 extra bidirectional and 100
/// unidirectional streams it tries to open and fill with 1.2 MB each. Returns the streams
/// the relay let it open.
async fn flood(id: EndpointId, addr: SocketAddr, group: u8) -> (Client, usize) {
    const EXTRA: usize = 100;
    const FILL: usize = 1_200_000;
    let mut c = Client::connect_to(id, addr).await;
    assert!(matches!(c.hello(&keys(group)).await, Message::Welcome(_)));
    let mut tries = JoinSet::new();
    for n in 0..2 * EXTRA {
        let conn = c.conn.clone();
        tries.spawn(async move {
            let wait = Duration::from_millis(500);
            let fill = || vec![0xa5u8; FILL];
            if n % 2 == 0 {
                let Ok(Ok((mut send, _recv))) = tokio::time::timeout(wait, conn.open_bi()).await
                else {
                    return false;
                };
                // Announced only when data is sent; the relay never accepts a second stream.
                let _ = tokio::time::timeout(wait, send.write_all(&fill())).await;
                true
            } else {
                let Ok(Ok(mut send)) = tokio::time::timeout(wait, conn.open_uni()).await else {
                    return false;
                };
                let _ = tokio::time::timeout(wait, send.write_all(&fill())).await;
                true
            }
        });
    }
    let opened = tries.join_all().await.into_iter().filter(|o| *o).count();
    (c, opened)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_floods_are_bounded_by_the_transport_limits() {
    let relay = RelayProcess::start();
    let (id, addr, http) = dial(&relay);
    let (mut device, _) = Client::open_at(id, addr, &keys(1)).await;
    device.push_acked(blob(0), b"warm-up").await;
    let baseline = rss_mib(&relay);

    let mut flooders = JoinSet::new();
    for n in 0..10u8 {
        flooders.spawn(flood(id, addr, 100 + n));
    }
    let mut peak = rss_mib(&relay);
    let mut pushed = 0;
    let mut held = Vec::new();
    while let Some(done) = flooders.join_next().await {
        let (c, opened) = done.expect("flooder");
        // The device pushes meanwhile, and /health answers.
        pushed += 1;
        device.push_acked(blob(pushed), b"still served").await;
        assert_eq!(http_get(http, "/health").await.0, 200);
        peak = peak.max(rss_mib(&relay));
        held.push((c, opened));
    }
    let opened: usize = held.iter().map(|(_, o)| o).sum();
    peak = peak.max(rss_mib(&relay));
    for (c, _) in held {
        c.leave().await;
    }
    assert_eq!(metric(http, "sessions").await, 1.0, "the device's alone");
    device.ping().await;
    let after = rss_mib(&relay);
    println!(
        "flood: 10 connections × 200 extra streams, {opened} opened; relay RSS {baseline:.1} MiB \
         → peak {peak:.1} MiB → {after:.1} MiB after; {pushed} pushes acknowledged meanwhile"
    );
    assert_eq!(opened, 0, "the relay allows the session's stream only");
    assert!(
        peak - baseline < 64.0,
        "peak {peak:.1} MiB from {baseline:.1}"
    );
    assert!(
        after - baseline < 32.0,
        "after {after:.1} MiB from {baseline:.1}"
    );
    device.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_before_hello_is_refused_and_others_are_unaffected() {
    let relay = relay_with!(hello_timeout = Duration::from_secs(2)).await;
    let k = keys(1);
    let (mut a, _) = Client::open(&relay, &k).await;
    let (mut b, _) = Client::open(&relay, &k).await;
    let mut rng = ChaCha20Rng::seed_from_u64(3);

    // Random bytes: whatever their first four bytes announce, a typed error.
    for _ in 0..5 {
        let mut bytes = vec![0u8; 1000];
        rng.fill_bytes(&mut bytes);
        let mut evil = Client::connect(&relay).await;
        evil.tx.raw(&bytes).await;
        let err = evil.rx.next_error().await;
        assert!(
            matches!(
                err.code,
                ErrorCode::FrameTooLarge | ErrorCode::Malformed | ErrorCode::UnknownType
            ),
            "{err:?}"
        );
        assert!(evil.rx.until_end().await.is_empty());
        evil.close().await;
    }

    // A length prefix of 0xFFFFFFF0, and a first frame above 16 KiB (well below the frame
    // limit of a session): refused from the header alone.
    for header in [0xFFFF_FFF0u32, 100_000] {
        let mut evil = Client::connect(&relay).await;
        evil.tx.raw(&header.to_be_bytes()).await;
        evil.rx.expect_refusal(ErrorCode::FrameTooLarge).await;
        evil.close().await;
    }

    // A truncated frame, then silence: the deadline.
    let mut slow = Client::connect(&relay).await;
    slow.tx.raw(&[0, 0, 0, 100, 0x92, 0x01]).await;
    slow.rx.expect_refusal(ErrorCode::HelloTimeout).await;
    slow.close().await;

    // A Hello with a bad signature.
    let mut forger = Client::connect(&relay).await;
    let mut hello = forger.signed_hello(&k, 7);
    hello.auth_signature[10] ^= 1;
    forger.tx.send(&Message::Hello(hello)).await;
    let err = forger.rx.expect_refusal(ErrorCode::Unauthorized).await;
    assert_eq!(err.request_id, Some(7));
    forger.close().await;

    // A Hello replayed from another connection (bound to that connection's TLS exporter).
    let victim = Client::connect(&relay).await;
    let captured = victim.signed_hello(&k, 8);
    let mut replayer = Client::connect(&relay).await;
    replayer.tx.send(&Message::Hello(captured)).await;
    replayer.rx.expect_refusal(ErrorCode::Unauthorized).await;
    replayer.close().await;
    victim.close().await;

    // The relay is up and the group's devices are unaffected.
    a.push_acked(blob(1), b"still here").await;
    match b.rx.next().await {
        Some(Message::Notify(n)) => assert_eq!(n.blob_id, blob(1)),
        other => panic!("expected Notify, got {other:?}"),
    }
    let m = relay.handle.metrics();
    assert_eq!(m.rejections_total.get(ErrorCode::Unauthorized), 2);
    assert_eq!(m.admission_refusals_total.get(Refusal::PreAuthDeadline), 1);
    relay.stop([a, b]).await;
}
