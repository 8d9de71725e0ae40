//! Chunk sealing: content is cut into chunks of `chunk_size` plaintext bytes (the last one may
//! be shorter, and empty content is one empty chunk), each sealed with XChaCha20-Poly1305 under
//! the content key.
//!
//! The nonce of chunk `i` is `"0kc1" ‖ i (u64 BE) ‖ final (1 byte) ‖ 11 zero bytes`: a content
//! key seals exactly one piece of content (it derives from the content id), so the index alone
//! makes nonces unique. The associated data binds every chunk to its content id, plaintext size,
//! chunk size and index, so a chunk cannot be moved, swapped with another, or taken from other
//! content, and content cut short fails (its last chunk would need the `final` flag).

use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{Key, KeyInit, Tag, XChaCha20Poly1305, XNonce};
use sync_crypto::ContentKey;
use sync_types::BlobId;

use crate::error::ContentError;

/// Authentication tag added to each chunk.
pub const TAG_LEN: usize = 16;
/// Plaintext bytes per chunk unless told otherwise (64 KiB: small enough to stream and verify
/// piecewise, large enough that the tags cost 0.02 %).
pub const DEFAULT_CHUNK_SIZE: u32 = 64 * 1024;
/// Smallest chunk size accepted.
pub const MIN_CHUNK_SIZE: u32 = 1024;
/// Largest chunk size accepted (a chunk is held in memory whole while it is sealed or opened).
pub const MAX_CHUNK_SIZE: u32 = 4 * 1024 * 1024;

const NONCE_PREFIX: &[u8; 4] = b"0kc1";
const AAD_LABEL: &[u8] = b"0k-sync/v1/content-chunk";

/// Seals and opens the chunks of one piece of content.
pub struct ChunkCipher {
    aead: XChaCha20Poly1305,
    content_id: BlobId,
    plain_size: u64,
    chunk_size: u32,
    chunks: u64,
}

impl std::fmt::Debug for ChunkCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkCipher")
            .field("content_id", &self.content_id)
            .field("plain_size", &self.plain_size)
            .field("chunk_size", &self.chunk_size)
            .finish_non_exhaustive()
    }
}

/// Number of chunks of `plain_size` bytes cut at `chunk_size` (at least one).
pub fn chunk_count(plain_size: u64, chunk_size: u32) -> u64 {
    plain_size.div_ceil(u64::from(chunk_size.max(1))).max(1)
}

/// Size of the sealed content: the plaintext plus one tag per chunk.
pub fn sealed_size(plain_size: u64, chunk_size: u32) -> u64 {
    plain_size.saturating_add(chunk_count(plain_size, chunk_size).saturating_mul(TAG_LEN as u64))
}

impl ChunkCipher {
    /// The cipher of content `content_id` of `plain_size` bytes cut at `chunk_size`.
    pub fn new(
        key: &ContentKey,
        content_id: BlobId,
        plain_size: u64,
        chunk_size: u32,
    ) -> Result<Self, ContentError> {
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
            return Err(ContentError::BadChunkSize(chunk_size));
        }
        Ok(Self {
            aead: XChaCha20Poly1305::new(<&Key>::from(key.expose_bytes())),
            content_id,
            plain_size,
            chunk_size,
            chunks: chunk_count(plain_size, chunk_size),
        })
    }

    /// Number of chunks.
    pub fn chunks(&self) -> u64 {
        self.chunks
    }

    /// Plaintext bytes of chunk `index`.
    pub fn plain_len(&self, index: u64) -> usize {
        let start = index.saturating_mul(u64::from(self.chunk_size));
        let left = self.plain_size.saturating_sub(start);
        left.min(u64::from(self.chunk_size)) as usize
    }

    /// Sealed bytes of chunk `index`.
    pub fn sealed_len(&self, index: u64) -> usize {
        self.plain_len(index) + TAG_LEN
    }

    /// Size of all sealed chunks together.
    pub fn sealed_size(&self) -> u64 {
        sealed_size(self.plain_size, self.chunk_size)
    }

    fn nonce(&self, index: u64) -> [u8; 24] {
        let mut n = [0u8; 24];
        n[..4].copy_from_slice(NONCE_PREFIX);
        n[4..12].copy_from_slice(&index.to_be_bytes());
        n[12] = u8::from(index + 1 == self.chunks);
        n
    }

    fn aad(&self, index: u64) -> Vec<u8> {
        let mut aad = Vec::with_capacity(AAD_LABEL.len() + 16 + 8 + 4 + 8);
        aad.extend_from_slice(AAD_LABEL);
        aad.extend_from_slice(self.content_id.as_bytes());
        aad.extend_from_slice(&self.plain_size.to_be_bytes());
        aad.extend_from_slice(&self.chunk_size.to_be_bytes());
        aad.extend_from_slice(&index.to_be_bytes());
        aad
    }

    /// Seals chunk `index` in place: `buf` holds its plaintext and gets the tag appended.
    pub fn seal(&self, index: u64, buf: &mut Vec<u8>) -> Result<(), ContentError> {
        if index >= self.chunks || buf.len() != self.plain_len(index) {
            return Err(ContentError::ChunkLength { index });
        }
        let nonce = self.nonce(index);
        let tag = self
            .aead
            .encrypt_inout_detached(
                <&XNonce>::from(&nonce),
                &self.aad(index),
                buf.as_mut_slice().into(),
            )
            .map_err(|_| ContentError::ChunkLength { index })?;
        buf.extend_from_slice(&tag);
        Ok(())
    }

    /// Opens chunk `index` in place: `buf` holds the sealed chunk and is left with its
    /// plaintext. A chunk that does not authenticate (changed, moved, from other content, or
    /// cut short) is [`ContentError::ChunkRejected`] and `buf` is cleared: no byte of it is
    /// returned.
    pub fn open(&self, index: u64, buf: &mut Vec<u8>) -> Result<(), ContentError> {
        if index >= self.chunks || buf.len() != self.sealed_len(index) {
            buf.clear();
            return Err(ContentError::ChunkRejected { index });
        }
        let split = buf.len() - TAG_LEN;
        let (body, tag) = buf.split_at_mut(split);
        let tag = Tag::try_from(&*tag).map_err(|_| ContentError::ChunkRejected { index })?;
        let nonce = self.nonce(index);
        let result = self.aead.decrypt_inout_detached(
            <&XNonce>::from(&nonce),
            &self.aad(index),
            body.into(),
            &tag,
        );
        if result.is_err() {
            buf.clear();
            return Err(ContentError::ChunkRejected { index });
        }
        buf.truncate(split);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sync_crypto::{GroupKeys, GroupSecret};

    fn key(id: &BlobId) -> ContentKey {
        GroupKeys::derive(&GroupSecret::from_bytes([7; 32]))
            .content_key(id)
            .expect("epoch 0 held")
    }

    fn sealed_chunks(cipher: &ChunkCipher, plain: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut offset = 0;
        for i in 0..cipher.chunks() {
            let len = cipher.plain_len(i);
            let mut buf = plain[offset..offset + len].to_vec();
            offset += len;
            cipher.seal(i, &mut buf).expect("seal");
            out.push(buf);
        }
        out
    }

    #[test]
    fn chunks_round_trip_and_sizes_add_up() {
        let id = BlobId::from_bytes([1; 16]);
        for size in [0u64, 1, 1023, 1024, 1025, 5000] {
            let plain: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let cipher = ChunkCipher::new(&key(&id), id, size, 1024).expect("cipher");
            let chunks = sealed_chunks(&cipher, &plain);
            let total: usize = chunks.iter().map(Vec::len).sum();
            assert_eq!(total as u64, cipher.sealed_size(), "size {size}");
            let mut back = Vec::new();
            for (i, mut c) in chunks.into_iter().enumerate() {
                cipher.open(i as u64, &mut c).expect("open");
                back.extend_from_slice(&c);
            }
            assert_eq!(back, plain);
        }
    }

    #[test]
    fn a_flipped_swapped_or_foreign_chunk_is_rejected_and_yields_nothing() {
        let id = BlobId::from_bytes([2; 16]);
        let plain = vec![0x5a; 4096];
        let cipher = ChunkCipher::new(&key(&id), id, 4096, 1024).expect("cipher");
        let chunks = sealed_chunks(&cipher, &plain);

        let mut flipped = chunks[1].clone();
        flipped[10] ^= 1;
        assert!(matches!(
            cipher.open(1, &mut flipped),
            Err(ContentError::ChunkRejected { index: 1 })
        ));
        assert!(
            flipped.is_empty(),
            "no byte of a rejected chunk is returned"
        );

        // Same plaintext in both chunks, so only the binding to the index tells them apart.
        let mut swapped = chunks[2].clone();
        assert!(
            cipher.open(1, &mut swapped).is_err(),
            "chunk 2 in place of 1"
        );

        // A chunk of the same plaintext from other content (another id, so another key).
        let other_id = BlobId::from_bytes([3; 16]);
        let other = ChunkCipher::new(&key(&other_id), other_id, 4096, 1024).expect("cipher");
        let mut foreign = sealed_chunks(&other, &plain)[1].clone();
        assert!(
            cipher.open(1, &mut foreign).is_err(),
            "chunk of other content"
        );
    }

    #[test]
    fn content_cut_short_fails_at_its_new_last_chunk() {
        let id = BlobId::from_bytes([4; 16]);
        let plain = vec![9u8; 3072];
        let cipher = ChunkCipher::new(&key(&id), id, 3072, 1024).expect("cipher");
        let chunks = sealed_chunks(&cipher, &plain);
        // Claim the content was 2048 bytes: chunk 1 becomes the last one, and was not sealed
        // as last (nor for that size).
        let short = ChunkCipher::new(&key(&id), id, 2048, 1024).expect("cipher");
        let mut c1 = chunks[1].clone();
        assert!(short.open(1, &mut c1).is_err());
        let mut c0 = chunks[0].clone();
        assert!(
            short.open(0, &mut c0).is_err(),
            "the size is bound into every chunk"
        );
    }

    #[test]
    fn chunk_sizes_outside_the_range_are_typed_errors() {
        let id = BlobId::from_bytes([5; 16]);
        for bad in [0, 1023, MAX_CHUNK_SIZE + 1] {
            assert!(matches!(
                ChunkCipher::new(&key(&id), id, 10, bad),
                Err(ContentError::BadChunkSize(b)) if b == bad
            ));
        }
    }
}
