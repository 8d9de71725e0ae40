//! Refusals at admission: counted by reason, audited with pseudonymous ids, answered with a
//! typed `Error` frame, then the end of the stream.

use sync_types::{DeviceId, GroupId, Message};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::SessionEnd;
use super::frames::write_frame;
use crate::admission::{Origin, Refused, Subject};
use crate::server::RelayCtx;

/// Sends the refusal's error frame and finishes the stream.
pub(super) async fn refuse_admission<W: AsyncWrite + Unpin>(
    ctx: &RelayCtx,
    writer: &mut W,
    peer: &DeviceId,
    origin: Origin,
    group: Option<&GroupId>,
    refused: Refused,
) -> SessionEnd {
    let code = refused.error.code;
    ctx.metrics.reject(code);
    let subject = Subject {
        origin,
        device: Some(peer),
        group,
    };
    ctx.admission.record(&ctx.metrics, refused.reason, subject);
    write_frame(writer, ctx, &Message::Error(refused.error)).await;
    let _ = tokio::time::timeout(ctx.config.idle_timeout, writer.shutdown()).await;
    SessionEnd::Error(code)
}
