use super::*;
use crate::soak::Check;

fn limits() -> Thresholds {
    Thresholds {
        max_loss_pct: 0.0,
        max_p99_ms: 2000.0,
        max_rss_growth: 10.0,
        rss_warmup_s: 300,
        min_soak_window_s: 600,
        fd_slack: 2,
        max_refusal_ms: 10_000.0,
    }
}

/// A phase as it ended: its status from [`check_phase`] (and `extra_ok`, the phase's own
/// checks).
fn phase(name: &str, summary: Summary, extra_ok: bool) -> PhaseResult {
    let failures = check_phase(&summary, &limits());
    let status = if failures.is_empty() && extra_ok {
        PhaseStatus::Pass
    } else {
        PhaseStatus::Fail
    };
    PhaseResult {
        name: name.into(),
        status,
        summary: Some(summary),
        span_s: Some((0.0, 1.0)),
        notes: failures,
    }
}

fn without_summary(name: &str, status: PhaseStatus) -> PhaseResult {
    PhaseResult {
        name: name.into(),
        status,
        summary: None,
        span_s: None,
        notes: Vec::new(),
    }
}

/// Ten messages, all answered within 1..=10 ms.
fn clean() -> Summary {
    let rtts: Vec<f64> = (1..=10).map(f64::from).collect();
    Summary::new(10, 0, &rtts)
}

fn e2e(failed: u32, rejected: u64, plaintext: PlaintextScan) -> E2eCheck {
    E2eCheck {
        failed,
        rejected,
        plaintext,
    }
}

fn soak_verdict(rss: Check, fds: Check) -> soak::Verdict {
    soak::Verdict { rss, fds }
}

fn pass(detail: &str) -> Check {
    Check::Pass {
        detail: detail.into(),
    }
}

fn fail(detail: &str) -> Check {
    Check::Fail {
        detail: detail.into(),
    }
}

/// One clean `e2e` phase and its check, judged with [`limits`].
fn judge_e2e(check: &E2eCheck) -> Verdict {
    let phases = [phase("e2e", clean(), check.ok())];
    judge(
        &phases,
        Checks {
            e2e: Some(check),
            ..Checks::default()
        },
        &limits(),
    )
}

/// One clean `group` phase and its check, judged with [`limits`].
fn judge_group(g: &GroupCheck) -> Verdict {
    let phases = [phase("group", clean(), g.ok(&limits()))];
    judge(
        &phases,
        Checks {
            group: Some(g),
            ..Checks::default()
        },
        &limits(),
    )
}

/// One clean `endurance` phase and its soak verdict, judged with [`limits`].
fn judge_soak(soak: &soak::Verdict) -> Verdict {
    let leak_ok = !soak.rss.failed() && !soak.fds.failed();
    let phases = [phase("endurance", clean(), leak_ok)];
    judge(
        &phases,
        Checks {
            soak: Some(soak),
            ..Checks::default()
        },
        &limits(),
    )
}

fn failed_names(v: &Verdict) -> Vec<&str> {
    v.failed().iter().map(|t| t.name.as_str()).collect()
}

/// `(limit, observed)` of each threshold row after the loss and p99 rows: the phase's own.
fn phase_rows(v: &Verdict) -> Vec<(&str, &str)> {
    v.thresholds[2..]
        .iter()
        .map(|t| (t.limit.as_str(), t.observed.as_str()))
        .collect()
}

#[test]
fn a_phase_that_sent_nothing_fails() {
    let failures = check_phase(&Summary::new(0, 0, &[]), &limits());
    assert!(failures[0].contains("measured nothing"), "{failures:?}");
    assert!(check_phase(&Summary::new(2, 0, &[1.0, 2.0]), &limits()).is_empty());
    // ... and the campaign with it fails, even when another phase passed.
    let v = judge(
        &[
            phase("ping", clean(), true),
            phase("burst", Summary::new(0, 0, &[]), true),
        ],
        Checks::default(),
        &limits(),
    );
    assert_eq!((v.outcome, v.exit_code()), (Outcome::Fail, EXIT_THRESHOLD));
    assert_eq!(v.line(), "FAIL: a threshold was missed (exit 3)");
}

#[test]
fn a_phase_without_any_answer_fails() {
    let failures = check_phase(&Summary::new(5, 5, &[]), &limits());
    assert!(failures.iter().any(|f| f.contains("no answer at all")));
}

#[test]
fn clean_measured_phases_pass_with_every_threshold_met() {
    let v = judge(
        &[
            phase("ping", clean(), true),
            without_summary("failover", PhaseStatus::NotAvailable),
            without_summary("burst", PhaseStatus::Skipped),
        ],
        Checks {
            e2e: Some(&e2e(0, 0, PlaintextScan::Found(0))),
            soak: Some(&soak_verdict(pass("flat"), pass("back"))),
            ..Checks::default()
        },
        &limits(),
    );
    assert_eq!((v.outcome, v.exit_code()), (Outcome::Pass, 0));
    assert_eq!(v.line(), "PASS (exit 0)");
    assert_eq!(v.thresholds.len(), 5, "loss, p99, e2e, RSS, FDs");
    assert!(v.failed().is_empty(), "{:?}", v.failed());
    assert_eq!(v.thresholds[0].limit, "≤ 0 %");
    assert_eq!(v.thresholds[0].observed, "0.00 % (ping)");
    assert_eq!(v.thresholds[1].limit, "≤ 2000 ms");
    assert_eq!(v.thresholds[1].observed, "10.0 ms (ping)");
}

#[test]
fn loss_above_the_limit_fails_the_loss_threshold() {
    let lossy = Summary::new(10, 1, &[1.0; 9]);
    assert!(check_phase(&lossy, &limits())[0].contains("loss 10.00 % above the limit 0 %"));
    let v = judge(
        &[phase("ping", clean(), true), phase("burst", lossy, true)],
        Checks::default(),
        &limits(),
    );
    assert_eq!(v.exit_code(), EXIT_THRESHOLD);
    assert_eq!(failed_names(&v), ["loss, each phase (--max-loss-pct)"]);
    assert_eq!(
        v.thresholds[0].observed, "10.00 % (burst)",
        "the worst phase"
    );
    let lenient = Thresholds {
        max_loss_pct: 10.0,
        ..limits()
    };
    assert!(check_phase(&Summary::new(10, 1, &[1.0; 9]), &lenient).is_empty());
}

#[test]
fn p99_above_the_limit_fails_the_p99_threshold() {
    let strict = Thresholds {
        max_p99_ms: 5.0,
        ..limits()
    };
    let failures = check_phase(&clean(), &strict);
    assert_eq!(failures, ["p99 RTT 10.0 ms above the limit 5 ms"]);
    let ended = PhaseResult {
        status: PhaseStatus::Fail,
        notes: failures,
        ..phase("ping", clean(), true)
    };
    let v = judge(&[ended], Checks::default(), &strict);
    assert_eq!(v.exit_code(), EXIT_THRESHOLD);
    assert_eq!(failed_names(&v), ["p99 RTT, each phase (--max-p99-ms)"]);
}

#[test]
fn e2e_verification_failures_rejections_and_plaintext_fail_the_e2e_threshold() {
    for check in [
        e2e(1, 0, PlaintextScan::NotScanned),
        e2e(0, 1, PlaintextScan::NotScanned),
        e2e(0, 0, PlaintextScan::Found(1)),
        e2e(0, 0, PlaintextScan::Failed("permission denied".into())),
    ] {
        assert!(!check.ok(), "{check:?}");
        let v = judge_e2e(&check);
        assert_eq!(v.exit_code(), EXIT_THRESHOLD, "{check:?}");
        assert_eq!(v.failed().len(), 1, "{check:?}");
        assert!(v.failed()[0].name.starts_with("e2e:"), "{check:?}");
    }
    let remote = e2e(0, 0, PlaintextScan::NotScanned);
    let v = judge_e2e(&remote);
    assert_eq!(v.exit_code(), 0);
    assert_eq!(v.thresholds[2].observed, "0, 0, not scanned (remote relay)");
}

#[test]
fn rss_growth_and_fds_left_open_fail_their_thresholds() {
    let cases = [
        (
            soak_verdict(fail("growing"), pass("back")),
            "relay RSS growth after warm-up (--max-rss-growth)",
        ),
        (
            soak_verdict(pass("flat"), fail("leaked")),
            "relay open FDs back to baseline (--fd-slack)",
        ),
    ];
    for (soak, name) in cases {
        let v = judge_soak(&soak);
        assert_eq!(v.exit_code(), EXIT_THRESHOLD, "{name}");
        assert_eq!(failed_names(&v), [name]);
    }
    let v = judge_soak(&soak_verdict(pass("flat"), pass("back")));
    assert_eq!(v.thresholds[2].limit, "≤ 10 %/h over ≥ 600 s");
    assert_eq!(v.thresholds[2].observed, "PASS: flat");
    assert_eq!(v.thresholds[3].limit, "≤ baseline + 2");
}

#[test]
fn a_soak_not_judged_is_not_a_failure() {
    let not_judged = Check::NotJudged {
        detail: "window too short".into(),
    };
    let v = judge_soak(&soak_verdict(not_judged, pass("back")));
    assert_eq!(v.exit_code(), 0);
    assert_eq!(v.thresholds[2].observed, "NOT JUDGED: window too short");
}

#[test]
fn only_phases_that_are_not_available_measure_nothing() {
    let v = judge(
        &[
            without_summary("ping", PhaseStatus::Skipped),
            without_summary("failover", PhaseStatus::NotAvailable),
        ],
        Checks::default(),
        &limits(),
    );
    assert_eq!(
        (v.outcome, v.exit_code()),
        (Outcome::NotMeasured, EXIT_NOTHING_MEASURED)
    );
    assert_eq!(v.outcome.label(), "NOT MEASURED");
    assert_eq!(
        v.line(),
        "NOT MEASURED: no phase that ran measured anything (exit 4)"
    );
    assert!(v.failed().is_empty(), "no threshold was missed");
    assert_eq!(v.thresholds[0].observed, "–");
    // A phase that sent nothing but was not failed still measured nothing.
    let empty = PhaseResult {
        status: PhaseStatus::Pass,
        ..phase("ping", Summary::new(0, 0, &[]), true)
    };
    assert_eq!(
        judge(&[empty], Checks::default(), &limits()).outcome,
        Outcome::NotMeasured
    );
}

#[test]
fn leak_limits_come_from_the_thresholds() {
    let l = limits().leak_limits();
    assert_eq!(
        (
            l.warmup_s,
            l.min_window_s,
            l.max_rss_growth_pct_per_hour,
            l.fd_slack
        ),
        (300.0, 600.0, 10.0, 2)
    );
}

/// A group phase where everything held: both key changes done, 120 messages delivered, the
/// revoked device refused 40 ms after the call and reading nothing new.
fn group_clean() -> GroupCheck {
    GroupCheck {
        rotation: KeyChange::Done {
            epoch: 1,
            call_ms: 12.5,
        },
        revocation: KeyChange::Done {
            epoch: 2,
            call_ms: 9.0,
        },
        messages: 120,
        lost: 0,
        undecryptable: 0,
        integrity: 0,
        refusal: Some(Refusal {
            after_call_ms: 40.0,
            how: "session ended: DeviceRevoked(203)".into(),
        }),
        revoked_reads: 0,
        revoked_admitted: 0,
    }
}

#[test]
fn a_clean_group_phase_meets_every_group_threshold() {
    let g = group_clean();
    assert!(g.ok(&limits()));
    let v = judge_group(&g);
    assert_eq!((v.outcome, v.exit_code()), (Outcome::Pass, 0));
    assert_eq!(v.thresholds.len(), 7, "loss, p99 and five group rows");
    assert_eq!(
        phase_rows(&v),
        [
            (
                "both done",
                "rotation epoch 1 in 12.5 ms; revocation epoch 2 in 9.0 ms"
            ),
            ("0", "0 of 120"),
            ("0, 0", "0, 0"),
            ("≤ 10000 ms", "40.0 ms (session ended: DeviceRevoked(203))"),
            ("0, 0", "0, 0"),
        ]
    );
}

/// Spoils one figure of a clean group phase.
type Spoil = fn(&mut GroupCheck);

#[test]
fn each_group_failure_fails_its_own_row() {
    let cases: [(Spoil, &str); 8] = [
        (
            |g| g.rotation = KeyChange::Failed("not an admin".into()),
            "group: key rotation, then revocation, by the admin",
        ),
        (
            |g| g.revocation = KeyChange::Failed("setup failed".into()),
            "group: key rotation, then revocation, by the admin",
        ),
        (
            |g| g.lost = 1,
            "group: messages lost across the rotation and revocation (remaining members)",
        ),
        (
            |g| g.undecryptable = 1,
            "group: blobs undecryptable, other integrity problems (remaining members)",
        ),
        (
            |g| g.integrity = 2,
            "group: blobs undecryptable, other integrity problems (remaining members)",
        ),
        (|g| g.refusal = None, GROUP_REFUSAL),
        (
            |g| g.revoked_reads = 1,
            "group: revoked device's reads of blobs sealed after its revocation, sessions admitted after it",
        ),
        (
            |g| g.revoked_admitted = 1,
            "group: revoked device's reads of blobs sealed after its revocation, sessions admitted after it",
        ),
    ];
    for (spoil, name) in cases {
        let mut g = group_clean();
        spoil(&mut g);
        assert!(!g.ok(&limits()), "{name}");
        let v = judge_group(&g);
        assert_eq!(v.exit_code(), EXIT_THRESHOLD, "{name}");
        assert_eq!(failed_names(&v), [name]);
    }
    let mut never = group_clean();
    never.refusal = None;
    let rows = group_rows(&never, &limits());
    assert_eq!(rows[3].observed, "never refused");
    let mut failed = group_clean();
    failed.rotation = KeyChange::Failed("not an admin".into());
    assert_eq!(
        group_rows(&failed, &limits())[0].observed,
        "rotation FAILED: not an admin; revocation epoch 2 in 9.0 ms"
    );
}

#[test]
fn a_refusal_slower_than_the_limit_fails_and_the_limit_is_a_flag() {
    let mut slow = group_clean();
    slow.refusal = Some(Refusal {
        after_call_ms: 10_000.5,
        how: "reconnect refused: DeviceRevoked(203)".into(),
    });
    assert!(!slow.ok(&limits()));
    assert_eq!(failed_names(&judge_group(&slow)), [GROUP_REFUSAL]);
    let lenient = Thresholds {
        max_refusal_ms: 20_000.0,
        ..limits()
    };
    assert!(slow.ok(&lenient));
    assert_eq!(group_rows(&slow, &lenient)[3].limit, "≤ 20000 ms");
}

/// A failover where everything held: 300 messages through the kill, each read once, pushes
/// acknowledged again 6.2 s after the last one before the kill.
fn failover_clean() -> FailoverCheck {
    FailoverCheck {
        messages: 300,
        lost: 0,
        duplicated: 0,
        interruption: Some(Interruption {
            acks_ms: 6_200.0,
            detect_ms: Some(6_010.0),
            reconnect_ms: Some(14.0),
        }),
    }
}

/// A `failover` phase with `check`, its latencies far above the p99 limit (messages queued
/// through the outage), judged with [`limits`].
fn judge_failover(check: &FailoverCheck) -> Verdict {
    let outage = Summary::new(
        10,
        0,
        &[5.0, 5.0, 5.0, 6_500.0, 6_400.0, 5.0, 5.0, 5.0, 5.0, 5.0],
    );
    let lenient = Thresholds {
        max_p99_ms: f64::INFINITY,
        ..limits()
    };
    let failures = check_phase(&outage, &lenient);
    let status = if failures.is_empty() && check.ok() {
        PhaseStatus::Pass
    } else {
        PhaseStatus::Fail
    };
    let phases = [
        phase("ping", clean(), true),
        PhaseResult {
            name: FAILOVER_PHASE.into(),
            status,
            summary: Some(outage),
            span_s: Some((1.0, 2.0)),
            notes: failures,
        },
    ];
    judge(
        &phases,
        Checks {
            failover: Some(check),
            ..Checks::default()
        },
        &limits(),
    )
}

#[test]
fn a_clean_failover_passes_and_its_outage_is_not_held_against_the_p99_limit() {
    let f = failover_clean();
    assert!(f.ok());
    let v = judge_failover(&f);
    assert_eq!(
        (v.outcome, v.exit_code()),
        (Outcome::Pass, 0),
        "{:?}",
        v.failed()
    );
    assert_eq!(v.thresholds.len(), 4, "loss, p99 and two failover rows");
    assert_eq!(
        v.thresholds[1].observed, "10.0 ms (ping)",
        "the failover's outage is not the worst p99"
    );
    assert_eq!(
        phase_rows(&v),
        [
            ("0, 0", "0 of 300, 0"),
            (
                "resumed",
                "interruption 6200.0 ms (last ack before the kill → first ack after); loss noticed 6010.0 ms after the kill, next relay connected 14.0 ms later"
            ),
        ]
    );
}

/// Spoils one figure of a clean failover.
type SpoilFailover = fn(&mut FailoverCheck);

#[test]
fn a_message_lost_or_duplicated_in_the_failover_fails_the_phase_and_the_campaign() {
    let lost_dup: [(SpoilFailover, &str); 3] = [
        (|f| f.lost = 1, "1 of 300, 0"),
        (|f| f.duplicated = 2, "0 of 300, 2"),
        (|f| f.messages = 0, "0 of 0, 0"),
    ];
    for (spoil, observed) in lost_dup {
        let mut f = failover_clean();
        spoil(&mut f);
        assert!(!f.ok(), "{observed}");
        let v = judge_failover(&f);
        assert_eq!(v.exit_code(), EXIT_THRESHOLD, "{observed}");
        assert_eq!(
            failed_names(&v),
            ["failover: messages lost, duplicated across the relay's kill"]
        );
        assert_eq!(v.failed()[0].observed, observed);
    }
    let mut never = failover_clean();
    never.interruption = None;
    let v = judge_failover(&never);
    assert_eq!(v.exit_code(), EXIT_THRESHOLD);
    assert_eq!(failed_names(&v), [FAILOVER_RESUMED]);
    assert_eq!(
        v.failed()[0].observed,
        "no push acknowledged after the kill"
    );
}
