//! Large content registered by reference: `ContentRef` / `ContentAck`.

use serde::{Deserialize, Serialize};

use crate::ids::BlobId;
use crate::wire::{encoded_len, fixed_bin};

/// Client → relay: register large content (chunked, sealed, content-addressed) by reference.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentRef {
    /// Client-chosen id, echoed by `ContentAck` or `Error`.
    pub request_id: u64,
    /// The content's blob id.
    pub blob_id: BlobId,
    /// BLAKE3 hash of the sealed content.
    #[serde(with = "fixed_bin")]
    pub hash: [u8; 32],
    /// Total sealed size in bytes.
    pub size: u64,
    /// Size of each chunk except possibly the last.
    pub chunk_size: u32,
    /// Number of chunks.
    pub chunks: u32,
}

encoded_len!(ContentRef {
    request_id,
    blob_id,
    hash,
    size,
    chunk_size,
    chunks
});

/// Relay → client: the content reference is recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentAck {
    /// Echo of `ContentRef.request_id`.
    pub request_id: u64,
    /// Echo of `ContentRef.blob_id`.
    pub blob_id: BlobId,
}

encoded_len!(ContentAck {
    request_id,
    blob_id
});
