//! `push`: seal and send text or a file; queued on this device when the relay cannot take it
//! now, and sent by the next command that connects. A file too large for one blob (or any file
//! with `--content`), and a folder (`--dir`), go as large content instead: see
//! [`crate::content`].

use std::io::Read as _;
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::json;
use sync_client::{ClientError, Receipt, Stream, StreamExt, SyncEvent};
use sync_types::BlobId;

use crate::content::{BLOB_PLAINTEXT_LIMIT, Content, hex};
use crate::device::Ctx;
use crate::fail::{Failure, from_client};
use crate::out::{self, note, outln};

/// Arguments of `push`.
#[derive(Debug, Args)]
pub(crate) struct PushArgs {
    /// The text to send.
    #[arg(required_unless_present_any = ["file", "dir"], conflicts_with_all = ["file", "dir"])]
    text: Option<String>,
    /// Send this file (`-` reads standard input). A file larger than one blob takes (1 MiB
    /// less 149 bytes) goes as large content: sealed in chunks, fetched by the other devices
    /// from this one (while `sync-cli watch` runs here) or from the relay's content store.
    #[arg(long, value_name = "FILE", conflicts_with = "dir")]
    file: Option<PathBuf>,
    /// Send --file as large content whatever its size (not standard input).
    #[arg(long, requires = "file")]
    content: bool,
    /// Send this folder (every regular file below it, by relative path) as one collection of
    /// large content: it is received complete, or the missing files are named.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// The file or folder to send as large content, if this push is one (a folder; a file with
/// `--content` or larger than one blob takes).
fn content_source(args: &PushArgs) -> Result<Option<(PathBuf, bool)>, Failure> {
    if let Some(dir) = &args.dir {
        let meta = std::fs::metadata(dir)
            .map_err(|e| Failure::bad_input(format!("{}: {e}", dir.display())))?;
        if !meta.is_dir() {
            return Err(Failure::bad_input(format!(
                "{} is not a folder (use --file for a file)",
                dir.display()
            )));
        }
        return Ok(Some((dir.clone(), true)));
    }
    let Some(file) = &args.file else {
        return Ok(None);
    };
    if file == Path::new("-") {
        if args.content {
            return Err(Failure::bad_input(
                "--content needs a file path: standard input cannot be sent as large content (save it to a file first)",
            ));
        }
        return Ok(None);
    }
    let meta = std::fs::metadata(file)
        .map_err(|e| Failure::bad_input(format!("{}: {e}", file.display())))?;
    if !meta.is_file() {
        return Err(Failure::bad_input(format!(
            "{} is not a regular file (use --dir for a folder)",
            file.display()
        )));
    }
    Ok((args.content || meta.len() > BLOB_PLAINTEXT_LIMIT).then(|| (file.clone(), false)))
}

/// The bytes to send: the text, the file, or standard input (small blobs only: a file above
/// [`BLOB_PLAINTEXT_LIMIT`] never gets here, and standard input is read up to it).
fn read_input(text: Option<String>, file: Option<&Path>) -> Result<Vec<u8>, Failure> {
    match (text, file) {
        (Some(t), _) => Ok(t.into_bytes()),
        (None, Some(f)) if f == Path::new("-") => {
            let mut buf = Vec::new();
            std::io::stdin()
                .take(BLOB_PLAINTEXT_LIMIT + 1)
                .read_to_end(&mut buf)
                .map_err(|e| Failure::bad_input(format!("standard input: {e}")))?;
            if buf.len() as u64 > BLOB_PLAINTEXT_LIMIT {
                return Err(Failure::bad_input(format!(
                    "standard input is larger than one blob takes ({BLOB_PLAINTEXT_LIMIT} bytes): save it to a file and `push --file FILE` (it then goes as large content)"
                )));
            }
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
    if let Some((path, dir)) = content_source(&args)? {
        return push_content(ctx, &path, dir).await;
    }
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

/// Sends a file (or with `dir`, a folder) as large content: needs the relay now (nothing is
/// queued), and says what was sent.
async fn push_content(ctx: &Ctx, path: &Path, dir: bool) -> Result<(), Failure> {
    let (_device, _group, relay) = ctx.ready()?;
    let client = ctx
        .connect_online(
            &relay,
            ": large content is not queued, nothing was sent; try again",
        )
        .await?;
    let relay_text = relay.to_string();
    let sent = match Content::open(ctx, &client).await {
        Ok(content) => {
            let sent = content.send(ctx, path, dir, &relay_text).await;
            ctx.finish(&client, true).await;
            content.close().await;
            sent
        }
        Err(f) => {
            client.close().await;
            Err(f)
        }
    }?;
    for skipped in &sent.skipped {
        note!(
            "sync-cli: left out {} (not a regular file)",
            skipped.display()
        );
    }
    let items = sent.descriptor.items();
    let bytes: u64 = items.iter().map(|i| i.plain_size).sum();
    let (kind, hash) = match &sent.descriptor {
        sync_content::Descriptor::Item(item) => ("content", Some(hex(&item.hash))),
        sync_content::Descriptor::Collection(_) => ("collection", None),
    };
    if ctx.json {
        out::json(&json!({
            "status": "sent",
            "kind": kind,
            "name": sent.descriptor.name(),
            "bytes": bytes,
            "items": items.len(),
            "hash": hash,
            "hashes": items.iter().map(|i| hex(&i.hash)).collect::<Vec<_>>(),
            "blob_id": sent.blob_id.to_string(),
            "cursor": sent.cursor.get(),
            "relay_copy": sent.relay_copy,
            "skipped": sent.skipped.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        }))?;
    } else {
        let what = match &hash {
            Some(h) => format!("as content {}", h.get(..12).unwrap_or(h)),
            None => format!("as a collection of {} file(s)", items.len()),
        };
        outln!(
            "sent {} ({bytes} bytes) {what} (blob {} at cursor {}; relay copy: {})",
            path.display(),
            sent.blob_id,
            sent.cursor,
            if sent.relay_copy { "yes" } else { "no" }
        )?;
    }
    if !sent.relay_copy {
        note!(
            "sync-cli: the relay keeps no copy: the other devices can fetch it from this device while `sync-cli watch` runs here"
        );
    }
    Ok(())
}
