//! Large content for 0k-sync: files and folders of any size, sealed on the device and delivered
//! verified, resumable, and even when the sender is offline.
//!
//! - [`chunk`]: content is cut into chunks, each sealed with XChaCha20-Poly1305 under a key
//!   derived from the group's epoch secret and the content id; nonces and associated data bind
//!   every chunk to its place, so chunks cannot be moved, swapped or dropped.
//! - [`store`]: the **ciphertext** is what gets hashed and stored: an iroh-blobs file store
//!   (BLAKE3 verified streaming), which checks every 16 KiB group of a transfer against the
//!   hash before it is written, and keeps what it verified when a transfer stops.
//! - [`descriptor`]: a small [`Descriptor`] (hash, sizes, chunking, name, media type, holders)
//!   travels through the relay as an ordinary sealed blob.
//! - [`node`]: serving content to the group's devices and fetching it from a device that holds
//!   it or from a relay's content store, resuming where a previous attempt stopped.
//! - [`ContentClient`]: all of it on top of a `SyncClient`: send a file or a folder, receive
//!   what a descriptor names.

pub mod chunk;
mod client;
pub mod descriptor;
mod error;
pub mod node;
pub mod store;

pub use client::{ContentClient, Received, SendError, SendOptions, Sent};
pub use descriptor::{Collection, ContentRef, Descriptor, Holder};
pub use error::ContentError;
pub use node::{ContentNode, FetchError, FetchReport, HolderFailure, STALL_LIMIT};
pub use store::{ContentStore, Held, Progress, SealParams};
