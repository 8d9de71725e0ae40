//! The frame vectors of `docs/PROTOCOL.md` (`frame.*`) checked against the codec: each message
//! is built from the document's field values, encoded, and compared byte for byte with the
//! document's frame; the document's frame decodes back to the same message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use bytes::BytesMut;
use sync_testkit::doc_vectors::{Vectors, hex};
use sync_types::*;

/// Encodes `msg` into one frame, compares it with `frame.<name>`, and decodes the document's
/// bytes back.
fn check_frame(v: &Vectors, name: &str, msg: Message) {
    let key = format!("frame.{name}");
    let doc = v.bytes(&key);
    let codec = FrameCodec::default();
    let encoded = codec.encode_to_bytes(&msg).expect("encodes");
    assert_eq!(
        hex(&encoded),
        hex(&doc),
        "{key}: the document's frame differs from the code's encoding"
    );
    assert_eq!(encoded.len(), FRAME_HEADER_LEN + msg.encoded_len(), "{key}");
    let mut buf = BytesMut::from(doc.as_slice());
    assert_eq!(codec.decode(&mut buf), Ok(Some(msg)), "{key}: decoding");
    assert!(buf.is_empty(), "{key}: one frame, nothing after it");
}

/// The name of a field vector of message `msg`.
fn field(msg: &str, field: &str) -> String {
    format!("frame.{msg}.{field}")
}

fn blob_id(v: &Vectors, name: &str) -> BlobId {
    BlobId::from_bytes(v.array(name))
}

fn device_id(v: &Vectors, name: &str) -> DeviceId {
    DeviceId::from_bytes(v.array(name))
}

fn payload(v: &Vectors, name: &str) -> Payload {
    Payload::from(v.bytes(name))
}

fn hello(v: &Vectors) {
    let f = |name| field("hello", name);
    let msg = Hello {
        request_id: v.uint(&f("request_id")),
        version: u16::try_from(v.uint(&f("version"))).unwrap(),
        group_id: GroupId::from_bytes(v.array(&f("group_id"))),
        last_cursor: Cursor::new(v.uint(&f("last_cursor"))),
        auth_signature: v.array(&f("auth_signature")),
        admission_token: v.opt_bytes(&f("admission_token")).map(Payload::from),
    };
    assert_eq!(msg.version, PROTOCOL_VERSION);
    check_frame(v, "hello", msg.into());
}

fn welcome(v: &Vectors) {
    let f = |name| field("welcome", name);
    let limits = Limits {
        max_blob_bytes: v.u32(&f("max_blob_bytes")),
        max_frame_bytes: v.u32(&f("max_frame_bytes")),
        max_pull_count: v.u32(&f("max_pull_count")),
        max_pull_bytes: v.u32(&f("max_pull_bytes")),
        default_ttl_secs: v.u32(&f("default_ttl_secs")),
        max_ttl_secs: v.u32(&f("max_ttl_secs")),
        idle_timeout_secs: v.u32(&f("idle_timeout_secs")),
        max_in_flight: v.u32(&f("max_in_flight")),
    };
    // The example announces the relay's defaults.
    assert_eq!(limits, Limits::DEFAULT);
    let msg = Welcome {
        request_id: v.uint(&f("request_id")),
        relay_id: v.array(&f("relay_id")),
        max_cursor: Cursor::new(v.uint(&f("max_cursor"))),
        limits,
        store_id: v.uint(&f("store_id")),
    };
    check_frame(v, "welcome", msg.into());
}

fn push_and_ack(v: &Vectors) {
    let f = |name| field("push", name);
    let push = Push {
        request_id: v.uint(&f("request_id")),
        blob_id: blob_id(v, &f("blob_id")),
        payload: payload(v, &f("payload")),
        ttl_secs: v.u32(&f("ttl_secs")),
    };
    check_frame(v, "push", push.into());

    let f = |name| field("push_ack", name);
    let ack = PushAck {
        request_id: v.uint(&f("request_id")),
        blob_id: blob_id(v, &f("blob_id")),
        cursor: Cursor::new(v.uint(&f("cursor"))),
        server_time_ms: v.uint(&f("server_time_ms")),
    };
    check_frame(v, "push_ack", ack.into());
}

fn notify(v: &Vectors) {
    let f = |name| field("notify", name);
    let msg = Notify {
        cursor: Cursor::new(v.uint(&f("cursor"))),
        blob_id: blob_id(v, &f("blob_id")),
        sender: device_id(v, &f("sender")),
        size: v.u32(&f("size")),
    };
    check_frame(v, "notify", msg.into());
}

fn pull_and_response(v: &Vectors) {
    let f = |name| field("pull", name);
    let pull = Pull {
        request_id: v.uint(&f("request_id")),
        after: Cursor::new(v.uint(&f("after"))),
        limit: v.u32(&f("limit")),
        max_bytes: v
            .opt_uint(&f("max_bytes"))
            .map(|b| u32::try_from(b).unwrap()),
    };
    check_frame(v, "pull", pull.into());

    let f = |name| field("pull_response", name);
    let entry = PullEntry {
        cursor: Cursor::new(v.uint(&f("entry.cursor"))),
        blob_id: blob_id(v, &f("entry.blob_id")),
        sender: device_id(v, &f("entry.sender")),
        payload: payload(v, &f("entry.payload")),
        timestamp_ms: v.uint(&f("entry.timestamp_ms")),
    };
    let msg = PullResponse {
        request_id: v.uint(&f("request_id")),
        entries: vec![entry],
        has_more: v.flag(&f("has_more")),
        max_cursor: Cursor::new(v.uint(&f("max_cursor"))),
        removed: v.uint(&f("removed")),
    };
    check_frame(v, "pull_response", msg.into());
}

fn error(v: &Vectors) {
    let f = |name| field("error", name);
    let code = ErrorCode::from_u16(u16::try_from(v.uint(&f("code"))).unwrap());
    assert!(
        !matches!(code, ErrorCode::Unknown(_)),
        "frame.error: a code this version knows"
    );
    let msg = WireError {
        request_id: v.opt_uint(&f("request_id")),
        code,
        message: v.text(&f("message")),
        retry_after_ms: v.opt_uint(&f("retry_after_ms")),
    };
    check_frame(v, "error", Message::Error(msg));
}

fn small_frames(v: &Vectors) {
    let ping = Ping {
        request_id: v.uint("frame.ping.request_id"),
    };
    check_frame(v, "ping", ping.into());
    let bye = Bye {
        reason: v.opt_text("frame.bye.reason"),
    };
    check_frame(v, "bye", bye.into());
    let get = InviteGet {
        request_id: v.uint("frame.invite_get.request_id"),
        lookup_id: v.text("frame.invite_get.lookup_id"),
    };
    check_frame(v, "invite_get", get.into());
}

const SECTIONS: &[fn(&Vectors)] = &[
    hello,
    welcome,
    push_and_ack,
    notify,
    pull_and_response,
    error,
    small_frames,
];

#[test]
fn session_opening_frames_match_the_codec() {
    let v = Vectors::load();
    hello(&v);
    welcome(&v);
}

#[test]
fn push_pull_and_notify_frames_match_the_codec() {
    let v = Vectors::load();
    push_and_ack(&v);
    notify(&v);
    pull_and_response(&v);
}

#[test]
fn error_ping_bye_and_invite_get_frames_match_the_codec() {
    let v = Vectors::load();
    error(&v);
    small_frames(&v);
}

#[test]
fn every_frame_vector_is_checked() {
    let v = Vectors::load();
    for section in SECTIONS {
        section(&v);
    }
    v.assert_checked("sync-types");
}

/// The document reader itself (shared by the vector tests of three crates; tested once, here).
#[test]
fn vector_blocks_parse_values_comments_continuations_and_references() {
    let doc = "text\n```vector\n# comment\na.x = 01 02  # two bytes\n    03\n\
               a.t = \"x # y\"\na.n = 1_000\na.r = @a.x\na.z = nil\na.f = true\n```\n\
               ```rust\nnot = parsed\n```\n";
    let v = Vectors::parse(doc).expect("parses");
    assert_eq!(v.bytes("a.x"), [1, 2, 3]);
    assert_eq!(v.text("a.t"), "x # y");
    assert_eq!(v.uint("a.n"), 1000);
    assert_eq!(v.bytes("a.r"), [1, 2, 3]);
    assert_eq!(v.opt_uint("a.z"), None);
    assert!(v.flag("a.f"));
    assert!(!v.contains("not"), "only vector blocks are read");
}

#[test]
fn malformed_vector_blocks_are_errors() {
    for bad in [
        "```vector\nA = 01\n```",
        "```vector\na = 01\na = 02\n```",
        "```vector\n01\n```",
        "```vector\na = 01\n",
    ] {
        assert!(Vectors::parse(bad).is_err(), "{bad:?}");
    }
}
