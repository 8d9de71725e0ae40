//! The embedded SQLite backend: one database file, one writer thread doing group commit, a
//! small pool of read-only connections.
//!
//! - [`schema`]: the tables, the version and application id checks, the writer's pragmas.
//! - [`readers`]: the read-only connection pool and the reads (pull, max cursor, audit).
//! - [`writer`]: the writer thread, its command queue and the batch context of group commit.
//! - [`ops`]: the write operations that store (push, invites).
//! - [`removal`]: the write operations that remove (delete, cleanup, forgotten ids, idle
//!   groups).
//!
//! Writes go through a bounded channel to the writer thread, which owns the only read-write
//! connection; a caller is answered only after its batch committed. Reads run on read-only
//! connections under `spawn_blocking`, in parallel with the writer (WAL).

mod ops;
mod readers;
mod removal;
mod schema;
mod writer;

pub use schema::{SCHEMA, Synchronous};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use sync_types::{BlobId, Cursor, DeviceId, GroupId};
use tokio::sync::mpsc;

use self::ops::{InvitePutOp, InviteTakeOp, MembershipOp, PushOp};
use self::readers::{
    ReaderPool, audit_blocking, max_cursor_blocking, membership_blocking, pull_blocking,
};
use self::removal::{CleanupOp, DeleteOp, DropIdleGroupsOp, ForgetOp};
use self::writer::{Command, Shared, Writer};
use super::{
    CommitHook, InviteLookup, MembershipRead, MembershipWrite, PullPage, PushOutcome, PushReply,
    PushRequest, Storage, StorageError, StorageLimits, StorageStats,
};

use super::rules::{clamp_i64, millis, to_u64};

type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Name of the database file inside the data dir (plus SQLite's `-wal` and `-shm` files).
pub const DB_FILE_NAME: &str = "relay.db";

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
    store_id: u64,
    /// Commands whose send to the writer has completed (tests wait on it).
    #[cfg(test)]
    sent: std::sync::atomic::AtomicUsize,
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
        let state = schema::check_schema(&conn)?;
        schema::configure_writer(&conn, &config)?;
        match state {
            schema::SchemaState::Empty => schema::create_schema(&conn)?,
            schema::SchemaState::Old(from) => schema::migrate(&conn, from, sync_types::unix_ms())?,
            schema::SchemaState::Current => {}
        }
        let store_id = schema::store_id(&conn)?;
        let shared = Arc::new(Shared::new(schema::load_stats(&conn)?));
        let commands = Writer::spawn(
            conn,
            Arc::clone(&shared),
            config.limits,
            config.max_batch,
            config.queue_capacity,
        )?;
        Ok(Self {
            inner: Arc::new(Inner {
                commands,
                shared,
                readers: ReaderPool::open_all(path.clone(), &config)?,
                closed: AtomicBool::new(false),
                path,
                store_id,
                #[cfg(test)]
                sent: std::sync::atomic::AtomicUsize::new(0),
            }),
        })
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Counters of the writer thread.
    pub fn writer_metrics(&self) -> WriterMetrics {
        self.inner.shared.metrics()
    }

    /// Calls `hook` on the writer thread after every commit that stored or answered pushes,
    /// before any caller of that batch is answered (so whatever the hook records is in place
    /// when a `PushAck` goes out). The hook must not block for long: the writer waits for it.
    pub fn on_commit(&self, hook: CommitHook) {
        self.inner.shared.set_hook(hook);
    }

    /// Recomputes the totals by scanning every blob and checks them against the per-group
    /// counters and cursors. Costs a full table scan: for tests and operator tools, not for
    /// `/health`.
    pub async fn audit(&self) -> Result<StorageStats> {
        self.read(audit_blocking).await
    }
}

impl Storage for SqliteStorage {
    fn store_id(&self) -> u64 {
        self.inner.store_id
    }

    async fn push(&self, req: PushRequest) -> Result<PushOutcome> {
        self.write(PushOp::new(req)).await
    }

    async fn push_queued(&self, req: PushRequest) -> Result<PushReply> {
        Ok(PushReply::new(self.enqueue(PushOp::new(req)).await?))
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
        self.read(move |conn| max_cursor_blocking(conn, &group))
            .await
    }

    async fn delete(&self, group: GroupId, blob_id: BlobId, now_ms: u64) -> Result<bool> {
        self.write(DeleteOp {
            group,
            blob_id,
            now_ms,
        })
        .await
    }

    async fn forget_removed_ids(&self, now_ms: u64, batch: u32) -> Result<u64> {
        self.write(ForgetOp { now_ms, batch }).await
    }

    async fn drop_idle_groups(
        &self,
        seen: Vec<GroupId>,
        now_ms: u64,
        idle_for: Duration,
        batch: u32,
    ) -> Result<u64> {
        self.write(DropIdleGroupsOp {
            seen,
            now_ms,
            idle_before_ms: now_ms.saturating_sub(millis(idle_for)),
            batch,
        })
        .await
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
        self.write(InvitePutOp::new(lookup_id, sealed, expires_ms)?)
            .await
    }

    async fn invite_take(
        &self,
        lookup_id: Vec<u8>,
        now_ms: u64,
        max_attempts: u32,
    ) -> Result<InviteLookup> {
        self.write(InviteTakeOp::new(lookup_id, now_ms, max_attempts)?)
            .await
    }

    async fn membership(
        &self,
        group: GroupId,
        device: DeviceId,
        after_seq: u64,
    ) -> Result<MembershipRead> {
        self.read(move |conn| membership_blocking(conn, &group, &device, after_seq))
            .await
    }

    async fn membership_write(&self, group: GroupId, write: MembershipWrite) -> Result<()> {
        self.write(MembershipOp { group, write }).await
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
        self.inner.readers.close();
        self.control(Command::Close).await
    }
}
