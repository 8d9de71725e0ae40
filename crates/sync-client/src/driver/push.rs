//! The push pipeline: pushes are accepted into the outbox (durable before they are reported
//! queued), sent within the in-flight window the relay allows, and settled by the relay's
//! acknowledgement or refusal for good; a deferred push holds the pipeline until the relay's
//! hint has passed.

use std::collections::HashMap;

use sync_core::{AckOutcome, ConnectionState, Outbox, OutboxError, RejectOutcome};
use sync_types::{BlobId, Message, Push, PushAck, WireError, unix_ms};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{Driver, PushReply, rejected, retry_hint};
use crate::error::{ClientError, StoreError};
use crate::store::StoredPush;
use crate::types::{Receipt, SyncEvent};

/// Pushes between the caller and the relay's answer.
pub(super) struct PushPipeline {
    pub(super) outbox: Outbox,
    /// Pushes sent on the current session and not answered yet, by request id.
    in_flight: HashMap<u64, BlobId>,
    /// Callers of `push` waiting for the relay's answer.
    ack_waiters: HashMap<BlobId, oneshot::Sender<Result<Receipt, ClientError>>>,
    /// Nothing is sent before this: the relay deferred a push.
    pub(super) hold_until: Option<Instant>,
    /// Settled pushes not yet removed from the store.
    pub(super) settled: Vec<BlobId>,
}

impl PushPipeline {
    pub(super) fn new(outbox: Outbox) -> Self {
        Self {
            outbox,
            in_flight: HashMap::new(),
            ack_waiters: HashMap::new(),
            hold_until: None,
            settled: Vec::new(),
        }
    }

    /// The push a request was for, if it was a push (no longer in flight).
    pub(super) fn take_request(&mut self, request_id: u64) -> Option<BlobId> {
        self.in_flight.remove(&request_id)
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
    fn in_flight_cap(&self) -> usize {
        let relay = usize::try_from(self.session.limits.max_in_flight).unwrap_or(usize::MAX);
        // Leave room for a pull and a ping within the relay's limit.
        self.options
            .max_in_flight
            .min(relay.saturating_sub(2))
            .max(1)
    }

    fn max_blob(&self) -> usize {
        usize::try_from(self.session.limits.max_blob_bytes).unwrap_or(usize::MAX)
    }

    /// Sends queued pushes while the window has room (on an established session, not held).
    pub(super) fn pump_sends(&mut self) {
        if !self.session.established || self.pushes.hold_until.is_some() {
            return;
        }
        let cap = self.in_flight_cap();
        while self.pushes.in_flight.len() < cap {
            let Some(entry) = self.pushes.outbox.send_next() else {
                break;
            };
            let request_id = self.session.request_id();
            self.pushes.in_flight.insert(request_id, entry.blob_id());
            self.session.send(Message::Push(Push {
                request_id,
                blob_id: entry.blob_id(),
                payload: entry.payload().clone().into(),
                ttl_secs: entry.ttl_secs(),
            }));
        }
    }

    /// Puts a new push into the in-memory outbox, or answers its caller why not. Returns the
    /// reply still owed once the push is durable ([`Driver::commit_pushes`]).
    pub(super) fn accept_push(&mut self, push: &StoredPush, reply: PushReply) -> Option<PushReply> {
        if push.payload.len() > self.max_blob() {
            let err = ClientError::TooLarge {
                len: push.payload.len(),
                max: self.max_blob(),
            };
            reply_err(reply, err);
            return None;
        }
        let err =
            match self
                .pushes
                .outbox
                .enqueue(push.blob_id, push.payload.clone(), push.ttl_secs)
            {
                Ok(()) => return Some(reply),
                Err(OutboxError::Full { entries, bytes }) => {
                    ClientError::OutboxFull { entries, bytes }
                }
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
    pub(super) fn commit_pushes(&mut self, accepted: Vec<(StoredPush, PushReply)>) {
        if accepted.is_empty() {
            return;
        }
        let rows: Vec<StoredPush> = accepted.iter().map(|(p, _)| p.clone()).collect();
        if let Err(e) = self.store.insert_pushes(&self.me.group_id, &rows) {
            warn!(error = %e, "could not store pushes; refusing them");
            let text = e.to_string();
            for (push, reply) in accepted {
                // Not durable, so not queued: take it back out of the in-memory outbox.
                self.pushes.outbox.reject(&push.blob_id, true);
                reply_err(reply, ClientError::Store(StoreError::Failed(text.clone())));
            }
            return;
        }
        let session_possible = matches!(
            self.conn.state(),
            ConnectionState::Connecting { .. }
                | ConnectionState::Handshaking { .. }
                | ConnectionState::Connected { .. }
        );
        for (push, _) in &accepted {
            self.reports.sync.on_push_queued(push.blob_id);
        }
        self.publish_status();
        for (push, reply) in accepted {
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

    pub(super) fn on_push_ack(&mut self, ack: PushAck) {
        let requested = self.pushes.in_flight.remove(&ack.request_id);
        if requested.is_some_and(|b| b != ack.blob_id) {
            return self.session_failed("PushAck names another blob".into(), true);
        }
        self.pulls.relay_max = self.pulls.relay_max.max(ack.cursor);
        match self.pushes.outbox.ack(&ack.blob_id, ack.cursor) {
            AckOutcome::Acked { .. } => {
                self.pushes.settled.push(ack.blob_id);
                // Remembered like a delivered blob: the relay cannot serve it back under
                // another cursor, and it can be checked against a relay's log.
                self.pulls.delivered.push((ack.blob_id, ack.cursor));
                if let Err(e) = self.pulls.tracker.own_push_acked(ack.cursor) {
                    // Not recorded as own: it is pulled (and skipped as own) later instead.
                    debug!(error = %e, "own push not recorded in the cursor tracker");
                }
                self.reports.sync.on_push_acked(ack.blob_id);
                self.pulls
                    .device_notes
                    .push((self.me.device_id, unix_ms(), 1));
                let receipt = Receipt {
                    blob_id: ack.blob_id,
                    cursor: ack.cursor,
                };
                if let Some(waiter) = self.pushes.ack_waiters.remove(&ack.blob_id) {
                    self.publish_status();
                    let _ = waiter.send(Ok(receipt));
                }
                self.reports.emit(SyncEvent::PushAcked { receipt });
            }
            _ => debug!("duplicate PushAck ignored"),
        }
    }

    pub(super) fn on_push_refused(&mut self, blob_id: BlobId, e: WireError) {
        let waiter = self.pushes.ack_waiters.remove(&blob_id);
        if e.is_retryable() {
            let wait = retry_hint(&e).unwrap_or(self.options.default_retry);
            match self.pushes.outbox.reject(&blob_id, false) {
                RejectOutcome::WillRetry => {
                    let until = Instant::now() + wait;
                    let hold = &mut self.pushes.hold_until;
                    *hold = Some(hold.map_or(until, |h| h.max(until)));
                    self.reports.sync.on_push_failed(blob_id);
                    info!(code = %e.code, ?wait, "push deferred by the relay; stays queued");
                    self.reports.emit(SyncEvent::PushDeferred {
                        blob_id,
                        code: e.code,
                        retry_after: wait,
                    });
                    if let Some(w) = waiter {
                        let _ = w.send(Err(ClientError::Deferred {
                            blob_id,
                            code: e.code,
                            message: e.message,
                            retry_after: Some(wait),
                        }));
                    }
                }
                _ => debug!("refusal for a push no longer queued"),
            }
        } else {
            match self.pushes.outbox.reject(&blob_id, true) {
                RejectOutcome::Failed { .. } => {
                    self.pushes.settled.push(blob_id);
                    self.reports.sync.on_push_rejected(blob_id);
                    warn!(code = %e.code, "push refused by the relay; dropped from the outbox");
                    self.reports.emit(SyncEvent::PushRejected {
                        blob_id,
                        code: e.code,
                        message: e.message.clone(),
                    });
                    if let Some(w) = waiter {
                        let _ = w.send(Err(rejected(e, Some(blob_id))));
                    }
                }
                _ => debug!("refusal for a push no longer queued"),
            }
        }
    }

    /// The session ended: pushes in flight go back to the queue (re-sent with the same blob id
    /// on the next session) and their callers hear that they stay queued.
    pub(super) fn pushes_session_lost(&mut self) {
        self.pushes.in_flight.clear();
        self.pushes.outbox.requeue_all_in_flight();
        for (blob_id, waiter) in self.pushes.ack_waiters.drain() {
            self.reports.sync.on_push_failed(blob_id);
            let _ = waiter.send(Err(ClientError::Offline { blob_id }));
        }
    }
}
