//! The preload of the "full" group: blobs written through the relay's own storage library on a
//! data dir before the relay binary starts on it, so that measuring a large group does not
//! first take minutes of pushes over QUIC.

use std::collections::VecDeque;
use std::path::Path;
use std::time::Instant;

use rand_chacha::ChaCha20Rng;
use rand_core::{Rng as _, SeedableRng};
use sync_relay::{PushRequest, SqliteConfig, SqliteStorage, Storage, StorageLimits};
use sync_types::{BlobId, DeviceId, GroupId, unix_ms};

use super::{BenchError, SEALED, TTL};

/// Pushes queued at once, so the storage writer commits them in large batches.
const IN_FLIGHT: usize = 8192;

/// Per-group quotas high enough for any preload (the relay runs with the same).
pub(super) const GROUP_MAX_BLOBS: u64 = 100_000_000;
/// Per-group byte quota high enough for any preload (1 TiB).
pub(super) const GROUP_MAX_BYTES: u64 = 1 << 40;

/// Preloads `count` blobs of [`SEALED`] bytes into `group` in the relay database under
/// `data_dir`; returns blobs/s. The blob ids are those of a group that filled up over the past
/// week (time-ordered ids from a week ago to a second ago, in the order they arrived).
pub(super) async fn preload(
    data_dir: &Path,
    group: GroupId,
    count: usize,
) -> Result<f64, BenchError> {
    let storage = SqliteStorage::open(
        data_dir,
        SqliteConfig {
            limits: StorageLimits {
                max_group_blobs: GROUP_MAX_BLOBS,
                max_group_bytes: GROUP_MAX_BYTES,
                ..StorageLimits::default()
            },
            ..SqliteConfig::default()
        },
    )
    .await?;
    let mut rng = ChaCha20Rng::seed_from_u64(1234);
    let sender = DeviceId::from_bytes([7u8; 32]);
    let mut payload = vec![0u8; SEALED];
    rng.fill_bytes(&mut payload);
    let now_ms = unix_ms();
    let week = TTL.as_secs();
    let first_secs = (now_ms / 1000).saturating_sub(week);
    let start = Instant::now();
    let mut window = VecDeque::with_capacity(IN_FLIGHT);
    for i in 0..count as u64 {
        let secs = first_secs + i * (week - 1) / (count as u64).max(1);
        let reply = storage
            .push_queued(PushRequest {
                group,
                blob_id: BlobId::time_ordered(&mut rng, secs),
                sender,
                payload: payload.clone(),
                ttl: TTL,
                now_ms,
                group_quota_bytes: None,
            })
            .await?;
        window.push_back(reply);
        if window.len() >= IN_FLIGHT
            && let Some(oldest) = window.pop_front()
        {
            oldest.await?;
        }
    }
    for reply in window {
        reply.await?;
    }
    #[allow(clippy::cast_precision_loss)]
    let rate = count as f64 / start.elapsed().as_secs_f64().max(1e-9);
    storage.close().await?;
    Ok(rate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sync_types::Cursor;

    #[tokio::test]
    async fn preloaded_blobs_are_in_the_group_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let group = GroupId::from_bytes([5; 32]);
        let rate = preload(dir.path(), group, 300).await.unwrap();
        assert!(rate > 0.0);
        let storage = SqliteStorage::open(dir.path(), SqliteConfig::default())
            .await
            .unwrap();
        assert_eq!(storage.max_cursor(group).await.unwrap(), Cursor::new(300));
        let page = storage
            .pull(group, Cursor::ZERO, 1000, 1 << 30)
            .await
            .unwrap();
        assert_eq!(page.entries.len(), 300);
        assert!(page.entries.iter().all(|e| e.payload.len() == SEALED));
        assert!(
            page.entries.windows(2).all(|w| w[0].blob_id < w[1].blob_id),
            "blob ids arrive time-ordered"
        );
        storage.close().await.unwrap();
    }
}
