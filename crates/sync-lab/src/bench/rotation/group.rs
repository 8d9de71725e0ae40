//! The end-to-end part of the key rotation section: one group of `n` real [`SyncClient`]s
//! against the relay process, each with its own iroh endpoint on 127.0.0.1 and an in-memory
//! store, the first one the group's admin; then rotations timed from the admin's `rotate()` to
//! the last member holding the new epoch, each followed by a wait until the relay and this
//! process are quiet again (the members enroll anew at each epoch, and every enrollment makes
//! every other member read the group again).
//!
//! Every wait is bounded; a member that does not get the new epoch in time is counted as
//! missed, and the clients are closed before the group's figures are returned.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use sync_client::{
    ClientConfig, ClientOptions, GroupChoice, GroupMaterial, IrohConfig, IrohTransport,
    StoreLocation, StreamExt as _, SyncClient,
};
use sync_crypto::KeyEpoch;
use sync_types::RelayAddr;
use tokio::task::JoinSet;

use super::super::BenchError;
use super::super::cpu::{CpuMark, CpuUse};
use super::super::relay::BenchRelay;

/// Devices connecting at once while a group is built (the relay holds at most 64 connections
/// per address before their `Hello`).
const JOIN_BATCH: usize = 8;
/// How long one device may take to connect.
const CONNECT_WAIT: Duration = Duration::from_secs(30);
/// How long the whole group may take to enroll.
const ENROLL_WAIT: Duration = Duration::from_secs(300);
/// How long `rotate()` and then every member may take to hold the new epoch.
const ROTATE_WAIT: Duration = Duration::from_secs(60);
/// How often the admin asks the relay for the group's devices while they join.
const MEMBERS_POLL: Duration = Duration::from_millis(200);
/// How long closing the group's clients may take.
const CLOSE_WAIT: Duration = Duration::from_secs(20);
/// The window over which the relay and this process must both be quiet.
pub(in crate::bench) const QUIET_WINDOW: Duration = Duration::from_millis(250);
/// Quiet: the relay process keeps at most this many cores busy over a window …
pub(in crate::bench) const QUIET_RELAY_CORES: f64 = 0.05;
/// … and this process (every device) at most this many.
pub(in crate::bench) const QUIET_DEVICES_CORES: f64 = 0.10;

/// One timed rotation.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(in crate::bench) struct Timed {
    /// From calling the admin's `rotate()` to its return (the relay stored the rotation).
    pub(in crate::bench) rotate_call: Duration,
    /// From calling `rotate()` to the last member holding the new epoch (`None` when one
    /// missed it).
    pub(in crate::bench) last_member: Option<Duration>,
    /// From calling `rotate()` to the median member holding it (among those that did).
    pub(in crate::bench) median_member: Duration,
    /// Members that did not hold the new epoch within the wait.
    pub(in crate::bench) missed: usize,
    /// From calling `rotate()` to the start of the first quiet window after it (`None` when
    /// the group was not quiet within the wait).
    pub(in crate::bench) quiet_after: Option<Duration>,
    /// Relay process CPU from calling `rotate()` to that quiet window's end, ms.
    pub(in crate::bench) relay_cpu_ms: f64,
    /// This process's CPU (every device) over the same span, ms.
    pub(in crate::bench) devices_cpu_ms: f64,
}

/// What one group measured.
#[derive(Debug, Clone, Default, PartialEq)]
pub(in crate::bench) struct GroupRun {
    /// Devices in the group, the admin included.
    pub(in crate::bench) devices: usize,
    /// From the first device connecting to the admin seeing every device enrolled.
    pub(in crate::bench) join: Duration,
    /// From then until the group was first quiet (`None`: not within the wait).
    pub(in crate::bench) join_quiet: Option<Duration>,
    /// The timed rotations, in order.
    pub(in crate::bench) rotations: Vec<Timed>,
}

fn failed(what: impl Into<String>) -> BenchError {
    BenchError::Rotation(what.into())
}

/// A device of `group` at `relay`: its own iroh endpoint bound to 127.0.0.1, an in-memory
/// store, the test options (fast reconnects).
async fn connect(
    relay: &RelayAddr,
    group: &GroupMaterial,
    k: usize,
) -> Result<SyncClient, BenchError> {
    let transport = Arc::new(IrohTransport::new(
        IrohConfig::new(relay.id, relay.socket_addrs())
            .with_bind_addr(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
    ));
    let config = ClientConfig::new(
        StoreLocation::InMemory,
        transport,
        GroupChoice::Use(group.clone()),
    )
    .with_device_name(format!("bench device {k}"))
    .with_options(ClientOptions::for_tests());
    match tokio::time::timeout(CONNECT_WAIT, SyncClient::connect(config)).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(failed(format!("device {k} did not connect: {e}"))),
        Err(_) => Err(failed(format!(
            "device {k} did not connect within {CONNECT_WAIT:?}"
        ))),
    }
}

/// Polls the admin's view of the group until `done` holds for it, bounded by `wait`.
async fn until_members(
    admin: &SyncClient,
    wait: Duration,
    what: &str,
    done: impl Fn(&[sync_client::MemberInfo]) -> bool,
) -> Result<(), BenchError> {
    let deadline = Instant::now() + wait;
    loop {
        // Not connected at that instant, or the answer came late: ask again.
        if let Ok(Ok(members)) = tokio::time::timeout(MEMBERS_POLL * 10, admin.members()).await
            && done(&members)
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(failed(format!("{what} within {wait:?}")));
        }
        tokio::time::sleep(MEMBERS_POLL).await;
    }
}

/// Waits until the relay process and this one are both quiet over a [`QUIET_WINDOW`]; the
/// instant that window started, or `None` after `wait`.
async fn quiet(relay_pid: u32, wait: Duration) -> Option<Instant> {
    let deadline = Instant::now() + wait;
    loop {
        let start = Instant::now();
        let a = CpuMark::take(relay_pid);
        tokio::time::sleep(QUIET_WINDOW).await;
        let used = CpuUse::between(&a, &CpuMark::take(relay_pid), 1);
        if used.server_cores <= QUIET_RELAY_CORES && used.generator_cores <= QUIET_DEVICES_CORES {
            return Some(start);
        }
        if Instant::now() >= deadline {
            return None;
        }
    }
}

/// Closes every client at once, bounded (a client not closed in time is dropped, which closes
/// it without waiting).
async fn close_all(clients: Vec<SyncClient>) {
    let mut closing = JoinSet::new();
    for c in clients {
        closing.spawn(async move { c.close().await });
    }
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while closing.join_next().await.is_some() {}
    })
    .await;
    closing.abort_all();
}

/// Builds a group of `devices` devices on `relay`, times `rotations` rotations by its admin,
/// and closes it. `quiet_wait` bounds each wait for the group to be quiet.
pub(in crate::bench) async fn measure(
    relay: &BenchRelay,
    devices: usize,
    rotations: usize,
    quiet_wait: Duration,
) -> Result<GroupRun, BenchError> {
    let mut clients = Vec::with_capacity(devices);
    let measured = measure_with(relay, devices, rotations, quiet_wait, &mut clients).await;
    close_all(clients).await;
    measured
}

async fn measure_with(
    relay: &BenchRelay,
    devices: usize,
    rotations: usize,
    quiet_wait: Duration,
    clients: &mut Vec<SyncClient>,
) -> Result<GroupRun, BenchError> {
    let group = GroupMaterial::random(&mut ChaCha20Rng::seed_from_u64(
        0x0107_0000 + devices as u64,
    ));
    let start = Instant::now();
    // The first device posts the group's genesis and is its admin: the others join after.
    let admin = connect(&relay.addr, &group, 0).await?;
    clients.push(admin.clone());
    until_members(&admin, ENROLL_WAIT, "the admin's genesis", |m| {
        m.iter().any(|d| d.this_device && d.admin)
    })
    .await?;
    let mut k = 1;
    while k < devices {
        let mut joining = JoinSet::new();
        for i in k..(k + JOIN_BATCH).min(devices) {
            let (addr, group) = (relay.addr.clone(), group.clone());
            joining.spawn(async move { connect(&addr, &group, i).await });
        }
        while let Some(joined) = joining.join_next().await {
            let c = joined.map_err(|e| failed(format!("a device's connect task: {e}")))??;
            clients.push(c);
        }
        k = (k + JOIN_BATCH).min(devices);
    }
    let left = ENROLL_WAIT.saturating_sub(start.elapsed());
    until_members(&admin, left, "every device to enroll", |m| {
        m.iter().filter(|d| d.revoked_at.is_none()).count() >= devices
    })
    .await?;
    let join = start.elapsed();
    let enrolled = Instant::now();
    let join_quiet = quiet(relay.pid, quiet_wait)
        .await
        .map(|at| at.saturating_duration_since(enrolled));

    let members: Vec<SyncClient> = clients.iter().skip(1).cloned().collect();
    let mut timed = Vec::with_capacity(rotations);
    for _ in 0..rotations {
        timed.push(rotate_once(relay.pid, &admin, &members, quiet_wait).await?);
    }
    Ok(GroupRun {
        devices,
        join,
        join_quiet,
        rotations: timed,
    })
}

/// One rotation by `admin`, timed until every one of `members` holds the new epoch, then until
/// the group is quiet again.
async fn rotate_once(
    relay_pid: u32,
    admin: &SyncClient,
    members: &[SyncClient],
    quiet_wait: Duration,
) -> Result<Timed, BenchError> {
    let target = KeyEpoch(admin.epoch().0.saturating_add(1));
    // Every member listens before the rotation starts; it reports the instant it holds the new
    // epoch (`EpochChanged`, or any event after which `epoch()` reached it).
    let mut waiters = JoinSet::new();
    for m in members {
        let m = m.clone();
        let mut events = m.subscribe();
        waiters.spawn(async move {
            while m.epoch() < target {
                events.next().await?;
            }
            Some(Instant::now())
        });
    }
    let mark = CpuMark::take(relay_pid);
    let t0 = Instant::now();
    let rotated = tokio::time::timeout(ROTATE_WAIT, admin.rotate()).await;
    let rotate_call = t0.elapsed();
    let epoch = match rotated {
        Ok(Ok(e)) => e,
        Ok(Err(e)) => return Err(failed(format!("rotate() failed: {e}"))),
        Err(_) => return Err(failed(format!("rotate() took over {ROTATE_WAIT:?}"))),
    };
    if epoch != target {
        return Err(failed(format!(
            "rotate() moved the group to epoch {} instead of {}",
            epoch.0, target.0
        )));
    }
    let deadline = tokio::time::Instant::from_std(t0 + ROTATE_WAIT);
    let mut arrivals = Vec::with_capacity(members.len());
    loop {
        match tokio::time::timeout_at(deadline, waiters.join_next()).await {
            Ok(Some(Ok(Some(at)))) => arrivals.push(at.saturating_duration_since(t0)),
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(_) => {
                waiters.abort_all();
                break;
            }
        }
    }
    arrivals.sort_unstable();
    let missed = members.len() - arrivals.len();
    let last_member = if missed == 0 {
        Some(arrivals.last().copied().unwrap_or(rotate_call))
    } else {
        None
    };
    let median_member = arrivals
        .get(arrivals.len() / 2)
        .copied()
        .unwrap_or_default();
    let quiet_at = quiet(relay_pid, quiet_wait).await;
    let used = CpuUse::between(&mark, &CpuMark::take(relay_pid), 1);
    Ok(Timed {
        rotate_call,
        last_member,
        median_member,
        missed,
        quiet_after: quiet_at.map(|at| at.saturating_duration_since(t0)),
        relay_cpu_ms: used.server_us / 1e3,
        devices_cpu_ms: used.generator_us / 1e3,
    })
}
