//! The impairment proxy with plain UDP sockets on loopback: every figure is measured from the
//! packets themselves (send timestamps carried inside them, sequence numbers, the proxy's
//! counters), never from sleeps.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sync_lab::impair::{DirectionConfig, ImpairConfig, Proxy, ProxyHandle};
use tokio::net::UdpSocket;

const GUARD: Duration = Duration::from_secs(60);

async fn bind() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.unwrap()
}

/// A packet: sequence number and send time (nanoseconds since `base`).
fn packet(seq: u64, base: Instant, pad: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(16 + pad);
    p.extend_from_slice(&seq.to_le_bytes());
    p.extend_from_slice(&(base.elapsed().as_nanos() as u64).to_le_bytes());
    p.resize(16 + pad, 0);
    p
}

fn parse(p: &[u8]) -> (u64, u64) {
    (
        u64::from_le_bytes(p[..8].try_into().unwrap()),
        u64::from_le_bytes(p[8..16].try_into().unwrap()),
    )
}

/// Receives until `n` packets arrived or the proxy has nothing in flight and everything it
/// received is accounted for (forwarded or dropped) and every forwarded packet was read.
async fn receive(
    sock: &UdpSocket,
    proxy: &ProxyHandle,
    sent: u64,
    base: Instant,
) -> Vec<(u64, Duration)> {
    receive_counting(sock, proxy, sent, base, &tokio::sync::watch::channel(0).0).await
}

/// [`receive`], publishing how many packets were read so far on `read`, so a sender can keep
/// the socket's buffer from overflowing on a busy machine (the kernel would drop what the
/// proxy forwarded, and the test could not tell that from the proxy's own drops).
async fn receive_counting(
    sock: &UdpSocket,
    proxy: &ProxyHandle,
    sent: u64,
    base: Instant,
    read: &tokio::sync::watch::Sender<u64>,
) -> Vec<(u64, Duration)> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 2048];
    loop {
        let s = proxy.stats();
        let settled =
            s.up.received == sent && s.in_flight == 0 && got.len() as u64 == s.up.forwarded;
        if settled {
            return got;
        }
        let (n, _) = tokio::time::timeout(GUARD, sock.recv_from(&mut buf))
            .await
            .expect("packets arrive (guard)")
            .unwrap();
        let now = base.elapsed().as_nanos() as u64;
        let (seq, at) = parse(&buf[..n]);
        got.push((seq, Duration::from_nanos(now - at)));
        read.send_replace(got.len() as u64);
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

async fn proxy_to(server: &UdpSocket, config: ImpairConfig) -> ProxyHandle {
    Proxy::start(
        "127.0.0.1:0".parse().unwrap(),
        server.local_addr().unwrap(),
        config,
    )
    .await
    .unwrap()
}

/// A server, a client and a proxy with `config` between them.
async fn lab(config: ImpairConfig) -> (UdpSocket, UdpSocket, ProxyHandle) {
    let server = bind().await;
    let client = bind().await;
    let proxy = proxy_to(&server, config).await;
    (server, client, proxy)
}

/// Impairments of the client → upstream direction only.
fn up_only(up: DirectionConfig) -> ImpairConfig {
    ImpairConfig {
        up,
        ..ImpairConfig::default()
    }
}

/// Sends `count` packets paced by `every` (a pacing interval, not a wait for an event).
async fn send_paced(
    client: &UdpSocket,
    to: SocketAddr,
    count: u64,
    every: Duration,
    base: Instant,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for seq in 0..count {
        tick.tick().await;
        client.send_to(&packet(seq, base, 100), to).await.unwrap();
    }
}

/// What a paced run through the proxy delivered: every packet that arrived (sequence number,
/// time on the way), and the proxy with its counters. The sockets live as long as the run.
struct PacedRun {
    got: Vec<(u64, Duration)>,
    proxy: ProxyHandle,
    _sockets: [UdpSocket; 2],
}

/// Sends `count` packets paced by `every` through a proxy with `config`, receiving them until
/// every one is accounted for.
async fn paced_through(config: ImpairConfig, count: u64, every: Duration) -> PacedRun {
    let (server, client, proxy) = lab(config).await;
    let base = Instant::now();
    let (got, ()) = tokio::join!(
        receive(&server, &proxy, count, base),
        send_paced(&client, proxy.local_addr(), count, every, base)
    );
    PacedRun {
        got,
        proxy,
        _sockets: [server, client],
    }
}

/// One datagram on `sock` (bounded by the guard): its length and sender.
async fn recv(sock: &UdpSocket, buf: &mut [u8]) -> (usize, SocketAddr) {
    tokio::time::timeout(GUARD, sock.recv_from(buf))
        .await
        .expect("a datagram arrives (guard)")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_and_jitter_follow_the_configuration() {
    const DELAY: Duration = Duration::from_millis(20);
    const JITTER: Duration = Duration::from_millis(5);
    const N: u64 = 1000;
    let config = up_only(DirectionConfig {
        delay: DELAY,
        jitter: JITTER,
        ..DirectionConfig::default()
    })
    .with_seed(7);
    let PacedRun { got, proxy, .. } = paced_through(config, N, Duration::from_micros(500)).await;
    assert_eq!(
        got.len() as u64,
        N,
        "no loss configured: every packet arrives"
    );
    let mut d: Vec<Duration> = got.iter().map(|(_, d)| *d).collect();
    d.sort();
    let mean = d.iter().sum::<Duration>() / d.len() as u32;
    let (min, p10, p50, p90, max) = (
        d[0],
        percentile(&d, 0.10),
        percentile(&d, 0.50),
        percentile(&d, 0.90),
        d[d.len() - 1],
    );
    println!(
        "delay 20ms ± 5ms over {N} packets: min {min:?} p10 {p10:?} p50 {p50:?} mean {mean:?} \
         p90 {p90:?} max {max:?}"
    );
    // Never early: the proxy holds each packet at least delay - jitter.
    assert!(min >= DELAY - JITTER, "min {min:?}");
    // Uniform ±5 ms: p10 ≈ 16 ms, p50 ≈ 20 ms, p90 ≈ 24 ms, plus timer granularity (≤ 1 ms)
    // and scheduling on a shared machine (tolerance 5 ms: other builds share the 2 cores).
    let tol = Duration::from_millis(5);
    assert!(
        p50 >= DELAY - Duration::from_millis(1) && p50 <= DELAY + tol,
        "p50 {p50:?}"
    );
    assert!(
        mean >= DELAY - Duration::from_millis(1) && mean <= DELAY + tol,
        "mean {mean:?}"
    );
    // Uniform ±5 ms puts 8 ms between p10 and p90 (a common scheduling shift cancels out).
    assert!(
        p90 - p10 >= JITTER + JITTER / 2,
        "jitter spreads the delays: p10 {p10:?} p90 {p90:?}"
    );
    assert!(
        p90 - p10 <= 2 * JITTER + Duration::from_millis(4),
        "no wider than the jitter: p10 {p10:?} p90 {p90:?}"
    );
    assert!(p90 <= DELAY + JITTER + tol, "p90 {p90:?}");
    let s = proxy.stats();
    assert_eq!((s.up.received, s.up.forwarded, s.up.dropped()), (N, N, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loss_rate_over_10k_packets_is_within_tolerance_and_reproducible() {
    const N: u64 = 10_000;
    async fn run(seed: u64) -> (u64, HashSet<u64>) {
        let (server, client, proxy) = lab(ImpairConfig::symmetric(DirectionConfig {
            loss: 0.05,
            ..DirectionConfig::default()
        })
        .with_seed(seed))
        .await;
        let base = Instant::now();
        let to = proxy.local_addr();
        let (read_tx, read_rx) = tokio::sync::watch::channel(0);
        // Paced in small bursts, each one read before the next is sent, so the loopback socket
        // buffers never overflow.
        let (got, ()) = tokio::join!(
            receive_counting(&server, &proxy, N, base, &read_tx),
            async {
                let mut read_rx = read_rx;
                for chunk in 0..N / 100 {
                    for i in 0..100 {
                        client
                            .send_to(&packet(chunk * 100 + i, base, 100), to)
                            .await
                            .unwrap();
                    }
                    let s = proxy
                        .wait_for(GUARD, |s| {
                            s.up.received == (chunk + 1) * 100 && s.in_flight == 0
                        })
                        .await
                        .unwrap();
                    tokio::time::timeout(GUARD, read_rx.wait_for(|n| *n >= s.up.forwarded))
                        .await
                        .expect("the burst is read (guard)")
                        .unwrap();
                }
            }
        );
        let s = proxy.stats();
        assert_eq!(s.up.received, N);
        assert_eq!(
            s.up.forwarded + s.up.dropped_loss,
            N,
            "every packet forwarded or lost"
        );
        assert_eq!(
            got.len() as u64,
            s.up.forwarded,
            "the counters match what arrived"
        );
        (s.up.dropped_loss, got.iter().map(|(seq, _)| *seq).collect())
    }
    let (lost, arrived) = run(42).await;
    let rate = lost as f64 / N as f64;
    println!(
        "loss 5% over {N} packets: {lost} lost ({:.2} %)",
        rate * 100.0
    );
    // Binomial(10k, 0.05): σ ≈ 22 packets; ±1 percentage point is ±4.6 σ.
    assert!((0.04..=0.06).contains(&rate), "loss rate {rate}");
    let (lost_again, arrived_again) = run(42).await;
    assert_eq!(lost, lost_again, "same seed, same losses");
    assert_eq!(arrived, arrived_again, "same seed, same packets lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_and_reordering_are_observable() {
    const N: u64 = 2000;
    let config = up_only(DirectionConfig {
        duplicate: 0.10,
        reorder: 0.10,
        reorder_gap: Duration::from_millis(5),
        ..DirectionConfig::default()
    })
    .with_seed(3);
    let PacedRun { got, proxy, .. } = paced_through(config, N, Duration::from_micros(200)).await;
    let s = proxy.stats();
    let mut copies: HashMap<u64, usize> = HashMap::new();
    for (seq, _) in &got {
        *copies.entry(*seq).or_default() += 1;
    }
    let dups = copies.values().filter(|c| **c == 2).count() as u64;
    let out_of_order = got.windows(2).filter(|w| w[1].0 < w[0].0).count();
    println!(
        "duplicate 10% / reorder 10% over {N} packets: {} copies, {dups} duplicated, \
         {} held back, {out_of_order} arrivals out of order",
        got.len(),
        s.up.reordered
    );
    assert_eq!(copies.len() as u64, N, "every packet arrives at least once");
    assert_eq!(dups, s.up.duplicated, "duplicates counted as they arrive");
    assert_eq!(got.len() as u64, N + dups);
    assert!((100..=300).contains(&dups), "≈ 10 % duplicated: {dups}");
    assert!(
        s.up.reordered > 0 && out_of_order > 0,
        "later packets overtake held ones"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_stops_both_directions_and_heal_restores_them() {
    let (server, client, proxy) = lab(ImpairConfig::symmetric(DirectionConfig {
        delay: Duration::from_millis(30),
        ..DirectionConfig::default()
    }))
    .await;
    let to = proxy.local_addr();
    let mut buf = [0u8; 64];
    // Before: a round trip works, the server sees the proxy's per-client socket.
    client.send_to(b"hello", to).await.unwrap();
    let (_, peer) = recv(&server, &mut buf).await;
    server.send_to(b"back", peer).await.unwrap();
    let (n, from) = recv(&client, &mut buf).await;
    assert_eq!((&buf[..n], from), (&b"back"[..], to));

    // Packets in flight when the partition starts are dropped too.
    client.send_to(b"in flight", to).await.unwrap();
    proxy.wait_for(GUARD, |s| s.up.received == 2).await.unwrap();
    proxy.partition();
    for _ in 0..10 {
        client.send_to(b"blocked", to).await.unwrap();
        server.send_to(b"blocked", peer).await.unwrap();
    }
    let s = proxy
        .wait_for(GUARD, |s| {
            s.up.received == 12 && s.down.received == 11 && s.in_flight == 0
        })
        .await
        .unwrap();
    assert_eq!(
        s.up.forwarded, 1,
        "only the packet before the partition crossed"
    );
    assert_eq!(s.down.forwarded, 1);
    assert_eq!((s.up.dropped_partition, s.down.dropped_partition), (11, 10));
    // Nothing is waiting on either socket: this read finds nothing queued.
    assert!(server.try_recv_from(&mut buf).is_err());
    assert!(client.try_recv_from(&mut buf).is_err());

    proxy.heal();
    client.send_to(b"healed", to).await.unwrap();
    let (n, _) = recv(&server, &mut buf).await;
    assert_eq!(&buf[..n], b"healed");
    server.send_to(b"healed back", peer).await.unwrap();
    let (n, _) = recv(&client, &mut buf).await;
    assert_eq!(&buf[..n], b"healed back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_client_gets_its_own_upstream_socket() {
    let server = bind().await;
    let proxy = proxy_to(&server, ImpairConfig::default()).await;
    let to = proxy.local_addr();
    let clients = [bind().await, bind().await, bind().await];
    let mut peers = HashMap::new();
    let mut buf = [0u8; 64];
    for (i, c) in clients.iter().enumerate() {
        c.send_to(format!("client {i}").as_bytes(), to)
            .await
            .unwrap();
        let (n, peer) = recv(&server, &mut buf).await;
        peers.insert(peer, String::from_utf8(buf[..n].to_vec()).unwrap());
    }
    assert_eq!(peers.len(), 3, "the upstream sees three distinct peers");
    assert_eq!(proxy.stats().clients, 3);
    // Answers go back to the right client.
    for (peer, text) in &peers {
        server
            .send_to(format!("to {text}").as_bytes(), peer)
            .await
            .unwrap();
    }
    for (i, c) in clients.iter().enumerate() {
        let (n, _) = recv(c, &mut buf).await;
        assert_eq!(&buf[..n], format!("to client {i}").as_bytes());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_spaces_packets_and_tail_drops_beyond_the_queue() {
    // 100 kB/s: a 1,016-byte packet takes ≈ 10 ms on the link; the queue holds 100 ms.
    const N: u64 = 50;
    let (server, client, proxy) = lab(up_only(DirectionConfig {
        rate: Some(100_000),
        queue: Duration::from_millis(100),
        ..DirectionConfig::default()
    }))
    .await;
    let base = Instant::now();
    let to = proxy.local_addr();
    let (got, ()) = tokio::join!(receive(&server, &proxy, N, base), async {
        for seq in 0..N {
            client.send_to(&packet(seq, base, 1000), to).await.unwrap();
        }
    });
    let s = proxy.stats();
    println!(
        "rate 100 kB/s, burst of {N} × 1016 B: {} forwarded, {} tail-dropped",
        s.up.forwarded, s.up.dropped_queue
    );
    assert!(
        s.up.dropped_queue > 0,
        "a burst beyond the queue is tail-dropped"
    );
    assert_eq!(s.up.forwarded + s.up.dropped_queue, N);
    // Packets leave one link-time apart: the last forwarded one waited ≈ forwarded × 10 ms.
    let last = got.iter().map(|(_, d)| *d).max().unwrap();
    let link = Duration::from_secs_f64(1016.0 / 100_000.0);
    assert!(
        last >= link * (got.len() as u32 - 1),
        "last waited {last:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_change_while_traffic_flows_and_bad_ones_are_refused() {
    let (server, client, proxy) = lab(ImpairConfig::default().with_seed(1)).await;
    let to = proxy.local_addr();
    let base = Instant::now();
    let mut buf = [0u8; 2048];
    for seq in 0..100 {
        client.send_to(&packet(seq, base, 10), to).await.unwrap();
    }
    proxy
        .wait_for(GUARD, |s| s.up.forwarded == 100)
        .await
        .unwrap();
    proxy.update(|c| c.up.loss = 1.0).unwrap();
    for seq in 100..200 {
        client.send_to(&packet(seq, base, 10), to).await.unwrap();
    }
    // Wait until every packet is decided (a packet is counted received before it is counted
    // forwarded or dropped, so `received` alone can be read between the two).
    let s = proxy
        .wait_for(GUARD, |s| s.up.forwarded + s.up.dropped_loss >= 200)
        .await
        .unwrap();
    assert_eq!(s.up.received, 200);
    assert_eq!((s.up.forwarded, s.up.dropped_loss), (100, 100));
    assert!(proxy.update(|c| c.down.loss = 1.5).is_err());
    assert!(proxy.update(|c| c.up.rate = Some(0)).is_err());
    assert_eq!(
        proxy.config().up.loss,
        1.0,
        "a refused change changes nothing"
    );
    for _ in 0..100 {
        server.try_recv_from(&mut buf).unwrap();
    }
    assert!(
        Proxy::start(
            "127.0.0.1:0".parse().unwrap(),
            "10.1.2.3:9".parse().unwrap(),
            ImpairConfig::default()
        )
        .await
        .is_err(),
        "only loopback"
    );
}
