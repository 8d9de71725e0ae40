//! The text protocol between the campaign and the responder, carried as ordinary sync blobs
//! (sealed and signed by the sender, verified and opened by the receiver).
//!
//! - `PING:<n>` → `PONG:<n>`
//! - `BURST:<n>` → `BURST-ACK:<n>`
//! - anything else → `ECHO:<text>`
//!
//! Replies are never answered (a message starting with `PONG:`, `BURST-ACK:`, `ECHO:` or
//! `GROUP-ECHO:` gets no reply), so two responders in one group cannot echo each other forever.

/// Prefix of a ping.
pub const PING: &str = "PING:";
/// Prefix of a ping's answer.
pub const PONG: &str = "PONG:";
/// Prefix of a burst message.
pub const BURST: &str = "BURST:";
/// Prefix of a burst message's answer.
pub const BURST_ACK: &str = "BURST-ACK:";
/// Prefix of the answer to any other message.
pub const ECHO: &str = "ECHO:";
/// Prefix of a group echo (answer of the group phase, not available yet); never answered.
pub const GROUP_ECHO: &str = "GROUP-ECHO:";

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    /// `PING:<n>`.
    Ping,
    /// `BURST:<n>`.
    Burst,
    /// A reply (`PONG:`, `BURST-ACK:`, `ECHO:`, `GROUP-ECHO:`): never answered.
    Reply,
    /// Anything else: echoed.
    Other,
}

impl Kind {
    /// A short lowercase name for logs (never the payload).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Ping => "ping",
            Kind::Burst => "burst",
            Kind::Reply => "reply",
            Kind::Other => "other",
        }
    }
}

/// Classifies a message (bytes that are not UTF-8 are "other").
pub fn classify(data: &[u8]) -> Kind {
    let Ok(text) = std::str::from_utf8(data) else {
        return Kind::Other;
    };
    if text.starts_with(PING) {
        Kind::Ping
    } else if text.starts_with(BURST) {
        Kind::Burst
    } else if [PONG, BURST_ACK, ECHO, GROUP_ECHO]
        .iter()
        .any(|p| text.starts_with(p))
    {
        Kind::Reply
    } else {
        Kind::Other
    }
}

/// The responder's answer to `data`, or `None` for replies (which are never answered).
/// Non-UTF-8 payloads are echoed byte for byte after `ECHO:`.
pub fn reply_to(data: &[u8]) -> Option<Vec<u8>> {
    match classify(data) {
        Kind::Ping => Some(swap_prefix(data, PING, PONG)),
        Kind::Burst => Some(swap_prefix(data, BURST, BURST_ACK)),
        Kind::Reply => None,
        Kind::Other => {
            let mut out = Vec::with_capacity(ECHO.len() + data.len());
            out.extend_from_slice(ECHO.as_bytes());
            out.extend_from_slice(data);
            Some(out)
        }
    }
}

fn swap_prefix(data: &[u8], from: &str, to: &str) -> Vec<u8> {
    let rest = data.get(from.len()..).unwrap_or_default();
    let mut out = Vec::with_capacity(to.len() + rest.len());
    out.extend_from_slice(to.as_bytes());
    out.extend_from_slice(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_gets_its_answer() {
        assert_eq!(reply_to(b"PING:7").unwrap(), b"PONG:7");
        assert_eq!(reply_to(b"BURST:123").unwrap(), b"BURST-ACK:123");
        assert_eq!(reply_to(b"hello").unwrap(), b"ECHO:hello");
        assert_eq!(reply_to(b"E2E:1:abc").unwrap(), b"ECHO:E2E:1:abc");
        assert_eq!(reply_to(&[0xff, 0x00]).unwrap(), b"ECHO:\xff\x00");
        assert_eq!(reply_to(b"").unwrap(), b"ECHO:");
    }

    #[test]
    fn replies_are_never_answered() {
        for r in ["PONG:1", "BURST-ACK:2", "ECHO:x", "GROUP-ECHO:y"] {
            assert_eq!(classify(r.as_bytes()), Kind::Reply);
            assert!(reply_to(r.as_bytes()).is_none(), "{r}");
        }
    }
}
