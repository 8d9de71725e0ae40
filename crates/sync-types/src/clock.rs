//! The wall clock, read in one place.
//!
//! Wire timestamps (`PushAck.server_time`, invite expiry, blob ids) are Unix milliseconds. The
//! logic crates take `now` as a parameter; the shells that own a clock (client, relay, CLI,
//! lab) read it here.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch by the system clock; 0 if the clock is set before 1970,
/// `u64::MAX` past the year 584 million.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_clock_is_after_this_code_was_written() {
        // 2026-01-01T00:00:00Z: a clock reading earlier than that is a broken conversion.
        assert!(super::unix_ms() > 1_767_225_600_000);
    }
}
