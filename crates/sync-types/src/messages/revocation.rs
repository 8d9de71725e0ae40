//! Revoking a device: `RevokeDevice` and its answer and broadcast, `DeviceRevoked`.

use serde::{Deserialize, Serialize};

use crate::ids::DeviceId;
use crate::wire::len;

/// Client → relay: revoke a device from the group as of a key epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeDevice {
    /// Client-chosen id, echoed by `DeviceRevoked` or `Error`.
    pub request_id: u64,
    /// The device to revoke.
    pub device: DeviceId,
    /// The first key epoch the device may no longer use.
    pub epoch: u32,
}

impl RevokeDevice {
    /// Exact size of the body's encoding.
    pub fn encoded_len(&self) -> usize {
        len::array_header(3) + len::uint(self.request_id) + len::ID32 + len::uint(self.epoch.into())
    }
}

/// Relay → client: a device was revoked. Sent to the requester (with its `request_id`) and
/// broadcast to the group's other sessions (without).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRevoked {
    /// Echo of `RevokeDevice.request_id` for the requester; `None` in the broadcast.
    pub request_id: Option<u64>,
    /// The revoked device.
    pub device: DeviceId,
    /// The first key epoch the device may no longer use.
    pub epoch: u32,
}

impl DeviceRevoked {
    /// Exact size of the body's encoding.
    pub fn encoded_len(&self) -> usize {
        len::array_header(3)
            + len::opt_uint(self.request_id)
            + len::ID32
            + len::uint(self.epoch.into())
    }
}
