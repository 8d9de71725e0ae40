//! The large-content vectors of `docs/PROTOCOL.md` (section 15's chunk sealing), computed by
//! the code and compared.

use sync_content::chunk::ChunkCipher;
use sync_crypto::{GroupKeys, GroupSecret};
use sync_testkit::doc_vectors::Vectors;
use sync_types::BlobId;

fn content_chunk(v: &Vectors) {
    let keys = GroupKeys::derive(&GroupSecret::from_bytes(v.array("keys.group_secret")));
    let id = BlobId::from_bytes(v.array("content.content_id"));
    let key = keys.content_key(&id).expect("epoch 0");
    assert_eq!(
        key.expose_bytes().as_slice(),
        v.bytes("content.key").as_slice(),
        "content.key"
    );
    let plaintext = v.text("content.plaintext").into_bytes();
    let plain_size = v.uint("content.plain_size");
    assert_eq!(plaintext.len() as u64, plain_size);
    let chunk_size = v.u32("content.chunk_size");
    let cipher = ChunkCipher::new(&key, id, plain_size, chunk_size).expect("cipher");
    assert_eq!(cipher.chunks(), 1);
    let mut nonce = b"0kc1".to_vec();
    nonce.extend_from_slice(&0u64.to_be_bytes());
    nonce.push(1);
    nonce.extend_from_slice(&[0; 11]);
    assert_eq!(nonce, v.bytes("content.nonce_0"), "content.nonce_0");
    let mut aad = b"0k-sync/v1/content-chunk".to_vec();
    aad.extend_from_slice(id.as_bytes());
    aad.extend_from_slice(&plain_size.to_be_bytes());
    aad.extend_from_slice(&chunk_size.to_be_bytes());
    aad.extend_from_slice(&0u64.to_be_bytes());
    assert_eq!(aad, v.bytes("content.aad_0"), "content.aad_0");
    let mut buf = plaintext.clone();
    cipher.seal(0, &mut buf).expect("seal");
    assert_eq!(buf, v.bytes("content.sealed"), "content.sealed");
    cipher.open(0, &mut buf).expect("open");
    assert_eq!(buf, plaintext);
}

sync_testkit::doc_vector_tests! {
    crate: "sync-content",
    every: every_content_vector_is_checked,
    content_chunk_vectors_match_the_code: [content_chunk],
}
