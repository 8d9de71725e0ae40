//! The `fuzz/` target's checks as a long proptest, for machines without a nightly toolchain:
//!
//! ```text
//! cargo test -p sync-types --release --test decoder_corpus -- --ignored
//! ```
//!
//! 200 000 inputs: random bytes, and valid frame streams mutated by bit flips, byte
//! overwrites, insertions, deletions, truncation and splicing. Each goes through
//! `Message::from_bytes` and through `FrameCodec::decode` fed in chunks.

mod common;

use bytes::BytesMut;
use common::*;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::Config;
use sync_types::*;

/// Same checks as `fuzz/fuzz_targets/frame_decode.rs`.
fn check_input(data: &[u8]) -> Result<(), TestCaseError> {
    check_decoded_reencodes(data)?;

    let Some((&selector, stream)) = data.split_first() else {
        return Ok(());
    };
    let chunk = usize::from(selector & 0x3f) + 1;
    let codec = FrameCodec::new(if selector & 0x40 == 0 {
        DEFAULT_MAX_FRAME
    } else {
        256
    });
    let mut buf = BytesMut::new();
    let mut decoded = Vec::new();
    'feed: for piece in stream.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.len();
            match codec.decode(&mut buf) {
                Ok(Some(m)) => {
                    prop_assert!(m.encoded_len() <= codec.max_frame);
                    check_decoded_reencodes(
                        &m.to_bytes()
                            .map_err(|e| TestCaseError::fail(e.to_string()))?,
                    )?;
                    decoded.push(m);
                }
                Ok(None) => {
                    prop_assert_eq!(buf.len(), before);
                    break;
                }
                Err(_) => break 'feed,
            }
        }
    }
    let mut out = BytesMut::new();
    for m in &decoded {
        codec
            .encode(m, &mut out)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
    }
    for m in &decoded {
        prop_assert_eq!(codec.decode(&mut out), Ok(Some(m.clone())));
    }
    prop_assert!(out.is_empty());
    Ok(())
}

#[derive(Debug, Clone)]
enum Mutation {
    FlipBit(Index, u8),
    SetByte(Index, u8),
    Insert(Index, Vec<u8>),
    Delete(Index, usize),
    Truncate(Index),
    Splice(Index, Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::SetByte(i, b)),
        (any::<Index>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
        (any::<Index>(), 1usize..8).prop_map(|(i, n)| Mutation::Delete(i, n)),
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::Splice(a, b)),
    ]
}

fn apply(data: &mut Vec<u8>, m: &Mutation) {
    if data.is_empty() {
        return;
    }
    let n = data.len();
    match m {
        Mutation::FlipBit(i, b) => data[i.index(n)] ^= 1 << b,
        Mutation::SetByte(i, v) => data[i.index(n)] = *v,
        Mutation::Insert(i, v) => {
            let at = i.index(n + 1);
            data.splice(at..at, v.iter().copied());
        }
        Mutation::Delete(i, k) => {
            let at = i.index(n);
            data.drain(at..(at + k).min(n));
        }
        Mutation::Truncate(i) => data.truncate(i.index(n + 1)),
        Mutation::Splice(a, b) => {
            // Duplicate a slice of the input somewhere else (frames out of place).
            let (x, y) = (a.index(n), b.index(n));
            let (lo, hi) = (x.min(y), x.max(y));
            let piece = data[lo..hi].to_vec();
            data.splice(lo..lo, piece);
        }
    }
}

fn input() -> impl Strategy<Value = Vec<u8>> {
    let valid_stream =
        (any::<u8>(), prop::collection::vec(message(), 1..4)).prop_map(|(sel, msgs)| {
            let codec = FrameCodec::default();
            let mut out = vec![sel & 0x3f];
            let mut buf = BytesMut::new();
            for m in &msgs {
                // Messages are far below the default maximum; an error would only drop the frame.
                let _ = codec.encode(m, &mut buf);
            }
            out.extend_from_slice(&buf);
            out
        });
    let raw_message = message().prop_map(|m| m.to_bytes().unwrap_or_default());
    prop_oneof![
        2 => prop::collection::vec(any::<u8>(), 0..256),
        4 => (valid_stream, prop::collection::vec(mutation(), 0..6)).prop_map(|(mut d, ms)| {
            ms.iter().for_each(|m| apply(&mut d, m));
            d
        }),
        2 => (raw_message, prop::collection::vec(mutation(), 0..4)).prop_map(|(mut d, ms)| {
            ms.iter().for_each(|m| apply(&mut d, m));
            d
        }),
    ]
}

proptest! {
    #![proptest_config(Config { cases: 200_000, failure_persistence: None, ..Config::default() })]

    #[test]
    #[ignore = "long: 200k inputs; run with --release -- --ignored"]
    fn decoder_survives_random_and_mutated_inputs(data in input()) {
        check_input(&data)?;
    }
}
