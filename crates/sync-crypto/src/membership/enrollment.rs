//! Enrollments: a device's announcement to its group of its hybrid KEM public key and its
//! sealed name, signed by the device and by the auth key of the epoch it names.

#[allow(clippy::wildcard_imports)]
use super::*;

/// The signed part of an [`Enrollment`], in wire order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct EnrollmentBody {
    pub(super) group: GroupId,
    pub(super) epoch: KeyEpoch,
    pub(super) device: DeviceId,
    pub(super) kem: KemPublicKey,
    #[serde(with = "serde_bytes")]
    pub(super) sealed_name: Vec<u8>,
    pub(super) invite_id: Option<ByteArray<16>>,
}

/// A device's announcement to its group: its hybrid KEM public key and its sealed name. Signed
/// by the device key and by the auth key of the epoch it names (proof that the device holds
/// that epoch's keys). Encoded as `[body, device_sig, auth_sig]`, signatures over
/// `"0k-sync/v1/enrollment" ‖ MessagePack(body)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Enrollment(pub(super) Signed<EnrollmentBody>);

impl Enrollment {
    /// `device`'s enrollment at `keys`' current epoch, its `name` sealed under that epoch's
    /// blob key; `invite_id` names the invite it joined with, if any.
    pub fn new<R: CryptoRng + ?Sized>(
        rng: &mut R,
        keys: &GroupKeys,
        device: &DeviceKey,
        name: &str,
        invite_id: Option<[u8; 16]>,
    ) -> Result<Self, MembershipError> {
        let epoch = keys.current_epoch();
        let sealed_name = seal_name(rng, keys, epoch, &device.device_id(), name)?;
        let body = EnrollmentBody {
            group: keys.group_id(),
            epoch,
            device: device.device_id(),
            kem: device.kem_keypair().public_key(),
            sealed_name,
            invite_id: invite_id.map(ByteArray::new),
        };
        Signed::sign(ENROLL_LABEL, body, keys, epoch, device).map(Self)
    }

    /// The enrollment's bytes on the wire.
    pub fn encode(&self) -> Vec<u8> {
        self.0.encode()
    }

    /// Reads an enrollment; bounds and the KEM key's form are checked, signatures are not (see
    /// [`GroupState::check_enrollment`]).
    pub fn decode(bytes: &[u8]) -> Result<Self, MembershipError> {
        let e = Self(Signed::decode(
            bytes,
            MAX_ENROLLMENT_BYTES,
            "enrollment too long",
            "not an enrollment",
        )?);
        if e.0.body.sealed_name.len() > MAX_SEALED_NAME {
            return Err(MembershipError::Malformed("sealed name too long"));
        }
        Ok(e)
    }

    /// The enrolling device.
    pub fn device(&self) -> DeviceId {
        self.0.body.device
    }

    /// The epoch it enrolled in.
    pub fn epoch(&self) -> KeyEpoch {
        self.0.body.epoch
    }

    /// Its hybrid KEM public key.
    pub fn kem(&self) -> &KemPublicKey {
        &self.0.body.kem
    }

    /// The invite it joined with, if it said so.
    pub fn invite_id(&self) -> Option<[u8; 16]> {
        self.0.body.invite_id.as_ref().map(|b| b.into_array())
    }

    /// The device's name, if `keys` hold the enrollment's epoch and the name opens.
    pub fn name(&self, keys: &GroupKeys) -> Option<String> {
        open_name(
            keys,
            self.0.body.epoch,
            &self.0.body.device,
            &self.0.body.sealed_name,
        )
    }
}

fn name_cipher(keys: &GroupKeys, epoch: KeyEpoch) -> Option<XChaCha20Poly1305> {
    let key = keys.epoch_key(epoch)?;
    XChaCha20Poly1305::new_from_slice(key.expose_bytes()).ok()
}

fn name_aad(group: &GroupId, device: &DeviceId) -> Vec<u8> {
    [NAME_LABEL, group.as_bytes(), device.as_bytes()].concat()
}

fn seal_name<R: CryptoRng + ?Sized>(
    rng: &mut R,
    keys: &GroupKeys,
    epoch: KeyEpoch,
    device: &DeviceId,
    name: &str,
) -> Result<Vec<u8>, MembershipError> {
    if name.len() > MAX_NAME {
        return Err(MembershipError::Malformed("device name too long"));
    }
    let cipher = name_cipher(keys, epoch).ok_or(MembershipError::UnknownEpoch(epoch.0))?;
    let mut nonce = [0u8; NAME_NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    let aad = name_aad(&keys.group_id(), device);
    let ct = cipher
        .encrypt(
            <&XNonce>::from(&nonce),
            AeadPayload {
                msg: name.as_bytes(),
                aad: &aad,
            },
        )
        .map_err(|_| MembershipError::Malformed("device name too long"))?;
    Ok([&nonce[..], &ct].concat())
}

fn open_name(
    keys: &GroupKeys,
    epoch: KeyEpoch,
    device: &DeviceId,
    sealed: &[u8],
) -> Option<String> {
    let (nonce, ct) = sealed.split_at_checked(NAME_NONCE_LEN)?;
    let cipher = name_cipher(keys, epoch)?;
    let aad = name_aad(&keys.group_id(), device);
    let nonce = <&XNonce>::try_from(nonce).ok()?;
    let pt = cipher
        .decrypt(nonce, AeadPayload { msg: ct, aad: &aad })
        .ok()?;
    String::from_utf8(pt).ok()
}
