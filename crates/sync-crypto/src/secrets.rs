//! The group secret, the root of every group key, and the secrets of later key epochs.

use std::fmt;

use rand_core::CryptoRng;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

/// A 32-byte secret type: zeroized on drop, `Debug` redacted, drawn from an RNG or wrapped.
macro_rules! secret32 {
    ($(#[$doc:meta])* $name:ident, $wrap_doc:literal) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name(Zeroizing<[u8; 32]>);

        impl $name {
            /// A new secret of 32 bytes from `rng`.
            pub fn random<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
                let mut bytes = Zeroizing::new([0u8; 32]);
                rng.fill_bytes(bytes.as_mut());
                Self(bytes)
            }

            #[doc = $wrap_doc]
            pub fn from_bytes(bytes: [u8; 32]) -> Self {
                // The caller's copy is theirs to wipe; ours is wiped on drop.
                Self(Zeroizing::new(bytes))
            }

            /// The raw secret, for invites, envelopes and local storage only.
            pub fn expose_bytes(&self) -> &[u8; 32] {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "([redacted])"))
            }
        }
    };
}

secret32!(
    /// The 32-byte root secret of a sync group. Every group key derives from it (see
    /// [`GroupKeys::derive`](crate::GroupKeys::derive)). Zeroized on drop; `Debug` is redacted.
    ///
    /// Serializes as 32 raw bytes (MessagePack `bin`) so an invite can carry it.
    GroupSecret,
    "Wraps 32 secret bytes (from an invite or local storage)."
);

secret32!(
    /// The secret of one key epoch: 32 bytes every key of the epoch derives from. Epoch 0's
    /// secret is the group secret; a rotation draws a fresh one and sends it to each remaining
    /// member in a hybrid KEM envelope. Zeroized on drop; `Debug` is redacted.
    EpochSecret,
    "Wraps 32 secret bytes (from an envelope, an invite or local storage)."
);

impl GroupSecret {
    /// Takes ownership of an already-zeroizing buffer (no stray copy).
    pub(crate) fn from_zeroizing(bytes: Zeroizing<[u8; 32]>) -> Self {
        Self(bytes)
    }
}

impl Serialize for GroupSecret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0.as_ref())
    }
}

impl<'de> Deserialize<'de> for GroupSecret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_bytes(SecretBytesVisitor).map(Self)
    }
}

/// Reads exactly 32 bytes straight into a zeroizing buffer.
struct SecretBytesVisitor;

impl<'de> Visitor<'de> for SecretBytesVisitor {
    type Value = Zeroizing<[u8; 32]>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("32 bytes")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        let mut out = Zeroizing::new([0u8; 32]);
        if v.len() != out.len() {
            return Err(E::invalid_length(v.len(), &self));
        }
        out.copy_from_slice(v);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{assert_redacted, assert_seeded};

    #[test]
    fn random_is_seeded_and_distinct() {
        assert_seeded(|rng| *GroupSecret::random(rng).expose_bytes());
    }

    #[test]
    fn debug_is_redacted() {
        let bytes: [u8; 32] = std::array::from_fn(|i| i as u8 + 0xa0);
        let secret = GroupSecret::from_bytes(bytes);
        let debug = format!("{secret:?}");
        assert_eq!(debug, "GroupSecret([redacted])");
        assert_redacted(&debug, &bytes);
        assert_redacted(&format!("{secret:#?}"), &bytes);
    }

    #[test]
    fn serde_is_32_byte_msgpack_bin() {
        let secret = GroupSecret::from_bytes([7; 32]);
        let bytes = rmp_serde::to_vec(&secret).unwrap();
        assert_eq!(bytes.len(), 2 + 32, "bin8 header + 32 bytes");
        let back: GroupSecret = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back.expose_bytes(), secret.expose_bytes());

        let short = rmp_serde::to_vec(&serde_bytes::Bytes::new(&[0u8; 31])).unwrap();
        assert!(rmp_serde::from_slice::<GroupSecret>(&short).is_err());
        let long = rmp_serde::to_vec(&serde_bytes::Bytes::new(&[0u8; 33])).unwrap();
        assert!(rmp_serde::from_slice::<GroupSecret>(&long).is_err());
    }
}
