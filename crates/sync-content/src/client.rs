//! Large content between the devices of a group, on top of a [`SyncClient`]: send a file or a
//! folder (sealed into the local store, registered with the relay, uploaded to the relay's
//! content store, announced by a [`Descriptor`] blob) and receive what a descriptor names
//! (fetched from its holders, verified, opened into a directory).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sync_client::{ClientError, SyncClient};
use sync_crypto::KeyEpoch;
use sync_types::{BlobId, Cursor, ErrorCode};

use crate::chunk::DEFAULT_CHUNK_SIZE;
use crate::descriptor::{Collection, ContentRef, Descriptor, Holder, check_name};
use crate::error::ContentError;
use crate::node::{ContentNode, FetchError, HolderFailure};
use crate::store::{Progress, SealParams};

/// Why sending failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Reading or sealing the content failed.
    #[error(transparent)]
    Content(#[from] ContentError),
    /// The relay refused to register the content: [`SendError::is_quota_exceeded`] tells the
    /// group's content quota apart. Nothing was uploaded or announced.
    #[error("the relay refused the content: {0}")]
    Refused(ClientError),
    /// The upload to the relay's content store failed; nothing was announced.
    #[error("upload to the relay failed: {0}")]
    Upload(HolderFailure),
    /// Announcing the content (pushing its descriptor) failed.
    #[error("announcing the content failed: {0}")]
    Announce(ClientError),
    /// The sync client failed before anything was sent (closed, or the group's devices could
    /// not be read).
    #[error(transparent)]
    Client(ClientError),
}

impl SendError {
    /// Whether the relay refused the content as over the group's content quota.
    pub fn is_quota_exceeded(&self) -> bool {
        matches!(
            self,
            SendError::Refused(ClientError::Rejected { code, .. }) if *code == ErrorCode::QuotaExceeded
        )
    }
}

/// How to send.
#[derive(Debug, Clone)]
pub struct SendOptions {
    /// Plaintext bytes per chunk.
    pub chunk_size: u32,
    /// Media type recorded for a single file (`application/octet-stream` if `None`).
    pub media_type: Option<String>,
    /// Counts plaintext bytes sealed, then sealed bytes uploaded to the relay (its total is set
    /// to both together).
    pub progress: Option<Arc<Progress>>,
}

impl Default for SendOptions {
    fn default() -> Self {
        Self {
            chunk_size: DEFAULT_CHUNK_SIZE,
            media_type: None,
            progress: None,
        }
    }
}

/// What was sent.
#[derive(Debug, Clone)]
pub struct Sent {
    /// The descriptor pushed.
    pub descriptor: Descriptor,
    /// The id of the blob that carries it.
    pub blob_id: BlobId,
    /// Its place in the group's log.
    pub cursor: Cursor,
    /// Whether the relay's content store holds a copy (receivers can fetch it after this
    /// device went offline); `false` when the relay has no content store.
    pub relay_copy: bool,
    /// Files of a folder that were left out (not regular files: links, devices, …).
    pub skipped: Vec<PathBuf>,
}

/// What was received.
#[derive(Debug, Default)]
pub struct Received {
    /// Files written, complete and verified.
    pub written: Vec<PathBuf>,
    /// Items that could not be fetched or opened, by name, with the reason.
    pub missing: Vec<(String, String)>,
    /// Verified sealed bytes fetched over the network (not counting what was held already).
    pub bytes_fetched: u64,
    /// Verified sealed bytes that were held already (resumed from).
    pub bytes_resumed: u64,
    /// Verified sealed bytes fetched from each holder (endpoint id), in the order they
    /// delivered.
    pub from_holders: Vec<([u8; 32], u64)>,
}

impl Received {
    /// Whether every item arrived.
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty()
    }
}

/// Sends and receives large content for one group.
#[derive(Debug)]
pub struct ContentClient {
    sync: SyncClient,
    node: ContentNode,
    relay: Option<Holder>,
}

impl ContentClient {
    /// Large content over `sync`'s group, served and fetched by `node` (on the device's
    /// endpoint), with `relay` (the relay of the session, as a holder) for the relay's copy.
    /// Everything the node's store keeps is offered to the group's devices again (content
    /// sent or received before a restart stays available from this device).
    pub async fn new(
        sync: SyncClient,
        node: ContentNode,
        relay: Option<Holder>,
    ) -> Result<Self, SendError> {
        for (hash, _) in node.store().kept().await? {
            node.offer(hash);
        }
        let client = Self { sync, node, relay };
        client.refresh_peers().await.map_err(SendError::Client)?;
        Ok(client)
    }

    /// Closes the sync client and stops serving (the device goes offline for the group).
    pub async fn shutdown(self) {
        self.sync.close().await;
        self.node.shutdown().await;
    }

    /// Forgets content last sent, fetched or kept more than `keep_for` ago (the store's
    /// garbage collection then removes its bytes); returns how many items went.
    pub async fn prune(&self, keep_for: std::time::Duration) -> Result<usize, ContentError> {
        let keep_ms = u64::try_from(keep_for.as_millis()).unwrap_or(u64::MAX);
        let cutoff = sync_types::unix_ms().saturating_sub(keep_ms);
        Ok(self.node.store().prune(cutoff).await?.len())
    }

    /// The content node.
    pub fn node(&self) -> &ContentNode {
        &self.node
    }

    /// The sync client.
    pub fn sync(&self) -> &SyncClient {
        &self.sync
    }

    /// Lets the group's current (not revoked) devices fetch from this device.
    pub async fn refresh_peers(&self) -> Result<(), ClientError> {
        let members = self.sync.members().await?;
        self.node.allow_peers(
            members
                .iter()
                .filter(|m| m.revoked_at.is_none() && !m.this_device)
                .map(|m| *m.device.as_bytes()),
        );
        Ok(())
    }

    /// Sends one file.
    pub async fn send_file(&self, path: &Path, options: SendOptions) -> Result<Sent, SendError> {
        let name = name_of(path)?;
        let blob_id = self.sync.new_blob_id().map_err(SendError::Client)?;
        let media_type = options
            .media_type
            .clone()
            .unwrap_or_else(|| "application/octet-stream".into());
        let len = std::fs::metadata(path)
            .map_err(|e| ContentError::file(path, e))?
            .len();
        self.set_send_total(&options, &[len]);
        let item = self.seal(path, name, media_type, &options).await?;
        let (items, relay_copy) = self.place(blob_id, vec![item], &options).await?;
        let descriptor = Descriptor::Item(
            items
                .into_iter()
                .next()
                .ok_or_else(|| ContentError::Store("no item sealed".into()))?,
        );
        self.announce(blob_id, descriptor, relay_copy, Vec::new())
            .await
    }

    /// Sends a folder as one collection: every regular file under `dir`, named by its path
    /// relative to `dir`.
    pub async fn send_dir(&self, dir: &Path, options: SendOptions) -> Result<Sent, SendError> {
        let name = name_of(dir)?;
        let (files, skipped) = walk(dir)?;
        let lens: Vec<u64> = files.iter().map(|(_, _, len)| *len).collect();
        self.set_send_total(&options, &lens);
        let blob_id = self.sync.new_blob_id().map_err(SendError::Client)?;
        let mut items = Vec::with_capacity(files.len());
        for (path, rel, _) in files {
            check_name(&rel)?;
            let item = self
                .seal(&path, rel, "application/octet-stream".into(), &options)
                .await?;
            items.push(item);
        }
        let (items, relay_copy) = self.place(blob_id, items, &options).await?;
        let descriptor = Descriptor::Collection(Collection { name, items });
        self.announce(blob_id, descriptor, relay_copy, skipped)
            .await
    }

    /// The progress total of sending files of `lens` plaintext bytes: sealing all of them,
    /// then uploading their sealed bytes when there is a relay to upload to.
    fn set_send_total(&self, options: &SendOptions, lens: &[u64]) {
        if let Some(p) = &options.progress {
            let plain: u64 = lens.iter().sum();
            let sealed: u64 = lens
                .iter()
                .map(|l| crate::chunk::sealed_size(*l, options.chunk_size))
                .sum();
            p.set_total(plain + if self.relay.is_some() { sealed } else { 0 });
        }
    }

    async fn seal(
        &self,
        path: &Path,
        name: String,
        media_type: String,
        options: &SendOptions,
    ) -> Result<ContentRef, SendError> {
        let epoch = self.sync.epoch();
        let content_id = self.sync.new_blob_id().map_err(SendError::Client)?;
        let key = self
            .sync
            .content_key(epoch, &content_id)
            .ok_or(ContentError::NoKey(epoch.0))?;
        let params = SealParams {
            content_id,
            epoch: epoch.0,
            chunk_size: options.chunk_size,
            name,
            media_type,
        };
        let cref = self
            .node
            .store()
            .seal_file(path, &key, params, options.progress.clone())
            .await?;
        self.node.offer(cref.blob_hash());
        Ok(cref)
    }

    /// Registers and uploads every item with the relay (when it has a content store), and
    /// names the holders: this device first, then the relay.
    async fn place(
        &self,
        blob_id: BlobId,
        mut items: Vec<ContentRef>,
        options: &SendOptions,
    ) -> Result<(Vec<ContentRef>, bool), SendError> {
        let mut relay_copy = false;
        if let Some(relay) = &self.relay {
            relay_copy = true;
            // Register everything first, so a group over its quota learns it before any upload.
            for item in &items {
                let chunks = u32::try_from(item.chunks())
                    .map_err(|_| ContentError::Store("too many chunks".into()))?;
                let registered = self
                    .sync
                    .register_content(
                        blob_id,
                        item.hash,
                        item.sealed_size(),
                        item.chunk_size,
                        chunks,
                    )
                    .await;
                match registered {
                    Ok(()) => {}
                    Err(ClientError::Rejected {
                        code: ErrorCode::NotSupported,
                        ..
                    }) => {
                        relay_copy = false;
                        break;
                    }
                    Err(e) => return Err(SendError::Refused(e)),
                }
            }
            if relay_copy {
                for item in &items {
                    self.node
                        .upload(relay, item.blob_hash(), options.progress.clone())
                        .await
                        .map_err(SendError::Upload)?;
                }
            }
        }
        if let Some(p) = options.progress.as_ref().filter(|_| !relay_copy) {
            // Nothing to upload after all: sealing was the whole of it.
            p.set_total(p.done());
        }
        let me = self.node.holder();
        for item in &mut items {
            item.holders.push(me.clone());
            if relay_copy && let Some(relay) = &self.relay {
                item.holders.push(relay.clone());
            }
        }
        Ok((items, relay_copy))
    }

    async fn announce(
        &self,
        blob_id: BlobId,
        descriptor: Descriptor,
        relay_copy: bool,
        skipped: Vec<PathBuf>,
    ) -> Result<Sent, SendError> {
        let bytes = descriptor.encode()?;
        let receipt = self
            .sync
            .push_as(blob_id, &bytes)
            .await
            .map_err(SendError::Announce)?;
        Ok(Sent {
            descriptor,
            blob_id,
            cursor: receipt.cursor,
            relay_copy,
            skipped,
        })
    }

    /// Fetches and opens everything `descriptor` names into `out_dir` (a collection into a
    /// folder of its name). An item that cannot be fetched or fails verification is named in
    /// [`Received::missing`]; nothing unverified is ever written. A file already present gets
    /// a numbered name beside it (` (1)`, ` (2)`, …) rather than being overwritten.
    pub async fn receive(
        &self,
        descriptor: &Descriptor,
        out_dir: &Path,
        progress: Option<Arc<Progress>>,
    ) -> Result<Received, ContentError> {
        let base_dir = match descriptor {
            Descriptor::Item(_) => out_dir.to_path_buf(),
            Descriptor::Collection(c) => unique_path(&out_dir.join(&c.name)),
        };
        // Progress: the sealed bytes fetched (or held already), then the plaintext opened.
        let item_work = |i: &ContentRef| i.sealed_size() + i.plain_size;
        if let Some(p) = &progress {
            p.set_total(descriptor.items().iter().map(item_work).sum());
        }
        let mut received = Received::default();
        let mut done = 0u64;
        // A holder that could not be reached (or stalled) for one item is not tried for the next.
        let mut unreachable: Vec<[u8; 32]> = Vec::new();
        for item in descriptor.items() {
            // Whatever happens to this item, the bar ends it at its full share.
            if let Some(p) = &progress {
                p.set_done(done);
            }
            done += item_work(item);
            let mut item = item.clone();
            item.holders.retain(|h| !unreachable.contains(&h.id));
            let item = &item;
            let fetched = self.node.fetch(item, progress.clone()).await;
            let failures = match &fetched {
                Ok(report) => report.failures.as_slice(),
                Err(FetchError::Unavailable { failures, .. }) => failures.as_slice(),
                Err(_) => &[],
            };
            unreachable.extend(
                failures
                    .iter()
                    .filter(|(_, f)| {
                        matches!(f, HolderFailure::Unreachable(_) | HolderFailure::Stalled(_))
                    })
                    .map(|(id, _)| *id),
            );
            let report = match fetched {
                Ok(r) => r,
                Err(FetchError::Content(e)) => return Err(e),
                Err(e) => {
                    received.missing.push((item.name.clone(), e.to_string()));
                    continue;
                }
            };
            received.bytes_fetched += report.bytes_received();
            received.bytes_resumed += report.resumed_from;
            for (holder, n) in &report.received {
                match received.from_holders.iter_mut().find(|(h, _)| h == holder) {
                    Some((_, total)) => *total += n,
                    None => received.from_holders.push((*holder, *n)),
                }
            }
            let Some(key) = self
                .sync
                .content_key(KeyEpoch(item.epoch), &item.content_id)
            else {
                received.missing.push((
                    item.name.clone(),
                    ContentError::NoKey(item.epoch).to_string(),
                ));
                continue;
            };
            let target = match descriptor {
                Descriptor::Item(_) => unique_path(&base_dir.join(&item.name)),
                Descriptor::Collection(_) => base_dir.join(&item.name),
            };
            match self
                .node
                .store()
                .open_to_file(item, &key, &target, progress.clone())
                .await
            {
                Ok(_) => received.written.push(target),
                Err(e @ (ContentError::File { .. } | ContentError::Store(_))) => return Err(e),
                Err(e) => received.missing.push((item.name.clone(), e.to_string())),
            }
        }
        if let Some(p) = &progress {
            p.set_done(done);
        }
        Ok(received)
    }
}

/// The last component of `path` as an item name, checked.
fn name_of(path: &Path) -> Result<String, ContentError> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| ContentError::UnsafeName(path.display().to_string()))?;
    check_name(&name)?;
    Ok(name)
}

/// `path`, or `path (1)`, `path (2)`, … (before the extension) if it exists.
fn unique_path(path: &Path) -> PathBuf {
    if !path.exists() {
        return path.to_path_buf();
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    (1u32..)
        .map(|n| path.with_file_name(format!("{stem} ({n}){ext}")))
        .find(|p| !p.exists())
        .unwrap_or_else(|| path.to_path_buf())
}

/// Regular files under `dir` (path, `/`-separated relative name, size), sorted by name, and
/// what was left out.
type Walked = (Vec<(PathBuf, String, u64)>, Vec<PathBuf>);

fn walk(dir: &Path) -> Result<Walked, ContentError> {
    let mut files = Vec::new();
    let mut skipped = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| ContentError::file(&d, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| ContentError::file(&d, e))?;
            let path = entry.path();
            let kind = entry
                .file_type()
                .map_err(|e| ContentError::file(&path, e))?;
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                let len = entry
                    .metadata()
                    .map_err(|e| ContentError::file(&path, e))?
                    .len();
                let rel = path
                    .strip_prefix(dir)
                    .ok()
                    .and_then(|r| {
                        r.components()
                            .map(|c| c.as_os_str().to_str())
                            .collect::<Option<Vec<_>>>()
                    })
                    .map(|parts| parts.join("/"));
                match rel {
                    Some(rel) => files.push((path, rel, len)),
                    None => skipped.push(path),
                }
            } else {
                skipped.push(path);
            }
        }
    }
    files.sort_by(|a, b| a.1.cmp(&b.1));
    Ok((files, skipped))
}
