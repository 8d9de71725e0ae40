//! Group membership as the relay enforces it: the record chain of each group (checked with
//! `sync-crypto`'s [`GroupState`] before anything is stored), the current key epoch every
//! `Hello` and `Push` is checked against, and one writer at a time per relay for changes.
//!
//! The relay never holds a key: it checks signatures against public keys the chain names and
//! stores grants it cannot open.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use sync_crypto::{GroupRecord, GroupState, KeyEpoch};
use sync_types::GroupId;

use crate::storage::RelayStorage;
use crate::storage::{Storage, StorageError};

/// Membership state of the groups this relay serves.
#[derive(Default)]
pub(crate) struct Memberships {
    /// The state of every group that has records, once loaded.
    states: Mutex<HashMap<GroupId, Arc<GroupState>>>,
    /// The current epoch of groups past epoch 0 (read on every push).
    epochs: RwLock<HashMap<GroupId, KeyEpoch>>,
    /// Held while a change is checked and stored, so two changes never race.
    pub(crate) write: tokio::sync::Mutex<()>,
}

impl Memberships {
    /// The group's state: from memory, else replayed from its stored records (a group without
    /// records is at epoch 0 under its id, with no admin yet).
    pub(crate) async fn state(
        &self,
        storage: &RelayStorage,
        group: GroupId,
    ) -> Result<Arc<GroupState>, StorageError> {
        if let Some(s) = self.cached(&group) {
            return Ok(s);
        }
        // Records only: the device id does not matter for them.
        let read = storage
            .membership(group, sync_types::DeviceId::from_bytes([0; 32]), 0)
            .await?;
        let mut state = GroupState::new(group);
        for bytes in &read.records {
            let applied = GroupRecord::decode(bytes).and_then(|r| state.apply(&r).map(|_| ()));
            if let Err(e) = applied {
                return Err(StorageError::Corrupt {
                    what: format!("a stored membership record does not apply: {e}"),
                });
            }
        }
        let state = Arc::new(state);
        if state.seq() > 0 {
            self.set(Arc::clone(&state));
        }
        Ok(state)
    }

    fn cached(&self, group: &GroupId) -> Option<Arc<GroupState>> {
        self.states
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(group)
            .cloned()
    }

    /// Drops what is known of the group (another relay changed it): the next read replays its
    /// stored records. Its epoch for pushes stays until then, never going back.
    pub(crate) fn forget(&self, group: &GroupId) {
        self.states
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(group);
    }

    /// Drops what is known of every group.
    pub(crate) fn forget_all(&self) {
        self.states
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Makes `state` the group's current state (after its record was stored).
    pub(crate) fn set(&self, state: Arc<GroupState>) {
        let group = state.group();
        if state.epoch() > KeyEpoch::INITIAL {
            self.epochs
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(group, state.epoch());
        }
        self.states
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(group, state);
    }

    /// The group's current epoch as far as pushes are concerned (epoch 0 for a group whose
    /// state was never loaded past it: a session loads it at `Hello`).
    pub(crate) fn epoch(&self, group: &GroupId) -> KeyEpoch {
        self.epochs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(group)
            .copied()
            .unwrap_or(KeyEpoch::INITIAL)
    }
}

/// The key epoch a sealed blob names in its header (bytes 1..5, big-endian, in both sealed
/// formats), if the payload is long enough to have one.
pub(crate) fn sealed_epoch(payload: &[u8]) -> Option<KeyEpoch> {
    let bytes: [u8; 4] = payload.get(1..5)?.try_into().ok()?;
    Some(KeyEpoch(u32::from_be_bytes(bytes)))
}
