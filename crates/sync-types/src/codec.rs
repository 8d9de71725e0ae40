//! Frames: a `u32` big-endian body length followed by one MessagePack-encoded [`Message`].
//!
//! The length is checked against the configured maximum from the 4 header bytes alone, before
//! anything is reserved or allocated, so a peer cannot make us allocate by announcing a big
//! frame. The decoder does not even reserve space for a frame whose length is acceptable: a
//! 4-byte header would otherwise pin `max_frame` bytes per session (an easy amplification); the
//! buffer grows only as bytes actually arrive.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, EncodeError, ErrorCode};
use crate::limits::DEFAULT_MAX_FRAME;
use crate::messages::Message;

/// Size of the length prefix.
pub const FRAME_HEADER_LEN: usize = 4;

/// Why a frame could not be read or written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The frame's body length is above the maximum (detected from the header alone when
    /// decoding; before writing anything when encoding).
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Announced or required body length.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The header announces a zero-length body; no message is empty.
    #[error("empty frame")]
    Empty,
    /// The body is not a valid message.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The message could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

impl FrameError {
    /// The wire error code to answer this with.
    pub const fn error_code(&self) -> ErrorCode {
        match self {
            FrameError::TooLarge { .. } => ErrorCode::FrameTooLarge,
            FrameError::Empty => ErrorCode::Malformed,
            FrameError::Decode(e) => e.error_code(),
            FrameError::Encode(_) => ErrorCode::Internal,
        }
    }
}

/// Splits a byte stream into messages and back.
///
/// After a decode error the stream should be treated as broken (send an `Error`, close):
/// on [`FrameError::TooLarge`] nothing is consumed; on [`FrameError::Empty`] the header is
/// consumed; on [`FrameError::Decode`] the whole bad frame is consumed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameCodec {
    /// Largest accepted frame body in bytes (the length prefix is not counted).
    pub max_frame: usize,
}

impl Default for FrameCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME)
    }
}

impl FrameCodec {
    /// A codec accepting bodies of up to `max_frame` bytes (capped at `u32::MAX`).
    pub const fn new(max_frame: usize) -> Self {
        Self { max_frame }
    }

    /// Reads a frame header: `Ok(None)` if fewer than 4 bytes are given, otherwise the body
    /// length, checked against the maximum. For readers that read the header, then the body.
    pub fn decode_header(&self, header: &[u8]) -> Result<Option<usize>, FrameError> {
        let Some(&[a, b, c, d]) = header.get(..FRAME_HEADER_LEN) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([a, b, c, d]) as usize;
        if len == 0 {
            return Err(FrameError::Empty);
        }
        if len > self.max_frame {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_frame,
            });
        }
        Ok(Some(len))
    }

    /// Decodes one message from the front of `buf`: `Ok(None)` while the frame is incomplete
    /// (nothing consumed, nothing reserved), otherwise consumes exactly one frame.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Message>, FrameError> {
        let len = match self.decode_header(buf) {
            Ok(Some(len)) => len,
            Ok(None) => return Ok(None),
            Err(FrameError::Empty) => {
                buf.advance(FRAME_HEADER_LEN);
                return Err(FrameError::Empty);
            }
            Err(e) => return Err(e),
        };
        let Some(total) = len.checked_add(FRAME_HEADER_LEN) else {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_frame,
            });
        };
        if buf.len() < total {
            return Ok(None);
        }
        buf.advance(FRAME_HEADER_LEN);
        let body = buf.split_to(len);
        Ok(Some(Message::from_bytes(&body)?))
    }

    /// Decodes one message from a complete body (as read after [`FrameCodec::decode_header`]).
    pub fn decode_body(&self, body: &[u8]) -> Result<Message, FrameError> {
        if body.is_empty() {
            return Err(FrameError::Empty);
        }
        if body.len() > self.max_frame {
            return Err(FrameError::TooLarge {
                len: body.len(),
                max: self.max_frame,
            });
        }
        Ok(Message::from_bytes(body)?)
    }

    /// Appends one frame holding `msg` to `buf`. A message larger than the maximum is refused
    /// before anything is written.
    pub fn encode(&self, msg: &Message, buf: &mut BytesMut) -> Result<(), FrameError> {
        let len = msg.checked_len()?;
        let max = self.max_frame.min(u32::MAX as usize);
        if len > max {
            return Err(FrameError::TooLarge { len, max });
        }
        let start = buf.len();
        buf.reserve(FRAME_HEADER_LEN + len);
        buf.put_u32(0); // patched below with the length actually written
        let mut w = buf.writer();
        let written = msg.write_to(&mut w);
        let buf = w.into_inner();
        if let Err(e) = written {
            buf.truncate(start);
            return Err(e.into());
        }
        let body_len = buf.len() - start - FRAME_HEADER_LEN;
        let header = u32::try_from(body_len).ok().filter(|l| *l as usize <= max);
        match (header, buf.get_mut(start..start + FRAME_HEADER_LEN)) {
            (Some(l), Some(slot)) => {
                slot.copy_from_slice(&l.to_be_bytes());
                Ok(())
            }
            _ => {
                buf.truncate(start);
                Err(FrameError::TooLarge { len: body_len, max })
            }
        }
    }

    /// Encodes one frame holding `msg` into a new buffer.
    pub fn encode_to_bytes(&self, msg: &Message) -> Result<Bytes, FrameError> {
        let mut buf = BytesMut::new();
        self.encode(msg, &mut buf)?;
        Ok(buf.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::BlobId;
    use crate::limits::DEFAULT_MAX_PAYLOAD;
    use crate::messages::{Ping, Push};
    use crate::payload::Payload;

    fn ping(id: u64) -> Message {
        Message::Ping(Ping { request_id: id })
    }

    #[test]
    fn header_announcing_2_gib_is_refused_without_reserving() {
        let codec = FrameCodec::default();
        let mut buf = BytesMut::with_capacity(16);
        buf.put_u32(2 << 30);
        buf.put_slice(&[0x92, 0x20]);
        let cap = buf.capacity();
        let before = buf.clone();
        assert_eq!(
            codec.decode(&mut buf),
            Err(FrameError::TooLarge {
                len: 2 << 30,
                max: DEFAULT_MAX_FRAME
            })
        );
        assert_eq!(buf.capacity(), cap, "buffer must not grow");
        assert_eq!(buf, before, "nothing consumed");
        assert_eq!(
            codec.decode_header(&(u32::MAX).to_be_bytes()),
            Err(FrameError::TooLarge {
                len: u32::MAX as usize,
                max: DEFAULT_MAX_FRAME
            })
        );
        assert_eq!(
            FrameError::TooLarge { len: 1, max: 0 }.error_code(),
            ErrorCode::FrameTooLarge
        );
    }

    #[test]
    fn partial_valid_frame_does_not_reserve_either() {
        let codec = FrameCodec::default();
        let mut buf = BytesMut::with_capacity(8);
        buf.put_u32(DEFAULT_MAX_FRAME as u32);
        let cap = buf.capacity();
        assert_eq!(codec.decode(&mut buf), Ok(None));
        assert_eq!(buf.capacity(), cap);
        assert_eq!(buf.len(), 4);
    }

    #[test]
    fn zero_length_frame_is_an_error() {
        let codec = FrameCodec::default();
        let mut buf = BytesMut::from(&[0u8, 0, 0, 0, 0, 0, 0, 4][..]);
        assert_eq!(codec.decode(&mut buf), Err(FrameError::Empty));
        assert_eq!(buf.len(), 4, "only the empty frame's header is consumed");
        assert_eq!(codec.decode_header(&[0, 0, 0, 0]), Err(FrameError::Empty));
        assert_eq!(codec.decode_body(&[]), Err(FrameError::Empty));
    }

    #[test]
    fn partial_input_returns_none_then_exactly_one_frame() {
        let codec = FrameCodec::default();
        let mut stream = BytesMut::new();
        codec.encode(&ping(1), &mut stream).expect("encode");
        codec.encode(&ping(2), &mut stream).expect("encode");
        let all = stream.freeze();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for byte in all.iter() {
            buf.put_u8(*byte);
            while let Some(m) = codec.decode(&mut buf).expect("decode") {
                out.push(m);
            }
        }
        assert_eq!(out, vec![ping(1), ping(2)]);
        assert!(buf.is_empty());
        assert_eq!(codec.decode_header(&[0, 0, 1]), Ok(None));
    }

    #[test]
    fn max_payload_push_fits_the_default_frame_and_one_byte_less_refuses() {
        let msg = Message::Push(Push {
            request_id: u64::MAX,
            blob_id: BlobId::from_bytes([1; 16]),
            payload: Payload::from(vec![7u8; DEFAULT_MAX_PAYLOAD]),
            ttl_secs: u32::MAX,
        });
        let codec = FrameCodec::default();
        let frame = codec.encode_to_bytes(&msg).expect("encode");
        assert_eq!(frame.len(), FRAME_HEADER_LEN + msg.encoded_len());
        let mut buf = BytesMut::from(&frame[..]);
        assert_eq!(codec.decode(&mut buf), Ok(Some(msg.clone())));

        let tight = FrameCodec::new(msg.encoded_len() - 1);
        let mut out = BytesMut::new();
        assert_eq!(
            tight.encode(&msg, &mut out),
            Err(FrameError::TooLarge {
                len: msg.encoded_len(),
                max: msg.encoded_len() - 1
            })
        );
        assert!(out.is_empty(), "nothing written on refusal");
        let mut buf = BytesMut::from(&frame[..]);
        assert!(matches!(
            tight.decode(&mut buf),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn bad_body_consumes_its_frame_and_reports_decode_error() {
        let codec = FrameCodec::default();
        let mut buf = BytesMut::new();
        buf.put_u32(3);
        buf.put_slice(&[0x92, 0x66, 0xc0]); // unknown type 0x66
        codec.encode(&ping(3), &mut buf).expect("encode");
        assert_eq!(
            codec.decode(&mut buf),
            Err(FrameError::Decode(DecodeError::UnknownType(0x66)))
        );
        assert_eq!(codec.decode(&mut buf), Ok(Some(ping(3))));
        assert_eq!(
            FrameError::Decode(DecodeError::UnknownType(0x66)).error_code(),
            ErrorCode::UnknownType
        );
    }

    #[test]
    fn trailing_bytes_inside_a_frame_are_an_error() {
        let codec = FrameCodec::default();
        let body = ping(4).to_bytes().expect("encode");
        let mut buf = BytesMut::new();
        buf.put_u32(body.len() as u32 + 2);
        buf.put_slice(&body);
        buf.put_slice(&[0xc0, 0xc0]);
        assert_eq!(
            codec.decode(&mut buf),
            Err(FrameError::Decode(DecodeError::TrailingBytes(2)))
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn decode_body_checks_length_and_content() {
        let codec = FrameCodec::new(3);
        assert!(matches!(
            codec.decode_body(&[0x92, 0x20, 0x91, 0x01]),
            Err(FrameError::TooLarge { len: 4, max: 3 })
        ));
        assert_eq!(
            FrameCodec::default().decode_body(&[0x92, 0x20, 0x91, 0x01]),
            Ok(ping(1))
        );
    }
}
