//! The content index: one SQLite table of reservations, `content.db` next to the blob store.
//!
//! A reservation is one group's claim on one piece of sealed content (by its BLAKE3 hash): who
//! registered it, under which descriptor blob id, its size, and until when it is kept. The sum
//! of the sizes of a group's live reservations is what its content quota counts. The index knows
//! nothing of iroh-blobs: hashes are plain 32-byte arrays here.
//!
//! Every method is synchronous and short; callers run them on a blocking thread.

use std::path::Path;
use std::sync::{Mutex, PoisonError};

use rusqlite::{Connection, OptionalExtension, Params, Row, params};
use sync_types::{BlobId, DeviceId, GroupId};

/// The index's file name inside the content directory.
pub const INDEX_FILE_NAME: &str = "content.db";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS content (
    grp BLOB NOT NULL,
    hash BLOB NOT NULL,
    blob_id BLOB NOT NULL,
    size INTEGER NOT NULL,
    uploader BLOB NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    complete INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (grp, hash)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS content_by_hash ON content (hash);
CREATE INDEX IF NOT EXISTS content_by_blob ON content (grp, blob_id);
CREATE INDEX IF NOT EXISTS content_by_expiry ON content (expires_ms);
";

/// Why the index refused or failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum IndexError {
    /// The group's live reservations plus this one would pass the quota.
    #[error("content quota exceeded: {used} bytes reserved, {size} more asked, limit {limit}")]
    Quota {
        /// Bytes the group has reserved now.
        used: u64,
        /// Bytes asked for.
        size: u64,
        /// The quota.
        limit: u64,
    },
    /// The same hash was reserved before with another size (one of the two is wrong).
    #[error("this hash is reserved with another size ({stored} bytes)")]
    SizeMismatch {
        /// The size stored with the first reservation.
        stored: u64,
    },
    /// A size does not fit SQLite's signed integers.
    #[error("size out of range")]
    OutOfRange,
    /// SQLite failed.
    #[error("content index: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// One reservation as registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reservation {
    /// The group it belongs to.
    pub(crate) group: GroupId,
    /// BLAKE3 hash of the sealed content.
    pub(crate) hash: [u8; 32],
    /// The ordinary blob that carries the sealed descriptor.
    pub(crate) blob_id: BlobId,
    /// Sealed size in bytes.
    pub(crate) size: u64,
    /// The device that registered it.
    pub(crate) uploader: DeviceId,
    /// When it was first registered.
    pub(crate) created_ms: u64,
    /// When it is removed.
    pub(crate) expires_ms: u64,
}

/// What a registration did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reserved {
    /// A new reservation.
    New,
    /// The group had it already: its expiry (and descriptor blob id) were renewed.
    Renewed,
}

/// A reservation removed from the index (its tag has to go too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Removed {
    /// The group.
    pub(crate) group: GroupId,
    /// The content's hash.
    pub(crate) hash: [u8; 32],
    /// Whether its upload had completed.
    pub(crate) complete: bool,
}

/// A live reservation still waiting for its upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pending {
    /// The group.
    pub(crate) group: GroupId,
    /// The reserved size.
    pub(crate) size: u64,
    /// The device that registered it.
    pub(crate) uploader: DeviceId,
}

/// Content held now: distinct complete hashes and their bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct IndexStats {
    /// Distinct pieces of content uploaded completely.
    pub(crate) items: u64,
    /// Their bytes (each piece counted once, however many groups reference it).
    pub(crate) bytes: u64,
}

/// The reservations, in one SQLite connection.
pub(crate) struct ContentIndex {
    conn: Mutex<Connection>,
}

fn to_i64(v: u64) -> Result<i64, IndexError> {
    i64::try_from(v).map_err(|_| IndexError::OutOfRange)
}

fn from_i64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// The 32-byte id (hash, group or device) in column `i` of `row`; zeros for another length.
fn id_at(row: &Row<'_>, i: usize) -> rusqlite::Result<[u8; 32]> {
    let bytes: Vec<u8> = row.get(i)?;
    Ok(<[u8; 32]>::try_from(bytes.as_slice()).unwrap_or([0; 32]))
}

impl ContentIndex {
    /// Opens (or creates) the index file in `dir`.
    pub(crate) fn open(dir: &Path) -> Result<Self, IndexError> {
        let conn = Connection::open(dir.join(INDEX_FILE_NAME))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        Self::with_schema(conn)
    }

    /// An index in memory (tests).
    #[cfg(test)]
    pub(crate) fn in_memory() -> Result<Self, IndexError> {
        Self::with_schema(Connection::open_in_memory()?)
    }

    fn with_schema(conn: Connection) -> Result<Self, IndexError> {
        conn.execute_batch(SCHEMA)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `sql` with `params`; every row it returns, through `row`.
    fn rows<T>(
        &self,
        sql: &str,
        params: impl Params,
        row: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, IndexError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(sql)?;
        let rows = stmt.query_map(params, row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Registers `r`, or renews the group's reservation of the same hash, if the group's live
    /// reservations (other than this hash) plus `r.size` stay within `limit`.
    pub(crate) fn reserve(
        &self,
        r: &Reservation,
        limit: u64,
        now_ms: u64,
    ) -> Result<Reserved, IndexError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let group = r.group.as_bytes().as_slice();
        let hash = r.hash.as_slice();
        let stored: Option<i64> = tx
            .query_row(
                "SELECT size FROM content WHERE grp = ?1 AND hash = ?2",
                params![group, hash],
                |row| row.get(0),
            )
            .optional()?;
        if let Some(stored) = stored.map(from_i64)
            && stored != r.size
        {
            return Err(IndexError::SizeMismatch { stored });
        }
        let used: i64 = tx.query_row(
            "SELECT COALESCE(SUM(size), 0) FROM content
             WHERE grp = ?1 AND hash != ?2 AND expires_ms > ?3",
            params![group, hash, to_i64(now_ms)?],
            |row| row.get(0),
        )?;
        let used = from_i64(used);
        if used.saturating_add(r.size) > limit {
            return Err(IndexError::Quota {
                used,
                size: r.size,
                limit,
            });
        }
        let outcome = if stored.is_some() {
            tx.execute(
                "UPDATE content SET blob_id = ?3, expires_ms = MAX(expires_ms, ?4)
                 WHERE grp = ?1 AND hash = ?2",
                params![
                    group,
                    hash,
                    r.blob_id.as_bytes().as_slice(),
                    to_i64(r.expires_ms)?
                ],
            )?;
            Reserved::Renewed
        } else {
            tx.execute(
                "INSERT INTO content
                 (grp, hash, blob_id, size, uploader, created_ms, expires_ms, complete)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0)",
                params![
                    group,
                    hash,
                    r.blob_id.as_bytes().as_slice(),
                    to_i64(r.size)?,
                    r.uploader.as_bytes().as_slice(),
                    to_i64(r.created_ms)?,
                    to_i64(r.expires_ms)?,
                ],
            )?;
            Reserved::New
        };
        tx.commit()?;
        Ok(outcome)
    }

    /// Removes the group's reservations made under the descriptor blob `blob_id`.
    pub(crate) fn remove_by_blob(
        &self,
        group: GroupId,
        blob_id: BlobId,
    ) -> Result<Vec<Removed>, IndexError> {
        self.rows(
            "DELETE FROM content WHERE grp = ?1 AND blob_id = ?2 RETURNING hash, complete",
            params![group.as_bytes().as_slice(), blob_id.as_bytes().as_slice()],
            |row| {
                Ok(Removed {
                    group,
                    hash: id_at(row, 0)?,
                    complete: row.get(1)?,
                })
            },
        )
    }

    /// Removes one reservation (an upload that turned out wrong).
    pub(crate) fn remove(&self, group: GroupId, hash: &[u8; 32]) -> Result<bool, IndexError> {
        let n = self.lock().execute(
            "DELETE FROM content WHERE grp = ?1 AND hash = ?2",
            params![group.as_bytes().as_slice(), hash.as_slice()],
        )?;
        Ok(n > 0)
    }

    /// Removes up to `batch` reservations that expired at `now_ms`, and those whose upload did
    /// not complete within `ttl_ms` of their first registration.
    pub(crate) fn remove_expired(
        &self,
        now_ms: u64,
        ttl_ms: u64,
        batch: u32,
    ) -> Result<Vec<Removed>, IndexError> {
        self.rows(
            "DELETE FROM content WHERE (grp, hash) IN (
                SELECT grp, hash FROM content
                WHERE expires_ms <= ?1 OR (complete = 0 AND created_ms <= ?2)
                LIMIT ?3)
             RETURNING grp, hash, complete",
            params![
                to_i64(now_ms)?,
                // Before the first TTL has passed nothing is old enough (-1 matches no row).
                now_ms.checked_sub(ttl_ms).map_or(Ok(-1), to_i64)?,
                i64::from(batch)
            ],
            |row| {
                Ok(Removed {
                    group: GroupId::from_bytes(id_at(row, 0)?),
                    hash: id_at(row, 1)?,
                    complete: row.get(2)?,
                })
            },
        )
    }

    /// Live reservations of `hash` still waiting for their upload.
    pub(crate) fn pending(&self, hash: &[u8; 32], now_ms: u64) -> Result<Vec<Pending>, IndexError> {
        self.rows(
            "SELECT grp, size, uploader FROM content
             WHERE hash = ?1 AND complete = 0 AND expires_ms > ?2",
            params![hash.as_slice(), to_i64(now_ms)?],
            |row| {
                Ok(Pending {
                    group: GroupId::from_bytes(id_at(row, 0)?),
                    size: from_i64(row.get(1)?),
                    uploader: DeviceId::from_bytes(id_at(row, 2)?),
                })
            },
        )
    }

    /// Groups with a live reservation of `hash` whose upload completed.
    pub(crate) fn complete_groups(
        &self,
        hash: &[u8; 32],
        now_ms: u64,
    ) -> Result<Vec<GroupId>, IndexError> {
        self.rows(
            "SELECT grp FROM content WHERE hash = ?1 AND complete = 1 AND expires_ms > ?2",
            params![hash.as_slice(), to_i64(now_ms)?],
            |row| Ok(GroupId::from_bytes(id_at(row, 0)?)),
        )
    }

    /// Marks every live, incomplete reservation of `hash` of `size` bytes complete; returns their
    /// groups.
    pub(crate) fn mark_complete(
        &self,
        hash: &[u8; 32],
        size: u64,
        now_ms: u64,
    ) -> Result<Vec<GroupId>, IndexError> {
        self.rows(
            "UPDATE content SET complete = 1
             WHERE hash = ?1 AND size = ?2 AND complete = 0 AND expires_ms > ?3
             RETURNING grp",
            params![hash.as_slice(), to_i64(size)?, to_i64(now_ms)?],
            |row| Ok(GroupId::from_bytes(id_at(row, 0)?)),
        )
    }

    /// Every hash the index holds (live or not yet cleaned up): the blob store keeps them.
    pub(crate) fn hashes(&self) -> Result<Vec<[u8; 32]>, IndexError> {
        self.rows("SELECT DISTINCT hash FROM content", [], |row| id_at(row, 0))
    }

    /// Whether any reservation (of any group) still names `hash`.
    #[cfg(test)]
    pub(crate) fn references(&self, hash: &[u8; 32]) -> Result<bool, IndexError> {
        let n: i64 = self.lock().query_row(
            "SELECT COUNT(*) FROM content WHERE hash = ?1",
            params![hash.as_slice()],
            |row| row.get(0),
        )?;
        Ok(n > 0)
    }

    /// Bytes the group has reserved at `now_ms` (its live reservations).
    #[cfg(test)]
    pub(crate) fn used(&self, group: GroupId, now_ms: u64) -> Result<u64, IndexError> {
        let used: i64 = self.lock().query_row(
            "SELECT COALESCE(SUM(size), 0) FROM content WHERE grp = ?1 AND expires_ms > ?2",
            params![group.as_bytes().as_slice(), to_i64(now_ms)?],
            |row| row.get(0),
        )?;
        Ok(from_i64(used))
    }

    /// Distinct complete content and its bytes.
    pub(crate) fn stats(&self) -> Result<IndexStats, IndexError> {
        let (items, bytes): (i64, i64) = self.lock().query_row(
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM
               (SELECT hash, MAX(size) AS size FROM content WHERE complete = 1 GROUP BY hash)",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        Ok(IndexStats {
            items: from_i64(items),
            bytes: from_i64(bytes),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(group: u8, hash: u8, blob: u8, size: u64, now: u64) -> Reservation {
        Reservation {
            group: GroupId::from_bytes([group; 32]),
            hash: [hash; 32],
            blob_id: BlobId::from_bytes([blob; 16]),
            size,
            uploader: DeviceId::from_bytes([9; 32]),
            created_ms: now,
            expires_ms: now + 1000,
        }
    }

    #[test]
    fn quota_counts_live_reservations_of_the_group_only() {
        let index = ContentIndex::in_memory().expect("index");
        assert_eq!(
            index.reserve(&res(1, 1, 1, 60, 0), 100, 0).expect("first"),
            Reserved::New
        );
        let err = index
            .reserve(&res(1, 2, 2, 41, 0), 100, 0)
            .expect_err("over");
        assert!(
            matches!(
                err,
                IndexError::Quota {
                    used: 60,
                    size: 41,
                    limit: 100
                }
            ),
            "{err}"
        );
        // Exactly at the limit is fine; another group has its own quota.
        index.reserve(&res(1, 2, 2, 40, 0), 100, 0).expect("fits");
        index
            .reserve(&res(2, 2, 2, 100, 0), 100, 0)
            .expect("other group");
        assert_eq!(
            index.used(GroupId::from_bytes([1; 32]), 0).expect("used"),
            100
        );
        // Once the first ones expire their bytes are free again.
        index
            .reserve(&res(1, 3, 3, 100, 1000), 100, 1000)
            .expect("after expiry");
    }

    #[test]
    fn the_same_hash_again_renews_and_does_not_count_twice() {
        let index = ContentIndex::in_memory().expect("index");
        index.reserve(&res(1, 1, 1, 80, 0), 100, 0).expect("first");
        let mut again = res(1, 1, 7, 80, 500);
        assert_eq!(
            index.reserve(&again, 100, 500).expect("again"),
            Reserved::Renewed
        );
        // Renewed: still live after the first expiry; the descriptor is the new one.
        assert_eq!(index.pending(&[1; 32], 1200).expect("pending").len(), 1);
        let removed = index
            .remove_by_blob(GroupId::from_bytes([1; 32]), BlobId::from_bytes([1; 16]))
            .expect("by old blob");
        assert!(removed.is_empty());
        again.size = 81;
        assert!(matches!(
            index.reserve(&again, 100, 500),
            Err(IndexError::SizeMismatch { stored: 80 })
        ));
    }

    #[test]
    fn uploads_complete_and_expire() {
        let index = ContentIndex::in_memory().expect("index");
        let group = GroupId::from_bytes([1; 32]);
        index.reserve(&res(1, 1, 1, 50, 0), 100, 0).expect("a");
        index
            .reserve(&res(2, 1, 2, 50, 0), 100, 0)
            .expect("b, same content");
        index.reserve(&res(1, 2, 3, 10, 0), 100, 0).expect("c");
        assert_eq!(index.pending(&[1; 32], 10).expect("pending").len(), 2);
        assert!(
            index
                .complete_groups(&[1; 32], 10)
                .expect("none")
                .is_empty()
        );
        // A wrong size marks nothing.
        assert!(
            index
                .mark_complete(&[1; 32], 49, 10)
                .expect("wrong")
                .is_empty()
        );
        let done = index.mark_complete(&[1; 32], 50, 10).expect("done");
        assert_eq!(done.len(), 2);
        assert_eq!(
            index.complete_groups(&[1; 32], 10).expect("groups").len(),
            2
        );
        assert!(index.pending(&[1; 32], 10).expect("pending").is_empty());
        assert_eq!(
            index.stats().expect("stats"),
            IndexStats {
                items: 1,
                bytes: 50
            }
        );
        let removed = index
            .remove_by_blob(group, BlobId::from_bytes([1; 16]))
            .expect("delete");
        assert_eq!(
            removed,
            vec![Removed {
                group,
                hash: [1; 32],
                complete: true
            }]
        );
        assert!(
            index.references(&[1; 32]).expect("refs"),
            "group 2 keeps it"
        );
        // Nothing is expired before its time; then everything goes (the incomplete one too).
        assert!(
            index
                .remove_expired(999, 5000, 100)
                .expect("none")
                .is_empty()
        );
        let gone = index.remove_expired(1000, 5000, 100).expect("expired");
        assert_eq!(gone.len(), 2);
        assert!(index.hashes().expect("hashes").is_empty());
    }

    #[test]
    fn an_incomplete_upload_goes_after_the_ttl_even_when_renewed() {
        let index = ContentIndex::in_memory().expect("index");
        index.reserve(&res(1, 1, 1, 50, 0), 100, 0).expect("a");
        let mut renewed = res(1, 1, 1, 50, 900);
        renewed.expires_ms = 5000;
        index.reserve(&renewed, 100, 900).expect("renew");
        // The TTL is 1000 ms: incomplete since 0, it goes at 1000 although renewed.
        assert!(
            index
                .remove_expired(999, 1000, 10)
                .expect("not yet")
                .is_empty()
        );
        assert_eq!(index.remove_expired(1000, 1000, 10).expect("gone").len(), 1);
    }
}
