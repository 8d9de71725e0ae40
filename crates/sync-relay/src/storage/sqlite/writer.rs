//! The write side: one thread owns the only read-write connection and does group commit. It
//! takes everything queued (up to `max_batch`), applies it inside one `BEGIN IMMEDIATE`
//! transaction with a shared batch context, commits, and only then answers each caller. Cursor
//! allocation and the blob insert happen in that transaction, so a reader sees a batch all at
//! once or not at all: never cursor N+1 without N.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use sync_types::GroupId;
use tokio::sync::{mpsc, oneshot};

use super::{Result, SqliteStorage, WriterMetrics};
use crate::storage::{
    CommitHook, CommitReport, CommittedPush, PushOutcome, StorageError, StorageLimits, StorageStats,
};

/// Where a write's committed answer is sent.
pub(super) type Reply<T> = oneshot::Sender<Result<T>>;

/// What the writer thread is asked to do.
pub(super) enum Command {
    /// Apply a write in the next batch.
    Write(Box<dyn Job>),
    /// Commit what is queued, then checkpoint the WAL (`TRUNCATE`).
    Checkpoint(Reply<()>),
    /// Hand the writer connection's page cache back to the allocator (`PRAGMA shrink_memory`).
    ReleaseMemory(Reply<()>),
    /// Commit what is queued, checkpoint, close the connection and stop.
    Close(Reply<()>),
    /// Commit what is queued, then hold the writer until released (tests only).
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
pub(super) struct StatsDelta {
    pub(super) groups: i64,
    pub(super) blobs: i64,
    pub(super) bytes: i64,
}

/// State the writer publishes after each commit.
#[derive(Default)]
pub(super) struct Shared {
    stats: Mutex<StorageStats>,
    /// Told about the pushes of every committed batch, before any caller of it is answered.
    hook: RwLock<Option<CommitHook>>,
    commits: AtomicU64,
    ops: AtomicU64,
    failed_commits: AtomicU64,
}

impl Shared {
    /// Starts from the totals read when the file was opened.
    pub(super) fn new(stats: StorageStats) -> Self {
        Self {
            stats: Mutex::new(stats),
            ..Self::default()
        }
    }

    /// The totals as of the last commit.
    pub(super) fn stats(&self) -> StorageStats {
        *self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The writer's counters.
    pub(super) fn metrics(&self) -> WriterMetrics {
        WriterMetrics {
            commits: self.commits.load(Ordering::Relaxed),
            ops: self.ops.load(Ordering::Relaxed),
            failed_commits: self.failed_commits.load(Ordering::Relaxed),
        }
    }

    /// Sets the commit hook (replacing any earlier one).
    pub(super) fn set_hook(&self, hook: CommitHook) {
        *self.hook.write().unwrap_or_else(PoisonError::into_inner) = Some(hook);
    }

    /// Tells the hook what a committed batch did to pushes (nothing when it pushed nothing).
    fn report(&self, report: CommitReport) {
        if report.pushes.is_empty() && report.duplicates == 0 {
            return;
        }
        let hook = self
            .hook
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(hook) = hook {
            hook(report);
        }
    }

    fn apply(&self, d: StatsDelta) {
        let mut s = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
        s.groups = s.groups.saturating_add_signed(d.groups);
        s.blobs = s.blobs.saturating_add_signed(d.blobs);
        s.bytes = s.bytes.saturating_add_signed(d.bytes);
    }
}

/// What a write operation sees inside the batch transaction.
pub(super) struct BatchCtx {
    /// The limits every push is checked against.
    pub(super) limits: StorageLimits,
    /// What this batch changes in the totals.
    pub(super) delta: StatsDelta,
    /// Group rows read or changed by this batch's pushes. Their counters change here and are
    /// written back once per group, just before the commit ([`BatchCtx::flush_groups`]), so a
    /// batch of N pushes to one group costs one group read and one group write, not N of each.
    groups: HashMap<GroupId, GroupRow>,
    /// Pushes stored by this batch, in commit order (reported once it commits).
    pub(super) committed: Vec<CommittedPush>,
    /// Pushes of this batch answered as retries of a stored or remembered blob.
    duplicates: u64,
}

impl BatchCtx {
    fn new(limits: StorageLimits) -> Self {
        Self {
            limits,
            delta: StatsDelta::default(),
            groups: HashMap::new(),
            committed: Vec::new(),
            duplicates: 0,
        }
    }

    /// Passes a push's answer through, counting it if it is a retry's.
    pub(super) fn answered(&mut self, answer: Result<PushOutcome>) -> Result<PushOutcome> {
        if answer.as_ref().is_ok_and(|o| o.duplicate) {
            self.duplicates = self.duplicates.saturating_add(1);
        }
        answer
    }

    /// The group's row as this batch sees it (cached after the first read); `None` if the
    /// group does not exist yet.
    pub(super) fn group(
        &mut self,
        conn: &Connection,
        group: &GroupId,
    ) -> rusqlite::Result<Option<GroupRow>> {
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
    pub(super) fn flush_groups(&mut self, conn: &Connection) -> rusqlite::Result<()> {
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

    /// Keeps the group's changed row for this batch; it is written back by
    /// [`BatchCtx::flush_groups`].
    pub(super) fn update_group(&mut self, group: GroupId, mut row: GroupRow) {
        row.dirty = true;
        self.groups.insert(group, row);
    }
}

/// The group row as the writer sees it.
#[derive(Clone, Copy)]
pub(super) struct GroupRow {
    /// The row id (blobs refer to it).
    pub(super) id: i64,
    /// The group's last assigned cursor.
    pub(super) last_cursor: i64,
    /// Blobs the group holds.
    pub(super) blob_count: i64,
    /// Payload bytes the group holds.
    pub(super) byte_count: i64,
    /// Changed by this batch and not written back yet.
    pub(super) dirty: bool,
}

/// The group's row as committed, if the group exists.
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

/// One kind of write. The outer `Result` is a database failure (the whole batch rolls back);
/// the inner one is this operation's own answer (a quota rejection leaves the others alone).
pub(super) trait WriteOp: Send + 'static {
    /// The operation's answer to its caller.
    type Output: Send + 'static;
    /// Applies the operation inside the batch transaction.
    fn apply(
        &mut self,
        conn: &Connection,
        ctx: &mut BatchCtx,
    ) -> rusqlite::Result<Result<Self::Output>>;
}

/// A queued write with its caller's reply channel, type-erased for the queue.
pub(super) trait Job: Send {
    /// Applies the operation, keeping its outcome for `finish`.
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

/// The writer thread's state.
pub(super) struct Writer {
    conn: Connection,
    rx: mpsc::Receiver<Command>,
    shared: Arc<Shared>,
    limits: StorageLimits,
    max_batch: usize,
}

impl Writer {
    /// Starts the writer thread on `conn`; it stops when every sender is dropped or on
    /// [`Command::Close`].
    pub(super) fn spawn(
        conn: Connection,
        shared: Arc<Shared>,
        limits: StorageLimits,
        max_batch: usize,
        queue_capacity: usize,
    ) -> Result<mpsc::Sender<Command>> {
        let (tx, rx) = mpsc::channel(queue_capacity.max(1));
        let writer = Writer {
            conn,
            rx,
            shared,
            limits,
            max_batch: max_batch.max(1),
        };
        std::thread::Builder::new()
            .name("relay-storage-writer".into())
            .spawn(move || writer.run())?;
        Ok(tx)
    }

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
                self.shared.report(CommitReport {
                    pushes: std::mem::take(&mut ctx.committed),
                    duplicates: ctx.duplicates,
                });
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

impl SqliteStorage {
    /// Queues one write for the writer thread and waits for its committed answer.
    pub(super) async fn write<O: WriteOp>(&self, op: O) -> Result<O::Output> {
        let answer = self.enqueue(op).await?;
        answer.await.map_err(|_| self.gone())?
    }

    /// Queues one write for the writer thread (waiting for room in the queue, which keeps the
    /// call order) and returns the channel its committed answer will arrive on.
    pub(super) async fn enqueue<O: WriteOp>(
        &self,
        op: O,
    ) -> Result<oneshot::Receiver<Result<O::Output>>> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(StorageError::Closed);
        }
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Pending {
            op,
            outcome: None,
            reply,
        });
        self.send_command(Command::Write(job)).await?;
        Ok(answer)
    }

    /// Sends a control command and waits for its answer.
    pub(super) async fn control(&self, make: impl FnOnce(Reply<()>) -> Command) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        self.send_command(make(reply)).await?;
        answer.await.map_err(|_| self.gone())?
    }

    /// Puts a command in the writer's queue, waiting for room (which keeps the call order).
    /// When this returns, the command is in the queue: the writer's next look finds it.
    async fn send_command(&self, command: Command) -> Result<()> {
        self.inner
            .commands
            .send(command)
            .await
            .map_err(|_| self.gone())?;
        #[cfg(test)]
        self.inner.sent.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// The error for a writer that no longer answers: closed on purpose, or gone.
    pub(super) fn gone(&self) -> StorageError {
        if self.inner.closed.load(Ordering::Acquire) {
            StorageError::Closed
        } else {
            StorageError::WriterGone
        }
    }

    /// Holds the writer (after it committed what was queued before) until the returned pause
    /// is released: tests use this to make chosen writes land in one batch.
    #[cfg(test)]
    pub(in crate::storage) async fn pause_writer(&self) -> Result<WriterPause> {
        let (release, wait) = std::sync::mpsc::channel();
        let (paused, is_paused) = oneshot::channel();
        self.send_command(Command::Pause(paused, wait)).await?;
        is_paused.await.map_err(|_| self.gone())?;
        Ok(WriterPause {
            storage: self.clone(),
            sent_before: self.inner.sent.load(Ordering::Acquire),
            release,
        })
    }
}

/// A writer held by [`SqliteStorage::pause_writer`] (tests only). While it is held, every
/// command sent stays in the queue, and [`WriterPause::release`] lets the writer take them all
/// into its next batch (up to `max_batch`).
#[cfg(test)]
pub(in crate::storage) struct WriterPause {
    storage: SqliteStorage,
    /// Commands sent before the pause (the pause itself included).
    sent_before: usize,
    release: std::sync::mpsc::Sender<()>,
}

#[cfg(test)]
impl WriterPause {
    /// Waits (without sleeping, bounded by a generous guard) until `n` commands sent since the
    /// pause are in the writer's queue. A command counts once its send has completed, not
    /// when it merely holds a place in the queue's capacity: a sender between the two could
    /// otherwise be overtaken by the next one, or miss the batch.
    pub(in crate::storage) async fn until_queued(&self, n: usize) {
        let sent = &self.storage.inner.sent;
        tokio::time::timeout(std::time::Duration::from_secs(60), async {
            while sent
                .load(Ordering::Acquire)
                .saturating_sub(self.sent_before)
                < n
            {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("commands were queued");
    }

    /// Lets the writer go on: it takes everything queued into its next batch.
    pub(in crate::storage) fn release(self) {
        self.release.send(()).expect("writer waiting");
    }
}
