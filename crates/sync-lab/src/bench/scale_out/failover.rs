//! Failover under the benchmark: one real `SyncClient` that knows two relays on one PostgreSQL
//! database pushes steadily; the relay it is connected to is SIGKILLed, it notices the loss,
//! moves to the other relay and its pushes are acknowledged again; the killed relay is started
//! again (same identity and address) for the next round. Per kill: the interruption (last ack
//! before → first ack after the new session), the loss-detection time (kill → session ended)
//! and the time to reconnect (session ended → connected to the other relay).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sync_client::{
    ClientConfig, ClientOptions, GroupChoice, GroupMaterial, IrohConfig, IrohTransport,
    StoreLocation, StreamExt as _, SyncClient, SyncEvent,
};
use sync_testkit::RelayProcess;
use sync_types::{RelayAddr, RelayId};
use tokio::sync::mpsc;

use super::super::{BenchError, joined};

/// Acks the device must have on a relay before it is killed.
const ACKS_BEFORE_KILL: usize = 20;
/// Pause between two pushes (a steady 200 pushes/s).
const PUSH_EVERY: Duration = Duration::from_millis(5);
/// Longest wait for any step of a round (acks, the loss, the new session, the first ack).
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// One kill's figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Kill {
    /// Last ack before the kill → first ack on the other relay.
    pub(super) interruption: Duration,
    /// Kill → the device's session ended.
    pub(super) detect: Duration,
    /// Session ended → connected to the other relay.
    pub(super) reconnect: Duration,
}

/// What the device's events say, as they happen.
enum Seen {
    Acked(Instant),
    Lost(Instant),
    Connected(Instant, RelayId),
}

/// The two relays of the runs, on the database at `url`.
pub(super) fn relays(bin: &Path, url: &str) -> Result<Vec<RelayProcess>, BenchError> {
    (0..2)
        .map(|_| {
            RelayProcess::builder()
                .bin(bin)
                .args(["--storage", "postgres", "--postgres-url", url])
                .args(["--session-push-rate", "0", "--global-push-rate", "0"])
                .args(["--ip-push-rate", "0"])
                .start()
                .map_err(BenchError::Relay)
        })
        .collect()
}

/// Runs `kills` rounds against `relays` (started, two) with a device whose state is in `dir`.
pub(super) async fn measure(
    relays: &mut [RelayProcess],
    dir: &Path,
    kills: usize,
) -> Result<Vec<Kill>, BenchError> {
    let addrs: Vec<RelayAddr> = relays.iter().map(RelayProcess::relay_addr).collect();
    let device = connect(&addrs, dir).await?;
    let outcome = rounds(&device, relays, kills).await;
    device.close().await;
    outcome
}

async fn connect(addrs: &[RelayAddr], dir: &Path) -> Result<SyncClient, BenchError> {
    let iroh = IrohConfig::for_relays(addrs)
        .ok_or_else(|| BenchError::Failover("no relay".into()))?
        .with_bind_addr(SocketAddr::from(([127, 0, 0, 1], 0)));
    let mut rng = crate::device::os_rng().map_err(|e| BenchError::Failover(e.to_string()))?;
    let config = ClientConfig::new(
        StoreLocation::Dir(dir.to_path_buf()),
        Arc::new(IrohTransport::new(iroh)),
        GroupChoice::Use(GroupMaterial::random(&mut rng)),
    )
    .with_device_name("bench failover device")
    .with_options(ClientOptions::for_tests());
    tokio::time::timeout(STEP_TIMEOUT, SyncClient::connect(config))
        .await
        .map_err(|_| BenchError::Failover("the device did not connect".into()))?
        .map_err(|e| BenchError::Failover(format!("the device did not connect: {e}")))
}

/// The next event `want` picks from `rx`, within [`STEP_TIMEOUT`].
async fn until<T>(
    rx: &mut mpsc::UnboundedReceiver<Seen>,
    what: &str,
    mut want: impl FnMut(&Seen) -> Option<T>,
) -> Result<T, BenchError> {
    tokio::time::timeout(STEP_TIMEOUT, async {
        while let Some(s) = rx.recv().await {
            if let Some(v) = want(&s) {
                return Some(v);
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .ok_or_else(|| BenchError::Failover(format!("no {what} within {STEP_TIMEOUT:?}")))
}

async fn rounds(
    device: &SyncClient,
    relays: &mut [RelayProcess],
    kills: usize,
) -> Result<Vec<Kill>, BenchError> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut events = device.subscribe();
    let follower = tokio::spawn(async move {
        while let Some(e) = events.next().await {
            let now = Instant::now();
            let seen = match e {
                SyncEvent::PushAcked { .. } => Seen::Acked(now),
                SyncEvent::Disconnected { .. } => Seen::Lost(now),
                SyncEvent::Connected { relay_id, .. } => Seen::Connected(now, relay_id),
                _ => continue,
            };
            if tx.send(seen).is_err() {
                break;
            }
        }
    });
    let pusher = {
        let device = device.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(PUSH_EVERY);
            let mut n = 0u64;
            loop {
                ticker.tick().await;
                n += 1;
                if device
                    .push_queued(format!("failover bench {n}").as_bytes())
                    .await
                    .is_err()
                {
                    break;
                }
            }
        })
    };
    // The device starts on the first relay.
    let mut current = relays.first().map(RelayProcess::id);
    let mut out = Vec::with_capacity(kills);
    let mut failed = None;
    for _ in 0..kills {
        match round(&mut rx, relays, &mut current).await {
            Ok(k) => out.push(k),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    pusher.abort();
    follower.abort();
    match failed {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// One round: acks on the current relay, its kill, the device on the other one and acked
/// again, the killed relay started again.
async fn round(
    rx: &mut mpsc::UnboundedReceiver<Seen>,
    relays: &mut [RelayProcess],
    current: &mut Option<RelayId>,
) -> Result<Kill, BenchError> {
    let mut acks = 0;
    let mut last_ack = None;
    until(rx, "acks before the kill", |s| {
        if let Seen::Acked(t) = s {
            acks += 1;
            last_ack = Some(*t);
        }
        (acks >= ACKS_BEFORE_KILL).then_some(())
    })
    .await?;
    let on = current.ok_or_else(|| BenchError::Failover("the device's relay is unknown".into()))?;
    let Some(victim) = relays.iter_mut().position(|r| r.id() == on) else {
        return Err(BenchError::Failover(
            "the device's relay is not ours".into(),
        ));
    };
    let killed_at = Instant::now();
    tokio::task::block_in_place(|| relays[victim].kill());
    // Acks read after the kill were sent before it: they count as before.
    let mut lost_at = None;
    let (connected_at, relay) = until(rx, "session on the other relay", |s| match s {
        Seen::Acked(t) => {
            last_ack = Some(*t);
            None
        }
        Seen::Lost(t) => {
            lost_at.get_or_insert(*t);
            None
        }
        Seen::Connected(t, r) if *r != on => Some((*t, *r)),
        Seen::Connected(..) => None,
    })
    .await?;
    let first_ack = until(rx, "an ack on the other relay", |s| match s {
        Seen::Acked(t) => Some(*t),
        _ => None,
    })
    .await?;
    *current = Some(relay);
    let restarting = &mut relays[victim];
    tokio::task::block_in_place(|| restarting.restart())?;
    let lost_at = lost_at.unwrap_or(connected_at);
    Ok(Kill {
        interruption: first_ack.saturating_duration_since(last_ack.unwrap_or(killed_at)),
        detect: lost_at.saturating_duration_since(killed_at),
        reconnect: connected_at.saturating_duration_since(lost_at),
    })
}

/// Starts the relays off the async workers.
pub(super) async fn start_relays(bin: &Path, url: &str) -> Result<Vec<RelayProcess>, BenchError> {
    let (bin, url) = (bin.to_path_buf(), url.to_string());
    joined(
        tokio::task::spawn_blocking(move || relays(&bin, &url)).await,
        "starting the failover relays",
    )?
}
