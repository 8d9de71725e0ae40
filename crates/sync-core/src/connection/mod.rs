//! The client's connection state machine: dial, handshake, stay connected, reconnect.
//!
//! The state diagram is on [`Connection`].
//!
//! Each state carries exactly the data that exists in it (a dial deadline only while dialing, a
//! retry instant only while waiting to reconnect, the relay's max cursor only once connected),
//! so impossible combinations cannot be represented. [`Connection::handle`] takes one event with
//! the current `now` and an RNG and returns the [`Action`]s the shell must perform, in order.

mod action;
mod event;
mod state;

#[cfg(test)]
mod tests;

use std::time::{Duration, Instant};

use rand_core::CryptoRng;

pub use action::{Action, ConnectionStatus};
pub use event::{ConnectionEvent, EventKind, UnexpectedEvent};
pub use state::{ConnectionState, StateKind};

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
    /// After an established session is lost, the first new attempt starts within this
    /// (a uniform draw in `0..=after_loss`, so the devices of a relay that died spread out),
    /// instead of waiting for the backoff: a device with several relays is on the next one
    /// about this long after it noticed the loss. Later attempts follow the backoff.
    pub after_loss: Duration,
}

impl ConnectionConfig {
    /// Default backoff, 10 s dial timeout, 10 s handshake timeout, a new attempt within 500 ms
    /// of losing an established session.
    pub const DEFAULT: ConnectionConfig = ConnectionConfig {
        backoff: BackoffConfig::DEFAULT,
        connect_timeout: Duration::from_secs(10),
        handshake_timeout: Duration::from_secs(10),
        after_loss: Duration::from_millis(500),
    };
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
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
                    closing(self.schedule_reconnect(now, rng, retry_after, reason))
                } else {
                    self.backoff.reset();
                    self.state = S::Disconnected {
                        last_error: Some(reason.clone()),
                    };
                    vec![Action::Close, status(ConnectionStatus::Failed { reason })]
                }
            }

            // An established session ended: try again at once (within `after_loss`).
            (S::Connected { .. }, E::Disconnected { reason } | E::TransportFailed { reason }) => {
                let delay = self.backoff.jitter_within(self.config.after_loss, rng);
                self.reconnect_in(now, delay, 1, reason)
            }
            // The transport broke before or during the handshake.
            (S::Connecting { .. } | S::Handshaking { .. }, E::TransportFailed { reason })
            | (S::Connecting { .. } | S::Handshaking { .. }, E::Disconnected { reason }) => {
                self.schedule_reconnect(now, rng, None, reason)
            }

            // Timers: dial/handshake deadlines and the reconnect instant.
            (S::Connecting { deadline }, E::TimerFired) if now >= *deadline => {
                closing(self.schedule_reconnect(now, rng, None, "connect timed out".into()))
            }
            (S::Handshaking { deadline }, E::TimerFired) if now >= *deadline => {
                closing(self.schedule_reconnect(now, rng, None, "handshake timed out".into()))
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
        let attempt = self.backoff.failures();
        self.reconnect_in(now, delay, attempt, reason)
    }

    /// Waits `delay` before attempt number `attempt`.
    fn reconnect_in(
        &mut self,
        now: Instant,
        delay: Duration,
        attempt: u32,
        reason: String,
    ) -> Vec<Action> {
        let at = after(now, delay);
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

/// `actions`, after closing the transport of the failed attempt.
fn closing(mut actions: Vec<Action>) -> Vec<Action> {
    actions.insert(0, Action::Close);
    actions
}
