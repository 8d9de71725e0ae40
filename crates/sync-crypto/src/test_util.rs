//! Helpers shared by the unit tests.

use std::convert::Infallible;
use std::fmt::Debug;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use rand_chacha::ChaCha20Rng;
use rand_core::{SeedableRng, TryCryptoRng, TryRng};

/// Asserts that `debug` shows none of the usual encodings of `secret`: hex (either case, or its
/// first 4 bytes), base64 (std/url, padded or not), or Rust's `Debug` of the byte array.
pub(crate) fn assert_redacted(debug: &str, secret: &[u8]) {
    assert!(debug.contains("[redacted]"), "{debug}");
    let lower = hex::encode(secret);
    let mut forbidden = vec![
        lower.clone(),
        lower.to_uppercase(),
        lower[..8].to_string(),
        lower[..8].to_uppercase(),
        format!("{secret:?}"),
        format!("{:?}", &secret[..4])
            .trim_end_matches(']')
            .to_string(),
    ];
    for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
        forbidden.push(engine.encode(secret));
    }
    forbidden.push(STANDARD_NO_PAD.encode(secret)[..8].to_string());
    forbidden.push(URL_SAFE_NO_PAD.encode(secret)[..8].to_string());
    for f in forbidden {
        assert!(!debug.contains(&f), "Debug output {debug:?} leaks {f:?}");
    }
}

/// Asserts that `make` depends on its RNG alone: the same seed gives the same value, another
/// seed another value.
pub(crate) fn assert_seeded<T: PartialEq + Debug>(make: impl Fn(&mut ChaCha20Rng) -> T) {
    let a = make(&mut ChaCha20Rng::seed_from_u64(1));
    let b = make(&mut ChaCha20Rng::seed_from_u64(1));
    let c = make(&mut ChaCha20Rng::seed_from_u64(2));
    assert_eq!(a, b);
    assert_ne!(a, c);
}

/// A stand-in RNG for known-answer tests: its bytes are `start, start + 1, …` (wrapping), so
/// output that draws a nonce from the RNG is fixed. Not random at all: tests only.
pub(crate) struct CountingRng(pub(crate) u8);

impl TryRng for CountingRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut bytes = [0; 4];
        self.try_fill_bytes(&mut bytes)?;
        Ok(u32::from_le_bytes(bytes))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut bytes = [0; 8];
        self.try_fill_bytes(&mut bytes)?;
        Ok(u64::from_le_bytes(bytes))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for byte in dst {
            *byte = self.0;
            self.0 = self.0.wrapping_add(1);
        }
        Ok(())
    }
}

impl TryCryptoRng for CountingRng {}
