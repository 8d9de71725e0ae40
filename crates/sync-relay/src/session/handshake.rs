//! Admission: the first frame of a session must be a `Hello` that proves membership of its
//! group under its current key epoch (or a one-shot `InviteGet` from a device that is not in a
//! group yet, or a one-shot `GroupGet` from a device whose keys are behind), in time.

use sync_crypto::{GroupState, HelloChallenge, HelloSignature};
use sync_types::{DeviceId, ErrorCode, Hello, Message, PROTOCOL_VERSION, WireError};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::frames::{FrameReader, ReadError, refuse, write_frame};
use super::invites::invite_get;
use super::membership::{group_info, superseded};
use super::{STORAGE_RETRY_MS, SessionEnd, storage_error};
use crate::admission::PreAuth;
use crate::server::RelayCtx;

/// How the Hello phase ended without opening a session.
pub(super) enum Early {
    /// Send this error, then finish the stream.
    Refuse(WireError),
    /// Send this answer (a one-shot `InviteGet`), then finish the stream.
    Answer(Message),
    /// The stream ended or broke; nothing to send.
    Lost,
}

impl Early {
    /// Sends what this end calls for and finishes the stream.
    pub(super) async fn finish<W: AsyncWrite + Unpin>(
        self,
        ctx: &RelayCtx,
        writer: &mut W,
        peer: &DeviceId,
    ) -> SessionEnd {
        match self {
            Early::Refuse(err) => {
                let code = err.code;
                refuse(ctx, writer, peer, err).await;
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
                write_frame(writer, ctx, &answer).await;
                let _ =
                    tokio::time::timeout(ctx.config.write_stall_timeout, writer.shutdown()).await;
                SessionEnd::PeerClosed
            }
            Early::Lost => SessionEnd::Lost,
        }
    }
}

/// Reads and checks the first frame (at most `MAX_FIRST_FRAME` bytes, before the pre-auth
/// deadline): a valid `Hello` for the group, or why not.
pub(super) async fn read_hello<R: AsyncRead + Unpin>(
    ctx: &RelayCtx,
    pre: &PreAuth,
    binding: &[u8; 32],
    peer: &DeviceId,
    reader: &mut FrameReader<R>,
) -> Result<Hello, Early> {
    let first = tokio::select! {
        r = tokio::time::timeout_at(
            pre.deadline,
            reader.next(&ctx.first_frame_codec, ctx),
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
            pre.deadline_passed();
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
        Ok(Ok(Message::GroupGet(get))) => {
            // A device that missed a rotation fetches its grants: one answer, then close.
            return Err(Early::Answer(group_info(ctx, *peer, get, true).await));
        }
        Ok(Ok(Message::InviteGet(get))) => {
            // A device joining by short code is not in the group yet: one lookup, then close.
            let answer = invite_get(ctx, pre.origin, None, get.request_id, get.lookup_id).await;
            return Err(Early::Answer(answer));
        }
        Ok(Ok(other)) => {
            return Err(Early::Refuse(WireError::new(
                ErrorCode::NotHelloFirst,
                format!("expected Hello, got {}", other.message_type().name()),
            )));
        }
    };
    let state = ctx
        .memberships
        .state(&ctx.storage, hello.group_id)
        .await
        .map_err(|e| Early::Refuse(storage_error(ctx, &e).for_request(hello.request_id)))?;
    check_hello(ctx, binding, peer, &hello, &state)
        .map_err(|err| Early::Refuse(err.for_request(hello.request_id)))?;
    Ok(hello)
}

/// Version and group-membership checks of a `Hello`: signed by the auth key of the group's
/// current epoch. An older epoch's key is `DeviceRevoked` for a revoked device and
/// `EpochSuperseded` for a member that missed a rotation.
fn check_hello(
    ctx: &RelayCtx,
    binding: &[u8; 32],
    peer: &DeviceId,
    hello: &Hello,
    state: &GroupState,
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
    match state.hello_epoch(&challenge, &HelloSignature(hello.auth_signature)) {
        // A revoked device stays out even with a key it should not have (leaked to it).
        Some(_) if state.revoked_at(peer).is_some() => Err(WireError::new(
            ErrorCode::DeviceRevoked,
            "this device was revoked from the group",
        )),
        Some(epoch) if epoch == state.epoch() => Ok(()),
        Some(_) => Err(superseded(state)),
        None => Err(WireError::new(
            ErrorCode::Unauthorized,
            "the Hello signature does not prove membership of this group",
        )),
    }
}
