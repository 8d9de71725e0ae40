//! The background task behind a [`SyncClient`](crate::SyncClient).
//!
//! One task owns all mutable sync state: the sans-IO [`Session`] from sync-core (connection
//! state machine, handshake checks, push window, pull paging, heartbeat), the cursor tracker,
//! the status tracker and the [`Store`]. The driver is the session's shell: it feeds in what
//! happened — commands from the client handles, frames and failures from the session's I/O
//! tasks, timers — carries out what the session transmits, and turns what the session reports
//! into opened blobs, stored state and the app's events. It never blocks on the network: a
//! reader task turns the stream into messages, a writer task turns frames into bytes, and dials
//! run in their own tasks. State changes are batched: commands and inputs that are ready
//! together are handled together and settled in one store transaction.
//!
//! This file holds the event loop, the driver's state, the session's outputs and the store
//! bookkeeping; the rest is split by job:
//! - `session`: dials, a connection's reader and writer, and closing it;
//! - `inbound`: what the I/O tasks report, fed into the session;
//! - `push`: pushes accepted, made durable, and settled by the relay's answer;
//! - `pull`: pull rounds, opening and checking what they bring, the cursor tracker, committed
//!   batches;
//! - `command`: what the client handles ask for, handled a batch at a time;
//! - `invite`: requests answered by a plain acknowledgement (invites in the relay's mailbox,
//!   content registrations);
//! - `report`: events and the status snapshot the app sees;
//! - `io`: the session's reader and writer tasks.

mod command;
mod inbound;
mod invite;
mod io;
mod membership;
mod pull;
mod push;
mod report;
mod session;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use rand_chacha::ChaCha20Rng;
#[cfg(test)]
pub(crate) use sync_core::MAX_RETRY_HINT;
use sync_core::{
    ConnectionStatus, Input as SessionInput, Outbox, Session, SessionConfig, SessionEvent,
    SyncStatusTracker, Transmit, retry_hint,
};
use sync_crypto::{DeviceKey, GroupKeys};
use sync_types::{BlobId, DeviceId, GroupId, WireError, unix_ms};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::error::ClientError;
use crate::integrity::DELIVERED_RETENTION_FLOOR;
use crate::membership::GroupView;
use crate::store::{Delivered, Store};
use crate::transport::Transport;
use crate::types::{ClientOptions, ClientStatus, SyncEvent};

use self::io::Input;
use self::membership::Membership;
pub(crate) use self::membership::MembershipOp;
use self::pull::PullState;
use self::push::PushPipeline;
use self::report::Reports;
use self::session::IoState;

pub(crate) use self::command::{Command, PushReply};
pub(crate) use self::pull::blobs_senders;

/// What the first connection attempt came to (for `SyncClient::connect`).
pub(crate) type FirstOutcome = oneshot::Sender<Result<(), ClientError>>;

/// Everything the driver starts with.
pub(crate) struct DriverParts {
    pub(crate) store: Store,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) device: DeviceKey,
    pub(crate) keys: SharedKeys,
    pub(crate) outbox: Outbox,
    pub(crate) status: SyncStatusTracker,
    pub(crate) options: ClientOptions,
    pub(crate) rng: ChaCha20Rng,
    pub(crate) events: broadcast::Sender<SyncEvent>,
    pub(crate) status_tx: watch::Sender<ClientStatus>,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) first: FirstOutcome,
    /// The next sequence number the client seals a push with.
    pub(crate) next_seq: Arc<AtomicU64>,
}

/// The group keys, shared by the client handles (which seal) and the driver (which opens,
/// signs `Hello` and adds the epochs that rotations bring).
pub(crate) type SharedKeys = Arc<RwLock<GroupKeys>>;

/// This device as a member of the group.
struct Member {
    device: DeviceKey,
    device_id: DeviceId,
    keys: SharedKeys,
    group_id: GroupId,
    /// The next sequence number the client seals a push with.
    next_seq: Arc<AtomicU64>,
}

impl Member {
    /// The group keys, for reading.
    fn keys(&self) -> RwLockReadGuard<'_, GroupKeys> {
        self.keys.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The group keys, to add epochs.
    fn keys_mut(&self) -> RwLockWriteGuard<'_, GroupKeys> {
        self.keys.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The background task's state, in parts that belong together (see the module docs).
pub(crate) struct Driver {
    session: Session,
    rng: ChaCha20Rng,
    me: Member,
    options: ClientOptions,
    store: Store,
    transport: Arc<dyn Transport>,
    commands: mpsc::Receiver<Command>,
    input_tx: mpsc::Sender<Input>,
    input_rx: mpsc::Receiver<Input>,
    io: IoState,
    pushes: PushPipeline,
    pulls: PullState,
    reports: Reports,
    group: Membership,
    first: Option<FirstOutcome>,
    stopped: bool,
}

/// Longest wait on `close` for a session's writer to flush `Bye` and close its connection.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// The relay's refusal `e` as the caller's error.
fn rejected(e: WireError, blob_id: Option<BlobId>) -> ClientError {
    ClientError::Rejected {
        blob_id,
        retry_after: retry_hint(&e),
        code: e.code,
        message: e.message,
    }
}

impl Driver {
    pub(crate) fn new(parts: DriverParts) -> Self {
        let DriverParts {
            store,
            transport,
            device,
            keys,
            outbox,
            status,
            options,
            rng,
            events,
            status_tx,
            commands,
            first,
            next_seq,
        } = parts;
        let (input_tx, input_rx) = mpsc::channel(1024);
        let group_id = keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .group_id();
        // The records this device checked before; if they no longer check (a store from a
        // build with other rules), the group's records are read afresh from the relay.
        let view = store
            .group_records(&group_id)
            .ok()
            .and_then(|records| GroupView::load(group_id, &records).ok())
            .unwrap_or_else(|| GroupView::new(group_id));
        let config = SessionConfig {
            connection: options.connection,
            ping_interval: options.ping_interval,
            max_in_flight: options.max_in_flight,
            pull_page: options.pull_page,
            pull_round_bytes: options.pull_round_bytes,
            default_retry: options.default_retry,
        };
        Self {
            session: Session::new(config, group_id, outbox),
            rng,
            me: Member {
                device_id: device.device_id(),
                group_id,
                device,
                keys,
                next_seq,
            },
            options,
            store,
            transport,
            commands,
            input_tx,
            input_rx,
            io: IoState::new(),
            pushes: PushPipeline::new(),
            pulls: PullState::new(),
            reports: Reports::new(status, events, status_tx),
            group: Membership::new(view),
            first: Some(first),
            stopped: false,
        }
    }

    /// Runs until closed (a `Close` command, or every client handle dropped).
    pub(crate) async fn run(mut self) {
        if let Err(e) = self.store.forget_delivered(unix_ms()) {
            warn!(error = %e, "could not forget old delivered blob ids");
        }
        self.feed(SessionInput::Connect);
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

    // ----- the session -----

    /// Feeds one input into the session (its outputs are carried out by [`Driver::drive`]).
    fn feed(&mut self, input: SessionInput) {
        self.session
            .handle(input, Instant::now().into_std(), &mut self.rng);
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.session.poll_timeout().map(Instant::from_std)
    }

    fn on_timer(&mut self) {
        self.session
            .handle_timeout(Instant::now().into_std(), &mut self.rng);
    }

    /// Carries out what the session reports and transmits until it has nothing more. Reacting
    /// to an event may give the session more to do (a pull started), so both are polled until
    /// both are empty.
    fn drive(&mut self) {
        loop {
            if let Some(event) = self.session.poll_event() {
                self.on_session_event(event);
            } else if let Some(transmit) = self.session.poll_transmit(Instant::now().into_std()) {
                self.perform(transmit);
            } else {
                break;
            }
        }
    }

    fn perform(&mut self, transmit: Transmit) {
        match transmit {
            Transmit::Dial => self.dial(),
            Transmit::Frame(msg) => self.io.send(msg, self.session.max_frame()),
            Transmit::Close => self.close_io(),
        }
    }

    fn on_session_event(&mut self, event: SessionEvent) {
        match event {
            SessionEvent::Status(status) => self.on_connection_status(status),
            SessionEvent::Established(e) => self.on_established(e),
            SessionEvent::EpochSuperseded { blob_id } => {
                // This device missed a key rotation: the push waits until it holds the new
                // epoch's key and is sealed again.
                info!(blob = %blob_id, "push held: the group rotated its keys");
                self.refresh_membership();
            }
            SessionEvent::GroupReply { request_id, result } => {
                self.on_group_reply(request_id, result);
            }
            SessionEvent::GroupChanged(_) => {
                self.refresh_membership();
            }
            SessionEvent::HandshakeRefused { error } => {
                info!(code = %error.code, "relay refused the session");
                if error.code == sync_types::ErrorCode::EpochSuperseded {
                    self.fetch_membership_before_hello();
                }
                self.io.last_rejection = Some(error);
            }
            SessionEvent::Ended {
                reason,
                was_established,
            } => self.on_session_ended(reason, was_established),
            SessionEvent::PushAcked {
                blob_id,
                cursor,
                ttl_secs,
            } => self.on_push_acked(blob_id, cursor, ttl_secs),
            SessionEvent::PushDeferred {
                blob_id,
                error,
                retry_after,
            } => self.on_push_deferred(blob_id, error, retry_after),
            SessionEvent::PushRejected { blob_id, error } => self.on_push_rejected(blob_id, error),
            SessionEvent::Page(page) => {
                if let Some(page) = self.park_page_for_keys(page) {
                    self.on_page(page);
                }
            }
            SessionEvent::PullRefused { error } => self.on_pull_refused(error),
            SessionEvent::Notify(n) => self.on_notify(n),
            SessionEvent::Answered { request_id, result } => {
                self.on_answered(request_id, result);
            }
        }
    }

    fn on_connection_status(&mut self, status: ConnectionStatus) {
        let first = match &status {
            ConnectionStatus::Connected => {
                self.reports.sync.on_connected();
                Some(Ok(()))
            }
            // Refused as behind the group's key epoch, with the new keys being fetched: the
            // first attempt is not over yet (it ends connected, or offline if that fails).
            ConnectionStatus::Reconnecting { .. } if self.group_fetching() => {
                self.reports.sync.on_disconnected();
                None
            }
            // Offline is a normal state: the client works from the outbox.
            ConnectionStatus::Reconnecting { .. } | ConnectionStatus::Disconnected => {
                self.reports.sync.on_disconnected();
                Some(Ok(()))
            }
            ConnectionStatus::Failed { reason } => {
                self.reports.sync.on_connection_rejected();
                warn!(%reason, "relay refused this device; not retrying");
                Some(Err(match self.io.last_rejection.take() {
                    Some(e) => rejected(e, None),
                    None => ClientError::NotConnected,
                }))
            }
            _ => None,
        };
        self.reports.connection = status;
        if let Some(result) = first
            && let Some(tx) = self.first.take()
        {
            // Callers see the new state as soon as `connect` returns.
            self.publish_status();
            let _ = tx.send(result);
        }
    }

    // ----- bookkeeping -----

    /// Removes settled pushes and stores the resume cursor, in one transaction.
    fn flush_store(&mut self) {
        if !self.pulls.device_notes.is_empty() {
            let notes = std::mem::take(&mut self.pulls.device_notes);
            // Bookkeeping only: a failure loses activity times, never data.
            if let Err(e) = self.store.note_devices(&self.me.group_id, &notes) {
                warn!(error = %e, "could not record device activity");
            }
        }
        let resume = self.pulls.tracker.resume_cursor();
        let cursor_changed = resume != self.pulls.persisted_cursor;
        let senders = self.pulls.seqs.changed();
        if self.pushes.settled.is_empty()
            && self.pulls.delivered.is_empty()
            && senders.is_empty()
            && !cursor_changed
        {
            return;
        }
        let cursor = match (&self.pulls.tracker_relay, cursor_changed) {
            (Some(relay), true) => Some((&self.me.group_id, relay, resume)),
            _ => None,
        };
        let retention = Duration::from_secs(u64::from(self.session.limits().max_ttl_secs))
            .saturating_add(Duration::from_secs(24 * 3600))
            .max(DELIVERED_RETENTION_FLOOR);
        let delivered = Delivered {
            group: &self.me.group_id,
            blobs: &self.pulls.delivered,
            forget_ms: unix_ms()
                .saturating_add(u64::try_from(retention.as_millis()).unwrap_or(u64::MAX)),
            senders: &senders,
        };
        match self
            .store
            .settle(&self.pushes.settled, Some(&delivered), cursor)
        {
            Ok(()) => {
                self.pushes.settled.clear();
                self.pulls.delivered.clear();
                self.pulls.seqs.saved();
                if cursor.is_some() {
                    self.pulls.persisted_cursor = resume;
                }
            }
            // Kept for the next attempt; at worst a settled push is re-sent (idempotent).
            Err(e) => warn!(error = %e, "could not update the local store"),
        }
    }

    fn after_batch(&mut self) {
        self.drive();
        self.flush_store();
        self.publish_status();
    }

    async fn shutdown(&mut self, reply: Option<oneshot::Sender<()>>) {
        self.feed(SessionInput::Close);
        self.drive();
        // The session closed its transport, if it had one; a dial in progress ends too.
        self.close_io();
        self.flush_store();
        self.pushes.answer_waiters_offline();
        if let Some(first) = self.first.take() {
            let _ = first.send(Err(ClientError::Closed));
        }
        // Let the last session deliver its `Bye` and close its connection (bounded).
        for writer in self.io.closing_writers.drain(..) {
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

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
