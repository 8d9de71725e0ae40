use super::*;
#[test]
fn messages_round_trip() {
    let m = message(12, 345, 256);
    assert_eq!(m.len(), 256);
    let (s, q, t) = parse_message(&m).unwrap();
    assert_eq!((s, q), (12, 345));
    assert!(t > 0);
    assert!(parse_message(b"garbage").is_none());
}

fn load_report(accepted: usize, pushed: u64, expected: u64, delivered: u64) -> LoadReport {
    LoadReport {
        clients: accepted,
        group_size: 2,
        groups: 1,
        accepted,
        refused: 0,
        refused_too_many_sessions: None,
        rate: 10.0,
        duration_s: 1.0,
        pushed,
        achieved_rate: 10.0,
        pushers_flushed: accepted,
        expected_deliveries: expected,
        delivered,
        lost: expected.saturating_sub(delivered),
        duplicates: 0,
        latency: Latency::default(),
        receivers: Vec::new(),
        sessions_before: None,
        sessions_after: None,
        elapsed_s: 1.0,
    }
}

#[test]
fn a_load_that_measured_nothing_is_not_clean() {
    assert!(load_report(2, 10, 10, 10).clean());
    assert!(!load_report(2, 10, 10, 9).clean(), "a loss");
    for (r, why) in [
        (load_report(0, 0, 0, 0), "no device was accepted"),
        (load_report(2, 0, 0, 0), "nothing was pushed"),
        (load_report(2, 10, 0, 0), "no delivery was expected"),
    ] {
        assert!(!r.clean());
        assert!(r.problems()[0].contains(why), "{:?}", r.problems());
    }
}

#[test]
fn churn_needs_connections_acks_no_ghosts_and_fds_back() {
    let fds = |end| FdReport {
        pid: 1,
        baseline: 20,
        peak: 30,
        end,
        slack: 2,
        settle_ms: None,
    };
    let report = |connected, acked, ghosts, relay_fds| ChurnReport {
        connections: 10,
        lifetime_ms: 100,
        overlap: 2,
        connected,
        refused: 10 - connected,
        pushes_acked: acked,
        push_failures: connected - acked,
        sessions_baseline: 0,
        sessions_peak: 2,
        sessions_final: ghosts,
        ghost_sessions: ghosts,
        settle_ms: None,
        relay_fds,
        elapsed_s: 1.0,
    };
    assert!(report(10, 10, 0, None).clean());
    assert!(report(10, 10, 0, Some(fds(22))).clean());
    assert!(!report(10, 10, 0, Some(fds(23))).clean(), "FDs leaked");
    assert!(!report(0, 0, 0, None).clean(), "nothing connected");
    assert!(!report(10, 9, 0, None).clean(), "a push timed out");
    assert!(!report(10, 10, 1, None).clean(), "a ghost session");
    let huge = FdReport {
        slack: u64::MAX,
        ..fds(u64::MAX)
    };
    assert!(huge.ok(), "no overflow");
}

#[test]
fn dial_lines_parse() {
    let id = iroh::SecretKey::from_bytes(&[7; 32]).public();
    let t = LoadTarget::parse_dial(&format!("{id}@127.0.0.1:7440"), None).unwrap();
    assert_eq!(t.relay.id.as_bytes(), id.as_bytes());
    assert_eq!(
        t.relay.socket_addrs(),
        vec!["127.0.0.1:7440".parse().unwrap()]
    );
    assert!(LoadTarget::parse_dial("nope", None).is_err());
    assert!(LoadTarget::parse_dial(&format!("{id}@relay.example:1"), None).is_err());
    assert!(LoadTarget::parse_dial("zz@127.0.0.1:1", None).is_err());
}
