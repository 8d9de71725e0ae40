//! What travels through the relay as an ordinary (sealed) blob: a [`Descriptor`] naming one
//! [`ContentRef`] or a [`Collection`] of them. The relay never reads it: it is the plaintext of
//! a blob sealed with the group's key like any other, so names, media types, sizes and where
//! to fetch from stay between the devices.
//!
//! Encoding: the 16 bytes [`MAGIC`], then the descriptor as MessagePack (maps with field names,
//! so later versions can add fields). A blob whose plaintext does not start with [`MAGIC`] is
//! not a descriptor.

use std::net::SocketAddr;
use std::path::{Component, Path};

use serde::{Deserialize, Serialize};
use sync_types::BlobId;

use crate::chunk::{chunk_count, sealed_size};
use crate::error::ContentError;

/// First bytes of an encoded descriptor.
pub const MAGIC: &[u8; 16] = b"0k-sync/content\x01";

/// Where content can be fetched from: a device of the group (while it is online) or a relay's
/// content store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The holder's endpoint id (a device's `DeviceId`, or a relay's id).
    #[serde(with = "serde_bytes")]
    pub id: [u8; 32],
    /// Its direct addresses when the reference was made (encoded as `"ip:port"` strings).
    #[serde(with = "addr_strings")]
    pub addrs: Vec<SocketAddr>,
    /// A relay (keeps content after its sender left) rather than a device.
    pub relay: bool,
}

/// Socket addresses as `"ip:port"` strings on the wire, whatever the format's
/// human-readability (MessagePack's is not, and would otherwise encode them as tagged tuples).
mod addr_strings {
    use std::net::SocketAddr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(addrs: &[SocketAddr], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(addrs.iter().map(ToString::to_string))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<SocketAddr>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|a| a.parse().map_err(serde::de::Error::custom))
            .collect()
    }
}

/// One piece of large content: enough to fetch, verify and open it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentRef {
    /// The content's id: its key derives from it (and the group's epoch secret).
    pub content_id: BlobId,
    /// The key epoch the content was sealed under.
    pub epoch: u32,
    /// BLAKE3 (verified-streaming) hash of the sealed content.
    #[serde(with = "serde_bytes")]
    pub hash: [u8; 32],
    /// Plaintext size in bytes.
    pub plain_size: u64,
    /// Plaintext bytes per chunk.
    pub chunk_size: u32,
    /// The file name (for a collection item: its path inside the collection, `/`-separated).
    pub name: String,
    /// Media type, if known (`application/octet-stream` otherwise).
    pub media_type: String,
    /// Where to fetch it, in order of preference.
    pub holders: Vec<Holder>,
}

impl ContentRef {
    /// Size of the sealed content (what is transferred and stored).
    pub fn sealed_size(&self) -> u64 {
        sealed_size(self.plain_size, self.chunk_size)
    }

    /// Number of sealed chunks.
    pub fn chunks(&self) -> u64 {
        chunk_count(self.plain_size, self.chunk_size)
    }

    /// The hash as iroh-blobs names it.
    pub fn blob_hash(&self) -> iroh_blobs::Hash {
        iroh_blobs::Hash::from_bytes(self.hash)
    }
}

/// Several items sent as one unit (a folder): received complete, or reported incomplete with
/// the missing items named.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Collection {
    /// The collection's name (the folder's name).
    pub name: String,
    /// Its items; each item's `name` is its relative path.
    pub items: Vec<ContentRef>,
}

impl Collection {
    /// Total plaintext bytes.
    pub fn plain_size(&self) -> u64 {
        self.items.iter().map(|i| i.plain_size).sum()
    }

    /// Total sealed bytes.
    pub fn sealed_size(&self) -> u64 {
        self.items.iter().map(ContentRef::sealed_size).sum()
    }
}

/// The plaintext of a blob that announces large content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Descriptor {
    /// One file.
    Item(ContentRef),
    /// A folder.
    Collection(Collection),
}

impl Descriptor {
    /// The encoded descriptor (starts with [`MAGIC`]).
    pub fn encode(&self) -> Result<Vec<u8>, ContentError> {
        let mut out = MAGIC.to_vec();
        rmp_serde::encode::write_named(&mut out, self)
            .map_err(|e| ContentError::Malformed(e.to_string()))?;
        Ok(out)
    }

    /// Whether `plaintext` is an encoded descriptor (starts with [`MAGIC`]).
    pub fn is_descriptor(plaintext: &[u8]) -> bool {
        plaintext.starts_with(MAGIC)
    }

    /// Decodes a descriptor, checking every name is a safe relative path and every chunk size
    /// is accepted.
    pub fn decode(plaintext: &[u8]) -> Result<Self, ContentError> {
        let body = plaintext
            .strip_prefix(MAGIC.as_slice())
            .ok_or_else(|| ContentError::Malformed("not a content descriptor".into()))?;
        let d: Descriptor =
            rmp_serde::from_slice(body).map_err(|e| ContentError::Malformed(e.to_string()))?;
        for item in d.items() {
            check_name(&item.name)?;
            if !(crate::chunk::MIN_CHUNK_SIZE..=crate::chunk::MAX_CHUNK_SIZE)
                .contains(&item.chunk_size)
            {
                return Err(ContentError::BadChunkSize(item.chunk_size));
            }
        }
        if let Descriptor::Collection(c) = &d {
            check_name(&c.name)?;
        }
        Ok(d)
    }

    /// Every item (one for [`Descriptor::Item`]).
    pub fn items(&self) -> &[ContentRef] {
        match self {
            Descriptor::Item(item) => std::slice::from_ref(item),
            Descriptor::Collection(c) => &c.items,
        }
    }

    /// The name shown to people: the file's or the folder's.
    pub fn name(&self) -> &str {
        match self {
            Descriptor::Item(item) => &item.name,
            Descriptor::Collection(c) => &c.name,
        }
    }
}

/// Checks that `name` is a relative path of normal components (no `..`, no root, no prefix,
/// not empty), so writing it under an output directory stays inside it.
pub fn check_name(name: &str) -> Result<(), ContentError> {
    let path = Path::new(name);
    let safe = !name.is_empty()
        && !name.contains('\0')
        && !name.contains('\\')
        && path.components().all(|c| matches!(c, Component::Normal(_)));
    if safe {
        Ok(())
    } else {
        Err(ContentError::UnsafeName(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(name: &str) -> ContentRef {
        ContentRef {
            content_id: BlobId::from_bytes([1; 16]),
            epoch: 2,
            hash: [7; 32],
            plain_size: 200_000,
            chunk_size: crate::chunk::DEFAULT_CHUNK_SIZE,
            name: name.into(),
            media_type: "image/jpeg".into(),
            holders: vec![Holder {
                id: [9; 32],
                addrs: vec!["127.0.0.1:4433".parse().expect("addr")],
                relay: true,
            }],
        }
    }

    #[test]
    fn descriptors_round_trip_and_are_recognised_by_their_magic() {
        let one = Descriptor::Item(item("photo.jpg"));
        let folder = Descriptor::Collection(Collection {
            name: "holiday".into(),
            items: vec![item("a/1.jpg"), item("b.jpg")],
        });
        for d in [one, folder] {
            let bytes = d.encode().expect("encode");
            assert!(Descriptor::is_descriptor(&bytes));
            assert_eq!(Descriptor::decode(&bytes).expect("decode"), d);
        }
        assert!(!Descriptor::is_descriptor(b"hello"));
        assert!(matches!(
            Descriptor::decode(b"hello"),
            Err(ContentError::Malformed(_))
        ));
        let mut cut = Descriptor::Item(item("x")).encode().expect("encode");
        cut.truncate(cut.len() - 3);
        assert!(matches!(
            Descriptor::decode(&cut),
            Err(ContentError::Malformed(_))
        ));
    }

    #[test]
    fn sizes_follow_the_chunking() {
        let i = item("x");
        assert_eq!(i.chunks(), 4); // 200 000 bytes in 64 KiB chunks
        assert_eq!(i.sealed_size(), 200_000 + 4 * 16);
    }

    #[test]
    fn names_that_would_leave_the_output_directory_are_refused() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a\\b",
            "nul\0",
            "./x/..",
            "a//..",
        ] {
            let d = Descriptor::Item(item(bad));
            let bytes = d.encode().expect("encode");
            assert!(
                matches!(Descriptor::decode(&bytes), Err(ContentError::UnsafeName(_))),
                "{bad:?}"
            );
        }
        for good in ["a", "a/b/c.txt", "été.jpg", "x y"] {
            assert!(check_name(good).is_ok(), "{good:?}");
        }
        let mut c = Collection {
            name: "..".into(),
            items: vec![item("ok")],
        };
        let bytes = Descriptor::Collection(c.clone()).encode().expect("encode");
        assert!(
            Descriptor::decode(&bytes).is_err(),
            "collection name checked"
        );
        c.name = "ok".into();
        let bytes = Descriptor::Collection(c).encode().expect("encode");
        assert!(Descriptor::decode(&bytes).is_ok());
    }

    #[test]
    fn a_bad_chunk_size_in_a_descriptor_is_refused() {
        let mut i = item("x");
        i.chunk_size = 3;
        let bytes = Descriptor::Item(i).encode().expect("encode");
        assert!(matches!(
            Descriptor::decode(&bytes),
            Err(ContentError::BadChunkSize(3))
        ));
    }
}
