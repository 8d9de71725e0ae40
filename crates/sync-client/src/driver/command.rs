//! What the client handles ask of the driver, and how a batch of their requests is handled:
//! pushes accepted together are made durable in one store transaction.

use bytes::Bytes;
use sync_types::{BlobId, Cursor, DeviceId, RelayId};
use tokio::sync::oneshot;

use super::Driver;
use super::pull::{PendingPull, RoundReply};
use crate::error::ClientError;
use crate::store::StoredPush;
use crate::types::{Blob, PullBatch, Receipt};

/// How a push's caller wants to hear back.
pub(crate) enum PushReply {
    /// Once durable in the outbox.
    Durable(oneshot::Sender<Result<BlobId, ClientError>>),
    /// Once the relay acknowledged (or refused) it.
    Ack(oneshot::Sender<Result<Receipt, ClientError>>),
}

/// A request from a client handle.
pub(crate) enum Command {
    /// Queue a sealed push.
    Push {
        blob_id: BlobId,
        /// Its number in this device's sequence (sealed in it).
        seq: u64,
        payload: Bytes,
        ttl_secs: u32,
        created_ms: u64,
        reply: PushReply,
    },
    /// Pull everything not yet delivered.
    Pull {
        reply: oneshot::Sender<Result<Vec<Blob>, ClientError>>,
    },
    /// Pull everything after a cursor (own blobs included) without moving the resume cursor.
    PullAfter {
        after: Cursor,
        reply: oneshot::Sender<Result<Vec<Blob>, ClientError>>,
    },
    /// Pull everything not yet delivered; record the cursors only on `CommitPull`.
    PullUncommitted {
        reply: oneshot::Sender<Result<PullBatch, ClientError>>,
    },
    /// Record the cursors of a `PullUncommitted` batch the app has taken care of, and persist
    /// the resume cursor.
    CommitPull {
        relay: Option<RelayId>,
        ranges: Vec<(Cursor, Cursor)>,
        complete: bool,
        /// `(blob id, cursor)` of the blobs the app took.
        delivered: Vec<(BlobId, Cursor)>,
        senders: Vec<(DeviceId, u64, u64)>,
        reply: oneshot::Sender<Result<Cursor, ClientError>>,
    },
    /// Leave a sealed invite in the relay's mailbox.
    InvitePut {
        lookup_id: String,
        sealed: Vec<u8>,
        ttl_secs: u32,
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
    /// Register large content with the relay (quota check before its upload).
    RegisterContent {
        content: sync_types::ContentRef,
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
    /// A membership change or question.
    Membership(super::MembershipOp),
    /// Send `Bye`, close, stop.
    Close { reply: oneshot::Sender<()> },
}

impl Driver {
    pub(super) async fn on_commands(&mut self, batch: Vec<Command>) {
        let mut accepted: Vec<(StoredPush, u64, PushReply)> = Vec::new();
        for cmd in batch {
            match cmd {
                Command::Push {
                    blob_id,
                    seq,
                    payload,
                    ttl_secs,
                    created_ms,
                    reply,
                } => {
                    let push = StoredPush {
                        blob_id,
                        payload,
                        ttl_secs,
                        created_ms,
                    };
                    match self.accept_push(&push, reply) {
                        Some(reply) => accepted.push((push, seq, reply)),
                        None => self.seq_unused(seq),
                    }
                }
                Command::Pull { reply } => self.on_pull_request(PendingPull {
                    after: None,
                    reply: RoundReply::Record(reply),
                }),
                Command::PullAfter { after, reply } => self.on_pull_request(PendingPull {
                    after: Some(after),
                    reply: RoundReply::Reread(reply),
                }),
                Command::PullUncommitted { reply } => self.on_pull_request(PendingPull {
                    after: None,
                    reply: RoundReply::Batch(reply),
                }),
                Command::CommitPull {
                    relay,
                    ranges,
                    complete,
                    delivered,
                    senders,
                    reply,
                } => {
                    let result = self.commit_pull(relay, &ranges, complete, delivered, senders);
                    let _ = reply.send(result);
                }
                Command::InvitePut {
                    lookup_id,
                    sealed,
                    ttl_secs,
                    reply,
                } => self.on_invite_put(lookup_id, sealed, ttl_secs, reply),
                Command::RegisterContent { content, reply } => {
                    self.on_register_content(content, reply);
                }
                Command::Membership(op) => self.on_membership_op(op),
                Command::Close { reply } => {
                    self.commit_pushes(accepted);
                    self.shutdown(Some(reply)).await;
                    return;
                }
            }
        }
        self.commit_pushes(accepted);
    }
}
