//! Where the connection is: [`ConnectionState`] with the data each state holds, and its
//! data-free [`StateKind`].

use std::time::Instant;

use sync_types::Cursor;

#[cfg(doc)]
use super::Connection;

/// Where the connection is. Read it with [`Connection::state`]; only events change it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    /// Not connected and not trying to be (initial state, after a close, after a fatal error).
    Disconnected {
        /// Why the last connection ended for good, if it was not a local close.
        last_error: Option<String>,
    },
    /// A transport dial is in progress.
    Connecting {
        /// When the dial counts as failed.
        deadline: Instant,
    },
    /// The transport is up and `Hello` was sent; waiting for `Welcome`.
    Handshaking {
        /// When the handshake counts as failed.
        deadline: Instant,
    },
    /// The session is established.
    Connected {
        /// When the handshake completed.
        since: Instant,
        /// The relay's highest cursor for the group, as announced in `Welcome`.
        relay_max_cursor: Cursor,
    },
    /// Waiting before the next dial.
    Reconnecting {
        /// Consecutive failed attempts so far (at least 1).
        attempt: u32,
        /// When the next dial is due.
        retry_at: Instant,
        /// Why the last attempt or session ended.
        reason: String,
    },
}

/// The kind of a [`ConnectionState`], without its data (for error reports and statuses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StateKind {
    /// [`ConnectionState::Disconnected`].
    Disconnected,
    /// [`ConnectionState::Connecting`].
    Connecting,
    /// [`ConnectionState::Handshaking`].
    Handshaking,
    /// [`ConnectionState::Connected`].
    Connected,
    /// [`ConnectionState::Reconnecting`].
    Reconnecting,
}

impl ConnectionState {
    /// The state's kind.
    pub fn kind(&self) -> StateKind {
        match self {
            Self::Disconnected { .. } => StateKind::Disconnected,
            Self::Connecting { .. } => StateKind::Connecting,
            Self::Handshaking { .. } => StateKind::Handshaking,
            Self::Connected { .. } => StateKind::Connected,
            Self::Reconnecting { .. } => StateKind::Reconnecting,
        }
    }
}
