//! The envelope records and enrollments share: a body signed by a device key and by the auth
//! key of a key epoch, both over `label ‖ MessagePack(body)`, encoded as the MessagePack array
//! `[body, device_sig, auth_sig]`.

#[allow(clippy::wildcard_imports)]
use super::*;

/// A body with its two signatures, in wire order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Signed<B> {
    pub(super) body: B,
    pub(super) device_sig: ByteArray<64>,
    pub(super) auth_sig: ByteArray<64>,
}

impl<B: Serialize + DeserializeOwned> Signed<B> {
    /// `body` signed under `label` by `device` and by the auth key of `epoch` (which `keys`
    /// must hold).
    pub(super) fn sign(
        label: &[u8],
        body: B,
        keys: &GroupKeys,
        epoch: KeyEpoch,
        device: &DeviceKey,
    ) -> Result<Self, MembershipError> {
        let msg = labelled(label, &body)?;
        let auth_sig = keys
            .sign_auth(epoch, &msg)
            .ok_or(MembershipError::UnknownEpoch(epoch.0))?;
        Ok(Self {
            body,
            device_sig: ByteArray::new(device.sign(&msg).to_bytes()),
            auth_sig: ByteArray::new(auth_sig),
        })
    }

    /// The bytes on the wire.
    pub(super) fn encode(&self) -> Vec<u8> {
        rmp_serde::to_vec(self).unwrap_or_default()
    }

    /// Decodes `bytes` of at most `max` bytes; `too_long` and `malformed` say what was wrong.
    /// Signatures are not checked (see [`Signed::verify`]).
    pub(super) fn decode(
        bytes: &[u8],
        max: usize,
        too_long: &'static str,
        malformed: &'static str,
    ) -> Result<Self, MembershipError> {
        if bytes.len() > max {
            return Err(MembershipError::Malformed(too_long));
        }
        rmp_serde::from_slice(bytes).map_err(|_| MembershipError::Malformed(malformed))
    }

    /// Checks both signatures under `label`: the device signature against `device`, the auth
    /// signature against `auth`.
    pub(super) fn verify(
        &self,
        label: &[u8],
        device: &DeviceId,
        auth: &[u8; 32],
    ) -> Result<(), MembershipError> {
        let msg = labelled(label, &self.body)?;
        if !verify(device.as_bytes(), &msg, &self.device_sig.into_array()) {
            return Err(MembershipError::BadDeviceSignature);
        }
        if !verify(auth, &msg, &self.auth_sig.into_array()) {
            return Err(MembershipError::BadAuthSignature);
        }
        Ok(())
    }
}

fn labelled<T: Serialize>(label: &[u8], body: &T) -> Result<Vec<u8>, MembershipError> {
    let mut msg = label.to_vec();
    rmp_serde::encode::write(&mut msg, body)
        .map_err(|_| MembershipError::Malformed("unencodable"))?;
    Ok(msg)
}

/// Whether `sig` is `key`'s strict Ed25519 signature of `msg`.
pub(super) fn verify(key: &[u8; 32], msg: &[u8], sig: &[u8; 64]) -> bool {
    strict_verifying_key(key)
        .is_some_and(|k| k.verify_strict(msg, &Signature::from_bytes(sig)).is_ok())
}
