//! The echo process of the QUIC baselines (`sync-stress bench-echo`): a bare iroh endpoint on
//! 127.0.0.1 that answers length-prefixed frames on every stream it is given. Small frames are
//! echoed; large ones get a short reply the size of a `PushAck` frame, so a pipelined run
//! against it moves the bytes a relay run moves, without storage.

use std::future::Future;
use std::io::Write as _;

use bytes::BytesMut;
use iroh::SecretKey;
use iroh::endpoint::{RecvStream, SendStream};
use sync_types::{RelayAddr, RelayId};
use tokio::io::AsyncReadExt as _;

use super::BenchError;
use super::session::endpoint;

/// ALPN of the echo endpoint.
pub(super) const ECHO_ALPN: &[u8] = b"/0k-sync-bench-echo/1";
/// Frames with a body up to this size are echoed; larger ones get a short reply.
pub(super) const ECHO_MAX: usize = 64;
/// Reply to a large frame: the size of a `PushAck` frame, 4-byte header included.
pub(super) const ECHO_REPLY: usize = 52;
/// Start of the one line the echo process prints when it is ready, before its dial string.
pub(super) const READY_PREFIX: &str = "echo ready: ";

/// Runs the echo endpoint until `shutdown` resolves. Prints one line, `echo ready: ` and its
/// dial string (`ID@127.0.0.1:PORT`), on stdout once it accepts connections.
pub async fn serve_echo(shutdown: impl Future<Output = ()>) -> Result<(), BenchError> {
    let ep = endpoint(SecretKey::generate(), Some(ECHO_ALPN)).await?;
    let dial = RelayAddr::new(
        RelayId::from_bytes(*ep.id().as_bytes()),
        &ep.bound_sockets(),
    );
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{READY_PREFIX}{dial}")
            .and_then(|()| out.flush())
            .map_err(BenchError::io("print the ready line"))?;
    }
    let serve = async {
        while let Some(incoming) = ep.accept().await {
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                while let Ok((send, recv)) = conn.accept_bi().await {
                    tokio::spawn(echo_stream(send, recv));
                }
            });
        }
    };
    tokio::select! {
        () = serve => {}
        () = shutdown => {}
    }
    ep.close().await;
    Ok(())
}

/// Answers every complete frame in `buf` into `out` (consuming them): small frames echoed,
/// large ones answered with [`ECHO_REPLY`] bytes.
fn answer_frames(buf: &mut BytesMut, out: &mut BytesMut) {
    while let Some(&[a, b, c, d]) = buf.get(..4) {
        let len = u32::from_be_bytes([a, b, c, d]) as usize;
        if buf.len() < 4 + len {
            break;
        }
        let frame = buf.split_to(4 + len);
        if len <= ECHO_MAX {
            out.extend_from_slice(&frame);
        } else {
            out.extend_from_slice(&((ECHO_REPLY - 4) as u32).to_be_bytes());
            out.resize(out.len() + ECHO_REPLY - 4, 0);
        }
    }
}

/// One stream: reads whatever arrived, answers every complete frame, all answers of one read
/// in one write.
async fn echo_stream(mut send: SendStream, mut recv: RecvStream) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut out = BytesMut::new();
    loop {
        match recv.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        answer_frames(&mut buf, &mut out);
        if !out.is_empty() {
            if send.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: usize) -> Vec<u8> {
        let mut f = (len as u32).to_be_bytes().to_vec();
        f.resize(4 + len, 7);
        f
    }

    #[test]
    fn small_frames_echo_large_ones_get_an_ack_sized_reply_partial_ones_wait() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&frame(10));
        buf.extend_from_slice(&frame(1000));
        let partial = frame(20);
        buf.extend_from_slice(&partial[..12]);
        let mut out = BytesMut::new();
        answer_frames(&mut buf, &mut out);
        assert_eq!(&out[..14], &frame(10)[..]);
        assert_eq!(out.len(), 14 + ECHO_REPLY);
        assert_eq!(&out[14..18], &((ECHO_REPLY - 4) as u32).to_be_bytes());
        assert_eq!(&buf[..], &partial[..12], "the partial frame stays buffered");
    }
}
