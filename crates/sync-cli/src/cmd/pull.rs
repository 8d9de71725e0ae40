//! `pull`: print what the other devices sent since the last pull (then move the cursor), or
//! re-read everything after a cursor.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;
use sync_client::{Blob, IntegrityProblem, PullBatch, SyncClient};
use sync_types::{Cursor, DeviceId};

use crate::content::{Inbox, out_dir};
use crate::device::Ctx;
use crate::fail::{Failure, Kind, from_client};
use crate::out::{self, note, outln};
use crate::relay::Relays;
use crate::show;

/// Arguments of `pull`.
#[derive(Debug, Args)]
pub(crate) struct PullArgs {
    /// Re-read everything after this cursor instead (this device's own blobs included); the
    /// next plain `pull` is not affected.
    #[arg(long, value_name = "N")]
    after_cursor: Option<u64>,
    /// Write only the blobs' bytes, concatenated, to standard output (e.g. a file); received
    /// large content is still written under --out (and said so on standard error).
    #[arg(long, conflicts_with = "json")]
    raw: bool,
    /// Where files and folders sent as large content are written [default: DATA_DIR/files].
    /// An existing file is never overwritten: the new one gets a numbered name beside it.
    #[arg(long, value_name = "DIR")]
    pub(crate) out: Option<PathBuf>,
}

/// Pulls and prints; the cursor moves only once the blobs reached standard output.
pub(crate) async fn run(ctx: &Ctx, args: &PullArgs) -> Result<(), Failure> {
    let (device, _group, relay) = ctx.ready()?;
    let client = ctx.connect_online(&relay, "; nothing pulled").await?;
    let mut inbox = Inbox::new(out_dir(ctx, args.out.as_deref()));
    let result = print_and_commit(ctx, &client, &relay, device.device_id(), args, &mut inbox).await;
    if result.is_ok() {
        // Printed and committed: now let queued pushes go out (bounded by --wait).
        ctx.finish(&client, true).await;
    } else {
        client.close().await;
    }
    let incomplete = inbox.outcome();
    inbox.close().await;
    // An integrity problem (exit 11) says more than content that did not arrive (exit 12).
    result.and(incomplete)
}

/// Writes blobs to standard output and flushes it: once this returns `Ok`, they were handed to
/// the reader. `raw` writes only their bytes. A descriptor of large content is received into
/// the inbox's directory instead, and what arrived is printed in its place.
pub(crate) async fn print_blobs(
    ctx: &Ctx,
    client: &SyncClient,
    inbox: &mut Inbox,
    blobs: &[Blob],
    own: DeviceId,
    raw: bool,
) -> Result<(), Failure> {
    for b in blobs {
        if let Some(received) = inbox.take(ctx, client, b, own, raw).await? {
            if ctx.json {
                outln!("{received}")?;
            }
        } else if raw {
            out::bytes(&b.data)?;
        } else if ctx.json {
            outln!("{}", show::blob_json(b, own))?;
        } else {
            outln!("{}", show::blob_line(b, own))?;
        }
    }
    out::flush()
}

/// Pulls, prints, and only then moves the cursor (plain `pull`): blobs that did not reach
/// standard output come again with the next pull.
async fn print_and_commit(
    ctx: &Ctx,
    client: &SyncClient,
    relay: &Relays,
    own: DeviceId,
    args: &PullArgs,
    inbox: &mut Inbox,
) -> Result<(), Failure> {
    let mut problems = 0;
    let mut printed = 0;
    let mut batches = 0;
    let mut reread_after = args.after_cursor.map(Cursor::new);
    // A large backlog comes in bounded batches: each is printed (and, for a plain pull,
    // committed) before the next is pulled (with --json, one object per batch). A re-read goes
    // on after the last blob it printed until a batch comes back empty.
    loop {
        let pulled = ctx
            .within_wait(relay, "the pull", "; nothing more pulled", async {
                match reread_after {
                    Some(after) => client.pull_after(after).await.map(Pulled::Reread),
                    None => client.pull_uncommitted().await.map(Pulled::Batch),
                }
            })
            .await?;
        let (blobs, resume, found, more) = match &pulled {
            Pulled::Reread(blobs) => {
                reread_after = blobs.last().map(|b| b.cursor);
                (
                    blobs.as_slice(),
                    client.status().resume_cursor,
                    &[][..],
                    reread_after.is_some(),
                )
            }
            Pulled::Batch(b) => (
                b.blobs.as_slice(),
                b.resume_cursor,
                b.problems.as_slice(),
                b.more,
            ),
        };
        if batches == 0
            && let Some(line) = rewound_warning(client)
        {
            note!("{line}");
        }
        warn_problems(found);
        let first = batches == 0;
        batches += 1;
        problems += found.len();
        printed += blobs.len();
        // With --json: one object per batch that holds something (or the first, when nothing
        // came at all).
        // Large content goes to "content" (what arrived, where), other blobs to "blobs".
        if ctx.json && (first || !blobs.is_empty() || !found.is_empty()) {
            let (mut list, mut content) = (Vec::new(), Vec::new());
            for b in blobs {
                match inbox.take(ctx, client, b, own, false).await? {
                    Some(received) => content.push(received),
                    None => list.push(show::blob_json(b, own)),
                }
            }
            let found: Vec<String> = found.iter().map(ToString::to_string).collect();
            out::json(&json!({
                "blobs": list,
                "content": content,
                "resume_cursor": resume.get(),
                "problems": found,
            }))?;
        } else if !ctx.json {
            print_blobs(ctx, client, inbox, blobs, own, args.raw).await?;
        }
        if let Pulled::Batch(batch) = &pulled {
            client.commit_pull(batch).await.map_err(|e| {
                Failure::new(
                    Kind::Other,
                    format!(
                        "the blobs were printed but the cursor could not be saved ({}); the next pull prints them again",
                        from_client(e, &relay.to_string()).msg
                    ),
                )
            })?;
        }
        if !more {
            break;
        }
    }
    if !ctx.json && !args.raw && printed == 0 {
        note!("nothing new");
    }
    integrity_outcome(problems)
}

/// What one pull gave.
enum Pulled {
    Reread(Vec<Blob>),
    Batch(PullBatch),
}

/// The warning line for a relay whose log was found behind this device, if it was.
pub(crate) fn rewound_warning(client: &SyncClient) -> Option<String> {
    client.status().relay_rewound.map(|(was, from)| {
        format!(
            "warning: the relay's log is behind this device (it had pulled up to #{was}): the relay was restored from an older copy or reset; pulling again from #{from}, blobs already received are not shown twice, and this device's pushes the relay lost are pushed again"
        )
    })
}

/// One warning line per problem on standard error.
pub(crate) fn warn_problems(problems: &[IntegrityProblem]) {
    for p in problems {
        note!("warning: {p}");
    }
}

/// Exit 11 once any integrity problem was seen (the good data was printed).
pub(crate) fn integrity_outcome(problems: usize) -> Result<(), Failure> {
    if problems == 0 {
        return Ok(());
    }
    Err(Failure::new(
        Kind::Integrity,
        format!(
            "the relay's log had {problems} problem(s) (see the warnings above); everything else was printed"
        ),
    ))
}
