//! The QUIC transport over iroh: the device's own endpoint, dialing the relay's endpoint id at
//! its direct addresses, with nothing contacted on the internet.

use std::fmt;
use std::net::SocketAddr;
use std::sync::PoisonError;
use std::time::Duration;

use iroh::endpoint::{
    IdleTimeout, NetReportConfig, PortmapperConfig, QuicTransportConfig, presets,
};
use iroh::{Endpoint, EndpointAddr, EndpointId, RelayMode, SecretKey};
use sync_crypto::DeviceKey;
use sync_types::{HELLO_BINDING_LABEL, RelayAddr, RelayId, bind_addr_for};
use tokio::sync::Mutex;

use crate::error::TransportError;
use crate::transport::{BoxFuture, Session, Transport};

/// An iroh endpoint builder with `secret` as its identity that reaches nothing beyond the
/// addresses it is given: no iroh relay servers, no address lookup, no port mapping, a minimal
/// network report, no default sockets. Devices use it ([`IrohTransport`]); so can tools that
/// speak the protocol directly. Add `.bind_addr(…)` (and `.alpns(…)` to accept), then `.bind()`.
pub fn self_hosted_endpoint(secret: SecretKey) -> iroh::endpoint::Builder {
    Endpoint::builder(presets::Minimal)
        .secret_key(secret)
        .relay_mode(RelayMode::Disabled)
        .clear_address_lookup()
        .portmapper_config(PortmapperConfig::Disabled)
        .net_report_config(NetReportConfig::minimal())
        .clear_ip_transports()
}

/// How long one dial may take when other relays are waiting their turn.
const FALLBACK_DIAL_TIMEOUT: Duration = Duration::from_secs(3);

/// How long closing a session waits for the relay to close the connection after `Bye`.
const CLOSE_GRACE: Duration = Duration::from_millis(500);

/// Longest wait for the endpoint to close on shutdown.
const ENDPOINT_CLOSE_WAIT: Duration = Duration::from_millis(500);

/// Where the relay is and how the device's endpoint binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IrohConfig {
    /// The relay's iroh endpoint id (its identity; TLS checks it).
    pub relay_id: RelayId,
    /// The relay's direct UDP addresses; at least one.
    pub relay_addrs: Vec<SocketAddr>,
    /// Local address to bind the device's endpoint to (port 0 = any).
    pub bind_addr: SocketAddr,
    /// How a dead relay is noticed: the device's endpoint sends a QUIC keep-alive every
    /// `keep_alive` and gives a connection up when nothing came from the relay for `idle`
    /// (the relay's own idle timeout applies too if it is shorter). Default 2 s and 6 s: a
    /// relay that died (or a network that went away) is noticed within 8 s (QUIC counts the
    /// silence from the device's first packet after the relay's last one, which the
    /// keep-alive makes at most `keep_alive` later).
    pub liveness: Liveness,
    /// More relays of the same deployment, in order of preference after the first: when a
    /// session is lost the device dials the next relay in the list (wrapping around), and a
    /// dial that fails moves on to the one after it.
    pub fallbacks: Vec<RelayAddr>,
}

impl IrohConfig {
    /// Dial `relay_id` at `relay_addrs`, binding locally to the unspecified address of the
    /// relay's family ([`bind_addr_for`]).
    pub fn new(relay_id: RelayId, relay_addrs: Vec<SocketAddr>) -> Self {
        Self {
            relay_id,
            bind_addr: bind_addr_for(&relay_addrs),
            relay_addrs,
            liveness: Liveness::DEFAULT,
            fallbacks: Vec::new(),
        }
    }

    /// The same configuration with another keep-alive interval and idle timeout.
    pub fn with_liveness(mut self, liveness: Liveness) -> Self {
        self.liveness = liveness;
        self
    }

    /// Dial the first of `relays`, then the others in order (see [`IrohConfig::fallbacks`]);
    /// `None` when the list is empty.
    pub fn for_relays(relays: &[RelayAddr]) -> Option<Self> {
        let (first, rest) = relays.split_first()?;
        Some(Self::new(first.id, first.socket_addrs()).with_fallbacks(rest.to_vec()))
    }

    /// The same configuration with more relays to fail over to.
    pub fn with_fallbacks(mut self, fallbacks: Vec<RelayAddr>) -> Self {
        self.fallbacks = fallbacks;
        self
    }

    /// Every relay, the first one first.
    fn relays(&self) -> Vec<(RelayId, Vec<SocketAddr>)> {
        std::iter::once((self.relay_id, self.relay_addrs.clone()))
            .chain(self.fallbacks.iter().map(|r| (r.id, r.socket_addrs())))
            .collect()
    }

    /// The same configuration binding locally to `addr`.
    pub fn with_bind_addr(mut self, addr: SocketAddr) -> Self {
        self.bind_addr = addr;
        self
    }
}

/// Keep-alive interval and idle timeout of the device's QUIC connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    /// How often the device sends a keep-alive when it has nothing else to send.
    pub keep_alive: Duration,
    /// Silence from the relay after which the connection counts as lost.
    pub idle: Duration,
}

impl Liveness {
    /// Keep-alive every 2 s, lost after 6 s of silence.
    pub const DEFAULT: Liveness = Liveness {
        keep_alive: Duration::from_secs(2),
        idle: Duration::from_secs(6),
    };
}

impl Default for Liveness {
    fn default() -> Self {
        Self::DEFAULT
    }
}

enum EndpointState {
    Unbound,
    Bound(Endpoint),
    Shutdown,
}

/// The iroh QUIC transport. The device's endpoint is bound on the first connect with the
/// device key as its iroh secret key (so the relay sees the `DeviceId` as the TLS-authenticated
/// peer id) and reused for every reconnect; no iroh relay servers, no discovery, no port
/// mapping. Each session is one QUIC connection with one bidirectional stream.
pub struct IrohTransport {
    config: IrohConfig,
    endpoint: Mutex<EndpointState>,
    /// Where the next dial starts in the relay list, and whether the last dial opened a session
    /// (a new dial after that means the session ended: the next relay is tried first).
    cursor: std::sync::Mutex<DialCursor>,
}

#[derive(Debug, Default, Clone, Copy)]
struct DialCursor {
    next: usize,
    had_session: bool,
}

impl fmt::Debug for IrohTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IrohTransport")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl IrohTransport {
    /// A transport to the relay described by `config` (nothing is bound until the first
    /// connect).
    pub fn new(config: IrohConfig) -> Self {
        Self {
            config,
            endpoint: Mutex::new(EndpointState::Unbound),
            cursor: std::sync::Mutex::new(DialCursor::default()),
        }
    }

    /// The device's endpoint id once bound.
    pub async fn local_id(&self) -> Option<EndpointId> {
        match &*self.endpoint.lock().await {
            EndpointState::Bound(ep) => Some(ep.id()),
            _ => None,
        }
    }

    /// The device's endpoint once bound (after the first connect): large content is served
    /// and fetched over it, so peers and relays see the same `DeviceId`.
    pub async fn bound_endpoint(&self) -> Option<Endpoint> {
        match &*self.endpoint.lock().await {
            EndpointState::Bound(ep) => Some(ep.clone()),
            _ => None,
        }
    }

    async fn endpoint(&self, device: &DeviceKey) -> Result<Endpoint, TransportError> {
        let mut state = self.endpoint.lock().await;
        match &*state {
            EndpointState::Bound(ep) => return Ok(ep.clone()),
            EndpointState::Shutdown => return Err(TransportError::Shutdown),
            EndpointState::Unbound => {}
        }
        let secret = SecretKey::from_bytes(&device.secret_bytes());
        let liveness = self.config.liveness;
        let transport = QuicTransportConfig::builder()
            .keep_alive_interval(liveness.keep_alive)
            .max_idle_timeout(IdleTimeout::try_from(liveness.idle).ok())
            .build();
        let ep = self_hosted_endpoint(secret)
            .transport_config(transport)
            .bind_addr(self.config.bind_addr)
            .map_err(|e| TransportError::Setup(e.to_string()))?
            .bind()
            .await
            .map_err(|e| TransportError::Setup(e.to_string()))?;
        *state = EndpointState::Bound(ep.clone());
        Ok(ep)
    }

    /// Dials the relays in turn, from where the last session's relay left off (the next one
    /// after a session, the same one after a failed dial), until one answers; returns the last
    /// error when none does.
    async fn open(&self, device: &DeviceKey) -> Result<Session, TransportError> {
        let ep = self.endpoint(device).await?;
        let relays = self.config.relays();
        let start = {
            let mut c = self.cursor.lock().unwrap_or_else(PoisonError::into_inner);
            if c.had_session {
                c.next = (c.next + 1) % relays.len();
                c.had_session = false;
            }
            c.next
        };
        let mut last_error = TransportError::Setup("no relay configured".into());
        for step in 0..relays.len() {
            let index = (start + step) % relays.len();
            let Some((relay_id, addrs)) = relays.get(index) else {
                continue;
            };
            // With one relay the connect timeout of the caller bounds the dial; with several,
            // each gets a share so that a dead one does not hold the others up.
            let dial = self.open_one(&ep, *relay_id, addrs);
            let result = if relays.len() > 1 {
                tokio::time::timeout(FALLBACK_DIAL_TIMEOUT, dial)
                    .await
                    .unwrap_or_else(|_| Err(TransportError::Connect("dial timed out".into())))
            } else {
                dial.await
            };
            match result {
                Ok(session) => {
                    let mut c = self.cursor.lock().unwrap_or_else(PoisonError::into_inner);
                    c.next = index;
                    c.had_session = true;
                    return Ok(session);
                }
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    async fn open_one(
        &self,
        ep: &Endpoint,
        relay_id: RelayId,
        addrs: &[SocketAddr],
    ) -> Result<Session, TransportError> {
        let relay = EndpointId::from_bytes(relay_id.as_bytes())
            .map_err(|e| TransportError::Setup(format!("relay id: {e}")))?;
        if addrs.is_empty() {
            return Err(TransportError::Setup("no relay address configured".into()));
        }
        let addr = addrs
            .iter()
            .fold(EndpointAddr::new(relay), |a, s| a.with_ip_addr(*s));
        let conn = ep.connect(addr, sync_types::ALPN).await.map_err(|e| {
            let text = e.to_string();
            // The TLS handshake checks the peer's raw public key against the dialled id: a
            // refused certificate is another key at this address.
            if text.contains("invalid peer certificate") {
                TransportError::WrongRelay { expected: relay_id }
            } else {
                TransportError::Connect(text)
            }
        })?;
        let mut binding = [0u8; 32];
        conn.export_keying_material(&mut binding, HELLO_BINDING_LABEL, b"")
            .map_err(|e| TransportError::Session(format!("keying material: {e:?}")))?;
        let (send, recv) = conn
            .open_bi()
            .await
            .map_err(|e| TransportError::Session(e.to_string()))?;
        let relay_id = RelayId::from_bytes(*conn.remote_id().as_bytes());
        let closer = conn.clone();
        Ok(
            Session::new(recv, send, binding, relay_id).with_closer(Box::new(move || {
                Box::pin(async move {
                    // The relay closes the connection when it reads `Bye`; give it a moment so the
                    // `Bye` (already written and finished) is delivered, then close regardless.
                    let _ = tokio::time::timeout(CLOSE_GRACE, closer.closed()).await;
                    closer.close(0u32.into(), b"bye");
                })
            })),
        )
    }
}

impl Transport for IrohTransport {
    fn connect<'a>(
        &'a self,
        device: &'a DeviceKey,
    ) -> BoxFuture<'a, Result<Session, TransportError>> {
        Box::pin(self.open(device))
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let prev = std::mem::replace(&mut *self.endpoint.lock().await, EndpointState::Shutdown);
            if let EndpointState::Bound(ep) = prev {
                // A dial that never completed its handshake keeps `close` waiting for the
                // connection to drain (seconds); nothing is left to deliver, so bound it.
                let closing = tokio::spawn(async move { ep.close().await });
                let _ = tokio::time::timeout(ENDPOINT_CLOSE_WAIT, closing).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn server() -> Endpoint {
        self_hosted_endpoint(SecretKey::from_bytes(&[42; 32]))
            .bind_addr("127.0.0.1:0")
            .unwrap()
            .alpns(vec![sync_types::ALPN.to_vec()])
            .bind()
            .await
            .unwrap()
    }

    /// The session binding equals the relay's exporter value, the relay sees the device id as
    /// the authenticated peer, and bytes flow both ways on the one stream.
    #[tokio::test]
    async fn session_is_bound_to_the_connection_and_the_device_identity() {
        let server = server().await;
        let addr = server.bound_sockets()[0];
        let relay_id = RelayId::from_bytes(*server.id().as_bytes());
        let s2 = server.clone();
        let accept = tokio::spawn(async move {
            let conn = s2.accept().await.unwrap().await.unwrap();
            let mut ek = [0u8; 32];
            conn.export_keying_material(&mut ek, HELLO_BINDING_LABEL, b"")
                .unwrap();
            let (mut send, mut recv) = conn.accept_bi().await.unwrap();
            let mut buf = [0u8; 5];
            recv.read_exact(&mut buf).await.unwrap();
            send.write_all(b"world").await.unwrap();
            send.finish().unwrap();
            let remote = *conn.remote_id().as_bytes();
            conn.closed().await;
            (ek, remote, buf)
        });

        let device = DeviceKey::random(&mut ChaCha20Rng::seed_from_u64(3));
        let transport = IrohTransport::new(
            IrohConfig::new(relay_id, vec![addr])
                .with_bind_addr(SocketAddr::from(([127, 0, 0, 1], 0))),
        );
        let mut session = transport.connect(&device).await.unwrap();
        assert_eq!(session.relay_id, relay_id);
        assert_eq!(
            transport.local_id().await.map(|id| *id.as_bytes()),
            Some(*device.device_id().as_bytes())
        );
        session.writer.write_all(b"hello").await.unwrap();
        session.writer.flush().await.unwrap();
        let mut buf = [0u8; 5];
        session.reader.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"world");
        let closer = session.take_closer().unwrap();
        closer().await;
        let (ek, remote, got) = accept.await.unwrap();
        assert_eq!(ek, session.binding, "both ends derive the same binding");
        assert_eq!(remote, *device.device_id().as_bytes());
        assert_eq!(&got, b"hello");

        transport.shutdown().await;
        assert!(matches!(
            transport.connect(&device).await,
            Err(TransportError::Shutdown)
        ));
        server.close().await;
    }

    /// Another key answering at the relay's address is a typed error naming the pinned id.
    #[tokio::test]
    async fn another_key_at_the_relays_address_is_the_wrong_relay() {
        let server = server().await;
        let addr = server.bound_sockets()[0];
        let pinned = RelayId::from_bytes(*SecretKey::from_bytes(&[7; 32]).public().as_bytes());
        let s2 = server.clone();
        let accepting = tokio::spawn(async move {
            while let Some(incoming) = s2.accept().await {
                let _ = incoming.await;
            }
        });
        let device = DeviceKey::random(&mut ChaCha20Rng::seed_from_u64(5));
        let transport = IrohTransport::new(
            IrohConfig::new(pinned, vec![addr])
                .with_bind_addr(SocketAddr::from(([127, 0, 0, 1], 0))),
        );
        let got = transport.connect(&device).await;
        assert!(
            matches!(got, Err(TransportError::WrongRelay { expected }) if expected == pinned),
            "{:?}",
            got.err()
        );
        transport.shutdown().await;
        server.close().await;
        accepting.abort();
    }

    #[tokio::test]
    async fn unreachable_relay_is_a_connect_error() {
        let device = DeviceKey::random(&mut ChaCha20Rng::seed_from_u64(4));
        let transport = IrohTransport::new(IrohConfig::new(RelayId::from_bytes([1; 32]), vec![]));
        assert!(matches!(
            transport.connect(&device).await,
            Err(TransportError::Setup(_))
        ));
        transport.shutdown().await;
    }
}
