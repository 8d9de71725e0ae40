//! The 0k-sync lab behind the `sync-stress` binary: a responder device, the stress campaign and
//! its reports, a user-space UDP impairment proxy (QUIC runs over UDP and this kernel has no
//! `netem`), multi-client load, soak sampling of a relay process, and the end-to-end relay
//! benchmark ([`bench`](mod@bench)).
//!
//! It drives the real relay and client over real QUIC on loopback (or across machines); it is
//! not part of the product's data path.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]
pub mod bench;
pub mod device;
pub mod events;
pub mod impair;
pub mod loadgen;
pub mod protocol;
pub mod report;
pub mod soak;
pub mod stats;
