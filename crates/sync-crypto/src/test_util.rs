//! Helpers shared by the unit tests.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

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
