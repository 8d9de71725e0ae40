//! The device's view of its group's membership, and the changes it can make: checking what the
//! relay serves (records against the chain, enrollments against their signatures, grants against
//! the chain's auth keys) and planning a rotation (a fresh epoch secret sealed to every member
//! that stays, in hybrid KEM grants).
//!
//! No I/O: the driver feeds in `GroupInfo` answers and sends what is planned here.

use std::collections::{BTreeMap, HashMap};

use rand_core::CryptoRng;
use sync_crypto::{
    Applied, Change, DeviceKey, Enrollment, EpochSecret, GroupKeys, GroupRecord, GroupState,
    KemKeypair, KeyEpoch, MembershipError, open_grant, seal_grant,
};
use sync_types::{DeviceId, Grant, GroupId, GroupInfo, Payload};
use tracing::warn;

use crate::error::ClientError;

/// What the device knows of the group's membership.
#[derive(Debug, Clone)]
pub(crate) struct GroupView {
    pub(crate) state: GroupState,
    /// The latest valid enrollment of each device.
    pub(crate) enrollments: BTreeMap<DeviceId, Enrollment>,
    /// Enrollments checked and kept, by their bytes: the same bytes served again are not
    /// checked again.
    checked: HashMap<Vec<u8>, DeviceId>,
    /// Grants already opened: the relay serves every grant of this device, oldest first.
    grants_seen: usize,
}

/// What one `GroupInfo` taught the device, to be stored.
#[derive(Debug, Default)]
pub(crate) struct Learned {
    /// Records applied: sequence number and bytes.
    pub(crate) records: Vec<(u64, Vec<u8>)>,
    /// Epoch secrets received (checked against the chain).
    pub(crate) secrets: Vec<(KeyEpoch, EpochSecret)>,
    /// Devices revoked by the records applied.
    pub(crate) revoked: Vec<DeviceId>,
}

/// A rotation ready to post.
pub(crate) struct Rotation {
    pub(crate) record: GroupRecord,
    pub(crate) grants: Vec<Grant>,
    pub(crate) epoch: KeyEpoch,
    pub(crate) secret: EpochSecret,
}

impl GroupView {
    /// A group whose records this device has not read yet.
    pub(crate) fn new(group: GroupId) -> Self {
        Self {
            state: GroupState::new(group),
            enrollments: BTreeMap::new(),
            checked: HashMap::new(),
            grants_seen: 0,
        }
    }

    /// The view from the records this device stored (checked again).
    pub(crate) fn load(group: GroupId, records: &[Vec<u8>]) -> Result<Self, MembershipError> {
        let mut view = Self::new(group);
        for r in records {
            view.state.apply(&GroupRecord::decode(r)?)?;
        }
        Ok(view)
    }

    /// Applies a `GroupInfo`: records in order (a record that breaks the chain stops it, and
    /// the error says so), valid enrollments, and grants to this device whose secrets match the
    /// chain (others are ignored: a hostile relay may serve anything). New epoch secrets go
    /// into `keys`.
    pub(crate) fn learn(
        &mut self,
        info: &GroupInfo,
        keys: &mut GroupKeys,
        kem: &KemKeypair,
        me: DeviceId,
    ) -> Result<Learned, MembershipError> {
        let mut learned = Learned::default();
        for bytes in &info.records {
            let record = GroupRecord::decode(bytes)?;
            if record.seq() <= self.state.seq() {
                continue;
            }
            if let Applied::Rotation { revoked, .. } = self.state.apply(&record)? {
                learned.revoked.extend(revoked);
            }
            learned.records.push((record.seq(), bytes.to_vec()));
        }
        // A device revoked since its enrollment was kept is not a member any more.
        let state = &self.state;
        self.enrollments
            .retain(|d, _| state.revoked_at(d).is_none());
        self.checked.retain(|_, d| state.revoked_at(d).is_none());
        for bytes in &info.enrollments {
            if self.checked.contains_key(bytes.as_slice()) {
                continue;
            }
            match Enrollment::decode(bytes).and_then(|e| {
                self.state.check_enrollment(&e)?;
                Ok(e)
            }) {
                Ok(e) => {
                    let newer = self
                        .enrollments
                        .get(&e.device())
                        .is_none_or(|old| old.epoch() <= e.epoch());
                    if newer {
                        self.checked.insert(bytes.to_vec(), e.device());
                        self.enrollments.insert(e.device(), e);
                    }
                }
                Err(MembershipError::Revoked) => {}
                Err(e) => warn!(error = %e, "an enrollment from the relay does not check"),
            }
        }
        let fresh = info.grants.get(self.grants_seen..).unwrap_or(&[]);
        self.grants_seen = info.grants.len().max(self.grants_seen);
        for grant in fresh {
            let epoch = KeyEpoch(grant.epoch);
            let opened = open_grant(
                kem,
                self.state.group(),
                epoch,
                grant.device,
                me,
                &grant.envelope,
            );
            let secrets = match opened {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, "a key grant does not open");
                    continue;
                }
            };
            if let Err(e) = self.state.check_grant(&secrets) {
                warn!(error = %e, "a key grant does not match the group's records");
                continue;
            }
            for (epoch, secret) in secrets {
                if keys.epoch_key(epoch).is_none() && keys.add_epoch(epoch, secret.clone()).is_ok()
                {
                    learned.secrets.push((epoch, secret));
                }
            }
        }
        Ok(learned)
    }

    /// Whether this device's enrollment at the current epoch is known.
    pub(crate) fn enrolled(&self, me: &DeviceId) -> bool {
        self.enrollments
            .get(me)
            .is_some_and(|e| e.epoch() == self.state.epoch())
    }

    /// Devices that hold (or are to hold) the current epoch: the records' members and enrolled
    /// devices that were not revoked.
    pub(crate) fn current_devices(&self) -> Vec<DeviceId> {
        let mut out: Vec<DeviceId> = self.state.members().iter().copied().collect();
        for d in self.enrollments.keys() {
            if !out.contains(d) && self.state.revoked_at(d).is_none() {
                out.push(*d);
            }
        }
        out
    }

    /// Checks that `me` is an admin and each of `devices` a current device (the start of any
    /// change an admin makes to them); returns the current devices.
    fn admin_changing(
        &self,
        me: &DeviceKey,
        devices: &[DeviceId],
    ) -> Result<Vec<DeviceId>, ClientError> {
        if !self.state.admins().contains(&me.device_id()) {
            return Err(ClientError::MembershipChange(
                "this device is not an admin of the group".into(),
            ));
        }
        let current = self.current_devices();
        if let Some(d) = devices.iter().find(|d| !current.contains(d)) {
            return Err(ClientError::MembershipChange(format!(
                "device {} is not a member of the group",
                d.short()
            )));
        }
        Ok(current)
    }

    /// A rotation by `me` that keeps every current device except `revoke`.
    pub(crate) fn plan_rotation<R: CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        keys: &GroupKeys,
        me: &DeviceKey,
        revoke: &[DeviceId],
    ) -> Result<Rotation, ClientError> {
        let current = self.admin_changing(me, revoke)?;
        let my_id = me.device_id();
        if revoke.contains(&my_id) {
            return Err(ClientError::MembershipChange(
                "a device cannot revoke itself".into(),
            ));
        }
        let keep: Vec<DeviceId> = current
            .into_iter()
            .filter(|d| !revoke.contains(d))
            .collect();
        let epoch = KeyEpoch(self.state.epoch().0.saturating_add(1));
        let secret = EpochSecret::random(rng);
        let mut next_keys = keys.clone();
        next_keys
            .add_epoch(epoch, secret.clone())
            .map_err(|e| ClientError::Internal(format!("new epoch: {e}")))?;
        let record = GroupRecord::next(
            &self.state,
            &next_keys,
            me,
            Change::Rotate {
                keep: keep.clone(),
                revoke: revoke.to_vec(),
            },
        )?;
        let mut grants = Vec::with_capacity(keep.len());
        for d in keep.iter().filter(|d| **d != my_id) {
            let enrollment = self.enrollments.get(d).ok_or_else(|| {
                ClientError::MembershipChange(format!(
                    "device {} has not announced its key yet (it enrolls when it next connects)",
                    d.short()
                ))
            })?;
            let envelope = seal_grant(
                rng,
                self.state.group(),
                epoch,
                my_id,
                *d,
                enrollment.kem(),
                &[(epoch, secret.clone())],
            )
            .map_err(|e| ClientError::Internal(format!("sealing a key grant: {e}")))?;
            grants.push(Grant {
                device: *d,
                epoch: epoch.0,
                envelope: Payload::from(envelope),
            });
        }
        Ok(Rotation {
            record,
            grants,
            epoch,
            secret,
        })
    }

    /// A record by `me` that makes `admins` the admin set (each must be a current device).
    pub(crate) fn plan_admins(
        &self,
        keys: &GroupKeys,
        me: &DeviceKey,
        admins: Vec<DeviceId>,
    ) -> Result<GroupRecord, ClientError> {
        self.admin_changing(me, &admins)?;
        Ok(GroupRecord::next(
            &self.state,
            keys,
            me,
            Change::Admins(admins),
        )?)
    }
}
