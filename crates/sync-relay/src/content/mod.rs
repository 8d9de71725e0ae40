//! The large-content store: sealed content that does not fit a blob, kept by its BLAKE3 hash
//! for receivers that come online after the sender left.
//!
//! The relay never sees plaintext: devices seal large files in chunks, register the ciphertext's
//! hash and size with a `ContentRef` in their group's session (a *reservation*, checked against
//! the group's quota before anything is uploaded), then upload it with iroh-blobs on the relay's
//! own endpoint (ALPN [`iroh_blobs::ALPN`]). Members of the group fetch it the same way.
//!
//! - `index`: the reservations (SQLite, `content.db`), quotas, expiry.
//! - `auth`: who may upload and download what (iroh-blobs provider events).
//!
//! Everything lives in `<data_dir>/content/`: an iroh-blobs file store and the index. A complete
//! upload is kept by a named tag `content/<group hex>/<hash hex>` per reserving group; every hash
//! of the index is also protected from the blob store's garbage collection, which runs every
//! `cleanup_interval` and removes whatever is no longer referenced.

mod auth;
mod index;

pub use index::INDEX_FILE_NAME;

pub(crate) use auth::provider_events;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use iroh::endpoint::Connection;
use iroh::protocol::ProtocolHandler as _;
use iroh_blobs::api::blobs::BlobStatus;
use iroh_blobs::provider::events::{
    ConnectMode, EventMask, EventSender, ObserveMode, ProviderMessage, RequestMode, ThrottleMode,
};
use iroh_blobs::store::fs::FsStore;
use iroh_blobs::store::fs::options::Options;
use iroh_blobs::store::{GcConfig, ProtectCb, ProtectOutcome};
use iroh_blobs::{BlobsProtocol, Hash, HashAndFormat};
use sync_types::{BlobId, ContentRef, DeviceId, GroupId};
use tokio::sync::mpsc;

use crate::config::RelayConfig;
use crate::metrics::Metrics;
pub(crate) use index::Reserved;
use index::{ContentIndex, IndexError, Removed, Reservation};

/// The content directory's name inside the data directory.
pub const CONTENT_DIR_NAME: &str = "content";

/// Bytes a sealed chunk adds to its plaintext (the AEAD tag).
pub(crate) const CHUNK_TAG_BYTES: u64 = 16;

/// Provider events queued before iroh-blobs waits for the relay to decide.
const EVENT_QUEUE: usize = 256;

/// Reservations removed per cleanup round.
const CLEANUP_BATCH: u32 = 1000;

/// Why the content store could not open, or refused or failed a request.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ContentError {
    /// The `ContentRef` fields contradict each other.
    #[error("{0}")]
    Malformed(&'static str),
    /// The group's content quota is full.
    #[error("content quota exceeded: {used} of {limit} bytes reserved, {size} more asked")]
    Quota {
        /// Bytes reserved now.
        used: u64,
        /// Bytes asked for.
        size: u64,
        /// The group's quota.
        limit: u64,
    },
    /// The same content was reserved before with another size.
    #[error("this content is reserved with another size ({stored} bytes)")]
    SizeMismatch {
        /// The size of the first reservation.
        stored: u64,
    },
    /// The index failed.
    #[error("content index: {0}")]
    Index(String),
    /// The blob store failed.
    #[error("content blob store: {0}")]
    Blobs(String),
    /// A blocking task failed.
    #[error("a content task failed")]
    Task,
}

impl From<IndexError> for ContentError {
    fn from(e: IndexError) -> Self {
        match e {
            IndexError::Quota { used, size, limit } => Self::Quota { used, size, limit },
            IndexError::SizeMismatch { stored } => Self::SizeMismatch { stored },
            IndexError::OutOfRange => Self::Malformed("size out of range"),
            IndexError::Sqlite(e) => Self::Index(e.to_string()),
        }
    }
}

/// Checks the sizes a `ContentRef` announces: a positive size, a positive chunk size, and as many
/// chunks as the plaintext needs (each sealed chunk carries [`CHUNK_TAG_BYTES`] more than its
/// plaintext; empty content is one chunk).
pub(crate) fn check_content_ref(m: &ContentRef) -> Result<(), ContentError> {
    if m.size == 0 {
        return Err(ContentError::Malformed("content size must be above 0"));
    }
    if m.chunk_size == 0 {
        return Err(ContentError::Malformed("chunk size must be above 0"));
    }
    if m.chunks == 0 {
        return Err(ContentError::Malformed("content has at least one chunk"));
    }
    let tags = u64::from(m.chunks).saturating_mul(CHUNK_TAG_BYTES);
    let Some(plain) = m.size.checked_sub(tags) else {
        return Err(ContentError::Malformed(
            "size is smaller than the chunks' tags",
        ));
    };
    let needed = plain.div_ceil(u64::from(m.chunk_size)).max(1);
    if needed != u64::from(m.chunks) {
        return Err(ContentError::Malformed(
            "chunk count does not match size and chunk size",
        ));
    }
    Ok(())
}

/// The named tag that keeps one group's complete content.
fn tag_name(group: &GroupId, hash: &[u8; 32]) -> String {
    let hex = |b: &[u8]| b.iter().map(|b| format!("{b:02x}")).collect::<String>();
    format!("content/{}/{}", hex(group.as_bytes()), hex(hash))
}

/// The relay's content store: the iroh-blobs file store, the reservation index, and the
/// iroh-blobs protocol handler the accept loop hands `/iroh-bytes/4` connections to.
pub(crate) struct ContentStore {
    store: FsStore,
    /// Where the blob store keeps the data files of content above 16 KiB.
    data_dir: PathBuf,
    /// The open iroh-blobs connections, by their stable id (what provider events name).
    connections: Mutex<HashMap<u64, Connection>>,
    index: Arc<ContentIndex>,
    protocol: BlobsProtocol,
    limit: u64,
    ttl: Duration,
    /// Connection receive window for an authorized upload.
    upload_window: u64,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for ContentStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContentStore").finish_non_exhaustive()
    }
}

impl ContentStore {
    /// Opens (or creates) `<data_dir>/content/`; returns the store and the provider events its
    /// protocol handler sends (see [`provider_events`]). `upload_window` is the connection
    /// receive window an authorized upload gets.
    pub(crate) async fn open(
        config: &RelayConfig,
        metrics: Arc<Metrics>,
        upload_window: u64,
    ) -> Result<(Arc<Self>, mpsc::Receiver<ProviderMessage>), ContentError> {
        let dir = content_dir(&config.data_dir);
        let index = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || {
                std::fs::create_dir_all(&dir).map_err(|e| ContentError::Index(e.to_string()))?;
                ContentIndex::open(&dir).map_err(ContentError::from)
            })
            .await
            .map_err(|_| ContentError::Task)??
        };
        let index = Arc::new(index);
        let mut options = Options::new(&dir);
        let options_data_dir = options.path.data_path.clone();
        options.gc = Some(GcConfig {
            interval: config.cleanup_interval,
            add_protected: Some(protect_indexed(Arc::clone(&index))),
        });
        let store = FsStore::load_with_opts(dir.join("blobs.db"), options)
            .await
            .map_err(|e| ContentError::Blobs(e.to_string()))?;
        let mask = EventMask {
            connected: ConnectMode::Intercept,
            get: RequestMode::Intercept,
            get_many: RequestMode::Disabled,
            push: RequestMode::Intercept,
            observe: ObserveMode::Intercept,
            throttle: ThrottleMode::None,
        };
        let (events, rx) = EventSender::channel(EVENT_QUEUE, mask);
        let protocol = BlobsProtocol::new(&store, Some(events));
        let this = Arc::new(Self {
            store,
            data_dir: options_data_dir,
            connections: Mutex::new(HashMap::new()),
            index,
            protocol,
            limit: config.content_group_bytes,
            ttl: config.content_ttl,
            upload_window,
            metrics,
        });
        this.refresh_gauges().await;
        Ok((this, rx))
    }

    /// Serves one iroh-blobs connection to its end (the provider events decide every request).
    pub(crate) async fn serve(&self, conn: Connection) {
        let id = conn.stable_id() as u64;
        self.connections_lock().insert(id, conn.clone());
        if let Err(e) = self.protocol.accept(conn).await {
            tracing::debug!(error = %e, "content connection failed");
        }
        self.connections_lock().remove(&id);
    }

    fn connections_lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Connection>> {
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Opens the receive window of an iroh-blobs connection to session size (an upload was
    /// authorized on it); connections start with the small pre-auth window.
    pub(crate) fn open_window(&self, id: u64) {
        if let Some(conn) = self.connections_lock().get(&id) {
            let window = iroh::endpoint::VarInt::from_u64(self.upload_window)
                .unwrap_or(iroh::endpoint::VarInt::MAX);
            conn.set_receive_window(window);
        }
    }

    /// Ends the connection an upload came on once the upload is recorded: code 0 `stored`
    /// when it is kept, 2 `not stored` otherwise. The uploader waits for this close to know
    /// its content is in place (finishing its stream says only that the bytes were sent).
    pub(crate) fn upload_answered(&self, id: u64, stored: bool) {
        if let Some(conn) = self.connections_lock().remove(&id) {
            if stored {
                conn.close(0u32.into(), b"stored");
            } else {
                conn.close(2u32.into(), b"not stored");
            }
        }
    }

    /// Closes an iroh-blobs connection (an upload larger than its reservation).
    pub(crate) fn close_connection(&self, id: u64) {
        if let Some(conn) = self.connections_lock().remove(&id) {
            conn.close(1u32.into(), b"content larger than reserved");
        }
    }

    /// Bytes of `hash` the blob store has on disk now (0 for content kept inline or absent).
    pub(crate) fn bytes_on_disk(&self, hash: &[u8; 32]) -> u64 {
        let path = self
            .data_dir
            .join(format!("{}.data", Hash::from_bytes(*hash).to_hex()));
        std::fs::metadata(path).map_or(0, |m| m.len())
    }

    /// Runs `f` on the index on a blocking thread.
    async fn with_index<T, F>(&self, f: F) -> Result<T, ContentError>
    where
        T: Send + 'static,
        F: FnOnce(&ContentIndex) -> Result<T, IndexError> + Send + 'static,
    {
        let index = Arc::clone(&self.index);
        tokio::task::spawn_blocking(move || f(&index))
            .await
            .map_err(|_| ContentError::Task)?
            .map_err(ContentError::from)
    }

    /// Registers (or renews) the group's reservation of the content `m` names, for `device`.
    pub(crate) async fn reserve(
        &self,
        group: GroupId,
        device: DeviceId,
        m: &ContentRef,
        now_ms: u64,
    ) -> Result<Reserved, ContentError> {
        check_content_ref(m)?;
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let r = Reservation {
            group,
            hash: m.hash,
            blob_id: m.blob_id,
            size: m.size,
            uploader: device,
            created_ms: now_ms,
            expires_ms: now_ms.saturating_add(ttl_ms),
        };
        let limit = self.limit;
        let result = self
            .with_index(move |index| index.reserve(&r, limit, now_ms))
            .await;
        if matches!(result, Err(ContentError::Quota { .. })) {
            self.metrics.content_reservations_refused_total.inc();
        }
        result
    }

    /// Drops the group's reservations made under the descriptor blob `blob_id` (it was
    /// deleted); their data goes at the next garbage collection. Returns how many.
    pub(crate) async fn drop_for_blob(
        &self,
        group: GroupId,
        blob_id: BlobId,
    ) -> Result<usize, ContentError> {
        let removed = self
            .with_index(move |index| index.remove_by_blob(group, blob_id))
            .await?;
        self.untag(&removed).await;
        Ok(removed.len())
    }

    /// Removes expired reservations (and incomplete ones older than the TTL) with their tags;
    /// returns how many. The blob store's garbage collection then deletes their data.
    pub(crate) async fn cleanup(&self, now_ms: u64) -> Result<u64, ContentError> {
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let mut total = 0u64;
        loop {
            let removed = self
                .with_index(move |index| index.remove_expired(now_ms, ttl_ms, CLEANUP_BATCH))
                .await?;
            self.untag(&removed).await;
            total = total.saturating_add(removed.len() as u64);
            if removed.len() < CLEANUP_BATCH as usize {
                return Ok(total);
            }
        }
    }

    async fn untag(&self, removed: &[Removed]) {
        for r in removed {
            if r.complete
                && let Err(e) = self.store.tags().delete(tag_name(&r.group, &r.hash)).await
            {
                tracing::warn!(error = %e, "content tag not deleted");
            }
        }
        if !removed.is_empty() {
            self.refresh_gauges().await;
        }
    }

    /// After an upload of `hash` ended: if the blob store holds it completely, the live
    /// reservations of its size are complete and tagged; those of another size are dropped
    /// (their data goes at the next garbage collection). An incomplete upload changes nothing
    /// (the device may resume it while its reservation lives).
    pub(crate) async fn upload_ended(&self, hash: [u8; 32], now_ms: u64) -> bool {
        let status = match self.store.blobs().status(Hash::from_bytes(hash)).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "content status unavailable");
                return false;
            }
        };
        let BlobStatus::Complete { size } = status else {
            return false;
        };
        let result = self
            .with_index(move |index| {
                let done = index.mark_complete(&hash, size, now_ms)?;
                let mut wrong = Vec::new();
                for p in index.pending(&hash, now_ms)? {
                    if p.size != size && index.remove(p.group, &hash)? {
                        wrong.push(p.group);
                    }
                }
                Ok((done, wrong))
            })
            .await;
        let (done, wrong) = match result {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "content upload not recorded");
                return false;
            }
        };
        for group in &wrong {
            tracing::info!(
                target: "sync_relay::audit",
                event = "content_refused",
                group = %group.short(),
                reason = "size_mismatch",
            );
        }
        for group in &done {
            let tag = tag_name(group, &hash);
            let value = HashAndFormat::raw(Hash::from_bytes(hash));
            if let Err(e) = self.store.tags().set(tag, value).await {
                tracing::warn!(error = %e, "content tag not set");
            }
        }
        if !done.is_empty() {
            self.metrics.content_uploads_total.inc();
        }
        self.refresh_gauges().await;
        !done.is_empty()
    }

    /// Drops the reservations of `hash` still waiting for their upload that are smaller than
    /// `on_disk` bytes (an upload showed the content is larger than they said).
    pub(crate) async fn drop_smaller(&self, hash: [u8; 32], on_disk: u64) {
        let now_ms = sync_types::unix_ms();
        let result = self
            .with_index(move |index| {
                let mut dropped = Vec::new();
                for p in index.pending(&hash, now_ms)? {
                    if p.size < on_disk && index.remove(p.group, &hash)? {
                        dropped.push(p.group);
                    }
                }
                Ok(dropped)
            })
            .await;
        match result {
            Ok(groups) => {
                for group in groups {
                    tracing::info!(
                        target: "sync_relay::audit",
                        event = "content_refused",
                        group = %group.short(),
                        reason = "larger_than_reserved",
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "oversized content not dropped"),
        }
    }

    /// Live reservations of `hash` waiting for an upload.
    pub(crate) async fn pending(
        &self,
        hash: [u8; 32],
        now_ms: u64,
    ) -> Result<Vec<index::Pending>, ContentError> {
        self.with_index(move |index| index.pending(&hash, now_ms))
            .await
    }

    /// Groups holding `hash` completely.
    pub(crate) async fn complete_groups(
        &self,
        hash: [u8; 32],
        now_ms: u64,
    ) -> Result<Vec<GroupId>, ContentError> {
        self.with_index(move |index| index.complete_groups(&hash, now_ms))
            .await
    }

    /// Sets `content_items` and `content_bytes` from the index.
    async fn refresh_gauges(&self) {
        match self.with_index(ContentIndex::stats).await {
            Ok(s) => {
                self.metrics
                    .content_items
                    .set(i64::try_from(s.items).unwrap_or(i64::MAX));
                self.metrics
                    .content_bytes
                    .set(i64::try_from(s.bytes).unwrap_or(i64::MAX));
            }
            Err(e) => tracing::warn!(error = %e, "content stats unavailable"),
        }
    }

    /// Flushes and closes the blob store.
    pub(crate) async fn shutdown(&self) {
        if let Err(e) = self.store.shutdown().await {
            tracing::warn!(error = %e, "content store did not shut down cleanly");
        }
    }
}

/// Where the content of a relay with this data directory lives.
pub(crate) fn content_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(CONTENT_DIR_NAME)
}

/// The garbage collection's protection: every hash the index holds (uploads in progress
/// included). If the index cannot be read, the run is skipped.
fn protect_indexed(index: Arc<ContentIndex>) -> ProtectCb {
    Arc::new(move |live: &mut HashSet<Hash>| {
        let outcome = match index.hashes() {
            Ok(hashes) => {
                live.extend(hashes.into_iter().map(Hash::from_bytes));
                ProtectOutcome::Continue
            }
            Err(e) => {
                tracing::warn!(error = %e, "content index unreadable: garbage collection skipped");
                ProtectOutcome::Abort
            }
        };
        Box::pin(std::future::ready(outcome))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content_ref(size: u64, chunk_size: u32, chunks: u32) -> ContentRef {
        ContentRef {
            request_id: 1,
            blob_id: BlobId::from_bytes([1; 16]),
            hash: [2; 32],
            size,
            chunk_size,
            chunks,
        }
    }

    #[test]
    fn content_refs_must_add_up() {
        // 3 chunks of 1000 plaintext bytes, the last one shorter: 2500 + 3 * 16.
        check_content_ref(&content_ref(2548, 1000, 3)).expect("consistent");
        // Exactly two full chunks.
        check_content_ref(&content_ref(2032, 1000, 2)).expect("full chunks");
        // Empty content is one chunk: just its tag.
        check_content_ref(&content_ref(16, 1000, 1)).expect("empty content");
        for (size, chunk_size, chunks) in [
            (0, 1000, 1),
            (2548, 0, 3),
            (2548, 1000, 0),
            (2548, 1000, 2),
            (2548, 1000, 4),
            (15, 1000, 1),
            (u64::MAX, 1, 1),
        ] {
            let err = check_content_ref(&content_ref(size, chunk_size, chunks))
                .expect_err("inconsistent");
            assert!(matches!(err, ContentError::Malformed(_)), "{err}");
        }
    }

    #[test]
    fn tags_name_group_and_hash() {
        let tag = tag_name(&GroupId::from_bytes([0xab; 32]), &[0x01; 32]);
        assert_eq!(
            tag,
            format!("content/{}/{}", "ab".repeat(32), "01".repeat(32))
        );
    }
}
