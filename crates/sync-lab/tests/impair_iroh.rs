//! Real iroh sessions through the impairment proxy: an in-process relay bound on `[::1]` only,
//! a device bound on `127.0.0.1` only that dials the relay's id at the proxy's IPv4 address.
//! The device cannot reach the relay's IPv6 address directly, so iroh cannot migrate off the
//! proxy to a direct path; every test also proves it from the traffic: push round trips carry the
//! proxy's delay, a partition stops the session and nothing lands on the relay meanwhile, and the
//! proxy's counters move with the session. `SyncClient` does not expose its QUIC connection, so
//! one test builds a plain iroh endpoint pair set up exactly like the device and the relay and
//! checks the proxy's packet counters against both connections' own datagram counts: every
//! datagram either side sent crossed the proxy.
//!
//! No test sleeps to wait for something: each waits on events, counters or results, with a
//! generous timeout only as a guard against hangs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use iroh::endpoint::Connection;
use iroh::{Endpoint, EndpointAddr, SecretKey};
use sync_client::{
    Blob, ClientConfig, ClientOptions, GroupChoice, GroupMaterial, IrohConfig, IrohTransport,
    StoreLocation, StreamExt, SyncClient, SyncEvent,
};
use sync_core::ConnectionStatus;
use sync_lab::impair::{DirectionConfig, ImpairConfig, Proxy, ProxyHandle};
use sync_relay::{RelayConfig, RelayHandle};
use sync_testkit::{GUARD, guard};
use sync_types::RelayId;

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
        IrohConfig::new(RelayId::from_bytes(relay_id), vec![addr]).with_bind_addr(bind),
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
    let g = sync_testkit::devices::group(seed);
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

/// ALPN of the echo pair below (not the sync protocol).
const ECHO_ALPN: &[u8] = b"sync-lab/impair-echo";

/// An endpoint built like the device's (`IrohTransport`) and the relay's: no iroh relay
/// servers, no address lookup, no port mapping, minimal net report, bound to `bind` only.
async fn plain_endpoint(key: u8, bind: &str, accept: bool) -> Endpoint {
    let mut b = sync_client::self_hosted_endpoint(SecretKey::from_bytes(&[key; 32]))
        .bind_addr(bind)
        .unwrap();
    if accept {
        b = b.alpns(vec![ECHO_ALPN.to_vec()]);
    }
    b.bind().await.unwrap()
}

/// The connection's paths: remote address, selected or not, datagrams sent and received.
fn paths(conn: &Connection) -> String {
    conn.paths()
        .iter()
        .map(|p| {
            let s = p.stats();
            format!(
                "{:?} {:?}{}: tx {} rx {}",
                p.id(),
                p.remote_addr(),
                if p.is_selected() { " (selected)" } else { "" },
                s.udp_tx.datagrams,
                s.udp_rx.datagrams
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// One datagram count of each side of the proxy, taken together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counts {
    client_tx: u64,
    /// Off-path NAT-traversal probes the device sent (one PATH_CHALLENGE per datagram).
    client_probes: u64,
    proxy_up_received: u64,
    proxy_up_forwarded: u64,
    server_rx: u64,
    server_tx: u64,
    /// Off-path NAT-traversal probes the relay side sent.
    server_probes: u64,
    proxy_down_received: u64,
    proxy_down_forwarded: u64,
    client_rx: u64,
    in_flight: u64,
}

impl Counts {
    fn take(client: &Connection, server: &Connection, proxy: &ProxyHandle) -> Counts {
        let (c, sv, p) = (client.stats(), server.stats(), proxy.stats());
        Counts {
            client_tx: c.udp_tx.datagrams,
            client_probes: c.frame_tx.path_challenge,
            proxy_up_received: p.up.received,
            proxy_up_forwarded: p.up.forwarded,
            server_rx: sv.udp_rx.datagrams,
            server_tx: sv.udp_tx.datagrams,
            server_probes: sv.frame_tx.path_challenge,
            proxy_down_received: p.down.received,
            proxy_down_forwarded: p.down.forwarded,
            client_rx: c.udp_rx.datagrams,
            in_flight: p.in_flight,
        }
    }

    /// Nothing in flight, and the counts agree:
    /// - each receiver got exactly what the proxy forwarded to it, so no datagram arrived by
    ///   another path. (The relay side's first Initial creates its connection and is not in
    ///   that connection's `udp_rx`: noq-proto's `handle_first_packet` does not count it.)
    /// - each sender's datagrams all reached the proxy, except its off-path NAT-traversal
    ///   probes: iroh sends those (one `PATH_CHALLENGE` each) to the peer's other advertised
    ///   address, which is of the other address family here and unreachable from its socket;
    ///   the receivers' counts above show none of them arrived.
    fn all_through_the_proxy(&self) -> bool {
        self.in_flight == 0
            && self.proxy_up_received == self.proxy_up_forwarded
            && self.proxy_down_received == self.proxy_down_forwarded
            && self.client_rx == self.proxy_down_forwarded
            && self.server_rx + 1 == self.proxy_up_forwarded
            && self.client_tx.checked_sub(self.client_probes) == Some(self.proxy_up_received)
            && self.server_tx.checked_sub(self.server_probes) == Some(self.proxy_down_received)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_counts_every_datagram_the_connection_counts() {
    const DELAY: Duration = Duration::from_millis(10);
    const ROUNDS: usize = 40;
    // The relay's side on [::1] only, the device's on 127.0.0.1 only, the proxy bridging them.
    let server = plain_endpoint(1, "[::1]:0", true).await;
    let upstream = server.bound_sockets()[0];
    assert!(upstream.is_ipv6(), "{upstream}");
    let proxy = Proxy::start(
        "127.0.0.1:0".parse().unwrap(),
        upstream,
        ImpairConfig::symmetric(DirectionConfig {
            delay: DELAY,
            ..DirectionConfig::default()
        }),
    )
    .await
    .unwrap();
    let (conn_tx, conn_rx) = tokio::sync::oneshot::channel();
    let echo = {
        let server = server.clone();
        tokio::spawn(async move {
            let conn = server.accept().await.unwrap().await.unwrap();
            let _ = conn_tx.send(conn.clone());
            // Echo every stream until the client closes the connection.
            while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                let data = recv.read_to_end(1 << 20).await.unwrap();
                send.write_all(&data).await.unwrap();
                send.finish().unwrap();
            }
        })
    };
    let device = plain_endpoint(2, "127.0.0.1:0", false).await;
    let addr = EndpointAddr::new(server.id()).with_ip_addr(proxy.local_addr());
    let client = guard("connect", device.connect(addr, ECHO_ALPN))
        .await
        .unwrap();
    let server_conn = guard("accept", conn_rx).await.unwrap();

    let mut min_rtt = Duration::MAX;
    for i in 0..ROUNDS {
        let t = Instant::now();
        let (mut send, mut recv) = guard("open", client.open_bi()).await.unwrap();
        let msg = vec![u8::try_from(i % 251).unwrap(); 1024];
        send.write_all(&msg).await.unwrap();
        send.finish().unwrap();
        let back = guard("echo", recv.read_to_end(1 << 20)).await.unwrap();
        assert_eq!(back, msg);
        min_rtt = min_rtt.min(t.elapsed());
    }
    assert!(
        min_rtt >= DELAY * 2,
        "a round trip took {min_rtt:?}: traffic bypassed the proxy"
    );

    // Datagrams still in flight (acks, the proxy's delay queue) make the three views differ
    // for a moment; once the connection is idle they must agree exactly. Wait for that on the
    // proxy's counter changes, bounded.
    let deadline = Instant::now() + Duration::from_secs(30);
    let counts = loop {
        let c = Counts::take(&client, &server_conn, &proxy);
        if c.all_through_the_proxy() {
            break c;
        }
        assert!(
            Instant::now() < deadline,
            "the connection's datagram counts never matched the proxy's: {c:?}; device paths: {}; relay-side paths: {}; device stats {:?}",
            paths(&client),
            paths(&server_conn),
            client.stats()
        );
        let seen = proxy.stats();
        let _ = proxy
            .wait_for(Duration::from_millis(100), |s| *s != seen)
            .await;
    };
    println!(
        "{ROUNDS} echoes of 1 KiB through the proxy ({DELAY:?} each way, min RTT {min_rtt:?}): \
         device sent {} datagrams ({} of them off-path NAT probes) → proxy up {} → relay side \
         received {} (+ the first Initial); relay side sent {} ({} probes) → proxy down {} → \
         device received {}; paths: device {}, relay side {}",
        counts.client_tx,
        counts.client_probes,
        counts.proxy_up_received,
        counts.server_rx,
        counts.server_tx,
        counts.server_probes,
        counts.proxy_down_received,
        counts.client_rx,
        paths(&client),
        paths(&server_conn)
    );
    // One path each, and the device's goes to the proxy.
    let device_paths: Vec<_> = client
        .paths()
        .iter()
        .map(|p| p.remote_addr().clone())
        .collect();
    assert_eq!(
        device_paths,
        vec![iroh::TransportAddr::Ip(proxy.local_addr())],
        "the device's only path is the proxy"
    );
    assert_eq!(server_conn.paths().iter().count(), 1);
    assert!(
        counts.client_tx > ROUNDS as u64 && counts.client_rx > ROUNDS as u64,
        "{counts:?}"
    );

    client.close(0u32.into(), b"done");
    guard("echo task", echo).await.unwrap();
    device.close().await;
    server.close().await;
    proxy.shutdown();
}
