//! `push`: seal and send text or a file; queued on this device when the relay cannot take it
//! now, and sent by the next command that connects.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::json;
use sync_client::{ClientError, Receipt, Stream, StreamExt, SyncEvent};
use sync_types::BlobId;

use crate::device::Ctx;
use crate::fail::{Failure, from_client};
use crate::out::{self, note, outln};

/// Arguments of `push`.
#[derive(Debug, Args)]
pub(crate) struct PushArgs {
    /// The text to send.
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    text: Option<String>,
    /// Send this file's bytes (`-` reads standard input).
    #[arg(long, value_name = "FILE")]
    file: Option<PathBuf>,
}

/// The bytes to send: the text, the file, or standard input.
fn read_input(text: Option<String>, file: Option<&Path>) -> Result<Vec<u8>, Failure> {
    match (text, file) {
        (Some(t), _) => Ok(t.into_bytes()),
        (None, Some(f)) if f == Path::new("-") => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| Failure::bad_input(format!("standard input: {e}")))?;
            Ok(buf)
        }
        (None, Some(f)) => {
            std::fs::read(f).map_err(|e| Failure::bad_input(format!("{}: {e}", f.display())))
        }
        (None, None) => Err(Failure::bad_input("give TEXT or --file FILE")),
    }
}

/// Sends the data, or queues it, and says which.
pub(crate) async fn run(ctx: &Ctx, args: PushArgs) -> Result<(), Failure> {
    let data = read_input(args.text, args.file.as_deref())?;
    let (_device, _group, relay) = ctx.ready()?;
    let (client, online) = ctx.connect(&relay).await?;
    let deadline = tokio::time::Instant::now() + ctx.wait;
    let mut events = client.subscribe();
    let result = if online {
        match tokio::time::timeout_at(deadline, client.push(&data)).await {
            Ok(Err(deferred @ ClientError::Deferred { blob_id, .. })) => {
                // Rate limit or quota: the client re-sends after the relay's hint; wait for the
                // outcome within --wait before reporting the refusal.
                match tokio::time::timeout_at(deadline, push_outcome(&mut events, blob_id)).await {
                    Ok(Some(r)) => r.map(Some),
                    _ => Err(deferred),
                }
            }
            Ok(r) => r.map(Some),
            Err(_) => Err(ClientError::Timeout { blob_id: None }),
        }
    } else {
        client.push_queued(&data).await.map(|_| None)
    };
    let outcome = match result {
        Ok(Some(receipt)) => Ok((Some(receipt), 0)),
        Ok(None) | Err(ClientError::Offline { .. } | ClientError::Timeout { .. }) => {
            Ok((None, client.status().outbox_len))
        }
        Err(e) => Err(from_client(e, &relay.to_string())),
    };
    if outcome.is_ok() {
        ctx.finish(&client, online).await;
        if let Some(line) = super::pull::rewound_warning(&client) {
            note!("{line}");
        }
    } else {
        // Refused or deferred past --wait: do not wait again, the outbox keeps what is queued.
        client.close().await;
    }
    let (receipt, pending) = outcome?;
    match receipt {
        Some(r) => {
            if ctx.json {
                out::json(&json!({
                    "status": "sent",
                    "blob_id": r.blob_id.to_string(),
                    "cursor": r.cursor.get(),
                    "bytes": data.len(),
                }))?;
            } else {
                outln!(
                    "sent {} bytes: blob {} at cursor {}",
                    data.len(),
                    r.blob_id,
                    r.cursor
                )?;
            }
        }
        None => {
            if ctx.json {
                out::json(&json!({
                    "status": "queued",
                    "relay": relay.to_string(),
                    "pending": pending,
                    "bytes": data.len(),
                }))?;
            }
            note!(
                "sync-cli: queued on this device ({} bytes; {pending} push(es) waiting): relay {} at {relay}; it is sent by the next command that connects (e.g. `sync-cli flush`)",
                data.len(),
                if online {
                    "did not acknowledge in time"
                } else {
                    "unreachable"
                },
            );
        }
    }
    Ok(())
}

/// The relay's final word on a deferred push, from the client's events (`None` if the events
/// end first).
async fn push_outcome(
    events: &mut (impl Stream<Item = SyncEvent> + Unpin),
    blob_id: BlobId,
) -> Option<Result<Receipt, ClientError>> {
    while let Some(event) = events.next().await {
        match event {
            SyncEvent::PushAcked { receipt } if receipt.blob_id == blob_id => {
                return Some(Ok(receipt));
            }
            SyncEvent::PushRejected {
                blob_id: id,
                code,
                message,
            } if id == blob_id => {
                return Some(Err(ClientError::Rejected {
                    blob_id: Some(id),
                    code,
                    message,
                    retry_after: None,
                }));
            }
            _ => {}
        }
    }
    None
}
