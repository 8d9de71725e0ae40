//! Memory stays flat in the content size: a large file (sparse on disk, so the test needs no
//! real gigabyte of input) is sealed, transferred between two nodes over real QUIC on
//! 127.0.0.1, and opened again, and this process's peak resident memory (`VmHWM` in
//! `/proc/self/status`) stays under a bound that does not depend on the size.
//!
//! One test in its own binary, so no other test's memory counts.

mod common;

use common::node;
use sync_content::SealParams;
use sync_content::chunk::DEFAULT_CHUNK_SIZE;
use sync_crypto::{GroupKeys, GroupSecret};
use sync_types::BlobId;

/// Size of the content moved.
const SIZE: u64 = 1 << 30;
/// Peak resident memory allowed for the whole process, whatever `SIZE` is: the two nodes'
/// stores and endpoints, a few chunks in flight, the test harness.
const PEAK_RSS_BOUND_KIB: u64 = 96 * 1024;

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("field")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gigabyte_moves_in_bounded_memory() {
    let dir = tempfile::tempdir().expect("tmp");
    // Sparse input: mostly zeros, a marker every 64 MiB so the output is checkable.
    let src = dir.path().join("big.bin");
    {
        let f = std::fs::File::create(&src).expect("create");
        f.set_len(SIZE).expect("sparse");
        use std::os::unix::fs::FileExt;
        for i in 0..(SIZE >> 26) {
            f.write_all_at(format!("marker {i:08}").as_bytes(), i << 26)
                .expect("marker");
        }
    }
    let (a, b) = (node(21, dir.path()).await, node(22, dir.path()).await);
    a.allow_peers([*b.endpoint().id().as_bytes()]);
    let id = BlobId::from_bytes([21; 16]);
    let key = GroupKeys::derive(&GroupSecret::from_bytes([21; 32]))
        .content_key(&id)
        .expect("epoch 0");
    let params = SealParams {
        content_id: id,
        epoch: 0,
        chunk_size: DEFAULT_CHUNK_SIZE,
        name: "big.bin".into(),
        media_type: "application/octet-stream".into(),
    };
    let mut cref = a
        .store()
        .seal_file(&src, &key, params, None)
        .await
        .expect("seal");
    a.offer(cref.blob_hash());
    cref.holders.push(a.holder());
    let report = b.fetch(&cref, None).await.expect("fetch");
    assert_eq!(report.bytes_received(), cref.sealed_size());
    let out = dir.path().join("out.bin");
    let n = b
        .store()
        .open_to_file(&cref, &key, &out, None)
        .await
        .expect("open");
    assert_eq!(n, SIZE);
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(&out).expect("open out");
        for i in 0..(SIZE >> 26) {
            let mut buf = [0u8; 15];
            f.read_exact_at(&mut buf, i << 26).expect("read");
            assert_eq!(&buf, format!("marker {i:08}").as_bytes());
        }
    }
    let peak = status_kib("VmHWM:");
    println!(
        "moved {} MiB sealed; peak RSS {} MiB (bound {} MiB)",
        cref.sealed_size() >> 20,
        peak / 1024,
        PEAK_RSS_BOUND_KIB / 1024
    );
    assert!(
        peak <= PEAK_RSS_BOUND_KIB,
        "peak RSS {peak} KiB over the bound {PEAK_RSS_BOUND_KIB} KiB"
    );
    a.shutdown().await;
    b.shutdown().await;
}
