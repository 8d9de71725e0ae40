//! Silent connections, the pre-auth hold: the even-numbered attackers finish the handshake and
//! open no stream, the odd ones open the stream and send half a frame header. Each waits for
//! the relay to close it (its pre-auth deadline), then reconnects.

use std::time::Duration;

use super::super::frames::FrameStream;
use super::attacker::{Answer, Attacker, answer, drop_connection};

/// How long a silent connection waits for the relay to close it before it gives up itself
/// (longer than the relay's default pre-auth deadline, 10 s).
const HOLD: Duration = Duration::from_secs(30);

/// Half of a frame's four-byte length prefix.
const HALF_HEADER: [u8; 2] = [0, 0];

/// Runs until cancelled.
pub(super) async fn attack(a: &mut Attacker) {
    loop {
        let Some(conn) = a.connect().await else {
            continue;
        };
        let outcome = if a.n.is_multiple_of(2) {
            match tokio::time::timeout(HOLD, conn.closed()).await {
                Ok(_) => "closed by the relay",
                Err(_) => "not closed within 30 s",
            }
        } else {
            match FrameStream::open(&conn).await {
                Ok(mut stream) => match stream.write(&HALF_HEADER).await {
                    Ok(()) => answer(&mut stream, HOLD).await.label(),
                    Err(_) => Answer::Lost.label(),
                },
                Err(_) => "no stream",
            }
        };
        a.counts.add(outcome, 1);
        drop_connection(&conn);
    }
}
