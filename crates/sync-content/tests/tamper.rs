//! Content whose ciphertext was cut short, reordered or swapped is refused at opening, with a
//! typed error and no output file: the chunk layer checks what the hash alone cannot (a hash
//! named by someone who rearranged the chunks before hashing).

use std::path::Path;

use sync_content::chunk::{ChunkCipher, DEFAULT_CHUNK_SIZE};
use sync_content::{ContentError, ContentRef, ContentStore};
use sync_crypto::{ContentKey, GroupKeys, GroupSecret};
use sync_types::BlobId;

const PLAIN: u64 = 5 * DEFAULT_CHUNK_SIZE as u64 + 777;

fn key(id: &BlobId) -> ContentKey {
    GroupKeys::derive(&GroupSecret::from_bytes([31; 32]))
        .content_key(id)
        .expect("epoch 0")
}

/// The sealed chunks of `PLAIN` bytes of content `id`.
fn sealed_chunks(id: BlobId) -> (ChunkCipher, Vec<Vec<u8>>) {
    let cipher = ChunkCipher::new(&key(&id), id, PLAIN, DEFAULT_CHUNK_SIZE).expect("cipher");
    let chunks = (0..cipher.chunks())
        .map(|i| {
            let mut buf: Vec<u8> = (0..cipher.plain_len(i))
                .map(|j| (i as usize + j) as u8)
                .collect();
            cipher.seal(i, &mut buf).expect("seal");
            buf
        })
        .collect();
    (cipher, chunks)
}

/// Stores `bytes` and a reference to them as content `id` of `plain_size` bytes.
async fn stored(store: &ContentStore, id: BlobId, plain_size: u64, bytes: Vec<u8>) -> ContentRef {
    let tag = store
        .blobs()
        .add_bytes(bytes)
        .temp_tag()
        .await
        .expect("add");
    let hash = tag.hash();
    store.keep(hash).await.expect("keep");
    ContentRef {
        content_id: id,
        epoch: 0,
        hash: *hash.as_bytes(),
        plain_size,
        chunk_size: DEFAULT_CHUNK_SIZE,
        name: "x".into(),
        media_type: "application/octet-stream".into(),
        holders: Vec::new(),
    }
}

async fn open(store: &ContentStore, cref: &ContentRef, out: &Path) -> Result<u64, ContentError> {
    store
        .open_to_file(cref, &key(&cref.content_id), out, None)
        .await
}

#[tokio::test]
async fn truncated_reordered_and_swapped_content_is_refused_without_output() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = ContentStore::open(&dir.path().join("store"))
        .await
        .expect("store");
    let id = BlobId::from_bytes([1; 16]);
    let (_, chunks) = sealed_chunks(id);
    let out = dir.path().join("out.bin");

    // The faithful content opens.
    let good = stored(&store, id, PLAIN, chunks.concat()).await;
    assert_eq!(open(&store, &good, &out).await.expect("opens"), PLAIN);
    std::fs::remove_file(&out).expect("rm");

    // Cut short by its last chunk, with the true size in the reference: the size check.
    let cut: Vec<u8> = chunks[..chunks.len() - 1].concat();
    let short = stored(&store, id, PLAIN, cut.clone()).await;
    assert!(matches!(
        open(&store, &short, &out).await,
        Err(ContentError::SizeMismatch { .. })
    ));
    assert!(!out.exists());

    // Cut short and a reference that claims the shorter size: the chunk layer (the size is
    // bound into every chunk, and the new last chunk was not sealed as last).
    let claimed = (chunks.len() as u64 - 1) * DEFAULT_CHUNK_SIZE as u64;
    let short = stored(&store, id, claimed, cut).await;
    assert!(matches!(
        open(&store, &short, &out).await,
        Err(ContentError::ChunkRejected { index: 0 })
    ));
    assert!(!out.exists());

    // Two chunks swapped.
    let mut swapped = chunks.clone();
    swapped.swap(1, 2);
    let bad = stored(&store, id, PLAIN, swapped.concat()).await;
    assert!(matches!(
        open(&store, &bad, &out).await,
        Err(ContentError::ChunkRejected { index: 1 })
    ));
    assert!(!out.exists());
    assert!(
        !dir.path().join("out.bin.0k-part").exists(),
        "no partial file left"
    );

    // A chunk taken from other content in its place.
    let (_, other) = sealed_chunks(BlobId::from_bytes([2; 16]));
    let mut mixed = chunks.clone();
    mixed[3] = other[3].clone();
    let bad = stored(&store, id, PLAIN, mixed.concat()).await;
    assert!(matches!(
        open(&store, &bad, &out).await,
        Err(ContentError::ChunkRejected { index: 3 })
    ));
    assert!(!out.exists());

    // The right bytes opened with another content id's key.
    let mut wrong = good.clone();
    wrong.content_id = BlobId::from_bytes([3; 16]);
    assert!(matches!(
        store
            .open_to_file(&wrong, &key(&wrong.content_id), &out, None)
            .await,
        Err(ContentError::ChunkRejected { index: 0 })
    ));
    assert!(!out.exists());
    store.shutdown().await;
}
