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

    /// The transcript bytes.
    pub fn as_bytes(&self) -> &[u8; HELLO_TRANSCRIPT_LEN] {
        &self.0
    }
}

/// An Ed25519 signature by the group auth key over a [`HelloChallenge`].
/// Serializes as 64 raw bytes (MessagePack `bin`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct HelloSignature(#[serde(with = "serde_bytes")] pub [u8; 64]);

/// Checks a Hello signature with the group id as the verifying key. Rejects group ids that
/// are not canonical, valid, non-weak Ed25519 keys and non-canonical signatures
/// (`verify_strict`).
pub fn verify_hello(
    group: &GroupId,
    challenge: &HelloChallenge,
    sig: &HelloSignature,
) -> Result<(), CryptoError> {
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
