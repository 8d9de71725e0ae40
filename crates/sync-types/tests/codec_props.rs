//! Property tests for the frame codec: a stream of frames split at arbitrary points decodes to
//! exactly the original messages; hostile streams never panic and never make the decoder
//! reserve memory for frames that have not arrived.

mod common;

use bytes::{BufMut, BytesMut};
use common::*;
use proptest::prelude::*;
use proptest::sample::Index;
use sync_types::*;

/// Feeds `stream` to a decoder in the given chunk sizes and returns what it decoded, stopping at
/// the first error. Checks the decoder's contract at every step.
fn feed(
    codec: &FrameCodec,
    stream: &[u8],
    cuts: &[usize],
) -> Result<(Vec<Message>, Option<FrameError>, usize), TestCaseError> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut pos = 0usize;
    let mut cut_iter = cuts.iter().copied().chain(std::iter::once(stream.len()));
    while pos < stream.len() {
        let next = cut_iter
            .next()
            .unwrap_or(stream.len())
            .clamp(pos, stream.len());
        buf.put_slice(&stream[pos..next]);
        pos = next;
        loop {
            let before_len = buf.len();
            let before_cap = buf.capacity();
            match codec.decode(&mut buf) {
                Ok(Some(m)) => out.push(m),
                Ok(None) => {
                    prop_assert_eq!(buf.len(), before_len, "Ok(None) consumed bytes");
                    prop_assert_eq!(buf.capacity(), before_cap, "Ok(None) reserved memory");
                    break;
                }
                Err(e) => return Ok((out, Some(e), buf.len())),
            }
        }
    }
    Ok((out, None, buf.len()))
}

fn sorted_cuts(len: usize, cuts: &[Index]) -> Vec<usize> {
    let mut c: Vec<usize> = cuts.iter().map(|i| i.index(len + 1)).collect();
    c.sort_unstable();
    c
}

proptest! {
    #[test]
    fn chunked_stream_yields_exactly_the_original_messages(
        msgs in prop::collection::vec(message(), 1..12),
        cuts in prop::collection::vec(any::<Index>(), 0..40),
    ) {
        let codec = FrameCodec::default();
        let mut stream = BytesMut::new();
        for m in &msgs {
            codec.encode(m, &mut stream).map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        let expected_len: usize = msgs.iter().map(|m| 4 + m.encoded_len()).sum();
        prop_assert_eq!(stream.len(), expected_len);
        let cuts = sorted_cuts(stream.len(), &cuts);
        let (out, err, left) = feed(&codec, &stream, &cuts)?;
        prop_assert_eq!(err, None);
        prop_assert_eq!(left, 0);
        prop_assert_eq!(out, msgs);
    }

    #[test]
    fn header_then_body_reading_agrees_with_decode(m in message()) {
        let codec = FrameCodec::default();
        let frame = codec.encode_to_bytes(&m).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let len = codec.decode_header(&frame[..4]).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(len, Some(frame.len() - 4));
        prop_assert_eq!(codec.decode_body(&frame[4..]), Ok(m));
    }

    #[test]
    fn oversized_headers_are_refused_without_growing_the_buffer(
        max in 1usize..100_000,
        excess in 1u32..=u32::MAX,
        tail in prop::collection::vec(any::<u8>(), 0..16),
    ) {
        let codec = FrameCodec::new(max);
        let len = (max as u64 + u64::from(excess)).min(u64::from(u32::MAX)) as u32;
        prop_assume!(len as usize > max);
        let mut buf = BytesMut::with_capacity(4 + tail.len());
        buf.put_u32(len);
        buf.put_slice(&tail);
        let cap = buf.capacity();
        prop_assert_eq!(codec.decode(&mut buf), Err(FrameError::TooLarge { len: len as usize, max }));
        prop_assert_eq!(buf.capacity(), cap);
        prop_assert_eq!(buf.len(), 4 + tail.len());
    }

    #[test]
    fn random_streams_never_panic(
        stream in prop::collection::vec(any::<u8>(), 0..1024),
        cuts in prop::collection::vec(any::<Index>(), 0..16),
        max in prop_oneof![Just(DEFAULT_MAX_FRAME), 1usize..64],
    ) {
        let codec = FrameCodec::new(max);
        let cuts = sorted_cuts(stream.len(), &cuts);
        let (out, _, _) = feed(&codec, &stream, &cuts)?;
        for m in &out {
            prop_assert!(m.encoded_len() <= max);
            check_decoded_reencodes(&m.to_bytes().map_err(|e| TestCaseError::fail(e.to_string()))?)?;
        }
    }

    #[test]
    fn corrupted_streams_never_panic_and_keep_a_valid_prefix(
        msgs in prop::collection::vec(message(), 1..6),
        flips in prop::collection::vec((any::<Index>(), 0u8..8), 1..4),
        cuts in prop::collection::vec(any::<Index>(), 0..16),
    ) {
        let codec = FrameCodec::default();
        let mut stream = BytesMut::new();
        for m in &msgs {
            codec.encode(m, &mut stream).map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        let mut stream = stream.to_vec();
        let mut first_flip = stream.len();
        for (at, bit) in &flips {
            let i = at.index(stream.len());
            stream[i] ^= 1 << bit;
            first_flip = first_flip.min(i);
        }
        let cuts = sorted_cuts(stream.len(), &cuts);
        let (out, _, _) = feed(&codec, &stream, &cuts)?;
        // Frames entirely before the first flipped byte decode unchanged.
        let mut end = 0usize;
        for (i, m) in msgs.iter().enumerate() {
            end += 4 + m.encoded_len();
            if end <= first_flip {
                prop_assert_eq!(out.get(i), Some(m));
            }
        }
        for m in &out {
            check_decoded_reencodes(&m.to_bytes().map_err(|e| TestCaseError::fail(e.to_string()))?)?;
        }
    }

    #[test]
    fn encode_refuses_messages_above_max_and_writes_nothing(m in message(), max in 1usize..4096) {
        let codec = FrameCodec::new(max);
        let mut buf = BytesMut::new();
        buf.put_slice(b"keep");
        let res = codec.encode(&m, &mut buf);
        if m.encoded_len() > max {
            prop_assert_eq!(res, Err(FrameError::TooLarge { len: m.encoded_len(), max }));
            prop_assert_eq!(&buf[..], b"keep");
        } else {
            prop_assert_eq!(res, Ok(()));
            prop_assert_eq!(buf.len(), 4 + 4 + m.encoded_len());
        }
    }
}
