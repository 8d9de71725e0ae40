//! Requests the relay answers with a plain acknowledgement, through this device's session:
//! leaving a sealed invite in the relay's mailbox (`InvitePut`, answered by `InviteStored`) and
//! registering large content before its upload (`ContentRef`, answered by `ContentAck`), or an
//! error either way.

use sync_types::{ContentRef, WireError};
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
        let sent = self.session.put_invite(lookup_id, sealed.into(), ttl_secs);
        self.await_answer(sent.ok(), reply);
    }

    pub(super) fn on_register_content(
        &mut self,
        content: ContentRef,
        reply: oneshot::Sender<Result<(), ClientError>>,
    ) {
        let sent = self.session.register_content(content);
        self.await_answer(sent.ok(), reply);
    }

    fn await_answer(
        &mut self,
        request_id: Option<u64>,
        reply: oneshot::Sender<Result<(), ClientError>>,
    ) {
        match request_id {
            Some(id) => {
                self.io.answer_requests.insert(id, reply);
            }
            None => {
                let _ = reply.send(Err(ClientError::NotConnected));
            }
        }
    }

    pub(super) fn on_answered(&mut self, request_id: u64, result: Result<(), WireError>) {
        if let Some(waiter) = self.io.answer_requests.remove(&request_id) {
            let _ = waiter.send(result.map_err(|e| rejected(e, None)));
        }
    }
}
