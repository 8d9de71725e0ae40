//! Group membership requests: `Enroll`, `GroupUpdate` (records and key grants) and `GroupGet`
//! (also accepted as the first frame, from a device whose keys are behind the group's epoch).
//!
//! Every record is checked against the group's chain before it is stored (signatures, admin,
//! order); a rotation is stored only with a grant for each remaining member, so nobody who
//! stays is left without the new key. After a rotation, the sessions of revoked devices end at
//! once and every other session of the group is told (`GroupChanged`).

use std::sync::Arc;

use sync_crypto::{Applied, Enrollment, GroupRecord, GroupState, MAX_MEMBERS, MembershipError};
use sync_types::{
    DeviceId, Enroll, ErrorCode, Grant, GroupChanged, GroupGet, GroupId, GroupInfo, GroupUpdate,
    Message, Payload, WireError,
};

use super::{Session, storage_error};
use crate::server::RelayCtx;
use crate::storage::{MembershipWrite, Storage, StoredGrant};

/// Largest grant envelope accepted (an epoch grant is about 1.2 KiB; a device's whole history
/// of many epochs fits easily).
const MAX_GRANT_BYTES: usize = 256 * 1024;

fn refused(e: &MembershipError) -> WireError {
    match e {
        MembershipError::NotNext { .. } | MembershipError::BrokenChain => WireError::new(
            ErrorCode::Conflict,
            format!("{e}: fetch the group's records and try again"),
        ),
        other => WireError::new(ErrorCode::MembershipRefused, other.to_string()),
    }
}

/// The answer to a membership request.
fn reply(request_id: u64, answer: Result<GroupChanged, WireError>) -> Message {
    match answer {
        Ok(c) => Message::GroupChanged(c),
        Err(e) => Message::Error(e.for_request(request_id)),
    }
}

fn refuse(what: &str) -> WireError {
    WireError::new(ErrorCode::MembershipRefused, what)
}

fn changed(request_id: Option<u64>, state: &GroupState) -> GroupChanged {
    GroupChanged {
        request_id,
        seq: state.seq(),
        epoch: state.epoch().0,
    }
}

impl Session {
    /// `Enroll`: stores the session's device's enrollment at the group's current epoch.
    pub(super) async fn enroll(&self, m: Enroll) -> Message {
        let ctx = &self.ctx;
        let answer = async {
            let _writing = ctx.memberships.write.lock().await;
            let state = self.current_state().await?;
            let e = Enrollment::decode(&m.enrollment).map_err(|e| refused(&e))?;
            if e.device() != self.peer {
                return Err(refuse("an enrollment is posted by its own device"));
            }
            state.check_enrollment(&e).map_err(|e| refused(&e))?;
            if e.epoch() != state.epoch() {
                return Err(superseded(&state));
            }
            let write = MembershipWrite {
                enrollment: Some((self.peer, m.enrollment.to_vec())),
                ..MembershipWrite::default()
            };
            ctx.storage
                .membership_write(self.group, write)
                .await
                .map_err(|e| storage_error(ctx, &e))?;
            Ok(self.announce(m.request_id, &state, &[]))
        };
        reply(m.request_id, answer.await)
    }

    /// `GroupUpdate`: checks and stores a record and its grants, then tells the group.
    pub(super) async fn group_update(&self, m: GroupUpdate) -> Message {
        let ctx = &self.ctx;
        let answer = async {
            let _writing = ctx.memberships.write.lock().await;
            let state = self.current_state().await?;
            let enrolled = if m.record.is_some() || !m.grants.is_empty() {
                self.ctx
                    .storage
                    .membership(self.group, self.peer, u64::MAX)
                    .await
                    .map_err(|e| storage_error(ctx, &e))?
                    .enrollments
            } else {
                Vec::new()
            };
            let mut next = (*state).clone();
            let mut revoked = Vec::new();
            let mut record = None;
            if let Some(bytes) = &m.record {
                let r = GroupRecord::decode(bytes).map_err(|e| refused(&e))?;
                if r.signer() != self.peer {
                    return Err(refuse("a record is posted by the admin that signed it"));
                }
                if let Applied::Rotation { revoked: gone, .. } =
                    next.apply(&r).map_err(|e| refused(&e))?
                {
                    revoked = gone;
                    let forgotten = enrolled
                        .iter()
                        .find(|(d, _)| !next.members().contains(d) && next.revoked_at(d).is_none());
                    if let Some((d, _)) = forgotten {
                        return Err(refuse(&format!(
                            "a rotation keeps or revokes every enrolled device ({} is neither)",
                            d.short()
                        )));
                    }
                    let missing = next.members().iter().find(|d| {
                        **d != self.peer
                            && !m
                                .grants
                                .iter()
                                .any(|g| g.device == **d && g.epoch == next.epoch().0)
                    });
                    if let Some(d) = missing {
                        return Err(refuse(&format!(
                            "a rotation needs a grant for every member ({} has none)",
                            d.short()
                        )));
                    }
                }
                record = Some((r.seq(), bytes.to_vec()));
            }
            let grants = check_grants(self.peer, &next, &enrolled, &m.grants)?;
            if record.is_none() && grants.is_empty() {
                return Ok(changed(Some(m.request_id), &next));
            }
            let write = MembershipWrite {
                record,
                enrollment: None,
                grants,
            };
            let has_record = write.record.is_some();
            ctx.storage
                .membership_write(self.group, write)
                .await
                .map_err(|e| match e {
                    crate::storage::StorageError::RecordConflict => {
                        // Another relay on the same database stored first: read it again.
                        ctx.memberships.forget(&self.group);
                        WireError::new(
                            ErrorCode::Conflict,
                            "another change was stored first: fetch the group's records",
                        )
                    }
                    other => storage_error(ctx, &other),
                })?;
            if has_record {
                ctx.memberships.set(Arc::new(next.clone()));
                session_audit!(
                    self,
                    "group_record",
                    seq = next.seq(),
                    epoch = next.epoch().0,
                    revoked = revoked.len(),
                );
            }
            Ok(self.announce(m.request_id, &next, &revoked))
        };
        reply(m.request_id, answer.await)
    }

    /// The group's membership as stored (the caller holds the membership write lock).
    async fn current_state(&self) -> Result<Arc<GroupState>, WireError> {
        self.ctx
            .memberships
            .state(&self.ctx.storage, self.group)
            .await
            .map_err(|e| storage_error(&self.ctx, &e))
    }

    /// Tells the group's other sessions that its membership is now `state` (ending those of
    /// `revoked` devices); the answer for the requester.
    fn announce(&self, request_id: u64, state: &GroupState, revoked: &[DeviceId]) -> GroupChanged {
        let ctx = &self.ctx;
        ctx.hub.group_changed(
            &self.group,
            &changed(None, state),
            revoked,
            self.id,
            &ctx.metrics,
        );
        changed(Some(request_id), state)
    }

    /// `GroupGet` in a session: the session's group only.
    pub(super) async fn group_get(&self, m: GroupGet) -> Message {
        if m.group_id != self.group {
            let err = WireError::new(ErrorCode::UnexpectedMessage, "GroupGet for another group");
            return Message::Error(err.for_request(m.request_id));
        }
        group_info(&self.ctx, self.peer, m, false).await
    }
}

/// The answer to a session's `Hello` under an older epoch than the group's.
pub(super) fn superseded(state: &GroupState) -> WireError {
    WireError::new(
        ErrorCode::EpochSuperseded,
        format!(
            "the group's keys rotated to epoch {}: fetch them with GroupGet",
            state.epoch().0
        ),
    )
}

/// `GroupInfo` for `peer`: records after `after_seq`, enrollments and the peer's grants. As a
/// first frame (`first`), only a device the group knows (a member, enrolled, or revoked: it
/// learns that it was) gets an answer; anyone else is told `NotFound`.
pub(super) async fn group_info(
    ctx: &RelayCtx,
    peer: DeviceId,
    m: GroupGet,
    first: bool,
) -> Message {
    let read = match ctx.storage.membership(m.group_id, peer, m.after_seq).await {
        Ok(read) => read,
        Err(e) => return Message::Error(storage_error(ctx, &e).for_request(m.request_id)),
    };
    if first && !knows(ctx, m.group_id, peer, &read).await {
        let err = WireError::new(ErrorCode::NotFound, "no membership for this device");
        return Message::Error(err.for_request(m.request_id));
    }
    Message::GroupInfo(GroupInfo {
        request_id: m.request_id,
        records: read.records.into_iter().map(Payload::from).collect(),
        enrollments: read
            .enrollments
            .into_iter()
            .map(|(_, e)| Payload::from(e))
            .collect(),
        grants: read
            .grants
            .into_iter()
            .map(|g| Grant {
                device: g.sender,
                epoch: g.epoch,
                envelope: Payload::from(g.envelope),
            })
            .collect(),
    })
}

async fn knows(
    ctx: &RelayCtx,
    group: GroupId,
    peer: DeviceId,
    read: &crate::storage::MembershipRead,
) -> bool {
    if !read.grants.is_empty() || read.enrollments.iter().any(|(d, _)| *d == peer) {
        return true;
    }
    match ctx.memberships.state(&ctx.storage, group).await {
        Ok(state) => state.members().contains(&peer) || state.revoked_at(&peer).is_some(),
        Err(_) => false,
    }
}

/// Grants may go to members of the (new) state or enrolled devices that were not revoked,
/// each in the current epoch and of bounded size.
fn check_grants(
    sender: DeviceId,
    state: &GroupState,
    enrolled: &[(DeviceId, Vec<u8>)],
    grants: &[Grant],
) -> Result<Vec<(DeviceId, StoredGrant)>, WireError> {
    if grants.len() > MAX_MEMBERS {
        return Err(refuse("too many grants"));
    }
    let mut out = Vec::with_capacity(grants.len());
    for g in grants {
        let known =
            state.members().contains(&g.device) || enrolled.iter().any(|(d, _)| *d == g.device);
        if !known || state.revoked_at(&g.device).is_some() {
            return Err(refuse("a grant for a device that is not a member"));
        }
        if g.epoch != state.epoch().0 {
            return Err(superseded(state));
        }
        if g.envelope.len() > MAX_GRANT_BYTES {
            return Err(refuse("a grant is too large"));
        }
        out.push((
            g.device,
            StoredGrant {
                sender,
                epoch: g.epoch,
                envelope: g.envelope.to_vec(),
            },
        ));
    }
    Ok(out)
}
