//! Hybrid KEM envelopes (X25519 + ML-KEM-768): how an admin device hands a new epoch secret
//! to each remaining member device during key rotation. The envelope travels through the
//! untrusted relay and is opened by the recipient whenever it comes online.
//!
//! Both KEMs always run together: an envelope is confidential as long as *either* X25519 or
//! ML-KEM-768 holds, and no code path ever uses one of them alone (a failure of either one
//! fails the whole operation; there is no classical-only fallback).
//!
//! # Keys
//!
//! A device's hybrid KEM key pair ([`DeviceKey::kem_keypair`]) is derived from its 32-byte
//! Ed25519 seed, so a device stores nothing new:
//!
//! ```text
//! prk     = HKDF-SHA256-Extract(salt = "0k-sync/v1/kem", IKM = device seed)
//! x_sk    = HKDF-Expand(prk, "0k-sync/v1/kem-x25519", 32)     X25519 secret (clamped when used)
//! d       = HKDF-Expand(prk, "0k-sync/v1/kem-mlkem-d", 32)    FIPS 203 ML-KEM.KeyGen_internal
//! z       = HKDF-Expand(prk, "0k-sync/v1/kem-mlkem-z", 32)      seeds d and z
//! public  = X25519(x_sk, 9) (32) ‖ ML-KEM-768 encapsulation key ek (1184)
//! ```
//!
//! # Envelope format ([`ENVELOPE_VERSION`] 1)
//!
//! ```text
//! version (1, 0x01) ‖ epk_x (32) ‖ ct_mlkem (1088) ‖ ChaCha20-Poly1305(payload) ‖ tag (16)
//! ```
//!
//! [`ENVELOPE_OVERHEAD`] (1137) bytes plus the payload.
//!
//! # Construction
//!
//! `ctx` is the [`EnvelopeContext`]: `group (32) ‖ epoch (u32 big-endian) ‖ sender (32) ‖
//! recipient (32)`. Sealing to the recipient's public key `x_pk ‖ ek`:
//!
//! 1. `esk` ← 32 bytes from the RNG; `epk_x = X25519(esk, 9)`.
//! 2. `m` ← 32 bytes from the RNG; `(ss_mlkem, ct_mlkem) = ML-KEM-768.Encaps_internal(ek, m)`
//!    (FIPS 203: `m` is the only randomness of encapsulation). The RNG yields nothing else, so
//!    a seeded RNG gives a reproducible envelope.
//! 3. `ss_x = X25519(esk, x_pk)`; all zero (a low-order `x_pk`) is refused
//!    ([`CryptoError::WeakKemSharedSecret`]).
//! 4. Combiner (X-Wing style: both shared secrets, and the X25519 public values that the
//!    ML-KEM ciphertext does not already bind):
//!    `key = HKDF-SHA256(salt = "0k-sync/v1/envelope", IKM = ss_mlkem ‖ ss_x ‖ epk_x ‖ x_pk,
//!    info = "0k-sync/v1/envelope-key" ‖ ctx)`, 32 bytes.
//! 5. ChaCha20-Poly1305 under `key` with the all-zero 12-byte nonce (every key encrypts exactly
//!    one message) and AAD `version ‖ epk_x ‖ ct_mlkem ‖ ctx`.
//!
//! Opening checks the length ([`CryptoError::EnvelopeTruncated`]) and the version
//! ([`CryptoError::EnvelopeVersion`]), runs ML-KEM-768 decapsulation (implicit rejection: a
//! tampered ciphertext gives an unrelated key, not an error) and X25519, then the combiner and
//! the AEAD; any mismatch of keys, context or bytes ends as [`CryptoError::EnvelopeDecrypt`].
//!
//! The envelope does not authenticate its sender: anyone holding the recipient's public key
//! can seal to it. The context binds the sender id the recipient *expects*; the rotation
//! message that carries the envelope must be signed by the sender (as sealed blobs are).

use std::fmt;

use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{ChaCha20Poly1305, Key, KeyInit, Nonce, Tag};
use curve25519_dalek::montgomery::MontgomeryPoint;
use hkdf::Hkdf;
use ml_kem::array::Array;
use ml_kem::{B32, Decapsulate, KeyExport, MlKem768};
use rand_core::CryptoRng;
use serde::{Deserialize, Serialize, Serializer};
use sha2::Sha256;
use sync_types::{DeviceId, GroupId};
use zeroize::{Zeroize, Zeroizing};

use crate::device::DeviceKey;
use crate::error::CryptoError;
use crate::schedule::KeyEpoch;

type MlKemEncapsulationKey = ml_kem::EncapsulationKey<MlKem768>;
type MlKemDecapsulationKey = ml_kem::DecapsulationKey<MlKem768>;

const KEY_SALT: &[u8] = b"0k-sync/v1/kem";
const LABEL_X25519: &[u8] = b"0k-sync/v1/kem-x25519";
const LABEL_MLKEM_D: &[u8] = b"0k-sync/v1/kem-mlkem-d";
const LABEL_MLKEM_Z: &[u8] = b"0k-sync/v1/kem-mlkem-z";
const ENVELOPE_SALT: &[u8] = b"0k-sync/v1/envelope";
const LABEL_ENVELOPE_KEY: &[u8] = b"0k-sync/v1/envelope-key";

const X25519_LEN: usize = 32;
/// ML-KEM-768 encapsulation key: 384·k + 32 bytes, k = 3.
const MLKEM_EK_LEN: usize = 1184;
/// ML-KEM-768 ciphertext: 32·(du·k + dv) bytes.
const MLKEM_CT_LEN: usize = 1088;
const TAG_LEN: usize = 16;
/// Length of [`EnvelopeContext::bytes`].
const CONTEXT_LEN: usize = 32 + 4 + 32 + 32;
/// Bytes before the AEAD ciphertext: version, X25519 ephemeral key, ML-KEM ciphertext.
const HEADER_LEN: usize = 1 + X25519_LEN + MLKEM_CT_LEN;

/// Length of a [`KemPublicKey`]: X25519 public key (32) ‖ ML-KEM-768 encapsulation key (1184).
pub const KEM_PUBLIC_KEY_LEN: usize = X25519_LEN + MLKEM_EK_LEN;

/// Bytes an envelope adds to its payload: version (1) + X25519 ephemeral key (32) + ML-KEM-768
/// ciphertext (1088) + tag (16).
pub const ENVELOPE_OVERHEAD: usize = HEADER_LEN + TAG_LEN;

/// The envelope format version this build writes and opens.
pub const ENVELOPE_VERSION: u8 = 1;

/// A device's hybrid KEM public key: X25519 public key (32) ‖ ML-KEM-768 encapsulation key
/// (1184), exactly [`KEM_PUBLIC_KEY_LEN`] bytes. Validated when built ([`Self::from_bytes`],
/// also on deserialization). Serialized as one byte string; `Debug` shows a short hex prefix.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "serde_bytes::ByteBuf")]
pub struct KemPublicKey(Box<[u8; KEM_PUBLIC_KEY_LEN]>);

impl KemPublicKey {
    /// Parses a public key: exactly [`KEM_PUBLIC_KEY_LEN`] bytes whose ML-KEM-768 part passes
    /// the FIPS 203 encapsulation key check (every coefficient below the modulus q). Anything
    /// else is [`CryptoError::InvalidKemKey`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let bytes: [u8; KEM_PUBLIC_KEY_LEN] =
            bytes.try_into().map_err(|_| CryptoError::InvalidKemKey)?;
        let key = Self(Box::new(bytes));
        key.mlkem_key()?;
        Ok(key)
    }

    /// The key's bytes: X25519 public key ‖ ML-KEM-768 encapsulation key.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_slice()
    }

    fn x25519(&self) -> [u8; X25519_LEN] {
        let mut out = [0u8; X25519_LEN];
        out.copy_from_slice(&self.0[..X25519_LEN]);
        out
    }

    fn mlkem_key(&self) -> Result<MlKemEncapsulationKey, CryptoError> {
        let ek = <&Array<u8, _>>::try_from(&self.0[X25519_LEN..])
            .map_err(|_| CryptoError::InvalidKemKey)?;
        MlKemEncapsulationKey::new(ek).map_err(|_| CryptoError::InvalidKemKey)
    }
}

impl TryFrom<serde_bytes::ByteBuf> for KemPublicKey {
    type Error = CryptoError;

    fn try_from(bytes: serde_bytes::ByteBuf) -> Result<Self, CryptoError> {
        Self::from_bytes(&bytes)
    }
}

impl Serialize for KemPublicKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.as_bytes())
    }
}

impl fmt::Debug for KemPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KemPublicKey({}…)", hex::encode(&self.0[..8]))
    }
}

/// A device's hybrid KEM key pair (X25519 + ML-KEM-768), from [`DeviceKey::kem_keypair`]. The
/// secret half is zeroized on drop; `Debug` shows only the public key's prefix.
pub struct KemKeypair {
    x25519_secret: Zeroizing<[u8; X25519_LEN]>,
    mlkem: MlKemDecapsulationKey,
    public: KemPublicKey,
}

impl KemKeypair {
    /// The public half, to publish to the group.
    pub fn public_key(&self) -> KemPublicKey {
        self.public.clone()
    }

    /// The key pair from its three 32-byte seeds.
    fn from_seeds(x25519_secret: &[u8; 32], d: &[u8; 32], z: &[u8; 32]) -> Self {
        let mut seed = ml_kem::Seed::default();
        seed[..32].copy_from_slice(d);
        seed[32..].copy_from_slice(z);
        let mlkem = MlKemDecapsulationKey::from_seed(seed);
        seed.zeroize();
        let x25519_public = MontgomeryPoint::mul_base_clamped(*x25519_secret).to_bytes();
        let mut public = Box::new([0u8; KEM_PUBLIC_KEY_LEN]);
        public[..X25519_LEN].copy_from_slice(&x25519_public);
        public[X25519_LEN..].copy_from_slice(&mlkem.encapsulation_key().to_bytes());
        Self {
            x25519_secret: Zeroizing::new(*x25519_secret),
            mlkem,
            public: KemPublicKey(public),
        }
    }
}

impl fmt::Debug for KemKeypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "KemKeypair {{ public: {:?}, secret: [redacted] }}",
            self.public
        )
    }
}

impl DeviceKey {
    /// This device's hybrid KEM key pair, derived from its 32-byte Ed25519 seed: the same
    /// device always gets the same key pair, so nothing new is stored.
    ///
    /// With `prk = HKDF-SHA256-Extract(salt = "0k-sync/v1/kem", IKM = seed)`, HKDF-Expand to
    /// 32 bytes under `"0k-sync/v1/kem-x25519"` gives the X25519 secret, and under
    /// `"0k-sync/v1/kem-mlkem-d"` and `"0k-sync/v1/kem-mlkem-z"` the seeds `d` and `z` of
    /// FIPS 203 `ML-KEM.KeyGen_internal` (ML-KEM-768).
    pub fn kem_keypair(&self) -> KemKeypair {
        let seed = Zeroizing::new(self.secret_bytes());
        let hk = Hkdf::<Sha256>::new(Some(KEY_SALT), seed.as_ref());
        let expand = |label: &[u8]| {
            let mut out = Zeroizing::new([0u8; 32]);
            // 32 bytes is far below HKDF-SHA256's 8160-byte limit, so this cannot fail.
            let _ = hk.expand(label, out.as_mut());
            out
        };
        let x25519_secret = expand(LABEL_X25519);
        let d = expand(LABEL_MLKEM_D);
        let z = expand(LABEL_MLKEM_Z);
        KemKeypair::from_seeds(&x25519_secret, &d, &z)
    }
}

/// What an envelope is bound to: the group, the key epoch it carries a secret for, and the
/// sending and receiving devices. Opening with any other context fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnvelopeContext {
    /// The group being rotated.
    pub group: GroupId,
    /// The epoch of the secret the envelope carries.
    pub epoch: KeyEpoch,
    /// The device that sealed the envelope.
    pub sender: DeviceId,
    /// The device the envelope is sealed to.
    pub recipient: DeviceId,
}

impl EnvelopeContext {
    /// `group (32) ‖ epoch (u32 big-endian) ‖ sender (32) ‖ recipient (32)`.
    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(CONTEXT_LEN);
        out.extend_from_slice(self.group.as_bytes());
        out.extend_from_slice(&self.epoch.0.to_be_bytes());
        out.extend_from_slice(self.sender.as_bytes());
        out.extend_from_slice(self.recipient.as_bytes());
        out
    }
}

/// X25519 with an all-zero result refused (a low-order or small-subgroup point).
fn x25519(secret: &[u8; 32], public: [u8; 32]) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
    let mut point = MontgomeryPoint(public).mul_clamped(*secret);
    let shared = Zeroizing::new(point.to_bytes());
    point.zeroize();
    // Branch on the OR of all bytes only, not on where a nonzero byte is.
    if shared.iter().fold(0u8, |acc, b| acc | b) == 0 {
        return Err(CryptoError::WeakKemSharedSecret);
    }
    Ok(shared)
}

/// The combiner: one AEAD key from both shared secrets, the X25519 public values and the
/// context.
fn envelope_key(
    ss_mlkem: &[u8; 32],
    ss_x: &[u8; 32],
    epk_x: &[u8; 32],
    recipient_x: &[u8; 32],
    ctx: &[u8],
) -> Zeroizing<[u8; 32]> {
    let mut ikm = Zeroizing::new([0u8; 128]);
    ikm[..32].copy_from_slice(ss_mlkem);
    ikm[32..64].copy_from_slice(ss_x);
    ikm[64..96].copy_from_slice(epk_x);
    ikm[96..].copy_from_slice(recipient_x);
    let hk = Hkdf::<Sha256>::new(Some(ENVELOPE_SALT), ikm.as_ref());
    let mut key = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's 8160-byte limit, so this cannot fail.
    let _ = hk.expand_multi_info(&[LABEL_ENVELOPE_KEY, ctx], key.as_mut());
    key
}

/// AAD of the AEAD: `version ‖ epk_x ‖ ct_mlkem ‖ ctx` (the header, then the context).
fn aad(header: &[u8], ctx: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(header.len() + ctx.len());
    aad.extend_from_slice(header);
    aad.extend_from_slice(ctx);
    aad
}

/// Seals `payload` (an epoch secret or a small bundle of them) to `recipient`'s hybrid KEM
/// public key, bound to `ctx`. Draws exactly 64 bytes from `rng`: the X25519 ephemeral secret,
/// then the ML-KEM-768 encapsulation randomness `m`.
///
/// The envelope is `version (0x01) ‖ X25519 ephemeral public key (32) ‖ ML-KEM-768 ciphertext
/// (1088) ‖ ChaCha20-Poly1305 ciphertext ‖ tag (16)`, [`ENVELOPE_OVERHEAD`] bytes longer than
/// `payload`. The AEAD key is `HKDF-SHA256(salt = "0k-sync/v1/envelope", IKM = ss_mlkem ‖
/// ss_x25519 ‖ ephemeral public key ‖ recipient X25519 public key, info =
/// "0k-sync/v1/envelope-key" ‖ ctx)`, the nonce is all zero (each key encrypts one message),
/// and the AAD is the envelope header followed by `ctx`; `ctx` is `group ‖ epoch (u32
/// big-endian) ‖ sender ‖ recipient`.
///
/// Errors: [`CryptoError::WeakKemSharedSecret`] if the recipient's X25519 key is a low-order
/// point, [`CryptoError::PlaintextTooLarge`] for a payload beyond one AEAD message.
pub fn seal_envelope<R: CryptoRng + ?Sized>(
    rng: &mut R,
    recipient: &KemPublicKey,
    ctx: &EnvelopeContext,
    payload: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let mut esk = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(esk.as_mut());
    let mut m = Zeroizing::new(B32::default());
    rng.fill_bytes(m.as_mut_slice());

    let recipient_x = recipient.x25519();
    let ek = recipient.mlkem_key()?;
    let ss_x = x25519(&esk, recipient_x)?;
    let epk_x = MontgomeryPoint::mul_base_clamped(*esk).to_bytes();
    let (ct_mlkem, ss_mlkem) = ek.encapsulate_deterministic(&m);
    let ss_mlkem = Zeroizing::new(ss_mlkem);

    let ctx = ctx.bytes();
    let key = envelope_key(&ss_mlkem.0, &ss_x, &epk_x, &recipient_x, &ctx);

    let total = payload
        .len()
        .checked_add(ENVELOPE_OVERHEAD)
        .ok_or(CryptoError::PlaintextTooLarge)?;
    let mut out = Vec::with_capacity(total);
    out.push(ENVELOPE_VERSION);
    out.extend_from_slice(&epk_x);
    out.extend_from_slice(ct_mlkem.as_slice());
    let aad = aad(&out, &ctx);
    out.extend_from_slice(payload);
    let cipher = ChaCha20Poly1305::new(<&Key>::from(&*key));
    let tag = match out.get_mut(HEADER_LEN..) {
        Some(body) => cipher
            .encrypt_inout_detached(&Nonce::default(), &aad, body.into())
            .map_err(|_| CryptoError::PlaintextTooLarge)?,
        None => return Err(CryptoError::PlaintextTooLarge),
    };
    out.extend_from_slice(&tag);
    Ok(out)
}

/// Opens an envelope sealed to `keypair` under `ctx` and returns the payload (zeroized on
/// drop).
///
/// Errors: [`CryptoError::EnvelopeTruncated`] if shorter than [`ENVELOPE_OVERHEAD`],
/// [`CryptoError::EnvelopeVersion`] for an unknown version byte,
/// [`CryptoError::WeakKemSharedSecret`] for a low-order ephemeral key, and
/// [`CryptoError::EnvelopeDecrypt`] for anything else that does not authenticate (another
/// recipient, another context, tampered bytes).
pub fn open_envelope(
    keypair: &KemKeypair,
    ctx: &EnvelopeContext,
    envelope: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let truncated = CryptoError::EnvelopeTruncated {
        len: envelope.len(),
    };
    if envelope.len() < ENVELOPE_OVERHEAD {
        return Err(truncated);
    }
    let (header, rest) = envelope
        .split_at_checked(HEADER_LEN)
        .ok_or_else(|| truncated.clone())?;
    let ct_len = rest
        .len()
        .checked_sub(TAG_LEN)
        .ok_or_else(|| truncated.clone())?;
    let (ciphertext, tag) = rest
        .split_at_checked(ct_len)
        .ok_or_else(|| truncated.clone())?;
    let (version, keys) = header.split_first().ok_or_else(|| truncated.clone())?;
    if *version != ENVELOPE_VERSION {
        return Err(CryptoError::EnvelopeVersion(*version));
    }
    let (epk_x, ct_mlkem) = keys
        .split_at_checked(X25519_LEN)
        .ok_or_else(|| truncated.clone())?;
    let epk_x: [u8; X25519_LEN] = epk_x.try_into().map_err(|_| truncated.clone())?;
    let ct_mlkem = <&ml_kem::Ciphertext<MlKem768>>::try_from(ct_mlkem).map_err(|_| truncated)?;
    let tag = <&Tag>::try_from(tag).map_err(|_| CryptoError::EnvelopeDecrypt)?;

    let ss_mlkem = Zeroizing::new(keypair.mlkem.decapsulate(ct_mlkem));
    let ss_x = x25519(&keypair.x25519_secret, epk_x)?;
    let recipient_x = keypair.public.x25519();
    let ctx = ctx.bytes();
    let key = envelope_key(&ss_mlkem.0, &ss_x, &epk_x, &recipient_x, &ctx);

    let cipher = ChaCha20Poly1305::new(<&Key>::from(&*key));
    let mut payload = Zeroizing::new(ciphertext.to_vec());
    cipher
        .decrypt_inout_detached(
            &Nonce::default(),
            &aad(header, &ctx),
            payload.as_mut_slice().into(),
            tag,
        )
        .map_err(|_| CryptoError::EnvelopeDecrypt)?;
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{assert_redacted, assert_seeded};
    use proptest::prelude::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;
    use std::sync::LazyLock;

    fn device(fill: u8) -> DeviceKey {
        DeviceKey::from_secret_bytes([fill; 32])
    }

    // Key pair derivation costs an ML-KEM key generation: do the few the tests need once.
    static ALICE: LazyLock<KemKeypair> = LazyLock::new(|| device(1).kem_keypair());
    static BOB: LazyLock<KemKeypair> = LazyLock::new(|| device(2).kem_keypair());

    fn ctx() -> EnvelopeContext {
        EnvelopeContext {
            group: GroupId::from_bytes([9; 32]),
            epoch: KeyEpoch(3),
            sender: device(2).device_id(),
            recipient: device(1).device_id(),
        }
    }

    fn sealed(payload: &[u8]) -> Vec<u8> {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        seal_envelope(&mut rng, &ALICE.public_key(), &ctx(), payload).unwrap()
    }

    fn is_typed_error(err: &CryptoError) -> bool {
        matches!(
            err,
            CryptoError::EnvelopeTruncated { .. }
                | CryptoError::EnvelopeVersion(_)
                | CryptoError::EnvelopeDecrypt
                | CryptoError::WeakKemSharedSecret
        )
    }

    #[test]
    fn sizes() {
        assert_eq!(KEM_PUBLIC_KEY_LEN, 1216);
        assert_eq!(ENVELOPE_OVERHEAD, 1137);
        assert_eq!(ctx().bytes().len(), CONTEXT_LEN);
        assert_eq!(ALICE.public_key().as_bytes().len(), KEM_PUBLIC_KEY_LEN);
        assert_eq!(sealed(&[5; 32]).len(), 32 + ENVELOPE_OVERHEAD);
        assert_eq!(sealed(&[]).len(), ENVELOPE_OVERHEAD);
    }

    #[test]
    fn context_bytes_layout() {
        let c = ctx();
        let bytes = c.bytes();
        assert_eq!(&bytes[..32], c.group.as_bytes());
        assert_eq!(&bytes[32..36], &[0, 0, 0, 3]);
        assert_eq!(&bytes[36..68], c.sender.as_bytes());
        assert_eq!(&bytes[68..], c.recipient.as_bytes());
    }

    #[test]
    fn round_trip() {
        for payload in [&[][..], &[0x42; 32][..], &[7; 96][..], &[1; 5000][..]] {
            let envelope = sealed(payload);
            assert_eq!(envelope[0], ENVELOPE_VERSION);
            let opened = open_envelope(&ALICE, &ctx(), &envelope).unwrap();
            assert_eq!(opened.as_slice(), payload);
        }
    }

    #[test]
    fn empty_envelope_still_authenticates() {
        let envelope = sealed(&[]);
        assert_eq!(
            open_envelope(&BOB, &ctx(), &envelope),
            Err(CryptoError::EnvelopeDecrypt)
        );
    }

    #[test]
    fn key_pair_is_deterministic_and_per_device() {
        let again = device(1).kem_keypair();
        assert_eq!(again.public_key(), ALICE.public_key());
        assert_ne!(ALICE.public_key(), BOB.public_key());
        // Both halves differ between devices.
        assert_ne!(
            ALICE.public_key().as_bytes()[..32],
            BOB.public_key().as_bytes()[..32]
        );
        assert_ne!(
            ALICE.public_key().as_bytes()[32..],
            BOB.public_key().as_bytes()[32..]
        );
        // Derived from the Ed25519 seed, but not equal to anything derived elsewhere from it.
        let seed = device(1).secret_bytes();
        assert_ne!(&ALICE.public_key().as_bytes()[..32], &seed);
        assert_ne!(
            ALICE.public_key().as_bytes()[..32],
            *device(1).device_id().as_bytes()
        );
    }

    #[test]
    fn envelope_is_seeded_and_fresh_per_seal() {
        let pk = ALICE.public_key();
        assert_seeded(|rng| seal_envelope(rng, &pk, &ctx(), &[1; 32]).unwrap());
        // Same payload twice from one RNG: different ephemeral keys and ciphertexts.
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let a = seal_envelope(&mut rng, &pk, &ctx(), &[1; 32]).unwrap();
        let b = seal_envelope(&mut rng, &pk, &ctx(), &[1; 32]).unwrap();
        assert_ne!(a[1..33], b[1..33]);
        assert_ne!(a[33..HEADER_LEN], b[33..HEADER_LEN]);
        assert_ne!(a[HEADER_LEN..], b[HEADER_LEN..]);
    }

    #[test]
    fn wrong_recipient_fails() {
        let envelope = sealed(&[0x42; 32]);
        assert_eq!(
            open_envelope(&BOB, &ctx(), &envelope),
            Err(CryptoError::EnvelopeDecrypt)
        );
    }

    #[test]
    fn wrong_context_fails_for_each_field() {
        let envelope = sealed(&[0x42; 32]);
        let base = ctx();
        let other_device = device(3).device_id();
        let variants = [
            EnvelopeContext {
                group: GroupId::from_bytes([8; 32]),
                ..base
            },
            EnvelopeContext {
                epoch: KeyEpoch(4),
                ..base
            },
            EnvelopeContext {
                sender: other_device,
                ..base
            },
            EnvelopeContext {
                recipient: other_device,
                ..base
            },
            // Sender and recipient swapped.
            EnvelopeContext {
                sender: base.recipient,
                recipient: base.sender,
                ..base
            },
        ];
        for wrong in variants {
            assert_eq!(
                open_envelope(&ALICE, &wrong, &envelope),
                Err(CryptoError::EnvelopeDecrypt),
                "{wrong:?}"
            );
        }
        // The right context still opens.
        open_envelope(&ALICE, &base, &envelope).unwrap();
    }

    #[test]
    fn every_byte_flip_is_a_typed_error() {
        let envelope = sealed(&[0x42; 32]);
        for i in 0..envelope.len() {
            for mask in [0x01, 0x80, 0xff] {
                let mut bad = envelope.clone();
                bad[i] ^= mask;
                let err = open_envelope(&ALICE, &ctx(), &bad).unwrap_err();
                assert!(is_typed_error(&err), "byte {i}: {err:?}");
                let expected = if i == 0 {
                    CryptoError::EnvelopeVersion(ENVELOPE_VERSION ^ mask)
                } else {
                    CryptoError::EnvelopeDecrypt
                };
                assert_eq!(err, expected, "byte {i} mask {mask:#x}");
            }
        }
    }

    #[test]
    fn every_truncation_is_a_typed_error() {
        let envelope = sealed(&[0x42; 32]);
        for len in 0..envelope.len() {
            let err = open_envelope(&ALICE, &ctx(), &envelope[..len]).unwrap_err();
            let expected = if len < ENVELOPE_OVERHEAD {
                CryptoError::EnvelopeTruncated { len }
            } else {
                CryptoError::EnvelopeDecrypt
            };
            assert_eq!(err, expected, "length {len}");
        }
        // Appending a byte fails as well.
        let mut long = envelope.clone();
        long.push(0);
        assert_eq!(
            open_envelope(&ALICE, &ctx(), &long),
            Err(CryptoError::EnvelopeDecrypt)
        );
    }

    #[test]
    fn low_order_x25519_points_are_refused() {
        // The identity (u = 0) and the point of order 2 (u = 1), plus u = p (non-canonical 0).
        let mut p = [0xff; 32];
        p[0] = 0xed;
        p[31] = 0x7f;
        let mut one = [0u8; 32];
        one[0] = 1;
        for point in [[0u8; 32], one, p] {
            // Sealing to a public key with a low-order X25519 part.
            let mut bytes = ALICE.public_key().as_bytes().to_vec();
            bytes[..32].copy_from_slice(&point);
            let pk = KemPublicKey::from_bytes(&bytes).unwrap();
            let mut rng = ChaCha20Rng::seed_from_u64(1);
            assert_eq!(
                seal_envelope(&mut rng, &pk, &ctx(), &[1; 32]),
                Err(CryptoError::WeakKemSharedSecret)
            );
            // Opening an envelope with a low-order ephemeral key.
            let mut envelope = sealed(&[1; 32]);
            envelope[1..33].copy_from_slice(&point);
            assert_eq!(
                open_envelope(&ALICE, &ctx(), &envelope),
                Err(CryptoError::WeakKemSharedSecret)
            );
        }
    }

    #[test]
    fn public_key_parsing() {
        let pk = ALICE.public_key();
        assert_eq!(KemPublicKey::from_bytes(pk.as_bytes()).unwrap(), pk);
        for len in [0, 32, 1184, KEM_PUBLIC_KEY_LEN - 1, KEM_PUBLIC_KEY_LEN + 1] {
            assert_eq!(
                KemPublicKey::from_bytes(&vec![0; len]),
                Err(CryptoError::InvalidKemKey),
                "length {len}"
            );
        }
        // A coefficient of q = 3329 (0xd01) or above fails the FIPS 203 modulus check.
        let mut bad = pk.as_bytes().to_vec();
        bad[32] = 0xff;
        bad[33] |= 0x0f;
        assert_eq!(
            KemPublicKey::from_bytes(&bad),
            Err(CryptoError::InvalidKemKey)
        );
    }

    #[test]
    fn public_key_serde_round_trips_as_bin() {
        let pk = ALICE.public_key();
        let bytes = rmp_serde::to_vec(&pk).unwrap();
        // MessagePack bin 16: 0xc5, a 2-byte length, then the key.
        assert_eq!(&bytes[..3], &[0xc5, 0x04, 0xc0]);
        assert_eq!(&bytes[3..], pk.as_bytes());
        assert_eq!(rmp_serde::from_slice::<KemPublicKey>(&bytes).unwrap(), pk);
        let short = rmp_serde::to_vec(&serde_bytes::Bytes::new(&pk.as_bytes()[1..])).unwrap();
        assert!(rmp_serde::from_slice::<KemPublicKey>(&short).is_err());
        let mut invalid = pk.as_bytes().to_vec();
        invalid[32..34].copy_from_slice(&[0xff, 0xff]);
        let invalid = rmp_serde::to_vec(&serde_bytes::Bytes::new(&invalid)).unwrap();
        assert!(rmp_serde::from_slice::<KemPublicKey>(&invalid).is_err());
    }

    #[test]
    fn debug_is_redacted() {
        let seed = device(1).secret_bytes();
        let debug = format!("{:?}", *ALICE);
        assert_redacted(&debug, &seed);
        assert_redacted(&debug, ALICE.x25519_secret.as_ref());
        let public = format!("{:?}", ALICE.public_key());
        assert!(debug.contains(&public), "{debug}");
        assert_eq!(
            public,
            format!(
                "KemPublicKey({}…)",
                hex::encode(&ALICE.public_key().as_bytes()[..8])
            )
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        #[test]
        fn random_payloads_and_contexts_round_trip(
            payload in proptest::collection::vec(any::<u8>(), 0..512),
            group in any::<[u8; 32]>(),
            epoch in any::<u32>(),
            sender in any::<[u8; 32]>(),
            recipient in any::<[u8; 32]>(),
            seed in any::<u64>(),
        ) {
            let ctx = EnvelopeContext {
                group: GroupId::from_bytes(group),
                epoch: KeyEpoch(epoch),
                sender: DeviceId::from_bytes(sender),
                recipient: DeviceId::from_bytes(recipient),
            };
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let envelope = seal_envelope(&mut rng, &BOB.public_key(), &ctx, &payload).unwrap();
            prop_assert_eq!(envelope.len(), payload.len() + ENVELOPE_OVERHEAD);
            let opened = open_envelope(&BOB, &ctx, &envelope).unwrap();
            prop_assert_eq!(opened.as_slice(), payload.as_slice());
            prop_assert_eq!(
                open_envelope(&ALICE, &ctx, &envelope),
                Err(CryptoError::EnvelopeDecrypt)
            );
        }
    }
}
