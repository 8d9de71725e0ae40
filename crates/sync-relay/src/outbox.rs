//! A session's outgoing frames: a queue bounded in frames and in bytes, drained by the session's
//! writer task.
//!
//! Frames are encoded when they are queued, and each holds its share of the byte budget
//! (`session_queue_bytes`) until the writer has written it, so a device that stops reading pins
//! at most the budget, however large its pull responses are. A request's answer waits for room
//! (the request stays in flight, which holds the reader back); a `Notify` never waits: with no
//! room it is folded into one pending notification that keeps only the highest cursor, sent by
//! the writer after the frames already queued. Closing the outbox (when the writer stopped or
//! the session ended) fails every waiting sender at once, so nothing stays pinned behind a
//! device that does not read.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::{Bytes, BytesMut};
use sync_types::{FrameCodec, Message, Notify};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::Metrics;

/// What a session's writer task is asked to do.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// Write this encoded frame.
    Frame(QueuedFrame),
    /// Write what is queued before this, finish the stream and stop.
    Close,
}

/// An encoded frame and its share of the session's byte budget (given back once written).
#[derive(Debug)]
pub(crate) struct QueuedFrame {
    pub(crate) bytes: Bytes,
    _budget: Option<OwnedSemaphorePermit>,
}

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotQueued {
    /// The outbox is closed (the writer stopped or the session ended).
    Closed,
    /// The message cannot be encoded (too large for a frame); it was dropped and logged.
    Unencodable,
}

/// The sending side of a session's outgoing frames.
#[derive(Debug)]
pub(crate) struct Outbox {
    tx: mpsc::Sender<Outbound>,
    budget: Arc<Semaphore>,
    /// The byte budget (a frame larger than this waits for an empty queue).
    budget_bytes: u32,
    codec: FrameCodec,
    coalesced: Mutex<Option<Notify>>,
    /// Wakes the writer when a notification was coalesced.
    pub(crate) wake: tokio::sync::Notify,
    stalled: AtomicBool,
}

impl Outbox {
    /// An outbox of at most `frames` frames and `bytes` bytes, and the receiver its writer
    /// drains.
    pub(crate) fn new(
        frames: u32,
        bytes: u32,
        codec: FrameCodec,
    ) -> (Arc<Self>, mpsc::Receiver<Outbound>) {
        let (tx, rx) = mpsc::channel(frames.max(1) as usize);
        let budget_bytes = bytes.max(1);
        let outbox = Self {
            tx,
            budget: Arc::new(Semaphore::new(budget_bytes as usize)),
            budget_bytes,
            codec,
            coalesced: Mutex::new(None),
            wake: tokio::sync::Notify::new(),
            stalled: AtomicBool::new(false),
        };
        (Arc::new(outbox), rx)
    }

    fn encode(&self, msg: &Message) -> Result<Bytes, NotQueued> {
        let mut buf = BytesMut::new();
        match self.codec.encode(msg, &mut buf) {
            Ok(()) => Ok(buf.freeze()),
            Err(e) => {
                tracing::warn!(error = %e, kind = msg.message_type().name(), "frame not encodable");
                Err(NotQueued::Unencodable)
            }
        }
    }

    /// The budget a frame of `len` bytes takes (all of it for a frame larger than the budget).
    fn share(&self, len: usize) -> u32 {
        u32::try_from(len)
            .unwrap_or(u32::MAX)
            .clamp(1, self.budget_bytes)
    }

    /// Queues `msg`, waiting for room in frames and bytes.
    pub(crate) async fn send(&self, msg: &Message) -> Result<(), NotQueued> {
        let bytes = self.encode(msg)?;
        let permit = Arc::clone(&self.budget)
            .acquire_many_owned(self.share(bytes.len()))
            .await
            .map_err(|_| NotQueued::Closed)?;
        let frame = QueuedFrame {
            bytes,
            _budget: Some(permit),
        };
        self.tx
            .send(Outbound::Frame(frame))
            .await
            .map_err(|_| NotQueued::Closed)
    }

    /// Asks the writer to finish the stream after what is queued.
    pub(crate) async fn finish(&self) {
        let _ = self.tx.send(Outbound::Close).await;
    }

    /// Queues `n` if there is room, else keeps it (or a higher one) for the writer. Never waits.
    pub(crate) fn offer(&self, n: &Notify, metrics: &Metrics) {
        let msg = Message::Notify(n.clone());
        let Ok(bytes) = self.encode(&msg) else {
            return;
        };
        let queued = match Arc::clone(&self.budget).try_acquire_many_owned(self.share(bytes.len()))
        {
            Ok(permit) => {
                let frame = QueuedFrame {
                    bytes,
                    _budget: Some(permit),
                };
                match self.tx.try_send(Outbound::Frame(frame)) {
                    Ok(()) => true,
                    Err(TrySendError::Full(_)) => false,
                    Err(TrySendError::Closed(_)) => return,
                }
            }
            Err(_) if self.budget.is_closed() => return,
            Err(_) => false,
        };
        if queued {
            metrics.notifies_total.inc();
            return;
        }
        {
            let mut slot = self
                .coalesced
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if slot.as_ref().is_none_or(|p| p.cursor < n.cursor) {
                *slot = Some(n.clone());
            }
        }
        metrics.notifies_coalesced_total.inc();
        self.wake.notify_one();
    }

    /// Queues `msg` if there is room now; drops it otherwise. Never waits. Returns whether it
    /// was queued.
    pub(crate) fn offer_message(&self, msg: &Message, _metrics: &Metrics) -> bool {
        let Ok(bytes) = self.encode(msg) else {
            return false;
        };
        let Ok(permit) = Arc::clone(&self.budget).try_acquire_many_owned(self.share(bytes.len()))
        else {
            return false;
        };
        let frame = QueuedFrame {
            bytes,
            _budget: Some(permit),
        };
        self.tx.try_send(Outbound::Frame(frame)).is_ok()
    }

    /// The pending coalesced notification, if any (taken: the slot is empty afterwards).
    pub(crate) fn take_coalesced(&self) -> Option<Notify> {
        self.coalesced
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// The coalesced notification encoded, if there is one (for the writer).
    pub(crate) fn take_coalesced_frame(&self) -> Option<Bytes> {
        let n = self.take_coalesced()?;
        self.encode(&Message::Notify(n)).ok()
    }

    /// Refuses every further frame and fails every waiting sender.
    pub(crate) fn close(&self) {
        self.budget.close();
    }

    /// Records that the device stopped reading (the writer gave up), and closes.
    pub(crate) fn mark_stalled(&self) {
        self.stalled.store(true, Ordering::Release);
        self.close();
    }

    /// Whether the writer gave up because the device stopped reading.
    pub(crate) fn stalled(&self) -> bool {
        self.stalled.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use sync_types::{BlobId, Cursor, DeviceId, Pong};

    use super::*;

    fn notify(cursor: u64) -> Notify {
        Notify {
            cursor: Cursor::new(cursor),
            blob_id: BlobId::from_bytes([cursor as u8; 16]),
            sender: DeviceId::from_bytes([1; 32]),
            size: 10,
        }
    }

    #[tokio::test]
    async fn frames_wait_for_bytes_and_a_closed_outbox_fails_the_waiters() {
        let codec = FrameCodec::new(1 << 20);
        let pong = Message::Pong(Pong { request_id: 1 });
        let frame_len = codec.encode_to_bytes(&pong).expect("encode").len();
        // Room for two frames' bytes, many frames' count.
        let (outbox, mut rx) = Outbox::new(100, 2 * frame_len as u32, codec);
        outbox.send(&pong).await.expect("first");
        outbox.send(&pong).await.expect("second");
        let third = tokio::spawn({
            let outbox = Arc::clone(&outbox);
            async move { outbox.send(&Message::Pong(Pong { request_id: 3 })).await }
        });
        // A notification finds no room: coalesced, not queued.
        let metrics = Metrics::default();
        outbox.offer(&notify(5), &metrics);
        assert_eq!(metrics.notifies_coalesced_total.get(), 1);
        tokio::task::yield_now().await;
        assert!(!third.is_finished(), "the third frame waits for bytes");
        // Writing the first frame gives its bytes back: the third gets in.
        let Some(Outbound::Frame(first)) = rx.recv().await else {
            panic!("a frame")
        };
        drop(first);
        third.await.expect("task").expect("third queued");
        // Closing fails a waiting sender at once.
        let fourth = tokio::spawn({
            let outbox = Arc::clone(&outbox);
            async move { outbox.send(&pong).await }
        });
        outbox.mark_stalled();
        assert_eq!(fourth.await.expect("task"), Err(NotQueued::Closed));
        assert!(outbox.stalled());
        assert_eq!(outbox.take_coalesced().map(|n| n.cursor.get()), Some(5));
    }
}
