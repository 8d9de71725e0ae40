//! Short codes: 16 symbols a person can read aloud or type, half mailbox address, half key.

use std::fmt;

use rand_core::CryptoRng;
use zeroize::{Zeroize, Zeroizing};

/// Crockford base32 without I, L, O, U: 32 symbols nobody confuses when reading aloud.
pub(super) const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
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
