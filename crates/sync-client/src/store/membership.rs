//! What the device knows of its group's membership: the records it checked, in order, and the
//! secrets of the key epochs it holds (epoch 0's is the group secret, kept with the group).

use rusqlite::params;
use sync_crypto::{EpochSecret, KeyEpoch};
use sync_types::{BlobId, GroupId};
use zeroize::Zeroizing;

use super::{Store, blob, to_i64};
use crate::error::StoreError;

const HISTORY: &str = "history";
const NO_HISTORY: &str = "no-history";
const GRANTED: &str = "granted";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn joined_key(group: &GroupId) -> String {
    format!("joined-invite.{}", hex(group.as_bytes()))
}

fn issued_key(invite_id: [u8; 16]) -> String {
    format!("issued-invite.{}", hex(&invite_id))
}

impl Store {
    /// The group's membership records this device checked, in order.
    pub fn group_records(&self, group: &GroupId) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT record FROM group_records WHERE group_id = ?1 ORDER BY seq")?;
        let rows = stmt.query_map([blob(group.as_bytes())], |r| r.get::<_, Vec<u8>>(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Stores checked records and epoch secrets in one transaction.
    pub fn add_membership(
        &mut self,
        group: &GroupId,
        records: &[(u64, Vec<u8>)],
        secrets: &[(KeyEpoch, EpochSecret)],
    ) -> Result<(), StoreError> {
        if records.is_empty() && secrets.is_empty() {
            return Ok(());
        }
        let tx = self.conn.transaction()?;
        for (seq, record) in records {
            tx.execute(
                "INSERT OR IGNORE INTO group_records (group_id, seq, record) VALUES (?1, ?2, ?3)",
                params![blob(group.as_bytes()), to_i64(*seq), blob(record)],
            )?;
        }
        for (epoch, secret) in secrets {
            tx.execute(
                "INSERT OR IGNORE INTO epoch_secrets (group_id, epoch, secret) VALUES (?1, ?2, ?3)",
                params![
                    blob(group.as_bytes()),
                    i64::from(epoch.0),
                    blob(secret.expose_bytes())
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The secrets of the key epochs after 0 this device holds in `group`.
    pub fn epoch_secrets(
        &self,
        group: &GroupId,
    ) -> Result<Vec<(KeyEpoch, EpochSecret)>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT epoch, secret FROM epoch_secrets WHERE group_id = ?1 ORDER BY epoch",
        )?;
        let rows = stmt.query_map([blob(group.as_bytes())], |r| {
            Ok((r.get::<_, i64>(0)?, Zeroizing::new(r.get::<_, Vec<u8>>(1)?)))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (epoch, secret) = row?;
            let epoch = u32::try_from(epoch).map_err(|_| StoreError::Corrupt { what: "epoch" })?;
            let bytes =
                <[u8; 32]>::try_from(secret.as_slice()).map_err(|_| StoreError::Corrupt {
                    what: "epoch secret",
                })?;
            out.push((KeyEpoch(epoch), EpochSecret::from_bytes(bytes)));
        }
        Ok(out)
    }

    /// Remembers the invite this device joined `group` with (named in its enrollment).
    pub fn note_joined_invite(
        &self,
        group: &GroupId,
        invite_id: [u8; 16],
    ) -> Result<(), StoreError> {
        self.set_meta(&joined_key(group), &invite_id)
    }

    /// The invite this device joined `group` with, if it joined by one.
    pub fn joined_invite(&self, group: &GroupId) -> Result<Option<[u8; 16]>, StoreError> {
        Ok(self
            .meta(&joined_key(group))?
            .and_then(|b| <[u8; 16]>::try_from(b.as_slice()).ok()))
    }

    /// Remembers an invite this device made, and whether the device that joins with it gets
    /// the group's history (the secrets of the epochs before the one the invite carries).
    pub fn note_issued_invite(&self, invite_id: [u8; 16], history: bool) -> Result<(), StoreError> {
        let policy = if history { HISTORY } else { NO_HISTORY };
        self.set_meta(&issued_key(invite_id), policy.as_bytes())
    }

    /// Whether the device that joined with `invite_id` is still owed the group's history by
    /// this device (it made the invite, with history, and has not granted it yet).
    pub fn owes_history(&self, invite_id: [u8; 16]) -> Result<bool, StoreError> {
        Ok(self.meta(&issued_key(invite_id))?.as_deref() == Some(HISTORY.as_bytes()))
    }

    /// Records that the history owed for `invite_id` was granted.
    pub fn history_granted(&self, invite_id: [u8; 16]) -> Result<(), StoreError> {
        self.set_meta(&issued_key(invite_id), GRANTED.as_bytes())
    }

    /// Replaces the sealed bytes of queued pushes (sealed again under a newer key epoch, same
    /// blob ids), in one transaction.
    pub fn reseal_outbox(&mut self, pushes: &[(BlobId, Vec<u8>)]) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        for (id, payload) in pushes {
            tx.execute(
                "UPDATE outbox SET payload = ?2 WHERE blob_id = ?1",
                params![blob(id.as_bytes()), blob(payload)],
            )?;
        }
        tx.commit()?;
        Ok(())
    }
}
