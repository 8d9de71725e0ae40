//! The 0k-sync client: [`SyncClient`] (push, pull, subscribe, status, flush, close), the
//! [`Transport`] trait with the iroh QUIC transport ([`IrohTransport`]) and an in-process one
//! ([`MemoryTransport`]), and the device's local state [`Store`] (SQLite).
//!
//! It is the async shell around `sync-core`: the sans-IO connection state machine, outbox,
//! cursor tracker and status tracker make every decision; this crate owns the tasks, sockets,
//! clock and disk. Blobs are sealed and opened with `sync-crypto` on the device, so the relay
//! only ever sees ciphertext. It is not the relay (`sync-relay`), and it carries blobs up to the
//! relay's size limit only (no large-content transfer); apps and `sync-cli` sit on top of it.
//!
//! Guarantees:
//! - a push is durable in the outbox before it is reported queued, leaves it only when the
//!   relay acknowledges it (durable on the relay) or refuses it for good, and is re-sent with
//!   the same blob id after a reconnect or restart (the relay's push is idempotent);
//! - a refused push is never reported as queued or sent ([`ClientError`]);
//! - pulled blobs reach the app only after signature and AEAD verification; a bad blob, or a
//!   blob id served again under another cursor, is an [`IntegrityProblem`] in the pull result
//!   and a [`SyncEvent::Integrity`], never data;
//! - the resume cursor advances only over what was pulled and handed to the app, and this
//!   device's own pushes never make it skip blobs that other devices pushed earlier.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod client;
mod driver;
mod error;
mod frame_read;
mod integrity;
mod invite;
mod iroh_transport;
mod membership;
mod relay;
mod sequences;
mod store;
mod transport;
mod types;
mod watch;

#[cfg(test)]
mod tests;

pub use client::SyncClient;
pub use error::{ClientError, StoreError, TransportError};
pub use integrity::IntegrityProblem;
pub use invite::{InviteFetchError, fetch_invite};
pub use iroh_transport::{IrohConfig, IrohTransport, Liveness, self_hosted_endpoint};
pub use relay::{ResolveError, lookup_relay, resolve_relay};
pub use store::{
    Delivered, STORE_FILE_NAME, SeenDevice, SenderSeq, SeqGap, Settled, Store, StoreLocation,
    StoreSync, StoredPush,
};
pub use sync_core::{ConnectionStatus, GroupMaterial, InvitedGroup, SyncStatus};
pub use transport::{
    BoxFuture, MemoryTransport, Session, SessionCloser, SessionReader, SessionWriter, Transport,
};
pub use types::{
    Blob, ClientConfig, ClientOptions, ClientStatus, GroupChoice, MemberInfo, PullBatch, Receipt,
    SyncEvent,
};
pub use watch::{WatchEvent, WatchOptions, Watcher};

/// Re-exported so apps can consume [`SyncClient::subscribe`] without naming the crate.
pub use tokio_stream::{Stream, StreamExt};
