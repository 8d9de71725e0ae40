//! The 0k-sync relay: stores sealed blobs it cannot read, orders them with per-group cursors and
//! notifies the group's other devices.
//!
//! What it is: a library with one entry point, [`start`], that runs an iroh (QUIC) endpoint
//! speaking the `sync-types` protocol (ALPN `/0k-sync/1`), SQLite storage with group commit, an
//! HTTP server for `/health`, `/metrics` and `/.well-known/0k-sync`, and periodic cleanup — plus
//! the `sync-relay` binary around it. With `content_store` on (the default) the same endpoint
//! also speaks iroh-blobs (ALPN `/iroh-bytes/4`) for large sealed content, reserved with
//! `ContentRef` and kept in `<data_dir>/content/`. What it is not: it never sees plaintext or keys (payloads
//! are ciphertext sealed on devices), and by default it contacts nothing on the internet (no
//! iroh relay servers, no discovery; `public_discovery` opts in).
//!
//! Where it sits: devices (`sync-client`) dial it; it depends on `sync-types` (wire format) and
//! `sync-crypto` (Hello verification) only.
//!
//! ```no_run
//! # async fn run() -> Result<(), sync_relay::RelayError> {
//! let relay = sync_relay::start(sync_relay::RelayConfig::default()).await?;
//! println!("{} at {:?}", relay.endpoint_id(), relay.direct_addrs());
//! relay.shutdown().await?;
//! # Ok(()) }
//! ```
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod admission;
mod config;
mod content;
mod http;
mod hub;
mod identity;
mod membership;
mod metrics;
mod outbox;
mod server;
mod session;
mod signals;
mod status;
mod storage;

pub use admission::{OperatorKeyError, Refusal, Refusals, create_operator_key, load_operator_key};
pub use config::{
    AdmissionMode, ConfigError, ConfigOverrides, DATA_DIR_NAME, Durability, LogFormat,
    MAX_BLOB_BYTES_LIMIT, PostgresTlsMode, RelayConfig, StorageBackend, default_data_dir,
    format_duration, mask_password, parse_duration,
};
pub use content::{CONTENT_DIR_NAME, INDEX_FILE_NAME as CONTENT_INDEX_FILE_NAME};
pub use identity::{IdentityError, KEY_FILE_NAME, load_or_create_secret_key};
pub use metrics::{
    ByReason, Counter, Gauge, Histogram, LATENCY_BUCKETS, METRIC_PREFIX, Metrics, Reason,
    Rejections,
};
#[cfg(feature = "test-util")]
pub use server::MemorySession;
pub use server::{RelayError, RelayHandle, start};
pub use signals::StopSignals;
pub use storage::{
    CommitHook, CommitReport, CommittedPush, DB_FILE_NAME, InviteLookup, PostgresConfig,
    PostgresStorage, PostgresTls, PullEntry, PullPage, PushOutcome, PushReply, PushRequest,
    QuotaKind, RelayStorage, RemoteEvent, SCHEMA, SqliteConfig, SqliteStorage, Storage,
    StorageError, StorageLimits, StorageStats, Synchronous, WriterMetrics,
};
