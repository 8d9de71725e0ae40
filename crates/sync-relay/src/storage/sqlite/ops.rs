//! The write operations the writer applies inside a batch: push (with its idempotency checks)
//! and the invite mailbox; the removing ones are in `removal`.

use rusqlite::{Connection, OptionalExtension, params};
use sync_types::{BlobId, Cursor, GroupId};

use super::writer::{BatchCtx, GroupRow, WriteOp};
use super::{Result, clamp_i64};
use crate::storage::rules::{
    GroupCounts, InviteTake, Original, check_invite, check_lookup_id, check_push, payload_digest,
    payload_size, ttl_ms,
};
use crate::storage::{
    CommittedPush, InviteLookup, MembershipWrite, PushOutcome, PushRequest, StorageError,
};

/// A digest column as read: 32 bytes, or NULL for a row written before digests were kept.
pub(super) fn digest_column(value: Option<Vec<u8>>) -> rusqlite::Result<Option<[u8; 32]>> {
    value
        .map(|v| {
            <[u8; 32]>::try_from(v.as_slice()).map_err(|_| {
                rusqlite::Error::FromSqlConversionFailure(
                    v.len(),
                    rusqlite::types::Type::Blob,
                    "a digest is 32 bytes".into(),
                )
            })
        })
        .transpose()
}

/// The digest of a stored blob: the kept one, or (rows older than digests) its payload's.
pub(super) fn stored_digest(
    conn: &Connection,
    row: i64,
    kept: Option<[u8; 32]>,
) -> rusqlite::Result<[u8; 32]> {
    if let Some(d) = kept {
        return Ok(d);
    }
    let payload: Vec<u8> = conn
        .prepare_cached("SELECT payload FROM blobs WHERE id = ?1")?
        .query_row([row], |r| r.get(0))?;
    Ok(payload_digest(&payload))
}

/// The blob id as the group holds it (a stored blob) or remembers it (a removed one).
fn find_original(
    conn: &Connection,
    group_ref: i64,
    blob_id: &BlobId,
) -> rusqlite::Result<Option<Original>> {
    let stored: Option<(i64, i64, i64, Option<Vec<u8>>)> = conn
        .prepare_cached(
            "SELECT id, cursor, stored_at, digest FROM blobs WHERE group_ref = ?1 AND blob_id = ?2",
        )?
        .query_row(params![group_ref, &blob_id.as_bytes()[..]], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .optional()?;
    if let Some((row, cursor, stored_at, digest)) = stored {
        let digest = stored_digest(conn, row, digest_column(digest)?)?;
        return Ok(Some(Original {
            cursor,
            stored_at,
            digest,
        }));
    }
    find_removed(conn, group_ref, blob_id)
}

/// The blob id as the group remembers it after its blob was removed.
fn find_removed(
    conn: &Connection,
    group_ref: i64,
    blob_id: &BlobId,
) -> rusqlite::Result<Option<Original>> {
    let removed: Option<(i64, i64, Option<Vec<u8>>)> = conn
        .prepare_cached(
            "SELECT cursor, stored_at, digest FROM tombstones WHERE group_ref = ?1 AND blob_id = ?2",
        )?
        .query_row(params![group_ref, &blob_id.as_bytes()[..]], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    removed
        .map(|(cursor, stored_at, digest)| {
            Ok(Original {
                cursor,
                stored_at,
                digest: digest_column(digest)?.unwrap_or_default(),
            })
        })
        .transpose()
}

/// Stores a blob under the group's next cursor (or answers a retry with the original).
pub(super) struct PushOp {
    req: PushRequest,
    /// The payload's digest, computed by the caller's task (not on the writer thread).
    digest: [u8; 32],
}

impl PushOp {
    /// A push of `req`, with its payload's digest.
    pub(super) fn new(req: PushRequest) -> Self {
        let digest = payload_digest(&req.payload);
        Self { req, digest }
    }
}

impl WriteOp for PushOp {
    type Output = PushOutcome;

    fn apply(
        &mut self,
        conn: &Connection,
        ctx: &mut BatchCtx,
    ) -> rusqlite::Result<Result<PushOutcome>> {
        let req = &self.req;
        let group = ctx.group(conn, &req.group)?;
        let counts = group.as_ref().map(|g| GroupCounts {
            last_cursor: g.last_cursor,
            blob_count: g.blob_count,
            byte_count: g.byte_count,
        });
        match check_push(req, counts, &ctx.limits) {
            Ok(()) => {}
            Err(refusal) => {
                // A retry of a stored or remembered blob gets the original answer, whatever the
                // limits say now.
                if let Some(g) = &group
                    && let Some(original) = find_original(conn, g.id, &req.blob_id)?
                {
                    return Ok(ctx.answered(original.answer(&self.digest)));
                }
                return Ok(Err(refusal));
            }
        }
        let size = payload_size(req);
        let mut g = match group {
            Some(g) => {
                // A removed blob's id is remembered: a retry is answered, never stored again.
                if let Some(original) = find_removed(conn, g.id, &req.blob_id)? {
                    return Ok(ctx.answered(original.answer(&self.digest)));
                }
                g
            }
            None => {
                // A group deleted while idle comes back above every cursor it ever used.
                let floor = cursor_floor(conn)?;
                conn.prepare_cached(
                    "INSERT INTO groups
                         (group_id, last_cursor, blob_count, byte_count, last_active,
                          forgotten_through)
                     VALUES (?1, ?2, 0, 0, ?3, ?2)",
                )?
                .execute(params![
                    &req.group.as_bytes()[..],
                    floor,
                    clamp_i64(req.now_ms)
                ])?;
                ctx.delta.groups = ctx.delta.groups.saturating_add(1);
                GroupRow {
                    id: conn.last_insert_rowid(),
                    last_cursor: floor,
                    blob_count: 0,
                    byte_count: 0,
                    dirty: false,
                }
            }
        };
        // check_push made sure this does not overflow.
        let cursor = g.last_cursor.saturating_add(1);
        let ttl_ms = ttl_ms(req);
        let stored_at = clamp_i64(req.now_ms);
        let expires_at = clamp_i64(req.now_ms.saturating_add(ttl_ms));
        // The unique (group_ref, blob_id) index answers "already stored?" as part of the
        // insert: a retry inserts nothing and is then looked up.
        let inserted = conn
            .prepare_cached(
                "INSERT INTO blobs
                     (group_ref, cursor, blob_id, sender, size, stored_at, expires_at, digest,
                      payload)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
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
                &self.digest[..],
                &req.payload[..],
            ])?;
        if inserted == 0 {
            let answer = match find_original(conn, g.id, &req.blob_id)? {
                Some(original) => original.answer(&self.digest),
                None => Err(StorageError::Corrupt {
                    what: "a blob id conflicts but no blob carries it".into(),
                }),
            };
            return Ok(ctx.answered(answer));
        }
        g.last_cursor = cursor;
        g.blob_count = g.blob_count.saturating_add(1);
        g.byte_count = g.byte_count.saturating_add(size);
        ctx.update_group(req.group, g);
        ctx.delta.blobs = ctx.delta.blobs.saturating_add(1);
        ctx.delta.bytes = ctx.delta.bytes.saturating_add(size);
        let cursor = Cursor::new(cursor.unsigned_abs());
        ctx.committed.push(CommittedPush {
            group: req.group,
            cursor,
            blob_id: req.blob_id,
            sender: req.sender,
            size: u32::try_from(size).unwrap_or(u32::MAX),
        });
        Ok(Ok(PushOutcome {
            cursor,
            duplicate: false,
            stored_at_ms: stored_at.unsigned_abs(),
        }))
    }
}

/// The cursor that groups created from now on start above (the highest cursor of any group
/// deleted so far; 0 on a relay that never deleted one).
fn cursor_floor(conn: &Connection) -> rusqlite::Result<i64> {
    Ok(conn
        .prepare_cached("SELECT value FROM relay_meta WHERE key = 'cursor_floor'")?
        .query_row([], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
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
        check_invite(&lookup_id, &sealed)?;
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
        let now = clamp_i64(self.now_ms);
        match InviteTake::decide(sealed, expires_at, attempts, now, self.max_attempts) {
            InviteTake::Count => {
                conn.prepare_cached(
                    "UPDATE invites SET attempts = attempts + 1 WHERE lookup_id = ?1",
                )?
                .execute([&self.lookup_id[..]])?;
                Ok(Ok(InviteLookup::Expired))
            }
            InviteTake::Remove(answer) => {
                conn.prepare_cached("DELETE FROM invites WHERE lookup_id = ?1")?
                    .execute([&self.lookup_id[..]])?;
                Ok(Ok(answer))
            }
        }
    }
}

/// Stores a membership change (record, enrollment, grants) in the batch transaction.
pub(super) struct MembershipOp {
    pub(super) group: GroupId,
    pub(super) write: MembershipWrite,
}

impl WriteOp for MembershipOp {
    type Output = ();

    fn apply(&mut self, conn: &Connection, _ctx: &mut BatchCtx) -> rusqlite::Result<Result<()>> {
        let group = &self.group.as_bytes()[..];
        if let Some((seq, record)) = &self.write.record {
            let taken: Option<i64> = conn
                .prepare_cached("SELECT seq FROM group_records WHERE group_id = ?1 AND seq = ?2")?
                .query_row(params![group, clamp_i64(*seq)], |r| r.get(0))
                .optional()?;
            if taken.is_some() {
                return Ok(Err(StorageError::RecordConflict));
            }
            conn.prepare_cached(
                "INSERT INTO group_records (group_id, seq, record) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![group, clamp_i64(*seq), &record[..]])?;
        }
        if let Some((device, enrollment)) = &self.write.enrollment {
            conn.prepare_cached(
                "INSERT INTO enrollments (group_id, device, enrollment) VALUES (?1, ?2, ?3)
                 ON CONFLICT (group_id, device) DO UPDATE SET enrollment = excluded.enrollment",
            )?
            .execute(params![group, &device.as_bytes()[..], &enrollment[..]])?;
        }
        for (recipient, grant) in &self.write.grants {
            conn.prepare_cached(
                "INSERT INTO grants (group_id, recipient, sender, epoch, envelope)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                group,
                &recipient.as_bytes()[..],
                &grant.sender.as_bytes()[..],
                i64::from(grant.epoch),
                &grant.envelope[..]
            ])?;
        }
        Ok(Ok(()))
    }
}
