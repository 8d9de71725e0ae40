//! Fan-out of notifications: which sessions are open in which group, and how a `Notify` reaches
//! them without ever blocking the pusher.
//!
//! Each session has a bounded queue of outgoing frames drained by its writer task. A
//! notification is offered with `try_send`; when the queue is full (a slow reader), it is
//! folded into one pending `Notify` slot that keeps only the highest cursor, and the writer is
//! woken to send it after the frames already queued. So memory per session is bounded by the
//! queue plus one `Notify`, and a slow device costs the others nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use sync_types::{GroupId, Message, Notify};
use tokio::sync::mpsc::{self, error::TrySendError};

use crate::metrics::Metrics;

/// What a session's writer task is asked to do.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// Send this frame.
    Frame(Message),
    /// Send what is queued before this, finish the stream and stop.
    Close,
}

/// A session as the hub sees it: where to put its notifications.
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) session: u64,
    pub(crate) tx: mpsc::Sender<Outbound>,
    coalesced: Mutex<Option<Notify>>,
    pub(crate) wake: tokio::sync::Notify,
}

impl Link {
    pub(crate) fn new(session: u64, tx: mpsc::Sender<Outbound>) -> Self {
        Self {
            session,
            tx,
            coalesced: Mutex::new(None),
            wake: tokio::sync::Notify::new(),
        }
    }

    /// Queues `n` if there is room, else keeps it (or a higher one) for the writer. Never waits.
    pub(crate) fn offer(&self, n: &Notify, metrics: &Metrics) {
        match self
            .tx
            .try_send(Outbound::Frame(Message::Notify(n.clone())))
        {
            Ok(()) => metrics.notifies_total.inc(),
            Err(TrySendError::Full(_)) => {
                {
                    let mut slot = self
                        .coalesced
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    if slot.as_ref().is_none_or(|p| p.cursor < n.cursor) {
                        *slot = Some(n.clone());
                    }
                }
                metrics.notifies_coalesced_total.inc();
                self.wake.notify_one();
            }
            Err(TrySendError::Closed(_)) => {}
        }
    }

    /// The pending coalesced notification, if any (taken: the slot is empty afterwards).
    pub(crate) fn take_coalesced(&self) -> Option<Notify> {
        self.coalesced
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// Open sessions by group.
#[derive(Debug, Default)]
pub(crate) struct Hub {
    groups: Mutex<HashMap<GroupId, Vec<Arc<Link>>>>,
}

impl Hub {
    pub(crate) fn register(&self, group: GroupId, link: Arc<Link>) {
        self.groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(group)
            .or_default()
            .push(link);
    }

    pub(crate) fn unregister(&self, group: &GroupId, session: u64) {
        let mut groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(links) = groups.get_mut(group) {
            links.retain(|l| l.session != session);
            if links.is_empty() {
                groups.remove(group);
            }
        }
    }

    /// Offers `n` to every session of `group` except `from`.
    pub(crate) fn notify(&self, group: &GroupId, from: u64, n: &Notify, metrics: &Metrics) {
        let groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(links) = groups.get(group) {
            for link in links.iter().filter(|l| l.session != from) {
                link.offer(n, metrics);
            }
        }
    }

    /// Groups with at least one open session.
    pub(crate) fn active_groups(&self) -> usize {
        self.groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use sync_types::{BlobId, Cursor, DeviceId};

    use super::*;

    fn notify(cursor: u64) -> Notify {
        Notify {
            cursor: Cursor::new(cursor),
            blob_id: BlobId::from_bytes([cursor as u8; 16]),
            sender: DeviceId::from_bytes([1; 32]),
            size: 10,
        }
    }

    #[tokio::test]
    async fn full_queue_coalesces_to_the_highest_cursor_and_never_blocks() {
        let metrics = Metrics::default();
        let hub = Hub::default();
        let group = GroupId::from_bytes([7; 32]);
        let (tx_a, _rx_a) = mpsc::channel(8);
        let (tx_b, mut rx_b) = mpsc::channel(2);
        hub.register(group, Arc::new(Link::new(1, tx_a)));
        let b = Arc::new(Link::new(2, tx_b));
        hub.register(group, Arc::clone(&b));

        // Session 1 pushes 10 blobs; session 2 never reads.
        for c in 1..=10 {
            hub.notify(&group, 1, &notify(c), &metrics);
        }
        assert_eq!(metrics.notifies_total.get(), 2);
        assert_eq!(metrics.notifies_coalesced_total.get(), 8);
        let mut got = Vec::new();
        while let Ok(Outbound::Frame(Message::Notify(n))) = rx_b.try_recv() {
            got.push(n.cursor.get());
        }
        assert_eq!(got, [1, 2]);
        assert_eq!(b.take_coalesced().map(|n| n.cursor.get()), Some(10));
        assert_eq!(b.take_coalesced(), None);
        // The pusher's own session got nothing.
        assert_eq!(hub.active_groups(), 1);
        hub.unregister(&group, 1);
        hub.unregister(&group, 2);
        assert_eq!(hub.active_groups(), 0);
    }
}
