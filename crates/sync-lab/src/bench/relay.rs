//! The relay under test: the real `sync-relay` binary started through the test kit on
//! loopback (free ports) on a data dir the benchmark owns, with rate limits off and group
//! quotas high so the relay itself is measured, and its `/metrics` counters.

use std::net::SocketAddr;
use std::path::Path;

use sync_testkit::RelayProcess;
use sync_types::RelayAddr;

use super::preload::{GROUP_MAX_BLOBS, GROUP_MAX_BYTES};
use super::session::Peer;
use super::{BenchError, joined};
use crate::soak::{fetch_metrics, parse_metric};

/// A running relay process; killed if dropped before [`BenchRelay::stop`].
pub(super) struct BenchRelay {
    process: RelayProcess,
    /// Where devices dial it.
    pub(super) peer: Peer,
    /// Where `SyncClient`s dial it.
    pub(super) addr: RelayAddr,
    /// Its process id.
    pub(super) pid: u32,
    http: SocketAddr,
}

impl BenchRelay {
    /// Starts `bin` on `data_dir` and waits until it reports ready.
    pub(super) async fn start(bin: &Path, data_dir: &Path) -> Result<Self, BenchError> {
        Self::start_with(bin, data_dir, &[]).await
    }

    /// [`BenchRelay::start`] with `extra` arguments after the benchmark's own.
    pub(super) async fn start_with(
        bin: &Path,
        data_dir: &Path,
        extra: &[&str],
    ) -> Result<Self, BenchError> {
        let builder = RelayProcess::builder()
            .bin(bin)
            .data_dir(data_dir)
            .args([
                "--session-push-rate",
                "0",
                "--global-push-rate",
                "0",
                "--ip-push-rate",
                "0",
            ])
            .arg("--group-max-blobs")
            .arg(GROUP_MAX_BLOBS.to_string())
            .arg("--group-max-bytes")
            .arg(GROUP_MAX_BYTES.to_string())
            .args(extra.iter().copied());
        let started = tokio::task::spawn_blocking(move || builder.start()).await;
        let process = joined(started, "starting the relay")??;
        let addr = process.relay_addr();
        let peer = Peer::new(&addr)?;
        let pid = process
            .pid()
            .ok_or_else(|| BenchError::Protocol("the relay has no process id".into()))?;
        let http = process.http_addr();
        Ok(Self {
            process,
            peer,
            addr,
            pid,
            http,
        })
    }

    /// Its HTTP address (`/metrics`, `/health`).
    pub(super) fn http_addr(&self) -> SocketAddr {
        self.http
    }

    /// The relay's whole `/metrics` text; `None` if unreadable.
    pub(super) async fn metrics_text(&self) -> Option<String> {
        fetch_metrics(self.http).await
    }

    /// The relay's `/metrics` counter `name` (without the metric prefix); 0 if unreadable.
    pub(super) async fn metric(&self, name: &str) -> u64 {
        let key = format!("{}{name}", sync_relay::METRIC_PREFIX);
        let value = self
            .metrics_text()
            .await
            .and_then(|text| parse_metric(&text, &key))
            .unwrap_or(0.0);
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let value = value.max(0.0) as u64;
        value
    }

    /// SIGTERM (the relay drains, flushes and checkpoints); the test kit bounds the wait and
    /// kills a relay that outlives it.
    pub(super) async fn stop(self) {
        let mut process = self.process;
        let _ = tokio::task::spawn_blocking(move || process.stop()).await;
    }
}
