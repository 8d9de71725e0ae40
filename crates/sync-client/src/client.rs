//! [`SyncClient`]: the app's handle on one sync group through one relay.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use sync_core::{
    ConnectionStatus, Invite, Outbox, OutboxLimits, ShortCode, SyncStatusTracker, seal_for_mailbox,
};
use sync_crypto::{DeviceKey, seal};
use sync_types::{BlobId, Cursor, GroupId, unix_ms};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::{Stream, StreamExt};
use zeroize::Zeroizing;

use crate::driver::{
    Command, Driver, DriverParts, MembershipOp, PushReply, SharedKeys, blobs_senders,
};
use crate::error::{ClientError, StoreError};
use crate::store::Store;
use crate::types::{Blob, ClientConfig, ClientStatus, GroupChoice, PullBatch, Receipt, SyncEvent};
use sync_core::GroupMaterial;

fn os_seeded_rng() -> Result<ChaCha20Rng, StoreError> {
    let mut seed = Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut_slice()).map_err(|_| StoreError::Random)?;
    Ok(ChaCha20Rng::from_seed(*seed))
}

struct Inner {
    commands: mpsc::Sender<Command>,
    events: broadcast::Sender<SyncEvent>,
    status: watch::Receiver<ClientStatus>,
    keys: SharedKeys,
    group_id: GroupId,
    device: DeviceKey,
    ttl_secs: u32,
    rng: Mutex<ChaCha20Rng>,
    /// The sequence number of this device's next push in the group (shared with the driver,
    /// which stores the highest one used with the push).
    next_seq: Arc<AtomicU64>,
    driver: Mutex<Option<JoinHandle<()>>>,
}

/// A device's connection to one sync group through one relay: push, pull, subscribe.
///
/// Cheap to clone (an `Arc` inside). A background task keeps the session up (reconnecting with
/// backoff and jitter), re-sends unacknowledged pushes with their original blob ids, and keeps
/// the local store current. Dropping every clone closes the client like [`SyncClient::close`]
/// (without waiting).
#[derive(Clone)]
pub struct SyncClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SyncClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncClient")
            .field("device", &self.inner.device.device_id())
            .field("group", &self.inner.group_id)
            .finish_non_exhaustive()
    }
}

impl SyncClient {
    /// Opens the local store (creating the device key on first use), loads the outbox and
    /// starts the background task, then waits for the first connection attempt: it returns
    /// when connected, or when the relay could not be reached (the client then works offline
    /// and keeps retrying). Fails if the relay refuses this device for good (e.g. not a member
    /// of the group) or the store cannot be opened.
    pub async fn connect(config: ClientConfig) -> Result<SyncClient, ClientError> {
        let ClientConfig {
            store,
            transport,
            group,
            device_name,
            options,
        } = config;
        let mut store = Store::open(&store, options.store_sync)?;
        let device = store.device_key_or_create()?;
        // The name stays on this device (the CLI and apps show it); it is never sent.
        if let Some(name) = device_name {
            store.set_device_name(&name)?;
        }
        let group = match group {
            GroupChoice::Stored(id) => store.select_group(id.as_ref())?,
            GroupChoice::Use(material) => {
                let group = GroupMaterial {
                    descriptor: material.descriptor,
                    secret: material.secret,
                };
                store.save_group(&group)?;
                group
            }
            GroupChoice::Invited(invited) => {
                let group_id = store.save_group(&invited.group)?;
                if let Some(epoch) = invited.epoch.clone() {
                    store.add_membership(&group_id, &[], &[epoch])?;
                }
                store.note_joined_invite(&group_id, invited.invite_id)?;
                invited.group
            }
        };
        let mut group_keys = group.keys();
        let group_id = group_keys.group_id();
        for (epoch, secret) in store.epoch_secrets(&group_id)? {
            group_keys
                .add_epoch(epoch, secret)
                .map_err(|_| StoreError::Corrupt {
                    what: "epoch secret",
                })?;
        }
        let keys: SharedKeys = Arc::new(RwLock::new(group_keys));
        let next_seq = Arc::new(AtomicU64::new(store.own_seq(&group_id)?.saturating_add(1)));

        // The outbox holds at least everything stored, even if the limits shrank since.
        let stored = store.outbox(&group_id)?;
        let stored_bytes = stored.iter().map(|p| p.payload.len()).sum::<usize>();
        let limits = OutboxLimits {
            max_entries: options.outbox.max_entries.max(stored.len()),
            max_bytes: options.outbox.max_bytes.max(stored_bytes),
        };
        let mut outbox = Outbox::new(limits);
        let mut status = SyncStatusTracker::new();
        for push in stored {
            outbox
                .enqueue(push.blob_id, push.payload, push.ttl_secs)
                .map_err(|e| ClientError::Internal(format!("stored outbox: {e}")))?;
            status.on_push_queued(push.blob_id);
        }

        let (events, _) = broadcast::channel(options.event_capacity.max(16));
        let initial = ClientStatus {
            sync: status.status(),
            connection: ConnectionStatus::Disconnected,
            outbox_len: outbox.len(),
            resume_cursor: Cursor::ZERO,
            relay_max_cursor: Cursor::ZERO,
            device_id: device.device_id(),
            group_id,
            relay_rewound: None,
            wrong_relay: false,
        };
        let (status_tx, status_rx) = watch::channel(initial);
        let (cmd_tx, cmd_rx) = mpsc::channel(1024);
        let (first_tx, first_rx) = oneshot::channel();
        let ttl_secs = options.ttl_secs;
        let driver = Driver::new(DriverParts {
            store,
            transport,
            device: device.clone(),
            keys: Arc::clone(&keys),
            outbox,
            status,
            options,
            rng: os_seeded_rng()?,
            events: events.clone(),
            status_tx,
            commands: cmd_rx,
            first: first_tx,
            next_seq: Arc::clone(&next_seq),
        });
        let handle = tokio::spawn(driver.run());
        let client = SyncClient {
            inner: Arc::new(Inner {
                commands: cmd_tx,
                events,
                status: status_rx,
                keys,
                group_id,
                device,
                ttl_secs,
                rng: Mutex::new(os_seeded_rng()?),
                next_seq,
                driver: Mutex::new(Some(handle)),
            }),
        };
        match first_rx.await {
            Ok(Ok(())) => Ok(client),
            Ok(Err(e)) => {
                client.close().await;
                Err(e)
            }
            Err(_) => Err(ClientError::Closed),
        }
    }

    /// This device's id.
    pub fn device_id(&self) -> sync_types::DeviceId {
        self.inner.device.device_id()
    }

    /// The group's id.
    pub fn group_id(&self) -> GroupId {
        self.inner.group_id
    }

    /// The client's random generator.
    fn rng(&self) -> Result<MutexGuard<'_, ChaCha20Rng>, ClientError> {
        self.inner
            .rng
            .lock()
            .map_err(|_| ClientError::Internal("random generator poisoned".into()))
    }

    /// Sends the command `make` builds around a reply channel to the background task and
    /// waits for its answer.
    async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, ClientError>>) -> Command,
    ) -> Result<T, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .commands
            .send(make(tx))
            .await
            .map_err(|_| ClientError::Closed)?;
        rx.await.map_err(|_| ClientError::Closed)?
    }

    fn seal(&self, data: &[u8]) -> Result<(BlobId, u64, Bytes), ClientError> {
        let blob_id = self.new_blob_id()?;
        self.seal_as(blob_id, data)
    }

    /// A fresh blob id, time-ordered (so the relay's index of the group's blob ids grows at
    /// its end), for [`SyncClient::push_as`].
    pub fn new_blob_id(&self) -> Result<BlobId, ClientError> {
        let mut rng = self.rng()?;
        Ok(BlobId::time_ordered(&mut *rng, unix_ms() / 1000))
    }

    fn seal_as(&self, blob_id: BlobId, data: &[u8]) -> Result<(BlobId, u64, Bytes), ClientError> {
        let keys = self
            .inner
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let key = keys
            .epoch_key(keys.current_epoch())
            .ok_or_else(|| ClientError::Internal("no key for the current epoch".into()))?;
        let mut rng = self.rng()?;
        let seq = self.inner.next_seq.fetch_add(1, Ordering::SeqCst);
        let sealed = seal(
            &mut *rng,
            &key,
            &self.inner.group_id,
            &self.inner.device,
            &blob_id,
            seq,
            data,
        )?;
        Ok((blob_id, seq, Bytes::from(sealed)))
    }

    /// The command that queues the sealed push `blob_id` (number `seq`), answered through
    /// `reply`.
    fn push_command(&self, blob_id: BlobId, seq: u64, sealed: Bytes, reply: PushReply) -> Command {
        Command::Push {
            blob_id,
            seq,
            payload: sealed,
            ttl_secs: self.inner.ttl_secs,
            created_ms: unix_ms(),
            reply,
        }
    }

    /// Rotates the group's keys (this device must be an admin): a fresh epoch secret, sealed to
    /// every other current device in a hybrid KEM grant the relay keeps for it; new pushes are
    /// sealed under the new epoch. Returns the new epoch. If another admin's change was stored
    /// first, the rotation is rebuilt on it (a few times at most).
    pub async fn rotate(&self) -> Result<sync_crypto::KeyEpoch, ClientError> {
        self.revoke_devices(Vec::new()).await
    }

    /// Revokes `devices` (this device must be an admin): a rotation that leaves them out. The
    /// relay ends their sessions and refuses them from then on, and nothing sealed after this
    /// opens with their keys. What they already read stays read.
    pub async fn revoke(
        &self,
        devices: &[sync_types::DeviceId],
    ) -> Result<sync_crypto::KeyEpoch, ClientError> {
        self.revoke_devices(devices.to_vec()).await
    }

    async fn revoke_devices(
        &self,
        revoke: Vec<sync_types::DeviceId>,
    ) -> Result<sync_crypto::KeyEpoch, ClientError> {
        self.request(|reply| Command::Membership(MembershipOp::Rotate { revoke, reply }))
            .await
    }

    /// Makes `admins` the group's admins (this device must be one; each must be a current
    /// device of the group).
    pub async fn set_admins(&self, admins: &[sync_types::DeviceId]) -> Result<(), ClientError> {
        let admins = admins.to_vec();
        self.request(|reply| Command::Membership(MembershipOp::Admins { admins, reply }))
            .await
    }

    /// The group's devices, as the relay's records and enrollments say after checking them.
    pub async fn members(&self) -> Result<Vec<crate::MemberInfo>, ClientError> {
        self.request(|reply| Command::Membership(MembershipOp::Members { reply }))
            .await
    }

    /// The current key epoch past 0 and its secret, for an invite (a device joining a group that
    /// rotated needs them to say `Hello`); `None` at epoch 0, which the group secret gives.
    pub fn current_epoch_secret(
        &self,
    ) -> Option<(sync_crypto::KeyEpoch, sync_crypto::EpochSecret)> {
        let keys = self
            .inner
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let epoch = keys.current_epoch();
        if epoch == sync_crypto::KeyEpoch::INITIAL {
            return None;
        }
        keys.epoch_secret(epoch).map(|s| (epoch, s))
    }

    /// Every key epoch this device holds, oldest first (a device that joined without the
    /// group's history lacks the epochs before it joined).
    pub fn epochs(&self) -> Vec<sync_crypto::KeyEpoch> {
        self.inner
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .epochs()
            .collect()
    }

    /// The key epoch new pushes are sealed under.
    pub fn epoch(&self) -> sync_crypto::KeyEpoch {
        self.inner
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .current_epoch()
    }

    /// Seals `data`, stores it in the outbox (durable), sends it and waits for the relay's
    /// acknowledgement.
    ///
    /// Errors tell whether the data is still queued ([`ClientError::is_queued`]): `Offline`
    /// and `Deferred` pushes stay in the outbox and are sent automatically; `Rejected`,
    /// `TooLarge` and `OutboxFull` pushes are not queued and will never be sent.
    pub async fn push(&self, data: &[u8]) -> Result<Receipt, ClientError> {
        let (blob_id, seq, sealed) = self.seal(data)?;
        self.request(|tx| self.push_command(blob_id, seq, sealed, PushReply::Ack(tx)))
            .await
    }

    /// [`SyncClient::push`] under a blob id chosen beforehand ([`SyncClient::new_blob_id`]),
    /// e.g. one that large content was registered under. A blob id is used for one payload
    /// only: the relay refuses the same id with other bytes.
    pub async fn push_as(&self, blob_id: BlobId, data: &[u8]) -> Result<Receipt, ClientError> {
        let (blob_id, seq, sealed) = self.seal_as(blob_id, data)?;
        self.request(|tx| self.push_command(blob_id, seq, sealed, PushReply::Ack(tx)))
            .await
    }

    /// Registers large content with the relay before it is uploaded to the relay's content
    /// store: `hash` (BLAKE3 of the sealed content), its sealed `size`, plaintext `chunk_size`
    /// and `chunks`, under the blob id of the blob that will announce it (deleting that blob
    /// drops the content). A group over its content quota gets
    /// [`ClientError::Rejected`] with [`ErrorCode::QuotaExceeded`](sync_types::ErrorCode),
    /// a relay without a content store one with `NotSupported`.
    pub async fn register_content(
        &self,
        blob_id: BlobId,
        hash: [u8; 32],
        size: u64,
        chunk_size: u32,
        chunks: u32,
    ) -> Result<(), ClientError> {
        let content = sync_types::ContentRef {
            request_id: 0,
            blob_id,
            hash,
            size,
            chunk_size,
            chunks,
        };
        self.request(|reply| Command::RegisterContent { content, reply })
            .await
    }

    /// The key of large content `content_id` sealed under key `epoch`, if this device holds
    /// that epoch.
    pub fn content_key(
        &self,
        epoch: sync_crypto::KeyEpoch,
        content_id: &BlobId,
    ) -> Option<sync_crypto::ContentKey> {
        self.inner
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .content_key_in(epoch, content_id)
    }

    /// Seals `data` and returns its blob id as soon as it is durable in the outbox (for
    /// offline use); the relay's acknowledgement arrives later as [`SyncEvent::PushAcked`].
    pub async fn push_queued(&self, data: &[u8]) -> Result<BlobId, ClientError> {
        let (blob_id, seq, sealed) = self.seal(data)?;
        self.request(|tx| self.push_command(blob_id, seq, sealed, PushReply::Durable(tx)))
            .await
    }

    /// Pulls the blobs this device has not received yet (paging until the relay has no more,
    /// or until [`ClientOptions::pull_round_bytes`](crate::ClientOptions::pull_round_bytes) of
    /// blobs are collected: then a [`SyncEvent::BlobsAvailable`] says to pull again), verified
    /// and decrypted, in cursor order. Blobs that fail verification, or that
    /// the relay serves again under another cursor, are not returned: each is reported as a
    /// [`SyncEvent::Integrity`] (and in [`PullBatch::problems`] with
    /// [`pull_uncommitted`](Self::pull_uncommitted)). The resume cursor advances over
    /// what was returned (and this device's own pushes), and is persisted. Concurrent pulls
    /// are served one after the other and never return the same blob twice.
    pub async fn pull(&self) -> Result<Vec<Blob>, ClientError> {
        self.request(|reply| Command::Pull { reply }).await
    }

    /// Returns every blob after `after` (this device's own included), verified and decrypted,
    /// in cursor order, without moving the resume cursor: a re-read of history that does not
    /// change what [`SyncClient::pull`] returns next.
    pub async fn pull_after(&self, after: Cursor) -> Result<Vec<Blob>, ClientError> {
        self.request(|reply| Command::PullAfter { after, reply })
            .await
    }

    /// Pulls like [`SyncClient::pull`] but records nothing: the blobs come back in a
    /// [`PullBatch`], and the resume cursor moves over them only when the batch is handed to
    /// [`SyncClient::commit_pull`] — after the app has stored or shown them. If the app stops
    /// (or fails to hand them on) before committing, the next pull returns the same blobs:
    /// at-least-once delivery instead of a lost batch. Pull and commit one batch at a time (two
    /// uncommitted pulls start from the same cursor and return the same blobs).
    pub async fn pull_uncommitted(&self) -> Result<PullBatch, ClientError> {
        self.request(|reply| Command::PullUncommitted { reply })
            .await
    }

    /// Records a [`PullBatch`] as handled: the resume cursor advances over it and is persisted
    /// before this returns (the new resume cursor). Committing twice is harmless. A batch
    /// pulled from another relay than the current one records nothing (its blobs come again
    /// from this relay). Fails with [`ClientError::Store`] if the cursor could not be stored.
    pub async fn commit_pull(&self, batch: &PullBatch) -> Result<Cursor, ClientError> {
        self.request(|reply| Command::CommitPull {
            relay: batch.relay,
            ranges: batch.ranges.clone(),
            complete: batch.complete,
            delivered: batch.blobs.iter().map(|b| (b.blob_id, b.cursor)).collect(),
            senders: blobs_senders(&batch.blobs),
            reply,
        })
        .await
    }

    /// Seals `invite` under `code` (Argon2id on the code's second half, so the relay cannot
    /// open it) and leaves it in the relay's invite mailbox under the code's lookup id, for as
    /// long as the invite has left to live (at least a second). Needs a session:
    /// [`ClientError::NotConnected`] otherwise. The relay refuses with
    /// [`ClientError::Rejected`] (`Conflict` if the lookup id is taken, `TtlTooLong` beyond its
    /// maximum).
    pub async fn put_invite(&self, invite: &Invite, code: &ShortCode) -> Result<(), ClientError> {
        // Draw the randomness under the lock, then run Argon2id off the async workers.
        let mut seed = Zeroizing::new([0u8; 32]);
        {
            let mut rng = self.rng()?;
            rand_core::Rng::fill_bytes(&mut *rng, seed.as_mut_slice());
        }
        let (for_kdf, code_for_kdf) = (invite.clone(), code.clone());
        let sealed = tokio::task::spawn_blocking(move || {
            let mut rng = ChaCha20Rng::from_seed(*seed);
            seal_for_mailbox(&for_kdf, &code_for_kdf, &mut rng)
        })
        .await
        .map_err(|e| ClientError::Internal(format!("invite sealing task failed: {e}")))??;
        let left_ms = invite.expires_at_ms().saturating_sub(unix_ms());
        let ttl_secs = u32::try_from(left_ms.div_ceil(1000).max(1)).unwrap_or(u32::MAX);
        self.request(|reply| Command::InvitePut {
            lookup_id: code.lookup_id().to_string(),
            sealed,
            ttl_secs,
            reply,
        })
        .await
    }

    /// Events from now on: arrivals, acknowledgements, refusals, status and connection
    /// changes. A subscriber that falls behind gets [`SyncEvent::Lagged`].
    pub fn subscribe(&self) -> impl Stream<Item = SyncEvent> + Send + Unpin + 'static {
        BroadcastStream::new(self.inner.events.subscribe()).map(|r| match r {
            Ok(event) => event,
            Err(BroadcastStreamRecvError::Lagged(missed)) => SyncEvent::Lagged { missed },
        })
    }

    /// The current state (no round trip to the background task).
    pub fn status(&self) -> ClientStatus {
        self.inner.status.borrow().clone()
    }

    /// Waits until the outbox is empty (every push acknowledged or refused for good), or
    /// `timeout` passes ([`ClientError::Timeout`]).
    pub async fn flush(&self, timeout: Duration) -> Result<(), ClientError> {
        let mut status = self.inner.status.clone();
        let wait = status.wait_for(|s| s.outbox_len == 0);
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => {
                if self.inner.status.borrow().outbox_len == 0 {
                    Ok(())
                } else {
                    Err(ClientError::Closed)
                }
            }
            Err(_) => Err(ClientError::Timeout { blob_id: None }),
        }
    }

    /// Sends `Bye`, closes the session and the transport, and stops the background task.
    /// Unacknowledged pushes stay in the outbox for the next run. Idempotent.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self
            .inner
            .commands
            .send(Command::Close { reply: tx })
            .await
            .is_ok()
        {
            let _ = rx.await;
        }
        let handle = self.inner.driver.lock().ok().and_then(|mut h| h.take());
        if let Some(handle) = handle {
            let _ = handle.await;
        }
    }
}
