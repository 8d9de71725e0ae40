//! Two and three content nodes on real iroh endpoints on 127.0.0.1: sealing, a verified
//! transfer, opening, a corrupt holder, resuming.

use std::path::{Path, PathBuf};

mod common;

use common::{data_files, node};
use sync_content::chunk::DEFAULT_CHUNK_SIZE;
use sync_content::{
    ContentError, ContentNode, ContentRef, ContentStore, FetchError, HolderFailure, SealParams,
};
use sync_crypto::{ContentKey, GroupKeys, GroupSecret};
use sync_types::BlobId;

fn key(id: &BlobId) -> ContentKey {
    GroupKeys::derive(&GroupSecret::from_bytes([11; 32]))
        .content_key(id)
        .expect("epoch 0")
}

fn write_file(dir: &Path, name: &str, len: usize) -> PathBuf {
    common::write_file(dir, name, len, None)
}

/// Opens `cref` from `node`'s store into `out` and checks it is byte for byte `src`.
async fn opens_as(node: &ContentNode, cref: &ContentRef, out: &Path, src: &Path) {
    let n = node
        .store()
        .open_to_file(cref, &key(&cref.content_id), out, None)
        .await
        .expect("open");
    assert_eq!(n, cref.plain_size);
    assert_eq!(
        std::fs::read(out).expect("read"),
        std::fs::read(src).expect("read")
    );
}

async fn seal(node: &ContentNode, path: &Path, id: BlobId) -> ContentRef {
    let params = SealParams {
        content_id: id,
        epoch: 0,
        chunk_size: DEFAULT_CHUNK_SIZE,
        name: "file.bin".into(),
        media_type: "application/octet-stream".into(),
    };
    let mut cref = node
        .store()
        .seal_file(path, &key(&id), params, None)
        .await
        .expect("seal");
    node.offer(cref.blob_hash());
    cref.holders.push(node.holder());
    cref
}

#[tokio::test]
async fn a_file_travels_sealed_and_opens_byte_identical() {
    let dir = tempfile::tempdir().expect("tmp");
    let (a, b) = (node(1, dir.path()).await, node(2, dir.path()).await);
    a.allow_peers([*b.endpoint().id().as_bytes()]);
    let src = write_file(dir.path(), "src.bin", 3 * 1024 * 1024 + 123);
    let id = BlobId::from_bytes([1; 16]);
    let cref = seal(&a, &src, id).await;
    assert_eq!(cref.plain_size, 3 * 1024 * 1024 + 123);

    // The stored bytes are ciphertext: no 64-byte window of the plaintext appears in them.
    let plain = std::fs::read(&src).expect("read");
    let stored = data_files(a.store().dir());
    assert_eq!(stored.len(), 1);
    let sealed = std::fs::read(&stored[0]).expect("read");
    assert_eq!(sealed.len() as u64, cref.sealed_size());
    assert!(!sealed.windows(64).any(|w| w == &plain[1000..1064]));

    let report = b.fetch(&cref, None).await.expect("fetch");
    assert_eq!(report.resumed_from, 0);
    assert_eq!(report.bytes_received(), cref.sealed_size());
    assert_eq!(report.received[0].0, *a.endpoint().id().as_bytes());
    let out = dir.path().join("out/received.bin");
    let n = b
        .store()
        .open_to_file(&cref, &key(&id), &out, None)
        .await
        .expect("open");
    assert_eq!(n, cref.plain_size);
    assert_eq!(std::fs::read(&out).expect("read"), plain);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_peer_not_allowed_or_content_not_offered_gets_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let (a, b) = (node(3, dir.path()).await, node(4, dir.path()).await);
    let src = write_file(dir.path(), "src.bin", 200_000);
    let id = BlobId::from_bytes([2; 16]);
    let cref = seal(&a, &src, id).await;
    // b is not among a's peers.
    let err = b.fetch(&cref, None).await.expect_err("refused");
    assert!(
        matches!(err, FetchError::Unavailable { have: 0, .. }),
        "{err}"
    );

    // Allowed now, but asking for content a never offered.
    a.allow_peers([*b.endpoint().id().as_bytes()]);
    let other = write_file(dir.path(), "other.bin", 100_000);
    let params = SealParams {
        content_id: BlobId::from_bytes([3; 16]),
        epoch: 0,
        chunk_size: DEFAULT_CHUNK_SIZE,
        name: "x".into(),
        media_type: "application/octet-stream".into(),
    };
    let mut hidden = a
        .store()
        .seal_file(&other, &key(&params.content_id.clone()), params, None)
        .await
        .expect("seal");
    hidden.holders.push(a.holder());
    assert!(b.fetch(&hidden, None).await.is_err(), "not offered");
    assert!(b.fetch(&cref, None).await.is_ok(), "offered and allowed");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_holder_with_a_flipped_byte_is_rejected_and_the_next_holder_completes() {
    let dir = tempfile::tempdir().expect("tmp");
    let (a, bad, b) = (
        node(5, dir.path()).await,
        node(6, dir.path()).await,
        node(7, dir.path()).await,
    );
    let peers = [
        *b.endpoint().id().as_bytes(),
        *bad.endpoint().id().as_bytes(),
    ];
    a.allow_peers(peers);
    bad.allow_peers(peers);
    let src = write_file(dir.path(), "src.bin", 2 * 1024 * 1024);
    let id = BlobId::from_bytes([4; 16]);
    let mut cref = seal(&a, &src, id).await;
    // `bad` gets a faithful copy, then one byte of its stored ciphertext flips.
    bad.fetch(&cref, None).await.expect("copy");
    let file = data_files(bad.store().dir()).pop().expect("data file");
    bad.shutdown().await;
    let mut bytes = std::fs::read(&file).expect("read");
    bytes[1_500_000] ^= 0x01;
    std::fs::write(&file, bytes).expect("write");
    let bad = node(6, dir.path()).await;
    bad.allow_peers(peers);
    bad.offer(cref.blob_hash());
    cref.holders = vec![bad.holder(), a.holder()];

    let report = b
        .fetch(&cref, None)
        .await
        .expect("completed from the good holder");
    assert_eq!(report.failures.len(), 1, "{report:?}");
    assert_eq!(report.failures[0].0, *bad.endpoint().id().as_bytes());
    assert!(
        matches!(report.failures[0].1, HolderFailure::Corrupt(_)),
        "{report:?}"
    );
    // What the bad holder sent before the flipped byte verified and was kept; a sent the rest.
    let from_bad = report
        .received
        .iter()
        .find(|(id, _)| id == bad.endpoint().id().as_bytes())
        .map_or(0, |(_, n)| *n);
    assert!(from_bad < 1_500_000, "{report:?}");
    assert_eq!(report.bytes_received(), cref.sealed_size());
    opens_as(&b, &cref, &dir.path().join("ok.bin"), &src).await;

    // With the bad holder alone the fetch fails, typed, and nothing is written.
    let c = node(8, dir.path()).await;
    bad.allow_peers([*c.endpoint().id().as_bytes()]);
    cref.holders = vec![bad.holder()];
    match c.fetch(&cref, None).await {
        Err(FetchError::Unavailable { failures, have, .. }) => {
            assert!(matches!(failures[0].1, HolderFailure::Corrupt(_)));
            assert!(have < cref.sealed_size());
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    let none = dir.path().join("none.bin");
    let err = c
        .store()
        .open_to_file(&cref, &key(&id), &none, None)
        .await
        .expect_err("incomplete");
    assert!(matches!(err, ContentError::Incomplete { .. }));
    assert!(!none.exists());
    for n in [a, bad, b, c] {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn a_holder_that_stops_answering_is_left_after_the_stall_limit() {
    // Long enough that the holder that answers does not pause as long, even on a busy machine.
    const STALL: std::time::Duration = std::time::Duration::from_secs(2);
    let dir = tempfile::tempdir().expect("tmp");
    let a = node(11, dir.path()).await;
    let b = node(12, dir.path()).await.with_stall_limit(STALL);
    a.allow_peers([*b.endpoint().id().as_bytes()]);
    let src = write_file(dir.path(), "src.bin", 1024 * 1024);
    let id = BlobId::from_bytes([6; 16]);
    let mut cref = seal(&a, &src, id).await;

    // A peer that takes the connection and the request and never answers or closes.
    let stuck = common::endpoint(13).await;
    stuck.set_alpns(vec![iroh_blobs::ALPN.to_vec()]);
    let s = stuck.clone();
    let holding = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(incoming) = s.accept().await {
            if let Ok(conn) = incoming.await {
                held.push(conn);
            }
        }
    });
    let stuck_holder = sync_content::Holder {
        id: *stuck.id().as_bytes(),
        addrs: stuck.addr().ip_addrs().copied().collect(),
        relay: false,
    };
    cref.holders.insert(0, stuck_holder);

    let report = sync_testkit::guard("the fetch", b.fetch(&cref, None))
        .await
        .expect("completed from the holder that answers");
    assert_eq!(
        report.failures,
        vec![(*stuck.id().as_bytes(), HolderFailure::Stalled(STALL))]
    );
    assert_eq!(
        report.received,
        vec![(*a.endpoint().id().as_bytes(), cref.sealed_size())]
    );
    opens_as(&b, &cref, &dir.path().join("out.bin"), &src).await;

    // Alone, it fails the fetch, typed, instead of holding it.
    cref.holders.truncate(1);
    let c = node(14, dir.path()).await.with_stall_limit(STALL);
    match sync_testkit::guard("the fetch", c.fetch(&cref, None)).await {
        Err(FetchError::Unavailable { failures, have, .. }) => {
            assert!(matches!(failures[..], [(_, HolderFailure::Stalled(_))]));
            assert_eq!(have, 0);
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    holding.abort();
    stuck.close().await;
    for n in [a, b, c] {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn an_interrupted_fetch_resumes_from_the_verified_bytes() {
    let dir = tempfile::tempdir().expect("tmp");
    let (a, b) = (node(9, dir.path()).await, node(10, dir.path()).await);
    a.allow_peers([*b.endpoint().id().as_bytes()]);
    let src = write_file(dir.path(), "src.bin", 8 * 1024 * 1024);
    let id = BlobId::from_bytes([5; 16]);
    let cref = seal(&a, &src, id).await;

    // Interrupt the first fetch once it holds at least 2 MiB.
    let progress = sync_content::Progress::new();
    let first = {
        let p = std::sync::Arc::clone(&progress);
        let fut = b.fetch(&cref, Some(p));
        tokio::pin!(fut);
        loop {
            tokio::select! {
                r = &mut fut => break Some(r),
                () = tokio::time::sleep(std::time::Duration::from_millis(1)) => {
                    if progress.done() >= 2 * 1024 * 1024 { break None; }
                }
            }
        }
    };
    assert!(
        first.is_none(),
        "the fetch was interrupted before it completed"
    );
    let held = b.store().held(cref.blob_hash()).await.expect("held");
    assert!(!held.complete && held.bytes > 0, "{held:?}");

    let report = b.fetch(&cref, None).await.expect("resumed");
    assert_eq!(report.resumed_from, held.bytes);
    let remainder = cref.sealed_size() - held.bytes;
    assert!(
        report.bytes_received() <= remainder,
        "second fetch moved {} bytes, remainder {remainder}",
        report.bytes_received()
    );
    opens_as(&b, &cref, &dir.path().join("resumed.bin"), &src).await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn content_past_its_keeping_time_is_pruned_and_its_bytes_collected() {
    let dir = tempfile::tempdir().expect("tmp");
    let store_dir = dir.path().join("gc");
    let store = ContentStore::open_with(&store_dir, std::time::Duration::from_millis(50))
        .await
        .expect("store");
    let old = write_file(dir.path(), "old.bin", 300_000);
    let new = write_file(dir.path(), "new.bin", 200_000);
    let seal_one = |path: PathBuf, id: u8| {
        let store = store.clone();
        async move {
            let id = BlobId::from_bytes([id; 16]);
            let params = SealParams {
                content_id: id,
                epoch: 0,
                chunk_size: DEFAULT_CHUNK_SIZE,
                name: "f".into(),
                media_type: "application/octet-stream".into(),
            };
            store
                .seal_file(&path, &key(&id), params, None)
                .await
                .expect("seal")
        }
    };
    let old_ref = seal_one(old, 40).await;
    let cutoff = sync_types::unix_ms() + 1;
    // Kept again after the cutoff: survives; one tag per hash however often it is kept.
    while sync_types::unix_ms() <= cutoff {
        tokio::task::yield_now().await;
    }
    let new_ref = seal_one(new, 41).await;
    store.keep(new_ref.blob_hash()).await.expect("keep again");
    assert_eq!(store.kept().await.expect("kept").len(), 2);
    assert_eq!(data_files(&store_dir).len(), 2);

    let gone = store.prune(cutoff).await.expect("prune");
    assert_eq!(gone, vec![old_ref.blob_hash()]);
    let kept = store.kept().await.expect("kept");
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].0, new_ref.blob_hash());
    // Garbage collection removes the forgotten bytes within a few of its rounds.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while data_files(&store_dir).len() > 1 {
        assert!(std::time::Instant::now() < deadline, "bytes not collected");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        !store
            .held(old_ref.blob_hash())
            .await
            .expect("held")
            .complete
    );
    assert!(
        store
            .held(new_ref.blob_hash())
            .await
            .expect("held")
            .complete
    );
    store.shutdown().await;
}
