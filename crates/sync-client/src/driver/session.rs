//! The session with the relay: dialing, installing a connection's reader and writer, the
//! `Hello`/`Welcome` handshake and its checks, the heartbeat that detects a silent relay, and
//! teardown.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use sync_core::{ConnectionEvent, ConnectionState};
use sync_crypto::HelloChallenge;
use sync_types::{
    Bye, DEFAULT_MAX_FRAME, FrameCodec, Hello, Limits, MAX_FRAME_LIMIT, Message, PROTOCOL_VERSION,
    Payload, Ping, RelayId, WireError,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::io::{Input, WriterMsg, read_loop, write_loop};
use super::{Driver, retry_hint, wire_reason};
use crate::error::{ClientError, TransportError};
use crate::transport::Session;
use crate::types::SyncEvent;

/// The connection the driver currently talks to the relay on.
pub(super) struct ActiveSession {
    pub(super) id: u64,
    pub(super) relay_id: RelayId,
    binding: [u8; 32],
    writer: mpsc::UnboundedSender<WriterMsg>,
    writer_task: JoinHandle<()>,
    reader_task: JoinHandle<()>,
}

/// Pings in flight and when the relay was last heard.
pub(super) struct Heartbeat {
    pings: HashSet<u64>,
    last_rx: Instant,
    pub(super) ping_due: Instant,
}

/// The current session, the dials that lead to one, and the requests answered within it that
/// belong to no other part (pings, invites).
pub(super) struct SessionState {
    /// The latest dial attempt; results of earlier ones are dropped.
    attempt: u64,
    dial_task: Option<JoinHandle<()>>,
    /// Id of the latest session installed.
    last_id: u64,
    pub(super) active: Option<ActiveSession>,
    /// Established (Welcome received) on the current session.
    pub(super) established: bool,
    hello_request: Option<u64>,
    /// The relay's refusal of the last handshake, reported if it was for good.
    pub(super) last_rejection: Option<WireError>,
    /// The relay's limits from its `Welcome`.
    pub(super) limits: Limits,
    next_request: u64,
    pub(super) heartbeat: Heartbeat,
    pub(super) invite_requests: HashMap<u64, oneshot::Sender<Result<(), ClientError>>>,
    /// Largest frame the reader accepts (the relay's announced maximum once known).
    max_frame: Arc<AtomicUsize>,
    /// Writers of ended sessions, still flushing `Bye` and closing their connection.
    pub(super) closing_writers: Vec<JoinHandle<()>>,
    /// The last dial reached another key at the relay's address.
    pub(super) wrong_relay: bool,
}

impl SessionState {
    pub(super) fn new(now: Instant) -> Self {
        Self {
            attempt: 0,
            dial_task: None,
            last_id: 0,
            active: None,
            established: false,
            hello_request: None,
            last_rejection: None,
            limits: Limits::DEFAULT,
            next_request: 1,
            heartbeat: Heartbeat {
                pings: HashSet::new(),
                last_rx: now,
                ping_due: now,
            },
            invite_requests: HashMap::new(),
            max_frame: Arc::new(AtomicUsize::new(DEFAULT_MAX_FRAME)),
            closing_writers: Vec::new(),
            wrong_relay: false,
        }
    }

    /// A fresh request id (never 0).
    pub(super) fn request_id(&mut self) -> u64 {
        let id = self.next_request;
        self.next_request = self.next_request.wrapping_add(1).max(1);
        id
    }

    /// Whether `id` names the current session.
    pub(super) fn is_current(&self, id: u64) -> bool {
        self.active.as_ref().is_some_and(|s| s.id == id)
    }

    /// Queues a frame for the session's writer.
    pub(super) fn send(&self, msg: Message) {
        let Some(session) = &self.active else {
            return;
        };
        let codec = FrameCodec::new(self.max_frame.load(Ordering::Relaxed));
        match codec.encode_to_bytes(&msg) {
            Ok(frame) => {
                if session.writer.send(WriterMsg::Frame(frame)).is_err() {
                    debug!("writer gone; frame dropped");
                }
            }
            Err(e) => warn!(error = %e, kind = msg.message_type().name(), "frame not sent"),
        }
    }

    /// A frame arrived on the current session.
    pub(super) fn heard(&mut self) {
        self.heartbeat.last_rx = Instant::now();
    }

    /// Whether `request_id` was a ping (no longer waited for).
    pub(super) fn take_ping(&mut self, request_id: u64) -> bool {
        self.heartbeat.pings.remove(&request_id)
    }
}

impl Driver {
    pub(super) fn dial(&mut self) {
        self.session.attempt = self.session.attempt.wrapping_add(1);
        let attempt = self.session.attempt;
        let transport = Arc::clone(&self.transport);
        let device = self.me.device.clone();
        let tx = self.input_tx.clone();
        if let Some(old) = self.session.dial_task.take() {
            old.abort();
        }
        self.session.dial_task = Some(tokio::spawn(async move {
            let result = transport.connect(&device).await;
            let _ = tx.send(Input::Dialed { attempt, result }).await;
        }));
    }

    pub(super) fn on_dialed(&mut self, attempt: u64, result: Result<Session, TransportError>) {
        let current = attempt == self.session.attempt
            && matches!(self.conn.state(), ConnectionState::Connecting { .. });
        match result {
            Ok(mut session) if !current => {
                if let Some(closer) = session.take_closer() {
                    tokio::spawn(closer());
                }
            }
            Err(_) if !current => {}
            Ok(session) => {
                self.session.wrong_relay = false;
                self.install_session(session);
                self.connection_event(ConnectionEvent::TransportConnected);
            }
            Err(e) => {
                debug!(error = %e, "dial failed");
                self.session.wrong_relay = matches!(e, TransportError::WrongRelay { .. });
                self.connection_event(ConnectionEvent::TransportFailed {
                    reason: e.to_string(),
                });
            }
        }
    }

    fn install_session(&mut self, mut session: Session) {
        self.session.last_id = self.session.last_id.wrapping_add(1);
        let id = self.session.last_id;
        self.load_tracker(session.relay_id);
        let closer = session.take_closer();
        let (wtx, wrx) = mpsc::unbounded_channel();
        let input = self.input_tx.clone();
        let writer_task = tokio::spawn(write_loop(id, session.writer, wrx, closer, input.clone()));
        let reader_task = tokio::spawn(read_loop(
            id,
            session.reader,
            Arc::clone(&self.session.max_frame),
            input,
        ));
        self.session.active = Some(ActiveSession {
            id,
            relay_id: session.relay_id,
            binding: session.binding,
            writer: wtx,
            writer_task,
            reader_task,
        });
        self.session.established = false;
        self.session.heard();
    }

    pub(super) fn send_hello(&mut self) {
        let Some(session) = &self.session.active else {
            self.connection_event(ConnectionEvent::TransportFailed {
                reason: "no session to send Hello on".into(),
            });
            return;
        };
        let challenge = HelloChallenge::new(
            &session.binding,
            session.relay_id.as_bytes(),
            &self.me.device_id,
            &self.me.group_id,
        );
        let signature = self.me.keys.sign_hello(&challenge);
        let request_id = self.session.request_id();
        self.session.hello_request = Some(request_id);
        let hello = Hello {
            request_id,
            version: PROTOCOL_VERSION,
            group_id: self.me.group_id,
            last_cursor: self.pulls.tracker.resume_cursor(),
            auth_signature: signature.0,
            admission_token: self
                .options
                .admission_token
                .as_ref()
                .map(|t| Payload::copy_from_slice(t.as_bytes())),
        };
        self.session.send(Message::Hello(hello));
    }

    /// A frame before the session is established: only the answer to `Hello` is expected.
    pub(super) fn on_handshake_message(&mut self, msg: Message) {
        let Some(hello_id) = self.session.hello_request else {
            return self.session_failed("relay spoke before Hello".into(), true);
        };
        match msg {
            Message::Welcome(w) if w.request_id == hello_id => {
                let relay_ok = self
                    .session
                    .active
                    .as_ref()
                    .is_some_and(|s| *s.relay_id.as_bytes() == w.relay_id);
                if !relay_ok {
                    return self.session_failed("Welcome names another relay".into(), true);
                }
                self.session.limits = w.limits;
                // The relay's word, bounded: never below what any relay must carry, never
                // above what any relay may allow.
                let max_frame = usize::try_from(w.limits.max_frame_bytes)
                    .unwrap_or(MAX_FRAME_LIMIT)
                    .clamp(DEFAULT_MAX_FRAME, MAX_FRAME_LIMIT);
                self.session.max_frame.store(max_frame, Ordering::Relaxed);
                self.session.established = true;
                self.session.hello_request = None;
                self.session.last_rejection = None;
                let now = Instant::now();
                self.session.heartbeat.ping_due = now + self.options.ping_interval;
                self.pulls.relay_max = w.max_cursor;
                self.check_relay_log(w.store_id, w.max_cursor);
                if let Some(relay) = self.session.active.as_ref().map(|s| s.relay_id) {
                    self.reports.emit(SyncEvent::Connected {
                        relay_id: relay,
                        max_cursor: w.max_cursor,
                    });
                }
                info!(max_cursor = %w.max_cursor, "session established");
                self.connection_event(ConnectionEvent::HandshakeCompleted {
                    max_cursor: w.max_cursor,
                });
            }
            Message::Error(e) if e.request_id.is_none() || e.request_id == Some(hello_id) => {
                let reason = wire_reason(&e);
                info!(code = %e.code, "relay refused the session");
                let retryable = e.is_retryable();
                let retry_after = retry_hint(&e);
                self.session.last_rejection = Some(e);
                // The state machine answers with `Close` (teardown) and a retry or a stop.
                self.connection_event(ConnectionEvent::HandshakeRejected {
                    retryable,
                    retry_after,
                    reason,
                });
            }
            other => {
                let reason = format!(
                    "unexpected {} during the handshake",
                    other.message_type().name()
                );
                self.session_failed(reason, true);
            }
        }
    }

    /// On an established session: a relay silent for three intervals is taken for broken,
    /// otherwise a `Ping` is due every interval.
    pub(super) fn heartbeat(&mut self, now: Instant) {
        if !self.session.established || now < self.session.heartbeat.ping_due {
            return;
        }
        let silent = now.saturating_duration_since(self.session.heartbeat.last_rx);
        if silent >= self.options.ping_interval.saturating_mul(3) {
            self.session_failed("relay silent for three heartbeat intervals".into(), true);
        } else {
            let id = self.session.request_id();
            self.session.heartbeat.pings.insert(id);
            self.session.send(Message::Ping(Ping { request_id: id }));
            self.session.heartbeat.ping_due = now + self.options.ping_interval;
        }
    }

    /// Ends the current session (if any) and everything that waited on it. Pending pushes stay
    /// in the outbox.
    pub(super) fn teardown(&mut self, bye: bool, reason: String) {
        if let Some(task) = self.session.dial_task.take() {
            task.abort();
        }
        let was_established = self.session.established;
        if let Some(session) = self.session.active.take() {
            if bye {
                let frame = FrameCodec::default()
                    .encode_to_bytes(&Message::Bye(Bye { reason: None }))
                    .ok();
                if let Some(frame) = frame {
                    let _ = session.writer.send(WriterMsg::Frame(frame));
                }
            }
            let _ = session.writer.send(WriterMsg::Shutdown);
            session.reader_task.abort();
            self.session.closing_writers.retain(|h| !h.is_finished());
            self.session.closing_writers.push(session.writer_task);
        }
        self.session.established = false;
        self.session.hello_request = None;
        self.session.heartbeat.pings.clear();
        self.pushes_session_lost();
        self.pulls_session_lost();
        for (_, waiter) in self.session.invite_requests.drain() {
            let _ = waiter.send(Err(ClientError::NotConnected));
        }
        if was_established {
            info!(%reason, "session ended");
            self.reports.emit(SyncEvent::Disconnected { reason });
        }
    }

    /// The session broke (read/write failure, protocol violation, silence): tear it down and
    /// let the state machine schedule a reconnect.
    pub(super) fn session_failed(&mut self, reason: String, bye: bool) {
        let established = self.session.established;
        self.teardown(bye, reason.clone());
        if established {
            self.connection_event(ConnectionEvent::Disconnected { reason });
        } else {
            self.connection_event(ConnectionEvent::TransportFailed { reason });
        }
    }
}
