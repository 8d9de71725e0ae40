use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use sync_types::BlobId;

use super::*;
use crate::{GroupSecret, OpenError, open, seal};

fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

fn device(n: u8) -> DeviceKey {
    DeviceKey::from_secret_bytes([n; 32])
}

fn group_keys() -> GroupKeys {
    GroupKeys::derive(&GroupSecret::from_bytes([0x11; 32]))
}

/// A rotation keeping `keep` and revoking nobody else.
fn rotation(keep: Vec<DeviceId>) -> Change {
    Change::Rotate {
        keep,
        revoke: vec![],
    }
}

/// Applies the record of `change` by device `by`, signed with `keys`.
fn apply_next(state: &mut GroupState, keys: &GroupKeys, by: u8, change: Change) -> Applied {
    let record = GroupRecord::next(state, keys, &device(by), change).unwrap();
    state.apply(&record).unwrap()
}

/// A group whose genesis names device 1; the state after it, and device 1's keys.
fn genesis() -> (GroupState, GroupKeys, GroupRecord) {
    let keys = group_keys();
    let record = GroupRecord::genesis(&keys, &device(1)).unwrap();
    let mut state = GroupState::new(keys.group_id());
    assert_eq!(state.apply(&record), Ok(Applied::Genesis));
    (state, keys, record)
}

/// `keys` plus the next epoch's secret drawn from `seed`.
fn with_next_epoch(keys: &GroupKeys, state: &GroupState, seed: u64) -> (GroupKeys, EpochSecret) {
    let secret = EpochSecret::random(&mut rng(seed));
    let mut next = keys.clone();
    next.add_epoch(KeyEpoch(state.epoch().0 + 1), secret.clone())
        .unwrap();
    (next, secret)
}

#[test]
fn a_chain_of_promotion_rotation_and_revocation_applies_in_order() {
    let (mut state, keys, _) = genesis();
    let [d1, d2, d3] = [device(1), device(2), device(3)].map(|d| d.device_id());

    let promote =
        GroupRecord::next(&state, &keys, &device(1), Change::Admins(vec![d1, d2])).unwrap();
    assert_eq!(state.apply(&promote), Ok(Applied::Admins));
    assert_eq!(state.admins().len(), 2);
    assert!(state.members().contains(&d2));

    let (keys1, _) = with_next_epoch(&keys, &state, 7);
    let rotate = GroupRecord::next(&state, &keys1, &device(2), rotation(vec![d1, d2, d3])).unwrap();
    assert_eq!(
        state.apply(&rotate),
        Ok(Applied::Rotation {
            epoch: KeyEpoch(1),
            revoked: vec![]
        })
    );
    assert_eq!(state.auth_key(KeyEpoch(1)), keys1.auth_public(KeyEpoch(1)));

    let (keys2, _) = with_next_epoch(&keys1, &state, 8);
    let revoke = GroupRecord::next(&state, &keys2, &device(1), rotation(vec![d1, d3])).unwrap();
    assert_eq!(
        state.apply(&revoke),
        Ok(Applied::Rotation {
            epoch: KeyEpoch(2),
            revoked: vec![d2]
        })
    );
    assert_eq!(state.revoked_at(&d2), Some(KeyEpoch(2)));
    assert_eq!(state.admins().iter().copied().collect::<Vec<_>>(), vec![d1]);
    assert_eq!(state.seq(), 4);

    // Another device replaying the same records from their bytes reaches the same state.
    let mut replica = GroupState::new(keys.group_id());
    let (_, _, g) = genesis();
    for r in [g, promote, rotate, revoke] {
        replica
            .apply(&GroupRecord::decode(&r.encode()).unwrap())
            .unwrap();
    }
    assert_eq!(replica, state);
}

#[test]
fn records_by_non_admins_or_revoked_admins_are_refused() {
    let (mut state, keys, _) = genesis();
    let [d1, d2] = [device(1), device(2)].map(|d| d.device_id());
    // Device 2 holds the group keys but is no admin.
    let by_member =
        GroupRecord::next(&state, &keys, &device(2), Change::Admins(vec![d1, d2])).unwrap();
    let before = state.clone();
    assert_eq!(state.apply(&by_member), Err(MembershipError::NotAdmin));
    assert_eq!(state, before, "a refused record changes nothing");

    // Promote 2, then 1 revokes 2: 2 can no longer sign a change, even with the keys it had.
    let promote =
        GroupRecord::next(&state, &keys, &device(1), Change::Admins(vec![d1, d2])).unwrap();
    state.apply(&promote).unwrap();
    let (keys1, _) = with_next_epoch(&keys, &state, 1);
    let stale_state = state.clone();
    apply_next(&mut state, &keys1, 1, rotation(vec![d1]));
    // Built on the state 2 last saw: not the next record.
    let (keys_2, _) = with_next_epoch(&keys, &stale_state, 2);
    let late = GroupRecord::next(&stale_state, &keys_2, &device(2), rotation(vec![d2])).unwrap();
    assert!(matches!(
        state.apply(&late),
        Err(MembershipError::NotNext { .. })
    ));
    // Built on the current state (2 learnt it from the relay): it cannot sign for epoch 1.
    let mut keys_2 = keys.clone();
    keys_2
        .add_epoch(KeyEpoch(2), EpochSecret::from_bytes([9; 32]))
        .unwrap();
    assert_eq!(
        GroupRecord::next(&state, &keys_2, &device(2), rotation(vec![d2])),
        Err(MembershipError::UnknownEpoch(1))
    );
    let (keys_3, _) = with_next_epoch(&keys1, &state, 3);
    // With another device's signature forged in place of the admin's: refused.
    let mut stolen = GroupRecord::next(&state, &keys_3, &device(1), rotation(vec![d1])).unwrap();
    stolen.0.body.signer = d2;
    assert_eq!(state.clone().apply(&stolen), Err(MembershipError::NotAdmin));
}

#[test]
fn concurrent_rotations_one_wins_the_other_is_not_next() {
    let (mut state, keys, _) = genesis();
    let [d1, d2, d3] = [device(1), device(2), device(3)].map(|d| d.device_id());
    apply_next(&mut state, &keys, 1, Change::Admins(vec![d1, d2]));
    let (k_a, _) = with_next_epoch(&keys, &state, 10);
    let (k_b, _) = with_next_epoch(&keys, &state, 11);
    let a = GroupRecord::next(&state, &k_a, &device(1), rotation(vec![d1, d2])).unwrap();
    let b = GroupRecord::next(&state, &k_b, &device(2), rotation(vec![d1, d2, d3])).unwrap();
    let mut relay = state.clone();
    relay.apply(&a).unwrap();
    assert_eq!(
        relay.apply(&b),
        Err(MembershipError::NotNext {
            expected: 4,
            got: 3
        })
    );
    // Whoever applies them, in whatever order they arrive, keeps the first and refuses the
    // second: devices follow the relay's order, and the loser rebuilds on the winner.
    let mut other = state.clone();
    other.apply(&b).unwrap();
    assert!(other.apply(&a).is_err());
}

#[test]
fn records_cannot_move_between_groups_or_skip_epochs() {
    let (state, keys, genesis_record) = genesis();
    let other = GroupKeys::derive(&GroupSecret::from_bytes([0x22; 32]));
    assert_eq!(
        GroupState::new(other.group_id()).apply(&genesis_record),
        Err(MembershipError::WrongGroup)
    );
    // A genesis signed with another group's auth key but naming this group.
    let mut forged = GroupRecord::genesis(&other, &device(1)).unwrap();
    forged.0.body.group = keys.group_id();
    forged.0.body.auth_key = ByteArray::new(*keys.group_id().as_bytes());
    assert_eq!(
        GroupState::new(keys.group_id()).apply(&forged),
        Err(MembershipError::BadDeviceSignature)
    );
    // Skipping an epoch.
    let mut k = keys.clone();
    k.add_epoch(KeyEpoch(2), EpochSecret::from_bytes([3; 32]))
        .unwrap();
    let mut s = state.clone();
    let jump = {
        let mut body = GroupRecord::next(
            &s,
            &keys,
            &device(1),
            Change::Admins(vec![device(1).device_id()]),
        )
        .unwrap()
        .0
        .body;
        body.epoch = KeyEpoch(2);
        body.auth_key = ByteArray::new(k.auth_public(KeyEpoch(2)).unwrap());
        GroupRecord::sign(body, &k, KeyEpoch(0), &device(1)).unwrap()
    };
    assert_eq!(
        s.apply(&jump),
        Err(MembershipError::EpochJump { from: 0, to: 2 })
    );
}

#[test]
fn every_byte_flip_of_a_record_is_refused() {
    let (state, keys, _) = genesis();
    let (k1, _) = with_next_epoch(&keys, &state, 5);
    let rec = GroupRecord::next(
        &state,
        &k1,
        &device(1),
        rotation(vec![device(1).device_id()]),
    )
    .unwrap();
    let bytes = rec.encode();
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x01;
        let refused = match GroupRecord::decode(&b) {
            Err(_) => true,
            Ok(r) => state.clone().apply(&r).is_err(),
        };
        assert!(refused, "flip at byte {i} was accepted");
    }
    for n in 0..bytes.len() {
        assert!(
            GroupRecord::decode(&bytes[..n]).is_err(),
            "truncation to {n}"
        );
    }
}

#[test]
fn enrollments_prove_the_epoch_keys_and_seal_the_name() {
    let (mut state, keys, _) = genesis();
    let e = Enrollment::new(
        &mut rng(1),
        &keys,
        &device(2),
        "kitchen tablet",
        Some([4; 16]),
    )
    .unwrap();
    let e = Enrollment::decode(&e.encode()).unwrap();
    assert_eq!(state.check_enrollment(&e), Ok(()));
    assert_eq!(e.name(&keys).as_deref(), Some("kitchen tablet"));
    assert_eq!(e.invite_id(), Some([4; 16]));
    assert_eq!(e.kem(), &device(2).kem_keypair().public_key());
    assert!(
        !e.encode().windows(7).any(|w| w == b"kitchen"),
        "the name is sealed"
    );

    // Signed with another group's keys: the auth signature fails.
    let other = GroupKeys::derive(&GroupSecret::from_bytes([0x33; 32]));
    let mut forged = Enrollment::new(&mut rng(2), &other, &device(2), "x", None).unwrap();
    forged.0.body.group = keys.group_id();
    assert!(state.check_enrollment(&forged).is_err());

    // After device 2 is revoked its enrollments are refused, old or new.
    let d1 = device(1).device_id();
    let d2 = device(2).device_id();
    apply_next(&mut state, &keys, 1, Change::Admins(vec![d1, d2]));
    let (k1, _) = with_next_epoch(&keys, &state, 3);
    apply_next(&mut state, &k1, 1, rotation(vec![d1]));
    assert_eq!(state.check_enrollment(&e), Err(MembershipError::Revoked));
}

#[test]
fn grants_open_only_for_their_recipient_and_forged_secrets_are_caught() {
    let (mut state, keys, _) = genesis();
    let [d1, d2] = [device(1), device(2)].map(|d| d.device_id());
    let (k1, secret) = with_next_epoch(&keys, &state, 9);
    apply_next(&mut state, &k1, 1, rotation(vec![d1, d2]));
    let kem2 = device(2).kem_keypair();
    let env = seal_grant(
        &mut rng(4),
        keys.group_id(),
        KeyEpoch(1),
        d1,
        d2,
        &kem2.public_key(),
        &[(KeyEpoch(1), secret.clone())],
    )
    .unwrap();
    let got = open_grant(&kem2, keys.group_id(), KeyEpoch(1), d1, d2, &env).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1.expose_bytes(), secret.expose_bytes());
    assert_eq!(state.check_grant(&got), Ok(()));
    // Another device's KEM key, or another claimed sender: does not open.
    assert!(matches!(
        open_grant(
            &device(3).kem_keypair(),
            keys.group_id(),
            KeyEpoch(1),
            d1,
            d2,
            &env
        ),
        Err(GrantError::Envelope(_))
    ));
    assert!(open_grant(&kem2, keys.group_id(), KeyEpoch(1), d2, d2, &env).is_err());
    // A relay that knows device 2's public KEM key can seal it a secret of its own: the chain
    // says which auth key epoch 1 has, and this secret does not give it.
    let fake = seal_grant(
        &mut rng(5),
        keys.group_id(),
        KeyEpoch(1),
        d1,
        d2,
        &kem2.public_key(),
        &[(KeyEpoch(1), EpochSecret::from_bytes([1; 32]))],
    )
    .unwrap();
    let fake = open_grant(&kem2, keys.group_id(), KeyEpoch(1), d1, d2, &fake).unwrap();
    assert_eq!(
        state.check_grant(&fake),
        Err(MembershipError::ForgedGrant(1))
    );
    assert_eq!(
        state.check_grant(&[(KeyEpoch(0), EpochSecret::from_bytes([0x11; 32]))]),
        Ok(()),
        "epoch 0's secret is checked against the group id"
    );
}

#[test]
fn hello_signatures_name_their_epoch() {
    let (mut state, keys, _) = genesis();
    let ch = HelloChallenge::new(&[1; 32], &[2; 32], &device(1).device_id(), &keys.group_id());
    assert_eq!(
        state.hello_epoch(&ch, &keys.sign_hello(&ch)),
        Some(KeyEpoch(0))
    );
    let (k1, _) = with_next_epoch(&keys, &state, 1);
    apply_next(&mut state, &k1, 1, rotation(vec![device(1).device_id()]));
    assert_eq!(
        state.hello_epoch(&ch, &k1.sign_hello(&ch)),
        Some(KeyEpoch(1))
    );
    assert_eq!(
        state.hello_epoch(&ch, &keys.sign_hello(&ch)),
        Some(KeyEpoch(0)),
        "superseded"
    );
    let stranger = GroupKeys::derive(&GroupSecret::from_bytes([0x44; 32]));
    assert_eq!(state.hello_epoch(&ch, &stranger.sign_hello(&ch)), None);
}

/// One step of a group's life in the property test.
#[derive(Clone, Debug)]
enum Op {
    /// A new device joins through an invite from member `by` (index into current members),
    /// with or without the group's history.
    Join { by: usize, history: bool },
    /// Admin `by` rotates, keeping every member.
    Rotate { by: usize },
    /// Admin `by` revokes member `who`.
    Revoke { by: usize, who: usize },
    /// Member `by` seals a blob under its current epoch.
    Write { by: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..8usize, any::<bool>()).prop_map(|(by, history)| Op::Join { by, history }),
        (0..8usize).prop_map(|by| Op::Rotate { by }),
        (0..8usize, 0..8usize).prop_map(|(by, who)| Op::Revoke { by, who }),
        (0..8usize).prop_map(|by| Op::Write { by }),
    ]
}

/// A blob written in the model: epoch, sender, id, sealed bytes, plaintext.
type Written = (KeyEpoch, DeviceId, BlobId, Vec<u8>, Vec<u8>);

/// A device in the model: its key, the group keys it holds, the epoch it joined in (history
/// withheld below that) and the epoch it was revoked at.
struct Dev {
    key: DeviceKey,
    keys: GroupKeys,
    since: KeyEpoch,
    revoked: Option<KeyEpoch>,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Any sequence of joins, rotations and revocations, with every key moving the way the
    /// protocol moves it (grants sealed to KEM keys, checked against the record chain): every
    /// current member reads every blob of every epoch it is entitled to, and a revoked device
    /// reads nothing sealed after its revocation.
    #[test]
    fn members_read_what_they_are_entitled_to_and_revoked_devices_nothing_after(ops in proptest::collection::vec(op(), 1..14)) {
        let mut r = rng(99);
        let creator = device(1);
        let keys = group_keys();
        let group = keys.group_id();
        let mut state = GroupState::new(group);
        state.apply(&GroupRecord::genesis(&keys, &creator).unwrap()).unwrap();
        let mut devs = vec![Dev { key: creator, keys, since: KeyEpoch(0), revoked: None }];
        let mut blobs: Vec<Written> = Vec::new();
        let mut next_seed = 2u8;

        for op in ops {
            let current: Vec<usize> = (0..devs.len()).filter(|i| devs[*i].revoked.is_none()).collect();
            let admins: Vec<usize> = current.iter().copied().filter(|i| state.admins().contains(&devs[*i].key.device_id())).collect();
            match op {
                Op::Join { by, history } => {
                    if current.len() >= 6 { continue; }
                    let inviter = &devs[current[by % current.len()]];
                    let epoch = state.epoch();
                    let new = device(next_seed);
                    next_seed += 1;
                    // The invite carries the current epoch's secret; history comes as a grant.
                    let mut keys = GroupKeys::from_epoch(group, epoch, inviter.keys.epoch_secret(epoch).unwrap()).unwrap();
                    if history {
                        let past: Vec<_> = inviter.keys.epochs().filter(|e| *e < epoch).map(|e| (e, inviter.keys.epoch_secret(e).unwrap())).collect();
                        let env = seal_grant(&mut r, group, epoch, inviter.key.device_id(), new.device_id(), &new.kem_keypair().public_key(), &past).unwrap();
                        let got = open_grant(&new.kem_keypair(), group, epoch, inviter.key.device_id(), new.device_id(), &env).unwrap();
                        state.check_grant(&got).unwrap();
                        for (e, s) in got { keys.add_epoch(e, s).unwrap(); }
                    }
                    let since = if history { inviter.since } else { epoch };
                    let admin = &devs[admins[0]];
                    let admit = GroupRecord::next(&state, &admin.keys, &admin.key, Change::Admit(vec![new.device_id()])).unwrap();
                    prop_assert_eq!(state.apply(&admit), Ok(Applied::Admins));
                    devs.push(Dev { key: new, keys, since, revoked: None });
                }
                Op::Rotate { by } | Op::Revoke { by, .. } => {
                    let admin_i = admins[by % admins.len()];
                    let mut keep: Vec<usize> = current.clone();
                    if let Op::Revoke { who, .. } = op {
                        let victim = current[who % current.len()];
                        if victim == admin_i { continue; }
                        keep.retain(|i| *i != victim);
                    }
                    let new_epoch = KeyEpoch(state.epoch().0 + 1);
                    let secret = EpochSecret::random(&mut r);
                    devs[admin_i].keys.add_epoch(new_epoch, secret.clone()).unwrap();
                    let members: Vec<DeviceId> = keep.iter().map(|i| devs[*i].key.device_id()).collect();
                    let rec = GroupRecord::next(&state, &devs[admin_i].keys, &devs[admin_i].key, rotation(members)).unwrap();
                    let Applied::Rotation { revoked, .. } = state.apply(&rec).unwrap() else { panic!("not a rotation") };
                    let sender = devs[admin_i].key.device_id();
                    for i in &keep {
                        if *i == admin_i { continue; }
                        let d = &mut devs[*i];
                        let env = seal_grant(&mut r, group, new_epoch, sender, d.key.device_id(), &d.key.kem_keypair().public_key(), &[(new_epoch, secret.clone())]).unwrap();
                        let got = open_grant(&d.key.kem_keypair(), group, new_epoch, sender, d.key.device_id(), &env).unwrap();
                        state.check_grant(&got).unwrap();
                        for (e, s) in got { d.keys.add_epoch(e, s).unwrap(); }
                    }
                    for d in devs.iter_mut() {
                        if revoked.contains(&d.key.device_id()) { d.revoked = Some(new_epoch); }
                    }
                }
                Op::Write { by } => {
                    let d = &devs[current[by % current.len()]];
                    let epoch = d.keys.current_epoch();
                    prop_assert_eq!(epoch, state.epoch(), "members seal under the current epoch");
                    let blob = BlobId::random(&mut r);
                    let text = format!("blob {}", blobs.len()).into_bytes();
                    let sealed = seal(&mut r, &d.keys.epoch_key(epoch).unwrap(), &group, &d.key, &blob, blobs.len() as u64 + 1, &text).unwrap();
                    blobs.push((epoch, d.key.device_id(), blob, sealed, text));
                }
            }
        }

        for d in &devs {
            for (epoch, sender, blob, sealed, text) in &blobs {
                let res = open(&d.keys, &group, blob, sender, sealed);
                match d.revoked {
                    Some(at) if *epoch >= at => prop_assert_eq!(res.map(|o| o.plaintext), Err(OpenError::UnknownEpoch(*epoch))),
                    _ if *epoch >= d.since => prop_assert_eq!(&res.unwrap().plaintext, text),
                    _ => prop_assert!(res.is_err(), "history withheld"),
                }
            }
        }
    }
}
