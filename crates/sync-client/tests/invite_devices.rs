//! The invite mailbox (put through a member's session, taken with `InviteGet` as first frame),
//! the record of devices seen, and `pull_after`, over real iroh QUIC on 127.0.0.1 against the
//! real relay binary. No sleeps: every wait is on a result, under a guard timeout.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use sync_client::{
    ClientError, GroupMaterial, InviteFetchError, IrohTransport, Store, StoreLocation, StoreSync,
    SyncClient, Transport, TransportError, fetch_invite,
};
use sync_core::{DEFAULT_INVITE_TTL, Invite, InviteParams, ShortCode};
use sync_crypto::{DeviceKey, GroupDescriptor};
use sync_testkit::devices::{connect, group, loopback_transport};
use sync_testkit::{RelayProcess, guard};
use sync_types::{Cursor, ErrorCode, unix_ms};

const FETCH_TIMEOUT: Duration = Duration::from_secs(20);

/// The relay binary on loopback (the test kit's defaults and these flags), a member of group
/// `seed` connected to it with its state in memory, and a transport for a device in no group.
async fn relay_and_member(
    flags: &[&str],
    seed: u64,
) -> (RelayProcess, GroupMaterial, SyncClient, Arc<IrohTransport>) {
    let relay = RelayProcess::builder()
        .args(flags)
        .start()
        .expect("relay starts");
    let g = group(seed);
    let a = connect(&relay.relay_addr(), &g, StoreLocation::InMemory).await;
    let t = loopback_transport(&relay.relay_addr());
    (relay, g, a, t)
}

/// Shuts the transport down, closes the member, stops the relay.
async fn finish(t: Arc<IrohTransport>, a: SyncClient, relay: RelayProcess) {
    t.shutdown().await;
    a.close().await;
    relay.stop_clean().await;
}

/// Takes the invite under `code` as `joiner`.
async fn fetch(
    t: &IrohTransport,
    joiner: &DeviceKey,
    code: &ShortCode,
) -> Result<Invite, InviteFetchError> {
    fetch_invite(t, joiner, code, FETCH_TIMEOUT).await
}

fn invite_for(relay: &RelayProcess, group: &GroupMaterial, now: u64) -> Invite {
    let keys = sync_crypto::GroupKeys::derive(&group.secret);
    Invite::create(
        &mut ChaCha20Rng::seed_from_u64(now),
        InviteParams {
            relay_id: *relay.id().as_bytes(),
            relay_addrs: relay.addrs().iter().map(ToString::to_string).collect(),
            group_id: keys.group_id(),
            group: GroupDescriptor::Random,
            secret: Some(group.secret.clone()),
            ttl: DEFAULT_INVITE_TTL,
        },
        now,
    )
    .unwrap()
}

/// A member leaves a sealed invite; a device in no group takes it with `InviteGet` as its first
/// frame and opens it with the code; the entry is then gone (single use).
#[tokio::test]
async fn invite_put_then_fetch_once() {
    let (relay, g, a, t) = relay_and_member(&[], 1).await;
    let invite = invite_for(&relay, &g, unix_ms());
    let code = ShortCode::random(&mut ChaCha20Rng::seed_from_u64(2));
    guard("put", a.put_invite(&invite, &code)).await.unwrap();
    // The lookup id is taken now.
    let err = guard("put again", a.put_invite(&invite, &code))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Rejected {
                code: ErrorCode::Conflict,
                ..
            }
        ),
        "{err:?}"
    );

    let joiner = DeviceKey::random(&mut ChaCha20Rng::seed_from_u64(3));
    let got = fetch(&t, &joiner, &code).await.unwrap();
    assert_eq!(got.group_id(), invite.group_id());
    assert_eq!(
        got.group_secret(None).unwrap().expose_bytes(),
        g.secret.expose_bytes()
    );
    assert_eq!(got.relay_id(), invite.relay_id());

    let again = fetch(&t, &joiner, &code).await;
    assert!(
        matches!(again, Err(InviteFetchError::NotFound)),
        "{again:?}"
    );

    // A code nobody put is NotFound too.
    let other = ShortCode::random(&mut ChaCha20Rng::seed_from_u64(4));
    let none = fetch(&t, &joiner, &other).await;
    assert!(matches!(none, Err(InviteFetchError::NotFound)), "{none:?}");
    finish(t, a, relay).await;
}

/// An invite whose own lifetime is over is refused even if the relay still holds it; a wrong
/// second half does not open the entry; an unreachable relay is a transport error.
#[tokio::test]
async fn expired_wrong_code_and_unreachable() {
    let (relay, g, a, t) = relay_and_member(&[], 5).await;
    let joiner = DeviceKey::random(&mut ChaCha20Rng::seed_from_u64(6));

    // Created 11 minutes ago with a 10-minute lifetime: expired; the relay keeps it 1 s.
    let old = invite_for(&relay, &g, unix_ms() - 11 * 60 * 1000);
    let code = ShortCode::random(&mut ChaCha20Rng::seed_from_u64(7));
    guard("put", a.put_invite(&old, &code)).await.unwrap();
    let r = fetch(&t, &joiner, &code).await;
    assert!(matches!(r, Err(InviteFetchError::Expired)), "{r:?}");

    // Right lookup half, wrong key half: the relay hands the entry out, it does not open.
    let invite = invite_for(&relay, &g, unix_ms());
    let code = ShortCode::random(&mut ChaCha20Rng::seed_from_u64(8));
    guard("put", a.put_invite(&invite, &code)).await.unwrap();
    let text = code.to_string();
    let last = if text.ends_with('0') { "1" } else { "0" };
    let typo = ShortCode::parse(&format!("{}{last}", &text[..text.len() - 1])).unwrap();
    let r = fetch(&t, &joiner, &typo).await;
    assert!(matches!(r, Err(InviteFetchError::Invalid(_))), "{r:?}");

    let addr = relay.relay_addr();
    finish(t, a, relay).await;

    let dead = loopback_transport(&addr);
    let r = fetch_invite(dead.as_ref(), &joiner, &code, Duration::from_secs(3)).await;
    assert!(
        matches!(
            r,
            Err(InviteFetchError::Unreachable(TransportError::Connect(_))
                | InviteFetchError::Timeout)
        ),
        "{r:?}"
    );
    dead.shutdown().await;
}

/// Devices seen are recorded when blobs are pulled (sender, relay time) and when own pushes are
/// acknowledged; `pull_after` re-reads history (own blobs included) without moving the cursor.
#[tokio::test]
async fn devices_seen_and_pull_after() {
    let dir = tempfile::tempdir().unwrap();
    let relay = RelayProcess::start();
    let g = group(9);
    let a_dir = dir.path().join("a");
    let b_dir = dir.path().join("b");
    let a = connect(&relay.relay_addr(), &g, StoreLocation::Dir(a_dir.clone())).await;
    let b = connect(&relay.relay_addr(), &g, StoreLocation::Dir(b_dir.clone())).await;
    let r1 = a.push(b"one").await.unwrap();
    a.push(b"two").await.unwrap();
    b.push(b"mine").await.unwrap();
    let pulled = b.pull().await.unwrap();
    assert_eq!(
        pulled.iter().map(|x| x.data.as_slice()).collect::<Vec<_>>(),
        [b"one".as_slice(), b"two"]
    );
    let resume = b.status().resume_cursor;

    let history = b.pull_after(Cursor::ZERO).await.unwrap();
    assert_eq!(history.len(), 3, "own blob included");
    let after_first = b.pull_after(r1.cursor).await.unwrap();
    assert_eq!(after_first.len(), 2);
    assert_eq!(b.status().resume_cursor, resume, "cursor not moved");
    assert!(b.pull().await.unwrap().is_empty());

    let (a_id, b_id) = (a.device_id(), b.device_id());
    a.close().await;
    b.close().await;
    let store = Store::open_dir(&b_dir, StoreSync::Normal).unwrap();
    let seen = store.devices(&g.keys().group_id()).unwrap();
    let a_seen = seen.iter().find(|d| d.device_id == a_id).expect("A seen");
    assert_eq!(a_seen.blobs, 2);
    assert!(a_seen.last_seen_ms > 0);
    let b_seen = seen.iter().find(|d| d.device_id == b_id).expect("own");
    assert_eq!(b_seen.blobs, 1);
    assert_eq!(seen.len(), 2);
    relay.stop_clean().await;
}

/// A relay that allows no more lookups answers `TooManyAttempts`, which is typed as such.
#[tokio::test]
async fn too_many_attempts_is_typed() {
    let (relay, g, a, t) = relay_and_member(&["--invite-max-attempts", "0"], 10).await;
    let invite = invite_for(&relay, &g, unix_ms());
    let code = ShortCode::random(&mut ChaCha20Rng::seed_from_u64(11));
    guard("put", a.put_invite(&invite, &code)).await.unwrap();
    let joiner = DeviceKey::random(&mut ChaCha20Rng::seed_from_u64(12));
    let r = fetch(&t, &joiner, &code).await;
    assert!(matches!(r, Err(InviteFetchError::TooManyAttempts)), "{r:?}");
    finish(t, a, relay).await;
}
