//! Cryptography of 0k-sync: the group key schedule, passphrase groups (Argon2id), blob sealing
//! (XChaCha20-Poly1305 + Ed25519), Hello membership proofs, the invite mailbox, and the
//! operator admission tokens of a relay that admits only devices its operator let in.
//!
//! It is not a protocol or a transport: no I/O, no clock, no async runtime. RNGs are
//! parameters. It sits under `sync-core` and the client (which seal and open blobs) and under
//! the relay (which only verifies Hello signatures); it depends on `sync-types` for ids.
//!
//! Why its own crate: auditability. One small crate holds every key and every primitive, with
//! its own known-answer tests, so a reviewer reads one place to check the whole key schedule
//! and wire format of sealed data. The relay can depend on it for Hello verification without
//! pulling in the client, and `sync-types` stays pure data.
//!
//! Sealed blob format: documented on [`seal`] and in `seal.rs`; fixed overhead [`SEAL_OVERHEAD`].
//!
//! ```
//! use rand_chacha::ChaCha20Rng;
//! use rand_core::SeedableRng;
//! use sync_crypto::{DeviceKey, GroupKeys, GroupSecret, HelloChallenge, open, seal, verify_hello};
//! use sync_types::BlobId;
//!
//! let mut rng = ChaCha20Rng::seed_from_u64(0); // any CryptoRng; seeded here for the example
//! let keys = GroupKeys::derive(&GroupSecret::random(&mut rng));
//! let device = DeviceKey::random(&mut rng);
//! let group = keys.group_id();
//!
//! // Membership proof for the relay, bound to one connection.
//! let hello = HelloChallenge::new(&[7; 32], &[8; 32], &device.device_id(), &group);
//! verify_hello(&group, &hello, &keys.sign_hello(&hello)).unwrap();
//!
//! // Seal on one device, open on another that holds the same group keys.
//! let blob = BlobId::random(&mut rng);
//! let key = keys.epoch_key(keys.current_epoch()).unwrap();
//! // This device's first blob in the group: sequence number 1.
//! let sealed = seal(&mut rng, &key, &group, &device, &blob, 1, b"note").unwrap();
//! let opened = open(&keys, &group, &blob, &device.device_id(), &sealed).unwrap();
//! assert_eq!(opened.plaintext, b"note");
//! assert_eq!(opened.seq, Some(1));
//! ```
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
// Tests state their expectations with unwrap; library code (above) may not.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod admission;
mod device;
mod error;
mod hello;
mod kdf;
mod kem;
mod mailbox;
mod membership;
mod schedule;
mod seal;
mod secrets;

#[cfg(test)]
mod kat_tests;
#[cfg(test)]
mod test_util;

pub use admission::{
    ADMISSION_TOKEN_VERSION, AdmissionToken, MAX_TOKEN_BYTES, MAX_TOKEN_GROUPS, OperatorKey,
    OperatorPublicKey, TokenClaims, TokenError, TokenScope, verify_token,
};
pub use device::DeviceKey;
pub use error::{CryptoError, OpenError};
pub use hello::{HELLO_TRANSCRIPT_LEN, HelloChallenge, HelloSignature, verify_hello};
pub use kdf::{GroupDescriptor, KdfParams};
pub use kem::{
    ENVELOPE_OVERHEAD, ENVELOPE_VERSION, EnvelopeContext, KEM_PUBLIC_KEY_LEN, KemKeypair,
    KemPublicKey, open_envelope, seal_envelope,
};
pub use mailbox::{MAILBOX_OVERHEAD, MailboxKey, open_mailbox, seal_mailbox};
pub use membership::{
    Applied, Change, Enrollment, GrantError, GroupRecord, GroupState, MAX_ENROLLMENT_BYTES,
    MAX_GRANT_EPOCHS, MAX_MEMBERS, MAX_NAME, MAX_RECORD_BYTES, MAX_SEALED_NAME, MembershipError,
    open_grant, seal_grant,
};
pub use schedule::{ContentKey, EpochKey, GroupKeys, KeyEpoch};
pub use seal::{Opened, SEAL_OVERHEAD, SEAL_VERSION, open, seal};
pub use secrets::{EpochSecret, GroupSecret};
