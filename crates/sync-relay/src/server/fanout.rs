//! From the storage commit to the sessions: the commit hook counts every committed push and
//! hands the batch to the fan-out task, which announces it through the hub. Notifications and
//! push counters thus follow the commit, whatever becomes of the pushing session.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::RelayCtx;
use crate::metrics::Metrics;
use crate::storage::{CommitHook, CommittedPush};

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
