//! One bidirectional QUIC stream of protocol frames: whole frames written, frames decoded from
//! what the relay sends back. The devices' sessions and the attackers' connections both speak
//! through it.

use bytes::BytesMut;
use iroh::endpoint::{Connection, RecvStream, SendStream};
use sync_types::{FrameCodec, Message};
use tokio::io::AsyncReadExt as _;

use super::{BenchError, quic_error};

/// A stream the benchmark opened to the relay, and the bytes read from it not yet decoded.
pub(super) struct FrameStream {
    send: SendStream,
    recv: RecvStream,
    buf: BytesMut,
    codec: FrameCodec,
}

impl FrameStream {
    /// Opens a bidirectional stream on `conn` (the peer learns of it with the first bytes).
    pub(super) async fn open(conn: &Connection) -> Result<Self, BenchError> {
        let (send, recv) = conn
            .open_bi()
            .await
            .map_err(|e| quic_error("open a stream", e))?;
        Ok(Self {
            send,
            recv,
            buf: BytesMut::with_capacity(64 * 1024),
            codec: FrameCodec::default(),
        })
    }

    /// Accepts frames up to `max_frame` bytes from now on (the relay's `Welcome` says how
    /// large its frames may be).
    pub(super) fn set_max_frame(&mut self, max_frame: usize) {
        self.codec = FrameCodec::new(max_frame);
    }

    /// Writes bytes (whole frames, or anything at all) to the stream.
    pub(super) async fn write(&mut self, bytes: &[u8]) -> Result<(), BenchError> {
        self.send
            .write_all(bytes)
            .await
            .map_err(|e| quic_error("write", e))
    }

    /// Encodes `message` and writes its frame.
    pub(super) async fn send(&mut self, message: &Message) -> Result<(), BenchError> {
        let frame = self.codec.encode_to_bytes(message)?;
        self.write(&frame).await
    }

    /// The next frame already read, if a whole one is buffered.
    pub(super) fn decode(&mut self) -> Result<Option<Message>, BenchError> {
        Ok(self.codec.decode(&mut self.buf)?)
    }

    /// Reads more bytes from the relay into the buffer; `false` when the stream ended.
    async fn read_more(&mut self) -> Result<bool, BenchError> {
        let n = self
            .recv
            .read_buf(&mut self.buf)
            .await
            .map_err(|e| quic_error("read", e))?;
        Ok(n > 0)
    }

    /// Reads more bytes from the relay into the buffer; the stream's end is an error.
    pub(super) async fn fill(&mut self) -> Result<(), BenchError> {
        if self.read_more().await? {
            Ok(())
        } else {
            Err(BenchError::Protocol("the relay closed the session".into()))
        }
    }

    /// The next frame from the relay, or `None` when the relay ended the stream.
    pub(super) async fn next_or_end(&mut self) -> Result<Option<Message>, BenchError> {
        loop {
            if let Some(m) = self.decode()? {
                return Ok(Some(m));
            }
            if !self.read_more().await? {
                return Ok(None);
            }
        }
    }

    /// The next frame from the relay; the stream's end is an error.
    pub(super) async fn next(&mut self) -> Result<Message, BenchError> {
        self.next_or_end()
            .await?
            .ok_or_else(|| BenchError::Protocol("the relay closed the session".into()))
    }

    /// Ends the sending side (best effort: the stream may be gone already).
    pub(super) fn finish(&mut self) {
        let _ = self.send.finish();
    }
}
