//! The group phase's devices and what they record: connecting them, their pacers (pushes at a
//! steady rate), receivers (pulls on every announcement), event followers (key epochs, the
//! revoked device's refusal) and the prober that keeps the revoked device trying to pull and
//! reconnect.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sync_client::{
    Blob, ClientConfig, ClientError, ClientOptions, GroupChoice, GroupMaterial, IntegrityProblem,
    IrohConfig, IrohTransport, StoreLocation, StreamExt as _, SyncClient, SyncEvent,
};
use sync_core::ConnectionStatus;
use sync_types::{ErrorCode, RelayId};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::tally::{Ack, Msg, Tally, message_text, parse_message, tally};
use crate::campaign::phases::ms_since;
use crate::campaign::session::Session;
use crate::events::round3;

/// The phase's name in events.
pub(super) const PHASE: &str = "group";
/// How often a receiver pulls even without an announcement (a safety net).
const RECEIVER_POLL: Duration = Duration::from_secs(2);
/// How often the revoked device tries again after its revocation.
const PROBE_EVERY: Duration = Duration::from_millis(250);
/// Probe ticks between two reconnects of the revoked device (one a second).
const RECONNECT_EVERY: u32 = 4;
/// Longest wait for one pull or reconnect of the revoked device.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the group's devices connect.
#[derive(Debug, Clone)]
pub(in crate::campaign) struct GroupTarget {
    /// The relay's identity.
    pub(in crate::campaign) relay_id: RelayId,
    /// The addresses dialled: the relay's, or the impairment proxy's.
    pub(in crate::campaign) dial: Vec<SocketAddr>,
    /// The devices' local address.
    pub(in crate::campaign) bind: SocketAddr,
    /// Reconnect with the loopback backoff (`--local`).
    pub(in crate::campaign) fast_reconnect: bool,
}

/// Connects a device with its state in `dir` to the group `material` through `target`.
pub(super) async fn connect(
    target: &GroupTarget,
    material: &GroupMaterial,
    dir: &Path,
    name: &str,
) -> Result<SyncClient, ClientError> {
    let iroh = IrohConfig::new(target.relay_id, target.dial.clone()).with_bind_addr(target.bind);
    let options = if target.fast_reconnect {
        ClientOptions::for_tests()
    } else {
        ClientOptions::default()
    };
    connect_with(iroh, options, material, dir, name).await
}

/// Connects a device named `name`, with its state in `dir`, to the group `material` over
/// `iroh` (the campaign's phases that run their own devices share it).
pub(in crate::campaign) async fn connect_with(
    iroh: IrohConfig,
    options: ClientOptions,
    material: &GroupMaterial,
    dir: &Path,
    name: &str,
) -> Result<SyncClient, ClientError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| ClientError::Internal(format!("cannot create {}: {e}", dir.display())))?;
    let config = ClientConfig::new(
        StoreLocation::Dir(dir.to_path_buf()),
        Arc::new(IrohTransport::new(iroh)),
        GroupChoice::Use(material.clone()),
    )
    .with_device_name(name)
    .with_options(options);
    SyncClient::connect(config).await
}

/// A key change under way: when the admin called it and which devices must come to hold it.
#[derive(Debug, Clone)]
struct Change {
    called: Instant,
    holders: Vec<usize>,
    reported: bool,
}

/// What the phase's tasks record.
#[derive(Debug, Default)]
struct State {
    msgs: HashMap<(usize, u32), Msg>,
    /// Per device: blobs it could not open or verify.
    undecryptable: Vec<u64>,
    /// Per device: other integrity problems.
    integrity: Vec<u64>,
    duplicates: u64,
    foreign: u64,
    push_failures: u64,
    /// Per device: when it first held each epoch.
    epochs: Vec<BTreeMap<u32, Instant>>,
    /// Key changes by the epoch they lead to.
    changes: BTreeMap<u32, Change>,
    revoke_called: Option<Instant>,
    revoke_returned: Option<Instant>,
    refusal: Option<(Instant, String)>,
    admitted: u64,
}

/// The phase's shared record, its wake-ups and where its events go.
pub(super) struct Shared {
    state: Mutex<State>,
    changed: Notify,
    session: Arc<Session>,
    /// Devices in the group, the admin (device 0) included.
    pub(super) devices: usize,
    /// The device to be revoked.
    pub(super) revoked: usize,
    names: Vec<String>,
}

/// How the revoked device's attempts after its revocation went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Probe {
    /// Pulls tried on its own client.
    pub(super) pulls: u64,
    /// Of those, pulls that failed (no session).
    pub(super) pulls_failed: u64,
    /// Blobs those pulls returned (of any age).
    pub(super) blobs: u64,
    /// Reconnects tried (a new client on its state).
    pub(super) reconnects: u64,
    /// Reconnects the relay refused with `DeviceRevoked`.
    pub(super) refused: u64,
    /// Reconnects the relay admitted.
    pub(super) admitted: u64,
    /// Reconnects that failed otherwise (no answer, another error).
    pub(super) other: u64,
}

impl Shared {
    /// The record of a group of `names.len()` devices in which device `revoked` is to be
    /// revoked.
    pub(super) fn new(session: Arc<Session>, names: Vec<String>, revoked: usize) -> Arc<Self> {
        let devices = names.len();
        Arc::new(Self {
            state: Mutex::new(State {
                undecryptable: vec![0; devices],
                integrity: vec![0; devices],
                epochs: vec![BTreeMap::new(); devices],
                ..State::default()
            }),
            changed: Notify::new(),
            session,
            devices,
            revoked,
            names,
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes one event of the phase.
    pub(super) fn emit(&self, event: &str, fields: &[(&str, Value)]) {
        self.session.emit(PHASE, event, fields);
    }

    /// The campaign's session.
    pub(super) fn session(&self) -> &Session {
        &self.session
    }

    /// The short id of device `d`.
    pub(super) fn name(&self, d: usize) -> &str {
        self.names.get(d).map_or("?", String::as_str)
    }

    /// Records that device `sender` begins pushing message `seq` now.
    fn pushing(&self, sender: usize, seq: u32) {
        let msg = Msg::new(
            sender,
            Instant::now(),
            self.session.log.elapsed_s(),
            self.devices,
        );
        self.state().msgs.insert((sender, seq), msg);
    }

    /// Records the relay's answer to message `seq` of `sender`.
    fn answered(&self, sender: usize, seq: u32, ack: Ack) {
        let failed = match &ack {
            Ack::Failed(why) => Some(why.clone()),
            _ => None,
        };
        {
            let mut st = self.state();
            if failed.is_some() {
                st.push_failures += 1;
            }
            if let Some(m) = st.msgs.get_mut(&(sender, seq)) {
                m.ack = ack;
            }
        }
        if let Some(error) = failed {
            self.emit(
                "push_failed",
                &[
                    ("device", json!(self.name(sender))),
                    ("seq", json!(seq)),
                    ("error", json!(error)),
                ],
            );
        }
        self.changed.notify_waiters();
    }

    /// Records blobs device `d` pulled, opened and verified.
    pub(super) fn received(&self, d: usize, blobs: &[Blob]) {
        let now = Instant::now();
        {
            let mut st = self.state();
            for b in blobs {
                let msg = parse_message(&b.data).and_then(|k| st.msgs.get_mut(&k));
                match msg.and_then(|m| m.got.get_mut(d)) {
                    Some(slot @ None) => *slot = Some(now),
                    Some(Some(_)) => st.duplicates += 1,
                    None => st.foreign += 1,
                }
            }
        }
        self.changed.notify_waiters();
    }

    /// Records what device `d` found wrong with what the relay served.
    fn problems(&self, d: usize, problems: &[IntegrityProblem]) {
        if problems.is_empty() {
            return;
        }
        {
            let mut st = self.state();
            for p in problems {
                let counter = if matches!(p, IntegrityProblem::Rejected { .. }) {
                    &mut st.undecryptable
                } else {
                    &mut st.integrity
                };
                if let Some(c) = counter.get_mut(d) {
                    *c += 1;
                }
            }
        }
        for p in problems {
            let (event, detail) = match p {
                IntegrityProblem::Rejected { sender, error, .. } => {
                    ("blob_rejected", format!("from {}: {error}", sender.short()))
                }
                other => ("integrity_problem", format!("{other:?}")),
            };
            self.emit(
                event,
                &[
                    ("device", json!(self.name(d))),
                    ("revoked_device", json!(d == self.revoked)),
                    ("detail", json!(detail)),
                ],
            );
        }
    }

    /// The admin is about to change the keys to `epoch`; `holders` must come to hold it.
    pub(super) fn change_called(&self, epoch: u32, holders: Vec<usize>, revocation: bool) {
        let now = Instant::now();
        let mut st = self.state();
        st.changes.insert(
            epoch,
            Change {
                called: now,
                holders,
                reported: false,
            },
        );
        if revocation {
            st.revoke_called = Some(now);
        }
    }

    /// The admin's `revoke()` returned (successfully).
    pub(super) fn revoke_returned(&self) {
        self.state().revoke_returned = Some(Instant::now());
    }

    /// Records that device `d` holds `epoch` now; reports a key change once every device that
    /// must hold it does.
    fn holds_epoch(&self, d: usize, epoch: u32) {
        let now = Instant::now();
        let done: Vec<(u32, usize, f64)> = {
            let mut st = self.state();
            if let Some(e) = st.epochs.get_mut(d) {
                e.entry(epoch).or_insert(now);
            }
            let State {
                changes, epochs, ..
            } = &mut *st;
            changes
                .iter_mut()
                .filter(|(_, c)| !c.reported)
                .filter(|(e, c)| {
                    c.holders.iter().all(|h| {
                        epochs
                            .get(*h)
                            .is_some_and(|held| held.range(**e..).next().is_some())
                    })
                })
                .map(|(e, c)| {
                    c.reported = true;
                    let ms = now.saturating_duration_since(c.called).as_secs_f64() * 1000.0;
                    (*e, c.holders.len(), ms)
                })
                .collect()
        };
        for (epoch, devices, ms) in done {
            self.emit(
                "epoch_propagated",
                &[
                    ("epoch", json!(epoch)),
                    ("devices", json!(devices)),
                    ("after_call_ms", json!(round3(ms))),
                ],
            );
        }
    }

    /// From the call of the key change to `epoch` until every device that had to hold it did.
    pub(super) fn propagation_ms(&self, epoch: u32) -> Option<f64> {
        let st = self.state();
        let change = st.changes.get(&epoch)?;
        let mut last = change.called;
        for h in &change.holders {
            let held = st.epochs.get(*h)?.range(epoch..).map(|(_, t)| *t).min()?;
            last = last.max(held);
        }
        Some(last.saturating_duration_since(change.called).as_secs_f64() * 1000.0)
    }

    /// The revoked device saw itself refused — `kind`: its session ended, or a reconnect was
    /// refused; `reason`: the relay's words: recorded, reported and marked the first time after
    /// the `revoke()` call.
    fn refused(&self, kind: &str, reason: &str) {
        let now = Instant::now();
        let how = format!("{kind}: {reason}");
        let (after_call, after_return) = {
            let mut st = self.state();
            let Some(called) = st.revoke_called else {
                return;
            };
            if st.refusal.is_some() {
                return;
            }
            st.refusal = Some((now, how.clone()));
            (
                signed_ms(now, called),
                st.revoke_returned.map(|r| round3(signed_ms(now, r))),
            )
        };
        self.emit(
            "refusal",
            &[
                ("device", json!(self.name(self.revoked))),
                ("how", json!(how)),
                ("after_revoke_call_ms", json!(round3(after_call))),
                ("before_revoke_returned", json!(after_return.is_none())),
                ("after_revoke_return_ms", json!(after_return)),
            ],
        );
        self.session
            .mark(format!("{} refused ({kind})", self.name(self.revoked)));
        self.changed.notify_waiters();
    }

    /// The refusal: when (milliseconds after the `revoke()` call and after its return) and
    /// how.
    pub(super) fn refusal(&self) -> Option<(f64, Option<f64>, String)> {
        let st = self.state();
        let (at, how) = st.refusal.clone()?;
        let called = st.revoke_called?;
        Some((
            signed_ms(at, called),
            st.revoke_returned.map(|r| signed_ms(at, r)),
            how,
        ))
    }

    /// A session of the revoked device was established: counted as admitted after the
    /// revocation if `revoke()` had returned.
    fn revoked_connected(&self, how: &str) {
        let admitted = {
            let mut st = self.state();
            let after = st.revoke_returned.is_some();
            if after {
                st.admitted += 1;
            }
            after
        };
        if admitted {
            self.emit(
                "revoked_admitted",
                &[
                    ("device", json!(self.name(self.revoked))),
                    ("how", json!(how)),
                ],
            );
        }
    }

    /// The messages counted now.
    pub(super) fn tally(&self) -> Tally {
        let st = self.state();
        tally(
            st.msgs.values(),
            self.devices,
            self.revoked,
            st.revoke_returned,
        )
    }

    /// Whether every message due reached every other remaining member (and no push is still
    /// unanswered).
    fn complete(&self) -> bool {
        let pending = self.state().msgs.values().any(|m| m.ack == Ack::Pending);
        let t = self.tally();
        !pending && t.delivered == t.messages
    }

    /// Waits until [`Shared::complete`] or `deadline`; whether it completed.
    pub(super) async fn until_complete(&self, deadline: tokio::time::Instant) -> bool {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.complete() {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.complete();
            }
        }
    }

    /// Counts at the end: undecryptable blobs and other integrity problems at the remaining
    /// members, undecryptable blobs at the revoked device, duplicates, foreign blobs, push
    /// failures, sessions admitted after the revocation.
    pub(super) fn counts(&self) -> Counts {
        let st = self.state();
        let kept = |v: &[u64]| {
            v.iter()
                .enumerate()
                .filter(|(d, _)| *d != self.revoked)
                .map(|(_, n)| n)
                .sum()
        };
        Counts {
            undecryptable: kept(&st.undecryptable),
            integrity: kept(&st.integrity),
            revoked_undecryptable: st.undecryptable.get(self.revoked).copied().unwrap_or(0),
            duplicates: st.duplicates,
            foreign: st.foreign,
            push_failures: st.push_failures,
            admitted: st.admitted,
        }
    }
}

/// Milliseconds from `from` to `to`, negative when `to` came first.
fn signed_ms(to: Instant, from: Instant) -> f64 {
    if to >= from {
        to.duration_since(from).as_secs_f64() * 1000.0
    } else {
        -(from.duration_since(to).as_secs_f64() * 1000.0)
    }
}

/// See [`Shared::counts`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Counts {
    pub(super) undecryptable: u64,
    pub(super) integrity: u64,
    pub(super) revoked_undecryptable: u64,
    pub(super) duplicates: u64,
    pub(super) foreign: u64,
    pub(super) push_failures: u64,
    pub(super) admitted: u64,
}

/// Follows device `d`: pulls on every announcement (and every [`RECEIVER_POLL`]), records
/// what it received and found wrong, commits each batch.
pub(super) fn spawn_receiver(
    shared: &Arc<Shared>,
    d: usize,
    client: &SyncClient,
) -> JoinHandle<()> {
    let shared = Arc::clone(shared);
    // Rejected blobs are counted from the batches (they come in both).
    super::spawn_batches(
        client,
        RECEIVER_POLL,
        format!("group receiver {d}"),
        move |batch| {
            shared.received(d, &batch.blobs);
            shared.problems(d, &batch.problems);
        },
    )
}

/// Follows device `d`'s events: the key epochs it comes to hold and, for the device to be
/// revoked, how it sees the relay refuse it (its session ended, or its reconnect refused, with
/// `DeviceRevoked`) and any session after the revocation.
pub(super) fn spawn_follower(
    shared: &Arc<Shared>,
    d: usize,
    client: &SyncClient,
) -> JoinHandle<()> {
    let shared = Arc::clone(shared);
    let mut events = client.subscribe();
    let revoked = d == shared.revoked;
    let code = ErrorCode::DeviceRevoked.to_string();
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            match event {
                SyncEvent::EpochChanged { epoch } => shared.holds_epoch(d, epoch),
                SyncEvent::Disconnected { reason } if revoked && reason.contains(&code) => {
                    shared.refused("session ended", &reason);
                }
                SyncEvent::StatusChanged(status) if revoked => {
                    if let ConnectionStatus::Failed { reason } = &status.connection
                        && reason.contains(&code)
                    {
                        shared.refused("reconnect refused", reason);
                    }
                }
                SyncEvent::Connected { .. } if revoked => {
                    shared.revoked_connected("its own client reconnected");
                }
                _ => {}
            }
        }
    })
}

/// Pushes a message from device `d` every `period` until `stop`; each push is its own task
/// (a slow acknowledgement never delays the next message) and waits at most `timeout` for the
/// relay's answer. Ends once every push it started was answered or timed out.
pub(super) fn spawn_pacer(
    shared: &Arc<Shared>,
    d: usize,
    client: &SyncClient,
    period: Duration,
    timeout: Duration,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let shared = Arc::clone(shared);
    let client = client.clone();
    tokio::spawn(async move {
        // Ticks missed while the device was busy are caught up: the rate holds.
        let mut ticker = tokio::time::interval(period);
        let mut seq = 0u32;
        let mut pushes = Vec::new();
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                break;
            }
            seq += 1;
            let text = message_text(d, seq, &padding(seq));
            shared.pushing(d, seq);
            let (shared, client) = (Arc::clone(&shared), client.clone());
            pushes.push(tokio::spawn(async move {
                let ack = match tokio::time::timeout(timeout, client.push(text.as_bytes())).await {
                    Ok(Ok(_)) => Ack::Acked,
                    Ok(Err(e)) if e.is_queued() => Ack::Queued,
                    Ok(Err(e)) => Ack::Failed(e.to_string()),
                    // Still in the outbox: sent when it can be.
                    Err(_) => Ack::Queued,
                };
                shared.answered(d, seq, ack);
            }));
        }
        for p in pushes {
            let _ = p.await;
        }
    })
}

/// 8 to 71 random bytes as hex (zeros if the random source fails): messages differ in content
/// and length.
fn padding(seq: u32) -> String {
    let mut bytes = vec![0u8; 8 + (seq as usize * 29) % 64];
    let _ = getrandom::fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// How the revoked device reconnects: where, to which group, with which state.
#[derive(Debug, Clone)]
pub(super) struct Reconnect {
    pub(super) target: GroupTarget,
    pub(super) material: GroupMaterial,
    pub(super) dir: PathBuf,
}

/// After its revocation the revoked device keeps trying: it pulls on its own client every
/// [`PROBE_EVERY`] (recording whatever comes), closes it a second after it saw itself refused
/// (or after 3 s without), then reconnects with a new client on its state every second, until
/// `stop`; at least one reconnect is always tried.
pub(super) async fn probe_revoked(
    shared: Arc<Shared>,
    client: SyncClient,
    how: Reconnect,
    mut stop: watch::Receiver<bool>,
) -> Probe {
    let d = shared.revoked;
    let mut probe = Probe::default();
    let mut own = Some(client);
    let mut ticker = tokio::time::interval(PROBE_EVERY);
    let (mut ticks, mut since_refusal) = (0u32, 0u32);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            break;
        }
        ticks += 1;
        if let Some(c) = &own {
            probe.pulls += 1;
            match tokio::time::timeout(PROBE_TIMEOUT, c.pull()).await {
                Ok(Ok(blobs)) => {
                    probe.blobs += blobs.len() as u64;
                    shared.received(d, &blobs);
                }
                _ => probe.pulls_failed += 1,
            }
            if shared.refusal().is_some() {
                since_refusal += 1;
            }
            if since_refusal >= RECONNECT_EVERY || ticks >= 3 * RECONNECT_EVERY {
                c.close().await;
                own = None;
                ticks = 0;
            }
        } else if ticks % RECONNECT_EVERY == 0 {
            reconnect(&shared, &how, &mut probe).await;
        }
    }
    if let Some(c) = own {
        c.close().await;
    }
    if probe.reconnects == 0 {
        reconnect(&shared, &how, &mut probe).await;
    }
    probe
}

/// One reconnect of the revoked device: a new client on its state, which the relay must refuse.
async fn reconnect(shared: &Shared, how: &Reconnect, probe: &mut Probe) {
    probe.reconnects += 1;
    let d = shared.revoked;
    let started = Instant::now();
    let name = "group revoked device";
    let attempt = tokio::time::timeout(
        PROBE_TIMEOUT,
        connect(&how.target, &how.material, &how.dir, name),
    )
    .await;
    let result = match attempt {
        Err(_) => {
            probe.other += 1;
            format!("no answer within {PROBE_TIMEOUT:?}")
        }
        Ok(Err(ClientError::Rejected { code, message, .. }))
            if code == ErrorCode::DeviceRevoked =>
        {
            probe.refused += 1;
            shared.refused("reconnect refused", &format!("{code}: {message}"));
            format!("refused: {code}")
        }
        Ok(Err(e)) => {
            probe.other += 1;
            e.to_string()
        }
        Ok(Ok(c)) => {
            let outcome = if matches!(c.status().connection, ConnectionStatus::Connected) {
                probe.admitted += 1;
                shared.revoked_connected("a reconnect was admitted");
                if let Ok(Ok(blobs)) = tokio::time::timeout(PROBE_TIMEOUT, c.pull()).await {
                    probe.blobs += blobs.len() as u64;
                    shared.received(d, &blobs);
                }
                "ADMITTED".to_string()
            } else {
                probe.other += 1;
                format!("not connected: {:?}", c.status().connection)
            };
            c.close().await;
            outcome
        }
    };
    shared.emit(
        "revoked_reconnect",
        &[
            ("device", json!(shared.name(d))),
            ("attempt", json!(probe.reconnects)),
            ("result", json!(result)),
            ("ms", json!(round3(ms_since(started)))),
        ],
    );
}
