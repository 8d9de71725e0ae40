//! Invite mailbox: a short code's second half, stretched with Argon2id, encrypts the invite
//! that the relay holds under the code's first half (the lookup id).
//!
//! Layout of a mailbox ciphertext: `nonce(24) ‖ ciphertext ‖ tag(16)` (XChaCha20-Poly1305,
//! AAD `"0k-sync/v1/mailbox-seal"`).

use std::fmt;

use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{Key, KeyInit, Tag, XChaCha20Poly1305, XNonce};
use rand_core::CryptoRng;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use crate::error::CryptoError;
use crate::kdf::{KdfParams, argon2id};

const SALT_LABEL: &[u8] = b"0k-sync/v1/mailbox";
const AAD: &[u8] = b"0k-sync/v1/mailbox-seal";
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// Bytes a mailbox ciphertext adds to its plaintext: nonce (24) + tag (16).
pub const MAILBOX_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// The AEAD key of one invite mailbox. Zeroized on drop; `Debug` is redacted.
#[derive(Clone)]
pub struct MailboxKey(Zeroizing<[u8; 32]>);

impl MailboxKey {
    /// Stretches the second half of a short code (8 chars) with Argon2id (fixed
    /// [`KdfParams::OWASP_MIN`]: 19 MiB, t=2, p=1) into an AEAD key. The salt is
    /// `SHA-256("0k-sync/v1/mailbox" ‖ lookup_id)[..16]`.
    ///
    /// Both halves are normalized first: `-` and whitespace are dropped and ASCII letters
    /// upper-cased, so codes are case-insensitive. Anything else but ASCII letters and digits,
    /// or an empty half, is [`CryptoError::InvalidCode`].
    pub fn from_code_half(lookup_id: &str, key_half: &str) -> Result<Self, CryptoError> {
        let lookup = normalize_code(lookup_id)?;
        let key_half = normalize_code(key_half)?;
        let mut hasher = Sha256::new();
        hasher.update(SALT_LABEL);
        hasher.update(lookup.as_bytes());
        let digest = hasher.finalize();
        let salt = digest.get(..16).ok_or(CryptoError::Kdf)?;
        argon2id(&KdfParams::OWASP_MIN, key_half.as_bytes(), salt).map(Self)
    }

    /// The raw key, for known-answer tests and diagnostics that never print it.
    pub fn expose_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for MailboxKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MailboxKey([redacted])")
    }
}

/// Drops separators, upper-cases ASCII, refuses anything but ASCII letters and digits.
fn normalize_code(half: &str) -> Result<Zeroizing<String>, CryptoError> {
    let mut out = Zeroizing::new(String::with_capacity(half.len()));
    for c in half.chars() {
        if c == '-' || c.is_whitespace() {
            continue;
        }
        if !c.is_ascii_alphanumeric() {
            return Err(CryptoError::InvalidCode);
        }
        out.push(c.to_ascii_uppercase());
    }
    if out.is_empty() {
        return Err(CryptoError::InvalidCode);
    }
    Ok(out)
}

/// Encrypts an invite for the mailbox: `nonce ‖ ciphertext ‖ tag`, random nonce from `rng`.
/// Fails only for plaintexts too large for one AEAD message.
pub fn seal_mailbox<R: CryptoRng + ?Sized>(
    rng: &mut R,
    key: &MailboxKey,
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    let total = plaintext
        .len()
        .checked_add(MAILBOX_OVERHEAD)
        .ok_or(CryptoError::PlaintextTooLarge)?;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let cipher = XChaCha20Poly1305::new(<&Key>::from(key.expose_bytes()));
    let tag = match out.get_mut(NONCE_LEN..) {
        Some(body) => cipher
            .encrypt_inout_detached(<&XNonce>::from(&nonce), AAD, body.into())
            .map_err(|_| CryptoError::PlaintextTooLarge)?,
        None => return Err(CryptoError::PlaintextTooLarge),
    };
    out.extend_from_slice(&tag);
    Ok(out)
}

/// Decrypts a mailbox ciphertext; [`CryptoError::MailboxTruncated`] if it is too short,
/// [`CryptoError::MailboxDecrypt`] for a wrong key or tampered bytes.
pub fn open_mailbox(key: &MailboxKey, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if sealed.len() < MAILBOX_OVERHEAD {
        return Err(CryptoError::MailboxTruncated);
    }
    let (nonce, rest) = sealed
        .split_at_checked(NONCE_LEN)
        .ok_or(CryptoError::MailboxTruncated)?;
    let ct_len = rest
        .len()
        .checked_sub(TAG_LEN)
        .ok_or(CryptoError::MailboxTruncated)?;
    let (ciphertext, tag) = rest
        .split_at_checked(ct_len)
        .ok_or(CryptoError::MailboxTruncated)?;
    let nonce = <&XNonce>::try_from(nonce).map_err(|_| CryptoError::MailboxTruncated)?;
    let tag = <&Tag>::try_from(tag).map_err(|_| CryptoError::MailboxTruncated)?;
    let cipher = XChaCha20Poly1305::new(<&Key>::from(key.expose_bytes()));
    let mut plaintext = ciphertext.to_vec();
    if cipher
        .decrypt_inout_detached(nonce, AAD, plaintext.as_mut_slice().into(), tag)
        .is_err()
    {
        plaintext.zeroize();
        return Err(CryptoError::MailboxDecrypt);
    }
    Ok(plaintext)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::assert_redacted;
    use proptest::prelude::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;
    use std::sync::LazyLock;

    // Each key costs one 19 MiB Argon2id run: derive the few the tests need once.
    static KEY: LazyLock<MailboxKey> =
        LazyLock::new(|| MailboxKey::from_code_half("ABCDEFGH", "IJKLMNOP").unwrap());
    static OTHER_HALF: LazyLock<MailboxKey> =
        LazyLock::new(|| MailboxKey::from_code_half("ABCDEFGH", "IJKLMNOQ").unwrap());
    static OTHER_LOOKUP: LazyLock<MailboxKey> =
        LazyLock::new(|| MailboxKey::from_code_half("ABCDEFGJ", "IJKLMNOP").unwrap());

    const INVITE: &[u8] = b"invite: relay, group secret, expiry";

    fn sealed() -> Vec<u8> {
        seal_mailbox(&mut ChaCha20Rng::seed_from_u64(5), &KEY, INVITE).unwrap()
    }

    #[test]
    fn round_trip_and_layout() {
        let s = sealed();
        assert_eq!(s.len(), INVITE.len() + MAILBOX_OVERHEAD);
        assert_eq!(open_mailbox(&KEY, &s).unwrap(), INVITE);
        let again = seal_mailbox(&mut ChaCha20Rng::seed_from_u64(6), &KEY, INVITE).unwrap();
        assert_ne!(again[..NONCE_LEN], s[..NONCE_LEN], "random nonce");
        let empty = seal_mailbox(&mut ChaCha20Rng::seed_from_u64(7), &KEY, b"").unwrap();
        assert_eq!(open_mailbox(&KEY, &empty).unwrap(), b"");
    }

    #[test]
    fn both_code_halves_matter() {
        assert_ne!(KEY.expose_bytes(), OTHER_HALF.expose_bytes());
        assert_ne!(KEY.expose_bytes(), OTHER_LOOKUP.expose_bytes());
        let s = sealed();
        assert_eq!(
            open_mailbox(&OTHER_HALF, &s),
            Err(CryptoError::MailboxDecrypt)
        );
        assert_eq!(
            open_mailbox(&OTHER_LOOKUP, &s),
            Err(CryptoError::MailboxDecrypt)
        );
    }

    #[test]
    fn tampering_and_truncation_are_typed_errors() {
        let s = sealed();
        for pos in 0..s.len() {
            for mask in [0x01u8, 0xff] {
                let mut bad = s.clone();
                bad[pos] ^= mask;
                assert_eq!(open_mailbox(&KEY, &bad), Err(CryptoError::MailboxDecrypt));
            }
        }
        for len in 0..s.len() {
            let want = if len < MAILBOX_OVERHEAD {
                CryptoError::MailboxTruncated
            } else {
                CryptoError::MailboxDecrypt
            };
            assert_eq!(open_mailbox(&KEY, &s[..len]), Err(want), "len {len}");
        }
    }

    #[test]
    fn code_normalization() {
        assert_eq!(
            normalize_code(" ab-cd\tEF gh ").unwrap().as_str(),
            "ABCDEFGH"
        );
        for bad in ["", " - ", "ABCD!EFG", "ÄBCDEFGH", "ABCD_EFG"] {
            assert_eq!(
                normalize_code(bad).map(|_| ()),
                Err(CryptoError::InvalidCode),
                "{bad:?}"
            );
            // Refused before any Argon2 work.
            assert!(matches!(
                MailboxKey::from_code_half("ABCDEFGH", bad),
                Err(CryptoError::InvalidCode)
            ));
            assert!(matches!(
                MailboxKey::from_code_half(bad, "IJKLMNOP"),
                Err(CryptoError::InvalidCode)
            ));
        }
    }

    #[test]
    fn debug_is_redacted() {
        let debug = format!("{:?}", *KEY);
        assert_eq!(debug, "MailboxKey([redacted])");
        assert_redacted(&debug, KEY.expose_bytes());
    }

    proptest! {
        #[test]
        fn open_mailbox_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            prop_assert!(open_mailbox(&KEY, &bytes).is_err());
        }
    }
}
