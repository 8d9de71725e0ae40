//! The sync status (offline, connected, synced, pending, failed), derived from what really
//! happened: connection, pending pushes, failures, pulls. The state only: how to word it for a
//! person is the app's choice.

use std::collections::HashSet;

use sync_types::BlobId;

/// Where sync stands, for the app to show the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SyncStatus {
    /// Not connected to the relay.
    Offline,
    /// Connected, but not yet confirmed to be up to date.
    Connected,
    /// Connected, nothing waiting to be sent, and caught up with the relay.
    Synced,
    /// Changes are stored locally and not yet acknowledged by the relay.
    PendingSync,
    /// Something could not be synced and will not be retried (a push was refused for good, or
    /// the relay refused this device); the user or app must act.
    SyncFailed,
}

/// Folds sync events into a [`SyncStatus`].
///
/// Rules, in priority order: not connected → [`SyncStatus::Offline`] (or
/// [`SyncStatus::SyncFailed`] after a fatal connection rejection); a push refused for good and
/// not yet acknowledged by the app → `SyncFailed`; pushes awaiting their ack →
/// [`SyncStatus::PendingSync`]; a push acked or a pull completed since connecting, with no
/// remote change announced since → [`SyncStatus::Synced`]; otherwise
/// [`SyncStatus::Connected`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncStatusTracker {
    connected: bool,
    /// Up to date with the relay since the last connect / remote change.
    confirmed: bool,
    /// The relay refused this device for good; cleared by the next successful connect.
    connection_failed: bool,
    /// Pushes queued and not yet acknowledged or refused for good.
    pending: HashSet<BlobId>,
    /// Pushes refused for good, not yet acknowledged by the app.
    failed: u64,
}

impl SyncStatusTracker {
    /// A tracker in the offline state.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current status.
    pub fn status(&self) -> SyncStatus {
        if !self.connected {
            return if self.connection_failed {
                SyncStatus::SyncFailed
            } else {
                SyncStatus::Offline
            };
        }
        if self.failed > 0 {
            SyncStatus::SyncFailed
        } else if !self.pending.is_empty() {
            SyncStatus::PendingSync
        } else if self.confirmed {
            SyncStatus::Synced
        } else {
            SyncStatus::Connected
        }
    }

    /// Pushes waiting for the relay's ack.
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// Pushes refused for good since the last [`clear_failures`](Self::clear_failures).
    pub fn failed_count(&self) -> u64 {
        self.failed
    }

    /// The session with the relay is established.
    pub fn on_connected(&mut self) {
        self.connected = true;
        self.confirmed = false;
        self.connection_failed = false;
    }

    /// The session ended (pending pushes stay pending).
    pub fn on_disconnected(&mut self) {
        self.connected = false;
        self.confirmed = false;
    }

    /// The relay refused this device for good (e.g. unauthorized): no retry is scheduled.
    pub fn on_connection_rejected(&mut self) {
        self.connected = false;
        self.confirmed = false;
        self.connection_failed = true;
    }

    /// A push was put in the outbox.
    pub fn on_push_queued(&mut self, blob_id: BlobId) {
        self.pending.insert(blob_id);
    }

    /// The relay stored a push durably.
    pub fn on_push_acked(&mut self, blob_id: BlobId) {
        self.pending.remove(&blob_id);
        self.confirmed = true;
    }

    /// A push attempt failed but the push stays queued and will be retried (rate limit,
    /// lost connection): it counts as pending.
    pub fn on_push_failed(&mut self, blob_id: BlobId) {
        self.pending.insert(blob_id);
    }

    /// The relay refused a push for good: it left the outbox and is reported as failed, never
    /// as sent.
    pub fn on_push_rejected(&mut self, blob_id: BlobId) {
        self.pending.remove(&blob_id);
        self.failed = self.failed.saturating_add(1);
    }

    /// The relay announced changes not pulled yet (`Notify`).
    pub fn on_remote_change(&mut self) {
        self.confirmed = false;
    }

    /// A pull reached the relay's latest cursor.
    pub fn on_pull_complete(&mut self) {
        self.confirmed = true;
    }

    /// The app has shown the failures to the user.
    pub fn clear_failures(&mut self) {
        self.failed = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> BlobId {
        BlobId::from_bytes([n; 16])
    }

    /// Calls each `method(args)` on the tracker in turn and checks the status after it.
    macro_rules! steps {
        ($t:ident; $($method:ident($($arg:expr),*) => $status:ident),+ $(,)?) => {
            $(
                $t.$method($($arg),*);
                assert_eq!($t.status(), SyncStatus::$status, stringify!($method));
            )+
        };
    }

    /// A tracker that is connected and has pulled up to the relay's latest cursor.
    fn synced() -> SyncStatusTracker {
        let mut t = SyncStatusTracker::new();
        steps!(t;
            on_connected() => Connected,
            on_pull_complete() => Synced,
        );
        t
    }

    #[test]
    fn sync_status_reflects_actual_state() {
        let mut t = SyncStatusTracker::new();
        assert_eq!(t.status(), SyncStatus::Offline);
        steps!(t;
            on_connected() => Connected,
            on_push_acked(id(1)) => Synced,
            on_push_failed(id(2)) => PendingSync,
            on_disconnected() => Offline,
        );
    }

    #[test]
    fn synced_only_when_connected_and_outbox_empty() {
        let mut t = SyncStatusTracker::new();
        // Offline wins over pending pushes.
        steps!(t;
            on_push_queued(id(1)) => Offline,
            on_push_queued(id(2)) => Offline,
            on_connected() => PendingSync,
            on_pull_complete() => PendingSync,
            on_push_acked(id(1)) => PendingSync,
        );
        assert_eq!(t.pending_count(), 1);
        steps!(t; on_push_acked(id(2)) => Synced);
    }

    #[test]
    fn pull_complete_confirms_and_remote_change_unconfirms() {
        let mut t = synced();
        steps!(t;
            on_remote_change() => Connected,
            on_pull_complete() => Synced,
        );
    }

    #[test]
    fn reconnect_needs_fresh_confirmation() {
        let mut t = synced();
        steps!(t;
            on_disconnected() => Offline,
            on_connected() => Connected,
        );
    }

    #[test]
    fn permanent_rejection_is_failure_not_sent() {
        let mut t = SyncStatusTracker::new();
        steps!(t;
            on_connected() => Connected,
            on_push_queued(id(1)) => PendingSync,
            on_push_rejected(id(1)) => SyncFailed,
        );
        assert_eq!(t.pending_count(), 0);
        assert_eq!(t.failed_count(), 1);
        // Later successes do not hide the failure until the app clears it.
        steps!(t;
            on_pull_complete() => SyncFailed,
            clear_failures() => Synced,
        );
    }

    #[test]
    fn fatal_connection_rejection_shows_failed_until_connected() {
        let mut t = SyncStatusTracker::new();
        steps!(t;
            on_connection_rejected() => SyncFailed,
            on_connected() => Connected,
        );
    }
}
