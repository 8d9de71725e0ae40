//! Proptest strategies for every message, shared by the property tests.
#![allow(dead_code)]

use proptest::prelude::*;
use proptest::sample::select;
use sync_types::*;

/// A strategy for the struct `$ty`: a tuple of the fields' strategies, drawn in the order
/// written, mapped into the struct.
macro_rules! struct_of {
    ($ty:ident { $($field:ident: $strategy:expr),+ $(,)? }) => {
        ($($strategy,)+).prop_map(|($($field,)+)| $ty { $($field),+ })
    };
}

/// Defines `pub(crate) fn $name() -> impl Strategy<Value = $ty>` for each listed struct, its
/// fields drawn from the strategies given (see `struct_of!`).
macro_rules! struct_strategies {
    ($($name:ident: $ty:ident { $($field:ident: $strategy:expr),+ $(,)? })+) => {$(
        pub(crate) fn $name() -> impl Strategy<Value = $ty> {
            struct_of!($ty { $($field: $strategy),+ })
        }
    )+};
}

/// Sizes where MessagePack headers change width.
const SIZE_EDGES: &[usize] = &[0, 1, 15, 16, 31, 32, 255, 256, 65_535, 65_536, 70_000];

/// Deterministic filler, much cheaper than drawing every byte from proptest.
pub(crate) fn pattern(n: usize, seed: u64) -> Vec<u8> {
    sync_testkit::pattern_bytes(n, seed)
}

pub(crate) fn u64s() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        0u64..300,
        select(vec![
            0x7f,
            0x80,
            0xff,
            0x100,
            0xffff,
            0x1_0000,
            0xffff_ffff,
            0x1_0000_0000,
            u64::MAX
        ]),
    ]
}

pub(crate) fn u32s() -> impl Strategy<Value = u32> {
    prop_oneof![
        any::<u32>(),
        0u32..300,
        select(vec![0x7f, 0x80, 0xff, 0x100, 0xffff, 0x1_0000, u32::MAX])
    ]
}

pub(crate) fn payload() -> impl Strategy<Value = Payload> {
    prop_oneof![
        6 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Payload::from),
        3 => (0usize..2048, any::<u64>()).prop_map(|(n, s)| Payload::from(pattern(n, s))),
        1 => (select(SIZE_EDGES), any::<u64>()).prop_map(|(n, s)| Payload::from(pattern(n, s))),
    ]
}

pub(crate) fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "\\PC{0,24}",
        1 => select(SIZE_EDGES).prop_map(|n| "a".repeat(n)),
    ]
}

pub(crate) fn blob_id() -> impl Strategy<Value = BlobId> {
    any::<[u8; 16]>().prop_map(BlobId::from_bytes)
}

pub(crate) fn device_id() -> impl Strategy<Value = DeviceId> {
    any::<[u8; 32]>().prop_map(DeviceId::from_bytes)
}

pub(crate) fn group_id() -> impl Strategy<Value = GroupId> {
    any::<[u8; 32]>().prop_map(GroupId::from_bytes)
}

pub(crate) fn cursor() -> impl Strategy<Value = Cursor> {
    u64s().prop_map(Cursor::new)
}

pub(crate) fn error_code() -> impl Strategy<Value = ErrorCode> {
    prop_oneof![
        select(ErrorCode::ALL.to_vec()),
        any::<u16>().prop_map(ErrorCode::from_u16)
    ]
}

fn grants() -> impl Strategy<Value = Vec<Grant>> {
    prop::collection::vec(
        struct_of!(Grant {
            device: device_id(),
            epoch: u32s(),
            envelope: payload(),
        }),
        0..4,
    )
}

// `pub(crate) fn name() -> impl Strategy<Value = Type>`, one for each struct.
struct_strategies! {
    limits: Limits {
        max_blob_bytes: u32s(),
        max_frame_bytes: u32s(),
        max_pull_count: u32s(),
        max_pull_bytes: u32s(),
        default_ttl_secs: u32s(),
        max_ttl_secs: u32s(),
        idle_timeout_secs: u32s(),
        max_in_flight: u32s(),
    }

    hello: Hello {
        request_id: u64s(),
        version: any::<u16>(),
        group_id: group_id(),
        last_cursor: cursor(),
        auth_signature: prop::array::uniform::<_, 64>(any::<u8>()),
        admission_token: prop::option::of(payload()),
    }

    welcome: Welcome {
        request_id: u64s(),
        relay_id: any::<[u8; 32]>(),
        max_cursor: cursor(),
        limits: limits(),
        store_id: u64s(),
    }

    challenge: Challenge {
        nonce: any::<[u8; 32]>(),
    }

    push: Push {
        request_id: u64s(),
        blob_id: blob_id(),
        payload: payload(),
        ttl_secs: u32s(),
    }

    push_ack: PushAck {
        request_id: u64s(),
        blob_id: blob_id(),
        cursor: cursor(),
        server_time_ms: u64s(),
    }

    pull: Pull {
        request_id: u64s(),
        after: cursor(),
        limit: u32s(),
        max_bytes: prop::option::of(u32s()),
    }

    pull_entry: PullEntry {
        cursor: cursor(),
        blob_id: blob_id(),
        sender: device_id(),
        payload: payload(),
        timestamp_ms: u64s(),
    }

    pull_response: PullResponse {
        request_id: u64s(),
        entries: prop_oneof![
            8 => prop::collection::vec(pull_entry(), 0..6),
            // Enough entries to cross the fixarray → array16 boundary.
            1 => prop::collection::vec(pull_entry(), 14..20),
        ],
        has_more: any::<bool>(),
        max_cursor: cursor(),
        removed: u64s(),
    }

    notify: Notify {
        cursor: cursor(),
        blob_id: blob_id(),
        sender: device_id(),
        size: u32s(),
    }

    delete: Delete {
        request_id: u64s(),
        blob_id: blob_id(),
    }

    delete_ack: DeleteAck {
        request_id: u64s(),
        blob_id: blob_id(),
    }

    ping: Ping {
        request_id: u64s(),
    }

    pong: Pong {
        request_id: u64s(),
    }

    enroll: Enroll {
        request_id: u64s(),
        enrollment: payload(),
    }

    group_changed: GroupChanged {
        request_id: prop::option::of(u64s()),
        seq: u64s(),
        epoch: u32s(),
    }

    group_update: GroupUpdate {
        request_id: u64s(),
        record: prop::option::of(payload()),
        grants: grants(),
    }

    group_get: GroupGet {
        request_id: u64s(),
        group_id: group_id(),
        after_seq: u64s(),
    }

    group_info: GroupInfo {
        request_id: u64s(),
        records: prop::collection::vec(payload(), 0..4),
        enrollments: prop::collection::vec(payload(), 0..4),
        grants: grants(),
    }

    content_ref: ContentRef {
        request_id: u64s(),
        blob_id: blob_id(),
        hash: any::<[u8; 32]>(),
        size: u64s(),
        chunk_size: u32s(),
        chunks: u32s(),
    }

    content_ack: ContentAck {
        request_id: u64s(),
        blob_id: blob_id(),
    }

    invite_put: InvitePut {
        request_id: u64s(),
        lookup_id: text(),
        sealed: payload(),
        ttl_secs: u32s(),
    }

    invite_stored: InviteStored {
        request_id: u64s(),
    }

    invite_get: InviteGet {
        request_id: u64s(),
        lookup_id: text(),
    }

    invite_found: InviteFound {
        request_id: u64s(),
        sealed: payload(),
    }

    bye: Bye {
        reason: prop::option::of(text()),
    }

    wire_error: WireError {
        request_id: prop::option::of(u64s()),
        code: error_code(),
        message: text(),
        retry_after_ms: prop::option::of(u64s()),
    }
}

/// Any message, every type equally likely.
pub(crate) fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        hello().prop_map(Message::Hello),
        welcome().prop_map(Message::Welcome),
        challenge().prop_map(Message::Challenge),
        push().prop_map(Message::Push),
        push_ack().prop_map(Message::PushAck),
        pull().prop_map(Message::Pull),
        pull_response().prop_map(Message::PullResponse),
        notify().prop_map(Message::Notify),
        delete().prop_map(Message::Delete),
        delete_ack().prop_map(Message::DeleteAck),
        ping().prop_map(Message::Ping),
        pong().prop_map(Message::Pong),
        enroll().prop_map(Message::Enroll),
        group_changed().prop_map(Message::GroupChanged),
        group_update().prop_map(Message::GroupUpdate),
        group_get().prop_map(Message::GroupGet),
        group_info().prop_map(Message::GroupInfo),
        content_ref().prop_map(Message::ContentRef),
        content_ack().prop_map(Message::ContentAck),
        invite_put().prop_map(Message::InvitePut),
        invite_stored().prop_map(Message::InviteStored),
        invite_get().prop_map(Message::InviteGet),
        invite_found().prop_map(Message::InviteFound),
        bye().prop_map(Message::Bye),
        wire_error().prop_map(Message::Error),
    ]
}

/// The message with every payload emptied, and (payload bytes removed, number of payloads).
pub(crate) fn without_payloads(msg: &Message) -> (Message, usize, usize) {
    let mut m = msg.clone();
    let mut bytes = 0usize;
    let mut count = 0usize;
    let mut take = |p: &mut Payload| {
        bytes += p.len();
        count += 1;
        *p = Payload::new();
    };
    match &mut m {
        Message::Hello(h) => {
            if let Some(t) = h.admission_token.as_mut() {
                take(t);
            }
        }
        Message::Push(p) => take(&mut p.payload),
        Message::PullResponse(r) => r.entries.iter_mut().for_each(|e| take(&mut e.payload)),
        Message::InvitePut(i) => take(&mut i.sealed),
        Message::InviteFound(i) => take(&mut i.sealed),
        _ => {}
    }
    (m, bytes, count)
}

/// What every decoder must guarantee for arbitrary input: no panic, and anything accepted
/// re-encodes to bytes that decode to the same message, with the advertised length.
pub(crate) fn check_decoded_reencodes(input: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(m) = Message::from_bytes(input) {
        let again = m
            .to_bytes()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(again.len(), m.encoded_len());
        prop_assert_eq!(Message::from_bytes(&again), Ok(m));
    }
    Ok(())
}
