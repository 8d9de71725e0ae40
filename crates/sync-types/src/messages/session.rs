//! Opening, keeping and ending a session: `Hello` / `Challenge` / `Welcome`, the `Ping` / `Pong`
//! heartbeat and `Bye`.

use serde::{Deserialize, Serialize};

use crate::ids::{Cursor, GroupId};
use crate::limits::Limits;
use crate::payload::Payload;
use crate::wire::{encoded_len, fixed_bin};

/// First frame of a session, client → relay: which group this device wants and the proof that
/// it holds the group's auth key. The device is known by its TLS key; its name never travels
/// to the relay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Client-chosen id, echoed by `Welcome` or `Error`.
    pub request_id: u64,
    /// Protocol version the client speaks ([`crate::PROTOCOL_VERSION`]).
    pub version: u16,
    /// The group to join.
    pub group_id: GroupId,
    /// The last cursor this device has pulled from this relay.
    pub last_cursor: Cursor,
    /// Signature by the group auth key over the connection's hello challenge transcript.
    #[serde(with = "fixed_bin")]
    pub auth_signature: [u8; 64],
    /// Operator-issued admission token, for relays that require one.
    pub admission_token: Option<Payload>,
}

encoded_len!(Hello {
    request_id,
    version,
    group_id,
    last_cursor,
    auth_signature,
    admission_token
});

/// Relay → client: the session is open.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// Echo of `Hello.request_id`.
    pub request_id: u64,
    /// The relay's identity (its iroh endpoint id).
    #[serde(with = "fixed_bin")]
    pub relay_id: [u8; 32],
    /// Highest cursor committed in the group when the session opened.
    pub max_cursor: Cursor,
    /// Limits the relay enforces on this session.
    pub limits: Limits,
    /// The id of the relay's log (random, fixed for the life of its database, kept by a copy
    /// restored from a backup): under the same id, a `max_cursor` below a device's cursor means
    /// the log went back in time; a new id means it was started afresh.
    pub store_id: u64,
}

encoded_len!(Welcome {
    request_id,
    relay_id,
    max_cursor,
    limits,
    store_id
});

/// Relay → client, optional first frame: a fresh nonce that binds `Hello` to this connection
/// when the QUIC TLS exporter is not available.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    /// 32 random bytes, used once.
    #[serde(with = "fixed_bin")]
    pub nonce: [u8; 32],
}

encoded_len!(Challenge { nonce });

/// Client → relay heartbeat: keeps the session alive and measures round-trip time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    /// Client-chosen id, echoed by `Pong`.
    pub request_id: u64,
}

encoded_len!(Ping { request_id });

/// Relay → client: answer to `Ping`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pong {
    /// Echo of `Ping.request_id`.
    pub request_id: u64,
}

encoded_len!(Pong { request_id });

/// Either side: the session is ending normally.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bye {
    /// Why, for logs.
    pub reason: Option<String>,
}

encoded_len!(Bye { reason });
