//! The running relay: [`start`] opens the storage, binds the QUIC endpoint and the HTTP server
//! and starts the background work; [`RelayHandle`] reads its state and stops it in order.
//!
//! - `context`: what every session and handler shares.
//! - `quic`: the iroh endpoint, the accept loop and one connection's way to a session.
//! - `transport`: the QUIC transport limits (streams, flow-control windows, idle timeout).
//! - `fanout`: from each storage commit to the sessions of the pushed groups.
//! - `maintenance`: periodic cleanup (expired data and content reservations, forgotten ids,
//!   idle groups, idle limiter state) and the stats line.
//! - `memory` (feature `test-util`): in-process sessions for tests.

mod context;
mod fanout;
mod maintenance;
#[cfg(feature = "test-util")]
mod memory;
mod quic;
mod transport;

pub(crate) use context::RelayCtx;
#[cfg(feature = "test-util")]
pub use memory::MemorySession;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use iroh::{Endpoint, EndpointId};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{ConfigError, RelayConfig};
use crate::config::{PostgresTlsMode, StorageBackend};
use crate::content::ContentStore;
use crate::identity::{IdentityError, load_or_create_secret_key};
use crate::metrics::Metrics;
use crate::storage::{
    PostgresConfig, PostgresStorage, PostgresTls, RelayStorage, SqliteConfig, SqliteStorage,
    Storage, StorageError, StorageLimits,
};
use fanout::{FAN_OUT_QUEUE, commit_hook, fan_out_loop, remote_loop};
use maintenance::{cleanup_loop, history_loop, stats_loop};
use quic::{LINGER, accept_loop, bind_endpoint, direct_addrs};

/// How much longer than the longest TTL the id of a removed blob is remembered (a device may
/// retry a push for a while after its blob could have expired).
const FORGET_IDS_MARGIN: Duration = Duration::from_secs(86_400);

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
    /// The content store (`<data_dir>/content/`) could not be opened.
    #[error("content store: {0}")]
    Content(String),
    /// A startup task panicked or was cancelled.
    #[error("a startup task failed")]
    TaskFailed,
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
    /// The runtime the relay started on: in-memory sessions are spawned on it, as
    /// `connect_in_memory` may be called from outside any runtime.
    #[cfg(feature = "test-util")]
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

/// Opens the configured storage: the SQLite file in the data dir, or the PostgreSQL database.
async fn open_storage(config: &RelayConfig) -> Result<RelayStorage, RelayError> {
    let limits = StorageLimits {
        max_blob_bytes: u64::from(config.max_blob_bytes),
        max_group_bytes: config.group_max_bytes,
        max_group_blobs: config.group_max_blobs,
        max_ttl: config.max_ttl,
        forget_ids_after: config.max_ttl.saturating_add(FORGET_IDS_MARGIN),
    };
    Ok(match config.storage {
        StorageBackend::Sqlite => SqliteStorage::open(
            &config.data_dir,
            SqliteConfig {
                synchronous: config.synchronous.into(),
                limits,
                ..SqliteConfig::default()
            },
        )
        .await?
        .into(),
        StorageBackend::Postgres => PostgresStorage::open(PostgresConfig {
            pool_size: config.postgres_pool as usize,
            writers: config.postgres_writers as usize,
            limits,
            tls: match config.postgres_tls {
                PostgresTlsMode::Disable => PostgresTls::Disable,
                PostgresTlsMode::Require => PostgresTls::Require {
                    ca_file: (!config.postgres_ca_file.as_os_str().is_empty())
                        .then(|| config.postgres_ca_file.clone()),
                },
            },
            ..PostgresConfig::new(config.postgres_url.clone())
        })
        .await?
        .into(),
    })
}

/// Starts a relay on its configured storage (SQLite in `config.data_dir` by default): loads
/// (or creates) its identity, opens the database, binds the QUIC endpoint and the HTTP server,
/// and starts serving. On PostgreSQL it also listens for what the other relays on the same
/// database commit, and tells its own sessions.
pub async fn start(config: RelayConfig) -> Result<RelayHandle, RelayError> {
    config.validate()?;
    let dir = config.data_dir.clone();
    let secret = tokio::task::spawn_blocking(move || load_or_create_secret_key(&dir))
        .await
        .map_err(|_| RelayError::TaskFailed)??;
    let storage = open_storage(&config).await?;
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
    let mut ctx = RelayCtx::new(config, relay_id, storage);
    let provider_events = if ctx.config.content_store {
        let window = transport::Windows::for_frame(ctx.codec.max_frame).session;
        match ContentStore::open(&ctx.config, Arc::clone(&ctx.metrics), window).await {
            Ok((content, events)) => {
                ctx.content = Some(content);
                Some(events)
            }
            Err(e) => {
                endpoint.close().await;
                let _ = ctx.storage.close().await;
                return Err(RelayError::Content(e.to_string()));
            }
        }
    } else {
        None
    };
    let ctx = Arc::new(ctx);
    let inner = Arc::new(Inner {
        ctx: Arc::clone(&ctx),
        endpoint: endpoint.clone(),
        http_addr,
        sessions: TaskTracker::new(),
        background: TaskTracker::new(),
        stop_accepting: CancellationToken::new(),
        stop_background: CancellationToken::new(),
        #[cfg(feature = "test-util")]
        runtime: tokio::runtime::Handle::current(),
        shutdown_once: tokio::sync::OnceCell::new(),
    });

    // Every commit counts its pushes and announces them, before any pusher hears its ack.
    let (commits_tx, commits_rx) = tokio::sync::mpsc::channel(FAN_OUT_QUEUE);
    ctx.storage
        .on_commit(commit_hook(Arc::clone(&ctx.metrics), commits_tx));
    inner.background.spawn(fan_out_loop(
        Arc::clone(&ctx),
        commits_rx,
        inner.stop_background.clone(),
    ));
    if let RelayStorage::Postgres(pg) = &ctx.storage {
        inner.background.spawn(remote_loop(
            Arc::clone(&ctx),
            pg.subscribe_remote(),
            inner.stop_background.clone(),
        ));
    }
    if let Some(events) = provider_events {
        inner.background.spawn(crate::content::provider_events(
            Arc::clone(&ctx),
            events,
            inner.stop_background.clone(),
        ));
    }
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
    inner.background.spawn(history_loop(
        Arc::clone(&ctx),
        inner.stop_background.clone(),
    ));

    tracing::info!(
        relay_id = %endpoint.id(),
        addrs = ?direct_addrs(&endpoint),
        http = %http_addr,
        public_discovery = ctx.config.public_discovery,
        "relay started"
    );
    Ok(RelayHandle { inner })
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
    pub fn storage(&self) -> &RelayStorage {
        &self.inner.ctx.storage
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
        if let Some(content) = &ctx.content {
            content.shutdown().await;
        }
        ctx.storage.close().await?;
        tracing::info!(
            storage = ctx.storage.kind(),
            "relay stopped: storage flushed and closed"
        );
        Ok(())
    }
}
