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
      this device's outbox is full (the push was NOT queued: send it again after `flush`)
  8   rate limited by the relay; data stays queued
  9   refused by the relay (e.g. not a member of the group)
  10  another sync-cli process is using this data directory (e.g. `watch`); one command at
      a time per data directory (`devices` excepted)
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
        Failure::new(kind, format!("{refused}: {message} ({code})"))
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
        ClientError::TooLarge { len, max } => Failure::new(
            Kind::BadInput,
            format!("too large: {len} bytes sealed, the relay accepts at most {max}"),
        ),
        ClientError::OutboxFull { entries, bytes } => Failure::new(
            Kind::Quota,
            format!(
                "local outbox full ({entries} pushes, {bytes} bytes waiting): this push was NOT queued; run `sync-cli flush` when the relay is reachable, then send it again"
            ),
        ),
        ClientError::Store(e) => from_store(e),
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
            Kind::Busy,
            Kind::OutputClosed,
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
        let sync = |c| kind_of_code(c, About::Sync).code();
        let invite = |c| kind_of_code(c, About::Invite).code();
        assert_eq!(sync(ErrorCode::QuotaExceeded), 7);
        assert_eq!(sync(ErrorCode::RateLimited), 8);
        assert_eq!(sync(ErrorCode::Unauthorized), 9);
        assert_eq!(sync(ErrorCode::BlobTooLarge), 2);
        assert_eq!(sync(ErrorCode::TtlTooLong), 2);
        assert_eq!(invite(ErrorCode::InviteUsed), 6);
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

    #[test]
    fn transient_relay_codes_are_4_try_again() {
        for code in [
            ErrorCode::Internal,
            ErrorCode::TooManyInFlight,
            ErrorCode::IdleTimeout,
            ErrorCode::HelloTimeout,
            ErrorCode::TooManySessions,
            ErrorCode::ShuttingDown,
            ErrorCode::StorageFailure,
        ] {
            assert!(code.is_retryable(), "{code}");
            for about in [About::Sync, About::Invite] {
                assert_eq!(kind_of_code(code, about).code(), 4, "{code} {about:?}");
            }
            let f = from_client(
                ClientError::Rejected {
                    blob_id: None,
                    code,
                    message: "busy".into(),
                    retry_after: None,
                },
                "ID@127.0.0.1:9",
            );
            assert_eq!(f.kind.code(), 4, "{code}");
            assert!(f.msg.contains("try again"), "{}", f.msg);
            assert!(f.msg.contains("127.0.0.1:9"), "{}", f.msg);
        }
        // Every retryable code a relay may send is transient for the CLI (4), except the two
        // that have their own codes.
        for &code in ErrorCode::ALL {
            let kind = kind_of_code(code, About::Sync);
            if code.is_retryable() {
                assert!(
                    matches!(kind, Kind::Unreachable | Kind::Quota | Kind::RateLimited),
                    "{code}: {kind:?}"
                );
            } else {
                assert_ne!(kind, Kind::Unreachable, "{code}");
            }
        }
    }

    #[test]
    fn invite_codes_are_6_and_not_found_depends_on_context() {
        for code in [
            ErrorCode::InviteUsed,
            ErrorCode::InviteExpired,
            ErrorCode::TooManyAttempts,
        ] {
            assert_eq!(kind_of_code(code, About::Invite).code(), 6, "{code}");
            assert_eq!(kind_of_code(code, About::Sync).code(), 6, "{code}");
        }
        assert_eq!(kind_of_code(ErrorCode::NotFound, About::Invite).code(), 6);
        assert_eq!(kind_of_code(ErrorCode::NotFound, About::Sync).code(), 1);
        let used = from_fetch(
            InviteFetchError::Refused {
                code: ErrorCode::InviteUsed,
                message: "used".into(),
            },
            "relay",
        );
        assert_eq!(used.kind.code(), 6);
        assert_eq!(
            from_fetch(InviteFetchError::NotFound, "relay").kind.code(),
            6
        );
        let put = from_client_about(
            ClientError::Rejected {
                blob_id: None,
                code: ErrorCode::NotFound,
                message: "gone".into(),
                retry_after: None,
            },
            "relay",
            About::Invite,
        );
        assert_eq!(put.kind.code(), 6);
    }

    #[test]
    fn outbox_full_says_the_push_was_not_queued() {
        let f = from_client(
            ClientError::OutboxFull {
                entries: 10,
                bytes: 100,
            },
            "relay",
        );
        assert_eq!(f.kind.code(), 7);
        assert!(f.msg.contains("NOT queued"), "{}", f.msg);
        assert!(EXIT_CODES.contains("NOT queued"));
    }
}
