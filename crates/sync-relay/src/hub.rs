//! Fan-out of notifications: which sessions are open in which group, and how the pushes of a
//! committed batch reach them without ever blocking anyone.
//!
//! Sessions are listed per group: a map of groups under a read-write lock, each group with its
//! own lock over its sessions. Announcing a push takes the map's lock only to find its group,
//! then walks that group's sessions alone, so a push never walks or locks another group's
//! sessions, and registering a session locks the map for writing only when its group is new.
//! A notification is offered to each session's [`Outbox`] without waiting (a full queue folds it
//! into one pending `Notify`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use sync_types::{DeviceId, GroupChanged, GroupId, Message, Notify};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::storage::CommittedPush;

/// A session as the hub sees it: its device and where to put its notifications.
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) session: u64,
    pub(crate) device: DeviceId,
    pub(crate) outbox: Arc<Outbox>,
    /// Cancelled when a rotation revokes the device: its session ends.
    pub(crate) revoked: CancellationToken,
}

/// The open sessions of one group.
#[derive(Debug, Default)]
struct GroupSessions {
    links: RwLock<Vec<Arc<Link>>>,
}

/// Open sessions by group.
#[derive(Debug, Default)]
pub(crate) struct Hub {
    groups: RwLock<HashMap<GroupId, Arc<GroupSessions>>>,
    /// Groups that had a session since [`Hub::take_seen`] was last called.
    seen: Mutex<HashSet<GroupId>>,
}

impl Hub {
    pub(crate) fn register(&self, group: GroupId, link: Arc<Link>) {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(group);
        // Lock order everywhere: the map, then a group's list.
        {
            let groups = self.groups.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(sessions) = groups.get(&group) {
                sessions
                    .links
                    .write()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(link);
                return;
            }
        }
        self.groups
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(group)
            .or_default()
            .links
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(link);
    }

    pub(crate) fn unregister(&self, group: &GroupId, session: u64) {
        let mut groups = self.groups.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(sessions) = groups.get(group) {
            let mut links = sessions
                .links
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            links.retain(|l| l.session != session);
            if links.is_empty() {
                drop(links);
                groups.remove(group);
            }
        }
    }

    /// Offers a `Notify` for each committed push to every session of its group, except the
    /// sessions of the device that pushed it (a device ignores notifications of its own blobs).
    pub(crate) fn announce(&self, pushes: &[CommittedPush], metrics: &Metrics) {
        for run in pushes.chunk_by(|a, b| a.group == b.group) {
            let Some(first) = run.first() else {
                continue;
            };
            let sessions = self
                .groups
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&first.group)
                .cloned();
            let Some(sessions) = sessions else {
                continue;
            };
            let links = sessions
                .links
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            for p in run {
                let n = Notify {
                    cursor: p.cursor,
                    blob_id: p.blob_id,
                    sender: p.sender,
                    size: p.size,
                };
                for link in links.iter().filter(|l| l.device != p.sender) {
                    link.outbox.offer(&n, metrics);
                }
            }
        }
    }

    /// Tells the group's sessions that its membership changed, except session `except` (the
    /// one that changed it, answered directly): sessions of `revoked` devices end; the others
    /// get a `GroupChanged` if their queue has room (one that misses it learns at its next
    /// push, refused under the old epoch, or its next session).
    pub(crate) fn group_changed(
        &self,
        group: &GroupId,
        changed: &GroupChanged,
        revoked: &[DeviceId],
        except: u64,
        metrics: &Metrics,
    ) {
        let sessions = self
            .groups
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(group)
            .cloned();
        let Some(sessions) = sessions else {
            return;
        };
        let msg = Message::GroupChanged(changed.clone());
        for link in sessions
            .links
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            if revoked.contains(&link.device) {
                link.revoked.cancel();
            } else if link.session != except {
                link.outbox.offer_message(&msg, metrics);
            }
        }
    }

    /// The groups with at least one open session.
    pub(crate) fn groups(&self) -> Vec<GroupId> {
        self.groups
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .copied()
            .collect()
    }

    /// Whether the group has an open session here.
    pub(crate) fn has_sessions(&self, group: &GroupId) -> bool {
        self.groups
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(group)
    }

    /// Whether `device` has a session open in the group here.
    pub(crate) fn has_device(&self, group: &GroupId, device: &DeviceId) -> bool {
        let groups = self.groups.read().unwrap_or_else(PoisonError::into_inner);
        groups.get(group).is_some_and(|sessions| {
            sessions
                .links
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .any(|l| l.device == *device)
        })
    }

    /// Groups with at least one open session.
    pub(crate) fn active_groups(&self) -> usize {
        self.groups
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Groups that had a session since the last call (those open now included).
    pub(crate) fn take_seen(&self) -> Vec<GroupId> {
        let mut seen =
            std::mem::take(&mut *self.seen.lock().unwrap_or_else(PoisonError::into_inner));
        seen.extend(
            self.groups
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .keys()
                .copied(),
        );
        seen.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use sync_types::{BlobId, Cursor, FrameCodec, Message};

    use super::*;
    use crate::outbox::Outbound;

    fn push(group: GroupId, cursor: u64, sender: u8) -> CommittedPush {
        CommittedPush {
            group,
            cursor: Cursor::new(cursor),
            blob_id: BlobId::from_bytes([cursor as u8; 16]),
            sender: DeviceId::from_bytes([sender; 32]),
            size: 10,
        }
    }

    fn link(
        session: u64,
        device: u8,
        frames: u32,
    ) -> (Arc<Link>, tokio::sync::mpsc::Receiver<Outbound>) {
        let (outbox, rx) = Outbox::new(frames, 1 << 20, FrameCodec::new(1 << 20));
        let link = Link {
            session,
            device: DeviceId::from_bytes([device; 32]),
            outbox,
            revoked: CancellationToken::new(),
        };
        (Arc::new(link), rx)
    }

    #[tokio::test]
    async fn full_queue_coalesces_to_the_highest_cursor_and_never_blocks() {
        let metrics = Metrics::default();
        let hub = Hub::default();
        let group = GroupId::from_bytes([7; 32]);
        let (a, _rx_a) = link(1, 1, 8);
        let (b, mut rx_b) = link(2, 2, 2);
        hub.register(group, a);
        hub.register(group, Arc::clone(&b));

        // Device 1 pushes 10 blobs; session 2 never reads.
        let pushes: Vec<_> = (1..=10).map(|c| push(group, c, 1)).collect();
        hub.announce(&pushes, &metrics);
        assert_eq!(metrics.notifies_total.get(), 2);
        assert_eq!(metrics.notifies_coalesced_total.get(), 8);
        let codec = FrameCodec::new(1 << 20);
        let mut got = Vec::new();
        while let Ok(Outbound::Frame(f)) = rx_b.try_recv() {
            let mut buf = bytes::BytesMut::from(&f.bytes[..]);
            if let Ok(Some(Message::Notify(n))) = codec.decode(&mut buf) {
                got.push(n.cursor.get());
            }
        }
        assert_eq!(got, [1, 2]);
        assert_eq!(b.outbox.take_coalesced().map(|n| n.cursor.get()), Some(10));
        assert_eq!(b.outbox.take_coalesced(), None);
        // The pusher's own session got nothing.
        assert_eq!(hub.active_groups(), 1);
        hub.unregister(&group, 1);
        hub.unregister(&group, 2);
        assert_eq!(hub.active_groups(), 0);
    }

    #[tokio::test]
    async fn a_push_reaches_only_its_own_group_and_seen_groups_are_reported_once() {
        let metrics = Metrics::default();
        let hub = Hub::default();
        let (g1, g2) = (GroupId::from_bytes([1; 32]), GroupId::from_bytes([2; 32]));
        let (in_g1, mut rx1) = link(1, 1, 8);
        let (in_g2, mut rx2) = link(2, 2, 8);
        hub.register(g1, in_g1);
        hub.register(g2, in_g2);
        hub.announce(&[push(g1, 1, 9), push(g1, 2, 9)], &metrics);
        assert!(matches!(rx1.try_recv(), Ok(Outbound::Frame(_))));
        assert!(matches!(rx1.try_recv(), Ok(Outbound::Frame(_))));
        assert!(rx2.try_recv().is_err(), "the other group hears nothing");

        let mut seen = hub.take_seen();
        seen.sort_by_key(|g| *g.as_bytes());
        assert_eq!(seen, [g1, g2]);
        hub.unregister(&g1, 1);
        // Still open: g2 is seen again; g1 had no session since.
        assert_eq!(hub.take_seen(), [g2]);
    }
}
