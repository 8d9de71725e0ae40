//! The relay's HTTP side (its own port): `/` (the operator's status page), `/api/stats` (what
//! the page draws: the last hour of figures, JSON), `/health` (JSON), `/metrics` (Prometheus
//! text) and `/.well-known/0k-sync` (relay id and direct addresses, so a device can be pointed
//! at a URL).
//!
//! Every figure comes from in-memory counters: no request scans a table.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use iroh::EndpointId;
use serde::Serialize;

use crate::server::RelayCtx;
use crate::status::{PAGE, SAMPLES_KEPT, Sample};
use crate::storage::Storage;

type AddrsFn = dyn Fn() -> Vec<SocketAddr> + Send + Sync;

/// What the HTTP handlers read.
#[derive(Clone)]
pub(crate) struct HttpState {
    ctx: Arc<RelayCtx>,
    relay_id: EndpointId,
    addrs: Arc<AddrsFn>,
}

impl HttpState {
    pub(crate) fn new(
        ctx: Arc<RelayCtx>,
        relay_id: EndpointId,
        addrs: impl Fn() -> Vec<SocketAddr> + Send + Sync + 'static,
    ) -> Self {
        Self {
            ctx,
            relay_id,
            addrs: Arc::new(addrs),
        }
    }
}

/// The `/health` document.
#[derive(Debug, Serialize)]
struct Health {
    /// `ok`, `draining` (shutting down) or `unavailable` (storage closed).
    status: &'static str,
    version: &'static str,
    uptime_secs: u64,
    sessions: i64,
    /// Groups with a log on this relay.
    groups: u64,
    /// Groups with at least one open session.
    active_groups: usize,
    blobs: u64,
    bytes_stored: u64,
}

/// The `/.well-known/0k-sync` document.
#[derive(Debug, Serialize)]
struct WellKnown {
    relay_id: String,
    addrs: Vec<String>,
    alpn: &'static str,
    version: &'static str,
}

/// The `/api/stats` document: who the relay is, its figures now, and the last hour.
#[derive(Debug, Serialize)]
struct Stats {
    relay: RelayInfo,
    now: Now,
    interval_secs: f64,
    samples_kept: usize,
    /// Oldest first.
    samples: Vec<Sample>,
}

#[derive(Debug, Serialize)]
struct RelayInfo {
    id: String,
    version: &'static str,
    uptime_secs: u64,
    storage: &'static str,
    synchronous: String,
    data_dir: String,
    max_sessions: u32,
    group_max_bytes: u64,
    group_max_blobs: u64,
}

/// Totals at the time of the request.
#[derive(Debug, Serialize)]
struct Now {
    status: &'static str,
    sessions: i64,
    pre_auth: i64,
    active_groups: usize,
    pushes_total: u64,
    pulls_total: u64,
    refusals_total: u64,
    stored_blobs: u64,
    stored_bytes: u64,
    groups: u64,
}

/// The HTTP routes.
pub(crate) fn router(state: HttpState) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/api/stats", get(stats))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/.well-known/0k-sync", get(well_known))
        .with_state(state)
}

async fn health(State(s): State<HttpState>) -> Response {
    let ctx = &s.ctx;
    let stats = ctx.storage.stats().await;
    let (status, code) = match (&stats, ctx.shutdown.is_cancelled()) {
        (Err(_), _) => ("unavailable", StatusCode::SERVICE_UNAVAILABLE),
        (Ok(_), true) => ("draining", StatusCode::SERVICE_UNAVAILABLE),
        (Ok(_), false) => ("ok", StatusCode::OK),
    };
    let stats = stats.unwrap_or_default();
    let body = Health {
        status,
        version: env!("CARGO_PKG_VERSION"),
        uptime_secs: ctx.started.elapsed().as_secs(),
        sessions: ctx.metrics.sessions.get(),
        groups: stats.groups,
        active_groups: ctx.hub.active_groups(),
        blobs: stats.blobs,
        bytes_stored: stats.bytes,
    };
    (code, Json(body)).into_response()
}

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // Everything the page needs comes from this relay.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self'; img-src 'self' data:",
            ),
        ],
        PAGE,
    )
        .into_response()
}

async fn stats(State(s): State<HttpState>) -> Response {
    let ctx = &s.ctx;
    let m = &ctx.metrics;
    let stored = ctx.storage.stats().await;
    let status = match (&stored, ctx.shutdown.is_cancelled()) {
        (Err(_), _) => "unavailable",
        (Ok(_), true) => "draining",
        (Ok(_), false) => "ok",
    };
    let stored = stored.unwrap_or_default();
    let body = Stats {
        relay: RelayInfo {
            id: s.relay_id.to_string(),
            version: env!("CARGO_PKG_VERSION"),
            uptime_secs: ctx.started.elapsed().as_secs(),
            storage: "sqlite",
            synchronous: format!("{:?}", ctx.config.synchronous).to_lowercase(),
            data_dir: ctx.config.data_dir.display().to_string(),
            max_sessions: ctx.config.max_sessions,
            group_max_bytes: ctx.config.group_max_bytes,
            group_max_blobs: ctx.config.group_max_blobs,
        },
        now: Now {
            status,
            sessions: m.sessions.get(),
            pre_auth: m.pre_auth_connections.get(),
            active_groups: ctx.hub.active_groups(),
            pushes_total: m.pushes_total.get(),
            pulls_total: m.pulls_total.get(),
            refusals_total: m
                .rejections_total
                .total()
                .saturating_add(m.admission_refusals_total.total()),
            stored_blobs: stored.blobs,
            stored_bytes: stored.bytes,
            groups: stored.groups,
        },
        interval_secs: ctx.config.status_interval.as_secs_f64(),
        samples_kept: SAMPLES_KEPT,
        samples: ctx.history.samples(),
    };
    Json(body).into_response()
}

async fn metrics(State(s): State<HttpState>) -> Response {
    let ctx = &s.ctx;
    let stats = ctx.storage.stats().await.unwrap_or_default();
    let body = ctx.metrics.render(stats, ctx.storage.writer_metrics());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn well_known(State(s): State<HttpState>) -> Response {
    let body = WellKnown {
        relay_id: s.relay_id.to_string(),
        addrs: (s.addrs)().iter().map(ToString::to_string).collect(),
        alpn: "/0k-sync/1",
        version: env!("CARGO_PKG_VERSION"),
    };
    Json(body).into_response()
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;
    use crate::RelayConfig;
    use crate::storage::{SqliteConfig, SqliteStorage};

    async fn state(dir: &std::path::Path) -> HttpState {
        let storage = SqliteStorage::open(dir, SqliteConfig::default())
            .await
            .expect("storage");
        let ctx = Arc::new(RelayCtx::new(
            RelayConfig::for_tests(dir),
            [9; 32],
            storage.into(),
        ));
        let id = iroh::SecretKey::from_bytes(&[3; 32]).public();
        HttpState::new(ctx, id, || vec![SocketAddr::from(([127, 0, 0, 1], 7440))])
    }

    async fn get_body(state: HttpState, path: &str) -> (StatusCode, String, String) {
        let response = router(state)
            .oneshot(Request::get(path).body(Body::empty()).expect("request"))
            .await
            .expect("response");
        let status = response.status();
        let ctype = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (
            status,
            ctype,
            String::from_utf8(bytes.to_vec()).expect("utf8"),
        )
    }

    #[tokio::test]
    async fn health_reports_the_documented_fields() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = state(dir.path()).await;
        s.ctx.metrics.sessions.inc();
        let (status, ctype, body) = get_body(s.clone(), "/health").await;
        assert_eq!(status, StatusCode::OK);
        assert!(ctype.starts_with("application/json"), "{ctype}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(v["status"], "ok");
        assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(v["sessions"], 1);
        for key in [
            "uptime_secs",
            "groups",
            "active_groups",
            "blobs",
            "bytes_stored",
        ] {
            assert!(v[key].is_u64(), "{key} in {body}");
        }

        s.ctx.shutdown.cancel();
        let (status, _, body) = get_body(s.clone(), "/health").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("\"draining\""), "{body}");
        s.ctx.storage.close().await.expect("close");
        let (_, _, body) = get_body(s, "/health").await;
        assert!(body.contains("\"unavailable\""), "{body}");
    }

    #[tokio::test]
    async fn metrics_is_prometheus_text() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = state(dir.path()).await;
        s.ctx.metrics.pushes_total.add(5);
        let (status, ctype, body) = get_body(s, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
        assert!(body.contains("# TYPE sync_relay_pushes_total counter\n"));
        assert!(body.contains("sync_relay_pushes_total 5\n"));
        assert!(body.contains("sync_relay_stored_blobs 0\n"));
    }

    #[tokio::test]
    async fn well_known_names_the_relay_and_its_addresses() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = state(dir.path()).await;
        let id = s.relay_id;
        let (status, _, body) = get_body(s, "/.well-known/0k-sync").await;
        assert_eq!(status, StatusCode::OK);
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(v["relay_id"], id.to_string());
        assert_eq!(v["addrs"][0], "127.0.0.1:7440");
        assert_eq!(v["alpn"], "/0k-sync/1");
    }

    #[tokio::test]
    async fn the_status_page_is_self_contained_and_small() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (status, ctype, body) = get_body(state(dir.path()).await, "/").await;
        assert_eq!(status, StatusCode::OK);
        assert!(ctype.starts_with("text/html"), "{ctype}");
        assert!(body.len() < 100 * 1024, "{} bytes", body.len());
        // Nothing is fetched from elsewhere: the only absolute URL is the SVG namespace.
        let outside = body
            .match_indices("http")
            .filter(|(i, _)| !body[*i..].starts_with("http://www.w3.org/2000/svg"))
            .count();
        assert_eq!(outside, 0);
        for tag in ["<link", "src=", "@import", "url("] {
            assert!(!body.contains(tag), "{tag} in the page");
        }
        assert!(body.contains("fetch(\"/api/stats\""));
    }

    #[tokio::test]
    async fn api_stats_has_the_relay_the_totals_and_the_samples() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = state(dir.path()).await;
        let ctx = Arc::clone(&s.ctx);
        ctx.history.sample(&ctx.metrics, Default::default(), 1_000);
        ctx.metrics.pushes_total.add(10);
        ctx.metrics.sessions.inc();
        ctx.metrics.reject(sync_types::ErrorCode::QuotaExceeded);
        ctx.history.sample(&ctx.metrics, Default::default(), 6_000);
        let (status, ctype, body) = get_body(s.clone(), "/api/stats").await;
        assert_eq!(status, StatusCode::OK);
        assert!(ctype.starts_with("application/json"), "{ctype}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(v["relay"]["id"], s.relay_id.to_string());
        assert_eq!(v["relay"]["storage"], "sqlite");
        assert_eq!(v["relay"]["synchronous"], "normal");
        assert_eq!(v["now"]["status"], "ok");
        assert_eq!(v["now"]["sessions"], 1);
        assert_eq!(v["now"]["pushes_total"], 10);
        assert_eq!(v["now"]["refusals_total"], 1);
        assert_eq!(v["interval_secs"], 5.0);
        let samples = v["samples"].as_array().expect("samples");
        assert_eq!(samples.len(), 1);
        assert_eq!(samples[0]["pushes_per_s"], 2.0);
        assert_eq!(samples[0]["refusals"]["QuotaExceeded"], 1);
        assert!(samples[0]["push_p99_ms"].is_null(), "no push was timed");
    }

    #[tokio::test]
    async fn unknown_paths_are_404() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (status, _, _) = get_body(state(dir.path()).await, "/nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}
