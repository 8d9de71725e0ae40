//! An invite-lookup sweep: random lookup ids, in turn one as the first frame of a fresh
//! connection (as a joining device asks) and 32 pipelined in a session of the attacker's own
//! group. Answers are counted by kind: `NotFound`, `RateLimited` (the relay's lookup budgets
//! per session, per address and in all), `InviteFound` for a hit.

use rand_chacha::ChaCha20Rng;
use rand_core::Rng as _;
use sync_types::{InviteGet, Message};

use super::super::frames::FrameStream;
use super::attacker::{ANSWER_WAIT, Answer, Attacker, answer, drop_connection};

/// Lookups pipelined per session.
const LOOKUPS: u64 = 32;
/// The short-code alphabet (Crockford base 32) and the length of a lookup id.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const LOOKUP_LEN: usize = 8;

/// Runs until cancelled.
pub(super) async fn attack(a: &mut Attacker) {
    for round in 0u64.. {
        if round.is_multiple_of(2) {
            first_frame_lookup(a).await;
        } else {
            session_lookups(a).await;
        }
    }
}

/// One lookup as the first frame of a new connection.
async fn first_frame_lookup(a: &mut Attacker) {
    let Some(conn) = a.connect().await else {
        return;
    };
    let get = lookup(1, &mut a.rng);
    let outcome = match FrameStream::open(&conn).await {
        Ok(mut stream) => match stream.send(&get).await {
            Ok(()) => answer(&mut stream, ANSWER_WAIT).await,
            Err(_) => Answer::Lost,
        },
        Err(_) => Answer::Lost,
    };
    a.counts.add("lookups sent", 1);
    a.counts.add(outcome.label(), 1);
    drop_connection(&conn);
}

/// [`LOOKUPS`] lookups pipelined in a session, and their answers.
async fn session_lookups(a: &mut Attacker) {
    let Some((conn, mut stream, _)) = a.session().await else {
        return;
    };
    let mut sent = 0;
    for request_id in 2..2 + LOOKUPS {
        if stream.send(&lookup(request_id, &mut a.rng)).await.is_err() {
            break;
        }
        sent += 1;
    }
    a.counts.add("lookups sent", sent);
    for _ in 0..sent {
        let outcome = answer(&mut stream, ANSWER_WAIT).await;
        a.counts.add(outcome.label(), 1);
        if !matches!(outcome, Answer::Frame(_)) {
            break;
        }
    }
    drop_connection(&conn);
}

/// An `InviteGet` of a random lookup id.
fn lookup(request_id: u64, rng: &mut ChaCha20Rng) -> Message {
    let lookup_id = (0..LOOKUP_LEN)
        .map(|_| char::from(ALPHABET[(rng.next_u32() % 32) as usize]))
        .collect();
    Message::InviteGet(InviteGet {
        request_id,
        lookup_id,
    })
}
