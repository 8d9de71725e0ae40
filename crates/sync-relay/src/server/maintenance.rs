//! Periodic work of a running relay: removing expired blobs, invites and content reservations,
//! forgetting the ids of removed blobs when their time is up, deleting idle empty groups, and a
//! stats line.

use std::sync::Arc;
use std::time::Instant;

use sync_types::unix_ms;
use tokio_util::sync::CancellationToken;

use super::RelayCtx;
use crate::storage::Storage;

/// Rows removed per cleanup transaction.
const CLEANUP_BATCH: u32 = 1000;

/// Calls `round` with `CLEANUP_BATCH` until it removes less than a full batch (or fails, or the
/// relay stops); returns how many rows it removed.
async fn in_batches<F, Fut>(what: &str, stop: &CancellationToken, mut round: F) -> u64
where
    F: FnMut(u32) -> Fut,
    Fut: std::future::Future<Output = Result<u64, crate::storage::StorageError>>,
{
    let mut removed = 0u64;
    loop {
        match round(CLEANUP_BATCH).await {
            Ok(n) => {
                removed = removed.saturating_add(n);
                if n < u64::from(CLEANUP_BATCH) || stop.is_cancelled() {
                    return removed;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, what, "cleanup failed");
                return removed;
            }
        }
    }
}

/// Every `cleanup_interval`: removes expired blobs and invites, forgets the ids of removed
/// blobs whose memory ran out, deletes groups idle for `group_idle_ttl`, and forgets idle
/// per-address limiter state.
pub(super) async fn cleanup_loop(ctx: Arc<RelayCtx>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(ctx.config.cleanup_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        ctx.admission.forget_idle();
        let now = unix_ms();
        let removed = in_batches("expired blobs", &stop, |batch| {
            ctx.storage.cleanup_expired(now, batch)
        })
        .await;
        ctx.metrics.expired_total.add(removed);
        let forgotten = in_batches("removed blob ids", &stop, |batch| {
            ctx.storage.forget_removed_ids(now, batch)
        })
        .await;
        ctx.metrics.forgotten_ids_total.add(forgotten);
        // Groups with a session since the last round are active now; only the first call
        // needs them.
        let mut seen = Some(ctx.hub.take_seen());
        let idle = ctx.config.group_idle_ttl;
        let dropped = in_batches("idle groups", &stop, |batch| {
            let seen = seen.take().unwrap_or_default();
            ctx.storage.drop_idle_groups(seen, now, idle, batch)
        })
        .await;
        ctx.metrics.idle_groups_deleted_total.add(dropped);
        // Expired content reservations and their tags; the blob store's garbage collection
        // (on the same interval) then deletes their data.
        let content = match &ctx.content {
            Some(content) => content.cleanup(now).await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, what = "expired content", "cleanup failed");
                0
            }),
            None => 0,
        };
        if removed > 0 || forgotten > 0 || dropped > 0 || content > 0 {
            tracing::info!(
                removed,
                forgotten_ids = forgotten,
                idle_groups = dropped,
                content,
                "cleanup"
            );
        }
    }
}

/// Samples the figures for the status page every `status_interval`.
pub(super) async fn history_loop(ctx: Arc<RelayCtx>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(ctx.config.status_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let stored = ctx.storage.stats().await.unwrap_or_default();
        ctx.history.sample(&ctx.metrics, stored, unix_ms());
    }
}

/// Logs one line of figures every `stats_interval`, and a last one for the time since the
/// previous line when the relay stops (`at_shutdown = true`).
pub(super) async fn stats_loop(ctx: Arc<RelayCtx>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(ctx.config.stats_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let m = &ctx.metrics;
    let snapshot = || {
        [
            m.pushes_total.get(),
            m.pulls_total.get(),
            m.notifies_total.get(),
            m.bytes_in_total.get(),
            m.bytes_out_total.get(),
            m.rejections_total.total(),
        ]
    };
    let mut last = snapshot();
    let mut last_at = Instant::now();
    loop {
        let at_shutdown = tokio::select! {
            _ = tick.tick() => false,
            () = stop.cancelled() => true,
        };
        let now = snapshot();
        let secs = last_at.elapsed().as_secs_f64().max(0.001);
        let rate = |i: usize| {
            let d = now
                .get(i)
                .copied()
                .unwrap_or(0)
                .saturating_sub(last.get(i).copied().unwrap_or(0));
            (d as f64 / secs * 10.0).round() / 10.0
        };
        let stored = ctx.storage.stats().await.unwrap_or_default();
        tracing::info!(
            target: "sync_relay::stats",
            sessions = m.sessions.get(),
            active_groups = ctx.hub.active_groups(),
            pushes_per_s = rate(0),
            pulls_per_s = rate(1),
            notifies_per_s = rate(2),
            bytes_in_per_s = rate(3),
            bytes_out_per_s = rate(4),
            rejections_per_s = rate(5),
            stored_blobs = stored.blobs,
            stored_bytes = stored.bytes,
            groups = stored.groups,
            at_shutdown,
            "stats"
        );
        if at_shutdown {
            return;
        }
        last = now;
        last_at = Instant::now();
    }
}
