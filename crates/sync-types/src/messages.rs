//! Every message of the protocol and [`Message`], the one thing a frame carries. The encoding
//! is documented on [`Message`], the type byte table on [`MessageType`].

use std::io::Write;

use serde::{Deserialize, Serialize};

use crate::error::{DecodeError, EncodeError, ErrorCode};
use crate::ids::{BlobId, Cursor, DeviceId, GroupId};
use crate::limits::Limits;
use crate::payload::Payload;
use crate::wire::{fixed_bin, len, value_extent};

/// Bytes the `[type, body]` envelope adds to a body: a fixarray header and the type byte.
pub const ENVELOPE_LEN: usize = 2;

/// First frame of a session, client → relay: who this device is, which group it wants, and the
/// proof that it holds the group's auth key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Client-chosen id, echoed by `Welcome` or `Error`.
    pub request_id: u64,
    /// Protocol version the client speaks ([`crate::PROTOCOL_VERSION`]).
    pub version: u16,
    /// Human-readable device name (shown in device lists; not secret, not authenticated).
    pub device_name: String,
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

impl Hello {
    /// Exact size of the body's encoding.
    pub fn encoded_len(&self) -> usize {
        len::sum(&[
            len::array_header(7),
            len::uint(self.request_id),
            len::uint(u64::from(self.version)),
            len::str(self.device_name.len()),
            len::ID32,
            len::uint(self.last_cursor.get()),
            len::SIG64,
            self.admission_token
                .as_ref()
                .map_or(len::NIL, |t| len::bin(t.len())),
        ])
    }
}

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
}

impl Welcome {
    /// Exact size of the body's encoding.
    pub fn encoded_len(&self) -> usize {
        len::sum(&[
            len::array_header(4),
            len::uint(self.request_id),
            len::ID32,
            len::uint(self.max_cursor.get()),
            self.limits.encoded_len(),
        ])
    }
}

/// Relay → client, optional first frame: a fresh nonce that binds `Hello` to this connection
/// when the QUIC TLS exporter is not available.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    /// 32 random bytes, used once.
    #[serde(with = "fixed_bin")]
    pub nonce: [u8; 32],
}

impl Challenge {
    /// Exact size of the body's encoding.
    pub fn encoded_len(&self) -> usize {
        len::array_header(1) + len::ID32
    }
}

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

impl Push {
    /// Exact size of the body's encoding.
    pub fn encoded_len(&self) -> usize {
        len::sum(&[
            len::array_header(4),
            len::uint(self.request_id),
            len::BLOB_ID,
            len::bin(self.payload.len()),
            len::uint(u64::from(self.ttl_secs)),
        ])
    }
}

/// Relay → client: the blob is durably stored at `cursor`.
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

impl PushAck {
    /// Exact size of the body's encoding.
    pub fn encoded_len(&self) -> usize {
        len::sum(&[
            len::array_header(4),
            len::uint(self.request_id),
            len::BLOB_ID,
            len::uint(self.cursor.get()),
            len::uint(self.server_time_ms),
        ])
    }
}

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

impl Pull {
    /// Exact size of the body's encoding.
    pub fn encoded_len(&self) -> usize {
        len::sum(&[
            len::array_header(4),
            len::uint(self.request_id),
            len::uint(self.after.get()),
            len::uint(u64::from(self.limit)),
            len::opt_uint(self.max_bytes.map(u64::from)),
        ])
    }
}

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

impl PullEntry {
    /// Exact size of the entry's encoding; at most `payload.len() + PULL_ENTRY_OVERHEAD`.
    pub fn encoded_len(&self) -> usize {
        len::sum(&[
            len::array_header(5),
            len::uint(self.cursor.get()),
            len::BLOB_ID,
            len::ID32,
            len::bin(self.payload.len()),
            len::uint(self.timestamp_ms),
        ])
    }
}

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
}

impl PullResponse {
    /// Exact size of the body's encoding; at most `PULL_RESPONSE_OVERHEAD - ENVELOPE_LEN` plus
    /// the entries' `encoded_len`.
    pub fn encoded_len(&self) -> usize {
        let entries = self
            .entries
            .iter()
            .fold(0usize, |a, e| a.saturating_add(e.encoded_len()));
        len::sum(&[
            len::array_header(4),
            len::uint(self.request_id),
            len::array_header(self.entries.len()),
            entries,
            len::BOOL,
            len::uint(self.max_cursor.get()),
        ])
    }
}

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

impl Notify {
    /// Exact size of the body's encoding.
    pub fn encoded_len(&self) -> usize {
        len::sum(&[
            len::array_header(4),
            len::uint(self.cursor.get()),
            len::BLOB_ID,
            len::ID32,
            len::uint(u64::from(self.size)),
        ])
    }
}

/// Client → relay: delete a blob before its TTL expires.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delete {
    /// Client-chosen id, echoed by `DeleteAck` or `Error`.
    pub request_id: u64,
    /// The blob to delete.
    pub blob_id: BlobId,
}

impl Delete {
    /// Exact size of the body's encoding.
    pub fn encoded_len(&self) -> usize {
        len::array_header(2) + len::uint(self.request_id) + len::BLOB_ID
    }
}

/// Relay → client: the blob is deleted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteAck {
    /// Echo of `Delete.request_id`.
    pub request_id: u64,
    /// Echo of `Delete.blob_id`.
    pub blob_id: BlobId,
}

impl DeleteAck {
    /// Exact size of the body's encoding.
    pub fn encoded_len(&self) -> usize {
        len::array_header(2) + len::uint(self.request_id) + len::BLOB_ID
    }
}

/// Client → relay heartbeat: keeps the session alive and measures round-trip time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    /// Client-chosen id, echoed by `Pong`.
    pub request_id: u64,
}

impl Ping {
    /// Exact size of the body's encoding.
    pub fn encoded_len(&self) -> usize {
        len::array_header(1) + len::uint(self.request_id)
    }
}

/// Relay → client: answer to `Ping`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pong {
    /// Echo of `Ping.request_id`.
    pub request_id: u64,
}

impl Pong {
    /// Exact size of the body's encoding.
    pub fn encoded_len(&self) -> usize {
        len::array_header(1) + len::uint(self.request_id)
    }
}

/// Client → relay: revoke a device from the group as of a key epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeDevice {
    /// Client-chosen id, echoed by `DeviceRevoked` or `Error`.
    pub request_id: u64,
    /// The device to revoke.
    pub device: DeviceId,
    /// The first key epoch the device may no longer use.
    pub epoch: u32,
}

impl RevokeDevice {
    /// Exact size of the body's encoding.
    pub fn encoded_len(&self) -> usize {
        len::array_header(3) + len::uint(self.request_id) + len::ID32 + len::uint(self.epoch.into())
    }
}

/// Relay → client: a device was revoked. Sent to the requester (with its `request_id`) and
/// broadcast to the group's other sessions (without).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRevoked {
    /// Echo of `RevokeDevice.request_id` for the requester; `None` in the broadcast.
    pub request_id: Option<u64>,
    /// The revoked device.
    pub device: DeviceId,
    /// The first key epoch the device may no longer use.
    pub epoch: u32,
}

impl DeviceRevoked {
    /// Exact size of the body's encoding.
    pub fn encoded_len(&self) -> usize {
        len::array_header(3)
            + len::opt_uint(self.request_id)
            + len::ID32
            + len::uint(self.epoch.into())
    }
}

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

impl ContentRef {
    /// Exact size of the body's encoding.
    pub fn encoded_len(&self) -> usize {
        len::sum(&[
            len::array_header(6),
            len::uint(self.request_id),
            len::BLOB_ID,
            len::ID32,
            len::uint(self.size),
            len::uint(self.chunk_size.into()),
            len::uint(self.chunks.into()),
        ])
    }
}

/// Relay → client: the content reference is recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentAck {
    /// Echo of `ContentRef.request_id`.
    pub request_id: u64,
    /// Echo of `ContentRef.blob_id`.
    pub blob_id: BlobId,
}

impl ContentAck {
    /// Exact size of the body's encoding.
    pub fn encoded_len(&self) -> usize {
        len::array_header(2) + len::uint(self.request_id) + len::BLOB_ID
    }
}

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

/// Either side: the session is ending normally.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bye {
    /// Why, for logs.
    pub reason: Option<String>,
}

impl Bye {
    /// Exact size of the body's encoding.
    pub fn encoded_len(&self) -> usize {
        len::array_header(1) + len::opt_str(self.reason.as_deref())
    }
}

/// Either side: a request failed or the session is being closed for a reason (the `Error`
/// message, type 0x7F).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    /// Echo of the failed request's id; `None` for session-level errors.
    pub request_id: Option<u64>,
    /// What went wrong.
    pub code: ErrorCode,
    /// Human-readable detail. Never contains keys, payloads or other secrets.
    pub message: String,
    /// Retry hint: wait at least this long before retrying.
    pub retry_after_ms: Option<u64>,
}

impl WireError {
    /// An error with a code and a message, not tied to a request.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            request_id: None,
            code,
            message: message.into(),
            retry_after_ms: None,
        }
    }

    /// The same error, answering the request with this id.
    pub fn for_request(mut self, request_id: u64) -> Self {
        self.request_id = Some(request_id);
        self
    }

    /// The same error with a retry hint.
    pub fn retry_after_ms(mut self, ms: u64) -> Self {
        self.retry_after_ms = Some(ms);
        self
    }

    /// Whether retrying later may succeed: a retryable code, or any code with a retry hint.
    pub fn is_retryable(&self) -> bool {
        self.code.is_retryable() || self.retry_after_ms.is_some()
    }

    /// Exact size of the body's encoding.
    pub fn encoded_len(&self) -> usize {
        len::sum(&[
            len::array_header(4),
            len::opt_uint(self.request_id),
            len::uint(self.code.as_u16().into()),
            len::str(self.message.len()),
            len::opt_uint(self.retry_after_ms),
        ])
    }
}

/// Which side of a session may send a message type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Only clients send it; a relay sending it is a protocol violation.
    ClientToRelay,
    /// Only the relay sends it; a client sending it is a protocol violation.
    RelayToClient,
    /// Both sides may send it.
    Both,
}

macro_rules! messages {
    (
        $(#[$tdoc:meta])* enum MessageType;
        $(#[$mdoc:meta])* enum Message;
        $( $(#[$doc:meta])* $variant:ident($body:ident) = $byte:literal, $dir:ident; )*
    ) => {
        $(#[$tdoc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum MessageType {
            $( $(#[$doc])* $variant = $byte, )*
        }

        impl MessageType {
            /// Every message type, in table order.
            pub const ALL: &'static [MessageType] = &[$(MessageType::$variant),*];

            /// The type for a type byte, or `None` if this version does not know it.
            pub const fn from_u8(byte: u8) -> Option<Self> {
                match byte {
                    $( $byte => Some(MessageType::$variant), )*
                    _ => None,
                }
            }

            /// The type byte.
            pub const fn as_u8(self) -> u8 {
                self as u8
            }

            /// The message name, for logs and metrics labels.
            pub const fn name(self) -> &'static str {
                match self {
                    $( MessageType::$variant => stringify!($variant), )*
                }
            }

            /// Which side may send this type.
            pub const fn direction(self) -> Direction {
                match self {
                    $( MessageType::$variant => Direction::$dir, )*
                }
            }
        }

        $(#[$mdoc])*
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub enum Message {
            $( $(#[$doc])* $variant($body), )*
        }

        impl Message {
            /// The message's type byte.
            pub const fn message_type(&self) -> MessageType {
                match self {
                    $( Message::$variant(_) => MessageType::$variant, )*
                }
            }

            fn body_encoded_len(&self) -> usize {
                match self {
                    $( Message::$variant(b) => b.encoded_len(), )*
                }
            }

            fn write_body<W: Write>(&self, w: &mut W) -> Result<(), rmp_serde::encode::Error> {
                match self {
                    $( Message::$variant(b) => rmp_serde::encode::write(w, b), )*
                }
            }

            fn decode_body(ty: MessageType, body: &[u8]) -> Result<Message, DecodeError> {
                match ty {
                    $( MessageType::$variant => rmp_serde::from_slice::<$body>(body)
                        .map(Message::$variant)
                        .map_err(|e| DecodeError::from_rmp(stringify!($variant), &e)), )*
                }
            }
        }

        $(
            impl From<$body> for Message {
                fn from(body: $body) -> Message {
                    Message::$variant(body)
                }
            }
        )*
    };
}

messages! {
    /// The type byte of a message. All values are below 0x80 (one MessagePack byte).
    ///
    /// | byte | message | sent by | answered by |
    /// |---:|---|---|---|
    /// | 0x01 | [`Hello`] | client, first frame | `Welcome` or `Error` |
    /// | 0x02 | [`Welcome`] | relay | |
    /// | 0x03 | [`Challenge`] | relay, optional first frame | |
    /// | 0x10 | [`Push`] | client | `PushAck` |
    /// | 0x11 | [`PushAck`] | relay | |
    /// | 0x12 | [`Pull`] | client | `PullResponse` |
    /// | 0x13 | [`PullResponse`] | relay | |
    /// | 0x14 | [`Notify`] | relay, unsolicited | |
    /// | 0x15 | [`Delete`] | client | `DeleteAck` |
    /// | 0x16 | [`DeleteAck`] | relay | |
    /// | 0x20 | [`Ping`] | client (heartbeat) | `Pong` |
    /// | 0x21 | [`Pong`] | relay | |
    /// | 0x30 | [`RevokeDevice`] | client | `DeviceRevoked` |
    /// | 0x31 | [`DeviceRevoked`] | relay (reply and broadcast) | |
    /// | 0x40 | [`ContentRef`] | client | `ContentAck` |
    /// | 0x41 | [`ContentAck`] | relay | |
    /// | 0x50 | [`InvitePut`] | client | `InviteStored` |
    /// | 0x51 | [`InviteStored`] | relay | |
    /// | 0x52 | [`InviteGet`] | client | `InviteFound` |
    /// | 0x53 | [`InviteFound`] | relay | |
    /// | 0x7E | [`Bye`] | either | |
    /// | 0x7F | `Error` ([`WireError`]) | either | |
    enum MessageType;
    /// A protocol message: what one frame carries.
    ///
    /// # Encoding
    ///
    /// A message is the MessagePack array `[type, body]`: `type` is the byte from the
    /// [`MessageType`] table (all values are below 0x80, so it is one positive-fixint byte),
    /// `body` is the message's
    /// struct encoded by `rmp-serde` as an array of its fields in declaration order. Identifiers,
    /// hashes, signatures and payloads are `bin`; integers use their shortest encoding. The
    /// envelope therefore costs exactly 2 bytes ([`ENVELOPE_LEN`]). Encoders always produce this
    /// form; decoders also accept wider integer encodings and structs encoded as maps, and reject
    /// anything else with a typed [`DecodeError`]: an unknown type byte is
    /// [`DecodeError::UnknownType`], bytes after the message are [`DecodeError::TrailingBytes`].
    ///
    /// Client requests carry a `request_id` chosen by the client; the response (or an `Error`)
    /// echoes it, so requests can be pipelined. `Notify`, `Challenge` and broadcast
    /// `DeviceRevoked` are unsolicited and carry none.
    enum Message;

    /// 0x01: client's first frame.
    Hello(Hello) = 0x01, ClientToRelay;
    /// 0x02: session open.
    Welcome(Welcome) = 0x02, RelayToClient;
    /// 0x03: relay nonce binding `Hello` to the connection.
    Challenge(Challenge) = 0x03, RelayToClient;
    /// 0x10: store a sealed blob.
    Push(Push) = 0x10, ClientToRelay;
    /// 0x11: blob stored durably.
    PushAck(PushAck) = 0x11, RelayToClient;
    /// 0x12: request blobs after a cursor.
    Pull(Pull) = 0x12, ClientToRelay;
    /// 0x13: blobs after a cursor.
    PullResponse(PullResponse) = 0x13, RelayToClient;
    /// 0x14: a new blob was committed.
    Notify(Notify) = 0x14, RelayToClient;
    /// 0x15: delete a blob.
    Delete(Delete) = 0x15, ClientToRelay;
    /// 0x16: blob deleted.
    DeleteAck(DeleteAck) = 0x16, RelayToClient;
    /// 0x20: heartbeat.
    Ping(Ping) = 0x20, ClientToRelay;
    /// 0x21: heartbeat answer.
    Pong(Pong) = 0x21, RelayToClient;
    /// 0x30: revoke a device.
    RevokeDevice(RevokeDevice) = 0x30, ClientToRelay;
    /// 0x31: a device was revoked.
    DeviceRevoked(DeviceRevoked) = 0x31, RelayToClient;
    /// 0x40: register large content.
    ContentRef(ContentRef) = 0x40, ClientToRelay;
    /// 0x41: large content registered.
    ContentAck(ContentAck) = 0x41, RelayToClient;
    /// 0x50: leave a sealed invite in the mailbox.
    InvitePut(InvitePut) = 0x50, ClientToRelay;
    /// 0x51: invite stored.
    InviteStored(InviteStored) = 0x51, RelayToClient;
    /// 0x52: fetch a sealed invite.
    InviteGet(InviteGet) = 0x52, ClientToRelay;
    /// 0x53: the sealed invite.
    InviteFound(InviteFound) = 0x53, RelayToClient;
    /// 0x7E: normal end of session.
    Bye(Bye) = 0x7e, Both;
    /// 0x7F: a typed error.
    Error(WireError) = 0x7f, Both;
}

impl Message {
    /// Exact size of [`Message::to_bytes`]'s output (the frame body).
    pub fn encoded_len(&self) -> usize {
        ENVELOPE_LEN.saturating_add(self.body_encoded_len())
    }

    /// The request id this message carries or echoes, if any.
    pub fn request_id(&self) -> Option<u64> {
        match self {
            Message::Hello(m) => Some(m.request_id),
            Message::Welcome(m) => Some(m.request_id),
            Message::Push(m) => Some(m.request_id),
            Message::PushAck(m) => Some(m.request_id),
            Message::Pull(m) => Some(m.request_id),
            Message::PullResponse(m) => Some(m.request_id),
            Message::Delete(m) => Some(m.request_id),
            Message::DeleteAck(m) => Some(m.request_id),
            Message::Ping(m) => Some(m.request_id),
            Message::Pong(m) => Some(m.request_id),
            Message::RevokeDevice(m) => Some(m.request_id),
            Message::DeviceRevoked(m) => m.request_id,
            Message::ContentRef(m) => Some(m.request_id),
            Message::ContentAck(m) => Some(m.request_id),
            Message::InvitePut(m) => Some(m.request_id),
            Message::InviteStored(m) => Some(m.request_id),
            Message::InviteGet(m) => Some(m.request_id),
            Message::InviteFound(m) => Some(m.request_id),
            Message::Error(m) => m.request_id,
            Message::Challenge(_) | Message::Notify(_) | Message::Bye(_) => None,
        }
    }

    /// Encodes the message (the frame body, without the length prefix).
    pub fn to_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        let len = self.checked_len()?;
        let mut out = Vec::with_capacity(len);
        self.write_to(&mut out)?;
        Ok(out)
    }

    /// Decodes exactly one message that fills `bytes` entirely.
    pub fn from_bytes(bytes: &[u8]) -> Result<Message, DecodeError> {
        // The envelope is always the 2-element array [type, body].
        let after_header = match bytes {
            [] => return Err(DecodeError::Truncated),
            [0x92, rest @ ..] => rest,
            [_, ..] => {
                return Err(DecodeError::Malformed(
                    "a message is the 2-element array [type, body]".into(),
                ));
            }
        };
        let (type_byte, body) = match after_header {
            [] | [0xcc] => return Err(DecodeError::Truncated),
            [t @ 0x00..=0x7f, rest @ ..] | [0xcc, t, rest @ ..] => (*t, rest),
            [_, ..] => return Err(DecodeError::Malformed("message type is not a u8".into())),
        };
        let ty = MessageType::from_u8(type_byte).ok_or(DecodeError::UnknownType(type_byte))?;
        let extent = value_extent(bytes)?;
        if extent < bytes.len() {
            return Err(DecodeError::TrailingBytes(bytes.len() - extent));
        }
        // `extent` covers exactly the envelope, so `body` is exactly one value.
        Message::decode_body(ty, body)
    }

    /// The encoded length, refused if MessagePack cannot describe it.
    pub(crate) fn checked_len(&self) -> Result<usize, EncodeError> {
        let len = self.encoded_len();
        if len > u32::MAX as usize {
            return Err(EncodeError::FieldTooLong { len });
        }
        Ok(len)
    }

    /// Writes the encoding to `w`. Call [`Message::checked_len`] first.
    pub(crate) fn write_to<W: Write>(&self, w: &mut W) -> Result<(), EncodeError> {
        w.write_all(&[0x92, self.message_type().as_u8()])
            .map_err(|e| EncodeError::Serialize(e.to_string()))?;
        self.write_body(w)
            .map_err(|e| EncodeError::Serialize(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{
        DEFAULT_MAX_FRAME, DEFAULT_MAX_PAYLOAD, PULL_ENTRY_OVERHEAD, PULL_RESPONSE_OVERHEAD,
        PUSH_OVERHEAD, pull_entry_budget,
    };

    fn max_push(payload_len: usize) -> Message {
        Message::Push(Push {
            request_id: u64::MAX,
            blob_id: BlobId::from_bytes([0xff; 16]),
            payload: Payload::from(vec![0xA5; payload_len]),
            ttl_secs: u32::MAX,
        })
    }

    fn max_entry(payload_len: usize) -> PullEntry {
        PullEntry {
            cursor: Cursor::new(u64::MAX),
            blob_id: BlobId::from_bytes([0xff; 16]),
            sender: DeviceId::from_bytes([0xee; 32]),
            payload: Payload::from(vec![0x5A; payload_len]),
            timestamp_ms: u64::MAX,
        }
    }

    #[test]
    fn push_of_one_mib_costs_exactly_40_bytes_of_framing() {
        let msg = max_push(DEFAULT_MAX_PAYLOAD);
        let bytes = msg.to_bytes().expect("encode");
        assert_eq!(bytes.len(), DEFAULT_MAX_PAYLOAD + PUSH_OVERHEAD);
        assert_eq!(bytes.len(), DEFAULT_MAX_PAYLOAD + 40);
        assert!(bytes.len() <= DEFAULT_MAX_PAYLOAD + 64);
        assert_eq!(msg.encoded_len(), bytes.len());
        assert_eq!(Message::from_bytes(&bytes), Ok(msg));
    }

    #[test]
    fn pull_response_with_one_max_entry_fits_the_default_frame() {
        let entry = max_entry(DEFAULT_MAX_PAYLOAD);
        assert_eq!(
            entry.encoded_len(),
            DEFAULT_MAX_PAYLOAD + PULL_ENTRY_OVERHEAD
        );
        assert!(entry.encoded_len() <= pull_entry_budget(DEFAULT_MAX_FRAME));
        let msg = Message::PullResponse(PullResponse {
            request_id: u64::MAX,
            entries: vec![entry],
            has_more: true,
            max_cursor: Cursor::new(u64::MAX),
        });
        let bytes = msg.to_bytes().expect("encode");
        assert_eq!(bytes.len(), msg.encoded_len());
        assert!(bytes.len() <= DEFAULT_MAX_PAYLOAD + PULL_RESPONSE_OVERHEAD + PULL_ENTRY_OVERHEAD);
        assert!(bytes.len() <= DEFAULT_MAX_FRAME);
        assert_eq!(Message::from_bytes(&bytes), Ok(msg));
    }

    #[test]
    fn pull_response_overhead_holds_for_a_huge_entry_count() {
        let entries = vec![max_entry(0); 70_000];
        let sum: usize = entries.iter().map(PullEntry::encoded_len).sum();
        let msg = Message::PullResponse(PullResponse {
            request_id: u64::MAX,
            entries,
            has_more: false,
            max_cursor: Cursor::new(u64::MAX),
        });
        let bytes = msg.to_bytes().expect("encode");
        assert_eq!(bytes.len(), msg.encoded_len());
        assert_eq!(bytes.len(), sum + PULL_RESPONSE_OVERHEAD);
    }

    #[test]
    fn envelope_is_two_bytes_and_type_bytes_are_fixints() {
        for ty in MessageType::ALL {
            assert!(ty.as_u8() < 0x80, "{ty:?}");
            assert_eq!(MessageType::from_u8(ty.as_u8()), Some(*ty));
        }
        let bytes = Message::Ping(Ping { request_id: 5 })
            .to_bytes()
            .expect("encode");
        assert_eq!(bytes, [0x92, 0x20, 0x91, 0x05]);
    }

    #[test]
    fn unknown_type_is_typed() {
        // [0x60, [1]] — a well-formed envelope with a type this version does not know.
        assert_eq!(
            Message::from_bytes(&[0x92, 0x60, 0x91, 0x01]),
            Err(DecodeError::UnknownType(0x60))
        );
        assert_eq!(
            Message::from_bytes(&[0x92, 0xcc, 0xf0, 0xc0]),
            Err(DecodeError::UnknownType(0xf0))
        );
        assert_eq!(
            Message::from_bytes(&[0x92, 0x00]),
            Err(DecodeError::UnknownType(0))
        );
    }

    #[test]
    fn trailing_bytes_and_bad_envelopes_are_typed() {
        let mut bytes = Message::Ping(Ping { request_id: 5 })
            .to_bytes()
            .expect("encode");
        bytes.extend_from_slice(&[0, 0, 0]);
        assert_eq!(
            Message::from_bytes(&bytes),
            Err(DecodeError::TrailingBytes(3))
        );
        assert_eq!(Message::from_bytes(&[]), Err(DecodeError::Truncated));
        assert_eq!(Message::from_bytes(&[0x92]), Err(DecodeError::Truncated));
        assert_eq!(
            Message::from_bytes(&[0x92, 0x20]),
            Err(DecodeError::Truncated)
        );
        assert!(matches!(
            Message::from_bytes(&[0x93, 0x20, 0x91, 5, 1]),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            Message::from_bytes(&[0x92, 0xa1, b'x', 0x91, 5]),
            Err(DecodeError::Malformed(_))
        ));
        // Body has an extra field.
        assert!(matches!(
            Message::from_bytes(&[0x92, 0x20, 0x92, 5, 6]),
            Err(DecodeError::Malformed(_))
        ));
        // Body is missing its field.
        assert!(matches!(
            Message::from_bytes(&[0x92, 0x20, 0x90]),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn payload_sent_as_integer_array_is_rejected() {
        // A Push whose payload is an array of integers instead of bin.
        #[derive(Serialize)]
        struct BadPush {
            request_id: u64,
            blob_id: BlobId,
            payload: Vec<u8>,
            ttl_secs: u32,
        }
        let mut bytes = vec![0x92, 0x10];
        let bad = BadPush {
            request_id: 1,
            blob_id: BlobId::from_bytes([1; 16]),
            payload: vec![1, 2, 3],
            ttl_secs: 0,
        };
        bytes.extend(rmp_serde::to_vec(&bad).expect("encode"));
        assert!(matches!(
            Message::from_bytes(&bytes),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn malformed_detail_never_quotes_input_strings() {
        // Ping whose request_id is a string.
        let mut bytes = vec![0x92, 0x20, 0x91];
        bytes.extend(rmp_serde::to_vec("SECRET-CONTENT").expect("encode"));
        let err = Message::from_bytes(&bytes).expect_err("must fail");
        assert!(matches!(err, DecodeError::Malformed(_)));
        assert!(!err.to_string().contains("SECRET"), "{err}");
    }

    #[test]
    fn request_ids_are_echoed_where_the_table_says() {
        assert_eq!(Message::Ping(Ping { request_id: 9 }).request_id(), Some(9));
        let notify = Message::Notify(Notify {
            cursor: Cursor::new(1),
            blob_id: BlobId::from_bytes([0; 16]),
            sender: DeviceId::from_bytes([0; 32]),
            size: 1,
        });
        assert_eq!(notify.request_id(), None);
        assert_eq!(
            Message::Challenge(Challenge { nonce: [0; 32] }).request_id(),
            None
        );
    }

    #[test]
    fn wire_error_helpers() {
        let e = WireError::new(ErrorCode::RateLimited, "slow down")
            .for_request(7)
            .retry_after_ms(250);
        assert_eq!(e.request_id, Some(7));
        assert!(e.is_retryable());
        assert!(
            WireError::new(ErrorCode::Unknown(999), "x")
                .retry_after_ms(1)
                .is_retryable()
        );
        assert!(!WireError::new(ErrorCode::Unauthorized, "no").is_retryable());
        let msg = Message::Error(e);
        let bytes = msg.to_bytes().expect("encode");
        assert_eq!(bytes.len(), msg.encoded_len());
        assert_eq!(Message::from_bytes(&bytes), Ok(msg));
    }

    #[test]
    fn directions() {
        assert_eq!(MessageType::Hello.direction(), Direction::ClientToRelay);
        assert_eq!(MessageType::Notify.direction(), Direction::RelayToClient);
        assert_eq!(MessageType::Error.direction(), Direction::Both);
    }
}
