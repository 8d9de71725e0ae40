//! The device's (or a tool's) local content store: sealed content by hash in an iroh-blobs
//! file store, which keeps every verified byte of a partial download (so a transfer resumes),
//! plus the sealing of a file into it and the opening of content out of it.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use iroh_blobs::api::blobs::BlobStatus;
use iroh_blobs::store::GcConfig;
use iroh_blobs::store::fs::FsStore;
use iroh_blobs::store::fs::options::Options;
use iroh_blobs::{BlobFormat, Hash, HashAndFormat};
use sync_crypto::ContentKey;
use sync_types::BlobId;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use crate::chunk::ChunkCipher;
use crate::descriptor::ContentRef;
use crate::error::ContentError;

/// How often the store removes content no tag holds any more, unless told otherwise.
pub const DEFAULT_GC_INTERVAL: Duration = Duration::from_secs(60);

/// Longest delay before the store's database records a change (iroh-blobs batches writes).
const WRITE_COMMIT_INTERVAL: Duration = Duration::from_millis(50);

/// Prefix of the tags that keep content (complete or partial) in the store: one tag per hash,
/// `0k/content/<hash hex>/<unix ms>`, the time it was last kept (sent, fetched, kept again).
const TAG_PREFIX: &str = "0k/content/";

/// Bytes done and bytes in all, for a progress display; shared between the task doing the
/// work and whoever shows it. Operations add what they did; whoever starts one sets the total.
#[derive(Debug, Default)]
pub struct Progress {
    done: AtomicU64,
    total: AtomicU64,
}

impl Progress {
    /// A new counter at zero.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Bytes done so far.
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Bytes in all (0 while unknown).
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Sets the total.
    pub fn set_total(&self, total: u64) {
        self.total.store(total, Ordering::Relaxed);
    }

    /// Sets the bytes done.
    pub fn set_done(&self, done: u64) {
        self.done.store(done, Ordering::Relaxed);
    }

    /// Adds to the bytes done.
    pub fn add(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }
}

/// What to seal a file as.
#[derive(Debug, Clone)]
pub struct SealParams {
    /// The content id (fresh and random for each piece of content).
    pub content_id: BlobId,
    /// The key epoch whose content key seals it.
    pub epoch: u32,
    /// Plaintext bytes per chunk.
    pub chunk_size: u32,
    /// The name recorded in the reference.
    pub name: String,
    /// The media type recorded in the reference.
    pub media_type: String,
}

/// How much of some content is held here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// Verified sealed bytes held.
    pub bytes: u64,
    /// Whether all of it is held.
    pub complete: bool,
}

/// Sealed content by hash, on disk.
#[derive(Debug, Clone)]
pub struct ContentStore {
    fs: FsStore,
    dir: PathBuf,
}

impl ContentStore {
    /// Opens (or creates) the store in `dir`; content no longer kept is removed every minute.
    pub async fn open(dir: &Path) -> Result<Self, ContentError> {
        Self::open_with(dir, DEFAULT_GC_INTERVAL).await
    }

    /// [`ContentStore::open`] with another garbage collection interval.
    pub async fn open_with(dir: &Path, gc_interval: Duration) -> Result<Self, ContentError> {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| ContentError::file(dir, e))?;
        let mut options = Options::new(dir);
        // Record new (partial) content in the store's database promptly: a process killed
        // mid-transfer then finds what it verified on restart and resumes from there (the
        // verified ranges are rebuilt from the data and its hash tree).
        options.batch.max_write_duration = WRITE_COMMIT_INTERVAL;
        options.gc = Some(GcConfig {
            interval: gc_interval,
            add_protected: None,
        });
        let fs = FsStore::load_with_opts(dir.join("blobs.db"), options)
            .await
            .map_err(ContentError::store)?;
        Ok(Self {
            fs,
            dir: dir.to_path_buf(),
        })
    }

    /// The directory of the store.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The iroh-blobs store underneath (to serve it, or fetch into it).
    pub fn blobs(&self) -> &iroh_blobs::api::Store {
        &self.fs
    }

    /// Keeps `hash` (complete or partial) until [`ContentStore::forget`] or a
    /// [`ContentStore::prune`] past this moment.
    pub async fn keep(&self, hash: Hash) -> Result<(), ContentError> {
        let tags = self.fs.tags();
        let fresh = format!("{}{}", tag_prefix(&hash), sync_types::unix_ms());
        tags.set(fresh.as_bytes(), HashAndFormat::new(hash, BlobFormat::Raw))
            .await
            .map_err(ContentError::store)?;
        for (name, _) in self.kept_tags(Some(&hash)).await? {
            if name != fresh {
                tags.delete(name.as_bytes())
                    .await
                    .map_err(ContentError::store)?;
            }
        }
        Ok(())
    }

    /// Lets `hash` go: the store's garbage collection removes its bytes.
    pub async fn forget(&self, hash: Hash) -> Result<(), ContentError> {
        self.fs
            .tags()
            .delete_prefix(tag_prefix(&hash).as_bytes())
            .await
            .map(|_| ())
            .map_err(ContentError::store)
    }

    /// Every hash kept, with when it was last kept (Unix ms).
    pub async fn kept(&self) -> Result<Vec<(Hash, u64)>, ContentError> {
        Ok(self
            .kept_tags(None)
            .await?
            .into_iter()
            .map(|(_, kept)| kept)
            .collect())
    }

    /// Forgets what was last kept before `cutoff_ms` (Unix ms); garbage collection then removes
    /// its bytes. Returns the hashes forgotten.
    pub async fn prune(&self, cutoff_ms: u64) -> Result<Vec<Hash>, ContentError> {
        let mut gone = Vec::new();
        for (name, (hash, at)) in self.kept_tags(None).await? {
            if at < cutoff_ms {
                self.fs
                    .tags()
                    .delete(name.as_bytes())
                    .await
                    .map_err(ContentError::store)?;
                gone.push(hash);
            }
        }
        Ok(gone)
    }

    /// The keeping tags (of `hash`, or all), by name, with their hash and time.
    async fn kept_tags(
        &self,
        hash: Option<&Hash>,
    ) -> Result<Vec<(String, (Hash, u64))>, ContentError> {
        let prefix = hash.map_or_else(|| TAG_PREFIX.to_string(), tag_prefix);
        let mut list = self
            .fs
            .tags()
            .list_prefix(prefix.as_bytes())
            .await
            .map_err(ContentError::store)?;
        let mut out = Vec::new();
        while let Some(info) = list.next().await {
            let info = info.map_err(ContentError::store)?;
            let name = String::from_utf8_lossy(info.name.as_ref()).into_owned();
            let at = name
                .rsplit('/')
                .next()
                .and_then(|t| t.parse::<u64>().ok())
                .unwrap_or(0);
            out.push((name, (info.hash, at)));
        }
        Ok(out)
    }

    /// How much of `hash` is held here.
    pub async fn held(&self, hash: Hash) -> Result<Held, ContentError> {
        let status = self
            .fs
            .blobs()
            .status(hash)
            .await
            .map_err(ContentError::store)?;
        Ok(match status {
            BlobStatus::Complete { size } => Held {
                bytes: size,
                complete: true,
            },
            BlobStatus::Partial { .. } => {
                let local = self
                    .fs
                    .remote()
                    .local(hash)
                    .await
                    .map_err(ContentError::store)?;
                Held {
                    bytes: local.local_bytes(),
                    complete: false,
                }
            }
            BlobStatus::NotFound => Held {
                bytes: 0,
                complete: false,
            },
        })
    }

    /// Seals the file at `path` chunk by chunk into the store (never holding more than a few
    /// chunks in memory) and returns its reference (without holders: the caller adds where it
    /// can be fetched). Plaintext bytes sealed are added to `progress`.
    pub async fn seal_file(
        &self,
        path: &Path,
        key: &ContentKey,
        params: SealParams,
        progress: Option<Arc<Progress>>,
    ) -> Result<ContentRef, ContentError> {
        let file = std::fs::File::open(path).map_err(|e| ContentError::file(path, e))?;
        let plain_size = file
            .metadata()
            .map_err(|e| ContentError::file(path, e))?
            .len();
        let cipher = ChunkCipher::new(key, params.content_id, plain_size, params.chunk_size)?;
        let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(4);
        let owned_path = path.to_path_buf();
        let reader = tokio::task::spawn_blocking(move || {
            seal_chunks(file, &owned_path, &cipher, &tx, progress.as_deref())
        });
        let added = self
            .fs
            .blobs()
            .add_stream(ReceiverStream::new(rx))
            .await
            .temp_tag()
            .await;
        // The reader's own error says more than the store's "stream failed".
        reader
            .await
            .map_err(|e| ContentError::Store(format!("sealing task failed: {e}")))??;
        let tag = added.map_err(ContentError::store)?;
        let hash = tag.hash();
        self.keep(hash).await?;
        drop(tag);
        Ok(ContentRef {
            content_id: params.content_id,
            epoch: params.epoch,
            hash: *hash.as_bytes(),
            plain_size,
            chunk_size: params.chunk_size,
            name: params.name,
            media_type: params.media_type,
            holders: Vec::new(),
        })
    }

    /// Opens content held here completely into the file `out`: every chunk is authenticated
    /// before its plaintext is written, the plaintext goes to a temporary file next to `out`,
    /// which becomes `out` only when every chunk opened (a failure leaves no partial file).
    /// Returns the plaintext size. Plaintext bytes written are added to `progress`.
    pub async fn open_to_file(
        &self,
        cref: &ContentRef,
        key: &ContentKey,
        out: &Path,
        progress: Option<Arc<Progress>>,
    ) -> Result<u64, ContentError> {
        let hash = cref.blob_hash();
        let held = self.held(hash).await?;
        let expected = cref.sealed_size();
        if !held.complete {
            return Err(ContentError::Incomplete {
                hash: hash.to_hex(),
                have: held.bytes,
                size: expected,
            });
        }
        if held.bytes != expected {
            return Err(ContentError::SizeMismatch {
                expected,
                found: held.bytes,
            });
        }
        let cipher = ChunkCipher::new(key, cref.content_id, cref.plain_size, cref.chunk_size)?;
        let part = part_path(out);
        let result = self.open_chunks(hash, cipher, &part, progress).await;
        match result {
            Ok(()) => {
                tokio::fs::rename(&part, out)
                    .await
                    .map_err(|e| ContentError::file(out, e))?;
                Ok(cref.plain_size)
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&part).await;
                Err(e)
            }
        }
    }

    /// Reads the sealed content in blocks of [`OPEN_BLOCK_CHUNKS`] chunks while a blocking
    /// thread authenticates each chunk and writes its plaintext (reading and opening overlap).
    async fn open_chunks(
        &self,
        hash: Hash,
        cipher: ChunkCipher,
        part: &Path,
        progress: Option<Arc<Progress>>,
    ) -> Result<(), ContentError> {
        if let Some(dir) = part.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| ContentError::file(dir, e))?;
        }
        let chunks = cipher.chunks();
        let sealed_lens: Vec<usize> = (0..chunks).map(|i| cipher.sealed_len(i)).collect();
        let (tx, mut rx) = mpsc::channel::<(u64, Vec<u8>)>(2);
        let owned_part = part.to_path_buf();
        let writer = tokio::task::spawn_blocking(move || {
            open_blocks(&cipher, &owned_part, &mut rx, progress.as_deref())
        });
        let mut reader = self.fs.blobs().reader(hash);
        let mut read_error = None;
        for (block, lens) in sealed_lens.chunks(OPEN_BLOCK_CHUNKS).enumerate() {
            let first = (block * OPEN_BLOCK_CHUNKS) as u64;
            let mut buf = vec![0u8; lens.iter().sum()];
            if let Err(e) = reader.read_exact(&mut buf).await {
                read_error = Some(ContentError::Store(format!("reading chunk {first}: {e}")));
                break;
            }
            if tx.send((first, buf)).await.is_err() {
                break; // the writer stopped: its error says why
            }
        }
        drop(tx);
        let written = writer
            .await
            .map_err(|e| ContentError::Store(format!("opening task failed: {e}")))?;
        match (written, read_error) {
            (Err(e), _) | (Ok(()), Some(e)) => Err(e),
            (Ok(()), None) => Ok(()),
        }
    }

    /// Stops the store (flushes its database).
    pub async fn shutdown(&self) {
        if let Err(e) = self.fs.shutdown().await {
            tracing::debug!(error = %e, "content store shutdown");
        }
    }
}

/// The prefix of the tag that keeps `hash`.
fn tag_prefix(hash: &Hash) -> String {
    format!("{TAG_PREFIX}{}/", hash.to_hex())
}

/// `out` with `.0k-part` appended to its file name.
fn part_path(out: &Path) -> PathBuf {
    let mut name = out
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".0k-part");
    out.with_file_name(name)
}

/// Chunks read and opened together when content is opened (1 MiB of 64 KiB chunks).
const OPEN_BLOCK_CHUNKS: usize = 16;

/// Opens the blocks of sealed chunks arriving on `rx` (each with the index of its first chunk)
/// into the file `part`, and syncs it. Stops at the first chunk that fails.
fn open_blocks(
    cipher: &ChunkCipher,
    part: &Path,
    rx: &mut mpsc::Receiver<(u64, Vec<u8>)>,
    progress: Option<&Progress>,
) -> Result<(), ContentError> {
    use std::io::Write;
    let file = std::fs::File::create(part).map_err(|e| ContentError::file(part, e))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut chunk = Vec::with_capacity(cipher.sealed_len(0));
    let mut expected = 0u64;
    while let Some((first, block)) = rx.blocking_recv() {
        if first != expected {
            return Err(ContentError::Store("opening out of order".into()));
        }
        let mut offset = 0;
        let mut index = first;
        while offset < block.len() {
            let len = cipher.sealed_len(index);
            let sealed = block
                .get(offset..offset + len)
                .ok_or(ContentError::ChunkRejected { index })?;
            chunk.clear();
            chunk.extend_from_slice(sealed);
            cipher.open(index, &mut chunk)?;
            out.write_all(&chunk)
                .map_err(|e| ContentError::file(part, e))?;
            if let Some(p) = progress {
                p.add(chunk.len() as u64);
            }
            offset += len;
            index += 1;
        }
        expected = index;
    }
    if expected != cipher.chunks() {
        return Err(ContentError::Store(
            "content ended early while opening".into(),
        ));
    }
    let file = out
        .into_inner()
        .map_err(|e| ContentError::file(part, e.into_error()))?;
    file.sync_all().map_err(|e| ContentError::file(part, e))
}

/// Reads `file` chunk by chunk, seals each chunk and sends it to the store's import stream.
fn seal_chunks(
    mut file: std::fs::File,
    path: &Path,
    cipher: &ChunkCipher,
    tx: &mpsc::Sender<std::io::Result<Bytes>>,
    progress: Option<&Progress>,
) -> Result<(), ContentError> {
    let fail = |e: ContentError, tx: &mpsc::Sender<std::io::Result<Bytes>>| {
        let _ = tx.blocking_send(Err(std::io::Error::other("sealing failed")));
        e
    };
    let expected: u64 = (0..cipher.chunks())
        .map(|i| cipher.plain_len(i) as u64)
        .sum();
    let mut read_total = 0u64;
    for index in 0..cipher.chunks() {
        let want = cipher.plain_len(index);
        let mut buf = Vec::with_capacity(want + crate::chunk::TAG_LEN);
        buf.resize(want, 0);
        let got =
            read_full(&mut file, &mut buf).map_err(|e| fail(ContentError::file(path, e), tx))?;
        read_total += got as u64;
        if got != want {
            return Err(fail(
                ContentError::FileChanged {
                    path: path.to_path_buf(),
                    expected,
                    found: read_total,
                },
                tx,
            ));
        }
        cipher.seal(index, &mut buf).map_err(|e| fail(e, tx))?;
        if let Some(p) = progress {
            p.add(want as u64);
        }
        if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
            return Err(ContentError::Store("the store stopped reading".into()));
        }
    }
    // A file that grew while it was read would be sealed short: refuse it too.
    let mut probe = [0u8; 1];
    if read_full(&mut file, &mut probe).map_err(|e| fail(ContentError::file(path, e), tx))? != 0 {
        return Err(fail(
            ContentError::FileChanged {
                path: path.to_path_buf(),
                expected,
                found: read_total + 1,
            },
            tx,
        ));
    }
    Ok(())
}

/// Reads until `buf` is full or the file ends; the bytes read.
fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
