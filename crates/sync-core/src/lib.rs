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
//! 1. Build a [`Connection`], an [`Outbox`], a [`CursorTracker`] (from the persisted cursor)
//!    and a [`SyncStatusTracker`].
//! 2. Feed every input into [`Connection::handle`] with the current `now` and the RNG: user
//!    requests ([`ConnectionEvent::ConnectRequested`], [`ConnectionEvent::CloseRequested`]),
//!    transport outcomes, handshake outcomes, and [`ConnectionEvent::TimerFired`].
//! 3. Execute the returned [`Action`]s in order (dial, send `Hello`, schedule a wake-up, pull
//!    from a cursor, resend pending pushes, close, publish a status).
//! 4. After every call, ask [`Connection::poll_timeout`] when to wake up next and deliver
//!    [`ConnectionEvent::TimerFired`] at (or after) that instant. Early or stale timer events
//!    are harmless.
//! 5. While connected, take pushes with [`Outbox::send_next`] (peek with
//!    [`Outbox::next_to_send`]), settle them with [`Outbox::ack`] / [`Outbox::reject`], record
//!    pulled cursors with [`CursorTracker::received`] / [`CursorTracker::received_range`] and own
//!    acks with [`CursorTracker::own_push_acked`], and mirror everything into the
//!    [`SyncStatusTracker`]. On disconnect call [`Outbox::requeue_all_in_flight`].
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
    DEFAULT_INVITE_TTL, INVITE_VERSION, Invite, InviteError, InviteParams, MAX_INVITE_BYTES,
    MAX_QR_PAYLOAD_LEN, MAX_RELAY_ADDR_LEN, MAX_RELAY_ADDRS, QR_PREFIX, ShortCode, ShortCodeError,
    open_from_mailbox, seal_for_mailbox,
};
pub use outbox::{AckOutcome, Outbox, OutboxEntry, OutboxError, OutboxLimits, RejectOutcome};
pub use session::{
    Established, HelloAuth, Input, MAX_RETRY_HINT, Page, PullEnd, PullMode, Session, SessionConfig,
    SessionError, SessionEvent, Transmit, retry_hint,
};
pub use status::{SyncStatus, SyncStatusTracker};
