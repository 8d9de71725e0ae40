//! Wire error codes (carried by the `Error` message; table on [`ErrorCode`]) and the errors of
//! encoding and decoding.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! error_codes {
    ($(#[$edoc:meta])* enum ErrorCode; $( $(#[$doc:meta])* $name:ident = $value:literal, $retry:literal; )*) => {
        $(#[$edoc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $( $(#[$doc])* $name, )*
            /// A code this version does not know (sent by a newer peer).
            Unknown(u16),
        }

        impl ErrorCode {
            /// Every known code, in table order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name),*];

            /// The numeric value on the wire.
            pub const fn as_u16(self) -> u16 {
                match self {
                    $( ErrorCode::$name => $value, )*
                    ErrorCode::Unknown(v) => v,
                }
            }

            /// The code for a numeric value; values this version does not know become
            /// [`ErrorCode::Unknown`].
            pub const fn from_u16(v: u16) -> Self {
                match v {
                    $( $value => ErrorCode::$name, )*
                    other => ErrorCode::Unknown(other),
                }
            }

            /// Whether the same request may succeed later without changing it (transient
            /// relay-side conditions). `Unknown` codes are not retryable; an `Error` message
            /// that carries `retry_after_ms` is a retry hint regardless of its code.
            pub const fn is_retryable(self) -> bool {
                match self {
                    $( ErrorCode::$name => $retry, )*
                    ErrorCode::Unknown(_) => false,
                }
            }

            /// The variant name (stable), for logs and metrics labels.
            pub const fn name(self) -> &'static str {
                match self {
                    $( ErrorCode::$name => stringify!($name), )*
                    ErrorCode::Unknown(_) => "Unknown",
                }
            }
        }
    };
}

error_codes! {
    /// A wire error code, carried by the `Error` message as a `u16`.
    ///
    /// Codes are grouped by hundreds; a code this version does
    /// not know decodes as [`ErrorCode::Unknown`] so a newer relay's codes never break an older
    /// client.
    ///
    /// | code | name | meaning | retryable |
    /// |---:|---|---|---|
    /// | 100 | `BadVersion` | protocol version in `Hello` not supported | no |
    /// | 101 | `Malformed` | a frame body is not a valid message | no |
    /// | 102 | `UnknownType` | unknown message type byte | no |
    /// | 103 | `FrameTooLarge` | frame length above the maximum | no |
    /// | 104 | `NotHelloFirst` | the first client message was not `Hello` | no |
    /// | 105 | `HelloTimeout` | no `Hello` within the relay's deadline | yes |
    /// | 106 | `UnexpectedMessage` | a valid message that is not allowed now or from this side | no |
    /// | 107 | `IdleTimeout` | session idle for too long | yes |
    /// | 108 | `NotSupported` | a valid request this relay does not implement (yet); the session stays open | no |
    /// | 200 | `Unauthorized` | the `Hello` signature does not prove group membership | no |
    /// | 201 | `AdmissionRequired` | the relay requires an operator admission token | no |
    /// | 202 | `AdmissionInvalid` | the admission token is invalid or expired | no |
    /// | 203 | `DeviceRevoked` | this device was revoked from the group | no |
    /// | 204 | `EpochSuperseded` | signed or sealed under a key epoch the group has rotated away from | no |
    /// | 205 | `MembershipRefused` | a membership record, enrollment or grant breaks the group's rules | no |
    /// | 300 | `BlobTooLarge` | payload above the relay's maximum blob size | no |
    /// | 301 | `QuotaExceeded` | the group's byte or blob quota is full | yes |
    /// | 302 | `RateLimited` | too many requests; see `retry_after_ms` | yes |
    /// | 303 | `TooManySessions` | the relay is at its session limit | yes |
    /// | 304 | `TtlTooLong` | requested TTL above the relay's maximum | no |
    /// | 305 | `TooManyInFlight` | too many unanswered requests on this session | yes |
    /// | 306 | `TooManyGroups` | too many new groups from this address; see `retry_after_ms` | yes |
    /// | 400 | `NotFound` | no such blob or invite | no |
    /// | 401 | `InviteExpired` | the invite mailbox entry expired | no |
    /// | 402 | `InviteUsed` | the invite was already fetched (single use) | no |
    /// | 403 | `TooManyAttempts` | too many lookups for this invite id | no |
    /// | 404 | `Conflict` | a blob id was reused with a different payload, or a membership record lost to a concurrent one | no |
    /// | 500 | `StorageFailure` | the relay could not commit or read storage | yes |
    /// | 501 | `ShuttingDown` | the relay is draining sessions | yes |
    /// | 502 | `Internal` | any other relay fault | yes |
    enum ErrorCode;

    /// Protocol version in `Hello` not supported.
    BadVersion = 100, false;
    /// A frame body is not a valid message.
    Malformed = 101, false;
    /// Unknown message type byte.
    UnknownType = 102, false;
    /// Frame length above the maximum.
    FrameTooLarge = 103, false;
    /// The first client message was not `Hello`.
    NotHelloFirst = 104, false;
    /// No `Hello` within the relay's deadline.
    HelloTimeout = 105, true;
    /// A valid message that is not allowed in this state or from this side.
    UnexpectedMessage = 106, false;
    /// Session idle for too long.
    IdleTimeout = 107, true;
    /// A valid request this relay does not implement (yet); the session stays open.
    NotSupported = 108, false;
    /// The `Hello` signature does not prove group membership.
    Unauthorized = 200, false;
    /// The relay requires an operator admission token.
    AdmissionRequired = 201, false;
    /// The admission token is invalid or expired.
    AdmissionInvalid = 202, false;
    /// This device was revoked from the group.
    DeviceRevoked = 203, false;
    /// Signed (`Hello`) or sealed (`Push`) under a key epoch the group has rotated away from:
    /// fetch the group's records and grants with `GroupGet`.
    EpochSuperseded = 204, false;
    /// A membership record, enrollment or grant breaks the group's rules (bad signature, not
    /// an admin, an unknown recipient).
    MembershipRefused = 205, false;
    /// Payload above the relay's maximum blob size.
    BlobTooLarge = 300, false;
    /// The group's byte or blob quota is full.
    QuotaExceeded = 301, true;
    /// Too many requests; see `retry_after_ms`.
    RateLimited = 302, true;
    /// The relay is at its session limit.
    TooManySessions = 303, true;
    /// Requested TTL above the relay's maximum.
    TtlTooLong = 304, false;
    /// Too many unanswered requests on this session.
    TooManyInFlight = 305, true;
    /// Too many new groups opened from this network address; see `retry_after_ms`.
    TooManyGroups = 306, true;
    /// No such blob or invite.
    NotFound = 400, false;
    /// The invite mailbox entry expired.
    InviteExpired = 401, false;
    /// The invite was already fetched (single use).
    InviteUsed = 402, false;
    /// Too many lookups for this invite id.
    TooManyAttempts = 403, false;
    /// A blob id was reused with a different payload, or a membership record is not the next
    /// one (a concurrent change won).
    Conflict = 404, false;
    /// The relay could not commit or read storage.
    StorageFailure = 500, true;
    /// The relay is draining sessions.
    ShuttingDown = 501, true;
    /// Any other relay fault.
    Internal = 502, true;
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorCode::Unknown(v) => write!(f, "Unknown({v})"),
            known => write!(f, "{}({})", known.name(), known.as_u16()),
        }
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(self.as_u16())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u16::deserialize(d).map(ErrorCode::from_u16)
    }
}

/// Why bytes could not be decoded into a message. Peer misbehaviour: answer with an `Error`
/// frame ([`DecodeError::error_code`]) and close the session.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The message type byte is not one this version knows.
    #[error("unknown message type 0x{0:02x}")]
    UnknownType(u8),
    /// The input ends before the message does.
    #[error("message truncated")]
    Truncated,
    /// The message is complete but more bytes follow it inside the frame.
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
    /// The bytes are not a valid message of the announced type. The text says what was wrong;
    /// it never quotes payload bytes or string contents from the input.
    #[error("malformed message: {0}")]
    Malformed(String),
}

impl DecodeError {
    /// The wire error code to answer this with.
    pub const fn error_code(&self) -> ErrorCode {
        match self {
            DecodeError::UnknownType(_) => ErrorCode::UnknownType,
            DecodeError::Truncated | DecodeError::TrailingBytes(_) | DecodeError::Malformed(_) => {
                ErrorCode::Malformed
            }
        }
    }

    /// Maps an `rmp-serde` error to a typed decode error with a redacted message.
    pub(crate) fn from_rmp(context: &str, err: &rmp_serde::decode::Error) -> Self {
        use rmp_serde::decode::Error as E;
        match err {
            E::InvalidMarkerRead(e) | E::InvalidDataRead(e)
                if e.kind() == std::io::ErrorKind::UnexpectedEof =>
            {
                DecodeError::Truncated
            }
            other => DecodeError::Malformed(format!("{context}: {}", redact(&other.to_string()))),
        }
    }
}

/// Longest detail text kept in [`DecodeError::Malformed`].
const MAX_DETAIL: usize = 160;

/// Drops quoted input (serde quotes unexpected strings as `"…"` and field names as `` `…` ``)
/// and bounds the length, so a hostile peer cannot put its bytes into our logs.
fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_DETAIL));
    let mut quote: Option<char> = None;
    for c in text.chars() {
        match (quote, c) {
            (None, '"' | '`') => {
                quote = Some(c);
                out.push_str("<redacted>");
            }
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, c) if c.is_control() => out.push(' '),
            (None, c) => out.push(c),
        }
        if out.len() >= MAX_DETAIL {
            out.push('…');
            break;
        }
    }
    out
}

/// Why a message could not be encoded. Only absurd sizes (beyond what MessagePack or a frame
/// can describe) fail; this is a caller bug, not peer misbehaviour.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A byte string, string or list is longer than MessagePack can describe (4 GiB − 1).
    #[error("a field of {len} bytes or elements is longer than MessagePack allows")]
    FieldTooLong {
        /// The offending length.
        len: usize,
    },
    /// The serializer failed (should not happen for the types of this crate).
    #[error("message could not be serialized: {0}")]
    Serialize(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_u16()), "duplicate {code}");
            assert_eq!(ErrorCode::from_u16(code.as_u16()), *code);
            let bytes = rmp_serde::to_vec(code).expect("encode");
            assert_eq!(
                rmp_serde::from_slice::<ErrorCode>(&bytes).expect("decode"),
                *code
            );
        }
        assert_eq!(ErrorCode::from_u16(9999), ErrorCode::Unknown(9999));
        assert_eq!(ErrorCode::Unknown(9999).as_u16(), 9999);
    }

    #[test]
    fn unknown_codes_from_a_newer_peer_decode() {
        let bytes = rmp_serde::to_vec(&777u16).expect("encode");
        let code = rmp_serde::from_slice::<ErrorCode>(&bytes).expect("decode");
        assert_eq!(code, ErrorCode::Unknown(777));
        assert_eq!(rmp_serde::to_vec(&code).expect("encode"), bytes);
    }

    #[test]
    fn retryable_codes_are_the_transient_ones() {
        assert!(ErrorCode::RateLimited.is_retryable());
        assert!(ErrorCode::QuotaExceeded.is_retryable());
        assert!(ErrorCode::ShuttingDown.is_retryable());
        assert!(ErrorCode::TooManyGroups.is_retryable());
        assert!(!ErrorCode::Unauthorized.is_retryable());
        assert!(!ErrorCode::BlobTooLarge.is_retryable());
        assert!(!ErrorCode::Unknown(1234).is_retryable());
    }

    #[test]
    fn redact_drops_quoted_input_and_bounds_length() {
        let msg = "invalid type: string \"hunter2\", expected u64";
        let r = redact(msg);
        assert!(!r.contains("hunter2"));
        assert!(r.contains("expected u64"));
        let long = "x".repeat(10_000);
        assert!(redact(&long).len() <= MAX_DETAIL + '…'.len_utf8());
        assert!(!redact("a\nb").contains('\n'));
    }
}
