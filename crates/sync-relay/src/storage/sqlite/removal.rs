//! The write operations that remove: delete, the cleanup of expired blobs, forgetting the
//! remembered ids of removed blobs, and deleting idle empty groups. A removed blob's id is
//! remembered (group, id, cursor, store time, payload digest) until its forget time, so a
//! retried push is answered with its original cursor.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, params};
use sync_types::{BlobId, GroupId};

use super::ops::{digest_column, stored_digest};
use super::writer::{BatchCtx, WriteOp};
use super::{Result, clamp_i64};
use crate::storage::rules::millis;

/// Deletes one blob, remembers its id, and takes it off its group's counters.
pub(super) struct DeleteOp {
    /// The blob's group.
    pub(super) group: GroupId,
    /// The blob.
    pub(super) blob_id: BlobId,
    /// The clock the remembered id's lifetime starts from.
    pub(super) now_ms: u64,
}

impl WriteOp for DeleteOp {
    type Output = bool;

    fn apply(&mut self, conn: &Connection, ctx: &mut BatchCtx) -> rusqlite::Result<Result<bool>> {
        // Group counters change below in SQL: write this batch's pending changes first.
        ctx.flush_groups(conn)?;
        let found: Option<RemovedBlob> = conn
            .prepare_cached(
                "SELECT b.id, b.group_ref, b.size, b.blob_id, b.cursor, b.stored_at, b.digest
                 FROM blobs b JOIN groups g ON g.id = b.group_ref
                 WHERE g.group_id = ?1 AND b.blob_id = ?2",
            )?
            .query_row(
                params![&self.group.as_bytes()[..], &self.blob_id.as_bytes()[..]],
                RemovedBlob::from_row,
            )
            .optional()?;
        let Some(blob) = found else {
            return Ok(Ok(false));
        };
        let forget_at = self
            .now_ms
            .saturating_add(millis(ctx.limits.forget_ids_after));
        blob.remove(conn, forget_at)?;
        decrement_group(conn, blob.group_ref, 1, blob.size)?;
        ctx.delta.blobs = ctx.delta.blobs.saturating_sub(1);
        ctx.delta.bytes = ctx.delta.bytes.saturating_sub(blob.size);
        Ok(Ok(true))
    }
}

/// A blob row about to be removed (expired or deleted), with what its id's memory keeps.
struct RemovedBlob {
    id: i64,
    group_ref: i64,
    size: i64,
    blob_id: Vec<u8>,
    cursor: i64,
    stored_at: i64,
    digest: Option<Vec<u8>>,
}

impl RemovedBlob {
    /// Reads `id, group_ref, size, blob_id, cursor, stored_at, digest`, in that order.
    fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get(0)?,
            group_ref: r.get(1)?,
            size: r.get(2)?,
            blob_id: r.get(3)?,
            cursor: r.get(4)?,
            stored_at: r.get(5)?,
            digest: r.get(6)?,
        })
    }

    /// Remembers the blob's id until `forget_at`, then deletes the row.
    fn remove(&self, conn: &Connection, forget_at: u64) -> rusqlite::Result<()> {
        let digest = stored_digest(conn, self.id, digest_column(self.digest.clone())?)?;
        conn.prepare_cached(
            "INSERT INTO tombstones (group_ref, blob_id, cursor, stored_at, digest, forget_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (group_ref, blob_id) DO UPDATE SET forget_at = excluded.forget_at",
        )?
        .execute(params![
            self.group_ref,
            &self.blob_id[..],
            self.cursor,
            self.stored_at,
            &digest[..],
            clamp_i64(forget_at)
        ])?;
        conn.prepare_cached("DELETE FROM blobs WHERE id = ?1")?
            .execute([self.id])?;
        Ok(())
    }
}

fn decrement_group(
    conn: &Connection,
    group_ref: i64,
    blobs: i64,
    bytes: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE groups SET blob_count = blob_count - ?2, byte_count = byte_count - ?3
         WHERE id = ?1",
    )?
    .execute(params![group_ref, blobs, bytes])?;
    Ok(())
}

/// Removes up to `batch` expired blobs (remembering their ids) and up to `batch` expired
/// invites.
pub(super) struct CleanupOp {
    /// The clock the expiry times are compared with.
    pub(super) now_ms: u64,
    /// Most rows of each kind removed.
    pub(super) batch: u32,
}

impl WriteOp for CleanupOp {
    type Output = u64;

    fn apply(&mut self, conn: &Connection, ctx: &mut BatchCtx) -> rusqlite::Result<Result<u64>> {
        // Group counters change below in SQL: write this batch's pending changes first.
        ctx.flush_groups(conn)?;
        let now = clamp_i64(self.now_ms);
        let batch = i64::from(self.batch);
        let expired: Vec<RemovedBlob> = conn
            .prepare_cached(
                "SELECT id, group_ref, size, blob_id, cursor, stored_at, digest FROM blobs
                 WHERE expires_at <= ?1 ORDER BY expires_at LIMIT ?2",
            )?
            .query_map([now, batch], RemovedBlob::from_row)?
            .collect::<rusqlite::Result<_>>()?;
        let forget_at = self
            .now_ms
            .saturating_add(millis(ctx.limits.forget_ids_after));
        let mut per_group: HashMap<i64, (i64, i64)> = HashMap::new();
        for blob in &expired {
            blob.remove(conn, forget_at)?;
            let entry = per_group.entry(blob.group_ref).or_default();
            entry.0 = entry.0.saturating_add(1);
            entry.1 = entry.1.saturating_add(blob.size);
        }
        for (group_ref, (blobs, bytes)) in per_group {
            decrement_group(conn, group_ref, blobs, bytes)?;
            ctx.delta.blobs = ctx.delta.blobs.saturating_sub(blobs);
            ctx.delta.bytes = ctx.delta.bytes.saturating_sub(bytes);
        }
        conn.prepare_cached(
            "DELETE FROM invites WHERE lookup_id IN
                 (SELECT lookup_id FROM invites WHERE expires_at <= ?1 LIMIT ?2)",
        )?
        .execute([now, batch])?;
        Ok(Ok(expired.len() as u64))
    }
}

/// Forgets up to `batch` ids of removed blobs whose memory ran out.
pub(super) struct ForgetOp {
    /// The clock the forget times are compared with.
    pub(super) now_ms: u64,
    /// Most ids forgotten.
    pub(super) batch: u32,
}

impl WriteOp for ForgetOp {
    type Output = u64;

    fn apply(&mut self, conn: &Connection, ctx: &mut BatchCtx) -> rusqlite::Result<Result<u64>> {
        // Group rows change below in SQL: write this batch's pending changes first.
        ctx.flush_groups(conn)?;
        // Holes at or below a forgotten tombstone's cursor are removals the relay no longer
        // lists one by one.
        conn.prepare_cached(
            "UPDATE groups SET forgotten_through = max(forgotten_through, t.top)
             FROM (SELECT group_ref, max(cursor) AS top FROM
                     (SELECT group_ref, cursor FROM tombstones WHERE forget_at <= ?1
                      ORDER BY forget_at, group_ref, blob_id LIMIT ?2)
                   GROUP BY group_ref) AS t
             WHERE groups.id = t.group_ref",
        )?
        .execute([clamp_i64(self.now_ms), i64::from(self.batch)])?;
        let forgotten = conn
            .prepare_cached(
                "DELETE FROM tombstones WHERE (group_ref, blob_id) IN
                     (SELECT group_ref, blob_id FROM tombstones WHERE forget_at <= ?1
                      ORDER BY forget_at, group_ref, blob_id LIMIT ?2)",
            )?
            .execute([clamp_i64(self.now_ms), i64::from(self.batch)])?;
        Ok(Ok(forgotten as u64))
    }
}

/// Marks the groups seen with a session as active now, then deletes up to `batch` groups that
/// hold no blobs, remember no removed blob id, and were last active at or before `idle_before`.
/// The relay-wide cursor floor rises to their last cursors, so a deleted group that comes back
/// never reuses a cursor.
pub(super) struct DropIdleGroupsOp {
    /// Groups with a session since the last call.
    pub(super) seen: Vec<GroupId>,
    /// The clock.
    pub(super) now_ms: u64,
    /// Groups last active at or before this time are idle.
    pub(super) idle_before_ms: u64,
    /// Most groups deleted.
    pub(super) batch: u32,
}

impl WriteOp for DropIdleGroupsOp {
    type Output = u64;

    fn apply(&mut self, conn: &Connection, ctx: &mut BatchCtx) -> rusqlite::Result<Result<u64>> {
        // Group rows change below in SQL: write this batch's pending changes first.
        ctx.flush_groups(conn)?;
        {
            let mut touch =
                conn.prepare_cached("UPDATE groups SET last_active = ?2 WHERE group_id = ?1")?;
            for g in &self.seen {
                touch.execute(params![&g.as_bytes()[..], clamp_i64(self.now_ms)])?;
            }
        }
        let idle: Vec<(i64, i64)> = conn
            .prepare_cached(
                "SELECT g.id, g.last_cursor FROM groups g
                 WHERE g.blob_count = 0 AND g.last_active <= ?1
                   AND NOT EXISTS (SELECT 1 FROM tombstones t WHERE t.group_ref = g.id)
                 ORDER BY g.last_active LIMIT ?2",
            )?
            .query_map(
                [clamp_i64(self.idle_before_ms), i64::from(self.batch)],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?
            .collect::<rusqlite::Result<_>>()?;
        let Some(highest) = idle.iter().map(|&(_, last)| last).max() else {
            return Ok(Ok(0));
        };
        conn.prepare_cached(
            "INSERT INTO relay_meta (key, value) VALUES ('cursor_floor', ?1)
             ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)",
        )?
        .execute([highest])?;
        let mut delete = conn.prepare_cached("DELETE FROM groups WHERE id = ?1")?;
        for &(id, _) in &idle {
            delete.execute([id])?;
        }
        let n = i64::try_from(idle.len()).unwrap_or(i64::MAX);
        ctx.delta.groups = ctx.delta.groups.saturating_sub(n);
        Ok(Ok(idle.len() as u64))
    }
}
