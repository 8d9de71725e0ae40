//! The QUIC transport parameters of the relay's endpoint: the streams the protocol uses and no
//! more, flow-control windows sized to the largest frame, and an idle timeout.
//!
//! A connection carries one session on one bidirectional stream that the device opens, so a
//! peer may open one bidirectional stream at a time, no unidirectional stream, and no
//! datagrams. Until its Hello is admitted, a connection's flow-control window (what the peer may
//! send ahead of what the relay has read) is [`PRE_AUTH_WINDOW`] bytes (the first frame is at
//! most a few KiB); then it opens to one largest frame plus headroom, so a session streams at
//! full speed. So the memory a peer can make the relay hold in QUIC buffers is bounded per
//! connection, and a connection without a valid Hello holds little.

use iroh::endpoint::{IdleTimeout, QuicTransportConfig, VarInt};

use crate::config::RelayConfig;
use crate::server::context::MAX_FIRST_FRAME;

/// Flow-control headroom above one largest frame.
const WINDOW_HEADROOM: u64 = 64 * 1024;

/// Connection receive window until the session is admitted: two largest first frames.
pub(crate) const PRE_AUTH_WINDOW: u64 = 2 * MAX_FIRST_FRAME as u64;

/// The flow-control windows of a connection, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Windows {
    /// Receive window of the session's stream: one largest frame plus headroom.
    pub(crate) stream: u64,
    /// Receive window of the whole connection before its Hello is admitted.
    pub(crate) pre_auth: u64,
    /// Receive window of the whole connection once its session is admitted (= `stream`: the
    /// connection has one stream).
    pub(crate) session: u64,
    /// Bytes the relay sends without acknowledgement: two largest frames plus headroom.
    pub(crate) send: u64,
}

impl Windows {
    /// The windows for this configuration's largest frame.
    pub(crate) fn for_frame(max_frame: usize) -> Self {
        let stream = (max_frame as u64).saturating_add(WINDOW_HEADROOM);
        Self {
            stream,
            pre_auth: PRE_AUTH_WINDOW,
            session: stream,
            send: stream.saturating_mul(2),
        }
    }
}

/// A window as a QUIC variable-length integer (every window here is far below its limit).
pub(crate) fn var_int(n: u64) -> VarInt {
    VarInt::from_u64(n).unwrap_or(VarInt::MAX)
}

/// The endpoint's transport configuration.
pub(crate) fn transport_config(config: &RelayConfig, windows: Windows) -> QuicTransportConfig {
    // Validated to at most one day, far below the QUIC limit of 2^62 ms.
    let idle = IdleTimeout::try_from(config.transport_idle_timeout).ok();
    QuicTransportConfig::builder()
        .max_concurrent_bidi_streams(VarInt::from_u32(1))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .datagram_receive_buffer_size(None)
        .stream_receive_window(var_int(windows.stream))
        .receive_window(var_int(windows.pre_auth))
        .send_window(windows.send)
        .max_idle_timeout(idle)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_follow_the_largest_frame() {
        let max_frame = sync_types::max_frame_for_payload(1 << 20);
        let w = Windows::for_frame(max_frame);
        assert_eq!(w.stream, max_frame as u64 + 64 * 1024);
        assert_eq!(w.session, w.stream);
        assert_eq!(w.pre_auth, 32 * 1024);
        assert_eq!(w.send, 2 * w.stream);
        assert!(
            w.stream < 2 << 20,
            "about one frame, not the 1.25 MB × 100 streams default"
        );
    }
}
