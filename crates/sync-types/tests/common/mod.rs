//! Proptest strategies for every message, shared by the property tests.
#![allow(dead_code)]

use proptest::prelude::*;
use proptest::sample::select;
use sync_types::*;

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

pub(crate) fn limits() -> impl Strategy<Value = Limits> {
    (
        u32s(),
        u32s(),
        u32s(),
        u32s(),
        u32s(),
        u32s(),
        u32s(),
        u32s(),
    )
        .prop_map(|(a, b, c, d, e, f, g, h)| Limits {
            max_blob_bytes: a,
            max_frame_bytes: b,
            max_pull_count: c,
            max_pull_bytes: d,
            default_ttl_secs: e,
            max_ttl_secs: f,
            idle_timeout_secs: g,
            max_in_flight: h,
        })
}

pub(crate) fn hello() -> impl Strategy<Value = Hello> {
    (
        u64s(),
        any::<u16>(),
        group_id(),
        cursor(),
        prop::array::uniform::<_, 64>(any::<u8>()),
        prop::option::of(payload()),
    )
        .prop_map(
            |(request_id, version, group_id, last_cursor, sig, token)| Hello {
                request_id,
                version,
                group_id,
                last_cursor,
                auth_signature: sig,
                admission_token: token,
            },
        )
}

pub(crate) fn welcome() -> impl Strategy<Value = Welcome> {
    (u64s(), any::<[u8; 32]>(), cursor(), limits(), u64s()).prop_map(
        |(request_id, relay_id, max_cursor, limits, store_id)| Welcome {
            request_id,
            relay_id,
            max_cursor,
            limits,
            store_id,
        },
    )
}

pub(crate) fn challenge() -> impl Strategy<Value = Challenge> {
    any::<[u8; 32]>().prop_map(|nonce| Challenge { nonce })
}

pub(crate) fn push() -> impl Strategy<Value = Push> {
    (u64s(), blob_id(), payload(), u32s()).prop_map(|(request_id, blob_id, payload, ttl_secs)| {
        Push {
            request_id,
            blob_id,
            payload,
            ttl_secs,
        }
    })
}

pub(crate) fn push_ack() -> impl Strategy<Value = PushAck> {
    (u64s(), blob_id(), cursor(), u64s()).prop_map(|(request_id, blob_id, cursor, t)| PushAck {
        request_id,
        blob_id,
        cursor,
        server_time_ms: t,
    })
}

pub(crate) fn pull() -> impl Strategy<Value = Pull> {
    (u64s(), cursor(), u32s(), prop::option::of(u32s())).prop_map(
        |(request_id, after, limit, max_bytes)| Pull {
            request_id,
            after,
            limit,
            max_bytes,
        },
    )
}

pub(crate) fn pull_entry() -> impl Strategy<Value = PullEntry> {
    (cursor(), blob_id(), device_id(), payload(), u64s()).prop_map(
        |(cursor, blob_id, sender, payload, t)| PullEntry {
            cursor,
            blob_id,
            sender,
            payload,
            timestamp_ms: t,
        },
    )
}

pub(crate) fn pull_response() -> impl Strategy<Value = PullResponse> {
    (
        u64s(),
        prop_oneof![
            8 => prop::collection::vec(pull_entry(), 0..6),
            // Enough entries to cross the fixarray → array16 boundary.
            1 => prop::collection::vec(pull_entry(), 14..20),
        ],
        any::<bool>(),
        cursor(),
    )
        .prop_map(|(request_id, entries, has_more, max_cursor)| PullResponse {
            request_id,
            entries,
            has_more,
            max_cursor,
        })
}

pub(crate) fn notify() -> impl Strategy<Value = Notify> {
    (cursor(), blob_id(), device_id(), u32s()).prop_map(|(cursor, blob_id, sender, size)| Notify {
        cursor,
        blob_id,
        sender,
        size,
    })
}

pub(crate) fn delete() -> impl Strategy<Value = Delete> {
    (u64s(), blob_id()).prop_map(|(request_id, blob_id)| Delete {
        request_id,
        blob_id,
    })
}

pub(crate) fn delete_ack() -> impl Strategy<Value = DeleteAck> {
    (u64s(), blob_id()).prop_map(|(request_id, blob_id)| DeleteAck {
        request_id,
        blob_id,
    })
}

pub(crate) fn ping() -> impl Strategy<Value = Ping> {
    u64s().prop_map(|request_id| Ping { request_id })
}

pub(crate) fn pong() -> impl Strategy<Value = Pong> {
    u64s().prop_map(|request_id| Pong { request_id })
}

pub(crate) fn revoke_device() -> impl Strategy<Value = RevokeDevice> {
    (u64s(), device_id(), u32s()).prop_map(|(request_id, device, epoch)| RevokeDevice {
        request_id,
        device,
        epoch,
    })
}

pub(crate) fn device_revoked() -> impl Strategy<Value = DeviceRevoked> {
    (prop::option::of(u64s()), device_id(), u32s()).prop_map(|(request_id, device, epoch)| {
        DeviceRevoked {
            request_id,
            device,
            epoch,
        }
    })
}

pub(crate) fn content_ref() -> impl Strategy<Value = ContentRef> {
    (u64s(), blob_id(), any::<[u8; 32]>(), u64s(), u32s(), u32s()).prop_map(
        |(request_id, blob_id, hash, size, chunk_size, chunks)| ContentRef {
            request_id,
            blob_id,
            hash,
            size,
            chunk_size,
            chunks,
        },
    )
}

pub(crate) fn content_ack() -> impl Strategy<Value = ContentAck> {
    (u64s(), blob_id()).prop_map(|(request_id, blob_id)| ContentAck {
        request_id,
        blob_id,
    })
}

pub(crate) fn invite_put() -> impl Strategy<Value = InvitePut> {
    (u64s(), text(), payload(), u32s()).prop_map(|(request_id, lookup_id, sealed, ttl_secs)| {
        InvitePut {
            request_id,
            lookup_id,
            sealed,
            ttl_secs,
        }
    })
}

pub(crate) fn invite_stored() -> impl Strategy<Value = InviteStored> {
    u64s().prop_map(|request_id| InviteStored { request_id })
}

pub(crate) fn invite_get() -> impl Strategy<Value = InviteGet> {
    (u64s(), text()).prop_map(|(request_id, lookup_id)| InviteGet {
        request_id,
        lookup_id,
    })
}

pub(crate) fn invite_found() -> impl Strategy<Value = InviteFound> {
    (u64s(), payload()).prop_map(|(request_id, sealed)| InviteFound { request_id, sealed })
}

pub(crate) fn bye() -> impl Strategy<Value = Bye> {
    prop::option::of(text()).prop_map(|reason| Bye { reason })
}

pub(crate) fn wire_error() -> impl Strategy<Value = WireError> {
    (
        prop::option::of(u64s()),
        error_code(),
        text(),
        prop::option::of(u64s()),
    )
        .prop_map(|(request_id, code, message, retry_after_ms)| WireError {
            request_id,
            code,
            message,
            retry_after_ms,
        })
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
        revoke_device().prop_map(Message::RevokeDevice),
        device_revoked().prop_map(Message::DeviceRevoked),
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
