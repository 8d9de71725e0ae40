//! What the app hears from the driver: events, and the status snapshot with the rules that
//! make its user-facing part.

use sync_core::{ConnectionStatus, SyncStatusTracker};
use tokio::sync::{broadcast, watch};

use super::Driver;
use crate::types::{ClientStatus, SyncEvent};

/// What the driver tells the app: events, the status snapshot, and the rules that make the
/// user-facing status.
pub(super) struct Reports {
    /// The rules of the user-facing status.
    pub(super) sync: SyncStatusTracker,
    /// The connection state as the state machine last reported it.
    pub(super) connection: ConnectionStatus,
    events: broadcast::Sender<SyncEvent>,
    status_tx: watch::Sender<ClientStatus>,
    /// The snapshot last published.
    last: Option<ClientStatus>,
}

impl Reports {
    pub(super) fn new(
        sync: SyncStatusTracker,
        events: broadcast::Sender<SyncEvent>,
        status_tx: watch::Sender<ClientStatus>,
    ) -> Self {
        Self {
            sync,
            connection: ConnectionStatus::Disconnected,
            events,
            status_tx,
            last: None,
        }
    }

    pub(super) fn emit(&self, event: SyncEvent) {
        // No subscribers is fine.
        let _ = self.events.send(event);
    }

    /// Publishes `status` if it changed; an event too if the user-facing part changed.
    pub(super) fn publish(&mut self, status: ClientStatus) {
        if self.last.as_ref() == Some(&status) {
            return;
        }
        let changed_for_user = self
            .last
            .as_ref()
            .is_none_or(|s| s.sync != status.sync || s.connection != status.connection);
        self.last = Some(status.clone());
        self.status_tx.send_replace(status.clone());
        if changed_for_user {
            self.emit(SyncEvent::StatusChanged(status));
        }
    }
}

impl Driver {
    /// Publishes the current status snapshot (if it changed).
    pub(super) fn publish_status(&mut self) {
        let status = ClientStatus {
            sync: self.reports.sync.status(),
            connection: self.reports.connection.clone(),
            outbox_len: self.session.outbox().len(),
            resume_cursor: self.pulls.tracker.resume_cursor(),
            relay_max_cursor: self.session.relay_max(),
            device_id: self.me.device_id,
            group_id: self.me.group_id,
            relay_rewound: self.pulls.rewound,
            wrong_relay: self.io.wrong_relay,
        };
        self.reports.publish(status);
    }
}
