//! Sans-IO sync logic of 0k-sync: the connection state machine and its reconnect backoff, the
//! outbox of pending pushes, the pull-cursor tracker, the sync status, and invites.
//!
//! This crate is a fully deterministic implementation of the client-side sync protocol logic.
//! It contains no networking code, no async runtime, no file system access and it never reads
//! a clock: every input that depends on the outside world (`now`, randomness, transport events)
//! is a parameter. `now` is a [`std::time::Instant`] for timers and unix milliseconds (`u64`)
//! for wall-clock facts such as invite expiry; randomness is any
//! `&mut R where R: rand_core::CryptoRng + ?Sized`. It sits between `sync-types` (the wire
//! format) and the async client, `sync-client`, which owns sockets, tasks, storage and the
//! clock and drives the types here (the CLI and the lab use its invites and statuses too; the
//! relay does not use this crate). Cryptography lives in `sync-crypto`; this crate uses it only
//! to seal invites for the short-code mailbox.
//!
//! # Call order (for the shell that drives this crate)
//!
//! The client's side of a session is one [`Session`]: it owns the [`Connection`] state machine
//! and the [`Outbox`], and decides everything about the conversation with the relay that needs
//! no keys, no storage and no clock of its own.
//!
//! 1. Build a [`Session`] from a [`SessionConfig`], the group id and the [`Outbox`] of pushes
//!    restored from storage; keep a [`CursorTracker`] (from the persisted cursor) and a
//!    [`SyncStatusTracker`] beside it.
//! 2. Feed what happened into [`Session::handle`] with the current `now` and the RNG: the app's
//!    [`Input::Connect`] / [`Input::Close`], the dial's outcome ([`Input::TransportUp`] with the
//!    signed `Hello` proof, or [`Input::DialFailed`]), every frame from the relay, and
//!    [`Input::TransportLost`]. At the instant [`Session::poll_timeout`] names, call
//!    [`Session::handle_timeout`].
//! 3. Then carry out [`Session::poll_transmit`] (dial, write a frame, close) and react to
//!    [`Session::poll_event`] until both return `None`: reacting to an event (a page that ends
//!    a pull) may give the session more to send. Both enums are exhaustive.
//! 4. Queue pushes with [`Session::enqueue`] once they are durable; the session sends them
//!    within the in-flight window and reports [`SessionEvent::PushAcked`],
//!    [`SessionEvent::PushDeferred`] or [`SessionEvent::PushRejected`]. Pull with
//!    [`Session::start_pull`]; pages arrive as [`SessionEvent::Page`], checked for order, with
//!    the span they account for. Record pulled cursors with [`CursorTracker::received_range`]
//!    and own acknowledgements with [`CursorTracker::own_push_acked`].
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod backoff;
mod connection;
mod cursor;
mod group;
mod invite;
mod outbox;
mod session;
mod status;

pub use backoff::{Backoff, BackoffConfig};
pub use connection::{
    Action, Connection, ConnectionConfig, ConnectionEvent, ConnectionState, ConnectionStatus,
    EventKind, StateKind, UnexpectedEvent,
};
pub use cursor::{CursorError, CursorTracker, DEFAULT_MAX_RANGES, MAX_MISSING_LISTED, Recorded};
pub use group::{GroupMaterial, InvitedGroup};
pub use invite::{
    DEFAULT_INVITE_TTL, INVITE_VERSION, Invite, InviteError, InviteParams, MAX_FURTHER_RELAYS,
    MAX_INVITE_BYTES, MAX_QR_PAYLOAD_LEN, MAX_RELAY_ADDR_LEN, MAX_RELAY_ADDRS, QR_PREFIX,
    ShortCode, ShortCodeError, open_from_mailbox, seal_for_mailbox,
};
pub use outbox::{AckOutcome, Outbox, OutboxEntry, OutboxError, OutboxLimits, RejectOutcome};
pub use session::{
    Established, GroupReply, GroupRequest, HelloAuth, Input, MAX_RETRY_HINT, Page, PullEnd,
    PullMode, Session, SessionConfig, SessionError, SessionEvent, Transmit, retry_hint,
};
pub use status::{SyncStatus, SyncStatusTracker};
