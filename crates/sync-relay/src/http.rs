//! The relay's HTTP side (its own port): `/health` (JSON), `/metrics` (Prometheus text) and
//! `/.well-known/0k-sync` (relay id and direct addresses, so a device can be pointed at a URL).
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

/// The HTTP routes.
pub(crate) fn router(state: HttpState) -> Router {
    Router::new()
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
        let ctx = Arc::new(RelayCtx::new(RelayConfig::for_tests(dir), [9; 32], storage));
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
    async fn unknown_paths_are_404() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (status, _, _) = get_body(state(dir.path()).await, "/nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}
