//! The relay's storage: a per-group ordered log of sealed blobs plus the invite mailbox.
//!
//! Sessions talk to [`Storage`], a cheap-clone async handle. [`SqliteStorage`] is the embedded
//! default (one WAL-mode database file, one writer thread doing group commit, a small pool of
//! read-only connections); [`PostgresStorage`] lets several relays share one database (writer
//! tasks doing group commit, cursors assigned under the group's row lock, other relays' commits
//! heard through `LISTEN`). [`RelayStorage`] is whichever of the two the configuration names.
//!
//! What every backend promises:
//! - `push` is idempotent on `(group, blob_id)`: a retry (same payload) gets the original cursor
//!   back, also after the blob expired or was deleted, for as long as its id is remembered
//!   ([`StorageLimits::forget_ids_after`]); the same id with another payload is refused with
//!   [`StorageError::BlobConflict`].
//! - Cursors of a group are 1, 2, 3 … in commit order and are never reused, even after the
//!   blobs behind them expired or were deleted. A group deleted while idle and then pushed to
//!   again continues above every cursor any deleted group had.
//! - A push is answered only after its row is durable, and a reader never sees cursor N+1
//!   before N.
//! - Quotas are checked against counters kept with the group, never by scanning its blobs.
//!
//! Payloads are opaque ciphertext: storage never looks inside them.

mod any;
mod postgres;
mod rules;
mod sqlite;
#[cfg(test)]
mod tests;

pub use any::RelayStorage;
pub(crate) use postgres::redact as redact_password;
pub use postgres::{PostgresConfig, PostgresStorage, PostgresTls, RemoteEvent};
pub use sqlite::{DB_FILE_NAME, SCHEMA, SqliteConfig, SqliteStorage, Synchronous, WriterMetrics};

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::oneshot;

use sync_types::{BlobId, Cursor, DeviceId, GroupId};

/// A push as committed, for the fan-out of notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommittedPush {
    /// The group whose log received the blob.
    pub group: GroupId,
    /// Its cursor.
    pub cursor: Cursor,
    /// Its id.
    pub blob_id: BlobId,
    /// The device that pushed it.
    pub sender: DeviceId,
    /// Its payload size in bytes.
    pub size: u32,
}

/// What one committed batch did to pushes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitReport {
    /// Pushes stored, in commit order.
    pub pushes: Vec<CommittedPush>,
    /// Pushes answered as retries of a stored or remembered blob (nothing stored).
    pub duplicates: u64,
}

/// Told about every committed batch of pushes ([`SqliteStorage::on_commit`]).
pub type CommitHook = Arc<dyn Fn(CommitReport) + Send + Sync>;

/// A blob to store, as received in a device's `Push`.
#[derive(Clone, PartialEq, Eq)]
pub struct PushRequest {
    /// The group whose log receives the blob.
    pub group: GroupId,
    /// The device-chosen blob id, stable across retries of the same push.
    pub blob_id: BlobId,
    /// The pushing device.
    pub sender: DeviceId,
    /// The sealed blob, stored exactly as given.
    pub payload: Vec<u8>,
    /// How long the relay keeps the blob (checked against [`StorageLimits::max_ttl`]).
    pub ttl: Duration,
    /// The relay's clock at the push, in milliseconds since the Unix epoch.
    pub now_ms: u64,
    /// A byte quota for the group below [`StorageLimits::max_group_bytes`] (the pushing
    /// session's admission token sets one); `None`: the configured quota.
    pub group_quota_bytes: Option<u64>,
}

impl fmt::Debug for PushRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushRequest")
            .field("group", &self.group)
            .field("blob_id", &self.blob_id)
            .field("sender", &self.sender)
            .field("payload_len", &self.payload.len())
            .field("ttl", &self.ttl)
            .field("now_ms", &self.now_ms)
            .field("group_quota_bytes", &self.group_quota_bytes)
            .finish()
    }
}

/// The answer to a committed push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushOutcome {
    /// The blob's cursor in its group (the original one when `duplicate`).
    pub cursor: Cursor,
    /// `true` when the blob was already stored: nothing new was written or counted.
    pub duplicate: bool,
    /// When the blob was first stored, in milliseconds since the Unix epoch.
    pub stored_at_ms: u64,
}

/// One blob of a pull page.
#[derive(Clone, PartialEq, Eq)]
pub struct PullEntry {
    /// The blob's position in the group's log.
    pub cursor: Cursor,
    /// The blob id chosen by the sender.
    pub blob_id: BlobId,
    /// The device that pushed the blob.
    pub sender: DeviceId,
    /// The sealed blob, exactly as pushed.
    pub payload: Vec<u8>,
    /// When the relay stored the blob, in milliseconds since the Unix epoch.
    pub stored_at_ms: u64,
    /// How many cursors between the previous entry (or the page's `after`) and this one the
    /// relay removed (expired or deleted blobs) or never assigned to the group.
    pub removed_before: u64,
}

impl fmt::Debug for PullEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PullEntry")
            .field("cursor", &self.cursor)
            .field("blob_id", &self.blob_id)
            .field("sender", &self.sender)
            .field("payload_len", &self.payload.len())
            .field("stored_at_ms", &self.stored_at_ms)
            .field("removed_before", &self.removed_before)
            .finish()
    }
}

/// A page of a group's log, in cursor order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PullPage {
    /// Blobs after the requested cursor, ascending, without gaps other than deleted or expired
    /// blobs.
    pub entries: Vec<PullEntry>,
    /// `true` when more blobs follow the last entry (the page was cut by count or bytes).
    pub has_more: bool,
    /// The group's last assigned cursor when the page was read (`Cursor::ZERO` for an unknown
    /// group). It may be above every stored cursor when the newest blobs expired.
    pub max_cursor: Cursor,
    /// Without `has_more`: how many cursors after the last entry (or `after`), up to
    /// `max_cursor`, the relay removed or never assigned (all of them: no blob is stored
    /// there). 0 with `has_more`.
    pub removed_after: u64,
}

/// Totals over all groups, kept incrementally (reading them never scans a table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StorageStats {
    /// Groups the relay holds a log for (a group stays known after its blobs expire, so its
    /// cursors keep counting up).
    pub groups: u64,
    /// Blobs stored.
    pub blobs: u64,
    /// Payload bytes stored.
    pub bytes: u64,
}

/// A key grant as stored: a hybrid KEM envelope for one device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredGrant {
    /// The device that sealed it.
    pub sender: DeviceId,
    /// The epoch it was issued in.
    pub epoch: u32,
    /// The envelope (opaque to the relay).
    pub envelope: Vec<u8>,
}

/// A group's membership as stored, for one device: see [`Storage::membership`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MembershipRead {
    /// Encoded records after the asked sequence number, in order.
    pub records: Vec<Vec<u8>>,
    /// Each device's latest encoded enrollment.
    pub enrollments: Vec<(DeviceId, Vec<u8>)>,
    /// Grants addressed to the device, oldest first.
    pub grants: Vec<StoredGrant>,
}

/// One membership change to store: see [`Storage::membership_write`]. The caller has checked
/// every signature; storage only keeps the record order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MembershipWrite {
    /// The next record: its sequence number and bytes.
    pub record: Option<(u64, Vec<u8>)>,
    /// A device's enrollment (replaces its earlier one).
    pub enrollment: Option<(DeviceId, Vec<u8>)>,
    /// Grants: recipient and grant.
    pub grants: Vec<(DeviceId, StoredGrant)>,
}

/// The result of taking an invite from the mailbox.
#[derive(Clone, PartialEq, Eq)]
pub enum InviteLookup {
    /// The sealed invite; it has been deleted (an invite is delivered once).
    Found(Vec<u8>),
    /// No invite under this lookup id (never put, already taken, or cleaned up).
    NotFound,
    /// The invite expired; it stays answerable as `Expired` until cleanup removes it or its
    /// attempts run out.
    Expired,
    /// The invite used up its attempts (lookups that found it but could not take it); it is
    /// now deleted.
    TooManyAttempts,
}

impl fmt::Debug for InviteLookup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Found(sealed) => write!(f, "Found({} bytes)", sealed.len()),
            Self::NotFound => f.write_str("NotFound"),
            Self::Expired => f.write_str("Expired"),
            Self::TooManyAttempts => f.write_str("TooManyAttempts"),
        }
    }
}

/// Per-blob and per-group limits enforced by the writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageLimits {
    /// Largest payload accepted, in bytes (default 1 MiB).
    pub max_blob_bytes: u64,
    /// Most payload bytes a group may hold at once (default 1 GiB).
    pub max_group_bytes: u64,
    /// Most blobs a group may hold at once (default 100,000).
    pub max_group_blobs: u64,
    /// Longest TTL accepted (default 30 days).
    pub max_ttl: Duration,
    /// How long the id of a removed (expired or deleted) blob is remembered, with its cursor and
    /// payload digest, so that a retried push is answered as a duplicate instead of stored
    /// again (default 31 days: the longest TTL and a day).
    pub forget_ids_after: Duration,
}

impl Default for StorageLimits {
    fn default() -> Self {
        Self {
            max_blob_bytes: 1024 * 1024,
            max_group_bytes: 1024 * 1024 * 1024,
            max_group_blobs: 100_000,
            max_ttl: Duration::from_secs(30 * 24 * 60 * 60),
            forget_ids_after: Duration::from_secs(31 * 24 * 60 * 60),
        }
    }
}

/// Which limit a push ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum QuotaKind {
    /// The payload is larger than [`StorageLimits::max_blob_bytes`].
    BlobSize,
    /// The group would hold more than [`StorageLimits::max_group_bytes`].
    GroupBytes,
    /// The group would hold more than [`StorageLimits::max_group_blobs`].
    GroupBlobs,
    /// The requested TTL is longer than [`StorageLimits::max_ttl`].
    Ttl,
}

impl fmt::Display for QuotaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::BlobSize => "blob size",
            Self::GroupBytes => "group bytes",
            Self::GroupBlobs => "group blob count",
            Self::Ttl => "ttl",
        })
    }
}

/// Why a storage operation failed. Any error from `push` means the blob was not stored by that
/// call (a retry is safe: pushes are idempotent).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The database reported an error. For a push this means its whole batch was rolled back.
    #[error("sqlite: {0}")]
    Sqlite(Arc<rusqlite::Error>),
    /// PostgreSQL refused a statement. For a push this means its whole batch was rolled back.
    #[error("postgres: {}", describe_postgres(.0))]
    Postgres(Arc<tokio_postgres::Error>),
    /// The database cannot be reached (connection refused or lost, no pooled connection in
    /// time). Nothing was stored by the call; a retry once it is back is safe.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// TLS to the database could not be set up (an unreadable CA file, no trusted root).
    #[error("TLS to the database: {0}")]
    Tls(String),
    /// A file or thread operation failed (creating the data dir, spawning the writer).
    #[error("i/o: {0}")]
    Io(Arc<std::io::Error>),
    /// The push would break a limit; nothing was stored.
    #[error("quota exceeded ({kind}): limit {limit}, requested {requested}")]
    QuotaExceeded {
        /// Which limit.
        kind: QuotaKind,
        /// The configured limit (bytes, blobs, or milliseconds for the TTL).
        limit: u64,
        /// What the push would have needed (same unit as `limit`).
        requested: u64,
    },
    /// The writer thread is not running any more (it stopped or crashed).
    #[error("storage writer is gone")]
    WriterGone,
    /// The storage was closed with `close()`.
    #[error("storage is closed")]
    Closed,
    /// The database holds something this code never writes.
    #[error("storage is corrupt: {what}")]
    Corrupt {
        /// What was found wrong.
        what: String,
    },
    /// The database was written by a newer (or foreign) schema.
    #[error("unsupported schema version {found} (this build supports {supported})")]
    UnsupportedSchema {
        /// `PRAGMA user_version` found in the file.
        found: i64,
        /// The schema version this build writes.
        supported: i64,
    },
    /// A caller-supplied argument is out of range (for example an empty invite lookup id).
    #[error("invalid argument: {what}")]
    InvalidArgument {
        /// Which argument and why.
        what: &'static str,
    },
    /// The blob id is stored or remembered with a different payload: a device reused an id for
    /// other content. Nothing was stored.
    #[error("this blob id is already used for a different payload")]
    BlobConflict,
    /// A different invite is already stored under this lookup id.
    #[error("an invite with this lookup id already exists")]
    InviteExists,
    /// The group already has a membership record with this sequence number (a concurrent
    /// change was stored first). Nothing was stored.
    #[error("a membership record with this sequence number exists")]
    RecordConflict,
    /// A blocking read task panicked or was cancelled.
    #[error("a storage worker task failed")]
    TaskFailed,
}

/// The server's message and SQLSTATE for a database error (the driver's own text is only
/// "db error").
fn describe_postgres(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => error_chain(e),
    }
}

/// An error's text followed by each of its sources' (`a: b: c`), each said once.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

impl From<rusqlite::Error> for StorageError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ffi::ErrorCode;
        match &e {
            rusqlite::Error::SqliteFailure(f, _)
                if matches!(f.code, ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) =>
            {
                Self::Corrupt {
                    what: e.to_string(),
                }
            }
            rusqlite::Error::IntegralValueOutOfRange(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::FromSqlConversionFailure(..) => Self::Corrupt {
                what: format!("unexpected value in database: {e}"),
            },
            _ => Self::Sqlite(Arc::new(e)),
        }
    }
}

impl From<std::io::Error> for StorageError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(Arc::new(e))
    }
}

/// What the relay's sessions need from a storage backend.
///
/// Implementations are cheap-clone handles (an `Arc` inside) that many tasks share. Methods are
/// async and their futures are `Send`, so sessions can run on a multi-threaded runtime; a
/// backend that must choose at runtime can wrap several backends in an enum.
pub trait Storage: Clone + Send + Sync + 'static {
    /// The id of this store's log, announced to devices in `Welcome`: random, fixed for the
    /// life of the store, and carried by copies of it (a store restored from a backup has its
    /// original's id). A device that finds the relay's log behind its own cursor under the same
    /// id knows the log went back in time; under another id, that it was started afresh.
    fn store_id(&self) -> u64;

    /// Stores a blob and assigns the group's next cursor; answers after the commit is durable.
    /// A retry of a stored or remembered `(group, blob_id)` with the same payload returns the
    /// original cursor with `duplicate: true`; with another payload it fails with
    /// [`StorageError::BlobConflict`].
    fn push(
        &self,
        req: PushRequest,
    ) -> impl Future<Output = Result<PushOutcome, StorageError>> + Send;

    /// Queues a push and returns as soon as it holds its place in the commit order; the
    /// returned [`PushReply`] resolves to what [`Storage::push`] would answer. Pushes queued
    /// one after the other (each `push_queued` awaited before the next is called) get cursors
    /// in that order, while all of them can be in flight together and commit in one batch.
    fn push_queued(
        &self,
        req: PushRequest,
    ) -> impl Future<Output = Result<PushReply, StorageError>> + Send;

    /// Blobs of `group` with cursor greater than `after`, ascending: at most `max_count`
    /// (at least one) entries whose payloads add up to at most `max_bytes`, except that the
    /// first entry is always returned whatever its size.
    fn pull(
        &self,
        group: GroupId,
        after: Cursor,
        max_count: u32,
        max_bytes: u64,
    ) -> impl Future<Output = Result<PullPage, StorageError>> + Send;

    /// The group's last assigned cursor (`Cursor::ZERO` if it never received a blob).
    fn max_cursor(
        &self,
        group: GroupId,
    ) -> impl Future<Output = Result<Cursor, StorageError>> + Send;

    /// Deletes one blob; `Ok(false)` if it was not stored. Its cursor is not reused, and its id
    /// is remembered from `now_ms` on for [`StorageLimits::forget_ids_after`].
    fn delete(
        &self,
        group: GroupId,
        blob_id: BlobId,
        now_ms: u64,
    ) -> impl Future<Output = Result<bool, StorageError>> + Send;

    /// Removes up to `batch` blobs whose TTL ran out at `now_ms` (and up to `batch` expired
    /// invites); returns how many blobs were removed. Call again while it returns `batch`.
    /// The relay calls it every `cleanup_interval`, so a backend may also release caches here.
    fn cleanup_expired(
        &self,
        now_ms: u64,
        batch: u32,
    ) -> impl Future<Output = Result<u64, StorageError>> + Send;

    /// Forgets up to `batch` ids of removed blobs whose memory ran out at `now_ms`; returns how
    /// many. Call again while it returns `batch`.
    fn forget_removed_ids(
        &self,
        now_ms: u64,
        batch: u32,
    ) -> impl Future<Output = Result<u64, StorageError>> + Send;

    /// Marks the groups in `seen` (those with a session since the last call) active at
    /// `now_ms`, then deletes, with their counters, up to `batch` groups that hold no blob,
    /// remember no removed blob id, and were last active `idle_for` or longer ago; returns how
    /// many. Call again while it returns `batch`.
    fn drop_idle_groups(
        &self,
        seen: Vec<GroupId>,
        now_ms: u64,
        idle_for: Duration,
        batch: u32,
    ) -> impl Future<Output = Result<u64, StorageError>> + Send;

    /// Totals over all groups, from counters (no table scan).
    fn stats(&self) -> impl Future<Output = Result<StorageStats, StorageError>> + Send;

    /// Stores a sealed invite under `lookup_id` until `expires_ms`. Putting the same sealed
    /// bytes again is a no-op (retries are safe); different bytes under a stored lookup id are
    /// refused with [`StorageError::InviteExists`].
    fn invite_put(
        &self,
        lookup_id: Vec<u8>,
        sealed: Vec<u8>,
        expires_ms: u64,
    ) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// Takes the invite under `lookup_id`. A live invite is delivered once and deleted. Takes
    /// that find the invite but cannot deliver it (it expired) are counted with it and answered
    /// [`InviteLookup::Expired`]; the take that brings the count to `max_attempts` deletes it
    /// and answers [`InviteLookup::TooManyAttempts`] (`max_attempts == 0` refuses every
    /// take). An expired invite left below the count is removed by cleanup.
    fn invite_take(
        &self,
        lookup_id: Vec<u8>,
        now_ms: u64,
        max_attempts: u32,
    ) -> impl Future<Output = Result<InviteLookup, StorageError>> + Send;

    /// The group's membership records after `after_seq`, its enrollments, and the grants
    /// addressed to `device`.
    fn membership(
        &self,
        group: GroupId,
        device: DeviceId,
        after_seq: u64,
    ) -> impl Future<Output = Result<MembershipRead, StorageError>> + Send;

    /// Stores a membership change in one transaction: a record whose sequence number is
    /// taken fails with [`StorageError::RecordConflict`] and stores nothing.
    fn membership_write(
        &self,
        group: GroupId,
        write: MembershipWrite,
    ) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// Makes the durable state compact (for SQLite: a `TRUNCATE` WAL checkpoint).
    fn checkpoint(&self) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// Finishes every queued write, checkpoints and releases the database. Later calls on any
    /// clone of the handle fail with [`StorageError::Closed`]; closing twice is a no-op.
    fn close(&self) -> impl Future<Output = Result<(), StorageError>> + Send;
}

/// The committed answer to a push queued with [`Storage::push_queued`]. Dropping it does not
/// cancel the push.
#[derive(Debug)]
pub struct PushReply(oneshot::Receiver<Result<PushOutcome, StorageError>>);

impl PushReply {
    /// A reply that resolves to what is sent on the other half of `rx` (a backend whose
    /// worker drops the sender without answering yields [`StorageError::WriterGone`]).
    pub fn new(rx: oneshot::Receiver<Result<PushOutcome, StorageError>>) -> Self {
        Self(rx)
    }
}

impl Future for PushReply {
    type Output = Result<PushOutcome, StorageError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(StorageError::WriterGone)))
    }
}
