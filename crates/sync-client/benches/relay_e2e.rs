//! End-to-end relay benchmark, deployment-shaped: the relay runs in **its own process** (this
//! bench re-executed as a child that runs the `sync-relay` library exactly as the binary does,
//! or the real `sync-relay` binary with `BENCH_RELAY_BIN=path`), on its real SQLite file
//! (tempdir, WAL, `synchronous=NORMAL`). This process is the load generator: one iroh endpoint
//! per device, real QUIC over 127.0.0.1, the real protocol (signed Hello, pipelined `Push`
//! frames up to the relay's `max_in_flight`), with blobs **sealed before the clock starts**
//! (sealing is the device's cost; it is measured and printed separately).
//!
//! Printed: push→ack throughput with 1 and 16 devices, idle push latency, push(A)→notify(B)
//! latency, throughput into a group holding `BENCH_PRELOAD` blobs vs an empty one; the same-run
//! baselines (raw SQLite inserts on the relay's schema and pragmas in transactions of 100, raw
//! iroh echo RTT, raw iroh pipelined 1 KiB request/ack throughput against an echo child
//! process); the relay process's CPU per push (from `/proc/<pid>/stat`, split between the
//! SQLite writer thread and the rest); the load average; the ratios and whether each target of
//! issue 3 is met. It reports; it never fails on a missed target.
//!
//! Run: `cargo bench -p sync-client --bench relay_e2e`.
//! Environment: `BENCH_PRELOAD` (blobs preloaded into the "full" group, default 1000000),
//! `BENCH_PUSHES` (pushes per throughput run, default 20000), `BENCH_SAMPLES` (latency samples,
//! default 2000), `BENCH_RELAY_BIN` (run this `sync-relay` binary instead of the library child).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_precision_loss,
    missing_docs
)]

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use iroh::endpoint::{
    Connection, NetReportConfig, PortmapperConfig, RecvStream, SendStream, presets,
};
use iroh::{Endpoint, EndpointAddr, EndpointId, RelayMode, SecretKey};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use sync_crypto::{DeviceKey, GroupKeys, GroupSecret, HelloChallenge, KeyEpoch, SEAL_OVERHEAD};
use sync_relay::{PushRequest, RelayConfig, SqliteConfig, SqliteStorage, Storage, StorageLimits};
use sync_types::{
    ALPN, BlobId, Cursor, DeviceId, FrameCodec, GroupId, HELLO_BINDING_LABEL, Hello, Message,
    PROTOCOL_VERSION, Payload, Push,
};
use tokio::io::AsyncReadExt as _;

/// Size of every sealed blob the relay stores.
const SEALED: usize = 1024;
/// Plaintext size that seals to [`SEALED`] bytes.
const PLAIN: usize = SEALED - SEAL_OVERHEAD;
const TTL: Duration = Duration::from_secs(7 * 86_400);
/// Pushes per device before each timed run (not timed).
const WARMUP: usize = 50;
/// Environment variable that makes this executable a child (`relay` or `echo`).
const CHILD_ENV: &str = "ZK_BENCH_CHILD";
const CHILD_DIR_ENV: &str = "ZK_BENCH_DIR";
const ECHO_ALPN: &[u8] = b"/0k-sync-bench-echo/1";
/// Echo child: frames with a body up to this size are echoed; larger ones get a short reply.
const ECHO_MAX: usize = 64;
/// Echo child's reply to a large frame (the size of a `PushAck` frame, 4-byte header included).
const ECHO_REPLY: usize = 52;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn now_secs() -> u64 {
    now_ms() / 1000
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
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

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

// ------------------------------------------------------------------------------------------
// CPU accounting from /proc

/// Clock ticks per second of `/proc/*/stat` (USER_HZ; 100 on Linux).
const TICKS: f64 = 100.0;

/// User + system CPU seconds of a whole process (every thread, dead ones included).
fn process_cpu(pid: &str) -> f64 {
    stat_cpu(&format!("/proc/{pid}/stat"))
}

fn stat_cpu(path: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(path) else {
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
    (tick(11) + tick(12)) as f64 / TICKS
}

/// On-CPU seconds per live thread of `pid`, keyed by thread id, with the thread's name
/// (from `/proc/<pid>/task/<tid>/schedstat`, nanosecond resolution).
fn thread_cpu(pid: &str) -> HashMap<String, (String, f64)> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for entry in dir.flatten() {
        let tid = entry.file_name().to_string_lossy().into_owned();
        let base = entry.path();
        let name = std::fs::read_to_string(base.join("comm"))
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        let ns = std::fs::read_to_string(base.join("schedstat"))
            .ok()
            .and_then(|s| {
                s.split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
            })
            .unwrap_or(0);
        out.insert(tid, (name, ns as f64 / 1e9));
    }
    out
}

/// On-CPU seconds of the calling thread (nanosecond resolution).
fn this_thread_cpu() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0.0, |ns| ns as f64 / 1e9)
}

/// A CPU snapshot of the relay (or echo) process and of this (load generator) process.
struct CpuMark {
    relay: f64,
    relay_threads: HashMap<String, (String, f64)>,
    generator: f64,
    generator_threads: HashMap<String, (String, f64)>,
    at: Instant,
}

impl CpuMark {
    fn take(relay_pid: &str) -> Self {
        Self {
            relay: process_cpu(relay_pid),
            relay_threads: thread_cpu(relay_pid),
            generator: process_cpu("self"),
            generator_threads: thread_cpu("self"),
            at: Instant::now(),
        }
    }
}

/// CPU seconds the threads whose name starts with `prefix` (all for "") used between two
/// snapshots (threads that ended in between are not counted; none do during a run).
fn threads_delta(
    a: &HashMap<String, (String, f64)>,
    b: &HashMap<String, (String, f64)>,
    prefix: &str,
) -> f64 {
    b.iter()
        .filter(|(_, (name, _))| name.starts_with(prefix))
        .map(|(tid, (_, t1))| t1 - a.get(tid).map_or(0.0, |(_, t)| *t))
        .sum()
}

/// CPU spent between two marks, per operation.
struct CpuUse {
    relay_us: f64,
    writer_us: f64,
    generator_us: f64,
    relay_cores: f64,
    generator_cores: f64,
}

fn cpu_use(a: &CpuMark, b: &CpuMark, ops: usize) -> CpuUse {
    let ops = ops.max(1) as f64;
    let secs = b.at.duration_since(a.at).as_secs_f64().max(1e-9);
    // Per-thread schedstat has nanosecond resolution; /proc/<pid>/stat (10 ms ticks, every
    // thread ever) is the fallback when the thread list is unavailable.
    let pick = |threads: f64, ticks: f64| if threads > 0.0 { threads } else { ticks };
    let relay = pick(
        threads_delta(&a.relay_threads, &b.relay_threads, ""),
        b.relay - a.relay,
    );
    let generator = pick(
        threads_delta(&a.generator_threads, &b.generator_threads, ""),
        b.generator - a.generator,
    );
    let writer = threads_delta(&a.relay_threads, &b.relay_threads, "relay-storage");
    CpuUse {
        relay_us: relay * 1e6 / ops,
        writer_us: writer * 1e6 / ops,
        generator_us: generator * 1e6 / ops,
        relay_cores: relay / secs,
        generator_cores: generator / secs,
    }
}

/// With `BENCH_PERF=<file prefix>`, a `perf record` of the relay process for the duration of
/// one run (for profiling; off by default).
struct Perf(Option<Child>);

impl Perf {
    fn start(pid: &str, label: &str) -> Self {
        let Ok(prefix) = std::env::var("BENCH_PERF") else {
            return Self(None);
        };
        let mut cmd = Command::new("perf");
        cmd.args(["record", "-q", "-F", "2999", "-p", pid, "-o"])
            .arg(format!("{prefix}-{label}.data"));
        if std::env::var_os("BENCH_PERF_CALLGRAPH").is_some() {
            cmd.args(["--call-graph", "dwarf,16384"]);
        }
        let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().ok();
        // perf needs a moment to attach.
        std::thread::sleep(Duration::from_millis(300));
        Self(child)
    }

    fn stop(self) {
        if let Some(mut c) = self.0 {
            let _ = Command::new("kill")
                .arg("-INT")
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
        }
    }
}

// ------------------------------------------------------------------------------------------
// Child processes (the relay, the echo server)

/// A child process serving on 127.0.0.1 (relay or echo), stopped with SIGTERM on drop.
struct Server {
    child: Child,
    pid: String,
    id: EndpointId,
    addrs: Vec<SocketAddr>,
    http: Option<SocketAddr>,
}

impl Server {
    /// Starts this executable as a child with `role`, or the real relay binary.
    fn spawn(role: &str, dir: &Path) -> Self {
        let relay_bin = std::env::var_os("BENCH_RELAY_BIN").filter(|_| role == "relay");
        let mut cmd = match &relay_bin {
            Some(bin) => {
                let mut c = Command::new(bin);
                c.env("SYNC_RELAY_DATA_DIR", dir)
                    .env("SYNC_RELAY_BIND", "127.0.0.1:0")
                    .env("SYNC_RELAY_HTTP_BIND", "127.0.0.1:0")
                    .env("SYNC_RELAY_SESSION_PUSH_RATE", "0")
                    .env("SYNC_RELAY_GLOBAL_PUSH_RATE", "0")
                    .env("SYNC_RELAY_GROUP_MAX_BLOBS", "100000000")
                    .env("SYNC_RELAY_GROUP_MAX_BYTES", (1u64 << 40).to_string())
                    .env("RUST_LOG", "warn");
                c
            }
            None => {
                let mut c = Command::new(std::env::current_exe().expect("own path"));
                c.env(CHILD_ENV, role).env(CHILD_DIR_ENV, dir);
                c
            }
        };
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start child process");
        let stdout = child.stdout.take().expect("child stdout");
        let mut id = None;
        let mut addrs = Vec::new();
        let mut http = None;
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("child output");
            if let Some(v) = line.strip_prefix("relay id:") {
                id = Some(EndpointId::from_str(v.trim()).expect("relay id"));
            } else if let Some(v) = line.strip_prefix("dial:") {
                let (_, addr) = v.trim().split_once('@').expect("dial line");
                addrs.push(addr.parse().expect("dial address"));
            } else if let Some(v) = line.strip_prefix("health:") {
                let v = v.trim().trim_start_matches("http://");
                http = Some(
                    v.trim_end_matches("/health")
                        .parse()
                        .expect("health address"),
                );
            } else if line.starts_with("data dir:") {
                break;
            }
        }
        Self {
            pid: child.id().to_string(),
            child,
            id: id.expect("child printed its id"),
            addrs,
            http,
        }
    }

    /// The relay's `/metrics` counter `name` (0 if absent).
    fn metric(&self, name: &str) -> u64 {
        let Some(http) = self.http else { return 0 };
        let Ok(mut s) = std::net::TcpStream::connect(http) else {
            return 0;
        };
        let _ = write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n"
        );
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        let key = format!("{}{name} ", sync_relay::METRIC_PREFIX);
        text.lines()
            .find_map(|l| l.strip_prefix(&key))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// SIGTERM, then wait (the relay drains and checkpoints).
    fn stop(mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(&self.pid).status();
        let _ = self.child.wait();
    }
}

/// The child side: `relay` runs the relay library as the `sync-relay` binary does (own
/// process, multi-threaded tokio runtime) and prints the binary's startup lines; `echo` runs a
/// bare iroh endpoint that answers frames. Both stop on SIGTERM.
fn child_main(role: &str) {
    let dir = PathBuf::from(std::env::var_os(CHILD_DIR_ENV).expect("child dir"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        match role {
            "relay" => {
                let mut config = RelayConfig::for_tests(&dir);
                // Measure the relay, not its rate limiter or quotas.
                config.session_push_rate = 0;
                config.ip_push_rate = 0;
                config.global_push_rate = 0;
                config.group_max_blobs = 100_000_000;
                config.group_max_bytes = 1 << 40;
                let relay = sync_relay::start(config).await.expect("relay starts");
                let id = relay.endpoint_id();
                let mut out = std::io::stdout().lock();
                writeln!(out, "relay id:   {id}").unwrap();
                for a in relay.direct_addrs() {
                    writeln!(out, "dial:       {id}@{a}").unwrap();
                }
                writeln!(out, "health:     http://{}/health", relay.http_addr()).unwrap();
                writeln!(out, "data dir:   {}", dir.display()).unwrap();
                out.flush().unwrap();
                drop(out);
                term.recv().await;
                relay.shutdown().await.expect("relay shutdown");
            }
            "echo" => {
                let ep = endpoint(SecretKey::generate(), Some(ECHO_ALPN)).await;
                let id = ep.id();
                let mut out = std::io::stdout().lock();
                writeln!(out, "relay id:   {id}").unwrap();
                for a in ep.bound_sockets() {
                    writeln!(out, "dial:       {id}@{a}").unwrap();
                }
                writeln!(out, "data dir:   -").unwrap();
                out.flush().unwrap();
                drop(out);
                let serve = async {
                    while let Some(inc) = ep.accept().await {
                        tokio::spawn(async move {
                            let Ok(conn) = inc.await else { return };
                            while let Ok((send, recv)) = conn.accept_bi().await {
                                tokio::spawn(echo_stream(send, recv));
                            }
                        });
                    }
                };
                tokio::select! {
                    () = serve => {}
                    _ = term.recv() => {}
                }
                ep.close().await;
            }
            other => panic!("unknown child role {other}"),
        }
    });
}

/// Echo server stream: reads whatever arrived, answers every complete frame (small frames are
/// echoed, large ones get a short ack-sized reply), all answers of one read in one write.
async fn echo_stream(mut send: SendStream, mut recv: RecvStream) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut out = BytesMut::new();
    loop {
        match recv.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        while buf.len() >= 4 {
            let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            if buf.len() < 4 + len {
                break;
            }
            let frame = buf.split_to(4 + len);
            if len <= ECHO_MAX {
                out.extend_from_slice(&frame);
            } else {
                out.extend_from_slice(&((ECHO_REPLY - 4) as u32).to_be_bytes());
                out.resize(out.len() + ECHO_REPLY - 4, 0);
            }
        }
        if !out.is_empty() {
            if send.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
    }
}

async fn endpoint(secret: SecretKey, alpn: Option<&[u8]>) -> Endpoint {
    let mut b = Endpoint::builder(presets::Minimal)
        .secret_key(secret)
        .relay_mode(RelayMode::Disabled)
        .clear_address_lookup()
        .portmapper_config(PortmapperConfig::Disabled)
        .net_report_config(NetReportConfig::minimal())
        .clear_ip_transports()
        .bind_addr("127.0.0.1:0")
        .unwrap();
    if let Some(alpn) = alpn {
        b = b.alpns(vec![alpn.to_vec()]);
    }
    b.bind().await.unwrap()
}

async fn dial(ep: &Endpoint, server: &Server, alpn: &[u8]) -> Connection {
    let addr = server
        .addrs
        .iter()
        .fold(EndpointAddr::new(server.id), |a, s| a.with_ip_addr(*s));
    ep.connect(addr, alpn).await.expect("connect")
}

// ------------------------------------------------------------------------------------------
// The load generator: one device = one iroh endpoint, one session, pre-sealed pushes

/// A group and the key material a device of it needs.
struct Group {
    keys: GroupKeys,
    id: GroupId,
}

fn group(seed: u64) -> Group {
    let keys = GroupKeys::derive(&GroupSecret::random(&mut ChaCha20Rng::seed_from_u64(seed)));
    let id = keys.group_id();
    Group { keys, id }
}

/// A device with an open session to the relay.
struct Device {
    _ep: Endpoint,
    conn: Connection,
    send: SendStream,
    recv: RecvStream,
    buf: BytesMut,
    codec: FrameCodec,
    window: usize,
}

impl Device {
    async fn open(relay: &Server, g: &Group, seed: u64) -> Self {
        let key = DeviceKey::random(&mut ChaCha20Rng::seed_from_u64(seed));
        let ep = endpoint(SecretKey::from_bytes(&key.secret_bytes()), None).await;
        let conn = dial(&ep, relay, ALPN).await;
        let mut binding = [0u8; 32];
        conn.export_keying_material(&mut binding, HELLO_BINDING_LABEL, b"")
            .expect("keying material");
        let (send, recv) = conn.open_bi().await.expect("open stream");
        let relay_id = *conn.remote_id().as_bytes();
        let device_id = DeviceId::from_bytes(*ep.id().as_bytes());
        let challenge = HelloChallenge::new(&binding, &relay_id, &device_id, &g.id);
        let hello = Message::Hello(Hello {
            request_id: 1,
            version: PROTOCOL_VERSION,
            device_name: format!("bench-{seed}"),
            group_id: g.id,
            last_cursor: Cursor::ZERO,
            auth_signature: g.keys.sign_hello(&challenge).0,
            admission_token: None,
        });
        let mut dev = Self {
            _ep: ep,
            conn,
            send,
            recv,
            buf: BytesMut::with_capacity(64 * 1024),
            codec: FrameCodec::default(),

            window: 1,
        };
        let frame = dev.codec.encode_to_bytes(&hello).unwrap();
        dev.send.write_all(&frame).await.unwrap();
        match dev.next().await {
            Message::Welcome(w) => {
                dev.codec = FrameCodec::new(w.limits.max_frame_bytes as usize);
                dev.window = w.limits.max_in_flight.max(1) as usize;
            }
            other => panic!("expected Welcome, got {other:?}"),
        }
        dev
    }

    /// The next frame from the relay.
    async fn next(&mut self) -> Message {
        loop {
            if let Some(m) = self.codec.decode(&mut self.buf).expect("relay frame") {
                return m;
            }
            let n = self.recv.read_buf(&mut self.buf).await.expect("read");
            assert!(n > 0, "relay closed the session");
        }
    }

    /// Reads until the `PushAck` of `request_id`; returns its cursor.
    async fn ack(&mut self, request_id: u64) -> u64 {
        loop {
            match self.next().await {
                Message::PushAck(a) if a.request_id == request_id => return a.cursor.get(),
                Message::PushAck(_) | Message::Notify(_) => {}
                Message::Error(e) => panic!("relay refused a push: {e:?}"),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// Pushes every frame pipelined (never more than the relay's `max_in_flight` unanswered)
    /// and returns when every one is acked.
    async fn blast(&mut self, frames: &[Bytes]) {
        let n = frames.len();
        let (mut sent, mut acked) = (0, 0);
        let mut out = BytesMut::with_capacity(self.window * (SEALED + 64));
        loop {
            // Take every ack that has arrived.
            while let Some(m) = self.codec.decode(&mut self.buf).expect("relay frame") {
                match m {
                    Message::PushAck(_) => acked += 1,
                    Message::Notify(_) => {}
                    Message::Error(e) => panic!("relay refused a push: {e:?}"),
                    other => panic!("unexpected {other:?}"),
                }
            }
            if acked == n {
                return;
            }
            // Refill the window, in one write.
            while sent < n && sent - acked < self.window {
                out.extend_from_slice(&frames[sent]);
                sent += 1;
            }
            if !out.is_empty() {
                self.send.write_all(&out).await.expect("write pushes");
                out.clear();
            }
            let r = self.recv.read_buf(&mut self.buf).await.expect("read");
            assert!(r > 0, "relay closed the session");
        }
    }

    async fn close(mut self) {
        let bye = Message::Bye(sync_types::Bye { reason: None });
        if let Ok(frame) = self.codec.encode_to_bytes(&bye) {
            let _ = self.send.write_all(&frame).await;
        }
        let _ = self.send.finish();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.conn.closed()).await;
        self.conn.close(0u32.into(), b"bye");
    }
}

/// Pre-sealed push frames: `n` blobs of `dev` for group `g`, request ids from `first_request`,
/// with their blob ids.
fn seal_pushes(
    g: &Group,
    dev: &DeviceKey,
    n: usize,
    first_request: u64,
    seed: u64,
) -> Vec<(Bytes, BlobId)> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let key = g
        .keys
        .epoch_key(KeyEpoch::INITIAL)
        .expect("initial epoch key");
    let codec = FrameCodec::default();
    let mut plain = vec![0u8; PLAIN];
    (0..n)
        .map(|i| {
            plain[..8].copy_from_slice(&(i as u64).to_le_bytes());
            // As `SyncClient` makes them: time-ordered to the second.
            let blob_id = BlobId::time_ordered(&mut rng, now_secs());
            let sealed =
                sync_crypto::seal(&mut rng, &key, &g.id, dev, &blob_id, &plain).expect("seal");
            assert_eq!(sealed.len(), SEALED);
            let push = Message::Push(Push {
                request_id: first_request + i as u64,
                blob_id,
                payload: Payload::from(sealed),
                ttl_secs: 0,
            });
            (codec.encode_to_bytes(&push).unwrap(), blob_id)
        })
        .collect()
}

fn frames(v: &[(Bytes, BlobId)]) -> Vec<Bytes> {
    v.iter().map(|(f, _)| f.clone()).collect()
}

/// What one throughput run measured.
struct Run {
    rate: f64,
    cpu: CpuUse,
    per_commit: f64,
}

impl Run {
    fn detail(&self) -> String {
        format!(
            "    (relay process CPU {:.1} µs/push, of which SQLite writer thread {:.1}; load generator {:.1} µs/push; \
             cores busy: relay {:.2}, generator {:.2}; writer {:.1} pushes/commit)",
            self.cpu.relay_us,
            self.cpu.writer_us,
            self.cpu.generator_us,
            self.cpu.relay_cores,
            self.cpu.generator_cores,
            self.per_commit
        )
    }
}

/// Durable push→ack throughput: every device pushes its frames pipelined; the clock stops when
/// the last push of every device is acked (each ack is sent only after its commit).
async fn throughput(
    relay: &Server,
    devices: Vec<(Device, Vec<Bytes>, Vec<Bytes>)>,
) -> (Run, Vec<Device>) {
    // Warm-up (not timed).
    let mut ready = Vec::new();
    for (mut d, warm, timed) in devices {
        d.blast(&warm).await;
        ready.push((d, timed));
    }
    let total: usize = ready.iter().map(|(_, f)| f.len()).sum();
    let c0 = relay.metric("storage_commits_total");
    let o0 = relay.metric("storage_ops_total");
    let perf = Perf::start(&relay.pid, &format!("{}dev-{total}", ready.len()));
    let m0 = CpuMark::take(&relay.pid);
    let start = Instant::now();
    let tasks: Vec<_> = ready
        .into_iter()
        .map(|(mut d, timed)| {
            tokio::spawn(async move {
                d.blast(&timed).await;
                d
            })
        })
        .collect();
    let mut devices = Vec::new();
    for t in tasks {
        devices.push(t.await.expect("device task"));
    }
    let elapsed = start.elapsed();
    let m1 = CpuMark::take(&relay.pid);
    perf.stop();
    let commits = relay
        .metric("storage_commits_total")
        .saturating_sub(c0)
        .max(1);
    let ops = relay.metric("storage_ops_total").saturating_sub(o0);
    let run = Run {
        rate: total as f64 / elapsed.as_secs_f64(),
        cpu: cpu_use(&m0, &m1, total),
        per_commit: ops as f64 / commits as f64,
    };
    (run, devices)
}

/// Idle push latency: one push at a time, from writing the frame to reading its `PushAck`.
async fn push_latency(
    dev: &mut Device,
    pushes: &[(Bytes, BlobId)],
    first_request: u64,
) -> Vec<Duration> {
    let warm = pushes.len() / 11;
    let mut out = Vec::with_capacity(pushes.len());
    for (i, (frame, _)) in pushes.iter().enumerate() {
        let t = Instant::now();
        dev.send.write_all(frame).await.unwrap();
        dev.ack(first_request + i as u64).await;
        if i >= warm {
            out.push(t.elapsed());
        }
    }
    out.sort();
    out
}

/// push(A)→notify(B): A pushes one blob at a time; the sample ends when B reads the `Notify`
/// carrying that blob's id.
async fn notify_latency(
    a: &mut Device,
    b: &mut Device,
    pushes: &[(Bytes, BlobId)],
    first_request: u64,
) -> (Vec<Duration>, usize) {
    let warm = pushes.len() / 11;
    let mut out = Vec::with_capacity(pushes.len());
    let mut missed = 0;
    for (i, (frame, blob_id)) in pushes.iter().enumerate() {
        let t = Instant::now();
        a.send.write_all(frame).await.unwrap();
        let wait_b = async {
            loop {
                if let Message::Notify(n) = b.next().await
                    && n.blob_id == *blob_id
                {
                    return Instant::now();
                }
            }
        };
        let (_, seen) = tokio::join!(
            a.ack(first_request + i as u64),
            tokio::time::timeout(Duration::from_secs(5), wait_b)
        );
        match seen {
            Ok(at) if i >= warm => out.push(at - t),
            Ok(_) => {}
            Err(_) => missed += 1,
        }
    }
    out.sort();
    (out, missed)
}

// ------------------------------------------------------------------------------------------
// Baselines

/// Raw SQLite: the relay's `blobs` table and indexes, the relay's writer pragmas (WAL,
/// synchronous=NORMAL, wal_autocheckpoint, journal_size_limit, mmap_size and cache_size from
/// `SqliteConfig::default`),
/// 1 KiB payloads, 100 rows per transaction. Returns rows/s and CPU µs per row.
fn raw_sqlite(dir: &Path, rows: usize) -> (f64, f64) {
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
    conn.pragma_update(
        None,
        "mmap_size",
        i64::try_from(defaults.mmap_size_bytes).unwrap(),
    )
    .unwrap();
    conn.pragma_update(
        None,
        "cache_size",
        -i64::try_from(defaults.cache_size_bytes / 1024).unwrap(),
    )
    .unwrap();
    // The relay's own schema: same row shape, same indexes.
    conn.execute_batch(sync_relay::SCHEMA).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let sender = [9u8; 32];
    let now = now_ms() as i64;
    let cpu0 = this_thread_cpu();
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
                // Blob ids as devices make them (time-ordered), as in the relay runs.
                let blob_id = *BlobId::time_ordered(&mut rng, now_secs()).as_bytes();
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
    let rate = rows as f64 / start.elapsed().as_secs_f64();
    let cpu = (this_thread_cpu() - cpu0) * 1e6 / rows as f64;
    (rate, cpu)
}

/// Raw iroh against the echo child: 64 B round trips on one stream.
async fn iroh_rtt(conn: &Connection, samples: usize) -> Vec<Duration> {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let mut frame = [1u8; ECHO_MAX];
    frame[..4].copy_from_slice(&((ECHO_MAX - 4) as u32).to_be_bytes());
    let mut buf = [0u8; ECHO_MAX];
    let mut out = Vec::with_capacity(samples);
    for i in 0..samples + samples / 10 {
        let t = Instant::now();
        send.write_all(&frame).await.unwrap();
        recv.read_exact(&mut buf).await.unwrap();
        if i >= samples / 10 {
            out.push(t.elapsed());
        }
    }
    let _ = send.finish();
    out.sort();
    out
}

/// Raw iroh against the echo child: 1 KiB-sealed-push-sized frames pipelined exactly like the
/// load generator's pushes (same window), one ack-sized reply each. The QUIC-only ceiling of
/// the relay's throughput, and the echo process's CPU per message.
async fn iroh_pipelined(
    echo: &Server,
    conn: &Connection,
    frame: &Bytes,
    n: usize,
    window: usize,
) -> Run {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    echo_blast(&mut send, &mut recv, frame, WARMUP, window).await;
    let m0 = CpuMark::take(&echo.pid);
    let start = Instant::now();
    echo_blast(&mut send, &mut recv, frame, n, window).await;
    let elapsed = start.elapsed();
    let m1 = CpuMark::take(&echo.pid);
    let _ = send.finish();
    Run {
        rate: n as f64 / elapsed.as_secs_f64(),
        cpu: cpu_use(&m0, &m1, n),
        per_commit: 0.0,
    }
}

async fn echo_blast(
    send: &mut SendStream,
    recv: &mut RecvStream,
    frame: &Bytes,
    count: usize,
    window: usize,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let (mut sent, mut acked_bytes) = (0usize, 0usize);
    let mut out = BytesMut::new();
    while acked_bytes < count * ECHO_REPLY {
        let acked = acked_bytes / ECHO_REPLY;
        while sent < count && sent - acked < window {
            out.extend_from_slice(frame);
            sent += 1;
        }
        if !out.is_empty() {
            send.write_all(&out).await.unwrap();
            out.clear();
        }
        let r = recv
            .read(&mut buf)
            .await
            .unwrap()
            .expect("echo stream open");
        acked_bytes += r;
    }
}

/// Preloads `count` 1 KiB blobs into `group` through the storage API on `dir` (before the
/// relay process starts on it), with up to 8192 pushes in flight so the writer commits them
/// in large batches.
async fn preload(dir: &Path, group: GroupId, count: usize) -> f64 {
    let storage = SqliteStorage::open(
        dir,
        SqliteConfig {
            limits: StorageLimits {
                max_group_blobs: 100_000_000,
                max_group_bytes: 1 << 40,
                ..StorageLimits::default()
            },
            ..SqliteConfig::default()
        },
    )
    .await
    .expect("open storage");
    let mut rng = ChaCha20Rng::seed_from_u64(1234);
    let sender = DeviceId::from_bytes([7u8; 32]);
    let mut payload = vec![0u8; SEALED];
    rng.fill_bytes(&mut payload);
    let now = now_ms();
    let start = Instant::now();
    let mut window = VecDeque::new();
    // A group that filled up over the past week: device ids (time-ordered) from a week ago to
    // a second ago, in the order they arrived.
    let week = TTL.as_secs();
    let start_secs = now_secs().saturating_sub(week);
    for i in 0..count {
        let secs = start_secs + (i as u64 * (week - 1)) / count.max(1) as u64;
        let reply = storage
            .push_queued(PushRequest {
                group,
                blob_id: BlobId::time_ordered(&mut rng, secs),
                sender,
                payload: payload.clone(),
                ttl: TTL,
                now_ms: now,
                group_quota_bytes: None,
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
    let rate = count as f64 / start.elapsed().as_secs_f64();
    storage.close().await.expect("close storage");
    rate
}

async fn run() {
    let pushes = env_usize("BENCH_PUSHES", 20_000);
    let samples = env_usize("BENCH_SAMPLES", 2_000);
    let preload_n = env_usize("BENCH_PRELOAD", 1_000_000);
    let wall = Instant::now();
    let relay_kind = match std::env::var("BENCH_RELAY_BIN") {
        Ok(bin) => format!("the sync-relay binary {bin}"),
        Err(_) => "the sync-relay library in a child process".into(),
    };
    println!("# 0k-sync relay end-to-end benchmark");
    println!(
        "blobs: {SEALED} B sealed ({PLAIN} B plaintext + {SEAL_OVERHEAD} B seal), sealed before \
         the clock starts; relay: {relay_kind}, own process, real iroh QUIC on 127.0.0.1, SQLite \
         WAL synchronous=NORMAL in a tempdir, rate limits off; load generator: this process, one \
         iroh endpoint per device, pipelined pushes up to the relay's max_in_flight"
    );
    println!(
        "pushes per throughput run: {pushes}; latency samples: {samples}; preload: {preload_n}; \
         cores: {}; load average at start: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg()
    );
    println!();

    // Pre-seal every blob of the run (the device's cost, measured here).
    let g1 = group(1);
    let many: Vec<Group> = (0..16).map(|k| group(100 + k)).collect();
    let empty = group(3);
    let full = group(2);
    let dev_key = |seed: u64| DeviceKey::random(&mut ChaCha20Rng::seed_from_u64(seed));
    let per16 = pushes / 16;
    let lat_n = samples + samples / 10;
    let seal_start = Instant::now();
    let seal_cpu0 = this_thread_cpu();
    let one_warm = seal_pushes(&g1, &dev_key(1000), WARMUP, 2, 1);
    let one_timed = seal_pushes(&g1, &dev_key(1000), pushes, 2 + WARMUP as u64, 2);
    let lat_pushes = seal_pushes(&g1, &dev_key(1000), lat_n, 2 + (WARMUP + pushes) as u64, 3);
    let notify_pushes = seal_pushes(
        &g1,
        &dev_key(1000),
        lat_n,
        2 + (WARMUP + pushes + lat_n) as u64,
        4,
    );
    let many_pushes: Vec<_> = many
        .iter()
        .enumerate()
        .map(|(k, g)| {
            let d = dev_key(2000 + k as u64);
            (
                seal_pushes(g, &d, WARMUP, 2, 10 + k as u64),
                seal_pushes(g, &d, per16, 2 + WARMUP as u64, 50 + k as u64),
            )
        })
        .collect();
    let empty_pushes = (
        seal_pushes(&empty, &dev_key(3000), WARMUP, 2, 5),
        seal_pushes(&empty, &dev_key(3000), pushes, 2 + WARMUP as u64, 6),
    );
    let full_pushes = (
        seal_pushes(&full, &dev_key(4000), WARMUP, 2, 7),
        seal_pushes(&full, &dev_key(4000), pushes, 2 + WARMUP as u64, 8),
    );
    let sealed_n = WARMUP * 19 + pushes * 3 + per16 * 16 + 2 * lat_n;
    let seal_us = (this_thread_cpu() - seal_cpu0) * 1e6 / sealed_n as f64;
    let seal_wall = seal_start.elapsed().as_secs_f64() * 1e6 / sealed_n as f64;
    println!(
        "[device] sealing one blob (Ed25519 sign + XChaCha20-Poly1305), done before the runs: \
         {seal_us:.1} µs CPU ({seal_wall:.1} µs wall), {sealed_n} blobs"
    );

    // Baselines.
    let raw_dir = tempfile::tempdir().unwrap();
    let raw_path = raw_dir.path().to_path_buf();
    let (raw, raw_cpu) = tokio::task::spawn_blocking(move || raw_sqlite(&raw_path, pushes))
        .await
        .unwrap();
    drop(raw_dir);
    println!(
        "[baseline] raw SQLite inserts (100 rows/txn):      {raw:>8.0} rows/s  ({raw_cpu:.1} µs CPU/row)"
    );
    let echo_dir = tempfile::tempdir().unwrap();
    let echo = Server::spawn("echo", echo_dir.path());
    let echo_ep = endpoint(SecretKey::generate(), None).await;
    let echo_conn = dial(&echo_ep, &echo, ECHO_ALPN).await;
    let rtt = iroh_rtt(&echo_conn, samples).await;
    let (rtt50, rtt99) = (pct(&rtt, 50.0), pct(&rtt, 99.0));
    println!(
        "[baseline] raw iroh echo RTT 64 B (echo process):  p50 {:>7.1} µs  p99 {:>7.1} µs",
        us(rtt50),
        us(rtt99)
    );
    let window = sync_relay::RelayConfig::default().max_in_flight as usize;
    let raw_quic = iroh_pipelined(&echo, &echo_conn, &one_timed[0].0, pushes, window).await;
    println!(
        "[baseline] raw iroh pipelined 1 KiB frames → ack-sized replies, 1 stream: {:>8.0} msgs/s",
        raw_quic.rate
    );
    println!(
        "    (echo process CPU {:.1} µs/msg; load generator {:.1} µs/msg; cores busy: echo {:.2}, generator {:.2})",
        raw_quic.cpu.relay_us,
        raw_quic.cpu.generator_us,
        raw_quic.cpu.relay_cores,
        raw_quic.cpu.generator_cores
    );
    echo_conn.close(0u32.into(), b"bye");
    echo_ep.close().await;
    echo.stop();
    drop(echo_dir);
    println!();

    // Relay process on a fresh data dir.
    let dir = tempfile::tempdir().unwrap();
    let relay = Server::spawn("relay", dir.path());
    let a = Device::open(&relay, &g1, 1000).await;
    let (tp1, mut one) = throughput(&relay, vec![(a, frames(&one_warm), frames(&one_timed))]).await;
    let mut a = one.pop().unwrap();
    println!(
        "[1] push→ack throughput, 1 device:                {:>8.0} pushes/s",
        tp1.rate
    );
    println!("{}", tp1.detail());

    let mut devs = Vec::new();
    for (k, (g, (warm, timed))) in many.iter().zip(&many_pushes).enumerate() {
        let d = Device::open(&relay, g, 2000 + k as u64).await;
        devs.push((d, frames(warm), frames(timed)));
    }
    let (tp16, devs) = throughput(&relay, devs).await;
    println!(
        "[1] push→ack throughput, 16 devices (own groups): {:>8.0} pushes/s",
        tp16.rate
    );
    println!("{}", tp16.detail());
    for d in devs {
        d.close().await;
    }

    let first = 2 + (WARMUP + pushes) as u64;
    let lat = push_latency(&mut a, &lat_pushes, first).await;
    let (lat50, lat99) = (pct(&lat, 50.0), pct(&lat, 99.0));
    println!(
        "[2] idle push latency:                        p50 {:>7.1} µs  p99 {:>7.1} µs",
        us(lat50),
        us(lat99)
    );

    let mut b = Device::open(&relay, &g1, 1001).await;
    let (nl, missed) = notify_latency(&mut a, &mut b, &notify_pushes, first + lat_n as u64).await;
    let (n50, n99) = (pct(&nl, 50.0), pct(&nl, 99.0));
    println!(
        "[3] push(A)→notify(B) latency:                p50 {:>7.1} µs  p99 {:>7.1} µs  ({} samples, {missed} without a notify within 5 s)",
        us(n50),
        us(n99),
        nl.len()
    );
    b.close().await;
    a.close().await;
    relay.stop();
    drop(dir);

    // A relay whose "full" group already holds `preload_n` blobs, and an empty group in it.
    let dir = tempfile::tempdir().unwrap();
    let rate = preload(dir.path(), full.id, preload_n).await;
    println!("[4] preloaded {preload_n} blobs through the storage API at {rate:.0} blobs/s");
    let relay = Server::spawn("relay", dir.path());
    let ce = Device::open(&relay, &empty, 3000).await;
    let (tp_empty, d) = throughput(
        &relay,
        vec![(ce, frames(&empty_pushes.0), frames(&empty_pushes.1))],
    )
    .await;
    for d in d {
        d.close().await;
    }
    let cf = Device::open(&relay, &full, 4000).await;
    let (tp_full, d) = throughput(
        &relay,
        vec![(cf, frames(&full_pushes.0), frames(&full_pushes.1))],
    )
    .await;
    for d in d {
        d.close().await;
    }
    relay.stop();
    drop(dir);
    println!(
        "[4] push→ack throughput, 1 device, empty group in that relay:  {:>8.0} pushes/s",
        tp_empty.rate
    );
    println!("{}", tp_empty.detail());
    println!(
        "[4] push→ack throughput, 1 device, group holding {preload_n}: {:>8.0} pushes/s",
        tp_full.rate
    );
    println!("{}", tp_full.detail());
    println!();

    let r_raw1 = tp1.rate / raw;
    let r_raw16 = tp16.rate / raw;
    let r_full = tp_full.rate / tp1.rate;
    let r_full_same = tp_full.rate / tp_empty.rate;
    println!("## Ratios and targets (load average now: {})", loadavg());
    println!(
        "relay throughput / raw SQLite, 1 device:    {:>6.1} %   target ≥ 80 %   {}",
        r_raw1 * 100.0,
        verdict(r_raw1 >= 0.8)
    );
    println!(
        "relay throughput / raw SQLite, 16 devices:  {:>6.1} %   target ≥ 80 %   {}",
        r_raw16 * 100.0,
        verdict(r_raw16 >= 0.8)
    );
    println!(
        "relay throughput / raw iroh pipelined echo: {:>6.1} % (1 device), {:.1} % (16)   (no target: the QUIC-only ceiling)",
        tp1.rate / raw_quic.rate * 100.0,
        tp16.rate / raw_quic.rate * 100.0
    );
    println!(
        "relay CPU per push / raw SQLite CPU per row: {:.1}× (1 device), {:.1}× (16); echo process CPU per msg / relay CPU per push: {:.0} % (1 device)",
        tp1.cpu.relay_us / raw_cpu,
        tp16.cpu.relay_us / raw_cpu,
        raw_quic.cpu.relay_us / tp1.cpu.relay_us * 100.0
    );
    println!(
        "idle push p99: {:.1} µs = {:.1}× iroh RTT p99   target ≤ 1000 µs   {}",
        us(lat99),
        us(lat99) / us(rtt99),
        verdict(lat99 <= Duration::from_millis(1))
    );
    println!(
        "push→notify p99: {:.1} µs = {:.1}× iroh RTT p99   target ≤ 1500 µs   {}",
        us(n99),
        us(n99) / us(rtt99),
        verdict(n99 <= Duration::from_micros(1500) && missed == 0)
    );
    println!(
        "{preload_n}-blob group / empty group (1-device run of the fresh relay): {:>6.1} %   target ≥ 90 %   {}",
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
    if let Ok(role) = std::env::var(CHILD_ENV) {
        child_main(&role);
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(run());
}
