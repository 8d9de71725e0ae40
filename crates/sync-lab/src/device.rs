//! Joining a group as a lab device from an invite string (`0ksync1:…`), and making the
//! invite for a group the lab creates itself (`campaign --local`).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use sync_client::{
    Blob, ClientConfig, ClientError, ClientOptions, GroupChoice, GroupMaterial, InvitedGroup,
    IrohConfig, IrohTransport, StoreLocation, SyncClient, WatchEvent, WatchOptions,
};
use sync_core::{Invite, InviteError, InviteParams};
use sync_types::{DeviceId, RelayAddr, unix_ms};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Environment variable that can carry the invite of the responder and the campaign (keeps it
/// out of the process list).
pub const INVITE_ENV: &str = "SYNC_STRESS_INVITE";

/// Why a lab device could not join. Messages never contain the invite or the group secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    /// The invite string could not be decoded or checked.
    #[error("invite: {0}")]
    Invite(#[from] InviteError),
    /// A relay address in the invite is not `ip:port`.
    #[error("invite relay address {0:?} is not ip:port")]
    BadAddr(String),
    /// The invite carries no relay address.
    #[error("invite names no relay address")]
    NoAddr,
    /// The operating system's random source failed.
    #[error("cannot read the operating system's random source")]
    Random,
    /// The client could not connect or open its store.
    #[error("client: {0}")]
    Client(#[from] ClientError),
}

/// Decodes and opens an invite string (expiry checked). Passphrase groups are not supported by
/// the lab (it has no passphrase to type), and the relay addresses must be `ip:port` (the lab
/// resolves no host names).
pub fn parse_invite(text: &str) -> Result<InvitedGroup, JoinError> {
    let joined = Invite::from_qr_payload(text.trim())?.into_group(None, unix_ms())?;
    if let Some(bad) = joined
        .relay
        .addrs
        .iter()
        .find(|a| a.parse::<SocketAddr>().is_err())
    {
        return Err(JoinError::BadAddr(bad.clone()));
    }
    if joined.relay.addrs.is_empty() {
        return Err(JoinError::NoAddr);
    }
    Ok(joined)
}

/// A generator seeded from the operating system.
pub fn os_rng() -> Result<ChaCha20Rng, JoinError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|_| JoinError::Random)?;
    Ok(ChaCha20Rng::from_seed(seed))
}

/// A new random-secret group on `relay`, as an invite string
/// valid for `ttl`. Holds the group secret: keep it out of logs.
pub fn new_group_invite(relay: &RelayAddr, ttl: Duration) -> Result<String, JoinError> {
    let mut rng = os_rng()?;
    let group = GroupMaterial::random(&mut rng);
    let invite = Invite::create(
        &mut rng,
        InviteParams {
            relay_id: *relay.id.as_bytes(),
            relay_addrs: relay.addrs.clone(),
            group_id: group.keys().group_id(),
            group: group.descriptor,
            secret: Some(group.secret),
            ttl,
        },
        unix_ms(),
    )?;
    Ok(invite.to_qr_payload().as_str().to_owned())
}

/// Connects a device with its state in `data_dir` to the relay of `joined` (dialing `dial`
/// instead of the invite's addresses when given, e.g. an impairment proxy), binding its
/// endpoint to `bind`. `fast_reconnect` uses the loopback backoff of
/// [`ClientOptions::for_tests`].
pub async fn connect(
    joined: &InvitedGroup,
    data_dir: &Path,
    dial: Option<Vec<SocketAddr>>,
    bind: SocketAddr,
    name: &str,
    fast_reconnect: bool,
) -> Result<SyncClient, JoinError> {
    let addrs = dial.unwrap_or_else(|| joined.relay.socket_addrs());
    let transport = Arc::new(IrohTransport::new(
        IrohConfig::new(joined.relay.id, addrs).with_bind_addr(bind),
    ));
    let options = if fast_reconnect {
        ClientOptions::for_tests()
    } else {
        ClientOptions::default()
    };
    let config = ClientConfig::new(
        StoreLocation::Dir(data_dir.to_path_buf()),
        transport,
        GroupChoice::Use(joined.group.clone()),
    )
    .with_device_name(name)
    .with_options(options);
    Ok(SyncClient::connect(config).await?)
}

/// What a device's receiver task reports.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Incoming {
    /// A blob from another device, verified (signature) and decrypted.
    Blob(Blob),
    /// A blob that failed verification or decryption (never data).
    Rejected {
        /// The sender the relay reported.
        sender: DeviceId,
    },
    /// A session was established (first connect or reconnect).
    Connected,
    /// The session ended; the client reconnects.
    Disconnected {
        /// Why.
        reason: String,
    },
    /// A pull failed (the receiver retries on the next hint or poll).
    PullFailed {
        /// Why (no payload or secret).
        reason: String,
    },
}

/// Starts a task that follows the group ([`SyncClient::watch`]: a pull on every announcement
/// from another device, after each (re)connect, after a lagged event stream and every `poll`,
/// a safety net) and sends every blob from other devices, in cursor order, to `tx`. Each batch
/// is committed once forwarded. Abort the handle to stop it.
pub fn spawn_receiver(
    client: SyncClient,
    tx: mpsc::UnboundedSender<Incoming>,
    poll: Duration,
) -> JoinHandle<()> {
    let mut watcher = client.watch(WatchOptions {
        poll: Some(poll),
        ..WatchOptions::default()
    });
    tokio::spawn(async move {
        let me = client.device_id();
        while let Some(event) = watcher.next().await {
            let sent = match event {
                WatchEvent::Batch(batch) => {
                    let forwarded = batch
                        .blobs
                        .iter()
                        .filter(|b| b.sender != me)
                        .all(|b| tx.send(Incoming::Blob(b.clone())).is_ok());
                    if forwarded && let Err(e) = client.commit_pull(&batch).await {
                        let reason = format!("cursor not saved: {e}");
                        let _ = tx.send(Incoming::PullFailed { reason });
                    }
                    forwarded
                }
                WatchEvent::Rejected { sender, .. } => {
                    tx.send(Incoming::Rejected { sender }).is_ok()
                }
                WatchEvent::Connected { .. } => tx.send(Incoming::Connected).is_ok(),
                WatchEvent::Disconnected { reason } => {
                    tx.send(Incoming::Disconnected { reason }).is_ok()
                }
                WatchEvent::PullFailed { error, .. } | WatchEvent::Failed(error) => tx
                    .send(Incoming::PullFailed {
                        reason: error.to_string(),
                    })
                    .is_ok(),
                _ => true,
            };
            if !sent {
                return;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_invite_parses_back() {
        let addr: SocketAddr = "127.0.0.1:7440".parse().unwrap();
        let relay = RelayAddr::new(sync_types::RelayId::from_bytes([7; 32]), &[addr]);
        let text = new_group_invite(&relay, Duration::from_secs(60)).unwrap();
        assert!(text.starts_with("0ksync1:"));
        let joined = parse_invite(&text).unwrap();
        assert_eq!(joined.relay, relay);
        assert!(!format!("{joined:?}").contains(&text[8..20]));
    }

    #[test]
    fn garbage_is_a_typed_error() {
        assert!(matches!(
            parse_invite("hello"),
            Err(JoinError::Invite(InviteError::BadPrefix))
        ));
    }
}
