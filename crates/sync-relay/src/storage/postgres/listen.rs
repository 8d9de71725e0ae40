//! What other relays on the same database committed, heard through `LISTEN`: their pushes
//! (group, cursor, blob id, sender and size; never a payload) and membership changes. Each
//! relay skips its own notifications by their instance id.
//!
//! The listening connection is a plain one outside the pool. When it is lost, the loop
//! reconnects with backoff and then reports [`RemoteEvent::Resync`]: notifications sent while
//! it was away are gone, so the relay re-announces what its sessions may have missed.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use sync_types::{BlobId, Cursor, DeviceId, GroupId};
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;

use super::tls::Connector;
use crate::storage::CommittedPush;

/// The channel committed pushes are announced on.
pub(super) const PUSH_CHANNEL: &str = "sync_relay_push";

/// The channel membership changes are announced on.
pub(super) const GROUP_CHANNEL: &str = "sync_relay_group";

/// Bytes of one push in a notification: group, cursor, blob id, sender, size.
const PUSH_BYTES: usize = 32 + 8 + 16 + 32 + 4;

/// Pushes per notification (PostgreSQL's payload limit is 8000 bytes; 60 pushes are about
/// 7,400 characters of base64).
const PUSHES_PER_NOTIFY: usize = 60;

/// Longest wait between two attempts to reconnect the listener.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What another relay on the same database did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteEvent {
    /// Pushes it committed, in commit order.
    Pushes(Vec<CommittedPush>),
    /// It stored a membership change of this group.
    GroupChanged(GroupId),
    /// The listener (re)connected: anything announced while it was away was missed.
    Resync,
}

/// The texts of the notifications announcing `pushes`: `<instance hex>:<base64 records>`.
pub(super) fn encode_pushes(instance: u64, pushes: &[CommittedPush]) -> Vec<String> {
    pushes
        .chunks(PUSHES_PER_NOTIFY)
        .map(|chunk| {
            let mut raw = Vec::with_capacity(chunk.len() * PUSH_BYTES);
            for p in chunk {
                raw.extend_from_slice(p.group.as_bytes());
                raw.extend_from_slice(&p.cursor.get().to_be_bytes());
                raw.extend_from_slice(p.blob_id.as_bytes());
                raw.extend_from_slice(p.sender.as_bytes());
                raw.extend_from_slice(&p.size.to_be_bytes());
            }
            format!("{instance:016x}:{}", B64.encode(raw))
        })
        .collect()
}

/// The text of a membership change's notification.
pub(super) fn encode_group(instance: u64, group: &GroupId) -> String {
    format!("{instance:016x}:{}", B64.encode(group.as_bytes()))
}

/// The notification's sender and body, `None` when it is malformed.
fn split(text: &str) -> Option<(u64, Vec<u8>)> {
    let (instance, body) = text.split_once(':')?;
    Some((
        u64::from_str_radix(instance, 16).ok()?,
        B64.decode(body).ok()?,
    ))
}

fn decode_pushes(raw: &[u8]) -> Option<Vec<CommittedPush>> {
    if !raw.len().is_multiple_of(PUSH_BYTES) {
        return None;
    }
    raw.chunks_exact(PUSH_BYTES)
        .map(|r| {
            Some(CommittedPush {
                group: GroupId::try_from_slice(r.get(0..32)?).ok()?,
                cursor: Cursor::new(u64::from_be_bytes(r.get(32..40)?.try_into().ok()?)),
                blob_id: BlobId::from_bytes(r.get(40..56)?.try_into().ok()?),
                sender: DeviceId::try_from_slice(r.get(56..88)?).ok()?,
                size: u32::from_be_bytes(r.get(88..92)?.try_into().ok()?),
            })
        })
        .collect()
}

/// The event a notification of another relay stands for (`None`: ours, or malformed).
fn event(instance: u64, channel: &str, text: &str) -> Option<RemoteEvent> {
    let (from, raw) = split(text)?;
    if from == instance {
        return None;
    }
    match channel {
        PUSH_CHANNEL => decode_pushes(&raw).map(RemoteEvent::Pushes),
        GROUP_CHANNEL => GroupId::try_from_slice(&raw)
            .ok()
            .map(RemoteEvent::GroupChanged),
        _ => None,
    }
}

/// Listens until `stop` (or until nobody receives the events), reconnecting when the
/// connection is lost.
pub(super) async fn listen_loop(
    config: tokio_postgres::Config,
    connector: Connector,
    instance: u64,
    events: mpsc::Sender<RemoteEvent>,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_millis(50);
    let mut first = true;
    loop {
        let session = listen_once(&config, &connector, instance, &events, first);
        match stop.run_until_cancelled(session).await {
            None => return,
            Some(Ok(())) => return, // the receiver is gone
            Some(Err(e)) => {
                tracing::warn!(error = %e, "postgres listener lost; reconnecting");
            }
        }
        first = false;
        if stop
            .run_until_cancelled(tokio::time::sleep(backoff))
            .await
            .is_none()
        {
            return;
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One connection's worth of listening: `Ok` when the receiver is gone, `Err` when the
/// connection failed.
async fn listen_once(
    config: &tokio_postgres::Config,
    connector: &Connector,
    instance: u64,
    events: &mpsc::Sender<RemoteEvent>,
    first: bool,
) -> Result<(), tokio_postgres::Error> {
    match connector {
        Connector::Plain => {
            let (client, connection) = config.connect(NoTls).await?;
            listen_on(client, connection, instance, events, first).await
        }
        Connector::Rustls(tls) => {
            let (client, connection) = config.connect(tls.clone()).await?;
            listen_on(client, connection, instance, events, first).await
        }
    }
}

async fn listen_on<S, T>(
    client: tokio_postgres::Client,
    mut connection: tokio_postgres::Connection<S, T>,
    instance: u64,
    events: &mpsc::Sender<RemoteEvent>,
    first: bool,
) -> Result<(), tokio_postgres::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (tx, mut rx) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if tx.send(Ok(n)).is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    let _ = tx.send(Err(e));
                    return;
                }
                None => return,
            }
        }
    });
    let _abort = AbortOnDrop(driver);
    client
        .batch_execute(&format!("LISTEN {PUSH_CHANNEL}; LISTEN {GROUP_CHANNEL}"))
        .await?;
    if !first && events.send(RemoteEvent::Resync).await.is_err() {
        return Ok(());
    }
    tracing::debug!("listening for other relays' commits");
    while let Some(n) = rx.recv().await {
        let n = n?;
        if let Some(e) = event(instance, n.channel(), n.payload())
            && events.send(e).await.is_err()
        {
            return Ok(());
        }
    }
    // The connection ended without an error: ask the client why (it reports closed).
    client.batch_execute("SELECT 1").await?;
    Ok(())
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushes_round_trip_in_notifications_under_the_size_limit_and_ours_are_skipped() {
        let pushes: Vec<CommittedPush> = (0..130u64)
            .map(|i| CommittedPush {
                group: GroupId::from_bytes([i as u8; 32]),
                cursor: Cursor::new(i + 1),
                blob_id: BlobId::from_bytes([7; 16]),
                sender: DeviceId::from_bytes([9; 32]),
                size: 1000 + i as u32,
            })
            .collect();
        let texts = encode_pushes(42, &pushes);
        assert_eq!(texts.len(), 3);
        let mut back = Vec::new();
        for t in &texts {
            assert!(t.len() < 8000, "a notification is {} bytes", t.len());
            assert_eq!(event(42, PUSH_CHANNEL, t), None, "our own is skipped");
            match event(7, PUSH_CHANNEL, t) {
                Some(RemoteEvent::Pushes(p)) => back.extend(p),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(back, pushes);
        let g = GroupId::from_bytes([3; 32]);
        assert_eq!(
            event(1, GROUP_CHANNEL, &encode_group(2, &g)),
            Some(RemoteEvent::GroupChanged(g))
        );
        assert_eq!(event(1, PUSH_CHANNEL, "zz:@@"), None);
        assert_eq!(event(1, PUSH_CHANNEL, "02:AAAA"), None);
    }
}
