//! The request loop of an open session: reads frames while fewer than `max_in_flight`
//! requests are unanswered, dispatches each one, and at the end finishes what was asked.

use std::future::Future;
use std::sync::Arc;

use sync_types::{Bye, ErrorCode, Message, Pong, WireError};
use tokio::io::AsyncRead;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::frames::{FrameReader, ReadError};
use super::invites::invite_get;
use super::push::PendingPush;
use super::{Session, SessionEnd};

/// What the read loop decided.
pub(super) enum Next {
    Continue,
    End(SessionEnd, Option<WireError>),
}

impl Session {
    /// Reads and dispatches frames until the session ends; then finishes unanswered requests
    /// and queues the last frame (`Error` or `Bye`).
    pub(super) async fn run<R: AsyncRead + Unpin>(
        self: &Arc<Self>,
        mut reader: FrameReader<R>,
    ) -> SessionEnd {
        let ctx = Arc::clone(&self.ctx);
        let (ack_tx, ack_rx) = mpsc::channel(ctx.config.max_in_flight.max(1) as usize);
        let acks = tokio::spawn(Arc::clone(self).ack_loop(ack_rx));
        let (end, last) = loop {
            let permit = tokio::select! {
                p = Arc::clone(&self.in_flight).acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break (SessionEnd::Lost, None),
                },
                () = self.cancel.cancelled() => break (self.writer_end(), None),
                () = self.revoked.cancelled() => break revoked_end(),
                () = ctx.shutdown.cancelled() => break (SessionEnd::Shutdown, None),
            };
            let frame = tokio::select! {
                r = tokio::time::timeout(
                    ctx.config.idle_timeout,
                    reader.next(&ctx.codec, &ctx),
                ) => r,
                () = self.cancel.cancelled() => break (self.writer_end(), None),
                () = self.revoked.cancelled() => break revoked_end(),
                () = ctx.shutdown.cancelled() => break (SessionEnd::Shutdown, None),
            };
            let msg = match frame {
                Err(_) => {
                    let err = WireError::new(ErrorCode::IdleTimeout, "session idle for too long");
                    break (SessionEnd::Error(ErrorCode::IdleTimeout), Some(err));
                }
                Ok(Err(ReadError::Eof)) => break (SessionEnd::PeerClosed, None),
                Ok(Err(ReadError::Io)) => break (SessionEnd::Lost, None),
                Ok(Err(ReadError::Frame(e))) => {
                    let code = e.error_code();
                    break (
                        SessionEnd::Error(code),
                        Some(WireError::new(code, e.to_string())),
                    );
                }
                Ok(Ok(msg)) => msg,
            };
            match self.dispatch(msg, permit, &ack_tx).await {
                Next::Continue => {}
                Next::End(end, last) => break (end, last),
            }
        };
        drop(ack_tx);

        // Finish what was asked before the end (acks of queued pushes, pending pulls).
        if !matches!(end, SessionEnd::Lost | SessionEnd::WriteStalled) {
            let all = ctx.config.max_in_flight.max(1);
            let drained = tokio::select! {
                r = tokio::time::timeout(
                    ctx.config.drain_timeout,
                    Arc::clone(&self.in_flight).acquire_many_owned(all),
                ) => r.is_ok(),
                () = self.cancel.cancelled() => false,
            };
            if !drained {
                tracing::debug!(session = self.id, "requests still open at session end");
            }
        }
        if matches!(end, SessionEnd::Lost | SessionEnd::WriteStalled) {
            // No ack can be sent any more (the outbox is closed), but the pushes already queued
            // keep their share of the session's push bytes until they are committed: the
            // session's slot accounts for them until then.
            let _ = tokio::time::timeout(ctx.config.drain_timeout, acks).await;
        } else {
            acks.abort();
        }
        let last = match (&end, last) {
            (_, Some(err)) => Some(Message::Error(err)),
            (SessionEnd::Shutdown, None) => Some(Message::Bye(Bye {
                reason: Some("relay shutting down".into()),
            })),
            _ => None,
        };
        if let Some(msg) = last {
            self.send(msg).await;
        }
        end
    }

    /// Queues a frame for the writer (waits for room in the session's frame and byte budget;
    /// gives up when the session ends).
    pub(super) async fn send(&self, msg: Message) {
        if let Message::Error(e) = &msg {
            self.ctx.metrics.reject(e.code);
        }
        let _ = self.outbox.send(&msg).await;
    }

    /// Queues an `Error` frame.
    pub(super) async fn send_error(&self, err: WireError) {
        self.send(Message::Error(err)).await;
    }

    /// Answers a request in a task of its own; the request's in-flight permit is held until
    /// the answer is queued. With `turns`, the task first waits for one of them (given back
    /// once the answer is queued): this bounds how many such answers are built at once.
    fn answer_in_task<F, Fut>(
        self: &Arc<Self>,
        permit: OwnedSemaphorePermit,
        turns: Option<&Arc<Semaphore>>,
        answer: F,
    ) where
        F: FnOnce(Arc<Self>) -> Fut + Send + 'static,
        Fut: Future<Output = Message> + Send + 'static,
    {
        let this = Arc::clone(self);
        let turns = turns.map(Arc::clone);
        tokio::spawn(async move {
            let turn = match turns {
                Some(turns) => match turns.acquire_owned().await {
                    Ok(turn) => Some(turn),
                    // The session ended.
                    Err(_) => return,
                },
                None => None,
            };
            let msg = answer(Arc::clone(&this)).await;
            this.send(msg).await;
            drop(turn);
            drop(permit);
        });
    }

    async fn dispatch(
        self: &Arc<Self>,
        msg: Message,
        permit: OwnedSemaphorePermit,
        acks: &mpsc::Sender<PendingPush>,
    ) -> Next {
        match msg {
            Message::Push(push) => {
                // The payload counts against the session's push bytes until it is committed;
                // with none left, the reader waits (and with it the device).
                let share = u32::try_from(push.payload.len())
                    .unwrap_or(u32::MAX)
                    .clamp(1, self.ctx.config.session_push_bytes.max(1));
                let Ok(bytes) = Arc::clone(&self.push_bytes).acquire_many_owned(share).await else {
                    return Next::End(self.writer_end(), None);
                };
                self.push(push, permit, bytes, acks).await;
            }
            Message::Pull(pull) => {
                let pulls = Arc::clone(&self.pulls);
                self.answer_in_task(permit, Some(&pulls), move |this| async move {
                    this.pull(pull).await
                });
            }
            Message::Delete(del) => {
                self.answer_in_task(
                    permit,
                    None,
                    move |this| async move { this.delete(del).await },
                );
            }
            Message::Ping(ping) => {
                self.send(Message::Pong(Pong {
                    request_id: ping.request_id,
                }))
                .await;
            }
            Message::InvitePut(put) => {
                self.answer_in_task(permit, None, move |this| async move {
                    this.invite_put(put).await
                });
            }
            Message::InviteGet(get) => {
                self.answer_in_task(permit, None, move |this| async move {
                    let bucket = this.invite_lookups.as_ref();
                    invite_get(
                        &this.ctx,
                        this.origin,
                        bucket,
                        get.request_id,
                        get.lookup_id,
                    )
                    .await
                });
            }
            Message::ContentRef(m) => {
                self.answer_in_task(permit, None, move |this| async move {
                    this.content_ref(m).await
                });
            }
            Message::Enroll(m) => {
                self.answer_in_task(
                    permit,
                    None,
                    move |this| async move { this.enroll(m).await },
                );
            }
            Message::GroupUpdate(m) => {
                self.answer_in_task(permit, None, move |this| async move {
                    this.group_update(m).await
                });
            }
            Message::GroupGet(m) => {
                self.answer_in_task(
                    permit,
                    None,
                    move |this| async move { this.group_get(m).await },
                );
            }
            Message::Bye(_) => return Next::End(SessionEnd::PeerClosed, None),
            Message::Error(e) => {
                tracing::debug!(session = self.id, code = %e.code, "device sent an error");
                return Next::End(SessionEnd::PeerClosed, None);
            }
            other => {
                let code = ErrorCode::UnexpectedMessage;
                let err = WireError::new(
                    code,
                    format!("{} is not allowed here", other.message_type().name()),
                );
                let err = match other.request_id() {
                    Some(id) => err.for_request(id),
                    None => err,
                };
                return Next::End(SessionEnd::Error(code), Some(err));
            }
        }
        Next::Continue
    }
}

/// How a session ends when a rotation revoked its device.
fn revoked_end() -> (SessionEnd, Option<WireError>) {
    let code = ErrorCode::DeviceRevoked;
    let err = WireError::new(code, "this device was revoked from the group");
    (SessionEnd::Error(code), Some(err))
}
