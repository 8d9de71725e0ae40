//! One hostile client: its own iroh endpoint on the attackers' loopback address, a group of its
//! own (anyone can make one: a new secret is a new group), and the moves every kind of attacker
//! makes: connect, open a session, and read what the relay answers within a bound.

use std::sync::Arc;
use std::time::Duration;

use iroh::Endpoint;
use iroh::endpoint::Connection;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use sync_types::{ALPN, Message, Welcome};
use tokio::sync::mpsc;

use super::super::frames::FrameStream;
use super::super::sealed::Group;
use super::super::session::{Peer, signed_hello};
use super::counts::Counts;

/// Longest wait for an answer the relay owes at once (a typed error, a `Welcome`, an ack).
pub(super) const ANSWER_WAIT: Duration = Duration::from_secs(15);

/// What came back on a stream within the wait.
#[derive(Debug)]
pub(super) enum Answer {
    /// A whole frame.
    Frame(Message),
    /// The relay finished the stream.
    End,
    /// The stream or the connection broke (the relay closed the connection, or reset the
    /// stream).
    Lost,
    /// Nothing within the wait.
    Silent,
}

impl Answer {
    /// How the answer is counted: an error by its code, another frame by its type.
    pub(super) fn label(&self) -> &'static str {
        match self {
            Self::Frame(Message::Error(e)) => e.code.name(),
            Self::Frame(m) => m.message_type().name(),
            Self::End => "stream ended",
            Self::Lost => "connection closed",
            Self::Silent => "no answer",
        }
    }
}

/// The next frame on `stream`, or how there was none, within `wait`.
pub(super) async fn answer(stream: &mut FrameStream, wait: Duration) -> Answer {
    match tokio::time::timeout(wait, stream.next_or_end()).await {
        Ok(Ok(Some(m))) => Answer::Frame(m),
        Ok(Ok(None)) => Answer::End,
        Ok(Err(_)) => Answer::Lost,
        Err(_) => Answer::Silent,
    }
}

/// Closes a connection the attacker is done with (no grace: an attacker does not wait).
pub(super) fn drop_connection(conn: &Connection) {
    conn.close(0u32.into(), b"");
}

/// One attacker and what it counts.
pub(super) struct Attacker {
    /// Its number within its kind (kinds with variants split their attackers by it).
    pub(super) n: usize,
    /// Its endpoint (one identity for all of its connections).
    pub(super) ep: Endpoint,
    relay: Peer,
    /// Its own group.
    pub(super) group: Group,
    /// The counters of its kind.
    pub(super) counts: Arc<Counts>,
    /// Its randomness (random bytes, lookup ids, blob contents).
    pub(super) rng: ChaCha20Rng,
    /// Told once, when its first connection is up.
    first: Option<mpsc::Sender<()>>,
}

impl Attacker {
    /// Attacker `n` of a kind, on `ep`, against `relay`, in the group from `seed`.
    pub(super) fn new(
        n: usize,
        ep: Endpoint,
        relay: Peer,
        seed: u64,
        counts: Arc<Counts>,
        first: mpsc::Sender<()>,
    ) -> Self {
        Self {
            n,
            ep,
            relay,
            group: Group::from_seed(seed),
            counts,
            rng: ChaCha20Rng::seed_from_u64(seed),
            first: Some(first),
        }
    }

    /// A new connection to the relay (TLS handshake done), counted; `None` (counted) when the
    /// relay refused it or it failed.
    pub(super) async fn connect(&mut self) -> Option<Connection> {
        match self.relay.dial(&self.ep, ALPN).await {
            Ok(conn) => {
                self.counts.add("connections", 1);
                if let Some(first) = self.first.take() {
                    let _ = first.try_send(());
                }
                Some(conn)
            }
            Err(_) => {
                self.counts.add("connections refused or failed", 1);
                // Whatever refused it, the next attempt comes after the runtime had a turn.
                tokio::task::yield_now().await;
                None
            }
        }
    }

    /// A session in the attacker's own group: a connection, its stream, a valid `Hello`
    /// answered by `Welcome` (counted as a session). Anything else is counted by its answer and
    /// gives `None`.
    pub(super) async fn session(&mut self) -> Option<(Connection, FrameStream, Welcome)> {
        let conn = self.connect().await?;
        let mut stream = match self.hello(&conn).await {
            Some(s) => s,
            None => {
                self.counts.add("connection closed", 1);
                drop_connection(&conn);
                return None;
            }
        };
        match answer(&mut stream, ANSWER_WAIT).await {
            Answer::Frame(Message::Welcome(w)) => {
                self.counts.add("sessions", 1);
                stream.set_max_frame(w.limits.max_frame_bytes as usize);
                Some((conn, stream, w))
            }
            other => {
                self.counts.add(other.label(), 1);
                drop_connection(&conn);
                None
            }
        }
    }

    /// Opens the stream of `conn` and sends a valid `Hello`.
    async fn hello(&self, conn: &Connection) -> Option<FrameStream> {
        let hello = signed_hello(conn, &self.ep, &self.group, 1).ok()?;
        let mut stream = FrameStream::open(conn).await.ok()?;
        stream.send(&hello).await.ok()?;
        Some(stream)
    }
}
