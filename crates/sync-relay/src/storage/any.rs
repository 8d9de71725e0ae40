//! The storage a relay runs on, chosen by its configuration: the embedded SQLite file or a
//! PostgreSQL database shared with other relays.

use std::time::Duration;

use sync_types::{BlobId, Cursor, DeviceId, GroupId};

use super::{
    CommitHook, InviteLookup, MembershipRead, MembershipWrite, PostgresStorage, PullPage,
    PushOutcome, PushReply, PushRequest, SqliteStorage, Storage, StorageError, StorageStats,
    WriterMetrics,
};

/// A relay's storage: one of the backends, behind the same [`Storage`] trait.
#[derive(Clone, Debug)]
pub enum RelayStorage {
    /// One SQLite file in the data dir (the embedded default).
    Sqlite(SqliteStorage),
    /// A PostgreSQL database, possibly shared by several relays.
    Postgres(PostgresStorage),
}

impl From<SqliteStorage> for RelayStorage {
    fn from(s: SqliteStorage) -> Self {
        Self::Sqlite(s)
    }
}

impl From<PostgresStorage> for RelayStorage {
    fn from(s: PostgresStorage) -> Self {
        Self::Postgres(s)
    }
}

/// Calls the same method on whichever backend this is.
macro_rules! each {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            RelayStorage::Sqlite($s) => $call,
            RelayStorage::Postgres($s) => $call,
        }
    };
}

impl RelayStorage {
    /// Sets the hook told about every committed batch of pushes.
    pub fn on_commit(&self, hook: CommitHook) {
        each!(self, s => s.on_commit(hook));
    }

    /// Commit counters of the writer.
    pub fn writer_metrics(&self) -> WriterMetrics {
        each!(self, s => s.writer_metrics())
    }

    /// Recomputes the totals from the stored rows and checks them against the counters.
    pub async fn audit(&self) -> Result<StorageStats, StorageError> {
        each!(self, s => s.audit().await)
    }

    /// The backend's name, as the configuration spells it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }
}

impl Storage for RelayStorage {
    fn store_id(&self) -> u64 {
        each!(self, s => s.store_id())
    }

    async fn push(&self, req: PushRequest) -> Result<PushOutcome, StorageError> {
        each!(self, s => s.push(req).await)
    }

    async fn push_queued(&self, req: PushRequest) -> Result<PushReply, StorageError> {
        each!(self, s => s.push_queued(req).await)
    }

    async fn pull(
        &self,
        group: GroupId,
        after: Cursor,
        max_count: u32,
        max_bytes: u64,
    ) -> Result<PullPage, StorageError> {
        each!(self, s => s.pull(group, after, max_count, max_bytes).await)
    }

    async fn max_cursor(&self, group: GroupId) -> Result<Cursor, StorageError> {
        each!(self, s => s.max_cursor(group).await)
    }

    async fn delete(
        &self,
        group: GroupId,
        blob_id: BlobId,
        now_ms: u64,
    ) -> Result<bool, StorageError> {
        each!(self, s => s.delete(group, blob_id, now_ms).await)
    }

    async fn cleanup_expired(&self, now_ms: u64, batch: u32) -> Result<u64, StorageError> {
        each!(self, s => s.cleanup_expired(now_ms, batch).await)
    }

    async fn forget_removed_ids(&self, now_ms: u64, batch: u32) -> Result<u64, StorageError> {
        each!(self, s => s.forget_removed_ids(now_ms, batch).await)
    }

    async fn drop_idle_groups(
        &self,
        seen: Vec<GroupId>,
        now_ms: u64,
        idle_for: Duration,
        batch: u32,
    ) -> Result<u64, StorageError> {
        each!(self, s => s.drop_idle_groups(seen, now_ms, idle_for, batch).await)
    }

    async fn stats(&self) -> Result<StorageStats, StorageError> {
        each!(self, s => s.stats().await)
    }

    async fn invite_put(
        &self,
        lookup_id: Vec<u8>,
        sealed: Vec<u8>,
        expires_ms: u64,
    ) -> Result<(), StorageError> {
        each!(self, s => s.invite_put(lookup_id, sealed, expires_ms).await)
    }

    async fn invite_take(
        &self,
        lookup_id: Vec<u8>,
        now_ms: u64,
        max_attempts: u32,
    ) -> Result<InviteLookup, StorageError> {
        each!(self, s => s.invite_take(lookup_id, now_ms, max_attempts).await)
    }

    async fn membership(
        &self,
        group: GroupId,
        device: DeviceId,
        after_seq: u64,
    ) -> Result<MembershipRead, StorageError> {
        each!(self, s => s.membership(group, device, after_seq).await)
    }

    async fn membership_write(
        &self,
        group: GroupId,
        write: MembershipWrite,
    ) -> Result<(), StorageError> {
        each!(self, s => s.membership_write(group, write).await)
    }

    async fn checkpoint(&self) -> Result<(), StorageError> {
        each!(self, s => s.checkpoint().await)
    }

    async fn close(&self) -> Result<(), StorageError> {
        each!(self, s => s.close().await)
    }
}
