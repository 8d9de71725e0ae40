//! The key schedule: every group key derives from the group secret with HKDF-SHA256.
//!
//! The derivation is documented on [`GroupKeys`].
//!
//! Labels are versioned: a schedule change gets `v2` labels, never a silent change of `v1`.

use std::collections::BTreeMap;
use std::fmt;

use ed25519_dalek::{Signer, SigningKey};
use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use sync_types::{BlobId, GroupId};
use zeroize::Zeroizing;

use crate::error::CryptoError;
use crate::hello::{HelloChallenge, HelloSignature};
use crate::secrets::{EpochSecret, GroupSecret};

const SCHEDULE_SALT: &[u8] = b"0k-sync/v1/key-schedule";
const LABEL_SYNC_KEY: &[u8] = b"0k-sync/v1/sync-key";
const LABEL_AUTH_SEED: &[u8] = b"0k-sync/v1/auth-seed";
const LABEL_CONTENT_KEY: &[u8] = b"0k-sync/v1/content-key";
const EPOCH_SALT: &[u8] = b"0k-sync/v1/epoch-schedule";
const LABEL_EPOCH_SYNC_KEY: &[u8] = b"0k-sync/v1/epoch-sync-key";
const LABEL_EPOCH_AUTH_SEED: &[u8] = b"0k-sync/v1/epoch-auth-seed";
const LABEL_EPOCH_CONTENT_KEY: &[u8] = b"0k-sync/v1/epoch-content-key";

/// A key epoch: which generation of the group's blob key sealed a blob. Epoch 0 is the
/// `sync_key` derived from the group secret; later epochs come from key rotation.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct KeyEpoch(pub u32);

impl KeyEpoch {
    /// The epoch of the key derived from the group secret.
    pub const INITIAL: KeyEpoch = KeyEpoch(0);
}

/// A blob key of one epoch (XChaCha20-Poly1305 key). Zeroized on drop; `Debug` is redacted.
#[derive(Clone)]
pub struct EpochKey {
    epoch: KeyEpoch,
    key: Zeroizing<[u8; 32]>,
}

impl EpochKey {
    /// Wraps raw key bytes (tests and tools; rotation hands out [`EpochSecret`]s).
    pub fn from_bytes(epoch: KeyEpoch, key: [u8; 32]) -> Self {
        Self {
            epoch,
            key: Zeroizing::new(key),
        }
    }

    /// The epoch this key belongs to.
    pub fn epoch(&self) -> KeyEpoch {
        self.epoch
    }

    /// The raw key, for distributing it during rotation and for local storage only.
    pub fn expose_bytes(&self) -> &[u8; 32] {
        &self.key
    }
}

impl fmt::Debug for EpochKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EpochKey {{ epoch: {}, key: [redacted] }}", self.epoch.0)
    }
}

/// The key of one large content item. Zeroized on drop; `Debug` is redacted.
#[derive(Clone)]
pub struct ContentKey(Zeroizing<[u8; 32]>);

impl ContentKey {
    /// The raw key, for the content encryption layer.
    pub fn expose_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for ContentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ContentKey([redacted])")
    }
}

/// The keys of one epoch.
#[derive(Clone)]
struct Epoch {
    secret: EpochSecret,
    blob: EpochKey,
    auth: SigningKey,
}

/// All keys of one group: per key epoch, the blob key and the group auth keypair, and the
/// secret they derive from. Zeroized on drop; `Debug` shows only the group id and epochs.
///
/// Epoch 0 derives from the group secret:
///
/// ```text
/// PRK          = HKDF-Extract(salt = "0k-sync/v1/key-schedule", IKM = group secret)
/// sync_key     = HKDF-Expand(PRK, "0k-sync/v1/sync-key", 32)            (epoch 0 blob key)
/// auth_seed    = HKDF-Expand(PRK, "0k-sync/v1/auth-seed", 32)           (Ed25519 seed)
/// content_key  = HKDF-Expand(PRK, "0k-sync/v1/content-key" ‖ blob_id, 32)
/// GroupId      = Ed25519 public key of auth_seed
/// ```
///
/// Epoch n ≥ 1 derives from the epoch secret a rotation drew (group id and epoch number bind
/// the keys to one group and one epoch):
///
/// ```text
/// PRK_n        = HKDF-Extract(salt = "0k-sync/v1/epoch-schedule", IKM = epoch secret)
/// sync_key_n   = HKDF-Expand(PRK_n, "0k-sync/v1/epoch-sync-key" ‖ GroupId ‖ n (u32 BE), 32)
/// auth_seed_n  = HKDF-Expand(PRK_n, "0k-sync/v1/epoch-auth-seed" ‖ GroupId ‖ n (u32 BE), 32)
/// content_key_n = HKDF-Expand(PRK_n, "0k-sync/v1/epoch-content-key" ‖ GroupId ‖ n (u32 BE)
///                 ‖ blob_id, 32)
/// ```
///
/// The group id stays the epoch 0 auth public key for the group's whole life; the relay learns
/// each later epoch's auth public key from a signed membership record.
#[derive(Clone)]
pub struct GroupKeys {
    group_id: GroupId,
    epochs: BTreeMap<KeyEpoch, Epoch>,
}

impl GroupKeys {
    /// Derives every epoch 0 key from the group secret (see [`GroupKeys`] for the labels).
    pub fn derive(secret: &GroupSecret) -> Self {
        let epoch = derive_epoch0(EpochSecret::from_bytes(*secret.expose_bytes()));
        let group_id = GroupId::from_bytes(epoch.auth.verifying_key().to_bytes());
        let mut epochs = BTreeMap::new();
        epochs.insert(KeyEpoch::INITIAL, epoch);
        Self { group_id, epochs }
    }

    /// The keys of a device that holds only one epoch's secret (a device that joined after a
    /// rotation without the group's history). Epoch 0's secret must match `group_id`.
    pub fn from_epoch(
        group_id: GroupId,
        epoch: KeyEpoch,
        secret: EpochSecret,
    ) -> Result<Self, CryptoError> {
        let mut keys = Self {
            group_id,
            epochs: BTreeMap::new(),
        };
        keys.add_epoch(epoch, secret)?;
        Ok(keys)
    }

    /// Adds the secret of `epoch` (received in an envelope or an invite). Epoch 0's secret
    /// must give this group's id; adding an epoch already held with another secret is refused
    /// (an epoch has one secret for the group's whole life).
    pub fn add_epoch(&mut self, epoch: KeyEpoch, secret: EpochSecret) -> Result<(), CryptoError> {
        let derived = if epoch == KeyEpoch::INITIAL {
            let e = derive_epoch0(secret);
            if e.auth.verifying_key().to_bytes() != *self.group_id.as_bytes() {
                return Err(CryptoError::EpochSecretMismatch(epoch));
            }
            e
        } else {
            derive_epoch_n(&self.group_id, epoch, secret)
        };
        if let Some(held) = self.epochs.get(&epoch) {
            if held.secret.expose_bytes() != derived.secret.expose_bytes() {
                return Err(CryptoError::EpochSecretMismatch(epoch));
            }
            return Ok(());
        }
        self.epochs.insert(epoch, derived);
        Ok(())
    }

    /// The group id: the public key of the epoch 0 group auth keypair.
    pub fn group_id(&self) -> GroupId {
        self.group_id
    }

    /// The blob key of `epoch`, if this device holds it.
    pub fn epoch_key(&self, epoch: KeyEpoch) -> Option<EpochKey> {
        self.epochs.get(&epoch).map(|e| e.blob.clone())
    }

    /// The secret of `epoch`, if this device holds it (to pass history on to a new device).
    pub fn epoch_secret(&self, epoch: KeyEpoch) -> Option<EpochSecret> {
        self.epochs.get(&epoch).map(|e| e.secret.clone())
    }

    /// The auth public key of `epoch`, if this device holds the epoch.
    pub fn auth_public(&self, epoch: KeyEpoch) -> Option<[u8; 32]> {
        self.epochs
            .get(&epoch)
            .map(|e| e.auth.verifying_key().to_bytes())
    }

    /// Every epoch this device holds, oldest first.
    pub fn epochs(&self) -> impl Iterator<Item = KeyEpoch> + '_ {
        self.epochs.keys().copied()
    }

    /// The newest epoch this device holds (the one to seal new blobs with).
    pub fn current_epoch(&self) -> KeyEpoch {
        self.epochs
            .keys()
            .next_back()
            .copied()
            .unwrap_or(KeyEpoch::INITIAL)
    }

    /// The key of the large content item `blob_id`, if this device holds epoch 0.
    pub fn content_key(&self, blob_id: &BlobId) -> Option<ContentKey> {
        let epoch0 = self.epochs.get(&KeyEpoch::INITIAL)?;
        let hk = Hkdf::<Sha256>::new(Some(SCHEDULE_SALT), epoch0.secret.expose_bytes());
        Some(ContentKey(expand(
            &hk,
            &[LABEL_CONTENT_KEY, blob_id.as_bytes()],
        )))
    }

    /// The key of the large content item `blob_id` sealed under key epoch `epoch`, if this
    /// device holds that epoch: `content_key` for epoch 0, `content_key_n` for a later one.
    pub fn content_key_in(&self, epoch: KeyEpoch, blob_id: &BlobId) -> Option<ContentKey> {
        if epoch == KeyEpoch::INITIAL {
            return self.content_key(blob_id);
        }
        let held = self.epochs.get(&epoch)?;
        let hk = Hkdf::<Sha256>::new(Some(EPOCH_SALT), held.secret.expose_bytes());
        let n = epoch.0.to_be_bytes();
        Some(ContentKey(expand(
            &hk,
            &[
                LABEL_EPOCH_CONTENT_KEY,
                self.group_id.as_bytes(),
                &n,
                blob_id.as_bytes(),
            ],
        )))
    }

    /// Signs a Hello challenge with the current epoch's group auth key (proves membership to
    /// the relay).
    pub fn sign_hello(&self, challenge: &HelloChallenge) -> HelloSignature {
        let sig = self
            .epochs
            .values()
            .next_back()
            .map_or([0u8; 64], |e| e.auth.sign(challenge.as_bytes()).to_bytes());
        HelloSignature(sig)
    }

    /// Signs `message` with the auth key of `epoch`, if held (membership records).
    pub(crate) fn sign_auth(&self, epoch: KeyEpoch, message: &[u8]) -> Option<[u8; 64]> {
        self.epochs
            .get(&epoch)
            .map(|e| e.auth.sign(message).to_bytes())
    }
}

fn derive_epoch0(secret: EpochSecret) -> Epoch {
    let hk = Hkdf::<Sha256>::new(Some(SCHEDULE_SALT), secret.expose_bytes());
    let sync_key = expand(&hk, &[LABEL_SYNC_KEY]);
    let auth_seed = expand(&hk, &[LABEL_AUTH_SEED]);
    Epoch {
        secret,
        blob: EpochKey {
            epoch: KeyEpoch::INITIAL,
            key: sync_key,
        },
        auth: SigningKey::from_bytes(&auth_seed),
    }
}

fn derive_epoch_n(group: &GroupId, epoch: KeyEpoch, secret: EpochSecret) -> Epoch {
    let hk = Hkdf::<Sha256>::new(Some(EPOCH_SALT), secret.expose_bytes());
    let n = epoch.0.to_be_bytes();
    let sync_key = expand(&hk, &[LABEL_EPOCH_SYNC_KEY, group.as_bytes(), &n]);
    let auth_seed = expand(&hk, &[LABEL_EPOCH_AUTH_SEED, group.as_bytes(), &n]);
    Epoch {
        secret,
        blob: EpochKey {
            epoch,
            key: sync_key,
        },
        auth: SigningKey::from_bytes(&auth_seed),
    }
}

impl fmt::Debug for GroupKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupKeys")
            .field("group_id", &self.group_id)
            .field(
                "epochs",
                &self.epochs.keys().map(|e| e.0).collect::<Vec<_>>(),
            )
            .field("keys", &format_args!("[redacted]"))
            .finish()
    }
}

/// HKDF-Expand to 32 bytes; `info` is the concatenation of `parts`.
fn expand(hk: &Hkdf<Sha256>, parts: &[&[u8]]) -> Zeroizing<[u8; 32]> {
    let mut out = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's 8160-byte limit, so this cannot fail.
    let _ = hk.expand_multi_info(parts, out.as_mut());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::assert_redacted;

    fn secret(fill: u8) -> GroupSecret {
        GroupSecret::from_bytes([fill; 32])
    }

    fn auth_seed(secret: &GroupSecret) -> Zeroizing<[u8; 32]> {
        let hk = Hkdf::<Sha256>::new(Some(SCHEDULE_SALT), secret.expose_bytes());
        expand(&hk, &[LABEL_AUTH_SEED])
    }

    #[test]
    fn labels_give_distinct_keys() {
        let s = secret(1);
        let keys = GroupKeys::derive(&s);
        let sync = *keys.epoch_key(KeyEpoch(0)).unwrap().expose_bytes();
        let seed = *auth_seed(&s);
        let c1 = *keys
            .content_key(&BlobId::from_bytes([1; 16]))
            .unwrap()
            .expose_bytes();
        let c2 = *keys
            .content_key(&BlobId::from_bytes([2; 16]))
            .unwrap()
            .expose_bytes();
        let all = [
            sync,
            seed,
            c1,
            c2,
            *s.expose_bytes(),
            *keys.group_id().as_bytes(),
        ];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn content_keys_are_per_epoch_and_per_item() {
        let mut keys = GroupKeys::derive(&secret(1));
        let blob = BlobId::from_bytes([9; 16]);
        let other = BlobId::from_bytes([8; 16]);
        let k0 = keys.content_key_in(KeyEpoch::INITIAL, &blob).unwrap();
        assert_eq!(
            k0.expose_bytes(),
            keys.content_key(&blob).unwrap().expose_bytes()
        );
        assert!(
            keys.content_key_in(KeyEpoch(1), &blob).is_none(),
            "epoch not held"
        );
        keys.add_epoch(KeyEpoch(1), EpochSecret::from_bytes([5; 32]))
            .unwrap();
        let k1 = keys.content_key_in(KeyEpoch(1), &blob).unwrap();
        let k1_other = keys.content_key_in(KeyEpoch(1), &other).unwrap();
        assert_ne!(k1.expose_bytes(), k0.expose_bytes());
        assert_ne!(k1.expose_bytes(), k1_other.expose_bytes());
        // Another group with the same epoch secret derives other keys (the group id is bound).
        let mut elsewhere = GroupKeys::derive(&secret(2));
        elsewhere
            .add_epoch(KeyEpoch(1), EpochSecret::from_bytes([5; 32]))
            .unwrap();
        assert_ne!(
            elsewhere
                .content_key_in(KeyEpoch(1), &blob)
                .unwrap()
                .expose_bytes(),
            k1.expose_bytes()
        );
    }

    #[test]
    fn derive_is_deterministic_and_secret_dependent() {
        let a = GroupKeys::derive(&secret(1));
        let b = GroupKeys::derive(&secret(1));
        let c = GroupKeys::derive(&secret(2));
        assert_eq!(a.group_id(), b.group_id());
        assert_ne!(a.group_id(), c.group_id());
        let blob = BlobId::from_bytes([9; 16]);
        assert_eq!(
            a.content_key(&blob).unwrap().expose_bytes(),
            b.content_key(&blob).unwrap().expose_bytes()
        );
        assert_ne!(
            a.content_key(&blob).unwrap().expose_bytes(),
            c.content_key(&blob).unwrap().expose_bytes()
        );
    }

    #[test]
    fn epochs_beyond_zero_come_from_rotation() {
        let mut keys = GroupKeys::derive(&secret(1));
        assert_eq!(keys.current_epoch(), KeyEpoch(0));
        assert!(keys.epoch_key(KeyEpoch(1)).is_none());
        keys.add_epoch(KeyEpoch(1), EpochSecret::from_bytes([5; 32]))
            .unwrap();
        assert_eq!(keys.current_epoch(), KeyEpoch(1));
        let one = *keys.epoch_key(KeyEpoch(1)).unwrap().expose_bytes();
        assert_ne!(one, [5; 32], "the blob key derives from the epoch secret");
        // The same epoch secret in another epoch or another group gives other keys.
        let mut other_epoch = GroupKeys::derive(&secret(1));
        other_epoch
            .add_epoch(KeyEpoch(2), EpochSecret::from_bytes([5; 32]))
            .unwrap();
        assert_ne!(
            other_epoch.epoch_key(KeyEpoch(2)).unwrap().expose_bytes(),
            &one
        );
        let mut other_group = GroupKeys::derive(&secret(2));
        other_group
            .add_epoch(KeyEpoch(1), EpochSecret::from_bytes([5; 32]))
            .unwrap();
        assert_ne!(
            other_group.epoch_key(KeyEpoch(1)).unwrap().expose_bytes(),
            &one
        );
        assert_ne!(
            other_group.auth_public(KeyEpoch(1)),
            keys.auth_public(KeyEpoch(1))
        );
        // The Hello is signed with the newest epoch's auth key.
        let ch = HelloChallenge::new(
            &[1; 32],
            &[2; 32],
            &sync_types::DeviceId::from_bytes([3; 32]),
            &keys.group_id(),
        );
        let sig = keys.sign_hello(&ch);
        let pk = ed25519_dalek::VerifyingKey::from_bytes(&keys.auth_public(KeyEpoch(1)).unwrap())
            .unwrap();
        pk.verify_strict(ch.as_bytes(), &ed25519_dalek::Signature::from_bytes(&sig.0))
            .unwrap();
        // An epoch has one secret: another secret for a held epoch is refused, and epoch 0's
        // secret must give the group id.
        assert_eq!(
            keys.add_epoch(KeyEpoch(1), EpochSecret::from_bytes([6; 32])),
            Err(CryptoError::EpochSecretMismatch(KeyEpoch(1)))
        );
        keys.add_epoch(KeyEpoch(1), EpochSecret::from_bytes([5; 32]))
            .unwrap();
        assert_eq!(
            keys.add_epoch(KeyEpoch(0), EpochSecret::from_bytes([6; 32])),
            Err(CryptoError::EpochSecretMismatch(KeyEpoch(0)))
        );
    }

    #[test]
    fn a_device_may_hold_only_later_epochs() {
        let full = {
            let mut k = GroupKeys::derive(&secret(1));
            k.add_epoch(KeyEpoch(3), EpochSecret::from_bytes([7; 32]))
                .unwrap();
            k
        };
        let late = GroupKeys::from_epoch(
            full.group_id(),
            KeyEpoch(3),
            EpochSecret::from_bytes([7; 32]),
        )
        .unwrap();
        assert_eq!(late.epochs().collect::<Vec<_>>(), vec![KeyEpoch(3)]);
        assert!(late.epoch_key(KeyEpoch(0)).is_none());
        assert!(late.content_key(&BlobId::from_bytes([1; 16])).is_none());
        assert_eq!(
            late.epoch_key(KeyEpoch(3)).unwrap().expose_bytes(),
            full.epoch_key(KeyEpoch(3)).unwrap().expose_bytes()
        );
        // History can be added later, and epoch 0's secret is checked against the group id.
        let mut late = late;
        late.add_epoch(
            KeyEpoch(0),
            EpochSecret::from_bytes(*secret(1).expose_bytes()),
        )
        .unwrap();
        assert_eq!(
            late.epoch_key(KeyEpoch(0)).unwrap().expose_bytes(),
            full.epoch_key(KeyEpoch(0)).unwrap().expose_bytes()
        );
    }

    #[test]
    fn debug_of_every_key_type_is_redacted() {
        let s = GroupSecret::from_bytes(std::array::from_fn(|i| 0x30 + i as u8));
        let mut keys = GroupKeys::derive(&s);
        let rotated: [u8; 32] = std::array::from_fn(|i| 0x60 + i as u8);
        keys.add_epoch(KeyEpoch(3), EpochSecret::from_bytes(rotated))
            .unwrap();
        let rotated_key = *keys.epoch_key(KeyEpoch(3)).unwrap().expose_bytes();
        let sync = *keys.epoch_key(KeyEpoch(0)).unwrap().expose_bytes();
        let seed = *auth_seed(&s);
        let content = keys.content_key(&BlobId::from_bytes([4; 16])).unwrap();

        let debug = format!("{keys:?} {keys:#?}");
        for secret in [&sync, &seed, &rotated, &rotated_key, s.expose_bytes()] {
            assert_redacted(&debug, secret);
        }
        let epoch_debug = format!("{:?}", keys.epoch_key(KeyEpoch(3)).unwrap());
        assert_redacted(&epoch_debug, &rotated_key);
        assert_redacted(
            &format!("{:?}", keys.epoch_secret(KeyEpoch(3)).unwrap()),
            &rotated,
        );
        assert!(epoch_debug.contains("epoch: 3"));
        assert_redacted(&format!("{content:?}"), content.expose_bytes());
    }
}
