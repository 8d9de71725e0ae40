//! Failures a person can act on: one readable line and a distinct exit code each.

use std::fmt;

use sync_client::{ClientError, InviteFetchError, StoreError};
use sync_core::InviteError;
use sync_types::ErrorCode;

/// What went wrong, as far as the exit code is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Anything else (local store failure, internal error).
    Other,
    /// Bad input: arguments, files, invite text, short code.
    BadInput,
    /// The data dir holds no device (`init`) or no group (`pair`).
    NotInitialised,
    /// The relay could not be reached, or is unavailable for now (try again).
    Unreachable,
    /// The passphrase does not derive the invite's group.
    WrongPassphrase,
    /// The invite or short code expired, was used, or is unknown to the relay.
    InviteGone,
    /// The relay's quota for the group is full (the push stays queued), or the local outbox is
    /// (the push was not queued).
    Quota,
    /// The relay rate-limited this device.
    RateLimited,
    /// The relay refused this device or request for good.
    Refused,
    /// Another `sync-cli` process holds the data directory's lock.
    Busy,
    /// What the relay served had problems (a blob that failed verification, a blob served
    /// again): the good data was printed, each problem warned about.
    Integrity,
    /// Large content (a file or folder sent with `push --file`/`--dir`) could not be fetched
    /// completely: what arrived was written, the missing items were named.
    Incomplete,
    /// Standard output was closed by its reader (EPIPE): exit quietly, like a SIGPIPE death.
    OutputClosed,
}

/// The exit-code table printed by `--help` (keep in step with [`Kind::code`]).
pub(crate) const EXIT_CODES: &str = "\
Exit codes:
  0   done (for push: sent, or queued on this device while the relay is unreachable)
  1   unexpected failure (local store, internal error)
  2   bad input (arguments, file, invite text, short code)
  3   not initialised (run `init`) or not in a group (run `pair`)
  4   relay unreachable, not answering in time (--connect-timeout, --wait), or unavailable
      for now (busy, restarting, internal error): the address tried is printed; try again
  5   wrong passphrase
  6   invite or short code expired, already used, or unknown
  7   quota exceeded: the relay's group quota (the push stays queued on this device), or
      this device's outbox is full (the push was NOT queued: send it again after `flush`),
      or the group's large-content quota on the relay (nothing was sent or announced)
  8   rate limited by the relay; data stays queued
  9   refused by the relay (e.g. not a member of the group), or the endpoint at the relay's
      address is not the pinned relay, or --relay-id does not match the relay found
  10  another sync-cli process is using this data directory (e.g. `watch`); one command at
      a time per data directory (`devices` excepted)
  11  `pull`/`watch`: the relay served something wrong (a blob that failed verification, a
      blob already received served again, blobs left out without an expiry or delete):
      everything good was printed and the cursor moved; one warning line per problem
  12  `pull`/`watch`: a file or folder sent as large content could not be fetched completely
      (its sender is offline and the relay holds no copy, or a holder sent bad data): what
      arrived was written, each missing item named; the cursor moved past it, so fetch it
      again with `pull --after-cursor N` (the line names N)
  141 standard output closed early (e.g. `| head`): nothing more is written, no message;
      `pull` then leaves its cursor where it was, so the next `pull` prints the same blobs";

impl Kind {
    /// The process exit code.
    pub(crate) fn code(self) -> u8 {
        match self {
            Kind::Other => 1,
            Kind::BadInput => 2,
            Kind::NotInitialised => 3,
            Kind::Unreachable => 4,
            Kind::WrongPassphrase => 5,
            Kind::InviteGone => 6,
            Kind::Quota => 7,
            Kind::RateLimited => 8,
            Kind::Refused => 9,
            Kind::Busy => 10,
            Kind::Integrity => 11,
            Kind::Incomplete => 12,
            Kind::OutputClosed => 141,
        }
    }
}

/// A failure: what kind, and the line shown to the user (never a secret).
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) kind: Kind,
    pub(crate) msg: String,
}

impl Failure {
    pub(crate) fn new(kind: Kind, msg: impl Into<String>) -> Self {
        Self {
            kind,
            msg: msg.into(),
        }
    }

    /// A failure of kind [`Kind::BadInput`]: the user's input cannot be used.
    pub(crate) fn bad_input(msg: impl Into<String>) -> Self {
        Self::new(Kind::BadInput, msg)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Failure {}

/// What a request was about, for the codes whose meaning depends on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum About {
    /// The invite mailbox (leaving or fetching an invite).
    Invite,
    /// The group's data (hello, push, pull).
    Sync,
}

/// The exit kind of a relay error code.
pub(crate) fn kind_of_code(code: ErrorCode, about: About) -> Kind {
    match code {
        ErrorCode::QuotaExceeded => Kind::Quota,
        ErrorCode::RateLimited => Kind::RateLimited,
        ErrorCode::BlobTooLarge | ErrorCode::TtlTooLong => Kind::BadInput,
        ErrorCode::InviteExpired | ErrorCode::InviteUsed | ErrorCode::TooManyAttempts => {
            Kind::InviteGone
        }
        ErrorCode::NotFound if about == About::Invite => Kind::InviteGone,
        // No such blob: the CLI never asks for one by id.
        ErrorCode::NotFound => Kind::Other,
        // Transient relay-side conditions (busy, restarting, storage hiccup, a session that
        // timed out): the same command may work later.
        ErrorCode::TooManySessions
        | ErrorCode::TooManyInFlight
        | ErrorCode::ShuttingDown
        | ErrorCode::StorageFailure
        | ErrorCode::Internal
        | ErrorCode::HelloTimeout
        | ErrorCode::IdleTimeout => Kind::Unreachable,
        code if code.is_retryable() => Kind::Unreachable,
        _ => Kind::Refused,
    }
}

/// The relay at `relay` (the address tried) could not be reached.
pub(crate) fn unreachable(relay: &str) -> Failure {
    Failure::new(Kind::Unreachable, format!("relay unreachable at {relay}"))
}

/// The relay answered `code`: transient conditions say "try again" and name the relay, others
/// are a refusal, introduced by `refused`.
fn refusal(code: ErrorCode, message: &str, about: About, relay: &str, refused: &str) -> Failure {
    let kind = kind_of_code(code, about);
    if kind == Kind::Unreachable {
        Failure::new(
            kind,
            format!("relay at {relay} is unavailable for now: {message} ({code}); try again"),
        )
    } else {
        let hint = match code {
            ErrorCode::AdmissionRequired => {
                "; this relay admits only devices with its operator's token: pass it with --token"
            }
            ErrorCode::AdmissionInvalid => {
                "; the token is expired, forged or not for this group: ask the relay's operator for a new one and pass it with --token"
            }
            _ => "",
        };
        Failure::new(kind, format!("{refused}: {message} ({code}){hint}"))
    }
}

/// A client error as a failure. `relay` is the address tried, for unreachable relays; `about`
/// what the request was about.
pub(crate) fn from_client_about(e: ClientError, relay: &str, about: About) -> Failure {
    match e {
        ClientError::Rejected { code, message, .. } => {
            refusal(code, &message, about, relay, "relay refused")
        }
        ClientError::Deferred {
            code,
            retry_after,
            message,
            ..
        } => {
            let after = retry_after
                .map(|d| format!("; retry after {:.1}s", d.as_secs_f64()))
                .unwrap_or_default();
            Failure::new(
                kind_of_code(code, about),
                format!(
                    "relay deferred the push: {message} ({code}); it stays queued on this device and is sent by the next command that connects{after}"
                ),
            )
        }
        ClientError::NotConnected | ClientError::Transport(_) | ClientError::Offline { .. } => {
            unreachable(relay)
        }
        ClientError::Timeout { .. } => Failure::new(
            Kind::Unreachable,
            format!("relay at {relay} did not answer in time"),
        ),
        ClientError::TooLarge { len, max } => Failure::bad_input(format!(
            "too large: {len} bytes sealed, the relay accepts at most {max}"
        )),
        ClientError::OutboxFull { entries, bytes } => Failure::new(
            Kind::Quota,
            format!(
                "local outbox full ({entries} pushes, {bytes} bytes waiting): this push was NOT queued; run `sync-cli flush` when the relay is reachable, then send it again"
            ),
        ),
        ClientError::Store(e) => from_store(e),
        ClientError::MembershipChange(why) => Failure::new(Kind::Refused, why),
        ClientError::Membership(e) => Failure::new(
            Kind::Integrity,
            format!("the relay served membership records this device refuses: {e}"),
        ),
        other => Failure::new(Kind::Other, other.to_string()),
    }
}

/// A client error about the group's data (connect, push, pull) as a failure.
pub(crate) fn from_client(e: ClientError, relay: &str) -> Failure {
    from_client_about(e, relay, About::Sync)
}

/// A store error as a failure.
pub(crate) fn from_store(e: StoreError) -> Failure {
    match e {
        StoreError::NoGroup => Failure::new(
            Kind::NotInitialised,
            "this device is in no group yet: run `sync-cli pair --create` or `sync-cli pair --join`",
        ),
        other => Failure::new(Kind::Other, other.to_string()),
    }
}

/// An invite error as a failure.
pub(crate) fn from_invite(e: InviteError) -> Failure {
    match e {
        InviteError::WrongPassphrase => Failure::new(
            Kind::WrongPassphrase,
            "wrong passphrase for this group (it derives another group than the invite names)",
        ),
        InviteError::Expired { .. } => Failure::new(
            Kind::InviteGone,
            "this invite has expired; ask for a fresh one (`sync-cli invite` on a device of the group)",
        ),
        InviteError::PassphraseRequired => {
            Failure::bad_input("this group is protected by a passphrase: add --passphrase")
        }
        InviteError::Crypto(_) => Failure::new(
            Kind::InviteGone,
            "the invite does not open with this code (mistyped code?)",
        ),
        other => Failure::bad_input(format!("invalid invite: {other}")),
    }
}

/// The invite a short code named cannot be had any more, and why.
fn invite_gone(why: &str) -> Failure {
    Failure::new(Kind::InviteGone, why)
}

/// A mailbox lookup error as a failure. `relay` is the address tried.
pub(crate) fn from_fetch(e: InviteFetchError, relay: &str) -> Failure {
    match e {
        InviteFetchError::NotFound => {
            invite_gone("no invite for this code on the relay: already used, expired, or mistyped")
        }
        InviteFetchError::Expired => {
            invite_gone("this short code has expired; ask for a fresh one (`sync-cli invite`)")
        }
        InviteFetchError::TooManyAttempts => invite_gone(
            "too many attempts with this code; the relay deleted the invite: ask for a fresh one",
        ),
        InviteFetchError::Unreachable(_) | InviteFetchError::Timeout => unreachable(relay),
        InviteFetchError::Refused { code, message } => refusal(
            code,
            &message,
            About::Invite,
            relay,
            "relay refused the lookup",
        ),
        InviteFetchError::Invalid(e) => from_invite(e),
        other => Failure::new(Kind::Other, other.to_string()),
    }
}

#[cfg(test)]
mod tests;
