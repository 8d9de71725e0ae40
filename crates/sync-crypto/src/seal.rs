//! Sealing blobs: encrypt with the group's epoch key, sign with the sender's device key.
//!
//! The sealed layout is documented on [`seal`].
//!
//! The signature lets a receiver (and later, a relay that knows the member list) reject a
//! forged or tampered blob before decryption and attribute every blob to one device; the AEAD
//! alone would only prove that someone who holds the group key wrote it.

use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{Key, KeyInit, Tag, XChaCha20Poly1305, XNonce};
use ed25519_dalek::Signature;
use rand_core::CryptoRng;
use sync_types::{BlobId, DeviceId, GroupId};

use crate::device::DeviceKey;
use crate::error::{CryptoError, OpenError};
use crate::hello::strict_verifying_key;
use crate::schedule::{EpochKey, GroupKeys, KeyEpoch};

/// Version byte of the sealed format this build writes. It also reads version 1 (the same
/// layout without the sender's sequence number).
pub const SEAL_VERSION: u8 = 2;

/// The first sealed format: no sequence number.
const SEAL_VERSION_1: u8 = 1;

const SIG_LABEL: &[u8] = b"0k-sync/v1/seal-sig";
const EPOCH_AT: usize = 1;
const SENDER_AT: usize = 5;
const SEQ_AT: usize = 37;
/// Length of the header: version, epoch, sender, sequence number, nonce.
const HEADER_LEN: usize = 69;
/// Length of a version 1 header: version, epoch, sender, nonce.
const HEADER_LEN_1: usize = 61;
const TAG_LEN: usize = 16;
const SIG_LEN: usize = 64;

/// Bytes a sealed blob adds to its plaintext: header (69) + tag (16) + signature (64).
pub const SEAL_OVERHEAD: usize = HEADER_LEN + TAG_LEN + SIG_LEN;

/// Bytes a version 1 sealed blob adds to its plaintext (no sequence number).
const SEAL_OVERHEAD_1: usize = HEADER_LEN_1 + TAG_LEN + SIG_LEN;

/// A blob that passed every check.
#[derive(Clone, PartialEq, Eq)]
pub struct Opened {
    /// The decrypted content.
    pub plaintext: Vec<u8>,
    /// The device that sealed it (its signature verified).
    pub sender: DeviceId,
    /// The key epoch it was sealed under.
    pub epoch: KeyEpoch,
    /// The sender's sequence number (signed): 1 for its first blob in the group, one more for
    /// each after. `None` for a blob in the first sealed format, which has none.
    pub seq: Option<u64>,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("plaintext_len", &self.plaintext.len())
            .field("sender", &self.sender)
            .field("epoch", &self.epoch)
            .field("seq", &self.seq)
            .finish()
    }
}

/// Seals `plaintext` for `group` under `key` as `device`, as the device's blob number `seq` in
/// the group, with a random nonce from `rng`. Fails only for plaintexts too large for one AEAD
/// message (~256 GiB).
///
/// Sealed layout (version 2), all integers big-endian:
///
/// ```text
/// offset  len  field
/// 0       1    version = 2
/// 1       4    key epoch (u32)
/// 5       32   sender device id (Ed25519 public key)
/// 37      8    sender sequence number (u64): 1, 2, 3, … per sender and group
/// 45      24   XChaCha20-Poly1305 nonce (random)
/// 69      n+16 ciphertext ‖ Poly1305 tag
/// 85+n    64   Ed25519 signature by the sender's device key
/// ```
///
/// AEAD associated data: `version ‖ group_id(32) ‖ sender(32) ‖ blob_id(16) ‖ epoch(4) ‖
/// seq(8)`. Signed message: `"0k-sync/v1/seal-sig" ‖ group_id(32) ‖ blob_id(16) ‖ bytes
/// 0..85+n` (everything before the signature). Group and blob id are not carried in the blob:
/// the receiver supplies them from the relay's metadata, and the AAD and the signature bind
/// them. Version 1 is the same without the sequence number (header 61 bytes, AAD without it);
/// [`open`] reads both.
///
pub fn seal<R: CryptoRng + ?Sized>(
    rng: &mut R,
    key: &EpochKey,
    group: &GroupId,
    device: &DeviceKey,
    blob_id: &BlobId,
    seq: u64,
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let mut nonce = [0u8; 24];
    rng.fill_bytes(&mut nonce);
    let total = plaintext
        .len()
        .checked_add(SEAL_OVERHEAD)
        .ok_or(CryptoError::PlaintextTooLarge)?;
    let sender = device.device_id();
    let epoch = key.epoch();

    let mut out = Vec::with_capacity(total);
    out.push(SEAL_VERSION);
    out.extend_from_slice(&epoch.0.to_be_bytes());
    out.extend_from_slice(sender.as_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);

    let cipher = XChaCha20Poly1305::new(<&Key>::from(key.expose_bytes()));
    let aad = aad(SEAL_VERSION, group, &sender, blob_id, epoch, Some(seq));
    let tag = match out.get_mut(HEADER_LEN..) {
        Some(body) => cipher
            .encrypt_inout_detached(<&XNonce>::from(&nonce), &aad, body.into())
            .map_err(|_| CryptoError::PlaintextTooLarge)?,
        None => return Err(CryptoError::PlaintextTooLarge),
    };
    out.extend_from_slice(&tag);

    let sig = device.sign(&signed_message(group, blob_id, &out));
    out.extend_from_slice(&sig.to_bytes());
    Ok(out)
}

/// Opens a sealed blob pulled from `group` under `blob_id`, which the relay says `sender`
/// pushed. Checks, in order: that `keys` belong to `group`, length and version, header
/// sender = `sender`, the sender's signature (`verify_strict`), that `keys` holds the epoch,
/// then the AEAD. Returns the plaintext only if every check passes.
pub fn open(
    keys: &GroupKeys,
    group: &GroupId,
    blob_id: &BlobId,
    sender: &DeviceId,
    sealed: &[u8],
) -> Result<Opened, OpenError> {
    if keys.group_id() != *group {
        return Err(OpenError::GroupMismatch);
    }
    let len = sealed.len();
    let version = *sealed.first().ok_or(OpenError::Truncated { len })?;
    let overhead = match version {
        SEAL_VERSION => SEAL_OVERHEAD,
        SEAL_VERSION_1 => SEAL_OVERHEAD_1,
        other => {
            return Err(if len < SEAL_OVERHEAD_1 {
                OpenError::Truncated { len }
            } else {
                OpenError::UnsupportedVersion(other)
            });
        }
    };
    if len < overhead {
        return Err(OpenError::Truncated { len });
    }
    let header = Header::parse(sealed).ok_or(OpenError::Truncated { len })?;
    if header.sender != *sender {
        return Err(OpenError::WrongSender);
    }

    let sig_at = len
        .checked_sub(SIG_LEN)
        .ok_or(OpenError::Truncated { len })?;
    let (signed, sig_bytes) = sealed
        .split_at_checked(sig_at)
        .ok_or(OpenError::Truncated { len })?;
    let sig_bytes: &[u8; SIG_LEN] = sig_bytes
        .try_into()
        .map_err(|_| OpenError::Truncated { len })?;
    let verifying =
        strict_verifying_key(header.sender.as_bytes()).ok_or(OpenError::BadSignature)?;
    verifying
        .verify_strict(
            &signed_message(group, blob_id, signed),
            &Signature::from_bytes(sig_bytes),
        )
        .map_err(|_| OpenError::BadSignature)?;

    let key = keys
        .epoch_key(header.epoch)
        .ok_or(OpenError::UnknownEpoch(header.epoch))?;

    let ct_end = sig_at
        .checked_sub(TAG_LEN)
        .ok_or(OpenError::Truncated { len })?;
    let ciphertext = signed
        .get(header.len..ct_end)
        .ok_or(OpenError::Truncated { len })?;
    let tag = signed
        .get(ct_end..sig_at)
        .and_then(|t| <&Tag>::try_from(t).ok())
        .ok_or(OpenError::Truncated { len })?;

    let cipher = XChaCha20Poly1305::new(<&Key>::from(key.expose_bytes()));
    let aad = aad(
        header.version,
        group,
        &header.sender,
        blob_id,
        header.epoch,
        header.seq,
    );
    let mut plaintext = ciphertext.to_vec();
    if cipher
        .decrypt_inout_detached(
            <&XNonce>::from(&header.nonce),
            &aad,
            plaintext.as_mut_slice().into(),
            tag,
        )
        .is_err()
    {
        // decrypt_in_place_detached leaves the buffer as ciphertext on failure; wipe anyway.
        zeroize::Zeroize::zeroize(&mut plaintext);
        return Err(OpenError::Decrypt);
    }
    Ok(Opened {
        plaintext,
        sender: header.sender,
        epoch: header.epoch,
        seq: header.seq,
    })
}

struct Header {
    version: u8,
    epoch: KeyEpoch,
    sender: DeviceId,
    /// `None` in version 1.
    seq: Option<u64>,
    nonce: [u8; 24],
    /// Where the ciphertext starts.
    len: usize,
}

impl Header {
    /// The header of a version 1 or 2 blob (the caller checked the version).
    fn parse(sealed: &[u8]) -> Option<Header> {
        let version = *sealed.first()?;
        let epoch: [u8; 4] = sealed.get(EPOCH_AT..SENDER_AT)?.try_into().ok()?;
        let sender: [u8; 32] = sealed.get(SENDER_AT..SEQ_AT)?.try_into().ok()?;
        let (seq, nonce_at, len) = if version == SEAL_VERSION_1 {
            (None, SEQ_AT, HEADER_LEN_1)
        } else {
            let seq: [u8; 8] = sealed.get(SEQ_AT..SEQ_AT + 8)?.try_into().ok()?;
            (Some(u64::from_be_bytes(seq)), SEQ_AT + 8, HEADER_LEN)
        };
        let nonce: [u8; 24] = sealed.get(nonce_at..len)?.try_into().ok()?;
        Some(Header {
            version,
            epoch: KeyEpoch(u32::from_be_bytes(epoch)),
            sender: DeviceId::from_bytes(sender),
            seq,
            nonce,
            len,
        })
    }
}

/// `version ‖ group ‖ sender ‖ blob_id ‖ epoch(u32 BE)`, then `‖ seq(u64 BE)` from version 2.
fn aad(
    version: u8,
    group: &GroupId,
    sender: &DeviceId,
    blob_id: &BlobId,
    epoch: KeyEpoch,
    seq: Option<u64>,
) -> Vec<u8> {
    let mut aad = Vec::with_capacity(1 + 32 + 32 + 16 + 4 + 8);
    aad.push(version);
    aad.extend_from_slice(group.as_bytes());
    aad.extend_from_slice(sender.as_bytes());
    aad.extend_from_slice(blob_id.as_bytes());
    aad.extend_from_slice(&epoch.0.to_be_bytes());
    if let Some(seq) = seq {
        aad.extend_from_slice(&seq.to_be_bytes());
    }
    aad
}

/// `"0k-sync/v1/seal-sig" ‖ group ‖ blob_id ‖ signed_part`.
fn signed_message(group: &GroupId, blob_id: &BlobId, signed_part: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity((SIG_LABEL.len() + 32 + 16).saturating_add(signed_part.len()));
    m.extend_from_slice(SIG_LABEL);
    m.extend_from_slice(group.as_bytes());
    m.extend_from_slice(blob_id.as_bytes());
    m.extend_from_slice(signed_part);
    m
}

#[cfg(test)]
mod tests;
