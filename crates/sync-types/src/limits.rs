//! Protocol constants and the limits a relay advertises in `Welcome`.
//!
//! The size budget that relates them is documented on [`FRAME_OVERHEAD`].

use serde::{Deserialize, Serialize};

use crate::wire::{encoded_len, len};

/// Protocol version sent in `Hello`.
pub const PROTOCOL_VERSION: u16 = 1;

/// QUIC ALPN of the protocol.
pub const ALPN: &[u8] = b"/0k-sync/1";

/// TLS exporter label for the Hello binding: both ends of a QUIC connection derive 32 bytes with
/// `export_keying_material(out, HELLO_BINDING_LABEL, b"")` and use them as the `binding` of the
/// Hello challenge, so a Hello signature cannot be replayed on another connection.
pub const HELLO_BINDING_LABEL: &[u8] = b"0k-sync/1 hello-binding";

/// Largest sealed payload a `Push` may carry by default (1 MiB).
pub const DEFAULT_MAX_PAYLOAD: usize = 1 << 20;

/// Largest sealed payload any relay may allow for one blob (64 MiB): larger content does not
/// travel as a single blob. A relay refuses a configuration above it, and a device refuses a
/// `Welcome` that announces frames for more.
pub const MAX_PAYLOAD_LIMIT: usize = 64 << 20;

/// Largest frame body a device accepts, whatever the relay announces:
/// `MAX_PAYLOAD_LIMIT + FRAME_OVERHEAD`.
pub const MAX_FRAME_LIMIT: usize = max_frame_for_payload(MAX_PAYLOAD_LIMIT);

/// Largest encoding of a `Push` message minus its payload length (40 bytes).
pub const PUSH_OVERHEAD: usize = 2 // envelope: fixarray(2) + type byte
    + 1 // body array header
    + len::MAX_U64 // request_id
    + len::BLOB_ID
    + len::MAX_HEADER // payload bin header
    + len::MAX_U32; // ttl_secs

/// Largest encoding of a `PullResponse` message without its entries (36 bytes).
pub const PULL_RESPONSE_OVERHEAD: usize = 2 // envelope
    + 1 // body array header
    + len::MAX_U64 // request_id
    + len::MAX_HEADER // entries array header
    + len::BOOL // has_more
    + len::MAX_U64 // max_cursor
    + len::MAX_U64; // removed

/// Largest encoding of one `PullEntry` minus its payload length (76 bytes).
pub const PULL_ENTRY_OVERHEAD: usize = 1 // entry array header
    + len::MAX_U64 // cursor
    + len::BLOB_ID
    + len::ID32 // sender
    + len::MAX_HEADER // payload bin header
    + len::MAX_U64; // timestamp_ms

/// Bytes every frame reserves beyond the payload it carries (256): at least the largest framing
/// around one payload (`PULL_RESPONSE_OVERHEAD + PULL_ENTRY_OVERHEAD`), with room to grow.
///
/// `DEFAULT_MAX_PAYLOAD` is the largest sealed payload a `Push` may carry. A frame must also hold
/// the message framing around it. The worst cases, with every integer at its widest encoding:
///
/// | what | bytes |
/// |---|---:|
/// | `Push` around its payload ([`PUSH_OVERHEAD`]) | 40 |
/// | `PullResponse` without entries ([`PULL_RESPONSE_OVERHEAD`]) | 36 |
/// | one `PullEntry` around its payload ([`PULL_ENTRY_OVERHEAD`]) | 76 |
/// | `PullResponse` holding one entry | 112 |
/// | reserved per frame ([`FRAME_OVERHEAD`]) | 256 |
///
/// so `DEFAULT_MAX_FRAME = DEFAULT_MAX_PAYLOAD + FRAME_OVERHEAD` always carries a `Push` of a
/// maximum-size payload and a `PullResponse` with one such entry. Frame sizes count the body
/// only (the value of the 4-byte length prefix).
pub const FRAME_OVERHEAD: usize = 256;

/// Default maximum frame body size: `DEFAULT_MAX_PAYLOAD + FRAME_OVERHEAD`.
pub const DEFAULT_MAX_FRAME: usize = max_frame_for_payload(DEFAULT_MAX_PAYLOAD);

const _: () = assert!(PUSH_OVERHEAD <= FRAME_OVERHEAD);
const _: () = assert!(PULL_RESPONSE_OVERHEAD + PULL_ENTRY_OVERHEAD <= FRAME_OVERHEAD);
const _: () = assert!(DEFAULT_MAX_FRAME <= u32::MAX as usize);
const _: () = assert!(MAX_FRAME_LIMIT <= u32::MAX as usize);

/// The frame size needed to carry payloads of up to `max_payload` bytes.
pub const fn max_frame_for_payload(max_payload: usize) -> usize {
    max_payload.saturating_add(FRAME_OVERHEAD)
}

/// The largest payload that always fits a frame of `max_frame` bytes, both in a `Push` and as
/// the single entry of a `PullResponse`.
pub const fn max_payload_for_frame(max_frame: usize) -> usize {
    max_frame.saturating_sub(FRAME_OVERHEAD)
}

/// Bytes of entries (the sum of `PullEntry::encoded_len`) a `PullResponse` may hold so that it
/// fits a frame of `max_frame` bytes. A relay fills a response while the sum stays within this
/// budget; an entry whose payload is at most `max_payload_for_frame(max_frame)` always fits
/// alone.
pub const fn pull_entry_budget(max_frame: usize) -> usize {
    max_frame.saturating_sub(PULL_RESPONSE_OVERHEAD)
}

/// Limits the relay enforces, announced in `Welcome` so a client can size its requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Limits {
    /// Largest sealed payload a `Push` may carry.
    pub max_blob_bytes: u32,
    /// Largest frame body the relay accepts and sends.
    pub max_frame_bytes: u32,
    /// Most entries in one `PullResponse` (a larger `Pull.limit` is clamped).
    pub max_pull_count: u32,
    /// Most payload bytes in one `PullResponse` (a larger `Pull.max_bytes` is clamped); a single
    /// entry is always sent even if it alone is larger.
    pub max_pull_bytes: u32,
    /// TTL applied to a push that asks for none (`ttl_secs = 0`).
    pub default_ttl_secs: u32,
    /// Longest TTL a push may ask for.
    pub max_ttl_secs: u32,
    /// A session with no traffic for this long is closed; clients send `Ping` before that.
    pub idle_timeout_secs: u32,
    /// Most unanswered requests a session may have in flight (pipelined pushes).
    pub max_in_flight: u32,
}

impl Limits {
    /// The defaults a relay announces unless configured otherwise.
    pub const DEFAULT: Limits = Limits {
        max_blob_bytes: DEFAULT_MAX_PAYLOAD as u32,
        max_frame_bytes: DEFAULT_MAX_FRAME as u32,
        max_pull_count: 1000,
        max_pull_bytes: DEFAULT_MAX_PAYLOAD as u32,
        default_ttl_secs: 7 * 24 * 3600,
        max_ttl_secs: 30 * 24 * 3600,
        idle_timeout_secs: 60,
        max_in_flight: 256,
    };
}

encoded_len!(
    /// Exact size of the MessagePack encoding.
    Limits {
        max_blob_bytes,
        max_frame_bytes,
        max_pull_count,
        max_pull_bytes,
        default_ttl_secs,
        max_ttl_secs,
        idle_timeout_secs,
        max_in_flight,
    }
);

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_sizes() {
        assert_eq!(PUSH_OVERHEAD, 40);
        assert_eq!(PULL_RESPONSE_OVERHEAD, 36);
        assert_eq!(PULL_ENTRY_OVERHEAD, 76);
        assert_eq!(DEFAULT_MAX_FRAME, (1 << 20) + 256);
        assert_eq!(
            max_payload_for_frame(DEFAULT_MAX_FRAME),
            DEFAULT_MAX_PAYLOAD
        );
        assert_eq!(ALPN, b"/0k-sync/1");
    }

    #[test]
    fn limits_encoded_len_is_exact() {
        for l in [
            Limits::DEFAULT,
            Limits {
                max_blob_bytes: u32::MAX,
                max_frame_bytes: 0,
                max_pull_count: 127,
                max_pull_bytes: 128,
                default_ttl_secs: 65_535,
                max_ttl_secs: 65_536,
                idle_timeout_secs: 255,
                max_in_flight: 256,
            },
        ] {
            let bytes = rmp_serde::to_vec(&l).expect("encode");
            assert_eq!(bytes.len(), l.encoded_len());
            assert_eq!(rmp_serde::from_slice::<Limits>(&bytes).expect("decode"), l);
        }
    }
}
