//! Test kit of 0k-sync: what every test suite, the lab and the benchmarks need to drive the real
//! system, written once.
//!
//! - [`RelayProcess`]: the real `sync-relay` binary on loopback with free ports and a temporary
//!   data dir, ready when it prints its readiness JSON (`--ready-json`), stopped with SIGTERM or
//!   SIGKILL, killed on drop whatever happens to the test.
//! - [`ChildProcess`]: any child process with the same guarantees (stop with a bounded wait,
//!   kill on drop).
//! - [`relay_bin`] finds (and when stale, builds) the relay binary for tests;
//!   [`find_relay_bin`] finds it for the lab at run time.
//! - [`PostgresServer`]: a private PostgreSQL cluster on a free loopback port, for the
//!   storage suite and the scale-out tests; stopped and removed on drop.
//! - [`guard`]: a bounded wait for an event, so a hung test fails instead of holding CI.
//! - With the `devices` feature: [`devices`], test devices (`SyncClient`s over real iroh on
//!   loopback) and groups.
//! - With the `hostile` feature: [`hostile_relay`], an in-process relay speaking the real
//!   protocol (over real iroh on loopback, or in memory) that can be told to misbehave: damage,
//!   withhold, replay, roll back, announce huge frames, page forever, ask for endless waits.
//! - [`doc_vectors`]: the test vectors of `docs/PROTOCOL.md`, read from the document so the
//!   tests that check them keep it true.
//!
//! It is not part of the product: nothing in the relay or the client depends on it.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod bin;
#[cfg(feature = "devices")]
pub mod devices;
pub mod doc_vectors;
mod files;
mod guard;
#[cfg(feature = "hostile")]
pub mod hostile_relay;
mod postgres;
mod process;
mod relay;

pub use bin::{RELAY_BIN_ENV, find_relay_bin, relay_bin};
pub use files::{files_containing, files_under, files_with_extension};
pub use guard::{GUARD, guard, guard_for};
pub use postgres::{PG_BIN_ENV, PostgresServer};
pub use process::{ChildProcess, StopOutcome, run_bounded, wait_exit};
pub use relay::{RelayBuilder, RelayProcess, RelayReady};

/// Why the kit could not start, find or stop something. Messages name the binary and include
/// the last lines of its log, never secrets (the relay logs none).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestkitError {
    /// The binary could not be found (or built).
    #[error("{0}")]
    NoBinary(String),
    /// The process could not be started.
    #[error("cannot start {bin}: {source}")]
    Spawn {
        /// The binary.
        bin: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The process exited or stayed silent instead of reporting ready.
    #[error("{what} did not report ready: {reason}{}", log_tail(.log))]
    NotReady {
        /// Which process.
        what: String,
        /// What happened instead.
        reason: String,
        /// The last lines of its log, if any.
        log: String,
    },
    /// A file or directory the kit needs could not be made.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The operating system's error.
        source: std::io::Error,
    },
}

fn log_tail(log: &str) -> String {
    if log.is_empty() {
        String::new()
    } else {
        format!("; its log ends with:\n{log}")
    }
}

/// The last `n` non-empty lines of a log file (empty if it cannot be read).
pub fn last_lines(path: &std::path::Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `len` deterministic pseudo-random bytes drawn from `seed` (xorshift): test data that is
/// cheap to make, differs from seed to seed, and is the same on every run, so a failure can be
/// replayed.
pub fn pattern_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // The top byte: the low bits of xorshift are the weakest.
            (x >> 56) as u8
        })
        .collect()
}
