//! Inputs of the state machine: [`ConnectionEvent`], its data-free [`EventKind`], and
//! [`UnexpectedEvent`] for an event the current state cannot take.

use std::time::Duration;

use sync_types::Cursor;

#[cfg(doc)]
use super::Connection;
use super::state::StateKind;

/// An input to the state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionEvent {
    /// The app wants to be connected (also: "retry now" while waiting to reconnect).
    ConnectRequested,
    /// The dial succeeded; the stream to the relay is open.
    TransportConnected,
    /// The dial failed or the transport broke before the session was established.
    TransportFailed {
        /// Human-readable cause (no secrets).
        reason: String,
    },
    /// The relay answered `Hello` with `Welcome`.
    HandshakeCompleted {
        /// The relay's highest cursor for the group.
        max_cursor: Cursor,
    },
    /// The relay answered `Hello` with an `Error`.
    HandshakeRejected {
        /// `false` for errors that retrying cannot fix (unauthorized, unsupported version):
        /// the machine stops instead of retrying forever.
        retryable: bool,
        /// The relay's retry hint, if it sent one (rate limits): the next dial waits at least
        /// this long.
        retry_after: Option<Duration>,
        /// Human-readable cause (no secrets).
        reason: String,
    },
    /// An established session ended (stream closed, idle timeout, relay `Bye`).
    Disconnected {
        /// Human-readable cause (no secrets).
        reason: String,
    },
    /// The instant returned by [`Connection::poll_timeout`] has passed (early or stale calls are
    /// ignored).
    TimerFired,
    /// The app wants to be disconnected.
    CloseRequested,
}

impl ConnectionEvent {
    /// The event's kind, without its data.
    pub(super) fn kind(&self) -> EventKind {
        match self {
            Self::ConnectRequested => EventKind::ConnectRequested,
            Self::TransportConnected => EventKind::TransportConnected,
            Self::TransportFailed { .. } => EventKind::TransportFailed,
            Self::HandshakeCompleted { .. } => EventKind::HandshakeCompleted,
            Self::HandshakeRejected { .. } => EventKind::HandshakeRejected,
            Self::Disconnected { .. } => EventKind::Disconnected,
            Self::TimerFired => EventKind::TimerFired,
            Self::CloseRequested => EventKind::CloseRequested,
        }
    }
}

/// The kind of a [`ConnectionEvent`], without its data (for error reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventKind {
    /// [`ConnectionEvent::ConnectRequested`].
    ConnectRequested,
    /// [`ConnectionEvent::TransportConnected`].
    TransportConnected,
    /// [`ConnectionEvent::TransportFailed`].
    TransportFailed,
    /// [`ConnectionEvent::HandshakeCompleted`].
    HandshakeCompleted,
    /// [`ConnectionEvent::HandshakeRejected`].
    HandshakeRejected,
    /// [`ConnectionEvent::Disconnected`].
    Disconnected,
    /// [`ConnectionEvent::TimerFired`].
    TimerFired,
    /// [`ConnectionEvent::CloseRequested`].
    CloseRequested,
}

/// An event that cannot happen in the current state (a shell bug or a late report from an
/// abandoned attempt). The state is unchanged; the shell may log and drop it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("connection event {event:?} is not valid in state {state:?}")]
pub struct UnexpectedEvent {
    /// The state the machine was (and still is) in.
    pub state: StateKind,
    /// The event that was refused.
    pub event: EventKind,
}
