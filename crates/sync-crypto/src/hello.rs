//! Hello: a device proves to the relay that it can sign for a group, bound to one connection.

use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use sync_types::{DeviceId, GroupId};

use crate::error::CryptoError;

const HELLO_LABEL: &[u8; 16] = b"0k-sync/v1/hello";

/// Length of a Hello transcript: label(16) ‖ binding(32) ‖ relay id(32) ‖ device(32) ‖ group(32).
pub const HELLO_TRANSCRIPT_LEN: usize = 16 + 32 * 4;

/// The bytes a Hello signature covers:
/// `"0k-sync/v1/hello" ‖ binding ‖ relay_id ‖ device ‖ group`, all fixed length.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct HelloChallenge([u8; HELLO_TRANSCRIPT_LEN]);

impl HelloChallenge {
    /// Builds the transcript.
    ///
    /// `binding`: 32 bytes the relay and client both know for this connection only (the TLS
    /// exporter value of the QUIC connection, or a relay nonce sent first), so a signature
    /// cannot be replayed on another connection.
    pub fn new(
        binding: &[u8; 32],
        relay_id: &[u8; 32],
        device: &DeviceId,
        group: &GroupId,
    ) -> Self {
        let mut t = [0u8; HELLO_TRANSCRIPT_LEN];
        let parts: [&[u8]; 5] = [
            HELLO_LABEL,
            binding,
            relay_id,
            device.as_bytes(),
            group.as_bytes(),
        ];
        let mut at = 0;
        for part in parts {
            if let Some(dst) = t.get_mut(at..at + part.len()) {
                dst.copy_from_slice(part);
            }
            at += part.len();
        }
        Self(t)
    }

    /// The group the transcript names.
    pub fn group(&self) -> GroupId {
        let mut g = [0u8; 32];
        if let Some(src) = self.0.get(HELLO_TRANSCRIPT_LEN - 32..) {
            g.copy_from_slice(src);
        }
        GroupId::from_bytes(g)
    }

    /// The transcript bytes.
    pub fn as_bytes(&self) -> &[u8; HELLO_TRANSCRIPT_LEN] {
        &self.0
    }
}

/// An Ed25519 signature by the group auth key over a [`HelloChallenge`].
/// Serializes as 64 raw bytes (MessagePack `bin`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct HelloSignature(#[serde(with = "serde_bytes")] pub [u8; 64]);

/// Checks a Hello signature with the group id as the verifying key. Rejects a challenge that
/// names another group, group ids that are not valid, non-weak Ed25519 keys, and
/// non-canonical signatures (`verify_strict`).
pub fn verify_hello(
    group: &GroupId,
    challenge: &HelloChallenge,
    sig: &HelloSignature,
) -> Result<(), CryptoError> {
    if challenge.group() != *group {
        return Err(CryptoError::HelloGroupMismatch);
    }
    let key = strict_verifying_key(group.as_bytes()).ok_or(CryptoError::InvalidGroupKey)?;
    key.verify_strict(challenge.as_bytes(), &Signature::from_bytes(&sig.0))
        .map_err(|_| CryptoError::BadHelloSignature)
}

/// A verifying key from 32 bytes, or `None` if the bytes are not a valid, non-weak key.
pub(crate) fn strict_verifying_key(bytes: &[u8; 32]) -> Option<VerifyingKey> {
    let key = VerifyingKey::from_bytes(bytes).ok()?;
    if key.is_weak() {
        return None;
    }
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GroupKeys, GroupSecret};

    fn keys(fill: u8) -> GroupKeys {
        GroupKeys::derive(&GroupSecret::from_bytes([fill; 32]))
    }

    fn challenge(group: &GroupId) -> HelloChallenge {
        HelloChallenge::new(&[1; 32], &[2; 32], &DeviceId::from_bytes([3; 32]), group)
    }

    /// Asserts that `sig` does not prove membership of `group` for `ch`.
    fn assert_bad_signature(group: &GroupId, ch: &HelloChallenge, sig: &HelloSignature) {
        assert_eq!(
            verify_hello(group, ch, sig),
            Err(CryptoError::BadHelloSignature)
        );
    }

    #[test]
    fn transcript_layout() {
        let group = GroupId::from_bytes([4; 32]);
        let t = challenge(&group);
        let t = t.as_bytes();
        assert_eq!(&t[..16], b"0k-sync/v1/hello");
        assert_eq!(&t[16..48], &[1; 32]);
        assert_eq!(&t[48..80], &[2; 32]);
        assert_eq!(&t[80..112], &[3; 32]);
        assert_eq!(&t[112..], &[4; 32]);
    }

    #[test]
    fn member_signature_verifies() {
        let k = keys(1);
        let ch = challenge(&k.group_id());
        verify_hello(&k.group_id(), &ch, &k.sign_hello(&ch)).unwrap();
    }

    #[test]
    fn signature_is_bound_to_every_transcript_field() {
        let k = keys(1);
        let g = k.group_id();
        let sig = k.sign_hello(&challenge(&g));
        let d = DeviceId::from_bytes([3; 32]);
        let other_d = DeviceId::from_bytes([9; 32]);
        for ch in [
            HelloChallenge::new(&[9; 32], &[2; 32], &d, &g), // another connection
            HelloChallenge::new(&[1; 32], &[9; 32], &d, &g), // another relay
            HelloChallenge::new(&[1; 32], &[2; 32], &other_d, &g), // another device
        ] {
            assert_bad_signature(&g, &ch, &sig);
        }
    }

    #[test]
    fn challenge_for_another_group_is_refused() {
        let k = keys(1);
        let other = keys(2).group_id();
        let ch = challenge(&other);
        assert_eq!(ch.group(), other);
        // Even a valid signature by `k` over a transcript naming another group.
        let sig = k.sign_hello(&ch);
        assert_eq!(
            verify_hello(&k.group_id(), &ch, &sig),
            Err(CryptoError::HelloGroupMismatch)
        );
    }

    #[test]
    fn non_member_cannot_sign_for_group() {
        let (member, outsider) = (keys(1), keys(2));
        let g = member.group_id();
        let ch = challenge(&g);
        let forged = outsider.sign_hello(&ch);
        assert_bad_signature(&g, &ch, &forged);
        // A valid signature for the outsider's own group does not open the member's group.
        let own = outsider.sign_hello(&challenge(&outsider.group_id()));
        assert_bad_signature(&g, &ch, &own);
    }

    #[test]
    fn bit_flips_in_signature_are_rejected() {
        let k = keys(1);
        let ch = challenge(&k.group_id());
        let sig = k.sign_hello(&ch);
        for i in 0..64 {
            let mut bad = sig;
            bad.0[i] ^= 0x01;
            assert!(verify_hello(&k.group_id(), &ch, &bad).is_err(), "byte {i}");
        }
    }

    #[test]
    fn non_canonical_s_is_rejected() {
        // s + L (the group order) verifies under lax rules; verify_strict must refuse it.
        const L: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let k = keys(1);
        let ch = challenge(&k.group_id());
        let mut sig = k.sign_hello(&ch);
        let mut carry = 0u16;
        for (s_byte, l_byte) in sig.0[32..].iter_mut().zip(L) {
            let sum = u16::from(*s_byte) + u16::from(l_byte) + carry;
            *s_byte = sum as u8;
            carry = sum >> 8;
        }
        assert_eq!(carry, 0, "s + L fits in 256 bits");
        assert_bad_signature(&k.group_id(), &ch, &sig);
    }

    #[test]
    fn invalid_and_weak_group_keys_are_rejected() {
        let sig = HelloSignature([0; 64]);
        // The identity point (small order) and a non-canonical encoding of it (y = p + 1).
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let mut non_canonical = [0xff; 32];
        non_canonical[0] = 0xee;
        non_canonical[31] = 0x7f;
        for bytes in [identity, non_canonical, [0; 32]] {
            let g = GroupId::from_bytes(bytes);
            assert_eq!(
                verify_hello(&g, &challenge(&g), &sig),
                Err(CryptoError::InvalidGroupKey),
                "{bytes:02x?}"
            );
        }
    }

    #[test]
    fn signature_serializes_as_64_byte_bin() {
        let sig = HelloSignature([7; 64]);
        let bytes = rmp_serde::to_vec(&sig).unwrap();
        assert_eq!(bytes.len(), 2 + 64);
        assert_eq!(
            rmp_serde::from_slice::<HelloSignature>(&bytes).unwrap(),
            sig
        );
        let short = rmp_serde::to_vec(&serde_bytes::Bytes::new(&[0u8; 63])).unwrap();
        assert!(rmp_serde::from_slice::<HelloSignature>(&short).is_err());
    }
}
