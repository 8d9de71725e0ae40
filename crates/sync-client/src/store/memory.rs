//! What the device remembers of what it pushed and received, so that what a relay serves can be
//! checked: pushes settled by the relay (and the sealed copies of those it acknowledged, kept
//! until they expire on the relay), the ids of delivered blobs with their cursors, the id of
//! each relay's log, and the other devices' numbering.

use bytes::Bytes;
use rusqlite::{OptionalExtension, params};
use sync_types::{BlobId, Cursor, DeviceId, GroupId, RelayId};

use super::{Store, StoredPush, blob, to_i64, to_u64, write_cursor, write_relay_value};
use crate::error::StoreError;

impl Store {
    /// In one transaction: takes settled pushes out of the outbox (an acknowledged one is kept,
    /// sealed, until it expires on the relay), remembers delivered blobs and stores a resume
    /// cursor.
    pub fn settle(
        &mut self,
        settled: &[Settled],
        delivered: Option<&Delivered<'_>>,
        cursor: Option<(&GroupId, &RelayId, Cursor)>,
    ) -> Result<(), StoreError> {
        let delivered_or_seqs = delivered.filter(|d| !d.blobs.is_empty() || !d.senders.is_empty());
        let delivered = delivered.filter(|d| !d.blobs.is_empty());
        if settled.is_empty() && delivered_or_seqs.is_none() && cursor.is_none() {
            return Ok(());
        }
        let tx = self.conn.transaction()?;
        {
            let mut keep = tx.prepare_cached(
                "INSERT INTO sent (group_id, blob_id, cursor, payload, ttl_secs, created_ms,
                                   expires_ms)
                 SELECT group_id, blob_id, ?2, payload, ttl_secs, created_ms, ?3
                 FROM outbox WHERE blob_id = ?1
                 ON CONFLICT(group_id, blob_id) DO UPDATE SET
                     cursor = excluded.cursor, expires_ms = excluded.expires_ms",
            )?;
            let mut delete = tx.prepare_cached("DELETE FROM outbox WHERE blob_id = ?1")?;
            for s in settled {
                match s {
                    Settled::Acked {
                        blob_id,
                        cursor,
                        expires_ms,
                    } => {
                        keep.execute(params![
                            blob(blob_id.as_bytes()),
                            to_i64(cursor.get()),
                            to_i64(*expires_ms)
                        ])?;
                        delete.execute([blob(blob_id.as_bytes())])?;
                    }
                    Settled::Refused { blob_id } => {
                        delete.execute([blob(blob_id.as_bytes())])?;
                    }
                }
            }
        }
        if let Some(d) = delivered {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO delivered (group_id, blob_id, cursor, forget_ms)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(group_id, blob_id) DO UPDATE SET
                     cursor = excluded.cursor, forget_ms = excluded.forget_ms",
            )?;
            for (id, c) in d.blobs {
                stmt.execute(params![
                    blob(d.group.as_bytes()),
                    blob(id.as_bytes()),
                    to_i64(c.get()),
                    to_i64(d.forget_ms)
                ])?;
            }
        }
        if let Some((group, relay, c)) = cursor {
            write_cursor(&tx, group, relay, c)?;
        }
        if let Some(d) = delivered_or_seqs {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO sender_seqs (group_id, device_id, high, gaps) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(group_id, device_id) DO UPDATE SET
                     high = excluded.high, gaps = excluded.gaps",
            )?;
            for s in d.senders {
                let gaps = rmp_serde::to_vec(&s.gaps).map_err(|_| StoreError::Corrupt {
                    what: "sequence gaps",
                })?;
                stmt.execute(params![
                    blob(d.group.as_bytes()),
                    blob(s.device.as_bytes()),
                    to_i64(s.high),
                    gaps
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// What this device knows of `device`'s sequence numbers in `group`, if it received
    /// anything from it.
    pub fn sender_seq(
        &self,
        group: &GroupId,
        device: &DeviceId,
    ) -> Result<Option<SenderSeq>, StoreError> {
        let row: Option<(i64, Vec<u8>)> = self
            .conn
            .query_row(
                "SELECT high, gaps FROM sender_seqs WHERE group_id = ?1 AND device_id = ?2",
                params![blob(group.as_bytes()), blob(device.as_bytes())],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        row.map(|(high, gaps)| {
            let gaps = rmp_serde::from_slice(&gaps).map_err(|_| StoreError::Corrupt {
                what: "sequence gaps",
            })?;
            Ok(SenderSeq {
                device: *device,
                high: to_u64(high),
                gaps,
            })
        })
        .transpose()
    }

    /// The cursor `blob_id` was delivered at in `group`, if this device remembers delivering it.
    pub fn delivered_at(
        &self,
        group: &GroupId,
        blob_id: &BlobId,
    ) -> Result<Option<Cursor>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT cursor FROM delivered WHERE group_id = ?1 AND blob_id = ?2")?;
        let c: Option<i64> = stmt
            .query_row(
                params![blob(group.as_bytes()), blob(blob_id.as_bytes())],
                |r| r.get(0),
            )
            .optional()?;
        Ok(c.map(|c| Cursor::new(to_u64(c))))
    }

    /// The delivered blob with the highest cursor at or below `at` in `group`: a checkpoint to
    /// compare with what the relay holds at that cursor.
    pub fn checkpoint(
        &self,
        group: &GroupId,
        at: Cursor,
    ) -> Result<Option<(Cursor, BlobId)>, StoreError> {
        let row: Option<(i64, Vec<u8>)> = self
            .conn
            .query_row(
                "SELECT cursor, blob_id FROM delivered
                 WHERE group_id = ?1 AND cursor > 0 AND cursor <= ?2
                 ORDER BY cursor DESC LIMIT 1",
                params![blob(group.as_bytes()), to_i64(at.get())],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        row.map(|(c, id)| {
            let id = <[u8; 16]>::try_from(id.as_slice())
                .map_err(|_| StoreError::Corrupt { what: "blob id" })?;
            Ok((Cursor::new(to_u64(c)), BlobId::from_bytes(id)))
        })
        .transpose()
    }

    /// The store id of the relay's log last seen for `group` on `relay_id`.
    pub fn relay_log(
        &self,
        group: &GroupId,
        relay_id: &RelayId,
    ) -> Result<Option<u64>, StoreError> {
        let v = self.relay_value(
            "SELECT store_id FROM relay_logs WHERE group_id = ?1 AND relay_id = ?2",
            group,
            relay_id,
        )?;
        Ok(v.map(|v| u64::from_be_bytes(v.to_be_bytes())))
    }

    /// The highest resume cursor of `group` on any relay whose log was last seen under
    /// `store_id`: relays that share a store serve one log, so a cursor reached through one of
    /// them holds on the others.
    pub fn log_cursor(&self, group: &GroupId, store_id: u64) -> Result<Option<Cursor>, StoreError> {
        let top: Option<i64> = self.conn.query_row(
            "SELECT MAX(c.resume) FROM cursors c JOIN relay_logs l
               ON l.group_id = c.group_id AND l.relay_id = c.relay_id
             WHERE c.group_id = ?1 AND l.store_id = ?2",
            params![
                blob(group.as_bytes()),
                i64::from_be_bytes(store_id.to_be_bytes())
            ],
            |r| r.get(0),
        )?;
        Ok(top.map(|c| Cursor::new(to_u64(c))))
    }

    /// In one transaction: records the relay's log id for `group` on `relay_id` and, if
    /// `rewound` (the log went back to `resume`, or started afresh), moves the resume cursor to
    /// `resume`. The delivered blob ids stay, so what the relay serves again is not delivered
    /// twice; those delivered above `resume` lose their place (cursor 0: the relay lost it, and
    /// a sender may push them again under another cursor).
    pub fn set_relay_log(
        &mut self,
        group: &GroupId,
        relay_id: &RelayId,
        store_id: u64,
        resume: Cursor,
        rewound: bool,
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        write_relay_value(
            &tx,
            "INSERT INTO relay_logs (group_id, relay_id, store_id) VALUES (?1, ?2, ?3)
             ON CONFLICT(group_id, relay_id) DO UPDATE SET store_id = excluded.store_id",
            group,
            relay_id,
            i64::from_be_bytes(store_id.to_be_bytes()),
        )?;
        if rewound {
            write_cursor(&tx, group, relay_id, resume)?;
            tx.execute(
                "UPDATE delivered SET cursor = 0 WHERE group_id = ?1 AND cursor > ?2",
                params![blob(group.as_bytes()), to_i64(resume.get())],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Forgets delivered blob ids whose time is up (`forget_ms` before `now_ms`) and the kept
    /// copies of acknowledged pushes that have expired on the relay; returns how many rows.
    pub fn forget_delivered(&self, now_ms: u64) -> Result<usize, StoreError> {
        let ids = self.conn.execute(
            "DELETE FROM delivered WHERE forget_ms < ?1",
            [to_i64(now_ms)],
        )?;
        let sent = self
            .conn
            .execute("DELETE FROM sent WHERE expires_ms < ?1", [to_i64(now_ms)])?;
        Ok(ids + sent)
    }

    /// The acknowledged pushes of `group` that the relay put after `after` and that have not
    /// expired at `now_ms` (nor wait in the outbox again), oldest first, each with the
    /// retention it has left (at least a second): what a relay whose log went back to `after`
    /// no longer has.
    pub fn sent_after(
        &self,
        group: &GroupId,
        after: Cursor,
        now_ms: u64,
    ) -> Result<Vec<StoredPush>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT blob_id, payload, expires_ms, created_ms FROM sent
             WHERE group_id = ?1 AND cursor > ?2 AND expires_ms > ?3
               AND blob_id NOT IN (SELECT blob_id FROM outbox)
             ORDER BY cursor",
        )?;
        let rows = stmt.query_map(
            params![blob(group.as_bytes()), to_i64(after.get()), to_i64(now_ms)],
            |r| <(Vec<u8>, Vec<u8>, i64, i64)>::try_from(r),
        )?;
        let mut out = Vec::new();
        for row in rows {
            let (id, payload, expires, created) = row?;
            let id = <[u8; 16]>::try_from(id.as_slice())
                .map_err(|_| StoreError::Corrupt { what: "blob id" })?;
            let left_secs = to_u64(expires).saturating_sub(now_ms).div_ceil(1000).max(1);
            out.push(StoredPush {
                blob_id: BlobId::from_bytes(id),
                payload: Bytes::from(payload),
                ttl_secs: u32::try_from(left_secs).unwrap_or(u32::MAX),
                created_ms: to_u64(created),
            });
        }
        Ok(out)
    }
}

/// A push the relay answered for good, taken out of the outbox by [`Store::settle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Stored by the relay at `cursor`: kept, sealed, until `expires_ms` (when it expires on
    /// the relay), to push again if the relay's log goes back in time.
    Acked {
        /// The push.
        blob_id: BlobId,
        /// Where the relay put it.
        cursor: Cursor,
        /// When it expires on the relay, milliseconds since the Unix epoch.
        expires_ms: u64,
    },
    /// Refused for good: dropped.
    Refused {
        /// The push.
        blob_id: BlobId,
    },
}

/// Blobs delivered to the app, to remember in [`Store::settle`].
#[derive(Debug, Clone, Copy)]
pub struct Delivered<'a> {
    /// Their group.
    pub group: &'a GroupId,
    /// `(blob id, cursor)` of each.
    pub blobs: &'a [(BlobId, Cursor)],
    /// When to forget them, milliseconds since the Unix epoch.
    pub forget_ms: u64,
    /// What is known of the senders' sequence numbers now (those that changed).
    pub senders: &'a [SenderSeq],
}

/// What a device knows of another device's sequence numbers in a group: the highest it
/// received, and the runs below it that have not arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderSeq {
    /// The sender.
    pub device: DeviceId,
    /// The highest sequence number received from it.
    pub high: u64,
    /// Runs below `high` not received (yet), oldest first.
    pub gaps: Vec<SeqGap>,
}

/// A run of a sender's sequence numbers that has not arrived although a later one did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SeqGap {
    /// The first missing number.
    pub from: u64,
    /// The last missing number.
    pub to: u64,
    /// When it was noticed, milliseconds since the Unix epoch.
    pub noticed_ms: u64,
    /// The cursor of the blob that revealed it.
    pub noticed_at: Cursor,
    /// Already reported as missing.
    pub reported: bool,
}
