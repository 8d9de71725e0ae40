//! Property tests for every message type: round trip, exact encoded length (payloads cost their
//! length plus at most 5 bytes), and hostile input (bit flips, truncation, trailing bytes,
//! random bodies) yields an error or a valid message, never a panic.

mod common;

use common::*;
use proptest::prelude::*;
use proptest::sample::Index;
use sync_types::*;

fn round_trip(m: &Message) -> Result<(), TestCaseError> {
    let bytes = m
        .to_bytes()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&Message::from_bytes(&bytes), &Ok(m.clone()));
    // Through a frame as well.
    let codec = FrameCodec::new(usize::MAX);
    let frame = codec
        .encode_to_bytes(m)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut buf = bytes::BytesMut::from(&frame[..]);
    prop_assert_eq!(codec.decode(&mut buf), Ok(Some(m.clone())));
    prop_assert!(buf.is_empty());
    Ok(())
}

fn length(m: &Message) -> Result<(), TestCaseError> {
    let bytes = m
        .to_bytes()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(bytes.len(), m.encoded_len());
    prop_assert_eq!(bytes.first(), Some(&0x92));
    prop_assert_eq!(bytes.get(1), Some(&m.message_type().as_u8()));
    // Each payload costs its length plus a bin header of 2 to 5 bytes: relative to the same
    // message with empty payloads (2 bytes each), it adds between len and len + 3 per payload.
    let (empty, payload_bytes, payloads) = without_payloads(m);
    let diff = m.encoded_len() - empty.encoded_len();
    prop_assert!(diff >= payload_bytes, "diff {} < {}", diff, payload_bytes);
    prop_assert!(
        diff <= payload_bytes + 3 * payloads,
        "diff {} for {} bytes",
        diff,
        payload_bytes
    );
    // The documented worst-case overheads hold.
    match m {
        Message::Push(p) => prop_assert!(bytes.len() <= p.payload.len() + PUSH_OVERHEAD),
        Message::PullResponse(r) => {
            let sum: usize = r.entries.iter().map(PullEntry::encoded_len).sum();
            prop_assert!(bytes.len() <= sum + PULL_RESPONSE_OVERHEAD);
            for e in &r.entries {
                prop_assert!(e.encoded_len() <= e.payload.len() + PULL_ENTRY_OVERHEAD);
            }
        }
        _ => {}
    }
    Ok(())
}

fn bit_flips(m: &Message, flips: &[(Index, u8)]) -> Result<(), TestCaseError> {
    let mut bytes = m
        .to_bytes()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    for (at, bit) in flips {
        let i = at.index(bytes.len());
        bytes[i] ^= 1 << bit;
    }
    check_decoded_reencodes(&bytes)
}

fn truncated(m: &Message, cut: Index) -> Result<(), TestCaseError> {
    let bytes = m
        .to_bytes()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let cut = cut.index(bytes.len()); // 0 ..= len - 1: always a strict prefix
    // MessagePack is prefix-free: a strict prefix of a message is never a message.
    prop_assert!(Message::from_bytes(&bytes[..cut]).is_err());
    Ok(())
}

fn trailing(m: &Message, extra: &[u8]) -> Result<(), TestCaseError> {
    let mut bytes = m
        .to_bytes()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    bytes.extend_from_slice(extra);
    prop_assert_eq!(
        Message::from_bytes(&bytes),
        Err(DecodeError::TrailingBytes(extra.len()))
    );
    Ok(())
}

fn random_body(ty: MessageType, body: &[u8]) -> Result<(), TestCaseError> {
    let mut bytes = vec![0x92, ty.as_u8()];
    bytes.extend_from_slice(body);
    check_decoded_reencodes(&bytes)
}

macro_rules! message_props {
    ($($name:ident: $ty:ident => $strategy:expr;)*) => {$(
        mod $name {
            use super::*;

            proptest! {
                #[test]
                fn round_trips(m in $strategy) {
                    prop_assert_eq!(m.message_type(), MessageType::$ty);
                    round_trip(&m)?;
                }

                #[test]
                fn encoded_len_is_exact(m in $strategy) {
                    length(&m)?;
                }

                #[test]
                fn bit_flips_never_panic(
                    m in $strategy,
                    flips in prop::collection::vec((any::<Index>(), 0u8..8), 1..6),
                ) {
                    bit_flips(&m, &flips)?;
                }

                #[test]
                fn truncation_is_an_error(m in $strategy, cut in any::<Index>()) {
                    truncated(&m, cut)?;
                }

                #[test]
                fn trailing_bytes_are_an_error(
                    m in $strategy,
                    extra in prop::collection::vec(any::<u8>(), 1..16),
                ) {
                    trailing(&m, &extra)?;
                }

                #[test]
                fn random_bodies_never_panic(body in prop::collection::vec(any::<u8>(), 0..200)) {
                    random_body(MessageType::$ty, &body)?;
                }
            }
        }
    )*};
}

message_props! {
    hello: Hello => hello().prop_map(Message::Hello);
    welcome: Welcome => welcome().prop_map(Message::Welcome);
    challenge: Challenge => challenge().prop_map(Message::Challenge);
    push: Push => push().prop_map(Message::Push);
    push_ack: PushAck => push_ack().prop_map(Message::PushAck);
    pull: Pull => pull().prop_map(Message::Pull);
    pull_response: PullResponse => pull_response().prop_map(Message::PullResponse);
    notify: Notify => notify().prop_map(Message::Notify);
    delete: Delete => delete().prop_map(Message::Delete);
    delete_ack: DeleteAck => delete_ack().prop_map(Message::DeleteAck);
    ping: Ping => ping().prop_map(Message::Ping);
    pong: Pong => pong().prop_map(Message::Pong);
    enroll: Enroll => enroll().prop_map(Message::Enroll);
    group_changed: GroupChanged => group_changed().prop_map(Message::GroupChanged);
    group_update: GroupUpdate => group_update().prop_map(Message::GroupUpdate);
    group_get: GroupGet => group_get().prop_map(Message::GroupGet);
    group_info: GroupInfo => group_info().prop_map(Message::GroupInfo);
    content_ref: ContentRef => content_ref().prop_map(Message::ContentRef);
    content_ack: ContentAck => content_ack().prop_map(Message::ContentAck);
    invite_put: InvitePut => invite_put().prop_map(Message::InvitePut);
    invite_stored: InviteStored => invite_stored().prop_map(Message::InviteStored);
    invite_get: InviteGet => invite_get().prop_map(Message::InviteGet);
    invite_found: InviteFound => invite_found().prop_map(Message::InviteFound);
    bye: Bye => bye().prop_map(Message::Bye);
    error: Error => wire_error().prop_map(Message::Error);
}

#[test]
fn every_message_type_has_properties() {
    // The macro above lists 25 types; a type added to the protocol must be added there too.
    assert_eq!(MessageType::ALL.len(), 25);
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check_decoded_reencodes(&bytes)?;
    }

    #[test]
    fn unknown_type_bytes_are_typed(ty in any::<u8>(), body in prop::collection::vec(any::<u8>(), 0..32)) {
        prop_assume!(MessageType::from_u8(ty).is_none());
        let mut bytes = vec![0x92];
        if ty >= 0x80 {
            bytes.push(0xcc);
        }
        bytes.push(ty);
        bytes.extend_from_slice(&body);
        prop_assert_eq!(Message::from_bytes(&bytes), Err(DecodeError::UnknownType(ty)));
    }
}
