//! PostgreSQL storage: several relays on one database share one log per group.
//!
//! - `schema`: the versioned schema, migrated at start under an advisory lock.
//! - `writer`: pushes, committed in batches by writer tasks (each owns a share of the groups,
//!   so a group's pushes keep their queue order).
//! - `ops`: every other write, each in its own transaction.
//! - `reads`: pull pages, membership, totals, the audit.
//! - `listen`: what the other relays committed, heard through `LISTEN`/`NOTIFY`.
//!
//! Totals are kept in a small table of counter shards (each writer adds to its own shard), so
//! no row is updated by every push of every relay and reading the totals sums a few dozen rows.

mod listen;
mod ops;
mod reads;
mod schema;
mod tls;
mod writer;

pub use listen::RemoteEvent;
pub use tls::PostgresTls;

use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use deadpool_postgres::{
    GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod, Transaction,
};
use sync_types::{BlobId, Cursor, DeviceId, GroupId};
use tokio::sync::mpsc;
use tokio_postgres::NoTls;
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_util::sync::CancellationToken;

use super::rules::payload_digest;
use super::{
    CommitHook, InviteLookup, MembershipRead, MembershipWrite, PullPage, PushOutcome, PushReply,
    PushRequest, Storage, StorageError, StorageLimits, StorageStats, WriterMetrics,
};

type Result<T, E = StorageError> = std::result::Result<T, E>;

/// A driver result.
type PgResult<T> = std::result::Result<T, tokio_postgres::Error>;

/// Counter shards: writers add to `hash(instance, writer) mod SHARDS`.
const SHARDS: u64 = 64;

/// How a relay uses its PostgreSQL database.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresConfig {
    /// Connection string, as a URL (`postgres://user:password@host:port/db`) or key-value
    /// pairs (`host=… user=… dbname=…`). It may hold a password: it is never logged.
    pub url: String,
    /// Most pooled connections (reads, removals, membership). Default 16.
    pub pool_size: usize,
    /// Writer tasks committing pushes, each with its own connection at a time (groups are
    /// shared out among them by id). Default 4.
    pub writers: usize,
    /// Pushes queued per writer before pushers wait. Default 1024.
    pub queue_capacity: usize,
    /// Most pushes committed in one transaction. Default 512.
    pub max_batch: usize,
    /// How long a call waits for a pooled connection, and a connection attempt for the
    /// server, before it fails with [`StorageError::Unavailable`]. Default 5 s.
    pub connect_timeout: Duration,
    /// The per-blob and per-group limits.
    pub limits: StorageLimits,
    /// TLS to the database. Default off.
    pub tls: PostgresTls,
}

impl std::fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &"<redacted>")
            .field("pool_size", &self.pool_size)
            .field("writers", &self.writers)
            .field("queue_capacity", &self.queue_capacity)
            .field("max_batch", &self.max_batch)
            .field("connect_timeout", &self.connect_timeout)
            .field("limits", &self.limits)
            .field("tls", &self.tls)
            .finish()
    }
}

impl PostgresConfig {
    /// The defaults, for the database at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            pool_size: 16,
            writers: 4,
            queue_capacity: 1024,
            max_batch: 512,
            connect_timeout: Duration::from_secs(5),
            limits: StorageLimits::default(),
            tls: PostgresTls::Disable,
        }
    }
}

/// The PostgreSQL backend: a cheap-clone handle over a connection pool and the writer tasks.
#[derive(Clone)]
pub struct PostgresStorage {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PostgresStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStorage")
            .field("store_id", &self.inner.store_id)
            .finish_non_exhaustive()
    }
}

struct Inner {
    pool: Pool,
    pg_config: tokio_postgres::Config,
    connector: tls::Connector,
    /// One queue per writer task; emptied by `close`.
    writers: RwLock<Vec<mpsc::Sender<writer::Job>>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    shared: Arc<Shared>,
    limits: StorageLimits,
    /// The counter shard of the writes made outside the writer tasks.
    shard: i32,
    /// This handle's id in notifications (its own are skipped).
    instance: u64,
    store_id: u64,
    closed: AtomicBool,
    stop: CancellationToken,
}

/// What the writer tasks share with the handle.
pub(super) struct Shared {
    hook: RwLock<Option<CommitHook>>,
    limits: StorageLimits,
    instance: u64,
    commits: AtomicU64,
    ops: AtomicU64,
    failed: AtomicU64,
}

impl Shared {
    fn hook(&self) -> Option<CommitHook> {
        self.hook
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn note_batch(&self, ops: usize, ok: bool) {
        if ok {
            self.commits.fetch_add(1, Ordering::Relaxed);
            self.ops.fetch_add(ops as u64, Ordering::Relaxed);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A shard number for `instance`'s writer `n`.
fn shard_of(instance: u64, n: u64) -> i32 {
    let h = instance.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(n);
    i32::try_from(h % SHARDS).unwrap_or(0)
}

impl PostgresStorage {
    /// Connects, creates or migrates the schema, and starts the writer tasks. Fails with
    /// [`StorageError::Unavailable`] when the server cannot be reached within the connect
    /// timeout.
    pub async fn open(config: PostgresConfig) -> Result<Self> {
        let mut pg_config = tokio_postgres::Config::from_str(&config.url).map_err(|e| {
            StorageError::Unavailable(format!(
                "invalid postgres connection string: {}",
                redact(&e.to_string())
            ))
        })?;
        pg_config.connect_timeout(config.connect_timeout);
        if pg_config.get_application_name().is_none() {
            pg_config.application_name("sync-relay");
        }
        let connector = tls::connector(&config.tls)?;
        if matches!(config.tls, PostgresTls::Require { .. }) {
            pg_config.ssl_mode(tokio_postgres::config::SslMode::Require);
        }
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match &connector {
            tls::Connector::Plain => Manager::from_config(pg_config.clone(), NoTls, manager_config),
            tls::Connector::Rustls(t) => {
                Manager::from_config(pg_config.clone(), t.clone(), manager_config)
            }
        };
        let pool = Pool::builder(manager)
            .max_size(config.pool_size.max(config.writers + 2))
            .wait_timeout(Some(config.connect_timeout))
            .create_timeout(Some(config.connect_timeout))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StorageError::Unavailable(e.to_string()))?;
        let store_id = {
            let mut client = pool_client(&pool).await?;
            schema::prepare(&mut client).await?
        };
        let mut instance = [0u8; 8];
        getrandom::fill(&mut instance).map_err(|e| StorageError::Corrupt {
            what: format!("no randomness: {e}"),
        })?;
        let instance = u64::from_be_bytes(instance);
        let shared = Arc::new(Shared {
            hook: RwLock::new(None),
            limits: config.limits,
            instance,
            commits: AtomicU64::new(0),
            ops: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        });
        let mut senders = Vec::new();
        let mut tasks = Vec::new();
        for n in 0..config.writers.max(1) {
            let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
            senders.push(tx);
            tasks.push(tokio::spawn(writer::run(
                pool.clone(),
                rx,
                Arc::clone(&shared),
                shard_of(instance, n as u64),
                config.max_batch.max(1),
            )));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                pg_config,
                connector,
                writers: RwLock::new(senders),
                tasks: Mutex::new(tasks),
                shared,
                limits: config.limits,
                shard: shard_of(instance, u64::MAX),
                instance,
                store_id,
                closed: AtomicBool::new(false),
                stop: CancellationToken::new(),
            }),
        })
    }

    /// Sets the hook told about every committed batch of pushes, after the commit and before
    /// any pusher of the batch is answered (replacing an earlier hook).
    pub fn on_commit(&self, hook: CommitHook) {
        *self
            .inner
            .shared
            .hook
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(hook);
    }

    /// Starts listening for what other relays on this database commit; the events arrive on
    /// the returned queue until the storage is closed.
    pub fn subscribe_remote(&self) -> mpsc::Receiver<RemoteEvent> {
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(listen::listen_loop(
            self.inner.pg_config.clone(),
            self.inner.connector.clone(),
            self.inner.instance,
            tx,
            self.inner.stop.clone(),
        ));
        rx
    }

    /// Commit counters of the writer tasks.
    pub fn writer_metrics(&self) -> WriterMetrics {
        let s = &self.inner.shared;
        WriterMetrics {
            commits: s.commits.load(Ordering::Relaxed),
            ops: s.ops.load(Ordering::Relaxed),
            failed_commits: s.failed.load(Ordering::Relaxed),
        }
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(StorageError::Closed);
        }
        Ok(())
    }

    /// Runs `f` in a transaction on a pooled connection and commits, trying again (a few
    /// times) when it was rolled back by a deadlock or a serialization failure.
    async fn in_transaction<T, F>(&self, mut f: F) -> Result<T>
    where
        F: for<'a> FnMut(&'a Transaction<'a>) -> TxFuture<'a, T>,
    {
        self.check_open()?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut client = pool_client(&self.inner.pool).await?;
            let tx = client.transaction().await.map_err(pg_error)?;
            let result = f(&tx).await;
            match result {
                Ok(v) => {
                    tx.commit().await.map_err(pg_error)?;
                    return Ok(v);
                }
                Err(e) if attempt < 5 && is_retryable(&e) => {
                    tracing::debug!(error = %e, attempt, "transaction rolled back; trying again");
                }
                Err(e) => return Err(pg_error(e)),
            }
        }
    }
}

/// A transaction's body.
type TxFuture<'a, T> =
    Pin<Box<dyn Future<Output = std::result::Result<T, tokio_postgres::Error>> + Send + 'a>>;

/// A pooled connection, or [`StorageError::Unavailable`].
async fn pool_client(pool: &Pool) -> Result<deadpool_postgres::Object> {
    pool.get().await.map_err(|e| match e {
        deadpool_postgres::PoolError::Closed => StorageError::Closed,
        deadpool_postgres::PoolError::Backend(e) => pg_error(e),
        other => StorageError::Unavailable(other.to_string()),
    })
}

/// Rolled back by the server for a reason a retry can overcome.
fn is_retryable(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|c| {
        *c == SqlState::T_R_DEADLOCK_DETECTED
            || *c == SqlState::T_R_SERIALIZATION_FAILURE
            || *c == SqlState::UNIQUE_VIOLATION
    })
}

/// A driver error as a storage error: the server's refusals are [`StorageError::Postgres`];
/// a connection that failed or closed is [`StorageError::Unavailable`].
fn pg_error(e: tokio_postgres::Error) -> StorageError {
    if e.code().is_some_and(|c| {
        // Server shutting down or restarting, or out of connections.
        c.code().starts_with("57P")
            || c.code().starts_with("08")
            || *c == SqlState::TOO_MANY_CONNECTIONS
    }) || e.is_closed()
        || e.code().is_none()
    {
        StorageError::Unavailable(redact(&crate::storage::error_chain(&e)))
    } else {
        StorageError::Postgres(Arc::new(e))
    }
}

/// Drops anything that looks like a password from a driver message.
pub(crate) fn redact(message: &str) -> String {
    if message.contains("password") {
        "connection failed (details withheld: they mention a password)".into()
    } else {
        message.to_owned()
    }
}

/// Adds to the totals in counter shard `shard`.
async fn add_counters(
    tx: &Transaction<'_>,
    shard: i32,
    groups: i64,
    blobs: i64,
    bytes: i64,
) -> std::result::Result<(), tokio_postgres::Error> {
    if groups == 0 && blobs == 0 && bytes == 0 {
        return Ok(());
    }
    exec(
        tx,
        "INSERT INTO counters (shard, groups, blobs, bytes) VALUES ($1, $2, $3, $4)
         ON CONFLICT (shard) DO UPDATE SET groups = counters.groups + excluded.groups,
             blobs = counters.blobs + excluded.blobs, bytes = counters.bytes + excluded.bytes",
        &[&shard, &groups, &blobs, &bytes],
    )
    .await?;
    Ok(())
}

/// Parameters of a statement.
type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// Runs `sql` (prepared once per connection) and returns its rows.
async fn rows<C: GenericClient>(c: &C, sql: &str, params: Params<'_>) -> PgResult<Vec<Row>> {
    let stmt = c.prepare_cached(sql).await?;
    c.query(&stmt, params).await
}

/// Runs `sql` (prepared once per connection) and returns its row, if any.
async fn row_opt<C: GenericClient>(c: &C, sql: &str, params: Params<'_>) -> PgResult<Option<Row>> {
    let stmt = c.prepare_cached(sql).await?;
    c.query_opt(&stmt, params).await
}

/// Runs `sql` (prepared once per connection) and returns its one row.
async fn row_one<C: GenericClient>(c: &C, sql: &str, params: Params<'_>) -> PgResult<Row> {
    let stmt = c.prepare_cached(sql).await?;
    c.query_one(&stmt, params).await
}

/// Runs `sql` (prepared once per connection) and returns how many rows it changed.
async fn exec<C: GenericClient>(c: &C, sql: &str, params: Params<'_>) -> PgResult<u64> {
    let stmt = c.prepare_cached(sql).await?;
    c.execute(&stmt, params).await
}

impl Storage for PostgresStorage {
    fn store_id(&self) -> u64 {
        self.inner.store_id
    }

    async fn push(&self, req: PushRequest) -> Result<PushOutcome> {
        self.push_queued(req).await?.await
    }

    async fn push_queued(&self, req: PushRequest) -> Result<PushReply> {
        self.check_open()?;
        let writer = {
            let writers = self
                .inner
                .writers
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            let n = writers.len() as u64;
            if n == 0 {
                return Err(StorageError::Closed);
            }
            let h = u64::from_be_bytes(req.group.as_bytes()[..8].try_into().unwrap_or_default());
            let i = usize::try_from(h % n).unwrap_or(0);
            writers.get(i).cloned().ok_or(StorageError::Closed)?
        };
        let (reply, rx) = tokio::sync::oneshot::channel();
        let digest = payload_digest(&req.payload);
        writer
            .send(writer::Job { req, digest, reply })
            .await
            .map_err(|_| StorageError::WriterGone)?;
        Ok(PushReply::new(rx))
    }

    async fn pull(
        &self,
        group: GroupId,
        after: Cursor,
        max_count: u32,
        max_bytes: u64,
    ) -> Result<PullPage> {
        self.check_open()?;
        self.read_page(group, after, max_count, max_bytes).await
    }

    async fn max_cursor(&self, group: GroupId) -> Result<Cursor> {
        self.check_open()?;
        self.read_max_cursor(group).await
    }

    async fn delete(&self, group: GroupId, blob_id: BlobId, now_ms: u64) -> Result<bool> {
        self.delete_blob(group, blob_id, now_ms).await
    }

    async fn cleanup_expired(&self, now_ms: u64, batch: u32) -> Result<u64> {
        self.remove_expired(now_ms, batch).await
    }

    async fn forget_removed_ids(&self, now_ms: u64, batch: u32) -> Result<u64> {
        self.forget_ids(now_ms, batch).await
    }

    async fn drop_idle_groups(
        &self,
        seen: Vec<GroupId>,
        now_ms: u64,
        idle_for: Duration,
        batch: u32,
    ) -> Result<u64> {
        self.drop_idle(seen, now_ms, idle_for, batch).await
    }

    async fn stats(&self) -> Result<StorageStats> {
        self.check_open()?;
        self.read_stats().await
    }

    async fn invite_put(&self, lookup_id: Vec<u8>, sealed: Vec<u8>, expires_ms: u64) -> Result<()> {
        self.put_invite(lookup_id, sealed, expires_ms).await
    }

    async fn invite_take(
        &self,
        lookup_id: Vec<u8>,
        now_ms: u64,
        max_attempts: u32,
    ) -> Result<InviteLookup> {
        self.take_invite(lookup_id, now_ms, max_attempts).await
    }

    async fn membership(
        &self,
        group: GroupId,
        device: DeviceId,
        after_seq: u64,
    ) -> Result<MembershipRead> {
        self.check_open()?;
        self.read_membership(group, device, after_seq).await
    }

    async fn membership_write(&self, group: GroupId, write: MembershipWrite) -> Result<()> {
        self.write_membership(group, write).await
    }

    async fn checkpoint(&self) -> Result<()> {
        // PostgreSQL checkpoints by itself.
        self.check_open()
    }

    async fn close(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // Dropping the queues lets each writer commit what it holds, then end.
        self.inner
            .writers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        let tasks = std::mem::take(
            &mut *self
                .inner
                .tasks
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for t in tasks {
            let _ = t.await;
        }
        self.inner.stop.cancel();
        self.inner.pool.close();
        Ok(())
    }
}
