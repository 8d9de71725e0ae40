//! The push pipeline: checks, rate limits (per session, per address and global), queueing to
//! storage in arrival order, and one FIFO task that answers queued pushes in commit order.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use governor::clock::Clock;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use sync_types::{BlobId, ErrorCode, Message, Notify, PushAck, WireError};
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use super::{Session, millis, now_ms, storage_error};
use crate::admission::{Refusal, Subject};
use crate::storage::{PushReply, PushRequest, Storage};

/// A token bucket of `rate` per second with room for `burst`; `None` when `rate` is 0.
pub(crate) fn bucket(rate: u32, burst: u32) -> Option<DefaultDirectRateLimiter> {
    let rate = NonZeroU32::new(rate)?;
    let burst = NonZeroU32::new(burst).unwrap_or(rate);
    Some(RateLimiter::direct(
        Quota::per_second(rate).allow_burst(burst),
    ))
}

/// Takes one token, or says how long to wait for one.
fn take_token(limiter: Option<&DefaultDirectRateLimiter>) -> Result<(), Duration> {
    let Some(limiter) = limiter else {
        return Ok(());
    };
    limiter
        .check()
        .map_err(|not_until| not_until.wait_time_from(limiter.clock().now()))
}

/// A push queued to storage whose answer the FIFO ack task awaits.
pub(super) struct PendingPush {
    request_id: u64,
    blob_id: BlobId,
    size: u32,
    started: Instant,
    reply: PushReply,
    _permit: OwnedSemaphorePermit,
}

impl Session {
    /// Checks a push, takes rate tokens, and queues it to storage in arrival order.
    pub(super) async fn push(
        &self,
        push: sync_types::Push,
        permit: OwnedSemaphorePermit,
        acks: &mpsc::Sender<PendingPush>,
    ) {
        let ctx = &self.ctx;
        let started = Instant::now();
        let reject = |err: WireError| err.for_request(push.request_id);
        let size = push.payload.len();
        if size > ctx.config.max_blob_bytes as usize {
            let err = WireError::new(
                ErrorCode::BlobTooLarge,
                format!(
                    "payload of {size} bytes above the maximum of {}",
                    ctx.config.max_blob_bytes
                ),
            );
            return self.send_error(reject(err)).await;
        }
        let ttl = match push.ttl_secs {
            0 => ctx.config.default_ttl,
            s => Duration::from_secs(u64::from(s)),
        };
        if ttl > ctx.config.max_ttl {
            let err = WireError::new(
                ErrorCode::TtlTooLong,
                format!("ttl above the maximum of {}s", ctx.config.max_ttl.as_secs()),
            );
            return self.send_error(reject(err)).await;
        }
        if let Some(wait) = self.deferral(push.blob_id, started) {
            let err = WireError::new(
                ErrorCode::RateLimited,
                "an earlier push of this session was rate limited; send it again first",
            )
            .retry_after_ms(millis(wait).max(1));
            return self.send_error(reject(err)).await;
        }
        // The session's bucket, its address's, then the relay's.
        let taken = take_token(self.limiter.as_ref())
            .and_then(|()| self.take_address_push())
            .and_then(|()| take_token(ctx.global_push.as_ref()));
        if let Err(wait) = taken {
            self.defer(push.blob_id, started + wait);
            let err = WireError::new(ErrorCode::RateLimited, "too many pushes")
                .retry_after_ms(millis(wait).max(1));
            return self.send_error(reject(err)).await;
        }
        let req = PushRequest {
            group: self.group,
            blob_id: push.blob_id,
            sender: self.peer,
            payload: push.payload.to_vec(),
            ttl,
            now_ms: now_ms(),
            group_quota_bytes: self.quota_bytes,
        };
        match ctx.storage.push_queued(req).await {
            Ok(reply) => {
                let pending = PendingPush {
                    request_id: push.request_id,
                    blob_id: push.blob_id,
                    size: u32::try_from(size).unwrap_or(u32::MAX),
                    started,
                    reply,
                    _permit: permit,
                };
                // Room is guaranteed: the channel holds max_in_flight and each entry a permit.
                let _ = acks.send(pending).await;
            }
            Err(e) => self.send_error(reject(storage_error(ctx, &e))).await,
        }
    }

    /// Takes a push from the bucket of the session's address (a refusal is counted and
    /// audited).
    fn take_address_push(&self) -> Result<(), Duration> {
        self.ctx.admission.take_push(self.origin).inspect_err(|_| {
            let subject = Subject {
                origin: self.origin,
                device: Some(&self.peer),
                group: Some(&self.group),
            };
            let reason = Refusal::PushRatePerIp;
            self.ctx
                .admission
                .record(&self.ctx.metrics, reason, subject);
        })
    }

    /// Whether a push of `blob_id` must wait behind an earlier rate-limited push of this
    /// session, and for how long. The refused blob itself is let through (to the limiters) and
    /// lifts the block.
    fn deferral(&self, blob_id: BlobId, now: Instant) -> Option<Duration> {
        let mut deferred = self.deferred.lock().unwrap_or_else(|e| e.into_inner());
        match *deferred {
            Some((blocked, _)) if blocked == blob_id => {
                *deferred = None;
                None
            }
            Some((_, until)) => Some(until.saturating_duration_since(now)),
            None => None,
        }
    }

    /// Records that `blob_id` was refused until `until`; later pushes queue up behind it.
    fn defer(&self, blob_id: BlobId, until: Instant) {
        let mut deferred = self.deferred.lock().unwrap_or_else(|e| e.into_inner());
        *deferred = Some((blob_id, until));
    }

    /// Answers queued pushes in queue order (which is commit order): `PushAck`, then `Notify`
    /// to the group's other sessions.
    pub(super) async fn ack_loop(self: Arc<Self>, mut pending: mpsc::Receiver<PendingPush>) {
        let ctx = Arc::clone(&self.ctx);
        while let Some(p) = pending.recv().await {
            match p.reply.await {
                Ok(outcome) => {
                    ctx.metrics.push_commit_seconds.observe(p.started.elapsed());
                    if outcome.duplicate {
                        ctx.metrics.push_duplicates_total.inc();
                    } else {
                        ctx.metrics.pushes_total.inc();
                        self.pushes.fetch_add(1, Ordering::Relaxed);
                    }
                    self.send(Message::PushAck(PushAck {
                        request_id: p.request_id,
                        blob_id: p.blob_id,
                        cursor: outcome.cursor,
                        server_time_ms: outcome.stored_at_ms,
                    }))
                    .await;
                    if !outcome.duplicate {
                        let n = Notify {
                            cursor: outcome.cursor,
                            blob_id: p.blob_id,
                            sender: self.peer,
                            size: p.size,
                        };
                        ctx.hub.notify(&self.group, self.id, &n, &ctx.metrics);
                    }
                }
                Err(e) => {
                    self.send_error(storage_error(&ctx, &e).for_request(p.request_id))
                        .await;
                }
            }
        }
    }
}
