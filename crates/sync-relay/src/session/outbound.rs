//! The session's outbound writer: the one task that owns the send half.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::outbox::{Outbound, Outbox, QueuedFrame};
use crate::server::RelayCtx;

/// Bytes the writer gathers before writing (frames queued at once go out in one write).
const WRITE_BATCH_BYTES: usize = 256 * 1024;

/// Frames at least this large are written as they are instead of being copied into the batch.
const DIRECT_WRITE_BYTES: usize = 64 * 1024;

/// Why the writer stopped before it was asked to.
enum WriteFailure {
    /// The device accepted no byte for `write_stall_timeout`.
    Stalled,
    /// The stream failed.
    Broken,
}

/// The session's writer: owns the send half, writes queued frames in batches, adds the
/// coalesced `Notify` when there is one, finishes the stream on `Close`. A queued frame keeps
/// its share of the session's byte budget until it is written. If the device accepts no byte
/// for `write_stall_timeout` (it stopped reading), the outbox is marked stalled and closed and
/// the session is cut; if the stream fails, the session is cut too.
pub(super) async fn write_loop<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut rx: mpsc::Receiver<Outbound>,
    outbox: Arc<Outbox>,
    ctx: Arc<RelayCtx>,
    cancel: CancellationToken,
) {
    let mut staged = BytesMut::new();
    let mut closing = false;
    let stall = ctx.config.write_stall_timeout;
    loop {
        let next = tokio::select! {
            biased;
            m = rx.recv() => Some(m),
            () = outbox.wake.notified() => None,
        };
        let mut frames: Vec<QueuedFrame> = Vec::new();
        match next {
            Some(Some(Outbound::Frame(f))) => frames.push(f),
            Some(Some(Outbound::Close) | None) => closing = true,
            None => {}
        }
        let mut gathered: usize = frames.iter().map(|f| f.bytes.len()).sum();
        while !closing && gathered < WRITE_BATCH_BYTES {
            match rx.try_recv() {
                Ok(Outbound::Frame(f)) => {
                    gathered = gathered.saturating_add(f.bytes.len());
                    frames.push(f);
                }
                Ok(Outbound::Close) => closing = true,
                Err(_) => break,
            }
        }
        let coalesced = if closing {
            None
        } else {
            outbox.take_coalesced_frame()
        };
        if coalesced.is_some() {
            ctx.metrics.notifies_total.inc();
        }
        let frames_bytes = frames.iter().map(|f| &f.bytes).chain(coalesced.as_ref());
        let written = write_frames(&mut writer, frames_bytes, &mut staged, stall, &ctx).await;
        // The frames are written (or never will be): their budget goes back.
        drop(frames);
        match written {
            Ok(()) => {}
            Err(WriteFailure::Stalled) => {
                outbox.mark_stalled();
                cancel.cancel();
                return;
            }
            Err(WriteFailure::Broken) => {
                outbox.close();
                cancel.cancel();
                return;
            }
        }
        if staged.capacity() > 4 * WRITE_BATCH_BYTES {
            staged = BytesMut::new();
        }
        if closing {
            let _ = tokio::time::timeout(stall, writer.shutdown()).await;
            return;
        }
    }
}

/// Writes frames in order: small ones gathered into `staged` and written together, large ones
/// written as they are (after what is staged before them).
async fn write_frames<'a, W: AsyncWrite + Unpin>(
    writer: &mut W,
    frames: impl Iterator<Item = &'a Bytes>,
    staged: &mut BytesMut,
    stall: Duration,
    ctx: &RelayCtx,
) -> Result<(), WriteFailure> {
    for bytes in frames {
        if bytes.len() < DIRECT_WRITE_BYTES {
            staged.extend_from_slice(bytes);
            continue;
        }
        write_with_progress(writer, staged, stall, ctx).await?;
        staged.clear();
        write_with_progress(writer, bytes, stall, ctx).await?;
    }
    write_with_progress(writer, staged, stall, ctx).await?;
    staged.clear();
    Ok(())
}

/// Writes all of `buf`, as long as the device keeps accepting bytes: each write must make
/// progress within `stall` (a slow link that drains steadily is fine, a device that stopped
/// reading is not).
async fn write_with_progress<W: AsyncWrite + Unpin>(
    writer: &mut W,
    buf: &[u8],
    stall: Duration,
    ctx: &RelayCtx,
) -> Result<(), WriteFailure> {
    let mut rest = buf;
    while !rest.is_empty() {
        match tokio::time::timeout(stall, writer.write(rest)).await {
            Ok(Ok(0) | Err(_)) => return Err(WriteFailure::Broken),
            Ok(Ok(n)) => {
                ctx.metrics.bytes_out_total.add(n as u64);
                rest = rest.get(n..).unwrap_or_default();
            }
            Err(_) => return Err(WriteFailure::Stalled),
        }
    }
    Ok(())
}
