//! Transports: how the client gets a byte stream to the relay and the 32 bytes that bind its
//! `Hello` to that one connection.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use sync_crypto::DeviceKey;
use sync_types::RelayId;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::TransportError;

/// A boxed, sendable future (transports are used as trait objects).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The relay → client half of a session stream.
pub type SessionReader = Box<dyn AsyncRead + Send + Unpin>;

/// The client → relay half of a session stream.
pub type SessionWriter = Box<dyn AsyncWrite + Send + Unpin>;

/// Closes what a session's transport holds open beyond its stream (a QUIC connection). Called
/// once, after the client has sent `Bye` and shut the writer down.
pub type SessionCloser = Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>;

/// One session with a relay: a bidirectional byte stream, the connection binding for `Hello`
/// and the relay's identity.
pub struct Session {
    /// Bytes from the relay.
    pub reader: SessionReader,
    /// Bytes to the relay.
    pub writer: SessionWriter,
    /// 32 bytes both ends derive from this connection only (the TLS exporter value over
    /// QUIC); the `Hello` signature covers them, so it cannot be replayed elsewhere.
    pub binding: [u8; 32],
    /// The relay's identity (its iroh endpoint id), authenticated by the transport.
    pub relay_id: RelayId,
    closer: Option<SessionCloser>,
}

impl Session {
    /// A session over two stream halves.
    pub fn new(
        reader: impl AsyncRead + Send + Unpin + 'static,
        writer: impl AsyncWrite + Send + Unpin + 'static,
        binding: [u8; 32],
        relay_id: RelayId,
    ) -> Self {
        Self {
            reader: Box::new(reader),
            writer: Box::new(writer),
            binding,
            relay_id,
            closer: None,
        }
    }

    /// The same session with a hook that closes the underlying connection.
    pub fn with_closer(mut self, closer: SessionCloser) -> Self {
        self.closer = Some(closer);
        self
    }

    /// Takes the close hook (the client calls it once when the session ends).
    pub fn take_closer(&mut self) -> Option<SessionCloser> {
        self.closer.take()
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("relay_id", &self.relay_id)
            .field("binding", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// Opens sessions with a relay. The client calls [`Transport::connect`] for every (re)connect
/// attempt, with the device's identity key, and [`Transport::shutdown`] once when it closes.
pub trait Transport: Send + Sync + 'static {
    /// Opens a new session as `device`.
    fn connect<'a>(
        &'a self,
        device: &'a DeviceKey,
    ) -> BoxFuture<'a, Result<Session, TransportError>>;

    /// Releases everything the transport holds (an endpoint and its sockets). After this,
    /// `connect` fails with [`TransportError::Shutdown`].
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

type ConnectFn = dyn Fn(&DeviceKey) -> Result<Session, TransportError> + Send + Sync;

/// An in-process transport: every connect calls a function that returns the session halves.
///
/// The function is typically `RelayHandle::connect_in_memory` of an in-process `sync-relay`
/// wrapped into a [`Session`]; taking a function keeps `sync-client` free of a dependency on
/// the relay (and on everything the relay depends on) in normal builds, and lets tests feed a
/// scripted relay.
#[derive(Clone)]
pub struct MemoryTransport {
    connect: Arc<ConnectFn>,
}

impl MemoryTransport {
    /// A transport whose every connect calls `connect` with the device key.
    pub fn new(
        connect: impl Fn(&DeviceKey) -> Result<Session, TransportError> + Send + Sync + 'static,
    ) -> Self {
        Self {
            connect: Arc::new(connect),
        }
    }
}

impl fmt::Debug for MemoryTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MemoryTransport")
    }
}

impl Transport for MemoryTransport {
    fn connect<'a>(
        &'a self,
        device: &'a DeviceKey,
    ) -> BoxFuture<'a, Result<Session, TransportError>> {
        let result = (self.connect)(device);
        Box::pin(async move { result })
    }
}
