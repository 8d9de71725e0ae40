//! The exit codes: distinct, listed in `--help`, and what each relay answer maps to.

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
        Kind::Integrity,
        Kind::Incomplete,
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
