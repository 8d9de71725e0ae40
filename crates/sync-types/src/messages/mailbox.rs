//! The relay's invite mailbox: `InvitePut` / `InviteStored` to leave a sealed invite,
//! `InviteGet` / `InviteFound` to fetch it.

use serde::{Deserialize, Serialize};

use crate::payload::Payload;
use crate::wire::encoded_len;

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

encoded_len!(InvitePut {
    request_id,
    lookup_id,
    sealed,
    ttl_secs
});

/// Relay → client: the invite is stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteStored {
    /// Echo of `InvitePut.request_id`.
    pub request_id: u64,
}

encoded_len!(InviteStored { request_id });

/// Client → relay: fetch (and consume) a sealed invite by lookup id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteGet {
    /// Client-chosen id, echoed by `InviteFound` or `Error`.
    pub request_id: u64,
    /// The lookup half of the short code.
    pub lookup_id: String,
}

encoded_len!(InviteGet {
    request_id,
    lookup_id
});

/// Relay → client: the sealed invite (the mailbox entry is now used up).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteFound {
    /// Echo of `InviteGet.request_id`.
    pub request_id: u64,
    /// The sealed invite as it was put.
    pub sealed: Payload,
}

encoded_len!(InviteFound { request_id, sealed });
