//! Sizes, envelope and error handling of the message encoding.

use serde::Serialize;

use super::*;
use crate::error::{DecodeError, ErrorCode};
use crate::ids::{BlobId, Cursor, DeviceId};
use crate::limits::{
    DEFAULT_MAX_FRAME, DEFAULT_MAX_PAYLOAD, PULL_ENTRY_OVERHEAD, PULL_RESPONSE_OVERHEAD,
    PUSH_OVERHEAD, pull_entry_budget,
};
use crate::payload::Payload;

fn max_push(payload_len: usize) -> Message {
    Message::Push(Push {
        request_id: u64::MAX,
        blob_id: BlobId::from_bytes([0xff; 16]),
        payload: Payload::from(vec![0xA5; payload_len]),
        ttl_secs: u32::MAX,
    })
}

fn max_entry(payload_len: usize) -> PullEntry {
    PullEntry {
        cursor: Cursor::new(u64::MAX),
        blob_id: BlobId::from_bytes([0xff; 16]),
        sender: DeviceId::from_bytes([0xee; 32]),
        payload: Payload::from(vec![0x5A; payload_len]),
        timestamp_ms: u64::MAX,
    }
}

#[test]
fn push_of_one_mib_costs_exactly_40_bytes_of_framing() {
    let msg = max_push(DEFAULT_MAX_PAYLOAD);
    let bytes = msg.to_bytes().expect("encode");
    assert_eq!(bytes.len(), DEFAULT_MAX_PAYLOAD + PUSH_OVERHEAD);
    assert_eq!(bytes.len(), DEFAULT_MAX_PAYLOAD + 40);
    assert!(bytes.len() <= DEFAULT_MAX_PAYLOAD + 64);
    assert_eq!(msg.encoded_len(), bytes.len());
    assert_eq!(Message::from_bytes(&bytes), Ok(msg));
}

#[test]
fn pull_response_with_one_max_entry_fits_the_default_frame() {
    let entry = max_entry(DEFAULT_MAX_PAYLOAD);
    assert_eq!(
        entry.encoded_len(),
        DEFAULT_MAX_PAYLOAD + PULL_ENTRY_OVERHEAD
    );
    assert!(entry.encoded_len() <= pull_entry_budget(DEFAULT_MAX_FRAME));
    let msg = Message::PullResponse(PullResponse {
        request_id: u64::MAX,
        entries: vec![entry],
        has_more: true,
        max_cursor: Cursor::new(u64::MAX),
        removed: u64::MAX,
    });
    let bytes = msg.to_bytes().expect("encode");
    assert_eq!(bytes.len(), msg.encoded_len());
    assert!(bytes.len() <= DEFAULT_MAX_PAYLOAD + PULL_RESPONSE_OVERHEAD + PULL_ENTRY_OVERHEAD);
    assert!(bytes.len() <= DEFAULT_MAX_FRAME);
    assert_eq!(Message::from_bytes(&bytes), Ok(msg));
}

#[test]
fn pull_response_overhead_holds_for_a_huge_entry_count() {
    let entries = vec![max_entry(0); 70_000];
    let sum: usize = entries.iter().map(PullEntry::encoded_len).sum();
    let msg = Message::PullResponse(PullResponse {
        request_id: u64::MAX,
        entries,
        has_more: false,
        max_cursor: Cursor::new(u64::MAX),
        removed: u64::MAX,
    });
    let bytes = msg.to_bytes().expect("encode");
    assert_eq!(bytes.len(), msg.encoded_len());
    assert_eq!(bytes.len(), sum + PULL_RESPONSE_OVERHEAD);
}

#[test]
fn envelope_is_two_bytes_and_type_bytes_are_fixints() {
    for ty in MessageType::ALL {
        assert!(ty.as_u8() < 0x80, "{ty:?}");
        assert_eq!(MessageType::from_u8(ty.as_u8()), Some(*ty));
    }
    let bytes = Message::Ping(Ping { request_id: 5 })
        .to_bytes()
        .expect("encode");
    assert_eq!(bytes, [0x92, 0x20, 0x91, 0x05]);
}

#[test]
fn unknown_type_is_typed() {
    // [0x60, [1]] — a well-formed envelope with a type this version does not know.
    assert_eq!(
        Message::from_bytes(&[0x92, 0x60, 0x91, 0x01]),
        Err(DecodeError::UnknownType(0x60))
    );
    assert_eq!(
        Message::from_bytes(&[0x92, 0xcc, 0xf0, 0xc0]),
        Err(DecodeError::UnknownType(0xf0))
    );
    assert_eq!(
        Message::from_bytes(&[0x92, 0x00]),
        Err(DecodeError::UnknownType(0))
    );
}

#[test]
fn trailing_bytes_and_bad_envelopes_are_typed() {
    let mut bytes = Message::Ping(Ping { request_id: 5 })
        .to_bytes()
        .expect("encode");
    bytes.extend_from_slice(&[0, 0, 0]);
    assert_eq!(
        Message::from_bytes(&bytes),
        Err(DecodeError::TrailingBytes(3))
    );
    assert_eq!(Message::from_bytes(&[]), Err(DecodeError::Truncated));
    assert_eq!(Message::from_bytes(&[0x92]), Err(DecodeError::Truncated));
    assert_eq!(
        Message::from_bytes(&[0x92, 0x20]),
        Err(DecodeError::Truncated)
    );
    assert!(matches!(
        Message::from_bytes(&[0x93, 0x20, 0x91, 5, 1]),
        Err(DecodeError::Malformed(_))
    ));
    assert!(matches!(
        Message::from_bytes(&[0x92, 0xa1, b'x', 0x91, 5]),
        Err(DecodeError::Malformed(_))
    ));
    // Body has an extra field.
    assert!(matches!(
        Message::from_bytes(&[0x92, 0x20, 0x92, 5, 6]),
        Err(DecodeError::Malformed(_))
    ));
    // Body is missing its field.
    assert!(matches!(
        Message::from_bytes(&[0x92, 0x20, 0x90]),
        Err(DecodeError::Malformed(_))
    ));
}

#[test]
fn payload_sent_as_integer_array_is_rejected() {
    // A Push whose payload is an array of integers instead of bin.
    #[derive(Serialize)]
    struct BadPush {
        request_id: u64,
        blob_id: BlobId,
        payload: Vec<u8>,
        ttl_secs: u32,
    }
    let mut bytes = vec![0x92, 0x10];
    let bad = BadPush {
        request_id: 1,
        blob_id: BlobId::from_bytes([1; 16]),
        payload: vec![1, 2, 3],
        ttl_secs: 0,
    };
    bytes.extend(rmp_serde::to_vec(&bad).expect("encode"));
    assert!(matches!(
        Message::from_bytes(&bytes),
        Err(DecodeError::Malformed(_))
    ));
}

#[test]
fn malformed_detail_never_quotes_input_strings() {
    // Ping whose request_id is a string.
    let mut bytes = vec![0x92, 0x20, 0x91];
    bytes.extend(rmp_serde::to_vec("SECRET-CONTENT").expect("encode"));
    let err = Message::from_bytes(&bytes).expect_err("must fail");
    assert!(matches!(err, DecodeError::Malformed(_)));
    assert!(!err.to_string().contains("SECRET"), "{err}");
}

#[test]
fn request_ids_are_echoed_where_the_table_says() {
    assert_eq!(Message::Ping(Ping { request_id: 9 }).request_id(), Some(9));
    let notify = Message::Notify(Notify {
        cursor: Cursor::new(1),
        blob_id: BlobId::from_bytes([0; 16]),
        sender: DeviceId::from_bytes([0; 32]),
        size: 1,
    });
    assert_eq!(notify.request_id(), None);
    assert_eq!(
        Message::Challenge(Challenge { nonce: [0; 32] }).request_id(),
        None
    );
}

#[test]
fn wire_error_helpers() {
    let e = WireError::new(ErrorCode::RateLimited, "slow down")
        .for_request(7)
        .retry_after_ms(250);
    assert_eq!(e.request_id, Some(7));
    assert!(e.is_retryable());
    assert!(
        WireError::new(ErrorCode::Unknown(999), "x")
            .retry_after_ms(1)
            .is_retryable()
    );
    assert!(!WireError::new(ErrorCode::Unauthorized, "no").is_retryable());
    let msg = Message::Error(e);
    let bytes = msg.to_bytes().expect("encode");
    assert_eq!(bytes.len(), msg.encoded_len());
    assert_eq!(Message::from_bytes(&bytes), Ok(msg));
}

#[test]
fn directions() {
    assert_eq!(MessageType::Hello.direction(), Direction::ClientToRelay);
    assert_eq!(MessageType::Notify.direction(), Direction::RelayToClient);
    assert_eq!(MessageType::Error.direction(), Direction::Both);
}
