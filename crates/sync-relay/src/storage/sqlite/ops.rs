//! The write operations the writer applies inside a batch: push, delete, cleanup and the
//! invite mailbox.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, params};
use sync_types::{BlobId, Cursor, GroupId};

use super::writer::{BatchCtx, GroupRow, WriteOp};
use super::{Result, clamp_i64, quota, to_u64};
use crate::storage::{
    InviteLookup, PushOutcome, PushRequest, QuotaKind, StorageError, StorageLimits,
};

/// Longest invite lookup id accepted, in bytes.
const MAX_LOOKUP_ID_BYTES: usize = 64;

/// Largest sealed invite accepted, in bytes.
const MAX_INVITE_BYTES: usize = 64 * 1024;

/// The original answer for a blob already stored in the group, if it is.
fn find_original(
    conn: &Connection,
    group_ref: i64,
    blob_id: &BlobId,
) -> rusqlite::Result<Option<Result<PushOutcome>>> {
    let original: Option<(i64, i64)> = conn
        .prepare_cached(
            "SELECT cursor, stored_at FROM blobs WHERE group_ref = ?1 AND blob_id = ?2",
        )?
        .query_row(params![group_ref, &blob_id.as_bytes()[..]], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    Ok(original.map(|(cursor, stored_at)| {
        Ok(PushOutcome {
            cursor: Cursor::new(to_u64(cursor, "cursor")?),
            duplicate: true,
            stored_at_ms: to_u64(stored_at, "stored_at")?,
        })
    }))
}

/// Stores a blob under the group's next cursor (or answers a retry with the original).
pub(super) struct PushOp(pub(super) PushRequest);

impl WriteOp for PushOp {
    type Output = PushOutcome;

    fn apply(
        &mut self,
        conn: &Connection,
        ctx: &mut BatchCtx,
    ) -> rusqlite::Result<Result<PushOutcome>> {
        let req = &self.0;
        let group = ctx.group(conn, &req.group)?;
        match check_push(req, group.as_ref(), &ctx.limits) {
            Ok(()) => {}
            Err(refusal) => {
                // A retry of a stored blob gets the original answer, whatever the limits say
                // now.
                if let Some(g) = &group
                    && let Some(original) = find_original(conn, g.id, &req.blob_id)?
                {
                    return Ok(original);
                }
                return Ok(Err(refusal));
            }
        }
        let size = payload_size(req);
        let mut g = match group {
            Some(g) => g,
            None => {
                conn.prepare_cached(
                    "INSERT INTO groups (group_id, last_cursor, blob_count, byte_count)
                     VALUES (?1, 0, 0, 0)",
                )?
                .execute([&req.group.as_bytes()[..]])?;
                ctx.delta.groups = ctx.delta.groups.saturating_add(1);
                GroupRow {
                    id: conn.last_insert_rowid(),
                    last_cursor: 0,
                    blob_count: 0,
                    byte_count: 0,
                    dirty: false,
                }
            }
        };
        // check_push made sure this does not overflow.
        let cursor = g.last_cursor.saturating_add(1);
        let ttl_ms = u64::try_from(req.ttl.as_millis()).unwrap_or(u64::MAX);
        let stored_at = clamp_i64(req.now_ms);
        let expires_at = clamp_i64(req.now_ms.saturating_add(ttl_ms));
        // The unique (group_ref, blob_id) index answers "already stored?" as part of the
        // insert: a retry inserts nothing and is then looked up.
        let inserted = conn
            .prepare_cached(
                "INSERT INTO blobs
                     (group_ref, cursor, blob_id, sender, size, stored_at, expires_at, payload)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (group_ref, blob_id) DO NOTHING",
            )?
            .execute(params![
                g.id,
                cursor,
                &req.blob_id.as_bytes()[..],
                &req.sender.as_bytes()[..],
                size,
                stored_at,
                expires_at,
                &req.payload[..],
            ])?;
        if inserted == 0 {
            return Ok(find_original(conn, g.id, &req.blob_id)?.unwrap_or_else(|| {
                Err(StorageError::Corrupt {
                    what: "a blob id conflicts but no blob carries it".into(),
                })
            }));
        }
        g.last_cursor = cursor;
        g.blob_count = g.blob_count.saturating_add(1);
        g.byte_count = g.byte_count.saturating_add(size);
        ctx.update_group(req.group, g);
        ctx.delta.blobs = ctx.delta.blobs.saturating_add(1);
        ctx.delta.bytes = ctx.delta.bytes.saturating_add(size);
        Ok(Ok(PushOutcome {
            cursor: Cursor::new(cursor.unsigned_abs()),
            duplicate: false,
            stored_at_ms: stored_at.unsigned_abs(),
        }))
    }
}

/// The payload size as SQLite stores it (a payload in memory is far below `i64::MAX` bytes).
fn payload_size(req: &PushRequest) -> i64 {
    clamp_i64(u64::try_from(req.payload.len()).unwrap_or(u64::MAX))
}

/// Every limit a new blob must respect: size, TTL, the group's quotas, and a sane cursor.
fn check_push(req: &PushRequest, group: Option<&GroupRow>, limits: &StorageLimits) -> Result<()> {
    let size = payload_size(req);
    let size_u = size.unsigned_abs();
    if size_u > limits.max_blob_bytes {
        return Err(quota(QuotaKind::BlobSize, limits.max_blob_bytes, size_u));
    }
    let ttl_ms = u64::try_from(req.ttl.as_millis()).unwrap_or(u64::MAX);
    let max_ttl_ms = u64::try_from(limits.max_ttl.as_millis()).unwrap_or(u64::MAX);
    if ttl_ms > max_ttl_ms {
        return Err(quota(QuotaKind::Ttl, max_ttl_ms, ttl_ms));
    }
    let (last, count, bytes) =
        group.map_or((0, 0, 0), |g| (g.last_cursor, g.blob_count, g.byte_count));
    let new_count = count.saturating_add(1);
    if new_count.unsigned_abs() > limits.max_group_blobs {
        return Err(quota(
            QuotaKind::GroupBlobs,
            limits.max_group_blobs,
            new_count.unsigned_abs(),
        ));
    }
    let new_bytes = bytes.saturating_add(size);
    let max_bytes = req
        .group_quota_bytes
        .map_or(limits.max_group_bytes, |q| q.min(limits.max_group_bytes));
    if new_bytes.unsigned_abs() > max_bytes {
        return Err(quota(
            QuotaKind::GroupBytes,
            max_bytes,
            new_bytes.unsigned_abs(),
        ));
    }
    if count < 0 || bytes < 0 || last < 0 {
        return Err(StorageError::Corrupt {
            what: "negative group counter".into(),
        });
    }
    if last == i64::MAX {
        return Err(StorageError::Corrupt {
            what: "group cursor space exhausted".into(),
        });
    }
    Ok(())
}

/// Deletes one blob and takes it off its group's counters.
pub(super) struct DeleteOp {
    /// The blob's group.
    pub(super) group: GroupId,
    /// The blob.
    pub(super) blob_id: BlobId,
}

impl WriteOp for DeleteOp {
    type Output = bool;

    fn apply(&mut self, conn: &Connection, ctx: &mut BatchCtx) -> rusqlite::Result<Result<bool>> {
        // Group counters change below in SQL: write this batch's pending changes first.
        ctx.flush_groups(conn)?;
        let found: Option<(i64, i64, i64)> = conn
            .prepare_cached(
                "SELECT b.id, b.group_ref, b.size FROM blobs b JOIN groups g ON g.id = b.group_ref
                 WHERE g.group_id = ?1 AND b.blob_id = ?2",
            )?
            .query_row(
                params![&self.group.as_bytes()[..], &self.blob_id.as_bytes()[..]],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((id, group_ref, size)) = found else {
            return Ok(Ok(false));
        };
        conn.prepare_cached("DELETE FROM blobs WHERE id = ?1")?
            .execute([id])?;
        decrement_group(conn, group_ref, 1, size)?;
        ctx.delta.blobs = ctx.delta.blobs.saturating_sub(1);
        ctx.delta.bytes = ctx.delta.bytes.saturating_sub(size);
        Ok(Ok(true))
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

/// Removes up to `batch` expired blobs and up to `batch` expired invites.
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
        let expired: Vec<(i64, i64, i64)> = conn
            .prepare_cached(
                "SELECT id, group_ref, size FROM blobs WHERE expires_at <= ?1
                 ORDER BY expires_at LIMIT ?2",
            )?
            .query_map([now, batch], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let mut per_group: HashMap<i64, (i64, i64)> = HashMap::new();
        {
            let mut delete = conn.prepare_cached("DELETE FROM blobs WHERE id = ?1")?;
            for &(id, group_ref, size) in &expired {
                delete.execute([id])?;
                let entry = per_group.entry(group_ref).or_default();
                entry.0 = entry.0.saturating_add(1);
                entry.1 = entry.1.saturating_add(size);
            }
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

/// Stores a sealed invite (a retry with the same bytes is a no-op).
pub(super) struct InvitePutOp {
    lookup_id: Vec<u8>,
    sealed: Vec<u8>,
    expires_ms: u64,
}

impl InvitePutOp {
    /// Checks the lookup id and the invite's size.
    pub(super) fn new(lookup_id: Vec<u8>, sealed: Vec<u8>, expires_ms: u64) -> Result<Self> {
        check_lookup_id(&lookup_id)?;
        if sealed.len() > MAX_INVITE_BYTES {
            return Err(StorageError::InvalidArgument {
                what: "sealed invite is too large",
            });
        }
        Ok(Self {
            lookup_id,
            sealed,
            expires_ms,
        })
    }
}

impl WriteOp for InvitePutOp {
    type Output = ();

    fn apply(&mut self, conn: &Connection, _ctx: &mut BatchCtx) -> rusqlite::Result<Result<()>> {
        let existing: Option<Vec<u8>> = conn
            .prepare_cached("SELECT sealed FROM invites WHERE lookup_id = ?1")?
            .query_row([&self.lookup_id[..]], |r| r.get(0))
            .optional()?;
        match existing {
            Some(sealed) if sealed == self.sealed => Ok(Ok(())),
            Some(_) => Ok(Err(StorageError::InviteExists)),
            None => {
                conn.prepare_cached(
                    "INSERT INTO invites (lookup_id, sealed, expires_at, attempts)
                     VALUES (?1, ?2, ?3, 0)",
                )?
                .execute(params![
                    &self.lookup_id[..],
                    &self.sealed[..],
                    clamp_i64(self.expires_ms)
                ])?;
                Ok(Ok(()))
            }
        }
    }
}

/// Takes an invite: delivers it once, or says why not.
pub(super) struct InviteTakeOp {
    lookup_id: Vec<u8>,
    now_ms: u64,
    max_attempts: u32,
}

impl InviteTakeOp {
    /// Checks the lookup id.
    pub(super) fn new(lookup_id: Vec<u8>, now_ms: u64, max_attempts: u32) -> Result<Self> {
        check_lookup_id(&lookup_id)?;
        Ok(Self {
            lookup_id,
            now_ms,
            max_attempts,
        })
    }
}

impl WriteOp for InviteTakeOp {
    type Output = InviteLookup;

    fn apply(
        &mut self,
        conn: &Connection,
        _ctx: &mut BatchCtx,
    ) -> rusqlite::Result<Result<InviteLookup>> {
        let row: Option<(Vec<u8>, i64, i64)> = conn
            .prepare_cached(
                "SELECT sealed, expires_at, attempts FROM invites WHERE lookup_id = ?1",
            )?
            .query_row([&self.lookup_id[..]], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?;
        let Some((sealed, expires_at, attempts)) = row else {
            return Ok(Ok(InviteLookup::NotFound));
        };
        if expires_at <= clamp_i64(self.now_ms) {
            // Found but not taken: counted. Kept (answering Expired) until cleanup removes it
            // or the count reaches the maximum.
            if attempts.saturating_add(1) >= i64::from(self.max_attempts) {
                conn.prepare_cached("DELETE FROM invites WHERE lookup_id = ?1")?
                    .execute([&self.lookup_id[..]])?;
                return Ok(Ok(InviteLookup::TooManyAttempts));
            }
            conn.prepare_cached("UPDATE invites SET attempts = attempts + 1 WHERE lookup_id = ?1")?
                .execute([&self.lookup_id[..]])?;
            return Ok(Ok(InviteLookup::Expired));
        }
        conn.prepare_cached("DELETE FROM invites WHERE lookup_id = ?1")?
            .execute([&self.lookup_id[..]])?;
        if attempts >= i64::from(self.max_attempts) {
            return Ok(Ok(InviteLookup::TooManyAttempts));
        }
        Ok(Ok(InviteLookup::Found(sealed)))
    }
}

fn check_lookup_id(lookup_id: &[u8]) -> Result<()> {
    if lookup_id.is_empty() || lookup_id.len() > MAX_LOOKUP_ID_BYTES {
        return Err(StorageError::InvalidArgument {
            what: "invite lookup id must be 1..=64 bytes",
        });
    }
    Ok(())
}
