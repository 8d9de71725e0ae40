//! Error types. Messages never carry payloads, plaintext, keys or secrets.

use std::time::Duration;

use sync_types::{BlobId, ErrorCode, RelayId};

/// Why a transport could not open a session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The local endpoint could not be created (bind failure, bad configuration).
    #[error("could not set up the local endpoint: {0}")]
    Setup(String),
    /// The relay could not be reached or the connection attempt failed.
    #[error("could not connect to the relay: {0}")]
    Connect(String),
    /// The connection came up but the session stream or its binding could not be set up.
    #[error("could not open the session: {0}")]
    Session(String),
    /// The endpoint at the relay's address is not the relay this device pinned: its key
    /// changed, or another relay answers there. Nothing was sent to it, and the device keeps
    /// the pinned id (it never re-pins silently).
    #[error(
        "the endpoint at the relay's address is not relay {expected}: its key changed, or another relay answers there"
    )]
    WrongRelay {
        /// The pinned relay id.
        expected: RelayId,
    },
    /// The transport was shut down and cannot connect any more.
    #[error("transport is shut down")]
    Shutdown,
}

/// Errors of the local state store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite failed.
    #[error("local store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The data directory or database file could not be created or protected.
    #[error("local store file: {0}")]
    Io(#[from] std::io::Error),
    /// A stored value could not be decoded (corrupt or from an incompatible version).
    #[error("local store holds an invalid {what}")]
    Corrupt {
        /// Which value.
        what: &'static str,
    },
    /// No group is stored and none was given.
    #[error("no sync group is configured on this device")]
    NoGroup,
    /// Several groups are stored and none was selected.
    #[error("several sync groups are stored; select one")]
    AmbiguousGroup,
    /// A store write failed earlier in the same batch (the first error's text).
    #[error("local store write failed: {0}")]
    Failed(String),
    /// The OS random number generator failed.
    #[error("random number generator failed")]
    Random,
}

/// Errors of [`SyncClient`](crate::SyncClient) operations.
///
/// Pushes fail in two families that callers must tell apart:
/// - **not queued**: [`ClientError::Rejected`] (the relay refused it for good),
///   [`ClientError::TooLarge`] and [`ClientError::OutboxFull`] (refused locally before queueing).
///   The data will never be sent.
/// - **queued**: [`ClientError::Offline`], [`ClientError::Deferred`], and
///   [`ClientError::Timeout`] with a blob id. The push is durable in the outbox and will be sent
///   (same blob id) automatically; [`ClientError::queued_blob_id`] returns its id.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The relay refused the request for good (too large, unauthorized, conflict, revoked, …).
    /// For a push: it was removed from the outbox and will never be sent.
    #[error("relay rejected the request: {code}: {message}")]
    Rejected {
        /// The rejected push, if this was a push.
        blob_id: Option<BlobId>,
        /// The relay's error code.
        code: ErrorCode,
        /// The relay's human-readable detail.
        message: String,
        /// The relay's retry hint, if it sent one with a permanent code.
        retry_after: Option<Duration>,
    },
    /// The relay asked to retry later (rate limit, quota, busy). The push stays queued and is
    /// re-sent automatically after the hint.
    #[error("relay deferred the push: {code}: {message}; it stays queued")]
    Deferred {
        /// The queued push.
        blob_id: BlobId,
        /// The relay's error code.
        code: ErrorCode,
        /// The relay's human-readable detail.
        message: String,
        /// How long the relay asked to wait.
        retry_after: Option<Duration>,
    },
    /// No session with the relay: the push is durable in the outbox and will be sent when the
    /// client is connected again.
    #[error("offline: push {blob_id} is queued and will be sent when connected")]
    Offline {
        /// The queued push.
        blob_id: BlobId,
    },
    /// The operation needs a session with the relay and there is none.
    #[error("not connected to the relay")]
    NotConnected,
    /// The payload is larger than the relay accepts; refused before queueing.
    #[error("sealed payload of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Sealed length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// The outbox is full; refused before queueing (nothing was dropped).
    #[error("outbox full ({entries} entries, {bytes} bytes queued)")]
    OutboxFull {
        /// Entries queued.
        entries: usize,
        /// Bytes queued.
        bytes: usize,
    },
    /// The operation did not finish in time. For a push with a blob id, the push stays queued.
    #[error("timed out")]
    Timeout {
        /// The queued push, if this was a push.
        blob_id: Option<BlobId>,
    },
    /// The client was closed.
    #[error("client is closed")]
    Closed,
    /// The relay broke the protocol: it sent something unexpected or inconsistent. Only ever
    /// the relay's fault; faults of this device are [`ClientError::Internal`]. (A violation on
    /// the running session ends that session and the client reconnects: requests waiting on it
    /// fail with [`ClientError::NotConnected`], pushes stay queued with
    /// [`ClientError::Offline`].)
    #[error("protocol violation by the relay: {0}")]
    Protocol(String),
    /// The relay served membership data that breaks the group's rules (a forged or reordered
    /// record, a grant whose secret does not match the records): nothing of it was used.
    #[error("membership data from the relay refused: {0}")]
    Membership(#[from] sync_crypto::MembershipError),
    /// A membership change was asked for that this device may not make or the group's state
    /// does not allow (not an admin, an unknown device, a member without a KEM key yet).
    #[error("membership change not possible: {0}")]
    MembershipChange(String),
    /// A fault of this device, not of the relay: a poisoned lock, a background task that
    /// failed, or local state the client cannot use (no key for the group's current epoch, a
    /// blob id drawn twice). Retrying the same request does not help.
    #[error("internal error: {0}")]
    Internal(String),
    /// The transport failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Sealing failed.
    #[error(transparent)]
    Crypto(#[from] sync_crypto::CryptoError),
    /// An invite could not be sealed for the mailbox.
    #[error(transparent)]
    Invite(#[from] sync_core::InviteError),
}

impl ClientError {
    /// The blob id of a push that is durable in the outbox and will still be sent, if this error
    /// reports one.
    pub fn queued_blob_id(&self) -> Option<BlobId> {
        match self {
            ClientError::Offline { blob_id } | ClientError::Deferred { blob_id, .. } => {
                Some(*blob_id)
            }
            ClientError::Timeout { blob_id } => *blob_id,
            _ => None,
        }
    }

    /// Whether the push this error reports is still queued (see [`ClientError::queued_blob_id`]).
    pub fn is_queued(&self) -> bool {
        self.queued_blob_id().is_some()
    }

    /// Whether the same request may succeed if tried again later: no session, a timeout, a
    /// transport failure, or a relay that is busy, rate limiting, restarting or asked for a
    /// retry. Refusals for good (unauthorized, revoked, too large, …) and local faults are not.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::NotConnected
            | ClientError::Timeout { .. }
            | ClientError::Transport(_)
            | ClientError::Offline { .. } => true,
            ClientError::Rejected {
                code, retry_after, ..
            }
            | ClientError::Deferred {
                code, retry_after, ..
            } => code.is_retryable() || retry_after.is_some(),
            _ => false,
        }
    }

    /// The relay's hint of how long to wait before trying again, if it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ClientError::Rejected { retry_after, .. }
            | ClientError::Deferred { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_failures_are_told_from_refusals_for_good() {
        let rejected = |code, retry_after| ClientError::Rejected {
            blob_id: None,
            code,
            message: String::new(),
            retry_after,
        };
        assert!(ClientError::NotConnected.is_transient());
        assert!(ClientError::Timeout { blob_id: None }.is_transient());
        for code in [
            ErrorCode::RateLimited,
            ErrorCode::TooManyInFlight,
            ErrorCode::Internal,
            ErrorCode::IdleTimeout,
            ErrorCode::ShuttingDown,
        ] {
            let e = rejected(code, None);
            assert!(e.is_transient(), "{code}");
            assert_eq!(e.retry_after(), None);
        }
        let hint = Some(Duration::from_secs(3));
        assert_eq!(rejected(ErrorCode::RateLimited, hint).retry_after(), hint);
        for code in [ErrorCode::Unauthorized, ErrorCode::DeviceRevoked] {
            assert!(!rejected(code, None).is_transient(), "{code}");
        }
        assert!(!ClientError::Closed.is_transient());
        assert!(!ClientError::Internal("lock poisoned".into()).is_transient());
    }
}
