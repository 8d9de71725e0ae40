//! Pushes: each writer task takes the pushes queued for its share of the groups and commits
//! them together in one transaction (group commit), answering every pusher after the commit.
//!
//! In the transaction, the batch's groups are locked in id order (`FOR UPDATE`), so every
//! writer of every relay that pushes to a group waits for the one before it: cursors are
//! assigned under that lock and committed before the next writer can read them, and a reader
//! never sees cursor N+1 before N. The commit's notification (`pg_notify`) is part of the
//! transaction: other relays hear of exactly the pushes that were committed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use deadpool_postgres::{Pool, Transaction};
use sync_types::{BlobId, Cursor, GroupId};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::types::ToSql;

use super::listen::{PUSH_CHANNEL, encode_pushes};
use super::{
    Result, Shared, add_counters, exec, is_retryable, pg_error, pool_client, row_opt, rows,
};
use crate::storage::rules::{GroupCounts, Original, check_push, clamp_i64, payload_size, ttl_ms};
use crate::storage::{CommitReport, CommittedPush, PushOutcome, PushRequest, StorageError};

/// How often a batch is tried again after a deadlock, a serialization failure or a concurrent
/// creation of one of its groups (all of which roll it back whole).
const ATTEMPTS: usize = 5;

/// A queued push and where its answer goes.
pub(super) struct Job {
    pub(super) req: PushRequest,
    /// The payload's digest, computed by the pushing task.
    pub(super) digest: [u8; 32],
    pub(super) reply: oneshot::Sender<Result<PushOutcome>>,
}

/// Commits the pushes of `jobs` in batches of at most `max_batch` until the queue closes.
pub(super) async fn run(
    pool: Pool,
    mut jobs: mpsc::Receiver<Job>,
    shared: Arc<Shared>,
    shard: i32,
    max_batch: usize,
) {
    while let Some(first) = jobs.recv().await {
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match jobs.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let result = commit_with_retries(&pool, &batch, &shared, shard).await;
        shared.note_batch(batch.len(), result.is_ok());
        match result {
            Ok((answers, report)) => {
                if let Some(hook) = shared.hook()
                    && (!report.pushes.is_empty() || report.duplicates > 0)
                {
                    // The hook may block (it waits for room in the fan-out queue).
                    let _ = tokio::task::spawn_blocking(move || hook(report)).await;
                }
                for (job, answer) in batch.into_iter().zip(answers) {
                    let _ = job.reply.send(answer);
                }
            }
            Err(e) => {
                for job in batch {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

type Answers = (Vec<Result<PushOutcome>>, CommitReport);

async fn commit_with_retries(
    pool: &Pool,
    batch: &[Job],
    shared: &Shared,
    shard: i32,
) -> Result<Answers> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut client = pool_client(pool).await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        match commit_batch(&tx, batch, shared, shard).await {
            Ok(Some(answers)) => {
                tx.commit().await.map_err(pg_error)?;
                return Ok(answers);
            }
            // A group of the batch was created by another relay meanwhile.
            Ok(None) if attempt < ATTEMPTS => {}
            Ok(None) => {
                return Err(StorageError::Unavailable(
                    "groups kept being created concurrently".into(),
                ));
            }
            Err(e) if attempt < ATTEMPTS && is_retryable(&e) => {
                tracing::debug!(error = %e, attempt, "push batch rolled back; trying again");
            }
            Err(e) => return Err(pg_error(e)),
        }
    }
}

/// A group as the batch changes it.
struct GroupState {
    counts: GroupCounts,
    /// Not stored yet (the batch creates it).
    new: bool,
    /// Changed by the batch.
    dirty: bool,
}

/// One new blob row.
struct NewBlob<'a> {
    req: &'a PushRequest,
    digest: &'a [u8; 32],
    cursor: i64,
    size: i64,
    stored_at: i64,
    expires_at: i64,
}

/// Applies the batch in `tx`; `None` when one of its new groups was created concurrently (the
/// transaction must be rolled back and tried again).
async fn commit_batch(
    tx: &Transaction<'_>,
    batch: &[Job],
    shared: &Shared,
    shard: i32,
) -> std::result::Result<Option<Answers>, tokio_postgres::Error> {
    let mut ids: Vec<GroupId> = batch.iter().map(|j| j.req.group).collect();
    ids.sort_unstable_by_key(|g| *g.as_bytes());
    ids.dedup();
    let id_bytes: Vec<&[u8]> = ids.iter().map(|g| &g.as_bytes()[..]).collect();
    // One round trip: the statements are pipelined on the connection and run in this order,
    // so the blob ids are looked up under the groups' locks.
    let lock_params: [&(dyn ToSql + Sync); 1] = [&id_bytes];
    let (locked, floor, mut originals) = tokio::try_join!(
        rows(
            tx,
            "SELECT group_id, last_cursor, blob_count, byte_count FROM groups
             WHERE group_id = ANY($1) ORDER BY group_id FOR UPDATE",
            &lock_params,
        ),
        row_opt(
            tx,
            "SELECT value FROM relay_meta WHERE key = 'cursor_floor'",
            &[],
        ),
        find_originals(tx, batch),
    )?;
    let floor: i64 = floor.map_or(0, |r| r.get(0));
    let mut groups: BTreeMap<GroupId, GroupState> = BTreeMap::new();
    for row in locked {
        let id: &[u8] = row.get(0);
        if let Ok(g) = GroupId::try_from_slice(id) {
            groups.insert(
                g,
                GroupState {
                    counts: GroupCounts {
                        last_cursor: row.get(1),
                        blob_count: row.get(2),
                        byte_count: row.get(3),
                    },
                    new: false,
                    dirty: false,
                },
            );
        }
    }

    let mut answers = Vec::with_capacity(batch.len());
    let mut new_rows: Vec<NewBlob<'_>> = Vec::new();
    let mut report = CommitReport::default();
    for job in batch {
        let req = &job.req;
        if let Some(original) = originals.get(&(req.group, req.blob_id)) {
            let answer = original.answer(&job.digest);
            if answer.is_ok() {
                report.duplicates += 1;
            }
            answers.push(answer);
            continue;
        }
        let existing = groups.get(&req.group).map(|g| g.counts);
        if let Err(refusal) = check_push(req, existing, &shared.limits) {
            answers.push(Err(refusal));
            continue;
        }
        let g = groups.entry(req.group).or_insert(GroupState {
            counts: GroupCounts {
                last_cursor: floor,
                ..GroupCounts::default()
            },
            new: true,
            dirty: false,
        });
        let size = payload_size(req);
        // check_push made sure this does not overflow.
        let cursor = g.counts.last_cursor.saturating_add(1);
        g.counts.last_cursor = cursor;
        g.counts.blob_count = g.counts.blob_count.saturating_add(1);
        g.counts.byte_count = g.counts.byte_count.saturating_add(size);
        g.dirty = true;
        let stored_at = clamp_i64(req.now_ms);
        let expires_at = clamp_i64(req.now_ms.saturating_add(ttl_ms(req)));
        // A second push of the same id in this batch is a retry of this one.
        originals.insert(
            (req.group, req.blob_id),
            Original {
                cursor,
                stored_at,
                digest: job.digest,
            },
        );
        new_rows.push(NewBlob {
            req,
            digest: &job.digest,
            cursor,
            size,
            stored_at,
            expires_at,
        });
        report.pushes.push(CommittedPush {
            group: req.group,
            cursor: Cursor::new(cursor.unsigned_abs()),
            blob_id: req.blob_id,
            sender: req.sender,
            size: u32::try_from(size).unwrap_or(u32::MAX),
        });
        answers.push(Ok(PushOutcome {
            cursor: Cursor::new(cursor.unsigned_abs()),
            duplicate: false,
            stored_at_ms: stored_at.unsigned_abs(),
        }));
    }
    if new_rows.is_empty() {
        return Ok(Some((answers, report)));
    }

    // The batch's groups with their new counters: new groups are created above the cursor
    // floor, with the first push's clock as activity; the others (locked above) are updated.
    let now = new_rows.first().map_or(0, |r| r.stored_at);
    let dirty: Vec<(&GroupId, &GroupState)> = groups.iter().filter(|(_, g)| g.dirty).collect();
    let d_ids: Vec<&[u8]> = dirty.iter().map(|(id, _)| &id.as_bytes()[..]).collect();
    let d_last: Vec<i64> = dirty.iter().map(|(_, g)| g.counts.last_cursor).collect();
    let d_count: Vec<i64> = dirty.iter().map(|(_, g)| g.counts.blob_count).collect();
    let d_bytes: Vec<i64> = dirty.iter().map(|(_, g)| g.counts.byte_count).collect();
    let blobs = i64::try_from(new_rows.len()).unwrap_or(i64::MAX);
    let bytes = new_rows
        .iter()
        .map(|r| r.size)
        .fold(0i64, i64::saturating_add);
    let new_groups = dirty.iter().filter(|(_, g)| g.new).count();
    let texts = encode_pushes(shared.instance, &report.pushes);
    let group_params: [&(dyn ToSql + Sync); 6] =
        [&d_ids, &d_last, &d_count, &d_bytes, &now, &floor];
    // Pipelined (one round trip); none of these depends on another.
    let (written, (), (), ()) = tokio::try_join!(
        rows(
            tx,
            "INSERT INTO groups
                 (group_id, last_cursor, blob_count, byte_count, last_active, forgotten_through)
             SELECT u.id, u.c, u.n, u.b, $5, $6
             FROM unnest($1::bytea[], $2::int8[], $3::int8[], $4::int8[]) AS u(id, c, n, b)
             ON CONFLICT (group_id) DO UPDATE SET last_cursor = excluded.last_cursor,
                 blob_count = excluded.blob_count, byte_count = excluded.byte_count
             RETURNING (xmax = 0) AS inserted",
            &group_params,
        ),
        insert_blobs(tx, &new_rows),
        add_counters(
            tx,
            shard,
            i64::try_from(new_groups).unwrap_or(i64::MAX),
            blobs,
            bytes
        ),
        async {
            for text in &texts {
                rows(
                    tx,
                    "SELECT pg_notify($1, $2)",
                    &[&PUSH_CHANNEL, &text.as_str()],
                )
                .await?;
            }
            Ok(())
        },
    )?;
    // A group the batch took for new was created by another relay since it was looked up
    // (it was then updated instead of inserted): roll back and try again, when it is locked
    // like any other.
    let inserted = written.iter().filter(|r| r.get::<_, bool>(0)).count();
    if inserted != new_groups {
        return Ok(None);
    }
    Ok(Some((answers, report)))
}

/// The batch's blob ids as their groups hold (stored blobs) or remember (removed ones) them.
async fn find_originals(
    tx: &Transaction<'_>,
    batch: &[Job],
) -> std::result::Result<HashMap<(GroupId, BlobId), Original>, tokio_postgres::Error> {
    let gs: Vec<&[u8]> = batch.iter().map(|j| &j.req.group.as_bytes()[..]).collect();
    let bs: Vec<&[u8]> = batch
        .iter()
        .map(|j| &j.req.blob_id.as_bytes()[..])
        .collect();
    let mut found = HashMap::new();
    let params: [&(dyn ToSql + Sync); 2] = [&gs, &bs];
    let (stored, removed) = tokio::try_join!(
        rows(
            tx,
            "SELECT t.group_id, t.blob_id, t.cursor, t.stored_at, t.digest FROM blobs t
             JOIN unnest($1::bytea[], $2::bytea[]) AS k(g, b)
               ON t.group_id = k.g AND t.blob_id = k.b",
            &params,
        ),
        rows(
            tx,
            "SELECT t.group_id, t.blob_id, t.cursor, t.stored_at, t.digest FROM tombstones t
             JOIN unnest($1::bytea[], $2::bytea[]) AS k(g, b)
               ON t.group_id = k.g AND t.blob_id = k.b",
            &params,
        ),
    )?;
    for found_rows in [stored, removed] {
        for row in found_rows {
            let (Ok(g), Ok(b)) = (
                GroupId::try_from_slice(row.get::<_, &[u8]>(0)),
                <[u8; 16]>::try_from(row.get::<_, &[u8]>(1)).map(BlobId::from_bytes),
            ) else {
                continue;
            };
            let digest = <[u8; 32]>::try_from(row.get::<_, &[u8]>(4)).unwrap_or_default();
            found.insert(
                (g, b),
                Original {
                    cursor: row.get(2),
                    stored_at: row.get(3),
                    digest,
                },
            );
        }
    }
    Ok(found)
}

async fn insert_blobs(
    tx: &Transaction<'_>,
    rows: &[NewBlob<'_>],
) -> std::result::Result<(), tokio_postgres::Error> {
    let group: Vec<&[u8]> = rows.iter().map(|r| &r.req.group.as_bytes()[..]).collect();
    let cursor: Vec<i64> = rows.iter().map(|r| r.cursor).collect();
    let blob_id: Vec<&[u8]> = rows.iter().map(|r| &r.req.blob_id.as_bytes()[..]).collect();
    let sender: Vec<&[u8]> = rows.iter().map(|r| &r.req.sender.as_bytes()[..]).collect();
    let size: Vec<i64> = rows.iter().map(|r| r.size).collect();
    let stored_at: Vec<i64> = rows.iter().map(|r| r.stored_at).collect();
    let expires_at: Vec<i64> = rows.iter().map(|r| r.expires_at).collect();
    let digest: Vec<&[u8]> = rows.iter().map(|r| &r.digest[..]).collect();
    let payload: Vec<&[u8]> = rows.iter().map(|r| &r.req.payload[..]).collect();
    exec(
        tx,
        "INSERT INTO blobs
                 (group_id, cursor, blob_id, sender, size, stored_at, expires_at, digest,
                  payload)
             SELECT * FROM unnest($1::bytea[], $2::int8[], $3::bytea[], $4::bytea[],
                                  $5::int8[], $6::int8[], $7::int8[], $8::bytea[], $9::bytea[])",
        &[
            &group,
            &cursor,
            &blob_id,
            &sender,
            &size,
            &stored_at,
            &expires_at,
            &digest,
            &payload,
        ],
    )
    .await?;
    Ok(())
}
