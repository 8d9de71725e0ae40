//! Reading one frame body from the relay without trusting its length prefix: memory is
//! reserved as bytes arrive, a chunk at a time, never up front from the header. A relay that
//! announces a large frame and sends little costs the device what it sent, not what it claimed.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Most bytes reserved ahead of the data actually received.
pub(crate) const READ_CHUNK: usize = 64 * 1024;

/// Reads exactly `len` bytes; the buffer grows with what arrives (at most [`READ_CHUNK`] ahead
/// of it, plus what `BytesMut` keeps in reserve when it grows). A stream that ends first is
/// `UnexpectedEof`.
pub(crate) async fn read_body<R: AsyncRead + Unpin>(
    reader: &mut R,
    len: usize,
) -> std::io::Result<BytesMut> {
    let mut body = BytesMut::new();
    read_body_into(reader, len, &mut body).await?;
    Ok(body)
}

/// [`read_body`] into a caller's buffer (which sees how far the read got if it fails or is
/// dropped).
async fn read_body_into<R: AsyncRead + Unpin>(
    reader: &mut R,
    len: usize,
    body: &mut BytesMut,
) -> std::io::Result<()> {
    while body.len() < len {
        let want = (len - body.len()).min(READ_CHUNK);
        body.reserve(want);
        let read = (&mut *reader)
            .take(u64::try_from(want).unwrap_or(u64::MAX))
            .read_buf(body)
            .await?;
        if read == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("stream ended {} bytes into a {len}-byte frame", body.len()),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Capacity a buffer holding `received` bytes may have: one chunk ahead, and doubling.
    fn bound(received: usize) -> usize {
        2 * received + 2 * READ_CHUNK
    }

    #[tokio::test]
    async fn a_frame_is_read_whole() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut reader = &data[..];
        let body = read_body(&mut reader, data.len()).await.expect("read");
        assert_eq!(&body[..], &data[..]);
        assert!(body.capacity() <= bound(data.len()));
    }

    #[tokio::test]
    async fn a_huge_announced_frame_that_ends_early_costs_what_arrived() {
        // The header claimed 60 MiB; the relay sent 10 bytes and closed.
        let mut reader = &[7u8; 10][..];
        let mut body = BytesMut::new();
        let err = read_body_into(&mut reader, 60 << 20, &mut body)
            .await
            .expect_err("the stream ended early");
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
        assert_eq!(body.len(), 10);
        assert!(body.capacity() <= bound(10), "{}", body.capacity());
    }

    #[tokio::test]
    async fn memory_grows_with_the_bytes_received_while_waiting() {
        // 100 KiB arrive and then nothing: while the read waits for the rest of a 60 MiB frame,
        // the buffer holds what arrived, not what was announced.
        let (mut tx, mut rx) = tokio::io::duplex(256 * 1024);
        tokio::io::AsyncWriteExt::write_all(&mut tx, &[1u8; 100 * 1024])
            .await
            .expect("write");
        let mut body = BytesMut::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_millis(100),
            read_body_into(&mut rx, 60 << 20, &mut body),
        )
        .await;
        assert!(
            read.is_err(),
            "the read still waits for the rest of the frame"
        );
        assert_eq!(body.len(), 100 * 1024);
        assert!(body.capacity() <= bound(100 * 1024), "{}", body.capacity());
        drop(tx);
    }
}
