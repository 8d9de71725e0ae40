//! The relay's invite mailbox, seen from a device that is not in the group yet.
//!
//! A device that joins by short code has no group to say `Hello` for: it opens a session, sends
//! `InviteGet` as its first frame, reads one answer and closes ([`fetch_invite`]). The inviting
//! device, already a member, leaves the sealed invite with
//! [`SyncClient::put_invite`](crate::SyncClient::put_invite).

use std::time::Duration;

use sync_core::{Invite, InviteError, ShortCode, open_from_mailbox};
use sync_crypto::DeviceKey;
use sync_types::{ErrorCode, FRAME_HEADER_LEN, FrameCodec, InviteGet, Message, unix_ms};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::TransportError;
use crate::frame_read::read_body;
use crate::transport::Transport;

/// Why a mailbox lookup did not yield an invite. Messages never contain the short code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InviteFetchError {
    /// The relay has no entry under the code's lookup id (never put, already used, or removed
    /// after expiring).
    #[error("no invite for this code on the relay (already used, expired, or mistyped)")]
    NotFound,
    /// The entry's lifetime is over.
    #[error("the invite for this code expired")]
    Expired,
    /// Too many lookups of this id: the relay deleted the entry.
    #[error("too many attempts for this code; the relay deleted the invite")]
    TooManyAttempts,
    /// The relay could not be reached.
    #[error("relay unreachable: {0}")]
    Unreachable(#[from] TransportError),
    /// The relay refused the lookup for another reason.
    #[error("relay refused the lookup: {code}: {message}")]
    Refused {
        /// The relay's code.
        code: ErrorCode,
        /// The relay's detail.
        message: String,
    },
    /// No answer within the time allowed.
    #[error("the relay did not answer in time")]
    Timeout,
    /// The relay's answer broke the protocol. Only ever the relay's fault; faults of this
    /// device are [`InviteFetchError::Internal`].
    #[error("protocol violation by the relay: {0}")]
    Protocol(String),
    /// A fault of this device, not of the relay (the request could not be encoded, the task
    /// that opens the invite failed).
    #[error("internal error: {0}")]
    Internal(String),
    /// The entry does not open with this code (a mistyped second half, or tampered bytes), or
    /// holds no valid invite.
    #[error("the invite could not be opened with this code: {0}")]
    Invalid(#[from] InviteError),
}

/// Takes the invite stored under `code` from the relay reached by `transport` (the mailbox
/// entry is used up by a successful lookup), opens it with the code's second half and checks
/// its expiry. `device` is only the identity of the connection; it need not be in any group.
/// The whole exchange, dial included, is bounded by `timeout`.
pub async fn fetch_invite(
    transport: &dyn Transport,
    device: &DeviceKey,
    code: &ShortCode,
    timeout: Duration,
) -> Result<Invite, InviteFetchError> {
    let sealed = match tokio::time::timeout(timeout, fetch_sealed(transport, device, code)).await {
        Ok(result) => result?,
        Err(_) => return Err(InviteFetchError::Timeout),
    };
    // Argon2id on the code's second half: off the async workers.
    let code = code.clone();
    let invite = tokio::task::spawn_blocking(move || open_from_mailbox(&sealed, &code))
        .await
        .map_err(|e| InviteFetchError::Internal(format!("invite opening task failed: {e}")))??;
    match invite.check(unix_ms()) {
        Err(InviteError::Expired { .. }) => Err(InviteFetchError::Expired),
        Err(e) => Err(e.into()),
        Ok(()) => Ok(invite),
    }
}

async fn fetch_sealed(
    transport: &dyn Transport,
    device: &DeviceKey,
    code: &ShortCode,
) -> Result<Vec<u8>, InviteFetchError> {
    let request_id = 1;
    let request = Message::InviteGet(InviteGet {
        request_id,
        lookup_id: code.lookup_id().to_string(),
    });
    let answer = exchange(transport, device, &request, FrameCodec::default())
        .await
        .map_err(|e| match e {
            ExchangeError::Transport(e) => InviteFetchError::Unreachable(e),
            ExchangeError::Protocol(m) => InviteFetchError::Protocol(m),
            ExchangeError::Internal(m) => InviteFetchError::Internal(m),
        })?;
    match answer {
        Message::InviteFound(found) if found.request_id == request_id => {
            Ok(found.sealed.as_slice().to_vec())
        }
        Message::Error(e) => Err(match e.code {
            ErrorCode::NotFound => InviteFetchError::NotFound,
            ErrorCode::InviteExpired => InviteFetchError::Expired,
            ErrorCode::TooManyAttempts => InviteFetchError::TooManyAttempts,
            code => InviteFetchError::Refused {
                code,
                message: e.message,
            },
        }),
        other => Err(InviteFetchError::Protocol(format!(
            "unexpected {} in answer to InviteGet",
            other.message_type().name()
        ))),
    }
}

/// Why a one-shot exchange with the relay failed.
#[derive(Debug)]
pub(crate) enum ExchangeError {
    /// The relay could not be reached, or the stream broke.
    Transport(TransportError),
    /// The relay's answer is not a frame.
    Protocol(String),
    /// The request could not be encoded.
    Internal(String),
}

/// Opens a connection, sends `request` as its first frame, reads one answer (at most the
/// codec's frame size) and closes: how a device asks the relay something without a session.
pub(crate) async fn exchange(
    transport: &dyn Transport,
    device: &DeviceKey,
    request: &Message,
    codec: FrameCodec,
) -> Result<Message, ExchangeError> {
    let mut session = transport
        .connect(device)
        .await
        .map_err(ExchangeError::Transport)?;
    let closer = session.take_closer();
    let result = async {
        let frame = codec.encode_to_bytes(request).map_err(|e| {
            ExchangeError::Internal(format!(
                "{} not encoded: {e}",
                request.message_type().name()
            ))
        })?;
        let io =
            |e: std::io::Error| ExchangeError::Transport(TransportError::Session(e.to_string()));
        session.writer.write_all(&frame).await.map_err(io)?;
        session.writer.flush().await.map_err(io)?;
        let mut header = [0u8; FRAME_HEADER_LEN];
        session.reader.read_exact(&mut header).await.map_err(io)?;
        let len = codec
            .decode_header(&header)
            .map_err(|e| ExchangeError::Protocol(e.to_string()))?
            .ok_or_else(|| ExchangeError::Protocol("short frame header".into()))?;
        let body = read_body(&mut session.reader, len).await.map_err(io)?;
        codec
            .decode_body(&body)
            .map_err(|e| ExchangeError::Protocol(e.to_string()))
    }
    .await;
    let _ = session.writer.shutdown().await;
    if let Some(closer) = closer {
        closer().await;
    }
    result
}
