//! Feeds arbitrary bytes to the wire decoders of `sync-types`.
//!
//! 1. `Message::from_bytes` on the whole input.
//! 2. `FrameCodec::decode` in a loop, the input (after its first byte) fed in chunks whose size
//!    the first byte picks, with either the default or a small maximum frame size.
//!
//! Every message that decodes must re-encode (to `encoded_len` bytes) and decode to itself; a
//! decoder that returns `Ok(None)` must not consume input. Any panic is a finding.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sync_types::{DEFAULT_MAX_FRAME, FrameCodec, Message};

fn check_round_trip(m: &Message) {
    let again = m.to_bytes().expect("a decoded message re-encodes");
    assert_eq!(again.len(), m.encoded_len(), "encoded_len is exact");
    assert_eq!(Message::from_bytes(&again).as_ref(), Ok(m), "round trip");
}

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::from_bytes(data) {
        check_round_trip(&m);
    }

    let Some((&selector, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(selector & 0x3f) + 1;
    let codec = FrameCodec::new(if selector & 0x40 == 0 { DEFAULT_MAX_FRAME } else { 256 });
    let mut buf = BytesMut::new();
    let mut decoded = Vec::new();
    'feed: for piece in stream.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.len();
            match codec.decode(&mut buf) {
                Ok(Some(m)) => {
                    assert!(m.encoded_len() <= codec.max_frame);
                    check_round_trip(&m);
                    decoded.push(m);
                }
                Ok(None) => {
                    assert_eq!(buf.len(), before, "Ok(None) consumes nothing");
                    break;
                }
                Err(_) => break 'feed,
            }
        }
    }

    // Everything decoded re-frames into a stream that decodes to the same messages.
    let mut out = BytesMut::new();
    for m in &decoded {
        codec.encode(m, &mut out).expect("a decoded message fits the same codec");
    }
    for m in &decoded {
        assert_eq!(codec.decode(&mut out).expect("re-framed stream decodes").as_ref(), Some(m));
    }
    assert!(out.is_empty());
});
