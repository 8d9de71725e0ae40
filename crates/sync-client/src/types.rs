//! What the client takes (configuration) and gives (receipts, blobs, events, status).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use sync_core::{
    BackoffConfig, ConnectionConfig, ConnectionStatus, GroupMaterial, OutboxLimits, SyncStatus,
};
use sync_crypto::AdmissionToken;
use sync_types::{BlobId, Cursor, DeviceId, ErrorCode, GroupId, RelayId};

use crate::integrity::IntegrityProblem;
use crate::store::{StoreLocation, StoreSync};
use crate::transport::Transport;

/// Tunables of a [`SyncClient`](crate::SyncClient). `Default` is for real use: reconnects after
/// 1 s doubling to 30 s, a heartbeat every 15 s, up to 256 pushes in flight, pull pages of 1000
/// entries ([`ClientOptions::for_tests`] reconnects faster).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientOptions {
    /// Reconnect backoff and dial/handshake timeouts (sync-core).
    pub connection: ConnectionConfig,
    /// Bounds of the outbox (entries, bytes).
    pub outbox: OutboxLimits,
    /// Durability of local commits.
    pub store_sync: StoreSync,
    /// TTL requested for pushes, in seconds (0 = the relay's default).
    pub ttl_secs: u32,
    /// Heartbeat interval; a session silent for three intervals is treated as broken.
    pub ping_interval: Duration,
    /// Largest number of pushes in flight on one session (further capped by the relay's
    /// `max_in_flight`).
    pub max_in_flight: usize,
    /// Entries asked for per pull page (clamped by the relay).
    pub pull_page: u32,
    /// Most bytes of blobs one pull collects before it returns (at least one page is always
    /// taken): a large backlog comes in several pulls, each bounded, instead of whole in
    /// memory. [`PullBatch::more`] says when more is waiting.
    pub pull_round_bytes: usize,
    /// Wait used when the relay defers a push without a retry hint.
    pub default_retry: Duration,
    /// Whether [`SyncClient::pull`](crate::SyncClient::pull) also returns this device's own
    /// blobs (default: no, the app already has them).
    pub deliver_own: bool,
    /// How long a gap in a sender's numbering may stay open before it is reported as
    /// [`IntegrityProblem::MissingFromSender`](crate::IntegrityProblem::MissingFromSender)
    /// (pushes can reach the relay out of order when it defers one; default 10 minutes).
    pub missing_grace: Duration,
    /// Capacity of the event channel; a subscriber that falls further behind receives
    /// [`SyncEvent::Lagged`].
    pub event_capacity: usize,
    /// The operator's admission token, for relays that admit only devices holding one (sent in
    /// every `Hello`); `None` for open relays.
    pub admission_token: Option<AdmissionToken>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            connection: ConnectionConfig::DEFAULT,
            outbox: OutboxLimits::DEFAULT,
            store_sync: StoreSync::Normal,
            ttl_secs: 0,
            ping_interval: Duration::from_secs(15),
            max_in_flight: 256,
            pull_page: 1000,
            pull_round_bytes: 32 << 20,
            default_retry: Duration::from_secs(1),
            deliver_own: false,
            missing_grace: Duration::from_secs(600),
            event_capacity: 4096,
            admission_token: None,
        }
    }
}

impl ClientOptions {
    /// Options for tests and benchmarks against a relay on loopback: reconnect after 20 ms
    /// doubling to 200 ms (plus up to 20 ms jitter) instead of 1–30 s (+ 5 s), within 20 ms
    /// of a lost session instead of 500 ms, and an outbox of
    /// 100,000 entries / 512 MiB so bursts queue whole while the relay is down.
    pub fn for_tests() -> Self {
        let mut options = Self::default();
        options.connection.backoff = BackoffConfig {
            base: Duration::from_millis(20),
            cap: Duration::from_millis(200),
            max_jitter: Duration::from_millis(20),
        };
        options.connection.after_loss = Duration::from_millis(20);
        options.outbox.max_entries = 100_000;
        options.outbox.max_bytes = 512 << 20;
        options
    }
}

/// Which group the client syncs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum GroupChoice {
    /// The group stored on this device: the only one, or the one with this id.
    Stored(Option<GroupId>),
    /// This group (stored first, so later runs can use [`GroupChoice::Stored`]).
    Use(GroupMaterial),
    /// The group an invite gave: stored with the key epoch the invite carries, and the invite
    /// named when the device enrolls (its inviter then grants it the group's history, unless
    /// the invite was made without).
    Invited(sync_core::InvitedGroup),
}

/// Everything [`SyncClient::connect`](crate::SyncClient::connect) needs.
#[derive(Clone)]
pub struct ClientConfig {
    /// Where the local state lives.
    pub store: StoreLocation,
    /// How to reach the relay.
    pub transport: Arc<dyn Transport>,
    /// Which group to sync.
    pub group: GroupChoice,
    /// This device's name, kept in its store for the app and the CLI (it is never sent to the
    /// relay); `None` keeps the stored one.
    pub device_name: Option<String>,
    /// Tunables.
    pub options: ClientOptions,
}

impl ClientConfig {
    /// A configuration with default options.
    pub fn new(store: StoreLocation, transport: Arc<dyn Transport>, group: GroupChoice) -> Self {
        Self {
            store,
            transport,
            group,
            device_name: None,
            options: ClientOptions::default(),
        }
    }

    /// The same configuration with a device name.
    pub fn with_device_name(mut self, name: impl Into<String>) -> Self {
        self.device_name = Some(name.into());
        self
    }

    /// The same configuration with other options.
    pub fn with_options(mut self, options: ClientOptions) -> Self {
        self.options = options;
        self
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("store", &self.store)
            .field("group", &self.group)
            .field("device_name", &self.device_name)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// The relay stored a push durably.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Receipt {
    /// The blob's id.
    pub blob_id: BlobId,
    /// Where the relay placed it in the group's log.
    pub cursor: Cursor,
}

/// A blob pulled from the relay, verified and decrypted.
#[derive(Clone, PartialEq, Eq)]
pub struct Blob {
    /// The plaintext.
    pub data: Vec<u8>,
    /// The device that sealed it (signature verified).
    pub sender: DeviceId,
    /// Its place in the group's log.
    pub cursor: Cursor,
    /// Its id.
    pub blob_id: BlobId,
    /// Relay commit time, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
}

/// Blobs pulled by [`SyncClient::pull_uncommitted`](crate::SyncClient::pull_uncommitted) whose
/// cursors are not recorded yet: the resume cursor moves over them only when the app hands the
/// batch back to [`SyncClient::commit_pull`](crate::SyncClient::commit_pull), after it has
/// stored or shown them. Until then (or if the app dies first) the next pull returns them again:
/// delivery is at least once, never lost. Hand the batch back as pulled: the commit also
/// records its senders' activity and its blob ids (so the relay cannot serve them again under
/// other cursors) from `blobs`.
#[derive(Debug, Clone)]
pub struct PullBatch {
    /// The blobs, verified and decrypted, in cursor order (own blobs skipped unless
    /// [`ClientOptions::deliver_own`]).
    pub blobs: Vec<Blob>,
    /// The resume cursor the commit gives (as of the pull; own pushes acknowledged meanwhile
    /// may move it further).
    pub resume_cursor: Cursor,
    /// The relay the batch was pulled from (cursors are per relay).
    pub(crate) relay: Option<RelayId>,
    /// `(after, through]` of every page answered.
    pub(crate) ranges: Vec<(Cursor, Cursor)>,
    /// Every page was answered (the pull was not cut short by an error).
    pub(crate) complete: bool,
    /// What the pull found wrong with what the relay served, in cursor order (empty when all
    /// is well): the blobs concerned are not in `blobs`.
    pub problems: Vec<IntegrityProblem>,
    /// The pull stopped at [`ClientOptions::pull_round_bytes`] with more blobs waiting on the
    /// relay: pull again (after committing this batch) for the rest.
    pub more: bool,
}

impl fmt::Debug for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Blob")
            .field("data_len", &self.data.len())
            .field("sender", &self.sender)
            .field("cursor", &self.cursor)
            .field("blob_id", &self.blob_id)
            .field("timestamp_ms", &self.timestamp_ms)
            .finish()
    }
}

/// What the client reports to subscribers. Events are hints: data is only ever delivered by
/// [`SyncClient::pull`](crate::SyncClient::pull), so a subscriber that misses events
/// ([`SyncEvent::Lagged`]) loses nothing by pulling.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SyncEvent {
    /// The relay has blobs this device has not pulled yet, up to `cursor` (a `Notify` from the
    /// relay, or a reconnect that found the relay ahead of the resume cursor).
    BlobsAvailable {
        /// The highest cursor known to be available.
        cursor: Cursor,
        /// The device that pushed it, when announced by a `Notify`.
        sender: Option<DeviceId>,
    },
    /// A pull delivered blobs to the app.
    Received {
        /// How many blobs were delivered.
        count: usize,
        /// The resume cursor after the pull.
        resume_cursor: Cursor,
    },
    /// A pull found something wrong with what the relay served (the same problem is in the
    /// pull's [`PullBatch::problems`]); nothing wrong was delivered as data.
    Integrity {
        /// What was found.
        problem: IntegrityProblem,
    },
    /// The relay's log is behind what this device already had: restored from an older copy
    /// (same store id, `relay_max` below the device's resume cursor) or started afresh (a new
    /// store id). The device now pulls from `resume_from`; blobs it already has are not
    /// delivered again. Blobs the relay lost are gone from it: pushes of this device that it had
    /// acknowledged are not re-sent.
    RelayRewound {
        /// The relay.
        relay_id: RelayId,
        /// The relay's highest cursor now.
        relay_max: Cursor,
        /// Where this device had pulled up to.
        resume_was: Cursor,
        /// Where it pulls from now (`relay_max`, or 0 for a log started afresh).
        resume_from: Cursor,
        /// Whether the log was started afresh (a new store id) rather than restored.
        fresh_log: bool,
        /// How many of this device's pushes, acknowledged after `resume_from` and not yet
        /// expired, were queued again (the relay lost them).
        resent: usize,
    },
    /// The relay acknowledged a push (durable).
    PushAcked {
        /// The push.
        receipt: Receipt,
    },
    /// The relay deferred a push; it stays queued and is retried after `retry_after`.
    PushDeferred {
        /// The push.
        blob_id: BlobId,
        /// The relay's code.
        code: ErrorCode,
        /// The wait before the retry.
        retry_after: Duration,
    },
    /// The relay refused a push for good; it left the outbox and will not be sent.
    PushRejected {
        /// The push.
        blob_id: BlobId,
        /// The relay's code.
        code: ErrorCode,
        /// The relay's detail.
        message: String,
    },
    /// The user-facing status or the connection state changed.
    StatusChanged(ClientStatus),
    /// A session was established.
    Connected {
        /// The relay's identity.
        relay_id: RelayId,
        /// The relay's highest cursor at the handshake.
        max_cursor: Cursor,
    },
    /// The session ended (the client reconnects unless closed or refused for good).
    Disconnected {
        /// Why.
        reason: String,
    },
    /// This subscriber fell behind and missed `missed` events; pull to catch up.
    Lagged {
        /// Events missed.
        missed: u64,
    },
    /// This device holds the keys of a new epoch (it rotated, or received a grant): new pushes
    /// are sealed under it, and queued ones were sealed again.
    EpochChanged {
        /// The new epoch.
        epoch: u32,
    },
}

/// A snapshot of the client's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientStatus {
    /// What to show the user (sync-core's status rules).
    pub sync: SyncStatus,
    /// The connection state.
    pub connection: ConnectionStatus,
    /// Pushes in the outbox (not yet acknowledged).
    pub outbox_len: usize,
    /// Everything up to this cursor was pulled (or is an own push).
    pub resume_cursor: Cursor,
    /// The relay's highest cursor as last heard (Welcome, Notify, pull).
    pub relay_max_cursor: Cursor,
    /// This device's id.
    pub device_id: DeviceId,
    /// The group's id.
    pub group_id: GroupId,
    /// Set when this client found the relay's log behind what the device had (see
    /// [`SyncEvent::RelayRewound`]): `(resume_was, resume_from)`.
    pub relay_rewound: Option<(Cursor, Cursor)>,
    /// The last connection attempt found another key at the relay's address
    /// ([`TransportError::WrongRelay`](crate::TransportError::WrongRelay)): the relay this device
    /// pinned is not there.
    pub wrong_relay: bool,
}

/// A device of the group, as the relay's records and enrollments say (checked on this device).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemberInfo {
    /// The device.
    pub device: DeviceId,
    /// Its name, if it enrolled and this device holds the epoch it enrolled in.
    pub name: Option<String>,
    /// Whether it may change the group's membership.
    pub admin: bool,
    /// The first epoch it may not hold, if it was revoked.
    pub revoked_at: Option<u32>,
    /// Whether it is this device.
    pub this_device: bool,
}
