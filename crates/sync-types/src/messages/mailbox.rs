//! The relay's invite mailbox: `InvitePut` / `InviteStored` to leave a sealed invite,
//! `InviteGet` / `InviteFound` to fetch it.

use serde::{Deserialize, Serialize};

use crate::payload::Payload;
use crate::wire::len;

/// Client → relay: leave a sealed invite in the relay's mailbox under a short-code lookup id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvitePut {
    /// Client-chosen id, echoed by `InviteStored` or `Error`.
    pub request_id: u64,
    /// The lookup half of the short code.
    pub lookup_id: String,
    /// The invite, sealed with a key only the short code's other half yields.
    pub sealed: Payload,
    /// Seconds the relay keeps the entry.
    pub ttl_secs: u32,
}

impl InvitePut {
    /// Exact size of the body's encoding.
    pub fn encoded_len(&self) -> usize {
        len::sum(&[
            len::array_header(4),
            len::uint(self.request_id),
            len::str(self.lookup_id.len()),
            len::bin(self.sealed.len()),
            len::uint(self.ttl_secs.into()),
        ])
    }
}

/// Relay → client: the invite is stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteStored {
    /// Echo of `InvitePut.request_id`.
    pub request_id: u64,
}

impl InviteStored {
    /// Exact size of the body's encoding.
    pub fn encoded_len(&self) -> usize {
        len::array_header(1) + len::uint(self.request_id)
    }
}

/// Client → relay: fetch (and consume) a sealed invite by lookup id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteGet {
    /// Client-chosen id, echoed by `InviteFound` or `Error`.
    pub request_id: u64,
    /// The lookup half of the short code.
    pub lookup_id: String,
}

impl InviteGet {
    /// Exact size of the body's encoding.
    pub fn encoded_len(&self) -> usize {
        len::array_header(2) + len::uint(self.request_id) + len::str(self.lookup_id.len())
    }
}

/// Relay → client: the sealed invite (the mailbox entry is now used up).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteFound {
    /// Echo of `InviteGet.request_id`.
    pub request_id: u64,
    /// The sealed invite as it was put.
    pub sealed: Payload,
}

impl InviteFound {
    /// Exact size of the body's encoding.
    pub fn encoded_len(&self) -> usize {
        len::array_header(2) + len::uint(self.request_id) + len::bin(self.sealed.len())
    }
}
