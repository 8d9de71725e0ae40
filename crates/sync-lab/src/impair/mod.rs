//! A user-space UDP impairment proxy: QUIC runs over UDP and this kernel has no `netem`, so
//! every degraded-network test and campaign goes through this.
//!
//! [`Proxy::start`] listens on a loopback address and forwards every datagram to an upstream
//! loopback address. Each client source address gets its own upstream socket, so the upstream
//! (a relay) sees one distinct peer per client, and its answers go back to the right client.
//! Each direction ("up": client → upstream, "down": upstream → client) has its own
//! [`DirectionConfig`]: delay, jitter, loss, reorder, duplicate, rate (bytes/s) and partition.
//! The configuration can be changed through the [`ProxyHandle`] while traffic flows, and the
//! handle counts packets per direction ([`DirectionStats`]).
//!
//! Model, per direction, for every datagram received:
//! 1. partitioned → dropped (`dropped_partition`);
//! 2. lost with probability `loss` (`dropped_loss`);
//! 3. with probability `duplicate`, a second copy is scheduled too (`duplicated`);
//! 4. each copy waits for the rate limiter (a link of `rate` bytes/s serialising packets one
//!    after another; a packet that would wait longer than `queue` is tail-dropped,
//!    `dropped_queue`), then for `delay` ± uniform `jitter` (never below zero), plus
//!    `reorder_gap` with probability `reorder` (`reordered`: later packets overtake it);
//! 5. when it is due it is sent — unless the direction is partitioned by then, which drops it as
//!    well, so a partition stops traffic at once, packets already in flight included.
//!
//! Packets with different due times leave in due-time order, so jitter larger than the gap
//! between packets reorders them (as with `netem`). Decisions come from one ChaCha8 generator,
//! seeded with [`ImpairConfig::seed`] for reproducible tests.
//!
//! Only loopback addresses are accepted: this is a lab tool for one machine.
//!
//! The code: what to impair ([`ImpairConfig`]), the counters ([`ProxyStats`]), the forwarding
//! tasks ([`Proxy`]), the handle to a running proxy ([`ProxyHandle`]) and its HTTP [`control`].

mod config;
pub mod control;
mod handle;
mod proxy;
mod stats;

use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

pub use config::{Direction, DirectionConfig, ImpairConfig};
pub use handle::ProxyHandle;
pub use proxy::Proxy;
pub use stats::{DirectionStats, ProxyStats};

/// Largest datagram the proxy forwards (UDP's maximum payload).
pub(crate) const MAX_DATAGRAM: usize = 65_535;

/// Most client source addresses tracked at once; datagrams from further clients are dropped
/// (`dropped_error`).
pub const MAX_CLIENTS: usize = 4096;

/// Errors of the proxy.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImpairError {
    /// The proxy only runs between loopback addresses.
    #[error("{0} is not a loopback address (the proxy is loopback only)")]
    NotLoopback(SocketAddr),
    /// A setting is out of range.
    #[error("invalid setting: {0}")]
    Invalid(String),
    /// Binding the listening socket failed.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// [`ProxyHandle::wait_for`] gave up.
    #[error("timed out after {0:?} waiting for the proxy counters")]
    Timeout(Duration),
}

/// Locks `m` whatever happened to the last holder.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind; keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}
