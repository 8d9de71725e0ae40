//! The session's outbound writer: the one task that owns the send half.

use std::sync::Arc;

use bytes::BytesMut;
use sync_types::Message;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::hub::{Link, Outbound};
use crate::server::RelayCtx;

/// Bytes the writer gathers before writing (frames queued at once go out in one write).
const WRITE_BATCH_BYTES: usize = 256 * 1024;

/// The session's writer: owns the send half, writes queued frames in batches, adds the
/// coalesced `Notify` when there is one, finishes the stream on `Close`. If a write does not
/// complete within `idle_timeout` (the device stopped reading) or fails, the session is cut.
pub(super) async fn write_loop<W: AsyncWrite + Unpin>(
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
