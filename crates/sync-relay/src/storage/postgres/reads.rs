//! Reads: a pull page (one repeatable-read snapshot, so the page and the group's last cursor
//! agree), the last cursor, membership, the totals, and the audit that recomputes them.

use deadpool_postgres::Transaction;
use sync_types::{BlobId, Cursor, DeviceId, GroupId};
use tokio_postgres::{IsolationLevel, Row};

use super::{PostgresStorage, Result, pg_error, pool_client, row_one, row_opt, rows};
use crate::storage::rules::{
    COUNTED, EntryMeta, Gap, PageBuilder, PageCut, clamp_i64, stats_of, to_u64,
};
use crate::storage::{MembershipRead, PullPage, StorageError, StorageStats, StoredGrant};

/// The relay-wide totals: the sums of the counter shards.
const SUM_COUNTERS: &str = "SELECT COALESCE(SUM(groups), 0)::int8, COALESCE(SUM(blobs), 0)::int8,
                        COALESCE(SUM(bytes), 0)::int8 FROM counters";

/// The first three columns of a row of totals (groups, blobs, bytes).
fn triple(row: &Row) -> [i64; 3] {
    [row.get(0), row.get(1), row.get(2)]
}

fn corrupt(what: &str) -> StorageError {
    StorageError::Corrupt { what: what.into() }
}

/// A read-only transaction that sees one snapshot throughout.
async fn snapshot(client: &mut deadpool_postgres::Object) -> Result<Transaction<'_>> {
    client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(pg_error)
}

impl PostgresStorage {
    pub(super) async fn read_page(
        &self,
        group: GroupId,
        after: Cursor,
        max_count: u32,
        max_bytes: u64,
    ) -> Result<PullPage> {
        let mut client = pool_client(&self.inner.pool).await?;
        let tx = snapshot(&mut client).await?;
        let g = &group.as_bytes()[..];
        let Some(head) = row_opt(
            &tx,
            "SELECT last_cursor, forgotten_through FROM groups WHERE group_id = $1",
            &[&g],
        )
        .await
        .map_err(pg_error)?
        else {
            return Ok(PullPage::default());
        };
        let max_cursor = Cursor::new(to_u64(head.get(0), "last_cursor")?);
        let holes = Holes {
            group: g,
            forgotten: to_u64(head.get(1), "forgotten_through")?,
        };
        let mut cut = PageCut::new(max_count, max_bytes);
        // Metadata first; one row beyond the count limit tells whether more follow.
        let metas_rows = rows(
            &tx,
            "SELECT cursor, blob_id, sender, size, stored_at FROM blobs
                 WHERE group_id = $1 AND cursor > $2 ORDER BY cursor LIMIT $3",
            &[&g, &clamp_i64(after.get()), &cut.rows_to_read()],
        )
        .await
        .map_err(pg_error)?;
        let mut metas = Vec::new();
        for row in &metas_rows {
            let size = to_u64(row.get(3), "blob size")?;
            if !cut.admit(size) {
                break;
            }
            let cursor = Cursor::new(to_u64(row.get(0), "cursor")?);
            let blob_id = <[u8; 16]>::try_from(row.get::<_, &[u8]>(1))
                .map(BlobId::from_bytes)
                .map_err(|_| corrupt("a blob id is not 16 bytes"))?;
            let sender = DeviceId::try_from_slice(row.get(2))
                .map_err(|_| corrupt("a device id is not 32 bytes"))?;
            let stored_at_ms = to_u64(row.get(4), "stored_at")?;
            metas.push(EntryMeta {
                cursor,
                blob_id,
                sender,
                size,
                stored_at_ms,
            });
        }
        let cursors: Vec<i64> = metas.iter().map(|m| clamp_i64(m.cursor.get())).collect();
        let payloads = rows(
            &tx,
            "SELECT cursor, payload FROM blobs WHERE group_id = $1 AND cursor = ANY($2)
                 ORDER BY cursor",
            &[&g, &cursors],
        )
        .await
        .map_err(pg_error)?;
        if payloads.len() != metas.len() {
            return Err(corrupt("a blob vanished inside a read snapshot"));
        }
        let mut page = PageBuilder::new(after, max_cursor, &cut, metas.len());
        for (meta, row) in metas.into_iter().zip(payloads) {
            let payload: Vec<u8> = row.get(1);
            meta.check_payload(&payload)?;
            let removed_before = holes
                .removed_between(&tx, page.last(), meta.cursor.get())
                .await?;
            page.push(meta, payload, removed_before);
        }
        let removed_after = match page.tail() {
            Some((lo, hi)) => holes.removed_between(&tx, lo, hi).await?,
            None => 0,
        };
        tx.commit().await.map_err(pg_error)?;
        Ok(page.finish(removed_after))
    }

    pub(super) async fn read_max_cursor(&self, group: GroupId) -> Result<Cursor> {
        let client = pool_client(&self.inner.pool).await?;
        let last = row_opt(
            &client,
            "SELECT last_cursor FROM groups WHERE group_id = $1",
            &[&&group.as_bytes()[..]],
        )
        .await
        .map_err(pg_error)?
        .map_or(0, |r| r.get::<_, i64>(0));
        Ok(Cursor::new(to_u64(last, "last_cursor")?))
    }

    pub(super) async fn read_membership(
        &self,
        group: GroupId,
        device: DeviceId,
        after_seq: u64,
    ) -> Result<MembershipRead> {
        let mut client = pool_client(&self.inner.pool).await?;
        let tx = snapshot(&mut client).await?;
        let g = &group.as_bytes()[..];
        let records = rows(
            &tx,
            "SELECT record FROM group_records WHERE group_id = $1 AND seq > $2 ORDER BY seq",
            &[&g, &clamp_i64(after_seq)],
        )
        .await
        .map_err(pg_error)?
        .into_iter()
        .map(|r| r.get::<_, Vec<u8>>(0))
        .collect();
        let mut enrollments = Vec::new();
        for r in rows(
            &tx,
            "SELECT device, enrollment FROM enrollments WHERE group_id = $1",
            &[&g],
        )
        .await
        .map_err(pg_error)?
        {
            let d = DeviceId::try_from_slice(r.get(0))
                .map_err(|_| corrupt("a device id is not 32 bytes"))?;
            enrollments.push((d, r.get::<_, Vec<u8>>(1)));
        }
        let mut grants = Vec::new();
        for r in rows(
            &tx,
            "SELECT sender, epoch, envelope FROM grants
                 WHERE group_id = $1 AND recipient = $2 ORDER BY id",
            &[&g, &&device.as_bytes()[..]],
        )
        .await
        .map_err(pg_error)?
        {
            grants.push(StoredGrant {
                sender: DeviceId::try_from_slice(r.get(0))
                    .map_err(|_| corrupt("a device id is not 32 bytes"))?,
                epoch: u32::try_from(r.get::<_, i64>(1))
                    .map_err(|_| corrupt("a grant epoch is out of range"))?,
                envelope: r.get(2),
            });
        }
        tx.commit().await.map_err(pg_error)?;
        Ok(MembershipRead {
            records,
            enrollments,
            grants,
        })
    }

    pub(super) async fn read_stats(&self) -> Result<StorageStats> {
        let client = pool_client(&self.inner.pool).await?;
        let row = row_one(&client, SUM_COUNTERS, &[])
            .await
            .map_err(pg_error)?;
        stats_of(triple(&row), COUNTED)
    }

    /// Recomputes the totals from the rows and checks them against the group counters and the
    /// sharded totals (for tests and operator tools; scans every table).
    pub async fn audit(&self) -> Result<StorageStats> {
        let mut client = pool_client(&self.inner.pool).await?;
        let tx = snapshot(&mut client).await?;
        let bad: i64 = tx
            .query_one(
                "SELECT COUNT(*) FROM groups g LEFT JOIN
                   (SELECT group_id, COUNT(*) AS n, COALESCE(SUM(size), 0) AS b, MAX(cursor) AS top
                    FROM blobs GROUP BY group_id) s ON s.group_id = g.group_id
                 WHERE g.blob_count <> COALESCE(s.n, 0) OR g.byte_count <> COALESCE(s.b, 0)
                    OR g.last_cursor < COALESCE(s.top, 0)",
                &[],
            )
            .await
            .map_err(pg_error)?
            .get(0);
        if bad != 0 {
            return Err(StorageError::Corrupt {
                what: format!("{bad} groups' counters disagree with their blobs"),
            });
        }
        let orphans: i64 = tx
            .query_one(
                "SELECT COUNT(*) FROM blobs b WHERE NOT EXISTS
                   (SELECT 1 FROM groups g WHERE g.group_id = b.group_id)",
                &[],
            )
            .await
            .map_err(pg_error)?
            .get(0);
        if orphans != 0 {
            return Err(corrupt("blobs without a group"));
        }
        let row = tx
            .query_one(
                "SELECT COUNT(*), COALESCE(SUM(blob_count), 0)::int8,
                        COALESCE(SUM(byte_count), 0)::int8 FROM groups",
                &[],
            )
            .await
            .map_err(pg_error)?;
        let counted = stats_of(triple(&row), COUNTED)?;
        let row = tx.query_one(SUM_COUNTERS, &[]).await.map_err(pg_error)?;
        let totals = stats_of(triple(&row), ["group total", "blob total", "byte total"])?;
        tx.commit().await.map_err(pg_error)?;
        if totals != counted {
            return Err(StorageError::Corrupt {
                what: format!("totals {totals:?} disagree with the groups' {counted:?}"),
            });
        }
        Ok(counted)
    }
}

/// What the relay knows about the holes in one group's log.
struct Holes<'a> {
    group: &'a [u8],
    /// Cursors at or below this may be removals whose tombstones were forgotten, or cursors
    /// never assigned to this group.
    forgotten: u64,
}

impl Holes<'_> {
    /// How many cursors strictly between `lo` and `hi` (a stretch holding no blob) the relay
    /// removed or never assigned: those at or below `forgotten`, and those with a tombstone.
    async fn removed_between(&self, tx: &Transaction<'_>, lo: u64, hi: u64) -> Result<u64> {
        let Some(gap) = Gap::between(self.forgotten, lo, hi) else {
            return Ok(0);
        };
        let listed: i64 = row_one(
            tx,
            "SELECT COUNT(*) FROM tombstones WHERE group_id = $1 AND cursor > $2 AND cursor < $3",
            &[&self.group, &clamp_i64(gap.listed_from), &clamp_i64(hi)],
        )
        .await
        .map_err(pg_error)?
        .get(0);
        Ok(gap.removed(to_u64(listed, "tombstone count")?))
    }
}
