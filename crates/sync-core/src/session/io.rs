//! What crosses the session's boundary: [`Input`] from the shell, [`Transmit`] and
//! [`SessionEvent`] back to it, and the few types they carry.

use std::time::Duration;

use sync_types::{
    BlobId, Cursor, Grant, GroupChanged, GroupId, GroupInfo, Limits, Message, Notify, Payload,
    PullEntry, RelayId, WireError,
};

use crate::connection::ConnectionStatus;

/// What the shell reports to a [`Session`](super::Session).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The app wants to be connected (also: "retry now" while waiting to reconnect).
    Connect,
    /// The app wants to be disconnected; the session closes its transport with `Bye`.
    Close,
    /// The dial asked for by [`Transmit::Dial`] succeeded. The session sends `Hello` with this
    /// proof.
    TransportUp {
        /// The relay the transport authenticated (its endpoint id).
        relay_id: RelayId,
        /// What `Hello` proves and asks for.
        hello: HelloAuth,
    },
    /// The dial failed.
    DialFailed {
        /// Human-readable cause (no secrets).
        reason: String,
    },
    /// The transport of the current session broke (the read side ended or a write failed).
    TransportLost {
        /// Human-readable cause (no secrets).
        reason: String,
    },
    /// A frame from the relay on the current transport.
    Frame(Message),
}

/// The parts of `Hello` the shell owns: the signature over the channel binding (it holds the
/// keys), the resume cursor (it holds the cursor store) and the operator's token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelloAuth {
    /// Signature of the `Hello` challenge with the group's auth key.
    pub auth_signature: [u8; 64],
    /// The device's resume cursor for this relay.
    pub last_cursor: Cursor,
    /// The relay operator's admission token, if the device has one.
    pub admission_token: Option<Payload>,
}

/// I/O the shell must perform for the session, in the order polled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// Dial the relay, abandoning any dial in progress; report [`Input::TransportUp`] or
    /// [`Input::DialFailed`].
    Dial,
    /// Write this frame on the current transport.
    Frame(Message),
    /// Abandon the dial in progress and close the current transport once the frames before
    /// this one (a `Bye`, when the session says goodbye) are written.
    Close,
}

/// What happened, for the shell and its app, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// The connection's state as the app sees it changed.
    Status(ConnectionStatus),
    /// The relay welcomed this device: the session is established. Pushes flow from now on;
    /// pulls may start.
    Established(Established),
    /// The relay refused the handshake. A refusal for good is followed by
    /// [`ConnectionStatus::Failed`]; otherwise the session retries after the (clamped) hint.
    HandshakeRefused {
        /// The relay's error.
        error: WireError,
    },
    /// The transport of the session ended (or the dial was abandoned): pushes in flight are
    /// queued again, the pull in progress and every request waiting for an answer ended.
    Ended {
        /// Why.
        reason: String,
        /// Whether the session had been established.
        was_established: bool,
    },
    /// The relay stored a push.
    PushAcked {
        /// The push.
        blob_id: BlobId,
        /// Where the relay put it.
        cursor: Cursor,
        /// The retention the push asked for (0: the relay's default).
        ttl_secs: u32,
    },
    /// The relay deferred a push: it stays queued, and nothing is sent before `retry_after`
    /// has passed.
    PushDeferred {
        /// The push.
        blob_id: BlobId,
        /// The relay's error.
        error: WireError,
        /// The wait imposed (the relay's hint clamped to [`MAX_RETRY_HINT`](super::MAX_RETRY_HINT),
        /// or the configured default).
        retry_after: Duration,
    },
    /// The relay refused a push for good: it left the outbox.
    PushRejected {
        /// The push.
        blob_id: BlobId,
        /// The relay's error.
        error: WireError,
    },
    /// A page of the pull in progress, checked: entries ascending, after the page's cursor.
    Page(Page),
    /// The relay refused the pull in progress; it ended.
    PullRefused {
        /// The relay's error.
        error: WireError,
    },
    /// The relay announced a blob.
    Notify(Notify),
    /// The acknowledgement of an invite put with
    /// [`Session::put_invite`](super::Session::put_invite) or content registered with
    /// [`Session::register_content`](super::Session::register_content).
    Answered {
        /// The request it answers.
        request_id: u64,
        /// Stored, or the relay's refusal.
        result: Result<(), WireError>,
    },
    /// The relay refused a push sealed under a key epoch the group rotated away from. The
    /// push stays queued (held like a deferral): the shell fetches the group's new keys and
    /// re-seals it under the same blob id.
    EpochSuperseded {
        /// The push.
        blob_id: BlobId,
    },
    /// The answer to a [`Session::group_request`](super::Session::group_request).
    GroupReply {
        /// The request it answers.
        request_id: u64,
        /// The relay's answer, or its refusal.
        result: Result<GroupReply, WireError>,
    },
    /// Another device changed the group's membership (broadcast `GroupChanged`).
    GroupChanged(GroupChanged),
}

/// A membership request, for [`Session::group_request`](super::Session::group_request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupRequest {
    /// Announce this device's enrollment (answered by [`GroupReply::Changed`]).
    Enroll(Payload),
    /// Post a membership record and/or key grants (answered by [`GroupReply::Changed`]).
    Update {
        /// The encoded record, if any.
        record: Option<Payload>,
        /// Grants, each naming its recipient.
        grants: Vec<Grant>,
    },
    /// Read the group's records after a sequence number, its enrollments and this device's
    /// grants (answered by [`GroupReply::Info`]).
    Get {
        /// The group.
        group_id: GroupId,
        /// Records after this sequence number.
        after_seq: u64,
    },
}

/// The relay's answer to a [`GroupRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupReply {
    /// The membership after an `Enroll` or `Update`.
    Changed(GroupChanged),
    /// What a `Get` asked for.
    Info(GroupInfo),
}

/// What a relay's `Welcome` established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Established {
    /// The relay (checked against the transport's authenticated id).
    pub relay_id: RelayId,
    /// The id of the relay's log.
    pub store_id: u64,
    /// The relay's highest cursor for the group.
    pub max_cursor: Cursor,
    /// The relay's limits, as it announced them.
    pub limits: Limits,
}

/// One checked page of a pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The page's `after`: it covers `(after, through]`.
    pub after: Cursor,
    /// The last cursor the page accounts for: its last entry while more pages follow, else the
    /// relay's max cursor (everything up to it was served or accounted for).
    pub through: Cursor,
    /// The entries, ascending, all in `(after, through]`.
    pub entries: Vec<PullEntry>,
    /// How many cursors of `(after, through]` the relay says it removed (expired or deleted).
    pub removed: u64,
    /// `None` while the pull goes on with another page.
    pub end: Option<PullEnd>,
}

/// How a pull ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullEnd {
    /// Everything up to the relay's max cursor was served (or the single page asked for).
    Complete,
    /// The pull's byte bound was reached with more waiting: start another pull for the rest.
    Bounded,
}

/// What a pull asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullMode {
    /// Every page after the cursor, until the relay has no more or the byte bound is reached.
    Round,
    /// One page of at most `limit` entries.
    Single {
        /// Most entries to ask for.
        limit: u32,
    },
}

/// Why the session could not take a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// No established session.
    #[error("no established session with the relay")]
    NotEstablished,
    /// A pull is in progress; one runs at a time.
    #[error("a pull is already in progress")]
    PullInProgress,
}
