//! The background task behind a [`SyncClient`](crate::SyncClient).
//!
//! One task owns all mutable sync state: the sync-core [`Connection`] state machine, the
//! [`Outbox`], the [`CursorTracker`], the [`SyncStatusTracker`] and the [`Store`]. It reacts to
//! three inputs — commands from the client handles, frames and failures from the session's I/O
//! tasks, and timers — and never blocks on the network: a reader task turns the stream into
//! messages, a writer task turns frames into bytes, and dials run in their own tasks. State
//! changes are batched: commands and inputs that are ready together are handled together and
//! settled in one store transaction.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rand_chacha::ChaCha20Rng;
use sync_core::{
    AckOutcome, Action, Connection, ConnectionEvent, ConnectionState, ConnectionStatus,
    CursorTracker, Outbox, OutboxError, RejectOutcome, SyncStatusTracker,
};
use sync_crypto::{DeviceKey, GroupKeys, HelloChallenge, open};
use sync_types::{
    BlobId, Bye, Cursor, DEFAULT_MAX_FRAME, DeviceId, FRAME_HEADER_LEN, FrameCodec, GroupId, Hello,
    InvitePut, Limits, Message, PROTOCOL_VERSION, Ping, Pull, PullResponse, Push, PushAck, RelayId,
    WireError, unix_ms,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::error::{ClientError, StoreError, TransportError};
use crate::store::{Store, StoredPush};
use crate::transport::{Session, SessionCloser, SessionReader, SessionWriter, Transport};
use crate::types::{Blob, ClientOptions, ClientStatus, PullBatch, Receipt, SyncEvent};

/// How a push's caller wants to hear back.
pub(crate) enum PushReply {
    /// Once durable in the outbox.
    Durable(oneshot::Sender<Result<BlobId, ClientError>>),
    /// Once the relay acknowledged (or refused) it.
    Ack(oneshot::Sender<Result<Receipt, ClientError>>),
}

/// A request from a client handle.
pub(crate) enum Command {
    /// Queue a sealed push.
    Push {
        blob_id: BlobId,
        payload: Bytes,
        ttl_secs: u32,
        created_ms: u64,
        reply: PushReply,
    },
    /// Pull everything not yet delivered.
    Pull {
        reply: oneshot::Sender<Result<Vec<Blob>, ClientError>>,
    },
    /// Pull everything after a cursor (own blobs included) without moving the resume cursor.
    PullAfter {
        after: Cursor,
        reply: oneshot::Sender<Result<Vec<Blob>, ClientError>>,
    },
    /// Pull everything not yet delivered; record the cursors only on `CommitPull`.
    PullUncommitted {
        reply: oneshot::Sender<Result<PullBatch, ClientError>>,
    },
    /// Record the cursors of a `PullUncommitted` batch the app has taken care of, and persist
    /// the resume cursor.
    CommitPull {
        relay: Option<RelayId>,
        ranges: Vec<(Cursor, Cursor)>,
        complete: bool,
        count: usize,
        senders: Vec<(DeviceId, u64, u64)>,
        reply: oneshot::Sender<Result<Cursor, ClientError>>,
    },
    /// Leave a sealed invite in the relay's mailbox.
    InvitePut {
        lookup_id: String,
        sealed: Vec<u8>,
        ttl_secs: u32,
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
    /// Send `Bye`, close, stop.
    Close { reply: oneshot::Sender<()> },
}

/// What the I/O tasks report.
enum Input {
    Dialed {
        attempt: u64,
        result: Result<Session, TransportError>,
    },
    Frame {
        session: u64,
        msg: Message,
    },
    ReadEnded {
        session: u64,
        reason: String,
    },
    WriteFailed {
        session: u64,
        reason: String,
    },
}

enum WriterMsg {
    Frame(Bytes),
    Shutdown,
}

struct ActiveSession {
    id: u64,
    relay_id: RelayId,
    binding: [u8; 32],
    writer: mpsc::UnboundedSender<WriterMsg>,
    writer_task: JoinHandle<()>,
    reader_task: JoinHandle<()>,
}

/// A pull in progress: pages are collected and only applied to the cursor tracker once the
/// caller has received them, so the persisted cursor never covers undelivered blobs.
struct PullRound {
    request_id: u64,
    /// The page's `after`.
    after: Cursor,
    /// `(after, through)` of every page answered so far.
    ranges: Vec<(Cursor, Cursor)>,
    blobs: Vec<Blob>,
    reply: RoundReply,
}

/// Who waits for a pull round, and what its cursors become.
enum RoundReply {
    /// `Pull`: own blobs skipped, cursors recorded once the caller took the blobs.
    Record(oneshot::Sender<Result<Vec<Blob>, ClientError>>),
    /// `PullAfter`: own blobs included, nothing recorded.
    Reread(oneshot::Sender<Result<Vec<Blob>, ClientError>>),
    /// `PullUncommitted`: own blobs skipped, cursors recorded on `CommitPull`.
    Batch(oneshot::Sender<Result<PullBatch, ClientError>>),
}

impl RoundReply {
    /// Whether the round skips own blobs and starts at the resume cursor.
    fn skips_own(&self) -> bool {
        !matches!(self, RoundReply::Reread(_))
    }

    fn is_closed(&self) -> bool {
        match self {
            RoundReply::Record(tx) | RoundReply::Reread(tx) => tx.is_closed(),
            RoundReply::Batch(tx) => tx.is_closed(),
        }
    }

    fn fail(self, e: ClientError) {
        match self {
            RoundReply::Record(tx) | RoundReply::Reread(tx) => {
                let _ = tx.send(Err(e));
            }
            RoundReply::Batch(tx) => {
                let _ = tx.send(Err(e));
            }
        }
    }
}

/// A pull waiting for its turn: `after` is `Some` for `PullAfter`.
struct PendingPull {
    after: Option<Cursor>,
    reply: RoundReply,
}

/// What the first connection attempt came to (for `SyncClient::connect`).
pub(crate) type FirstOutcome = oneshot::Sender<Result<(), ClientError>>;

/// Everything the driver starts with.
pub(crate) struct DriverParts {
    pub(crate) store: Store,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) device: DeviceKey,
    pub(crate) device_name: String,
    pub(crate) keys: Arc<GroupKeys>,
    pub(crate) outbox: Outbox,
    pub(crate) status: SyncStatusTracker,
    pub(crate) options: ClientOptions,
    pub(crate) rng: ChaCha20Rng,
    pub(crate) events: broadcast::Sender<SyncEvent>,
    pub(crate) status_tx: watch::Sender<ClientStatus>,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) first: FirstOutcome,
}

pub(crate) struct Driver {
    conn: Connection,
    rng: ChaCha20Rng,
    outbox: Outbox,
    tracker: CursorTracker,
    /// The relay the tracker (and its persisted cursor) belongs to.
    tracker_relay: Option<RelayId>,
    status: SyncStatusTracker,
    connection_status: ConnectionStatus,
    store: Store,
    transport: Arc<dyn Transport>,
    device: DeviceKey,
    device_id: DeviceId,
    device_name: String,
    keys: Arc<GroupKeys>,
    group_id: GroupId,
    options: ClientOptions,
    events: broadcast::Sender<SyncEvent>,
    status_tx: watch::Sender<ClientStatus>,
    commands: mpsc::Receiver<Command>,
    input_tx: mpsc::Sender<Input>,
    input_rx: mpsc::Receiver<Input>,
    /// Largest frame the reader accepts (the relay's announced maximum once known).
    max_frame: Arc<AtomicUsize>,

    attempt: u64,
    dial_task: Option<JoinHandle<()>>,
    next_session: u64,
    session: Option<ActiveSession>,
    /// Established (Welcome received) on the current session.
    established: bool,
    hello_request: Option<u64>,
    last_rejection: Option<WireError>,
    limits: Limits,
    relay_max: Cursor,
    next_request: u64,
    push_requests: HashMap<u64, BlobId>,
    ping_requests: HashMap<u64, ()>,
    ack_waiters: HashMap<BlobId, oneshot::Sender<Result<Receipt, ClientError>>>,
    hold_until: Option<Instant>,
    round: Option<PullRound>,
    pull_queue: VecDeque<PendingPull>,
    invite_requests: HashMap<u64, oneshot::Sender<Result<(), ClientError>>>,
    /// Device activity (pulled senders, own acknowledged pushes) not yet stored.
    device_notes: Vec<(DeviceId, u64, u64)>,
    last_rx: Instant,
    ping_due: Instant,
    first: Option<FirstOutcome>,

    /// Settled pushes not yet removed from the store.
    settled: Vec<BlobId>,
    /// The resume cursor last persisted for `tracker_relay`.
    persisted_cursor: Cursor,
    last_status: Option<ClientStatus>,
    /// Writers of ended sessions, still flushing `Bye` and closing their connection.
    closing_writers: Vec<JoinHandle<()>>,
    stopped: bool,
}

/// Longest wait on `close` for a session's writer to flush `Bye` and close its connection.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

fn wire_reason(e: &WireError) -> String {
    format!("{}: {}", e.code, e.message)
}

fn retry_hint(e: &WireError) -> Option<Duration> {
    e.retry_after_ms.map(Duration::from_millis)
}

fn now_std(now: Instant) -> std::time::Instant {
    now.into_std()
}

impl Driver {
    pub(crate) fn new(parts: DriverParts) -> Self {
        let DriverParts {
            store,
            transport,
            device,
            device_name,
            keys,
            outbox,
            status,
            options,
            rng,
            events,
            status_tx,
            commands,
            first,
        } = parts;
        let (input_tx, input_rx) = mpsc::channel(1024);
        let now = Instant::now();
        Self {
            conn: Connection::new(options.connection),
            rng,
            outbox,
            tracker: CursorTracker::new(),
            tracker_relay: None,
            status,
            connection_status: ConnectionStatus::Disconnected,
            device_id: device.device_id(),
            group_id: keys.group_id(),
            store,
            transport,
            device,
            device_name,
            keys,
            options,
            events,
            status_tx,
            commands,
            input_tx,
            input_rx,
            max_frame: Arc::new(AtomicUsize::new(DEFAULT_MAX_FRAME)),
            attempt: 0,
            dial_task: None,
            next_session: 0,
            session: None,
            established: false,
            hello_request: None,
            last_rejection: None,
            limits: Limits::DEFAULT,
            relay_max: Cursor::ZERO,
            next_request: 1,
            push_requests: HashMap::new(),
            ping_requests: HashMap::new(),
            ack_waiters: HashMap::new(),
            hold_until: None,
            round: None,
            pull_queue: VecDeque::new(),
            invite_requests: HashMap::new(),
            device_notes: Vec::new(),
            last_rx: now,
            ping_due: now,
            first: Some(first),
            settled: Vec::new(),
            persisted_cursor: Cursor::ZERO,
            last_status: None,
            closing_writers: Vec::new(),
            stopped: false,
        }
    }

    /// Runs until closed (a `Close` command, or every client handle dropped).
    pub(crate) async fn run(mut self) {
        self.connection_event(ConnectionEvent::ConnectRequested);
        self.after_batch();
        let mut commands = Vec::with_capacity(256);
        while !self.stopped {
            let deadline = self.next_deadline();
            tokio::select! {
                biased;
                input = self.input_rx.recv() => {
                    // `input_tx` lives in `self`, so the channel never closes.
                    if let Some(input) = input {
                        self.on_input(input);
                        let mut more = 0;
                        while more < 256 {
                            match self.input_rx.try_recv() {
                                Ok(input) => self.on_input(input),
                                Err(_) => break,
                            }
                            more += 1;
                        }
                    }
                }
                n = self.commands.recv_many(&mut commands, 256) => {
                    if n == 0 {
                        self.shutdown(None).await;
                    } else {
                        let batch: Vec<Command> = std::mem::take(&mut commands);
                        self.on_commands(batch).await;
                    }
                }
                () = sleep_until(deadline) => self.on_timer(),
            }
            self.after_batch();
        }
    }

    // ----- timers -----

    fn next_deadline(&self) -> Option<Instant> {
        let mut next: Option<Instant> = self.conn.poll_timeout().map(Instant::from_std);
        let mut consider = |t: Instant| {
            next = Some(next.map_or(t, |n| n.min(t)));
        };
        if self.established {
            consider(self.ping_due);
            if let Some(h) = self.hold_until
                && self.outbox.next_to_send().is_some()
            {
                consider(h);
            }
        }
        next
    }

    fn on_timer(&mut self) {
        let now = Instant::now();
        if self.conn.poll_timeout().is_some_and(|t| now_std(now) >= t) {
            self.connection_event(ConnectionEvent::TimerFired);
        }
        if self.hold_until.is_some_and(|h| now >= h) {
            self.hold_until = None;
        }
        if self.established && now >= self.ping_due {
            let silent = now.saturating_duration_since(self.last_rx);
            if silent >= self.options.ping_interval.saturating_mul(3) {
                self.session_failed("relay silent for three heartbeat intervals".into(), true);
            } else {
                let id = self.request_id();
                self.ping_requests.insert(id, ());
                self.send(Message::Ping(Ping { request_id: id }));
                self.ping_due = now + self.options.ping_interval;
            }
        }
    }

    // ----- the state machine -----

    fn connection_event(&mut self, event: ConnectionEvent) {
        let now = now_std(Instant::now());
        match self.conn.handle(event, now, &mut self.rng) {
            Ok(actions) => {
                for action in actions {
                    self.perform(action);
                }
            }
            Err(unexpected) => debug!(%unexpected, "connection event ignored"),
        }
    }

    fn perform(&mut self, action: Action) {
        match action {
            Action::Dial => self.dial(),
            Action::SendHello => self.send_hello(),
            Action::ScheduleReconnect { delay, .. } => {
                debug!(?delay, "reconnect scheduled");
            }
            Action::EmitStatus { status } => self.on_connection_status(status),
            Action::ResumeFrom { relay_max_cursor } => {
                self.relay_max = self.relay_max.max(relay_max_cursor);
                if relay_max_cursor > self.tracker.resume_cursor() {
                    self.emit(SyncEvent::BlobsAvailable {
                        cursor: relay_max_cursor,
                        sender: None,
                    });
                } else {
                    self.status.on_pull_complete();
                }
                self.start_next_pull();
            }
            Action::ResendPending => {
                self.outbox.requeue_all_in_flight();
                self.pump_sends();
            }
            Action::Close => self.teardown(true, "closed".into()),
            _ => debug!(?action, "unhandled connection action"),
        }
    }

    fn on_connection_status(&mut self, status: ConnectionStatus) {
        let first = match &status {
            ConnectionStatus::Connected => {
                self.status.on_connected();
                Some(Ok(()))
            }
            // Offline is a normal state: the client works from the outbox.
            ConnectionStatus::Reconnecting { .. } | ConnectionStatus::Disconnected => {
                self.status.on_disconnected();
                Some(Ok(()))
            }
            ConnectionStatus::Failed { reason } => {
                self.status.on_connection_rejected();
                warn!(%reason, "relay refused this device; not retrying");
                Some(Err(match self.last_rejection.take() {
                    Some(e) => ClientError::Rejected {
                        blob_id: None,
                        retry_after: retry_hint(&e),
                        code: e.code,
                        message: e.message,
                    },
                    None => ClientError::NotConnected,
                }))
            }
            _ => None,
        };
        self.connection_status = status;
        if let Some(result) = first
            && let Some(tx) = self.first.take()
        {
            // Callers see the new state as soon as `connect` returns.
            self.publish_status();
            let _ = tx.send(result);
        }
    }

    fn dial(&mut self) {
        self.attempt = self.attempt.wrapping_add(1);
        let attempt = self.attempt;
        let transport = Arc::clone(&self.transport);
        let device = self.device.clone();
        let tx = self.input_tx.clone();
        if let Some(old) = self.dial_task.take() {
            old.abort();
        }
        self.dial_task = Some(tokio::spawn(async move {
            let result = transport.connect(&device).await;
            let _ = tx.send(Input::Dialed { attempt, result }).await;
        }));
    }

    fn on_dialed(&mut self, attempt: u64, result: Result<Session, TransportError>) {
        let current = attempt == self.attempt
            && matches!(self.conn.state(), ConnectionState::Connecting { .. });
        match result {
            Ok(mut session) if !current => {
                if let Some(closer) = session.take_closer() {
                    tokio::spawn(closer());
                }
            }
            Err(_) if !current => {}
            Ok(session) => {
                self.install_session(session);
                self.connection_event(ConnectionEvent::TransportConnected);
            }
            Err(e) => {
                debug!(error = %e, "dial failed");
                self.connection_event(ConnectionEvent::TransportFailed {
                    reason: e.to_string(),
                });
            }
        }
    }

    fn install_session(&mut self, mut session: Session) {
        self.next_session = self.next_session.wrapping_add(1);
        let id = self.next_session;
        self.load_tracker(session.relay_id);
        let closer = session.take_closer();
        let (wtx, wrx) = mpsc::unbounded_channel();
        let input = self.input_tx.clone();
        let writer_task = tokio::spawn(write_loop(id, session.writer, wrx, closer, input.clone()));
        let reader_task = tokio::spawn(read_loop(
            id,
            session.reader,
            Arc::clone(&self.max_frame),
            input,
        ));
        self.session = Some(ActiveSession {
            id,
            relay_id: session.relay_id,
            binding: session.binding,
            writer: wtx,
            writer_task,
            reader_task,
        });
        self.established = false;
        self.last_rx = Instant::now();
    }

    /// Switches the cursor tracker to `relay` (cursors are per relay).
    fn load_tracker(&mut self, relay: RelayId) {
        if self.tracker_relay == Some(relay) {
            return;
        }
        self.flush_store();
        let cursor = match self.store.cursor(&self.group_id, &relay) {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "could not read the stored cursor; starting from 0");
                Cursor::ZERO
            }
        };
        self.tracker = CursorTracker::starting_at(cursor);
        self.tracker_relay = Some(relay);
        self.persisted_cursor = cursor;
    }

    fn send_hello(&mut self) {
        let Some(session) = &self.session else {
            self.connection_event(ConnectionEvent::TransportFailed {
                reason: "no session to send Hello on".into(),
            });
            return;
        };
        let challenge = HelloChallenge::new(
            &session.binding,
            session.relay_id.as_bytes(),
            &self.device_id,
            &self.group_id,
        );
        let signature = self.keys.sign_hello(&challenge);
        let request_id = self.request_id();
        self.hello_request = Some(request_id);
        let hello = Hello {
            request_id,
            version: PROTOCOL_VERSION,
            device_name: self.device_name.clone(),
            group_id: self.group_id,
            last_cursor: self.tracker.resume_cursor(),
            auth_signature: signature.0,
            admission_token: None,
        };
        self.send(Message::Hello(hello));
    }

    fn request_id(&mut self) -> u64 {
        let id = self.next_request;
        self.next_request = self.next_request.wrapping_add(1).max(1);
        id
    }

    /// Queues a frame for the session's writer.
    fn send(&mut self, msg: Message) {
        let Some(session) = &self.session else {
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

    /// Ends the current session (if any) and everything that waited on it. Pending pushes stay
    /// in the outbox.
    fn teardown(&mut self, bye: bool, reason: String) {
        if let Some(task) = self.dial_task.take() {
            task.abort();
        }
        let was_established = self.established;
        if let Some(session) = self.session.take() {
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
            self.closing_writers.retain(|h| !h.is_finished());
            self.closing_writers.push(session.writer_task);
        }
        self.established = false;
        self.hello_request = None;
        self.push_requests.clear();
        self.ping_requests.clear();
        self.outbox.requeue_all_in_flight();
        for (blob_id, waiter) in self.ack_waiters.drain() {
            self.status.on_push_failed(blob_id);
            let _ = waiter.send(Err(ClientError::Offline { blob_id }));
        }
        if let Some(round) = self.round.take() {
            self.finish_round(round, Some(ClientError::NotConnected));
        }
        for waiter in self.pull_queue.drain(..) {
            waiter.reply.fail(ClientError::NotConnected);
        }
        for (_, waiter) in self.invite_requests.drain() {
            let _ = waiter.send(Err(ClientError::NotConnected));
        }
        if was_established {
            info!(%reason, "session ended");
            self.emit(SyncEvent::Disconnected { reason });
        }
    }

    /// The session broke (read/write failure, protocol violation, silence): tear it down and
    /// let the state machine schedule a reconnect.
    fn session_failed(&mut self, reason: String, bye: bool) {
        let established = self.established;
        self.teardown(bye, reason.clone());
        if established {
            self.connection_event(ConnectionEvent::Disconnected { reason });
        } else {
            self.connection_event(ConnectionEvent::TransportFailed { reason });
        }
    }

    // ----- inputs -----

    fn on_input(&mut self, input: Input) {
        match input {
            Input::Dialed { attempt, result } => self.on_dialed(attempt, result),
            Input::Frame { session, msg } => {
                if self.session.as_ref().is_some_and(|s| s.id == session) {
                    self.last_rx = Instant::now();
                    self.on_message(msg);
                }
            }
            Input::ReadEnded { session, reason } | Input::WriteFailed { session, reason } => {
                if self.session.as_ref().is_some_and(|s| s.id == session) {
                    self.session_failed(reason, false);
                }
            }
        }
    }

    fn on_message(&mut self, msg: Message) {
        if !self.established {
            return self.on_handshake_message(msg);
        }
        match msg {
            Message::PushAck(ack) => self.on_push_ack(ack),
            Message::PullResponse(resp) => self.on_pull_response(resp),
            Message::Notify(n) => {
                self.relay_max = self.relay_max.max(n.cursor);
                if n.sender != self.device_id && n.cursor > self.tracker.resume_cursor() {
                    self.status.on_remote_change();
                    self.emit(SyncEvent::BlobsAvailable {
                        cursor: n.cursor,
                        sender: Some(n.sender),
                    });
                }
            }
            Message::Pong(p) => {
                self.ping_requests.remove(&p.request_id);
            }
            Message::InviteStored(stored) => {
                match self.invite_requests.remove(&stored.request_id) {
                    Some(waiter) => {
                        let _ = waiter.send(Ok(()));
                    }
                    None => {
                        self.session_failed("InviteStored for no InvitePut".into(), true);
                    }
                }
            }
            Message::Error(e) => self.on_error(e),
            Message::Bye(b) => {
                let reason = format!(
                    "relay ended the session{}",
                    b.reason.map(|r| format!(": {r}")).unwrap_or_default()
                );
                self.session_failed(reason, false);
            }
            other => {
                let reason = format!("unexpected {} from relay", other.message_type().name());
                self.session_failed(reason, true);
            }
        }
    }

    fn on_handshake_message(&mut self, msg: Message) {
        let Some(hello_id) = self.hello_request else {
            return self.session_failed("relay spoke before Hello".into(), true);
        };
        match msg {
            Message::Welcome(w) if w.request_id == hello_id => {
                let relay_ok = self
                    .session
                    .as_ref()
                    .is_some_and(|s| *s.relay_id.as_bytes() == w.relay_id);
                if !relay_ok {
                    return self.session_failed("Welcome names another relay".into(), true);
                }
                self.limits = w.limits;
                let max_frame = usize::try_from(w.limits.max_frame_bytes)
                    .unwrap_or(DEFAULT_MAX_FRAME)
                    .max(DEFAULT_MAX_FRAME);
                self.max_frame.store(max_frame, Ordering::Relaxed);
                self.established = true;
                self.hello_request = None;
                self.last_rejection = None;
                let now = Instant::now();
                self.ping_due = now + self.options.ping_interval;
                self.relay_max = w.max_cursor;
                if w.max_cursor < self.tracker.resume_cursor() {
                    // The relay lost blobs this device already has (restored from an old
                    // backup?): new blobs at cursors up to our resume cursor would be missed.
                    warn!(
                        relay_max = %w.max_cursor,
                        resume = %self.tracker.resume_cursor(),
                        "relay is behind this device's resume cursor"
                    );
                }
                if let Some(relay) = self.session.as_ref().map(|s| s.relay_id) {
                    self.emit(SyncEvent::Connected {
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
                self.last_rejection = Some(e);
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

    fn on_push_ack(&mut self, ack: PushAck) {
        let requested = self.push_requests.remove(&ack.request_id);
        if requested.is_some_and(|b| b != ack.blob_id) {
            return self.session_failed("PushAck names another blob".into(), true);
        }
        self.relay_max = self.relay_max.max(ack.cursor);
        match self.outbox.ack(&ack.blob_id, ack.cursor) {
            AckOutcome::Acked { .. } => {
                self.settled.push(ack.blob_id);
                if let Err(e) = self.tracker.own_push_acked(ack.cursor) {
                    // Not recorded as own: it is pulled (and skipped as own) later instead.
                    debug!(error = %e, "own push not recorded in the cursor tracker");
                }
                self.status.on_push_acked(ack.blob_id);
                self.device_notes.push((self.device_id, unix_ms(), 1));
                let receipt = Receipt {
                    blob_id: ack.blob_id,
                    cursor: ack.cursor,
                };
                if let Some(waiter) = self.ack_waiters.remove(&ack.blob_id) {
                    self.publish_status();
                    let _ = waiter.send(Ok(receipt));
                }
                self.emit(SyncEvent::PushAcked { receipt });
            }
            _ => debug!("duplicate PushAck ignored"),
        }
    }

    fn on_error(&mut self, e: WireError) {
        let Some(request_id) = e.request_id else {
            let reason = wire_reason(&e);
            return self.session_failed(reason, false);
        };
        if let Some(blob_id) = self.push_requests.remove(&request_id) {
            return self.on_push_refused(blob_id, e);
        }
        if self
            .round
            .as_ref()
            .is_some_and(|r| r.request_id == request_id)
        {
            if let Some(round) = self.round.take() {
                let err = ClientError::Rejected {
                    blob_id: None,
                    retry_after: retry_hint(&e),
                    code: e.code,
                    message: e.message,
                };
                self.finish_round(round, Some(err));
            }
            return self.start_next_pull();
        }
        if self.ping_requests.remove(&request_id).is_some() {
            return;
        }
        if let Some(waiter) = self.invite_requests.remove(&request_id) {
            let _ = waiter.send(Err(ClientError::Rejected {
                blob_id: None,
                retry_after: retry_hint(&e),
                code: e.code,
                message: e.message,
            }));
            return;
        }
        let reason = format!("error for an unknown request: {}", wire_reason(&e));
        self.session_failed(reason, true);
    }

    fn on_push_refused(&mut self, blob_id: BlobId, e: WireError) {
        let waiter = self.ack_waiters.remove(&blob_id);
        if e.is_retryable() {
            let wait = retry_hint(&e).unwrap_or(self.options.default_retry);
            match self.outbox.reject(&blob_id, false) {
                RejectOutcome::WillRetry => {
                    let until = Instant::now() + wait;
                    self.hold_until = Some(self.hold_until.map_or(until, |h| h.max(until)));
                    self.status.on_push_failed(blob_id);
                    info!(code = %e.code, ?wait, "push deferred by the relay; stays queued");
                    self.emit(SyncEvent::PushDeferred {
                        blob_id,
                        code: e.code,
                        retry_after: wait,
                    });
                    if let Some(w) = waiter {
                        let _ = w.send(Err(ClientError::Deferred {
                            blob_id,
                            code: e.code,
                            message: e.message,
                            retry_after: Some(wait),
                        }));
                    }
                }
                _ => debug!("refusal for a push no longer queued"),
            }
        } else {
            match self.outbox.reject(&blob_id, true) {
                RejectOutcome::Failed { .. } => {
                    self.settled.push(blob_id);
                    self.status.on_push_rejected(blob_id);
                    warn!(code = %e.code, "push refused by the relay; dropped from the outbox");
                    self.emit(SyncEvent::PushRejected {
                        blob_id,
                        code: e.code,
                        message: e.message.clone(),
                    });
                    if let Some(w) = waiter {
                        let _ = w.send(Err(ClientError::Rejected {
                            blob_id: Some(blob_id),
                            retry_after: retry_hint(&e),
                            code: e.code,
                            message: e.message,
                        }));
                    }
                }
                _ => debug!("refusal for a push no longer queued"),
            }
        }
    }

    // ----- pushes -----

    fn in_flight_cap(&self) -> usize {
        let relay = usize::try_from(self.limits.max_in_flight).unwrap_or(usize::MAX);
        // Leave room for a pull and a ping within the relay's limit.
        self.options
            .max_in_flight
            .min(relay.saturating_sub(2))
            .max(1)
    }

    fn pump_sends(&mut self) {
        if !self.established || self.hold_until.is_some() {
            return;
        }
        let cap = self.in_flight_cap();
        while self.push_requests.len() < cap {
            let Some(entry) = self.outbox.send_next() else {
                break;
            };
            let request_id = self.request_id();
            self.push_requests.insert(request_id, entry.blob_id());
            self.send(Message::Push(Push {
                request_id,
                blob_id: entry.blob_id(),
                payload: entry.payload().clone().into(),
                ttl_secs: entry.ttl_secs(),
            }));
        }
    }

    fn max_blob(&self) -> usize {
        usize::try_from(self.limits.max_blob_bytes).unwrap_or(usize::MAX)
    }

    async fn on_commands(&mut self, batch: Vec<Command>) {
        let mut accepted: Vec<(StoredPush, PushReply)> = Vec::new();
        for cmd in batch {
            match cmd {
                Command::Push {
                    blob_id,
                    payload,
                    ttl_secs,
                    created_ms,
                    reply,
                } => {
                    if payload.len() > self.max_blob() {
                        let err = ClientError::TooLarge {
                            len: payload.len(),
                            max: self.max_blob(),
                        };
                        reply_err(reply, err);
                        continue;
                    }
                    match self.outbox.enqueue(blob_id, payload.clone(), ttl_secs) {
                        Ok(()) => accepted.push((
                            StoredPush {
                                blob_id,
                                payload,
                                ttl_secs,
                                created_ms,
                            },
                            reply,
                        )),
                        Err(OutboxError::Full { entries, bytes }) => {
                            reply_err(reply, ClientError::OutboxFull { entries, bytes });
                        }
                        Err(OutboxError::TooLarge { len, max_bytes }) => {
                            reply_err(
                                reply,
                                ClientError::TooLarge {
                                    len,
                                    max: max_bytes,
                                },
                            );
                        }
                        Err(e) => reply_err(reply, ClientError::Protocol(e.to_string())),
                    }
                }
                Command::Pull { reply } => self.on_pull_request(PendingPull {
                    after: None,
                    reply: RoundReply::Record(reply),
                }),
                Command::PullAfter { after, reply } => self.on_pull_request(PendingPull {
                    after: Some(after),
                    reply: RoundReply::Reread(reply),
                }),
                Command::PullUncommitted { reply } => self.on_pull_request(PendingPull {
                    after: None,
                    reply: RoundReply::Batch(reply),
                }),
                Command::CommitPull {
                    relay,
                    ranges,
                    complete,
                    count,
                    senders,
                    reply,
                } => {
                    let result = self.commit_pull(relay, &ranges, complete, count, senders);
                    let _ = reply.send(result);
                }
                Command::InvitePut {
                    lookup_id,
                    sealed,
                    ttl_secs,
                    reply,
                } => self.on_invite_put(lookup_id, sealed, ttl_secs, reply),
                Command::Close { reply } => {
                    self.commit_pushes(accepted);
                    self.shutdown(Some(reply)).await;
                    return;
                }
            }
        }
        self.commit_pushes(accepted);
    }

    /// Makes accepted pushes durable (one transaction), then answers their callers.
    fn commit_pushes(&mut self, accepted: Vec<(StoredPush, PushReply)>) {
        if accepted.is_empty() {
            return;
        }
        let rows: Vec<StoredPush> = accepted.iter().map(|(p, _)| p.clone()).collect();
        if let Err(e) = self.store.insert_pushes(&self.group_id, &rows) {
            warn!(error = %e, "could not store pushes; refusing them");
            let text = e.to_string();
            for (push, reply) in accepted {
                // Not durable, so not queued: take it back out of the in-memory outbox.
                self.outbox.reject(&push.blob_id, true);
                reply_err(reply, ClientError::Store(StoreError::Failed(text.clone())));
            }
            return;
        }
        let session_possible = matches!(
            self.conn.state(),
            ConnectionState::Connecting { .. }
                | ConnectionState::Handshaking { .. }
                | ConnectionState::Connected { .. }
        );
        for (push, _) in &accepted {
            self.status.on_push_queued(push.blob_id);
        }
        self.publish_status();
        for (push, reply) in accepted {
            match reply {
                PushReply::Durable(tx) => {
                    let _ = tx.send(Ok(push.blob_id));
                }
                PushReply::Ack(tx) if session_possible => {
                    self.ack_waiters.insert(push.blob_id, tx);
                }
                PushReply::Ack(tx) => {
                    let _ = tx.send(Err(ClientError::Offline {
                        blob_id: push.blob_id,
                    }));
                }
            }
        }
    }

    // ----- pulls -----

    fn on_pull_request(&mut self, pull: PendingPull) {
        match self.conn.state() {
            ConnectionState::Connected { .. }
            | ConnectionState::Connecting { .. }
            | ConnectionState::Handshaking { .. } => {
                self.pull_queue.push_back(pull);
                self.start_next_pull();
            }
            _ => {
                pull.reply.fail(ClientError::NotConnected);
            }
        }
    }

    // ----- invite mailbox -----

    fn on_invite_put(
        &mut self,
        lookup_id: String,
        sealed: Vec<u8>,
        ttl_secs: u32,
        reply: oneshot::Sender<Result<(), ClientError>>,
    ) {
        if !self.established {
            let _ = reply.send(Err(ClientError::NotConnected));
            return;
        }
        let request_id = self.request_id();
        self.invite_requests.insert(request_id, reply);
        self.send(Message::InvitePut(InvitePut {
            request_id,
            lookup_id,
            sealed: sealed.into(),
            ttl_secs,
        }));
    }

    fn start_next_pull(&mut self) {
        if !self.established || self.round.is_some() {
            return;
        }
        let Some(PendingPull { after, reply }) = self.pull_queue.pop_front() else {
            return;
        };
        let after = after.unwrap_or_else(|| self.tracker.resume_cursor());
        let request_id = self.request_id();
        self.round = Some(PullRound {
            request_id,
            after,
            ranges: Vec::new(),
            blobs: Vec::new(),
            reply,
        });
        self.send_pull(request_id, after);
    }

    fn send_pull(&mut self, request_id: u64, after: Cursor) {
        self.send(Message::Pull(Pull {
            request_id,
            after,
            limit: self.options.pull_page.max(1),
            max_bytes: None,
        }));
    }

    fn on_pull_response(&mut self, resp: PullResponse) {
        let Some(mut round) = self.round.take() else {
            return self.session_failed("PullResponse without a pull".into(), true);
        };
        if round.request_id != resp.request_id {
            self.round = Some(round);
            return self.session_failed("PullResponse for another request".into(), true);
        }
        // Entries must be ascending and after the page's cursor.
        let mut prev = round.after;
        for e in &resp.entries {
            if e.cursor <= prev {
                self.round = Some(round);
                return self.session_failed("PullResponse out of order".into(), true);
            }
            prev = e.cursor;
        }
        if resp.has_more && resp.entries.is_empty() {
            self.round = Some(round);
            return self.session_failed("empty PullResponse claims more".into(), true);
        }
        self.relay_max = self.relay_max.max(resp.max_cursor).max(prev);
        for entry in resp.entries {
            let own = entry.sender == self.device_id || self.tracker.is_own(entry.cursor);
            if own && round.reply.skips_own() && !self.options.deliver_own {
                continue;
            }
            match open(
                &self.keys,
                &self.group_id,
                &entry.blob_id,
                &entry.sender,
                &entry.payload,
            ) {
                Ok(opened) => round.blobs.push(Blob {
                    data: opened.plaintext,
                    sender: opened.sender,
                    cursor: entry.cursor,
                    blob_id: entry.blob_id,
                    timestamp_ms: entry.timestamp_ms,
                }),
                Err(error) => {
                    warn!(cursor = %entry.cursor, %error, "pulled blob refused; skipped");
                    self.emit(SyncEvent::BlobRejected {
                        cursor: entry.cursor,
                        blob_id: entry.blob_id,
                        sender: entry.sender,
                        error,
                    });
                }
            }
        }
        // With has_more = false the page and max_cursor come from one snapshot: everything in
        // (after, max_cursor] was returned (holes are expired or deleted blobs).
        let through = if resp.has_more {
            prev
        } else {
            prev.max(resp.max_cursor)
        };
        round.ranges.push((round.after, through));
        if resp.has_more {
            round.after = through;
            round.request_id = self.request_id();
            let (id, after) = (round.request_id, round.after);
            self.round = Some(round);
            self.send_pull(id, after);
        } else {
            self.finish_round(round, None);
            self.start_next_pull();
        }
    }

    /// Hands a round's blobs to its caller and, only if the caller took them, records their
    /// cursors (`Pull`), or leaves that to `CommitPull` (`PullUncommitted`). With `error` and no
    /// blobs collected, reports the error instead.
    fn finish_round(&mut self, round: PullRound, error: Option<ClientError>) {
        let PullRound {
            ranges,
            blobs,
            reply,
            ..
        } = round;
        if reply.is_closed() {
            // The caller gave up: nothing is delivered, nothing is recorded.
            return;
        }
        let complete = error.is_none();
        let blobs = match error {
            Some(e) if blobs.is_empty() && ranges.is_empty() => return reply.fail(e),
            _ => blobs,
        };
        match reply {
            RoundReply::Reread(tx) => {
                let _ = tx.send(Ok(blobs));
            }
            RoundReply::Record(tx) => {
                let count = blobs.len();
                let senders = blobs_senders(&blobs);
                let resume = self.record_pulled(&ranges, complete, senders);
                let _ = tx.send(Ok(blobs));
                self.emit(SyncEvent::Received {
                    count,
                    resume_cursor: resume,
                });
            }
            RoundReply::Batch(tx) => {
                // What the commit will give, computed on a copy: nothing is recorded yet.
                let mut preview = self.tracker.clone();
                for (after, through) in &ranges {
                    let _ = preview.received_range(*after, *through);
                }
                let _ = tx.send(Ok(PullBatch {
                    blobs,
                    resume_cursor: preview.resume_cursor(),
                    relay: self.tracker_relay,
                    ranges,
                    complete,
                }));
            }
        }
    }

    /// Records pulled ranges and their senders' activity; returns the resume cursor.
    fn record_pulled(
        &mut self,
        ranges: &[(Cursor, Cursor)],
        complete: bool,
        senders: Vec<(DeviceId, u64, u64)>,
    ) -> Cursor {
        self.device_notes.extend(senders);
        for (after, through) in ranges {
            if let Err(e) = self.tracker.received_range(*after, *through) {
                debug!(error = %e, "pulled range not recorded");
            }
        }
        if complete && self.tracker.resume_cursor() >= self.relay_max {
            self.status.on_pull_complete();
        }
        self.publish_status();
        self.tracker.resume_cursor()
    }

    /// Records a `PullUncommitted` batch and persists the resume cursor before answering. A
    /// batch pulled from another relay (the client switched since) records nothing: its blobs
    /// come again from this relay's log.
    fn commit_pull(
        &mut self,
        relay: Option<RelayId>,
        ranges: &[(Cursor, Cursor)],
        complete: bool,
        count: usize,
        senders: Vec<(DeviceId, u64, u64)>,
    ) -> Result<Cursor, ClientError> {
        if relay.is_none() || relay != self.tracker_relay {
            return Ok(self.tracker.resume_cursor());
        }
        let resume = self.record_pulled(ranges, complete, senders);
        self.flush_store();
        if self.persisted_cursor != resume {
            return Err(ClientError::Store(StoreError::Failed(
                "the resume cursor could not be stored".into(),
            )));
        }
        self.emit(SyncEvent::Received {
            count,
            resume_cursor: resume,
        });
        Ok(resume)
    }

    // ----- bookkeeping -----

    fn emit(&self, event: SyncEvent) {
        // No subscribers is fine.
        let _ = self.events.send(event);
    }

    /// Removes settled pushes and stores the resume cursor, in one transaction.
    fn flush_store(&mut self) {
        if !self.device_notes.is_empty() {
            let notes = std::mem::take(&mut self.device_notes);
            // Bookkeeping only: a failure loses activity times, never data.
            if let Err(e) = self.store.note_devices(&self.group_id, &notes) {
                warn!(error = %e, "could not record device activity");
            }
        }
        let resume = self.tracker.resume_cursor();
        let cursor_changed = resume != self.persisted_cursor;
        if self.settled.is_empty() && !cursor_changed {
            return;
        }
        let cursor = match (&self.tracker_relay, cursor_changed) {
            (Some(relay), true) => Some((&self.group_id, relay, resume)),
            _ => None,
        };
        match self.store.settle(&self.settled, cursor) {
            Ok(()) => {
                self.settled.clear();
                if cursor.is_some() {
                    self.persisted_cursor = resume;
                }
            }
            // Kept for the next attempt; at worst a settled push is re-sent (idempotent).
            Err(e) => warn!(error = %e, "could not update the local store"),
        }
    }

    fn after_batch(&mut self) {
        self.flush_store();
        self.pump_sends();
        self.publish_status();
    }

    fn publish_status(&mut self) {
        let status = ClientStatus {
            sync: self.status.status(),
            connection: self.connection_status.clone(),
            outbox_len: self.outbox.len(),
            resume_cursor: self.tracker.resume_cursor(),
            relay_max_cursor: self.relay_max,
            device_id: self.device_id,
            group_id: self.group_id,
        };
        if self.last_status.as_ref() == Some(&status) {
            return;
        }
        let changed_for_user = self
            .last_status
            .as_ref()
            .is_none_or(|s| s.sync != status.sync || s.connection != status.connection);
        self.last_status = Some(status.clone());
        self.status_tx.send_replace(status.clone());
        if changed_for_user {
            self.emit(SyncEvent::StatusChanged(status));
        }
    }

    async fn shutdown(&mut self, reply: Option<oneshot::Sender<()>>) {
        self.connection_event(ConnectionEvent::CloseRequested);
        // Close was already performed by the state machine unless it was disconnected.
        self.teardown(true, "client closed".into());
        self.flush_store();
        for (blob_id, waiter) in self.ack_waiters.drain() {
            let _ = waiter.send(Err(ClientError::Offline { blob_id }));
        }
        if let Some(first) = self.first.take() {
            let _ = first.send(Err(ClientError::Closed));
        }
        // Let the last session deliver its `Bye` and close its connection (bounded).
        for writer in self.closing_writers.drain(..) {
            let _ = tokio::time::timeout(CLOSE_WAIT, writer).await;
        }
        self.transport.shutdown().await;
        self.publish_status();
        self.stopped = true;
        if let Some(reply) = reply {
            let _ = reply.send(());
        }
    }
}

/// `(sender, latest relay timestamp, blob count)` per sender of a pull's blobs.
pub(crate) fn blobs_senders(blobs: &[Blob]) -> Vec<(DeviceId, u64, u64)> {
    let mut out: Vec<(DeviceId, u64, u64)> = Vec::new();
    for blob in blobs {
        match out.iter_mut().find(|(d, _, _)| *d == blob.sender) {
            Some(entry) => {
                entry.1 = entry.1.max(blob.timestamp_ms);
                entry.2 += 1;
            }
            None => out.push((blob.sender, blob.timestamp_ms, 1)),
        }
    }
    out
}

fn reply_err(reply: PushReply, err: ClientError) {
    match reply {
        PushReply::Durable(tx) => {
            let _ = tx.send(Err(err));
        }
        PushReply::Ack(tx) => {
            let _ = tx.send(Err(err));
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Reads frames and reports them; the header is checked before the body is read.
async fn read_loop(
    session: u64,
    reader: SessionReader,
    max_frame: Arc<AtomicUsize>,
    input: mpsc::Sender<Input>,
) {
    let mut reader = BufReader::with_capacity(64 * 1024, reader);
    let reason = loop {
        let mut header = [0u8; FRAME_HEADER_LEN];
        if let Err(e) = reader.read_exact(&mut header).await {
            break if e.kind() == std::io::ErrorKind::UnexpectedEof {
                "relay closed the stream".to_string()
            } else {
                format!("read failed: {e}")
            };
        }
        let codec = FrameCodec::new(max_frame.load(Ordering::Relaxed));
        let len = match codec.decode_header(&header) {
            Ok(Some(len)) => len,
            Ok(None) => break "short frame header".to_string(),
            Err(e) => break format!("bad frame from relay: {e}"),
        };
        let mut body = BytesMut::zeroed(len);
        if let Err(e) = reader.read_exact(&mut body).await {
            break format!("read failed: {e}");
        }
        match codec.decode_body(&body) {
            Ok(msg) => {
                if input.send(Input::Frame { session, msg }).await.is_err() {
                    return;
                }
            }
            Err(e) => break format!("bad frame from relay: {e}"),
        }
    };
    let _ = input.send(Input::ReadEnded { session, reason }).await;
}

/// Writes queued frames, coalescing those that are ready together into one flush.
async fn write_loop(
    session: u64,
    writer: SessionWriter,
    mut frames: mpsc::UnboundedReceiver<WriterMsg>,
    closer: Option<SessionCloser>,
    input: mpsc::Sender<Input>,
) {
    let mut writer = BufWriter::with_capacity(64 * 1024, writer);
    let mut failed = None;
    'outer: while let Some(msg) = frames.recv().await {
        let mut next = Some(msg);
        while let Some(msg) = next.take() {
            match msg {
                WriterMsg::Frame(frame) => {
                    if let Err(e) = writer.write_all(&frame).await {
                        failed = Some(format!("write failed: {e}"));
                        break 'outer;
                    }
                }
                WriterMsg::Shutdown => break 'outer,
            }
            next = frames.try_recv().ok();
        }
        if let Err(e) = writer.flush().await {
            failed = Some(format!("write failed: {e}"));
            break;
        }
    }
    let _ = writer.flush().await;
    let _ = writer.shutdown().await;
    if let Some(reason) = failed {
        let _ = input.send(Input::WriteFailed { session, reason }).await;
    }
    if let Some(closer) = closer {
        closer().await;
    }
}
