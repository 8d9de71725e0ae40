//! The outbox: sealed pushes waiting for the relay's acknowledgement.
//!
//! Entries leave the outbox only when the relay acknowledges them (`PushAck`, which means
//! durable) or rejects them for good. Until then they are re-sent, in their original order and
//! with the same blob id (so the relay's idempotent push returns the original cursor), after
//! every reconnect. The outbox is bounded by entry count and by payload bytes; a full outbox
//! refuses new pushes instead of dropping old ones.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;
use sync_types::{BlobId, Cursor};

/// Size limits of an [`Outbox`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxLimits {
    /// Most entries held at once.
    pub max_entries: usize,
    /// Most payload bytes held at once (sum of sealed payload lengths).
    pub max_bytes: usize,
}

impl OutboxLimits {
    /// 10 000 entries, 64 MiB.
    pub const DEFAULT: OutboxLimits = OutboxLimits {
        max_entries: 10_000,
        max_bytes: 64 * 1024 * 1024,
    };
}

impl Default for OutboxLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// One pending push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    blob_id: BlobId,
    payload: Bytes,
    ttl_secs: u32,
    attempts: u32,
    in_flight: bool,
}

impl OutboxEntry {
    /// The blob id, the same on every retry.
    pub fn blob_id(&self) -> BlobId {
        self.blob_id
    }

    /// The sealed payload (cheap to clone).
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// Requested retention on the relay, in seconds (0 = relay default).
    pub fn ttl_secs(&self) -> u32 {
        self.ttl_secs
    }

    /// How many times the entry was handed out for sending (saturating).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Whether the entry was sent on the current connection and awaits its ack.
    pub fn is_in_flight(&self) -> bool {
        self.in_flight
    }
}

/// Why [`Outbox::enqueue`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OutboxError {
    /// Adding the entry would exceed the entry or byte limit; nothing was dropped.
    #[error("outbox full ({entries} entries, {bytes} bytes queued)")]
    Full {
        /// Entries currently queued.
        entries: usize,
        /// Payload bytes currently queued.
        bytes: usize,
    },
    /// The payload alone is larger than the outbox's byte limit; it can never be queued.
    #[error("payload of {len} bytes exceeds the outbox limit of {max_bytes} bytes")]
    TooLarge {
        /// Payload length.
        len: usize,
        /// The byte limit.
        max_bytes: usize,
    },
    /// An entry with this blob id is already queued.
    #[error("blob {blob_id} is already queued")]
    Duplicate {
        /// The blob id.
        blob_id: BlobId,
    },
}

/// Result of [`Outbox::ack`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AckOutcome {
    /// The entry was removed: the relay stored it durably at `cursor`.
    Acked {
        /// The removed entry.
        entry: OutboxEntry,
        /// The cursor the relay assigned.
        cursor: Cursor,
    },
    /// No such entry: already acknowledged (a duplicate ack) or never queued. Nothing changed.
    Unknown,
}

/// Result of [`Outbox::reject`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectOutcome {
    /// Permanent rejection: the entry was removed and must be reported as failed, never as sent.
    Failed {
        /// The removed entry.
        entry: OutboxEntry,
    },
    /// Temporary rejection (rate limit, quota for now): the entry is pending again, in its
    /// original position. The shell should honour the relay's retry hint before resending.
    WillRetry,
    /// No such entry. Nothing changed.
    Unknown,
}

/// Bounded FIFO of pending pushes: entries leave only on ack or permanent rejection, and are
/// re-sent in their original order, with the same blob id, after every reconnect.
#[derive(Debug, Clone, Default)]
pub struct Outbox {
    limits: OutboxLimits,
    /// Entries by insertion sequence number (= send order).
    entries: BTreeMap<u64, OutboxEntry>,
    /// Sequence numbers of entries that are not in flight.
    pending: BTreeSet<u64>,
    /// Blob id → sequence number.
    index: HashMap<BlobId, u64>,
    next_seq: u64,
    bytes: usize,
}

impl Outbox {
    /// An empty outbox with the given limits.
    pub fn new(limits: OutboxLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// The limits.
    pub fn limits(&self) -> &OutboxLimits {
        &self.limits
    }

    /// Entries queued (pending and in flight).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Payload bytes queued.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Entries sent and awaiting their ack.
    pub fn in_flight_len(&self) -> usize {
        self.entries.len().saturating_sub(self.pending.len())
    }

    /// Whether an entry with this blob id is queued.
    pub fn contains(&self, blob_id: &BlobId) -> bool {
        self.index.contains_key(blob_id)
    }

    /// The entry with this blob id.
    pub fn get(&self, blob_id: &BlobId) -> Option<&OutboxEntry> {
        self.index
            .get(blob_id)
            .and_then(|seq| self.entries.get(seq))
    }

    /// All entries in send order.
    pub fn iter(&self) -> impl Iterator<Item = &OutboxEntry> {
        self.entries.values()
    }

    /// Appends a push. Refuses (dropping nothing) when the entry or byte limit would be
    /// exceeded, or when the blob id is already queued.
    pub fn enqueue(
        &mut self,
        blob_id: BlobId,
        payload: impl Into<Bytes>,
        ttl_secs: u32,
    ) -> Result<(), OutboxError> {
        let payload = payload.into();
        if self.index.contains_key(&blob_id) {
            return Err(OutboxError::Duplicate { blob_id });
        }
        if payload.len() > self.limits.max_bytes {
            return Err(OutboxError::TooLarge {
                len: payload.len(),
                max_bytes: self.limits.max_bytes,
            });
        }
        let new_bytes = self.bytes.checked_add(payload.len());
        if self.entries.len() >= self.limits.max_entries
            || new_bytes.is_none_or(|b| b > self.limits.max_bytes)
        {
            return Err(OutboxError::Full {
                entries: self.entries.len(),
                bytes: self.bytes,
            });
        }
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.bytes = new_bytes.unwrap_or(self.bytes);
        self.entries.insert(
            seq,
            OutboxEntry {
                blob_id,
                payload,
                ttl_secs,
                attempts: 0,
                in_flight: false,
            },
        );
        self.pending.insert(seq);
        self.index.insert(blob_id, seq);
        Ok(())
    }

    /// Replaces the payload of a queued push that is not in flight (the same blob sealed
    /// again, e.g. under a newer key epoch); it keeps its place in the queue. Whether it was
    /// replaced (an entry in flight, or not queued, is left alone).
    pub fn replace_payload(&mut self, blob_id: &BlobId, payload: impl Into<Bytes>) -> bool {
        let Some(entry) = self
            .index
            .get(blob_id)
            .and_then(|seq| self.entries.get_mut(seq))
        else {
            return false;
        };
        if entry.in_flight {
            return false;
        }
        let payload = payload.into();
        self.bytes = self
            .bytes
            .saturating_sub(entry.payload.len())
            .saturating_add(payload.len());
        entry.payload = payload;
        true
    }

    /// The oldest entry that is not in flight, if any.
    pub fn next_to_send(&self) -> Option<&OutboxEntry> {
        self.pending.first().and_then(|seq| self.entries.get(seq))
    }

    /// Takes the oldest entry that is not in flight ([`next_to_send`](Self::next_to_send)) and
    /// marks it as sent on the current connection, counting an attempt. Returns a copy to put
    /// on the wire (payload clones are cheap).
    pub fn send_next(&mut self) -> Option<OutboxEntry> {
        let seq = self.pending.pop_first()?;
        let entry = self.entries.get_mut(&seq)?;
        entry.in_flight = true;
        entry.attempts = entry.attempts.saturating_add(1);
        Some(entry.clone())
    }

    /// The relay stored `blob_id` at `cursor`: removes exactly that entry (whether in flight or
    /// pending again after a reconnect). A second ack for the same blob returns
    /// [`AckOutcome::Unknown`].
    pub fn ack(&mut self, blob_id: &BlobId, cursor: Cursor) -> AckOutcome {
        match self.remove(blob_id) {
            Some(entry) => AckOutcome::Acked { entry, cursor },
            None => AckOutcome::Unknown,
        }
    }

    /// The relay refused `blob_id`. A permanent rejection removes the entry (report it as
    /// failed); a temporary one puts it back to pending in its original position.
    pub fn reject(&mut self, blob_id: &BlobId, permanent: bool) -> RejectOutcome {
        if permanent {
            return match self.remove(blob_id) {
                Some(entry) => RejectOutcome::Failed { entry },
                None => RejectOutcome::Unknown,
            };
        }
        let Some(&seq) = self.index.get(blob_id) else {
            return RejectOutcome::Unknown;
        };
        if let Some(entry) = self.entries.get_mut(&seq) {
            entry.in_flight = false;
            self.pending.insert(seq);
        }
        RejectOutcome::WillRetry
    }

    /// The connection dropped: every in-flight entry becomes pending again, so it is re-sent
    /// (same blob id, original order) on the next connection. Returns how many were requeued.
    pub fn requeue_all_in_flight(&mut self) -> usize {
        let mut count = 0;
        for (seq, entry) in &mut self.entries {
            if entry.in_flight {
                entry.in_flight = false;
                self.pending.insert(*seq);
                count += 1;
            }
        }
        count
    }

    fn remove(&mut self, blob_id: &BlobId) -> Option<OutboxEntry> {
        let seq = self.index.remove(blob_id)?;
        self.pending.remove(&seq);
        let entry = self.entries.remove(&seq)?;
        self.bytes = self.bytes.saturating_sub(entry.payload.len());
        Some(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn ids(n: usize) -> Vec<BlobId> {
        let mut rng = ChaCha20Rng::seed_from_u64(42);
        (0..n).map(|_| BlobId::random(&mut rng)).collect()
    }

    fn filled(n: usize) -> (Outbox, Vec<BlobId>) {
        let mut outbox = Outbox::default();
        let ids = ids(n);
        for (i, id) in ids.iter().enumerate() {
            outbox
                .enqueue(*id, vec![u8::try_from(i).unwrap_or(0); 10], 60)
                .expect("room");
        }
        (outbox, ids)
    }

    /// Sends everything pending, returning the blob ids in send order.
    /// An empty outbox with these limits, and `n` ids to fill it with.
    fn bounded(max_entries: usize, max_bytes: usize, n: usize) -> (Outbox, Vec<BlobId>) {
        let limits = OutboxLimits {
            max_entries,
            max_bytes,
        };
        (Outbox::new(limits), ids(n))
    }

    fn send_all(outbox: &mut Outbox) -> Vec<BlobId> {
        let mut sent = Vec::new();
        while let Some(entry) = outbox.send_next() {
            sent.push(entry.blob_id());
        }
        sent
    }

    #[test]
    fn entries_are_sent_in_fifo_order_and_not_twice() {
        let (mut outbox, ids) = filled(5);
        assert_eq!(
            outbox.next_to_send().map(OutboxEntry::blob_id),
            Some(ids[0])
        );
        assert_eq!(send_all(&mut outbox), ids);
        assert_eq!(outbox.next_to_send(), None, "everything is in flight");
        assert_eq!(outbox.in_flight_len(), 5);
        assert_eq!(outbox.len(), 5, "in-flight entries stay until acked");
    }

    #[test]
    fn send_next_marks_the_entry_in_flight_once() {
        let (mut outbox, ids) = filled(2);
        let first = outbox.next_to_send().map(OutboxEntry::blob_id);
        assert_eq!(first, Some(ids[0]));
        let sent = outbox.send_next().expect("queued");
        assert_eq!(sent.blob_id(), ids[0]);
        assert!(sent.is_in_flight());
        assert_eq!(outbox.get(&ids[0]).map(OutboxEntry::attempts), Some(1));
        assert_eq!(
            outbox.next_to_send().map(OutboxEntry::blob_id),
            Some(ids[1])
        );
    }

    #[test]
    fn ack_removes_exactly_that_entry_and_is_idempotent() {
        let (mut outbox, ids) = filled(3);
        send_all(&mut outbox);
        let bytes = outbox.bytes();
        // Acks may arrive out of order when pushes are pipelined.
        match outbox.ack(&ids[1], Cursor::new(8)) {
            AckOutcome::Acked { entry, cursor } => {
                assert_eq!(entry.blob_id(), ids[1]);
                assert_eq!(cursor, Cursor::new(8));
            }
            AckOutcome::Unknown => panic!("entry was queued"),
        }
        assert_eq!(outbox.ack(&ids[1], Cursor::new(8)), AckOutcome::Unknown);
        assert_eq!(outbox.len(), 2);
        assert_eq!(outbox.bytes(), bytes - 10);
        assert!(!outbox.contains(&ids[1]));
        let order: Vec<_> = outbox.iter().map(OutboxEntry::blob_id).collect();
        assert_eq!(order, vec![ids[0], ids[2]]);
    }

    #[test]
    fn unknown_ack_is_a_typed_result() {
        let mut outbox = Outbox::default();
        assert_eq!(outbox.ack(&ids(1)[0], Cursor::new(1)), AckOutcome::Unknown);
        assert_eq!(outbox.reject(&ids(1)[0], true), RejectOutcome::Unknown);
        assert_eq!(outbox.reject(&ids(1)[0], false), RejectOutcome::Unknown);
    }

    #[test]
    fn order_and_blob_ids_are_kept_across_reconnects() {
        let (mut outbox, ids) = filled(6);
        let mut acked = Vec::new();
        // Connection 1: send everything, only #0 is acked, then the link drops.
        assert_eq!(send_all(&mut outbox), ids);
        outbox.ack(&ids[0], Cursor::new(1));
        acked.push(ids[0]);
        assert_eq!(outbox.requeue_all_in_flight(), 5);
        // Connection 2: the rest is resent in the original order, same ids; #3 is acked.
        assert_eq!(send_all(&mut outbox), ids[1..].to_vec());
        outbox.ack(&ids[3], Cursor::new(2));
        acked.push(ids[3]);
        outbox.requeue_all_in_flight();
        // Connection 3.
        let third = send_all(&mut outbox);
        assert_eq!(third, vec![ids[1], ids[2], ids[4], ids[5]]);
        for id in &third {
            assert_eq!(outbox.get(id).map(OutboxEntry::attempts), Some(3));
            assert!(matches!(
                outbox.ack(id, Cursor::new(9)),
                AckOutcome::Acked { .. }
            ));
        }
        assert!(outbox.is_empty());
        assert_eq!(outbox.bytes(), 0);
    }

    #[test]
    fn requeue_puts_resent_entries_before_never_sent_ones() {
        let (mut outbox, ids) = filled(4);
        outbox.send_next();
        outbox.send_next();
        outbox.requeue_all_in_flight();
        assert_eq!(send_all(&mut outbox), ids);
    }

    #[test]
    fn full_outbox_refuses_and_drops_nothing() {
        let (mut outbox, ids) = bounded(2, 100, 4);
        outbox.enqueue(ids[0], vec![0; 10], 0).expect("room");
        outbox.enqueue(ids[1], vec![0; 10], 0).expect("room");
        assert_eq!(
            outbox.enqueue(ids[2], vec![0; 10], 0),
            Err(OutboxError::Full {
                entries: 2,
                bytes: 20
            })
        );
        assert_eq!(outbox.len(), 2);
        assert!(outbox.contains(&ids[0]) && outbox.contains(&ids[1]));
        // Acking frees room.
        outbox.send_next();
        outbox.ack(&ids[0], Cursor::new(1));
        outbox.enqueue(ids[2], vec![0; 10], 0).expect("room again");
    }

    #[test]
    fn byte_limit_refuses() {
        let (mut outbox, ids) = bounded(100, 25, 3);
        outbox.enqueue(ids[0], vec![0; 20], 0).expect("room");
        assert!(matches!(
            outbox.enqueue(ids[1], vec![0; 10], 0),
            Err(OutboxError::Full { .. })
        ));
        assert_eq!(
            outbox.enqueue(ids[2], vec![0; 26], 0),
            Err(OutboxError::TooLarge {
                len: 26,
                max_bytes: 25
            })
        );
        outbox.enqueue(ids[1], vec![0; 5], 0).expect("fits exactly");
        assert_eq!(outbox.bytes(), 25);
    }

    #[test]
    fn duplicate_blob_id_is_refused() {
        let (mut outbox, ids) = filled(1);
        assert_eq!(
            outbox.enqueue(ids[0], vec![1], 0),
            Err(OutboxError::Duplicate { blob_id: ids[0] })
        );
        assert_eq!(outbox.len(), 1);
    }

    #[test]
    fn permanent_rejection_reports_failure_and_removes() {
        let (mut outbox, ids) = filled(2);
        send_all(&mut outbox);
        match outbox.reject(&ids[0], true) {
            RejectOutcome::Failed { entry } => assert_eq!(entry.blob_id(), ids[0]),
            other => panic!("expected Failed, got {other:?}"),
        }
        assert!(!outbox.contains(&ids[0]));
        // Never reported as sent afterwards.
        assert_eq!(outbox.ack(&ids[0], Cursor::new(1)), AckOutcome::Unknown);
        outbox.requeue_all_in_flight();
        assert_eq!(send_all(&mut outbox), vec![ids[1]]);
    }

    #[test]
    fn temporary_rejection_keeps_position() {
        let (mut outbox, ids) = filled(3);
        send_all(&mut outbox);
        assert_eq!(outbox.reject(&ids[1], false), RejectOutcome::WillRetry);
        assert_eq!(outbox.len(), 3);
        assert_eq!(
            outbox.next_to_send().map(OutboxEntry::blob_id),
            Some(ids[1])
        );
        outbox.requeue_all_in_flight();
        assert_eq!(send_all(&mut outbox), ids);
    }

    #[test]
    fn entry_fields_are_kept() {
        let mut outbox = Outbox::default();
        let id = ids(1)[0];
        outbox.enqueue(id, b"sealed".to_vec(), 3600).expect("room");
        let e = outbox.get(&id).expect("queued");
        assert_eq!(e.payload().as_ref(), b"sealed");
        assert_eq!(e.ttl_secs(), 3600);
        assert_eq!(e.attempts(), 0);
        assert!(!e.is_in_flight());
    }
}
