//! Identifiers that travel on the wire: devices, groups, blobs and cursors.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::wire::fixed_bin;

/// Why a textual or binary identifier could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdParseError {
    /// The text is not unpadded base64url.
    #[error("identifier is not valid base64url")]
    Base64,
    /// The decoded value has the wrong number of bytes.
    #[error("identifier has {got} bytes, expected {expected}")]
    Length {
        /// Bytes expected.
        expected: usize,
        /// Bytes found.
        got: usize,
    },
}

macro_rules! key_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; 32]);

        impl $name {
            /// Length of the identifier in bytes.
            pub const LEN: usize = 32;

            /// Wraps 32 raw bytes.
            pub const fn from_bytes(bytes: [u8; 32]) -> Self {
                Self(bytes)
            }

            /// Parses a byte slice, which must hold exactly 32 bytes.
            pub fn try_from_slice(bytes: &[u8]) -> Result<Self, IdParseError> {
                <[u8; 32]>::try_from(bytes).map(Self).map_err(|_| IdParseError::Length {
                    expected: 32,
                    got: bytes.len(),
                })
            }

            /// The raw bytes.
            pub const fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// A short, non-reversible-looking prefix for logs (first 8 base64url chars).
            pub fn short(&self) -> String {
                let mut s = self.to_string();
                s.truncate(8);
                s
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&URL_SAFE_NO_PAD.encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.short())
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                if s.len() != 43 {
                    return Err(IdParseError::Length { expected: 43, got: s.len() });
                }
                let bytes = URL_SAFE_NO_PAD.decode(s).map_err(|_| IdParseError::Base64)?;
                Self::try_from_slice(&bytes)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                fixed_bin::deserialize::<D, 32>(d).map(Self)
            }
        }
    };
}

key_id!(
    /// A device: the public half of its Ed25519 identity key (= its iroh endpoint id).
    ///
    /// Text form: unpadded base64url, 43 characters.
    DeviceId
);

key_id!(
    /// A sync group: the public key of the group's Ed25519 auth keypair, derived from the group
    /// secret. Knowing it does not let anyone read or write the group.
    GroupId
);

/// A blob: a UUID picked by the pushing device, stable across retries of the same push.
///
/// Devices pick time-ordered ids ([`BlobId::time_ordered`], UUID v7 to the second) so the relay's
/// `(group, blob id)` uniqueness index grows at its end instead of at random places: random ids
/// dirty one index page per push, which costs a large group half its push throughput. The relay
/// accepts any 16 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobId(uuid::Uuid);

impl BlobId {
    /// Length of the identifier in bytes.
    pub const LEN: usize = 16;

    /// A new random (version 4) blob id from the given RNG.
    pub fn random<R: rand_core::CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut bytes = [0u8; 16];
        rng.fill_bytes(&mut bytes);
        Self::from_random_bytes(bytes)
    }

    /// A time-ordered (version 7) blob id: `unix_secs` in the 48-bit timestamp field (whole
    /// seconds, the milliseconds left at zero) and 74 random bits. Ids made in a later second
    /// sort after earlier ones; within a second they are random.
    ///
    /// The second is metadata the relay could read; it learns no more than the time the push
    /// arrives, except for a push queued while offline, whose creation second it learns.
    pub fn time_ordered<R: rand_core::CryptoRng + ?Sized>(rng: &mut R, unix_secs: u64) -> Self {
        let mut random = [0u8; 10];
        rng.fill_bytes(&mut random);
        // 48 bits of milliseconds hold any second before the year 10889.
        let millis = unix_secs.saturating_mul(1000) & 0xffff_ffff_ffff;
        Self(uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid())
    }

    /// A version 4 blob id built from 16 random bytes (version and variant bits are set).
    pub fn from_random_bytes(bytes: [u8; 16]) -> Self {
        Self(uuid::Builder::from_random_bytes(bytes).into_uuid())
    }

    /// Wraps 16 raw bytes exactly as given (as received from the wire).
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(uuid::Uuid::from_bytes(bytes))
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }
}

impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobId({})", self.0.hyphenated())
    }
}

impl FromStr for BlobId {
    type Err = IdParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s)
            .map(Self)
            .map_err(|_| IdParseError::Length {
                expected: 36,
                got: s.len(),
            })
    }
}

impl Serialize for BlobId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0.as_bytes())
    }
}

impl<'de> Deserialize<'de> for BlobId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        fixed_bin::deserialize::<D, 16>(d).map(Self::from_bytes)
    }
}

/// A position in a group's ordered log. The relay assigns cursors 1, 2, 3 … in commit order;
/// `Cursor::ZERO` means "before the first blob".
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Cursor(u64);

impl Cursor {
    /// The position before the first blob.
    pub const ZERO: Cursor = Cursor(0);

    /// Wraps a raw cursor value.
    pub const fn new(value: u64) -> Self {
        Self(value)
    }

    /// The raw value.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The next cursor, or `None` on overflow.
    pub const fn next(self) -> Option<Cursor> {
        match self.0.checked_add(1) {
            Some(v) => Some(Cursor(v)),
            None => None,
        }
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cursor({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn device_id_text_is_43_chars_and_round_trips() {
        let id = DeviceId::from_bytes([7u8; 32]);
        let text = id.to_string();
        assert_eq!(text.len(), 43);
        assert_eq!(text.parse::<DeviceId>(), Ok(id));
    }

    #[test]
    fn bad_text_ids_are_typed_errors() {
        assert!(matches!(
            "abc".parse::<GroupId>(),
            Err(IdParseError::Length { .. })
        ));
        let bad = "!".repeat(43);
        assert_eq!(bad.parse::<GroupId>(), Err(IdParseError::Base64));
        assert!("not-a-uuid".parse::<BlobId>().is_err());
    }

    #[test]
    fn blob_id_is_uuid_v4_and_seeded() {
        let mut a = ChaCha20Rng::seed_from_u64(1);
        let mut b = ChaCha20Rng::seed_from_u64(1);
        let x = BlobId::random(&mut a);
        assert_eq!(x, BlobId::random(&mut b));
        assert_eq!(x.0.get_version_num(), 4);
        assert_eq!(x.to_string().parse::<BlobId>(), Ok(x));
    }

    #[test]
    fn time_ordered_blob_ids_are_v7_sort_by_second_and_differ_within_one() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let secs = 1_790_000_000; // 2026
        let a = BlobId::time_ordered(&mut rng, secs);
        let b = BlobId::time_ordered(&mut rng, secs);
        let later = BlobId::time_ordered(&mut rng, secs + 1);
        assert_eq!(a.0.get_version_num(), 7);
        assert_eq!(a.0.get_variant(), uuid::Variant::RFC4122);
        assert_ne!(a, b);
        assert!(a < later && b < later, "{a} {b} {later}");
        let (ts_secs, ts_nanos) = a.0.get_timestamp().expect("v7 timestamp").to_unix();
        assert_eq!((ts_secs, ts_nanos), (secs, 0));
        // Every second a device can hold sorts in order, up to the last one that fits 48 bits.
        let max = (1u64 << 48) / 1000 - 1;
        assert!(BlobId::time_ordered(&mut rng, max - 1) < BlobId::time_ordered(&mut rng, max));
    }

    #[test]
    fn ids_encode_as_msgpack_bin() {
        let id = GroupId::from_bytes([1u8; 32]);
        let bytes = rmp_serde::to_vec(&id).expect("encode");
        assert_eq!(bytes.len(), 2 + 32, "bin8 header + 32 bytes");
        assert_eq!(
            rmp_serde::from_slice::<GroupId>(&bytes).expect("decode"),
            id
        );
        let blob = BlobId::from_bytes([2u8; 16]);
        let bytes = rmp_serde::to_vec(&blob).expect("encode");
        assert_eq!(bytes.len(), 2 + 16);
        // A 31-byte bin must not decode into a 32-byte id.
        let short = rmp_serde::to_vec(&serde_bytes::Bytes::new(&[0u8; 31])).expect("encode");
        assert!(rmp_serde::from_slice::<GroupId>(&short).is_err());
    }

    #[test]
    fn cursor_orders_and_saturates() {
        assert!(Cursor::new(1) < Cursor::new(2));
        assert_eq!(Cursor::ZERO.next(), Some(Cursor::new(1)));
        assert_eq!(Cursor::new(u64::MAX).next(), None);
    }

    #[test]
    fn debug_is_short() {
        let id = DeviceId::from_bytes([9u8; 32]);
        assert_eq!(format!("{id:?}").len(), "DeviceId()".len() + 8);
    }
}
