//! Opaque byte strings that travel as MessagePack `bin`: sealed blobs, sealed invites, tokens.

use std::fmt;
use std::ops::Deref;

use bytes::Bytes;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Opaque bytes carried by a message (a sealed blob, a sealed invite, an admission token).
///
/// Encoded as MessagePack `bin` (1 to 5 header bytes plus the bytes themselves), never as an
/// array of integers, and decoding accepts only `bin`. Cloning is cheap (reference counted), so
/// the relay can fan one payload out to many sessions. `Debug` prints only the length: payloads
/// are ciphertext or credentials and have no place in logs.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Payload(Bytes);

impl Payload {
    /// An empty payload.
    pub const fn new() -> Self {
        Self(Bytes::new())
    }

    /// A payload that copies `bytes`.
    pub fn copy_from_slice(bytes: &[u8]) -> Self {
        Self(Bytes::copy_from_slice(bytes))
    }

    /// Number of bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the payload holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    /// The underlying reference-counted buffer.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl Deref for Payload {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Payload {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl From<Bytes> for Payload {
    fn from(b: Bytes) -> Self {
        Self(b)
    }
}

impl From<Vec<u8>> for Payload {
    fn from(v: Vec<u8>) -> Self {
        Self(Bytes::from(v))
    }
}

impl From<&'static [u8]> for Payload {
    fn from(s: &'static [u8]) -> Self {
        Self(Bytes::from_static(s))
    }
}

impl From<Payload> for Bytes {
    fn from(p: Payload) -> Self {
        p.0
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Payload({} bytes)", self.0.len())
    }
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

struct PayloadVisitor;

impl<'de> Visitor<'de> for PayloadVisitor {
    type Value = Payload;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("bin")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Payload, E> {
        Ok(Payload::copy_from_slice(v))
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Payload, E> {
        Ok(Payload::from(v))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Payload, E> {
        // The default would quote the whole string in the error message.
        Err(E::custom("expected bin, found a string"))
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_byte_buf(PayloadVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_bin_with_constant_overhead() {
        for n in [0usize, 255, 256, 65_535, 65_536, 1 << 20] {
            let p = Payload::from(vec![0xAB; n]);
            let bytes = rmp_serde::to_vec(&p).expect("encode");
            assert!(bytes.len() <= n + 5, "{n}");
            assert_eq!(bytes.len(), crate::wire::len::bin(n));
            assert_eq!(rmp_serde::from_slice::<Payload>(&bytes).expect("decode"), p);
        }
    }

    #[test]
    fn payload_rejects_arrays_and_strings() {
        let arr = rmp_serde::to_vec(&vec![1u8, 2, 3]).expect("encode");
        assert!(rmp_serde::from_slice::<Payload>(&arr).is_err());
        let s = rmp_serde::to_vec("secret-looking text").expect("encode");
        let err = rmp_serde::from_slice::<Payload>(&s).expect_err("string is not bin");
        assert!(!err.to_string().contains("secret-looking"));
    }

    #[test]
    fn debug_shows_length_only() {
        let p = Payload::from(b"top secret".to_vec());
        assert_eq!(format!("{p:?}"), "Payload(10 bytes)");
    }
}
