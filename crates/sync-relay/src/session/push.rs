//! The push pipeline: checks, rate limits (per session, per address and global), queueing to
//! storage in arrival order, and one FIFO task that answers queued pushes in commit order.

use crate::membership::sealed_epoch;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use governor::clock::Clock;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use sync_types::{BlobId, ErrorCode, Message, PushAck, WireError};
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use super::{Session, millis, now_ms, short_hash, storage_error};
use crate::admission::{Refusal, Subject};
use crate::storage::{PushReply, PushRequest, Storage, StorageError};

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

/// How long after its retry hint a deferral still holds the session's other pushes back. A
/// device re-sends the refused blob when the hint ends; pushes it had in flight behind it may
/// arrive a little later and must not overtake it. Past this, the device is taken to have
/// abandoned the blob and the hold is lifted.
const DEFERRAL_GRACE: Duration = Duration::from_secs(5);

/// The push of a session last refused with `RateLimited`, and when its retry hint ends. Until
/// the device sends that blob again, other pushes of the session are refused too: pushes that
/// were already in flight behind it must not overtake it, so one sender's blobs keep their
/// order. A device that gives up on the refused blob is not refused forever: the hold is lifted
/// [`DEFERRAL_GRACE`] after the hint ended.
#[derive(Debug, Default)]
pub(super) struct Deferral(std::sync::Mutex<Option<(BlobId, Instant)>>);

impl Deferral {
    /// Whether a push of `blob_id` arriving at `now` must wait behind the refused push, and for
    /// how long. The refused blob itself is let through (to the limiters) and lifts the hold;
    /// so does the end of the grace after the retry hint.
    pub(super) fn check(&self, blob_id: BlobId, now: Instant) -> Option<Duration> {
        let mut deferred = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (blocked, until) = (*deferred)?;
        let lifted = until + DEFERRAL_GRACE;
        if blocked == blob_id || lifted <= now {
            *deferred = None;
            return None;
        }
        // Before the hint ends, wait for it; after, for the end of the grace.
        Some(if now < until {
            until - now
        } else {
            lifted - now
        })
    }

    /// Records that `blob_id` was refused until `until`; later pushes queue up behind it.
    pub(super) fn defer(&self, blob_id: BlobId, until: Instant) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((blob_id, until));
    }
}

/// A push queued to storage whose answer the FIFO ack task awaits.
pub(super) struct PendingPush {
    request_id: u64,
    blob_id: BlobId,
    started: Instant,
    reply: PushReply,
    /// The payload's share of the session's push bytes, given back at the commit.
    bytes: OwnedSemaphorePermit,
    _permit: OwnedSemaphorePermit,
}

impl Session {
    /// Checks a push, takes rate tokens, and queues it to storage in arrival order.
    pub(super) async fn push(
        &self,
        push: sync_types::Push,
        permit: OwnedSemaphorePermit,
        bytes: OwnedSemaphorePermit,
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
        // Sealed under an epoch the group rotated away from: a member that missed the rotation
        // (it re-seals once it has the new key); never stored, so a revoked device's old key
        // opens nothing new.
        let current = ctx.memberships.epoch(&self.group);
        if sealed_epoch(&push.payload).is_some_and(|e| e < current) {
            let err = WireError::new(
                ErrorCode::EpochSuperseded,
                format!(
                    "sealed under an old key epoch; the group is at epoch {}",
                    current.0
                ),
            );
            return self.send_error(reject(err)).await;
        }
        if let Some(wait) = self.deferred.check(push.blob_id, started) {
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
            self.deferred.defer(push.blob_id, started + wait);
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
                    started,
                    reply,
                    bytes,
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

    /// Answers queued pushes in queue order (which is commit order) with `PushAck` or a typed
    /// error. Notifications and the push counters come from the commit itself (the relay's
    /// commit hook), so they happen whatever becomes of this session.
    pub(super) async fn ack_loop(self: Arc<Self>, mut pending: mpsc::Receiver<PendingPush>) {
        let ctx = Arc::clone(&self.ctx);
        while let Some(p) = pending.recv().await {
            let outcome = p.reply.await;
            drop(p.bytes);
            match outcome {
                Ok(outcome) => {
                    ctx.metrics.push_commit_seconds.observe(p.started.elapsed());
                    if !outcome.duplicate {
                        self.pushes.fetch_add(1, Ordering::Relaxed);
                    }
                    self.send(Message::PushAck(PushAck {
                        request_id: p.request_id,
                        blob_id: p.blob_id,
                        cursor: outcome.cursor,
                        server_time_ms: outcome.stored_at_ms,
                    }))
                    .await;
                }
                Err(e) => {
                    if matches!(e, StorageError::BlobConflict) {
                        session_audit!(
                            self,
                            "push_refused",
                            blob = %short_hash(p.blob_id.as_bytes()),
                            reason = ErrorCode::Conflict.name(),
                        );
                    }
                    self.send_error(storage_error(&ctx, &e).for_request(p.request_id))
                        .await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> BlobId {
        BlobId::from_bytes([n; 16])
    }

    #[test]
    fn a_deferral_holds_other_pushes_until_the_refused_blob_returns() {
        let d = Deferral::default();
        let t0 = Instant::now();
        assert_eq!(d.check(id(1), t0), None, "nothing deferred yet");
        d.defer(id(1), t0 + Duration::from_millis(500));
        let wait = d.check(id(2), t0 + Duration::from_millis(100));
        assert_eq!(wait, Some(Duration::from_millis(400)));
        // The refused blob lifts the hold.
        assert_eq!(d.check(id(1), t0 + Duration::from_millis(200)), None);
        assert_eq!(d.check(id(2), t0 + Duration::from_millis(200)), None);
    }

    #[test]
    fn a_deferral_clears_once_its_retry_hint_and_grace_have_passed() {
        let d = Deferral::default();
        let t0 = Instant::now();
        let until = t0 + Duration::from_millis(500);
        d.defer(id(1), until);
        // Just after the hint, pushes in flight behind blob 1 still wait for it (with a hint
        // to the end of the grace, never a zero one).
        let wait = d.check(id(2), until + Duration::from_millis(100));
        assert_eq!(wait, Some(DEFERRAL_GRACE - Duration::from_millis(100)));
        // The device abandoned blob 1: once the grace is over, other pushes go through, and
        // keep going through.
        assert_eq!(d.check(id(2), until + DEFERRAL_GRACE), None);
        assert_eq!(d.check(id(3), until + DEFERRAL_GRACE), None);
        assert_eq!(d.check(id(3), t0 + Duration::from_secs(60)), None);
    }
}
