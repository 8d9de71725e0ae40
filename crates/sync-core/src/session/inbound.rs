//! What the session does with each frame of an established session: acknowledgements, pull
//! pages, notifications, membership answers and errors.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Session {
    /// A frame on an established session.
    pub(super) fn on_message<R: CryptoRng + ?Sized>(
        &mut self,
        msg: Message,
        now: Instant,
        rng: &mut R,
    ) {
        match msg {
            Message::PushAck(ack) => self.on_push_ack(ack, now, rng),
            Message::PullResponse(resp) => self.on_pull_response(resp, now, rng),
            Message::Notify(n) => {
                self.relay_max = self.relay_max.max(n.cursor);
                self.events.push_back(SessionEvent::Notify(n));
            }
            Message::Pong(p) => {
                if let Some(t) = &mut self.transport {
                    t.pings.remove(&p.request_id);
                }
            }
            Message::InviteStored(stored) => {
                self.on_answer(stored.request_id, "InviteStored", now, rng);
            }
            Message::ContentAck(ack) => self.on_answer(ack.request_id, "ContentAck", now, rng),
            Message::GroupChanged(changed) => match changed.request_id {
                None => self.events.push_back(SessionEvent::GroupChanged(changed)),
                Some(id) => {
                    let reply = GroupReply::Changed(changed);
                    self.on_group_reply(id, reply, now, rng);
                }
            },
            Message::GroupInfo(info) => {
                self.on_group_reply(info.request_id, GroupReply::Info(info), now, rng);
            }
            Message::Error(e) => self.on_error(e, now, rng),
            Message::Bye(b) => {
                let reason = format!(
                    "relay ended the session{}",
                    b.reason.map(|r| format!(": {r}")).unwrap_or_default()
                );
                self.fail(reason, false, now, rng);
            }
            other @ (Message::Hello(_)
            | Message::Welcome(_)
            | Message::Challenge(_)
            | Message::Push(_)
            | Message::Pull(_)
            | Message::Delete(_)
            | Message::DeleteAck(_)
            | Message::Ping(_)
            | Message::Enroll(_)
            | Message::GroupUpdate(_)
            | Message::GroupGet(_)
            | Message::ContentRef(_)
            | Message::InvitePut(_)
            | Message::InviteGet(_)
            | Message::InviteFound(_)) => {
                let reason = format!("unexpected {} from relay", other.message_type().name());
                self.fail(reason, true, now, rng);
            }
        }
    }

    fn on_group_reply<R: CryptoRng + ?Sized>(
        &mut self,
        request_id: u64,
        reply: GroupReply,
        now: Instant,
        rng: &mut R,
    ) {
        let known = self
            .transport
            .as_mut()
            .is_some_and(|t| t.group_requests.remove(&request_id));
        if known {
            self.events.push_back(SessionEvent::GroupReply {
                request_id,
                result: Ok(reply),
            });
        } else {
            self.fail("membership answer for no request".into(), true, now, rng);
        }
    }

    /// A plain acknowledgement (`InviteStored`, `ContentAck`) of a request that waits for one;
    /// an acknowledgement of nothing is a protocol violation.
    fn on_answer<R: CryptoRng + ?Sized>(
        &mut self,
        request_id: u64,
        what: &str,
        now: Instant,
        rng: &mut R,
    ) {
        let known = self
            .transport
            .as_mut()
            .is_some_and(|t| t.answers.remove(&request_id));
        if known {
            self.events.push_back(SessionEvent::Answered {
                request_id,
                result: Ok(()),
            });
        } else {
            self.fail(format!("{what} for no request"), true, now, rng);
        }
    }

    fn on_push_ack<R: CryptoRng + ?Sized>(&mut self, ack: PushAck, now: Instant, rng: &mut R) {
        let requested = self
            .transport
            .as_mut()
            .and_then(|t| t.in_flight.remove(&ack.request_id));
        if requested.is_some_and(|b| b != ack.blob_id) {
            return self.fail("PushAck names another blob".into(), true, now, rng);
        }
        self.relay_max = self.relay_max.max(ack.cursor);
        // Anything else is a repeated acknowledgement, or one for a push no longer queued.
        if let AckOutcome::Acked { entry, .. } = self.outbox.ack(&ack.blob_id, ack.cursor) {
            self.events.push_back(SessionEvent::PushAcked {
                blob_id: ack.blob_id,
                cursor: ack.cursor,
                ttl_secs: entry.ttl_secs(),
            });
        }
    }

    /// The relay's answer to the pull in progress.
    fn on_pull_response<R: CryptoRng + ?Sized>(
        &mut self,
        resp: sync_types::PullResponse,
        now: Instant,
        rng: &mut R,
    ) {
        let next_request = self.next_request;
        let (page, round_bytes) = (self.config.pull_page.max(1), self.config.pull_round_bytes);
        let Some(t) = &mut self.transport else {
            return;
        };
        let Some(pull) = t
            .pull
            .as_mut()
            .filter(|p| p.request_id() == resp.request_id)
        else {
            let reason = if t.pull.is_some() {
                "PullResponse for another request"
            } else {
                "PullResponse without a pull"
            };
            return self.fail(reason.into(), true, now, rng);
        };
        let max_cursor = resp.max_cursor;
        match pull.answer(resp, next_request, page, round_bytes) {
            Answer::Violation(reason) => self.fail(reason.into(), true, now, rng),
            Answer::Page(page, next) => {
                match next {
                    Some(msg) => {
                        self.next_request = self.next_request.wrapping_add(1).max(1);
                        self.transmits.push_back(Transmit::Frame(msg));
                    }
                    None => t.pull = None,
                }
                let last = page.entries.last().map_or(Cursor::ZERO, |e| e.cursor);
                self.relay_max = self.relay_max.max(max_cursor).max(last);
                self.events.push_back(SessionEvent::Page(page));
            }
        }
    }

    /// A relay error: for the whole session without a request id, else for the push, pull,
    /// ping or invite it names; an error for no request made breaks the session.
    fn on_error<R: CryptoRng + ?Sized>(&mut self, e: WireError, now: Instant, rng: &mut R) {
        let Some(request_id) = e.request_id else {
            return self.fail(wire_reason(&e), false, now, rng);
        };
        let Some(t) = &mut self.transport else {
            return;
        };
        if let Some(blob_id) = t.in_flight.remove(&request_id) {
            return self.on_push_refused(blob_id, e, now);
        }
        if t.pull
            .as_ref()
            .is_some_and(|p| p.request_id() == request_id)
        {
            t.pull = None;
            self.events
                .push_back(SessionEvent::PullRefused { error: e });
            return;
        }
        if t.pings.remove(&request_id) {
            return;
        }
        if t.answers.remove(&request_id) {
            self.events.push_back(SessionEvent::Answered {
                request_id,
                result: Err(e),
            });
            return;
        }
        if t.group_requests.remove(&request_id) {
            self.events.push_back(SessionEvent::GroupReply {
                request_id,
                result: Err(e),
            });
            return;
        }
        let reason = format!("error for an unknown request: {}", wire_reason(&e));
        self.fail(reason, true, now, rng);
    }

    fn on_push_refused(&mut self, blob_id: BlobId, error: WireError, now: Instant) {
        if error.code == ErrorCode::EpochSuperseded {
            // Not the push's fault: this device missed a rotation. Hold it until the shell has
            // the new keys and re-sealed it.
            if let RejectOutcome::WillRetry = self.outbox.reject(&blob_id, false) {
                let until = after(now, self.config.default_retry);
                self.hold_until = Some(self.hold_until.map_or(until, |h| h.max(until)));
                self.events
                    .push_back(SessionEvent::EpochSuperseded { blob_id });
            }
            return;
        }
        if error.is_retryable() {
            let wait = retry_hint(&error).unwrap_or(self.config.default_retry);
            if let RejectOutcome::WillRetry = self.outbox.reject(&blob_id, false) {
                let until = after(now, wait);
                self.hold_until = Some(self.hold_until.map_or(until, |h| h.max(until)));
                self.events.push_back(SessionEvent::PushDeferred {
                    blob_id,
                    error,
                    retry_after: wait,
                });
            }
        } else if let RejectOutcome::Failed { .. } = self.outbox.reject(&blob_id, true) {
            self.events
                .push_back(SessionEvent::PushRejected { blob_id, error });
        }
    }
}
