//! Every write but pushes, each in its own transaction: delete, the removal of expired blobs,
//! forgetting removed ids, deleting idle groups, the invite mailbox and membership changes.
//!
//! Removal is safe to run from several relays at once: rows are claimed with `FOR UPDATE SKIP
//! LOCKED`, so each expired blob is removed (and taken off its group's counters) by exactly one
//! of them.

use std::collections::BTreeMap;
use std::time::Duration;

use deadpool_postgres::Transaction;
use sync_types::{BlobId, GroupId};
use tokio_postgres::Row;

use super::listen::GROUP_CHANNEL;
use super::{PgResult, PostgresStorage, Result, add_counters, exec, row_opt, rows};
use crate::storage::rules::{InviteTake, check_invite, check_lookup_id, clamp_i64, millis};
use crate::storage::{InviteLookup, MembershipWrite, StorageError};

/// Remembers removed blobs (rows of `group_id, blob_id, cursor, stored_at, digest, size`) until
/// `forget_at` and takes them off their groups' counters and the totals; returns how many.
async fn remember_removed(
    tx: &Transaction<'_>,
    removed: &[Row],
    forget_at: u64,
    shard: i32,
) -> PgResult<u64> {
    if removed.is_empty() {
        return Ok(0);
    }
    let group: Vec<&[u8]> = removed.iter().map(|r| r.get(0)).collect();
    let blob: Vec<&[u8]> = removed.iter().map(|r| r.get(1)).collect();
    let cursor: Vec<i64> = removed.iter().map(|r| r.get(2)).collect();
    let stored_at: Vec<i64> = removed.iter().map(|r| r.get(3)).collect();
    let digest: Vec<&[u8]> = removed.iter().map(|r| r.get(4)).collect();
    exec(
        tx,
        "INSERT INTO tombstones (group_id, blob_id, cursor, stored_at, digest, forget_at)
             SELECT g, b, c, s, d, $6
             FROM unnest($1::bytea[], $2::bytea[], $3::int8[], $4::int8[], $5::bytea[])
                  AS u(g, b, c, s, d)
             ON CONFLICT (group_id, blob_id) DO UPDATE SET forget_at = excluded.forget_at",
        &[
            &group,
            &blob,
            &cursor,
            &stored_at,
            &digest,
            &clamp_i64(forget_at),
        ],
    )
    .await?;
    // Per group, in id order (the order pushes lock groups in).
    let mut per_group: BTreeMap<&[u8], (i64, i64)> = BTreeMap::new();
    for r in removed {
        let e = per_group.entry(r.get(0)).or_default();
        e.0 += 1;
        e.1 = e.1.saturating_add(r.get::<_, i64>(5));
    }
    let ids: Vec<&[u8]> = per_group.keys().copied().collect();
    let blobs: Vec<i64> = per_group.values().map(|v| v.0).collect();
    let bytes: Vec<i64> = per_group.values().map(|v| v.1).collect();
    exec(
        tx,
        "UPDATE groups AS g SET blob_count = g.blob_count - u.n, byte_count = g.byte_count - u.b
             FROM unnest($1::bytea[], $2::int8[], $3::int8[]) AS u(id, n, b)
             WHERE g.group_id = u.id",
        &[&ids, &blobs, &bytes],
    )
    .await?;
    let n = i64::try_from(removed.len()).unwrap_or(i64::MAX);
    let total: i64 = bytes.iter().fold(0, |a, b| a.saturating_add(*b));
    add_counters(tx, shard, 0, -n, total.saturating_neg()).await?;
    Ok(removed.len() as u64)
}

impl PostgresStorage {
    pub(super) async fn delete_blob(
        &self,
        group: GroupId,
        blob_id: BlobId,
        now_ms: u64,
    ) -> Result<bool> {
        let forget_at = now_ms.saturating_add(millis(self.inner.limits.forget_ids_after));
        let shard = self.inner.shard;
        self.in_transaction(move |tx| {
            Box::pin(async move {
                // The group first, as pushes lock it.
                if row_opt(
                    tx,
                    "SELECT 1 FROM groups WHERE group_id = $1 FOR UPDATE",
                    &[&&group.as_bytes()[..]],
                )
                .await?
                .is_none()
                {
                    return Ok(false);
                }
                let removed = rows(
                    tx,
                    "DELETE FROM blobs WHERE group_id = $1 AND blob_id = $2
                         RETURNING group_id, blob_id, cursor, stored_at, digest, size",
                    &[&&group.as_bytes()[..], &&blob_id.as_bytes()[..]],
                )
                .await?;
                Ok(remember_removed(tx, &removed, forget_at, shard).await? > 0)
            })
        })
        .await
    }

    pub(super) async fn remove_expired(&self, now_ms: u64, batch: u32) -> Result<u64> {
        let forget_at = now_ms.saturating_add(millis(self.inner.limits.forget_ids_after));
        let shard = self.inner.shard;
        let now = clamp_i64(now_ms);
        let limit = i64::from(batch);
        self.in_transaction(move |tx| {
            Box::pin(async move {
                let removed = rows(
                    tx,
                    "DELETE FROM blobs WHERE (group_id, cursor) IN
                             (SELECT group_id, cursor FROM blobs WHERE expires_at <= $1
                              ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED)
                         RETURNING group_id, blob_id, cursor, stored_at, digest, size",
                    &[&now, &limit],
                )
                .await?;
                let n = remember_removed(tx, &removed, forget_at, shard).await?;
                exec(
                    tx,
                    "DELETE FROM invites WHERE lookup_id IN
                             (SELECT lookup_id FROM invites WHERE expires_at <= $1
                              LIMIT $2 FOR UPDATE SKIP LOCKED)",
                    &[&now, &limit],
                )
                .await?;
                Ok(n)
            })
        })
        .await
    }

    pub(super) async fn forget_ids(&self, now_ms: u64, batch: u32) -> Result<u64> {
        let now = clamp_i64(now_ms);
        let limit = i64::from(batch);
        self.in_transaction(move |tx| {
            Box::pin(async move {
                let forgotten = rows(
                    tx,
                    "DELETE FROM tombstones WHERE (group_id, blob_id) IN
                             (SELECT group_id, blob_id FROM tombstones WHERE forget_at <= $1
                              ORDER BY forget_at LIMIT $2 FOR UPDATE SKIP LOCKED)
                         RETURNING group_id, cursor",
                    &[&now, &limit],
                )
                .await?;
                // Holes at or below a forgotten tombstone's cursor are removals the relay no
                // longer lists one by one.
                let mut top: BTreeMap<&[u8], i64> = BTreeMap::new();
                for r in &forgotten {
                    let e = top.entry(r.get(0)).or_insert(0);
                    *e = (*e).max(r.get(1));
                }
                let ids: Vec<&[u8]> = top.keys().copied().collect();
                let tops: Vec<i64> = top.values().copied().collect();
                exec(
                    tx,
                    "UPDATE groups AS g SET forgotten_through = GREATEST(g.forgotten_through, u.t)
                         FROM unnest($1::bytea[], $2::int8[]) AS u(id, t) WHERE g.group_id = u.id",
                    &[&ids, &tops],
                )
                .await?;
                Ok(forgotten.len() as u64)
            })
        })
        .await
    }

    pub(super) async fn drop_idle(
        &self,
        seen: Vec<GroupId>,
        now_ms: u64,
        idle_for: Duration,
        batch: u32,
    ) -> Result<u64> {
        let shard = self.inner.shard;
        let now = clamp_i64(now_ms);
        let idle_before = clamp_i64(now_ms.saturating_sub(millis(idle_for)));
        let limit = i64::from(batch);
        let mut seen: Vec<Vec<u8>> = seen.iter().map(|g| g.as_bytes().to_vec()).collect();
        seen.sort_unstable();
        self.in_transaction(move |tx| {
            let seen = seen.clone();
            Box::pin(async move {
                exec(
                    tx,
                    "UPDATE groups SET last_active = GREATEST(last_active, $2)
                         WHERE group_id = ANY($1)",
                    &[&seen, &now],
                )
                .await?;
                let idle = rows(
                    tx,
                    "SELECT g.group_id, g.last_cursor FROM groups g
                         WHERE g.blob_count = 0 AND g.last_active <= $1
                           AND NOT EXISTS (SELECT 1 FROM tombstones t WHERE t.group_id = g.group_id)
                         ORDER BY g.last_active LIMIT $2 FOR UPDATE SKIP LOCKED",
                    &[&idle_before, &limit],
                )
                .await?;
                let Some(highest) = idle.iter().map(|r| r.get::<_, i64>(1)).max() else {
                    return Ok(0);
                };
                exec(
                    tx,
                    "INSERT INTO relay_meta (key, value) VALUES ('cursor_floor', $1)
                         ON CONFLICT (key) DO UPDATE
                         SET value = GREATEST(relay_meta.value, excluded.value)",
                    &[&highest],
                )
                .await?;
                let ids: Vec<&[u8]> = idle.iter().map(|r| r.get(0)).collect();
                exec(tx, "DELETE FROM groups WHERE group_id = ANY($1)", &[&ids]).await?;
                let n = i64::try_from(idle.len()).unwrap_or(i64::MAX);
                add_counters(tx, shard, -n, 0, 0).await?;
                Ok(idle.len() as u64)
            })
        })
        .await
    }

    pub(super) async fn put_invite(
        &self,
        lookup_id: Vec<u8>,
        sealed: Vec<u8>,
        expires_ms: u64,
    ) -> Result<()> {
        check_invite(&lookup_id, &sealed)?;
        let expires = clamp_i64(expires_ms);
        let stored = self
            .in_transaction(move |tx| {
                let (lookup_id, sealed) = (lookup_id.clone(), sealed.clone());
                Box::pin(async move {
                    if exec(
                        tx,
                        "INSERT INTO invites (lookup_id, sealed, expires_at, attempts)
                             VALUES ($1, $2, $3, 0) ON CONFLICT (lookup_id) DO NOTHING",
                        &[&lookup_id, &sealed, &expires],
                    )
                    .await?
                        == 1
                    {
                        return Ok(true);
                    }
                    Ok(row_opt(
                        tx,
                        "SELECT sealed FROM invites WHERE lookup_id = $1",
                        &[&lookup_id],
                    )
                    .await?
                    .is_some_and(|r| r.get::<_, &[u8]>(0) == sealed.as_slice()))
                })
            })
            .await?;
        if stored {
            Ok(())
        } else {
            Err(StorageError::InviteExists)
        }
    }

    pub(super) async fn take_invite(
        &self,
        lookup_id: Vec<u8>,
        now_ms: u64,
        max_attempts: u32,
    ) -> Result<InviteLookup> {
        check_lookup_id(&lookup_id)?;
        let now = clamp_i64(now_ms);
        self.in_transaction(move |tx| {
            let lookup_id = lookup_id.clone();
            Box::pin(async move {
                let Some(row) = row_opt(
                    tx,
                    "SELECT sealed, expires_at, attempts FROM invites WHERE lookup_id = $1
                         FOR UPDATE",
                    &[&lookup_id],
                )
                .await?
                else {
                    return Ok(InviteLookup::NotFound);
                };
                let (sealed, expires_at, attempts): (Vec<u8>, i64, i64) =
                    (row.get(0), row.get(1), row.get(2));
                match InviteTake::decide(sealed, expires_at, attempts, now, max_attempts) {
                    InviteTake::Count => {
                        exec(
                            tx,
                            "UPDATE invites SET attempts = attempts + 1 WHERE lookup_id = $1",
                            &[&lookup_id],
                        )
                        .await?;
                        Ok(InviteLookup::Expired)
                    }
                    InviteTake::Remove(answer) => {
                        exec(
                            tx,
                            "DELETE FROM invites WHERE lookup_id = $1",
                            &[&lookup_id],
                        )
                        .await?;
                        Ok(answer)
                    }
                }
            })
        })
        .await
    }

    pub(super) async fn write_membership(
        &self,
        group: GroupId,
        write: MembershipWrite,
    ) -> Result<()> {
        let instance = self.inner.instance;
        let stored = self
            .in_transaction(move |tx| {
                let write = write.clone();
                Box::pin(async move {
                    let g = &group.as_bytes()[..];
                    // A record whose sequence number is taken stores nothing.
                    if let Some((seq, record)) = &write.record
                        && exec(
                            tx,
                            "INSERT INTO group_records (group_id, seq, record)
                             VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                            &[&g, &clamp_i64(*seq), record],
                        )
                        .await?
                            == 0
                    {
                        return Ok(false);
                    }
                    if let Some((device, enrollment)) = &write.enrollment {
                        exec(
                            tx,
                            "INSERT INTO enrollments (group_id, device, enrollment)
                                 VALUES ($1, $2, $3) ON CONFLICT (group_id, device)
                                 DO UPDATE SET enrollment = excluded.enrollment",
                            &[&g, &&device.as_bytes()[..], enrollment],
                        )
                        .await?;
                    }
                    for (recipient, grant) in &write.grants {
                        exec(
                            tx,
                            "INSERT INTO grants (group_id, recipient, sender, epoch, envelope)
                             VALUES ($1, $2, $3, $4, $5)",
                            &[
                                &g,
                                &&recipient.as_bytes()[..],
                                &&grant.sender.as_bytes()[..],
                                &i64::from(grant.epoch),
                                &grant.envelope,
                            ],
                        )
                        .await?;
                    }
                    // Other relays reload the group's state and tell their sessions.
                    let text = super::listen::encode_group(instance, &group);
                    rows(tx, "SELECT pg_notify($1, $2)", &[&GROUP_CHANNEL, &text]).await?;
                    Ok(true)
                })
            })
            .await?;
        if stored {
            Ok(())
        } else {
            Err(StorageError::RecordConflict)
        }
    }
}
