//! Outputs of the state machine: the [`Action`]s the shell performs and the
//! [`ConnectionStatus`] it publishes to the app.

use std::time::{Duration, Instant};

use sync_types::Cursor;

#[cfg(doc)]
use super::{Connection, ConnectionEvent};

/// What the connection looks like to the app; published with [`Action::EmitStatus`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionStatus {
    /// Not connected and not trying (closed by the app).
    Disconnected,
    /// Dialing or handshaking.
    Connecting,
    /// The session is established.
    Connected,
    /// Waiting to retry.
    Reconnecting {
        /// Consecutive failed attempts so far.
        attempt: u32,
        /// How long until the next dial.
        retry_in: Duration,
        /// Why the last attempt or session ended.
        reason: String,
    },
    /// Stopped for good after an error retrying cannot fix; needs the app (or user) to act.
    Failed {
        /// Why (no secrets).
        reason: String,
    },
}

/// Work the shell must do, in the order returned.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Dial the relay (report [`ConnectionEvent::TransportConnected`] or
    /// [`ConnectionEvent::TransportFailed`]).
    Dial,
    /// Send `Hello` (with the resume cursor from the shell's `CursorTracker`), then report
    /// [`ConnectionEvent::HandshakeCompleted`] or [`ConnectionEvent::HandshakeRejected`].
    SendHello,
    /// Deliver [`ConnectionEvent::TimerFired`] at `at` (same instant as
    /// [`Connection::poll_timeout`]).
    ScheduleReconnect {
        /// When to dial again.
        at: Instant,
        /// `at - now`, for logs and status.
        delay: Duration,
    },
    /// Publish a new status to the app.
    EmitStatus {
        /// The new status.
        status: ConnectionStatus,
    },
    /// Pull everything after `cursor` (the shell passes its `CursorTracker::resume_cursor`;
    /// this action carries the relay's max so the shell can skip an empty pull).
    ResumeFrom {
        /// The relay's highest cursor for the group, from `Welcome`.
        relay_max_cursor: Cursor,
    },
    /// Re-send every unacknowledged push (same blob ids) — see `Outbox::requeue_all_in_flight`.
    ResendPending,
    /// Abandon the dial or close the transport (send `Bye` if the stream is up).
    Close,
}
