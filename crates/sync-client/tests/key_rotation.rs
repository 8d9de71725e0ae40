//! Key rotation and revocation end to end: real `SyncClient`s over real iroh QUIC on 127.0.0.1
//! against the real relay binary. Members that were offline during a rotation get their grant
//! when they come back and read what was sealed under the new epoch; a revoked device is
//! refused and cannot open anything sealed after its revocation; concurrent rotations by two
//! admins converge, and pushes queued under an old epoch are sealed again and delivered.
//! No sleeps: every wait is on a result, under a guard timeout.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use sync_client::{ClientError, MemberInfo, Store, StoreLocation, StoreSync, SyncClient};
use sync_core::GroupMaterial;
use sync_crypto::{GroupKeys, KeyEpoch, OpenError, open};
use sync_testkit::devices::{connect, group, pull_until};
use sync_testkit::{RelayProcess, guard};
use sync_types::{Cursor, DeviceId, ErrorCode, unix_ms};

async fn device(relay: &RelayProcess, g: &GroupMaterial, dir: &Path) -> SyncClient {
    connect(
        &relay.relay_addr(),
        g,
        StoreLocation::Dir(dir.to_path_buf()),
    )
    .await
}

/// Waits until `admin` sees `n` enrolled devices (each enrolls right after its first
/// `Welcome`); asks the relay again after every answer.
async fn until_members(admin: &SyncClient, n: usize) -> Vec<MemberInfo> {
    guard("devices to enroll", async {
        loop {
            let members = admin.members().await.expect("members");
            if members.iter().filter(|m| m.revoked_at.is_none()).count() >= n {
                return members;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
}

/// Waits until `c` holds `epoch` (it learns it from a broadcast or its next session).
async fn until_epoch(c: &SyncClient, epoch: KeyEpoch) {
    let mut events = c.subscribe();
    guard("the new epoch to arrive", async {
        use sync_client::StreamExt;
        while c.epoch() < epoch {
            let _ = events.next().await;
        }
    })
    .await;
}

/// The group keys a device's store holds (epoch 0 from the group secret, later epochs from
/// the grants it received).
fn stored_keys(dir: &Path, g: &GroupMaterial) -> GroupKeys {
    let store = Store::open(&StoreLocation::Dir(dir.to_path_buf()), StoreSync::Normal).unwrap();
    let mut keys = GroupKeys::derive(&g.secret);
    for (e, s) in store.epoch_secrets(&keys.group_id()).unwrap() {
        keys.add_epoch(e, s).unwrap();
    }
    keys
}

#[tokio::test]
async fn offline_members_catch_up_and_a_revoked_device_reads_nothing_new() {
    let relay = RelayProcess::start();
    let g = group(41);
    let dirs: Vec<_> = (0..5).map(|_| tempfile::tempdir().unwrap()).collect();
    // Device 0 is the first: it writes the group's genesis and is its admin.
    let admin = device(&relay, &g, dirs[0].path()).await;
    let mut others = Vec::new();
    for d in &dirs[1..] {
        others.push(device(&relay, &g, d.path()).await);
    }
    let members = until_members(&admin, 5).await;
    assert!(members.iter().any(|m| m.this_device && m.admin));
    let ids: Vec<DeviceId> = others.iter().map(SyncClient::device_id).collect();

    // Devices 3 and 4 go offline; the admin rotates.
    let d4 = others.pop().unwrap();
    let d3 = others.pop().unwrap();
    d3.close().await;
    d4.close().await;
    let e1 = admin.rotate().await.expect("rotate");
    assert_eq!(e1, KeyEpoch(1));
    assert_eq!(admin.epoch(), KeyEpoch(1));
    admin.push(b"after the rotation").await.expect("push");

    // Online members learn the new epoch from the relay's broadcast and read the blob.
    for c in &others {
        until_epoch(c, e1).await;
        let got = pull_until(c, 1).await;
        assert_eq!(got[0].data, b"after the rotation");
    }
    // The offline ones are refused at Hello with their old keys, fetch their grant before
    // Hello, connect under epoch 1 and read it too.
    for d in &dirs[3..5] {
        let back = device(&relay, &g, d.path()).await;
        until_epoch(&back, e1).await;
        let got = pull_until(&back, 1).await;
        assert_eq!(got[0].data, b"after the rotation");
        back.close().await;
    }

    // Device 2 is revoked: its session ends, its next connect is refused for good.
    let revoked = others.pop().unwrap();
    let e2 = admin.revoke(&[ids[1]]).await.expect("revoke");
    assert_eq!(e2, KeyEpoch(2));
    admin.push(b"after the revocation").await.expect("push");
    revoked.close().await;
    let again = SyncClient::connect(sync_testkit::devices::config(
        &relay.relay_addr(),
        &g,
        StoreLocation::Dir(dirs[2].path().to_path_buf()),
    ))
    .await;
    match again {
        Err(ClientError::Rejected { code, .. }) => assert_eq!(code, ErrorCode::DeviceRevoked),
        other => panic!("a revoked device must be refused, got {other:?}"),
    }
    let members = until_members(&admin, 4).await;
    let gone = members.iter().find(|m| m.device == ids[1]).expect("listed");
    assert_eq!(gone.revoked_at, Some(2));

    // The sealed blob the admin pushed after the revocation (its own copy, as the relay
    // holds it) does not open with anything the revoked device holds; device 1 reads it.
    admin.close().await;
    let admin_store = Store::open(
        &StoreLocation::Dir(dirs[0].path().to_path_buf()),
        StoreSync::Normal,
    )
    .unwrap();
    let group_id = GroupKeys::derive(&g.secret).group_id();
    let sent = admin_store
        .sent_after(&group_id, Cursor::ZERO, unix_ms())
        .unwrap();
    let last = sent.last().expect("the admin's pushes are remembered");
    assert_eq!(
        &last.payload[1..5],
        &2u32.to_be_bytes(),
        "sealed under epoch 2"
    );
    let revoked_keys = stored_keys(dirs[2].path(), &g);
    assert_eq!(revoked_keys.current_epoch(), KeyEpoch(1));
    assert_eq!(
        open(
            &revoked_keys,
            &group_id,
            &last.blob_id,
            &admin_store_device(&dirs[0]),
            &last.payload
        )
        .map(|o| o.plaintext),
        Err(OpenError::UnknownEpoch(KeyEpoch(2)))
    );
    let reader = &others[0];
    until_epoch(reader, e2).await;
    let got = pull_until(reader, 1).await;
    assert_eq!(got[0].data, b"after the revocation");
    reader.close().await;
    relay.stop_clean().await;
}

fn admin_store_device(dir: &tempfile::TempDir) -> DeviceId {
    let store = Store::open(
        &StoreLocation::Dir(dir.path().to_path_buf()),
        StoreSync::Normal,
    )
    .unwrap();
    store.device_key().unwrap().unwrap().device_id()
}

#[tokio::test]
async fn concurrent_rotations_converge_and_queued_pushes_are_sealed_again() {
    let relay = RelayProcess::start();
    let g = group(42);
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = device(&relay, &g, dirs[0].path()).await;
    let b = device(&relay, &g, dirs[1].path()).await;
    let c = device(&relay, &g, dirs[2].path()).await;
    until_members(&a, 3).await;
    a.set_admins(&[a.device_id(), b.device_id()])
        .await
        .expect("promote");

    // C goes offline with a push queued under epoch 0.
    c.close().await;
    let c = {
        let mut config = sync_testkit::devices::config(
            &relay.relay_addr(),
            &g,
            StoreLocation::Dir(dirs[2].path().to_path_buf()),
        );
        config.transport = std::sync::Arc::new(Unreachable);
        SyncClient::connect(config).await.expect("offline client")
    };
    c.push_queued(b"written offline").await.expect("queued");
    c.close().await;

    // Both admins rotate at once: one is stored first, the other is rebuilt on it.
    let (ra, rb) = tokio::join!(a.rotate(), b.rotate());
    let (ea, eb) = (ra.expect("a rotates"), rb.expect("b rotates"));
    assert_ne!(ea, eb, "both rotations landed, one after the other");
    let last = ea.max(eb);
    assert_eq!(last, KeyEpoch(2));
    until_epoch(&a, last).await;
    until_epoch(&b, last).await;

    // C comes back: its queued push is sealed again under the current epoch and delivered.
    let c = device(&relay, &g, dirs[2].path()).await;
    until_epoch(&c, last).await;
    let got = pull_until(&a, 1).await;
    assert_eq!(got[0].data, b"written offline");
    assert_eq!(got[0].sender, c.device_id());
    for x in [a, b, c] {
        x.close().await;
    }
    relay.stop_clean().await;
}

/// A transport that never reaches anything (a device that is offline from the start).
struct Unreachable;

impl sync_client::Transport for Unreachable {
    fn connect<'a>(
        &'a self,
        _device: &'a sync_crypto::DeviceKey,
    ) -> sync_client::BoxFuture<'a, Result<sync_client::Session, sync_client::TransportError>> {
        Box::pin(async { Err(sync_client::TransportError::Connect("offline".into())) })
    }
}

/// Waits until `c` holds `epoch` among its epochs (history arrives in a grant of its own).
async fn until_holds(c: &SyncClient, epoch: KeyEpoch) {
    let mut events = c.subscribe();
    guard("an epoch of the group's history to arrive", async {
        use sync_client::StreamExt;
        while !c.epochs().contains(&epoch) {
            let _ = events.next().await;
        }
    })
    .await;
}

/// An invite to `g` at `relay` made by `inviter` (its store in `dir`), carrying the group's
/// current epoch, with or without history.
fn invite(
    relay: &RelayProcess,
    g: &GroupMaterial,
    inviter: &SyncClient,
    dir: &Path,
    history: bool,
) -> sync_core::InvitedGroup {
    use rand_core::SeedableRng;
    let now = unix_ms();
    let invite = sync_core::Invite::create(
        &mut rand_chacha::ChaCha20Rng::seed_from_u64(now ^ u64::from(history)),
        sync_core::InviteParams {
            relay_id: *relay.id().as_bytes(),
            relay_addrs: relay.addrs().iter().map(ToString::to_string).collect(),
            group_id: inviter.group_id(),
            group: g.descriptor.clone(),
            secret: Some(g.secret.clone()),
            ttl: sync_core::DEFAULT_INVITE_TTL,
        },
        now,
    )
    .unwrap();
    let (epoch, secret) = inviter.current_epoch_secret().expect("the group rotated");
    let invite = invite.with_epoch(epoch, &secret);
    let store = Store::open(&StoreLocation::Dir(dir.to_path_buf()), StoreSync::Normal).unwrap();
    store
        .note_issued_invite(*invite.invite_id(), history)
        .unwrap();
    sync_core::Invite::from_qr_payload(&invite.to_qr_payload())
        .unwrap()
        .into_group(None, now)
        .unwrap()
}

#[tokio::test]
async fn a_device_joining_after_rotations_gets_the_history_its_invite_allows() {
    let relay = RelayProcess::start();
    let g = group(43);
    let dir = tempfile::tempdir().unwrap();
    let a = device(&relay, &g, dir.path()).await;
    until_members(&a, 1).await;
    a.push(b"epoch 0").await.unwrap();
    a.rotate().await.unwrap();
    a.push(b"epoch 1").await.unwrap();
    a.rotate().await.unwrap();
    a.push(b"epoch 2").await.unwrap();

    // With history: the invite carries epoch 2's key; the inviter grants epoch 1 once the
    // new device enrolls; the new device reads everything.
    let with = invite(&relay, &g, &a, dir.path(), true);
    let mut config =
        sync_testkit::devices::config(&relay.relay_addr(), &g, StoreLocation::InMemory);
    config.group = sync_client::GroupChoice::Invited(with);
    let c = guard("a device to join", SyncClient::connect(config))
        .await
        .unwrap();
    assert_eq!(c.epoch(), KeyEpoch(2));
    until_holds(&c, KeyEpoch(1)).await;
    let got: Vec<_> = pull_until(&c, 3)
        .await
        .into_iter()
        .map(|b| b.data)
        .collect();
    assert_eq!(
        got,
        [
            b"epoch 0".to_vec(),
            b"epoch 1".to_vec(),
            b"epoch 2".to_vec()
        ]
    );

    // Without history: epoch 1 stays closed to it, reported as a problem, never as data.
    let without = invite(&relay, &g, &a, dir.path(), false);
    let mut config =
        sync_testkit::devices::config(&relay.relay_addr(), &g, StoreLocation::InMemory);
    config.group = sync_client::GroupChoice::Invited(without);
    let d = guard("a device to join", SyncClient::connect(config))
        .await
        .unwrap();
    until_members(&a, 3).await;
    // The inviter has seen it enroll and owes it nothing: whatever it pulls now is final.
    let batch = d.pull_uncommitted().await.unwrap();
    let got: Vec<_> = batch.blobs.iter().map(|b| b.data.clone()).collect();
    assert_eq!(got, [b"epoch 0".to_vec(), b"epoch 2".to_vec()]);
    assert_eq!(batch.problems.len(), 1, "{:?}", batch.problems);
    assert_eq!(d.epochs(), [KeyEpoch(0), KeyEpoch(2)]);
    for x in [a, c, d] {
        x.close().await;
    }
    relay.stop_clean().await;
}
