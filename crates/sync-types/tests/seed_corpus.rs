//! The fuzz corpus in `fuzz/seeds/frame_decode/` doubles as a golden record of the wire format:
//! every message it holds must decode and re-encode to exactly the same bytes, one message per
//! type. A change to any field order, integer width or type byte fails here.

use std::fs;
use std::path::PathBuf;

use bytes::BytesMut;
use sync_types::{DEFAULT_MAX_FRAME, FrameCodec, Message, MessageType};

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/frame_decode");
    let mut files: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("directory entry").path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .expect("UTF-8 file name")
                .to_string();
            let bytes = fs::read(&path).expect("readable corpus file");
            (name, bytes)
        })
        .collect();
    files.sort();
    files
}

/// Decodes a stream of frames completely; panics on anything but whole, valid frames.
fn frames(name: &str, stream: &[u8]) -> Vec<Message> {
    let codec = FrameCodec::new(DEFAULT_MAX_FRAME);
    let mut buf = BytesMut::from(stream);
    let mut out = Vec::new();
    while !buf.is_empty() {
        match codec.decode(&mut buf) {
            Ok(Some(m)) => out.push(m),
            other => panic!("{name}: {other:?} with {} bytes left", buf.len()),
        }
    }
    out
}

#[test]
fn every_message_in_the_corpus_re_encodes_byte_for_byte() {
    let mut seen = Vec::new();
    for (name, bytes) in corpus() {
        if name.starts_with("msg-") {
            let m = Message::from_bytes(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(m.to_bytes().expect("encode"), bytes, "{name}");
            assert_eq!(m.encoded_len(), bytes.len(), "{name}");
            seen.push(m.message_type());
        } else {
            // Frame files: one selector byte for the fuzz target, then whole frames.
            let (_, stream) = bytes.split_first().expect("non-empty corpus file");
            let codec = FrameCodec::new(DEFAULT_MAX_FRAME);
            let mut again = BytesMut::new();
            for m in frames(&name, stream) {
                codec.encode(&m, &mut again).expect("encode");
            }
            assert_eq!(&again[..], stream, "{name}");
        }
    }
    seen.sort();
    assert_eq!(seen, MessageType::ALL, "one msg- file per message type");
}
