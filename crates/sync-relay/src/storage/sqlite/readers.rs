//! The read side: a small pool of read-only connections, used under `spawn_blocking`, and the
//! reads themselves (pull, max cursor, audit). WAL lets them proceed while the writer commits;
//! each read is one read transaction, so a page and its `max_cursor` come from the same
//! snapshot.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use sync_types::{BlobId, Cursor, DeviceId, GroupId};
use tokio::sync::Semaphore;

use super::{Result, SqliteConfig, SqliteStorage, clamp_i64, to_u64};
use crate::storage::rules::{EntryMeta, Gap, PageBuilder, PageCut};
use crate::storage::{MembershipRead, PullPage, StorageError, StorageStats, StoredGrant};

/// Read-only connections to the database file, all opened when the storage opens and kept for
/// reuse; at most `readers` of them are in use at once. Opening them up front keeps the relay's
/// open file descriptors flat from its first request on (a count that grows later is a leak,
/// not a pool warming up).
pub(super) struct ReaderPool {
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
    path: PathBuf,
    busy_timeout: Duration,
    mmap_size_bytes: u64,
}

impl ReaderPool {
    /// A pool for the database at `path`, its `readers` connections open.
    pub(super) fn open_all(path: PathBuf, config: &SqliteConfig) -> Result<Self> {
        let size = config.readers.max(1);
        let pool = Self {
            idle: Mutex::new(Vec::with_capacity(size)),
            permits: Arc::new(Semaphore::new(size)),
            path,
            busy_timeout: config.busy_timeout,
            mmap_size_bytes: config.mmap_size_bytes,
        };
        for _ in 0..size {
            let conn = pool.open()?;
            // A connection opens the WAL on its first read: read once, so that file is open
            // from the start as well.
            conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))?;
            pool.give_back(conn);
        }
        Ok(pool)
    }

    /// An idle connection, if one is kept.
    pub(super) fn take(&self) -> Option<Connection> {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
    }

    /// Keeps a connection for the next read.
    pub(super) fn give_back(&self, conn: Connection) {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(conn);
    }

    /// Frees the page caches of the idle readers (each up to SQLite's default 2 MiB).
    pub(super) fn release_idle(&self) {
        let idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        for conn in idle.iter() {
            if let Err(e) = conn.execute_batch("PRAGMA shrink_memory") {
                tracing::debug!(error = %e, "reader shrink_memory failed");
            }
        }
    }

    /// Opens a new read-only connection with the pool's settings.
    pub(super) fn open(&self) -> Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(self.busy_timeout)?;
        conn.pragma_update(None, "mmap_size", clamp_i64(self.mmap_size_bytes))?;
        conn.set_prepared_statement_cache_capacity(16);
        Ok(conn)
    }

    /// Refuses further reads and closes the idle connections (reads in progress close theirs
    /// when they finish).
    pub(super) fn close(&self) {
        self.permits.close();
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

impl SqliteStorage {
    /// Runs `f` on a pooled read-only connection on the blocking pool.
    pub(super) async fn read<T, F>(&self, f: F) -> Result<T>
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
}

/// The group's last assigned cursor (`Cursor::ZERO` for an unknown group).
pub(super) fn max_cursor_blocking(conn: &mut Connection, group: &GroupId) -> Result<Cursor> {
    let last: Option<i64> = conn
        .prepare_cached("SELECT last_cursor FROM groups WHERE group_id = ?1")?
        .query_row([&group.as_bytes()[..]], |r| r.get(0))
        .optional()?;
    Ok(Cursor::new(
        last.map(|c| to_u64(c, "last_cursor"))
            .transpose()?
            .unwrap_or(0),
    ))
}

/// A group's records after `after_seq`, its enrollments and the grants for `device`.
pub(super) fn membership_blocking(
    conn: &mut Connection,
    group: &GroupId,
    device: &DeviceId,
    after_seq: u64,
) -> Result<MembershipRead> {
    let g = &group.as_bytes()[..];
    let records = conn
        .prepare_cached(
            "SELECT record FROM group_records WHERE group_id = ?1 AND seq > ?2 ORDER BY seq",
        )?
        .query_map(params![g, clamp_i64(after_seq)], |r| r.get::<_, Vec<u8>>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let enrollments = conn
        .prepare_cached("SELECT device, enrollment FROM enrollments WHERE group_id = ?1")?
        .query_map([g], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?
        .into_iter()
        .map(|(d, e)| Ok((device_id(&d)?, e)))
        .collect::<Result<Vec<_>>>()?;
    let grants = conn
        .prepare_cached(
            "SELECT sender, epoch, envelope FROM grants
             WHERE group_id = ?1 AND recipient = ?2 ORDER BY id",
        )?
        .query_map(params![g, &device.as_bytes()[..]], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Vec<u8>>(2)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?
        .into_iter()
        .map(|(sender, epoch, envelope)| {
            Ok(StoredGrant {
                sender: device_id(&sender)?,
                epoch: u32::try_from(epoch).map_err(|_| StorageError::Corrupt {
                    what: format!("grant epoch out of range: {epoch}"),
                })?,
                envelope,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(MembershipRead {
        records,
        enrollments,
        grants,
    })
}

fn device_id(bytes: &[u8]) -> Result<DeviceId> {
    DeviceId::try_from_slice(bytes).map_err(|_| StorageError::Corrupt {
        what: "a device id is not 32 bytes".into(),
    })
}

/// Blobs of `group` after `after`, bounded by count and bytes (the first always included).
pub(super) fn pull_blocking(
    conn: &mut Connection,
    group: &GroupId,
    after: Cursor,
    max_count: u32,
    max_bytes: u64,
) -> Result<PullPage> {
    // One read transaction: the page and max_cursor come from the same snapshot.
    let tx = conn.transaction()?;
    let head: Option<(i64, i64, i64)> = tx
        .prepare_cached(
            "SELECT id, last_cursor, forgotten_through FROM groups WHERE group_id = ?1",
        )?
        .query_row([&group.as_bytes()[..]], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    let Some((group_ref, last, forgotten)) = head else {
        return Ok(PullPage::default());
    };
    let max_cursor = Cursor::new(to_u64(last, "last_cursor")?);
    let holes = Holes {
        group_ref,
        forgotten: to_u64(forgotten, "forgotten_through")?,
    };

    let mut cut = PageCut::new(max_count, max_bytes);
    let mut metas = Vec::new();
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
            cut.rows_to_read()
        ])?;
        while let Some(row) = rows.next()? {
            let size = to_u64(row.get(4)?, "blob size")?;
            if !cut.admit(size) {
                break;
            }
            let id: i64 = row.get(0)?;
            let meta = EntryMeta {
                cursor: Cursor::new(to_u64(row.get(1)?, "cursor")?),
                blob_id: BlobId::from_bytes(row.get::<_, [u8; 16]>(2)?),
                sender: DeviceId::from_bytes(row.get::<_, [u8; 32]>(3)?),
                size,
                stored_at_ms: to_u64(row.get(5)?, "stored_at")?,
            };
            metas.push((id, meta));
        }
    }
    let mut page = PageBuilder::new(after, max_cursor, &cut, metas.len());
    {
        let mut stmt = tx.prepare_cached("SELECT payload FROM blobs WHERE id = ?1")?;
        for (id, meta) in metas {
            let removed_before = holes.removed_between(&tx, page.last(), meta.cursor.get())?;
            let payload: Vec<u8> = stmt.query_row([id], |r| r.get(0))?;
            meta.check_payload(&payload)?;
            page.push(meta, payload, removed_before);
        }
    }
    let removed_after = match page.tail() {
        Some((lo, hi)) => holes.removed_between(&tx, lo, hi)?,
        None => 0,
    };
    tx.commit()?;
    Ok(page.finish(removed_after))
}

/// What the relay knows about the holes in one group's log.
struct Holes {
    group_ref: i64,
    /// Cursors at or below this may be removals whose tombstones were forgotten, or cursors
    /// never assigned to this group.
    forgotten: u64,
}

impl Holes {
    /// How many cursors strictly between `lo` and `hi` (a stretch holding no blob) the relay
    /// removed or never assigned: those at or below `forgotten`, and those with a tombstone.
    fn removed_between(&self, tx: &rusqlite::Transaction<'_>, lo: u64, hi: u64) -> Result<u64> {
        let Some(gap) = Gap::between(self.forgotten, lo, hi) else {
            return Ok(0);
        };
        let listed: i64 = tx
            .prepare_cached(
                "SELECT COUNT(*) FROM tombstones
                 WHERE group_ref = ?1 AND cursor > ?2 AND cursor < ?3",
            )?
            .query_row(
                params![self.group_ref, clamp_i64(gap.listed_from), clamp_i64(hi)],
                |r| r.get(0),
            )?;
        Ok(gap.removed(to_u64(listed, "tombstone count")?))
    }
}

/// Recomputes the totals from the blobs and checks them against the group counters.
pub(super) fn audit_blocking(conn: &mut Connection) -> Result<StorageStats> {
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
