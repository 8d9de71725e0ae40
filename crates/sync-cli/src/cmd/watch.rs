//! `watch`: print arrivals as they come, reconnecting as needed, until SIGINT or SIGTERM; large
//! content that arrives is received into `--out`, and this device's own is served meanwhile.

use std::path::PathBuf;

use clap::Args;
use sync_client::{PullBatch, SyncClient, WatchEvent, WatchOptions};
use sync_types::DeviceId;
use tokio::signal::unix::{SignalKind, signal};

use super::pull::{integrity_outcome, print_blobs, warn_problems};
use crate::content::{Inbox, out_dir};
use crate::device::Ctx;
use crate::fail::{Failure, Kind, from_client};
use crate::out::note;

/// Arguments of `watch`.
#[derive(Debug, Args)]
pub(crate) struct WatchArgs {
    /// Where files and folders sent as large content are written [default: DATA_DIR/files].
    /// An existing file is never overwritten: the new one gets a numbered name beside it.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

/// Watches the group until a signal (exit 0) or a failure.
pub(crate) async fn run(ctx: &Ctx, args: &WatchArgs) -> Result<(), Failure> {
    let (device, group, relay) = ctx.ready()?;
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| Failure::new(Kind::Other, format!("cannot watch SIGTERM: {e}")))?;
    let mut int = signal(SignalKind::interrupt())
        .map_err(|e| Failure::new(Kind::Other, format!("cannot watch SIGINT: {e}")))?;
    let (client, online) = ctx.connect(&relay).await?;
    let mut watcher = client.watch(WatchOptions {
        pull_timeout: ctx.wait,
        ..WatchOptions::default()
    });
    let own = device.device_id();
    let mut inbox = Inbox::new(out_dir(ctx, args.out.as_deref()));
    if online {
        serve(ctx, &client, &mut inbox).await;
        let via = ctx
            .relay_in_use()
            .and_then(|id| relay.iter().find(|r| r.id == id))
            .unwrap_or(relay.first());
        note!("watching group {group} via {via} (Ctrl-C to stop)");
    } else {
        note!("relay unreachable at {relay}; waiting for it (Ctrl-C to stop)");
    }
    let mut result = Ok(());
    let mut problems = 0;
    while result.is_ok() {
        let event = tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            event = watcher.next() => event,
        };
        result = match event {
            Some(WatchEvent::Batch(batch)) => {
                problems += batch.problems.len();
                // Receiving large content can take long: a signal stops it, and the batch,
                // not committed, comes again next time (what was fetched is kept).
                tokio::select! {
                    _ = term.recv() => break,
                    _ = int.recv() => break,
                    r = print_and_commit(ctx, &client, &mut inbox, &batch, own) => r,
                }
            }
            Some(WatchEvent::Connected { relay_id, .. }) => {
                match relay.iter().find(|r| r.id == relay_id) {
                    Some(r) => note!("connected to {r}"),
                    None => note!("connected to {relay}"),
                }
                // Serve from the first session on; let the group's devices in again after
                // each reconnect (members may have joined or been revoked).
                serve(ctx, &client, &mut inbox).await;
                Ok(())
            }
            Some(WatchEvent::Disconnected { reason }) => {
                note!("disconnected ({reason}); reconnecting");
                Ok(())
            }
            // Reported with the batch it was found in.
            Some(WatchEvent::Rejected { .. }) => Ok(()),
            Some(WatchEvent::PullFailed { error, retry_in }) => {
                note!(
                    "pull failed ({error}); retrying in {:.0}s",
                    retry_in.as_secs_f64()
                );
                Ok(())
            }
            Some(WatchEvent::Failed(e)) => Err(from_client(e, "the relay")),
            Some(_) => Ok(()),
            None => break,
        };
    }
    client.close().await;
    let incomplete = inbox.outcome();
    inbox.close().await;
    result
        .and_then(|()| integrity_outcome(problems))
        .and(incomplete)
}

/// Serves this device's large content to the group (best effort: a failure is said, and tried
/// again at the next connect).
async fn serve(ctx: &Ctx, client: &SyncClient, inbox: &mut Inbox) {
    let first = !inbox.serving();
    match inbox.serve(ctx, client).await {
        Ok(()) if first => note!("serving this device's large content to the group"),
        Ok(()) => {}
        Err(f) => note!("sync-cli: not serving large content for now: {}", f.msg),
    }
}

/// Prints a batch, and only then moves the cursor past it: a batch that did not reach standard
/// output (its reader went away) comes again with the next `watch` or `pull`.
async fn print_and_commit(
    ctx: &Ctx,
    client: &SyncClient,
    inbox: &mut Inbox,
    batch: &PullBatch,
    own: DeviceId,
) -> Result<(), Failure> {
    warn_problems(&batch.problems);
    print_blobs(ctx, client, inbox, &batch.blobs, own, false).await?;
    client.commit_pull(batch).await.map(drop).map_err(|e| {
        Failure::new(
            Kind::Other,
            format!(
                "the cursor could not be saved ({}); the blobs printed last come again next time",
                from_client(e, "the relay").msg
            ),
        )
    })
}
