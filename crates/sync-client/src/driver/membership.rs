//! The group's membership, kept current by the driver: after every `Welcome`, every
//! `GroupChanged` and every push refused under an old epoch it reads the group's records,
//! enrollments and this device's grants (`GroupGet`) and checks them. It posts the group's
//! genesis when nobody has (the first device), enrolls this device at each new epoch, seals
//! queued pushes again under a new epoch, and carries out the changes the app asks for
//! (rotation, revocation, admins), rebuilding them on the winner when a concurrent change came
//! first. A device refused at `Hello` for being behind fetches its grants before `Hello` on a
//! connection of its own, then connects again.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use sync_core::{GroupReply, GroupRequest, Input as SessionInput, Page};
use sync_crypto::{Enrollment, EpochSecret, GroupRecord, KeyEpoch, open, seal, seal_grant};
use sync_types::{
    BlobId, DeviceId, ErrorCode, FrameCodec, Grant, GroupGet, GroupInfo, Message, Payload,
    WireError,
};
use tokio::sync::oneshot;
use tracing::{info, warn};

use super::io::Input;
use super::{Driver, rejected};
use crate::error::ClientError;
use crate::invite::exchange;
use crate::membership::GroupView;
use crate::types::{MemberInfo, SyncEvent};

/// How often a change is rebuilt on a concurrent winner before giving up.
const MAX_ATTEMPTS: u8 = 3;
/// Largest `GroupInfo` read before `Hello`.
const MAX_INFO_FRAME: usize = 4 << 20;

/// A membership change or question from the app.
pub(crate) enum MembershipOp {
    /// Rotate to a new epoch, revoking `revoke`.
    Rotate {
        revoke: Vec<DeviceId>,
        reply: oneshot::Sender<Result<KeyEpoch, ClientError>>,
    },
    /// Make `admins` the admin set.
    Admins {
        admins: Vec<DeviceId>,
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
    /// The group's devices as the relay's records and enrollments say, checked.
    Members {
        reply: oneshot::Sender<Result<Vec<MemberInfo>, ClientError>>,
    },
}

impl MembershipOp {
    fn fail(self, e: ClientError) {
        match self {
            Self::Rotate { reply, .. } => drop(reply.send(Err(e))),
            Self::Admins { reply, .. } => drop(reply.send(Err(e))),
            Self::Members { reply } => drop(reply.send(Err(e))),
        }
    }
}

/// What a membership request in flight was for.
enum Pending {
    Refresh,
    Genesis,
    Enroll,
    /// History granted to the device that joined with this invite.
    History([u8; 16]),
    Change {
        op: MembershipOp,
        attempts: u8,
        rotated: Option<(KeyEpoch, EpochSecret)>,
    },
}

/// The driver's membership state.
pub(super) struct Membership {
    pub(super) view: GroupView,
    pending: HashMap<u64, Pending>,
    /// Changes waiting for a fresh view, with their attempts so far.
    queued: VecDeque<(MembershipOp, u8)>,
    refreshing: bool,
    /// A fetch before `Hello` is running.
    fetching: bool,
    /// Pull pages that hold blobs of an epoch newer than this device holds, waiting (with the
    /// pages after them) for the refresh in `keys_refresh` to bring its key.
    parked: VecDeque<Page>,
    /// The refresh the parked pages wait for.
    keys_refresh: Option<u64>,
    /// A refresh was in flight when pages were parked: ask again once it is answered (it may
    /// have been read before the rotation).
    refresh_again: bool,
}

impl Membership {
    pub(super) fn new(view: GroupView) -> Self {
        Self {
            view,
            pending: HashMap::new(),
            queued: VecDeque::new(),
            refreshing: false,
            fetching: false,
            parked: VecDeque::new(),
            keys_refresh: None,
            refresh_again: false,
        }
    }
}

impl Driver {
    /// Reads the group's membership again (one request at a time); the request id.
    pub(super) fn refresh_membership(&mut self) -> Option<u64> {
        if self.group.refreshing {
            return None;
        }
        let request = GroupRequest::Get {
            group_id: self.me.group_id,
            after_seq: self.group.view.state.seq(),
        };
        let id = self.session.group_request(request).ok()?;
        self.group.pending.insert(id, Pending::Refresh);
        self.group.refreshing = true;
        Some(id)
    }

    /// A pull page to open now, or `None` if it waits: a page with a blob sealed under an epoch
    /// newer than this device holds (the rotation's broadcast raced the blob's notification)
    /// waits for a refresh that brings the key, and the pages after it wait behind it, so no
    /// blob of a member is reported undecryptable for want of a grant on its way.
    pub(super) fn park_page_for_keys(&mut self, page: Page) -> Option<Page> {
        let current = self.me.keys().current_epoch();
        let newer = page.entries.iter().any(|e| {
            e.payload
                .get(1..5)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .is_some_and(|b| u32::from_be_bytes(b) > current.0)
        });
        if self.group.parked.is_empty() && !newer {
            return Some(page);
        }
        self.group.parked.push_back(page);
        if self.group.keys_refresh.is_none() {
            match self.refresh_membership() {
                Some(id) => self.group.keys_refresh = Some(id),
                None if self.group.refreshing => self.group.refresh_again = true,
                None => self.release_parked(),
            }
        }
        None
    }

    /// Opens the parked pages (with whatever keys the device now holds).
    fn release_parked(&mut self) {
        self.group.keys_refresh = None;
        self.group.refresh_again = false;
        while let Some(page) = self.group.parked.pop_front() {
            self.on_page(page);
        }
    }

    /// A refresh was answered: parked pages go on once the refresh they wait for is done.
    fn after_keys_refresh(&mut self, request_id: u64) {
        if self.group.keys_refresh == Some(request_id) {
            self.release_parked();
        } else if self.group.refresh_again && self.group.keys_refresh.is_none() {
            self.group.refresh_again = false;
            match self.refresh_membership() {
                Some(id) => self.group.keys_refresh = Some(id),
                None => self.release_parked(),
            }
        }
    }

    /// A change or question from the app: answered after a fresh read.
    pub(super) fn on_membership_op(&mut self, op: MembershipOp) {
        if !self.session.is_established() {
            return op.fail(ClientError::NotConnected);
        }
        self.group.queued.push_back((op, 0));
        self.refresh_membership();
    }

    pub(super) fn on_group_reply(
        &mut self,
        request_id: u64,
        result: Result<GroupReply, WireError>,
    ) {
        let Some(pending) = self.group.pending.remove(&request_id) else {
            return;
        };
        match (pending, result) {
            (Pending::Refresh, Ok(GroupReply::Info(info))) => {
                self.group.refreshing = false;
                let learned = self.learn(&info);
                self.after_keys_refresh(request_id);
                if learned {
                    self.after_refresh();
                }
            }
            (Pending::Refresh, other) => {
                self.group.refreshing = false;
                warn!(answer = ?other.err(), "reading the group's membership failed");
                self.after_keys_refresh(request_id);
            }
            (Pending::Genesis | Pending::Enroll, Ok(_)) => {
                self.refresh_membership();
            }
            (Pending::History(invite), Ok(_)) => {
                if let Err(e) = self.store.history_granted(invite) {
                    warn!(error = %e, "recording a history grant failed");
                }
                self.after_refresh();
            }
            (Pending::History(_), Err(e)) => {
                warn!(code = %e.code, "the relay refused a history grant");
                self.run_queued();
            }
            (Pending::Genesis | Pending::Enroll, Err(e)) => {
                warn!(code = %e.code, "membership request refused");
                if e.code == ErrorCode::Conflict || e.code == ErrorCode::EpochSuperseded {
                    self.refresh_membership();
                } else {
                    // Not retried before the next read; the app's changes go on meanwhile.
                    self.run_queued();
                }
            }
            (
                Pending::Change {
                    op,
                    attempts,
                    rotated,
                },
                result,
            ) => self.on_change_answer(op, attempts, rotated, result),
        }
    }

    fn on_change_answer(
        &mut self,
        op: MembershipOp,
        attempts: u8,
        rotated: Option<(KeyEpoch, EpochSecret)>,
        result: Result<GroupReply, WireError>,
    ) {
        match result {
            Ok(_) => {
                let new_epoch = rotated.as_ref().map(|(e, _)| *e);
                if let Some((epoch, secret)) = rotated {
                    let added = self.me.keys_mut().add_epoch(epoch, secret.clone());
                    let stored =
                        self.store
                            .add_membership(&self.me.group_id, &[], &[(epoch, secret)]);
                    if let Err(e) = added {
                        warn!(error = %e, "keeping the new epoch's key failed");
                    }
                    if let Err(e) = stored {
                        warn!(error = %e, "storing the new epoch's key failed");
                    }
                    info!(epoch = epoch.0, "rotated the group's keys");
                    self.reports
                        .emit(SyncEvent::EpochChanged { epoch: epoch.0 });
                    self.reseal_outbox();
                }
                match op {
                    MembershipOp::Rotate { reply, .. } => {
                        let epoch = new_epoch.unwrap_or(self.group.view.state.epoch());
                        let _ = reply.send(Ok(epoch));
                    }
                    MembershipOp::Admins { reply, .. } => drop(reply.send(Ok(()))),
                    MembershipOp::Members { reply } => drop(reply.send(Ok(Vec::new()))),
                }
                self.refresh_membership();
            }
            Err(e) if e.code == ErrorCode::Conflict && attempts + 1 < MAX_ATTEMPTS => {
                // Another change won: rebuild this one on it.
                info!("a concurrent membership change came first; building on it");
                self.group.queued.push_front((op, attempts + 1));
                self.refresh_membership();
            }
            Err(e) => op.fail(rejected(e, None)),
        }
    }

    /// Applies a `GroupInfo`; false if the relay served something the chain refuses.
    fn learn(&mut self, info: &GroupInfo) -> bool {
        let kem = self.me.device.kem_keypair();
        let learned = {
            let mut keys = self.me.keys_mut();
            self.group
                .view
                .learn(info, &mut keys, &kem, self.me.device_id)
        };
        let learned = match learned {
            Ok(l) => l,
            Err(e) => {
                warn!(error = %e, "the relay served membership data the group's records refuse");
                return false;
            }
        };
        if let Err(e) =
            self.store
                .add_membership(&self.me.group_id, &learned.records, &learned.secrets)
        {
            warn!(error = %e, "storing the group's membership failed");
        }
        if learned.revoked.contains(&self.me.device_id) {
            warn!("this device was revoked from the group");
        }
        if let Some((epoch, _)) = learned.secrets.iter().max_by_key(|(e, _)| *e) {
            info!(epoch = epoch.0, "received the group's keys of a new epoch");
            self.reports
                .emit(SyncEvent::EpochChanged { epoch: epoch.0 });
        }
        // Also without new keys: a push that was in flight when they came was refused since,
        // and is queued again under its old epoch.
        self.reseal_outbox();
        true
    }

    /// After a fresh read: the genesis if nobody posted one, this device's enrollment, then
    /// the next change the app asked for.
    fn after_refresh(&mut self) {
        let view = &self.group.view;
        let me = self.me.device_id;
        let epoch = view.state.epoch();
        let holds_current = self.me.keys().epoch_key(epoch).is_some();
        if view.state.seq() == 0 && view.enrollments.keys().all(|d| *d == me) {
            let genesis = GroupRecord::genesis(&self.me.keys(), &self.me.device);
            match genesis {
                Ok(record) => {
                    let request = GroupRequest::Update {
                        record: Some(Payload::from(record.encode())),
                        grants: Vec::new(),
                    };
                    if let Ok(id) = self.session.group_request(request) {
                        self.group.pending.insert(id, Pending::Genesis);
                    }
                }
                Err(e) => warn!(error = %e, "the group's genesis record could not be made"),
            }
            return;
        }
        if holds_current && !view.enrolled(&me) {
            let name = self.store.device_name().ok().flatten().unwrap_or_default();
            let invite = self.store.joined_invite(&self.me.group_id).ok().flatten();
            let enrollment = Enrollment::new(
                &mut self.rng,
                &self.me.keys(),
                &self.me.device,
                &name,
                invite,
            );
            match enrollment {
                Ok(e) => {
                    let request = GroupRequest::Enroll(Payload::from(e.encode()));
                    if let Ok(id) = self.session.group_request(request) {
                        self.group.pending.insert(id, Pending::Enroll);
                    }
                }
                Err(e) => warn!(error = %e, "this device's enrollment could not be made"),
            }
            return;
        }
        if holds_current && self.grant_history() {
            return;
        }
        self.run_queued();
    }

    /// Runs the next change the app asked for, if any.
    fn run_queued(&mut self) {
        if let Some((op, attempts)) = self.group.queued.pop_front() {
            self.run_change(op, attempts);
        }
    }

    /// Grants the group's history to a device that joined with an invite this device made
    /// (with history): the secrets of the epochs after 0 (the invite carried the group secret)
    /// and before the one it joined in. Whether a grant was sent.
    fn grant_history(&mut self) -> bool {
        let owed = self.group.view.enrollments.values().find_map(|e| {
            let invite = e.invite_id()?;
            let owes = self.store.owes_history(invite).ok()?;
            owes.then(|| (invite, e.device(), e.epoch(), e.kem().clone()))
        });
        let Some((invite, device, joined_at, kem)) = owed else {
            return false;
        };
        let keys = self.me.keys().clone();
        let secrets: Vec<_> = keys
            .epochs()
            .filter(|e| *e > KeyEpoch::INITIAL && *e < joined_at)
            .filter_map(|e| keys.epoch_secret(e).map(|s| (e, s)))
            .collect();
        if secrets.is_empty() {
            if let Err(e) = self.store.history_granted(invite) {
                warn!(error = %e, "recording a history grant failed");
            }
            return false;
        }
        let epoch = self.group.view.state.epoch();
        let sealed = seal_grant(
            &mut self.rng,
            self.me.group_id,
            epoch,
            self.me.device_id,
            device,
            &kem,
            &secrets,
        );
        let envelope = match sealed {
            Ok(env) => env,
            Err(e) => {
                warn!(error = %e, "sealing a history grant failed");
                return false;
            }
        };
        let request = GroupRequest::Update {
            record: None,
            grants: vec![Grant {
                device,
                epoch: epoch.0,
                envelope: Payload::from(envelope),
            }],
        };
        match self.session.group_request(request) {
            Ok(id) => {
                info!(
                    epochs = secrets.len(),
                    "granting the group's history to a new device"
                );
                self.group.pending.insert(id, Pending::History(invite));
                true
            }
            Err(_) => false,
        }
    }

    fn run_change(&mut self, op: MembershipOp, attempts: u8) {
        let view = &self.group.view;
        let planned = match &op {
            MembershipOp::Members { .. } => {
                let list = self.members();
                if let MembershipOp::Members { reply } = op {
                    let _ = reply.send(Ok(list));
                }
                return self.after_refresh();
            }
            MembershipOp::Rotate { revoke, .. } => {
                let keys = self.me.keys().clone();
                view.plan_rotation(&mut self.rng, &keys, &self.me.device, revoke)
                    .map(|r| {
                        (
                            GroupRequest::Update {
                                record: Some(Payload::from(r.record.encode())),
                                grants: r.grants,
                            },
                            Some((r.epoch, r.secret)),
                        )
                    })
            }
            MembershipOp::Admins { admins, .. } => view
                .plan_admins(&self.me.keys(), &self.me.device, admins.clone())
                .map(|r| {
                    (
                        GroupRequest::Update {
                            record: Some(Payload::from(r.encode())),
                            grants: Vec::new(),
                        },
                        None,
                    )
                }),
        };
        match planned {
            Ok((request, rotated)) => match self.session.group_request(request) {
                Ok(id) => {
                    self.group.pending.insert(
                        id,
                        Pending::Change {
                            op,
                            attempts,
                            rotated,
                        },
                    );
                }
                Err(_) => op.fail(ClientError::NotConnected),
            },
            Err(e) => op.fail(e),
        }
    }

    /// The group's devices, from the checked records and enrollments.
    pub(super) fn members(&self) -> Vec<MemberInfo> {
        let view = &self.group.view;
        let keys = self.me.keys();
        let mut devices = view.current_devices();
        for d in view
            .enrollments
            .keys()
            .copied()
            .chain(view.state.revoked().map(|(d, _)| d))
        {
            if !devices.contains(&d) {
                devices.push(d);
            }
        }
        devices
            .into_iter()
            .map(|d| MemberInfo {
                device: d,
                name: view.enrollments.get(&d).and_then(|e| e.name(&keys)),
                admin: view.state.admins().contains(&d),
                revoked_at: view.state.revoked_at(&d).map(|e| e.0),
                this_device: d == self.me.device_id,
            })
            .collect()
    }

    /// Seals queued pushes of older epochs again under the current one (same blob id, same
    /// sequence number); pushes in flight are left to be refused and sealed again after.
    pub(super) fn reseal_outbox(&mut self) {
        let keys = self.me.keys().clone();
        let epoch = keys.current_epoch();
        let Some(key) = keys.epoch_key(epoch) else {
            return;
        };
        let outdated: Vec<(BlobId, Bytes)> = self
            .session
            .outbox()
            .iter()
            .filter(|e| !e.is_in_flight())
            .filter(|e| {
                e.payload()
                    .get(1..5)
                    .is_some_and(|b| b != epoch.0.to_be_bytes())
            })
            .map(|e| (e.blob_id(), e.payload().clone()))
            .collect();
        let mut resealed = Vec::new();
        for (blob_id, payload) in outdated {
            let opened = open(
                &keys,
                &self.me.group_id,
                &blob_id,
                &self.me.device_id,
                &payload,
            );
            let sealed = opened.ok().and_then(|o| {
                let seq = o.seq.unwrap_or(0);
                seal(
                    &mut self.rng,
                    &key,
                    &self.me.group_id,
                    &self.me.device,
                    &blob_id,
                    seq,
                    &o.plaintext,
                )
                .ok()
            });
            match sealed {
                Some(bytes) => {
                    if self
                        .session
                        .replace_payload(&blob_id, Bytes::from(bytes.clone()))
                    {
                        resealed.push((blob_id, bytes));
                    }
                }
                None => warn!(blob = %blob_id, "a queued push could not be sealed again"),
            }
        }
        if resealed.is_empty() {
            return;
        }
        if let Err(e) = self.store.reseal_outbox(&resealed) {
            warn!(error = %e, "storing pushes sealed again failed");
        }
        info!(
            count = resealed.len(),
            epoch = epoch.0,
            "queued pushes sealed under the new epoch"
        );
    }

    /// The relay refused `Hello` because this device is behind the group's epoch: fetch the
    /// grants on a connection of its own, then connect again.
    pub(super) fn fetch_membership_before_hello(&mut self) {
        if self.group.fetching {
            return;
        }
        self.group.fetching = true;
        let transport = std::sync::Arc::clone(&self.transport);
        let device = self.me.device.clone();
        let request = Message::GroupGet(GroupGet {
            request_id: 1,
            group_id: self.me.group_id,
            after_seq: self.group.view.state.seq(),
        });
        let tx = self.input_tx.clone();
        tokio::spawn(async move {
            let answer = exchange(
                &*transport,
                &device,
                &request,
                FrameCodec::new(MAX_INFO_FRAME),
            )
            .await;
            let result = match answer {
                Ok(Message::GroupInfo(info)) => Ok(info),
                Ok(Message::Error(e)) => Err(format!("{}: {}", e.code, e.message)),
                Ok(other) => Err(format!("unexpected {}", other.message_type().name())),
                Err(e) => Err(format!("{e:?}")),
            };
            let _ = tx.send(Input::GroupFetched(result)).await;
        });
    }

    /// Whether a fetch before `Hello` is running.
    pub(super) fn group_fetching(&self) -> bool {
        self.group.fetching
    }

    pub(super) fn on_group_fetched(&mut self, result: Result<GroupInfo, String>) {
        self.group.fetching = false;
        let caught_up = match result {
            Ok(info) => {
                let before = self.me.keys().current_epoch();
                self.learn(&info) && self.me.keys().current_epoch() > before
            }
            Err(e) => {
                warn!(error = %e, "fetching the group's keys before Hello failed");
                false
            }
        };
        if caught_up {
            // Holding the new epoch's key: try the session again now.
            self.feed(SessionInput::Connect);
        } else if let Some(first) = self.first.take() {
            // The first attempt ends offline: the client keeps retrying.
            self.publish_status();
            let _ = first.send(Ok(()));
        }
    }

    /// The session ended: requests in flight are lost; the app's changes fail.
    pub(super) fn membership_session_lost(&mut self) {
        self.group.refreshing = false;
        // The pull round they belong to ended with the session.
        self.group.parked.clear();
        self.group.keys_refresh = None;
        self.group.refresh_again = false;
        for (_, pending) in self.group.pending.drain() {
            if let Pending::Change { op, .. } = pending {
                op.fail(ClientError::NotConnected);
            }
        }
        for (op, _) in self.group.queued.drain(..) {
            op.fail(ClientError::NotConnected);
        }
    }
}
