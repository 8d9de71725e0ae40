//! Error types. Messages never contain key material, passphrases or plaintext.

use crate::schedule::KeyEpoch;

/// Errors of key derivation, Hello verification, the invite mailbox and key envelopes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// Argon2id parameters are below the OWASP floor (19 MiB with t ≥ 2, or 46 MiB with t = 1).
    #[error("key derivation parameters are below the minimum (19 MiB / t=2 or 46 MiB / t=1)")]
    KdfParamsTooWeak,
    /// Argon2id parameters are absurdly large (> 4 GiB memory, > 64 passes, > 16 lanes) or
    /// inconsistent (zero lanes); refusing protects a joining device from a hostile descriptor.
    #[error("key derivation parameters are out of range")]
    KdfParamsOutOfRange,
    /// The memory for Argon2id could not be allocated.
    #[error("not enough memory for key derivation ({memory_kib} KiB)")]
    KdfOutOfMemory {
        /// Memory the parameters ask for, in KiB.
        memory_kib: u32,
    },
    /// Argon2id rejected its inputs (should not happen with validated parameters).
    #[error("key derivation failed")]
    Kdf,
    /// `derive_secret` was called on a group whose secret is random, not passphrase-derived.
    #[error("this group has a random secret, not a passphrase")]
    NotPassphraseGroup,
    /// The group id is not a valid Ed25519 public key (non-canonical, off-curve or weak).
    #[error("group id is not a valid group public key")]
    InvalidGroupKey,
    /// The Hello challenge names another group than the one being verified (caller bug).
    #[error("hello challenge names another group")]
    HelloGroupMismatch,
    /// The Hello signature does not verify for this group and challenge.
    #[error("hello signature does not verify")]
    BadHelloSignature,
    /// A short-code half is empty or holds characters other than ASCII letters and digits
    /// (separators `-` and whitespace are ignored).
    #[error("invalid invite code")]
    InvalidCode,
    /// The mailbox ciphertext is shorter than nonce + tag.
    #[error("mailbox ciphertext is truncated")]
    MailboxTruncated,
    /// The mailbox ciphertext does not authenticate under this key (wrong code or tampering).
    #[error("mailbox ciphertext does not decrypt")]
    MailboxDecrypt,
    /// An epoch secret does not belong to this group or epoch: epoch 0's secret must give the
    /// group id, and an epoch already held cannot get another secret.
    #[error("the secret of key epoch {} does not match this group", .0.0)]
    EpochSecretMismatch(KeyEpoch),
    /// The plaintext is longer than the AEAD can encrypt under one nonce (~256 GiB).
    #[error("plaintext too large to seal")]
    PlaintextTooLarge,
    /// A hybrid KEM public key has the wrong length, or its ML-KEM-768 encapsulation key fails
    /// the FIPS 203 check (a coefficient not below the modulus).
    #[error("invalid hybrid KEM public key")]
    InvalidKemKey,
    /// X25519 gave the all-zero shared secret: the other side's X25519 key is a low-order
    /// point. Refused rather than continuing with ML-KEM alone.
    #[error("X25519 key is a low-order point")]
    WeakKemSharedSecret,
    /// The envelope is shorter than its fixed overhead.
    #[error("key envelope is truncated ({len} bytes)")]
    EnvelopeTruncated {
        /// Length received.
        len: usize,
    },
    /// The envelope's version byte is not one this build can open.
    #[error("unsupported key envelope version {0}")]
    EnvelopeVersion(u8),
    /// The envelope does not authenticate: sealed to another device or under another context
    /// (group, epoch, sender, recipient), or tampered with.
    #[error("key envelope does not decrypt")]
    EnvelopeDecrypt,
}

/// Why a sealed blob could not be opened. Checked in this order: length/version, sender,
/// signature, epoch, AEAD. No variant ever carries plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Shorter than the fixed overhead of a sealed blob.
    #[error("sealed blob is truncated ({len} bytes)")]
    Truncated {
        /// Length received.
        len: usize,
    },
    /// The version byte is not one this build can open.
    #[error("unsupported sealed blob version {0}")]
    UnsupportedVersion(u8),
    /// The caller's group keys do not belong to the group the blob was pulled from (caller bug).
    #[error("group keys do not match the group id")]
    GroupMismatch,
    /// The sender in the blob header differs from the sender the relay reported.
    #[error("sender in the blob differs from the reported sender")]
    WrongSender,
    /// The sender's signature does not verify (tampered bytes, another group or blob id, an
    /// invalid sender key, or a signature by another device).
    #[error("sealed blob signature does not verify")]
    BadSignature,
    /// The blob names a key epoch this device does not hold.
    #[error("unknown key epoch {}", .0.0)]
    UnknownEpoch(KeyEpoch),
    /// The AEAD tag does not verify (wrong key for the epoch, or a signed-but-bogus ciphertext).
    #[error("sealed blob does not decrypt")]
    Decrypt,
}
