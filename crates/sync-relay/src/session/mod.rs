//! One session: a byte stream in each direction (a QUIC bidirectional stream, or in-process
//! pipes), served by the same code.
//!
//! Phases:
//! 1. **Hello** — the first frame must be `Hello` (or a one-shot `InviteGet`, for a device that
//!    is not in a group yet), at most a few KiB, before the connection's pre-auth deadline.
//!    Version check, `verify_hello` over `HelloChallenge(binding, relay id, peer, group)`,
//!    then admission (operator token, session slots of the relay, the address and the device;
//!    a group new to the relay counts against its address) → `Welcome`, or a typed `Error`
//!    frame and the end of the session.
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
//!
//! Files: `frames` (reading frames, direct writes), `handshake` (the Hello phase), `admit`
//! (refusals at admission), `requests`
//! (the request loop and dispatch), `push` (the push pipeline and its rate limits), `blobs`
//! (pull and delete), `invites` (the invite mailbox), `content` (large-content reservations),
//! `outbound` (the writer task).

/// Logs an audit event (target `sync_relay::audit`) of the open session `$session`: its id,
/// shortened device and group, then `fields`.
macro_rules! session_audit {
    ($session:expr, $event:literal, $($fields:tt)+) => {{
        let session: &$crate::session::Session = &$session;
        tracing::info!(
            target: "sync_relay::audit",
            event = $event,
            session = session.id,
            device = %session.peer.short(),
            group = %session.group.short(),
            $($fields)+
        );
    }};
}

mod admit;
mod blobs;
mod content;
mod frames;
mod handshake;
mod invites;
mod membership;
mod outbound;
mod push;
mod requests;

pub(crate) use frames::refuse;
pub(crate) use push::bucket;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use governor::DefaultDirectRateLimiter;
use sha2::{Digest, Sha256};
use sync_types::FrameCodec;
use sync_types::{Cursor, DeviceId, ErrorCode, GroupId, Message, Welcome, WireError};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::admission::{Origin, PreAuth};
use crate::hub::Link;
use crate::outbox::Outbox;
use crate::server::RelayCtx;
use crate::storage::{QuotaKind, Storage, StorageError};
use admit::refuse_admission;
use frames::{FrameReader, write_frame};
use handshake::read_hello;
use outbound::write_loop;

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
    /// The stream broke.
    Lost,
    /// The device accepted none of the session's frames for `write_stall_timeout`: the session
    /// was cut and its memory released.
    WriteStalled,
}

impl SessionEnd {
    fn as_str(&self) -> &'static str {
        match self {
            Self::PeerClosed => "peer_closed",
            Self::Shutdown => "shutdown",
            Self::Error(code) => code.name(),
            Self::Lost => "lost",
            Self::WriteStalled => "write_stalled",
        }
    }
}

/// The relay's clock, in milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    sync_types::unix_ms()
}

/// A short hash of an id for the audit log (8 hex digits of its SHA-256): lines about one id
/// can be matched, and the id (a blob id carries its creation time) is not disclosed.
fn short_hash(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A duration in whole milliseconds (saturating).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Serves one session to its end. `pre` is the connection's place in the pre-auth budget (and
/// its deadline); the session's slots are taken only after a valid Hello, and then `pre` is
/// given back. `binding` is the connection-specific Hello binding; `peer` the authenticated
/// device id. The slots are released before the device sees the end of the stream, so a
/// device that reconnects right after finds them free.
pub(crate) async fn serve_session<R, W>(
    ctx: Arc<RelayCtx>,
    pre: PreAuth,
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
    let hello = match read_hello(&ctx, &pre, &binding, &peer, &mut reader).await {
        Ok(hello) => hello,
        Err(early) => {
            drop(pre);
            return early.finish(&ctx, &mut writer, &peer).await;
        }
    };
    let request_id = hello.request_id;
    let group = hello.group_id;
    let origin = pre.origin;
    let slot = match ctx.admission.admit_session(origin, &peer, &hello) {
        Ok(pass) => pass,
        Err(refused) => {
            drop(pre);
            let refused = refused.for_request(request_id);
            return refuse_admission(&ctx, &mut writer, &peer, origin, None, refused).await;
        }
    };
    pre.admitted();

    // Registered before max_cursor is read, so no commit falls between the two unnoticed;
    // notifications wait in the queue until the writer task starts after Welcome.
    let id = ctx.next_session.fetch_add(1, Ordering::Relaxed);
    let (outbox, rx) = Outbox::new(
        ctx.config.session_queue,
        ctx.config.session_queue_bytes,
        FrameCodec::new(ctx.codec.max_frame),
    );
    let revoked = CancellationToken::new();
    let link = Link {
        session: id,
        device: peer,
        outbox: Arc::clone(&outbox),
        revoked: revoked.clone(),
    };
    ctx.hub.register(group, Arc::new(link));
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
    if max_cursor == Cursor::ZERO
        && let Err(refused) = ctx.admission.admit_new_group(origin, &group)
    {
        // A group the relay holds nothing for: it counts against the address's new groups.
        ctx.hub.unregister(&group, id);
        drop(slot);
        let refused = refused.for_request(request_id);
        return refuse_admission(&ctx, &mut writer, &peer, origin, Some(&group), refused).await;
    }
    let welcome = Message::Welcome(Welcome {
        request_id,
        relay_id: ctx.relay_id,
        max_cursor,
        limits: ctx.limits,
        store_id: ctx.storage.store_id(),
    });
    if !write_frame(&mut writer, &ctx, &welcome).await {
        ctx.hub.unregister(&group, id);
        return SessionEnd::Lost;
    }

    let opened = Instant::now();
    ctx.metrics.sessions.inc();
    ctx.metrics.sessions_total.inc();
    let session = Arc::new(Session {
        id,
        peer,
        group,
        outbox: Arc::clone(&outbox),
        cancel: CancellationToken::new(),
        revoked,
        in_flight: Arc::new(Semaphore::new(ctx.config.max_in_flight.max(1) as usize)),
        push_bytes: Arc::new(Semaphore::new(ctx.config.session_push_bytes.max(1) as usize)),
        pulls: Arc::new(Semaphore::new(ctx.config.session_pulls.max(1) as usize)),
        limiter: bucket(ctx.config.session_push_rate, ctx.config.session_push_burst),
        origin,
        quota_bytes: slot.quota_bytes,
        invite_lookups: ctx.admission.session_invite_bucket(),
        deferred: push::Deferral::default(),
        pushes: AtomicU64::new(0),
        ctx: Arc::clone(&ctx),
    });
    session_audit!(
        session,
        "session_open",
        last_cursor = hello.last_cursor.get(),
        max_cursor = max_cursor.get(),
    );
    let writer_task = tokio::spawn(write_loop(
        writer,
        rx,
        Arc::clone(&outbox),
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
    outbox.finish().await;
    let _ = tokio::time::timeout(ctx.config.drain_timeout, writer_task).await;
    // Whatever still waits to queue a frame or to start a pull gives up now: nothing of the
    // session stays in memory behind a device that does not read.
    session.close();
    if end == SessionEnd::WriteStalled {
        ctx.metrics.write_stalls_total.inc();
    }
    session_audit!(
        session,
        "session_close",
        reason = end.as_str(),
        pushes = session.pushes.load(Ordering::Relaxed),
        duration_ms = millis(opened.elapsed()),
    );
    end
}

/// An open session (after Welcome).
struct Session {
    id: u64,
    peer: DeviceId,
    group: GroupId,
    outbox: Arc<Outbox>,
    /// Cancelled when the writer fails: the device stopped reading or the stream broke.
    cancel: CancellationToken,
    /// Cancelled when a rotation revokes the session's device: the session ends at once.
    revoked: CancellationToken,
    in_flight: Arc<Semaphore>,
    /// Payload bytes of pushes read and not yet committed (`session_push_bytes`).
    push_bytes: Arc<Semaphore>,
    /// Pulls reading storage or waiting to queue their page (`session_pulls`).
    pulls: Arc<Semaphore>,
    limiter: Option<DefaultDirectRateLimiter>,
    /// Where the connection comes from (per-address limits).
    origin: Origin,
    /// The group's byte quota from the admission token, if below the relay's.
    quota_bytes: Option<u64>,
    /// This session's invite-lookup bucket.
    invite_lookups: Option<DefaultDirectRateLimiter>,
    /// The push last refused with `RateLimited` (other pushes wait behind it).
    deferred: push::Deferral,
    pushes: AtomicU64,
    ctx: Arc<RelayCtx>,
}

impl Session {
    /// How the session ended when its writer gave up.
    fn writer_end(&self) -> SessionEnd {
        if self.outbox.stalled() {
            SessionEnd::WriteStalled
        } else {
            SessionEnd::Lost
        }
    }

    /// Fails everything still waiting on the session (frames to queue, pulls, push bytes).
    fn close(&self) {
        self.outbox.close();
        self.pulls.close();
        self.push_bytes.close();
    }
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
        StorageError::Unavailable(reason) => {
            tracing::warn!(%reason, "storage database unavailable");
            WireError::new(ErrorCode::StorageFailure, "relay database unavailable")
                .retry_after_ms(STORAGE_RETRY_MS)
        }
        StorageError::InvalidArgument { what } => WireError::new(ErrorCode::Malformed, *what),
        StorageError::BlobConflict => WireError::new(
            ErrorCode::Conflict,
            "this blob id is already used for a different payload",
        ),
        StorageError::RecordConflict => WireError::new(
            ErrorCode::Conflict,
            "another membership change was stored first",
        ),
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
