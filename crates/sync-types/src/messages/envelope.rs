//! [`Message`], the one thing a frame carries, and [`MessageType`], its type byte: the table of
//! every message with its byte and direction, and the `[type, body]` encoding.

use std::io::Write;

use super::{
    Bye, Challenge, ContentAck, ContentRef, Delete, DeleteAck, Enroll, GroupChanged, GroupGet,
    GroupInfo, GroupUpdate, Hello, InviteFound, InviteGet, InvitePut, InviteStored, Notify, Ping,
    Pong, Pull, PullResponse, Push, PushAck, Welcome, WireError,
};
use crate::error::{DecodeError, EncodeError};
use crate::wire::value_extent;

/// Bytes the `[type, body]` envelope adds to a body: a fixarray header and the type byte.
pub const ENVELOPE_LEN: usize = 2;

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
    /// | 0x30 | [`Enroll`] | client | `GroupChanged` |
    /// | 0x31 | [`GroupChanged`] | relay (reply and broadcast) | |
    /// | 0x32 | [`GroupUpdate`] | client | `GroupChanged` |
    /// | 0x33 | [`GroupGet`] | client, first frame or in a session | `GroupInfo` |
    /// | 0x34 | [`GroupInfo`] | relay | |
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
    /// `GroupChanged` are unsolicited and carry none.
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
    /// 0x30: announce this device's KEM key and name.
    Enroll(Enroll) = 0x30, ClientToRelay;
    /// 0x31: the group's membership changed.
    GroupChanged(GroupChanged) = 0x31, RelayToClient;
    /// 0x32: a membership record and key grants.
    GroupUpdate(GroupUpdate) = 0x32, ClientToRelay;
    /// 0x33: read the group's records, enrollments and this device's grants.
    GroupGet(GroupGet) = 0x33, ClientToRelay;
    /// 0x34: the group's records, enrollments and grants.
    GroupInfo(GroupInfo) = 0x34, RelayToClient;
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
            Message::Enroll(m) => Some(m.request_id),
            Message::GroupChanged(m) => m.request_id,
            Message::GroupUpdate(m) => Some(m.request_id),
            Message::GroupGet(m) => Some(m.request_id),
            Message::GroupInfo(m) => Some(m.request_id),
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
