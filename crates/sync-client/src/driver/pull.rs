//! Pulls: one round at a time (later ones queue); the session pages through the relay's log and
//! checks each page's order, and here pulled blobs are verified, opened, checked against what
//! this device has seen, and their cursors are recorded only once the caller took them (or, for
//! an uncommitted pull, when the app commits the batch). Also the cursor tracker of the current
//! relay (cursors are per relay), the check of the relay's log on a new session, and the relay's
//! announcements of new blobs.

use std::collections::{HashMap, VecDeque};

use sync_core::{ConnectionState, CursorTracker, Page, PullEnd, PullMode};
use sync_crypto::open;
use sync_types::{BlobId, Cursor, DeviceId, Notify, RelayId, WireError, unix_ms};
use tokio::sync::oneshot;
use tracing::{debug, warn};

use super::{Driver, rejected};
use crate::error::{ClientError, StoreError};
use crate::integrity::IntegrityProblem;
use crate::sequences::Sequences;
use crate::types::{Blob, PullBatch, SyncEvent};

/// Where this device stands in the relay's log, and the pulls in progress or waiting.
pub(super) struct PullState {
    pub(super) tracker: CursorTracker,
    /// The relay the tracker (and its persisted cursor) belongs to.
    pub(super) tracker_relay: Option<RelayId>,
    /// The resume cursor last persisted for `tracker_relay`.
    pub(super) persisted_cursor: Cursor,
    round: Option<PullRound>,
    queue: VecDeque<PendingPull>,
    /// Device activity (pulled senders, own acknowledged pushes) not yet stored.
    pub(super) device_notes: Vec<(DeviceId, u64, u64)>,
    /// `(blob id, cursor)` of blobs delivered to the app and not yet remembered in the store.
    pub(super) delivered: Vec<(BlobId, Cursor)>,
    /// `(resume_was, resume_from)` once the relay's log was found behind this device.
    pub(super) rewound: Option<(Cursor, Cursor)>,
    /// The check of a delivered blob against the relay's log, answered before any pull.
    probe: Option<Probe>,
    /// The other devices' numbering, as far as this device has seen it.
    pub(super) seqs: Sequences,
}

/// A question to the relay's log on a new session: is the blob this device received at
/// `cursor` still `blob_id` there? A relay restored from an older copy that has since grown past
/// the device's cursor holds other blobs at the same cursors.
struct Probe {
    /// The session's pull is this check.
    sent: bool,
    /// The store id and max cursor from `Welcome`.
    store_id: u64,
    relay_max: Cursor,
    /// The relay's max is below this device's resume cursor.
    behind: bool,
    cursor: Cursor,
    blob_id: BlobId,
}

impl PullState {
    pub(super) fn new() -> Self {
        Self {
            tracker: CursorTracker::new(),
            tracker_relay: None,
            persisted_cursor: Cursor::ZERO,
            round: None,
            queue: VecDeque::new(),
            device_notes: Vec::new(),
            delivered: Vec::new(),
            rewound: None,
            probe: None,
            seqs: Sequences::default(),
        }
    }
}

/// A pull in progress: pages are collected and only applied to the cursor tracker once the
/// caller has received them, so the persisted cursor never covers undelivered blobs.
struct PullRound {
    /// `(after, through)` of every page answered so far.
    ranges: Vec<(Cursor, Cursor)>,
    blobs: Vec<Blob>,
    /// Where each blob of `blobs` sits, by id.
    ids: HashMap<BlobId, Cursor>,
    /// What was found wrong so far.
    problems: Vec<IntegrityProblem>,
    /// Removals the relay declared in the round that no gap in a sender's numbering used yet.
    removed: u64,
    /// Where the round started, the cursors it served (ascending), and each sender's last blob
    /// in it: where the holes are, for gaps in a sender's numbering.
    start: Cursor,
    served: Vec<Cursor>,
    last_from: HashMap<DeviceId, Cursor>,
    reply: RoundReply,
}

/// Who waits for a pull round, and what its cursors become.
pub(super) enum RoundReply {
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
pub(super) struct PendingPull {
    pub(super) after: Option<Cursor>,
    pub(super) reply: RoundReply,
}

/// The holes of the span `(after, through]` that the relay did not account for, given the
/// cursors it served (ascending, inside the span) and how many of the span's cursors it says it
/// `removed`. With nothing removed every hole is reported exactly; otherwise one problem covers
/// the span, with the count of unaccounted cursors.
fn withheld(
    after: Cursor,
    through: Cursor,
    served: &[Cursor],
    removed: u64,
) -> Vec<IntegrityProblem> {
    let span = through.get().saturating_sub(after.get());
    let holes = span.saturating_sub(served.len() as u64);
    if holes <= removed {
        return Vec::new();
    }
    if removed > 0 {
        return vec![IntegrityProblem::Withheld {
            from: Cursor::new(after.get().saturating_add(1)),
            to: through,
            count: holes - removed,
        }];
    }
    let mut out = Vec::new();
    let mut prev = after.get();
    for next in served
        .iter()
        .map(|c| c.get())
        .chain(std::iter::once(through.get().saturating_add(1)))
    {
        if next > prev.saturating_add(1) {
            out.push(IntegrityProblem::Withheld {
                from: Cursor::new(prev + 1),
                to: Cursor::new(next - 1),
                count: next - prev - 1,
            });
        }
        prev = next;
    }
    out
}

/// How many cursors strictly between `from` and `to` were not served (`served` ascending).
fn holes_between(served: &[Cursor], from: Cursor, to: Cursor) -> u64 {
    let span = to.get().saturating_sub(from.get()).saturating_sub(1);
    let lo = served.partition_point(|c| *c <= from);
    let hi = served.partition_point(|c| *c < to);
    span.saturating_sub(hi.saturating_sub(lo) as u64)
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

impl Driver {
    /// Switches the cursor tracker to `relay` (cursors are per relay).
    pub(super) fn load_tracker(&mut self, relay: RelayId) {
        if self.pulls.tracker_relay == Some(relay) {
            return;
        }
        self.flush_store();
        let cursor = match self.store.cursor(&self.me.group_id, &relay) {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "could not read the stored cursor; starting from 0");
                Cursor::ZERO
            }
        };
        self.pulls.tracker = CursorTracker::starting_at(cursor);
        self.pulls.tracker_relay = Some(relay);
        self.pulls.persisted_cursor = cursor;
    }

    /// Checks the relay's log against what this device had (its `Welcome`), so no blob the
    /// relay assigns from now on is skipped: a log started afresh (another store id) is pulled
    /// from 0; otherwise one blob this device has (the highest at or below both its resume
    /// cursor and the relay's max) is checked against the relay's log before any pull (see
    /// [`Driver::on_probe_answer`]). A relay behind the device with nothing to check against is
    /// pulled from 0.
    pub(super) fn check_relay_log(&mut self, store_id: u64, relay_max: Cursor) {
        let Some(relay) = self.pulls.tracker_relay else {
            return;
        };
        let known = self
            .store
            .relay_log(&self.me.group_id, &relay)
            .unwrap_or_else(|e| {
                warn!(error = %e, "could not read the relay's last log id");
                None
            });
        if known.is_some_and(|k| k != store_id) {
            return self.rewind_to(relay, store_id, relay_max, Cursor::ZERO, true);
        }
        self.follow_shared_log(relay, store_id);
        let resume = self.pulls.tracker.resume_cursor();
        if known.is_none()
            && let Err(e) =
                self.store
                    .set_relay_log(&self.me.group_id, &relay, store_id, resume, false)
        {
            warn!(error = %e, "could not record the relay's log id");
        }
        let behind = relay_max < resume;
        let checkpoint = self
            .store
            .checkpoint(&self.me.group_id, resume.min(relay_max))
            .unwrap_or_else(|e| {
                warn!(error = %e, "could not read a delivered blob to check the log");
                None
            });
        match checkpoint {
            Some((cursor, blob_id)) => {
                self.pulls.probe = Some(Probe {
                    sent: false,
                    store_id,
                    relay_max,
                    behind,
                    cursor,
                    blob_id,
                });
            }
            None if behind => self.rewind_to(relay, store_id, relay_max, Cursor::ZERO, false),
            None => {}
        }
    }

    /// Relays sharing a store serve one log: when this device got further in it through
    /// another relay (it failed over), it resumes here from there, so nothing is pulled twice.
    fn follow_shared_log(&mut self, relay: RelayId, store_id: u64) {
        let further = match self.store.log_cursor(&self.me.group_id, store_id) {
            Ok(Some(c)) if c > self.pulls.tracker.resume_cursor() => c,
            Ok(_) => return,
            Err(e) => {
                warn!(error = %e, "could not read the cursors of the relays sharing this log");
                return;
            }
        };
        if let Err(e) = self.store.set_cursor(&self.me.group_id, &relay, further) {
            warn!(error = %e, "could not record the shared log's cursor");
            return;
        }
        debug!(%further, "resuming where another relay of the same log left off");
        self.pulls.tracker = CursorTracker::starting_at(further);
        self.pulls.persisted_cursor = further;
    }

    /// Records the rewind in the store, then in memory; a store failure leaves everything as
    /// it was (the next session checks again).
    fn rewind_to(
        &mut self,
        relay: RelayId,
        store_id: u64,
        relay_max: Cursor,
        from: Cursor,
        fresh_log: bool,
    ) {
        // What was delivered so far is stored first, so it loses its place with the rest.
        self.flush_store();
        let resume = self.pulls.tracker.resume_cursor();
        match self
            .store
            .set_relay_log(&self.me.group_id, &relay, store_id, from, true)
        {
            Ok(()) => {
                let resent = self.push_again(from);
                self.rewind(relay, relay_max, resume, from, fresh_log, resent);
            }
            Err(e) => warn!(error = %e, "could not move the resume cursor back"),
        }
    }

    /// Queues again this device's pushes that the relay acknowledged after `from` and that
    /// have not expired: a log that went back to `from` lost them. A push the relay still has
    /// is a duplicate there (same id, same bytes) and keeps its place. Returns how many.
    fn push_again(&mut self, from: Cursor) -> usize {
        let pushes = match self.store.sent_after(&self.me.group_id, from, unix_ms()) {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "could not read the pushes the relay acknowledged");
                return 0;
            }
        };
        if pushes.is_empty() {
            return 0;
        }
        if let Err(e) = self.store.insert_pushes(&self.me.group_id, &pushes, None) {
            warn!(error = %e, "could not queue the lost pushes again");
            return 0;
        }
        let mut queued = 0;
        for p in pushes {
            match self.session.enqueue(p.blob_id, p.payload, p.ttl_secs) {
                Ok(()) => {
                    self.reports.sync.on_push_queued(p.blob_id);
                    queued += 1;
                }
                // Durable in the store's outbox: sent after the next start.
                Err(e) => debug!(error = %e, "lost push waits for the next start"),
            }
        }
        queued
    }

    /// Moves the resume cursor back to `from` and reports it.
    fn rewind(
        &mut self,
        relay: RelayId,
        relay_max: Cursor,
        resume: Cursor,
        from: Cursor,
        fresh_log: bool,
        resent: usize,
    ) {
        warn!(
            %relay_max, resume_was = %resume, resume_from = %from, fresh_log, resent,
            "the relay's log is behind this device; pulling again from an earlier cursor and \
             pushing again what it lost of this device's"
        );
        self.pulls.tracker = CursorTracker::starting_at(from);
        self.pulls.persisted_cursor = from;
        self.pulls.rewound = Some((resume, from));
        self.reports.emit(SyncEvent::RelayRewound {
            relay_id: relay,
            relay_max,
            resume_was: resume,
            resume_from: from,
            fresh_log,
            resent,
        });
    }

    /// The session is established and the relay's log reaches `relay_max_cursor`.
    pub(super) fn resume_from(&mut self, relay_max_cursor: Cursor) {
        if relay_max_cursor > self.pulls.tracker.resume_cursor() {
            self.reports.emit(SyncEvent::BlobsAvailable {
                cursor: relay_max_cursor,
                sender: None,
            });
        } else {
            self.reports.sync.on_pull_complete();
        }
        self.start_next_pull();
    }

    /// The relay announced a blob.
    pub(super) fn on_notify(&mut self, n: Notify) {
        if n.sender != self.me.device_id && n.cursor > self.pulls.tracker.resume_cursor() {
            self.reports.sync.on_remote_change();
            self.reports.emit(SyncEvent::BlobsAvailable {
                cursor: n.cursor,
                sender: Some(n.sender),
            });
        }
    }

    pub(super) fn on_pull_request(&mut self, pull: PendingPull) {
        match self.session.connection() {
            ConnectionState::Connected { .. }
            | ConnectionState::Connecting { .. }
            | ConnectionState::Handshaking { .. } => {
                self.pulls.queue.push_back(pull);
                self.start_next_pull();
            }
            _ => {
                pull.reply.fail(ClientError::NotConnected);
            }
        }
    }

    fn start_next_pull(&mut self) {
        if !self.session.is_established() || self.session.is_pulling() {
            return;
        }
        if let Some(probe) = &mut self.pulls.probe {
            let after = Cursor::new(probe.cursor.get().saturating_sub(1));
            if !probe.sent
                && self
                    .session
                    .start_pull(after, PullMode::Single { limit: 1 })
                    .is_ok()
            {
                probe.sent = true;
            }
            return;
        }
        let Some(PendingPull { after, reply }) = self.pulls.queue.pop_front() else {
            return;
        };
        let after = after.unwrap_or_else(|| self.pulls.tracker.resume_cursor());
        if let Err(e) = self.session.start_pull(after, PullMode::Round) {
            debug!(error = %e, "pull not started");
            return reply.fail(ClientError::NotConnected);
        }
        self.pulls.round = Some(PullRound {
            ranges: Vec::new(),
            blobs: Vec::new(),
            ids: HashMap::new(),
            problems: Vec::new(),
            removed: 0,
            start: after,
            served: Vec::new(),
            last_from: HashMap::new(),
            reply,
        });
    }

    /// A checked page of the session's pull: the answer to the log check, or a page of the
    /// round in progress, whose blobs are opened and checked here.
    pub(super) fn on_page(&mut self, page: Page) {
        if let Some(probe) = self.pulls.probe.take_if(|p| p.sent) {
            return self.on_probe_answer(probe, &page);
        }
        let Some(mut round) = self.pulls.round.take() else {
            debug!("page for no pull round");
            return;
        };
        let served: Vec<Cursor> = page.entries.iter().map(|e| e.cursor).collect();
        round.removed = round.removed.saturating_add(page.removed);
        round.served.extend_from_slice(&served);
        for entry in page.entries {
            let own = entry.sender == self.me.device_id || self.pulls.tracker.is_own(entry.cursor);
            if own && round.reply.skips_own() && !self.options.deliver_own {
                continue;
            }
            let opened = open(
                &self.me.keys(),
                &self.me.group_id,
                &entry.blob_id,
                &entry.sender,
                &entry.payload,
            );
            match opened {
                Ok(opened) => {
                    let seq = opened.seq;
                    let blob = Blob {
                        data: opened.plaintext,
                        sender: opened.sender,
                        cursor: entry.cursor,
                        blob_id: entry.blob_id,
                        timestamp_ms: entry.timestamp_ms,
                    };
                    // A re-read (`pull_after`) asks for blobs already delivered.
                    let before = round
                        .reply
                        .skips_own()
                        .then(|| self.delivered_before(&round, &blob))
                        .flatten();
                    match before {
                        // Delivered (or, for own blobs, pushed) at this very cursor: a log
                        // pulled again after it went back in time. Not a problem, and not data
                        // again, except own blobs asked for with `deliver_own`.
                        Some(first_cursor) if first_cursor == blob.cursor && !own => {}
                        // Delivered where a log that went back in time lost it, and pushed
                        // again by its sender: it has its place again; not data again.
                        Some(Cursor::ZERO) => {
                            self.pulls.delivered.push((blob.blob_id, blob.cursor));
                        }
                        Some(first_cursor) if first_cursor == blob.cursor => {
                            round.ids.insert(blob.blob_id, blob.cursor);
                            round.blobs.push(blob);
                        }
                        Some(first_cursor) => self.found(
                            &mut round,
                            IntegrityProblem::Replayed {
                                cursor: blob.cursor,
                                blob_id: blob.blob_id,
                                first_cursor,
                            },
                        ),
                        None => {
                            if let Some(seq) = seq
                                && round.reply.skips_own()
                                && blob.sender != self.me.device_id
                            {
                                let (store, group) = (&self.store, &self.me.group_id);
                                let since = round
                                    .last_from
                                    .insert(blob.sender, blob.cursor)
                                    .unwrap_or(round.start);
                                let holes = holes_between(&round.served, since, blob.cursor);
                                self.pulls.seqs.note(
                                    blob.sender,
                                    seq,
                                    blob.cursor,
                                    unix_ms(),
                                    holes,
                                    &mut round.removed,
                                    || {
                                        store.sender_seq(group, &blob.sender).unwrap_or_else(|e| {
                                            warn!(error = %e, "could not read a sender's numbering");
                                            None
                                        })
                                    },
                                );
                            }
                            round.ids.insert(blob.blob_id, blob.cursor);
                            round.blobs.push(blob);
                        }
                    }
                }
                Err(error) => self.found(
                    &mut round,
                    IntegrityProblem::Rejected {
                        cursor: entry.cursor,
                        blob_id: entry.blob_id,
                        sender: entry.sender,
                        error,
                    },
                ),
            }
        }
        if round.reply.skips_own() {
            for problem in withheld(page.after, page.through, &served, page.removed) {
                self.found(&mut round, problem);
            }
        }
        round.ranges.push((page.after, page.through));
        match page.end {
            None => self.pulls.round = Some(round),
            Some(PullEnd::Bounded) => {
                // Bounded: this round returns what it holds; the rest comes with the next pull.
                self.finish_round(round, None, true);
                self.reports.emit(SyncEvent::BlobsAvailable {
                    cursor: self.session.relay_max(),
                    sender: None,
                });
                self.start_next_pull();
            }
            Some(PullEnd::Complete) => {
                if round.reply.skips_own() {
                    let grace =
                        u64::try_from(self.options.missing_grace.as_millis()).unwrap_or(u64::MAX);
                    for problem in self.pulls.seqs.due(unix_ms(), grace) {
                        self.found(&mut round, problem);
                    }
                }
                self.finish_round(round, None, false);
                self.start_next_pull();
            }
        }
    }

    /// Where `blob` was delivered before, if it was (in this round, in a round not yet stored,
    /// or as the store remembers).
    fn delivered_before(&self, round: &PullRound, blob: &Blob) -> Option<Cursor> {
        let earlier = round.ids.get(&blob.blob_id).copied().or_else(|| {
            self.pulls
                .delivered
                .iter()
                .find(|(id, _)| *id == blob.blob_id)
                .map(|(_, c)| *c)
        });
        earlier.or_else(|| {
            self.store
                .delivered_at(&self.me.group_id, &blob.blob_id)
                .unwrap_or_else(|e| {
                    warn!(error = %e, "could not check the delivered blob ids");
                    None
                })
        })
    }

    /// Records a problem in the round and tells subscribers.
    fn found(&mut self, round: &mut PullRound, problem: IntegrityProblem) {
        warn!(%problem, "pulled blob not delivered");
        self.reports.emit(SyncEvent::Integrity {
            problem: problem.clone(),
        });
        round.problems.push(problem);
    }

    /// The relay's answer to the log check. Another blob at the checked cursor: the log is not
    /// the one this device pulled from (restored from an older copy and grown since), so
    /// everything is pulled again from 0. The same blob, with the relay behind the device: the
    /// log went back to somewhere after the checked cursor, so pulling resumes from there. What
    /// this device already has is not delivered twice either way. A missing blob (expired,
    /// deleted) proves nothing; a relay behind the device is then pulled from the checked cursor
    /// all the same.
    fn on_probe_answer(&mut self, probe: Probe, page: &Page) {
        let differs = page
            .entries
            .first()
            .is_some_and(|e| e.cursor == probe.cursor && e.blob_id != probe.blob_id);
        if let Some(relay) = self.pulls.tracker_relay {
            if differs {
                self.rewind_to(relay, probe.store_id, probe.relay_max, Cursor::ZERO, false);
            } else if probe.behind {
                self.rewind_to(relay, probe.store_id, probe.relay_max, probe.cursor, false);
            }
        }
        self.start_next_pull();
    }

    /// The relay refused a page of the round in progress: the caller gets what was collected
    /// so far, or the refusal if nothing was; the next pull starts.
    pub(super) fn on_pull_refused(&mut self, e: WireError) {
        if self.pulls.probe.take().is_some() {
            // The check could not be made; pulls go on as before.
            debug!(code = %e.code, "log check refused");
            return self.start_next_pull();
        }
        if let Some(round) = self.pulls.round.take() {
            self.finish_round(round, Some(rejected(e, None)), false);
        }
        self.start_next_pull();
    }

    /// The session ended: the round in progress ends with what it collected, waiting pulls
    /// fail.
    pub(super) fn pulls_session_lost(&mut self) {
        self.pulls.probe = None;
        if let Some(round) = self.pulls.round.take() {
            self.finish_round(round, Some(ClientError::NotConnected), false);
        }
        for waiter in self.pulls.queue.drain(..) {
            waiter.reply.fail(ClientError::NotConnected);
        }
    }

    /// Hands a round's blobs to its caller and, only if the caller took them, records their
    /// cursors (`Pull`), or leaves that to `CommitPull` (`PullUncommitted`). With `error` and no
    /// blobs collected, reports the error instead. `more`: the round stopped at its byte bound
    /// with more waiting.
    fn finish_round(&mut self, round: PullRound, error: Option<ClientError>, more: bool) {
        let PullRound {
            ranges,
            blobs,
            mut problems,
            reply,
            ..
        } = round;
        problems.sort_by_key(IntegrityProblem::cursor);
        if reply.is_closed() {
            // The caller gave up: nothing is delivered, nothing is recorded.
            return;
        }
        let complete = error.is_none();
        let blobs = match error {
            Some(e) if blobs.is_empty() && ranges.is_empty() && problems.is_empty() => {
                return reply.fail(e);
            }
            _ => blobs,
        };
        match reply {
            RoundReply::Reread(tx) => {
                let _ = tx.send(Ok(blobs));
            }
            RoundReply::Record(tx) => {
                let count = blobs.len();
                let senders = blobs_senders(&blobs);
                let delivered = blobs.iter().map(|b| (b.blob_id, b.cursor)).collect();
                let resume = self.record_pulled(&ranges, complete, delivered, senders);
                let _ = tx.send(Ok(blobs));
                self.reports.emit(SyncEvent::Received {
                    count,
                    resume_cursor: resume,
                });
            }
            RoundReply::Batch(tx) => {
                // What the commit will give, computed on a copy: nothing is recorded yet.
                let mut preview = self.pulls.tracker.clone();
                for (after, through) in &ranges {
                    let _ = preview.received_range(*after, *through);
                }
                let _ = tx.send(Ok(PullBatch {
                    blobs,
                    resume_cursor: preview.resume_cursor(),
                    relay: self.pulls.tracker_relay,
                    ranges,
                    complete,
                    problems,
                    more,
                }));
            }
        }
    }

    /// Records pulled ranges, the delivered blobs and their senders' activity; returns the
    /// resume cursor.
    fn record_pulled(
        &mut self,
        ranges: &[(Cursor, Cursor)],
        complete: bool,
        delivered: Vec<(BlobId, Cursor)>,
        senders: Vec<(DeviceId, u64, u64)>,
    ) -> Cursor {
        self.pulls.device_notes.extend(senders);
        self.pulls.delivered.extend(delivered);
        for (after, through) in ranges {
            if let Err(e) = self.pulls.tracker.received_range(*after, *through) {
                debug!(error = %e, "pulled range not recorded");
            }
        }
        if complete && self.pulls.tracker.resume_cursor() >= self.session.relay_max() {
            self.reports.sync.on_pull_complete();
        }
        self.publish_status();
        self.pulls.tracker.resume_cursor()
    }

    /// Records a `PullUncommitted` batch and persists the resume cursor before answering. A
    /// batch pulled from another relay (the client switched since) records nothing: its blobs
    /// come again from this relay's log.
    pub(super) fn commit_pull(
        &mut self,
        relay: Option<RelayId>,
        ranges: &[(Cursor, Cursor)],
        complete: bool,
        delivered: Vec<(BlobId, Cursor)>,
        senders: Vec<(DeviceId, u64, u64)>,
    ) -> Result<Cursor, ClientError> {
        if relay.is_none() || relay != self.pulls.tracker_relay {
            return Ok(self.pulls.tracker.resume_cursor());
        }
        let count = delivered.len();
        let resume = self.record_pulled(ranges, complete, delivered, senders);
        self.flush_store();
        if self.pulls.persisted_cursor != resume {
            return Err(ClientError::Store(StoreError::Failed(
                "the resume cursor could not be stored".into(),
            )));
        }
        self.reports.emit(SyncEvent::Received {
            count,
            resume_cursor: resume,
        });
        Ok(resume)
    }
}
