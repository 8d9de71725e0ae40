//! Transitions, timers, backoff and refused events of the connection state machine.

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use sync_types::Cursor;

use super::*;

const SEC: Duration = Duration::from_secs(1);
const AFTER_LOSS: Duration = ConnectionConfig::DEFAULT.after_loss;

struct Harness {
    conn: Connection,
    rng: ChaCha20Rng,
    now: Instant,
}

impl Harness {
    fn new(seed: u64) -> Self {
        Self {
            conn: Connection::default(),
            rng: ChaCha20Rng::seed_from_u64(seed),
            now: Instant::now(),
        }
    }

    fn handle(&mut self, event: ConnectionEvent) -> Vec<Action> {
        self.conn
            .handle(event, self.now, &mut self.rng)
            .expect("event should be valid here")
    }

    fn try_handle(&mut self, event: ConnectionEvent) -> Result<Vec<Action>, UnexpectedEvent> {
        self.conn.handle(event, self.now, &mut self.rng)
    }

    fn kind(&self) -> StateKind {
        self.conn.state().kind()
    }

    fn go_connecting(&mut self) {
        self.handle(ConnectionEvent::ConnectRequested);
        assert_eq!(self.kind(), StateKind::Connecting);
    }

    fn go_handshaking(&mut self) {
        self.go_connecting();
        self.handle(ConnectionEvent::TransportConnected);
        assert_eq!(self.kind(), StateKind::Handshaking);
    }

    fn go_connected(&mut self) {
        self.go_handshaking();
        self.handle(completed(5));
        assert_eq!(self.kind(), StateKind::Connected);
    }

    /// Fails the current attempt from `Connecting` and returns the scheduled delay.
    fn fail_dial(&mut self) -> Duration {
        let actions = self.handle(failed());
        scheduled_delay(&actions)
    }

    /// Handles `event`, which must close the transport and schedule a reconnect; returns the
    /// scheduled delay.
    fn close_and_reconnect(&mut self, event: ConnectionEvent) -> Duration {
        let actions = self.handle(event);
        assert_eq!(actions.first(), Some(&Action::Close));
        assert_eq!(self.kind(), StateKind::Reconnecting);
        scheduled_delay(&actions)
    }

    /// Advances time to the retry instant and fires the timer.
    fn fire_retry(&mut self) -> Vec<Action> {
        self.now = self.conn.poll_timeout().expect("a retry is scheduled");
        self.handle(ConnectionEvent::TimerFired)
    }
}

fn failed() -> ConnectionEvent {
    ConnectionEvent::TransportFailed {
        reason: "unreachable".into(),
    }
}

fn completed(max: u64) -> ConnectionEvent {
    ConnectionEvent::HandshakeCompleted {
        max_cursor: Cursor::new(max),
    }
}

fn rejected(retryable: bool) -> ConnectionEvent {
    ConnectionEvent::HandshakeRejected {
        retryable,
        retry_after: None,
        reason: "unauthorized".into(),
    }
}

fn scheduled_delay(actions: &[Action]) -> Duration {
    actions
        .iter()
        .find_map(|a| match a {
            Action::ScheduleReconnect { delay, .. } => Some(*delay),
            _ => None,
        })
        .expect("a ScheduleReconnect action")
}

fn has(actions: &[Action], want: &Action) -> bool {
    actions.iter().any(|a| a == want)
}

#[test]
fn starts_disconnected_without_timer() {
    let h = Harness::new(0);
    assert_eq!(
        h.conn.state(),
        &ConnectionState::Disconnected { last_error: None }
    );
    assert_eq!(h.conn.poll_timeout(), None);
    assert!(!h.conn.is_connected());
}

#[test]
fn connect_request_dials_with_a_deadline() {
    let mut h = Harness::new(0);
    let actions = h.handle(ConnectionEvent::ConnectRequested);
    assert_eq!(
        actions,
        vec![status(ConnectionStatus::Connecting), Action::Dial]
    );
    assert_eq!(h.conn.poll_timeout(), Some(h.now + 10 * SEC));
}

#[test]
fn transport_connected_sends_hello() {
    let mut h = Harness::new(0);
    h.go_connecting();
    let actions = h.handle(ConnectionEvent::TransportConnected);
    assert_eq!(actions, vec![Action::SendHello]);
    assert_eq!(h.kind(), StateKind::Handshaking);
    assert_eq!(h.conn.poll_timeout(), Some(h.now + 10 * SEC));
}

#[test]
fn handshake_completed_connects_resumes_and_resends() {
    let mut h = Harness::new(0);
    h.go_handshaking();
    let actions = h.handle(completed(42));
    assert_eq!(
        actions,
        vec![
            status(ConnectionStatus::Connected),
            Action::ResumeFrom {
                relay_max_cursor: Cursor::new(42)
            },
            Action::ResendPending,
        ]
    );
    assert_eq!(
        h.conn.state(),
        &ConnectionState::Connected {
            since: h.now,
            relay_max_cursor: Cursor::new(42)
        }
    );
    assert!(h.conn.is_connected());
    assert_eq!(h.conn.poll_timeout(), None);
}

#[test]
fn dial_failure_schedules_reconnect_with_jitter() {
    let mut h = Harness::new(0);
    h.go_connecting();
    let actions = h.handle(failed());
    let delay = scheduled_delay(&actions);
    assert!(delay >= SEC && delay <= 6 * SEC, "{delay:?}");
    assert!(matches!(
        h.conn.state(),
        ConnectionState::Reconnecting { attempt: 1, .. }
    ));
    assert_eq!(h.conn.poll_timeout(), Some(h.now + delay));
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::EmitStatus {
            status: ConnectionStatus::Reconnecting { attempt: 1, .. }
        }
    )));
}

#[test]
fn dial_and_handshake_timeouts_close_and_schedule_reconnect() {
    for setup in [
        Harness::go_connecting as fn(&mut Harness),
        Harness::go_handshaking,
    ] {
        let mut h = Harness::new(0);
        setup(&mut h);
        h.now += 10 * SEC;
        h.close_and_reconnect(ConnectionEvent::TimerFired);
    }
}

#[test]
fn early_timer_is_ignored() {
    let mut h = Harness::new(0);
    h.go_connecting();
    h.now += 9 * SEC;
    assert_eq!(h.handle(ConnectionEvent::TimerFired), vec![]);
    assert_eq!(h.kind(), StateKind::Connecting);
    h.fail_dial();
    h.now += Duration::from_millis(500);
    assert_eq!(h.handle(ConnectionEvent::TimerFired), vec![]);
    assert_eq!(h.kind(), StateKind::Reconnecting);
}

#[test]
fn stale_timer_in_untimed_states_is_ignored() {
    let mut h = Harness::new(0);
    assert_eq!(h.handle(ConnectionEvent::TimerFired), vec![]);
    h.go_connected();
    assert_eq!(h.handle(ConnectionEvent::TimerFired), vec![]);
    assert_eq!(h.kind(), StateKind::Connected);
}

#[test]
fn reconnect_timer_dials_again() {
    let mut h = Harness::new(0);
    h.go_connecting();
    h.fail_dial();
    let actions = h.fire_retry();
    assert_eq!(
        actions,
        vec![status(ConnectionStatus::Connecting), Action::Dial]
    );
    assert_eq!(h.kind(), StateKind::Connecting);
}

#[test]
fn transport_failure_during_handshake_reconnects() {
    let mut h = Harness::new(0);
    h.go_handshaking();
    let actions = h.handle(failed());
    scheduled_delay(&actions);
    assert!(!has(&actions, &Action::Close), "transport is already gone");
    assert_eq!(h.kind(), StateKind::Reconnecting);
}

#[test]
fn disconnect_while_connected_reconnects_at_once_then_from_base_delay() {
    let mut h = Harness::new(0);
    h.go_connected();
    let actions = h.handle(ConnectionEvent::Disconnected {
        reason: "stream closed".into(),
    });
    let delay = scheduled_delay(&actions);
    assert!(delay <= AFTER_LOSS, "{delay:?}");
    assert!(matches!(
        h.conn.state(),
        ConnectionState::Reconnecting { attempt: 1, reason, .. } if reason == "stream closed"
    ));
    // The transport failing while connected is the same thing.
    let mut h = Harness::new(1);
    h.go_connected();
    scheduled_delay(&h.handle(failed()));
    assert_eq!(h.kind(), StateKind::Reconnecting);
}

#[test]
fn retryable_rejection_closes_and_retries() {
    let mut h = Harness::new(0);
    h.go_handshaking();
    h.close_and_reconnect(rejected(true));
}

#[test]
fn retry_hint_is_honoured() {
    let mut h = Harness::new(0);
    h.go_handshaking();
    let actions = h.handle(ConnectionEvent::HandshakeRejected {
        retryable: true,
        retry_after: Some(60 * SEC),
        reason: "rate limited".into(),
    });
    assert_eq!(scheduled_delay(&actions), 60 * SEC);
}

#[test]
fn fatal_rejection_stops_with_an_error() {
    let mut h = Harness::new(0);
    h.go_handshaking();
    let actions = h.handle(rejected(false));
    assert_eq!(
        actions,
        vec![
            Action::Close,
            status(ConnectionStatus::Failed {
                reason: "unauthorized".into()
            })
        ]
    );
    assert_eq!(
        h.conn.state(),
        &ConnectionState::Disconnected {
            last_error: Some("unauthorized".into())
        }
    );
    assert_eq!(h.conn.poll_timeout(), None, "no retry is scheduled");
    // Only an explicit request tries again.
    h.go_connecting();
}

#[test]
fn close_from_every_state() {
    for setup in [
        Harness::go_connecting as fn(&mut Harness),
        Harness::go_handshaking,
        Harness::go_connected,
    ] {
        let mut h = Harness::new(0);
        setup(&mut h);
        let actions = h.handle(ConnectionEvent::CloseRequested);
        assert_eq!(
            actions,
            vec![Action::Close, status(ConnectionStatus::Disconnected)]
        );
        assert_eq!(
            h.conn.state(),
            &ConnectionState::Disconnected { last_error: None }
        );
        assert_eq!(h.conn.poll_timeout(), None);
    }
    // While waiting to reconnect there is no transport to close.
    let mut h = Harness::new(0);
    h.go_connecting();
    h.fail_dial();
    let actions = h.handle(ConnectionEvent::CloseRequested);
    assert_eq!(actions, vec![status(ConnectionStatus::Disconnected)]);
    assert_eq!(h.conn.poll_timeout(), None);
    // Closing twice is a no-op.
    assert_eq!(h.handle(ConnectionEvent::CloseRequested), vec![]);
}

#[test]
fn connect_request_while_reconnecting_dials_now() {
    let mut h = Harness::new(0);
    h.go_connecting();
    h.fail_dial();
    let actions = h.handle(ConnectionEvent::ConnectRequested);
    assert!(has(&actions, &Action::Dial));
    assert_eq!(h.kind(), StateKind::Connecting);
    // The backoff is kept: the next failure waits longer.
    assert!(h.fail_dial() >= 2 * SEC);
}

#[test]
fn redundant_connect_requests_are_no_ops() {
    let mut h = Harness::new(0);
    h.go_connecting();
    assert_eq!(h.handle(ConnectionEvent::ConnectRequested), vec![]);
    h.handle(ConnectionEvent::TransportConnected);
    assert_eq!(h.handle(ConnectionEvent::ConnectRequested), vec![]);
    h.handle(completed(0));
    assert_eq!(h.handle(ConnectionEvent::ConnectRequested), vec![]);
    assert_eq!(h.kind(), StateKind::Connected);
}

#[test]
fn impossible_events_are_typed_errors_and_change_nothing() {
    let mut h = Harness::new(0);
    let cases = [
        ConnectionEvent::TransportConnected,
        failed(),
        completed(1),
        rejected(true),
        ConnectionEvent::Disconnected { reason: "x".into() },
    ];
    for event in cases.clone() {
        let kind = event.kind();
        assert_eq!(
            h.try_handle(event),
            Err(UnexpectedEvent {
                state: StateKind::Disconnected,
                event: kind
            })
        );
    }
    h.go_connecting();
    assert!(h.try_handle(completed(1)).is_err());
    assert!(h.try_handle(rejected(false)).is_err());
    h.handle(ConnectionEvent::TransportConnected);
    assert!(h.try_handle(ConnectionEvent::TransportConnected).is_err());
    h.handle(completed(1));
    let before = h.conn.state().clone();
    assert!(h.try_handle(ConnectionEvent::TransportConnected).is_err());
    assert!(h.try_handle(completed(2)).is_err());
    assert!(h.try_handle(rejected(true)).is_err());
    assert_eq!(h.conn.state(), &before);
    h.handle(failed());
    for event in cases {
        assert!(h.try_handle(event).is_err());
    }
    assert_eq!(h.kind(), StateKind::Reconnecting);
}

#[test]
fn backoff_grows_across_failed_attempts() {
    let mut h = Harness::new(3);
    h.go_connecting();
    let mut bases = Vec::new();
    for _ in 0..7 {
        let d = h.fail_dial();
        bases.push(d);
        h.fire_retry();
    }
    // Each delay is base + 0..=5 s jitter, base = 1, 2, 4, 8, 16, 30, 30.
    for (d, base) in bases.iter().zip([1u32, 2, 4, 8, 16, 30, 30]) {
        assert!(
            *d >= base * SEC && *d <= (base + 5) * SEC,
            "{d:?} vs {base}"
        );
    }
    assert!(matches!(h.conn.state(), ConnectionState::Connecting { .. }));
    assert_eq!(h.conn.backoff().failures(), 7);
}

#[test]
fn hundred_clients_spread_their_first_retry() {
    let delays: Vec<Duration> = (0..100)
        .map(|i| {
            let mut h = Harness::new(i);
            h.go_connected();
            scheduled_delay(&h.handle(ConnectionEvent::Disconnected {
                reason: "relay restarted".into(),
            }))
        })
        .collect();
    let min = delays.iter().min().copied().unwrap_or_default();
    let max = delays.iter().max().copied().unwrap_or_default();
    assert!(max - min >= AFTER_LOSS / 2, "spread {:?}", max - min);
    assert!(max <= AFTER_LOSS, "{max:?}");
}

#[test]
fn a_failed_attempt_after_a_loss_backs_off_from_the_base_delay() {
    let mut h = Harness::new(8);
    h.go_connected();
    h.handle(ConnectionEvent::Disconnected {
        reason: "relay gone".into(),
    });
    h.fire_retry();
    let d = h.fail_dial();
    assert!(d >= SEC && d <= 6 * SEC, "{d:?}");
}

#[test]
fn delay_never_exceeds_35_seconds_after_many_failures() {
    let mut h = Harness::new(11);
    h.go_connecting();
    for _ in 0..500 {
        let d = h.fail_dial();
        assert!(d <= 35 * SEC, "{d:?}");
        h.fire_retry();
    }
}

#[test]
fn successful_handshake_resets_backoff_to_base() {
    let mut h = Harness::new(5);
    h.go_connecting();
    for _ in 0..20 {
        h.fail_dial();
        h.fire_retry();
    }
    h.handle(ConnectionEvent::TransportConnected);
    h.handle(completed(9));
    assert_eq!(h.conn.backoff().failures(), 0);
    let d = scheduled_delay(&h.handle(ConnectionEvent::Disconnected {
        reason: "bye".into(),
    }));
    assert!(d <= AFTER_LOSS, "{d:?}");
    h.fire_retry();
    let d = h.fail_dial();
    assert!(d >= SEC && d <= 6 * SEC, "{d:?}");
}

#[test]
fn huge_timeouts_do_not_panic() {
    let mut conn = Connection::new(ConnectionConfig {
        backoff: BackoffConfig {
            base: Duration::MAX,
            cap: Duration::MAX,
            max_jitter: Duration::MAX,
        },
        connect_timeout: Duration::MAX,
        after_loss: Duration::MAX,
        handshake_timeout: Duration::MAX,
    });
    let mut rng = ChaCha20Rng::seed_from_u64(0);
    let now = Instant::now();
    conn.handle(ConnectionEvent::ConnectRequested, now, &mut rng)
        .expect("valid");
    conn.handle(failed(), now, &mut rng).expect("valid");
    assert!(conn.poll_timeout().is_some_and(|t| t > now));
}
