//! Wire format of 0k-sync: identifiers, messages, error codes and the frame codec.
//!
//! This crate is pure data: no I/O, no async runtime, no cryptography. Every byte that travels
//! between a device and a relay is defined here, and every decoder here returns a typed error on
//! bad input instead of panicking. The one wall-clock read of the workspace, [`unix_ms`], lives
//! here too so that every shell (client, relay, CLI, lab) reads time the same way; nothing in
//! this crate calls it. `sync-core`, `sync-client` and `sync-relay` build on
//! it; it depends on nothing of theirs.
//!
//! - [`Message`] is what one frame carries (encoding on [`Message`], type bytes on
//!   [`MessageType`]); typed failures travel as [`WireError`] with an [`ErrorCode`].
//! - A frame is a `u32` big-endian length followed by the MessagePack body (see [`FrameCodec`]).
//! - Size constants ([`DEFAULT_MAX_PAYLOAD`], [`DEFAULT_MAX_FRAME`], [`PULL_ENTRY_OVERHEAD`], …)
//!   guarantee a maximum-size payload fits a frame both in a `Push` and in a `PullResponse`;
//!   the budget is on [`FRAME_OVERHEAD`].
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod clock;
mod codec;
mod error;
mod ids;
mod limits;
mod messages;
mod payload;
mod relay;
mod wire;

pub use clock::unix_ms;
pub use codec::{FRAME_HEADER_LEN, FrameCodec, FrameError};
pub use error::{DecodeError, EncodeError, ErrorCode};
pub use ids::{BlobId, Cursor, DeviceId, GroupId, IdParseError};
pub use limits::{
    ALPN, DEFAULT_MAX_FRAME, DEFAULT_MAX_PAYLOAD, FRAME_OVERHEAD, HELLO_BINDING_LABEL, Limits,
    MAX_FRAME_LIMIT, MAX_PAYLOAD_LIMIT, PROTOCOL_VERSION, PULL_ENTRY_OVERHEAD,
    PULL_RESPONSE_OVERHEAD, PUSH_OVERHEAD, max_frame_for_payload, max_payload_for_frame,
    pull_entry_budget,
};
pub use messages::{
    Bye, Challenge, ContentAck, ContentRef, Delete, DeleteAck, Direction, ENVELOPE_LEN, Enroll,
    Grant, GroupChanged, GroupGet, GroupInfo, GroupUpdate, Hello, InviteFound, InviteGet,
    InvitePut, InviteStored, Message, MessageType, Notify, Ping, Pong, Pull, PullEntry,
    PullResponse, Push, PushAck, Welcome, WireError,
};
pub use payload::Payload;
pub use relay::{RelayAddr, RelayAddrError, RelayId, bind_addr_for};
