//! Garbage before the Hello, on a new connection each time, in turn: 1,000 random bytes, a
//! length prefix of `0xFFFFFFF0`, a `Hello` whose signature is off by one bit, and the valid
//! `Hello` of the attacker's previous connection replayed (it is bound to that connection).
//! Answers are counted by their error code.

use rand_core::Rng as _;
use sync_types::Message;

use super::super::frames::FrameStream;
use super::super::session::signed_hello;
use super::attacker::{ANSWER_WAIT, Answer, Attacker, answer, drop_connection};

/// Random bytes sent as a first frame.
const RANDOM: usize = 1000;
/// A length prefix far beyond any frame.
const HUGE_PREFIX: u32 = 0xFFFF_FFF0;

/// Runs until cancelled.
pub(super) async fn attack(a: &mut Attacker) {
    let mut previous: Option<Message> = None;
    for round in 0u64.. {
        let Some(conn) = a.connect().await else {
            continue;
        };
        let Ok(own) = signed_hello(&conn, &a.ep, &a.group, 7) else {
            drop_connection(&conn);
            continue;
        };
        let bytes = match round % 4 {
            0 => {
                let mut bytes = vec![0u8; RANDOM];
                a.rng.fill_bytes(&mut bytes);
                Garbage::Bytes(bytes)
            }
            1 => Garbage::Bytes(HUGE_PREFIX.to_be_bytes().to_vec()),
            2 => Garbage::Frame(forged(own.clone())),
            _ => Garbage::Frame(previous.take().unwrap_or_else(|| forged(own.clone()))),
        };
        let outcome = match FrameStream::open(&conn).await {
            Ok(mut stream) => {
                let sent = match &bytes {
                    Garbage::Bytes(b) => stream.write(b).await,
                    Garbage::Frame(m) => stream.send(m).await,
                };
                match sent {
                    Ok(()) => answer(&mut stream, ANSWER_WAIT).await,
                    Err(_) => Answer::Lost,
                }
            }
            Err(_) => Answer::Lost,
        };
        a.counts.add(outcome.label(), 1);
        previous = Some(own);
        drop_connection(&conn);
    }
}

/// What an attacker writes first.
enum Garbage {
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// A well-formed frame.
    Frame(Message),
}

/// `hello` with one bit of its signature flipped.
fn forged(hello: Message) -> Message {
    match hello {
        Message::Hello(mut h) => {
            h.auth_signature[10] ^= 1;
            Message::Hello(h)
        }
        other => other,
    }
}
