//! Group membership: which devices hold the group's keys, which of them may change that, and
//! the signed records that say so.
//!
//! A group's membership is a chain of [`GroupRecord`]s, numbered 1, 2, 3 … and each naming the
//! hash of the one before. Record 1 (the genesis) is written by the group's creator and names it
//! the first admin. Every later record is signed twice: by an admin's device key (who decided)
//! and by the group auth key of the epoch it replaces (someone who holds the group's current
//! keys). A record either keeps the key epoch (admins promoted or demoted, members added) or
//! starts the next one (a rotation); members left out of a rotation are revoked for good.
//!
//! The relay checks every record with [`GroupState::apply`] before it stores it, and so does
//! every device before it believes one: a relay can withhold records, but it cannot forge one,
//! reorder them, or replay one in another group.
//!
//! An [`Enrollment`] is how a device announces its hybrid KEM public key (the key rotations seal
//! new epoch secrets to) and its name, sealed under the epoch's blob key so the relay sees only
//! ciphertext. It is signed by the device and by the auth key of the epoch it joined in.
//!
//! Epoch secrets travel in [`seal_grant`] envelopes (hybrid KEM, see `kem.rs`). A grant is not
//! signed: a device accepts an epoch secret only if the auth key it derives equals the one the
//! record chain names for that epoch (epoch 0: the group id), so a forged grant is useless.

use std::collections::{BTreeMap, BTreeSet};

use chacha20poly1305::aead::{Aead, Payload as AeadPayload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use ed25519_dalek::Signature;
use rand_core::CryptoRng;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteArray;
use sha2::{Digest, Sha256};
use sync_types::{DeviceId, GroupId};
use zeroize::Zeroizing;

use crate::device::DeviceKey;
use crate::hello::{HelloChallenge, HelloSignature, strict_verifying_key};
use crate::kem::{EnvelopeContext, KemKeypair, KemPublicKey, open_envelope, seal_envelope};
use crate::schedule::{GroupKeys, KeyEpoch};
use crate::secrets::EpochSecret;
use signed::{Signed, verify};

/// Most devices a group's membership may name (a rotation seals one envelope to each).
pub const MAX_MEMBERS: usize = 512;
/// Longest sealed device name in an enrollment (bytes).
pub const MAX_SEALED_NAME: usize = 256;
/// Longest device name an enrollment can seal (bytes of UTF-8).
pub const MAX_NAME: usize = MAX_SEALED_NAME - NAME_NONCE_LEN - NAME_TAG_LEN;
/// Longest encoded record accepted (bytes).
pub const MAX_RECORD_BYTES: usize = 2 * MAX_MEMBERS * 36 + 512;
/// Longest encoded enrollment accepted (bytes).
pub const MAX_ENROLLMENT_BYTES: usize = 2048;
/// Most epoch secrets one grant may carry.
pub const MAX_GRANT_EPOCHS: usize = 4096;

const RECORD_LABEL: &[u8] = b"0k-sync/v1/group-record";
const RECORD_HASH_LABEL: &[u8] = b"0k-sync/v1/group-record-hash";
const ENROLL_LABEL: &[u8] = b"0k-sync/v1/enrollment";
const NAME_LABEL: &[u8] = b"0k-sync/v1/device-name";
const NAME_NONCE_LEN: usize = 24;
const NAME_TAG_LEN: usize = 16;

/// Why a membership record, enrollment or grant was refused. Peer misbehaviour (a hostile or
/// confused device or relay), never a local fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MembershipError {
    /// The bytes are not a record, enrollment or grant of this format, or exceed its bounds.
    #[error("malformed membership data: {0}")]
    Malformed(&'static str),
    /// The record or enrollment names another group.
    #[error("membership data for another group")]
    WrongGroup,
    /// The record is not the next in the chain (a concurrent change won, or a replay).
    #[error("record {got} is not the next one (expected {expected})")]
    NotNext {
        /// The sequence number the chain expects.
        expected: u64,
        /// The sequence number of the record.
        got: u64,
    },
    /// The record does not name the hash of the chain's last record.
    #[error("record does not follow the chain's last record")]
    BrokenChain,
    /// The record's signer is not an admin of the group (or was revoked).
    #[error("record signed by a device that is not an admin")]
    NotAdmin,
    /// A device signature does not verify.
    #[error("device signature does not verify")]
    BadDeviceSignature,
    /// The group auth signature does not verify under the epoch's auth key.
    #[error("group auth signature does not verify")]
    BadAuthSignature,
    /// The record's epoch is neither the current one nor the next.
    #[error("record moves the key epoch from {from} to {to}")]
    EpochJump {
        /// The chain's current epoch.
        from: u32,
        /// The record's epoch.
        to: u32,
    },
    /// The membership lists break a rule: admins must be members, the signer must stay a
    /// member, a change without rotation may not remove members, a revoked device cannot come
    /// back, a rotation needs a new auth key, the genesis is epoch 0 under the group id.
    #[error("membership rule broken: {0}")]
    Rule(&'static str),
    /// The enrollment names a key epoch the chain does not know.
    #[error("enrollment names unknown key epoch {0}")]
    UnknownEpoch(u32),
    /// The enrolling device was revoked from the group.
    #[error("device was revoked from the group")]
    Revoked,
    /// A granted epoch secret does not give the auth key the chain names for its epoch.
    #[error("granted secret for epoch {0} does not match the group's records")]
    ForgedGrant(u32),
}

/// The signed part of a [`GroupRecord`], in wire order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct RecordBody {
    group: GroupId,
    seq: u64,
    prev: ByteArray<32>,
    epoch: KeyEpoch,
    auth_key: ByteArray<32>,
    admins: Vec<DeviceId>,
    members: Vec<DeviceId>,
    revoked: Vec<DeviceId>,
    signer: DeviceId,
}

/// One change of a group's membership. Encoded as a MessagePack array `[body, device_sig,
/// auth_sig]`; both signatures are over `"0k-sync/v1/group-record" ‖ MessagePack(body)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GroupRecord(Signed<RecordBody>);

/// What a record changes, for [`GroupRecord::next`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Keep the epoch; the admin set becomes `admins` (each a member).
    Admins(Vec<DeviceId>),
    /// Keep the epoch; list these enrolled devices as members.
    Admit(Vec<DeviceId>),
    /// Start the next epoch (its secret already added to the signer's keys) held by exactly
    /// `keep`; every listed member not kept is revoked, and so is every device in `revoke`
    /// (enrolled devices the records never listed).
    Rotate {
        /// The members of the new epoch.
        keep: Vec<DeviceId>,
        /// Other devices to revoke.
        revoke: Vec<DeviceId>,
    },
}

/// What [`GroupState::apply`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The first record: the group's first admin.
    Genesis,
    /// Admins or members changed within the epoch.
    Admins,
    /// A new key epoch; `revoked` lists the members it left out.
    Rotation {
        /// The new epoch.
        epoch: KeyEpoch,
        /// Devices revoked by this rotation.
        revoked: Vec<DeviceId>,
    },
}

impl GroupRecord {
    /// The genesis record of a group: `creator` is its first admin and member.
    pub fn genesis(keys: &GroupKeys, creator: &DeviceKey) -> Result<Self, MembershipError> {
        let body = RecordBody {
            group: keys.group_id(),
            seq: 1,
            prev: ByteArray::new([0; 32]),
            epoch: KeyEpoch::INITIAL,
            auth_key: ByteArray::new(*keys.group_id().as_bytes()),
            admins: vec![creator.device_id()],
            members: vec![creator.device_id()],
            revoked: Vec::new(),
            signer: creator.device_id(),
        };
        Self::sign(body, keys, KeyEpoch::INITIAL, creator)
    }

    /// The record that applies `change` after `state`'s last record, signed by `signer` and by
    /// the auth key of `state`'s epoch (which `keys` must hold, with the next epoch's secret
    /// for a rotation).
    pub fn next(
        state: &GroupState,
        keys: &GroupKeys,
        signer: &DeviceKey,
        change: Change,
    ) -> Result<Self, MembershipError> {
        let me = signer.device_id();
        let mut members: Vec<DeviceId> = state.members.iter().copied().collect();
        let mut revoked = Vec::new();
        let (epoch, admins) = match change {
            Change::Admins(admins) => {
                for a in &admins {
                    if !members.contains(a) {
                        members.push(*a);
                    }
                }
                (state.epoch, admins)
            }
            Change::Admit(new) => {
                members.extend(new);
                (state.epoch, state.admins.iter().copied().collect())
            }
            Change::Rotate { keep, revoke } => {
                let admins = state
                    .admins
                    .iter()
                    .filter(|a| keep.contains(a))
                    .copied()
                    .collect();
                revoked = revoke
                    .into_iter()
                    .filter(|d| !keep.contains(d) && !state.members.contains(d))
                    .collect();
                members = keep;
                (KeyEpoch(state.epoch.0.saturating_add(1)), admins)
            }
        };
        let auth_key = keys
            .auth_public(epoch)
            .ok_or(MembershipError::UnknownEpoch(epoch.0))?;
        let body = RecordBody {
            group: state.group,
            seq: state.seq + 1,
            prev: ByteArray::new(state.head),
            epoch,
            auth_key: ByteArray::new(auth_key),
            admins: dedup(admins),
            members: dedup(members),
            revoked: dedup(revoked),
            signer: me,
        };
        Self::sign(body, keys, state.epoch, signer)
    }

    fn sign(
        body: RecordBody,
        keys: &GroupKeys,
        auth_epoch: KeyEpoch,
        signer: &DeviceKey,
    ) -> Result<Self, MembershipError> {
        Signed::sign(RECORD_LABEL, body, keys, auth_epoch, signer).map(Self)
    }

    /// The record's bytes on the wire.
    pub fn encode(&self) -> Vec<u8> {
        self.0.encode()
    }

    /// Reads a record; bounds are checked, signatures are not (see [`GroupState::apply`]).
    pub fn decode(bytes: &[u8]) -> Result<Self, MembershipError> {
        let record = Self(Signed::decode(
            bytes,
            MAX_RECORD_BYTES,
            "record too long",
            "not a group record",
        )?);
        let b = &record.0.body;
        if b.admins.len() > MAX_MEMBERS
            || b.members.len() > MAX_MEMBERS
            || b.revoked.len() > MAX_MEMBERS
        {
            return Err(MembershipError::Malformed("too many devices"));
        }
        Ok(record)
    }

    /// The hash the next record names: SHA-256 over a label and the encoded record.
    pub fn hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(RECORD_HASH_LABEL);
        h.update(self.encode());
        h.finalize().into()
    }

    /// The record's group.
    pub fn group(&self) -> GroupId {
        self.0.body.group
    }

    /// Its sequence number (1 for the genesis).
    pub fn seq(&self) -> u64 {
        self.0.body.seq
    }

    /// The key epoch after this record.
    pub fn epoch(&self) -> KeyEpoch {
        self.0.body.epoch
    }

    /// The admin that signed it.
    pub fn signer(&self) -> DeviceId {
        self.0.body.signer
    }

    /// The members after this record.
    pub fn members(&self) -> &[DeviceId] {
        &self.0.body.members
    }

    /// The admins after this record.
    pub fn admins(&self) -> &[DeviceId] {
        &self.0.body.admins
    }
}

fn dedup(mut ids: Vec<DeviceId>) -> Vec<DeviceId> {
    let mut seen = BTreeSet::new();
    ids.retain(|d| seen.insert(*d));
    ids
}

/// A group's membership as its record chain says: epoch, auth key of every epoch, admins,
/// members and revoked devices. The relay and every device build it by applying records in
/// order; both refuse what [`GroupState::apply`] refuses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupState {
    group: GroupId,
    seq: u64,
    head: [u8; 32],
    epoch: KeyEpoch,
    auth_keys: BTreeMap<KeyEpoch, [u8; 32]>,
    admins: BTreeSet<DeviceId>,
    members: BTreeSet<DeviceId>,
    revoked: BTreeMap<DeviceId, KeyEpoch>,
}

impl GroupState {
    /// A group without records: epoch 0 under the group id, no admins yet.
    pub fn new(group: GroupId) -> Self {
        Self {
            group,
            seq: 0,
            head: [0; 32],
            epoch: KeyEpoch::INITIAL,
            auth_keys: BTreeMap::from([(KeyEpoch::INITIAL, *group.as_bytes())]),
            admins: BTreeSet::new(),
            members: BTreeSet::new(),
            revoked: BTreeMap::new(),
        }
    }

    /// Checks `record` against the chain and applies it; on error the state is unchanged.
    pub fn apply(&mut self, record: &GroupRecord) -> Result<Applied, MembershipError> {
        let b = &record.0.body;
        if b.group != self.group {
            return Err(MembershipError::WrongGroup);
        }
        if b.seq != self.seq + 1 {
            return Err(MembershipError::NotNext {
                expected: self.seq + 1,
                got: b.seq,
            });
        }
        if b.prev.into_array() != self.head {
            return Err(MembershipError::BrokenChain);
        }
        let admins: BTreeSet<DeviceId> = b.admins.iter().copied().collect();
        let members: BTreeSet<DeviceId> = b.members.iter().copied().collect();
        if admins.len() != b.admins.len() || members.len() != b.members.len() {
            return Err(MembershipError::Malformed("a device is listed twice"));
        }
        let genesis = self.seq == 0;
        let allowed = if genesis { &admins } else { &self.admins };
        if !allowed.contains(&b.signer) {
            return Err(MembershipError::NotAdmin);
        }
        let current_auth = self.auth_keys.get(&self.epoch).copied().unwrap_or([0; 32]);
        record.0.verify(RECORD_LABEL, &b.signer, &current_auth)?;
        if admins.is_empty() || !admins.is_subset(&members) {
            return Err(MembershipError::Rule(
                "admins must be members, at least one",
            ));
        }
        if !members.contains(&b.signer) {
            return Err(MembershipError::Rule("the signer must stay a member"));
        }
        if members.iter().any(|d| self.revoked.contains_key(d)) {
            return Err(MembershipError::Rule("a revoked device cannot come back"));
        }
        let auth_key = b.auth_key.into_array();
        let applied = if genesis {
            if b.epoch != KeyEpoch::INITIAL
                || auth_key != *self.group.as_bytes()
                || !b.revoked.is_empty()
            {
                return Err(MembershipError::Rule(
                    "the genesis is epoch 0 under the group id",
                ));
            }
            Applied::Genesis
        } else if b.epoch == self.epoch {
            if auth_key != current_auth {
                return Err(MembershipError::Rule("a new auth key needs a new epoch"));
            }
            if !self.members.is_subset(&members) {
                return Err(MembershipError::Rule("removing members needs a rotation"));
            }
            if !b.revoked.is_empty() {
                return Err(MembershipError::Rule("revoking needs a rotation"));
            }
            Applied::Admins
        } else if b.epoch.0 == self.epoch.0.saturating_add(1) && b.epoch != self.epoch {
            if self.auth_keys.values().any(|k| *k == auth_key)
                || strict_verifying_key(&auth_key).is_none()
            {
                return Err(MembershipError::Rule("a rotation needs a new auth key"));
            }
            if b.revoked.iter().any(|d| members.contains(d)) {
                return Err(MembershipError::Rule("a device is both kept and revoked"));
            }
            let mut revoked: Vec<DeviceId> = self.members.difference(&members).copied().collect();
            for d in &b.revoked {
                if !revoked.contains(d) {
                    revoked.push(*d);
                }
            }
            Applied::Rotation {
                epoch: b.epoch,
                revoked,
            }
        } else {
            return Err(MembershipError::EpochJump {
                from: self.epoch.0,
                to: b.epoch.0,
            });
        };
        if let Applied::Rotation { epoch, revoked } = &applied {
            for d in revoked {
                self.revoked.insert(*d, *epoch);
            }
            self.auth_keys.insert(*epoch, auth_key);
            self.epoch = *epoch;
        }
        self.seq = b.seq;
        self.head = record.hash();
        self.admins = admins;
        self.members = members;
        Ok(applied)
    }

    /// Checks an enrollment's signatures and that its device may enroll: the epoch is known,
    /// the device was not revoked.
    pub fn check_enrollment(&self, e: &Enrollment) -> Result<(), MembershipError> {
        let b = &e.0.body;
        if b.group != self.group {
            return Err(MembershipError::WrongGroup);
        }
        if self.revoked.contains_key(&b.device) {
            return Err(MembershipError::Revoked);
        }
        let auth = self
            .auth_keys
            .get(&b.epoch)
            .ok_or(MembershipError::UnknownEpoch(b.epoch.0))?;
        e.0.verify(ENROLL_LABEL, &b.device, auth)
    }

    /// Which epoch's auth key signed this Hello, if any: the current epoch admits a session,
    /// an older one means the device missed a rotation (or was revoked).
    pub fn hello_epoch(
        &self,
        challenge: &HelloChallenge,
        sig: &HelloSignature,
    ) -> Option<KeyEpoch> {
        if challenge.group() != self.group {
            return None;
        }
        self.auth_keys
            .iter()
            .rev()
            .find(|(_, key)| verify(key, challenge.as_bytes(), &sig.0))
            .map(|(epoch, _)| *epoch)
    }

    /// Checks granted epoch secrets against the chain: each must give the auth key the chain
    /// names for its epoch (epoch 0: the group id).
    pub fn check_grant(&self, secrets: &[(KeyEpoch, EpochSecret)]) -> Result<(), MembershipError> {
        for (epoch, secret) in secrets {
            let expected = self
                .auth_keys
                .get(epoch)
                .ok_or(MembershipError::UnknownEpoch(epoch.0))?;
            let derived = GroupKeys::from_epoch(self.group, *epoch, secret.clone())
                .ok()
                .and_then(|k| k.auth_public(*epoch));
            if derived.as_ref() != Some(expected) {
                return Err(MembershipError::ForgedGrant(epoch.0));
            }
        }
        Ok(())
    }

    /// The group.
    pub fn group(&self) -> GroupId {
        self.group
    }

    /// Sequence number of the last record applied (0: none yet).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Hash of the last record applied (zeros: none yet).
    pub fn head(&self) -> [u8; 32] {
        self.head
    }

    /// The current key epoch.
    pub fn epoch(&self) -> KeyEpoch {
        self.epoch
    }

    /// The auth public key of `epoch`, if the chain reached it.
    pub fn auth_key(&self, epoch: KeyEpoch) -> Option<[u8; 32]> {
        self.auth_keys.get(&epoch).copied()
    }

    /// The current admins.
    pub fn admins(&self) -> &BTreeSet<DeviceId> {
        &self.admins
    }

    /// The members listed by the records (devices that enrolled since may not be listed yet).
    pub fn members(&self) -> &BTreeSet<DeviceId> {
        &self.members
    }

    /// Every revoked device with the first epoch it may not hold.
    pub fn revoked(&self) -> impl Iterator<Item = (DeviceId, KeyEpoch)> + '_ {
        self.revoked.iter().map(|(d, e)| (*d, *e))
    }

    /// The first epoch `device` may not hold, if it was revoked.
    pub fn revoked_at(&self, device: &DeviceId) -> Option<KeyEpoch> {
        self.revoked.get(device).copied()
    }
}

/// Epoch secrets in a grant, in wire order: `[[epoch, secret], …]`.
#[derive(Serialize, Deserialize)]
struct Grant(Vec<(KeyEpoch, ByteArray<32>)>);

/// Seals epoch secrets to one device: a hybrid KEM envelope (X25519 + ML-KEM-768) bound to the
/// group, the epoch `ctx_epoch` (the epoch the grant is issued in), sender and recipient.
pub fn seal_grant<R: CryptoRng + ?Sized>(
    rng: &mut R,
    group: GroupId,
    ctx_epoch: KeyEpoch,
    sender: DeviceId,
    recipient: DeviceId,
    recipient_kem: &KemPublicKey,
    secrets: &[(KeyEpoch, EpochSecret)],
) -> Result<Vec<u8>, crate::CryptoError> {
    let grant = Grant(
        secrets
            .iter()
            .map(|(e, s)| (*e, ByteArray::new(*s.expose_bytes())))
            .collect(),
    );
    let payload = Zeroizing::new(rmp_serde::to_vec(&grant).unwrap_or_default());
    let ctx = EnvelopeContext {
        group,
        epoch: ctx_epoch,
        sender,
        recipient,
    };
    seal_envelope(rng, recipient_kem, &ctx, &payload)
}

/// Opens a grant sealed to `keypair`'s device. The caller checks the secrets with
/// [`GroupState::check_grant`] before using them.
pub fn open_grant(
    keypair: &KemKeypair,
    group: GroupId,
    ctx_epoch: KeyEpoch,
    sender: DeviceId,
    recipient: DeviceId,
    envelope: &[u8],
) -> Result<Vec<(KeyEpoch, EpochSecret)>, GrantError> {
    let ctx = EnvelopeContext {
        group,
        epoch: ctx_epoch,
        sender,
        recipient,
    };
    let payload = open_envelope(keypair, &ctx, envelope)?;
    let grant: Grant =
        rmp_serde::from_slice(&payload).map_err(|_| MembershipError::Malformed("not a grant"))?;
    if grant.0.len() > MAX_GRANT_EPOCHS {
        return Err(MembershipError::Malformed("too many epochs in a grant").into());
    }
    Ok(grant
        .0
        .into_iter()
        .map(|(e, s)| (e, EpochSecret::from_bytes(s.into_array())))
        .collect())
}

/// Why a grant could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GrantError {
    /// The envelope does not open for this device and context.
    #[error(transparent)]
    Envelope(#[from] crate::CryptoError),
    /// It opened, but holds no valid grant.
    #[error(transparent)]
    Membership(#[from] MembershipError),
}

mod enrollment;
mod signed;

pub use enrollment::Enrollment;

#[cfg(test)]
mod tests;
