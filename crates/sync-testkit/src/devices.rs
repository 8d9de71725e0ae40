//! Test devices: real [`SyncClient`]s over real iroh QUIC on loopback, and groups made from a
//! seed so a failure can be replayed.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use sync_client::{
    Blob, ClientConfig, ClientOptions, GroupChoice, IrohConfig, IrohTransport, MemberInfo,
    StoreLocation, Stream, StreamExt, SyncClient, SyncEvent,
};
use sync_core::GroupMaterial;
use sync_types::{BlobId, RelayAddr};

use crate::guard;

/// A random-secret group drawn from `seed` (the same seed gives the same group).
pub fn group(seed: u64) -> GroupMaterial {
    GroupMaterial::random(&mut ChaCha20Rng::seed_from_u64(seed))
}

/// An iroh transport to `relay` whose endpoint binds the loopback address of the relay's
/// family (`[::1]:0` when every relay address is IPv6, else `127.0.0.1:0`).
pub fn loopback_transport(relay: &RelayAddr) -> Arc<IrohTransport> {
    let addrs = relay.socket_addrs();
    let bind = if !addrs.is_empty() && addrs.iter().all(SocketAddr::is_ipv6) {
        SocketAddr::from((Ipv6Addr::LOCALHOST, 0))
    } else {
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
    };
    Arc::new(IrohTransport::new(
        IrohConfig::new(relay.id, addrs).with_bind_addr(bind),
    ))
}

/// A test device of `group` that uses the first of `relays` and fails over to the others in
/// order ([`IrohConfig::fallbacks`]).
///
/// # Panics
/// When `relays` is empty or it cannot connect within the guard: this is for tests.
#[allow(clippy::panic)]
pub async fn connect_to_all(
    relays: &[RelayAddr],
    group: &GroupMaterial,
    store: StoreLocation,
) -> SyncClient {
    let (first, rest) = relays
        .split_first()
        .unwrap_or_else(|| panic!("no relay to connect to"));
    let transport = Arc::new(IrohTransport::new(
        IrohConfig::new(first.id, first.socket_addrs())
            .with_bind_addr(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .with_fallbacks(rest.to_vec()),
    ));
    let config = ClientConfig::new(store, transport, GroupChoice::Use(group.clone()))
        .with_options(ClientOptions::for_tests());
    guard("a device to connect", SyncClient::connect(config))
        .await
        .unwrap_or_else(|e| panic!("device did not connect: {e}"))
}

/// The configuration of a test device of `group` at `relay` with its state in `store`
/// ([`ClientOptions::for_tests`]: fast reconnects). Adjust it before connecting.
pub fn config(relay: &RelayAddr, group: &GroupMaterial, store: StoreLocation) -> ClientConfig {
    ClientConfig::new(
        store,
        loopback_transport(relay),
        GroupChoice::Use(group.clone()),
    )
    .with_options(ClientOptions::for_tests())
}

/// A test device of `group`, connected to `relay` (see [`config`]).
///
/// # Panics
/// When it cannot connect within the guard: this is for tests.
#[allow(clippy::panic)]
pub async fn connect(relay: &RelayAddr, group: &GroupMaterial, store: StoreLocation) -> SyncClient {
    guard(
        "a device to connect",
        SyncClient::connect(config(relay, group, store)),
    )
    .await
    .unwrap_or_else(|e| panic!("device did not connect: {e}"))
}

/// Pulls until `want` blobs were delivered (pulling again on every announcement), and returns
/// them in the order they were delivered.
///
/// # Panics
/// When they do not all arrive within the guard, or a pull fails.
#[allow(clippy::panic)]
pub async fn pull_until(client: &SyncClient, want: usize) -> Vec<Blob> {
    let mut events = client.subscribe();
    let mut got = Vec::new();
    guard("blobs to arrive", async {
        loop {
            got.extend(
                client
                    .pull()
                    .await
                    .unwrap_or_else(|e| panic!("pull failed: {e}")),
            );
            if got.len() >= want {
                return;
            }
            // Wait for a hint that more is there (events are hints; a lagged stream pulls too).
            while let Some(event) = events.next().await {
                if matches!(
                    event,
                    SyncEvent::BlobsAvailable { .. } | SyncEvent::Lagged { .. }
                ) {
                    break;
                }
            }
        }
    })
    .await;
    got
}

/// Waits until `admin` sees `n` enrolled, unrevoked devices (each enrolls right after its
/// first `Welcome`), asking the relay again after every answer; returns the member list.
///
/// # Panics
/// When they do not enroll within the guard, or a request fails.
#[allow(clippy::panic)]
pub async fn until_members(admin: &SyncClient, n: usize) -> Vec<MemberInfo> {
    guard("devices to enroll", async {
        loop {
            let members = admin
                .members()
                .await
                .unwrap_or_else(|e| panic!("members: {e}"));
            if members.iter().filter(|m| m.revoked_at.is_none()).count() >= n {
                return members;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
}

/// Waits until `client` holds key epoch `epoch` (learnt from a broadcast or its next session).
///
/// # Panics
/// When it does not within the guard.
pub async fn until_epoch(client: &SyncClient, epoch: u32) {
    let mut events = client.subscribe();
    guard("the new epoch to arrive", async {
        while client.epoch().0 < epoch {
            let _ = events.next().await;
        }
    })
    .await;
}

/// Queues `n` pushes on `client` from a task, carrying the texts `"0"`, `"1"`, … `"n-1"` (so a
/// reader can check their order); the task returns their blob ids in that order.
///
/// # Panics
/// The task panics when a push cannot be queued: this is for tests.
#[allow(clippy::panic)]
pub fn push_numbered(client: &SyncClient, n: usize) -> tokio::task::JoinHandle<Vec<BlobId>> {
    let client = client.clone();
    tokio::spawn(async move {
        let mut ids = Vec::with_capacity(n);
        for i in 0..n {
            let id = client
                .push_queued(i.to_string().as_bytes())
                .await
                .unwrap_or_else(|e| panic!("push {i} not queued: {e}"));
            ids.push(id);
        }
        ids
    })
}

/// The numbers carried by blobs pushed with [`push_numbered`], in the order given.
///
/// # Panics
/// When a blob does not carry a number.
#[allow(clippy::panic)]
pub fn numbers(blobs: &[Blob]) -> Vec<usize> {
    blobs
        .iter()
        .map(|b| {
            String::from_utf8_lossy(&b.data)
                .parse()
                .unwrap_or_else(|_| panic!("blob {:?} carries no number", b.blob_id))
        })
        .collect()
}

/// Reads `events` until `stop` returns a value (bounded by the guard), and returns it.
pub async fn until_event<T>(
    events: &mut (impl Stream<Item = SyncEvent> + Unpin),
    what: &str,
    mut stop: impl FnMut(&SyncEvent) -> Option<T>,
) -> T {
    guard(what, async {
        loop {
            if let Some(e) = events.next().await
                && let Some(v) = stop(&e)
            {
                return v;
            }
        }
    })
    .await
}
