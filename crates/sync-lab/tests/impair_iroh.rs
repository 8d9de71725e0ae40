//! Real iroh sessions through the impairment proxy: an in-process relay bound on `[::1]` only,
//! a device bound on `127.0.0.1` only that dials the relay's id at the proxy's IPv4 address.
//! The device cannot reach the relay's IPv6 address directly, so iroh cannot migrate off the
//! proxy (NOTES-iroh.md); every test also proves it from the traffic: push round trips carry the
//! proxy's delay, a partition stops the session and nothing lands on the relay meanwhile, and the
//! proxy's counters move with the session.
//!
//! No test sleeps to wait for something: each waits on events, counters or results, with a
//! generous timeout only as a guard against hangs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use sync_client::{
    Blob, ClientConfig, ClientOptions, GroupChoice, GroupMaterial, IrohConfig, IrohTransport,
    StoreLocation, StreamExt, SyncClient, SyncEvent,
};
use sync_core::ConnectionStatus;
use sync_crypto::{GroupDescriptor, GroupSecret};
use sync_lab::impair::{DirectionConfig, ImpairConfig, Proxy, ProxyHandle};
use sync_relay::{RelayConfig, RelayHandle};

const GUARD: Duration = Duration::from_secs(120);

async fn guard<F: std::future::Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(GUARD, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out (guard) waiting for {what}"),
    }
}

fn material(seed: u64) -> GroupMaterial {
    GroupMaterial {
        descriptor: GroupDescriptor::Random,
        secret: GroupSecret::random(&mut ChaCha20Rng::seed_from_u64(seed)),
    }
}

fn options() -> ClientOptions {
    let mut o = ClientOptions::for_tests();
    // A silent session is detected after three intervals.
    o.ping_interval = Duration::from_millis(300);
    o.connection.connect_timeout = Duration::from_secs(2);
    o.connection.handshake_timeout = Duration::from_secs(2);
    o
}

/// The relay on `[::1]` only.
async fn start_relay(dir: &Path) -> RelayHandle {
    let mut config = RelayConfig::for_tests(dir);
    config.bind = "[::1]:0".parse().unwrap();
    let relay = sync_relay::start(config).await.expect("relay starts");
    assert!(
        relay.direct_addrs().iter().all(|a| a.is_ipv6()),
        "{:?}",
        relay.direct_addrs()
    );
    relay
}

async fn client(
    relay_id: [u8; 32],
    addr: SocketAddr,
    bind: SocketAddr,
    g: &GroupMaterial,
) -> SyncClient {
    let transport = Arc::new(IrohTransport::new(
        IrohConfig::new(relay_id, vec![addr]).with_bind_addr(bind),
    ));
    let cfg = ClientConfig::new(
        StoreLocation::InMemory,
        transport,
        GroupChoice::Use(g.clone()),
    )
    .with_options(options());
    let c = guard("connect", SyncClient::connect(cfg)).await.unwrap();
    assert_eq!(c.status().connection, ConnectionStatus::Connected);
    c
}

/// A device behind the proxy (IPv4 only) and a device straight on the relay (IPv6).
async fn setup(
    dir: &Path,
    config: ImpairConfig,
    seed: u64,
) -> (RelayHandle, ProxyHandle, SyncClient, SyncClient) {
    let relay = start_relay(dir).await;
    let proxy = Proxy::start(
        "127.0.0.1:0".parse().unwrap(),
        relay.direct_addrs()[0],
        config,
    )
    .await
    .unwrap();
    let g = material(seed);
    let behind = client(
        relay.relay_id(),
        proxy.local_addr(),
        "127.0.0.1:0".parse().unwrap(),
        &g,
    )
    .await;
    let direct = client(
        relay.relay_id(),
        relay.direct_addrs()[0],
        "[::1]:0".parse().unwrap(),
        &g,
    )
    .await;
    (relay, proxy, behind, direct)
}

/// Pulls until `want` blobs from other devices were received.
async fn pull_until(c: &SyncClient, want: usize) -> Vec<Blob> {
    let mut events = c.subscribe();
    let mut got = c.pull().await.unwrap();
    while got.len() < want {
        let e = guard("blobs", events.next()).await.unwrap();
        if matches!(
            e,
            SyncEvent::BlobsAvailable { .. } | SyncEvent::Lagged { .. }
        ) {
            got.extend(c.pull().await.unwrap());
        }
    }
    got
}

async fn wait_status(c: &SyncClient, what: &str, pred: impl Fn(&ConnectionStatus) -> bool) {
    let mut events = c.subscribe();
    while !pred(&c.status().connection) {
        guard(what, events.next()).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_goes_through_the_proxy_partition_queues_and_heal_delivers_once() {
    const DELAY: Duration = Duration::from_millis(15);
    let dir = tempfile::tempdir().unwrap();
    let (relay, proxy, behind, direct) = setup(
        dir.path(),
        ImpairConfig::symmetric(DirectionConfig {
            delay: DELAY,
            ..DirectionConfig::default()
        }),
        1,
    )
    .await;
    assert_eq!(
        relay.metrics().sessions.get(),
        2,
        "the relay saw both sessions"
    );
    let s0 = proxy.stats();
    assert!(
        s0.up.forwarded > 0 && s0.down.forwarded > 0,
        "the handshake crossed the proxy: {s0:?}"
    );
    assert_eq!(s0.clients, 1);

    // Every push round trip carries the proxy's delay both ways: had iroh found a direct path
    // (it migrates within ≈ 50 ms when it can), later pushes would take well under 1 ms.
    let mut rtts = Vec::new();
    for i in 0..30 {
        let t = Instant::now();
        guard("push", behind.push(format!("before {i}").as_bytes()))
            .await
            .unwrap();
        rtts.push(t.elapsed());
    }
    let min = *rtts.iter().min().unwrap();
    println!(
        "push→ack through the proxy (15 ms each way): min {min:?} max {:?}",
        rtts.iter().max().unwrap()
    );
    assert!(
        min >= DELAY * 2,
        "a push took {min:?}: traffic bypassed the proxy"
    );
    let got = guard("pull", pull_until(&direct, 30)).await;
    assert_eq!(got.len(), 30);
    let s1 = proxy.stats();
    assert!(
        s1.up.forwarded > s0.up.forwarded + 30,
        "the pushes crossed the proxy: {s1:?}"
    );

    // Partition: the device notices the silence and goes offline; its pushes stay queued and
    // nothing reaches the relay.
    proxy.partition();
    let at_partition = proxy.stats();
    guard(
        "offline",
        wait_status(&behind, "offline", |s| *s != ConnectionStatus::Connected),
    )
    .await;
    for i in 0..10 {
        behind
            .push_queued(format!("during {i}").as_bytes())
            .await
            .unwrap();
    }
    assert_eq!(
        behind.status().outbox_len,
        10,
        "pushes stay queued while partitioned"
    );
    // Let the device retry against the partition for a while: wait for the proxy to drop
    // a good number of its attempts (its counters, not a sleep).
    let s = proxy
        .wait_for(GUARD, |s| {
            s.up.dropped_partition >= at_partition.up.dropped_partition + 20
        })
        .await
        .unwrap();
    assert_eq!(
        s.up.forwarded, at_partition.up.forwarded,
        "nothing crossed the partition"
    );
    assert_eq!(s.down.forwarded, at_partition.down.forwarded);
    assert_eq!(
        relay.metrics().pushes_total.get(),
        30,
        "no push reached the relay by another path"
    );
    assert_eq!(behind.status().outbox_len, 10);

    // Heal: the session comes back, the queued pushes land exactly once.
    proxy.heal();
    guard(
        "reconnect",
        wait_status(&behind, "reconnect", |s| *s == ConnectionStatus::Connected),
    )
    .await;
    guard("flush", behind.flush(GUARD)).await.unwrap();
    assert_eq!(behind.status().outbox_len, 0);
    let got = guard("pull after heal", pull_until(&direct, 10)).await;
    let texts: Vec<String> = got
        .iter()
        .map(|b| String::from_utf8(b.data.clone()).unwrap())
        .collect();
    let want: Vec<String> = (0..10).map(|i| format!("during {i}")).collect();
    assert_eq!(texts, want, "queued pushes land once, in order");
    assert_eq!(relay.metrics().pushes_total.get(), 40);
    assert_eq!(direct.status().resume_cursor.get(), 40);
    let s2 = proxy.stats();
    assert!(
        s2.up.forwarded > s.up.forwarded,
        "the healed session crosses the proxy"
    );
    println!("proxy counters at the end: {s2:?}");

    behind.close().await;
    direct.close().await;
    relay.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_and_pull_at_5_percent_loss_each_way_lose_nothing() {
    const N: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let (relay, proxy, behind, direct) = setup(
        dir.path(),
        ImpairConfig::symmetric(DirectionConfig {
            loss: 0.05,
            ..DirectionConfig::default()
        })
        .with_seed(5),
        2,
    )
    .await;
    // The device behind the proxy pushes; the direct one pushes too and the lossy one pulls.
    let pusher = {
        let behind = behind.clone();
        tokio::spawn(async move {
            for i in 0..N {
                behind
                    .push_queued(format!("lossy {i}").as_bytes())
                    .await
                    .unwrap();
            }
            behind.flush(GUARD).await.unwrap();
        })
    };
    for i in 0..N {
        direct
            .push_queued(format!("clean {i}").as_bytes())
            .await
            .unwrap();
    }
    guard("direct flush", direct.flush(GUARD)).await.unwrap();
    guard("lossy pushes", pusher).await.unwrap();
    let at_direct = guard("direct pulls", pull_until(&direct, N)).await;
    let at_behind = guard("lossy pulls", pull_until(&behind, N)).await;
    for (got, prefix) in [(&at_direct, "lossy"), (&at_behind, "clean")] {
        assert_eq!(got.len(), N, "nothing lost, nothing duplicated");
        let texts: Vec<String> = got
            .iter()
            .map(|b| String::from_utf8(b.data.clone()).unwrap())
            .collect();
        let want: Vec<String> = (0..N).map(|i| format!("{prefix} {i}")).collect();
        assert_eq!(texts, want, "per-sender order kept");
        let ids: HashSet<_> = got.iter().map(|b| b.blob_id).collect();
        assert_eq!(ids.len(), N);
    }
    assert_eq!(relay.metrics().pushes_total.get(), 2 * N as u64);
    let s = proxy.stats();
    println!(
        "5% loss each way, {N} pushes + {N} pulled through the proxy: up {} received / {} lost, \
         down {} received / {} lost",
        s.up.received, s.up.dropped_loss, s.down.received, s.down.dropped_loss
    );
    assert!(
        s.up.dropped_loss > 0 && s.down.dropped_loss > 0,
        "losses happened: {s:?}"
    );
    assert!(
        s.up.forwarded > N as u64 / 10,
        "the traffic crossed the proxy: {s:?}"
    );
    behind.close().await;
    direct.close().await;
    relay.shutdown().await.unwrap();
}
