//! Invites: how a new device learns the relays and the group, by QR code or short code.
//!
//! An [`Invite`] names the relay (id and direct addresses) and, optionally, further relays of
//! the same deployment in order of preference (a device dials the first and fails over to the
//! others), the group (id and how its secret is made), carries the secret itself for
//! random-secret groups (passphrase groups carry only the Argon2id salt and parameters; the
//! passphrase is typed on the joining device), and expires (10 minutes by default). It travels
//! either as a QR payload (`0ksync1:` + base64url of the encoded invite) or through the relay's
//! invite mailbox, sealed under a [`ShortCode`]: the code's first half is the mailbox lookup id,
//! its second half (stretched with Argon2id in `sync-crypto`) the key. The relay hands a mailbox
//! entry out once; a QR invite works until it expires.
//!
//! Encoded invite: `version (1 byte) ‖ MessagePack array [relay_id, relay_addrs, group_id,
//! group, secret, invite_id, expires_at_ms, epoch, epoch_secret, relays]`. The array is as long
//! as its last present field needs: `epoch` and `epoch_secret` are present once the group
//! rotated its keys (epoch > 0), `relays` (the further relays, each `[relay_id (bin 32),
//! relay_addrs]`, at most [`MAX_FURTHER_RELAYS`]) when there are any, with `epoch = 0` and
//! `epoch_secret = nil` written before it at epoch 0. So an invite of a group at epoch 0 with one
//! relay is the same 7-element array as before rotation and relay lists existed, and the first
//! 7 (or 9) fields keep their positions and bytes. Arrays are read strictly, though: a build
//! from before relay lists refuses an invite naming further relays as malformed. Every decoder
//! here returns a typed error on bad input and never panics.

mod error;
mod mailbox;
mod short_code;

#[cfg(test)]
mod tests;

use std::fmt;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand_core::CryptoRng;
use serde::ser::SerializeTuple as _;
use serde::{Deserialize, Serialize, Serializer};
use serde_bytes::ByteArray;
use sync_crypto::{EpochSecret, GroupDescriptor, GroupKeys, GroupSecret, KeyEpoch};
use sync_types::{GroupId, RelayAddr, RelayId};
use zeroize::Zeroizing;

pub use error::InviteError;
pub use mailbox::{open_from_mailbox, seal_for_mailbox};
pub use short_code::{ShortCode, ShortCodeError};

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
/// Most further relays an invite may carry (after the first one; each with 1 to
/// [`MAX_RELAY_ADDRS`] addresses of at most [`MAX_RELAY_ADDR_LEN`] bytes).
pub const MAX_FURTHER_RELAYS: usize = 8;

/// Fields of the body before the optional ones.
const REQUIRED_FIELDS: usize = 7;
/// Fields up to and including `epoch_secret`.
const EPOCH_FIELDS: usize = 9;
/// Fields up to and including `relays`.
const RELAYS_FIELDS: usize = 10;

/// The encoded part of an invite (after the version byte), in wire order. Serialized by hand
/// (a MessagePack array as long as the last present field needs, see the module docs);
/// missing trailing fields decode to their defaults.
#[derive(Clone, Deserialize)]
struct Body {
    relay_id: ByteArray<32>,
    relay_addrs: Vec<String>,
    group_id: GroupId,
    group: GroupDescriptor,
    secret: Option<GroupSecret>,
    invite_id: ByteArray<16>,
    expires_at_ms: u64,
    /// The group's current key epoch, when past 0.
    #[serde(default)]
    epoch: u32,
    /// The secret of `epoch` (a joining device needs it to say `Hello`).
    #[serde(default)]
    epoch_secret: Option<ByteArray<32>>,
    /// The further relays of the deployment, in order of preference after the first.
    #[serde(default)]
    relays: Vec<RelayEntry>,
}

/// One further relay in an invite: `[relay_id (bin 32), relay_addrs (array of str)]`.
#[derive(Clone, Serialize, Deserialize)]
struct RelayEntry {
    id: ByteArray<32>,
    addrs: Vec<String>,
}

impl Body {
    /// How many array elements the encoding needs: 7, 9 with a key epoch, 10 with further
    /// relays.
    fn field_count(&self) -> usize {
        if !self.relays.is_empty() {
            RELAYS_FIELDS
        } else if self.epoch != 0 || self.epoch_secret.is_some() {
            EPOCH_FIELDS
        } else {
            REQUIRED_FIELDS
        }
    }
}

impl Serialize for Body {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let count = self.field_count();
        let mut t = serializer.serialize_tuple(count)?;
        t.serialize_element(&self.relay_id)?;
        t.serialize_element(&self.relay_addrs)?;
        t.serialize_element(&self.group_id)?;
        t.serialize_element(&self.group)?;
        t.serialize_element(&self.secret)?;
        t.serialize_element(&self.invite_id)?;
        t.serialize_element(&self.expires_at_ms)?;
        if count >= EPOCH_FIELDS {
            t.serialize_element(&self.epoch)?;
            t.serialize_element(&self.epoch_secret)?;
        }
        if count >= RELAYS_FIELDS {
            t.serialize_element(&self.relays)?;
        }
        t.end()
    }
}

/// A writer that only counts what it is given (the encoded length, without copying the secret
/// anywhere).
struct ByteCounter(usize);

impl std::io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 = self.0.saturating_add(buf.len());
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Whether `addrs` are within the limits: at most [`MAX_RELAY_ADDRS`], each 1 to
/// [`MAX_RELAY_ADDR_LEN`] bytes.
fn addrs_within_limits(addrs: &[String]) -> bool {
    addrs.len() <= MAX_RELAY_ADDRS
        && addrs
            .iter()
            .all(|a| !a.is_empty() && a.len() <= MAX_RELAY_ADDR_LEN)
}

/// What [`Invite::create`] needs to know.
#[derive(Clone, Debug)]
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

/// An expiring invitation into a sync group. `Debug` redacts the secret.
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
                epoch: 0,
                epoch_secret: None,
                relays: Vec::new(),
            },
        };
        invite.validate()?;
        Ok(invite)
    }

    /// The same invite naming `further` relays of the same deployment, in order of preference
    /// after the first one ([`Invite::relay_id`]); an empty list names none (and leaves the
    /// encoding as it was). At most [`MAX_FURTHER_RELAYS`], each with 1 to [`MAX_RELAY_ADDRS`]
    /// addresses of at most [`MAX_RELAY_ADDR_LEN`] bytes, and the whole invite within
    /// [`MAX_INVITE_BYTES`] encoded.
    pub fn with_further_relays(mut self, further: &[RelayAddr]) -> Result<Self, InviteError> {
        self.body.relays = further
            .iter()
            .map(|r| RelayEntry {
                id: ByteArray::new(*r.id.as_bytes()),
                addrs: r.addrs.clone(),
            })
            .collect();
        self.validate()?;
        self.check_encoded_len()?;
        Ok(self)
    }

    /// The further relays the invite names, in order of preference after the first one
    /// (empty when it names only one).
    pub fn further_relays(&self) -> Vec<RelayAddr> {
        self.body
            .relays
            .iter()
            .map(|r| RelayAddr {
                id: RelayId::from_bytes(r.id.into_array()),
                addrs: r.addrs.clone(),
            })
            .collect()
    }

    /// Every relay the invite names, in order of preference: [`Invite::relay`] first, then
    /// [`Invite::further_relays`].
    pub fn relays(&self) -> Vec<RelayAddr> {
        std::iter::once(self.relay())
            .chain(self.further_relays())
            .collect()
    }

    /// The same invite carrying the group's current key epoch and its secret (for a group that
    /// rotated its keys: a joining device needs them to say `Hello`). Epoch 0 carries nothing.
    pub fn with_epoch(mut self, epoch: KeyEpoch, secret: &EpochSecret) -> Self {
        if epoch > KeyEpoch::INITIAL {
            self.body.epoch = epoch.0;
            self.body.epoch_secret = Some(ByteArray::new(*secret.expose_bytes()));
        }
        self
    }

    /// The group's key epoch past 0 and its secret, if the invite carries them.
    pub fn epoch(&self) -> Option<(KeyEpoch, EpochSecret)> {
        let secret = self.body.epoch_secret.as_ref()?;
        (self.body.epoch > 0).then(|| {
            (
                KeyEpoch(self.body.epoch),
                EpochSecret::from_bytes(secret.into_array()),
            )
        })
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

    /// The invite's random id (tells apart invites made with the same parameters).
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

    /// Refuses an invite whose encoding (with room for a key epoch and its secret, which
    /// [`Invite::with_epoch`] may add later) would exceed [`MAX_INVITE_BYTES`]: no decoder
    /// would accept it.
    fn check_encoded_len(&self) -> Result<(), InviteError> {
        /// Room for `epoch` (u32: 5 bytes) and `epoch_secret` (bin 32: 34 bytes).
        const EPOCH_ROOM: usize = 5 + 34;
        let room = if self.body.epoch_secret.is_some() {
            0
        } else {
            EPOCH_ROOM
        };
        let mut counter = ByteCounter(1);
        rmp_serde::encode::write(&mut counter, &self.body).map_err(|_| InviteError::Body)?;
        let len = counter.0.saturating_add(room);
        if len > MAX_INVITE_BYTES {
            return Err(InviteError::TooLong {
                len,
                max: MAX_INVITE_BYTES,
            });
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), InviteError> {
        let addrs = &self.body.relay_addrs;
        if !addrs_within_limits(addrs) {
            return Err(InviteError::InvalidField {
                field: "relay_addrs",
            });
        }
        // A further relay needs an address (the first one's list may be empty, as it always
        // could).
        let relays = &self.body.relays;
        if relays.len() > MAX_FURTHER_RELAYS
            || relays
                .iter()
                .any(|r| r.addrs.is_empty() || !addrs_within_limits(&r.addrs))
        {
            return Err(InviteError::InvalidField { field: "relays" });
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
            .field("epoch", &self.body.epoch)
            .field("further_relays", &self.further_relays())
            .finish_non_exhaustive()
    }
}
