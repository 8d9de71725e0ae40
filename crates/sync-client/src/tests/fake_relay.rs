//! A scripted in-process relay speaking the session protocol over `tokio::io::duplex`, for
//! unit tests of the client that need exact control (refusals, tampered blobs, dropped
//! sessions, an unreachable relay). The real relay is exercised by the integration tests.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use sync_crypto::{HelloChallenge, HelloSignature, verify_hello};
use sync_types::{
    BlobId, Cursor, DeviceId, ErrorCode, FrameCodec, GroupId, Limits, Message, Notify, Payload,
    Pong, PullEntry, PullResponse, PushAck, RelayId, Welcome, WireError,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::TransportError;
use crate::transport::{MemoryTransport, Session};

/// One stored blob.
#[derive(Clone, Debug)]
pub(crate) struct Stored {
    pub(crate) cursor: Cursor,
    pub(crate) blob_id: BlobId,
    pub(crate) sender: DeviceId,
    pub(crate) payload: Payload,
}

#[derive(Default)]
struct State {
    online: bool,
    /// Reads frames but answers nothing (a hung relay).
    mute: bool,
    allowed_group: Option<GroupId>,
    hello_error: Option<WireError>,
    push_errors: VecDeque<WireError>,
    blobs: Vec<Stored>,
    by_id: HashMap<BlobId, Cursor>,
    push_counts: HashMap<BlobId, usize>,
    /// Every Hello: the device, its resume cursor and the encoded message.
    hellos: Vec<(DeviceId, Cursor, Vec<u8>)>,
    sessions: Vec<(u64, DeviceId, mpsc::UnboundedSender<Out>)>,
    tasks: Vec<JoinHandle<()>>,
    next_session: u64,
    page_limit: u32,
    limits: Limits,
    /// The id of the log, announced in `Welcome`.
    store_id: u64,
    /// The last cursor assigned.
    last_cursor: u64,
    /// Misbehaviour on pulls, if any.
    trick: Option<PullTrick>,
    /// Cursors of blobs removed with the relay's knowledge (counted in `removed`).
    removed: std::collections::BTreeSet<u64>,
}

/// The fake relay; clones share state.
#[derive(Clone)]
pub(crate) struct FakeRelay {
    state: Arc<Mutex<State>>,
    byes: Arc<tokio::sync::watch::Sender<usize>>,
    relay_id: RelayId,
}

impl FakeRelay {
    pub(crate) fn new() -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                online: true,
                page_limit: 1000,
                limits: Limits::DEFAULT,
                store_id: 0x5707_e1d0,
                ..State::default()
            })),
            relay_id: RelayId::from_bytes([0xAB; 32]),
            byes: Arc::new(tokio::sync::watch::Sender::new(0)),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    pub(crate) fn set_online(&self, online: bool) {
        self.with(|s| s.online = online);
    }

    pub(crate) fn set_mute(&self, mute: bool) {
        self.with(|s| s.mute = mute);
    }

    pub(crate) fn allow_only(&self, group: GroupId) {
        self.with(|s| s.allowed_group = Some(group));
    }

    /// Refuses the next `Hello` with `e`.
    pub(crate) fn refuse_hello(&self, e: WireError) {
        self.with(|s| s.hello_error = Some(e));
    }

    pub(crate) fn refuse_next_push(&self, e: WireError) {
        self.with(|s| s.push_errors.push_back(e));
    }

    pub(crate) fn set_page_limit(&self, n: u32) {
        self.with(|s| s.page_limit = n);
    }

    pub(crate) fn set_limits(&self, limits: Limits) {
        self.with(|s| s.limits = limits);
    }

    pub(crate) fn blobs(&self) -> Vec<Stored> {
        self.with(|s| s.blobs.clone())
    }

    pub(crate) fn push_count(&self, id: &BlobId) -> usize {
        self.with(|s| s.push_counts.get(id).copied().unwrap_or(0))
    }

    pub(crate) fn hellos(&self) -> Vec<(DeviceId, Cursor, Vec<u8>)> {
        self.with(|s| s.hellos.clone())
    }

    /// Waits until `n` sessions ended with `Bye`.
    pub(crate) async fn wait_byes(&self, n: usize) {
        let mut rx = self.byes.subscribe();
        rx.wait_for(|b| *b >= n).await.unwrap();
    }

    /// Stores a blob as if `sender` had pushed it (tampered or not) and notifies everyone.
    pub(crate) fn insert_raw(&self, sender: DeviceId, blob_id: BlobId, payload: Vec<u8>) -> Cursor {
        self.with(|s| commit(s, sender, blob_id, Payload::from(payload), None))
    }

    /// Serves the stored blob `blob_id` again under a new cursor (a relay replaying it; an
    /// honest relay never stores one id twice) and notifies everyone.
    pub(crate) fn replay(&self, blob_id: &BlobId) -> Cursor {
        self.with(|s| {
            let old = s
                .blobs
                .iter()
                .find(|b| b.blob_id == *blob_id)
                .cloned()
                .expect("the blob to replay is stored");
            s.by_id.remove(blob_id);
            commit(s, old.sender, old.blob_id, old.payload, None)
        })
    }

    /// Goes back in time: forgets every blob above `cursor` (as a relay restored from an older
    /// copy of its database would; the store id stays) and cuts every session.
    pub(crate) fn roll_back_to(&self, cursor: Cursor) {
        self.with(|s| {
            s.blobs.retain(|b| b.cursor <= cursor);
            s.by_id.retain(|_, c| *c <= cursor);
            s.last_cursor = cursor.get();
        });
        self.drop_sessions();
    }

    /// Starts the log afresh (a new database: no blobs, a new store id) and cuts every session.
    pub(crate) fn reset_store(&self) {
        self.with(|s| {
            s.blobs.clear();
            s.by_id.clear();
            s.removed.clear();
            s.last_cursor = 0;
            s.store_id = s.store_id.wrapping_add(1);
        });
        self.drop_sessions();
    }

    /// Removes the blob at `cursor` as an expiry or a delete would: pages count it in `removed`.
    pub(crate) fn expire(&self, cursor: Cursor) {
        self.with(|s| {
            s.blobs.retain(|b| b.cursor != cursor);
            s.removed.insert(cursor.get());
        });
    }

    /// Flips one bit in the middle of the stored blob at `cursor`.
    pub(crate) fn tamper(&self, cursor: Cursor) {
        self.with(|s| {
            let b = s
                .blobs
                .iter_mut()
                .find(|b| b.cursor == cursor)
                .expect("the blob to tamper with is stored");
            let mut bytes = b.payload.as_slice().to_vec();
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0x01;
            b.payload = Payload::from(bytes);
        });
    }

    /// Misbehaves on pulls from now on (`None`: honest again).
    pub(crate) fn set_pull_trick(&self, trick: Option<PullTrick>) {
        self.with(|s| s.trick = trick);
    }

    /// Leaves the blob at `cursor` out of every page without accounting for it (withholding).
    pub(crate) fn withhold(&self, cursor: Cursor) {
        self.with(|s| s.blobs.retain(|b| b.cursor != cursor));
    }

    /// Cuts every session (as a crash or network loss would).
    pub(crate) fn drop_sessions(&self) {
        self.with(|s| {
            for t in s.tasks.drain(..) {
                t.abort();
            }
            s.sessions.clear();
        });
    }

    pub(crate) fn transport(&self) -> MemoryTransport {
        let relay = self.clone();
        MemoryTransport::new(move |device| relay.open(device.device_id()))
    }

    fn open(&self, device: DeviceId) -> Result<Session, TransportError> {
        let (client, server) = tokio::io::duplex(256 * 1024);
        let id = self.with(|s| {
            s.next_session += 1;
            s.next_session
        });
        if !self.with(|s| s.online) {
            return Err(TransportError::Connect("fake relay offline".into()));
        }
        let mut binding = [0u8; 32];
        binding[..8].copy_from_slice(&id.to_be_bytes());
        let relay = self.clone();
        let task = tokio::spawn(async move {
            let (r, w) = tokio::io::split(server);
            relay.serve(id, device, binding, r, w).await;
        });
        self.with(|s| s.tasks.push(task));
        let (r, w) = tokio::io::split(client);
        Ok(Session::new(r, w, binding, self.relay_id))
    }

    /// The same relay behind a real iroh endpoint on 127.0.0.1 (QUIC, TLS with its own key, the
    /// Hello bound to the connection's exporter value): its id becomes the endpoint's, and the
    /// returned configuration dials it (one transport per device). Sessions end with the
    /// returned endpoint.
    pub(crate) async fn over_iroh(mut self) -> (Self, crate::IrohConfig, iroh::Endpoint) {
        use iroh::SecretKey;
        let endpoint = crate::self_hosted_endpoint(SecretKey::from_bytes(&[0x5e; 32]))
            .bind_addr("127.0.0.1:0")
            .expect("bind addr")
            .alpns(vec![sync_types::ALPN.to_vec()])
            .bind()
            .await
            .expect("endpoint");
        self.relay_id = RelayId::from_bytes(*endpoint.id().as_bytes());
        let addr = endpoint.bound_sockets()[0];
        let relay = self.clone();
        let accepting = endpoint.clone();
        tokio::spawn(async move {
            while let Some(incoming) = accepting.accept().await {
                let relay = relay.clone();
                tokio::spawn(async move {
                    let Ok(conn) = incoming.await else { return };
                    let mut binding = [0u8; 32];
                    if conn
                        .export_keying_material(&mut binding, sync_types::HELLO_BINDING_LABEL, b"")
                        .is_err()
                    {
                        return;
                    }
                    let device = DeviceId::from_bytes(*conn.remote_id().as_bytes());
                    let Ok((send, recv)) = conn.accept_bi().await else {
                        return;
                    };
                    let id = relay.with(|s| {
                        s.next_session += 1;
                        s.next_session
                    });
                    let serving = relay.clone();
                    let task = tokio::spawn(async move {
                        serving.serve(id, device, binding, recv, send).await;
                        // Keep the connection until the session is over.
                        drop(conn);
                    });
                    relay.with(|s| s.tasks.push(task));
                });
            }
        });
        let config = crate::IrohConfig::new(self.relay_id, vec![addr])
            .with_bind_addr(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        (self, config, endpoint)
    }

    async fn serve<R, W>(self, id: u64, device: DeviceId, binding: [u8; 32], mut r: R, mut w: W)
    where
        R: tokio::io::AsyncRead + Unpin + Send + 'static,
        W: tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, mut rx) = mpsc::unbounded_channel::<Out>();
        let writer = tokio::spawn(async move {
            let codec = FrameCodec::default();
            while let Some(out) = rx.recv().await {
                let frame = match out {
                    Out::Msg(msg) => codec.encode_to_bytes(&msg).unwrap(),
                    Out::Raw(bytes) => bytes.into(),
                };
                if w.write_all(&frame).await.is_err() {
                    break;
                }
            }
            let _ = w.shutdown().await;
        });
        drop(writer); // detached: it ends when every sender is gone
        let codec = FrameCodec::default();
        let mut buf = BytesMut::new();
        let mut hello_done = false;
        loop {
            let msg = loop {
                match codec.decode(&mut buf) {
                    Ok(Some(m)) => break Some(m),
                    Ok(None) => {}
                    Err(_) => break None,
                }
                if r.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                    break None;
                }
            };
            let Some(msg) = msg else { break };
            if !hello_done {
                let Message::Hello(h) = msg else { break };
                let challenge =
                    HelloChallenge::new(&binding, self.relay_id.as_bytes(), &device, &h.group_id);
                let refusal = self.with(|s| {
                    let encoded = Message::Hello(h.clone()).to_bytes().unwrap_or_default();
                    s.hellos.push((device, h.last_cursor, encoded));
                    if let Some(e) = s.hello_error.take() {
                        return Some(e);
                    }
                    if s.allowed_group.is_some_and(|g| g != h.group_id) {
                        return Some(WireError::new(ErrorCode::Unauthorized, "not a member"));
                    }
                    None
                });
                let refusal = refusal.or_else(|| {
                    verify_hello(&h.group_id, &challenge, &HelloSignature(h.auth_signature))
                        .err()
                        .map(|_| WireError::new(ErrorCode::Unauthorized, "bad signature"))
                });
                if let Some(e) = refusal {
                    let _ = tx.send(Out::Msg(Message::Error(e.for_request(h.request_id))));
                    break;
                }
                let welcome = self.with(|s| {
                    s.sessions.push((id, device, tx.clone()));
                    Welcome {
                        request_id: h.request_id,
                        relay_id: *self.relay_id.as_bytes(),
                        max_cursor: max_cursor(s),
                        limits: s.limits,
                        store_id: s.store_id,
                    }
                });
                let _ = tx.send(Out::Msg(Message::Welcome(welcome)));
                hello_done = true;
                continue;
            }
            if self.with(|s| s.mute) {
                continue;
            }
            if matches!(msg, Message::Bye(_)) {
                self.byes.send_modify(|b| *b += 1);
                break;
            }
            let trick = match &msg {
                Message::Pull(p) => self.with(|s| s.pull_trick(p)),
                _ => None,
            };
            let reply = match (msg, trick) {
                (_, Some(out)) => out,
                (msg, None) => Out::Msg(self.answer(msg, id, device)),
            };
            if tx.send(reply).is_err() {
                break;
            }
        }
        self.with(|s| s.sessions.retain(|(sid, _, _)| *sid != id));
        drop(tx);
    }

    /// The honest answer to a request on an established session.
    fn answer(&self, msg: Message, id: u64, device: DeviceId) -> Message {
        match msg {
            Message::Push(p) => self.with(|s| {
                *s.push_counts.entry(p.blob_id).or_default() += 1;
                if let Some(e) = s.push_errors.pop_front() {
                    return Message::Error(e.for_request(p.request_id));
                }
                let cursor = commit(s, device, p.blob_id, p.payload, Some(id));
                Message::PushAck(PushAck {
                    request_id: p.request_id,
                    blob_id: p.blob_id,
                    cursor,
                    server_time_ms: 1,
                })
            }),
            Message::Pull(p) => self.with(|s| {
                let limit = p.limit.min(s.page_limit).max(1) as usize;
                let after: Vec<&Stored> = s.blobs.iter().filter(|b| b.cursor > p.after).collect();
                let has_more = after.len() > limit;
                let entries: Vec<PullEntry> = after
                    .into_iter()
                    .take(limit)
                    .map(|b| PullEntry {
                        cursor: b.cursor,
                        blob_id: b.blob_id,
                        sender: b.sender,
                        payload: b.payload.clone(),
                        timestamp_ms: 7,
                    })
                    .collect();
                let last = entries.last().map_or(p.after, |e| e.cursor);
                let through = if has_more {
                    last
                } else {
                    last.max(max_cursor(s))
                };
                let removed = s
                    .removed
                    .iter()
                    .filter(|c| **c > p.after.get() && **c <= through.get())
                    .count() as u64;
                Message::PullResponse(PullResponse {
                    request_id: p.request_id,
                    entries,
                    has_more,
                    max_cursor: max_cursor(s),
                    removed,
                })
            }),
            Message::Ping(p) => Message::Pong(Pong {
                request_id: p.request_id,
            }),
            _ => Message::Error(WireError::new(ErrorCode::UnexpectedMessage, "no")),
        }
    }
}

/// What a session sends: a message, or bytes that are no valid frame.
enum Out {
    Msg(Message),
    Raw(Vec<u8>),
}

/// How the relay misbehaves on the next pulls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PullTrick {
    /// Answer the next pull with a frame header announcing 4 GiB and a few bytes (once).
    HugeFrame,
    /// Answer every pull with one more page: the first stored blob again, under the cursor
    /// after the pull's, and "more to come".
    EndlessPages,
}

impl State {
    fn pull_trick(&mut self, p: &sync_types::Pull) -> Option<Out> {
        match self.trick? {
            PullTrick::HugeFrame => {
                self.trick = None;
                let mut raw = 0xFFFF_FFF0u32.to_be_bytes().to_vec();
                raw.extend_from_slice(&[0x92, 0x13, 0x95]);
                Some(Out::Raw(raw))
            }
            PullTrick::EndlessPages => {
                let first = self.blobs.first()?;
                let cursor = Cursor::new(p.after.get() + 1);
                Some(Out::Msg(Message::PullResponse(PullResponse {
                    request_id: p.request_id,
                    entries: vec![PullEntry {
                        cursor,
                        blob_id: first.blob_id,
                        sender: first.sender,
                        payload: first.payload.clone(),
                        timestamp_ms: 7,
                    }],
                    has_more: true,
                    max_cursor: Cursor::new(cursor.get() + 1),
                    removed: 0,
                })))
            }
        }
    }
}

fn max_cursor(s: &State) -> Cursor {
    Cursor::new(s.last_cursor)
}

fn commit(
    s: &mut State,
    sender: DeviceId,
    blob_id: BlobId,
    payload: Payload,
    from_session: Option<u64>,
) -> Cursor {
    if let Some(c) = s.by_id.get(&blob_id) {
        return *c;
    }
    let cursor = Cursor::new(max_cursor(s).get() + 1);
    s.last_cursor = cursor.get();
    let size = payload.len() as u32;
    s.blobs.push(Stored {
        cursor,
        blob_id,
        sender,
        payload,
    });
    s.by_id.insert(blob_id, cursor);
    for (sid, _, tx) in &s.sessions {
        if Some(*sid) != from_session {
            let _ = tx.send(Out::Msg(Message::Notify(Notify {
                cursor,
                blob_id,
                sender,
                size,
            })));
        }
    }
    cursor
}
