//! Admission decisions without a running relay: new groups, lookup buckets, the token gate.

use std::net::Ipv4Addr;

use sync_crypto::{OperatorKey, TokenClaims, TokenScope};
use sync_types::{Cursor, PROTOCOL_VERSION, Payload};

use super::*;

fn origin(n: u8) -> Origin {
    Origin::of_ip(Ipv4Addr::new(192, 0, 2, n).into())
}

fn hello(group: u8, token: Option<Vec<u8>>) -> Hello {
    Hello {
        request_id: 1,
        version: PROTOCOL_VERSION,
        group_id: GroupId::from_bytes([group; 32]),
        last_cursor: Cursor::ZERO,
        auth_signature: [0; 64],
        admission_token: token.map(Payload::from),
    }
}

#[test]
fn a_new_group_counts_once_and_addresses_have_their_own_buckets() {
    let a = Admission::new(&RelayConfig {
        ip_new_groups_per_hour: 2,
        ..RelayConfig::default()
    });
    let g = |n| GroupId::from_bytes([n; 32]);
    a.admit_new_group(origin(1), &g(1)).expect("first");
    a.admit_new_group(origin(1), &g(1))
        .expect("the same group again");
    a.admit_new_group(origin(1), &g(2)).expect("second");
    let refused = a.admit_new_group(origin(1), &g(3)).expect_err("third");
    assert_eq!(refused.reason, Refusal::NewGroupsPerIp);
    assert_eq!(refused.error.code, ErrorCode::TooManyGroups);
    a.admit_new_group(origin(2), &g(3))
        .expect("another address");
    a.forget_idle();
    a.admit_new_group(origin(1), &g(1))
        .expect("still remembered within the hour");
}

#[test]
fn a_lookup_refused_by_the_session_takes_nothing_from_the_address() {
    let a = Admission::new(&RelayConfig {
        session_invite_lookups_per_min: 1,
        ip_invite_lookups_per_min: 2,
        global_invite_lookups_per_min: 0,
        ..RelayConfig::default()
    });
    let session = a.session_invite_bucket();
    a.take_invite_lookup(origin(1), session.as_ref())
        .expect("first");
    for _ in 0..5 {
        let r = a.take_invite_lookup(origin(1), session.as_ref());
        assert_eq!(r.map_err(|e| e.reason), Err(Refusal::InviteLookupsSession));
    }
    // The address still has one lookup left, outside that session.
    a.take_invite_lookup(origin(1), None).expect("second");
    let r = a.take_invite_lookup(origin(1), None);
    assert_eq!(r.map_err(|e| e.reason), Err(Refusal::InviteLookupsIp));
}

#[test]
fn the_token_gate_maps_each_failure_to_its_reason_and_code() {
    let operator = OperatorKey::from_secret_bytes([3; 32]);
    let a = Admission::new(&RelayConfig {
        admission: AdmissionMode::Token,
        admission_key: operator.public_key().to_string(),
        ..RelayConfig::default()
    });
    let later = sync_types::unix_ms() / 1000 + 60;
    let issue = |key: &OperatorKey, expires_at_secs, scope| {
        let claims = TokenClaims {
            id: [1; 8],
            expires_at_secs,
            scope,
            max_bytes: std::num::NonZeroU64::new(500),
        };
        Some(key.issue(&claims).expect("issue").into_bytes())
    };
    let all = TokenScope::AllGroups;
    let other = OperatorKey::from_secret_bytes([4; 32]);
    let cases = [
        (None, Refusal::TokenMissing, ErrorCode::AdmissionRequired),
        (
            Some(vec![1, 2, 3]),
            Refusal::TokenInvalid,
            ErrorCode::AdmissionInvalid,
        ),
        (
            issue(&other, later, all.clone()),
            Refusal::TokenInvalid,
            ErrorCode::AdmissionInvalid,
        ),
        (
            issue(&operator, 1, all.clone()),
            Refusal::TokenExpired,
            ErrorCode::AdmissionInvalid,
        ),
        (
            issue(
                &operator,
                later,
                TokenScope::Groups(vec![GroupId::from_bytes([8; 32])]),
            ),
            Refusal::TokenOutOfScope,
            ErrorCode::AdmissionInvalid,
        ),
    ];
    for (token, reason, code) in cases {
        let refused = a.check_token(&hello(7, token)).expect_err("refused");
        assert_eq!((refused.reason, refused.error.code), (reason, code));
    }
    let quota = a
        .check_token(&hello(7, issue(&operator, later, all)))
        .expect("valid");
    assert_eq!(quota, Some(500));
    // An open relay ignores tokens.
    let open = Admission::new(&RelayConfig::default());
    assert_eq!(open.check_token(&hello(7, Some(vec![0]))), Ok(None));
}
