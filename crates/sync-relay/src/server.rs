//! The running relay: the iroh endpoint and its accept loop, in-memory sessions, the HTTP
//! server, periodic cleanup and stats, and an orderly shutdown.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use governor::DefaultDirectRateLimiter;
use iroh::endpoint::{Incoming, NetReportConfig, PortmapperConfig, presets};
use iroh::{Endpoint, EndpointId, RelayMode};
use sync_types::{
    ALPN, DeviceId, ErrorCode, FrameCodec, HELLO_BINDING_LABEL, Limits, WireError,
    max_frame_for_payload,
};
use tokio::io::DuplexStream;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{ConfigError, RelayConfig};
use crate::hub::Hub;
use crate::identity::{IdentityError, load_or_create_secret_key};
use crate::metrics::Metrics;
use crate::session::{bucket, refuse, serve_session, wire_limits};
use crate::storage::{SqliteConfig, SqliteStorage, Storage, StorageError, StorageLimits};

/// After a session ends, how long the relay waits for the device to receive its last frames
/// before it closes the connection.
const LINGER: Duration = Duration::from_secs(3);

/// The TLS handshake gets at least this long, even with a shorter `hello_timeout`.
const MIN_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections refused for lack of a session slot that may wait for their stream at once (to
/// get a typed `TooManySessions` frame); beyond this they are closed without one.
const MAX_PENDING_REFUSALS: usize = 256;

/// Retry hint sent with `TooManySessions`.
const TOO_MANY_SESSIONS_RETRY_MS: u64 = 2000;

/// Capacity of each direction of an in-memory session's pipe.
const MEMORY_PIPE_BYTES: usize = 256 * 1024;

/// Rows removed per cleanup transaction.
const CLEANUP_BATCH: u32 = 1000;

/// QUIC application close codes.
const CLOSE_OK: u32 = 0;
const CLOSE_REFUSED: u32 = 1;

/// Why the relay could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The relay's secret key could not be loaded or created.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The database could not be opened, flushed or closed.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// A socket could not be bound.
    #[error("cannot bind the {what} to {addr}: {message}")]
    Bind {
        /// `QUIC endpoint` or `HTTP server`.
        what: &'static str,
        /// The configured address.
        addr: SocketAddr,
        /// What the OS or iroh reported.
        message: String,
    },
    /// The relay has been shut down.
    #[error("the relay is shut down")]
    ShutDown,
    /// The OS random number generator failed.
    #[error("no randomness available: {0}")]
    Random(String),
    /// A startup task panicked or was cancelled.
    #[error("a startup task failed")]
    TaskFailed,
}

/// What every session and handler shares.
pub(crate) struct RelayCtx {
    pub(crate) config: RelayConfig,
    pub(crate) relay_id: [u8; 32],
    pub(crate) storage: SqliteStorage,
    pub(crate) metrics: Metrics,
    pub(crate) hub: Hub,
    pub(crate) limits: Limits,
    pub(crate) codec: FrameCodec,
    pub(crate) global_push: Option<DefaultDirectRateLimiter>,
    pub(crate) slots: Arc<Semaphore>,
    /// Cancelled when the relay shuts down: sessions finish their requests and send `Bye`.
    pub(crate) shutdown: CancellationToken,
    pub(crate) next_session: AtomicU64,
    pub(crate) started: Instant,
}

impl RelayCtx {
    pub(crate) fn new(config: RelayConfig, relay_id: [u8; 32], storage: SqliteStorage) -> Self {
        let max_frame = max_frame_for_payload(config.max_blob_bytes as usize);
        Self {
            limits: wire_limits(&config, max_frame),
            codec: FrameCodec::new(max_frame),
            global_push: bucket(config.global_push_rate, config.global_push_burst),
            slots: Arc::new(Semaphore::new(config.max_sessions as usize)),
            config,
            relay_id,
            storage,
            metrics: Metrics::default(),
            hub: Hub::default(),
            shutdown: CancellationToken::new(),
            next_session: AtomicU64::new(1),
            started: Instant::now(),
        }
    }

    pub(crate) fn too_many_sessions(&self) -> WireError {
        WireError::new(
            ErrorCode::TooManySessions,
            format!(
                "the relay is at its limit of {} sessions",
                self.config.max_sessions
            ),
        )
        .retry_after_ms(TOO_MANY_SESSIONS_RETRY_MS)
    }
}

/// A session over in-process pipes, served by exactly the same code as QUIC sessions.
///
/// Write frames (u32 big-endian length + MessagePack body) to `writer`, read the relay's
/// frames from `reader`; the first frame is a `Hello` signed over `binding`.
#[derive(Debug)]
pub struct MemorySession {
    /// Relay → client bytes.
    pub reader: DuplexStream,
    /// Client → relay bytes.
    pub writer: DuplexStream,
    /// Random per session: the Hello binding (what the TLS exporter gives over QUIC).
    pub binding: [u8; 32],
    /// The relay's id (its iroh endpoint id bytes), for the Hello challenge.
    pub relay_id: [u8; 32],
}

/// A running relay. Cheap to clone; dropping the last clone stops it (call
/// [`RelayHandle::shutdown`] for an orderly stop).
#[derive(Clone)]
pub struct RelayHandle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RelayHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayHandle")
            .field("endpoint_id", &self.endpoint_id())
            .field("http_addr", &self.inner.http_addr)
            .finish_non_exhaustive()
    }
}

struct Inner {
    ctx: Arc<RelayCtx>,
    endpoint: Endpoint,
    http_addr: SocketAddr,
    /// Connection and session tasks (drained on shutdown).
    sessions: TaskTracker,
    /// Accept loop, HTTP server, cleanup and stats.
    background: TaskTracker,
    stop_accepting: CancellationToken,
    stop_background: CancellationToken,
    runtime: tokio::runtime::Handle,
    shutdown_once: tokio::sync::OnceCell<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop_accepting.cancel();
        self.ctx.shutdown.cancel();
        self.stop_background.cancel();
    }
}

/// Starts a relay with SQLite storage in `config.data_dir`: loads (or creates) its identity,
/// opens the database, binds the QUIC endpoint and the HTTP server, and starts serving.
pub async fn start(config: RelayConfig) -> Result<RelayHandle, RelayError> {
    config.validate()?;
    let dir = config.data_dir.clone();
    let secret = tokio::task::spawn_blocking(move || load_or_create_secret_key(&dir))
        .await
        .map_err(|_| RelayError::TaskFailed)??;
    let storage = SqliteStorage::open(
        &config.data_dir,
        SqliteConfig {
            synchronous: config.synchronous.into(),
            limits: StorageLimits {
                max_blob_bytes: u64::from(config.max_blob_bytes),
                max_group_bytes: config.group_max_bytes,
                max_group_blobs: config.group_max_blobs,
                max_ttl: config.max_ttl,
            },
            ..SqliteConfig::default()
        },
    )
    .await?;
    let endpoint = match bind_endpoint(&config, secret).await {
        Ok(e) => e,
        Err(e) => {
            let _ = storage.close().await;
            return Err(e);
        }
    };
    let listener = match tokio::net::TcpListener::bind(config.http_bind).await {
        Ok(l) => l,
        Err(e) => {
            endpoint.close().await;
            let _ = storage.close().await;
            return Err(RelayError::Bind {
                what: "HTTP server",
                addr: config.http_bind,
                message: e.to_string(),
            });
        }
    };
    let http_addr = listener.local_addr().map_err(|e| RelayError::Bind {
        what: "HTTP server",
        addr: config.http_bind,
        message: e.to_string(),
    })?;

    let relay_id = *endpoint.id().as_bytes();
    let ctx = Arc::new(RelayCtx::new(config, relay_id, storage));
    let inner = Arc::new(Inner {
        ctx: Arc::clone(&ctx),
        endpoint: endpoint.clone(),
        http_addr,
        sessions: TaskTracker::new(),
        background: TaskTracker::new(),
        stop_accepting: CancellationToken::new(),
        stop_background: CancellationToken::new(),
        runtime: tokio::runtime::Handle::current(),
        shutdown_once: tokio::sync::OnceCell::new(),
    });

    inner.background.spawn(accept_loop(
        Arc::clone(&ctx),
        endpoint.clone(),
        inner.sessions.clone(),
        inner.stop_accepting.clone(),
    ));
    let http_state = crate::http::HttpState::new(Arc::clone(&ctx), endpoint.id(), {
        let endpoint = endpoint.clone();
        move || direct_addrs(&endpoint)
    });
    let stop_http = inner.stop_background.clone();
    inner.background.spawn(async move {
        let app = crate::http::router(http_state);
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop_http.cancelled_owned())
            .await
        {
            tracing::warn!(error = %e, "HTTP server stopped");
        }
    });
    inner.background.spawn(cleanup_loop(
        Arc::clone(&ctx),
        inner.stop_background.clone(),
    ));
    inner
        .background
        .spawn(stats_loop(Arc::clone(&ctx), inner.stop_background.clone()));

    tracing::info!(
        relay_id = %endpoint.id(),
        addrs = ?direct_addrs(&endpoint),
        http = %http_addr,
        public_discovery = ctx.config.public_discovery,
        "relay started"
    );
    Ok(RelayHandle { inner })
}

async fn bind_endpoint(
    config: &RelayConfig,
    secret: iroh::SecretKey,
) -> Result<Endpoint, RelayError> {
    let bind_err = |message: String| RelayError::Bind {
        what: "QUIC endpoint",
        addr: config.bind,
        message,
    };
    let builder = if config.public_discovery {
        // Opt-in: n0's relay servers and address lookup (contacts the internet).
        Endpoint::builder(presets::N0)
    } else {
        // Self-hosted default: nothing on the internet is contacted.
        Endpoint::builder(presets::Minimal)
            .relay_mode(RelayMode::Disabled)
            .clear_address_lookup()
            .portmapper_config(PortmapperConfig::Disabled)
            .net_report_config(NetReportConfig::minimal())
    };
    builder
        .secret_key(secret)
        .clear_ip_transports()
        .bind_addr(config.bind)
        .map_err(|e| bind_err(error_chain(&e)))?
        .alpns(vec![ALPN.to_vec()])
        .bind()
        .await
        .map_err(|e| bind_err(error_chain(&e)))
}

/// An error and its sources on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// Addresses devices can dial: the bound sockets, with an unspecified address (`0.0.0.0`,
/// `[::]`) replaced by the interface addresses iroh found for it plus loopback.
fn direct_addrs(endpoint: &Endpoint) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = Vec::new();
    let add = |a: SocketAddr, out: &mut Vec<SocketAddr>| {
        if !out.contains(&a) {
            out.push(a);
        }
    };
    let found = endpoint.addr();
    for bound in endpoint.bound_sockets() {
        if !bound.ip().is_unspecified() {
            add(bound, &mut out);
            continue;
        }
        for a in found.ip_addrs() {
            if a.port() == bound.port()
                && a.is_ipv4() == bound.is_ipv4()
                && !a.ip().is_unspecified()
            {
                add(*a, &mut out);
            }
        }
        let loopback = if bound.is_ipv4() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            IpAddr::V6(Ipv6Addr::LOCALHOST)
        };
        add(SocketAddr::new(loopback, bound.port()), &mut out);
    }
    out
}

async fn accept_loop(
    ctx: Arc<RelayCtx>,
    endpoint: Endpoint,
    sessions: TaskTracker,
    stop: CancellationToken,
) {
    let refusals = Arc::new(Semaphore::new(MAX_PENDING_REFUSALS));
    loop {
        let incoming = tokio::select! {
            i = endpoint.accept() => match i {
                Some(i) => i,
                None => break,
            },
            () = stop.cancelled() => break,
        };
        ctx.metrics.connections_total.inc();
        sessions.spawn(handle_connection(
            Arc::clone(&ctx),
            incoming,
            Arc::clone(&refusals),
        ));
    }
}

/// One QUIC connection: TLS handshake, Hello binding from the TLS exporter, a session slot,
/// then the session on the first bidirectional stream.
async fn handle_connection(ctx: Arc<RelayCtx>, incoming: Incoming, refusals: Arc<Semaphore>) {
    let deadline = ctx.config.hello_timeout;
    let conn = match tokio::time::timeout(deadline.max(MIN_HANDSHAKE_TIMEOUT), incoming).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "connection handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!("connection handshake timed out");
            return;
        }
    };
    let peer = DeviceId::from_bytes(*conn.remote_id().as_bytes());
    let mut binding = [0u8; 32];
    if conn
        .export_keying_material(&mut binding, HELLO_BINDING_LABEL, b"")
        .is_err()
    {
        ctx.metrics.reject(ErrorCode::Internal);
        conn.close(CLOSE_REFUSED.into(), b"internal error");
        return;
    }
    let slot = Arc::clone(&ctx.slots).try_acquire_owned().ok();
    let refusal = match slot {
        Some(_) => None,
        None => match Arc::clone(&refusals).try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                ctx.metrics.reject(ErrorCode::TooManySessions);
                conn.close(CLOSE_REFUSED.into(), b"too many sessions");
                return;
            }
        },
    };
    let streams = tokio::select! {
        r = tokio::time::timeout(deadline, conn.accept_bi()) => r,
        () = ctx.shutdown.cancelled() => {
            conn.close(CLOSE_REFUSED.into(), b"relay shutting down");
            return;
        }
    };
    let (mut send, recv) = match streams {
        Ok(Ok(streams)) => streams,
        Ok(Err(_)) => return,
        Err(_) => {
            ctx.metrics.reject(ErrorCode::HelloTimeout);
            tracing::info!(
                target: "sync_relay::audit",
                event = "session_refused",
                device = %peer.short(),
                reason = ErrorCode::HelloTimeout.name(),
            );
            conn.close(CLOSE_REFUSED.into(), b"no stream opened in time");
            return;
        }
    };
    let stopped = send.stopped();
    match slot {
        Some(slot) => {
            serve_session(Arc::clone(&ctx), slot, peer, binding, recv, send).await;
        }
        None => {
            refuse(&ctx, &mut send, &peer, ctx.too_many_sessions()).await;
            drop(send);
        }
    }
    // Let the device receive the last frames (it acknowledges them, or closes), then close.
    let _ = tokio::time::timeout(LINGER, async {
        tokio::select! {
            _ = stopped => {}
            _ = conn.closed() => {}
        }
    })
    .await;
    conn.close(CLOSE_OK.into(), b"");
    drop(refusal);
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Removes expired blobs and invites every `cleanup_interval`.
async fn cleanup_loop(ctx: Arc<RelayCtx>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(ctx.config.cleanup_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let mut removed = 0u64;
        loop {
            match ctx.storage.cleanup_expired(now_ms(), CLEANUP_BATCH).await {
                Ok(n) => {
                    removed = removed.saturating_add(n);
                    ctx.metrics.expired_total.add(n);
                    if n < u64::from(CLEANUP_BATCH) || stop.is_cancelled() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cleanup failed");
                    break;
                }
            }
        }
        if removed > 0 {
            tracing::info!(removed, "expired blobs removed");
        }
    }
}

/// Logs one line of figures every `stats_interval`.
async fn stats_loop(ctx: Arc<RelayCtx>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(ctx.config.stats_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let m = &ctx.metrics;
    let snapshot = || {
        [
            m.pushes_total.get(),
            m.pulls_total.get(),
            m.notifies_total.get(),
            m.bytes_in_total.get(),
            m.bytes_out_total.get(),
            m.rejections_total.total(),
        ]
    };
    let mut last = snapshot();
    let mut last_at = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let now = snapshot();
        let secs = last_at.elapsed().as_secs_f64().max(0.001);
        let rate = |i: usize| {
            let d = now
                .get(i)
                .copied()
                .unwrap_or(0)
                .saturating_sub(last.get(i).copied().unwrap_or(0));
            (d as f64 / secs * 10.0).round() / 10.0
        };
        let stored = ctx.storage.stats().await.unwrap_or_default();
        tracing::info!(
            target: "sync_relay::stats",
            sessions = m.sessions.get(),
            active_groups = ctx.hub.active_groups(),
            pushes_per_s = rate(0),
            pulls_per_s = rate(1),
            notifies_per_s = rate(2),
            bytes_in_per_s = rate(3),
            bytes_out_per_s = rate(4),
            rejections_per_s = rate(5),
            stored_blobs = stored.blobs,
            stored_bytes = stored.bytes,
            groups = stored.groups,
            "stats"
        );
        last = now;
        last_at = Instant::now();
    }
}

impl RelayHandle {
    /// The relay's iroh endpoint id (its identity; devices dial it and sign Hellos naming it).
    pub fn endpoint_id(&self) -> EndpointId {
        self.inner.endpoint.id()
    }

    /// The relay id bytes as they appear in `Welcome` and the Hello challenge.
    pub fn relay_id(&self) -> [u8; 32] {
        self.inner.ctx.relay_id
    }

    /// Addresses devices can dial: the bound UDP sockets (an unspecified bind address is
    /// replaced by the interface addresses found for it, plus loopback).
    pub fn direct_addrs(&self) -> Vec<SocketAddr> {
        direct_addrs(&self.inner.endpoint)
    }

    /// The HTTP server's bound address.
    pub fn http_addr(&self) -> SocketAddr {
        self.inner.http_addr
    }

    /// The effective configuration.
    pub fn config(&self) -> &RelayConfig {
        &self.inner.ctx.config
    }

    /// Live metrics (the same figures `/metrics` renders).
    pub fn metrics(&self) -> &Metrics {
        &self.inner.ctx.metrics
    }

    /// The relay's storage (for tests and operator tools).
    pub fn storage(&self) -> &SqliteStorage {
        &self.inner.ctx.storage
    }

    /// A session over in-process pipes (`tokio::io::duplex`), served by exactly the same
    /// session code as QUIC sessions. `device` is trusted as the peer's identity (in-process
    /// only). Takes a session slot like a QUIC connection: at the limit, the session answers
    /// with a `TooManySessions` error frame.
    pub fn connect_in_memory(&self, device: DeviceId) -> Result<MemorySession, RelayError> {
        let inner = &self.inner;
        if inner.stop_accepting.is_cancelled() {
            return Err(RelayError::ShutDown);
        }
        let mut binding = [0u8; 32];
        getrandom::fill(&mut binding).map_err(|e| RelayError::Random(e.to_string()))?;
        let (client_writer, relay_reader) = tokio::io::duplex(MEMORY_PIPE_BYTES);
        let (mut relay_writer, client_reader) = tokio::io::duplex(MEMORY_PIPE_BYTES);
        let ctx = Arc::clone(&inner.ctx);
        inner.sessions.spawn_on(
            async move {
                match Arc::clone(&ctx.slots).try_acquire_owned() {
                    Ok(slot) => {
                        serve_session(ctx, slot, device, binding, relay_reader, relay_writer).await;
                    }
                    Err(_) => {
                        let err = ctx.too_many_sessions();
                        refuse(&ctx, &mut relay_writer, &device, err).await;
                    }
                }
            },
            &inner.runtime,
        );
        Ok(MemorySession {
            reader: client_reader,
            writer: client_writer,
            binding,
            relay_id: inner.ctx.relay_id,
        })
    }

    /// Stops the relay in order: stop accepting, send `Bye` to every session after its open
    /// requests are answered, wait for the sessions to end (bounded by `drain_timeout`), close
    /// the endpoint and the HTTP server, then flush the storage writer and checkpoint the WAL.
    /// Calling it again (from any clone) waits for the first call and returns `Ok`.
    pub async fn shutdown(&self) -> Result<(), RelayError> {
        let mut result = Ok(());
        self.inner
            .shutdown_once
            .get_or_init(|| async { result = self.stop().await })
            .await;
        result
    }

    async fn stop(&self) -> Result<(), RelayError> {
        let inner = &self.inner;
        let ctx = &inner.ctx;
        tracing::info!(
            sessions = ctx.metrics.sessions.get(),
            "shutting down: draining sessions"
        );
        inner.stop_accepting.cancel();
        ctx.shutdown.cancel();
        inner.sessions.close();
        let bound = ctx.config.drain_timeout + LINGER + Duration::from_secs(1);
        if tokio::time::timeout(bound, inner.sessions.wait())
            .await
            .is_err()
        {
            tracing::warn!("sessions still open after the drain timeout; closing them");
        }
        inner.endpoint.close().await;
        inner.stop_background.cancel();
        inner.background.close();
        inner.background.wait().await;
        ctx.storage.close().await?;
        tracing::info!("relay stopped: storage flushed and checkpointed");
        Ok(())
    }
}
