//! End-to-end relay benchmark: `SyncClient`s over real iroh QUIC on 127.0.0.1 against an
//! in-process `sync-relay` with its real SQLite file (tempdir, `synchronous=NORMAL`), 1 KiB
//! sealed blobs. Prints figures, same-run baselines (raw SQLite inserts, raw iroh echo RTT) and
//! the ratios against the targets of issue 3. It reports; it never fails on a missed target.
//!
//! Run: `cargo bench -p sync-client --bench relay_e2e`.
//! Environment: `BENCH_PRELOAD` (blobs preloaded into the "full" group, default 1000000),
//! `BENCH_PUSHES` (pushes per throughput run, default 20000), `BENCH_SAMPLES` (latency samples,
//! default 2000).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_precision_loss,
    missing_docs
)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use iroh::endpoint::{NetReportConfig, PortmapperConfig, presets};
use iroh::{Endpoint, EndpointAddr, RelayMode, SecretKey};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use sync_client::{
    ClientConfig, ClientOptions, GroupChoice, GroupMaterial, IrohConfig, IrohTransport,
    StoreLocation, StreamExt, SyncClient, SyncEvent,
};
use sync_crypto::{DeviceKey, GroupDescriptor, GroupKeys, GroupSecret, KeyEpoch, SEAL_OVERHEAD};
use sync_relay::{PushRequest, RelayConfig, RelayHandle, SqliteConfig, Storage};
use sync_types::{BlobId, DeviceId, GroupId};

/// Size of every sealed blob the relay stores.
const SEALED: usize = 1024;
/// Plaintext size that seals to [`SEALED`] bytes.
const PLAIN: usize = SEALED - SEAL_OVERHEAD;
const GUARD: Duration = Duration::from_secs(600);
const TTL: Duration = Duration::from_secs(7 * 86_400);

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn material(seed: u64) -> GroupMaterial {
    GroupMaterial {
        descriptor: GroupDescriptor::Random,
        secret: GroupSecret::random(&mut ChaCha20Rng::seed_from_u64(seed)),
    }
}

fn options() -> ClientOptions {
    ClientOptions::for_tests()
}

async fn start_relay(dir: &Path) -> RelayHandle {
    let mut config = RelayConfig::for_tests(dir);
    // Measure the relay, not its rate limiter or quotas.
    config.session_push_rate = 0;
    config.global_push_rate = 0;
    config.group_max_blobs = 100_000_000;
    config.group_max_bytes = 1 << 40;
    sync_relay::start(config).await.expect("relay starts")
}

async fn client(relay: &RelayHandle, group: &GroupMaterial) -> SyncClient {
    let transport = Arc::new(IrohTransport::new(
        IrohConfig::new(*relay.endpoint_id().as_bytes(), relay.direct_addrs())
            .with_bind_addr(SocketAddr::from(([127, 0, 0, 1], 0))),
    ));
    let cfg = ClientConfig::new(
        StoreLocation::InMemory,
        transport,
        GroupChoice::Use(group.clone()),
    )
    .with_options(options());
    tokio::time::timeout(GUARD, SyncClient::connect(cfg))
        .await
        .expect("connect in time")
        .expect("connect")
}

fn plaintext(i: usize) -> Vec<u8> {
    let mut v = vec![0u8; PLAIN];
    let tag = (i as u64).to_le_bytes();
    v[..8].copy_from_slice(&tag);
    v
}

/// Percentile (0..=100) of sorted samples.
fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() - 1) as f64 * p / 100.0).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn verdict(met: bool) -> &'static str {
    if met { "MET" } else { "NOT MET" }
}

/// Durable push→ack throughput: each client queues `per_client` pushes (pipelined, up to the
/// in-flight window) and waits until its outbox is empty (every push acked after commit).
async fn throughput(relay: &RelayHandle, clients: &[SyncClient], per_client: usize) -> f64 {
    // Warm-up (not timed): a few pushes per client so sessions and caches are hot.
    for c in clients {
        for i in 0..50 {
            c.push_queued(&plaintext(i)).await.expect("warm-up push");
        }
    }
    for c in clients {
        c.flush(GUARD).await.expect("warm-up flush");
    }
    let w0 = relay.storage().writer_metrics();
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in clients {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_client {
                c.push_queued(&plaintext(i)).await.expect("push queued");
            }
            c.flush(GUARD).await.expect("flush");
        }));
    }
    for t in tasks {
        t.await.expect("pusher");
    }
    let elapsed = start.elapsed();
    let total = clients.len() * per_client;
    let w1 = relay.storage().writer_metrics();
    let commits = w1.commits.saturating_sub(w0.commits).max(1);
    let ops = w1.ops.saturating_sub(w0.ops);
    let cpu = cpu_seconds() - cpu0;
    println!(
        "    (writer: {commits} commits, {:.1} pushes/commit; process CPU {:.0} µs/push, {:.2} cores busy)",
        ops as f64 / commits as f64,
        cpu * 1e6 / total as f64,
        cpu / elapsed.as_secs_f64()
    );
    total as f64 / elapsed.as_secs_f64()
}

/// User + system CPU time of this process (client, relay and SQLite together), from
/// `/proc/self/stat` (clock ticks assumed 100 Hz); 0 where unavailable.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let Some(rest) = stat.rsplit(')').next() else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // After the command name: state is field 0, utime field 11, stime field 12.
    (tick(11) + tick(12)) as f64 / 100.0
}

async fn push_latency(c: &SyncClient, samples: usize) -> Vec<Duration> {
    for i in 0..samples / 10 {
        c.push(&plaintext(i)).await.expect("warm-up push");
    }
    let mut out = Vec::with_capacity(samples);
    for i in 0..samples {
        let data = plaintext(i);
        let t = Instant::now();
        c.push(&data).await.expect("push");
        out.push(t.elapsed());
    }
    out.sort();
    out
}

/// push(A)→notify(B): A pushes one blob at a time; the sample ends when B's event stream
/// reports `BlobsAvailable` for that blob's cursor (A is the group's only pusher, so the next
/// cursor is known in advance).
async fn notify_latency(a: &SyncClient, b: &SyncClient, samples: usize) -> (Vec<Duration>, usize) {
    let mut events = b.subscribe();
    let mut last = a.push(&plaintext(0)).await.expect("push").cursor.get();
    let mut out = Vec::with_capacity(samples);
    let mut missed = 0;
    for i in 0..samples + samples / 10 {
        let data = plaintext(i);
        let expected = last + 1;
        let t = Instant::now();
        let wait = async {
            loop {
                match events.next().await {
                    Some(SyncEvent::BlobsAvailable { cursor, .. }) if cursor.get() >= expected => {
                        return Some(Instant::now());
                    }
                    Some(_) => {}
                    None => return None,
                }
            }
        };
        let (ack, seen) = tokio::join!(
            a.push(&data),
            tokio::time::timeout(Duration::from_secs(5), wait)
        );
        last = ack.expect("push").cursor.get();
        match seen {
            Ok(Some(at)) if i >= samples / 10 => out.push(at - t),
            Ok(Some(_)) => {}
            _ => missed += 1,
        }
    }
    out.sort();
    (out, missed)
}

// ------------------------------------------------------------------------------------------
// Baselines

/// Raw SQLite: the relay's `blobs` table and indexes, the relay's writer pragmas (WAL,
/// synchronous=NORMAL, wal_autocheckpoint and journal_size_limit from `SqliteConfig::default`),
/// 1 KiB payloads, 100 rows per transaction.
fn raw_sqlite(dir: &Path, rows: usize) -> f64 {
    let defaults = SqliteConfig::default();
    let conn = rusqlite::Connection::open(dir.join("raw.db")).unwrap();
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .unwrap();
    assert!(mode.eq_ignore_ascii_case("wal"));
    conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
    conn.pragma_update(
        None,
        "wal_autocheckpoint",
        i64::from(defaults.wal_autocheckpoint_pages),
    )
    .unwrap();
    conn.pragma_update(
        None,
        "journal_size_limit",
        i64::try_from(defaults.journal_size_limit_bytes).unwrap(),
    )
    .unwrap();
    // The relay's own schema: same row shape, same indexes.
    conn.execute_batch(sync_relay::SCHEMA).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let sender = [9u8; 32];
    let now = now_ms() as i64;
    let start = Instant::now();
    let mut cursor: i64 = 0;
    let mut done = 0;
    while done < rows {
        let n = (rows - done).min(100);
        let tx = conn.unchecked_transaction().unwrap();
        {
            let mut st = tx
                .prepare_cached(
                    "INSERT INTO blobs
                        (group_ref, cursor, blob_id, sender, size, stored_at, expires_at, payload)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .unwrap();
            for _ in 0..n {
                cursor += 1;
                let mut blob_id = [0u8; 16];
                rng.fill_bytes(&mut blob_id);
                let mut payload = vec![0u8; SEALED];
                rng.fill_bytes(&mut payload);
                st.execute(rusqlite::params![
                    1i64,
                    cursor,
                    &blob_id[..],
                    &sender[..],
                    SEALED as i64,
                    now,
                    now + 7 * 86_400_000,
                    &payload[..]
                ])
                .unwrap();
            }
        }
        tx.commit().unwrap();
        done += n;
    }
    rows as f64 / start.elapsed().as_secs_f64()
}

/// Client-side sealing alone (Ed25519 signature + XChaCha20-Poly1305), one core: µs per blob.
fn seal_cost(count: usize) -> f64 {
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    let keys = GroupKeys::derive(&GroupSecret::random(&mut rng));
    let key = keys
        .epoch_key(KeyEpoch::INITIAL)
        .expect("initial epoch key");
    let device = DeviceKey::random(&mut rng);
    let group = keys.group_id();
    let data = plaintext(0);
    let start = Instant::now();
    let mut total = 0usize;
    for _ in 0..count {
        let id = BlobId::random(&mut rng);
        let sealed = sync_crypto::seal(&mut rng, &key, &group, &device, &id, &data).expect("seal");
        total += sealed.len();
    }
    std::hint::black_box(total);
    start.elapsed().as_secs_f64() * 1e6 / count as f64
}

const ECHO_ALPN: &[u8] = b"/0k-sync-bench-echo/1";

async fn echo_endpoint(accept: bool) -> Endpoint {
    let mut b = Endpoint::builder(presets::Minimal)
        .secret_key(SecretKey::generate())
        .relay_mode(RelayMode::Disabled)
        .clear_address_lookup()
        .portmapper_config(PortmapperConfig::Disabled)
        .net_report_config(NetReportConfig::minimal())
        .clear_ip_transports()
        .bind_addr("127.0.0.1:0")
        .unwrap();
    if accept {
        b = b.alpns(vec![ECHO_ALPN.to_vec()]);
    }
    b.bind().await.unwrap()
}

/// Raw iroh: 64 B echo round trips on one bidirectional stream.
async fn iroh_echo(samples: usize) -> Vec<Duration> {
    let server = echo_endpoint(true).await;
    let saddr = server.bound_sockets()[0];
    let sid = server.id();
    let s2 = server.clone();
    tokio::spawn(async move {
        while let Some(inc) = s2.accept().await {
            tokio::spawn(async move {
                let Ok(conn) = inc.await else { return };
                let Ok((mut send, mut recv)) = conn.accept_bi().await else {
                    return;
                };
                let mut buf = [0u8; 64];
                while recv.read_exact(&mut buf).await.is_ok() {
                    if send.write_all(&buf).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let client = echo_endpoint(false).await;
    let conn = client
        .connect(EndpointAddr::new(sid).with_ip_addr(saddr), ECHO_ALPN)
        .await
        .unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let mut buf = [0u8; 64];
    let mut out = Vec::with_capacity(samples);
    for i in 0..samples + samples / 10 {
        let t = Instant::now();
        send.write_all(&[1u8; 64]).await.unwrap();
        recv.read_exact(&mut buf).await.unwrap();
        if i >= samples / 10 {
            out.push(t.elapsed());
        }
    }
    conn.close(0u32.into(), b"bye");
    client.close().await;
    server.close().await;
    out.sort();
    out
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Preloads `count` 1 KiB blobs into `group` through the relay's storage API, with up to 8192
/// pushes in flight so the writer commits them in large batches.
async fn preload(relay: &RelayHandle, group: GroupId, count: usize) -> f64 {
    let storage = relay.storage().clone();
    let mut rng = ChaCha20Rng::seed_from_u64(1234);
    let sender = DeviceId::from_bytes([7u8; 32]);
    let mut payload = vec![0u8; SEALED];
    rng.fill_bytes(&mut payload);
    let now = now_ms();
    let start = Instant::now();
    let mut window = VecDeque::new();
    for _ in 0..count {
        let mut id = [0u8; 16];
        rng.fill_bytes(&mut id);
        let reply = storage
            .push_queued(PushRequest {
                group,
                blob_id: BlobId::from_random_bytes(id),
                sender,
                payload: payload.clone(),
                ttl: TTL,
                now_ms: now,
            })
            .await
            .expect("preload queued");
        window.push_back(reply);
        if window.len() >= 8192 {
            window.pop_front().unwrap().await.expect("preload push");
        }
    }
    for r in window {
        r.await.expect("preload push");
    }
    count as f64 / start.elapsed().as_secs_f64()
}

async fn run() {
    let pushes = env_usize("BENCH_PUSHES", 20_000);
    let samples = env_usize("BENCH_SAMPLES", 2_000);
    let preload_n = env_usize("BENCH_PRELOAD", 1_000_000);
    let wall = Instant::now();
    println!("# 0k-sync relay end-to-end benchmark");
    println!(
        "blobs: {SEALED} B sealed ({PLAIN} B plaintext + {SEAL_OVERHEAD} B seal); relay in-process \
         on 127.0.0.1, real iroh, SQLite WAL synchronous=NORMAL in a tempdir; clients keep their \
         outbox in memory; relay rate limits off"
    );
    println!(
        "pushes per throughput run: {pushes}; latency samples: {samples}; preload: {preload_n}"
    );
    println!();

    // Baselines first (quiet machine).
    let raw_dir = tempfile::tempdir().unwrap();
    let raw_path = raw_dir.path().to_path_buf();
    let raw = tokio::task::spawn_blocking(move || raw_sqlite(&raw_path, pushes))
        .await
        .unwrap();
    drop(raw_dir);
    println!("[baseline] raw SQLite inserts (100 rows/txn): {raw:>10.0} rows/s");
    let seal_us = seal_cost(pushes);
    println!("[baseline] client seal of one blob (sign + AEAD):  {seal_us:>7.1} µs CPU");
    let echo = iroh_echo(samples).await;
    let (echo50, echo99) = (pct(&echo, 50.0), pct(&echo, 99.0));
    println!(
        "[baseline] raw iroh echo RTT 64 B:             p50 {:>7.1} µs  p99 {:>7.1} µs",
        us(echo50),
        us(echo99)
    );
    println!();

    // Relay on a fresh data dir.
    let dir = tempfile::tempdir().unwrap();
    let relay = start_relay(dir.path()).await;

    let g1 = material(1);
    let one = client(&relay, &g1).await;
    let tp1 = throughput(&relay, std::slice::from_ref(&one), pushes).await;
    println!("[1] push→ack throughput, 1 client:            {tp1:>10.0} pushes/s");

    let mut many = Vec::new();
    for k in 0..16u64 {
        many.push(client(&relay, &material(100 + k)).await);
    }
    let tp16 = throughput(&relay, &many, pushes / 16).await;
    println!("[1] push→ack throughput, 16 clients (own groups): {tp16:>6.0} pushes/s");
    for c in many {
        c.close().await;
    }

    let lat = push_latency(&one, samples).await;
    let (lat50, lat99) = (pct(&lat, 50.0), pct(&lat, 99.0));
    println!(
        "[2] idle push latency:                        p50 {:>7.1} µs  p99 {:>7.1} µs",
        us(lat50),
        us(lat99)
    );

    let b = client(&relay, &g1).await;
    let (nl, missed) = notify_latency(&one, &b, samples).await;
    let (n50, n99) = (pct(&nl, 50.0), pct(&nl, 99.0));
    println!(
        "[3] push(A)→notify(B) latency:                p50 {:>7.1} µs  p99 {:>7.1} µs  ({} samples, {missed} without a notify within 5 s)",
        us(n50),
        us(n99),
        nl.len()
    );
    b.close().await;
    one.close().await;
    relay.shutdown().await.unwrap();
    drop(dir);

    // A relay whose group already holds `preload_n` blobs, against an empty group, same run.
    let dir = tempfile::tempdir().unwrap();
    let relay = start_relay(dir.path()).await;
    let full = material(2);
    let full_id = GroupKeys::derive(&full.secret).group_id();
    let rate = preload(&relay, full_id, preload_n).await;
    println!("[4] preloaded {preload_n} blobs through the storage API at {rate:.0} blobs/s");
    let empty = material(3);
    let ce = client(&relay, &empty).await;
    let tp_empty_same = throughput(&relay, std::slice::from_ref(&ce), pushes).await;
    ce.close().await;
    let cf = client(&relay, &full).await;
    let tp_full = throughput(&relay, std::slice::from_ref(&cf), pushes).await;
    cf.close().await;
    relay.shutdown().await.unwrap();
    drop(dir);
    println!(
        "[4] push→ack throughput, 1 client, group holding {preload_n}: {tp_full:>8.0} pushes/s"
    );
    println!(
        "[4] push→ack throughput, 1 client, empty group in the same relay: {tp_empty_same:>5.0} pushes/s"
    );
    println!();

    let r_raw1 = tp1 / raw;
    let r_raw16 = tp16 / raw;
    let r_lat = us(lat99) / us(echo99);
    let r_full = tp_full / tp1;
    let r_full_same = tp_full / tp_empty_same;
    println!("## Ratios and targets");
    println!(
        "relay throughput / raw SQLite, 1 client:   {:>6.1} %   target ≥ 80 %   {}",
        r_raw1 * 100.0,
        verdict(r_raw1 >= 0.8)
    );
    println!(
        "relay throughput / raw SQLite, 16 clients: {:>6.1} %   target ≥ 80 %   {}",
        r_raw16 * 100.0,
        verdict(r_raw16 >= 0.8)
    );
    println!(
        "idle push p99: {:.1} µs = {:.1}× iroh RTT p99   target ≤ 1000 µs   {}",
        us(lat99),
        r_lat,
        verdict(lat99 <= Duration::from_millis(1))
    );
    println!(
        "push→notify p99: {:.1} µs = {:.1}× iroh RTT p99   target ≤ 1500 µs   {}",
        us(n99),
        us(n99) / us(echo99),
        verdict(n99 <= Duration::from_micros(1500) && missed == 0)
    );
    println!(
        "{preload_n}-blob group / empty group (fresh relay): {:>6.1} %   target ≥ 90 %   {}",
        r_full * 100.0,
        verdict(r_full >= 0.9)
    );
    println!(
        "{preload_n}-blob group / empty group (same relay):  {:>6.1} %   target ≥ 90 %   {}",
        r_full_same * 100.0,
        verdict(r_full_same >= 0.9)
    );
    println!();
    println!("total wall time: {:.1} s", wall.elapsed().as_secs_f64());
}

fn main() {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(run());
}
