//! Admission over real iroh QUIC on loopback (an address like any other): per-address and
//! per-device session limits, the pre-auth budget per address, new groups per address, token
//! admission, and the invite mailbox under a sweep of lookup ids. Every refusal is a typed
//! error, counted by reason.

mod common;

use std::num::NonZeroU64;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use iroh::SecretKey;
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use sync_crypto::{OperatorKey, TokenClaims, TokenScope};
use sync_relay::{AdmissionMode, Refusal};
use sync_types::{ErrorCode, InviteGet, InvitePut, Message, Payload};

/// Asserts a refused Hello: the typed error, echoing the Hello's request id, then the end of
/// the stream.
async fn assert_refused(c: &mut Client, reply: Message, code: ErrorCode) -> sync_types::WireError {
    let err = expect_error(&reply).clone();
    assert_eq!(err.code, code, "{err:?}");
    assert!(
        err.request_id.is_some(),
        "a refused Hello is answered: {err:?}"
    );
    assert!(c.rx.until_end().await.is_empty(), "the stream ends");
    err
}

#[tokio::test]
async fn sessions_are_limited_per_address_and_per_device() {
    let relay = relay_with!(max_sessions_per_ip = 3, max_sessions_per_device = 2).await;
    let mut open = Vec::new();
    for n in 1..=3 {
        open.push(Client::open(&relay, &keys(n)).await.0);
    }
    let mut fourth = Client::connect(&relay).await;
    let reply = fourth.hello(&keys(4)).await;
    let err = assert_refused(&mut fourth, reply, ErrorCode::TooManySessions).await;
    assert!(err.retry_after_ms.is_some_and(|ms| ms > 0), "{err:?}");
    fourth.close().await;
    let m = relay.handle.metrics();
    assert_eq!(m.admission_refusals_total.get(Refusal::SessionsPerIp), 1);
    assert_eq!(m.rejections_total.get(ErrorCode::TooManySessions), 1);

    // One leaves: its place is free for the next.
    open.pop().expect("a session").leave().await;
    let (fresh, _) = Client::open(&relay, &keys(5)).await;
    open.push(fresh);
    for c in open.drain(..) {
        c.leave().await;
    }

    // One device, three connections: the third is refused.
    let secret = SecretKey::generate();
    let (id, addr) = (relay.handle.endpoint_id(), relay.addr());
    let mut same = Vec::new();
    for n in 1..=2 {
        let mut c = Client::connect_as(secret.clone(), id, addr).await;
        assert!(matches!(c.hello(&keys(n)).await, Message::Welcome(_)));
        same.push(c);
    }
    let mut third = Client::connect_as(secret, id, addr).await;
    let reply = third.hello(&keys(3)).await;
    assert_refused(&mut third, reply, ErrorCode::TooManySessions).await;
    assert_eq!(
        m.admission_refusals_total.get(Refusal::SessionsPerDevice),
        1
    );
    third.close().await;
    relay.stop(same).await;
}

/// The 16 KiB limit and the small flow-control window are for the time before the Hello: a
/// session carries the largest blob both ways.
#[tokio::test]
async fn after_the_hello_the_largest_blob_passes_both_ways() {
    let relay = TestRelay::start(|_| {}).await;
    let max = relay.handle.config().max_blob_bytes as usize;
    let (mut a, _) = Client::open(&relay, &keys(1)).await;
    let (mut b, _) = Client::open(&relay, &keys(1)).await;
    let ack = a.push_acked(blob(1), &vec![7; max]).await;
    match b.pull(0, 10).await {
        Message::PullResponse(r) => {
            assert_eq!(r.entries.len(), 1);
            assert_eq!(r.entries[0].cursor, ack.cursor);
            assert_eq!(r.entries[0].payload.len(), max);
        }
        other => panic!("expected PullResponse, got {other:?}"),
    }
    relay.stop([a, b]).await;
}

#[tokio::test]
async fn connections_without_a_hello_are_limited_per_address() {
    let relay = relay_with!(
        max_pre_auth_per_ip = 2,
        hello_timeout = Duration::from_secs(2)
    )
    .await;
    let (id, addr) = (relay.handle.endpoint_id(), relay.addr());
    let silent = [quic_connect(id, addr).await, quic_connect(id, addr).await];
    let m = relay.handle.metrics();
    assert_eq!(m.pre_auth_connections.get(), 2);

    // A third connection from the same address is refused before its handshake completes.
    let endpoint = client_endpoint().await;
    let attempt = try_connect("the refused connection", &endpoint, id, addr).await;
    assert!(attempt.is_err(), "refused: {attempt:?}");
    endpoint.close().await;
    assert!(m.admission_refusals_total.get(Refusal::PreAuthPerIp) >= 1);

    // The silent ones are closed by the deadline; then devices get in again.
    for (endpoint, conn) in silent {
        guard("the deadline to close a silent connection", conn.closed()).await;
        endpoint.close().await;
    }
    assert_eq!(m.pre_auth_connections.get(), 0);
    assert_eq!(m.admission_refusals_total.get(Refusal::PreAuthDeadline), 2);
    let (c, _) = Client::open(&relay, &keys(1)).await;
    relay.stop([c]).await;
}

/// A burst of new connections from one address beyond `ip_connect_rate`'s bucket is refused
/// before any TLS work; another address is not affected.
#[tokio::test]
async fn new_connections_are_limited_per_address_before_any_handshake() {
    let relay = relay_with!(ip_connect_rate = 1, ip_connect_burst = 3).await;
    let (id, addr) = (relay.handle.endpoint_id(), relay.addr());
    let endpoint = client_endpoint().await;
    let mut accepted = Vec::new();
    let mut refused = 0;
    for _ in 0..10 {
        match try_connect("a connection attempt", &endpoint, id, addr).await {
            Ok(conn) => accepted.push(conn),
            Err(_) => refused += 1,
        }
    }
    // The bucket holds 3 and refills one a second: the first 3 get in, and the burst of 10
    // cannot all (it would have to take more than 7 s).
    assert!(accepted.len() >= 3, "accepted {} of 10", accepted.len());
    assert!(refused >= 1, "accepted all 10");
    let m = relay.handle.metrics();
    assert_eq!(
        m.admission_refusals_total.get(Refusal::ConnectRatePerIp),
        refused
    );
    // Another loopback address has a bucket of its own.
    let other = client_endpoint_at(SecretKey::generate(), "127.0.0.2:0").await;
    let conn = try_connect("a connection from another address", &other, id, addr).await;
    assert!(conn.is_ok(), "{conn:?}");
    drop(accepted);
    endpoint.close().await;
    other.close().await;
    relay.handle.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn new_groups_are_limited_per_address_but_known_groups_are_not() {
    let relay = relay_with!(ip_new_groups_per_hour = 2).await;
    let (mut a, _) = Client::open(&relay, &keys(1)).await;
    a.push_acked(blob(1), b"group 1 now exists").await;
    let (b, _) = Client::open(&relay, &keys(2)).await;

    let mut c = Client::connect(&relay).await;
    let reply = c.hello(&keys(3)).await;
    let err = assert_refused(&mut c, reply, ErrorCode::TooManyGroups).await;
    // The bucket refills one group every 30 minutes.
    let retry = err.retry_after_ms.expect("a retry hint");
    assert!((1..=1_800_000).contains(&retry), "{retry}");
    c.close().await;
    assert_eq!(
        relay
            .handle
            .metrics()
            .admission_refusals_total
            .get(Refusal::NewGroupsPerIp),
        1
    );

    // Known groups open as before: one with blobs, one counted as new within the hour.
    let (again1, _) = Client::open(&relay, &keys(1)).await;
    let (again2, _) = Client::open(&relay, &keys(2)).await;
    relay.stop([a, b, again1, again2]).await;
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn token(key: &OperatorKey, expires_at_secs: u64, scope: TokenScope, quota: u64) -> Vec<u8> {
    let claims = TokenClaims {
        id: [9; 8],
        expires_at_secs,
        scope,
        max_bytes: NonZeroU64::new(quota),
    };
    key.issue(&claims).expect("issue").into_bytes()
}

#[tokio::test]
async fn a_token_relay_admits_valid_tokens_only() {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let operator = OperatorKey::random(&mut rng);
    let stranger = OperatorKey::random(&mut rng);
    let relay = relay_with!(
        admission = AdmissionMode::Token,
        admission_key = operator.public_key().to_string()
    )
    .await;
    let k = keys(1);
    let later = now_secs() + 3600;
    let all = TokenScope::AllGroups;
    let cases: [(Option<Vec<u8>>, ErrorCode, Refusal); 4] = [
        (None, ErrorCode::AdmissionRequired, Refusal::TokenMissing),
        (
            Some(token(&operator, now_secs() - 10, all.clone(), 0)),
            ErrorCode::AdmissionInvalid,
            Refusal::TokenExpired,
        ),
        (
            Some(token(&stranger, later, all.clone(), 0)),
            ErrorCode::AdmissionInvalid,
            Refusal::TokenInvalid,
        ),
        (
            Some(token(
                &operator,
                later,
                TokenScope::Groups(vec![keys(2).group_id()]),
                0,
            )),
            ErrorCode::AdmissionInvalid,
            Refusal::TokenOutOfScope,
        ),
    ];
    let m = relay.handle.metrics();
    for (tok, code, reason) in cases {
        let mut c = Client::connect(&relay).await;
        let reply = c.hello_with_token(&k, tok.as_deref()).await;
        assert_refused(&mut c, reply, code).await;
        assert_eq!(m.admission_refusals_total.get(reason), 1, "{reason:?}");
        c.close().await;
    }

    // A valid token for the group, with a quota of 1000 bytes per group.
    let valid = token(
        &operator,
        later,
        TokenScope::Groups(vec![k.group_id()]),
        1000,
    );
    let mut c = Client::connect(&relay).await;
    assert!(matches!(
        c.hello_with_token(&k, Some(&valid)).await,
        Message::Welcome(_)
    ));
    c.push_acked(blob(1), &[1; 600]).await;
    let reply = c.push(blob(2), &[1; 600]).await;
    assert_eq!(expect_error(&reply).code, ErrorCode::QuotaExceeded);
    relay.stop([c]).await;
}

/// An `InviteGet` for `lookup_id` with request id `id`.
fn invite_get(id: u64, lookup_id: &str) -> Message {
    Message::InviteGet(InviteGet {
        request_id: id,
        lookup_id: lookup_id.into(),
    })
}

/// One lookup as the first frame of a fresh connection (how a joining device asks).
async fn first_frame_lookup(relay: &TestRelay, lookup_id: &str) -> Message {
    let mut c = Client::connect(relay).await;
    c.tx.send(&invite_get(1, lookup_id)).await;
    let answer = c.rx.next().await.expect("an answer");
    c.close().await;
    answer
}

/// A random lookup id in the short-code alphabet.
fn random_lookup_id(rng: &mut ChaCha20Rng) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    (0..8)
        .map(|_| char::from(ALPHABET[(rng.next_u32() % 32) as usize]))
        .collect()
}

/// Counts answers: (not found, rate limited); anything else fails the test.
fn tally(answers: &[Message]) -> (u64, u64) {
    let mut counts = (0, 0);
    for a in answers {
        match expect_error(a) {
            e if e.code == ErrorCode::NotFound => counts.0 += 1,
            e if e.code == ErrorCode::RateLimited => {
                assert!(e.retry_after_ms.is_some_and(|ms| ms > 0), "{e:?}");
                counts.1 += 1;
            }
            e => panic!("unexpected {e:?}"),
        }
    }
    counts
}

#[tokio::test]
async fn a_sweep_of_lookup_ids_is_throttled_and_the_live_code_still_works() {
    const SESSION_PER_MIN: u64 = 5;
    const IP_PER_MIN: u64 = 12;
    let relay = relay_with!(
        session_invite_lookups_per_min = SESSION_PER_MIN as u32,
        ip_invite_lookups_per_min = IP_PER_MIN as u32,
        global_invite_lookups_per_min = 1000
    )
    .await;
    let started = Instant::now();
    // The inviting device leaves a sealed invite under its lookup id.
    let (mut owner, _) = Client::open(&relay, &keys(1)).await;
    let put = Message::InvitePut(InvitePut {
        request_id: 50,
        lookup_id: "K7M2Q9XA".into(),
        sealed: Payload::copy_from_slice(b"sealed invite"),
        ttl_secs: 600,
    });
    assert!(matches!(owner.request(put).await, Message::InviteStored(_)));

    // A stranger pipelines 50 lookups of random ids in a session of its own group.
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    let (mut sweeper, _) = Client::open(&relay, &keys(2)).await;
    for i in 0..50 {
        sweeper
            .tx
            .send(&invite_get(100 + i, &random_lookup_id(&mut rng)))
            .await;
    }
    let mut answers = Vec::new();
    for _ in 0..50 {
        answers.push(sweeper.rx.next_reply(&mut sweeper.notifies).await);
    }
    let (found, limited) = tally(&answers);
    // A bucket of 5 refilling one lookup every 12 s.
    let refills = |per_min: u64| started.elapsed().as_secs() * per_min / 60;
    assert!(
        (SESSION_PER_MIN..=SESSION_PER_MIN + refills(SESSION_PER_MIN)).contains(&found),
        "{found} lookups answered in the session"
    );
    assert_eq!(found + limited, 50);
    let m = relay.handle.metrics();
    assert_eq!(
        m.admission_refusals_total
            .get(Refusal::InviteLookupsSession),
        limited
    );

    // Then one lookup per fresh connection, from the same address: the address's bucket
    // (12 per minute, 5 of them used by the session) holds it back.
    let mut first_frames = Vec::new();
    for _ in 0..20 {
        first_frames.push(first_frame_lookup(&relay, &random_lookup_id(&mut rng)).await);
    }
    let (found2, limited2) = tally(&first_frames);
    println!(
        "sweep: session {found} answered / {limited} limited; first frames {found2} answered / \
         {limited2} limited, in {:?}",
        started.elapsed()
    );
    assert!(
        (IP_PER_MIN - found..=IP_PER_MIN - found + refills(IP_PER_MIN)).contains(&found2),
        "{found2} first-frame lookups answered"
    );
    assert_eq!(
        m.admission_refusals_total.get(Refusal::InviteLookupsIp),
        limited2
    );
    assert_eq!(m.invite_lookups_failed_total.get(), found + found2);

    // The joining device (same address here) waits for the hint the relay gives, and takes
    // the invite: the sweep did not consume it.
    let sealed = guard("the owner's lookup", async {
        loop {
            match first_frame_lookup(&relay, "K7M2Q9XA").await {
                Message::InviteFound(f) => return f.sealed,
                Message::Error(e) if e.code == ErrorCode::RateLimited => {
                    let wait = e.retry_after_ms.expect("a retry hint");
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(sealed.as_slice(), b"sealed invite");
    assert_eq!(m.invite_lookups_total.get(), found + found2 + 1);
    relay.stop([owner, sweeper]).await;
}

#[tokio::test]
async fn relay_wide_lookups_are_limited_too() {
    let relay = relay_with!(
        session_invite_lookups_per_min = 0,
        ip_invite_lookups_per_min = 0,
        global_invite_lookups_per_min = 3
    )
    .await;
    let mut answers = Vec::new();
    for n in 0..5 {
        answers.push(first_frame_lookup(&relay, &format!("AAAAAAA{n}")).await);
    }
    assert_eq!(tally(&answers), (3, 2));
    let m = relay.handle.metrics();
    assert_eq!(
        m.admission_refusals_total.get(Refusal::InviteLookupsGlobal),
        2
    );
    let text = metric(relay.handle.http_addr(), "invite_lookups_failed_total").await;
    assert_eq!(text, 3.0);
    let refused = metric(
        relay.handle.http_addr(),
        "admission_refusals_total{reason=\"invite_lookups_global\"}",
    )
    .await;
    assert_eq!(refused, 2.0);
    relay.handle.shutdown().await.expect("shutdown");
}
