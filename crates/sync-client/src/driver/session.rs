//! The session's I/O: dials, a connection's reader and writer tasks, and closing them. What the
//! session means (handshake, heartbeat, requests) is decided by sync-core's [`Session`]; this
//! part carries it out.
//!
//! [`Session`]: sync_core::Session

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use sync_core::{Established, HelloAuth, Input as SessionInput};
use sync_crypto::HelloChallenge;
use sync_types::{DEFAULT_MAX_FRAME, FrameCodec, Message, Payload, WireError};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::Driver;
use super::io::{Input, WriterMsg, read_loop, write_loop};
use crate::error::{ClientError, TransportError};
use crate::transport::Session;
use crate::types::SyncEvent;

/// The connection the driver currently talks to the relay on.
struct ActiveSession {
    id: u64,
    writer: mpsc::UnboundedSender<WriterMsg>,
    writer_task: JoinHandle<()>,
    reader_task: JoinHandle<()>,
}

/// Dials, the current connection's tasks, and the requests answered on it that wait in the
/// driver (invites).
pub(super) struct IoState {
    /// The latest dial attempt; results of earlier ones are closed unused.
    attempt: u64,
    dial_task: Option<JoinHandle<()>>,
    /// Id of the latest connection installed.
    last_id: u64,
    active: Option<ActiveSession>,
    /// The relay's refusal of the last handshake, reported if it was for good.
    pub(super) last_rejection: Option<WireError>,
    /// Requests waiting for a plain acknowledgement (invites, content registrations).
    pub(super) answer_requests: HashMap<u64, oneshot::Sender<Result<(), ClientError>>>,
    /// Largest frame the reader accepts (the session's bound, shared with the reader task).
    max_frame: Arc<AtomicUsize>,
    /// Writers of ended connections, still flushing `Bye` and closing.
    pub(super) closing_writers: Vec<JoinHandle<()>>,
    /// The last dial reached another key at the relay's address.
    pub(super) wrong_relay: bool,
}

impl IoState {
    pub(super) fn new() -> Self {
        Self {
            attempt: 0,
            dial_task: None,
            last_id: 0,
            active: None,
            last_rejection: None,
            answer_requests: HashMap::new(),
            max_frame: Arc::new(AtomicUsize::new(DEFAULT_MAX_FRAME)),
            closing_writers: Vec::new(),
            wrong_relay: false,
        }
    }

    /// Whether `id` names the current connection.
    pub(super) fn is_current(&self, id: u64) -> bool {
        self.active.as_ref().is_some_and(|s| s.id == id)
    }

    /// Queues a frame for the current connection's writer.
    pub(super) fn send(&self, msg: Message, max_frame: usize) {
        let Some(session) = &self.active else {
            return;
        };
        match FrameCodec::new(max_frame).encode_to_bytes(&msg) {
            Ok(frame) => {
                if session.writer.send(WriterMsg::Frame(frame)).is_err() {
                    debug!("writer gone; frame dropped");
                }
            }
            Err(e) => warn!(error = %e, kind = msg.message_type().name(), "frame not sent"),
        }
    }
}

impl Driver {
    pub(super) fn dial(&mut self) {
        self.io.attempt = self.io.attempt.wrapping_add(1);
        let attempt = self.io.attempt;
        let transport = Arc::clone(&self.transport);
        let device = self.me.device.clone();
        let tx = self.input_tx.clone();
        if let Some(old) = self.io.dial_task.take() {
            old.abort();
        }
        self.io.dial_task = Some(tokio::spawn(async move {
            let result = transport.connect(&device).await;
            let _ = tx.send(Input::Dialed { attempt, result }).await;
        }));
    }

    pub(super) fn on_dialed(&mut self, attempt: u64, result: Result<Session, TransportError>) {
        let current = attempt == self.io.attempt && self.session.is_dialing();
        match result {
            Ok(mut session) if !current => {
                if let Some(closer) = session.take_closer() {
                    tokio::spawn(closer());
                }
            }
            Err(_) if !current => {}
            Ok(session) => {
                self.io.wrong_relay = false;
                let relay_id = session.relay_id;
                let hello = self.install_session(session);
                self.feed(SessionInput::TransportUp { relay_id, hello });
            }
            Err(e) => {
                debug!(error = %e, "dial failed");
                self.io.wrong_relay = matches!(e, TransportError::WrongRelay { .. });
                self.feed(SessionInput::DialFailed {
                    reason: e.to_string(),
                });
            }
        }
    }

    /// Starts the connection's reader and writer and returns what `Hello` proves on it.
    fn install_session(&mut self, mut session: Session) -> HelloAuth {
        self.io.last_id = self.io.last_id.wrapping_add(1);
        let id = self.io.last_id;
        self.load_tracker(session.relay_id);
        let closer = session.take_closer();
        let (wtx, wrx) = mpsc::unbounded_channel();
        let input = self.input_tx.clone();
        let writer_task = tokio::spawn(write_loop(id, session.writer, wrx, closer, input.clone()));
        let reader_task = tokio::spawn(read_loop(
            id,
            session.reader,
            Arc::clone(&self.io.max_frame),
            input,
        ));
        self.io.active = Some(ActiveSession {
            id,
            writer: wtx,
            writer_task,
            reader_task,
        });
        let challenge = HelloChallenge::new(
            &session.binding,
            session.relay_id.as_bytes(),
            &self.me.device_id,
            &self.me.group_id,
        );
        HelloAuth {
            auth_signature: self.me.keys().sign_hello(&challenge).0,
            last_cursor: self.pulls.tracker.resume_cursor(),
            admission_token: self
                .options
                .admission_token
                .as_ref()
                .map(|t| Payload::copy_from_slice(t.as_bytes())),
        }
    }

    /// The relay welcomed this device.
    pub(super) fn on_established(&mut self, e: Established) {
        self.io
            .max_frame
            .store(self.session.max_frame(), Ordering::Relaxed);
        self.check_relay_log(e.store_id, e.max_cursor);
        self.reports.emit(SyncEvent::Connected {
            relay_id: e.relay_id,
            max_cursor: e.max_cursor,
        });
        info!(max_cursor = %e.max_cursor, "session established");
        self.resume_from(e.max_cursor);
        self.refresh_membership();
    }

    /// Abandons the dial in progress and closes the current connection once its writer has
    /// written what was queued (a `Bye`, when the session said goodbye).
    pub(super) fn close_io(&mut self) {
        if let Some(task) = self.io.dial_task.take() {
            task.abort();
        }
        if let Some(session) = self.io.active.take() {
            let _ = session.writer.send(WriterMsg::Shutdown);
            session.reader_task.abort();
            self.io.closing_writers.retain(|h| !h.is_finished());
            self.io.closing_writers.push(session.writer_task);
        }
    }

    /// The session ended: everything that waited on it hears so. Pending pushes stay in the
    /// outbox.
    pub(super) fn on_session_ended(&mut self, reason: String, was_established: bool) {
        self.pushes_session_lost();
        self.pulls_session_lost();
        self.membership_session_lost();
        for (_, waiter) in self.io.answer_requests.drain() {
            let _ = waiter.send(Err(ClientError::NotConnected));
        }
        if was_established {
            info!(%reason, "session ended");
            self.reports.emit(SyncEvent::Disconnected { reason });
        }
    }
}
