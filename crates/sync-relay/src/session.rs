//! One session: a byte stream in each direction (a QUIC bidirectional stream, or in-process
//! pipes), served by the same code.
//!
//! Phases:
//! 1. **Hello** — the first frame must be `Hello` (or a one-shot `InviteGet`, for a device that
//!    is not in a group yet) and arrive within `hello_timeout`. Version check, then
//!    `verify_hello` over `HelloChallenge(binding, relay id, peer, group)` → `Welcome`, or a
//!    typed `Error` frame and the end of the session.
//! 2. **Open** — pipelined requests. The reader reads a frame only while fewer than
//!    `max_in_flight` requests are unanswered. Pushes are queued to storage in arrival order
//!    (so they get cursors in send order) and their answers are awaited by one FIFO task, so many
//!    pushes of one session commit in one batch; `PushAck` is queued only after the commit, then
//!    `Notify` goes to the group's other sessions through the hub. Other requests run as tasks.
//!    One writer task owns the send half and writes everything queued in batches.
//! 3. **End** — `Bye` or end of stream from the device, an idle timeout, a protocol violation
//!    (typed `Error`), or relay shutdown (`Bye`). Unanswered requests are finished first
//!    (bounded by `drain_timeout`), then the writer finishes the stream.
//!
//! Nothing here logs payloads, signatures or keys; ids are shortened.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use governor::clock::Clock;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use sync_crypto::{HelloChallenge, HelloSignature, verify_hello};
use sync_types::{
    BlobId, Bye, DecodeError, DeleteAck, DeviceId, ErrorCode, FRAME_HEADER_LEN, FrameCodec,
    FrameError, GroupId, Hello, InviteFound, InviteStored, Message, Notify, PROTOCOL_VERSION,
    Payload, Pong, PullEntry, PullResponse, PushAck, Welcome, WireError, pull_entry_budget,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::hub::{Link, Outbound};
use crate::server::RelayCtx;
use crate::storage::{InviteLookup, PushReply, PushRequest, QuotaKind, Storage, StorageError};

/// Bytes the writer gathers before writing (frames queued at once go out in one write).
const WRITE_BATCH_BYTES: usize = 256 * 1024;

/// A read buffer that grew beyond this is released after use (a big push does not pin memory
/// in an idle session).
const KEEP_READ_BUFFER: usize = 64 * 1024;

/// Retry hint for transient storage failures.
const STORAGE_RETRY_MS: u64 = 1000;

/// Why a session ended (for the audit log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SessionEnd {
    /// The device sent `Bye` or finished its stream.
    PeerClosed,
    /// The relay is shutting down; `Bye` was sent.
    Shutdown,
    /// The session was ended with this error code (sent to the device).
    Error(ErrorCode),
    /// The stream broke or the device stopped reading.
    Lost,
}

impl SessionEnd {
    fn as_str(&self) -> &'static str {
        match self {
            Self::PeerClosed => "peer_closed",
            Self::Shutdown => "shutdown",
            Self::Error(code) => code.name(),
            Self::Lost => "lost",
        }
    }
}

/// Why a frame could not be read.
#[derive(Debug)]
enum ReadError {
    /// The stream ended cleanly before a new frame started.
    Eof,
    /// The stream failed.
    Io,
    /// The bytes are not an acceptable frame.
    Frame(FrameError),
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Bytes a read asks the stream for at least (pipelined frames arrive together, and one read
/// takes all of them).
const READ_CHUNK: usize = 16 * 1024;

/// Reads frames through one buffer: a read takes whatever has arrived (often many pipelined
/// frames), and the frames are then decoded from the buffer without reading again. A header's
/// length is checked against the maximum before its body is waited for, and the buffer grows
/// only as bytes arrive (by at most [`READ_CHUNK`] beyond them).
struct FrameReader<R> {
    reader: R,
    buf: BytesMut,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    fn new(reader: R) -> Self {
        Self {
            reader,
            buf: BytesMut::new(),
        }
    }

    /// The next frame's message.
    async fn next(&mut self, codec: &FrameCodec, ctx: &RelayCtx) -> Result<Message, ReadError> {
        loop {
            let len = codec.decode_header(&self.buf).map_err(ReadError::Frame)?;
            if let Some(len) = len {
                let total = FRAME_HEADER_LEN + len;
                if self.buf.len() >= total {
                    let frame = self.buf.split_to(total);
                    ctx.metrics.bytes_in_total.add(total as u64);
                    let msg = frame
                        .get(FRAME_HEADER_LEN..)
                        .ok_or(ReadError::Frame(DecodeError::Truncated.into()))
                        .and_then(|body| codec.decode_body(body).map_err(ReadError::Frame));
                    drop(frame);
                    if self.buf.is_empty() && self.buf.capacity() > KEEP_READ_BUFFER {
                        self.buf = BytesMut::new();
                    }
                    return msg;
                }
            }
            self.buf.reserve(READ_CHUNK);
            let n = self
                .reader
                .read_buf(&mut self.buf)
                .await
                .map_err(|_| ReadError::Io)?;
            if n == 0 {
                return Err(if self.buf.is_empty() {
                    ReadError::Eof
                } else {
                    ReadError::Frame(FrameError::Decode(DecodeError::Truncated))
                });
            }
        }
    }
}

/// Writes one frame directly (before the writer task exists, and for refusals).
async fn write_frame<W: AsyncWrite + Unpin>(writer: &mut W, ctx: &RelayCtx, msg: &Message) -> bool {
    let mut buf = BytesMut::new();
    if let Err(e) = ctx.codec.encode(msg, &mut buf) {
        tracing::warn!(error = %e, kind = msg.message_type().name(), "frame not encodable");
        return false;
    }
    let written = tokio::time::timeout(ctx.config.idle_timeout, writer.write_all(&buf)).await;
    if matches!(written, Ok(Ok(()))) {
        ctx.metrics.bytes_out_total.add(buf.len() as u64);
        true
    } else {
        false
    }
}

/// Sends one error frame, finishes the stream, and counts the rejection.
pub(crate) async fn refuse<W: AsyncWrite + Unpin>(
    ctx: &RelayCtx,
    writer: &mut W,
    peer: &DeviceId,
    err: WireError,
) {
    ctx.metrics.reject(err.code);
    tracing::info!(
        target: "sync_relay::audit",
        event = "session_refused",
        device = %peer.short(),
        reason = err.code.name(),
    );
    write_frame(writer, ctx, &Message::Error(err)).await;
    let _ = tokio::time::timeout(ctx.config.idle_timeout, writer.shutdown()).await;
}

/// How the Hello phase ended without opening a session.
enum Early {
    /// Send this error, then finish the stream.
    Refuse(WireError),
    /// Send this answer (a one-shot `InviteGet`), then finish the stream.
    Answer(Message),
    /// The stream ended or broke; nothing to send.
    Lost,
}

/// Reads and checks the first frame: a valid `Hello` for the group, or why not.
async fn read_hello<R: AsyncRead + Unpin>(
    ctx: &RelayCtx,
    binding: &[u8; 32],
    peer: &DeviceId,
    reader: &mut FrameReader<R>,
) -> Result<Hello, Early> {
    let first = tokio::select! {
        r = tokio::time::timeout(
            ctx.config.hello_timeout,
            reader.next(&ctx.codec, ctx),
        ) => r,
        () = ctx.shutdown.cancelled() => {
            return Err(Early::Refuse(
                WireError::new(ErrorCode::ShuttingDown, "relay is shutting down")
                    .retry_after_ms(STORAGE_RETRY_MS),
            ));
        }
    };
    let hello = match first {
        Err(_) => {
            return Err(Early::Refuse(WireError::new(
                ErrorCode::HelloTimeout,
                "no Hello in time",
            )));
        }
        Ok(Err(ReadError::Eof | ReadError::Io)) => return Err(Early::Lost),
        Ok(Err(ReadError::Frame(e))) => {
            return Err(Early::Refuse(WireError::new(e.error_code(), e.to_string())));
        }
        Ok(Ok(Message::Hello(hello))) => hello,
        Ok(Ok(Message::InviteGet(get))) => {
            // A device joining by short code is not in the group yet: one lookup, then close.
            let answer = invite_get(ctx, get.request_id, get.lookup_id).await;
            return Err(Early::Answer(answer));
        }
        Ok(Ok(other)) => {
            return Err(Early::Refuse(WireError::new(
                ErrorCode::NotHelloFirst,
                format!("expected Hello, got {}", other.message_type().name()),
            )));
        }
    };
    check_hello(ctx, binding, peer, &hello)
        .map_err(|err| Early::Refuse(err.for_request(hello.request_id)))?;
    Ok(hello)
}

/// Serves one session to its end. `slot` is the session's place under `max_sessions`;
/// `binding` is the connection-specific Hello binding; `peer` the authenticated device id.
/// The slot is released before the device sees the end of the stream, so a device that
/// reconnects right after finds it free.
pub(crate) async fn serve_session<R, W>(
    ctx: Arc<RelayCtx>,
    slot: OwnedSemaphorePermit,
    peer: DeviceId,
    binding: [u8; 32],
    reader: R,
    mut writer: W,
) -> SessionEnd
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let mut reader = FrameReader::new(reader);
    let hello = match read_hello(&ctx, &binding, &peer, &mut reader).await {
        Ok(hello) => hello,
        Err(early) => {
            drop(slot);
            return match early {
                Early::Refuse(err) => {
                    let code = err.code;
                    refuse(&ctx, &mut writer, &peer, err).await;
                    if code == ErrorCode::ShuttingDown {
                        SessionEnd::Shutdown
                    } else {
                        SessionEnd::Error(code)
                    }
                }
                Early::Answer(answer) => {
                    if let Message::Error(e) = &answer {
                        ctx.metrics.reject(e.code);
                    }
                    write_frame(&mut writer, &ctx, &answer).await;
                    let _ = tokio::time::timeout(ctx.config.idle_timeout, writer.shutdown()).await;
                    SessionEnd::PeerClosed
                }
                Early::Lost => SessionEnd::Lost,
            };
        }
    };
    let request_id = hello.request_id;
    let group = hello.group_id;

    // Registered before max_cursor is read, so no commit falls between the two unnoticed;
    // notifications wait in the queue until the writer task starts after Welcome.
    let id = ctx.next_session.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = mpsc::channel(ctx.config.session_queue.max(1) as usize);
    let link = Arc::new(Link::new(id, tx.clone()));
    ctx.hub.register(group, Arc::clone(&link));
    let max_cursor = match ctx.storage.max_cursor(group).await {
        Ok(c) => c,
        Err(e) => {
            ctx.hub.unregister(&group, id);
            drop(slot);
            let err = storage_error(&ctx, &e).for_request(request_id);
            let code = err.code;
            refuse(&ctx, &mut writer, &peer, err).await;
            return SessionEnd::Error(code);
        }
    };
    let welcome = Message::Welcome(Welcome {
        request_id,
        relay_id: ctx.relay_id,
        max_cursor,
        limits: ctx.limits,
    });
    if !write_frame(&mut writer, &ctx, &welcome).await {
        ctx.hub.unregister(&group, id);
        return SessionEnd::Lost;
    }

    let opened = Instant::now();
    ctx.metrics.sessions.inc();
    ctx.metrics.sessions_total.inc();
    tracing::info!(
        target: "sync_relay::audit",
        event = "session_open",
        session = id,
        device = %peer.short(),
        group = %group.short(),
        last_cursor = hello.last_cursor.get(),
        max_cursor = max_cursor.get(),
    );

    let session = Arc::new(Session {
        id,
        peer,
        group,
        out: tx,
        cancel: CancellationToken::new(),
        in_flight: Arc::new(Semaphore::new(ctx.config.max_in_flight.max(1) as usize)),
        limiter: bucket(ctx.config.session_push_rate, ctx.config.session_push_burst),
        deferred: std::sync::Mutex::new(None),
        pushes: AtomicU64::new(0),
        ctx: Arc::clone(&ctx),
    });
    let writer_task = tokio::spawn(write_loop(
        writer,
        rx,
        Arc::clone(&link),
        Arc::clone(&ctx),
        session.cancel.clone(),
    ));
    let end = session.run(reader).await;

    ctx.hub.unregister(&group, id);
    ctx.metrics.sessions.dec();
    // The slot is free before the device sees the end of the stream, so a device that
    // reconnects after its session ended finds it free.
    drop(slot);
    // The writer sends what is queued, then finishes the stream.
    let _ = session.out.send(Outbound::Close).await;
    let _ = tokio::time::timeout(ctx.config.drain_timeout, writer_task).await;
    tracing::info!(
        target: "sync_relay::audit",
        event = "session_close",
        session = id,
        device = %peer.short(),
        group = %group.short(),
        reason = end.as_str(),
        pushes = session.pushes.load(Ordering::Relaxed),
        duration_ms = millis(opened.elapsed()),
    );
    end
}

/// Version and group-membership checks of a `Hello`.
fn check_hello(
    ctx: &RelayCtx,
    binding: &[u8; 32],
    peer: &DeviceId,
    hello: &Hello,
) -> Result<(), WireError> {
    if hello.version != PROTOCOL_VERSION {
        return Err(WireError::new(
            ErrorCode::BadVersion,
            format!(
                "protocol version {} is not supported (this relay speaks {PROTOCOL_VERSION})",
                hello.version
            ),
        ));
    }
    let challenge = HelloChallenge::new(binding, &ctx.relay_id, peer, &hello.group_id);
    verify_hello(
        &hello.group_id,
        &challenge,
        &HelloSignature(hello.auth_signature),
    )
    .map_err(|_| {
        WireError::new(
            ErrorCode::Unauthorized,
            "the Hello signature does not prove membership of this group",
        )
    })
}

/// A token bucket of `rate` per second with room for `burst`; `None` when `rate` is 0.
pub(crate) fn bucket(rate: u32, burst: u32) -> Option<DefaultDirectRateLimiter> {
    let rate = NonZeroU32::new(rate)?;
    let burst = NonZeroU32::new(burst).unwrap_or(rate);
    Some(RateLimiter::direct(
        Quota::per_second(rate).allow_burst(burst),
    ))
}

/// Takes one token, or says how long to wait for one.
fn take_token(limiter: Option<&DefaultDirectRateLimiter>) -> Result<(), Duration> {
    let Some(limiter) = limiter else {
        return Ok(());
    };
    limiter
        .check()
        .map_err(|not_until| not_until.wait_time_from(limiter.clock().now()))
}

/// The wire error for a storage failure.
fn storage_error(ctx: &RelayCtx, e: &StorageError) -> WireError {
    match e {
        StorageError::QuotaExceeded {
            kind: QuotaKind::BlobSize,
            limit,
            ..
        } => WireError::new(
            ErrorCode::BlobTooLarge,
            format!("payload above the relay's maximum of {limit} bytes"),
        ),
        StorageError::QuotaExceeded {
            kind: QuotaKind::Ttl,
            ..
        } => WireError::new(ErrorCode::TtlTooLong, "ttl above the relay's maximum"),
        StorageError::QuotaExceeded { kind, limit, .. } => WireError::new(
            ErrorCode::QuotaExceeded,
            format!("group quota exceeded ({kind}): limit {limit}"),
        )
        // Space frees up when blobs expire, checked every cleanup interval.
        .retry_after_ms(millis(ctx.config.cleanup_interval)),
        StorageError::Closed | StorageError::WriterGone => {
            WireError::new(ErrorCode::ShuttingDown, "relay storage is closing")
                .retry_after_ms(STORAGE_RETRY_MS)
        }
        StorageError::InvalidArgument { what } => WireError::new(ErrorCode::Malformed, *what),
        StorageError::InviteExists => WireError::new(
            ErrorCode::Conflict,
            "another invite is stored under this lookup id",
        ),
        other => {
            tracing::warn!(error = %other, "storage failure");
            WireError::new(ErrorCode::StorageFailure, "relay storage failure")
                .retry_after_ms(STORAGE_RETRY_MS)
        }
    }
}

/// Takes an invite from the mailbox; the answer is `InviteFound` or a typed `Error`.
async fn invite_get(ctx: &RelayCtx, request_id: u64, lookup_id: String) -> Message {
    let found = ctx
        .storage
        .invite_take(
            lookup_id.into_bytes(),
            now_ms(),
            ctx.config.invite_max_attempts,
        )
        .await;
    let err = match found {
        Ok(InviteLookup::Found(sealed)) => {
            return Message::InviteFound(InviteFound {
                request_id,
                sealed: Payload::from(sealed),
            });
        }
        Ok(InviteLookup::NotFound) => WireError::new(ErrorCode::NotFound, "no such invite"),
        Ok(InviteLookup::Expired) => WireError::new(ErrorCode::InviteExpired, "invite expired"),
        Ok(InviteLookup::TooManyAttempts) => WireError::new(
            ErrorCode::TooManyAttempts,
            "too many lookups; the invite is deleted",
        ),
        Err(e) => storage_error(ctx, &e),
    };
    Message::Error(err.for_request(request_id))
}

/// A push queued to storage whose answer the FIFO ack task awaits.
struct PendingPush {
    request_id: u64,
    blob_id: sync_types::BlobId,
    size: u32,
    started: Instant,
    reply: PushReply,
    _permit: OwnedSemaphorePermit,
}

/// An open session (after Welcome).
struct Session {
    id: u64,
    peer: DeviceId,
    group: GroupId,
    out: mpsc::Sender<Outbound>,
    /// Cancelled when the writer fails: the device stopped reading or the stream broke.
    cancel: CancellationToken,
    in_flight: Arc<Semaphore>,
    limiter: Option<DefaultDirectRateLimiter>,
    /// The push last refused with `RateLimited`, and when its retry hint ends. Until the device
    /// sends that blob again, every other push of this session is refused too: pushes that were
    /// already in flight behind it must not overtake it, so one sender's blobs keep their order.
    deferred: std::sync::Mutex<Option<(BlobId, Instant)>>,
    pushes: AtomicU64,
    ctx: Arc<RelayCtx>,
}

/// What the read loop decided.
enum Next {
    Continue,
    End(SessionEnd, Option<WireError>),
}

impl Session {
    /// Reads and dispatches frames until the session ends; then finishes unanswered requests
    /// and queues the last frame (`Error` or `Bye`).
    async fn run<R: AsyncRead + Unpin>(self: &Arc<Self>, mut reader: FrameReader<R>) -> SessionEnd {
        let ctx = Arc::clone(&self.ctx);
        let (ack_tx, ack_rx) = mpsc::channel(ctx.config.max_in_flight.max(1) as usize);
        let acks = tokio::spawn(Arc::clone(self).ack_loop(ack_rx));
        let (end, last) = loop {
            let permit = tokio::select! {
                p = Arc::clone(&self.in_flight).acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break (SessionEnd::Lost, None),
                },
                () = self.cancel.cancelled() => break (SessionEnd::Lost, None),
                () = ctx.shutdown.cancelled() => break (SessionEnd::Shutdown, None),
            };
            let frame = tokio::select! {
                r = tokio::time::timeout(
                    ctx.config.idle_timeout,
                    reader.next(&ctx.codec, &ctx),
                ) => r,
                () = self.cancel.cancelled() => break (SessionEnd::Lost, None),
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
        if end != SessionEnd::Lost {
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
        acks.abort();
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

    /// Queues a frame for the writer (waits for room; responses are bounded by `max_in_flight`).
    async fn send(&self, msg: Message) {
        if let Message::Error(e) = &msg {
            self.ctx.metrics.reject(e.code);
        }
        let _ = self.out.send(Outbound::Frame(msg)).await;
    }

    async fn send_error(&self, err: WireError) {
        self.send(Message::Error(err)).await;
    }

    async fn dispatch(
        self: &Arc<Self>,
        msg: Message,
        permit: OwnedSemaphorePermit,
        acks: &mpsc::Sender<PendingPush>,
    ) -> Next {
        match msg {
            Message::Push(push) => {
                self.push(push, permit, acks).await;
            }
            Message::Pull(pull) => {
                let this = Arc::clone(self);
                tokio::spawn(async move {
                    let answer = this.pull(pull).await;
                    this.send(answer).await;
                    drop(permit);
                });
            }
            Message::Delete(del) => {
                let this = Arc::clone(self);
                tokio::spawn(async move {
                    let answer = match this.ctx.storage.delete(this.group, del.blob_id).await {
                        Ok(true) => {
                            this.ctx.metrics.deletes_total.inc();
                            Message::DeleteAck(DeleteAck {
                                request_id: del.request_id,
                                blob_id: del.blob_id,
                            })
                        }
                        Ok(false) => Message::Error(
                            WireError::new(ErrorCode::NotFound, "no such blob")
                                .for_request(del.request_id),
                        ),
                        Err(e) => {
                            Message::Error(storage_error(&this.ctx, &e).for_request(del.request_id))
                        }
                    };
                    this.send(answer).await;
                    drop(permit);
                });
            }
            Message::Ping(ping) => {
                self.send(Message::Pong(Pong {
                    request_id: ping.request_id,
                }))
                .await;
            }
            Message::InvitePut(put) => {
                let this = Arc::clone(self);
                tokio::spawn(async move {
                    let answer = this.invite_put(put).await;
                    this.send(answer).await;
                    drop(permit);
                });
            }
            Message::InviteGet(get) => {
                let this = Arc::clone(self);
                tokio::spawn(async move {
                    let answer = invite_get(&this.ctx, get.request_id, get.lookup_id).await;
                    this.send(answer).await;
                    drop(permit);
                });
            }
            Message::ContentRef(m) => {
                self.send_error(
                    WireError::new(
                        ErrorCode::NotSupported,
                        "ContentRef is not supported by this relay yet",
                    )
                    .for_request(m.request_id),
                )
                .await;
            }
            Message::RevokeDevice(m) => {
                self.send_error(
                    WireError::new(
                        ErrorCode::NotSupported,
                        "RevokeDevice is not supported by this relay yet",
                    )
                    .for_request(m.request_id),
                )
                .await;
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

    /// Checks a push, takes rate tokens, and queues it to storage in arrival order.
    async fn push(
        &self,
        push: sync_types::Push,
        permit: OwnedSemaphorePermit,
        acks: &mpsc::Sender<PendingPush>,
    ) {
        let ctx = &self.ctx;
        let started = Instant::now();
        let reject = |err: WireError| err.for_request(push.request_id);
        let size = push.payload.len();
        if size > ctx.config.max_blob_bytes as usize {
            let err = WireError::new(
                ErrorCode::BlobTooLarge,
                format!(
                    "payload of {size} bytes above the maximum of {}",
                    ctx.config.max_blob_bytes
                ),
            );
            return self.send_error(reject(err)).await;
        }
        let ttl = match push.ttl_secs {
            0 => ctx.config.default_ttl,
            s => Duration::from_secs(u64::from(s)),
        };
        if ttl > ctx.config.max_ttl {
            let err = WireError::new(
                ErrorCode::TtlTooLong,
                format!("ttl above the maximum of {}s", ctx.config.max_ttl.as_secs()),
            );
            return self.send_error(reject(err)).await;
        }
        if let Some(wait) = self.deferral(push.blob_id, started) {
            let err = WireError::new(
                ErrorCode::RateLimited,
                "an earlier push of this session was rate limited; send it again first",
            )
            .retry_after_ms(millis(wait).max(1));
            return self.send_error(reject(err)).await;
        }
        for limiter in [self.limiter.as_ref(), ctx.global_push.as_ref()] {
            if let Err(wait) = take_token(limiter) {
                self.defer(push.blob_id, started + wait);
                let err = WireError::new(ErrorCode::RateLimited, "too many pushes")
                    .retry_after_ms(millis(wait).max(1));
                return self.send_error(reject(err)).await;
            }
        }
        let req = PushRequest {
            group: self.group,
            blob_id: push.blob_id,
            sender: self.peer,
            payload: push.payload.to_vec(),
            ttl,
            now_ms: now_ms(),
        };
        match ctx.storage.push_queued(req).await {
            Ok(reply) => {
                let pending = PendingPush {
                    request_id: push.request_id,
                    blob_id: push.blob_id,
                    size: u32::try_from(size).unwrap_or(u32::MAX),
                    started,
                    reply,
                    _permit: permit,
                };
                // Room is guaranteed: the channel holds max_in_flight and each entry a permit.
                let _ = acks.send(pending).await;
            }
            Err(e) => self.send_error(reject(storage_error(ctx, &e))).await,
        }
    }

    /// Whether a push of `blob_id` must wait behind an earlier rate-limited push of this
    /// session, and for how long. The refused blob itself is let through (to the limiters) and
    /// lifts the block.
    fn deferral(&self, blob_id: BlobId, now: Instant) -> Option<Duration> {
        let mut deferred = self.deferred.lock().unwrap_or_else(|e| e.into_inner());
        match *deferred {
            Some((blocked, _)) if blocked == blob_id => {
                *deferred = None;
                None
            }
            Some((_, until)) => Some(until.saturating_duration_since(now)),
            None => None,
        }
    }

    /// Records that `blob_id` was refused until `until`; later pushes queue up behind it.
    fn defer(&self, blob_id: BlobId, until: Instant) {
        let mut deferred = self.deferred.lock().unwrap_or_else(|e| e.into_inner());
        *deferred = Some((blob_id, until));
    }

    /// Answers queued pushes in queue order (which is commit order): `PushAck`, then `Notify`
    /// to the group's other sessions.
    async fn ack_loop(self: Arc<Self>, mut pending: mpsc::Receiver<PendingPush>) {
        let ctx = Arc::clone(&self.ctx);
        while let Some(p) = pending.recv().await {
            match p.reply.await {
                Ok(outcome) => {
                    ctx.metrics.push_commit_seconds.observe(p.started.elapsed());
                    if outcome.duplicate {
                        ctx.metrics.push_duplicates_total.inc();
                    } else {
                        ctx.metrics.pushes_total.inc();
                        self.pushes.fetch_add(1, Ordering::Relaxed);
                    }
                    self.send(Message::PushAck(PushAck {
                        request_id: p.request_id,
                        blob_id: p.blob_id,
                        cursor: outcome.cursor,
                        server_time_ms: outcome.stored_at_ms,
                    }))
                    .await;
                    if !outcome.duplicate {
                        let n = Notify {
                            cursor: outcome.cursor,
                            blob_id: p.blob_id,
                            sender: self.peer,
                            size: p.size,
                        };
                        ctx.hub.notify(&self.group, self.id, &n, &ctx.metrics);
                    }
                }
                Err(e) => {
                    self.send_error(storage_error(&ctx, &e).for_request(p.request_id))
                        .await;
                }
            }
        }
    }

    /// Builds the answer to a `Pull`: clamped count, bounded bytes, fitting one frame.
    async fn pull(&self, pull: sync_types::Pull) -> Message {
        let ctx = &self.ctx;
        let count = pull.limit.clamp(1, ctx.config.max_pull_count.max(1));
        let max_bytes = pull
            .max_bytes
            .unwrap_or(u32::MAX)
            .min(ctx.config.max_pull_bytes);
        let page = match ctx
            .storage
            .pull(self.group, pull.after, count, u64::from(max_bytes))
            .await
        {
            Ok(page) => page,
            Err(e) => {
                return Message::Error(storage_error(ctx, &e).for_request(pull.request_id));
            }
        };
        let budget = pull_entry_budget(ctx.codec.max_frame);
        let mut used = 0usize;
        let mut has_more = page.has_more;
        let mut entries = Vec::with_capacity(page.entries.len());
        for e in page.entries {
            let entry = PullEntry {
                cursor: e.cursor,
                blob_id: e.blob_id,
                sender: e.sender,
                payload: Payload::from(e.payload),
                timestamp_ms: e.stored_at_ms,
            };
            let len = entry.encoded_len();
            if !entries.is_empty() && used.saturating_add(len) > budget {
                has_more = true;
                break;
            }
            used = used.saturating_add(len);
            entries.push(entry);
        }
        ctx.metrics.pulls_total.inc();
        ctx.metrics.pulled_blobs_total.add(entries.len() as u64);
        Message::PullResponse(PullResponse {
            request_id: pull.request_id,
            entries,
            has_more,
            max_cursor: page.max_cursor,
        })
    }

    async fn invite_put(&self, put: sync_types::InvitePut) -> Message {
        let ctx = &self.ctx;
        let ttl = match put.ttl_secs {
            0 => ctx.config.invite_default_ttl,
            s => Duration::from_secs(u64::from(s)),
        };
        if ttl > ctx.config.invite_max_ttl {
            return Message::Error(
                WireError::new(
                    ErrorCode::TtlTooLong,
                    format!(
                        "invite ttl above the maximum of {}s",
                        ctx.config.invite_max_ttl.as_secs()
                    ),
                )
                .for_request(put.request_id),
            );
        }
        let expires = now_ms().saturating_add(millis(ttl));
        match ctx
            .storage
            .invite_put(put.lookup_id.into_bytes(), put.sealed.to_vec(), expires)
            .await
        {
            Ok(()) => Message::InviteStored(InviteStored {
                request_id: put.request_id,
            }),
            Err(e) => Message::Error(storage_error(ctx, &e).for_request(put.request_id)),
        }
    }
}

/// The session's writer: owns the send half, writes queued frames in batches, adds the
/// coalesced `Notify` when there is one, finishes the stream on `Close`. If a write does not
/// complete within `idle_timeout` (the device stopped reading) or fails, the session is cut.
async fn write_loop<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut rx: mpsc::Receiver<Outbound>,
    link: Arc<Link>,
    ctx: Arc<RelayCtx>,
    cancel: CancellationToken,
) {
    let mut buf = BytesMut::new();
    let mut closing = false;
    let stall = ctx.config.idle_timeout;
    let encode = |msg: &Message, buf: &mut BytesMut| {
        if let Err(e) = ctx.codec.encode(msg, buf) {
            tracing::warn!(error = %e, kind = msg.message_type().name(), "frame not encodable");
        }
    };
    loop {
        let next = tokio::select! {
            biased;
            m = rx.recv() => Some(m),
            () = link.wake.notified() => None,
        };
        match next {
            Some(Some(Outbound::Frame(m))) => encode(&m, &mut buf),
            Some(Some(Outbound::Close) | None) => closing = true,
            None => {}
        }
        while !closing && buf.len() < WRITE_BATCH_BYTES {
            match rx.try_recv() {
                Ok(Outbound::Frame(m)) => encode(&m, &mut buf),
                Ok(Outbound::Close) => closing = true,
                Err(_) => break,
            }
        }
        if !closing && let Some(n) = link.take_coalesced() {
            ctx.metrics.notifies_total.inc();
            encode(&Message::Notify(n), &mut buf);
        }
        if !buf.is_empty() {
            match tokio::time::timeout(stall, writer.write_all(&buf)).await {
                Ok(Ok(())) => ctx.metrics.bytes_out_total.add(buf.len() as u64),
                _ => {
                    cancel.cancel();
                    return;
                }
            }
            buf.clear();
            if buf.capacity() > 4 * WRITE_BATCH_BYTES {
                buf = BytesMut::new();
            }
        }
        if closing {
            let _ = tokio::time::timeout(stall, writer.shutdown()).await;
            return;
        }
    }
}
