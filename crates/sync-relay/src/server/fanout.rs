//! From the storage commit to the sessions: the commit hook counts every committed push and
//! hands the batch to the fan-out task, which announces it through the hub. Notifications and
//! push counters thus follow the commit, whatever becomes of the pushing session.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use sync_types::{Cursor, GroupChanged, GroupId};

use super::RelayCtx;
use crate::metrics::Metrics;
use crate::storage::{CommitHook, CommittedPush, RemoteEvent, Storage};

/// Committed batches that may wait for the fan-out task; beyond this the storage writer waits
/// (so a fan-out that falls behind slows commits instead of growing a queue).
pub(super) const FAN_OUT_QUEUE: usize = 256;

/// The hook the storage writer calls after each commit, before it answers the batch's pushers:
/// counts the batch's pushes, then queues them for the fan-out task (waiting for room).
pub(super) fn commit_hook(
    metrics: Arc<Metrics>,
    fan_out: mpsc::Sender<Vec<CommittedPush>>,
) -> CommitHook {
    Arc::new(move |report| {
        metrics.pushes_total.add(report.pushes.len() as u64);
        metrics.push_duplicates_total.add(report.duplicates);
        if !report.pushes.is_empty() {
            // The writer is a plain thread, so waiting here is allowed; an error means the
            // relay is stopping and no session is left to notify.
            let _ = fan_out.blocking_send(report.pushes);
        }
    })
}

/// Announces committed pushes to the sessions of their groups until `stop`.
pub(super) async fn fan_out_loop(
    ctx: Arc<RelayCtx>,
    mut commits: mpsc::Receiver<Vec<CommittedPush>>,
    stop: CancellationToken,
) {
    while let Some(Some(pushes)) = stop.run_until_cancelled(commits.recv()).await {
        ctx.hub.announce(&pushes, &ctx.metrics);
    }
}

/// Tells this relay's sessions what other relays on the same database committed, until `stop`:
/// their pushes become `Notify`s; a membership change makes the group's state be read again
/// and its sessions told (those of revoked devices end); after the listener reconnects, every
/// group with a session here is re-announced, as notifications may have been missed.
pub(super) async fn remote_loop(
    ctx: Arc<RelayCtx>,
    mut events: mpsc::Receiver<RemoteEvent>,
    stop: CancellationToken,
) {
    while let Some(Some(event)) = stop.run_until_cancelled(events.recv()).await {
        match event {
            RemoteEvent::Pushes(pushes) => ctx.hub.announce(&pushes, &ctx.metrics),
            RemoteEvent::GroupChanged(group) => {
                ctx.memberships.forget(&group);
                group_changed_elsewhere(&ctx, group).await;
            }
            RemoteEvent::Resync => {
                ctx.memberships.forget_all();
                for group in ctx.hub.groups() {
                    group_changed_elsewhere(&ctx, group).await;
                    reannounce_latest(&ctx, group).await;
                }
            }
        }
    }
}

/// Reloads a group changed by another relay and tells this relay's sessions of it.
async fn group_changed_elsewhere(ctx: &RelayCtx, group: GroupId) {
    if !ctx.hub.has_sessions(&group) {
        return;
    }
    match ctx.memberships.state(&ctx.storage, group).await {
        Ok(state) => {
            let revoked: Vec<_> = state.revoked().map(|(d, _)| d).collect();
            let changed = GroupChanged {
                request_id: None,
                seq: state.seq(),
                epoch: state.epoch().0,
            };
            ctx.hub
                .group_changed(&group, &changed, &revoked, 0, &ctx.metrics);
        }
        Err(e) => tracing::warn!(error = %e, "cannot read a group changed by another relay"),
    }
}

/// Announces a group's newest stored blob to its sessions here (they pull what they lack).
async fn reannounce_latest(ctx: &RelayCtx, group: GroupId) {
    let last = match ctx.storage.max_cursor(group).await {
        Ok(c) if c.get() > 0 => c,
        Ok(_) => return,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read a group's last cursor");
            return;
        }
    };
    let page = ctx
        .storage
        .pull(group, Cursor::new(last.get() - 1), 1, 0)
        .await;
    if let Ok(page) = page
        && let Some(e) = page.entries.first()
    {
        let push = CommittedPush {
            group,
            cursor: e.cursor,
            blob_id: e.blob_id,
            sender: e.sender,
            size: u32::try_from(e.payload.len()).unwrap_or(u32::MAX),
        };
        ctx.hub.announce(&[push], &ctx.metrics);
    }
}
