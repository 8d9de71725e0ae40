//! Micro-benchmarks of the frame codec: encoding and decoding one whole frame (length prefix and
//! MessagePack body) of
//!
//! - a `Push` carrying a 1 KiB payload (a typical small sealed blob),
//! - a `Push` carrying a 1 MiB payload (the largest blob the default limits allow),
//! - a `PullResponse` of 100 entries of 1 KiB each (a typical catch-up page).
//!
//! Throughput is reported in bytes of frame per second. Decoding starts from a buffer holding
//! exactly the frame (copying it there is not timed).
//!
//! Run: `cargo bench -p sync-types` (`-- --quick` for a short run, `-- push_1mib` for one case).

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, Criterion, Throughput};
use sync_types::{
    BlobId, Cursor, DeviceId, FrameCodec, Message, Payload, PullEntry, PullResponse, Push,
};

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// A payload of `len` bytes that does not compress to anything special.
fn payload(len: usize) -> Payload {
    Payload::from(
        (0..len)
            .map(|i| u8::try_from(i.wrapping_mul(31) % 251).unwrap_or(0))
            .collect::<Vec<u8>>(),
    )
}

fn push(len: usize) -> Message {
    Message::Push(Push {
        request_id: 42,
        blob_id: BlobId::from_random_bytes([7; 16]),
        payload: payload(len),
        ttl_secs: 0,
    })
}

fn pull_response(entries: u64, len: usize) -> Message {
    Message::PullResponse(PullResponse {
        request_id: 43,
        entries: (1..=entries)
            .map(|cursor| PullEntry {
                cursor: Cursor::new(cursor),
                blob_id: BlobId::from_random_bytes([u8::try_from(cursor % 256).unwrap_or(0); 16]),
                sender: DeviceId::from_bytes([9; 32]),
                payload: payload(len),
                timestamp_ms: 1_700_000_000_000 + cursor,
            })
            .collect(),
        has_more: true,
        max_cursor: Cursor::new(entries + 10),
        removed: 0,
    })
}

/// Encode and decode benchmarks of `msg`, named `name`.
fn codec_case(c: &mut Criterion, name: &str, msg: &Message) {
    let codec = FrameCodec::default();
    let frame: Bytes = codec
        .encode_to_bytes(msg)
        .expect("the message fits a frame");
    let frame_len = frame.len();
    let batch = if frame_len > 64 * KIB {
        BatchSize::LargeInput
    } else {
        BatchSize::SmallInput
    };
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Bytes(frame_len as u64));
    group.bench_function("encode", |b| {
        let mut buf = BytesMut::with_capacity(frame_len);
        b.iter(|| {
            buf.clear();
            codec
                .encode(black_box(msg), &mut buf)
                .expect("the message fits a frame");
            black_box(buf.len())
        });
    });
    group.bench_function("decode", |b| {
        b.iter_batched_ref(
            || BytesMut::from(&frame[..]),
            |buf| {
                let decoded = codec.decode(buf).expect("a valid frame");
                black_box(decoded)
            },
            batch,
        );
    });
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    codec_case(&mut c, "push_1kib", &push(KIB));
    codec_case(&mut c, "push_1mib", &push(MIB));
    codec_case(&mut c, "pull_response_100x1kib", &pull_response(100, KIB));
    c.final_summary();
}
