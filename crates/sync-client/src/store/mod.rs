//! The device's local state: SQLite in the data directory (file mode 0600).
//!
//! It holds the device key, the groups this device belongs to (descriptor and secret), the
//! resume cursor per group and relay, the outbox of pushes the relay has not acknowledged, and
//! the ids of the blobs delivered to the app (with their cursors, for as long as a blob can live
//! on a relay), so a relay that serves one again under another cursor is caught, and the sealed
//! pushes the relay acknowledged, for as long as they may live on it, so a relay whose log went
//! back in time gets them again.
//! A push is written here before it is reported as queued and removed only when the relay
//! acknowledges it (or refuses it for good), so a crash or restart re-sends it with the same
//! blob id.
//!
//! Secrets (the device key, the group secrets) are stored in the clear, protected only by the
//! file's owner-only mode; the store never logs them.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, params};
use sync_core::GroupMaterial;
use sync_crypto::{DeviceKey, GroupDescriptor, GroupSecret};
use sync_types::{BlobId, Cursor, DeviceId, GroupId, RelayId};
use zeroize::Zeroizing;

use crate::error::StoreError;

/// File name of the database inside the data directory.
pub const STORE_FILE_NAME: &str = "client.sqlite3";

const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS groups (
    group_id   BLOB PRIMARY KEY,
    descriptor BLOB NOT NULL,
    secret     BLOB NOT NULL,
    added_seq  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS cursors (
    group_id BLOB NOT NULL,
    relay_id BLOB NOT NULL,
    resume   INTEGER NOT NULL,
    PRIMARY KEY (group_id, relay_id)
);
CREATE TABLE IF NOT EXISTS outbox (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    group_id   BLOB NOT NULL,
    blob_id    BLOB NOT NULL UNIQUE,
    payload    BLOB NOT NULL,
    ttl_secs   INTEGER NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS devices (
    group_id     BLOB NOT NULL,
    device_id    BLOB NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    blobs        INTEGER NOT NULL,
    PRIMARY KEY (group_id, device_id)
);
CREATE TABLE IF NOT EXISTS delivered (
    group_id  BLOB    NOT NULL,
    blob_id   BLOB    NOT NULL,
    cursor    INTEGER NOT NULL,
    forget_ms INTEGER NOT NULL,
    PRIMARY KEY (group_id, blob_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS delivered_by_forget ON delivered (forget_ms);
CREATE TABLE IF NOT EXISTS sent (
    group_id   BLOB    NOT NULL,
    blob_id    BLOB    NOT NULL,
    cursor     INTEGER NOT NULL,
    payload    BLOB    NOT NULL,
    ttl_secs   INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    UNIQUE (group_id, blob_id)
);
CREATE INDEX IF NOT EXISTS sent_by_cursor ON sent (group_id, cursor);
CREATE INDEX IF NOT EXISTS sent_by_expiry ON sent (expires_ms);
CREATE TABLE IF NOT EXISTS own_seq (
    group_id BLOB PRIMARY KEY,
    high     INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sender_seqs (
    group_id  BLOB    NOT NULL,
    device_id BLOB    NOT NULL,
    high      INTEGER NOT NULL,
    gaps      BLOB    NOT NULL,
    PRIMARY KEY (group_id, device_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS relay_logs (
    group_id BLOB    NOT NULL,
    relay_id BLOB    NOT NULL,
    store_id INTEGER NOT NULL,
    PRIMARY KEY (group_id, relay_id)
);
CREATE TABLE IF NOT EXISTS group_records (
    group_id BLOB    NOT NULL,
    seq      INTEGER NOT NULL,
    record   BLOB    NOT NULL,
    PRIMARY KEY (group_id, seq)
);
CREATE TABLE IF NOT EXISTS epoch_secrets (
    group_id BLOB    NOT NULL,
    epoch    INTEGER NOT NULL,
    secret   BLOB    NOT NULL,
    PRIMARY KEY (group_id, epoch)
);
CREATE TABLE IF NOT EXISTS settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
";

/// How hard SQLite works to make a commit durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum StoreSync {
    /// `synchronous=NORMAL` in WAL mode: a commit survives a crash of the process (the default).
    #[default]
    Normal,
    /// `synchronous=FULL`: a commit also survives power loss (an fsync per commit).
    Full,
}

/// Where the store lives.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreLocation {
    /// A data directory (created with mode 0700 if missing); the database is
    /// [`STORE_FILE_NAME`] inside it, mode 0600.
    Dir(PathBuf),
    /// In memory only: nothing survives the client (tests, ephemeral devices).
    InMemory,
}

/// A push waiting in the outbox, as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredPush {
    /// The blob id, the same on every retry.
    pub blob_id: BlobId,
    /// The sealed payload.
    pub payload: Bytes,
    /// Requested retention in seconds (0 = relay default).
    pub ttl_secs: u32,
    /// When it was queued, milliseconds since the Unix epoch.
    pub created_ms: u64,
}

impl std::fmt::Debug for StoredPush {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredPush")
            .field("blob_id", &self.blob_id)
            .field("payload_len", &self.payload.len())
            .field("ttl_secs", &self.ttl_secs)
            .field("created_ms", &self.created_ms)
            .finish()
    }
}

/// A device seen in a group: a sender of pulled blobs, or this device once the relay acknowledged
/// one of its pushes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenDevice {
    /// The device.
    pub device_id: DeviceId,
    /// Its latest activity this device knows of, milliseconds since the Unix epoch (the relay's
    /// commit time of its latest pulled blob, or the acknowledgement time of an own push).
    pub last_seen_ms: u64,
    /// Blobs of it this device pulled or had acknowledged.
    pub blobs: u64,
}

/// The local state store (one SQLite connection; not shared between processes at once).
pub struct Store {
    conn: Connection,
    path: Option<PathBuf>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

fn blob(bytes: &[u8]) -> &[u8] {
    bytes
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn array32(v: &[u8], what: &'static str) -> Result<[u8; 32], StoreError> {
    <[u8; 32]>::try_from(v).map_err(|_| StoreError::Corrupt { what })
}

/// Stores the resume cursor of `group` on `relay` (on the store's connection or inside one of
/// its transactions).
fn write_cursor(
    conn: &Connection,
    group: &GroupId,
    relay: &RelayId,
    cursor: Cursor,
) -> Result<(), StoreError> {
    write_relay_value(
        conn,
        "INSERT INTO cursors (group_id, relay_id, resume) VALUES (?1, ?2, ?3)
         ON CONFLICT(group_id, relay_id) DO UPDATE SET resume = excluded.resume",
        group,
        relay,
        to_i64(cursor.get()),
    )
}

/// Runs `sql`, which stores `value` (`?3`) for `group` (`?1`) on `relay` (`?2`).
fn write_relay_value(
    conn: &Connection,
    sql: &str,
    group: &GroupId,
    relay: &RelayId,
    value: i64,
) -> Result<(), StoreError> {
    conn.execute(
        sql,
        params![blob(group.as_bytes()), blob(relay.as_bytes()), value],
    )?;
    Ok(())
}

impl Store {
    /// Opens (or creates) the store at `location`.
    pub fn open(location: &StoreLocation, sync: StoreSync) -> Result<Self, StoreError> {
        match location {
            StoreLocation::Dir(dir) => Self::open_dir(dir, sync),
            StoreLocation::InMemory => Self::open_in_memory(),
        }
    }

    /// Opens (or creates) the store in the data directory `dir`.
    pub fn open_dir(dir: &Path, sync: StoreSync) -> Result<Self, StoreError> {
        if !dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        let path = dir.join(STORE_FILE_NAME);
        // Create the file owner-only before SQLite touches it; SQLite gives its -wal and -shm
        // files the same mode as the database file.
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
        let conn = Connection::open(&path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(
            None,
            "synchronous",
            match sync {
                StoreSync::Normal => "NORMAL",
                StoreSync::Full => "FULL",
            },
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let store = Self {
            conn,
            path: Some(path),
        };
        store.init()?;
        Ok(store)
    }

    /// A store that lives in memory only.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let store = Self {
            conn: Connection::open_in_memory()?,
            path: None,
        };
        store.init()?;
        Ok(store)
    }

    /// The database file, if the store is on disk.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn init(&self) -> Result<(), StoreError> {
        self.conn.execute_batch(SCHEMA)?;
        let version: Option<Vec<u8>> = self.meta("schema_version")?;
        match version {
            None => self.set_meta("schema_version", &SCHEMA_VERSION.to_be_bytes())?,
            Some(v) if v.as_slice() == SCHEMA_VERSION.to_be_bytes() => {}
            Some(_) => {
                return Err(StoreError::Corrupt {
                    what: "schema version",
                });
            }
        }
        Ok(())
    }

    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    fn set_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, blob(value)],
        )?;
        Ok(())
    }

    /// The stored device key, if the device was initialised.
    pub fn device_key(&self) -> Result<Option<DeviceKey>, StoreError> {
        let Some(bytes) = self.meta("device_secret")?.map(Zeroizing::new) else {
            return Ok(None);
        };
        let seed = Zeroizing::new(array32(&bytes, "device key")?);
        Ok(Some(DeviceKey::from_secret_bytes(*seed)))
    }

    /// Stores `key` as this device's identity (replacing any previous one).
    pub fn set_device_key(&self, key: &DeviceKey) -> Result<(), StoreError> {
        let seed = Zeroizing::new(key.secret_bytes());
        self.set_meta("device_secret", seed.as_slice())
    }

    /// The stored device key, or a new one from the OS random generator (stored at once).
    pub fn device_key_or_create(&self) -> Result<DeviceKey, StoreError> {
        if let Some(key) = self.device_key()? {
            return Ok(key);
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut_slice()).map_err(|_| StoreError::Random)?;
        let key = DeviceKey::from_secret_bytes(*seed);
        self.set_device_key(&key)?;
        Ok(key)
    }

    /// The stored device name, if set.
    pub fn device_name(&self) -> Result<Option<String>, StoreError> {
        match self.meta("device_name")? {
            None => Ok(None),
            Some(v) => String::from_utf8(v)
                .map(Some)
                .map_err(|_| StoreError::Corrupt {
                    what: "device name",
                }),
        }
    }

    /// Stores the device name.
    pub fn set_device_name(&self, name: &str) -> Result<(), StoreError> {
        self.set_meta("device_name", name.as_bytes())
    }

    /// An application setting (free-form text, e.g. the relay a CLI talks to); `None` if unset.
    pub fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Stores an application setting (replacing the previous value).
    pub fn set_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO settings (key, value) VALUES (?1, ?2)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    /// Records activity of devices in `group` in one transaction: each `(device, at_ms, blobs)`
    /// raises the device's last activity to `at_ms` (never lowers it) and adds `blobs`.
    pub fn note_devices(
        &mut self,
        group: &GroupId,
        seen: &[(DeviceId, u64, u64)],
    ) -> Result<(), StoreError> {
        if seen.is_empty() {
            return Ok(());
        }
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO devices (group_id, device_id, last_seen_ms, blobs)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(group_id, device_id) DO UPDATE SET
                     last_seen_ms = MAX(last_seen_ms, excluded.last_seen_ms),
                     blobs = blobs + excluded.blobs",
            )?;
            for (device, at_ms, blobs) in seen {
                stmt.execute(params![
                    blob(group.as_bytes()),
                    blob(device.as_bytes()),
                    to_i64(*at_ms),
                    to_i64(*blobs)
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The devices seen in `group`, most recently active first.
    pub fn devices(&self, group: &GroupId) -> Result<Vec<SeenDevice>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT device_id, last_seen_ms, blobs FROM devices WHERE group_id = ?1
             ORDER BY last_seen_ms DESC, device_id",
        )?;
        let rows = stmt.query_map([blob(group.as_bytes())], |r| {
            <(Vec<u8>, i64, i64)>::try_from(r)
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, seen, blobs) = row?;
            out.push(SeenDevice {
                device_id: DeviceId::from_bytes(array32(&id, "device id")?),
                last_seen_ms: to_u64(seen),
                blobs: to_u64(blobs),
            });
        }
        Ok(out)
    }

    /// Stores a group (replacing the stored material of the same group) and returns its id.
    pub fn save_group(&self, group: &GroupMaterial) -> Result<GroupId, StoreError> {
        let group_id = group.keys().group_id();
        let descriptor = rmp_serde::to_vec(&group.descriptor).map_err(|_| StoreError::Corrupt {
            what: "group descriptor",
        })?;
        self.conn.execute(
            "INSERT INTO groups (group_id, descriptor, secret, added_seq)
             VALUES (?1, ?2, ?3, (SELECT COALESCE(MAX(added_seq), 0) + 1 FROM groups))
             ON CONFLICT(group_id) DO UPDATE SET descriptor = excluded.descriptor,
                                                 secret = excluded.secret",
            params![
                blob(group_id.as_bytes()),
                descriptor,
                blob(group.secret.expose_bytes())
            ],
        )?;
        Ok(group_id)
    }

    /// Ids of the stored groups, oldest first.
    pub fn group_ids(&self) -> Result<Vec<GroupId>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT group_id FROM groups ORDER BY added_seq")?;
        let rows = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(GroupId::from_bytes(array32(&row?, "group id")?));
        }
        Ok(out)
    }

    /// The stored group `group_id`.
    pub fn group(&self, group_id: &GroupId) -> Result<Option<GroupMaterial>, StoreError> {
        let row: Option<(Vec<u8>, Vec<u8>)> = self
            .conn
            .query_row(
                "SELECT descriptor, secret FROM groups WHERE group_id = ?1",
                [blob(group_id.as_bytes())],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((descriptor, secret)) = row else {
            return Ok(None);
        };
        let secret = Zeroizing::new(secret);
        let descriptor: GroupDescriptor =
            rmp_serde::from_slice(&descriptor).map_err(|_| StoreError::Corrupt {
                what: "group descriptor",
            })?;
        let secret = GroupSecret::from_bytes(*Zeroizing::new(array32(&secret, "group secret")?));
        let group = GroupMaterial { descriptor, secret };
        if group.keys().group_id() != *group_id {
            return Err(StoreError::Corrupt {
                what: "group secret",
            });
        }
        Ok(Some(group))
    }

    /// The only stored group, or the one named; errors if none, or several and none named.
    pub fn select_group(&self, group_id: Option<&GroupId>) -> Result<GroupMaterial, StoreError> {
        let id = match group_id {
            Some(id) => *id,
            None => {
                let ids = self.group_ids()?;
                match ids.as_slice() {
                    [] => return Err(StoreError::NoGroup),
                    [one] => *one,
                    _ => return Err(StoreError::AmbiguousGroup),
                }
            }
        };
        self.group(&id)?.ok_or(StoreError::NoGroup)
    }

    /// The resume cursor of `group` on relay `relay_id` (0 if never stored).
    pub fn cursor(&self, group: &GroupId, relay_id: &RelayId) -> Result<Cursor, StoreError> {
        let v = self.relay_value(
            "SELECT resume FROM cursors WHERE group_id = ?1 AND relay_id = ?2",
            group,
            relay_id,
        )?;
        Ok(Cursor::new(v.map_or(0, to_u64)))
    }

    /// The integer `sql` selects for `group` (`?1`) on relay `relay_id` (`?2`), if a row
    /// holds one.
    fn relay_value(
        &self,
        sql: &str,
        group: &GroupId,
        relay_id: &RelayId,
    ) -> Result<Option<i64>, StoreError> {
        let params = params![blob(group.as_bytes()), blob(relay_id.as_bytes())];
        Ok(self.conn.query_row(sql, params, |r| r.get(0)).optional()?)
    }

    /// Stores the resume cursor of `group` on relay `relay_id`.
    pub fn set_cursor(
        &self,
        group: &GroupId,
        relay_id: &RelayId,
        cursor: Cursor,
    ) -> Result<(), StoreError> {
        write_cursor(&self.conn, group, relay_id, cursor)
    }

    /// How many pushes of `group` wait in the outbox.
    pub fn outbox_len(&self, group: &GroupId) -> Result<usize, StoreError> {
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM outbox WHERE group_id = ?1",
            [blob(group.as_bytes())],
            |r| r.get(0),
        )?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// The outbox of `group`, in the order the pushes were queued.
    pub fn outbox(&self, group: &GroupId) -> Result<Vec<StoredPush>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT blob_id, payload, ttl_secs, created_ms FROM outbox
             WHERE group_id = ?1 ORDER BY seq",
        )?;
        let rows = stmt.query_map([blob(group.as_bytes())], |r| {
            <(Vec<u8>, Vec<u8>, i64, i64)>::try_from(r)
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, payload, ttl, created) = row?;
            let id = <[u8; 16]>::try_from(id.as_slice())
                .map_err(|_| StoreError::Corrupt { what: "blob id" })?;
            out.push(StoredPush {
                blob_id: BlobId::from_bytes(id),
                payload: Bytes::from(payload),
                ttl_secs: u32::try_from(ttl).unwrap_or(0),
                created_ms: to_u64(created),
            });
        }
        Ok(out)
    }

    /// The highest sequence number this device sealed a stored push with in `group` (0 if
    /// none): the next push is sealed with one more.
    pub fn own_seq(&self, group: &GroupId) -> Result<u64, StoreError> {
        let v: Option<i64> = self
            .conn
            .query_row(
                "SELECT high FROM own_seq WHERE group_id = ?1",
                [blob(group.as_bytes())],
                |r| r.get(0),
            )
            .optional()?;
        Ok(v.map_or(0, to_u64))
    }

    /// Appends pushes to the outbox of `group` in one transaction (all or nothing), and with
    /// `seq_high`, raises the highest sequence number sealed in `group` to it in the same
    /// transaction.
    pub fn insert_pushes(
        &mut self,
        group: &GroupId,
        pushes: &[StoredPush],
        seq_high: Option<u64>,
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        if let Some(high) = seq_high {
            tx.execute(
                "INSERT INTO own_seq (group_id, high) VALUES (?1, ?2)
                 ON CONFLICT(group_id) DO UPDATE SET high = MAX(high, excluded.high)",
                params![blob(group.as_bytes()), to_i64(high)],
            )?;
        }
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO outbox (group_id, blob_id, payload, ttl_secs, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for p in pushes {
                stmt.execute(params![
                    blob(group.as_bytes()),
                    blob(p.blob_id.as_bytes()),
                    blob(&p.payload),
                    i64::from(p.ttl_secs),
                    to_i64(p.created_ms)
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

mod membership;
mod memory;

pub use memory::{Delivered, SenderSeq, SeqGap, Settled};

#[cfg(test)]
mod tests;
