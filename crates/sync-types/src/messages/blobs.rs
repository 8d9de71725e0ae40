//! Moving blobs: `Push` / `PushAck`, `Pull` / `PullResponse` (of `PullEntry`s), the `Notify`
//! announcement, and `Delete` / `DeleteAck`.

use serde::{Deserialize, Serialize};

use crate::ids::{BlobId, Cursor, DeviceId};
use crate::payload::Payload;
use crate::wire::encoded_len;

/// Client → relay: store a sealed blob.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Push {
    /// Client-chosen id, echoed by `PushAck` or `Error`.
    pub request_id: u64,
    /// The blob's id; the same on every retry, so a retried push is recognised.
    pub blob_id: BlobId,
    /// The sealed blob (ciphertext the relay cannot read).
    pub payload: Payload,
    /// Seconds the relay keeps the blob; 0 means the relay's default.
    pub ttl_secs: u32,
}

encoded_len!(Push {
    request_id,
    blob_id,
    payload,
    ttl_secs
});

/// Relay → client: the blob is stored at `cursor`, in a committed transaction. "Durable" means
/// what the relay's `synchronous` setting makes it: with `normal` (the default) the commit
/// survives a crash of the relay process but the last commits may be lost on power loss; with
/// `full` it survives power loss too.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushAck {
    /// Echo of `Push.request_id`.
    pub request_id: u64,
    /// Echo of `Push.blob_id`.
    pub blob_id: BlobId,
    /// The cursor the blob was committed at (the original one for a retried push).
    pub cursor: Cursor,
    /// Relay time of the commit, milliseconds since the Unix epoch.
    pub server_time_ms: u64,
}

encoded_len!(PushAck {
    request_id,
    blob_id,
    cursor,
    server_time_ms
});

/// Client → relay: send blobs committed after a cursor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pull {
    /// Client-chosen id, echoed by `PullResponse` or `Error`.
    pub request_id: u64,
    /// Send blobs with a cursor strictly greater than this.
    pub after: Cursor,
    /// Most entries wanted (clamped to `Limits.max_pull_count`).
    pub limit: u32,
    /// Most payload bytes wanted (clamped to `Limits.max_pull_bytes`); the first entry is sent
    /// even if it alone is larger.
    pub max_bytes: Option<u32>,
}

encoded_len!(Pull {
    request_id,
    after,
    limit,
    max_bytes
});

/// One blob in a `PullResponse`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullEntry {
    /// Where the blob sits in the group's log.
    pub cursor: Cursor,
    /// The blob's id.
    pub blob_id: BlobId,
    /// The device that pushed it (as authenticated by its connection).
    pub sender: DeviceId,
    /// The sealed blob.
    pub payload: Payload,
    /// Relay commit time, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
}

encoded_len!(
    /// Exact size of the entry's encoding; at most `payload.len() + PULL_ENTRY_OVERHEAD`.
    PullEntry { cursor, blob_id, sender, payload, timestamp_ms }
);

/// Relay → client: blobs after the requested cursor, in cursor order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullResponse {
    /// Echo of `Pull.request_id`.
    pub request_id: u64,
    /// The blobs, ascending by cursor, without gaps among live blobs.
    pub entries: Vec<PullEntry>,
    /// Whether more blobs after the last entry exist.
    pub has_more: bool,
    /// Highest cursor committed in the group when the response was built.
    pub max_cursor: Cursor,
    /// How many cursors of the span this page covers hold no blob because the relay removed
    /// it (expired or deleted) or never assigned the cursor to this group. The span is
    /// `(after, last entry]` with `has_more`, else `(after, max(last entry, max_cursor)]`. A
    /// device counts the span's holes: holes the relay does not account for were withheld.
    pub removed: u64,
}

encoded_len!(
    /// Exact size of the body's encoding; at most `PULL_RESPONSE_OVERHEAD - ENVELOPE_LEN` plus
    /// the entries' `encoded_len`.
    PullResponse { request_id, entries, has_more, max_cursor, removed }
);

/// Relay → client, unsolicited: a new blob was committed in the group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notify {
    /// The blob's cursor.
    pub cursor: Cursor,
    /// The blob's id.
    pub blob_id: BlobId,
    /// The device that pushed it.
    pub sender: DeviceId,
    /// Payload size in bytes.
    pub size: u32,
}

encoded_len!(Notify {
    cursor,
    blob_id,
    sender,
    size
});

/// Client → relay: delete a blob before its TTL expires.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delete {
    /// Client-chosen id, echoed by `DeleteAck` or `Error`.
    pub request_id: u64,
    /// The blob to delete.
    pub blob_id: BlobId,
}

encoded_len!(Delete {
    request_id,
    blob_id
});

/// Relay → client: the blob is deleted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteAck {
    /// Echo of `Delete.request_id`.
    pub request_id: u64,
    /// Echo of `Delete.blob_id`.
    pub blob_id: BlobId,
}

encoded_len!(DeleteAck {
    request_id,
    blob_id
});
