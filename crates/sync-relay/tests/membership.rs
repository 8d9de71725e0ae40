//! Group membership on a real relay over iroh QUIC on 127.0.0.1: records checked and stored,
//! a rotation that revokes a device ends its session and refuses its next Hello, members that
//! missed the rotation fetch their grant before `Hello`, and pushes sealed under a superseded
//! epoch are refused.

// Tests state their expectations with unwrap.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use iroh::SecretKey;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use sync_crypto::{
    Change, DeviceKey, Enrollment, EpochSecret, GroupKeys, GroupRecord, GroupState, KeyEpoch,
    open_grant, seal, seal_grant,
};
use sync_types::{
    DeviceId, Enroll, ErrorCode, Grant, GroupChanged, GroupGet, GroupInfo, GroupUpdate, Message,
    Payload,
};

fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

fn device(n: u8) -> DeviceKey {
    DeviceKey::from_secret_bytes([n; 32])
}

async fn connect(relay: &TestRelay, n: u8) -> Client {
    let secret = SecretKey::from_bytes(&[n; 32]);
    Client::connect_as(secret, relay.handle.endpoint_id(), relay.addr()).await
}

/// Device `n` on a new connection says `Hello` with `keys` and is refused with `code`; the
/// connection, to close at the end.
async fn hello_refused(relay: &TestRelay, n: u8, keys: &GroupKeys, code: ErrorCode) -> Client {
    let mut c = connect(relay, n).await;
    let hello = c.signed_hello(keys, 1);
    c.tx.send(&hello.into()).await;
    c.rx.expect_refusal(code).await;
    c
}

/// Device `n` on a new connection asks for the group records of `keys` before any `Hello`;
/// the connection, to read the answer from.
async fn get_before_hello(relay: &TestRelay, n: u8, keys: &GroupKeys) -> Client {
    let mut c = connect(relay, n).await;
    let msg = get_msg(&mut c, keys);
    c.tx.send(&msg).await;
    c
}

/// Device `n` with a session in the group of `keys`.
async fn member(relay: &TestRelay, n: u8, keys: &GroupKeys) -> Client {
    let mut c = connect(relay, n).await;
    match c.hello(keys).await {
        Message::Welcome(_) => c,
        other => panic!("device {n}: expected Welcome, got {other:?}"),
    }
}

/// Sends `msg` and returns its answer, skipping broadcasts and notifications.
async fn ask(c: &mut Client, msg: Message) -> Message {
    c.tx.send(&msg).await;
    loop {
        let reply = c.rx.next_reply(&mut c.notifies).await;
        if matches!(&reply, Message::GroupChanged(g) if g.request_id.is_none()) {
            continue;
        }
        assert_eq!(reply.request_id(), msg.request_id(), "answer to {msg:?}");
        return reply;
    }
}

async fn update(c: &mut Client, record: Option<&GroupRecord>, grants: Vec<Grant>) -> Message {
    let request_id = c.next_id();
    let msg = Message::GroupUpdate(GroupUpdate {
        request_id,
        record: record.map(|r| Payload::from(r.encode())),
        grants,
    });
    ask(c, msg).await
}

async fn enroll(c: &mut Client, keys: &GroupKeys, n: u8) -> Message {
    let e = Enrollment::new(&mut rng(u64::from(n)), keys, &device(n), "device", None).unwrap();
    let request_id = c.next_id();
    let msg = Message::Enroll(Enroll {
        request_id,
        enrollment: Payload::from(e.encode()),
    });
    ask(c, msg).await
}

/// The next frame that is not a broadcast `GroupChanged`, which must be an `Error`.
async fn next_error(c: &mut Client) -> sync_types::WireError {
    loop {
        match c.rx.next().await.expect("a typed error") {
            Message::GroupChanged(g) if g.request_id.is_none() => continue,
            Message::Error(e) => return e,
            other => panic!("expected an Error frame, got {other:?}"),
        }
    }
}

fn get_msg(c: &mut Client, keys: &GroupKeys) -> Message {
    Message::GroupGet(GroupGet {
        request_id: c.next_id(),
        group_id: keys.group_id(),
        after_seq: 0,
    })
}

fn changed(reply: &Message) -> &GroupChanged {
    match reply {
        Message::GroupChanged(c) => c,
        other => panic!("expected GroupChanged, got {other:?}"),
    }
}

fn info(reply: Message) -> GroupInfo {
    match reply {
        Message::GroupInfo(i) => i,
        other => panic!("expected GroupInfo, got {other:?}"),
    }
}

/// The state the records of `info` describe, checked the way a device checks them.
fn replay(keys: &GroupKeys, info: &GroupInfo) -> GroupState {
    let mut state = GroupState::new(keys.group_id());
    for r in &info.records {
        state.apply(&GroupRecord::decode(r).unwrap()).unwrap();
    }
    state
}

/// The record by which device `by` rotates the group from `state` to the current epoch of
/// `keys`, keeping `keep` and revoking `revoke`.
fn rotation(
    state: &GroupState,
    keys: &GroupKeys,
    by: u8,
    keep: Vec<DeviceId>,
    revoke: Vec<DeviceId>,
) -> GroupRecord {
    GroupRecord::next(state, keys, &device(by), Change::Rotate { keep, revoke }).unwrap()
}

/// A sealed blob of `dev` under the current epoch of `keys`.
fn sealed(keys: &GroupKeys, dev: u8, blob_n: u64) -> Vec<u8> {
    let key = keys.epoch_key(keys.current_epoch()).unwrap();
    seal(
        &mut rng(blob_n),
        &key,
        &keys.group_id(),
        &device(dev),
        &blob(blob_n),
        blob_n,
        b"note",
    )
    .unwrap()
}

#[tokio::test]
async fn a_rotation_revokes_a_device_and_members_that_missed_it_catch_up() {
    let relay = TestRelay::start(|_| {}).await;
    let keys0 = keys(1);
    let group = keys0.group_id();
    let (a, b, c) = (11u8, 12u8, 13u8);

    // A creates the group's membership; B and C enroll.
    let mut sa = member(&relay, a, &keys0).await;
    let genesis = GroupRecord::genesis(&keys0, &device(a)).unwrap();
    assert_eq!(
        changed(&update(&mut sa, Some(&genesis), vec![]).await).seq,
        1
    );
    let mut sb = member(&relay, b, &keys0).await;
    let mut sc = member(&relay, c, &keys0).await;
    assert_eq!(changed(&enroll(&mut sb, &keys0, b).await).epoch, 0);
    changed(&enroll(&mut sc, &keys0, c).await);
    let msg = get_msg(&mut sa, &keys0);
    let seen = info(ask(&mut sa, msg).await);
    assert_eq!(seen.enrollments.len(), 2);
    let state = replay(&keys0, &seen);

    // A rotates without C: B gets a grant sealed to its KEM key (from its enrollment).
    let secret = EpochSecret::random(&mut rng(7));
    let mut keys1 = keys0.clone();
    keys1.add_epoch(KeyEpoch(1), secret.clone()).unwrap();
    let (da, db, dc) = (
        device(a).device_id(),
        device(b).device_id(),
        device(c).device_id(),
    );
    let record = rotation(&state, &keys1, a, vec![da, db], vec![dc]);
    let b_kem = seen
        .enrollments
        .iter()
        .map(|e| Enrollment::decode(e).unwrap())
        .find(|e| e.device() == db)
        .unwrap()
        .kem()
        .clone();
    let env = seal_grant(
        &mut rng(8),
        group,
        KeyEpoch(1),
        da,
        db,
        &b_kem,
        &[(KeyEpoch(1), secret)],
    )
    .unwrap();
    let grant = Grant {
        device: db,
        epoch: 1,
        envelope: Payload::from(env),
    };
    // A rotation that neither keeps nor revokes an enrolled device is refused (C would be left
    // without the key and without being told), and so is one without the grant for B.
    let silent = rotation(&state, &keys1, a, vec![da, db], vec![]);
    let reply = update(&mut sa, Some(&silent), vec![]).await;
    assert_eq!(expect_error(&reply).code, ErrorCode::MembershipRefused);
    let reply = update(&mut sa, Some(&record), vec![]).await;
    assert_eq!(expect_error(&reply).code, ErrorCode::MembershipRefused);
    let reply = update(&mut sa, Some(&record), vec![grant]).await;
    assert_eq!((changed(&reply).seq, changed(&reply).epoch), (2, 1));

    // C's open session ends at once, typed; its next Hello is refused.
    let err = next_error(&mut sc).await;
    assert_eq!(err.code, ErrorCode::DeviceRevoked);
    let again = hello_refused(&relay, c, &keys0, ErrorCode::DeviceRevoked).await;
    // Even with the current epoch's key (leaked to it), a revoked device stays out.
    let leaked = hello_refused(&relay, c, &keys1, ErrorCode::DeviceRevoked).await;
    // C may read the records that revoked it, and nothing else: no grant.
    let mut ask_c = get_before_hello(&relay, c, &keys0).await;
    let c_view = info(ask_c.rx.next().await.unwrap());
    assert!(c_view.grants.is_empty());
    assert_eq!(replay(&keys0, &c_view).revoked_at(&dc), Some(KeyEpoch(1)));

    // B's session was told; its push under epoch 0 is refused, not stored.
    let b_blob = sealed(&keys0, b, 1);
    let id = sb.next_id();
    let reply = ask(&mut sb, push_msg(id, blob(1), &b_blob)).await;
    assert_eq!(expect_error(&reply).code, ErrorCode::EpochSuperseded);

    // B on a new connection with its old keys: EpochSuperseded. Before Hello it fetches its
    // grant, checks it against the records, and opens a session under epoch 1.
    let old_b = hello_refused(&relay, b, &keys0, ErrorCode::EpochSuperseded).await;
    let mut fetch = get_before_hello(&relay, b, &keys0).await;
    let b_view = info(fetch.rx.next().await.unwrap());
    assert_eq!(b_view.grants.len(), 1);
    let g = &b_view.grants[0];
    assert_eq!(g.device, da, "the grant names its sender");
    let secrets = open_grant(
        &device(b).kem_keypair(),
        group,
        KeyEpoch(g.epoch),
        g.device,
        db,
        &g.envelope,
    )
    .unwrap();
    replay(&keys0, &b_view).check_grant(&secrets).unwrap();
    let mut b_keys = keys0.clone();
    for (e, s) in secrets {
        b_keys.add_epoch(e, s).unwrap();
    }
    let mut nb = member(&relay, b, &b_keys).await;
    let ack = nb.push_acked(blob(2), &sealed(&b_keys, b, 2)).await;
    assert_eq!(ack.cursor.get(), 1, "the refused push was never stored");

    // A stranger gets nothing before Hello.
    let mut stranger = get_before_hello(&relay, 14, &keys0).await;
    assert_eq!(stranger.rx.next_error().await.code, ErrorCode::NotFound);

    relay
        .stop([sa, sb, nb, again, leaked, old_b, ask_c, fetch, stranger])
        .await;
}

#[tokio::test]
async fn records_of_non_admins_and_losers_of_concurrent_rotations_are_refused() {
    let relay = TestRelay::start(|_| {}).await;
    let keys0 = keys(2);
    let (a, b) = (21u8, 22u8);
    let (da, db) = (device(a).device_id(), device(b).device_id());
    let mut sa = member(&relay, a, &keys0).await;
    let mut sb = member(&relay, b, &keys0).await;

    // Nobody but the genesis's signer is an admin: B holds the keys but cannot sign changes.
    let genesis = GroupRecord::genesis(&keys0, &device(a)).unwrap();
    changed(&update(&mut sa, Some(&genesis), vec![]).await);
    enroll(&mut sb, &keys0, b).await;
    let mut state = GroupState::new(keys0.group_id());
    state.apply(&genesis).unwrap();
    let by_b = GroupRecord::next(&state, &keys0, &device(b), Change::Admins(vec![da, db])).unwrap();
    let reply = update(&mut sb, Some(&by_b), vec![]).await;
    assert_eq!(expect_error(&reply).code, ErrorCode::MembershipRefused);
    // A record posted by another device than its signer is refused too.
    let promote =
        GroupRecord::next(&state, &keys0, &device(a), Change::Admins(vec![da, db])).unwrap();
    let reply = update(&mut sb, Some(&promote), vec![]).await;
    assert_eq!(expect_error(&reply).code, ErrorCode::MembershipRefused);
    changed(&update(&mut sa, Some(&promote), vec![]).await);
    state.apply(&promote).unwrap();

    // Two admins rotate from the same state (each keeping only itself): the first stored wins,
    // the other is a typed Conflict and changes nothing.
    let mut ka = keys0.clone();
    ka.add_epoch(KeyEpoch(1), EpochSecret::random(&mut rng(1)))
        .unwrap();
    let mut kb = keys0.clone();
    kb.add_epoch(KeyEpoch(1), EpochSecret::random(&mut rng(2)))
        .unwrap();
    let ra = rotation(&state, &ka, a, vec![da], vec![]);
    let rb = rotation(&state, &kb, b, vec![db], vec![]);
    let reply = update(&mut sa, Some(&ra), vec![]).await;
    assert_eq!(changed(&reply).epoch, 1);
    // B's session ended (A's rotation revoked B); on a fresh session B could not even say
    // Hello, so its record cannot land: the chain stays A's.
    assert_eq!(next_error(&mut sb).await.code, ErrorCode::DeviceRevoked);
    let msg = get_msg(&mut sa, &keys0);
    let view = info(ask(&mut sa, msg).await);
    let after = replay(&keys0, &view);
    assert_eq!(after.seq(), 3);
    assert!(
        state.clone().apply(&rb).is_ok(),
        "B's record was valid on the old state"
    );
    assert!(
        after.clone().apply(&rb).is_err(),
        "and is not the next one now"
    );

    relay.stop([sa, sb]).await;
}
