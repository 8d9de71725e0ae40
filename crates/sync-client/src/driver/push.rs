//! Pushes on the device's side: accepted into the session's outbox (durable before they are
//! reported queued), and settled by the relay's acknowledgement or refusal for good. The session
//! sends them within the in-flight window and holds the pipeline while a deferral lasts.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sync_core::{ConnectionState, OutboxError};
use sync_types::{BlobId, Cursor, WireError, unix_ms};
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use super::{Driver, PushReply, rejected};
use crate::error::{ClientError, StoreError};
use crate::store::{Settled, StoredPush};
use crate::types::{Receipt, SyncEvent};

/// Pushes between the caller and the relay's answer.
pub(super) struct PushPipeline {
    /// Callers of `push` waiting for the relay's answer.
    ack_waiters: HashMap<BlobId, oneshot::Sender<Result<Receipt, ClientError>>>,
    /// Settled pushes not yet taken out of the store's outbox.
    pub(super) settled: Vec<Settled>,
}

impl PushPipeline {
    pub(super) fn new() -> Self {
        Self {
            ack_waiters: HashMap::new(),
            settled: Vec::new(),
        }
    }

    /// Tells every caller still waiting for an acknowledgement that its push stays queued.
    pub(super) fn answer_waiters_offline(&mut self) {
        for (blob_id, waiter) in self.ack_waiters.drain() {
            let _ = waiter.send(Err(ClientError::Offline { blob_id }));
        }
    }
}

fn reply_err(reply: PushReply, err: ClientError) {
    match reply {
        PushReply::Durable(tx) => {
            let _ = tx.send(Err(err));
        }
        PushReply::Ack(tx) => {
            let _ = tx.send(Err(err));
        }
    }
}

impl Driver {
    /// Puts a new push into the in-memory outbox, or answers its caller why not. Returns the
    /// reply still owed once the push is durable ([`Driver::commit_pushes`]).
    pub(super) fn accept_push(&mut self, push: &StoredPush, reply: PushReply) -> Option<PushReply> {
        let max = self.session.max_blob();
        if push.payload.len() > max {
            let err = ClientError::TooLarge {
                len: push.payload.len(),
                max,
            };
            reply_err(reply, err);
            return None;
        }
        let err = match self
            .session
            .enqueue(push.blob_id, push.payload.clone(), push.ttl_secs)
        {
            Ok(()) => return Some(reply),
            Err(OutboxError::Full { entries, bytes }) => ClientError::OutboxFull { entries, bytes },
            Err(OutboxError::TooLarge { len, max_bytes }) => ClientError::TooLarge {
                len,
                max: max_bytes,
            },
            // A blob id this device drew twice: our fault, not the relay's.
            Err(e) => ClientError::Internal(e.to_string()),
        };
        reply_err(reply, err);
        None
    }

    /// Makes accepted pushes durable (one transaction), then answers their callers.
    /// The highest sequence number among them is stored with them, so a restart seals the
    /// next push with the number after it.
    pub(super) fn commit_pushes(&mut self, accepted: Vec<(StoredPush, u64, PushReply)>) {
        if accepted.is_empty() {
            return;
        }
        let rows: Vec<StoredPush> = accepted.iter().map(|(p, _, _)| p.clone()).collect();
        let seq_high = accepted.iter().map(|(_, seq, _)| *seq).max();
        if let Err(e) = self.store.insert_pushes(&self.me.group_id, &rows, seq_high) {
            warn!(error = %e, "could not store pushes; refusing them");
            let text = e.to_string();
            let mut seqs: Vec<u64> = accepted.iter().map(|(_, seq, _)| *seq).collect();
            seqs.sort_unstable_by(|a, b| b.cmp(a));
            for seq in seqs {
                self.seq_unused(seq);
            }
            for (push, _, reply) in accepted {
                // Not durable, so not queued: take it back out of the in-memory outbox.
                self.session.withdraw(&push.blob_id);
                reply_err(reply, ClientError::Store(StoreError::Failed(text.clone())));
            }
            return;
        }
        let session_possible = matches!(
            self.session.connection(),
            ConnectionState::Connecting { .. }
                | ConnectionState::Handshaking { .. }
                | ConnectionState::Connected { .. }
        );
        for (push, _, _) in &accepted {
            self.reports.sync.on_push_queued(push.blob_id);
        }
        self.publish_status();
        for (push, _, reply) in accepted {
            match reply {
                PushReply::Durable(tx) => {
                    let _ = tx.send(Ok(push.blob_id));
                }
                PushReply::Ack(tx) if session_possible => {
                    self.pushes.ack_waiters.insert(push.blob_id, tx);
                }
                PushReply::Ack(tx) => {
                    let _ = tx.send(Err(ClientError::Offline {
                        blob_id: push.blob_id,
                    }));
                }
            }
        }
    }

    /// A push sealed with `seq` was not queued: the number is given back if no later one was
    /// handed out (else the receivers see a gap in this device's numbering).
    pub(super) fn seq_unused(&self, seq: u64) {
        let _ = self.me.next_seq.compare_exchange(
            seq.saturating_add(1),
            seq,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }

    /// The relay stored a push. Its sealed copy is kept for as long as it may live on the
    /// relay (its retention, as the relay applies it), to push again if the relay loses it.
    pub(super) fn on_push_acked(&mut self, blob_id: BlobId, cursor: Cursor, ttl_secs: u32) {
        let limits = self.session.limits();
        let ttl = match ttl_secs {
            0 => limits.default_ttl_secs,
            t => t.min(limits.max_ttl_secs),
        };
        self.pushes.settled.push(Settled::Acked {
            blob_id,
            cursor,
            expires_ms: unix_ms().saturating_add(u64::from(ttl).saturating_mul(1000)),
        });
        // Remembered like a delivered blob: the relay cannot serve it back under another
        // cursor, and it can be checked against a relay's log.
        self.pulls.delivered.push((blob_id, cursor));
        if let Err(e) = self.pulls.tracker.own_push_acked(cursor) {
            // Not recorded as own: it is pulled (and skipped as own) later instead.
            debug!(error = %e, "own push not recorded in the cursor tracker");
        }
        self.reports.sync.on_push_acked(blob_id);
        self.pulls
            .device_notes
            .push((self.me.device_id, unix_ms(), 1));
        let receipt = Receipt { blob_id, cursor };
        if let Some(waiter) = self.pushes.ack_waiters.remove(&blob_id) {
            self.publish_status();
            let _ = waiter.send(Ok(receipt));
        }
        self.reports.emit(SyncEvent::PushAcked { receipt });
    }

    /// The relay deferred a push: it stays queued.
    pub(super) fn on_push_deferred(&mut self, blob_id: BlobId, e: WireError, wait: Duration) {
        self.reports.sync.on_push_failed(blob_id);
        info!(code = %e.code, ?wait, "push deferred by the relay; stays queued");
        self.reports.emit(SyncEvent::PushDeferred {
            blob_id,
            code: e.code,
            retry_after: wait,
        });
        if let Some(w) = self.pushes.ack_waiters.remove(&blob_id) {
            let _ = w.send(Err(ClientError::Deferred {
                blob_id,
                code: e.code,
                message: e.message,
                retry_after: Some(wait),
            }));
        }
    }

    /// The relay refused a push for good: it left the outbox.
    pub(super) fn on_push_rejected(&mut self, blob_id: BlobId, e: WireError) {
        self.pushes.settled.push(Settled::Refused { blob_id });
        self.reports.sync.on_push_rejected(blob_id);
        warn!(code = %e.code, "push refused by the relay; dropped from the outbox");
        self.reports.emit(SyncEvent::PushRejected {
            blob_id,
            code: e.code,
            message: e.message.clone(),
        });
        if let Some(w) = self.pushes.ack_waiters.remove(&blob_id) {
            let _ = w.send(Err(rejected(e, Some(blob_id))));
        }
    }

    /// The session ended: pushes in flight went back to the queue (the session sends them
    /// again, same blob ids, on the next one) and their callers hear that they stay queued.
    pub(super) fn pushes_session_lost(&mut self) {
        for (blob_id, waiter) in self.pushes.ack_waiters.drain() {
            self.reports.sync.on_push_failed(blob_id);
            let _ = waiter.send(Err(ClientError::Offline { blob_id }));
        }
    }
}
