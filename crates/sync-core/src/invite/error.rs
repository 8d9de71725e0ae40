//! Why an invite or a short code failed.

use sync_crypto::CryptoError;

use super::short_code::ShortCodeError;
use super::{INVITE_VERSION, QR_PREFIX};

/// Why an invite could not be created, decoded, checked or opened. Messages never contain
/// the group secret or the short code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InviteError {
    /// The QR payload does not start with [`QR_PREFIX`].
    #[error("not a 0k-sync invite (missing \"{QR_PREFIX}\" prefix)")]
    BadPrefix,
    /// The payload or encoded invite is longer than any valid invite.
    #[error("invite is too long ({len} > {max})")]
    TooLong {
        /// Length received.
        len: usize,
        /// Largest accepted.
        max: usize,
    },
    /// The text after the prefix is not unpadded base64url.
    #[error("invite is not valid base64url")]
    Base64,
    /// The encoded invite is empty, malformed, or has trailing bytes.
    #[error("invite body is malformed")]
    Body,
    /// The invite was written by an incompatible version.
    #[error("unsupported invite version {version} (this build reads {INVITE_VERSION})")]
    UnsupportedVersion {
        /// The version found.
        version: u8,
    },
    /// A field is out of range (too many or too long relay addresses, absurd KDF parameters).
    #[error("invite field {field} is invalid")]
    InvalidField {
        /// Which field.
        field: &'static str,
    },
    /// A random-secret group must carry its secret and a passphrase group must not.
    #[error("invite secret does not match the group kind")]
    SecretMismatch,
    /// The secret does not belong to the invite's group id.
    #[error("group secret does not match the invite's group")]
    GroupMismatch,
    /// The passphrase derives a different group than the invite names.
    #[error("wrong passphrase for this group")]
    WrongPassphrase,
    /// A passphrase group was joined without a passphrase.
    #[error("this group needs its passphrase")]
    PassphraseRequired,
    /// The invite's lifetime is over.
    #[error("invite expired at {expires_at_ms} ms")]
    Expired {
        /// When it expired (unix milliseconds).
        expires_at_ms: u64,
    },
    /// A short code could not be parsed.
    #[error(transparent)]
    ShortCode(#[from] ShortCodeError),
    /// The mailbox key could not be derived or the mailbox entry could not be opened (wrong
    /// code or tampered ciphertext).
    #[error("invite mailbox: {0}")]
    Crypto(#[from] CryptoError),
}
