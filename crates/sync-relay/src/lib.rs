//! The 0k-sync relay: stores sealed blobs it cannot read, orders them with per-group cursors and
//! notifies the group's other devices.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod storage;

pub use storage::{
    DB_FILE_NAME, InviteLookup, PullEntry, PullPage, PushOutcome, PushRequest, QuotaKind,
    SqliteConfig, SqliteStorage, Storage, StorageError, StorageLimits, StorageStats, Synchronous,
    WriterMetrics,
};
