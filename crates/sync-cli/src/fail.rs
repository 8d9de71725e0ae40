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
    /// The relay could not be reached.
    Unreachable,
    /// The passphrase does not derive the invite's group.
    WrongPassphrase,
    /// The invite or short code expired, was used, or is unknown to the relay.
    InviteGone,
    /// The relay's quota for the group is full (or the local outbox is).
    Quota,
    /// The relay rate-limited this device.
    RateLimited,
    /// The relay refused this device or request for good.
    Refused,
}

/// The exit-code table printed by `--help` (keep in step with [`Kind::code`]).
pub(crate) const EXIT_CODES: &str = "\
Exit codes:
  0   done (for push: sent, or queued on this device while the relay is unreachable)
  1   unexpected failure (local store, internal error)
  2   bad input (arguments, file, invite text, short code)
  3   not initialised (run `init`) or not in a group (run `pair`)
  4   relay unreachable (the address tried is printed)
  5   wrong passphrase
  6   invite or short code expired, already used, or unknown
  7   quota exceeded (relay group quota, or local outbox full); data stays queued
  8   rate limited by the relay; data stays queued
  9   refused by the relay (e.g. not a member of the group)";

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
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Failure {}

/// The exit kind of a relay error code.
pub(crate) fn kind_of_code(code: ErrorCode) -> Kind {
    match code {
        ErrorCode::QuotaExceeded => Kind::Quota,
        ErrorCode::RateLimited => Kind::RateLimited,
        ErrorCode::BlobTooLarge | ErrorCode::TtlTooLong => Kind::BadInput,
        ErrorCode::NotFound | ErrorCode::InviteExpired | ErrorCode::TooManyAttempts => {
            Kind::InviteGone
        }
        ErrorCode::TooManySessions | ErrorCode::ShuttingDown | ErrorCode::StorageFailure => {
            Kind::Unreachable
        }
        _ => Kind::Refused,
    }
}

/// A client error as a failure. `relay` is the address tried, for unreachable relays.
pub(crate) fn from_client(e: ClientError, relay: &str) -> Failure {
    match e {
        ClientError::Rejected { code, message, .. } => Failure::new(
            kind_of_code(code),
            format!("relay refused: {message} ({code})"),
        ),
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
                kind_of_code(code),
                format!(
                    "relay deferred the push: {message} ({code}); it stays queued on this device and is sent by the next command that connects{after}"
                ),
            )
        }
        ClientError::NotConnected | ClientError::Transport(_) | ClientError::Offline { .. } => {
            Failure::new(Kind::Unreachable, format!("relay unreachable at {relay}"))
        }
        ClientError::Timeout { .. } => Failure::new(
            Kind::Unreachable,
            format!("relay at {relay} did not answer in time"),
        ),
        ClientError::TooLarge { len, max } => Failure::new(
            Kind::BadInput,
            format!("too large: {len} bytes sealed, the relay accepts at most {max}"),
        ),
        ClientError::OutboxFull { entries, bytes } => Failure::new(
            Kind::Quota,
            format!(
                "local outbox full ({entries} pushes, {bytes} bytes queued); run `sync-cli flush` when the relay is reachable"
            ),
        ),
        ClientError::Store(e) => from_store(e),
        other => Failure::new(Kind::Other, other.to_string()),
    }
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
        InviteError::AlreadyUsed => Failure::new(Kind::InviteGone, "this invite was already used"),
        InviteError::PassphraseRequired => Failure::new(
            Kind::BadInput,
            "this group is protected by a passphrase: add --passphrase",
        ),
        InviteError::Crypto(_) => Failure::new(
            Kind::InviteGone,
            "the invite does not open with this code (mistyped code?)",
        ),
        other => Failure::new(Kind::BadInput, format!("invalid invite: {other}")),
    }
}

/// A mailbox lookup error as a failure. `relay` is the address tried.
pub(crate) fn from_fetch(e: InviteFetchError, relay: &str) -> Failure {
    match e {
        InviteFetchError::NotFound => Failure::new(
            Kind::InviteGone,
            "no invite for this code on the relay: already used, expired, or mistyped",
        ),
        InviteFetchError::Expired => Failure::new(
            Kind::InviteGone,
            "this short code has expired; ask for a fresh one (`sync-cli invite`)",
        ),
        InviteFetchError::TooManyAttempts => Failure::new(
            Kind::InviteGone,
            "too many attempts with this code; the relay deleted the invite: ask for a fresh one",
        ),
        InviteFetchError::Unreachable(_) | InviteFetchError::Timeout => {
            Failure::new(Kind::Unreachable, format!("relay unreachable at {relay}"))
        }
        InviteFetchError::Refused { code, message } => Failure::new(
            kind_of_code(code),
            format!("relay refused the lookup: {message} ({code})"),
        ),
        InviteFetchError::Invalid(e) => from_invite(e),
        other => Failure::new(Kind::Other, other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_distinct_and_listed_in_help() {
        let kinds = [
            Kind::Other,
            Kind::BadInput,
            Kind::NotInitialised,
            Kind::Unreachable,
            Kind::WrongPassphrase,
            Kind::InviteGone,
            Kind::Quota,
            Kind::RateLimited,
            Kind::Refused,
        ];
        let mut codes: Vec<u8> = kinds.iter().map(|k| k.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), kinds.len(), "distinct");
        for code in codes {
            assert!(
                EXIT_CODES.contains(&format!("\n  {code} ")),
                "{code} listed"
            );
        }
    }

    #[test]
    fn relay_codes_map_to_what_a_person_can_do() {
        assert_eq!(kind_of_code(ErrorCode::QuotaExceeded), Kind::Quota);
        assert_eq!(kind_of_code(ErrorCode::RateLimited), Kind::RateLimited);
        assert_eq!(kind_of_code(ErrorCode::InviteExpired), Kind::InviteGone);
        assert_eq!(kind_of_code(ErrorCode::TooManyAttempts), Kind::InviteGone);
        assert_eq!(kind_of_code(ErrorCode::Unauthorized), Kind::Refused);
        assert_eq!(kind_of_code(ErrorCode::BlobTooLarge), Kind::BadInput);
        let deferred = from_client(
            ClientError::Deferred {
                blob_id: sync_types::BlobId::from_bytes([1; 16]),
                code: ErrorCode::RateLimited,
                message: "slow down".into(),
                retry_after: Some(std::time::Duration::from_millis(1500)),
            },
            "relay",
        );
        assert_eq!(deferred.kind.code(), 8);
        assert!(deferred.msg.contains("stays queued"), "{}", deferred.msg);
        let offline = from_client(ClientError::NotConnected, "ID@127.0.0.1:9");
        assert_eq!(offline.kind, Kind::Unreachable);
        assert!(offline.msg.contains("127.0.0.1:9"));
        let wrong = from_invite(InviteError::WrongPassphrase);
        assert_eq!(wrong.kind.code(), 5);
    }
}
