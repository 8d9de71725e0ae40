//! Bounded waits: a test waits for an event, never sleeps for it, and never waits forever.

use std::future::Future;
use std::time::Duration;

/// The default bound of [`guard`]: generous, so a slow, loaded machine never trips it, and a
/// hang still ends in a failure with a message instead of a stuck CI job.
pub const GUARD: Duration = Duration::from_secs(120);

/// Awaits `f`, panicking with "timed out (guard) waiting for {what}" after [`GUARD`].
///
/// # Panics
/// When `f` does not finish within [`GUARD`]: this is for tests.
pub async fn guard<F: Future>(what: &str, f: F) -> F::Output {
    guard_for(what, GUARD, f).await
}

/// [`guard`] with another bound.
///
/// # Panics
/// When `f` does not finish within `limit`.
#[allow(clippy::panic)]
pub async fn guard_for<F: Future>(what: &str, limit: Duration, f: F) -> F::Output {
    match tokio::time::timeout(limit, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out (guard, {limit:?}) waiting for {what}"),
    }
}
