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

use crate::hello::{HelloChallenge, HelloSignature};
use crate::secrets::GroupSecret;

const SCHEDULE_SALT: &[u8] = b"0k-sync/v1/key-schedule";
const LABEL_SYNC_KEY: &[u8] = b"0k-sync/v1/sync-key";
const LABEL_AUTH_SEED: &[u8] = b"0k-sync/v1/auth-seed";
const LABEL_CONTENT_KEY: &[u8] = b"0k-sync/v1/content-key";

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
    /// Wraps a key received through rotation.
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

/// All keys of one group: blob keys by epoch, the group auth keypair, and the secret that
/// content keys derive from. Zeroized on drop; `Debug` shows only the group id and epochs.
///
/// ```text
/// PRK          = HKDF-Extract(salt = "0k-sync/v1/key-schedule", IKM = group secret)
/// sync_key     = HKDF-Expand(PRK, "0k-sync/v1/sync-key", 32)            (epoch 0 blob key)
/// auth_seed    = HKDF-Expand(PRK, "0k-sync/v1/auth-seed", 32)           (Ed25519 seed)
/// content_key  = HKDF-Expand(PRK, "0k-sync/v1/content-key" ‖ blob_id, 32)
/// GroupId      = Ed25519 public key of auth_seed
/// ```
///
#[derive(Clone)]
pub struct GroupKeys {
    secret: GroupSecret,
    auth: SigningKey,
    group_id: GroupId,
    epochs: BTreeMap<KeyEpoch, EpochKey>,
}

impl GroupKeys {
    /// Derives every group key from the secret (see [`GroupKeys`] for the labels).
    pub fn derive(secret: &GroupSecret) -> Self {
        let hk = schedule_hkdf(secret);
        let sync_key = expand(&hk, &[LABEL_SYNC_KEY]);
        let auth_seed = expand(&hk, &[LABEL_AUTH_SEED]);
        let auth = SigningKey::from_bytes(&auth_seed);
        let group_id = GroupId::from_bytes(auth.verifying_key().to_bytes());

        let mut epochs = BTreeMap::new();
        epochs.insert(
            KeyEpoch::INITIAL,
            EpochKey {
                epoch: KeyEpoch::INITIAL,
                key: sync_key,
            },
        );
        Self {
            secret: secret.clone(),
            auth,
            group_id,
            epochs,
        }
    }

    /// The group id: the public key of the group auth keypair.
    pub fn group_id(&self) -> GroupId {
        self.group_id
    }

    /// The blob key of `epoch`, if this device holds it.
    pub fn epoch_key(&self, epoch: KeyEpoch) -> Option<EpochKey> {
        self.epochs.get(&epoch).cloned()
    }

    /// The newest epoch this device holds (the one to seal new blobs with).
    pub fn current_epoch(&self) -> KeyEpoch {
        self.epochs
            .keys()
            .next_back()
            .copied()
            .unwrap_or(KeyEpoch::INITIAL)
    }

    /// Adds (or replaces) a blob key received through rotation. Epoch 0 is derived from the
    /// secret and cannot be replaced; returns `false` if `key` tries to.
    pub fn insert_epoch_key(&mut self, key: EpochKey) -> bool {
        if key.epoch == KeyEpoch::INITIAL {
            return false;
        }
        self.epochs.insert(key.epoch, key);
        true
    }

    /// The key of the large content item `blob_id`.
    pub fn content_key(&self, blob_id: &BlobId) -> ContentKey {
        let hk = schedule_hkdf(&self.secret);
        ContentKey(expand(&hk, &[LABEL_CONTENT_KEY, blob_id.as_bytes()]))
    }

    /// Signs a Hello challenge with the group auth key (proves membership to the relay).
    pub fn sign_hello(&self, challenge: &HelloChallenge) -> HelloSignature {
        HelloSignature(self.auth.sign(challenge.as_bytes()).to_bytes())
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

/// HKDF-Extract over the group secret with the fixed schedule salt.
fn schedule_hkdf(secret: &GroupSecret) -> Hkdf<Sha256> {
    Hkdf::<Sha256>::new(Some(SCHEDULE_SALT), secret.expose_bytes())
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
        expand(&schedule_hkdf(secret), &[LABEL_AUTH_SEED])
    }

    #[test]
    fn labels_give_distinct_keys() {
        let s = secret(1);
        let keys = GroupKeys::derive(&s);
        let sync = *keys.epoch_key(KeyEpoch(0)).unwrap().expose_bytes();
        let seed = *auth_seed(&s);
        let c1 = *keys
            .content_key(&BlobId::from_bytes([1; 16]))
            .expose_bytes();
        let c2 = *keys
            .content_key(&BlobId::from_bytes([2; 16]))
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
    fn derive_is_deterministic_and_secret_dependent() {
        let a = GroupKeys::derive(&secret(1));
        let b = GroupKeys::derive(&secret(1));
        let c = GroupKeys::derive(&secret(2));
        assert_eq!(a.group_id(), b.group_id());
        assert_ne!(a.group_id(), c.group_id());
        let blob = BlobId::from_bytes([9; 16]);
        assert_eq!(
            a.content_key(&blob).expose_bytes(),
            b.content_key(&blob).expose_bytes()
        );
        assert_ne!(
            a.content_key(&blob).expose_bytes(),
            c.content_key(&blob).expose_bytes()
        );
    }

    #[test]
    fn epochs_beyond_zero_come_from_rotation() {
        let mut keys = GroupKeys::derive(&secret(1));
        assert_eq!(keys.current_epoch(), KeyEpoch(0));
        assert!(keys.epoch_key(KeyEpoch(1)).is_none());
        assert!(keys.insert_epoch_key(EpochKey::from_bytes(KeyEpoch(1), [5; 32])));
        assert_eq!(keys.current_epoch(), KeyEpoch(1));
        assert_eq!(
            keys.epoch_key(KeyEpoch(1)).unwrap().expose_bytes(),
            &[5; 32]
        );
        // Epoch 0 is tied to the secret and cannot be overwritten.
        let before = *keys.epoch_key(KeyEpoch(0)).unwrap().expose_bytes();
        assert!(!keys.insert_epoch_key(EpochKey::from_bytes(KeyEpoch(0), [6; 32])));
        assert_eq!(keys.epoch_key(KeyEpoch(0)).unwrap().expose_bytes(), &before);
    }

    #[test]
    fn debug_of_every_key_type_is_redacted() {
        let s = GroupSecret::from_bytes(std::array::from_fn(|i| 0x30 + i as u8));
        let mut keys = GroupKeys::derive(&s);
        let rotated: [u8; 32] = std::array::from_fn(|i| 0x60 + i as u8);
        keys.insert_epoch_key(EpochKey::from_bytes(KeyEpoch(3), rotated));
        let sync = *keys.epoch_key(KeyEpoch(0)).unwrap().expose_bytes();
        let seed = *auth_seed(&s);
        let content = keys.content_key(&BlobId::from_bytes([4; 16]));

        let debug = format!("{keys:?} {keys:#?}");
        for secret in [&sync, &seed, &rotated, s.expose_bytes()] {
            assert_redacted(&debug, secret);
        }
        let epoch_debug = format!("{:?}", keys.epoch_key(KeyEpoch(3)).unwrap());
        assert_redacted(&epoch_debug, &rotated);
        assert!(epoch_debug.contains("epoch: 3"));
        assert_redacted(&format!("{content:?}"), content.expose_bytes());
    }
}
