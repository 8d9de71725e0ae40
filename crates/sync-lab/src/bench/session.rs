//! A benchmark device: its own iroh endpoint on 127.0.0.1, one session to the relay (signed
//! `Hello`, then pre-sealed `Push` frames written straight to the stream), and the reads that
//! wait for acks and notifications. Lower-level than `SyncClient` on purpose: it pipelines up
//! to the relay's `max_in_flight` and adds nothing to the relay's cost.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use iroh::endpoint::Connection;
use iroh::{Endpoint, EndpointAddr, EndpointId, SecretKey};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use sync_crypto::{DeviceKey, HelloChallenge};
use sync_types::{
    ALPN, BlobId, Bye, Cursor, DeviceId, HELLO_BINDING_LABEL, Hello, Message, PROTOCOL_VERSION,
    RelayAddr,
};

use super::frames::FrameStream;
use super::sealed::Group;
use super::{BenchError, SEALED, quic_error};

/// How long closing a session waits for the relay to close the connection after `Bye`.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// A QUIC server to dial: the relay or the echo process.
#[derive(Debug, Clone)]
pub(super) struct Peer {
    id: EndpointId,
    addrs: Vec<SocketAddr>,
}

impl Peer {
    /// The peer at a relay address (literal IP socket addresses only).
    pub(super) fn new(addr: &RelayAddr) -> Result<Self, BenchError> {
        let id = EndpointId::from_bytes(addr.id.as_bytes())
            .map_err(|e| BenchError::Quic(format!("endpoint id {}: {e}", addr.id)))?;
        let addrs = addr.socket_addrs();
        if addrs.is_empty() {
            return Err(BenchError::Quic(format!("{addr}: no IP address to dial")));
        }
        Ok(Self { id, addrs })
    }

    /// Connects `ep` to this peer with `alpn`.
    pub(super) async fn dial(&self, ep: &Endpoint, alpn: &[u8]) -> Result<Connection, BenchError> {
        let addr = self
            .addrs
            .iter()
            .fold(EndpointAddr::new(self.id), |a, s| a.with_ip_addr(*s));
        ep.connect(addr, alpn)
            .await
            .map_err(|e| BenchError::Quic(format!("connect to {}: {e}", self.id)))
    }
}

/// The loopback address of the devices (and of the echo process).
pub(super) const DEVICES_IP: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A loopback endpoint with nothing that reaches beyond this machine (no relay servers, no
/// address lookup, no port mapping), on [`DEVICES_IP`]; it accepts `alpn` when given.
pub(super) async fn endpoint(
    secret: SecretKey,
    alpn: Option<&[u8]>,
) -> Result<Endpoint, BenchError> {
    endpoint_on(DEVICES_IP, secret, alpn).await
}

/// As [`endpoint`], bound to `ip` (any port).
pub(super) async fn endpoint_on(
    ip: IpAddr,
    secret: SecretKey,
    alpn: Option<&[u8]>,
) -> Result<Endpoint, BenchError> {
    let mut builder = sync_client::self_hosted_endpoint(secret)
        .bind_addr(SocketAddr::new(ip, 0))
        .map_err(|e| quic_error("endpoint address", e))?;
    if let Some(alpn) = alpn {
        builder = builder.alpns(vec![alpn.to_vec()]);
    }
    builder
        .bind()
        .await
        .map_err(|e| quic_error("bind an endpoint", e))
}

/// The `Hello` of the device behind `ep` in group `g`, signed for connection `conn` (bound to
/// its TLS keying material, so it is worth nothing on another connection).
pub(super) fn signed_hello(
    conn: &Connection,
    ep: &Endpoint,
    g: &Group,
    request_id: u64,
) -> Result<Message, BenchError> {
    let mut binding = [0u8; 32];
    conn.export_keying_material(&mut binding, HELLO_BINDING_LABEL, b"")
        .map_err(|e| BenchError::Quic(format!("keying material: {e:?}")))?;
    let relay_id = *conn.remote_id().as_bytes();
    let device_id = DeviceId::from_bytes(*ep.id().as_bytes());
    let challenge = HelloChallenge::new(&binding, &relay_id, &device_id, &g.id);
    Ok(Message::Hello(Hello {
        request_id,
        version: PROTOCOL_VERSION,
        group_id: g.id,
        last_cursor: Cursor::ZERO,
        auth_signature: g.keys.sign_hello(&challenge).0,
        admission_token: None,
    }))
}

/// A device with an open session to the relay.
pub(super) struct Device {
    _ep: Endpoint,
    conn: Connection,
    stream: FrameStream,
    /// The relay's `max_in_flight`, from its `Welcome`.
    window: usize,
}

impl Device {
    /// Opens a session of a device (its key from `seed`) in group `g`: `Hello` signed for this
    /// connection, answered by `Welcome`.
    pub(super) async fn open(relay: &Peer, g: &Group, seed: u64) -> Result<Self, BenchError> {
        let key = DeviceKey::random(&mut ChaCha20Rng::seed_from_u64(seed));
        let ep = endpoint(SecretKey::from_bytes(&key.secret_bytes()), None).await?;
        let conn = relay.dial(&ep, ALPN).await?;
        let hello = signed_hello(&conn, &ep, g, 1)?;
        let mut stream = FrameStream::open(&conn).await?;
        stream.send(&hello).await?;
        match stream.next().await? {
            Message::Welcome(w) => {
                stream.set_max_frame(w.limits.max_frame_bytes as usize);
                Ok(Self {
                    _ep: ep,
                    conn,
                    stream,
                    window: (w.limits.max_in_flight as usize).max(1),
                })
            }
            other => Err(unexpected("Welcome", &other)),
        }
    }

    /// Writes bytes (one or more whole frames) to the session's stream.
    pub(super) async fn write(&mut self, bytes: &[u8]) -> Result<(), BenchError> {
        self.stream.write(bytes).await
    }

    /// The next frame from the relay.
    pub(super) async fn next(&mut self) -> Result<Message, BenchError> {
        self.stream.next().await
    }

    /// Reads until the `PushAck` of `request_id` (other acks and notifications are skipped).
    pub(super) async fn ack(&mut self, request_id: u64) -> Result<(), BenchError> {
        loop {
            match self.next().await? {
                Message::PushAck(a) if a.request_id == request_id => return Ok(()),
                Message::PushAck(_) | Message::Notify(_) => {}
                other => return Err(unexpected("PushAck", &other)),
            }
        }
    }

    /// Reads until a `Notify` for `blob_id` (anything else is skipped).
    pub(super) async fn notified(&mut self, blob_id: BlobId) -> Result<(), BenchError> {
        loop {
            if let Message::Notify(n) = self.next().await?
                && n.blob_id == blob_id
            {
                return Ok(());
            }
        }
    }

    /// Pushes every frame pipelined (never more than the relay's `max_in_flight` unanswered)
    /// and returns when every one is acked.
    pub(super) async fn blast(&mut self, frames: &[Bytes]) -> Result<(), BenchError> {
        let n = frames.len();
        let (mut sent, mut acked) = (0, 0);
        let mut out = BytesMut::with_capacity(self.window * (SEALED + 64));
        loop {
            // Take every ack that has arrived.
            while let Some(m) = self.stream.decode()? {
                match m {
                    Message::PushAck(_) => acked += 1,
                    Message::Notify(_) => {}
                    other => return Err(unexpected("PushAck", &other)),
                }
            }
            if acked >= n {
                return Ok(());
            }
            // Refill the window, in one write.
            while sent < n && sent - acked < self.window {
                if let Some(f) = frames.get(sent) {
                    out.extend_from_slice(f);
                }
                sent += 1;
            }
            if !out.is_empty() {
                self.write(&out).await?;
                out.clear();
            }
            self.stream.fill().await?;
        }
    }

    /// Says `Bye` and closes the connection (bounded).
    pub(super) async fn close(mut self) {
        let bye = Message::Bye(Bye { reason: None });
        let _ = self.stream.send(&bye).await;
        self.stream.finish();
        let _ = tokio::time::timeout(CLOSE_GRACE, self.conn.closed()).await;
        self.conn.close(0u32.into(), b"bye");
    }
}

/// A relay answer other than the `expected` one; an `Error` frame keeps its code and message.
pub(super) fn unexpected(expected: &str, got: &Message) -> BenchError {
    match got {
        Message::Error(e) => BenchError::Protocol(format!("expected {expected}, got {e:?}")),
        other => BenchError::Protocol(format!(
            "expected {expected}, got {}",
            other.message_type().name()
        )),
    }
}
