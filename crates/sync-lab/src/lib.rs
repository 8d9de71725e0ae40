//! The 0k-sync lab behind the `sync-stress` binary:
//!
//! - [`campaign`]: the stress campaign against a responder device (phases, verdict, reports);
//! - [`device`] and [`protocol`]: lab devices in a group, and what the campaign and the
//!   responder say to each other;
//! - [`impair`]: a user-space UDP impairment proxy (QUIC runs over UDP and this kernel has no
//!   `netem`);
//! - [`loadgen`]: many devices against one relay, and connection churn;
//! - [`bench`](mod@bench): the end-to-end relay benchmark against same-run baselines;
//! - [`soak`]: soak sampling of a relay process and its leak verdict;
//! - [`events`], [`report`] and [`stats`]: the campaign's event stream, reports and figures;
//! - [`values`]: human-written values of the command lines (durations, rates, probabilities).
//!
//! It drives the real relay and client over real QUIC on loopback (or across machines); it is
//! not part of the product's data path.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]
pub mod bench;
pub mod campaign;
pub mod device;
pub mod events;
pub mod impair;
pub mod loadgen;
pub mod protocol;
pub mod report;
pub mod soak;
pub mod stats;
pub mod values;
