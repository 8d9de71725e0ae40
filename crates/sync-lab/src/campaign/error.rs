//! Why a campaign could not run (exit 1).

use super::LocalError;
use crate::device::{INVITE_ENV, JoinError};
use crate::impair::ImpairError;

/// Why a campaign could not run (exit 1). A missed threshold is not an error: it is the
/// verdict.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CampaignError {
    /// `--impair` does not parse.
    #[error("--impair: {0}")]
    ImpairSpec(String),
    /// A file or directory could not be created or written.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The local relay or responder could not be started.
    #[error("--local setup failed")]
    Local(#[source] LocalError),
    /// Neither `--invite` nor `--local`.
    #[error("--invite (or {INVITE_ENV}) is required without --local")]
    NoInvite,
    /// The invite could not be used.
    #[error("cannot use the invite")]
    Invite(#[source] JoinError),
    /// The invite names no relay address to put the impairment proxy in front of.
    #[error("the relay has no address")]
    NoRelayAddr,
    /// The impairment proxy could not be started.
    #[error("cannot start the impairment proxy")]
    Proxy(#[source] ImpairError),
    /// The campaign device did not connect in time.
    #[error("connecting to the relay timed out")]
    ConnectTimeout,
    /// The campaign device could not be started.
    #[error("cannot start the campaign device")]
    Device(#[source] JoinError),
    /// The campaign device started but is not connected to the relay.
    #[error("cannot reach the relay at {addrs} (connection {connection})")]
    Unreachable {
        /// The relay's addresses.
        addrs: String,
        /// The device's connection state.
        connection: String,
    },
    /// The reports were written, but a local process did not stop cleanly.
    #[error("a local process did not stop cleanly (see the report's setup and {out})")]
    NotStopped {
        /// The output directory.
        out: String,
    },
}

impl CampaignError {
    pub(super) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> CampaignError {
        let what = what.into();
        move |source| CampaignError::Io { what, source }
    }
}
