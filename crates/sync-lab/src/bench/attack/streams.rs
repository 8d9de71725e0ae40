//! Stream floods: a session in the attacker's own group, then 100 extra bidirectional and 100
//! unidirectional streams it tries to open, writing 1.2 MB into each one it gets; then it drops
//! the connection and makes the next. The relay's transport allows the session's stream alone.

use std::time::Duration;

use iroh::endpoint::Connection;
use tokio::task::JoinSet;

use super::attacker::{Attacker, drop_connection};

/// Extra streams tried in each direction per connection.
const EXTRA: usize = 100;
/// Bytes written into each extra stream opened.
const FILL: usize = 1_200_000;
/// How long each try waits for the stream, and for its write.
const OPEN_WAIT: Duration = Duration::from_millis(500);

/// Runs until cancelled.
pub(super) async fn attack(a: &mut Attacker) {
    loop {
        let Some((conn, _stream, _)) = a.session().await else {
            continue;
        };
        let mut tries = JoinSet::new();
        for k in 0..2 * EXTRA {
            let conn = conn.clone();
            tries.spawn(async move { extra_stream(&conn, k.is_multiple_of(2)).await });
        }
        let opened = tries.join_all().await.into_iter().filter(|o| *o).count();
        a.counts.add("extra streams tried", 2 * EXTRA as u64);
        a.counts.add("extra streams opened", opened as u64);
        drop_connection(&conn);
    }
}

/// Tries to open one more stream (bidirectional or not) and fill it; whether it opened.
async fn extra_stream(conn: &Connection, bidirectional: bool) -> bool {
    let send = if bidirectional {
        match tokio::time::timeout(OPEN_WAIT, conn.open_bi()).await {
            Ok(Ok((send, _recv))) => send,
            _ => return false,
        }
    } else {
        match tokio::time::timeout(OPEN_WAIT, conn.open_uni()).await {
            Ok(Ok(send)) => send,
            _ => return false,
        }
    };
    let mut send = send;
    let _ = tokio::time::timeout(OPEN_WAIT, send.write_all(&vec![0xa5; FILL])).await;
    true
}
