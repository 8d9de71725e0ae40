//! Frames on the byte streams of a session: the buffered frame reader, and the direct writes
//! used before the outbound writer task exists (Welcome, refusals).

use bytes::BytesMut;
use sync_types::{
    DecodeError, DeviceId, FRAME_HEADER_LEN, FrameCodec, FrameError, Message, WireError,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::server::RelayCtx;

/// A read buffer that grew beyond this is released after use (a big push does not pin memory
/// in an idle session).
const KEEP_READ_BUFFER: usize = 64 * 1024;

/// Why a frame could not be read.
#[derive(Debug)]
pub(super) enum ReadError {
    /// The stream ended cleanly before a new frame started.
    Eof,
    /// The stream failed.
    Io,
    /// The bytes are not an acceptable frame.
    Frame(FrameError),
}

/// Bytes a read asks the stream for at least (pipelined frames arrive together, and one read
/// takes all of them).
const READ_CHUNK: usize = 16 * 1024;

/// Reads frames through one buffer: a read takes whatever has arrived (often many pipelined
/// frames), and the frames are then decoded from the buffer without reading again. A header's
/// length is checked against the maximum before its body is waited for, and the buffer grows
/// only as bytes arrive (by at most [`READ_CHUNK`] beyond them).
pub(super) struct FrameReader<R> {
    reader: R,
    buf: BytesMut,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader with an empty buffer.
    pub(super) fn new(reader: R) -> Self {
        Self {
            reader,
            buf: BytesMut::new(),
        }
    }

    /// The next frame's message.
    pub(super) async fn next(
        &mut self,
        codec: &FrameCodec,
        ctx: &RelayCtx,
    ) -> Result<Message, ReadError> {
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
pub(super) async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    ctx: &RelayCtx,
    msg: &Message,
) -> bool {
    let mut buf = BytesMut::new();
    if let Err(e) = ctx.codec.encode(msg, &mut buf) {
        tracing::warn!(error = %e, kind = msg.message_type().name(), "frame not encodable");
        return false;
    }
    let written =
        tokio::time::timeout(ctx.config.write_stall_timeout, writer.write_all(&buf)).await;
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
    let _ = tokio::time::timeout(ctx.config.write_stall_timeout, writer.shutdown()).await;
}
