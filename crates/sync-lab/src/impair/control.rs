//! HTTP control of a running proxy (axum, loopback): read counters and configuration, change
//! impairments while traffic flows.
//!
//! - `GET /stats` → [`ProxyStats`] as JSON;
//! - `GET /config` → [`ImpairConfig`] as JSON (durations in `*_ms`);
//! - `PUT /config` with a whole `ImpairConfig` → replaces it;
//! - `POST /config` with a [`ConfigPatch`] (`{"both": {"loss": 0.05}, "up": {"delay_ms": 40}}`)
//!   → changes only the fields given (`both` first, then `up` / `down`);
//! - `POST /partition`, `POST /heal` → both directions.
//!
//! Every answer that changes something returns the resulting configuration; a refused change
//! is `400` with `{"error": "…"}` and changes nothing.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::{DirectionConfig, ImpairConfig, ProxyHandle, ProxyStats};

/// A partial change of one direction: only the fields present are changed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DirectionPatch {
    /// New fixed delay, milliseconds.
    pub delay_ms: Option<f64>,
    /// New jitter, milliseconds.
    pub jitter_ms: Option<f64>,
    /// New loss probability.
    pub loss: Option<f64>,
    /// New reorder probability.
    pub reorder: Option<f64>,
    /// New reorder gap, milliseconds.
    pub reorder_gap_ms: Option<f64>,
    /// New duplicate probability.
    pub duplicate: Option<f64>,
    /// New rate in bytes/s; 0 = unlimited.
    pub rate: Option<u64>,
    /// New rate-limiter queue bound, milliseconds.
    pub queue_ms: Option<f64>,
    /// Partition or heal this direction.
    pub partition: Option<bool>,
}

/// A partial change of the configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConfigPatch {
    /// Applied to both directions first.
    pub both: Option<DirectionPatch>,
    /// Then to client → upstream.
    pub up: Option<DirectionPatch>,
    /// Then to upstream → client.
    pub down: Option<DirectionPatch>,
}

fn ms(v: f64, name: &str) -> Result<Duration, String> {
    if !v.is_finite() || !(0.0..=3_600_000.0).contains(&v) {
        return Err(format!("{name} must be between 0 and 3600000 ms"));
    }
    Ok(Duration::from_secs_f64(v / 1000.0))
}

impl DirectionPatch {
    /// Applies the fields present to `dir`.
    pub fn apply(&self, dir: &mut DirectionConfig) -> Result<(), String> {
        for (slot, value, name) in [
            (&mut dir.delay, self.delay_ms, "delay_ms"),
            (&mut dir.jitter, self.jitter_ms, "jitter_ms"),
            (&mut dir.reorder_gap, self.reorder_gap_ms, "reorder_gap_ms"),
            (&mut dir.queue, self.queue_ms, "queue_ms"),
        ] {
            if let Some(v) = value {
                *slot = ms(v, name)?;
            }
        }
        for (slot, value) in [
            (&mut dir.loss, self.loss),
            (&mut dir.reorder, self.reorder),
            (&mut dir.duplicate, self.duplicate),
        ] {
            if let Some(v) = value {
                *slot = v;
            }
        }
        if let Some(v) = self.rate {
            dir.rate = (v > 0).then_some(v);
        }
        if let Some(v) = self.partition {
            dir.partition = v;
        }
        Ok(())
    }
}

impl ConfigPatch {
    /// Applies the patch to `config` (`both`, then `up`, then `down`).
    pub fn apply(&self, config: &mut ImpairConfig) -> Result<(), String> {
        if let Some(p) = &self.both {
            p.apply(&mut config.up)?;
            p.apply(&mut config.down)?;
        }
        if let Some(p) = &self.up {
            p.apply(&mut config.up)?;
        }
        if let Some(p) = &self.down {
            p.apply(&mut config.down)?;
        }
        config.validate().map_err(|e| e.to_string())
    }
}

/// The control routes for `handle`.
pub fn router(handle: ProxyHandle) -> Router {
    Router::new()
        .route("/stats", get(stats))
        .route("/config", get(config).put(put_config).post(patch_config))
        .route("/partition", post(partition))
        .route("/heal", post(heal))
        .with_state(handle)
}

/// Serves the control routes on `listener` until the task is dropped or the listener fails.
pub async fn serve(listener: tokio::net::TcpListener, handle: ProxyHandle) -> std::io::Result<()> {
    axum::serve(listener, router(handle)).await
}

fn refused(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(serde_json::json!({ "error": message })),
    )
        .into_response()
}

async fn stats(State(h): State<ProxyHandle>) -> Json<ProxyStats> {
    Json(h.stats())
}

async fn config(State(h): State<ProxyHandle>) -> Json<ImpairConfig> {
    Json(h.config())
}

async fn put_config(State(h): State<ProxyHandle>, Json(mut c): Json<ImpairConfig>) -> Response {
    c.seed = h.config().seed;
    match h.set_config(c) {
        Ok(()) => Json(h.config()).into_response(),
        Err(e) => refused(e.to_string()),
    }
}

async fn patch_config(State(h): State<ProxyHandle>, Json(patch): Json<ConfigPatch>) -> Response {
    let mut next = h.config();
    if let Err(e) = patch.apply(&mut next) {
        return refused(e);
    }
    match h.set_config(next) {
        Ok(()) => Json(h.config()).into_response(),
        Err(e) => refused(e.to_string()),
    }
}

async fn partition(State(h): State<ProxyHandle>) -> Json<ImpairConfig> {
    h.partition();
    Json(h.config())
}

async fn heal(State(h): State<ProxyHandle>) -> Json<ImpairConfig> {
    h.heal();
    Json(h.config())
}
