//! A device's content node: serves the content it holds to the group's devices, and fetches
//! content from the devices and relays named as its holders, resuming from what it holds.
//!
//! Everything goes over the device's own iroh endpoint (so the relay and other devices see its
//! `DeviceId` as the peer id) under iroh-blobs' protocol. Serving is locked down: a connection
//! is accepted only from the endpoint ids the owner allows (the group's devices), a request
//! only for content the owner offered, and uploads to this node are refused.

use std::collections::HashSet;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use iroh::endpoint::ConnectionError;
use iroh::protocol::Router;
use iroh::{Endpoint, EndpointAddr, EndpointId};
use iroh_blobs::api::remote::{GetProgressItem, PushProgressItem};
use iroh_blobs::get::GetError;
use iroh_blobs::protocol::{ChunkRangesSeq, PushRequest};
use iroh_blobs::provider::events::{
    AbortReason, ConnectMode, EventMask, EventSender, ObserveMode, ProviderMessage, RequestMode,
};
use iroh_blobs::{BlobsProtocol, Hash};
use tokio_stream::StreamExt;

use crate::descriptor::{ContentRef, Holder};
use crate::error::ContentError;
use crate::store::{ContentStore, Progress};

/// How long dialling one holder may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the relay may take to confirm it stored an upload once every byte was sent.
const UPLOAD_ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a transfer may go without moving a byte before its peer is given up on (see
/// [`ContentNode::with_stall_limit`]).
pub const STALL_LIMIT: Duration = Duration::from_secs(30);

/// Why one holder did not deliver (the fetch moves on to the next).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HolderFailure {
    /// It could not be reached.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// It sent data that does not match the content's hash: nothing of it was kept.
    #[error("sent data that failed verification against the content hash: {0}")]
    Corrupt(String),
    /// It refused, or the transfer broke off.
    #[error("transfer failed: {0}")]
    Transfer(String),
    /// The transfer stopped moving: nothing arrived (or was taken) for this long.
    #[error("stalled: no progress for {0:?}")]
    Stalled(Duration),
}

/// What a fetch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchReport {
    /// Verified sealed bytes already held before the fetch (resumed from).
    pub resumed_from: u64,
    /// Verified sealed bytes gained from each holder that delivered any (endpoint id).
    pub received: Vec<([u8; 32], u64)>,
    /// Holders that failed, and why.
    pub failures: Vec<([u8; 32], HolderFailure)>,
}

impl FetchReport {
    /// Verified bytes gained in this fetch.
    pub fn bytes_received(&self) -> u64 {
        self.received.iter().map(|(_, n)| n).sum()
    }
}

/// A fetch that did not complete.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// No holder delivered all of the content: what is held is kept for the next attempt.
    #[error("{have} of {size} bytes held after trying every holder ({})", describe(.failures))]
    Unavailable {
        /// Verified bytes held.
        have: u64,
        /// Sealed size.
        size: u64,
        /// Every holder tried, and why it failed.
        failures: Vec<([u8; 32], HolderFailure)>,
    },
    /// A local failure.
    #[error(transparent)]
    Content(#[from] ContentError),
}

fn describe(failures: &[([u8; 32], HolderFailure)]) -> String {
    if failures.is_empty() {
        return "no holder known".into();
    }
    failures
        .iter()
        .map(|(id, f)| format!("{}…: {f}", short_hex(id)))
        .collect::<Vec<_>>()
        .join("; ")
}

fn short_hex(id: &[u8; 32]) -> String {
    id[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// Who may fetch what from this node.
#[derive(Debug, Default)]
struct Access {
    peers: RwLock<HashSet<EndpointId>>,
    offered: RwLock<HashSet<Hash>>,
}

impl Access {
    fn peer_allowed(&self, id: Option<EndpointId>) -> bool {
        id.is_some_and(|id| {
            self.peers
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(&id)
        })
    }

    fn offered(&self, hash: &Hash) -> bool {
        self.offered
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(hash)
    }
}

/// Serves and fetches content over a device's endpoint.
#[derive(Debug)]
pub struct ContentNode {
    store: ContentStore,
    endpoint: Endpoint,
    router: Router,
    access: Arc<Access>,
    stall_limit: Duration,
}

impl ContentNode {
    /// Serves `store` on `endpoint` (which from now on accepts iroh-blobs connections; at first
    /// from nobody: see [`ContentNode::allow_peers`] and [`ContentNode::offer`]).
    pub fn serve(store: ContentStore, endpoint: Endpoint) -> Self {
        let access = Arc::new(Access::default());
        let events = access_events(Arc::clone(&access));
        let protocol = BlobsProtocol::new(store.blobs(), Some(events));
        let router = Router::builder(endpoint.clone())
            .accept(iroh_blobs::ALPN, protocol)
            .spawn();
        Self {
            store,
            endpoint,
            router,
            access,
            stall_limit: STALL_LIMIT,
        }
    }

    /// Gives up on a holder (or the relay an upload goes to) once a transfer has moved nothing
    /// for `limit` ([`STALL_LIMIT`] unless set), so one peer that stops answering without
    /// closing cannot hold a fetch or an upload forever.
    #[must_use]
    pub fn with_stall_limit(mut self, limit: Duration) -> Self {
        self.stall_limit = limit;
        self
    }

    /// The local store.
    pub fn store(&self) -> &ContentStore {
        &self.store
    }

    /// The endpoint it serves and fetches on.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Allows these endpoint ids (the group's devices) to connect, replacing the previous set.
    pub fn allow_peers(&self, ids: impl IntoIterator<Item = [u8; 32]>) {
        let set = ids
            .into_iter()
            .filter_map(|id| EndpointId::from_bytes(&id).ok())
            .collect();
        *self
            .access
            .peers
            .write()
            .unwrap_or_else(PoisonError::into_inner) = set;
    }

    /// Offers `hash` to the allowed peers.
    pub fn offer(&self, hash: Hash) {
        self.access
            .offered
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(hash);
    }

    /// This node as a holder: its id and its direct addresses now.
    pub fn holder(&self) -> Holder {
        let addr = self.endpoint.addr();
        Holder {
            id: *self.endpoint.id().as_bytes(),
            addrs: addr.ip_addrs().copied().collect(),
            relay: false,
        }
    }

    async fn dial(&self, holder: &Holder) -> Result<iroh::endpoint::Connection, HolderFailure> {
        let id = EndpointId::from_bytes(&holder.id)
            .map_err(|e| HolderFailure::Unreachable(format!("bad holder id: {e}")))?;
        let addr = holder
            .addrs
            .iter()
            .fold(EndpointAddr::new(id), |a, s| a.with_ip_addr(*s));
        match tokio::time::timeout(DIAL_TIMEOUT, self.endpoint.connect(addr, iroh_blobs::ALPN))
            .await
        {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(HolderFailure::Unreachable(e.to_string())),
            Err(_) => Err(HolderFailure::Unreachable("dial timed out".into())),
        }
    }

    /// Uploads content held here completely to a relay's content store (the relay must have
    /// accepted its registration first). Sealed bytes sent are added to `progress`.
    pub async fn upload(
        &self,
        relay: &Holder,
        hash: Hash,
        progress: Option<Arc<Progress>>,
    ) -> Result<(), HolderFailure> {
        let conn = self.dial(relay).await?;
        let request = PushRequest::new(hash, ChunkRangesSeq::root());
        let mut stream = self
            .store
            .blobs()
            .remote()
            .execute_push(conn.clone(), request)
            .stream();
        let mut result = drain(
            &mut stream,
            progress.as_deref(),
            self.stall_limit,
            "upload",
            |item| match item {
                PushProgressItem::Progress(n) => Step::Progress(n),
                PushProgressItem::Done(_) => Step::Done,
                PushProgressItem::Error(e) => Step::Failed(HolderFailure::Transfer(e.to_string())),
            },
        )
        .await;
        if result.is_ok() {
            // Our stream is finished: the bytes were sent, not necessarily stored. The relay
            // closes the connection once it recorded the upload: code 0 when it keeps it.
            result = match tokio::time::timeout(UPLOAD_ANSWER_TIMEOUT, conn.closed()).await {
                Ok(ConnectionError::ApplicationClosed(close))
                    if close.error_code == 0u32.into() =>
                {
                    Ok(())
                }
                Ok(other) => Err(HolderFailure::Transfer(format!(
                    "the relay did not keep the upload: {other}"
                ))),
                Err(_) => Err(HolderFailure::Transfer(
                    "the relay did not confirm the upload in time".into(),
                )),
            };
        }
        conn.close(0u32.into(), b"done");
        result
    }

    /// Fetches `cref` into the local store from its holders in order (skipping this node),
    /// starting from what is already held, until it is complete. Every 16 KiB group is
    /// verified against the content hash before it is stored; a holder that sends bad data is
    /// left for the next. Verified sealed bytes held (from before, and as they arrive) are
    /// added to `progress`.
    pub async fn fetch(
        &self,
        cref: &ContentRef,
        progress: Option<Arc<Progress>>,
    ) -> Result<FetchReport, FetchError> {
        let hash = cref.blob_hash();
        let size = cref.sealed_size();
        // Keep partial data across restarts: the tag protects it from garbage collection.
        self.store.keep(hash).await?;
        let before = self.store.held(hash).await?;
        let mut report = FetchReport {
            resumed_from: before.bytes,
            ..FetchReport::default()
        };
        if let Some(p) = &progress {
            p.add(before.bytes);
        }
        let mut held = before;
        let me = *self.endpoint.id().as_bytes();
        for holder in cref.holders.iter().filter(|h| h.id != me) {
            if held.complete {
                break;
            }
            let outcome = self.fetch_from(holder, hash, progress.as_deref()).await;
            let after = self.store.held(hash).await?;
            if after.bytes > held.bytes {
                report.received.push((holder.id, after.bytes - held.bytes));
            }
            if let Err(f) = outcome {
                tracing::debug!(holder = %short_hex(&holder.id), failure = %f, "holder failed");
                report.failures.push((holder.id, f));
            }
            held = after;
        }
        if !held.complete {
            return Err(FetchError::Unavailable {
                have: held.bytes,
                size,
                failures: report.failures,
            });
        }
        if held.bytes != size {
            // Complete under this hash but not the size the reference promised: useless.
            self.store.forget(hash).await?;
            return Err(ContentError::SizeMismatch {
                expected: size,
                found: held.bytes,
            }
            .into());
        }
        self.offer(hash);
        Ok(report)
    }

    async fn fetch_from(
        &self,
        holder: &Holder,
        hash: Hash,
        progress: Option<&Progress>,
    ) -> Result<(), HolderFailure> {
        let conn = self.dial(holder).await?;
        let mut stream = self
            .store
            .blobs()
            .remote()
            .fetch(conn.clone(), hash)
            .stream();
        let result = drain(
            &mut stream,
            progress,
            self.stall_limit,
            "fetch",
            |item| match item {
                GetProgressItem::Progress(n) => Step::Progress(n),
                GetProgressItem::Done(_) => Step::Done,
                GetProgressItem::Error(e) => Step::Failed(classify(&e)),
            },
        )
        .await;
        conn.close(0u32.into(), b"done");
        result
    }

    /// Stops serving and closes the store.
    pub async fn shutdown(self) {
        if let Err(e) = self.router.shutdown().await {
            tracing::debug!(error = %e, "content router shutdown");
        }
        self.store.shutdown().await;
    }
}

/// What one item of an iroh-blobs transfer's progress stream says.
enum Step {
    /// Bytes of the request moved so far.
    Progress(u64),
    /// The request completed.
    Done,
    /// The request ended without completing.
    Failed(HolderFailure),
}

/// Reads a transfer's progress stream to its end, adding the bytes moved to `progress`; the
/// transfer's outcome (`what` names it when the stream ends without one). A stream that moves
/// nothing for `stall` ends the transfer as [`HolderFailure::Stalled`].
async fn drain<T>(
    stream: &mut (impl tokio_stream::Stream<Item = T> + Unpin),
    progress: Option<&Progress>,
    stall: Duration,
    what: &str,
    step: impl Fn(T) -> Step,
) -> Result<(), HolderFailure> {
    let mut result = Err(HolderFailure::Transfer(format!(
        "{what} ended without a result"
    )));
    let mut moved = 0u64;
    let mut last_move = tokio::time::Instant::now();
    loop {
        let item = match tokio::time::timeout_at(last_move + stall, stream.next()).await {
            Ok(Some(item)) => item,
            Ok(None) => break,
            Err(_) => return Err(HolderFailure::Stalled(stall)),
        };
        match step(item) {
            Step::Progress(n) => {
                if n > moved {
                    last_move = tokio::time::Instant::now();
                }
                if let Some(p) = progress {
                    p.add(n.saturating_sub(moved));
                }
                moved = moved.max(n);
            }
            Step::Done => result = Ok(()),
            Step::Failed(f) => result = Err(f),
        }
    }
    result
}

/// A get error as a holder failure: data that failed verification is `Corrupt`.
fn classify(e: &GetError) -> HolderFailure {
    match e {
        GetError::Decode { .. } => HolderFailure::Corrupt(e.to_string()),
        other => HolderFailure::Transfer(other.to_string()),
    }
}

/// The answer to an intercepted provider event: go on, or refuse for want of permission.
fn permit(ok: bool) -> Result<(), AbortReason> {
    if ok {
        Ok(())
    } else {
        Err(AbortReason::Permission)
    }
}

/// The provider's event handler: connections only from allowed peers, single-blob gets only of
/// offered content, nothing else.
fn access_events(access: Arc<Access>) -> EventSender {
    let mask = EventMask {
        connected: ConnectMode::Intercept,
        get: RequestMode::Intercept,
        get_many: RequestMode::Disabled,
        push: RequestMode::Disabled,
        observe: ObserveMode::None,
        ..EventMask::DEFAULT
    };
    let (tx, mut rx) = EventSender::channel(32, mask);
    tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            match msg {
                ProviderMessage::ClientConnected(msg) => {
                    let ok = access.peer_allowed(msg.endpoint_id);
                    let _ = msg.tx.send(permit(ok)).await;
                }
                ProviderMessage::GetRequestReceived(msg) => {
                    let ok = msg.request.ranges.is_blob() && access.offered(&msg.request.hash);
                    let _ = msg.tx.send(permit(ok)).await;
                }
                _ => {}
            }
        }
    });
    tx
}
