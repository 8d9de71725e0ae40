//! The database file's shape: the schema, its version and application id checks, and the
//! pragmas of the writer connection.

use rusqlite::Connection;

use super::{Result, SqliteConfig, clamp_i64};
use crate::storage::rules::{COUNTED, stats_of};
use crate::storage::{StorageError, StorageStats};

/// The schema version this build creates and reads (`PRAGMA user_version`). Version 1, 2 and 3
/// files are migrated when they are opened.
pub(super) const SCHEMA_VERSION: i64 = 4;

/// `PRAGMA application_id` of relay databases ("0kSR"), so a foreign SQLite file is refused.
pub(super) const APPLICATION_ID: i64 = 0x306b_5352;

/// Tables new in version 2 (created by the full schema and by the migration from version 1):
/// the ids of removed blobs, remembered so a retried push is never stored twice, and relay-wide
/// values (the cursor floor of deleted groups).
macro_rules! tables_new_in_v2 {
    () => {
        "
CREATE TABLE tombstones (
    group_ref  INTEGER NOT NULL,
    blob_id    BLOB    NOT NULL,
    cursor     INTEGER NOT NULL,
    stored_at  INTEGER NOT NULL,
    digest     BLOB    NOT NULL,
    forget_at  INTEGER NOT NULL,
    PRIMARY KEY (group_ref, blob_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX tombstones_by_forget_at ON tombstones (forget_at);
CREATE TABLE relay_meta (
    key   TEXT    PRIMARY KEY,
    value INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX groups_without_blobs ON groups (last_active) WHERE blob_count = 0;
"
    };
}

/// What version 3 adds (created by the full schema and by the migration from version 2): per
/// group, the highest cursor whose removal the relay may no longer remember (`forgotten_through`:
/// the cursors it never assigned to this group, and tombstones it forgot), and tombstones by
/// cursor, so a pull page can say how many of its holes are removals.
macro_rules! new_in_v3 {
    () => {
        "
ALTER TABLE groups ADD COLUMN forgotten_through INTEGER NOT NULL DEFAULT 0;
CREATE INDEX tombstones_by_cursor ON tombstones (group_ref, cursor);
"
    };
}

/// What version 4 adds (created by the full schema and by the migration from version 3): group
/// membership. The signed records of each group, in order; each device's latest enrollment; and
/// key grants (hybrid KEM envelopes the relay cannot open) by recipient. Keyed by group id, not
/// `group_ref`: membership outlives the blob state of an idle group.
macro_rules! new_in_v4 {
    () => {
        "
CREATE TABLE group_records (
    group_id BLOB    NOT NULL,
    seq      INTEGER NOT NULL,
    record   BLOB    NOT NULL,
    PRIMARY KEY (group_id, seq)
) STRICT, WITHOUT ROWID;
CREATE TABLE enrollments (
    group_id   BLOB NOT NULL,
    device     BLOB NOT NULL,
    enrollment BLOB NOT NULL,
    PRIMARY KEY (group_id, device)
) STRICT, WITHOUT ROWID;
CREATE TABLE grants (
    id        INTEGER PRIMARY KEY,
    group_id  BLOB    NOT NULL,
    recipient BLOB    NOT NULL,
    sender    BLOB    NOT NULL,
    epoch     INTEGER NOT NULL,
    envelope  BLOB    NOT NULL
) STRICT;
CREATE INDEX grants_by_recipient ON grants (group_id, recipient, id);
"
    };
}

/// The relay database schema (version 4). Public so benchmarks can measure raw SQLite inserts
/// on exactly the relay's row shape and indexes.
///
/// `blobs.digest` is the SHA-256 of the payload (NULL only in rows written by version 1, whose
/// digest is computed from the payload when needed); `payload` is the last column, so reading
/// a row's other columns never walks its overflow pages. `groups.last_active` is when the group
/// last had a session (ms since the Unix epoch), for the deletion of idle empty groups.
pub const SCHEMA: &str = concat!(
    "
CREATE TABLE groups (
    id          INTEGER PRIMARY KEY,
    group_id    BLOB    NOT NULL UNIQUE,
    last_cursor INTEGER NOT NULL,
    blob_count  INTEGER NOT NULL,
    byte_count  INTEGER NOT NULL,
    last_active INTEGER NOT NULL DEFAULT 0
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
    digest     BLOB,
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
",
    tables_new_in_v2!(),
    new_in_v3!(),
    new_in_v4!()
);

/// From version 1 to 2: the digest column (after the payload in migrated files: rows of
/// version 1 keep a NULL digest), the groups' activity time (set to the migration time, so no
/// group counts as idle before it had the chance to be seen), and the new tables.
const MIGRATE_1_TO_2: &str = concat!(
    "
ALTER TABLE groups ADD COLUMN last_active INTEGER NOT NULL DEFAULT 0;
ALTER TABLE blobs ADD COLUMN digest BLOB;
",
    tables_new_in_v2!()
);

/// What opening found in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SchemaState {
    /// An empty file: the schema must be created.
    Empty,
    /// A relay database of an older version that this build migrates.
    Old(i64),
    /// A relay database of this version.
    Current,
}

/// How hard SQLite works to make a commit durable (`PRAGMA synchronous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// `synchronous=NORMAL`: a commit survives a crash of the relay process (WAL default).
    #[default]
    Normal,
    /// `synchronous=FULL`: a commit also survives power loss (one fsync per commit).
    Full,
}

impl Synchronous {
    pub(super) fn pragma_value(self) -> &'static str {
        match self {
            Self::Normal => "NORMAL",
            Self::Full => "FULL",
        }
    }
}

/// Puts the writer connection in WAL mode and applies the configured pragmas.
pub(super) fn configure_writer(conn: &Connection, config: &SqliteConfig) -> Result<()> {
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

/// Checks the file's schema: empty, an older relay version (to migrate), or current.
pub(super) fn check_schema(conn: &Connection) -> Result<SchemaState> {
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
            Ok(SchemaState::Empty)
        }
        1..=SCHEMA_VERSION if app_id != APPLICATION_ID => Err(StorageError::Corrupt {
            what: format!("application_id {app_id:#x} is not a relay database"),
        }),
        SCHEMA_VERSION => Ok(SchemaState::Current),
        old @ 1..SCHEMA_VERSION => Ok(SchemaState::Old(old)),
        found => Err(StorageError::UnsupportedSchema {
            found,
            supported: SCHEMA_VERSION,
        }),
    }
}

/// Creates the tables and indexes and stamps the file with the relay's id and version.
pub(super) fn create_schema(conn: &Connection) -> Result<()> {
    let tx = conn.unchecked_transaction()?;
    tx.execute_batch(SCHEMA)?;
    tx.pragma_update(None, "application_id", APPLICATION_ID)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(())
}

/// Brings a file of version `from` to the current version in one transaction (all or
/// nothing: a failed migration leaves the old version in place). `now_ms` becomes the activity
/// time of the existing groups.
pub(super) fn migrate(conn: &Connection, from: i64, now_ms: u64) -> Result<()> {
    let tx = conn.unchecked_transaction()?;
    if from <= 1 {
        tx.execute_batch(MIGRATE_1_TO_2)?;
        tx.execute("UPDATE groups SET last_active = ?1", [clamp_i64(now_ms)])?;
    }
    if from <= 2 {
        tx.execute_batch(new_in_v3!())?;
        // Older versions did not record which tombstones they forgot: every hole up to now
        // counts as a removal.
        tx.execute("UPDATE groups SET forgotten_through = last_cursor", [])?;
    }
    if from <= 3 {
        tx.execute_batch(new_in_v4!())?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    tracing::info!(from, to = SCHEMA_VERSION, "database schema migrated");
    Ok(())
}

/// The store id of this database file: drawn at random the first time a file is opened by a
/// build that knows it (kept in `relay_meta`), and the same for as long as the file lives, so a
/// copy restored from a backup carries it too (and a device can tell a log that went back in
/// time from a log that was started afresh).
pub(super) fn store_id(conn: &Connection) -> Result<u64> {
    let mut fresh = [0u8; 8];
    getrandom::fill(&mut fresh).map_err(|e| StorageError::Corrupt {
        what: format!("no randomness for the store id: {e}"),
    })?;
    // Stored as SQLite's signed integer: the same 64 bits.
    let fresh = i64::from_be_bytes(fresh);
    conn.execute(
        "INSERT OR IGNORE INTO relay_meta (key, value) VALUES ('store_id', ?1)",
        [fresh],
    )?;
    let id: i64 = conn.query_row(
        "SELECT value FROM relay_meta WHERE key = 'store_id'",
        [],
        |r| r.get(0),
    )?;
    Ok(u64::from_be_bytes(id.to_be_bytes()))
}

/// Totals over all groups, summed from the per-group counters (once, when the file opens).
pub(super) fn load_stats(conn: &Connection) -> Result<StorageStats> {
    let totals: [i64; 3] = conn.query_row(
        "SELECT COUNT(*), COALESCE(SUM(blob_count), 0), COALESCE(SUM(byte_count), 0) FROM groups",
        [],
        |r| Ok([r.get(0)?, r.get(1)?, r.get(2)?]),
    )?;
    stats_of(totals, COUNTED)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::readers::ReaderPool;
    use super::*;
    use crate::storage::{SqliteConfig, Synchronous};

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
            assert_eq!(check_schema(&conn).expect("empty file"), SchemaState::Empty);
            configure_writer(&conn, &config).expect("configure");
            create_schema(&conn).expect("schema");
            assert_eq!(
                check_schema(&conn).expect("relay file"),
                SchemaState::Current
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

            let pool = ReaderPool::open_all(path.clone(), &config).expect("readers");
            let reader = pool.take().expect("the readers are open from the start");
            assert_eq!(pragma_i64(&reader, "mmap_size"), 1 << 20);
            assert_eq!(pragma_i64(&reader, "busy_timeout"), 1234);
            let write = reader.execute("DELETE FROM blobs", []);
            assert!(write.is_err(), "reader connections are read-only");
        }
    }
}
