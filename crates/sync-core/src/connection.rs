//! The client's connection state machine: dial, handshake, stay connected, reconnect.
//!
//! The state diagram is on [`Connection`].
//!
//! Each state carries exactly the data that exists in it (a dial deadline only while dialing, a
//! retry instant only while waiting to reconnect, the relay's max cursor only once connected),
//! so impossible combinations cannot be represented. [`Connection::handle`] takes one event with
//! the current `now` and an RNG and returns the [`Action`]s the shell must perform, in order.

use std::time::{Duration, Instant};

use rand_core::CryptoRng;
use sync_types::Cursor;

use crate::backoff::{Backoff, BackoffConfig};

/// Tunables of a [`Connection`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionConfig {
    /// Reconnect backoff.
    pub backoff: BackoffConfig,
    /// How long a dial may take before it counts as failed.
    pub connect_timeout: Duration,
    /// How long the relay may take to answer `Hello` before the attempt counts as failed.
    pub handshake_timeout: Duration,
}

impl ConnectionConfig {
    /// Default backoff, 10 s dial timeout, 10 s handshake timeout.
    pub const DEFAULT: ConnectionConfig = ConnectionConfig {
        backoff: BackoffConfig::DEFAULT,
        connect_timeout: Duration::from_secs(10),
        handshake_timeout: Duration::from_secs(10),
    };
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Where the connection is. Read it with [`Connection::state`]; only events change it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    /// Not connected and not trying to be (initial state, after a close, after a fatal error).
    Disconnected {
        /// Why the last connection ended for good, if it was not a local close.
        last_error: Option<String>,
    },
    /// A transport dial is in progress.
    Connecting {
        /// When the dial counts as failed.
        deadline: Instant,
    },
    /// The transport is up and `Hello` was sent; waiting for `Welcome`.
    Handshaking {
        /// When the handshake counts as failed.
        deadline: Instant,
    },
    /// The session is established.
    Connected {
        /// When the handshake completed.
        since: Instant,
        /// The relay's highest cursor for the group, as announced in `Welcome`.
        relay_max_cursor: Cursor,
    },
    /// Waiting before the next dial.
    Reconnecting {
        /// Consecutive failed attempts so far (at least 1).
        attempt: u32,
        /// When the next dial is due.
        retry_at: Instant,
        /// Why the last attempt or session ended.
        reason: String,
    },
}

/// An input to the state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionEvent {
    /// The app wants to be connected (also: "retry now" while waiting to reconnect).
    ConnectRequested,
    /// The dial succeeded; the stream to the relay is open.
    TransportConnected,
    /// The dial failed or the transport broke before the session was established.
    TransportFailed {
        /// Human-readable cause (no secrets).
        reason: String,
    },
    /// The relay answered `Hello` with `Welcome`.
    HandshakeCompleted {
        /// The relay's highest cursor for the group.
        max_cursor: Cursor,
    },
    /// The relay answered `Hello` with an `Error`.
    HandshakeRejected {
        /// `false` for errors that retrying cannot fix (unauthorized, unsupported version):
        /// the machine stops instead of retrying forever.
        retryable: bool,
        /// The relay's retry hint, if it sent one (rate limits): the next dial waits at least
        /// this long.
        retry_after: Option<Duration>,
        /// Human-readable cause (no secrets).
        reason: String,
    },
    /// An established session ended (stream closed, idle timeout, relay `Bye`).
    Disconnected {
        /// Human-readable cause (no secrets).
        reason: String,
    },
    /// The instant returned by [`Connection::poll_timeout`] has passed (early or stale calls are
    /// ignored).
    TimerFired,
    /// The app wants to be disconnected.
    CloseRequested,
}

impl ConnectionEvent {
    fn kind(&self) -> EventKind {
        match self {
            Self::ConnectRequested => EventKind::ConnectRequested,
            Self::TransportConnected => EventKind::TransportConnected,
            Self::TransportFailed { .. } => EventKind::TransportFailed,
            Self::HandshakeCompleted { .. } => EventKind::HandshakeCompleted,
            Self::HandshakeRejected { .. } => EventKind::HandshakeRejected,
            Self::Disconnected { .. } => EventKind::Disconnected,
            Self::TimerFired => EventKind::TimerFired,
            Self::CloseRequested => EventKind::CloseRequested,
        }
    }
}

/// The kind of a [`ConnectionEvent`], without its data (for error reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventKind {
    /// [`ConnectionEvent::ConnectRequested`].
    ConnectRequested,
    /// [`ConnectionEvent::TransportConnected`].
    TransportConnected,
    /// [`ConnectionEvent::TransportFailed`].
    TransportFailed,
    /// [`ConnectionEvent::HandshakeCompleted`].
    HandshakeCompleted,
    /// [`ConnectionEvent::HandshakeRejected`].
    HandshakeRejected,
    /// [`ConnectionEvent::Disconnected`].
    Disconnected,
    /// [`ConnectionEvent::TimerFired`].
    TimerFired,
    /// [`ConnectionEvent::CloseRequested`].
    CloseRequested,
}

/// The kind of a [`ConnectionState`], without its data (for error reports and statuses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StateKind {
    /// [`ConnectionState::Disconnected`].
    Disconnected,
    /// [`ConnectionState::Connecting`].
    Connecting,
    /// [`ConnectionState::Handshaking`].
    Handshaking,
    /// [`ConnectionState::Connected`].
    Connected,
    /// [`ConnectionState::Reconnecting`].
    Reconnecting,
}

impl ConnectionState {
    /// The state's kind.
    pub fn kind(&self) -> StateKind {
        match self {
            Self::Disconnected { .. } => StateKind::Disconnected,
            Self::Connecting { .. } => StateKind::Connecting,
            Self::Handshaking { .. } => StateKind::Handshaking,
            Self::Connected { .. } => StateKind::Connected,
            Self::Reconnecting { .. } => StateKind::Reconnecting,
        }
    }
}

/// An event that cannot happen in the current state (a shell bug or a late report from an
/// abandoned attempt). The state is unchanged; the shell may log and drop it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("connection event {event:?} is not valid in state {state:?}")]
pub struct UnexpectedEvent {
    /// The state the machine was (and still is) in.
    pub state: StateKind,
    /// The event that was refused.
    pub event: EventKind,
}

/// What the connection looks like to the app; published with [`Action::EmitStatus`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionStatus {
    /// Not connected and not trying (closed by the app).
    Disconnected,
    /// Dialing or handshaking.
    Connecting,
    /// The session is established.
    Connected,
    /// Waiting to retry.
    Reconnecting {
        /// Consecutive failed attempts so far.
        attempt: u32,
        /// How long until the next dial.
        retry_in: Duration,
        /// Why the last attempt or session ended.
        reason: String,
    },
    /// Stopped for good after an error retrying cannot fix; needs the app (or user) to act.
    Failed {
        /// Why (no secrets).
        reason: String,
    },
}

/// Work the shell must do, in the order returned.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Dial the relay (report [`ConnectionEvent::TransportConnected`] or
    /// [`ConnectionEvent::TransportFailed`]).
    Dial,
    /// Send `Hello` (with the resume cursor from the shell's `CursorTracker`), then report
    /// [`ConnectionEvent::HandshakeCompleted`] or [`ConnectionEvent::HandshakeRejected`].
    SendHello,
    /// Deliver [`ConnectionEvent::TimerFired`] at `at` (same instant as
    /// [`Connection::poll_timeout`]).
    ScheduleReconnect {
        /// When to dial again.
        at: Instant,
        /// `at - now`, for logs and status.
        delay: Duration,
    },
    /// Publish a new status to the app.
    EmitStatus {
        /// The new status.
        status: ConnectionStatus,
    },
    /// Pull everything after `cursor` (the shell passes its `CursorTracker::resume_cursor`;
    /// this action carries the relay's max so the shell can skip an empty pull).
    ResumeFrom {
        /// The relay's highest cursor for the group, from `Welcome`.
        relay_max_cursor: Cursor,
    },
    /// Re-send every unacknowledged push (same blob ids) — see `Outbox::requeue_all_in_flight`.
    ResendPending,
    /// Abandon the dial or close the transport (send `Bye` if the stream is up).
    Close,
}

/// The connection state machine: dial, handshake, stay connected, reconnect.
///
/// ```text
///                ConnectRequested               TransportConnected
///  Disconnected ─────────────────▶ Connecting ────────────────────▶ Handshaking
///       ▲                            │  ▲                               │  │
///       │ CloseRequested (any)       │  │ TimerFired                    │  │ HandshakeCompleted
///       │ fatal HandshakeRejected    │  │ (retry due)                   │  ▼
///       │                 failure /  ▼  │              failure /     Connected
///       └──────────────── timeout ─▶ Reconnecting ◀─── timeout ──────────┘
/// ```
///
/// Each state carries exactly the data that exists in it; [`Connection::handle`] takes one
/// event with `now` and an RNG and returns the [`Action`]s to perform, in order;
/// [`Connection::poll_timeout`] says when to deliver [`ConnectionEvent::TimerFired`].
#[derive(Debug, Clone)]
pub struct Connection {
    config: ConnectionConfig,
    state: ConnectionState,
    backoff: Backoff,
}

/// Longest timeout honoured; larger configured values are clamped so deadlines stay
/// representable.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// `now + d` without overflow panics: clamps `d`, and falls back to `now` on the (theoretical)
/// overflow of `Instant` itself.
fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d.min(MAX_TIMEOUT)).unwrap_or(now)
}

impl Connection {
    /// A new machine in [`ConnectionState::Disconnected`].
    pub fn new(config: ConnectionConfig) -> Self {
        Self {
            config,
            state: ConnectionState::Disconnected { last_error: None },
            backoff: Backoff::new(config.backoff),
        }
    }

    /// The current state.
    pub fn state(&self) -> &ConnectionState {
        &self.state
    }

    /// Whether a session is established.
    pub fn is_connected(&self) -> bool {
        matches!(self.state, ConnectionState::Connected { .. })
    }

    /// The reconnect backoff (its failure count is the current attempt number).
    pub fn backoff(&self) -> &Backoff {
        &self.backoff
    }

    /// When the shell must deliver [`ConnectionEvent::TimerFired`] next, if at all.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            ConnectionState::Connecting { deadline }
            | ConnectionState::Handshaking { deadline } => Some(*deadline),
            ConnectionState::Reconnecting { retry_at, .. } => Some(*retry_at),
            ConnectionState::Disconnected { .. } | ConnectionState::Connected { .. } => None,
        }
    }

    /// Applies one event at `now` and returns the actions to perform, in order.
    ///
    /// Idempotent requests (connect while already connecting, close while disconnected) and
    /// early or stale timers return no actions. Events that cannot happen in the current state
    /// return [`UnexpectedEvent`] and leave the state unchanged.
    pub fn handle<R: CryptoRng + ?Sized>(
        &mut self,
        event: ConnectionEvent,
        now: Instant,
        rng: &mut R,
    ) -> Result<Vec<Action>, UnexpectedEvent> {
        use ConnectionEvent as E;
        use ConnectionState as S;

        let unexpected = UnexpectedEvent {
            state: self.state.kind(),
            event: event.kind(),
        };
        let actions = match (&self.state, event) {
            // Close from anywhere; a no-op when already disconnected.
            (S::Disconnected { .. }, E::CloseRequested) => Vec::new(),
            (state, E::CloseRequested) => {
                let had_transport = !matches!(state, S::Reconnecting { .. });
                self.backoff.reset();
                self.state = S::Disconnected { last_error: None };
                let mut actions = Vec::with_capacity(2);
                if had_transport {
                    actions.push(Action::Close);
                }
                actions.push(status(ConnectionStatus::Disconnected));
                actions
            }

            // Connect requests: start dialing, or dial now instead of waiting for the timer.
            (S::Disconnected { .. } | S::Reconnecting { .. }, E::ConnectRequested) => {
                self.dial(now)
            }
            (
                S::Connecting { .. } | S::Handshaking { .. } | S::Connected { .. },
                E::ConnectRequested,
            ) => Vec::new(),

            (S::Connecting { .. }, E::TransportConnected) => {
                self.state = S::Handshaking {
                    deadline: after(now, self.config.handshake_timeout),
                };
                vec![Action::SendHello]
            }

            (S::Handshaking { .. }, E::HandshakeCompleted { max_cursor }) => {
                self.backoff.reset();
                self.state = S::Connected {
                    since: now,
                    relay_max_cursor: max_cursor,
                };
                vec![
                    status(ConnectionStatus::Connected),
                    Action::ResumeFrom {
                        relay_max_cursor: max_cursor,
                    },
                    Action::ResendPending,
                ]
            }

            (
                S::Handshaking { .. },
                E::HandshakeRejected {
                    retryable,
                    retry_after,
                    reason,
                },
            ) => {
                if retryable {
                    let mut actions = vec![Action::Close];
                    actions.extend(self.schedule_reconnect(now, rng, retry_after, reason));
                    actions
                } else {
                    self.backoff.reset();
                    self.state = S::Disconnected {
                        last_error: Some(reason.clone()),
                    };
                    vec![Action::Close, status(ConnectionStatus::Failed { reason })]
                }
            }

            // The transport broke before or during the handshake, or the session ended.
            (S::Connecting { .. } | S::Handshaking { .. }, E::TransportFailed { reason })
            | (
                S::Connecting { .. } | S::Handshaking { .. } | S::Connected { .. },
                E::Disconnected { reason },
            )
            | (S::Connected { .. }, E::TransportFailed { reason }) => {
                self.schedule_reconnect(now, rng, None, reason)
            }

            // Timers: dial/handshake deadlines and the reconnect instant.
            (S::Connecting { deadline }, E::TimerFired) if now >= *deadline => {
                let mut actions = vec![Action::Close];
                actions.extend(self.schedule_reconnect(now, rng, None, "connect timed out".into()));
                actions
            }
            (S::Handshaking { deadline }, E::TimerFired) if now >= *deadline => {
                let mut actions = vec![Action::Close];
                actions.extend(self.schedule_reconnect(
                    now,
                    rng,
                    None,
                    "handshake timed out".into(),
                ));
                actions
            }
            (S::Reconnecting { retry_at, .. }, E::TimerFired) if now >= *retry_at => self.dial(now),
            (_, E::TimerFired) => Vec::new(),

            _ => return Err(unexpected),
        };
        Ok(actions)
    }

    fn dial(&mut self, now: Instant) -> Vec<Action> {
        self.state = ConnectionState::Connecting {
            deadline: after(now, self.config.connect_timeout),
        };
        vec![status(ConnectionStatus::Connecting), Action::Dial]
    }

    fn schedule_reconnect<R: CryptoRng + ?Sized>(
        &mut self,
        now: Instant,
        rng: &mut R,
        retry_after: Option<Duration>,
        reason: String,
    ) -> Vec<Action> {
        let mut delay = self.backoff.next_delay(rng);
        if let Some(hint) = retry_after {
            delay = delay.max(hint.min(MAX_TIMEOUT));
        }
        let at = after(now, delay);
        let attempt = self.backoff.failures();
        self.state = ConnectionState::Reconnecting {
            attempt,
            retry_at: at,
            reason: reason.clone(),
        };
        vec![
            status(ConnectionStatus::Reconnecting {
                attempt,
                retry_in: delay,
                reason,
            }),
            Action::ScheduleReconnect { at, delay },
        ]
    }
}

impl Default for Connection {
    fn default() -> Self {
        Self::new(ConnectionConfig::DEFAULT)
    }
}

fn status(status: ConnectionStatus) -> Action {
    Action::EmitStatus { status }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    const SEC: Duration = Duration::from_secs(1);

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
    fn dial_timeout_closes_and_schedules_reconnect() {
        let mut h = Harness::new(0);
        h.go_connecting();
        h.now += 10 * SEC;
        let actions = h.handle(ConnectionEvent::TimerFired);
        assert_eq!(actions.first(), Some(&Action::Close));
        scheduled_delay(&actions);
        assert_eq!(h.kind(), StateKind::Reconnecting);
    }

    #[test]
    fn handshake_timeout_closes_and_schedules_reconnect() {
        let mut h = Harness::new(0);
        h.go_handshaking();
        h.now += 10 * SEC;
        let actions = h.handle(ConnectionEvent::TimerFired);
        assert_eq!(actions.first(), Some(&Action::Close));
        scheduled_delay(&actions);
        assert_eq!(h.kind(), StateKind::Reconnecting);
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
    fn disconnect_while_connected_reconnects_from_base_delay() {
        let mut h = Harness::new(0);
        h.go_connected();
        let actions = h.handle(ConnectionEvent::Disconnected {
            reason: "stream closed".into(),
        });
        let delay = scheduled_delay(&actions);
        assert!(delay >= SEC && delay <= 6 * SEC);
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
        let actions = h.handle(rejected(true));
        assert_eq!(actions.first(), Some(&Action::Close));
        scheduled_delay(&actions);
        assert_eq!(h.kind(), StateKind::Reconnecting);
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
        assert!(max - min >= 2 * SEC, "spread {:?}", max - min);
        assert!(min >= SEC && max <= 6 * SEC);
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
            handshake_timeout: Duration::MAX,
        });
        let mut rng = ChaCha20Rng::seed_from_u64(0);
        let now = Instant::now();
        conn.handle(ConnectionEvent::ConnectRequested, now, &mut rng)
            .expect("valid");
        conn.handle(failed(), now, &mut rng).expect("valid");
        assert!(conn.poll_timeout().is_some_and(|t| t > now));
    }
}
