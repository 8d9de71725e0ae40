//! Large content: files above the blob limit (or any file with `push --content`) and folders
//! (`push --dir`), sealed into this device's content store (`<data_dir>/content/`), uploaded to
//! the relay's content store when it has one, and announced by a descriptor blob; a descriptor
//! pulled or watched is received into `--out` (`<data_dir>/files/` by default). While a command
//! runs, this device serves what it holds to the group's devices over its own endpoint
//! (everything its store keeps, sent or received, also after a restart).

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use sync_client::{Blob, SyncClient};
use sync_content::{
    ContentClient, ContentError, ContentStore, Descriptor, Progress, Received, SendError,
    SendOptions, Sent,
};
use sync_types::DeviceId;

use crate::device::Ctx;
use crate::fail::{Failure, Kind, from_client};
use crate::out::{note, outln};

/// Largest plaintext an ordinary blob carries: the relay's default payload limit
/// ([`sync_types::DEFAULT_MAX_PAYLOAD`]) less the seal's overhead. Larger files go as content.
pub(crate) const BLOB_PLAINTEXT_LIMIT: u64 =
    (sync_types::DEFAULT_MAX_PAYLOAD - sync_crypto::SEAL_OVERHEAD) as u64;

/// The content store, under the data directory.
const STORE_DIR: &str = "content";
/// Default directory for received files, under the data directory.
const FILES_DIR: &str = "files";

/// How often a progress bar is redrawn from its counter.
const BAR_TICK: Duration = Duration::from_millis(100);

/// `--out`, or `<data_dir>/files/`.
pub(crate) fn out_dir(ctx: &Ctx, out: Option<&Path>) -> PathBuf {
    out.map_or_else(|| ctx.data_dir.join(FILES_DIR), Path::to_path_buf)
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// This device's content store served on its endpoint to the group's devices.
pub(crate) struct Content {
    client: ContentClient,
}

impl Content {
    /// Opens the store and serves it on the device's endpoint (so [`Ctx::connect`] must have
    /// run) to the group's current devices: everything the store keeps (sent or received, in
    /// this process or before) is offered.
    pub(crate) async fn open(ctx: &Ctx, sync: &SyncClient) -> Result<Content, Failure> {
        let dir = ctx.data_dir.join(STORE_DIR);
        let store = ContentStore::open(&dir).await.map_err(|e| {
            Failure::new(Kind::Other, format!("content store {}: {e}", dir.display()))
        })?;
        let Some(node) = ctx.content_node(store.clone()).await else {
            store.shutdown().await;
            return Err(Failure::new(
                Kind::Unreachable,
                "large content needs a connection to the relay first",
            ));
        };
        ctx.remember_port().await;
        let client = ContentClient::new(sync.clone(), node, ctx.relay_holder())
            .await
            .map_err(|e| send_failure(e, "the relay"))?;
        if let Some(keep) = ctx.keep_content {
            match client.prune(keep).await {
                Ok(0) => {}
                Ok(n) => note!(
                    "sync-cli: removed {n} content item(s) not used for {} days from this device's store (--keep-content)",
                    keep.as_secs() / 86_400
                ),
                Err(e) => note!("sync-cli: could not prune this device's content store: {e}"),
            }
        }
        Ok(Content { client })
    }

    /// Lets the group's current devices fetch from this device (best effort).
    pub(crate) async fn refresh_peers(&self) {
        if let Err(e) = self.client.refresh_peers().await {
            note!("sync-cli: could not refresh the group's devices for serving content: {e}");
        }
    }

    /// Seals and sends a file (or with `dir`, a folder as one collection), with a progress bar
    /// on a terminal. `relay` names the relay in failures.
    pub(crate) async fn send(
        &self,
        ctx: &Ctx,
        path: &Path,
        dir: bool,
        relay: &str,
    ) -> Result<Sent, Failure> {
        let label = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let (bar, progress) = Bar::start(ctx, format!("sending {label}"));
        let options = SendOptions {
            progress,
            ..SendOptions::default()
        };
        let sent = if dir {
            self.client.send_dir(path, options).await
        } else {
            self.client.send_file(path, options).await
        };
        drop(bar);
        sent.map_err(|e| send_failure(e, relay))
    }

    /// Fetches and opens what `descriptor` names into `out_dir`, with a progress bar on a
    /// terminal. Fails only locally (`out_dir` not writable, the store failing).
    async fn receive(
        &self,
        ctx: &Ctx,
        descriptor: &Descriptor,
        out_dir: &Path,
    ) -> Result<Received, Failure> {
        let (bar, progress) = Bar::start(ctx, format!("receiving {}", descriptor.name()));
        let received = self.client.receive(descriptor, out_dir, progress).await;
        drop(bar);
        received.map_err(|e| match e {
            ContentError::File { .. } => Failure::new(Kind::BadInput, e.to_string()),
            other => Failure::new(Kind::Other, other.to_string()),
        })
    }

    /// Flushes the store. Call after the sync client closed (closing the client closes the
    /// endpoint the store was served on).
    pub(crate) async fn close(self) {
        self.client.node().store().shutdown().await;
    }
}

/// A sending failure as a failure of the CLI.
fn send_failure(e: SendError, relay: &str) -> Failure {
    if e.is_quota_exceeded() {
        return Failure::new(
            Kind::Quota,
            format!(
                "the relay refused the content: the group's large-content quota is full ({e}); nothing was uploaded or announced"
            ),
        );
    }
    match e {
        SendError::Content(
            e @ (ContentError::File { .. }
            | ContentError::FileChanged { .. }
            | ContentError::UnsafeName(_)),
        ) => Failure::bad_input(e.to_string()),
        SendError::Content(e) => Failure::new(Kind::Other, e.to_string()),
        SendError::Refused(e) => {
            let f = from_client(e, relay);
            Failure::new(
                f.kind,
                format!("{}; nothing was uploaded or announced", f.msg),
            )
        }
        SendError::Upload(f) => Failure::new(
            Kind::Unreachable,
            format!(
                "upload to the relay at {relay} failed ({f}); nothing was announced: try again"
            ),
        ),
        SendError::Client(e) => from_client(e, relay),
        SendError::Announce(e) => {
            let f = from_client(e, relay);
            Failure::new(
                f.kind,
                format!(
                    "the content is sealed on this device but announcing it failed: {}",
                    f.msg
                ),
            )
        }
    }
}

/// A progress bar on standard error (bytes, rate, ETA) drawn from a [`Progress`] counter, only
/// on a terminal and without `--json`. Removed when dropped.
pub(crate) struct Bar(Option<(ProgressBar, tokio::task::JoinHandle<()>)>);

impl Bar {
    /// A bar labelled `label` and the counter it shows (`None`, and no bar, when not shown).
    pub(crate) fn start(ctx: &Ctx, label: String) -> (Bar, Option<Arc<Progress>>) {
        if ctx.json || !std::io::stderr().is_terminal() {
            return (Bar(None), None);
        }
        let progress = Progress::new();
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{msg} [{wide_bar}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
        )
        .map_or_else(
            |_| ProgressStyle::default_bar(),
            |s| s.progress_chars("=> "),
        );
        bar.set_style(style);
        bar.set_message(label);
        let (counter, shown) = (Arc::clone(&progress), bar.clone());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(BAR_TICK);
            loop {
                tick.tick().await;
                shown.set_length(counter.total());
                shown.set_position(counter.done());
            }
        });
        (Bar(Some((bar, task))), Some(progress))
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        if let Some((bar, task)) = self.0.take() {
            task.abort();
            bar.finish_and_clear();
        }
    }
}

/// Receives the content that pulled or watched descriptor blobs name, opening the content
/// store on the first one (or at once with [`Inbox::serve`]), and keeps count of what could
/// not be fetched completely.
pub(crate) struct Inbox {
    out_dir: PathBuf,
    content: Option<Content>,
    /// Cursors of the descriptors whose content did not arrive completely.
    incomplete: Vec<u64>,
}

impl Inbox {
    /// Receives into `out_dir`.
    pub(crate) fn new(out_dir: PathBuf) -> Self {
        Self {
            out_dir,
            content: None,
            incomplete: Vec::new(),
        }
    }

    /// Opens the store now and serves this device's content (`watch`); again to let the
    /// group's current devices in.
    pub(crate) async fn serve(&mut self, ctx: &Ctx, sync: &SyncClient) -> Result<(), Failure> {
        match &self.content {
            Some(c) => c.refresh_peers().await,
            None => self.content = Some(Content::open(ctx, sync).await?),
        }
        Ok(())
    }

    /// Whether content is being served.
    pub(crate) fn serving(&self) -> bool {
        self.content.is_some()
    }

    /// If `blob` is a descriptor: receives its content and says what arrived (on standard
    /// output; with `raw`, on standard error, standard output carrying only blob bytes), and
    /// returns its JSON object (for the caller to print with `--json`). `None` for any other
    /// blob.
    pub(crate) async fn take(
        &mut self,
        ctx: &Ctx,
        sync: &SyncClient,
        blob: &Blob,
        own: DeviceId,
        raw: bool,
    ) -> Result<Option<serde_json::Value>, Failure> {
        if !Descriptor::is_descriptor(&blob.data) {
            return Ok(None);
        }
        let descriptor = match Descriptor::decode(&blob.data) {
            Ok(d) => d,
            Err(e) => {
                note!(
                    "warning: blob {} at cursor {} announces content that cannot be read: {e}",
                    blob.blob_id,
                    blob.cursor
                );
                self.incomplete.push(blob.cursor.get());
                return Ok(Some(json!({
                    "kind": "content",
                    "cursor": blob.cursor.get(),
                    "blob_id": blob.blob_id.to_string(),
                    "sender": blob.sender.to_string(),
                    "own": blob.sender == own,
                    "complete": false,
                    "error": e.to_string(),
                })));
            }
        };
        if self.content.is_none() {
            self.content = Some(Content::open(ctx, sync).await?);
        }
        let Some(content) = &self.content else {
            return Ok(None);
        };
        let received = content.receive(ctx, &descriptor, &self.out_dir).await?;
        let shown = Shown::new(&descriptor, &received);
        if !received.is_complete() {
            self.incomplete.push(blob.cursor.get());
        }
        if !ctx.json {
            let line = shown.line(&received);
            if raw {
                note!("{line}");
            } else {
                outln!("{line}")?;
            }
            for (item, why) in &received.missing {
                note!(
                    "warning: {}: {item} could not be fetched: {why}",
                    descriptor.name()
                );
            }
        }
        Ok(Some(shown.json(blob, own, &received)))
    }

    /// Fails with [`Kind::Incomplete`] once any content did not arrive completely.
    pub(crate) fn outcome(&self) -> Result<(), Failure> {
        let Some(first) = self.incomplete.iter().min() else {
            return Ok(());
        };
        Err(Failure::new(
            Kind::Incomplete,
            format!(
                "{} received file(s) or folder(s) did not arrive completely (see the warnings above; their sender may be offline and the relay holds no copy): fetch them again with `sync-cli pull --after-cursor {}`",
                self.incomplete.len(),
                first.saturating_sub(1)
            ),
        ))
    }

    /// Flushes the store (after the sync client closed).
    pub(crate) async fn close(self) {
        if let Some(c) = self.content {
            c.close().await;
        }
    }
}

/// What to say about received content.
struct Shown {
    kind: &'static str,
    name: String,
    bytes: u64,
    items: usize,
    /// The file written, or the collection's folder.
    path: Option<PathBuf>,
}

impl Shown {
    fn new(descriptor: &Descriptor, received: &Received) -> Self {
        let (kind, path) = match descriptor {
            Descriptor::Item(_) => ("content", received.written.first().cloned()),
            Descriptor::Collection(c) => ("collection", collection_dir(c, received)),
        };
        Shown {
            kind,
            name: descriptor.name().to_string(),
            bytes: descriptor.items().iter().map(|i| i.plain_size).sum(),
            items: descriptor.items().len(),
            path,
        }
    }

    fn line(&self, received: &Received) -> String {
        let (name, bytes) = (&self.name, self.bytes);
        let files = if self.kind == "collection" {
            format!(", {} file(s)", self.items)
        } else {
            String::new()
        };
        match &self.path {
            Some(p) if received.is_complete() => {
                format!("received {name} ({bytes} bytes{files}) -> {}", p.display())
            }
            Some(p) => format!(
                "INCOMPLETE {name} ({bytes} bytes{files}; {} missing) -> {}",
                received.missing.len(),
                p.display()
            ),
            None => format!("NOT received {name} ({bytes} bytes{files}): it could not be fetched"),
        }
    }

    fn json(&self, blob: &Blob, own: DeviceId, received: &Received) -> serde_json::Value {
        let missing: Vec<_> = received
            .missing
            .iter()
            .map(|(name, why)| json!({ "name": name, "reason": why }))
            .collect();
        json!({
            "kind": self.kind,
            "name": self.name,
            "bytes": self.bytes,
            "items": self.items,
            "path": self.path.as_ref().map(|p| p.display().to_string()),
            "paths": received.written.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "complete": received.is_complete(),
            "missing": missing,
            "bytes_fetched": received.bytes_fetched,
            "bytes_resumed": received.bytes_resumed,
            "cursor": blob.cursor.get(),
            "blob_id": blob.blob_id.to_string(),
            "sender": blob.sender.to_string(),
            "own": blob.sender == own,
            "timestamp_ms": blob.timestamp_ms,
        })
    }
}

/// The folder a collection was opened into: a written item's path less the item's name.
fn collection_dir(c: &sync_content::Collection, received: &Received) -> Option<PathBuf> {
    let written = received.written.first()?;
    let item = c.items.iter().find(|i| written.ends_with(&i.name))?;
    let depth = Path::new(&item.name).components().count();
    written.ancestors().nth(depth).map(Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lower_case() {
        assert_eq!(hex(&[0xab, 0x01]), "ab01");
    }

    #[test]
    fn the_limit_is_the_relays_payload_less_the_seal() {
        assert_eq!(
            BLOB_PLAINTEXT_LIMIT as usize + sync_crypto::SEAL_OVERHEAD,
            sync_types::DEFAULT_MAX_PAYLOAD
        );
    }
}
