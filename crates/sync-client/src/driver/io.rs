//! The session's I/O tasks: a reader that turns the stream into messages and a writer that turns
//! frames into bytes. Both report to the driver through its input channel, tagged with their
//! session's id so reports of an old session are told apart.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use sync_types::{FRAME_HEADER_LEN, FrameCodec, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::mpsc;

use crate::error::TransportError;
use crate::frame_read::read_body;
use crate::transport::{Session, SessionCloser, SessionReader, SessionWriter};

/// What the I/O tasks (and dials) report to the driver.
pub(super) enum Input {
    Dialed {
        attempt: u64,
        result: Result<Session, TransportError>,
    },
    Frame {
        session: u64,
        msg: Message,
    },
    ReadEnded {
        session: u64,
        reason: String,
    },
    WriteFailed {
        session: u64,
        reason: String,
    },
    /// The answer to a `GroupGet` sent before `Hello`.
    GroupFetched(Result<sync_types::GroupInfo, String>),
}

/// What the driver hands a session's writer.
pub(super) enum WriterMsg {
    Frame(Bytes),
    Shutdown,
}

/// Reads frames and reports them; the header is checked before the body is read.
pub(super) async fn read_loop(
    session: u64,
    reader: SessionReader,
    max_frame: Arc<AtomicUsize>,
    input: mpsc::Sender<Input>,
) {
    let mut reader = BufReader::with_capacity(64 * 1024, reader);
    let reason = loop {
        let mut header = [0u8; FRAME_HEADER_LEN];
        if let Err(e) = reader.read_exact(&mut header).await {
            break if e.kind() == std::io::ErrorKind::UnexpectedEof {
                "relay closed the stream".to_string()
            } else {
                format!("read failed: {e}")
            };
        }
        let codec = FrameCodec::new(max_frame.load(Ordering::Relaxed));
        let len = match codec.decode_header(&header) {
            Ok(Some(len)) => len,
            Ok(None) => break "short frame header".to_string(),
            Err(e) => break format!("bad frame from relay: {e}"),
        };
        let body = match read_body(&mut reader, len).await {
            Ok(body) => body,
            Err(e) => break format!("read failed: {e}"),
        };
        match codec.decode_body(&body) {
            Ok(msg) => {
                if input.send(Input::Frame { session, msg }).await.is_err() {
                    return;
                }
            }
            Err(e) => break format!("bad frame from relay: {e}"),
        }
    };
    let _ = input.send(Input::ReadEnded { session, reason }).await;
}

/// Writes queued frames, coalescing those that are ready together into one flush.
pub(super) async fn write_loop(
    session: u64,
    writer: SessionWriter,
    mut frames: mpsc::UnboundedReceiver<WriterMsg>,
    closer: Option<SessionCloser>,
    input: mpsc::Sender<Input>,
) {
    let mut writer = BufWriter::with_capacity(64 * 1024, writer);
    let mut failed = None;
    'outer: while let Some(msg) = frames.recv().await {
        let mut next = Some(msg);
        while let Some(msg) = next.take() {
            match msg {
                WriterMsg::Frame(frame) => {
                    if let Err(e) = writer.write_all(&frame).await {
                        failed = Some(format!("write failed: {e}"));
                        break 'outer;
                    }
                }
                WriterMsg::Shutdown => break 'outer,
            }
            next = frames.try_recv().ok();
        }
        if let Err(e) = writer.flush().await {
            failed = Some(format!("write failed: {e}"));
            break;
        }
    }
    let _ = writer.flush().await;
    let _ = writer.shutdown().await;
    if let Some(reason) = failed {
        let _ = input.send(Input::WriteFailed { session, reason }).await;
    }
    if let Some(closer) = closer {
        closer().await;
    }
}
