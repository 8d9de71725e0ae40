//! The proxy's packet counters: live atomics, and the snapshots handed out.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Packet counters of one direction (a snapshot).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectionStats {
    /// Datagrams received.
    pub received: u64,
    /// Bytes received.
    pub received_bytes: u64,
    /// Datagrams sent on (duplicates included).
    pub forwarded: u64,
    /// Bytes sent on.
    pub forwarded_bytes: u64,
    /// Extra copies scheduled.
    pub duplicated: u64,
    /// Copies held back by `reorder_gap`.
    pub reordered: u64,
    /// Dropped by `loss`.
    pub dropped_loss: u64,
    /// Dropped by a partition (on arrival or while in flight).
    pub dropped_partition: u64,
    /// Tail-dropped by the rate limiter's queue.
    pub dropped_queue: u64,
    /// Dropped because sending failed, the datagram was too large or too many clients.
    pub dropped_error: u64,
}

impl DirectionStats {
    /// All drops together.
    pub fn dropped(&self) -> u64 {
        self.dropped_loss + self.dropped_partition + self.dropped_queue + self.dropped_error
    }
}

/// Counters of the whole proxy (a snapshot).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyStats {
    /// Client → upstream.
    pub up: DirectionStats,
    /// Upstream → client.
    pub down: DirectionStats,
    /// Client source addresses seen (each has its own upstream socket).
    pub clients: usize,
    /// Copies scheduled but not sent or dropped yet.
    pub in_flight: u64,
}

#[derive(Default)]
pub(super) struct Counters {
    pub(super) received: AtomicU64,
    pub(super) received_bytes: AtomicU64,
    pub(super) forwarded: AtomicU64,
    pub(super) forwarded_bytes: AtomicU64,
    pub(super) duplicated: AtomicU64,
    pub(super) reordered: AtomicU64,
    pub(super) dropped_loss: AtomicU64,
    pub(super) dropped_partition: AtomicU64,
    pub(super) dropped_queue: AtomicU64,
    pub(super) dropped_error: AtomicU64,
}

impl Counters {
    pub(super) fn snapshot(&self) -> DirectionStats {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DirectionStats {
            received: g(&self.received),
            received_bytes: g(&self.received_bytes),
            forwarded: g(&self.forwarded),
            forwarded_bytes: g(&self.forwarded_bytes),
            duplicated: g(&self.duplicated),
            reordered: g(&self.reordered),
            dropped_loss: g(&self.dropped_loss),
            dropped_partition: g(&self.dropped_partition),
            dropped_queue: g(&self.dropped_queue),
            dropped_error: g(&self.dropped_error),
        }
    }
}

pub(super) fn bump(a: &AtomicU64, n: u64) {
    a.fetch_add(n, Ordering::Relaxed);
}
