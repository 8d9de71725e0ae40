//! MessagePack helpers shared by the message types: exact encoded sizes, a bounded scan that
//! finds where one value ends (so trailing bytes are detected without decoding anything), and
//! strict serde adapters for fixed-size binary fields.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};

use crate::error::DecodeError;
use crate::ids::{BlobId, Cursor, DeviceId, GroupId};
use crate::payload::Payload;

/// Exact MessagePack sizes of the encodings `rmp-serde` produces (smallest representation).
pub(crate) mod len {
    /// Encoded size of an unsigned integer.
    pub(crate) const fn uint(v: u64) -> usize {
        if v < 0x80 {
            1
        } else if v <= 0xFF {
            2
        } else if v <= 0xFFFF {
            3
        } else if v <= 0xFFFF_FFFF {
            5
        } else {
            9
        }
    }

    /// Encoded size of an optional unsigned integer (`nil` when absent).
    pub(crate) const fn opt_uint(v: Option<u64>) -> usize {
        match v {
            Some(v) => uint(v),
            None => NIL,
        }
    }

    /// Encoded size of `nil`.
    pub(crate) const NIL: usize = 1;

    /// Encoded size of a boolean.
    pub(crate) const BOOL: usize = 1;

    /// Header size of a `bin` holding `n` bytes.
    pub(crate) const fn bin_header(n: usize) -> usize {
        if n <= 0xFF {
            2
        } else if n <= 0xFFFF {
            3
        } else {
            5
        }
    }

    /// Encoded size of a `bin` holding `n` bytes.
    pub(crate) const fn bin(n: usize) -> usize {
        n.saturating_add(bin_header(n))
    }

    /// Encoded size of a `str` holding `n` UTF-8 bytes.
    pub(crate) const fn str(n: usize) -> usize {
        let header = if n < 32 {
            1
        } else if n <= 0xFF {
            2
        } else if n <= 0xFFFF {
            3
        } else {
            5
        };
        n.saturating_add(header)
    }

    /// Header size of an array with `n` elements.
    pub(crate) const fn array_header(n: usize) -> usize {
        if n <= 15 {
            1
        } else if n <= 0xFFFF {
            3
        } else {
            5
        }
    }

    /// Sums sizes without overflowing.
    pub(crate) fn sum(parts: &[usize]) -> usize {
        parts.iter().fold(0usize, |a, b| a.saturating_add(*b))
    }

    /// Encoded size of a 16-byte identifier (`bin8`).
    pub(crate) const BLOB_ID: usize = 18;
    /// Encoded size of a 32-byte identifier or hash (`bin8`).
    pub(crate) const ID32: usize = 34;
    /// Largest encoded size of a `u64`.
    pub(crate) const MAX_U64: usize = 9;
    /// Largest encoded size of a `u32`.
    pub(crate) const MAX_U32: usize = 5;
    /// Largest size of a `bin` or `array` header.
    pub(crate) const MAX_HEADER: usize = 5;
}

/// A field's exact encoded size, so that a message's `encoded_len` lists its fields (see
/// [`encoded_len!`]) instead of spelling out the size of each one.
pub(crate) trait WireLen {
    /// Exact encoded size of the value.
    fn wire_len(&self) -> usize;
}

impl WireLen for u64 {
    fn wire_len(&self) -> usize {
        len::uint(*self)
    }
}

impl WireLen for u32 {
    fn wire_len(&self) -> usize {
        len::uint(u64::from(*self))
    }
}

impl WireLen for u16 {
    fn wire_len(&self) -> usize {
        len::uint(u64::from(*self))
    }
}

impl WireLen for bool {
    fn wire_len(&self) -> usize {
        len::BOOL
    }
}

impl WireLen for String {
    fn wire_len(&self) -> usize {
        len::str(self.len())
    }
}

/// Fixed-size binary fields ([`fixed_bin`]).
impl<const N: usize> WireLen for [u8; N] {
    fn wire_len(&self) -> usize {
        len::bin(N)
    }
}

impl WireLen for Payload {
    fn wire_len(&self) -> usize {
        len::bin(self.len())
    }
}

impl WireLen for Cursor {
    fn wire_len(&self) -> usize {
        len::uint(self.get())
    }
}

impl WireLen for BlobId {
    fn wire_len(&self) -> usize {
        len::BLOB_ID
    }
}

impl WireLen for DeviceId {
    fn wire_len(&self) -> usize {
        len::ID32
    }
}

impl WireLen for GroupId {
    fn wire_len(&self) -> usize {
        len::ID32
    }
}

/// `nil` when absent.
impl<T: WireLen> WireLen for Option<T> {
    fn wire_len(&self) -> usize {
        self.as_ref().map_or(len::NIL, T::wire_len)
    }
}

impl<T: WireLen> WireLen for Vec<T> {
    fn wire_len(&self) -> usize {
        self.iter().fold(len::array_header(self.len()), |a, v| {
            a.saturating_add(v.wire_len())
        })
    }
}

/// Gives a struct that travels as a MessagePack array of its fields an inherent
/// `pub fn encoded_len(&self) -> usize` (documented "Exact size of the body's encoding." unless
/// doc attributes are given) and a [`WireLen`] impl, so it can be a field of another message.
///
/// Every field must be listed: the struct is destructured, so a new field fails to compile
/// until it is added here. Each field's type must implement [`WireLen`].
macro_rules! encoded_len {
    ($ty:ident { $($field:ident),+ $(,)? }) => {
        $crate::wire::encoded_len!(
            /// Exact size of the body's encoding.
            $ty { $($field),+ }
        );
    };
    ($(#[$doc:meta])+ $ty:ident { $($field:ident),+ $(,)? }) => {
        impl $ty {
            $(#[$doc])+
            pub fn encoded_len(&self) -> usize {
                let Self { $($field),+ } = self;
                let fields = [$($crate::wire::WireLen::wire_len($field)),+];
                fields.iter().fold(
                    $crate::wire::len::array_header(fields.len()),
                    |a, b| a.saturating_add(*b),
                )
            }
        }

        impl $crate::wire::WireLen for $ty {
            fn wire_len(&self) -> usize {
                self.encoded_len()
            }
        }
    };
}
pub(crate) use encoded_len;

/// Deepest nesting any message of this protocol uses (frame array → `PullResponse` →
/// entries → entry), with a little room. Deeper input is malformed.
const MAX_DEPTH: usize = 8;

/// Returns the number of bytes the first MessagePack value in `input` occupies.
///
/// Runs in time linear in the number of markers, allocates nothing, and does not recurse: it
/// keeps one counter of outstanding values per nesting level. Ext types and the reserved marker
/// are not part of this protocol and are rejected. A length that runs past the end of `input`
/// is [`DecodeError::Truncated`].
pub(crate) fn value_extent(input: &[u8]) -> Result<usize, DecodeError> {
    // outstanding[d] = values still to read at nesting level d.
    let mut outstanding = [0u64; MAX_DEPTH + 1];
    let mut depth = 0usize;
    outstanding[0] = 1;
    let mut pos = 0usize;

    loop {
        // Pop finished levels.
        while outstanding[depth] == 0 {
            if depth == 0 {
                return Ok(pos);
            }
            depth -= 1;
        }
        outstanding[depth] -= 1;

        let marker = *input.get(pos).ok_or(DecodeError::Truncated)?;
        pos += 1;
        // (bytes of payload to skip, elements to push as a new level)
        let (skip, children): (usize, u64) = match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
            0x80..=0x8f => (0, u64::from(marker & 0x0f) * 2),
            0x90..=0x9f => (0, u64::from(marker & 0x0f)),
            0xa0..=0xbf => (usize::from(marker & 0x1f), 0),
            0xcc | 0xd0 => (1, 0),
            0xcd | 0xd1 => (2, 0),
            0xce | 0xd2 | 0xca => (4, 0),
            0xcf | 0xd3 | 0xcb => (8, 0),
            0xc4 | 0xd9 => (read_be(input, &mut pos, 1)?, 0),
            0xc5 | 0xda => (read_be(input, &mut pos, 2)?, 0),
            0xc6 | 0xdb => (read_be(input, &mut pos, 4)?, 0),
            0xdc => (0, read_be(input, &mut pos, 2)? as u64),
            0xdd => (0, read_be(input, &mut pos, 4)? as u64),
            0xde => (0, (read_be(input, &mut pos, 2)? as u64) * 2),
            0xdf => (0, (read_be(input, &mut pos, 4)? as u64) * 2),
            // 0xc1 (never used), 0xc7..=0xc9 and 0xd4..=0xd8 (ext types).
            _ => {
                return Err(DecodeError::Malformed(format!(
                    "unsupported MessagePack marker 0x{marker:02x}"
                )));
            }
        };
        pos = pos.checked_add(skip).ok_or(DecodeError::Truncated)?;
        if pos > input.len() {
            return Err(DecodeError::Truncated);
        }
        if children > 0 {
            // Every element takes at least one byte: more elements than bytes left is truncated
            // input, and this also keeps the counters small.
            let left = (input.len() - pos) as u64;
            if children > left {
                return Err(DecodeError::Truncated);
            }
            if depth == MAX_DEPTH {
                return Err(DecodeError::Malformed("nesting too deep".into()));
            }
            depth += 1;
            outstanding[depth] = children;
        }
    }
}

/// Reads a big-endian length of `n` (1, 2 or 4) bytes at `pos`.
fn read_be(input: &[u8], pos: &mut usize, n: usize) -> Result<usize, DecodeError> {
    let end = pos.checked_add(n).ok_or(DecodeError::Truncated)?;
    let bytes = input.get(*pos..end).ok_or(DecodeError::Truncated)?;
    *pos = end;
    Ok(bytes
        .iter()
        .fold(0usize, |acc, b| (acc << 8) | usize::from(*b)))
}

/// A serde visitor that accepts exactly `N` bytes of MessagePack `bin`, nothing else.
struct FixedBinVisitor<const N: usize>;

impl<'de, const N: usize> Visitor<'de> for FixedBinVisitor<N> {
    type Value = [u8; N];

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{N} bytes of bin")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        <[u8; N]>::try_from(v).map_err(|_| E::invalid_length(v.len(), &self))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Err(E::custom(format_args!(
            "expected {N} bytes of bin, found a string"
        )))
    }
}

/// `#[serde(with = "fixed_bin")]` for `[u8; N]` fields: encoded as `bin`, never as an array.
pub(crate) mod fixed_bin {
    use super::*;

    pub(crate) fn serialize<S: Serializer, const N: usize>(
        v: &[u8; N],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<[u8; N], D::Error> {
        d.deserialize_bytes(FixedBinVisitor::<N>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc<T: serde::Serialize>(v: &T) -> Vec<u8> {
        rmp_serde::to_vec(v).expect("encode")
    }

    #[test]
    fn uint_len_matches_rmp_serde_at_every_boundary() {
        // Both sides of every width change (positive fixint, uint8, uint16, uint32), and the ends.
        let edges = [7u32, 8, 16, 32]
            .into_iter()
            .flat_map(|bits| [(1u64 << bits) - 1, 1u64 << bits]);
        for v in [0, u64::MAX].into_iter().chain(edges) {
            assert_eq!(len::uint(v), enc(&v).len(), "value {v}");
        }
    }

    #[test]
    fn bin_and_str_len_match_rmp_serde_at_every_boundary() {
        for n in [0usize, 1, 31, 32, 255, 256, 65_535, 65_536, 70_000] {
            let b = vec![0u8; n];
            assert_eq!(
                len::bin(n),
                enc(&serde_bytes::Bytes::new(&b)).len(),
                "bin {n}"
            );
            let s = "x".repeat(n);
            assert_eq!(len::str(n), enc(&s).len(), "str {n}");
        }
    }

    #[test]
    fn array_header_len_matches_rmp_serde() {
        for n in [0usize, 15, 16, 65_535, 65_536] {
            let v = vec![0u8; n]; // serialized as an array of small ints
            assert_eq!(len::array_header(n) + n, enc(&v).len(), "array {n}");
        }
    }

    #[test]
    fn extent_of_nested_values_and_trailing_data() {
        let v = (
            1u64,
            vec![(2u8, "ab".to_string())],
            serde_bytes::ByteBuf::from(vec![9u8; 300]),
        );
        let mut bytes = enc(&v);
        let n = bytes.len();
        assert_eq!(value_extent(&bytes), Ok(n));
        bytes.extend_from_slice(&[1, 2, 3]);
        assert_eq!(value_extent(&bytes), Ok(n));
        for cut in 0..n {
            assert_eq!(
                value_extent(&bytes[..cut]),
                Err(DecodeError::Truncated),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn extent_rejects_huge_counts_deep_nesting_and_ext() {
        // array32 announcing 4 billion elements with 3 bytes of input: truncated, no allocation.
        assert_eq!(
            value_extent(&[0xdd, 0xff, 0xff, 0xff, 0xff, 1, 2, 3]),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            value_extent(&[0xc6, 0xff, 0xff, 0xff, 0xff]),
            Err(DecodeError::Truncated)
        );
        let deep = [0x91u8; 64];
        assert!(matches!(
            value_extent(&deep),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            value_extent(&[0xd4, 1, 2]),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            value_extent(&[0xc1]),
            Err(DecodeError::Malformed(_))
        ));
        // A map counts two values per entry.
        assert_eq!(value_extent(&[0x81, 0x01, 0x02, 0xff]), Ok(3));
    }

    #[test]
    fn fixed_bin_is_strict() {
        #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
        struct S(#[serde(with = "fixed_bin")] [u8; 4]);
        let bytes = enc(&S([1, 2, 3, 4]));
        assert_eq!(bytes, [0xc4, 4, 1, 2, 3, 4]);
        assert_eq!(
            rmp_serde::from_slice::<S>(&bytes).expect("decode"),
            S([1, 2, 3, 4])
        );
        // An array of integers or a string of the right length is not accepted.
        assert!(rmp_serde::from_slice::<S>(&enc(&[1u8, 2, 3, 4])).is_err());
        assert!(rmp_serde::from_slice::<S>(&enc(&"abcd")).is_err());
        assert!(rmp_serde::from_slice::<S>(&[0xc4, 3, 1, 2, 3]).is_err());
    }
}
