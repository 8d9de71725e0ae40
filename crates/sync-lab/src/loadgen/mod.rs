//! Multi-client load against one relay: many real devices ([`SyncClient`] over iroh), in groups,
//! pushing at a total rate; fan-out latency per receiver, refusals at the relay's session limit,
//! and connection churn with a check that the relay's session gauge returns to its baseline.
//!
//! Every run is bounded: in clients, in time (`duration` plus a drain timeout) and in messages
//! (`rate × duration`).
//!
//! - [`run_load`]: `clients` devices in groups of `group_size` (each group a fresh random group
//!   secret), connected with bounded concurrency. A device the relay does not accept on its
//!   first attempt (e.g. `TooManySessions` above `max_sessions`) is counted as refused and
//!   closed; the accepted ones push `rate` messages per second in total for `duration`. Each
//!   message carries its sender, sequence number and send time (Unix ns) inside the
//!   plaintext; every other accepted member of the group pulls it on notification, and the
//!   latency is arrival − send time (one clock: all devices run in this process). After the
//!   pushers flush, receivers wait for everything their group pushed; missing and duplicated
//!   messages are counted.
//! - [`run_churn`]: `connections` short-lived devices (each connects, pushes one message,
//!   stays `lifetime`, closes), a new one every `lifetime / overlap`, so about `overlap` are
//!   open at once; afterwards the relay's `sync_relay_sessions` gauge (from `/metrics`) must
//!   return to the value it had before (no ghost sessions) and, when the relay's pid is known
//!   (same machine), its open file descriptors (`/proc/<pid>/fd`) must return to within a
//!   slack of theirs.
//!
//! A run that measured nothing is not clean: no device accepted, nothing pushed or no delivery
//! expected (groups of one) for the load; no device connected for the churn.

mod churn;
mod load;
mod report;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use sync_client::{
    ClientConfig, ClientOptions, GroupChoice, GroupMaterial, IrohConfig, IrohTransport,
    StoreLocation, SyncClient,
};
use sync_types::RelayAddr;

pub use churn::{ChurnConfig, run_churn};
pub use load::{LoadConfig, run_load};
pub use report::{ChurnReport, FdReport, Latency, LoadReport, ReceiverReport};

use crate::soak::{fetch_metrics, parse_metric};

/// The relay's session gauge in `/metrics`.
pub const SESSIONS_METRIC: &str = "sync_relay_sessions";
/// The relay's `TooManySessions` refusal counter in `/metrics`.
pub const TOO_MANY_SESSIONS_METRIC: &str =
    "sync_relay_rejections_total{reason=\"TooManySessions\"}";

/// Errors of a load or churn run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// A parameter is out of range.
    #[error("invalid load parameter: {0}")]
    Invalid(String),
    /// The relay's `/metrics` could not be read (churn needs it).
    #[error("cannot read the relay's /metrics at {0}")]
    Metrics(SocketAddr),
    /// A device could not be set up locally (store, key).
    #[error("device setup failed: {0}")]
    Device(String),
    /// The relay's open file descriptors could not be read.
    #[error("cannot read /proc/{0}/fd (is the relay running on this machine with that pid?)")]
    Proc(u32),
}

/// The relay a load runs against: where devices reach it, and its HTTP address for
/// `/metrics` when reachable (sessions gauge and refusal counters are read there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadTarget {
    /// The relay.
    pub relay: RelayAddr,
    /// Its HTTP address, if reachable.
    pub http: Option<SocketAddr>,
}

impl LoadTarget {
    /// Parses the relay's dial string `ID@IP:PORT[,IP:PORT…]` (host names are not resolved).
    pub fn parse_dial(dial: &str, http: Option<SocketAddr>) -> Result<Self, LoadError> {
        let relay: RelayAddr = dial
            .parse()
            .map_err(|e| LoadError::Invalid(format!("relay {dial:?}: {e}")))?;
        if relay.socket_addrs().len() != relay.addrs.len() {
            return Err(LoadError::Invalid(format!(
                "relay {dial:?}: addresses must be IP:PORT"
            )));
        }
        Ok(Self { relay, http })
    }

    async fn metric(&self, name: &str) -> Option<f64> {
        let text = fetch_metrics(self.http?).await?;
        parse_metric(&text, name)
    }
}

/// Shortest connect timeout accepted.
const MIN_TIMEOUT: Duration = Duration::from_millis(10);
/// Longest connect, drain, push or settle timeout accepted.
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn clock_seed() -> u64 {
    unix_nanos() ^ (u64::from(std::process::id()) << 32)
}

fn options(connect_timeout: Duration) -> ClientOptions {
    let mut o = ClientOptions::for_tests();
    o.connection.connect_timeout = connect_timeout;
    o.connection.handshake_timeout = connect_timeout;
    o
}

async fn connect(
    target: &LoadTarget,
    group: &GroupMaterial,
    name: String,
    connect_timeout: Duration,
) -> Result<SyncClient, LoadError> {
    let transport = Arc::new(IrohTransport::new(IrohConfig::new(
        target.relay.id,
        target.relay.socket_addrs(),
    )));
    let cfg = ClientConfig::new(
        StoreLocation::InMemory,
        transport,
        GroupChoice::Use(group.clone()),
    )
    .with_device_name(name)
    .with_options(options(connect_timeout));
    SyncClient::connect(cfg)
        .await
        .map_err(|e| LoadError::Device(e.to_string()))
}

/// One random group secret for every `group_size` of `devices`, from `seed` (or the clock).
fn group_materials(devices: usize, group_size: usize, seed: Option<u64>) -> Vec<GroupMaterial> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed.unwrap_or_else(clock_seed));
    (0..devices.div_ceil(group_size))
        .map(|_| GroupMaterial::random(&mut rng))
        .collect()
}

/// `sender:seq:unix_ns:` then padding.
fn message(sender: usize, seq: u64, size: usize) -> Vec<u8> {
    let mut m = format!("{sender}:{seq}:{}:", unix_nanos()).into_bytes();
    if m.len() < size {
        m.resize(size, b'.');
    }
    m
}

fn parse_message(data: &[u8]) -> Option<(usize, u64, u64)> {
    let text = std::str::from_utf8(data.get(..data.len().min(64))?).ok()?;
    let mut parts = text.split(':');
    let sender = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    let sent = parts.next()?.parse().ok()?;
    Some((sender, seq, sent))
}

/// Reads a figure of the relay every 50 ms until `done` holds for it or `timeout` passes (the
/// figure lives in another process: poll it, bounded in time); the last value read and whether
/// `done` held for it.
async fn settle<F, Fut>(
    timeout: Duration,
    mut read: F,
    done: impl Fn(u64) -> bool,
) -> (Option<u64>, bool)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<u64>>,
{
    let deadline = Instant::now() + timeout;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut last = None;
    loop {
        tick.tick().await;
        last = read().await.or(last);
        let reached = last.is_some_and(&done);
        if reached || Instant::now() >= deadline {
            return (last, reached);
        }
    }
}

/// Reads the session gauge until it is back to `baseline` or `timeout` passes; returns the last
/// value read.
async fn settle_sessions(target: &LoadTarget, baseline: u64, timeout: Duration) -> Option<u64> {
    let read = || async { target.metric(SESSIONS_METRIC).await.map(|v| v as u64) };
    settle(timeout, read, |v| v == baseline).await.0
}
