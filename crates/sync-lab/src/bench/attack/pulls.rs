//! Pulls never read: a session in the attacker's own group, which holds one blob of the largest
//! size the relay takes (pushed by the attacker's first session), then 300 pipelined pulls of
//! that blob and not one byte read. The relay's byte-bounded session queue and its write-stall
//! cut are what stop it; the attacker drops the connection after 3 s (or when cut) and makes the
//! next.

use std::time::Duration;

use rand_core::Rng as _;
use sync_types::{BlobId, Cursor, Message, Payload, Pull, Push, Welcome, unix_ms};

use super::super::frames::FrameStream;
use super::attacker::{ANSWER_WAIT, Answer, Attacker, answer, drop_connection};

/// Pulls pipelined per connection.
const PULLS: u64 = 300;
/// How long a connection is held with its pulls unread.
const HOLD: Duration = Duration::from_secs(3);

/// Runs until cancelled.
pub(super) async fn attack(a: &mut Attacker) {
    let mut stored = false;
    loop {
        let Some((conn, mut stream, welcome)) = a.session().await else {
            continue;
        };
        if !stored {
            stored = store_largest_blob(a, &mut stream, &welcome).await;
        }
        let mut sent = 0;
        for request_id in 10..10 + PULLS {
            let pull = Message::Pull(Pull {
                request_id,
                after: Cursor::ZERO,
                limit: 1,
                max_bytes: None,
            });
            if stream.send(&pull).await.is_err() {
                break;
            }
            sent += 1;
        }
        a.counts.add("pulls sent", sent);
        if let Ok(reason) = tokio::time::timeout(HOLD, conn.closed()).await {
            let cut = reason.to_string().contains("write stalled");
            a.counts.add(
                if cut {
                    "cut for not reading"
                } else {
                    "closed by the relay"
                },
                1,
            );
        }
        drop_connection(&conn);
    }
}

/// Pushes one blob of `welcome`'s largest size into the attacker's group; whether it was
/// acknowledged (the outcome is counted).
async fn store_largest_blob(a: &mut Attacker, stream: &mut FrameStream, welcome: &Welcome) -> bool {
    let mut payload = vec![0u8; welcome.limits.max_blob_bytes as usize];
    a.rng.fill_bytes(&mut payload);
    let push = Message::Push(Push {
        request_id: 2,
        blob_id: BlobId::time_ordered(&mut a.rng, unix_ms() / 1000),
        payload: Payload::from(payload),
        ttl_secs: 0,
    });
    if stream.send(&push).await.is_err() {
        a.counts.add(Answer::Lost.label(), 1);
        return false;
    }
    match answer(stream, ANSWER_WAIT).await {
        Answer::Frame(Message::PushAck(_)) => {
            a.counts.add("largest blob stored", 1);
            true
        }
        other => {
            a.counts.add(other.label(), 1);
            false
        }
    }
}
