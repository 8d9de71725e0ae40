//! Operator admission tokens. A relay run with operator admission opens a session only when its
//! `Hello` carries a token signed by the operator's Ed25519 key, not expired, and covering the
//! session's group. The operator keeps the secret key; the relay is configured with the public
//! key only.
//!
//! Pure code: no clock (the caller passes the time), no randomness (the issuer passes the token
//! id, or the RNG of [`OperatorKey::random`]).
//!
//! Binary layout (version 1), integers big-endian:
//!
//! ```text
//! offset   len    field
//! 0        1      version = 1
//! 1        8      token id, chosen at random by the issuer (names the token in audit logs)
//! 9        8      expires_at: Unix time in seconds; refused from that second on
//! 17       8      max_bytes: byte quota of each group the token opens (0 = the relay's quota)
//! 25       2      n: number of groups (0 = every group; at most 64)
//! 27       32·n   group ids
//! 27+32·n  64     Ed25519 signature by the operator key over
//!                 "0k-sync/v1/admission-token" ‖ bytes[0 .. 27 + 32·n]
//! ```
//!
//! The text form (what an operator hands out) is the same bytes in unpadded base64url.

use std::fmt;
use std::num::NonZeroU64;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand_core::CryptoRng;
use sync_types::GroupId;
use zeroize::Zeroizing;

use crate::device::{random_signing_key, signing_key_from_seed};
use crate::hello::strict_verifying_key;

/// The token format this code writes and reads.
pub const ADMISSION_TOKEN_VERSION: u8 = 1;

/// Most groups one token may name.
pub const MAX_TOKEN_GROUPS: usize = 64;

/// Domain separation of the operator's signature.
const SIGNING_CONTEXT: &[u8] = b"0k-sync/v1/admission-token";

/// Bytes before the group list: version, id, expiry, quota, group count.
const HEADER_LEN: usize = 1 + 8 + 8 + 8 + 2;

/// Length of the signature at the end.
const SIGNATURE_LEN: usize = 64;

/// Longest token: the header, the most groups, the signature (2,139 bytes).
pub const MAX_TOKEN_BYTES: usize = HEADER_LEN + 32 * MAX_TOKEN_GROUPS + SIGNATURE_LEN;

/// Why a token could not be issued, read or accepted. Messages never quote token bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The bytes (or the text) are not a token of a version this code reads.
    #[error("the admission token is malformed")]
    Malformed,
    /// The signature does not verify under the operator key: issued by another key, or altered.
    #[error("the admission token was not issued with this relay's operator key")]
    BadSignature,
    /// The token's lifetime is over.
    #[error("the admission token expired")]
    Expired {
        /// When it expired (Unix seconds).
        expired_at_secs: u64,
    },
    /// The token names groups, and not this one.
    #[error("the admission token does not cover this group")]
    OutOfScope,
    /// More than [`MAX_TOKEN_GROUPS`] groups were asked for.
    #[error("an admission token names at most {MAX_TOKEN_GROUPS} groups")]
    TooManyGroups,
    /// The operator public key is not a valid (non-weak) Ed25519 key, or not 64 hex digits.
    #[error("the operator public key is not a valid Ed25519 public key (64 hex digits)")]
    InvalidKey,
}

/// Which groups a token opens sessions for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenScope {
    /// Every group.
    AllGroups,
    /// Only these groups (1 ..= [`MAX_TOKEN_GROUPS`]).
    Groups(Vec<GroupId>),
}

impl TokenScope {
    /// Whether the scope covers `group`.
    pub fn allows(&self, group: &GroupId) -> bool {
        match self {
            Self::AllGroups => true,
            Self::Groups(groups) => groups.contains(group),
        }
    }
}

/// What a token says: signed by the operator, checked by the relay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenClaims {
    /// Random id chosen by the issuer; it names the token in audit logs (it is not a secret,
    /// and it does not let anyone rebuild the token).
    pub id: [u8; 8],
    /// Unix time (seconds) from which the token is refused.
    pub expires_at_secs: u64,
    /// The groups it covers.
    pub scope: TokenScope,
    /// A byte quota for each group it opens, below the relay's own (`None`: the relay's).
    pub max_bytes: Option<NonZeroU64>,
}

impl TokenClaims {
    /// The first four bytes of the id in hex, for logs.
    pub fn short_id(&self) -> String {
        hex::encode(&self.id[..4])
    }
}

/// The operator's signing key. Zeroized on drop; `Debug` shows only the public key.
#[derive(Clone)]
pub struct OperatorKey(SigningKey);

impl OperatorKey {
    /// A new key from `rng`.
    pub fn random<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        Self(random_signing_key(rng))
    }

    /// The key with this 32-byte seed.
    pub fn from_secret_bytes(bytes: [u8; 32]) -> Self {
        Self(signing_key_from_seed(bytes))
    }

    /// The 32-byte seed, for the operator's key file only.
    pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// The public key a relay is configured with.
    pub fn public_key(&self) -> OperatorPublicKey {
        OperatorPublicKey(self.0.verifying_key())
    }

    /// Signs `claims` into a token.
    pub fn issue(&self, claims: &TokenClaims) -> Result<AdmissionToken, TokenError> {
        let groups: &[GroupId] = match &claims.scope {
            TokenScope::AllGroups => &[],
            TokenScope::Groups(groups) if groups.is_empty() => return Err(TokenError::Malformed),
            TokenScope::Groups(groups) => groups,
        };
        let count = u16::try_from(groups.len())
            .ok()
            .filter(|n| usize::from(*n) <= MAX_TOKEN_GROUPS)
            .ok_or(TokenError::TooManyGroups)?;
        let mut bytes = Vec::with_capacity(HEADER_LEN + 32 * groups.len() + SIGNATURE_LEN);
        bytes.push(ADMISSION_TOKEN_VERSION);
        bytes.extend_from_slice(&claims.id);
        bytes.extend_from_slice(&claims.expires_at_secs.to_be_bytes());
        bytes.extend_from_slice(&claims.max_bytes.map_or(0, NonZeroU64::get).to_be_bytes());
        bytes.extend_from_slice(&count.to_be_bytes());
        for group in groups {
            bytes.extend_from_slice(group.as_bytes());
        }
        let signature = self.0.sign(&signed_message(&bytes));
        bytes.extend_from_slice(&signature.to_bytes());
        Ok(AdmissionToken(bytes))
    }
}

impl fmt::Debug for OperatorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "OperatorKey {{ public: {}, secret: [redacted] }}",
            self.public_key()
        )
    }
}

/// The operator's public key, as a relay is configured with it (64 hex digits).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct OperatorPublicKey(VerifyingKey);

impl OperatorPublicKey {
    /// The key from its 32 bytes; weak and invalid keys are refused.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, TokenError> {
        strict_verifying_key(bytes)
            .map(Self)
            .ok_or(TokenError::InvalidKey)
    }

    /// Its 32 bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }
}

impl fmt::Display for OperatorPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0.as_bytes()))
    }
}

impl fmt::Debug for OperatorPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OperatorPublicKey({self})")
    }
}

impl FromStr for OperatorPublicKey {
    type Err = TokenError;

    fn from_str(text: &str) -> Result<Self, TokenError> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut bytes).map_err(|_| TokenError::InvalidKey)?;
        Self::from_bytes(&bytes)
    }
}

/// A signed token, as `Hello.admission_token` carries it. A bearer credential: `Debug` does
/// not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct AdmissionToken(Vec<u8>);

impl AdmissionToken {
    /// The token in these bytes (checked only by [`verify_token`]).
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// Its bytes, as sent in `Hello.admission_token`.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Its bytes, owned.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    /// The text an operator hands out: unpadded base64url.
    pub fn to_text(&self) -> String {
        URL_SAFE_NO_PAD.encode(&self.0)
    }

    /// Reads the text form (surrounding whitespace ignored). Checks the encoding and the
    /// layout, not the signature: that is [`verify_token`]'s job, with the operator key.
    pub fn from_text(text: &str) -> Result<Self, TokenError> {
        let text = text.trim();
        // Base64 of the longest token, rounded up; longer text cannot be a token.
        if text.len() > MAX_TOKEN_BYTES.div_ceil(3) * 4 {
            return Err(TokenError::Malformed);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| TokenError::Malformed)?;
        parse(&bytes)?;
        Ok(Self(bytes))
    }
}

impl fmt::Debug for AdmissionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AdmissionToken({} bytes, [redacted])", self.0.len())
    }
}

impl FromStr for AdmissionToken {
    type Err = TokenError;

    fn from_str(text: &str) -> Result<Self, TokenError> {
        Self::from_text(text)
    }
}

/// Checks a token for a session of `group` at `now_secs` (Unix seconds): layout, then the
/// operator's signature, then the expiry, then the scope. Returns what it claims.
pub fn verify_token(
    key: &OperatorPublicKey,
    token: &[u8],
    group: &GroupId,
    now_secs: u64,
) -> Result<TokenClaims, TokenError> {
    let (claims, signed_len) = parse(token)?;
    let (signed, signature) = token.split_at(signed_len);
    let signature: &[u8; SIGNATURE_LEN] =
        signature.try_into().map_err(|_| TokenError::Malformed)?;
    key.0
        .verify_strict(&signed_message(signed), &Signature::from_bytes(signature))
        .map_err(|_| TokenError::BadSignature)?;
    if now_secs >= claims.expires_at_secs {
        return Err(TokenError::Expired {
            expired_at_secs: claims.expires_at_secs,
        });
    }
    if !claims.scope.allows(group) {
        return Err(TokenError::OutOfScope);
    }
    Ok(claims)
}

/// What the signature covers: the context, then the token's bytes before the signature.
fn signed_message(body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGNING_CONTEXT.len() + body.len());
    m.extend_from_slice(SIGNING_CONTEXT);
    m.extend_from_slice(body);
    m
}

/// Reads the layout: the claims, and where the signature starts.
fn parse(token: &[u8]) -> Result<(TokenClaims, usize), TokenError> {
    let mut r = Reader(token);
    if r.take::<1>()? != [ADMISSION_TOKEN_VERSION] {
        return Err(TokenError::Malformed);
    }
    let id = r.take::<8>()?;
    let expires_at_secs = u64::from_be_bytes(r.take::<8>()?);
    let max_bytes = NonZeroU64::new(u64::from_be_bytes(r.take::<8>()?));
    let count = usize::from(u16::from_be_bytes(r.take::<2>()?));
    if count > MAX_TOKEN_GROUPS {
        return Err(TokenError::Malformed);
    }
    let scope = if count == 0 {
        TokenScope::AllGroups
    } else {
        let mut groups = Vec::with_capacity(count);
        for _ in 0..count {
            groups.push(GroupId::from_bytes(r.take::<32>()?));
        }
        TokenScope::Groups(groups)
    };
    let signed_len = token.len() - r.0.len();
    if r.0.len() != SIGNATURE_LEN {
        return Err(TokenError::Malformed);
    }
    let claims = TokenClaims {
        id,
        expires_at_secs,
        scope,
        max_bytes,
    };
    Ok((claims, signed_len))
}

/// Fixed-size reads from the front of a byte slice.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], TokenError> {
        let (head, rest) = self.0.split_at_checked(N).ok_or(TokenError::Malformed)?;
        self.0 = rest;
        head.try_into().map_err(|_| TokenError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    use super::*;
    use crate::test_util::assert_redacted;

    const NOW: u64 = 1_800_000_000;

    fn key(seed: u64) -> OperatorKey {
        OperatorKey::random(&mut ChaCha20Rng::seed_from_u64(seed))
    }

    fn group(n: u8) -> GroupId {
        GroupId::from_bytes([n; 32])
    }

    fn claims(scope: TokenScope) -> TokenClaims {
        TokenClaims {
            id: [7; 8],
            expires_at_secs: NOW + 3600,
            scope,
            max_bytes: NonZeroU64::new(1 << 20),
        }
    }

    /// Key 1 and a token of it for group 1 only.
    fn group_one_token() -> (OperatorKey, AdmissionToken) {
        let k = key(1);
        let token = k
            .issue(&claims(TokenScope::Groups(vec![group(1)])))
            .unwrap();
        (k, token)
    }

    #[test]
    fn a_valid_token_round_trips_through_text_and_verifies() {
        let k = key(1);
        let c = claims(TokenScope::Groups(vec![group(1), group(2)]));
        let token = k.issue(&c).unwrap();
        assert_eq!(token.as_bytes().len(), HEADER_LEN + 64 + SIGNATURE_LEN);
        let text = token.to_text();
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{text}"
        );
        let back: AdmissionToken = format!("  {text}\n").parse().unwrap();
        assert_eq!(back, token);
        let got = verify_token(&k.public_key(), back.as_bytes(), &group(2), NOW).unwrap();
        assert_eq!(got, c);
        assert_eq!(got.short_id(), "07070707");

        let all = k.issue(&claims(TokenScope::AllGroups)).unwrap();
        assert_eq!(all.as_bytes().len(), HEADER_LEN + SIGNATURE_LEN);
        let got = verify_token(&k.public_key(), all.as_bytes(), &group(9), NOW).unwrap();
        assert_eq!(got.scope, TokenScope::AllGroups);
    }

    #[test]
    fn a_token_of_another_key_is_forged() {
        let token = key(1).issue(&claims(TokenScope::AllGroups)).unwrap();
        assert_eq!(
            verify_token(&key(2).public_key(), token.as_bytes(), &group(1), NOW),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn expiry_is_exclusive_and_checked_after_the_signature() {
        let k = key(1);
        let token = k.issue(&claims(TokenScope::AllGroups)).unwrap();
        let exp = NOW + 3600;
        assert!(verify_token(&k.public_key(), token.as_bytes(), &group(1), exp - 1).is_ok());
        for now in [exp, exp + 1, u64::MAX] {
            assert_eq!(
                verify_token(&k.public_key(), token.as_bytes(), &group(1), now),
                Err(TokenError::Expired {
                    expired_at_secs: exp
                })
            );
        }
        // An expired token of another key is reported as forged, not expired.
        assert_eq!(
            verify_token(&key(3).public_key(), token.as_bytes(), &group(1), exp),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn a_token_for_other_groups_is_out_of_scope() {
        let (k, token) = group_one_token();
        assert_eq!(
            verify_token(&k.public_key(), token.as_bytes(), &group(2), NOW),
            Err(TokenError::OutOfScope)
        );
    }

    #[test]
    fn every_bit_flip_is_refused() {
        let (k, token) = group_one_token();
        let bytes = token.as_bytes();
        for i in 0..bytes.len() * 8 {
            let mut flipped = bytes.to_vec();
            flipped[i / 8] ^= 1 << (i % 8);
            let r = verify_token(&k.public_key(), &flipped, &group(1), NOW);
            assert!(
                matches!(r, Err(TokenError::Malformed | TokenError::BadSignature)),
                "bit {i}: {r:?}"
            );
        }
    }

    #[test]
    fn truncated_extended_and_garbage_tokens_are_malformed() {
        let (k, token) = group_one_token();
        let bytes = token.as_bytes();
        for len in 0..bytes.len() {
            assert_eq!(
                verify_token(&k.public_key(), &bytes[..len], &group(1), NOW),
                Err(TokenError::Malformed),
                "{len} bytes"
            );
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert_eq!(
            verify_token(&k.public_key(), &longer, &group(1), NOW),
            Err(TokenError::Malformed)
        );
        // A group count above the maximum is refused before anything is read for it.
        let mut many = bytes.to_vec();
        many[25..27].copy_from_slice(&65u16.to_be_bytes());
        assert_eq!(
            verify_token(&k.public_key(), &many, &group(1), NOW),
            Err(TokenError::Malformed)
        );
        for text in ["", "not base64!", "AAAA", &"A".repeat(4 * MAX_TOKEN_BYTES)] {
            assert_eq!(
                AdmissionToken::from_text(text),
                Err(TokenError::Malformed),
                "{text:.20}"
            );
        }
    }

    #[test]
    fn issue_bounds_the_scope() {
        let k = key(1);
        let most: Vec<GroupId> = (0..64).map(group).collect();
        let token = k.issue(&claims(TokenScope::Groups(most))).unwrap();
        assert_eq!(token.as_bytes().len(), MAX_TOKEN_BYTES);
        AdmissionToken::from_text(&token.to_text()).unwrap();
        let too_many: Vec<GroupId> = (0..65).map(group).collect();
        assert_eq!(
            k.issue(&claims(TokenScope::Groups(too_many))),
            Err(TokenError::TooManyGroups)
        );
        assert_eq!(
            k.issue(&claims(TokenScope::Groups(Vec::new()))),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn public_keys_parse_from_hex_and_bad_ones_are_refused() {
        let k = key(1);
        let text = k.public_key().to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(text.parse::<OperatorPublicKey>().unwrap(), k.public_key());
        for bad in ["", "zz", &"0".repeat(63), &"0".repeat(64)] {
            assert_eq!(
                bad.parse::<OperatorPublicKey>(),
                Err(TokenError::InvalidKey),
                "{bad}"
            );
        }
    }

    #[test]
    fn debug_never_shows_secrets() {
        let k = key(1);
        assert_redacted(&format!("{k:?}"), k.secret_bytes().as_slice());
        assert!(format!("{k:?}").contains(&k.public_key().to_string()));
        let token = k.issue(&claims(TokenScope::AllGroups)).unwrap();
        let debug = format!("{token:?}");
        assert!(debug.contains("[redacted]"), "{debug}");
        assert!(!debug.contains(&token.to_text()[..16]), "{debug}");
        assert_eq!(
            OperatorKey::from_secret_bytes(*k.secret_bytes()).public_key(),
            k.public_key()
        );
    }
}
