//! Round trips, layout, and every way a sealed blob can be wrong.

use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use super::*;
use crate::GroupSecret;

const PLAINTEXT: &[u8] = b"attack at dawn";
const SEQ: u64 = 7;

struct Fixture {
    keys: GroupKeys,
    device: DeviceKey,
    blob: BlobId,
    sealed: Vec<u8>,
}

impl Fixture {
    fn new() -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(42);
        let keys = GroupKeys::derive(&GroupSecret::random(&mut rng));
        let device = DeviceKey::random(&mut rng);
        let blob = BlobId::random(&mut rng);
        let key = keys.epoch_key(KeyEpoch(0)).unwrap();
        let sealed = seal(
            &mut rng,
            &key,
            &keys.group_id(),
            &device,
            &blob,
            SEQ,
            PLAINTEXT,
        )
        .unwrap();
        Self {
            keys,
            device,
            blob,
            sealed,
        }
    }

    fn open(&self, sealed: &[u8]) -> Result<Opened, OpenError> {
        self.open_with(&self.keys, sealed)
    }

    /// Opens with other group keys (their own group id), as the fixture's device and blob.
    fn open_with(&self, keys: &GroupKeys, sealed: &[u8]) -> Result<Opened, OpenError> {
        open(
            keys,
            &keys.group_id(),
            &self.blob,
            &self.device.device_id(),
            sealed,
        )
    }

    /// Seals `PLAINTEXT` under another key, as the fixture's group, device and blob.
    fn seal_under(&self, key: &EpochKey) -> Vec<u8> {
        self.seal_as(key, &self.keys.group_id(), &self.device)
    }

    /// Seals `PLAINTEXT` with an arbitrary key, group and device under the fixture's blob id.
    fn seal_as(&self, key: &EpochKey, group: &GroupId, device: &DeviceKey) -> Vec<u8> {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        seal(&mut rng, key, group, device, &self.blob, SEQ, PLAINTEXT).unwrap()
    }
}

#[test]
fn round_trip() {
    let f = Fixture::new();
    let opened = f.open(&f.sealed).unwrap();
    assert_eq!(opened.plaintext, PLAINTEXT);
    assert_eq!(opened.sender, f.device.device_id());
    assert_eq!(opened.epoch, KeyEpoch(0));
}

#[test]
fn round_trip_empty_and_large() {
    let f = Fixture::new();
    let key = f.keys.epoch_key(KeyEpoch(0)).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    for len in [0usize, 1, 4096, 1 << 20] {
        let pt: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let sealed = seal(
            &mut rng,
            &key,
            &f.keys.group_id(),
            &f.device,
            &f.blob,
            SEQ,
            &pt,
        )
        .unwrap();
        assert_eq!(sealed.len(), len + SEAL_OVERHEAD);
        assert_eq!(f.open(&sealed).unwrap().plaintext, pt);
    }
}

#[test]
fn layout_is_as_documented() {
    let f = Fixture::new();
    let s = &f.sealed;
    assert_eq!(SEAL_OVERHEAD, 149);
    assert_eq!(s.len(), PLAINTEXT.len() + SEAL_OVERHEAD);
    assert_eq!(s[0], SEAL_VERSION);
    assert_eq!(SEAL_VERSION, 2);
    assert_eq!(&s[1..5], &0u32.to_be_bytes());
    assert_eq!(&s[5..37], f.device.device_id().as_bytes());
    assert_eq!(&s[37..45], &SEQ.to_be_bytes());
    assert_eq!(f.open(s).unwrap().seq, Some(SEQ));
    // The plaintext does not appear in the clear.
    assert!(!s.windows(PLAINTEXT.len()).any(|w| w == PLAINTEXT));
}

#[test]
fn nonces_are_fresh() {
    let f = Fixture::new();
    let other = f.seal_under(&f.keys.epoch_key(KeyEpoch(0)).unwrap());
    assert_ne!(other[45..69], f.sealed[45..69]);
    assert_ne!(other, f.sealed);
    assert_eq!(f.open(&other).unwrap().plaintext, PLAINTEXT);
}

#[test]
fn every_single_byte_flip_is_a_typed_error() {
    let f = Fixture::new();
    for pos in 0..f.sealed.len() {
        for mask in [0x01u8, 0xff] {
            let mut bad = f.sealed.clone();
            bad[pos] ^= mask;
            let err = f.open(&bad).unwrap_err();
            // Check order: version, sender, then the signature covers everything else
            // (so a flipped epoch is a bad signature, not an unknown epoch).
            let want = match pos {
                0 => OpenError::UnsupportedVersion(SEAL_VERSION ^ mask),
                5..37 => OpenError::WrongSender,
                _ => OpenError::BadSignature,
            };
            assert_eq!(err, want, "byte {pos} ^ {mask:#04x}");
        }
    }
}

#[test]
fn every_truncation_is_a_typed_error() {
    let f = Fixture::new();
    for len in 0..f.sealed.len() {
        let err = f.open(&f.sealed[..len]).unwrap_err();
        if len < SEAL_OVERHEAD {
            assert_eq!(err, OpenError::Truncated { len });
        } else {
            // Long enough to parse, but the signature no longer covers these bytes.
            assert_eq!(err, OpenError::BadSignature, "len {len}");
        }
    }
    let mut extended = f.sealed.clone();
    extended.push(0);
    assert_eq!(f.open(&extended).unwrap_err(), OpenError::BadSignature);
}

#[test]
fn wrong_group_is_rejected() {
    let f = Fixture::new();
    let other = GroupKeys::derive(&GroupSecret::from_bytes([0xaa; 32]));
    // A blob of group A delivered into group B: the signature covers the group id.
    assert_eq!(
        f.open_with(&other, &f.sealed).unwrap_err(),
        OpenError::BadSignature
    );
    // Caller passes keys of one group and the id of another.
    let err = open(
        &f.keys,
        &other.group_id(),
        &f.blob,
        &f.device.device_id(),
        &f.sealed,
    );
    assert_eq!(err.unwrap_err(), OpenError::GroupMismatch);
    // A member of both groups re-labels group B's ciphertext as group A's: it signs, but the
    // AEAD (other key, other AAD) refuses.
    let b_key = other.epoch_key(KeyEpoch(0)).unwrap();
    let relabelled = f.seal_under(&b_key);
    assert_eq!(f.open(&relabelled).unwrap_err(), OpenError::Decrypt);
}

#[test]
fn unknown_epochs_and_wrong_keys_for_an_epoch_are_rejected() {
    let f = Fixture::new();
    for (case, key, refusal) in [
        (
            "unknown epoch",
            EpochKey::from_bytes(KeyEpoch(7), [3; 32]),
            OpenError::UnknownEpoch(KeyEpoch(7)),
        ),
        (
            "wrong key for a known epoch",
            EpochKey::from_bytes(KeyEpoch(0), [3; 32]),
            OpenError::Decrypt,
        ),
    ] {
        let sealed = f.seal_under(&key);
        assert_eq!(f.open(&sealed).unwrap_err(), refusal, "{case}");
    }
}

#[test]
fn rotated_epochs_open_once_known() {
    let f = Fixture::new();
    let mut keys = f.keys.clone();
    keys.add_epoch(KeyEpoch(1), crate::EpochSecret::from_bytes([8; 32]))
        .unwrap();
    let rotated = keys.epoch_key(KeyEpoch(1)).unwrap();
    let sealed = f.seal_under(&rotated);
    assert_eq!(
        f.open(&sealed).unwrap_err(),
        OpenError::UnknownEpoch(KeyEpoch(1))
    );
    let opened = f.open_with(&keys, &sealed).unwrap();
    assert_eq!(
        (opened.epoch, opened.plaintext.as_slice()),
        (KeyEpoch(1), PLAINTEXT)
    );
    // Old epochs stay readable.
    assert!(f.open_with(&keys, &f.sealed).is_ok());
}

#[test]
fn wrong_blob_id_is_rejected() {
    let f = Fixture::new();
    let other_blob = BlobId::from_bytes([0x55; 16]);
    let err = open(
        &f.keys,
        &f.keys.group_id(),
        &other_blob,
        &f.device.device_id(),
        &f.sealed,
    );
    assert_eq!(err.unwrap_err(), OpenError::BadSignature);
}

#[test]
fn relay_reporting_another_sender_is_rejected() {
    let f = Fixture::new();
    let someone_else = DeviceKey::from_secret_bytes([0x66; 32]).device_id();
    let err = open(
        &f.keys,
        &f.keys.group_id(),
        &f.blob,
        &someone_else,
        &f.sealed,
    );
    assert_eq!(err.unwrap_err(), OpenError::WrongSender);
}

#[test]
fn signature_by_another_device_is_rejected() {
    let f = Fixture::new();
    let mallory = DeviceKey::from_secret_bytes([0x77; 32]);
    // Mallory keeps the victim's header and ciphertext but signs with her own key.
    let mut forged = f.sealed.clone();
    let sig_at = forged.len() - 64;
    let sig = mallory.sign(&signed_message(
        &f.keys.group_id(),
        &f.blob,
        &forged[..sig_at],
    ));
    forged[sig_at..].copy_from_slice(&sig.to_bytes());
    assert_eq!(f.open(&forged).unwrap_err(), OpenError::BadSignature);
}

#[test]
fn member_impersonating_another_device_is_rejected() {
    // Mallory holds the group key (a member) and seals under Alice's device id: the AEAD
    // would accept it, the signature does not.
    let f = Fixture::new();
    let mallory = DeviceKey::from_secret_bytes([0x77; 32]);
    let mut sealed = f.seal_as(
        &f.keys.epoch_key(KeyEpoch(0)).unwrap(),
        &f.keys.group_id(),
        &mallory,
    );
    sealed[5..37].copy_from_slice(f.device.device_id().as_bytes());
    assert_eq!(f.open(&sealed).unwrap_err(), OpenError::BadSignature);
}

#[test]
fn invalid_sender_key_is_a_signature_error() {
    let f = Fixture::new();
    let mut bad = f.sealed.clone();
    let weak = [0u8; 32]; // a small-order point
    bad[5..37].copy_from_slice(&weak);
    let err = open(
        &f.keys,
        &f.keys.group_id(),
        &f.blob,
        &DeviceId::from_bytes(weak),
        &bad,
    );
    assert_eq!(err.unwrap_err(), OpenError::BadSignature);
}

#[test]
fn opened_debug_hides_plaintext() {
    let f = Fixture::new();
    let debug = format!("{:?}", f.open(&f.sealed).unwrap());
    assert!(!debug.contains("attack"), "{debug}");
    assert!(
        !debug.contains(
            &format!("{:?}", &PLAINTEXT[..4])
                .trim_end_matches(']')
                .to_string()
        )
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn open_never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let f = Fixture::new();
        prop_assert!(f.open(&bytes).is_err());
    }

    #[test]
    fn open_never_panics_on_random_bodies_with_valid_header(
        epoch in any::<u32>(),
        body in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        // Reaches past the version and sender checks into signature, epoch and AEAD.
        let f = Fixture::new();
        let mut bytes = vec![SEAL_VERSION];
        bytes.extend_from_slice(&epoch.to_be_bytes());
        bytes.extend_from_slice(f.device.device_id().as_bytes());
        bytes.extend_from_slice(&body);
        prop_assert!(f.open(&bytes).is_err());
    }

    #[test]
    fn seal_open_round_trips(pt in proptest::collection::vec(any::<u8>(), 0..2048), seed in any::<u64>()) {
        let f = Fixture::new();
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let key = f.keys.epoch_key(KeyEpoch(0)).unwrap();
        let sealed = seal(&mut rng, &key, &f.keys.group_id(), &f.device, &f.blob, SEQ, &pt).unwrap();
        prop_assert_eq!(f.open(&sealed).unwrap().plaintext, pt);
    }
}
