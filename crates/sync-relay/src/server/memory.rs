//! In-process sessions for tests: a session over `tokio::io::duplex` pipes instead of QUIC,
//! served by the same session code (available with the `test-util` feature).

use std::sync::Arc;

use sync_types::DeviceId;
use tokio::io::DuplexStream;

use super::{RelayError, RelayHandle};
use crate::admission::{Origin, PreAuth};
use crate::session::{refuse, serve_session};

/// Capacity of each direction of an in-memory session's pipe.
const MEMORY_PIPE_BYTES: usize = 256 * 1024;

/// A session over in-process pipes, served by exactly the same code as QUIC sessions.
///
/// Write frames (u32 big-endian length + MessagePack body) to `writer`, read the relay's
/// frames from `reader`; the first frame is a `Hello` signed over `binding`.
#[derive(Debug)]
pub struct MemorySession {
    /// Relay → client bytes.
    pub reader: DuplexStream,
    /// Client → relay bytes.
    pub writer: DuplexStream,
    /// Random per session: the Hello binding (what the TLS exporter gives over QUIC).
    pub binding: [u8; 32],
    /// The relay's id (its iroh endpoint id bytes), for the Hello challenge.
    pub relay_id: [u8; 32],
}

impl RelayHandle {
    /// A session over in-process pipes (`tokio::io::duplex`), served by exactly the same
    /// session code as QUIC sessions. `device` is trusted as the peer's identity (in-process
    /// only). Admitted like a QUIC connection (in-process sessions are one address of their
    /// own): a place in the pre-auth budget until its Hello, then the session slots; at a
    /// limit, the session answers with a typed error frame (`TooManySessions`).
    pub fn connect_in_memory(&self, device: DeviceId) -> Result<MemorySession, RelayError> {
        let inner = &self.inner;
        if inner.stop_accepting.is_cancelled() {
            return Err(RelayError::ShutDown);
        }
        let mut binding = [0u8; 32];
        getrandom::fill(&mut binding).map_err(|e| RelayError::Random(e.to_string()))?;
        let (client_writer, relay_reader) = tokio::io::duplex(MEMORY_PIPE_BYTES);
        let (mut relay_writer, client_reader) = tokio::io::duplex(MEMORY_PIPE_BYTES);
        let ctx = Arc::clone(&inner.ctx);
        inner.sessions.spawn_on(
            async move {
                match PreAuth::begin(&ctx, Origin::InProcess) {
                    Ok(pre) => {
                        serve_session(ctx, pre, device, binding, relay_reader, relay_writer).await;
                    }
                    Err(_) => {
                        let err = ctx.admission.too_many_sessions();
                        refuse(&ctx, &mut relay_writer, &device, err).await;
                    }
                }
            },
            &inner.runtime,
        );
        Ok(MemorySession {
            reader: client_reader,
            writer: client_writer,
            binding,
            relay_id: inner.ctx.relay_id,
        })
    }
}
