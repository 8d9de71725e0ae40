//! What every session and handler of a running relay shares.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use governor::DefaultDirectRateLimiter;
use sync_types::{FrameCodec, Limits, max_frame_for_payload};
use tokio_util::sync::CancellationToken;

use crate::admission::Admission;
use crate::config::RelayConfig;
use crate::content::ContentStore;
use crate::hub::Hub;
use crate::membership::Memberships;
use crate::metrics::Metrics;
use crate::session::bucket;
use crate::status::History;
use crate::storage::RelayStorage;

/// Largest first frame of a connection (a `Hello` with the largest admission token, or an
/// `InviteGet`, is a few KiB): before a valid Hello, the relay buffers no
/// more than this.
pub(crate) const MAX_FIRST_FRAME: usize = 16 * 1024;

/// What every session and handler shares.
pub(crate) struct RelayCtx {
    pub(crate) config: RelayConfig,
    pub(crate) relay_id: [u8; 32],
    pub(crate) storage: RelayStorage,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) hub: Hub,
    pub(crate) limits: Limits,
    pub(crate) codec: FrameCodec,
    /// The codec of a connection's first frame (at most [`MAX_FIRST_FRAME`]).
    pub(crate) first_frame_codec: FrameCodec,
    pub(crate) global_push: Option<DefaultDirectRateLimiter>,
    /// Pre-auth budget, session slots, per-address and per-device limits.
    pub(crate) admission: Admission,
    /// Cancelled when the relay shuts down: sessions finish their requests and send `Bye`.
    pub(crate) shutdown: CancellationToken,
    pub(crate) next_session: AtomicU64,
    pub(crate) started: Instant,
    /// The last hour of figures, for the status page.
    pub(crate) history: History,
    /// Group membership: record chains and current key epochs.
    pub(crate) memberships: Memberships,
    /// The large-content store (`None` with `content_store = false`).
    pub(crate) content: Option<Arc<ContentStore>>,
}

impl RelayCtx {
    pub(crate) fn new(config: RelayConfig, relay_id: [u8; 32], storage: RelayStorage) -> Self {
        let max_frame = max_frame_for_payload(config.max_blob_bytes as usize);
        let metrics = Arc::new(metrics_for(&config));
        Self {
            limits: wire_limits(&config, max_frame),
            codec: FrameCodec::new(max_frame),
            first_frame_codec: FrameCodec::new(MAX_FIRST_FRAME),
            global_push: bucket(config.global_push_rate, config.global_push_burst),
            admission: Admission::new(&config),
            config,
            relay_id,
            storage,
            metrics,
            hub: Hub::default(),
            shutdown: CancellationToken::new(),
            next_session: AtomicU64::new(1),
            started: Instant::now(),
            history: History::default(),
            memberships: Memberships::default(),
            content: None,
        }
    }
}

/// Fresh metrics, with the configured limits they are compared against.
fn metrics_for(config: &RelayConfig) -> Metrics {
    let metrics = Metrics::default();
    metrics.max_sessions.set(i64::from(config.max_sessions));
    metrics.max_pre_auth.set(i64::from(config.max_pre_auth));
    metrics
}

/// Limits announced in `Welcome`, from the configuration.
fn wire_limits(config: &RelayConfig, max_frame: usize) -> Limits {
    let secs = |d: Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
    Limits {
        max_blob_bytes: config.max_blob_bytes,
        max_frame_bytes: u32::try_from(max_frame).unwrap_or(u32::MAX),
        max_pull_count: config.max_pull_count,
        max_pull_bytes: config.max_pull_bytes,
        default_ttl_secs: secs(config.default_ttl),
        max_ttl_secs: secs(config.max_ttl),
        idle_timeout_secs: secs(config.idle_timeout),
        max_in_flight: config.max_in_flight,
    }
}
