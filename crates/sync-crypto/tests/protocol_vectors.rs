//! The key-schedule, Hello, sealing, passphrase and mailbox vectors of `docs/PROTOCOL.md`
//! checked against this crate: inputs are read from the document, outputs computed by the code
//! and compared with the document. Intermediate values the API does not expose (the auth seed,
//! the AEAD associated data, the signed message, the mailbox salt) are checked by using them:
//! the document's value must reproduce what the code produced.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{Key, KeyInit, XChaCha20Poly1305, XNonce};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sync_crypto::*;
use sync_testkit::doc_vectors::{FixedBytes, Vectors, hex};
use sync_types::{BlobId, DeviceId, GroupId};

/// Version, epoch, sender, sequence number and nonce: the bytes before the ciphertext of a
/// sealed blob.
const SEALED_HEADER_LEN: usize = 1 + 4 + 32 + 8 + 24;

/// Compares a computed value with the document's.
fn assert_doc(v: &Vectors, name: &str, computed: &[u8]) {
    assert_eq!(
        hex(computed),
        hex(&v.bytes(name)),
        "{name}: the document differs from the code"
    );
}

fn group_keys(v: &Vectors) -> GroupKeys {
    GroupKeys::derive(&GroupSecret::from_bytes(v.array("keys.group_secret")))
}

fn key_schedule(v: &Vectors) {
    let keys = group_keys(v);
    let sync_key = keys.epoch_key(KeyEpoch::INITIAL).unwrap();
    assert_doc(v, "keys.sync_key", sync_key.expose_bytes());
    assert_doc(v, "keys.group_id", keys.group_id().as_bytes());
    // The auth seed is private to the schedule: its public key must be the group id, and it
    // must sign exactly as the group keys do (Ed25519 signatures are deterministic).
    let auth = SigningKey::from_bytes(&v.array("keys.auth_seed"));
    assert_eq!(
        auth.verifying_key().to_bytes(),
        *keys.group_id().as_bytes(),
        "keys.auth_seed: its public key is not the group id"
    );
    let blob = BlobId::from_bytes(v.array("keys.content_blob_id"));
    assert_doc(
        v,
        "keys.content_key",
        keys.content_key(&blob).unwrap().expose_bytes(),
    );

    let device = DeviceKey::from_secret_bytes(v.array("device.secret_key"));
    assert_doc(v, "device.id", device.device_id().as_bytes());
}

fn hello_signature(v: &Vectors) {
    let keys = group_keys(v);
    let group = GroupId::from_bytes(v.array("hello.group_id"));
    let challenge = HelloChallenge::new(
        &v.array("hello.binding"),
        &v.array("hello.relay_id"),
        &DeviceId::from_bytes(v.array("hello.device")),
        &group,
    );
    assert_doc(v, "hello.transcript", challenge.as_bytes());
    let sig = keys.sign_hello(&challenge);
    assert_doc(v, "hello.signature", &sig.0);
    verify_hello(
        &group,
        &challenge,
        &HelloSignature(v.array("hello.signature")),
    )
    .unwrap();
    let auth = SigningKey::from_bytes(&v.array("keys.auth_seed"));
    assert_eq!(
        auth.sign(challenge.as_bytes()).to_bytes(),
        sig.0,
        "keys.auth_seed does not sign like the group auth key"
    );
}

fn sealed_blob(v: &Vectors) {
    let keys = group_keys(v);
    let group = GroupId::from_bytes(v.array("seal.group_id"));
    assert_eq!(
        keys.group_id(),
        group,
        "seal.group_id is the group of keys.*"
    );
    let epoch = KeyEpoch(v.u32("seal.epoch"));
    let key = keys.epoch_key(epoch).expect("the document's epoch exists");
    assert_doc(v, "seal.key", key.expose_bytes());
    let device = DeviceKey::from_secret_bytes(v.array("seal.sender_secret_key"));
    let blob = BlobId::from_bytes(v.array("seal.blob_id"));
    let plaintext = v.text("seal.plaintext");
    let nonce: [u8; 24] = v.array("seal.nonce");

    let mut rng = FixedBytes::new(nonce.to_vec());
    let seq = u64::from(v.u32("seal.seq"));
    let sealed = seal(
        &mut rng,
        &key,
        &group,
        &device,
        &blob,
        seq,
        plaintext.as_bytes(),
    )
    .unwrap();
    assert!(rng.is_spent(), "sealing draws exactly the nonce");
    assert_doc(v, "seal.sealed", &sealed);
    assert_eq!(sealed.len(), plaintext.len() + SEAL_OVERHEAD);

    let doc_sealed = v.bytes("seal.sealed");
    let opened = open(&keys, &group, &blob, &device.device_id(), &doc_sealed).unwrap();
    assert_eq!(opened.plaintext, plaintext.as_bytes());
    assert_eq!(opened.epoch, epoch);
    assert_eq!(opened.seq, Some(seq));

    // The document's AAD authenticates the ciphertext the code wrote.
    let (signed, sig) = doc_sealed.split_at(doc_sealed.len() - 64);
    let cipher = XChaCha20Poly1305::new(<&Key>::from(key.expose_bytes()));
    let aad = v.bytes("seal.aad");
    let decrypted = cipher
        .decrypt(
            <&XNonce>::from(&nonce),
            Payload {
                msg: &signed[SEALED_HEADER_LEN..],
                aad: &aad,
            },
        )
        .expect("seal.aad is the associated data the code used");
    assert_eq!(decrypted, plaintext.as_bytes());
    // The document's signed message is what the sender's signature covers.
    let signed_message = v.bytes("seal.signed_message");
    assert!(
        signed_message.ends_with(signed),
        "seal.signed_message ends with the blob before its signature"
    );
    let sender = VerifyingKey::from_bytes(device.device_id().as_bytes()).unwrap();
    let signature = Signature::from_bytes(&sig.try_into().unwrap());
    sender
        .verify_strict(&signed_message, &signature)
        .expect("seal.signed_message is what the code signed");
}

fn passphrase_group(v: &Vectors) {
    let descriptor = GroupDescriptor::Passphrase {
        params: KdfParams {
            memory_kib: v.u32("passphrase.memory_kib"),
            iterations: v.u32("passphrase.iterations"),
            parallelism: v.u32("passphrase.parallelism"),
        },
        salt: v.array("passphrase.salt"),
    };
    let secret = descriptor
        .derive_secret(&v.text("passphrase.text"))
        .unwrap();
    assert_doc(v, "passphrase.secret", secret.expose_bytes());
    assert_doc(
        v,
        "passphrase.group_id",
        GroupKeys::derive(&secret).group_id().as_bytes(),
    );
}

fn mailbox(v: &Vectors) {
    let (lookup, half) = (v.text("mailbox.lookup_id"), v.text("mailbox.key_half"));
    let key = MailboxKey::from_code_half(&lookup, &half).unwrap();
    assert_doc(v, "mailbox.key", key.expose_bytes());
    // The document's salt, with the fixed mailbox cost, gives the code's key.
    let p = KdfParams::OWASP_MIN;
    let params = Params::new(p.memory_kib, p.iterations, p.parallelism, Some(32)).unwrap();
    let mut from_salt = [0u8; 32];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(half.as_bytes(), &v.bytes("mailbox.salt"), &mut from_salt)
        .unwrap();
    assert_eq!(
        from_salt,
        *key.expose_bytes(),
        "mailbox.salt is not the salt the code used"
    );

    let plaintext = v.bytes("mailbox.plaintext");
    let mut rng = FixedBytes::new(v.bytes("mailbox.nonce"));
    let sealed = seal_mailbox(&mut rng, &key, &plaintext).unwrap();
    assert!(rng.is_spent(), "mailbox sealing draws exactly the nonce");
    assert_doc(v, "mailbox.sealed", &sealed);
    assert_eq!(
        open_mailbox(&key, &v.bytes("mailbox.sealed")).unwrap(),
        plaintext
    );
}

sync_testkit::doc_vector_tests! {
    crate: "sync-crypto",
    every: every_crypto_vector_is_checked,
    key_schedule_vectors_match_the_code: [key_schedule],
    hello_vectors_match_the_code: [hello_signature],
    sealed_blob_vectors_match_the_code: [sealed_blob],
    passphrase_vectors_match_the_code: [passphrase_group],
    mailbox_vectors_match_the_code: [mailbox],
}
