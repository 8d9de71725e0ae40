//! Groups and pre-sealed pushes: every blob of a run is sealed and framed before the clock
//! starts, as a device would have sealed it, so the timed runs measure the relay.

use bytes::Bytes;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use sync_crypto::{DeviceKey, GroupKeys, GroupSecret, KeyEpoch};
use sync_types::{BlobId, FrameCodec, GroupId, Message, Payload, Push, unix_ms};

use super::{BenchError, PLAIN, SEALED};

/// A group and the key material its devices need.
pub(super) struct Group {
    /// Its keys.
    pub(super) keys: GroupKeys,
    /// Its id.
    pub(super) id: GroupId,
}

impl Group {
    /// The group whose secret comes from `seed`.
    pub(super) fn from_seed(seed: u64) -> Self {
        let keys = GroupKeys::derive(&GroupSecret::random(&mut ChaCha20Rng::seed_from_u64(seed)));
        let id = keys.group_id();
        Self { keys, id }
    }
}

/// The device key from `seed` (the same seed opens the device's session).
pub(super) fn device_key(seed: u64) -> DeviceKey {
    DeviceKey::random(&mut ChaCha20Rng::seed_from_u64(seed))
}

/// One framed `Push` of a sealed blob, and that blob's id.
#[derive(Clone)]
pub(super) struct SealedPush {
    /// The whole frame (length prefix included).
    pub(super) frame: Bytes,
    /// The blob's id.
    pub(super) blob_id: BlobId,
}

/// `n` pushes of `dev` into `g`, request ids from `first_request`, each blob [`PLAIN`] bytes
/// sealed to [`SEALED`] bytes with blob ids time-ordered to the second (as `SyncClient` makes
/// them); `seed` seeds the nonces and ids.
pub(super) fn seal_pushes(
    g: &Group,
    dev: &DeviceKey,
    n: usize,
    first_request: u64,
    seed: u64,
) -> Result<Vec<SealedPush>, BenchError> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let key = g
        .keys
        .epoch_key(KeyEpoch::INITIAL)
        .ok_or_else(|| BenchError::Protocol("a new group has no initial epoch key".into()))?;
    let codec = FrameCodec::default();
    let mut plain = vec![0u8; PLAIN];
    let mut out = Vec::with_capacity(n);
    for (i, request_id) in (first_request..).take(n).enumerate() {
        plain[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let blob_id = BlobId::time_ordered(&mut rng, unix_ms() / 1000);
        let sealed = sync_crypto::seal(&mut rng, &key, &g.id, dev, &blob_id, i as u64 + 1, &plain)?;
        debug_assert_eq!(sealed.len(), SEALED);
        let push = Message::Push(Push {
            request_id,
            blob_id,
            payload: Payload::from(sealed),
            ttl_secs: 0,
        });
        out.push(SealedPush {
            frame: codec.encode_to_bytes(&push)?,
            blob_id,
        });
    }
    Ok(out)
}

/// The frames of `pushes`.
pub(super) fn frames(pushes: &[SealedPush]) -> Vec<Bytes> {
    pushes.iter().map(|p| p.frame.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushes_are_framed_sealed_blobs_with_consecutive_request_ids() {
        let g = Group::from_seed(1);
        let dev = device_key(2);
        let pushes = seal_pushes(&g, &dev, 3, 10, 3).unwrap();
        let codec = FrameCodec::default();
        for (p, request_id) in pushes.iter().zip(10..) {
            let mut buf = bytes::BytesMut::from(&p.frame[..]);
            let Some(Message::Push(push)) = codec.decode(&mut buf).unwrap() else {
                panic!("not a push frame");
            };
            assert_eq!(push.request_id, request_id);
            assert_eq!(push.blob_id, p.blob_id);
            assert_eq!(push.payload.len(), SEALED);
            let opened = sync_crypto::open(
                &g.keys,
                &g.id,
                &p.blob_id,
                &dev.device_id(),
                push.payload.as_slice(),
            )
            .unwrap();
            assert_eq!(opened.plaintext.len(), PLAIN);
        }
        assert_eq!(frames(&pushes).len(), 3);
    }
}
