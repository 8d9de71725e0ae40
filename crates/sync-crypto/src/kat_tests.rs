//! Known-answer tests: fixed inputs, hard-coded outputs. A change to any label, layout or
//! primitive fails here.
//!
//! Policy: the values were computed once by this crate and confirmed by an independent
//! implementation, `kat/crosscheck.py` (Python `cryptography`: HKDF, Ed25519, X25519, Argon2id,
//! and ChaCha20-Poly1305 with a hand-written HChaCha20; the pure-Python `kyber-py` for
//! ML-KEM-768). Never edit a value to make a test pass: a deliberate schedule or format change
//! gets new `v2` labels / a new `SEAL_VERSION` or `ENVELOPE_VERSION`, new KATs next to these,
//! and a new cross-check run.

use sha2::{Digest, Sha256};
use sync_types::BlobId;

use crate::test_util::CountingRng;
use crate::*;

fn seq<const N: usize>(start: u8) -> [u8; N] {
    std::array::from_fn(|i| start.wrapping_add(i as u8))
}

/// Secret 00 01 02 … 1f.
fn kat_keys() -> GroupKeys {
    GroupKeys::derive(&GroupSecret::from_bytes(seq(0x00)))
}

/// Blob id b0 b1 … bf.
fn kat_blob() -> BlobId {
    BlobId::from_bytes(seq(0xb0))
}

/// Device seed 20 21 … 3f.
fn kat_device() -> DeviceKey {
    DeviceKey::from_secret_bytes(seq(0x20))
}

fn hex32(h: &str) -> [u8; 32] {
    hex::decode(h).unwrap().try_into().unwrap()
}

fn assert_hex(bytes: impl AsRef<[u8]>, expected: &str) {
    assert_eq!(hex::encode(bytes), expected);
}

const SYNC_KEY: &str = "ebc420e3a6c8afb0e5743f329a6af5b0ffe01ae9f6a6bcf51bafa66dc38a0f58";
const GROUP_ID: &str = "0bedb0c2595437dbdb2af45069a30152a472a4449ec79c1a32eb26bd5d9db58f";
const CONTENT_KEY: &str = "82fadad5f63d5486dfcc5ae95927b544482b2e6abe50bb8e77dcf4041af0f8b2";
const DEVICE_ID: &str = "29acbae141bccaf0b22e1a94d34d0bc7361e526d0bfe12c89794bc9322966dd7";
const HELLO_SIG: &str = "fa82b7e57c960a8c4efe04a1fb6b278573907d823dad0395138fa8a26a1d7ba4\
                         c8f0a4891460861906746f1152bb4928bcda13c6c5e0781eee0e159eda7c110d";
/// `seal(sync_key, group, device, blob, seq 1, b"hello 0k-sync")` with nonce 40 41 … 57 (the
/// bytes `CountingRng(0x40)` yields).
const SEALED: &str = "02\
                      00000000\
                      29acbae141bccaf0b22e1a94d34d0bc7361e526d0bfe12c89794bc9322966dd7\
                      0000000000000001\
                      404142434445464748494a4b4c4d4e4f5051525354555657\
                      c6306a9476d16036971eb7ff1d\
                      23d8fd167b5d3e402ea4a78663b8c1d7\
                      5cab7a6f8add4794f2b9f75c1d42c8abf6bb0180588a0bffa4918a42e1b6f970\
                      aa535b2d8981181ef84f407c8afc9dc61b230d24139e165edbb80355a04d4702";
/// The same blob in the first sealed format (no sequence number), as a build before version 2
/// wrote it: it still opens.
const SEALED_V1: &str = "01\
                      00000000\
                      29acbae141bccaf0b22e1a94d34d0bc7361e526d0bfe12c89794bc9322966dd7\
                      404142434445464748494a4b4c4d4e4f5051525354555657\
                      c6306a9476d16036971eb7ff1d09c96a76\
                      5bf43ea5eba9ddf85e779ddaad04ccfd\
                      022d2a243cf139b11dc60225182a3abae38155314be453e2a5cd6b890d853a55\
                      e125a80fe635ec2e42d94a2f8a379048c5b036c29fd2569cc7a35e08";
/// Argon2id("correct horse battery staple", salt 10 11 … 1f, 19 MiB, t=2, p=1).
const PASSPHRASE_SECRET: &str = "2a45fe290a3d07e80c1c9e1017ec44fc4f3c6456ceb21455c733900278f1c374";
/// Mailbox key for code "ABCD-EFGH-IJKL-MNOP".
const MAILBOX_KEY: &str = "49c38cb0a21e869290e5761a61f6fbf4b3facb71217bd84ffa7a9bc9b45db32e";

#[test]
fn kat_sync_key_is_epoch_zero_key() {
    let key = kat_keys().epoch_key(KeyEpoch(0)).unwrap();
    assert_eq!(key.epoch(), KeyEpoch(0));
    assert_hex(key.expose_bytes(), SYNC_KEY);
}

#[test]
fn kat_group_id_is_auth_public_key() {
    assert_hex(kat_keys().group_id().as_bytes(), GROUP_ID);
}

#[test]
fn kat_content_key() {
    let key = kat_keys().content_key(&kat_blob()).unwrap();
    assert_hex(key.expose_bytes(), CONTENT_KEY);
}

#[test]
fn kat_device_id() {
    assert_hex(kat_device().device_id().as_bytes(), DEVICE_ID);
}

#[test]
fn kat_hello_signature() {
    let keys = kat_keys();
    let challenge = HelloChallenge::new(
        &[0x11; 32],
        &[0x22; 32],
        &kat_device().device_id(),
        &keys.group_id(),
    );
    let sig = keys.sign_hello(&challenge);
    assert_hex(sig.0, HELLO_SIG);
    verify_hello(&keys.group_id(), &challenge, &sig).unwrap();
}

#[test]
fn kat_sealed_blob() {
    let keys = kat_keys();
    let sealed = seal(
        &mut CountingRng(0x40),
        &keys.epoch_key(KeyEpoch(0)).unwrap(),
        &keys.group_id(),
        &kat_device(),
        &kat_blob(),
        1,
        b"hello 0k-sync",
    )
    .unwrap();
    assert_hex(&sealed, SEALED);
    assert_eq!(sealed.len(), 13 + SEAL_OVERHEAD);
    // The hard-coded bytes also open (guards the reader as well as the writer).
    let opened = open(
        &keys,
        &keys.group_id(),
        &kat_blob(),
        &kat_device().device_id(),
        &hex::decode(SEALED).unwrap(),
    )
    .unwrap();
    assert_eq!(opened.plaintext, b"hello 0k-sync");
    assert_eq!(opened.seq, Some(1));
}

#[test]
fn kat_sealed_blob_in_the_first_format_still_opens() {
    let keys = kat_keys();
    let opened = open(
        &keys,
        &keys.group_id(),
        &kat_blob(),
        &kat_device().device_id(),
        &hex::decode(SEALED_V1).unwrap(),
    )
    .unwrap();
    assert_eq!(opened.plaintext, b"hello 0k-sync");
    assert_eq!(opened.seq, None);
}

#[test]
fn kat_group_secret_from_passphrase() {
    let descriptor = GroupDescriptor::Passphrase {
        params: KdfParams::OWASP_MIN,
        salt: seq(0x10),
    };
    let secret = descriptor
        .derive_secret("correct horse battery staple")
        .unwrap();
    assert_eq!(secret.expose_bytes(), &hex32(PASSPHRASE_SECRET));
}

#[test]
fn kat_mailbox_key() {
    // Normalization: case, `-` and spaces do not matter.
    let key = MailboxKey::from_code_half("abcd-efgh", "IJKL MNOP").unwrap();
    assert_hex(key.expose_bytes(), MAILBOX_KEY);
}

// ---------------------------------------------------------------------------------------------
// Hybrid KEM envelopes (X25519 + ML-KEM-768). Cross-checked by `kat/crosscheck.py` with Python
// `cryptography` (X25519, HKDF, ChaCha20-Poly1305) and the pure-Python `kyber-py` (ML-KEM-768).

/// Recipient device seed 60 61 … 7f.
fn kat_recipient() -> DeviceKey {
    DeviceKey::from_secret_bytes(seq(0x60))
}

/// Sender `kat_device()`, recipient `kat_recipient()`, group `GROUP_ID`, epoch 7.
fn kat_envelope_context() -> EnvelopeContext {
    EnvelopeContext {
        group: kat_keys().group_id(),
        epoch: KeyEpoch(7),
        sender: kat_device().device_id(),
        recipient: kat_recipient().device_id(),
    }
}

/// X25519 public key of `kat_recipient().kem_keypair()`.
const KEM_X25519_PK: &str = "5f95c5bf19892dc11ad4a0e12eebeca375bc81510c2613e0ebb6a2f2bce61e52";
/// SHA-256 of the ML-KEM-768 encapsulation key of `kat_recipient().kem_keypair()` (1184 bytes).
const KEM_MLKEM_EK_SHA256: &str =
    "6e1e5624e2e12334588103202830fa87118f46e11c59dc0b2d32ce9e1880359c";
/// `seal_envelope(CountingRng(0x40), recipient, kat_envelope_context(), 80 81 … 9f)`: X25519
/// ephemeral secret 40 41 … 5f, ML-KEM encapsulation randomness m = 60 61 … 7f. The envelope
/// is 1169 bytes: its SHA-256, and its first 32 bytes (version and most of the ephemeral key).
const ENVELOPE_SHA256: &str = "791160325225bc6c328940039949d29d047908316c0747cb554e0accf22fec77";
const ENVELOPE_PREFIX: &str = "0179a631eede1bf9c98f12032cdeadd0e7a079398fc786b88cc846ec89af85a5";

#[test]
fn kat_kem_public_key() {
    let public = kat_recipient().kem_keypair().public_key();
    let bytes = public.as_bytes();
    assert_eq!(bytes.len(), KEM_PUBLIC_KEY_LEN);
    assert_hex(&bytes[..32], KEM_X25519_PK);
    assert_hex(Sha256::digest(&bytes[32..]), KEM_MLKEM_EK_SHA256);
}

#[test]
fn kat_envelope() {
    let recipient = kat_recipient().kem_keypair();
    let payload: [u8; 32] = seq(0x80);
    let envelope = seal_envelope(
        &mut CountingRng(0x40),
        &recipient.public_key(),
        &kat_envelope_context(),
        &payload,
    )
    .unwrap();
    assert_eq!(envelope.len(), 32 + ENVELOPE_OVERHEAD);
    assert_hex(Sha256::digest(&envelope), ENVELOPE_SHA256);
    assert_hex(&envelope[..32], ENVELOPE_PREFIX);
    let opened = open_envelope(&recipient, &kat_envelope_context(), &envelope).unwrap();
    assert_eq!(opened.as_slice(), &payload);
}
