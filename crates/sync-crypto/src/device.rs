//! The device identity key (= the device's iroh secret key).

use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey};
use rand_core::CryptoRng;
use sync_types::DeviceId;
use zeroize::Zeroizing;

/// A device's Ed25519 identity key. Its 32-byte seed is the same as the device's iroh
/// `SecretKey`, and its public key is the [`DeviceId`]. Zeroized on drop; `Debug` shows only
/// the device id.
#[derive(Clone)]
pub struct DeviceKey(SigningKey);

impl DeviceKey {
    /// A new key from `rng`.
    pub fn random<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        Self(random_signing_key(rng))
    }

    /// The key with this 32-byte seed (same bytes as an iroh `SecretKey`).
    pub fn from_secret_bytes(bytes: [u8; 32]) -> Self {
        Self(signing_key_from_seed(bytes))
    }

    /// The 32-byte seed, for local storage only.
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The device id: the public key.
    pub fn device_id(&self) -> DeviceId {
        DeviceId::from_bytes(self.0.verifying_key().to_bytes())
    }

    pub(crate) fn sign(&self, message: &[u8]) -> Signature {
        self.0.sign(message)
    }
}

/// An Ed25519 signing key whose 32-byte seed is drawn from `rng` (the seed is wiped after
/// use). Device and operator keys are made this way.
pub(crate) fn random_signing_key<R: CryptoRng + ?Sized>(rng: &mut R) -> SigningKey {
    let mut seed = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(seed.as_mut());
    SigningKey::from_bytes(&seed)
}

/// The Ed25519 signing key with this 32-byte seed (the seed is wiped after use).
pub(crate) fn signing_key_from_seed(bytes: [u8; 32]) -> SigningKey {
    let seed = Zeroizing::new(bytes);
    SigningKey::from_bytes(&seed)
}

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "DeviceKey {{ device: {:?}, secret: [redacted] }}",
            self.device_id()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{assert_redacted, assert_seeded};
    use ed25519_dalek::Verifier;

    #[test]
    fn seed_round_trips_and_id_is_public_key() {
        let seed: [u8; 32] = std::array::from_fn(|i| i as u8 * 3);
        let key = DeviceKey::from_secret_bytes(seed);
        assert_eq!(key.secret_bytes(), seed);
        let expected = SigningKey::from_bytes(&seed).verifying_key().to_bytes();
        assert_eq!(key.device_id().as_bytes(), &expected);
        let sig = key.sign(b"m");
        SigningKey::from_bytes(&seed)
            .verifying_key()
            .verify(b"m", &sig)
            .unwrap();
    }

    #[test]
    fn random_is_seeded() {
        assert_seeded(|rng| DeviceKey::random(rng).device_id());
    }

    #[test]
    fn debug_shows_device_id_not_seed() {
        let seed: [u8; 32] = std::array::from_fn(|i| 0x80 + i as u8);
        let key = DeviceKey::from_secret_bytes(seed);
        let debug = format!("{key:?}");
        assert_redacted(&debug, &seed);
        assert!(debug.contains(&key.device_id().short()), "{debug}");
    }
}
