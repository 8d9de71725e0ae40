//! Wire format of 0k-sync: identifiers, messages, error codes and the frame codec.
//!
//! This crate is pure data: no I/O, no async runtime, no cryptography. Every byte that travels
//! between a device and a relay is defined here, and every decoder here returns a typed error on
//! bad input instead of panicking.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod ids;

pub use ids::{BlobId, Cursor, DeviceId, GroupId, IdParseError};
