//! The embedded SQLite backend: one database file, one writer thread doing group commit, a
//! small pool of read-only connections.
//!
//! Writes (push, delete, cleanup, invites) go through a bounded channel to the writer thread,
//! which owns the only read-write connection. It takes everything queued (up to
//! `max_batch`), applies it inside one `BEGIN IMMEDIATE` transaction, commits, and only then
//! answers each caller. Cursor allocation and the blob insert happen in that transaction, so a
//! reader sees a batch all at once or not at all: never cursor N+1 without N.
//!
//! Reads run on read-only connections under `spawn_blocking`; WAL lets them proceed while the
//! writer commits. Each read is one read transaction, so a page and its `max_cursor` come from
//! the same snapshot.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use sync_types::{BlobId, Cursor, DeviceId, GroupId};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::{
    InviteLookup, PullEntry, PullPage, PushOutcome, PushReply, PushRequest, QuotaKind, Storage,
    StorageError, StorageLimits, StorageStats,
};

type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Name of the database file inside the data dir (plus SQLite's `-wal` and `-shm` files).
pub const DB_FILE_NAME: &str = "relay.db";

/// The schema version this build creates and reads (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 1;

/// `PRAGMA application_id` of relay databases ("0kSR"), so a foreign SQLite file is refused.
const APPLICATION_ID: i64 = 0x306b_5352;

/// Longest invite lookup id accepted, in bytes.
const MAX_LOOKUP_ID_BYTES: usize = 64;

/// Largest sealed invite accepted, in bytes.
const MAX_INVITE_BYTES: usize = 64 * 1024;

/// The relay database schema (version 1). Public so benchmarks can measure raw SQLite inserts
/// on exactly the relay's row shape and indexes.
pub const SCHEMA: &str = "
CREATE TABLE groups (
    id          INTEGER PRIMARY KEY,
    group_id    BLOB    NOT NULL UNIQUE,
    last_cursor INTEGER NOT NULL,
    blob_count  INTEGER NOT NULL,
    byte_count  INTEGER NOT NULL
) STRICT;
CREATE TABLE blobs (
    id         INTEGER PRIMARY KEY,
    group_ref  INTEGER NOT NULL,
    cursor     INTEGER NOT NULL,
    blob_id    BLOB    NOT NULL,
    sender     BLOB    NOT NULL,
    size       INTEGER NOT NULL,
    stored_at  INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    payload    BLOB    NOT NULL
) STRICT;
CREATE UNIQUE INDEX blobs_by_cursor  ON blobs (group_ref, cursor);
CREATE UNIQUE INDEX blobs_by_blob_id ON blobs (group_ref, blob_id);
CREATE INDEX        blobs_by_expiry  ON blobs (expires_at);
CREATE TABLE invites (
    lookup_id  BLOB    PRIMARY KEY,
    sealed     BLOB    NOT NULL,
    expires_at INTEGER NOT NULL,
    attempts   INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX invites_by_expiry ON invites (expires_at);
";

/// How hard SQLite works to make a commit durable (`normal` or `full` in the configuration).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// `synchronous=NORMAL`: a commit survives a crash of the relay process (WAL default).
    #[default]
    Normal,
    /// `synchronous=FULL`: a commit also survives power loss (one fsync per commit).
    Full,
}

impl Synchronous {
    fn pragma_value(self) -> &'static str {
        match self {
            Self::Normal => "NORMAL",
            Self::Full => "FULL",
        }
    }
}

/// Settings of [`SqliteStorage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteConfig {
    /// Durability of each commit (default NORMAL).
    pub synchronous: Synchronous,
    /// How long a connection waits for a lock before failing (default 5 s).
    pub busy_timeout: Duration,
    /// WAL size in pages that triggers an automatic checkpoint (default 8192 ≈ 32 MiB).
    pub wal_autocheckpoint_pages: u32,
    /// Size the WAL file is truncated to after a checkpoint, in bytes (default 64 MiB).
    pub journal_size_limit_bytes: u64,
    /// Memory-mapped I/O for the read connections and the writer, in bytes (default 256 MiB;
    /// 0 disables).
    pub mmap_size_bytes: u64,
    /// Page cache of the writer connection, in bytes (default 64 MiB). Pushes insert random
    /// blob ids into a unique index; a cache that holds the index's hot pages keeps a group of
    /// a million blobs as fast to write to as an empty one.
    pub cache_size_bytes: u64,
    /// Read-only connections used concurrently at most (default 4).
    pub readers: usize,
    /// Writes that may wait for the writer before pushers are held back (default 4096).
    pub queue_capacity: usize,
    /// Most writes committed in one transaction (default 512).
    pub max_batch: usize,
    /// Quotas and limits checked by the writer.
    pub limits: StorageLimits,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        Self {
            synchronous: Synchronous::Normal,
            busy_timeout: Duration::from_secs(5),
            wal_autocheckpoint_pages: 8192,
            journal_size_limit_bytes: 64 * 1024 * 1024,
            mmap_size_bytes: 256 * 1024 * 1024,
            cache_size_bytes: 64 * 1024 * 1024,
            readers: 4,
            queue_capacity: 4096,
            max_batch: 512,
            limits: StorageLimits::default(),
        }
    }
}

/// Counters of the writer thread, for metrics (average batch = `ops / commits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriterMetrics {
    /// Transactions committed.
    pub commits: u64,
    /// Write operations answered from committed transactions.
    pub ops: u64,
    /// Transactions that failed and were rolled back (every caller got an error).
    pub failed_commits: u64,
}

/// The embedded SQLite storage: a cheap-clone handle; the writer thread stops when the last
/// handle is dropped or [`Storage::close`] is called.
#[derive(Clone)]
pub struct SqliteStorage {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SqliteStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStorage")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

struct Inner {
    commands: mpsc::Sender<Command>,
    shared: Arc<Shared>,
    readers: ReaderPool,
    closed: AtomicBool,
    path: PathBuf,
}

/// State the writer publishes after each commit.
#[derive(Default)]
struct Shared {
    stats: Mutex<StorageStats>,
    commits: AtomicU64,
    ops: AtomicU64,
    failed_commits: AtomicU64,
}

impl Shared {
    fn stats(&self) -> StorageStats {
        *self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn apply(&self, d: StatsDelta) {
        let mut s = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
        s.groups = s.groups.saturating_add_signed(d.groups);
        s.blobs = s.blobs.saturating_add_signed(d.blobs);
        s.bytes = s.bytes.saturating_add_signed(d.bytes);
    }
}

impl SqliteStorage {
    /// Opens (or creates) `data_dir/relay.db`, creates or checks the schema, reads the totals
    /// once and starts the writer thread.
    pub async fn open(data_dir: impl AsRef<Path>, config: SqliteConfig) -> Result<Self> {
        let dir = data_dir.as_ref().to_path_buf();
        tokio::task::spawn_blocking(move || Self::open_blocking(&dir, config))
            .await
            .map_err(|_| StorageError::TaskFailed)?
    }

    fn open_blocking(dir: &Path, config: SqliteConfig) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(DB_FILE_NAME);
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(config.busy_timeout)?;
        // Refuse a foreign or newer file before changing anything in it.
        let create = check_schema(&conn)?;
        configure_writer(&conn, &config)?;
        if create {
            create_schema(&conn)?;
        }
        let stats = load_stats(&conn)?;

        let shared = Arc::new(Shared {
            stats: Mutex::new(stats),
            ..Shared::default()
        });
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        let writer = Writer {
            conn,
            rx,
            shared: Arc::clone(&shared),
            limits: config.limits,
            max_batch: config.max_batch.max(1),
        };
        std::thread::Builder::new()
            .name("relay-storage-writer".into())
            .spawn(move || writer.run())?;

        let readers = ReaderPool {
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(config.readers.max(1))),
            path: path.clone(),
            busy_timeout: config.busy_timeout,
            mmap_size_bytes: config.mmap_size_bytes,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                commands: tx,
                shared,
                readers,
                closed: AtomicBool::new(false),
                path,
            }),
        })
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Counters of the writer thread.
    pub fn writer_metrics(&self) -> WriterMetrics {
        let s = &self.inner.shared;
        WriterMetrics {
            commits: s.commits.load(Ordering::Relaxed),
            ops: s.ops.load(Ordering::Relaxed),
            failed_commits: s.failed_commits.load(Ordering::Relaxed),
        }
    }

    /// Recomputes the totals by scanning every blob and checks them against the per-group
    /// counters and cursors. Costs a full table scan: for tests and operator tools, not for
    /// `/health`.
    pub async fn audit(&self) -> Result<StorageStats> {
        self.read(audit_blocking).await
    }

    /// Queues one write for the writer thread and waits for its committed answer.
    async fn write<O: WriteOp>(&self, op: O) -> Result<O::Output> {
        let answer = self.enqueue(op).await?;
        answer.await.map_err(|_| self.gone())?
    }

    /// Queues one write for the writer thread (waiting for room in the queue, which keeps the
    /// call order) and returns the channel its committed answer will arrive on.
    async fn enqueue<O: WriteOp>(&self, op: O) -> Result<oneshot::Receiver<Result<O::Output>>> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(StorageError::Closed);
        }
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Pending {
            op,
            outcome: None,
            reply,
        });
        self.inner
            .commands
            .send(Command::Write(job))
            .await
            .map_err(|_| self.gone())?;
        Ok(answer)
    }

    async fn control(&self, make: impl FnOnce(Reply<()>) -> Command) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .commands
            .send(make(reply))
            .await
            .map_err(|_| self.gone())?;
        answer.await.map_err(|_| self.gone())?
    }

    fn gone(&self) -> StorageError {
        if self.inner.closed.load(Ordering::Acquire) {
            StorageError::Closed
        } else {
            StorageError::WriterGone
        }
    }

    /// Runs `f` on a pooled read-only connection on the blocking pool.
    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(StorageError::Closed);
        }
        let permit = Arc::clone(&self.inner.readers.permits)
            .acquire_owned()
            .await
            .map_err(|_| StorageError::Closed)?;
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut conn = match inner.readers.take() {
                Some(conn) => conn,
                None => inner.readers.open()?,
            };
            let result = f(&mut conn);
            if !inner.closed.load(Ordering::Acquire) {
                inner.readers.give_back(conn);
            }
            result
        })
        .await
        .map_err(|_| StorageError::TaskFailed)?
    }

    /// Holds the writer until the returned sender is dropped or sent to (tests use this to
    /// make several writes land in one batch).
    #[cfg(test)]
    pub(super) async fn pause_writer(&self) -> Result<std::sync::mpsc::Sender<()>> {
        let (release, wait) = std::sync::mpsc::channel();
        let (paused, is_paused) = oneshot::channel();
        self.inner
            .commands
            .send(Command::Pause(paused, wait))
            .await
            .map_err(|_| self.gone())?;
        is_paused.await.map_err(|_| self.gone())?;
        Ok(release)
    }

    /// Commands waiting in the writer's queue.
    #[cfg(test)]
    pub(super) fn queued(&self) -> usize {
        let c = &self.inner.commands;
        c.max_capacity().saturating_sub(c.capacity())
    }
}

impl Storage for SqliteStorage {
    async fn push(&self, req: PushRequest) -> Result<PushOutcome> {
        self.write(PushOp(req)).await
    }

    async fn push_queued(&self, req: PushRequest) -> Result<PushReply> {
        Ok(PushReply::new(self.enqueue(PushOp(req)).await?))
    }

    async fn pull(
        &self,
        group: GroupId,
        after: Cursor,
        max_count: u32,
        max_bytes: u64,
    ) -> Result<PullPage> {
        self.read(move |conn| pull_blocking(conn, &group, after, max_count, max_bytes))
            .await
    }

    async fn max_cursor(&self, group: GroupId) -> Result<Cursor> {
        self.read(move |conn| {
            let last: Option<i64> = conn
                .prepare_cached("SELECT last_cursor FROM groups WHERE group_id = ?1")?
                .query_row([&group.as_bytes()[..]], |r| r.get(0))
                .optional()?;
            Ok(Cursor::new(
                last.map(|c| to_u64(c, "last_cursor"))
                    .transpose()?
                    .unwrap_or(0),
            ))
        })
        .await
    }

    async fn delete(&self, group: GroupId, blob_id: BlobId) -> Result<bool> {
        self.write(DeleteOp { group, blob_id }).await
    }

    async fn cleanup_expired(&self, now_ms: u64, batch: u32) -> Result<u64> {
        let removed = self.write(CleanupOp { now_ms, batch }).await?;
        // Periodic maintenance is also when cold page caches go back to the allocator: once
        // per round, on its last call (a full batch means the caller calls again).
        // The rows are gone either way: a failed release is logged, not the cleanup's error.
        if removed < u64::from(batch) {
            if let Err(e) = self.control(Command::ReleaseMemory).await {
                tracing::debug!(error = %e, "writer shrink_memory failed");
            }
            let inner = Arc::clone(&self.inner);
            let _ = tokio::task::spawn_blocking(move || inner.readers.release_idle()).await;
        }
        Ok(removed)
    }

    async fn stats(&self) -> Result<StorageStats> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(StorageError::Closed);
        }
        Ok(self.inner.shared.stats())
    }

    async fn invite_put(&self, lookup_id: Vec<u8>, sealed: Vec<u8>, expires_ms: u64) -> Result<()> {
        check_lookup_id(&lookup_id)?;
        if sealed.len() > MAX_INVITE_BYTES {
            return Err(StorageError::InvalidArgument {
                what: "sealed invite is too large",
            });
        }
        self.write(InvitePutOp {
            lookup_id,
            sealed,
            expires_ms,
        })
        .await
    }

    async fn invite_take(
        &self,
        lookup_id: Vec<u8>,
        now_ms: u64,
        max_attempts: u32,
    ) -> Result<InviteLookup> {
        check_lookup_id(&lookup_id)?;
        self.write(InviteTakeOp {
            lookup_id,
            now_ms,
            max_attempts,
        })
        .await
    }

    async fn checkpoint(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(StorageError::Closed);
        }
        self.control(Command::Checkpoint).await
    }

    async fn close(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // Readers go first, so the writer's connection is the last one and SQLite removes the
        // checkpointed WAL when it closes.
        self.inner.readers.permits.close();
        self.inner
            .readers
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.control(Command::Close).await
    }
}

fn check_lookup_id(lookup_id: &[u8]) -> Result<()> {
    if lookup_id.is_empty() || lookup_id.len() > MAX_LOOKUP_ID_BYTES {
        return Err(StorageError::InvalidArgument {
            what: "invite lookup id must be 1..=64 bytes",
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Connections, schema

fn configure_writer(conn: &Connection, config: &SqliteConfig) -> Result<()> {
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StorageError::Corrupt {
            what: format!("journal_mode is {mode}, not wal"),
        });
    }
    conn.pragma_update(None, "synchronous", config.synchronous.pragma_value())?;
    conn.pragma_update(
        None,
        "wal_autocheckpoint",
        i64::from(config.wal_autocheckpoint_pages),
    )?;
    conn.pragma_update(
        None,
        "journal_size_limit",
        clamp_i64(config.journal_size_limit_bytes),
    )?;
    conn.pragma_update(None, "foreign_keys", false)?;
    conn.pragma_update(None, "mmap_size", clamp_i64(config.mmap_size_bytes))?;
    // A negative cache_size is in KiB.
    conn.pragma_update(
        None,
        "cache_size",
        clamp_i64(config.cache_size_bytes / 1024).saturating_neg(),
    )?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(())
}

/// Checks the file's schema; `Ok(true)` means it is empty and the schema must be created.
fn check_schema(conn: &Connection) -> Result<bool> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let app_id: i64 = conn.pragma_query_value(None, "application_id", |r| r.get(0))?;
    match version {
        0 => {
            let objects: i64 =
                conn.query_row("SELECT COUNT(*) FROM sqlite_schema", [], |r| r.get(0))?;
            if objects != 0 || app_id != 0 {
                return Err(StorageError::Corrupt {
                    what: "database file holds tables but no relay schema".into(),
                });
            }
            Ok(true)
        }
        SCHEMA_VERSION if app_id == APPLICATION_ID => Ok(false),
        SCHEMA_VERSION => Err(StorageError::Corrupt {
            what: format!("application_id {app_id:#x} is not a relay database"),
        }),
        found => Err(StorageError::UnsupportedSchema {
            found,
            supported: SCHEMA_VERSION,
        }),
    }
}

fn create_schema(conn: &Connection) -> Result<()> {
    let tx = conn.unchecked_transaction()?;
    tx.execute_batch(SCHEMA)?;
    tx.pragma_update(None, "application_id", APPLICATION_ID)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(())
}

fn load_stats(conn: &Connection) -> Result<StorageStats> {
    let (groups, blobs, bytes): (i64, i64, i64) = conn.query_row(
        "SELECT COUNT(*), COALESCE(SUM(blob_count), 0), COALESCE(SUM(byte_count), 0) FROM groups",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    Ok(StorageStats {
        groups: to_u64(groups, "group count")?,
        blobs: to_u64(blobs, "blob count")?,
        bytes: to_u64(bytes, "byte count")?,
    })
}

struct ReaderPool {
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
    path: PathBuf,
    busy_timeout: Duration,
    mmap_size_bytes: u64,
}

impl ReaderPool {
    fn take(&self) -> Option<Connection> {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
    }

    fn give_back(&self, conn: Connection) {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(conn);
    }

    /// Frees the page caches of the idle readers (each up to SQLite's default 2 MiB).
    fn release_idle(&self) {
        let idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        for conn in idle.iter() {
            if let Err(e) = conn.execute_batch("PRAGMA shrink_memory") {
                tracing::debug!(error = %e, "reader shrink_memory failed");
            }
        }
    }

    fn open(&self) -> Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(self.busy_timeout)?;
        conn.pragma_update(None, "mmap_size", clamp_i64(self.mmap_size_bytes))?;
        conn.set_prepared_statement_cache_capacity(16);
        Ok(conn)
    }
}

// ---------------------------------------------------------------------------------------------
// Reads

fn pull_blocking(
    conn: &mut Connection,
    group: &GroupId,
    after: Cursor,
    max_count: u32,
    max_bytes: u64,
) -> Result<PullPage> {
    // One read transaction: the page and max_cursor come from the same snapshot.
    let tx = conn.transaction()?;
    let head: Option<(i64, i64)> = tx
        .prepare_cached("SELECT id, last_cursor FROM groups WHERE group_id = ?1")?
        .query_row([&group.as_bytes()[..]], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((group_ref, last)) = head else {
        return Ok(PullPage::default());
    };
    let max_cursor = Cursor::new(to_u64(last, "last_cursor")?);

    let want = usize::try_from(max_count.max(1)).unwrap_or(usize::MAX);
    let mut metas = Vec::new();
    let mut bytes = 0u64;
    let mut has_more = false;
    {
        // Metadata first (payload is the last column, so its overflow pages are not read);
        // one row beyond the count limit tells whether more follow.
        let mut stmt = tx.prepare_cached(
            "SELECT id, cursor, blob_id, sender, size, stored_at FROM blobs
             WHERE group_ref = ?1 AND cursor > ?2 ORDER BY cursor LIMIT ?3",
        )?;
        let mut rows = stmt.query(params![
            group_ref,
            clamp_i64(after.get()),
            i64::from(max_count.max(1)) + 1
        ])?;
        while let Some(row) = rows.next()? {
            let size = to_u64(row.get(4)?, "blob size")?;
            if metas.len() >= want || (!metas.is_empty() && bytes.saturating_add(size) > max_bytes)
            {
                has_more = true;
                break;
            }
            bytes = bytes.saturating_add(size);
            let id: i64 = row.get(0)?;
            let cursor = Cursor::new(to_u64(row.get(1)?, "cursor")?);
            let blob_id = BlobId::from_bytes(row.get::<_, [u8; 16]>(2)?);
            let sender = DeviceId::from_bytes(row.get::<_, [u8; 32]>(3)?);
            let stored_at_ms = to_u64(row.get(5)?, "stored_at")?;
            metas.push((id, size, cursor, blob_id, sender, stored_at_ms));
        }
    }
    let mut entries = Vec::with_capacity(metas.len());
    {
        let mut stmt = tx.prepare_cached("SELECT payload FROM blobs WHERE id = ?1")?;
        for (id, size, cursor, blob_id, sender, stored_at_ms) in metas {
            let payload: Vec<u8> = stmt.query_row([id], |r| r.get(0))?;
            if u64::try_from(payload.len()).ok() != Some(size) {
                return Err(StorageError::Corrupt {
                    what: format!("blob at cursor {cursor} has a payload of the wrong size"),
                });
            }
            entries.push(PullEntry {
                cursor,
                blob_id,
                sender,
                payload,
                stored_at_ms,
            });
        }
    }
    tx.commit()?;
    Ok(PullPage {
        entries,
        has_more,
        max_cursor,
    })
}

fn audit_blocking(conn: &mut Connection) -> Result<StorageStats> {
    let tx = conn.transaction()?;
    let mut totals = StorageStats::default();
    {
        let mut stmt = tx.prepare(
            "SELECT g.last_cursor, g.blob_count, g.byte_count,
                    COUNT(b.id), COALESCE(SUM(b.size), 0), COALESCE(SUM(length(b.payload)), 0),
                    COALESCE(MAX(b.cursor), 0)
             FROM groups g LEFT JOIN blobs b ON b.group_ref = g.id GROUP BY g.id",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let (last, count, bytes): (i64, i64, i64) = (r.get(0)?, r.get(1)?, r.get(2)?);
            let (real_count, sizes, real_bytes, max_stored): (i64, i64, i64, i64) =
                (r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?);
            if count != real_count || bytes != sizes || sizes != real_bytes || max_stored > last {
                return Err(StorageError::Corrupt {
                    what: format!(
                        "group counters disagree with its blobs: counted {count} blobs / {bytes} \
                         bytes, found {real_count} / {real_bytes}, last cursor {last}, highest \
                         stored {max_stored}"
                    ),
                });
            }
            totals.groups = totals.groups.saturating_add(1);
            totals.blobs = totals
                .blobs
                .saturating_add(to_u64(real_count, "blob count")?);
            totals.bytes = totals
                .bytes
                .saturating_add(to_u64(real_bytes, "byte count")?);
        }
    }
    let orphans: i64 = tx.query_row(
        "SELECT COUNT(*) FROM blobs WHERE group_ref NOT IN (SELECT id FROM groups)",
        [],
        |r| r.get(0),
    )?;
    if orphans != 0 {
        return Err(StorageError::Corrupt {
            what: format!("{orphans} blobs without a group"),
        });
    }
    tx.commit()?;
    Ok(totals)
}

// ---------------------------------------------------------------------------------------------
// The writer

type Reply<T> = oneshot::Sender<Result<T>>;

enum Command {
    Write(Box<dyn Job>),
    Checkpoint(Reply<()>),
    /// Hand the writer connection's page cache back to the allocator (`PRAGMA shrink_memory`).
    ReleaseMemory(Reply<()>),
    Close(Reply<()>),
    #[cfg(test)]
    Pause(oneshot::Sender<()>, std::sync::mpsc::Receiver<()>),
}

impl Command {
    fn refuse(self, err: &StorageError) {
        match self {
            Self::Write(job) => job.finish(Some(err)),
            Self::Checkpoint(reply) | Self::ReleaseMemory(reply) | Self::Close(reply) => {
                let _ = reply.send(Err(err.clone()));
            }
            #[cfg(test)]
            Self::Pause(..) => {}
        }
    }
}

/// Changes to the totals made by one batch, published only if it commits.
#[derive(Default, Clone, Copy)]
struct StatsDelta {
    groups: i64,
    blobs: i64,
    bytes: i64,
}

/// What a write operation sees inside the batch transaction.
struct BatchCtx {
    limits: StorageLimits,
    delta: StatsDelta,
    /// Group rows read or changed by this batch's pushes. Their counters change here and are
    /// written back once per group, just before the commit ([`BatchCtx::flush_groups`]), so a
    /// batch of N pushes to one group costs one group read and one group write, not N of each.
    groups: HashMap<GroupId, GroupRow>,
}

impl BatchCtx {
    fn new(limits: StorageLimits) -> Self {
        Self {
            limits,
            delta: StatsDelta::default(),
            groups: HashMap::new(),
        }
    }

    /// The group's row as this batch sees it (cached after the first read); `None` if the
    /// group does not exist yet.
    fn group(&mut self, conn: &Connection, group: &GroupId) -> rusqlite::Result<Option<GroupRow>> {
        if let Some(g) = self.groups.get(group) {
            return Ok(Some(*g));
        }
        let row = load_group(conn, group)?;
        if let Some(g) = row {
            self.groups.insert(*group, g);
        }
        Ok(row)
    }

    /// Writes the changed group counters back (inside the batch transaction) and forgets the
    /// cache. Called before the commit, and before any operation that changes group rows
    /// itself (delete, cleanup), so those see and change the current values.
    fn flush_groups(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        for g in self.groups.values().filter(|g| g.dirty) {
            conn.prepare_cached(
                "UPDATE groups SET last_cursor = ?2, blob_count = ?3, byte_count = ?4
                 WHERE id = ?1",
            )?
            .execute(params![g.id, g.last_cursor, g.blob_count, g.byte_count])?;
        }
        self.groups.clear();
        Ok(())
    }
}

/// One kind of write. The outer `Result` is a database failure (the whole batch rolls back);
/// the inner one is this operation's own answer (a quota rejection leaves the others alone).
trait WriteOp: Send + 'static {
    type Output: Send + 'static;
    fn apply(
        &mut self,
        conn: &Connection,
        ctx: &mut BatchCtx,
    ) -> rusqlite::Result<Result<Self::Output>>;
}

/// A queued write with its caller's reply channel, type-erased for the queue.
trait Job: Send {
    fn apply(&mut self, conn: &Connection, ctx: &mut BatchCtx) -> rusqlite::Result<()>;
    /// Answers the caller: with the operation's outcome, or with `failure` if the batch did
    /// not commit.
    fn finish(self: Box<Self>, failure: Option<&StorageError>);
}

struct Pending<O: WriteOp> {
    op: O,
    outcome: Option<Result<O::Output>>,
    reply: Reply<O::Output>,
}

impl<O: WriteOp> Job for Pending<O> {
    fn apply(&mut self, conn: &Connection, ctx: &mut BatchCtx) -> rusqlite::Result<()> {
        self.outcome = Some(self.op.apply(conn, ctx)?);
        Ok(())
    }

    fn finish(self: Box<Self>, failure: Option<&StorageError>) {
        let answer = match (failure, self.outcome) {
            (Some(err), _) => Err(err.clone()),
            (None, Some(outcome)) => outcome,
            (None, None) => Err(StorageError::WriterGone),
        };
        // The caller may have given up waiting; its write is committed all the same.
        let _ = self.reply.send(answer);
    }
}

struct Writer {
    conn: Connection,
    rx: mpsc::Receiver<Command>,
    shared: Arc<Shared>,
    limits: StorageLimits,
    max_batch: usize,
}

impl Writer {
    fn run(mut self) {
        let mut jobs: Vec<Box<dyn Job>> = Vec::with_capacity(self.max_batch);
        let mut close_reply = None;
        'serve: while let Some(first) = self.rx.blocking_recv() {
            let mut next = first;
            loop {
                match next {
                    Command::Write(job) => jobs.push(job),
                    Command::Checkpoint(reply) => {
                        // Writes queued before the checkpoint are committed first.
                        self.commit(&mut jobs);
                        let _ = reply.send(self.checkpoint());
                    }
                    Command::ReleaseMemory(reply) => {
                        self.commit(&mut jobs);
                        let _ = reply.send(self.release_memory());
                    }
                    Command::Close(reply) => {
                        self.commit(&mut jobs);
                        close_reply = Some(reply);
                        break 'serve;
                    }
                    #[cfg(test)]
                    Command::Pause(paused, wait) => {
                        self.commit(&mut jobs);
                        let _ = paused.send(());
                        let _ = wait.recv();
                    }
                }
                if jobs.len() >= self.max_batch {
                    break;
                }
                match self.rx.try_recv() {
                    Ok(cmd) => next = cmd,
                    Err(_) => break,
                }
            }
            self.commit(&mut jobs);
        }

        // Stop accepting, refuse whatever is still queued, then release the database.
        self.rx.close();
        while let Ok(cmd) = self.rx.try_recv() {
            cmd.refuse(&StorageError::Closed);
        }
        let result = match close_reply {
            Some(_) => self.checkpoint(),
            None => Ok(()),
        };
        let result = result.and(self.conn.close().map_err(|(_, e)| StorageError::from(e)));
        if let Some(reply) = close_reply {
            let _ = reply.send(result);
        }
    }

    /// Applies every queued job in one transaction, commits, then answers each caller.
    fn commit(&mut self, jobs: &mut Vec<Box<dyn Job>>) {
        if jobs.is_empty() {
            return;
        }
        let mut ctx = BatchCtx::new(self.limits);
        match apply_batch(&mut self.conn, jobs, &mut ctx) {
            Ok(()) => {
                self.shared.apply(ctx.delta);
                self.shared.commits.fetch_add(1, Ordering::Relaxed);
                self.shared
                    .ops
                    .fetch_add(jobs.len() as u64, Ordering::Relaxed);
                for job in jobs.drain(..) {
                    job.finish(None);
                }
            }
            Err(e) => {
                self.shared.failed_commits.fetch_add(1, Ordering::Relaxed);
                let err = StorageError::from(e);
                tracing::warn!(error = %err, ops = jobs.len(), "storage batch rolled back");
                for job in jobs.drain(..) {
                    job.finish(Some(&err));
                }
            }
        }
    }

    /// Frees the pages this connection caches. Pushes append at the right edge of each index, so
    /// the cache fills with pages that are never written again: without this it grows with the
    /// data up to `cache_size` (64 MiB by default), which a soak reads as a leak. The pages the
    /// next commit needs come back from the memory-mapped file or the WAL.
    fn release_memory(&self) -> Result<()> {
        self.conn.execute_batch("PRAGMA shrink_memory")?;
        Ok(())
    }

    fn checkpoint(&self) -> Result<()> {
        let (busy, log, done): (i64, i64, i64) =
            self.conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?;
        if busy != 0 {
            tracing::debug!(
                wal_frames = log,
                checkpointed = done,
                "WAL checkpoint incomplete"
            );
        }
        Ok(())
    }
}

fn apply_batch(
    conn: &mut Connection,
    jobs: &mut [Box<dyn Job>],
    ctx: &mut BatchCtx,
) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for job in jobs.iter_mut() {
        job.apply(&tx, ctx)?;
    }
    ctx.flush_groups(&tx)?;
    tx.commit()
}

// ---------------------------------------------------------------------------------------------
// Write operations

/// The group row as the writer sees it.
#[derive(Clone, Copy)]
struct GroupRow {
    id: i64,
    last_cursor: i64,
    blob_count: i64,
    byte_count: i64,
    /// Changed by this batch and not written back yet.
    dirty: bool,
}

fn load_group(conn: &Connection, group: &GroupId) -> rusqlite::Result<Option<GroupRow>> {
    conn.prepare_cached(
        "SELECT id, last_cursor, blob_count, byte_count FROM groups WHERE group_id = ?1",
    )?
    .query_row([&group.as_bytes()[..]], |r| {
        Ok(GroupRow {
            id: r.get(0)?,
            last_cursor: r.get(1)?,
            blob_count: r.get(2)?,
            byte_count: r.get(3)?,
            dirty: false,
        })
    })
    .optional()
}

/// The original answer for a blob already stored in the group, if it is.
fn find_original(
    conn: &Connection,
    group_ref: i64,
    blob_id: &BlobId,
) -> rusqlite::Result<Option<Result<PushOutcome>>> {
    let original: Option<(i64, i64)> = conn
        .prepare_cached(
            "SELECT cursor, stored_at FROM blobs WHERE group_ref = ?1 AND blob_id = ?2",
        )?
        .query_row(params![group_ref, &blob_id.as_bytes()[..]], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    Ok(original.map(|(cursor, stored_at)| {
        Ok(PushOutcome {
            cursor: Cursor::new(to_u64(cursor, "cursor")?),
            duplicate: true,
            stored_at_ms: to_u64(stored_at, "stored_at")?,
        })
    }))
}

struct PushOp(PushRequest);

impl WriteOp for PushOp {
    type Output = PushOutcome;

    fn apply(
        &mut self,
        conn: &Connection,
        ctx: &mut BatchCtx,
    ) -> rusqlite::Result<Result<PushOutcome>> {
        let req = &self.0;
        let group = ctx.group(conn, &req.group)?;
        match check_push(req, group.as_ref(), &ctx.limits) {
            Ok(()) => {}
            Err(refusal) => {
                // A retry of a stored blob gets the original answer, whatever the limits say
                // now.
                if let Some(g) = &group
                    && let Some(original) = find_original(conn, g.id, &req.blob_id)?
                {
                    return Ok(original);
                }
                return Ok(Err(refusal));
            }
        }
        let size = payload_size(req);
        let mut g = match group {
            Some(g) => g,
            None => {
                conn.prepare_cached(
                    "INSERT INTO groups (group_id, last_cursor, blob_count, byte_count)
                     VALUES (?1, 0, 0, 0)",
                )?
                .execute([&req.group.as_bytes()[..]])?;
                ctx.delta.groups = ctx.delta.groups.saturating_add(1);
                GroupRow {
                    id: conn.last_insert_rowid(),
                    last_cursor: 0,
                    blob_count: 0,
                    byte_count: 0,
                    dirty: false,
                }
            }
        };
        // check_push made sure this does not overflow.
        let cursor = g.last_cursor.saturating_add(1);
        let ttl_ms = u64::try_from(req.ttl.as_millis()).unwrap_or(u64::MAX);
        let stored_at = clamp_i64(req.now_ms);
        let expires_at = clamp_i64(req.now_ms.saturating_add(ttl_ms));
        // The unique (group_ref, blob_id) index answers "already stored?" as part of the
        // insert: a retry inserts nothing and is then looked up.
        let inserted = conn
            .prepare_cached(
                "INSERT INTO blobs
                     (group_ref, cursor, blob_id, sender, size, stored_at, expires_at, payload)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (group_ref, blob_id) DO NOTHING",
            )?
            .execute(params![
                g.id,
                cursor,
                &req.blob_id.as_bytes()[..],
                &req.sender.as_bytes()[..],
                size,
                stored_at,
                expires_at,
                &req.payload[..],
            ])?;
        if inserted == 0 {
            return Ok(find_original(conn, g.id, &req.blob_id)?.unwrap_or_else(|| {
                Err(StorageError::Corrupt {
                    what: "a blob id conflicts but no blob carries it".into(),
                })
            }));
        }
        g.last_cursor = cursor;
        g.blob_count = g.blob_count.saturating_add(1);
        g.byte_count = g.byte_count.saturating_add(size);
        g.dirty = true;
        ctx.groups.insert(req.group, g);
        ctx.delta.blobs = ctx.delta.blobs.saturating_add(1);
        ctx.delta.bytes = ctx.delta.bytes.saturating_add(size);
        Ok(Ok(PushOutcome {
            cursor: Cursor::new(cursor.unsigned_abs()),
            duplicate: false,
            stored_at_ms: stored_at.unsigned_abs(),
        }))
    }
}

/// The payload size as SQLite stores it (a payload in memory is far below `i64::MAX` bytes).
fn payload_size(req: &PushRequest) -> i64 {
    clamp_i64(u64::try_from(req.payload.len()).unwrap_or(u64::MAX))
}

/// Every limit a new blob must respect: size, TTL, the group's quotas, and a sane cursor.
fn check_push(req: &PushRequest, group: Option<&GroupRow>, limits: &StorageLimits) -> Result<()> {
    let size = payload_size(req);
    let size_u = size.unsigned_abs();
    if size_u > limits.max_blob_bytes {
        return Err(quota(QuotaKind::BlobSize, limits.max_blob_bytes, size_u));
    }
    let ttl_ms = u64::try_from(req.ttl.as_millis()).unwrap_or(u64::MAX);
    let max_ttl_ms = u64::try_from(limits.max_ttl.as_millis()).unwrap_or(u64::MAX);
    if ttl_ms > max_ttl_ms {
        return Err(quota(QuotaKind::Ttl, max_ttl_ms, ttl_ms));
    }
    let (last, count, bytes) =
        group.map_or((0, 0, 0), |g| (g.last_cursor, g.blob_count, g.byte_count));
    let new_count = count.saturating_add(1);
    if new_count.unsigned_abs() > limits.max_group_blobs {
        return Err(quota(
            QuotaKind::GroupBlobs,
            limits.max_group_blobs,
            new_count.unsigned_abs(),
        ));
    }
    let new_bytes = bytes.saturating_add(size);
    if new_bytes.unsigned_abs() > limits.max_group_bytes {
        return Err(quota(
            QuotaKind::GroupBytes,
            limits.max_group_bytes,
            new_bytes.unsigned_abs(),
        ));
    }
    if count < 0 || bytes < 0 || last < 0 {
        return Err(StorageError::Corrupt {
            what: "negative group counter".into(),
        });
    }
    if last == i64::MAX {
        return Err(StorageError::Corrupt {
            what: "group cursor space exhausted".into(),
        });
    }
    Ok(())
}

struct DeleteOp {
    group: GroupId,
    blob_id: BlobId,
}

impl WriteOp for DeleteOp {
    type Output = bool;

    fn apply(&mut self, conn: &Connection, ctx: &mut BatchCtx) -> rusqlite::Result<Result<bool>> {
        // Group counters change below in SQL: write this batch's pending changes first.
        ctx.flush_groups(conn)?;
        let found: Option<(i64, i64, i64)> = conn
            .prepare_cached(
                "SELECT b.id, b.group_ref, b.size FROM blobs b JOIN groups g ON g.id = b.group_ref
                 WHERE g.group_id = ?1 AND b.blob_id = ?2",
            )?
            .query_row(
                params![&self.group.as_bytes()[..], &self.blob_id.as_bytes()[..]],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((id, group_ref, size)) = found else {
            return Ok(Ok(false));
        };
        conn.prepare_cached("DELETE FROM blobs WHERE id = ?1")?
            .execute([id])?;
        decrement_group(conn, group_ref, 1, size)?;
        ctx.delta.blobs = ctx.delta.blobs.saturating_sub(1);
        ctx.delta.bytes = ctx.delta.bytes.saturating_sub(size);
        Ok(Ok(true))
    }
}

fn decrement_group(
    conn: &Connection,
    group_ref: i64,
    blobs: i64,
    bytes: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE groups SET blob_count = blob_count - ?2, byte_count = byte_count - ?3
         WHERE id = ?1",
    )?
    .execute(params![group_ref, blobs, bytes])?;
    Ok(())
}

struct CleanupOp {
    now_ms: u64,
    batch: u32,
}

impl WriteOp for CleanupOp {
    type Output = u64;

    fn apply(&mut self, conn: &Connection, ctx: &mut BatchCtx) -> rusqlite::Result<Result<u64>> {
        // Group counters change below in SQL: write this batch's pending changes first.
        ctx.flush_groups(conn)?;
        let now = clamp_i64(self.now_ms);
        let batch = i64::from(self.batch);
        let expired: Vec<(i64, i64, i64)> = conn
            .prepare_cached(
                "SELECT id, group_ref, size FROM blobs WHERE expires_at <= ?1
                 ORDER BY expires_at LIMIT ?2",
            )?
            .query_map([now, batch], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let mut per_group: HashMap<i64, (i64, i64)> = HashMap::new();
        {
            let mut delete = conn.prepare_cached("DELETE FROM blobs WHERE id = ?1")?;
            for &(id, group_ref, size) in &expired {
                delete.execute([id])?;
                let entry = per_group.entry(group_ref).or_default();
                entry.0 = entry.0.saturating_add(1);
                entry.1 = entry.1.saturating_add(size);
            }
        }
        for (group_ref, (blobs, bytes)) in per_group {
            decrement_group(conn, group_ref, blobs, bytes)?;
            ctx.delta.blobs = ctx.delta.blobs.saturating_sub(blobs);
            ctx.delta.bytes = ctx.delta.bytes.saturating_sub(bytes);
        }
        conn.prepare_cached(
            "DELETE FROM invites WHERE lookup_id IN
                 (SELECT lookup_id FROM invites WHERE expires_at <= ?1 LIMIT ?2)",
        )?
        .execute([now, batch])?;
        Ok(Ok(expired.len() as u64))
    }
}

struct InvitePutOp {
    lookup_id: Vec<u8>,
    sealed: Vec<u8>,
    expires_ms: u64,
}

impl WriteOp for InvitePutOp {
    type Output = ();

    fn apply(&mut self, conn: &Connection, _ctx: &mut BatchCtx) -> rusqlite::Result<Result<()>> {
        let existing: Option<Vec<u8>> = conn
            .prepare_cached("SELECT sealed FROM invites WHERE lookup_id = ?1")?
            .query_row([&self.lookup_id[..]], |r| r.get(0))
            .optional()?;
        match existing {
            Some(sealed) if sealed == self.sealed => Ok(Ok(())),
            Some(_) => Ok(Err(StorageError::InviteExists)),
            None => {
                conn.prepare_cached(
                    "INSERT INTO invites (lookup_id, sealed, expires_at, attempts)
                     VALUES (?1, ?2, ?3, 0)",
                )?
                .execute(params![
                    &self.lookup_id[..],
                    &self.sealed[..],
                    clamp_i64(self.expires_ms)
                ])?;
                Ok(Ok(()))
            }
        }
    }
}

struct InviteTakeOp {
    lookup_id: Vec<u8>,
    now_ms: u64,
    max_attempts: u32,
}

impl WriteOp for InviteTakeOp {
    type Output = InviteLookup;

    fn apply(
        &mut self,
        conn: &Connection,
        _ctx: &mut BatchCtx,
    ) -> rusqlite::Result<Result<InviteLookup>> {
        let row: Option<(Vec<u8>, i64, i64)> = conn
            .prepare_cached(
                "SELECT sealed, expires_at, attempts FROM invites WHERE lookup_id = ?1",
            )?
            .query_row([&self.lookup_id[..]], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?;
        let Some((sealed, expires_at, attempts)) = row else {
            return Ok(Ok(InviteLookup::NotFound));
        };
        if expires_at <= clamp_i64(self.now_ms) {
            // Kept (answering Expired, counting takes) until cleanup removes it.
            conn.prepare_cached("UPDATE invites SET attempts = attempts + 1 WHERE lookup_id = ?1")?
                .execute([&self.lookup_id[..]])?;
            return Ok(Ok(InviteLookup::Expired));
        }
        conn.prepare_cached("DELETE FROM invites WHERE lookup_id = ?1")?
            .execute([&self.lookup_id[..]])?;
        if attempts >= i64::from(self.max_attempts) {
            return Ok(Ok(InviteLookup::TooManyAttempts));
        }
        Ok(Ok(InviteLookup::Found(sealed)))
    }
}

// ---------------------------------------------------------------------------------------------
// Integer conversions (SQLite integers are i64)

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64, what: &str) -> Result<u64> {
    u64::try_from(v).map_err(|_| StorageError::Corrupt {
        what: format!("negative {what}: {v}"),
    })
}

fn quota(kind: QuotaKind, limit: u64, requested: u64) -> StorageError {
    StorageError::QuotaExceeded {
        kind,
        limit,
        requested,
    }
}

#[cfg(test)]
mod pragma_tests {
    use super::*;

    fn pragma_i64(conn: &Connection, name: &str) -> i64 {
        conn.pragma_query_value(None, name, |r| r.get(0))
            .expect(name)
    }

    #[test]
    fn writer_and_reader_connections_follow_the_config() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (synchronous, level) in [(Synchronous::Normal, 1), (Synchronous::Full, 2)] {
            let path = dir.path().join(format!("sync-{level}.db"));
            let config = SqliteConfig {
                synchronous,
                busy_timeout: Duration::from_millis(1234),
                wal_autocheckpoint_pages: 1000,
                journal_size_limit_bytes: 1 << 22,
                mmap_size_bytes: 1 << 20,
                cache_size_bytes: 8 << 20,
                ..SqliteConfig::default()
            };
            let conn = Connection::open(&path).expect("open");
            assert!(
                check_schema(&conn).expect("empty file"),
                "schema must be created"
            );
            configure_writer(&conn, &config).expect("configure");
            create_schema(&conn).expect("schema");
            assert!(
                !check_schema(&conn).expect("relay file"),
                "schema already there"
            );

            let mode: String = conn
                .pragma_query_value(None, "journal_mode", |r| r.get(0))
                .expect("mode");
            assert_eq!(mode, "wal");
            assert_eq!(pragma_i64(&conn, "synchronous"), level);
            assert_eq!(pragma_i64(&conn, "wal_autocheckpoint"), 1000);
            assert_eq!(pragma_i64(&conn, "journal_size_limit"), 1 << 22);
            assert_eq!(pragma_i64(&conn, "mmap_size"), 1 << 20);
            assert_eq!(pragma_i64(&conn, "cache_size"), -(8 << 10));
            assert_eq!(pragma_i64(&conn, "user_version"), SCHEMA_VERSION);
            assert_eq!(pragma_i64(&conn, "application_id"), APPLICATION_ID);

            let pool = ReaderPool {
                idle: Mutex::new(Vec::new()),
                permits: Arc::new(Semaphore::new(1)),
                path: path.clone(),
                busy_timeout: config.busy_timeout,
                mmap_size_bytes: config.mmap_size_bytes,
            };
            let reader = pool.open().expect("reader");
            assert_eq!(pragma_i64(&reader, "mmap_size"), 1 << 20);
            assert_eq!(pragma_i64(&reader, "busy_timeout"), 1234);
            let write = reader.execute("DELETE FROM blobs", []);
            assert!(write.is_err(), "reader connections are read-only");
        }
    }
}
