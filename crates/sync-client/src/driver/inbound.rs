//! What reaches the driver from the session: dial results, frames and I/O failures. Frames on an
//! established session go to the part they concern (push pipeline, pulls, heartbeat, invite
//! mailbox); a relay error goes to the request it answers.

use sync_types::{Message, WireError};

use super::io::Input;
use super::{Driver, rejected, wire_reason};

impl Driver {
    pub(super) fn on_input(&mut self, input: Input) {
        match input {
            Input::Dialed { attempt, result } => self.on_dialed(attempt, result),
            Input::Frame { session, msg } => {
                if self.session.is_current(session) {
                    self.session.heard();
                    self.on_message(msg);
                }
            }
            Input::ReadEnded { session, reason } | Input::WriteFailed { session, reason } => {
                if self.session.is_current(session) {
                    self.session_failed(reason, false);
                }
            }
        }
    }

    fn on_message(&mut self, msg: Message) {
        if !self.session.established {
            return self.on_handshake_message(msg);
        }
        match msg {
            Message::PushAck(ack) => self.on_push_ack(ack),
            Message::PullResponse(resp) => self.on_pull_response(resp),
            Message::Notify(n) => self.on_notify(n),
            Message::Pong(p) => {
                self.session.take_ping(p.request_id);
            }
            Message::InviteStored(stored) => self.on_invite_stored(stored.request_id),
            Message::Error(e) => self.on_error(e),
            Message::Bye(b) => {
                let reason = format!(
                    "relay ended the session{}",
                    b.reason.map(|r| format!(": {r}")).unwrap_or_default()
                );
                self.session_failed(reason, false);
            }
            other => {
                let reason = format!("unexpected {} from relay", other.message_type().name());
                self.session_failed(reason, true);
            }
        }
    }

    /// A relay error: for the whole session without a request id, else for the push, pull,
    /// ping or invite it names; an error for no known request breaks the session.
    fn on_error(&mut self, e: WireError) {
        let Some(request_id) = e.request_id else {
            let reason = wire_reason(&e);
            return self.session_failed(reason, false);
        };
        if let Some(blob_id) = self.pushes.take_request(request_id) {
            return self.on_push_refused(blob_id, e);
        }
        if self.pulls.is_waiting_for(request_id) {
            return self.on_pull_refused(e);
        }
        if self.session.take_ping(request_id) {
            return;
        }
        if let Some(waiter) = self.session.invite_requests.remove(&request_id) {
            let _ = waiter.send(Err(rejected(e, None)));
            return;
        }
        let reason = format!("error for an unknown request: {}", wire_reason(&e));
        self.session_failed(reason, true);
    }
}
