//! A small test-side client made of sync-types, sync-crypto and iroh, and a relay started
//! in-process on 127.0.0.1 with port 0.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::BytesMut;
use iroh::endpoint::Connection;
use iroh::{Endpoint, EndpointAddr, SecretKey};
use sync_crypto::{GroupKeys, GroupSecret, HelloChallenge};
use sync_relay::{RelayConfig, RelayHandle};
use sync_types::{
    ALPN, BlobId, Cursor, Delete, DeviceId, ErrorCode, FrameCodec, HELLO_BINDING_LABEL, Hello,
    Message, PROTOCOL_VERSION, Payload, Ping, Pull, Push, PushAck, WireError,
};
use tempfile::TempDir;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Every wait for an event is bounded (the test kit's guard).
#[allow(unused_imports)] // each test file uses what it needs
pub use sync_testkit::{GUARD, guard};

pub struct TestRelay {
    pub handle: RelayHandle,
    pub dir: TempDir,
}

impl TestRelay {
    pub async fn start(tweak: impl FnOnce(&mut RelayConfig)) -> TestRelay {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = RelayConfig::for_tests(dir.path());
        tweak(&mut config);
        let handle = sync_relay::start(config).await.expect("relay starts");
        TestRelay { handle, dir }
    }

    pub fn addr(&self) -> SocketAddr {
        self.handle.direct_addrs()[0]
    }

    /// How many requests or sessions the relay refused with `code`.
    pub fn rejections(&self, code: ErrorCode) -> u64 {
        self.handle.metrics().rejections_total.get(code)
    }

    /// Closes the clients' connections, then shuts the relay down (which must succeed).
    pub async fn stop(&self, clients: impl IntoIterator<Item = Client>) {
        for c in clients {
            c.close().await;
        }
        self.handle.shutdown().await.expect("shutdown");
    }
}

/// Starts a [`TestRelay`] with these configuration keys changed from the test configuration,
/// e.g. `relay_with!(max_pull_count = 3, session_push_burst = 100).await`.
#[allow(unused_macros)] // each test file uses what it needs
macro_rules! relay_with {
    ($($key:ident = $value:expr),+ $(,)?) => {
        TestRelay::start(|c| {
            $(c.$key = $value;)+
        })
    };
}
#[allow(unused_imports)]
pub(crate) use relay_with;

/// A file of the repository's `ops/` directory (monitoring rules, dashboard, service unit).
pub fn ops_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../ops")
        .join(path)
}

/// Runs an operator's tool that checks a file; `installed` names what provides it (the panic
/// message when it cannot run). Whether it succeeded, and what it printed (stdout, then
/// stderr).
pub fn run_check(cmd: &mut Command, installed: &str) -> (bool, String) {
    let out = cmd.output().expect(installed);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

/// An id in full, as lowercase hex (to check it appears nowhere it must not).
pub fn hex_id(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn keys(n: u8) -> GroupKeys {
    GroupKeys::derive(&GroupSecret::from_bytes([n; 32]))
}

pub fn blob(n: u64) -> BlobId {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&n.to_be_bytes());
    b[15] = 0xb1;
    BlobId::from_bytes(b)
}

/// A Hello for `device` (without admission token), signed with the group key over the
/// connection's `binding` and the relay's id.
pub fn signed_hello(
    keys: &GroupKeys,
    binding: &[u8; 32],
    relay_id: &[u8; 32],
    device: &DeviceId,
    request_id: u64,
) -> Hello {
    let challenge = HelloChallenge::new(binding, relay_id, device, &keys.group_id());
    Hello {
        request_id,
        version: PROTOCOL_VERSION,
        group_id: keys.group_id(),
        last_cursor: Cursor::ZERO,
        auth_signature: keys.sign_hello(&challenge).0,
        admission_token: None,
    }
}

/// GET `path` from the relay's HTTP server: the status and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    guard("the HTTP response", stream.read_to_string(&mut response))
        .await
        .expect("read");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .expect("body");
    (status, body)
}

/// The value of one metric line of `/metrics` (`name` with its labels, without the prefix),
/// e.g. `sessions` or `admission_refusals_total{reason="sessions_per_ip"}`.
pub async fn metric(http: SocketAddr, name: &str) -> f64 {
    let (status, body) = http_get(http, "/metrics").await;
    assert_eq!(status, 200);
    let wanted = format!("sync_relay_{name} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&wanted))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in /metrics"))
}

pub fn push_msg(request_id: u64, blob_id: BlobId, payload: &[u8]) -> Message {
    Message::Push(Push {
        request_id,
        blob_id,
        payload: Payload::copy_from_slice(payload),
        ttl_secs: 0,
    })
}

pub fn pull_msg(request_id: u64, after: u64, limit: u32) -> Message {
    Message::Pull(Pull {
        request_id,
        after: Cursor::new(after),
        limit,
        max_bytes: None,
    })
}

/// Reads frames from any byte stream.
pub struct FrameReader<R> {
    r: R,
    buf: BytesMut,
    codec: FrameCodec,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(r: R) -> Self {
        Self {
            r,
            buf: BytesMut::new(),
            // The client accepts whatever the relay may send (a pull response of a max blob).
            codec: FrameCodec::new(64 << 20),
        }
    }

    /// The next frame, or `None` when the stream ended (or broke) cleanly between frames.
    pub async fn next(&mut self) -> Option<Message> {
        guard("a frame from the relay", async {
            loop {
                if let Some(msg) = self.codec.decode(&mut self.buf).expect("relay frame") {
                    return Some(msg);
                }
                let n = self.r.read_buf(&mut self.buf).await.unwrap_or(0);
                if n == 0 {
                    assert!(self.buf.is_empty(), "stream ended inside a frame");
                    return None;
                }
            }
        })
        .await
    }

    /// The next frame, which must be an `Error`.
    pub async fn next_error(&mut self) -> WireError {
        match self.next().await.expect("a typed error") {
            Message::Error(e) => e,
            other => panic!("expected an Error frame, got {other:?}"),
        }
    }

    /// A refusal: the next frame is an `Error` with `code`, and then the relay ends the stream.
    pub async fn expect_refusal(&mut self, code: ErrorCode) -> WireError {
        let err = self.next_error().await;
        assert_eq!(err.code, code, "{err:?}");
        assert!(self.until_end().await.is_empty(), "session closed");
        err
    }

    /// The next frame that is not a `Notify` (notifies are collected into `notifies`).
    pub async fn next_reply(&mut self, notifies: &mut Vec<sync_types::Notify>) -> Message {
        loop {
            match self
                .next()
                .await
                .expect("a reply, not the end of the stream")
            {
                Message::Notify(n) => notifies.push(n),
                other => return other,
            }
        }
    }

    /// Reads until the relay ends the stream; returns what came before.
    pub async fn until_end(&mut self) -> Vec<Message> {
        let mut out = Vec::new();
        while let Some(m) = self.next().await {
            out.push(m);
        }
        out
    }
}

/// Writes frames to any byte stream.
pub struct FrameWriter<W> {
    w: W,
    codec: FrameCodec,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub fn new(w: W) -> Self {
        Self {
            w,
            codec: FrameCodec::new(64 << 20),
        }
    }

    pub async fn send(&mut self, msg: &Message) {
        let frame = self.codec.encode_to_bytes(msg).expect("encode");
        self.w.write_all(&frame).await.expect("write frame");
    }

    /// Writes bytes as they are (garbage, hostile headers).
    pub async fn raw(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).await.expect("write raw");
    }

    pub async fn finish(&mut self) {
        let _ = self.w.shutdown().await;
    }
}

pub async fn client_endpoint() -> Endpoint {
    client_endpoint_with(SecretKey::generate()).await
}

pub async fn client_endpoint_with(secret: SecretKey) -> Endpoint {
    client_endpoint_at(secret, "127.0.0.1:0").await
}

/// A client endpoint bound to `bind` (another loopback address than 127.0.0.1, say).
pub async fn client_endpoint_at(secret: SecretKey, bind: &str) -> Endpoint {
    sync_client::self_hosted_endpoint(secret)
        .bind_addr(bind)
        .expect("bind addr")
        .bind()
        .await
        .unwrap_or_else(|e| panic!("client endpoint on {bind}: {e}"))
}

/// One QUIC connection attempt from `endpoint` to the relay (bounded by the guard); `what`
/// names the wait in the guard's message.
pub async fn try_connect(
    what: &str,
    endpoint: &Endpoint,
    relay_id: iroh::EndpointId,
    addr: SocketAddr,
) -> Result<Connection, iroh::endpoint::ConnectError> {
    guard(
        what,
        endpoint.connect(EndpointAddr::new(relay_id).with_ip_addr(addr), ALPN),
    )
    .await
}

/// A device connected to the relay over real iroh QUIC, one bidirectional stream.
pub struct Client {
    pub endpoint: Endpoint,
    pub conn: Connection,
    pub device: DeviceId,
    pub binding: [u8; 32],
    pub relay_id: [u8; 32],
    pub tx: FrameWriter<iroh::endpoint::SendStream>,
    pub rx: FrameReader<iroh::endpoint::RecvStream>,
    pub notifies: Vec<sync_types::Notify>,
    next_id: u64,
}

/// A QUIC connection to the relay and nothing else (no stream): what a silent stranger holds.
pub async fn quic_connect(relay_id: iroh::EndpointId, addr: SocketAddr) -> (Endpoint, Connection) {
    let endpoint = client_endpoint().await;
    let conn = try_connect("the QUIC connection", &endpoint, relay_id, addr)
        .await
        .expect("connect");
    (endpoint, conn)
}

impl Client {
    pub async fn connect_to(relay_id: iroh::EndpointId, addr: SocketAddr) -> Client {
        Self::connect_as(SecretKey::generate(), relay_id, addr).await
    }

    /// Connects with the device key `secret` (several connections of one device).
    pub async fn connect_as(
        secret: SecretKey,
        relay_id: iroh::EndpointId,
        addr: SocketAddr,
    ) -> Client {
        let endpoint = client_endpoint_with(secret).await;
        let conn = try_connect("the QUIC connection", &endpoint, relay_id, addr)
            .await
            .expect("connect");
        Self::on_connection(endpoint, conn, relay_id).await
    }

    /// A client on a connection that is open (the stream is opened here).
    pub async fn on_connection(
        endpoint: Endpoint,
        conn: Connection,
        relay_id: iroh::EndpointId,
    ) -> Client {
        let mut binding = [0u8; 32];
        conn.export_keying_material(&mut binding, HELLO_BINDING_LABEL, b"")
            .expect("exporter");
        let (send, recv) = conn.open_bi().await.expect("open stream");
        Client {
            device: DeviceId::from_bytes(*endpoint.id().as_bytes()),
            endpoint,
            conn,
            binding,
            relay_id: *relay_id.as_bytes(),
            tx: FrameWriter::new(send),
            rx: FrameReader::new(recv),
            notifies: Vec::new(),
            next_id: 1,
        }
    }

    pub async fn connect(relay: &TestRelay) -> Client {
        Self::connect_to(relay.handle.endpoint_id(), relay.addr()).await
    }

    /// Connects and opens a session in the group of `keys`; panics unless it gets `Welcome`.
    pub async fn open(relay: &TestRelay, keys: &GroupKeys) -> (Client, sync_types::Welcome) {
        Self::open_at(relay.handle.endpoint_id(), relay.addr(), keys).await
    }

    /// [`Client::open`] on the relay with this id at this address.
    pub async fn open_at(
        relay_id: iroh::EndpointId,
        addr: SocketAddr,
        keys: &GroupKeys,
    ) -> (Client, sync_types::Welcome) {
        let mut c = Self::connect_to(relay_id, addr).await;
        match c.hello(keys).await {
            Message::Welcome(w) => (c, w),
            other => panic!("expected Welcome, got {other:?}"),
        }
    }

    /// Ends the session with `Bye` and waits until the relay ended the stream (the session's
    /// places are free then), then closes the connection.
    pub async fn leave(mut self) {
        self.tx
            .send(&Message::Bye(sync_types::Bye { reason: None }))
            .await;
        assert!(self.rx.until_end().await.is_empty(), "nothing after Bye");
        self.close().await;
    }

    pub fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// A Hello of this connection's device in the group of `keys` (not sent).
    pub fn signed_hello(&self, keys: &GroupKeys, request_id: u64) -> Hello {
        signed_hello(
            keys,
            &self.binding,
            &self.relay_id,
            &self.device,
            request_id,
        )
    }

    pub async fn hello(&mut self, keys: &GroupKeys) -> Message {
        self.hello_with_token(keys, None).await
    }

    /// Sends a Hello carrying `token`; the relay's answer.
    pub async fn hello_with_token(&mut self, keys: &GroupKeys, token: Option<&[u8]>) -> Message {
        let id = self.next_id();
        let hello = Hello {
            admission_token: token.map(Payload::copy_from_slice),
            ..self.signed_hello(keys, id)
        };
        self.tx.send(&hello.into()).await;
        self.rx.next().await.expect("an answer to Hello")
    }

    pub async fn request(&mut self, msg: Message) -> Message {
        self.tx.send(&msg).await;
        let reply = self.rx.next_reply(&mut self.notifies).await;
        assert_eq!(reply.request_id(), msg.request_id(), "reply to {msg:?}");
        reply
    }

    pub async fn push(&mut self, blob_id: BlobId, payload: &[u8]) -> Message {
        let id = self.next_id();
        self.request(push_msg(id, blob_id, payload)).await
    }

    /// Pushes and expects the push to be acknowledged.
    pub async fn push_acked(&mut self, blob_id: BlobId, payload: &[u8]) -> PushAck {
        match self.push(blob_id, payload).await {
            Message::PushAck(ack) => ack,
            other => panic!("expected PushAck, got {other:?}"),
        }
    }

    pub async fn delete(&mut self, blob_id: BlobId) -> Message {
        let id = self.next_id();
        self.request(Message::Delete(Delete {
            request_id: id,
            blob_id,
        }))
        .await
    }

    pub async fn pull(&mut self, after: u64, limit: u32) -> Message {
        let id = self.next_id();
        self.request(pull_msg(id, after, limit)).await
    }

    pub async fn ping(&mut self) {
        let id = self.next_id();
        let reply = self.request(Message::Ping(Ping { request_id: id })).await;
        assert!(matches!(reply, Message::Pong(_)), "{reply:?}");
    }

    pub async fn close(self) {
        self.conn.close(0u32.into(), b"done");
        self.endpoint.close().await;
    }
}

pub fn expect_error(msg: &Message) -> &WireError {
    match msg {
        Message::Error(e) => e,
        other => panic!("expected an Error frame, got {other:?}"),
    }
}
