//! The proxy's packet counters: live atomics, and the snapshots handed out.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Defines [`DirectionStats`] and `Counters`, its live counterpart (an `AtomicU64` a field),
/// from one list of fields, so that the two cannot drift apart.
macro_rules! direction_counters {
    ($($(#[$doc:meta])* $field:ident,)+) => {
        /// Packet counters of one direction (a snapshot).
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
        pub struct DirectionStats {
            $($(#[$doc])* pub $field: u64,)+
        }

        /// The live counters of one direction.
        #[derive(Default)]
        pub(super) struct Counters {
            $(pub(super) $field: AtomicU64,)+
        }

        impl Counters {
            /// What the counters hold now.
            pub(super) fn snapshot(&self) -> DirectionStats {
                DirectionStats {
                    $($field: self.$field.load(Ordering::Relaxed),)+
                }
            }
        }
    };
}

direction_counters! {
    /// Datagrams received.
    received,
    /// Bytes received.
    received_bytes,
    /// Datagrams sent on (duplicates included).
    forwarded,
    /// Bytes sent on.
    forwarded_bytes,
    /// Extra copies scheduled.
    duplicated,
    /// Copies held back by `reorder_gap`.
    reordered,
    /// Dropped by `loss`.
    dropped_loss,
    /// Dropped by a partition (on arrival or while in flight).
    dropped_partition,
    /// Tail-dropped by the rate limiter's queue.
    dropped_queue,
    /// Dropped because sending failed, the datagram was too large or too many clients.
    dropped_error,
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

pub(super) fn bump(a: &AtomicU64, n: u64) {
    a.fetch_add(n, Ordering::Relaxed);
}
