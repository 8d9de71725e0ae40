//! Joining a group as a lab device from an invite string (`0ksync1:…`), and making the
//! invite for a group the lab creates itself (`campaign --local`).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use sync_client::{
    Blob, ClientConfig, ClientError, ClientOptions, GroupChoice, GroupMaterial, IrohConfig,
    IrohTransport, StoreLocation, StreamExt, SyncClient, SyncEvent,
};
use sync_core::{Invite, InviteError, InviteParams};
use sync_crypto::{GroupDescriptor, GroupKeys, GroupSecret};
use sync_types::DeviceId;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

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

/// What a device needs from an invite: where the relay is and the group material.
#[derive(Debug, Clone)]
pub struct Joined {
    /// The relay's endpoint id.
    pub relay_id: [u8; 32],
    /// The relay's direct addresses.
    pub relay_addrs: Vec<SocketAddr>,
    /// The group (descriptor and secret; `Debug` redacts the secret).
    pub group: GroupMaterial,
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Decodes and checks (expiry) an invite string. Passphrase groups are not supported by the
/// lab (it has no passphrase to type).
pub fn parse_invite(text: &str) -> Result<Joined, JoinError> {
    let invite = Invite::from_qr_payload(text.trim())?;
    invite.check(unix_ms())?;
    let secret = invite.group_secret(None)?;
    let mut relay_addrs = Vec::new();
    for a in invite.relay_addrs() {
        relay_addrs.push(a.parse().map_err(|_| JoinError::BadAddr(a.clone()))?);
    }
    if relay_addrs.is_empty() {
        return Err(JoinError::NoAddr);
    }
    Ok(Joined {
        relay_id: *invite.relay_id(),
        relay_addrs,
        group: GroupMaterial {
            descriptor: invite.group().clone(),
            secret,
        },
    })
}

/// A generator seeded from the operating system.
pub fn os_rng() -> Result<ChaCha20Rng, JoinError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|_| JoinError::Random)?;
    Ok(ChaCha20Rng::from_seed(seed))
}

/// A new random-secret group on the relay `relay_id` at `relay_addrs`, as an invite string
/// valid for `ttl`. Holds the group secret: keep it out of logs.
pub fn new_group_invite(
    relay_id: [u8; 32],
    relay_addrs: &[SocketAddr],
    ttl: Duration,
) -> Result<String, JoinError> {
    let mut rng = os_rng()?;
    let secret = GroupSecret::random(&mut rng);
    let group_id = GroupKeys::derive(&secret).group_id();
    let invite = Invite::create(
        &mut rng,
        InviteParams {
            relay_id,
            relay_addrs: relay_addrs.iter().map(ToString::to_string).collect(),
            group_id,
            group: GroupDescriptor::Random,
            secret: Some(secret),
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
    joined: &Joined,
    data_dir: &Path,
    dial: Option<Vec<SocketAddr>>,
    bind: SocketAddr,
    name: &str,
    fast_reconnect: bool,
) -> Result<SyncClient, JoinError> {
    let addrs = dial.unwrap_or_else(|| joined.relay_addrs.clone());
    let transport = Arc::new(IrohTransport::new(
        IrohConfig::new(joined.relay_id, addrs).with_bind_addr(bind),
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

/// The local address a device should bind to for reaching `relay`: the unspecified address of
/// the same family, port 0.
pub fn bind_for(relay: &[SocketAddr]) -> SocketAddr {
    match relay.first() {
        Some(SocketAddr::V6(_)) => SocketAddr::from(([0u16; 8], 0)),
        _ => SocketAddr::from(([0, 0, 0, 0], 0)),
    }
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

/// Starts a task that pulls whenever the relay announces blobs from another device, after each
/// (re)connect, after a lagged event stream and every `poll` (a safety net: events are hints),
/// and sends every blob from other devices, in cursor order, to `tx`. Bursts of announcements
/// are coalesced into one pull. Abort the handle to stop it.
pub fn spawn_receiver(
    client: SyncClient,
    tx: mpsc::UnboundedSender<Incoming>,
    poll: Duration,
) -> JoinHandle<()> {
    let mut events = client.subscribe();
    tokio::spawn(async move {
        let me = client.device_id();
        let mut ticker = tokio::time::interval(poll);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut want_pull = false;
            let handle = |ev: SyncEvent, want_pull: &mut bool| -> bool {
                match ev {
                    SyncEvent::BlobsAvailable { sender, .. } if sender != Some(me) => {
                        *want_pull = true;
                    }
                    SyncEvent::Lagged { .. } => *want_pull = true,
                    SyncEvent::Connected { .. } => {
                        *want_pull = true;
                        return tx.send(Incoming::Connected).is_ok();
                    }
                    SyncEvent::Disconnected { reason } => {
                        return tx.send(Incoming::Disconnected { reason }).is_ok();
                    }
                    SyncEvent::BlobRejected { sender, .. } => {
                        return tx.send(Incoming::Rejected { sender }).is_ok();
                    }
                    _ => {}
                }
                true
            };
            tokio::select! {
                ev = events.next() => {
                    let Some(ev) = ev else { return };
                    if !handle(ev, &mut want_pull) {
                        return;
                    }
                    // Coalesce whatever else is already waiting into the same pull.
                    while let Ok(Some(ev)) =
                        tokio::time::timeout(Duration::ZERO, events.next()).await
                    {
                        if !handle(ev, &mut want_pull) {
                            return;
                        }
                    }
                }
                _ = ticker.tick() => want_pull = true,
            }
            if !want_pull {
                continue;
            }
            match client.pull().await {
                Ok(blobs) => {
                    for blob in blobs {
                        if blob.sender != me && tx.send(Incoming::Blob(blob)).is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    if tx
                        .send(Incoming::PullFailed {
                            reason: e.to_string(),
                        })
                        .is_err()
                    {
                        return;
                    }
                }
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
        let text = new_group_invite([7; 32], &[addr], Duration::from_secs(60)).unwrap();
        assert!(text.starts_with("0ksync1:"));
        let joined = parse_invite(&text).unwrap();
        assert_eq!(joined.relay_id, [7; 32]);
        assert_eq!(joined.relay_addrs, vec![addr]);
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
