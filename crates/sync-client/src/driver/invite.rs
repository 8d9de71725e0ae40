//! Leaving a sealed invite in the relay's mailbox through this device's session (`InvitePut`,
//! answered by `InviteStored` or an error).

use sync_types::WireError;
use tokio::sync::oneshot;

use super::{Driver, rejected};
use crate::error::ClientError;

impl Driver {
    pub(super) fn on_invite_put(
        &mut self,
        lookup_id: String,
        sealed: Vec<u8>,
        ttl_secs: u32,
        reply: oneshot::Sender<Result<(), ClientError>>,
    ) {
        match self.session.put_invite(lookup_id, sealed.into(), ttl_secs) {
            Ok(request_id) => {
                self.io.invite_requests.insert(request_id, reply);
            }
            Err(_) => {
                let _ = reply.send(Err(ClientError::NotConnected));
            }
        }
    }

    pub(super) fn on_invite_stored(&mut self, request_id: u64, result: Result<(), WireError>) {
        if let Some(waiter) = self.io.invite_requests.remove(&request_id) {
            let _ = waiter.send(result.map_err(|e| rejected(e, None)));
        }
    }
}
