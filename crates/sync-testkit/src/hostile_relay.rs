//! [`HostileRelay`]: an in-process relay that speaks the real session protocol, honest until
//! told otherwise, for tests of devices that need exact control over what a relay does:
//! refusals, retry hints, tampered, withheld and replayed blobs, a log rolled back or started
//! afresh, a 4 GiB frame announced, endless pages, silence, dropped sessions.
//!
//! It serves over real iroh on 127.0.0.1 ([`HostileRelay::over_iroh`]: QUIC, TLS with its own
//! key, the `Hello` bound to the connection's exporter value), or over an in-memory duplex
//! stream ([`HostileRelay::open_duplex`]) for tests that wrap it in a transport of their own.
//! It checks every `Hello` like the real relay (the signature over the channel binding) and
//! keeps its log in memory. The real relay is exercised by the integration tests.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::BytesMut;
use sync_crypto::{HelloChallenge, HelloSignature, verify_hello};
use sync_types::{
    BlobId, Cursor, DeviceId, ErrorCode, FrameCodec, GroupId, Limits, Message, Notify, Payload,
    Pong, PullEntry, PullResponse, PushAck, RelayId, Welcome, WireError,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::TestkitError;

/// One stored blob.
#[derive(Clone, Debug)]
pub struct Stored {
    /// Where it is in the log.
    pub cursor: Cursor,
    /// Its id.
    pub blob_id: BlobId,
    /// The device that pushed it (as the relay saw it).
    pub sender: DeviceId,
    /// The sealed bytes, as stored (tampered with, if told so).
    pub payload: Payload,
}

/// The device's end of an in-memory session ([`HostileRelay::open_duplex`]).
pub struct DuplexSession {
    /// What the relay writes.
    pub reader: ReadHalf<DuplexStream>,
    /// What the relay reads.
    pub writer: WriteHalf<DuplexStream>,
    /// The channel binding the `Hello` must sign (unique per session).
    pub binding: [u8; 32],
    /// The relay's id.
    pub relay_id: RelayId,
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
    /// Pushes to acknowledge and drop without a trace (no blob, no hole).
    swallow: usize,
    /// Cursors of blobs removed with the relay's knowledge (counted in `removed`).
    removed: BTreeSet<u64>,
}

/// The relay; clones share its state (see the module docs).
#[derive(Clone)]
pub struct HostileRelay {
    state: Arc<Mutex<State>>,
    byes: Arc<tokio::sync::watch::Sender<usize>>,
    relay_id: RelayId,
}

impl Default for HostileRelay {
    fn default() -> Self {
        Self::new()
    }
}

impl HostileRelay {
    /// An honest relay with an empty log, default limits and id `ab…ab` (the endpoint's id
    /// once it serves over iroh).
    pub fn new() -> Self {
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
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The relay's id.
    pub fn relay_id(&self) -> RelayId {
        self.relay_id
    }

    /// Offline: new sessions fail to open ([`HostileRelay::open_duplex`] returns `None`).
    pub fn set_online(&self, online: bool) {
        self.with(|s| s.online = online);
    }

    /// Mute: frames after the handshake are read and never answered (a hung relay).
    pub fn set_mute(&self, mute: bool) {
        self.with(|s| s.mute = mute);
    }

    /// Refuses every `Hello` for another group (`Unauthorized`).
    pub fn allow_only(&self, group: GroupId) {
        self.with(|s| s.allowed_group = Some(group));
    }

    /// Refuses the next `Hello` with `e`.
    pub fn refuse_hello(&self, e: WireError) {
        self.with(|s| s.hello_error = Some(e));
    }

    /// Acknowledges the next `n` pushes and drops them without a trace: the cursor each was
    /// given goes to the next blob, so the log has no hole where they were.
    pub fn swallow_next_pushes(&self, n: usize) {
        self.with(|s| s.swallow += n);
    }

    /// Refuses the next push with `e` (a retry hint of `u64::MAX`, for one).
    pub fn refuse_next_push(&self, e: WireError) {
        self.with(|s| s.push_errors.push_back(e));
    }

    /// Serves at most `n` entries per page.
    pub fn set_page_limit(&self, n: u32) {
        self.with(|s| s.page_limit = n);
    }

    /// The limits announced in `Welcome` from now on.
    pub fn set_limits(&self, limits: Limits) {
        self.with(|s| s.limits = limits);
    }

    /// The log, in cursor order.
    pub fn blobs(&self) -> Vec<Stored> {
        self.with(|s| s.blobs.clone())
    }

    /// How many times `id` was pushed (retries and duplicates included).
    pub fn push_count(&self, id: &BlobId) -> usize {
        self.with(|s| s.push_counts.get(id).copied().unwrap_or(0))
    }

    /// Every `Hello` received: the device, its resume cursor and the encoded message.
    pub fn hellos(&self) -> Vec<(DeviceId, Cursor, Vec<u8>)> {
        self.with(|s| s.hellos.clone())
    }

    /// Waits until `n` sessions ended with the device's `Bye`.
    pub async fn wait_byes(&self, n: usize) {
        let mut rx = self.byes.subscribe();
        let _ = rx.wait_for(|b| *b >= n).await;
    }

    /// Stores a blob as if `sender` had pushed it (tampered or not) and notifies everyone.
    pub fn insert_raw(&self, sender: DeviceId, blob_id: BlobId, payload: Vec<u8>) -> Cursor {
        self.with(|s| commit(s, sender, blob_id, Payload::from(payload), None))
    }

    /// Serves the stored blob `blob_id` again under a new cursor (a relay replaying it; an
    /// honest relay never stores one id twice) and notifies everyone. `None` if it is not
    /// stored.
    pub fn replay(&self, blob_id: &BlobId) -> Option<Cursor> {
        self.with(|s| {
            let old = s.blobs.iter().find(|b| b.blob_id == *blob_id).cloned()?;
            s.by_id.remove(blob_id);
            Some(commit(s, old.sender, old.blob_id, old.payload, None))
        })
    }

    /// Goes back in time: forgets every blob above `cursor` (as a relay restored from an older
    /// copy of its database would; the store id stays) and cuts every session.
    pub fn roll_back_to(&self, cursor: Cursor) {
        self.with(|s| {
            s.blobs.retain(|b| b.cursor <= cursor);
            s.by_id.retain(|_, c| *c <= cursor);
            s.last_cursor = cursor.get();
        });
        self.drop_sessions();
    }

    /// Starts the log afresh (a new database: no blobs, a new store id) and cuts every session.
    pub fn reset_store(&self) {
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
    pub fn expire(&self, cursor: Cursor) {
        self.with(|s| {
            s.blobs.retain(|b| b.cursor != cursor);
            s.removed.insert(cursor.get());
        });
    }

    /// Flips one bit in the middle of the stored blob at `cursor`; whether one is stored there.
    pub fn tamper(&self, cursor: Cursor) -> bool {
        self.with(|s| {
            let Some(b) = s.blobs.iter_mut().find(|b| b.cursor == cursor) else {
                return false;
            };
            let mut bytes = b.payload.as_slice().to_vec();
            let mid = bytes.len() / 2;
            if let Some(byte) = bytes.get_mut(mid) {
                *byte ^= 0x01;
            }
            b.payload = Payload::from(bytes);
            true
        })
    }

    /// Misbehaves on pulls from now on (`None`: honest again).
    pub fn set_pull_trick(&self, trick: Option<PullTrick>) {
        self.with(|s| s.trick = trick);
    }

    /// Leaves the blob at `cursor` out of every page without accounting for it (withholding).
    pub fn withhold(&self, cursor: Cursor) {
        self.with(|s| s.blobs.retain(|b| b.cursor != cursor));
    }

    /// Cuts every session (as a crash or network loss would).
    pub fn drop_sessions(&self) {
        self.with(|s| {
            for t in s.tasks.drain(..) {
                t.abort();
            }
            s.sessions.clear();
        });
    }

    /// Opens an in-memory session for `device` (which must sign its `Hello` over the returned
    /// binding); `None` while offline.
    pub fn open_duplex(&self, device: DeviceId) -> Option<DuplexSession> {
        let (client, server) = tokio::io::duplex(256 * 1024);
        let id = self.with(|s| {
            s.next_session += 1;
            s.next_session
        });
        if !self.with(|s| s.online) {
            return None;
        }
        let mut binding = [0u8; 32];
        binding[..8].copy_from_slice(&id.to_be_bytes());
        let relay = self.clone();
        let task = tokio::spawn(async move {
            let (r, w) = tokio::io::split(server);
            relay.serve(id, device, binding, r, w).await;
        });
        self.with(|s| s.tasks.push(task));
        let (reader, writer) = tokio::io::split(client);
        Some(DuplexSession {
            reader,
            writer,
            binding,
            relay_id: self.relay_id,
        })
    }

    /// The same relay behind a real iroh endpoint on 127.0.0.1, built from `endpoint` (a
    /// builder with the relay's key and no discovery): QUIC, TLS with its own key, the `Hello`
    /// bound to the connection's exporter value. Its id becomes the endpoint's; devices dial the
    /// returned address. Sessions end with the returned endpoint.
    pub async fn over_iroh(
        mut self,
        endpoint: iroh::endpoint::Builder,
    ) -> Result<(Self, SocketAddr, iroh::Endpoint), TestkitError> {
        let failed = |what: &str, e: String| TestkitError::Io {
            what: format!("hostile relay: {what}"),
            source: std::io::Error::other(e),
        };
        let endpoint = endpoint
            .bind_addr("127.0.0.1:0")
            .map_err(|e| failed("bind address", e.to_string()))?
            .alpns(vec![sync_types::ALPN.to_vec()])
            .bind()
            .await
            .map_err(|e| failed("endpoint", e.to_string()))?;
        self.relay_id = RelayId::from_bytes(*endpoint.id().as_bytes());
        let addr = *endpoint
            .bound_sockets()
            .first()
            .ok_or_else(|| failed("endpoint", "no bound socket".into()))?;
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
        Ok((self, addr, endpoint))
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
                    Out::Msg(msg) => match codec.encode_to_bytes(&msg) {
                        Ok(frame) => frame,
                        Err(_) => break,
                    },
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
                if s.swallow > 0 && !s.by_id.contains_key(&p.blob_id) {
                    s.swallow -= 1;
                    return Message::PushAck(PushAck {
                        request_id: p.request_id,
                        blob_id: p.blob_id,
                        cursor: Cursor::new(max_cursor(s).get() + 1),
                        server_time_ms: 1,
                    });
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
                let limit = usize::try_from(p.limit.min(s.page_limit).max(1)).unwrap_or(usize::MAX);
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
                    .count();
                let removed = u64::try_from(removed).unwrap_or(u64::MAX);
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
            // Membership: like a relay that does not serve it (the device carries on).
            m @ (Message::GroupGet(_) | Message::GroupUpdate(_) | Message::Enroll(_)) => {
                let id = m.request_id().unwrap_or(0);
                Message::Error(WireError::new(ErrorCode::NotSupported, "no").for_request(id))
            }
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
pub enum PullTrick {
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
    let size = u32::try_from(payload.len()).unwrap_or(u32::MAX);
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
