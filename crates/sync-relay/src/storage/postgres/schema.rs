//! The PostgreSQL schema, versioned in `relay_meta` and migrated at start under an advisory
//! lock, so several relays starting at once apply each migration exactly once.

use deadpool_postgres::Client;

use super::{Result, pg_error};
use crate::storage::StorageError;

/// The schema version this build creates and reads.
pub(super) const SCHEMA_VERSION: i64 = 1;

/// The advisory lock migrations hold ("0kSR").
const MIGRATION_LOCK: i64 = 0x306b_5352;

/// Version 1: the same tables as the SQLite store, keyed by group id (no row ids), plus the
/// sharded counters that keep totals without a hot row. Payloads are stored out of line without
/// compression (ciphertext does not compress).
const V1: &str = "
CREATE TABLE groups (
    group_id          bytea  PRIMARY KEY,
    last_cursor       bigint NOT NULL,
    blob_count        bigint NOT NULL,
    byte_count        bigint NOT NULL,
    last_active       bigint NOT NULL,
    forgotten_through bigint NOT NULL
);
CREATE INDEX groups_without_blobs ON groups (last_active) WHERE blob_count = 0;
CREATE TABLE blobs (
    group_id   bytea  NOT NULL,
    cursor     bigint NOT NULL,
    blob_id    bytea  NOT NULL,
    sender     bytea  NOT NULL,
    size       bigint NOT NULL,
    stored_at  bigint NOT NULL,
    expires_at bigint NOT NULL,
    digest     bytea  NOT NULL,
    payload    bytea  NOT NULL,
    PRIMARY KEY (group_id, cursor)
);
ALTER TABLE blobs ALTER COLUMN payload SET STORAGE EXTERNAL;
CREATE UNIQUE INDEX blobs_by_blob_id ON blobs (group_id, blob_id);
CREATE INDEX blobs_by_expiry ON blobs (expires_at);
CREATE TABLE tombstones (
    group_id  bytea  NOT NULL,
    blob_id   bytea  NOT NULL,
    cursor    bigint NOT NULL,
    stored_at bigint NOT NULL,
    digest    bytea  NOT NULL,
    forget_at bigint NOT NULL,
    PRIMARY KEY (group_id, blob_id)
);
CREATE INDEX tombstones_by_forget_at ON tombstones (forget_at);
CREATE INDEX tombstones_by_cursor ON tombstones (group_id, cursor);
CREATE TABLE invites (
    lookup_id  bytea  PRIMARY KEY,
    sealed     bytea  NOT NULL,
    expires_at bigint NOT NULL,
    attempts   bigint NOT NULL
);
CREATE INDEX invites_by_expiry ON invites (expires_at);
CREATE TABLE counters (
    shard  integer PRIMARY KEY,
    groups bigint  NOT NULL,
    blobs  bigint  NOT NULL,
    bytes  bigint  NOT NULL
);
CREATE TABLE group_records (
    group_id bytea  NOT NULL,
    seq      bigint NOT NULL,
    record   bytea  NOT NULL,
    PRIMARY KEY (group_id, seq)
);
CREATE TABLE enrollments (
    group_id   bytea NOT NULL,
    device     bytea NOT NULL,
    enrollment bytea NOT NULL,
    PRIMARY KEY (group_id, device)
);
CREATE TABLE grants (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    group_id  bytea  NOT NULL,
    recipient bytea  NOT NULL,
    sender    bytea  NOT NULL,
    epoch     bigint NOT NULL,
    envelope  bytea  NOT NULL
);
CREATE INDEX grants_by_recipient ON grants (group_id, recipient, id);
";

/// Migrations by the version they create: `MIGRATIONS[n - 1]` brings version n − 1 to n.
const MIGRATIONS: &[&str] = &[V1];

/// Creates or migrates the schema (one transaction under the migration lock) and returns the
/// store id, drawn at random when the database is new.
pub(super) async fn prepare(client: &mut Client) -> Result<u64> {
    let tx = client.transaction().await.map_err(pg_error)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg_error)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS relay_meta (key text PRIMARY KEY, value bigint NOT NULL)",
    )
    .await
    .map_err(pg_error)?;
    let found: i64 = tx
        .query_opt(
            "SELECT value FROM relay_meta WHERE key = 'schema_version'",
            &[],
        )
        .await
        .map_err(pg_error)?
        .map_or(0, |r| r.get(0));
    if found == 0 {
        // A database without our version must not hold our tables (a foreign schema).
        let foreign: bool = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM information_schema.tables
                 WHERE table_schema = current_schema() AND table_name = 'blobs')",
                &[],
            )
            .await
            .map_err(pg_error)?
            .get(0);
        if foreign {
            return Err(StorageError::Corrupt {
                what: "the database holds a `blobs` table but no relay schema version".into(),
            });
        }
    }
    if !(0..=SCHEMA_VERSION).contains(&found) {
        return Err(StorageError::UnsupportedSchema {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (i, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(found).unwrap_or(0))
    {
        tx.batch_execute(sql).await.map_err(pg_error)?;
        tracing::info!(to = i + 1, "postgres schema migrated");
    }
    tx.execute(
        "INSERT INTO relay_meta (key, value) VALUES ('schema_version', $1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        &[&SCHEMA_VERSION],
    )
    .await
    .map_err(pg_error)?;
    let mut fresh = [0u8; 8];
    getrandom::fill(&mut fresh).map_err(|e| StorageError::Corrupt {
        what: format!("no randomness for the store id: {e}"),
    })?;
    tx.execute(
        "INSERT INTO relay_meta (key, value) VALUES ('store_id', $1) ON CONFLICT (key) DO NOTHING",
        &[&i64::from_be_bytes(fresh)],
    )
    .await
    .map_err(pg_error)?;
    let id: i64 = tx
        .query_one("SELECT value FROM relay_meta WHERE key = 'store_id'", &[])
        .await
        .map_err(pg_error)?
        .get(0);
    tx.commit().await.map_err(pg_error)?;
    Ok(u64::from_be_bytes(id.to_be_bytes()))
}
