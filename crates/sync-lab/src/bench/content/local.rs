//! Steps 1 to 3 of the large content section: sealing and hashing in memory on one core, a raw
//! iroh bulk stream, and content between two content nodes with no relay.

use std::path::Path;
use std::time::{Duration, Instant};

use iroh::{Endpoint, SecretKey};
use sync_content::chunk::{ChunkCipher, DEFAULT_CHUNK_SIZE, TAG_LEN};
use sync_content::{ContentNode, ContentRef, ContentStore, SealParams};
use sync_crypto::{ContentKey, GroupKeys, GroupSecret};
use sync_types::BlobId;

use super::super::session::endpoint;
use super::super::{BenchError, quic_error};
use super::{
    DIRECT_FLOOR_MBPS, DIRECT_TARGET_SHARE, Direct, Rate, SealHash, XorShift, bounded,
    check_output, failed,
};

/// The ALPN of the raw bulk stream.
const BULK_ALPN: &[u8] = b"0k-sync/bench-bulk/1";
/// Pseudo-random plaintext that the in-memory sealing cycles through.
const PLAIN_RING: usize = 16 << 20;
/// Bytes per write of the raw bulk stream.
const BULK_WRITE: usize = 1 << 20;

/// A content key of a made-up group for content `id`.
fn key(id: &BlobId) -> Result<ContentKey, BenchError> {
    GroupKeys::derive(&GroupSecret::from_bytes([0x0c; 32]))
        .content_key(id)
        .ok_or_else(|| BenchError::Content("no content key for epoch 0".into()))
}

/// Step 1: every chunk of `bytes` sealed into one buffer, then BLAKE3 of it, on this thread.
/// The buffer is written once before the clock starts, so no page is faulted in while timed.
pub(super) fn seal_and_hash(bytes: u64) -> Result<SealHash, BenchError> {
    let id = BlobId::from_bytes([1; 16]);
    let cipher = ChunkCipher::new(&key(&id)?, id, bytes, DEFAULT_CHUNK_SIZE)
        .map_err(|e| failed("chunk cipher", e))?;
    let sealed_len = usize::try_from(cipher.sealed_size())
        .map_err(|_| BenchError::Content(format!("{bytes} B do not fit in memory here")))?;
    let mut ring = vec![0u8; PLAIN_RING];
    XorShift::new(0x5ea1).fill(&mut ring);
    let mut sealed = vec![0u8; sealed_len];
    sealed.fill(0xa5);
    let mut buf = Vec::with_capacity(DEFAULT_CHUNK_SIZE as usize + TAG_LEN);

    let start = Instant::now();
    let (mut at, mut ring_at) = (0usize, 0usize);
    for index in 0..cipher.chunks() {
        let len = cipher.plain_len(index);
        if ring_at + len > ring.len() {
            ring_at = 0;
        }
        buf.clear();
        buf.extend_from_slice(&ring[ring_at..ring_at + len]);
        ring_at += len;
        cipher
            .seal(index, &mut buf)
            .map_err(|e| failed("sealing a chunk", e))?;
        sealed[at..at + buf.len()].copy_from_slice(&buf);
        at += buf.len();
    }
    let seal = start.elapsed();
    let start = Instant::now();
    let hash = iroh_blobs::Hash::new(&sealed[..at]);
    let hashed = start.elapsed();
    // Keep the hash (and so the hashing) from being optimised away.
    std::hint::black_box(hash);
    Ok(SealHash {
        seal: Rate::of(bytes, seal),
        hash: Rate::of(bytes, hashed),
        seal_and_hash: Rate::of(bytes, seal + hashed),
    })
}

/// Step 2: `sealed` bytes on one QUIC stream from one endpoint to another, timed from opening
/// the stream to the receiver's count of bytes read arriving back.
pub(super) async fn raw_bulk(bytes: u64, sealed: u64) -> Result<Rate, BenchError> {
    let server = endpoint(SecretKey::from_bytes(&[0xb1; 32]), Some(BULK_ALPN)).await?;
    let client = endpoint(SecretKey::from_bytes(&[0xb2; 32]), None).await?;
    let accept_ep = server.clone();
    let sink = tokio::spawn(async move { sink(&accept_ep).await });
    let result = send_bulk(&client, &server, sealed).await;
    sink.abort();
    client.close().await;
    server.close().await;
    let (elapsed, count) = result?;
    if count != sealed {
        return Err(BenchError::Content(format!(
            "raw iroh bulk: the receiver read {count} of {sealed} bytes"
        )));
    }
    Ok(Rate::of(bytes, elapsed))
}

/// Accepts one connection and one stream, reads it to its end, writes back the byte count.
async fn sink(ep: &Endpoint) -> Result<(), BenchError> {
    let incoming = ep
        .accept()
        .await
        .ok_or_else(|| quic_error("bulk accept", "endpoint closed"))?;
    let conn = incoming
        .await
        .map_err(|e| quic_error("bulk connection", e))?;
    let (mut send, mut recv) = conn
        .accept_bi()
        .await
        .map_err(|e| quic_error("bulk stream", e))?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut count = 0u64;
    while let Some(n) = recv
        .read(&mut buf)
        .await
        .map_err(|e| quic_error("bulk read", e))?
    {
        count += n as u64;
    }
    send.write_all(&count.to_be_bytes())
        .await
        .map_err(|e| quic_error("bulk reply", e))?;
    let _ = send.finish();
    // Wait for the sender to close, so the reply is delivered (bounded by the caller).
    conn.closed().await;
    Ok(())
}

async fn send_bulk(
    client: &Endpoint,
    server: &Endpoint,
    sealed: u64,
) -> Result<(Duration, u64), BenchError> {
    let conn = client
        .connect(server.addr(), BULK_ALPN)
        .await
        .map_err(|e| quic_error("bulk connect", e))?;
    let mut block = vec![0u8; BULK_WRITE];
    XorShift::new(0xb01c).fill(&mut block);
    let start = Instant::now();
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| quic_error("bulk stream", e))?;
    let mut left = sealed;
    while left > 0 {
        let n = usize::try_from(left.min(BULK_WRITE as u64)).unwrap_or(BULK_WRITE);
        send.write_all(&block[..n])
            .await
            .map_err(|e| quic_error("bulk write", e))?;
        left -= n as u64;
    }
    send.finish().map_err(|e| quic_error("bulk finish", e))?;
    let mut reply = [0u8; 8];
    recv.read_exact(&mut reply)
        .await
        .map_err(|e| quic_error("bulk reply", e))?;
    let elapsed = start.elapsed();
    conn.close(0u32.into(), b"done");
    Ok((elapsed, u64::from_be_bytes(reply)))
}

/// A content node in `dir/name` on its own endpoint.
async fn node(dir: &Path, name: &str, seed: u8) -> Result<ContentNode, BenchError> {
    let store = ContentStore::open(&dir.join(name))
        .await
        .map_err(|e| failed("open a content store", e))?;
    let ep = endpoint(SecretKey::from_bytes(&[seed; 32]), None).await?;
    Ok(ContentNode::serve(store, ep))
}

/// Step 3: `input` sealed into A's store, fetched by B from A, opened to a file; A and B are
/// shut down (and their stores removed with `dir`'s subdirectories) before returning.
pub(super) async fn direct(
    dir: &Path,
    input: &Path,
    bytes: u64,
    raw: Rate,
) -> Result<Direct, BenchError> {
    let work = dir.join("direct");
    let a = node(&work, "a", 0xd1).await?;
    let b = match node(&work, "b", 0xd2).await {
        Ok(b) => b,
        Err(e) => {
            a.shutdown().await;
            return Err(e);
        }
    };
    let measured = direct_with(&a, &b, &work, input, bytes, raw).await;
    a.shutdown().await;
    b.shutdown().await;
    let _ = tokio::fs::remove_dir_all(&work).await;
    measured
}

async fn direct_with(
    a: &ContentNode,
    b: &ContentNode,
    work: &Path,
    input: &Path,
    bytes: u64,
    raw: Rate,
) -> Result<Direct, BenchError> {
    a.allow_peers([*b.endpoint().id().as_bytes()]);
    let id = BlobId::from_bytes([3; 16]);
    let key = key(&id)?;
    let params = SealParams {
        content_id: id,
        epoch: 0,
        chunk_size: DEFAULT_CHUNK_SIZE,
        name: "input.bin".into(),
        media_type: "application/octet-stream".into(),
    };
    let start = Instant::now();
    let mut cref: ContentRef = bounded("sealing into A's store", bytes, async {
        a.store()
            .seal_file(input, &key, params, None)
            .await
            .map_err(|e| failed("sealing into A's store", e))
    })
    .await?;
    let seal = start.elapsed();
    a.offer(cref.blob_hash());
    cref.holders.push(a.holder());

    let start = Instant::now();
    let report = bounded("B fetching from A", bytes, async {
        b.fetch(&cref, None)
            .await
            .map_err(|e| failed("B fetching from A", e))
    })
    .await?;
    let fetch = start.elapsed();
    if report.bytes_received() != cref.sealed_size() {
        return Err(BenchError::Content(format!(
            "B fetched {} of {} sealed bytes",
            report.bytes_received(),
            cref.sealed_size()
        )));
    }
    let out = work.join("received.bin");
    let opened = bounded("B opening to a file", bytes, async {
        b.store()
            .open_to_file(&cref, &key, &out, None)
            .await
            .map_err(|e| failed("B opening to a file", e))
    })
    .await?;
    let fetch_and_open = start.elapsed();
    if opened != bytes {
        return Err(BenchError::Content(format!(
            "B opened {opened} of {bytes} bytes"
        )));
    }
    let (src, dst) = (input.to_path_buf(), out.clone());
    super::super::joined(
        tokio::task::spawn_blocking(move || check_output(&src, &dst)).await,
        "checking the received file",
    )??;
    let fetch = Rate::of(bytes, fetch);
    let share = if raw.mb_per_s > 0.0 {
        fetch.mb_per_s / raw.mb_per_s
    } else {
        0.0
    };
    Ok(Direct {
        seal: Rate::of(bytes, seal),
        fetch,
        fetch_and_open: Rate::of(bytes, fetch_and_open),
        fetch_share_of_raw: share,
        target_met: share >= DIRECT_TARGET_SHARE,
        floor_met: fetch.mb_per_s >= DIRECT_FLOOR_MBPS,
    })
}
