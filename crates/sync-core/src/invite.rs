//! Invites: how a new device learns the relay and the group, by QR code or short code.
//!
//! An [`Invite`] names the relay (id and direct addresses), the group (id and how its secret is
//! made), carries the secret itself for random-secret groups (passphrase groups carry only the
//! Argon2id salt and parameters; the passphrase is typed on the joining device), and expires
//! (10 minutes by default). It travels either as a QR payload (`0ksync1:` + base64url of the
//! encoded invite) or through the relay's invite mailbox, sealed under a [`ShortCode`]: the
//! code's first half is the mailbox lookup id, its second half (stretched with Argon2id in
//! `sync-crypto`) the key. An [`InviteLedger`] makes invites single-use.
//!
//! Encoded invite: `version (1 byte) ‖ MessagePack array [relay_id, relay_addrs, group_id,
//! group, secret, invite_id, expires_at_ms]`. Every decoder here returns a typed error on bad
//! input and never panics.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteArray;
use sync_crypto::{
    CryptoError, GroupDescriptor, GroupKeys, GroupSecret, MailboxKey, open_mailbox, seal_mailbox,
};
use sync_types::GroupId;
use zeroize::{Zeroize, Zeroizing};

/// The invite format version this build writes and reads.
pub const INVITE_VERSION: u8 = 1;
/// Prefix of a QR payload.
pub const QR_PREFIX: &str = "0ksync1:";
/// Default lifetime of an invite: 10 minutes.
pub const DEFAULT_INVITE_TTL: Duration = Duration::from_secs(10 * 60);
/// Longest encoded invite accepted (bytes, before base64).
pub const MAX_INVITE_BYTES: usize = 3 * 1024;
/// Longest QR payload accepted (characters).
pub const MAX_QR_PAYLOAD_LEN: usize = QR_PREFIX.len() + MAX_INVITE_BYTES.div_ceil(3) * 4;
/// Most relay addresses an invite may carry.
pub const MAX_RELAY_ADDRS: usize = 16;
/// Longest relay address (bytes).
pub const MAX_RELAY_ADDR_LEN: usize = 256;

/// Why an invite could not be created, decoded, checked or redeemed. Messages never contain
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
    /// The invite was already redeemed.
    #[error("invite was already used")]
    AlreadyUsed,
    /// The ledger holds as many unexpired invites as allowed.
    #[error("too many outstanding invites")]
    LedgerFull,
    /// A short code could not be parsed.
    #[error(transparent)]
    ShortCode(#[from] ShortCodeError),
    /// The mailbox key could not be derived or the mailbox entry could not be opened (wrong
    /// code or tampered ciphertext).
    #[error("invite mailbox: {0}")]
    Crypto(#[from] CryptoError),
}

/// The encoded part of an invite (after the version byte), in wire order.
#[derive(Clone, Serialize, Deserialize)]
struct Body {
    relay_id: ByteArray<32>,
    relay_addrs: Vec<String>,
    group_id: GroupId,
    group: GroupDescriptor,
    secret: Option<GroupSecret>,
    invite_id: ByteArray<16>,
    expires_at_ms: u64,
}

/// What [`Invite::create`] needs to know.
#[derive(Clone)]
pub struct InviteParams {
    /// The relay's endpoint id (Ed25519 public key).
    pub relay_id: [u8; 32],
    /// The relay's direct addresses (`host:port`), at most [`MAX_RELAY_ADDRS`].
    pub relay_addrs: Vec<String>,
    /// The group.
    pub group_id: GroupId,
    /// How the group's secret is made.
    pub group: GroupDescriptor,
    /// The secret for [`GroupDescriptor::Random`] groups; `None` for passphrase groups.
    pub secret: Option<GroupSecret>,
    /// Lifetime (usually [`DEFAULT_INVITE_TTL`]).
    pub ttl: Duration,
}

impl fmt::Debug for InviteParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InviteParams")
            .field("relay_addrs", &self.relay_addrs)
            .field("group_id", &self.group_id)
            .field("group", &self.group)
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// A single-use, expiring invitation into a sync group. `Debug` redacts the secret.
#[derive(Clone)]
pub struct Invite {
    version: u8,
    body: Body,
}

impl Invite {
    /// A fresh invite with a random id, expiring `params.ttl` after `now_ms` (unix ms).
    ///
    /// Checks that the secret is present exactly for random-secret groups and belongs to
    /// `group_id`, and that the relay addresses are within limits.
    pub fn create<R: CryptoRng + ?Sized>(
        rng: &mut R,
        params: InviteParams,
        now_ms: u64,
    ) -> Result<Invite, InviteError> {
        let mut invite_id = [0u8; 16];
        rng.fill_bytes(&mut invite_id);
        let ttl_ms = u64::try_from(params.ttl.as_millis()).unwrap_or(u64::MAX);
        let invite = Invite {
            version: INVITE_VERSION,
            body: Body {
                relay_id: ByteArray::new(params.relay_id),
                relay_addrs: params.relay_addrs,
                group_id: params.group_id,
                group: params.group,
                secret: params.secret,
                invite_id: ByteArray::new(invite_id),
                expires_at_ms: now_ms.saturating_add(ttl_ms),
            },
        };
        invite.validate()?;
        Ok(invite)
    }

    /// The format version.
    pub fn version(&self) -> u8 {
        self.version
    }

    /// The relay's endpoint id.
    pub fn relay_id(&self) -> &[u8; 32] {
        &self.body.relay_id
    }

    /// The relay's direct addresses.
    pub fn relay_addrs(&self) -> &[String] {
        &self.body.relay_addrs
    }

    /// The group.
    pub fn group_id(&self) -> GroupId {
        self.body.group_id
    }

    /// How the group's secret is made.
    pub fn group(&self) -> &GroupDescriptor {
        &self.body.group
    }

    /// The group secret (random-secret groups only).
    pub fn secret(&self) -> Option<&GroupSecret> {
        self.body.secret.as_ref()
    }

    /// The invite's random id (what an [`InviteLedger`] records).
    pub fn invite_id(&self) -> &[u8; 16] {
        &self.body.invite_id
    }

    /// When the invite expires (unix milliseconds).
    pub fn expires_at_ms(&self) -> u64 {
        self.body.expires_at_ms
    }

    /// `Ok` while the invite is valid at `now_ms`, [`InviteError::Expired`] from its expiry on.
    pub fn check(&self, now_ms: u64) -> Result<(), InviteError> {
        if now_ms >= self.body.expires_at_ms {
            return Err(InviteError::Expired {
                expires_at_ms: self.body.expires_at_ms,
            });
        }
        Ok(())
    }

    /// The group secret for the joining device: the carried secret for random-secret groups
    /// (`passphrase` is ignored), or the secret derived from `passphrase` (Argon2id with the
    /// invite's parameters) and checked against the group id, so a typo is
    /// [`InviteError::WrongPassphrase`] instead of a silent join of an empty group.
    pub fn group_secret(&self, passphrase: Option<&str>) -> Result<GroupSecret, InviteError> {
        match (&self.body.group, &self.body.secret) {
            (GroupDescriptor::Random, Some(secret)) => Ok(secret.clone()),
            (GroupDescriptor::Passphrase { .. }, None) => {
                let passphrase = passphrase.ok_or(InviteError::PassphraseRequired)?;
                let secret = self.body.group.derive_secret(passphrase)?;
                if GroupKeys::derive(&secret).group_id() != self.body.group_id {
                    return Err(InviteError::WrongPassphrase);
                }
                Ok(secret)
            }
            _ => Err(InviteError::SecretMismatch),
        }
    }

    /// The encoded invite: version byte ‖ MessagePack body. Holds the secret: wiped on drop.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        // Reserve the maximum up front so the buffer never reallocates (a reallocation would
        // leave an unwiped copy of the secret behind).
        let mut out = Zeroizing::new(Vec::with_capacity(MAX_INVITE_BYTES));
        out.push(self.version);
        // Encoding a plain struct into a Vec cannot fail; an empty body would be refused on
        // decode rather than silently accepted.
        if rmp_serde::encode::write(&mut *out, &self.body).is_err() {
            out.truncate(1);
        }
        out
    }

    /// Decodes [`to_bytes`](Self::to_bytes) output, checking version, limits and consistency.
    pub fn from_bytes(bytes: &[u8]) -> Result<Invite, InviteError> {
        if bytes.len() > MAX_INVITE_BYTES {
            return Err(InviteError::TooLong {
                len: bytes.len(),
                max: MAX_INVITE_BYTES,
            });
        }
        let Some((&version, mut rest)) = bytes.split_first() else {
            return Err(InviteError::Body);
        };
        if version != INVITE_VERSION {
            return Err(InviteError::UnsupportedVersion { version });
        }
        let body: Body = rmp_serde::decode::from_read(&mut rest).map_err(|_| InviteError::Body)?;
        if !rest.is_empty() {
            return Err(InviteError::Body);
        }
        let invite = Invite { version, body };
        invite.validate()?;
        Ok(invite)
    }

    /// The QR payload: [`QR_PREFIX`] + base64url (no padding) of [`to_bytes`](Self::to_bytes).
    /// Holds the secret: wiped on drop.
    pub fn to_qr_payload(&self) -> Zeroizing<String> {
        let bytes = self.to_bytes();
        let mut out = Zeroizing::new(String::with_capacity(
            QR_PREFIX.len() + bytes.len().div_ceil(3) * 4,
        ));
        out.push_str(QR_PREFIX);
        URL_SAFE_NO_PAD.encode_string(&*bytes, &mut out);
        out
    }

    /// Parses a QR payload (surrounding whitespace is ignored).
    pub fn from_qr_payload(payload: &str) -> Result<Invite, InviteError> {
        let payload = payload.trim();
        if payload.len() > MAX_QR_PAYLOAD_LEN {
            return Err(InviteError::TooLong {
                len: payload.len(),
                max: MAX_QR_PAYLOAD_LEN,
            });
        }
        let encoded = payload
            .strip_prefix(QR_PREFIX)
            .ok_or(InviteError::BadPrefix)?;
        let bytes = Zeroizing::new(
            URL_SAFE_NO_PAD
                .decode(encoded)
                .map_err(|_| InviteError::Base64)?,
        );
        Self::from_bytes(&bytes)
    }

    fn validate(&self) -> Result<(), InviteError> {
        let addrs = &self.body.relay_addrs;
        if addrs.len() > MAX_RELAY_ADDRS
            || addrs
                .iter()
                .any(|a| a.is_empty() || a.len() > MAX_RELAY_ADDR_LEN)
        {
            return Err(InviteError::InvalidField {
                field: "relay_addrs",
            });
        }
        match (&self.body.group, &self.body.secret) {
            (GroupDescriptor::Random, Some(secret)) => {
                if GroupKeys::derive(secret).group_id() != self.body.group_id {
                    return Err(InviteError::GroupMismatch);
                }
            }
            (GroupDescriptor::Passphrase { params, .. }, None) => {
                params
                    .validate()
                    .map_err(|_| InviteError::InvalidField { field: "group" })?;
            }
            _ => return Err(InviteError::SecretMismatch),
        }
        Ok(())
    }
}

impl fmt::Debug for Invite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Invite")
            .field("version", &self.version)
            .field("relay_addrs", &self.body.relay_addrs)
            .field("group_id", &self.body.group_id)
            .field("group", &self.body.group)
            .field("secret", &self.body.secret.as_ref().map(|_| "[redacted]"))
            .field("expires_at_ms", &self.body.expires_at_ms)
            .finish_non_exhaustive()
    }
}

/// Crockford base32 without I, L, O, U: 32 symbols nobody confuses when reading aloud.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Symbols in a short code.
const CODE_LEN: usize = 16;
/// Longest text [`ShortCode::parse`] looks at.
const MAX_CODE_TEXT: usize = 64;

/// Why a short code could not be parsed. Never contains the code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShortCodeError {
    /// Not 16 symbols (after dropping dashes and whitespace), or absurdly long text.
    #[error("a short code has 16 characters (XXXX-XXXX-XXXX-XXXX), got {got}")]
    Length {
        /// Symbols found (or text length, if too long to look at).
        got: usize,
    },
    /// A character outside the code alphabet (0–9, A–Z without I, L, O, U).
    #[error("invalid character at position {position} of the short code")]
    InvalidChar {
        /// Zero-based character position in the text given.
        position: usize,
    },
}

/// A 16-symbol short code `XXXX-XXXX-XXXX-XXXX` (80 random bits): the first 8 symbols find the
/// relay's mailbox entry, the last 8 decrypt it. Wiped on drop; `Debug` hides the key half.
#[derive(Clone, PartialEq, Eq)]
pub struct ShortCode([u8; CODE_LEN]);

impl ShortCode {
    /// A new code with 80 random bits.
    pub fn random<R: CryptoRng + ?Sized>(rng: &mut R) -> ShortCode {
        let mut raw = Zeroizing::new([0u8; 10]);
        rng.fill_bytes(raw.as_mut());
        let mut bits = Zeroizing::new(0u128);
        for byte in raw.iter() {
            *bits = (*bits << 8) | u128::from(*byte);
        }
        let mut code = [0u8; CODE_LEN];
        for (i, slot) in code.iter_mut().enumerate() {
            let shift = 5 * (CODE_LEN - 1 - i);
            let index = usize::try_from((*bits >> shift) & 0x1f).unwrap_or(0);
            *slot = ALPHABET.get(index).copied().unwrap_or(b'0');
        }
        ShortCode(code)
    }

    /// Parses a code typed by a person: case-insensitive, dashes and whitespace anywhere are
    /// ignored, and the look-alikes O → 0, I and L → 1 are accepted.
    pub fn parse(text: &str) -> Result<ShortCode, ShortCodeError> {
        if text.len() > MAX_CODE_TEXT {
            return Err(ShortCodeError::Length { got: text.len() });
        }
        let mut code = [0u8; CODE_LEN];
        let mut n = 0usize;
        for (position, ch) in text.chars().enumerate() {
            if ch == '-' || ch.is_whitespace() {
                continue;
            }
            let symbol = match ch.to_ascii_uppercase() {
                'O' => b'0',
                'I' | 'L' => b'1',
                c if c.is_ascii() && ALPHABET.contains(&(c as u8)) => c as u8,
                _ => {
                    code.zeroize();
                    return Err(ShortCodeError::InvalidChar { position });
                }
            };
            if let Some(slot) = code.get_mut(n) {
                *slot = symbol;
            }
            n = n.saturating_add(1);
        }
        if n != CODE_LEN {
            code.zeroize();
            return Err(ShortCodeError::Length { got: n });
        }
        Ok(ShortCode(code))
    }

    /// The first 8 symbols: the mailbox lookup id (the relay sees it).
    pub fn lookup_id(&self) -> &str {
        self.half(0)
    }

    /// The last 8 symbols: the mailbox key material (never leaves the devices).
    pub fn key_half(&self) -> &str {
        self.half(CODE_LEN / 2)
    }

    fn half(&self, start: usize) -> &str {
        self.0
            .get(start..start + CODE_LEN / 2)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("")
    }
}

impl Drop for ShortCode {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Display for ShortCode {
    /// `XXXX-XXXX-XXXX-XXXX` (the full code: show it to the user, never log it).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, chunk) in self.0.chunks(4).enumerate() {
            if i > 0 {
                f.write_str("-")?;
            }
            f.write_str(std::str::from_utf8(chunk).unwrap_or("????"))?;
        }
        Ok(())
    }
}

impl fmt::Debug for ShortCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lookup = self.lookup_id();
        write!(
            f,
            "ShortCode({}-{}-[redacted])",
            lookup.get(..4).unwrap_or(""),
            lookup.get(4..).unwrap_or("")
        )
    }
}

/// Seals an invite for the relay's mailbox under `code` (Argon2id on the key half, then
/// XChaCha20-Poly1305). Store the result under [`ShortCode::lookup_id`].
pub fn seal_for_mailbox<R: CryptoRng + ?Sized>(
    invite: &Invite,
    code: &ShortCode,
    rng: &mut R,
) -> Result<Vec<u8>, InviteError> {
    let key = MailboxKey::from_code_half(code.lookup_id(), code.key_half())?;
    let plaintext = invite.to_bytes();
    Ok(seal_mailbox(rng, &key, &plaintext)?)
}

/// Opens a mailbox entry fetched by [`ShortCode::lookup_id`]. A wrong code or tampered bytes
/// give [`InviteError::Crypto`]; the invite is then validated like any decoded invite (check
/// its expiry with [`Invite::check`]).
pub fn open_from_mailbox(sealed: &[u8], code: &ShortCode) -> Result<Invite, InviteError> {
    let key = MailboxKey::from_code_half(code.lookup_id(), code.key_half())?;
    let plaintext = Zeroizing::new(open_mailbox(&key, sealed)?);
    Invite::from_bytes(&plaintext)
}

/// Records redeemed invites so each works once. Pure and in memory: ids are forgotten once
/// their invite has expired (an expired invite is refused anyway), so memory stays bounded by
/// the number of invites alive at once, itself capped.
#[derive(Debug, Clone)]
pub struct InviteLedger {
    used: HashMap<[u8; 16], u64>,
    by_expiry: BTreeSet<(u64, [u8; 16])>,
    max_entries: usize,
}

impl InviteLedger {
    /// Default cap on unexpired redeemed invites held at once.
    pub const DEFAULT_MAX_ENTRIES: usize = 10_000;

    /// An empty ledger with the default cap.
    pub fn new() -> Self {
        Self::with_max_entries(Self::DEFAULT_MAX_ENTRIES)
    }

    /// An empty ledger holding at most `max_entries` unexpired ids.
    pub fn with_max_entries(max_entries: usize) -> Self {
        Self {
            used: HashMap::new(),
            by_expiry: BTreeSet::new(),
            max_entries,
        }
    }

    /// Ids currently remembered.
    pub fn len(&self) -> usize {
        self.used.len()
    }

    /// Whether no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.used.is_empty()
    }

    /// Redeems `invite` at `now_ms`: [`InviteError::Expired`] if its lifetime is over,
    /// [`InviteError::AlreadyUsed`] if it was redeemed before, otherwise records it.
    pub fn redeem(&mut self, invite: &Invite, now_ms: u64) -> Result<(), InviteError> {
        self.purge_expired(now_ms);
        invite.check(now_ms)?;
        let id = *invite.invite_id();
        if self.used.contains_key(&id) {
            return Err(InviteError::AlreadyUsed);
        }
        if self.used.len() >= self.max_entries {
            return Err(InviteError::LedgerFull);
        }
        let expiry = invite.expires_at_ms();
        self.used.insert(id, expiry);
        self.by_expiry.insert((expiry, id));
        Ok(())
    }

    /// Forgets ids whose invite has expired at `now_ms`.
    pub fn purge_expired(&mut self, now_ms: u64) {
        while let Some(&(expiry, id)) = self.by_expiry.first() {
            if expiry > now_ms {
                break;
            }
            self.by_expiry.pop_first();
            self.used.remove(&id);
        }
    }
}

impl Default for InviteLedger {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    const NOW: u64 = 1_700_000_000_000;
    const MIN: u64 = 60_000;

    fn rng() -> ChaCha20Rng {
        ChaCha20Rng::seed_from_u64(7)
    }

    fn random_params(rng: &mut ChaCha20Rng) -> InviteParams {
        let secret = GroupSecret::random(rng);
        InviteParams {
            relay_id: [3u8; 32],
            relay_addrs: vec!["192.0.2.1:4433".into(), "[2001:db8::1]:4433".into()],
            group_id: GroupKeys::derive(&secret).group_id(),
            group: GroupDescriptor::Random,
            secret: Some(secret),
            ttl: DEFAULT_INVITE_TTL,
        }
    }

    fn random_invite() -> Invite {
        let mut rng = rng();
        let params = random_params(&mut rng);
        Invite::create(&mut rng, params, NOW).expect("valid")
    }

    fn assert_same(a: &Invite, b: &Invite) {
        assert_eq!(a.version(), b.version());
        assert_eq!(a.relay_id(), b.relay_id());
        assert_eq!(a.relay_addrs(), b.relay_addrs());
        assert_eq!(a.group_id(), b.group_id());
        assert_eq!(a.group(), b.group());
        assert_eq!(
            a.secret().map(|s| *s.expose_bytes()),
            b.secret().map(|s| *s.expose_bytes())
        );
        assert_eq!(a.invite_id(), b.invite_id());
        assert_eq!(a.expires_at_ms(), b.expires_at_ms());
    }

    #[test]
    fn qr_payload_round_trips() {
        let invite = random_invite();
        let payload = invite.to_qr_payload();
        assert!(payload.starts_with(QR_PREFIX));
        assert!(
            payload.len() < 300,
            "QR payload stays small: {}",
            payload.len()
        );
        let decoded = Invite::from_qr_payload(&payload).expect("decodes");
        assert_same(&invite, &decoded);
        // Surrounding whitespace from copy-paste is fine.
        let padded = format!("  {}\n", &*payload);
        assert_same(&invite, &Invite::from_qr_payload(&padded).expect("decodes"));
    }

    #[test]
    fn invite_carries_relay_and_expiry() {
        let invite = random_invite();
        assert_eq!(invite.version(), INVITE_VERSION);
        assert_eq!(invite.relay_id(), &[3u8; 32]);
        assert_eq!(invite.relay_addrs().len(), 2);
        assert_eq!(invite.expires_at_ms(), NOW + 10 * MIN);
    }

    #[test]
    fn expires_after_ttl() {
        let invite = random_invite();
        assert_eq!(invite.check(NOW), Ok(()));
        assert_eq!(invite.check(NOW + 10 * MIN - 1), Ok(()));
        assert_eq!(
            invite.check(NOW + 10 * MIN),
            Err(InviteError::Expired {
                expires_at_ms: NOW + 10 * MIN
            })
        );
        let mut rng = rng();
        let params = InviteParams {
            ttl: Duration::ZERO,
            ..random_params(&mut rng)
        };
        let instant = Invite::create(&mut rng, params, NOW).expect("valid");
        assert!(matches!(
            instant.check(NOW),
            Err(InviteError::Expired { .. })
        ));
        // A huge TTL saturates instead of overflowing.
        let params = InviteParams {
            ttl: Duration::MAX,
            ..random_params(&mut rng)
        };
        let forever = Invite::create(&mut rng, params, NOW).expect("valid");
        assert_eq!(forever.expires_at_ms(), u64::MAX);
    }

    #[test]
    fn debug_redacts_the_secret() {
        let invite = random_invite();
        let secret_hex: String = invite
            .secret()
            .map(|s| {
                s.expose_bytes()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect()
            })
            .unwrap_or_default();
        let debug = format!("{invite:?}");
        assert!(debug.contains("[redacted]"));
        assert!(!debug.contains(&secret_hex));
        assert!(!debug.contains(&format!("{:?}", invite.secret().map(|s| s.expose_bytes()))));
        let mut rng = rng();
        let params = random_params(&mut rng);
        assert!(format!("{params:?}").contains("[redacted]"));
    }

    #[test]
    fn random_group_secret_comes_from_the_invite() {
        let invite = random_invite();
        let secret = invite.group_secret(None).expect("carried");
        assert_eq!(GroupKeys::derive(&secret).group_id(), invite.group_id());
    }

    #[test]
    fn passphrase_group_carries_no_secret_and_checks_the_passphrase() {
        let mut rng = rng();
        let group = GroupDescriptor::new_passphrase(&mut rng, 2 << 30);
        let secret = group.derive_secret("correct horse").expect("derive");
        let params = InviteParams {
            relay_id: [1u8; 32],
            relay_addrs: vec!["relay.example:4433".into()],
            group_id: GroupKeys::derive(&secret).group_id(),
            group,
            secret: None,
            ttl: DEFAULT_INVITE_TTL,
        };
        let invite = Invite::create(&mut rng, params, NOW).expect("valid");
        let decoded = Invite::from_qr_payload(&invite.to_qr_payload()).expect("decodes");
        assert!(decoded.secret().is_none());
        assert_eq!(
            decoded.group_secret(None).err(),
            Some(InviteError::PassphraseRequired)
        );
        assert_eq!(
            decoded.group_secret(Some("correct horse!")).err(),
            Some(InviteError::WrongPassphrase)
        );
        let joined = decoded.group_secret(Some("correct horse")).expect("right");
        assert_eq!(joined.expose_bytes(), secret.expose_bytes());
    }

    #[test]
    fn create_refuses_inconsistent_params() {
        let mut rng = rng();
        let no_secret = InviteParams {
            secret: None,
            ..random_params(&mut rng)
        };
        assert_eq!(
            Invite::create(&mut rng, no_secret, NOW).err(),
            Some(InviteError::SecretMismatch)
        );
        let wrong_group = InviteParams {
            group_id: GroupId::from_bytes([9u8; 32]),
            ..random_params(&mut rng)
        };
        assert_eq!(
            Invite::create(&mut rng, wrong_group, NOW).err(),
            Some(InviteError::GroupMismatch)
        );
        let many_addrs = InviteParams {
            relay_addrs: vec!["a:1".into(); MAX_RELAY_ADDRS + 1],
            ..random_params(&mut rng)
        };
        assert_eq!(
            Invite::create(&mut rng, many_addrs, NOW).err(),
            Some(InviteError::InvalidField {
                field: "relay_addrs"
            })
        );
        let long_addr = InviteParams {
            relay_addrs: vec!["x".repeat(MAX_RELAY_ADDR_LEN + 1)],
            ..random_params(&mut rng)
        };
        assert!(Invite::create(&mut rng, long_addr, NOW).is_err());
    }

    #[test]
    fn qr_decoding_errors_are_typed() {
        let good = random_invite().to_qr_payload();
        assert_eq!(
            Invite::from_qr_payload("hello").err(),
            Some(InviteError::BadPrefix)
        );
        assert_eq!(
            Invite::from_qr_payload("0ksync1:***").err(),
            Some(InviteError::Base64)
        );
        assert_eq!(
            Invite::from_qr_payload("0ksync1:").err(),
            Some(InviteError::Body)
        );
        let body = URL_SAFE_NO_PAD.encode([INVITE_VERSION, 0xc1]);
        assert_eq!(
            Invite::from_qr_payload(&format!("{QR_PREFIX}{body}")).err(),
            Some(InviteError::Body)
        );
        let mut bytes = random_invite().to_bytes();
        bytes[0] = 9;
        let future = format!("{QR_PREFIX}{}", URL_SAFE_NO_PAD.encode(&*bytes));
        assert_eq!(
            Invite::from_qr_payload(&future).err(),
            Some(InviteError::UnsupportedVersion { version: 9 })
        );
        let mut trailing = random_invite().to_bytes();
        trailing.push(0);
        assert_eq!(Invite::from_bytes(&trailing).err(), Some(InviteError::Body));
        let long = format!("{}{}", &*good, "A".repeat(MAX_QR_PAYLOAD_LEN));
        assert!(matches!(
            Invite::from_qr_payload(&long),
            Err(InviteError::TooLong { .. })
        ));
        // Every truncation of a valid payload is refused with a typed error.
        for cut in 0..good.len() {
            assert!(Invite::from_qr_payload(good.get(..cut).unwrap_or("")).is_err());
        }
    }

    #[test]
    fn short_code_format_and_halves() {
        let mut rng = rng();
        let code = ShortCode::random(&mut rng);
        let text = code.to_string();
        assert_eq!(text.len(), 19);
        for dash in [4, 9, 14] {
            assert_eq!(&text[dash..=dash], "-");
        }
        assert!(
            text.chars()
                .all(|c| c == '-' || ALPHABET.contains(&(c as u8)))
        );
        let plain: String = text.chars().filter(|c| *c != '-').collect();
        assert_eq!(code.lookup_id(), &plain[..8]);
        assert_eq!(code.key_half(), &plain[8..]);
        assert_eq!(ShortCode::parse(&text), Ok(code.clone()));
        // Random codes differ.
        assert_ne!(ShortCode::random(&mut rng), code);
    }

    #[test]
    fn short_code_parse_is_forgiving() {
        let code = ShortCode::parse("ABCD-EFGH-JKMN-PQRS").expect("valid");
        assert_eq!(code.lookup_id(), "ABCDEFGH");
        assert_eq!(code.key_half(), "JKMNPQRS");
        for variant in [
            "abcd-efgh-jkmn-pqrs",
            "ABCDEFGHJKMNPQRS",
            " abcd efgh jkmn pqrs ",
            "ABCD--EFGH-JKMN-PQRS",
        ] {
            assert_eq!(ShortCode::parse(variant), Ok(code.clone()), "{variant}");
        }
        // Look-alikes map to digits.
        let o = ShortCode::parse("OIL0-0000-0000-0000").expect("valid");
        assert_eq!(o.lookup_id(), "01100000");
    }

    #[test]
    fn short_code_errors_are_typed_and_hide_the_code() {
        assert_eq!(
            ShortCode::parse("ABCD-EFGH"),
            Err(ShortCodeError::Length { got: 8 })
        );
        assert_eq!(
            ShortCode::parse("ABCD-EFGH-JKMN-PQRST"),
            Err(ShortCodeError::Length { got: 17 })
        );
        assert_eq!(
            ShortCode::parse("ABCU-EFGH-JKMN-PQRS"),
            Err(ShortCodeError::InvalidChar { position: 3 })
        );
        assert_eq!(
            ShortCode::parse("ABCD-EFGH-JKMN-PQR\u{e9}"),
            Err(ShortCodeError::InvalidChar { position: 18 })
        );
        assert!(matches!(
            ShortCode::parse(&"A".repeat(1000)),
            Err(ShortCodeError::Length { .. })
        ));
        let code = ShortCode::parse("ABCD-EFGH-JKMN-PQRS").expect("valid");
        let debug = format!("{code:?}");
        assert!(debug.contains("ABCD-EFGH") && !debug.contains("JKMN"));
    }

    #[test]
    fn mailbox_round_trip_and_wrong_code() {
        let mut rng = rng();
        let invite = random_invite();
        let code = ShortCode::random(&mut rng);
        let sealed = seal_for_mailbox(&invite, &code, &mut rng).expect("seal");
        let secret = invite
            .secret()
            .map(|s| *s.expose_bytes())
            .unwrap_or_default();
        assert!(
            !sealed.windows(32).any(|w| w == secret),
            "secret is not in the clear"
        );
        let opened = open_from_mailbox(&sealed, &code).expect("open");
        assert_same(&invite, &opened);

        let other = ShortCode::random(&mut rng);
        assert!(matches!(
            open_from_mailbox(&sealed, &other),
            Err(InviteError::Crypto(CryptoError::MailboxDecrypt))
        ));
        let mut tampered = sealed.clone();
        if let Some(b) = tampered.last_mut() {
            *b ^= 1;
        }
        assert!(open_from_mailbox(&tampered, &code).is_err());
        assert!(open_from_mailbox(&[], &code).is_err());
    }

    #[test]
    fn ledger_makes_invites_single_use() {
        let invite = random_invite();
        let mut ledger = InviteLedger::new();
        assert_eq!(ledger.redeem(&invite, NOW + MIN), Ok(()));
        assert_eq!(
            ledger.redeem(&invite, NOW + 2 * MIN),
            Err(InviteError::AlreadyUsed)
        );
        // A copy decoded from the QR payload is the same invite.
        let copy = Invite::from_qr_payload(&invite.to_qr_payload()).expect("decodes");
        assert_eq!(
            ledger.redeem(&copy, NOW + 3 * MIN),
            Err(InviteError::AlreadyUsed)
        );
        // Once expired it is refused as expired, and forgotten.
        assert!(matches!(
            ledger.redeem(&invite, NOW + 10 * MIN),
            Err(InviteError::Expired { .. })
        ));
        assert!(ledger.is_empty());
    }

    #[test]
    fn ledger_refuses_expired_and_stays_bounded() {
        let mut rng = rng();
        let mut ledger = InviteLedger::with_max_entries(50);
        let base = random_params(&mut rng);
        // Ten invites created a minute apart, all redeemed while still valid.
        for i in 0..10u64 {
            let invite = Invite::create(&mut rng, base.clone(), NOW + i * MIN).expect("valid");
            ledger.redeem(&invite, NOW + 9 * MIN).expect("fresh");
        }
        assert_eq!(ledger.len(), 10);
        // At NOW + 15 min the six created up to NOW + 5 min have expired and are forgotten.
        let late = Invite::create(&mut rng, base.clone(), NOW + 15 * MIN).expect("valid");
        ledger.redeem(&late, NOW + 15 * MIN).expect("fresh");
        assert_eq!(ledger.len(), 4 + 1);
        ledger.purge_expired(u64::MAX);
        assert!(ledger.is_empty());
        // With no expiry in sight, the cap holds.
        let mut full = InviteLedger::with_max_entries(2);
        for _ in 0..2 {
            let invite = Invite::create(&mut rng, base.clone(), NOW).expect("valid");
            full.redeem(&invite, NOW).expect("fresh");
        }
        let third = Invite::create(&mut rng, base, NOW).expect("valid");
        assert_eq!(full.redeem(&third, NOW), Err(InviteError::LedgerFull));
        full.purge_expired(NOW + 10 * MIN);
        assert!(full.is_empty());
        assert_eq!(
            full.redeem(&third, NOW + 10 * MIN).err(),
            third.check(NOW + 10 * MIN).err()
        );
    }

    proptest! {
        #[test]
        fn random_text_never_panics(s in "\\PC{0,400}") {
            let _ = Invite::from_qr_payload(&s);
            let _ = ShortCode::parse(&s);
        }

        #[test]
        fn random_bytes_after_prefix_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let payload = format!("{QR_PREFIX}{}", URL_SAFE_NO_PAD.encode(&bytes));
            prop_assert!(Invite::from_qr_payload(&payload).is_err() || bytes.first() == Some(&INVITE_VERSION));
            let mut versioned = bytes.clone();
            versioned.insert(0, INVITE_VERSION);
            let _ = Invite::from_bytes(&versioned);
        }

        #[test]
        fn corrupted_invites_never_panic(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
            let mut bytes = random_invite().to_bytes();
            for (index, xor) in flips {
                let i = index.index(bytes.len());
                bytes[i] ^= xor;
            }
            let _ = Invite::from_bytes(&bytes);
        }

        #[test]
        fn short_codes_round_trip(seed in any::<u64>()) {
            let code = ShortCode::random(&mut ChaCha20Rng::seed_from_u64(seed));
            prop_assert_eq!(ShortCode::parse(&code.to_string().to_lowercase()), Ok(code));
        }
    }
}
