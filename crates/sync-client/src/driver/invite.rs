//! Leaving a sealed invite in the relay's mailbox through this device's session (`InvitePut`,
//! answered by `InviteStored` or an error).

use sync_types::{InvitePut, Message};
use tokio::sync::oneshot;

use super::Driver;
use crate::error::ClientError;

impl Driver {
    pub(super) fn on_invite_put(
        &mut self,
        lookup_id: String,
        sealed: Vec<u8>,
        ttl_secs: u32,
        reply: oneshot::Sender<Result<(), ClientError>>,
    ) {
        if !self.session.established {
            let _ = reply.send(Err(ClientError::NotConnected));
            return;
        }
        let request_id = self.session.request_id();
        self.session.invite_requests.insert(request_id, reply);
        self.session.send(Message::InvitePut(InvitePut {
            request_id,
            lookup_id,
            sealed: sealed.into(),
            ttl_secs,
        }));
    }

    pub(super) fn on_invite_stored(&mut self, request_id: u64) {
        match self.session.invite_requests.remove(&request_id) {
            Some(waiter) => {
                let _ = waiter.send(Ok(()));
            }
            None => {
                self.session_failed("InviteStored for no InvitePut".into(), true);
            }
        }
    }
}
