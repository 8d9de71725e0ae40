//! Group membership and key epochs: a device's `Enroll`ment, the signed records and the key
//! grants of a rotation (`GroupUpdate`), reading them back (`GroupGet` / `GroupInfo`), and the
//! `GroupChanged` answer and broadcast.
//!
//! Records, enrollments and grants travel as opaque bytes: the relay checks their signatures
//! and chain with `sync-crypto`, and cannot open a grant.

use serde::{Deserialize, Serialize};

use crate::ids::{DeviceId, GroupId};
use crate::payload::Payload;
use crate::wire::encoded_len;

/// Client → relay, in a session: this device's enrollment (its hybrid KEM public key and sealed
/// name, signed by the device and the epoch's auth key). Answered by `GroupChanged`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enroll {
    /// Client-chosen id, echoed by `GroupChanged` or `Error`.
    pub request_id: u64,
    /// The encoded enrollment.
    pub enrollment: Payload,
}

encoded_len!(Enroll {
    request_id,
    enrollment
});

/// One key grant: a hybrid KEM envelope holding epoch secrets for one device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// In `GroupUpdate`: the recipient. In `GroupInfo`: the sender.
    pub device: DeviceId,
    /// The epoch the grant was issued in (bound into the envelope).
    pub epoch: u32,
    /// The envelope.
    pub envelope: Payload,
}

encoded_len!(
    /// Exact size of the grant's encoding.
    Grant { device, epoch, envelope }
);

/// Client → relay, in a session of an admin (for a record) or any member (grants only): the
/// next membership record, if any, and key grants for other devices. A rotation's record and
/// its grants arrive together, so no member misses the new epoch's secret. Answered by
/// `GroupChanged`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupUpdate {
    /// Client-chosen id, echoed by `GroupChanged` or `Error`.
    pub request_id: u64,
    /// The encoded record.
    pub record: Option<Payload>,
    /// Grants, one per recipient.
    pub grants: Vec<Grant>,
}

encoded_len!(GroupUpdate {
    request_id,
    record,
    grants
});

/// Client → relay: the group's records after `after_seq`, its enrollments and the grants for
/// this device. Allowed as the first frame (a device that missed a rotation cannot say
/// `Hello` with its old keys; the relay then answers and closes) and in a session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupGet {
    /// Client-chosen id, echoed by `GroupInfo` or `Error`.
    pub request_id: u64,
    /// The group.
    pub group_id: GroupId,
    /// Send records with a sequence number above this.
    pub after_seq: u64,
}

encoded_len!(GroupGet {
    request_id,
    group_id,
    after_seq
});

/// Relay → client: answer to `GroupGet`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupInfo {
    /// Echo of `GroupGet.request_id`.
    pub request_id: u64,
    /// Encoded records after `after_seq`, in order.
    pub records: Vec<Payload>,
    /// Encoded enrollments, the latest of each device.
    pub enrollments: Vec<Payload>,
    /// Grants addressed to the asking device, oldest first (`device` is the sender).
    pub grants: Vec<Grant>,
}

encoded_len!(GroupInfo {
    request_id,
    records,
    enrollments,
    grants
});

/// Relay → client: the group's membership changed (a record or an enrollment was stored). The
/// answer to `Enroll` and `GroupUpdate` (with their `request_id`) and a broadcast to the
/// group's other sessions (without).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupChanged {
    /// Echo of the request's id for the requester; `None` in the broadcast.
    pub request_id: Option<u64>,
    /// Sequence number of the group's last record.
    pub seq: u64,
    /// The group's current key epoch.
    pub epoch: u32,
}

encoded_len!(GroupChanged {
    request_id,
    seq,
    epoch
});
