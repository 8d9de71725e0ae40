//! The client's session with the relay, sans IO: the connection state machine, the handshake
//! and its checks, request ids, the push window, pull paging, the heartbeat, and every limit
//! and hint from the relay clamped in one place.
//!
//! The shape follows quinn-proto: the shell feeds what happened into [`Session::handle`] (and
//! [`Session::handle_timeout`] at [`Session::poll_timeout`]), then carries out
//! [`Session::poll_transmit`] (dial, write a frame, close) and reacts to
//! [`Session::poll_event`] until both are empty. The session never reads a clock or touches a
//! socket; the enums it hands out are exhaustive, so a new kind of output is a compile error in
//! the shell, not a log line.
//!
//! What the session does not do: open or seal blobs, decide what a pulled blob means, or store
//! anything. It checks the relay's frames for what can be checked without keys (the right
//! request, the right relay, ascending cursors, answers to requests that were made) and hands
//! the rest on.

mod inbound;
mod io;
mod pull;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand_core::CryptoRng;
use sync_types::{
    BlobId, Bye, ContentRef, Cursor, DEFAULT_MAX_FRAME, Enroll, ErrorCode, GroupGet, GroupId,
    GroupUpdate, Hello, InvitePut, Limits, MAX_FRAME_LIMIT, Message, PROTOCOL_VERSION, Ping, Push,
    PushAck, RelayId, Welcome, WireError,
};

pub use io::{
    Established, GroupReply, GroupRequest, HelloAuth, Input, Page, PullEnd, PullMode, SessionError,
    SessionEvent, Transmit,
};

use crate::connection::{Action, Connection, ConnectionConfig, ConnectionEvent, ConnectionState};
use crate::outbox::{AckOutcome, Outbox, OutboxError, RejectOutcome};
use pull::{Answer, PullInProgress};

/// Longest wait a relay's retry hint can impose: a larger hint (a broken or hostile relay's
/// `u64::MAX`) waits this long, then the device tries again.
pub const MAX_RETRY_HINT: Duration = Duration::from_secs(300);

/// The relay's retry hint, clamped to [`MAX_RETRY_HINT`].
pub fn retry_hint(e: &WireError) -> Option<Duration> {
    e.retry_after_ms
        .map(|ms| Duration::from_millis(ms).min(MAX_RETRY_HINT))
}

/// Tunables of a [`Session`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// Dial, handshake and reconnect timing.
    pub connection: ConnectionConfig,
    /// A `Ping` is due this long after the last one; a relay silent for three intervals is
    /// taken for broken.
    pub ping_interval: Duration,
    /// Most pushes awaiting acknowledgement (also bounded by the relay's limit, less two for a
    /// pull and a ping).
    pub max_in_flight: usize,
    /// Entries asked for per pull page.
    pub pull_page: u32,
    /// A pull round stops after serving this many bytes (payloads and their framing) and ends
    /// [`PullEnd::Bounded`].
    pub pull_round_bytes: usize,
    /// Wait after a deferral that came without a hint.
    pub default_retry: Duration,
}

impl SessionConfig {
    /// 15 s heartbeat, 64 pushes in flight, 256-entry pages, 32 MiB rounds, 1 s default retry.
    pub const DEFAULT: SessionConfig = SessionConfig {
        connection: ConnectionConfig::DEFAULT,
        ping_interval: Duration::from_secs(15),
        max_in_flight: 64,
        pull_page: 256,
        pull_round_bytes: 32 * 1024 * 1024,
        default_retry: Duration::from_secs(1),
    };
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The transport the session runs on, from [`Input::TransportUp`] to its teardown.
#[derive(Debug)]
struct Transport {
    relay_id: RelayId,
    hello: HelloAuth,
    /// `Some` until the relay answers `Hello`.
    hello_request: Option<u64>,
    established: bool,
    last_rx: Instant,
    ping_due: Instant,
    pings: HashSet<u64>,
    /// Pushes sent and not answered yet, by request id.
    in_flight: HashMap<u64, BlobId>,
    pull: Option<PullInProgress>,
    /// Requests answered by a plain acknowledgement (`InvitePut`, `ContentRef`).
    answers: HashSet<u64>,
    group_requests: HashSet<u64>,
}

/// The client's session with the relay (see the module docs).
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    group_id: GroupId,
    conn: Connection,
    outbox: Outbox,
    transport: Option<Transport>,
    limits: Limits,
    max_frame: usize,
    relay_max: Cursor,
    next_request: u64,
    /// Nothing is pushed before this: the relay deferred a push.
    hold_until: Option<Instant>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<SessionEvent>,
}

impl Session {
    /// A disconnected session for `group_id`, sending from `outbox`.
    pub fn new(config: SessionConfig, group_id: GroupId, outbox: Outbox) -> Self {
        Self {
            config,
            group_id,
            conn: Connection::new(config.connection),
            outbox,
            transport: None,
            limits: Limits::DEFAULT,
            max_frame: DEFAULT_MAX_FRAME,
            relay_max: Cursor::ZERO,
            next_request: 1,
            hold_until: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    // ----- what the shell reads -----

    /// The connection state machine's state.
    pub fn connection(&self) -> &ConnectionState {
        self.conn.state()
    }

    /// Whether a dial is what the session waits for (a dial result for an earlier attempt is
    /// stale when this is false).
    pub fn is_dialing(&self) -> bool {
        matches!(self.conn.state(), ConnectionState::Connecting { .. })
    }

    /// Whether the relay welcomed this device on the current transport.
    pub fn is_established(&self) -> bool {
        self.transport.as_ref().is_some_and(|t| t.established)
    }

    /// The relay the current transport reaches, if one is up.
    pub fn relay_id(&self) -> Option<RelayId> {
        self.transport.as_ref().map(|t| t.relay_id)
    }

    /// The relay's limits from its last `Welcome` (the defaults before any).
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The largest frame either side may send: the relay's announced maximum, never below what
    /// every relay must carry nor above what any relay may allow.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// The largest blob the relay accepts.
    pub fn max_blob(&self) -> usize {
        usize::try_from(self.limits.max_blob_bytes).unwrap_or(usize::MAX)
    }

    /// The relay's highest cursor as last heard (`Welcome`, acknowledgements, notifications,
    /// pages).
    pub fn relay_max(&self) -> Cursor {
        self.relay_max
    }

    /// The pushes waiting to be sent or acknowledged.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Whether a pull is in progress.
    pub fn is_pulling(&self) -> bool {
        self.transport.as_ref().is_some_and(|t| t.pull.is_some())
    }

    /// How many pushes may be in flight: the configured window, within the relay's limit less
    /// room for a pull and a ping, and at least one.
    pub fn in_flight_cap(&self) -> usize {
        let relay = usize::try_from(self.limits.max_in_flight).unwrap_or(usize::MAX);
        self.config
            .max_in_flight
            .min(relay.saturating_sub(2))
            .max(1)
    }

    /// When [`Session::handle_timeout`] is due next, if at all.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next = self.conn.poll_timeout();
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        if let Some(t) = self.transport.as_ref().filter(|t| t.established) {
            consider(t.ping_due);
            if let Some(h) = self.hold_until
                && self.outbox.next_to_send().is_some()
            {
                consider(h);
            }
        }
        next
    }

    /// The next I/O to perform. Pushes are taken from the outbox here, within the window and
    /// not while the relay's hold lasts.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        if let Some(t) = self.transmits.pop_front() {
            return Some(t);
        }
        if self.hold_until.is_some_and(|h| now < h) {
            return None;
        }
        self.hold_until = None;
        let cap = self.in_flight_cap();
        let request_id = self.next_request;
        let transport = self.transport.as_mut().filter(|t| t.established)?;
        if transport.in_flight.len() >= cap {
            return None;
        }
        let entry = self.outbox.send_next()?;
        self.next_request = self.next_request.wrapping_add(1).max(1);
        transport.in_flight.insert(request_id, entry.blob_id());
        Some(Transmit::Frame(Message::Push(Push {
            request_id,
            blob_id: entry.blob_id(),
            payload: entry.payload().clone().into(),
            ttl_secs: entry.ttl_secs(),
        })))
    }

    /// The next thing that happened.
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    // ----- what the shell asks for -----

    /// Queues a push (sent by [`Session::poll_transmit`] once a session is up).
    pub fn enqueue(
        &mut self,
        blob_id: BlobId,
        payload: Bytes,
        ttl_secs: u32,
    ) -> Result<(), OutboxError> {
        self.outbox.enqueue(blob_id, payload, ttl_secs)
    }

    /// Replaces the sealed bytes of a queued push that is not in flight (see
    /// [`Outbox::replace_payload`]).
    pub fn replace_payload(&mut self, blob_id: &BlobId, payload: Bytes) -> bool {
        self.outbox.replace_payload(blob_id, payload)
    }

    /// Takes a push back out of the outbox (it could not be made durable). Whether it was still
    /// there.
    pub fn withdraw(&mut self, blob_id: &BlobId) -> bool {
        if let Some(t) = &mut self.transport {
            t.in_flight.retain(|_, b| b != blob_id);
        }
        matches!(
            self.outbox.reject(blob_id, true),
            RejectOutcome::Failed { .. }
        )
    }

    /// Starts a pull after `after` on the established session.
    pub fn start_pull(&mut self, after: Cursor, mode: PullMode) -> Result<(), SessionError> {
        let request_id = self.next_request;
        let page = self.config.pull_page.max(1);
        // Field by field: the request counter changes while the transport is borrowed.
        let t = self
            .transport
            .as_mut()
            .filter(|t| t.established)
            .ok_or(SessionError::NotEstablished)?;
        if t.pull.is_some() {
            return Err(SessionError::PullInProgress);
        }
        self.next_request = self.next_request.wrapping_add(1).max(1);
        let (pull, msg) = PullInProgress::start(request_id, after, mode, page);
        t.pull = Some(pull);
        self.transmits.push_back(Transmit::Frame(msg));
        Ok(())
    }

    /// Leaves a sealed invite in the relay's mailbox; answered by
    /// [`SessionEvent::Answered`] with the returned request id.
    pub fn put_invite(
        &mut self,
        lookup_id: String,
        sealed: Bytes,
        ttl_secs: u32,
    ) -> Result<u64, SessionError> {
        let request_id = self.request_id();
        let t = self.established_transport()?;
        t.answers.insert(request_id);
        self.transmits
            .push_back(Transmit::Frame(Message::InvitePut(InvitePut {
                request_id,
                lookup_id,
                sealed: sealed.into(),
                ttl_secs,
            })));
        Ok(request_id)
    }

    /// Registers large content with the relay before uploading it (the relay checks the
    /// group's content quota); answered by [`SessionEvent::Answered`] with the returned
    /// request id. `request_id` in `content` is replaced.
    pub fn register_content(&mut self, mut content: ContentRef) -> Result<u64, SessionError> {
        let request_id = self.request_id();
        let t = self.established_transport()?;
        t.answers.insert(request_id);
        content.request_id = request_id;
        self.transmits
            .push_back(Transmit::Frame(Message::ContentRef(content)));
        Ok(request_id)
    }

    /// The transport of the established session, or `NotEstablished`.
    fn established_transport(&mut self) -> Result<&mut Transport, SessionError> {
        self.transport
            .as_mut()
            .filter(|t| t.established)
            .ok_or(SessionError::NotEstablished)
    }

    /// Sends a membership request; answered by [`SessionEvent::GroupReply`] with the returned
    /// request id.
    pub fn group_request(&mut self, request: GroupRequest) -> Result<u64, SessionError> {
        let request_id = self.request_id();
        let t = self.established_transport()?;
        t.group_requests.insert(request_id);
        let msg = match request {
            GroupRequest::Enroll(enrollment) => Message::Enroll(Enroll {
                request_id,
                enrollment,
            }),
            GroupRequest::Update { record, grants } => Message::GroupUpdate(GroupUpdate {
                request_id,
                record,
                grants,
            }),
            GroupRequest::Get {
                group_id,
                after_seq,
            } => Message::GroupGet(GroupGet {
                request_id,
                group_id,
                after_seq,
            }),
        };
        self.transmits.push_back(Transmit::Frame(msg));
        Ok(request_id)
    }

    // ----- what the shell reports -----

    /// Applies one input at `now`.
    pub fn handle<R: CryptoRng + ?Sized>(&mut self, input: Input, now: Instant, rng: &mut R) {
        match input {
            Input::Connect => self.connection_event(ConnectionEvent::ConnectRequested, now, rng),
            Input::Close => self.connection_event(ConnectionEvent::CloseRequested, now, rng),
            Input::TransportUp { relay_id, hello } => {
                if !self.is_dialing() {
                    // A late dial: close what it opened.
                    self.transmits.push_back(Transmit::Close);
                    return;
                }
                self.transport = Some(Transport {
                    relay_id,
                    hello,
                    hello_request: None,
                    established: false,
                    last_rx: now,
                    ping_due: now,
                    pings: HashSet::new(),
                    in_flight: HashMap::new(),
                    pull: None,
                    answers: HashSet::new(),
                    group_requests: HashSet::new(),
                });
                self.connection_event(ConnectionEvent::TransportConnected, now, rng);
            }
            Input::DialFailed { reason } => {
                if self.is_dialing() {
                    self.connection_event(ConnectionEvent::TransportFailed { reason }, now, rng);
                }
            }
            Input::TransportLost { reason } => {
                if self.transport.is_some() {
                    self.fail(reason, false, now, rng);
                }
            }
            Input::Frame(msg) => {
                let Some(t) = &mut self.transport else {
                    return;
                };
                t.last_rx = now;
                if t.established {
                    self.on_message(msg, now, rng);
                } else {
                    self.on_handshake_message(msg, now, rng);
                }
            }
        }
    }

    /// Timers: dial and handshake deadlines, reconnects, the heartbeat, the end of a hold.
    pub fn handle_timeout<R: CryptoRng + ?Sized>(&mut self, now: Instant, rng: &mut R) {
        if self.conn.poll_timeout().is_some_and(|t| now >= t) {
            self.connection_event(ConnectionEvent::TimerFired, now, rng);
        }
        if self.hold_until.is_some_and(|h| now >= h) {
            self.hold_until = None;
        }
        let ping_interval = self.config.ping_interval;
        let request_id = self.next_request;
        let Some(t) = self.transport.as_mut().filter(|t| t.established) else {
            return;
        };
        if now < t.ping_due {
            return;
        }
        if now.saturating_duration_since(t.last_rx) >= ping_interval.saturating_mul(3) {
            return self.fail(
                "relay silent for three heartbeat intervals".into(),
                true,
                now,
                rng,
            );
        }
        self.next_request = self.next_request.wrapping_add(1).max(1);
        t.pings.insert(request_id);
        t.ping_due = after(now, ping_interval);
        self.transmits
            .push_back(Transmit::Frame(Message::Ping(Ping { request_id })));
    }

    // ----- inside -----

    /// A fresh request id (never 0).
    fn request_id(&mut self) -> u64 {
        let id = self.next_request;
        self.next_request = self.next_request.wrapping_add(1).max(1);
        id
    }

    fn connection_event<R: CryptoRng + ?Sized>(
        &mut self,
        event: ConnectionEvent,
        now: Instant,
        rng: &mut R,
    ) {
        // Every event is fed in a state that takes it; the machine refusing one changes nothing.
        let Ok(actions) = self.conn.handle(event, now, rng) else {
            return;
        };
        for action in actions {
            match action {
                Action::Dial => self.transmits.push_back(Transmit::Dial),
                Action::SendHello => self.send_hello(),
                // The deadline is in `poll_timeout`; the status says when.
                Action::ScheduleReconnect { .. } => {}
                Action::EmitStatus { status } => {
                    self.events.push_back(SessionEvent::Status(status))
                }
                // `Established` carries the relay's max cursor; pushes in flight were queued
                // again when the last transport ended.
                Action::ResumeFrom { .. } | Action::ResendPending => {}
                Action::Close => self.teardown(true, "closed".into()),
            }
        }
    }

    fn send_hello(&mut self) {
        let request_id = self.request_id();
        let group_id = self.group_id;
        let Some(t) = &mut self.transport else {
            return;
        };
        t.hello_request = Some(request_id);
        let hello = Hello {
            request_id,
            version: PROTOCOL_VERSION,
            group_id,
            last_cursor: t.hello.last_cursor,
            auth_signature: t.hello.auth_signature,
            admission_token: t.hello.admission_token.clone(),
        };
        self.transmits
            .push_back(Transmit::Frame(Message::Hello(hello)));
    }

    /// A frame before the session is established: only the answer to `Hello` is expected.
    fn on_handshake_message<R: CryptoRng + ?Sized>(
        &mut self,
        msg: Message,
        now: Instant,
        rng: &mut R,
    ) {
        let Some((relay_id, hello_id)) = self
            .transport
            .as_ref()
            .and_then(|t| Some((t.relay_id, t.hello_request?)))
        else {
            return self.fail("relay spoke before Hello".into(), true, now, rng);
        };
        match msg {
            Message::Welcome(w) if w.request_id == hello_id => {
                if *relay_id.as_bytes() != w.relay_id {
                    return self.fail("Welcome names another relay".into(), true, now, rng);
                }
                self.welcome(relay_id, w, now);
                self.connection_event(
                    ConnectionEvent::HandshakeCompleted {
                        max_cursor: self.relay_max,
                    },
                    now,
                    rng,
                );
            }
            Message::Error(e) if e.request_id.is_none() || e.request_id == Some(hello_id) => {
                let reason = wire_reason(&e);
                // A device behind the group's key epoch is not refused for good: the shell
                // fetches the new keys and connects again.
                let retryable = e.is_retryable() || e.code == ErrorCode::EpochSuperseded;
                let retry_after = retry_hint(&e);
                self.events
                    .push_back(SessionEvent::HandshakeRefused { error: e });
                // The machine answers with `Close` and a retry or a stop.
                self.connection_event(
                    ConnectionEvent::HandshakeRejected {
                        retryable,
                        retry_after,
                        reason,
                    },
                    now,
                    rng,
                );
            }
            other => {
                let reason = format!(
                    "unexpected {} during the handshake",
                    other.message_type().name()
                );
                self.fail(reason, true, now, rng);
            }
        }
    }

    /// Takes the relay's `Welcome`, its word bounded.
    fn welcome(&mut self, relay_id: RelayId, w: Welcome, now: Instant) {
        self.limits = w.limits;
        self.max_frame = usize::try_from(w.limits.max_frame_bytes)
            .unwrap_or(MAX_FRAME_LIMIT)
            .clamp(DEFAULT_MAX_FRAME, MAX_FRAME_LIMIT);
        self.relay_max = self.relay_max.max(w.max_cursor);
        let ping_due = after(now, self.config.ping_interval);
        if let Some(t) = &mut self.transport {
            t.established = true;
            t.hello_request = None;
            t.ping_due = ping_due;
        }
        self.events
            .push_back(SessionEvent::Established(Established {
                relay_id,
                store_id: w.store_id,
                max_cursor: w.max_cursor,
                limits: w.limits,
            }));
    }

    /// The session broke (I/O failure, protocol violation, silence, the relay's `Bye`): tear it
    /// down and let the machine schedule a reconnect.
    fn fail<R: CryptoRng + ?Sized>(
        &mut self,
        reason: String,
        bye: bool,
        now: Instant,
        rng: &mut R,
    ) {
        let established = self.is_established();
        self.teardown(bye, reason.clone());
        let event = if established {
            ConnectionEvent::Disconnected { reason }
        } else {
            ConnectionEvent::TransportFailed { reason }
        };
        self.connection_event(event, now, rng);
    }

    /// Ends the transport (or the dial) and everything that waited on it. Pushes in flight go
    /// back to the queue, to be sent again with the same blob ids.
    fn teardown(&mut self, bye: bool, reason: String) {
        let transport = self.transport.take();
        let was_established = transport.as_ref().is_some_and(|t| t.established);
        if bye && transport.is_some() {
            self.transmits
                .push_back(Transmit::Frame(Message::Bye(Bye { reason: None })));
        }
        self.transmits.push_back(Transmit::Close);
        self.outbox.requeue_all_in_flight();
        self.events.push_back(SessionEvent::Ended {
            reason,
            was_established,
        });
    }
}

fn wire_reason(e: &WireError) -> String {
    format!("{}: {}", e.code, e.message)
}

/// Longest timeout honoured, so deadlines stay representable.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// `now + d` without overflow panics.
fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d.min(MAX_TIMEOUT)).unwrap_or(now)
}
