//! A user-space UDP impairment proxy: QUIC runs over UDP and this kernel has no `netem`, so
//! every degraded-network test and campaign goes through this.
//!
//! [`Proxy::start`] listens on a loopback address and forwards every datagram to an upstream
//! loopback address. Each client source address gets its own upstream socket, so the upstream
//! (a relay) sees one distinct peer per client, and its answers go back to the right client.
//! Each direction ("up": client → upstream, "down": upstream → client) has its own
//! [`DirectionConfig`]: delay, jitter, loss, reorder, duplicate, rate (bytes/s) and partition.
//! The configuration can be changed through the [`ProxyHandle`] while traffic flows, and the
//! handle counts packets per direction ([`DirectionStats`]).
//!
//! Model, per direction, for every datagram received:
//! 1. partitioned → dropped (`dropped_partition`);
//! 2. lost with probability `loss` (`dropped_loss`);
//! 3. with probability `duplicate`, a second copy is scheduled too (`duplicated`);
//! 4. each copy waits for the rate limiter (a link of `rate` bytes/s serialising packets one
//!    after another; a packet that would wait longer than `queue` is tail-dropped,
//!    `dropped_queue`), then for `delay` ± uniform `jitter` (never below zero), plus
//!    `reorder_gap` with probability `reorder` (`reordered`: later packets overtake it);
//! 5. when it is due it is sent — unless the direction is partitioned by then, which drops it as
//!    well, so a partition stops traffic at once, packets already in flight included.
//!
//! Packets with different due times leave in due-time order, so jitter larger than the gap
//! between packets reorders them (as with `netem`). Decisions come from one ChaCha8 generator,
//! seeded with [`ImpairConfig::seed`] for reproducible tests.
//!
//! Only loopback addresses are accepted: this is a lab tool for one machine.

pub mod control;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::net::UdpSocket;
use tokio::sync::{Notify, mpsc};
use tokio::task::AbortHandle;

/// Largest datagram the proxy forwards (UDP's maximum payload).
const MAX_DATAGRAM: usize = 65_535;

/// Most client source addresses tracked at once; datagrams from further clients are dropped
/// (`dropped_error`).
pub const MAX_CLIENTS: usize = 4096;

/// Errors of the proxy.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImpairError {
    /// The proxy only runs between loopback addresses.
    #[error("{0} is not a loopback address (the proxy is loopback only)")]
    NotLoopback(SocketAddr),
    /// A setting is out of range.
    #[error("invalid setting: {0}")]
    Invalid(String),
    /// Binding the listening socket failed.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// [`ProxyHandle::wait_for`] gave up.
    #[error("timed out after {0:?} waiting for the proxy counters")]
    Timeout(Duration),
}

/// Impairments of one direction. `Default` forwards everything at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DirectionConfig {
    /// Fixed one-way delay added to every packet.
    #[serde(with = "millis", rename = "delay_ms")]
    pub delay: Duration,
    /// Uniform jitter: each packet's delay is `delay` ± up to this much (never below zero).
    #[serde(with = "millis", rename = "jitter_ms")]
    pub jitter: Duration,
    /// Probability (0..=1) that a packet is dropped.
    pub loss: f64,
    /// Probability (0..=1) that a packet is held back by `reorder_gap` so later ones overtake it.
    pub reorder: f64,
    /// Extra delay of a reordered packet.
    #[serde(with = "millis", rename = "reorder_gap_ms")]
    pub reorder_gap: Duration,
    /// Probability (0..=1) that a packet is sent twice.
    pub duplicate: f64,
    /// Bandwidth in bytes per second (`None` = unlimited).
    pub rate: Option<u64>,
    /// Longest a packet may wait for the rate limiter before it is tail-dropped.
    #[serde(with = "millis", rename = "queue_ms")]
    pub queue: Duration,
    /// Drop everything (both new packets and those still in flight).
    pub partition: bool,
}

impl Default for DirectionConfig {
    fn default() -> Self {
        Self {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: 0.0,
            reorder: 0.0,
            reorder_gap: Duration::from_millis(10),
            duplicate: 0.0,
            rate: None,
            queue: Duration::from_millis(500),
            partition: false,
        }
    }
}

impl DirectionConfig {
    /// Checks ranges: probabilities in 0..=1, rate above zero.
    pub fn validate(&self) -> Result<(), ImpairError> {
        for (name, p) in [
            ("loss", self.loss),
            ("reorder", self.reorder),
            ("duplicate", self.duplicate),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(ImpairError::Invalid(format!(
                    "{name} must be between 0 and 1, got {p}"
                )));
            }
        }
        if self.rate == Some(0) {
            return Err(ImpairError::Invalid(
                "rate must be above 0 bytes/s".to_string(),
            ));
        }
        Ok(())
    }
}

/// The proxy's configuration: one [`DirectionConfig`] per direction and the generator's seed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImpairConfig {
    /// Client → upstream.
    pub up: DirectionConfig,
    /// Upstream → client.
    pub down: DirectionConfig,
    /// Seed of the decision generator (`None`: seeded from the clock). Read at start only.
    pub seed: Option<u64>,
}

impl ImpairConfig {
    /// The same impairments in both directions.
    pub fn symmetric(dir: DirectionConfig) -> Self {
        Self {
            up: dir.clone(),
            down: dir,
            seed: None,
        }
    }

    /// The same configuration with a fixed seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Checks both directions.
    pub fn validate(&self) -> Result<(), ImpairError> {
        self.up.validate()?;
        self.down.validate()
    }

    fn dir(&self, d: Direction) -> &DirectionConfig {
        match d {
            Direction::Up => &self.up,
            Direction::Down => &self.down,
        }
    }
}

/// A direction through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Client → upstream.
    Up,
    /// Upstream → client.
    Down,
}

/// Packet counters of one direction (a snapshot).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectionStats {
    /// Datagrams received.
    pub received: u64,
    /// Bytes received.
    pub received_bytes: u64,
    /// Datagrams sent on (duplicates included).
    pub forwarded: u64,
    /// Bytes sent on.
    pub forwarded_bytes: u64,
    /// Extra copies scheduled.
    pub duplicated: u64,
    /// Copies held back by `reorder_gap`.
    pub reordered: u64,
    /// Dropped by `loss`.
    pub dropped_loss: u64,
    /// Dropped by a partition (on arrival or while in flight).
    pub dropped_partition: u64,
    /// Tail-dropped by the rate limiter's queue.
    pub dropped_queue: u64,
    /// Dropped because sending failed, the datagram was too large or too many clients.
    pub dropped_error: u64,
}

impl DirectionStats {
    /// All drops together.
    pub fn dropped(&self) -> u64 {
        self.dropped_loss + self.dropped_partition + self.dropped_queue + self.dropped_error
    }
}

/// Counters of the whole proxy (a snapshot).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyStats {
    /// Client → upstream.
    pub up: DirectionStats,
    /// Upstream → client.
    pub down: DirectionStats,
    /// Client source addresses seen (each has its own upstream socket).
    pub clients: usize,
    /// Copies scheduled but not sent or dropped yet.
    pub in_flight: u64,
}

#[derive(Default)]
struct Counters {
    received: AtomicU64,
    received_bytes: AtomicU64,
    forwarded: AtomicU64,
    forwarded_bytes: AtomicU64,
    duplicated: AtomicU64,
    reordered: AtomicU64,
    dropped_loss: AtomicU64,
    dropped_partition: AtomicU64,
    dropped_queue: AtomicU64,
    dropped_error: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> DirectionStats {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DirectionStats {
            received: g(&self.received),
            received_bytes: g(&self.received_bytes),
            forwarded: g(&self.forwarded),
            forwarded_bytes: g(&self.forwarded_bytes),
            duplicated: g(&self.duplicated),
            reordered: g(&self.reordered),
            dropped_loss: g(&self.dropped_loss),
            dropped_partition: g(&self.dropped_partition),
            dropped_queue: g(&self.dropped_queue),
            dropped_error: g(&self.dropped_error),
        }
    }
}

fn bump(a: &AtomicU64, n: u64) {
    a.fetch_add(n, Ordering::Relaxed);
}

/// Where a scheduled copy goes.
enum Target {
    /// Through a client's own upstream socket (connected to the upstream).
    Upstream(Arc<UdpSocket>),
    /// Through the listening socket to a client.
    Client(SocketAddr),
}

struct Scheduled {
    due: Instant,
    seq: u64,
    data: Arc<[u8]>,
    target: Target,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

struct Flow {
    socket: Arc<UdpSocket>,
    reader: AbortHandle,
}

struct DirState {
    counters: Counters,
    /// When the rate-limited link is free again.
    link_free: Mutex<Instant>,
    queue: mpsc::UnboundedSender<Scheduled>,
}

struct Shared {
    config: Mutex<ImpairConfig>,
    rng: Mutex<ChaCha8Rng>,
    up: DirState,
    down: DirState,
    flows: Mutex<HashMap<SocketAddr, Flow>>,
    listen: Arc<UdpSocket>,
    upstream: SocketAddr,
    seq: AtomicU64,
    in_flight: AtomicU64,
    changed: Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind; keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn dir(&self, d: Direction) -> &DirState {
        match d {
            Direction::Up => &self.up,
            Direction::Down => &self.down,
        }
    }

    fn stats(&self) -> ProxyStats {
        ProxyStats {
            up: self.up.counters.snapshot(),
            down: self.down.counters.snapshot(),
            clients: lock(&self.flows).len(),
            in_flight: self.in_flight.load(Ordering::Relaxed),
        }
    }

    fn partitioned(&self, d: Direction) -> bool {
        lock(&self.config).dir(d).partition
    }

    /// Applies the impairments to one received datagram and schedules its copies.
    fn admit(&self, d: Direction, data: &[u8], target: impl Fn() -> Target) {
        let state = self.dir(d);
        let c = &state.counters;
        bump(&c.received, 1);
        bump(&c.received_bytes, data.len() as u64);
        let cfg = lock(&self.config).dir(d).clone();
        if cfg.partition {
            bump(&c.dropped_partition, 1);
            self.changed.notify_waiters();
            return;
        }
        let now = Instant::now();
        let mut plans = Vec::with_capacity(2);
        {
            let mut rng = lock(&self.rng);
            if cfg.loss > 0.0 && unit(&mut rng) < cfg.loss {
                drop(rng);
                bump(&c.dropped_loss, 1);
                self.changed.notify_waiters();
                return;
            }
            let copies = if cfg.duplicate > 0.0 && unit(&mut rng) < cfg.duplicate {
                2
            } else {
                1
            };
            for _ in 0..copies {
                let mut delay = cfg.delay;
                if !cfg.jitter.is_zero() {
                    let j = cfg.jitter.as_secs_f64() * (2.0 * unit(&mut rng) - 1.0);
                    delay = Duration::from_secs_f64((delay.as_secs_f64() + j).max(0.0));
                }
                let reordered = cfg.reorder > 0.0 && unit(&mut rng) < cfg.reorder;
                if reordered {
                    delay += cfg.reorder_gap;
                }
                plans.push((delay, reordered));
            }
        }
        if plans.len() == 2 {
            bump(&c.duplicated, 1);
        }
        let data: Arc<[u8]> = Arc::from(data);
        for (delay, reordered) in plans {
            let mut start = now;
            if let Some(rate) = cfg.rate {
                let mut free = lock(&state.link_free);
                let begin = (*free).max(now);
                if begin.duration_since(now) > cfg.queue {
                    bump(&c.dropped_queue, 1);
                    continue;
                }
                let tx = Duration::from_secs_f64(data.len() as f64 / rate as f64);
                *free = begin + tx;
                start = begin + tx;
            }
            if reordered {
                bump(&c.reordered, 1);
            }
            let item = Scheduled {
                due: start + delay,
                seq: self.seq.fetch_add(1, Ordering::Relaxed),
                data: Arc::clone(&data),
                target: target(),
            };
            self.in_flight.fetch_add(1, Ordering::Relaxed);
            if state.queue.send(item).is_err() {
                self.in_flight.fetch_sub(1, Ordering::Relaxed);
                bump(&c.dropped_error, 1);
            }
        }
        self.changed.notify_waiters();
    }

    async fn send(&self, d: Direction, item: Scheduled) {
        let c = &self.dir(d).counters;
        if self.partitioned(d) {
            bump(&c.dropped_partition, 1);
        } else {
            let sent = match &item.target {
                Target::Upstream(sock) => sock.send(&item.data).await,
                Target::Client(addr) => self.listen.send_to(&item.data, *addr).await,
            };
            match sent {
                Ok(_) => {
                    bump(&c.forwarded, 1);
                    bump(&c.forwarded_bytes, item.data.len() as u64);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "impair: send failed");
                    bump(&c.dropped_error, 1);
                }
            }
        }
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.changed.notify_waiters();
    }
}

/// A uniform number in [0, 1).
fn unit(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// The UDP impairment proxy; see the [module documentation](self).
#[derive(Debug)]
pub struct Proxy;

impl Proxy {
    /// Binds `listen` (port 0 = any) and starts forwarding to `upstream` with `config`.
    /// Both must be loopback addresses. Must be called inside a tokio runtime.
    pub async fn start(
        listen: SocketAddr,
        upstream: SocketAddr,
        config: ImpairConfig,
    ) -> Result<ProxyHandle, ImpairError> {
        for addr in [listen, upstream] {
            if !addr.ip().is_loopback() {
                return Err(ImpairError::NotLoopback(addr));
            }
        }
        config.validate()?;
        let socket = UdpSocket::bind(listen)
            .await
            .map_err(|source| ImpairError::Bind {
                addr: listen,
                source,
            })?;
        let local = socket.local_addr().map_err(|source| ImpairError::Bind {
            addr: listen,
            source,
        })?;
        let seed = config.seed.unwrap_or_else(clock_seed);
        let (up_tx, up_rx) = mpsc::unbounded_channel();
        let (down_tx, down_rx) = mpsc::unbounded_channel();
        let now = Instant::now();
        let shared = Arc::new(Shared {
            config: Mutex::new(config),
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
            up: DirState {
                counters: Counters::default(),
                link_free: Mutex::new(now),
                queue: up_tx,
            },
            down: DirState {
                counters: Counters::default(),
                link_free: Mutex::new(now),
                queue: down_tx,
            },
            flows: Mutex::new(HashMap::new()),
            listen: Arc::new(socket),
            upstream,
            seq: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            changed: Notify::new(),
        });
        let tasks = vec![
            tokio::spawn(scheduler(Arc::clone(&shared), Direction::Up, up_rx)).abort_handle(),
            tokio::spawn(scheduler(Arc::clone(&shared), Direction::Down, down_rx)).abort_handle(),
            tokio::spawn(listener(Arc::clone(&shared))).abort_handle(),
        ];
        tracing::debug!(%local, %upstream, "impair: proxy started");
        Ok(ProxyHandle {
            inner: Arc::new(Inner {
                shared,
                local,
                tasks,
            }),
        })
    }
}

fn clock_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (u64::from(std::process::id()) << 32)
}

/// Receives from clients, creating one upstream socket per client source address.
async fn listener(shared: Arc<Shared>) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, from) = match shared.listen.recv_from(&mut buf).await {
            Ok(v) => v,
            Err(e) => {
                // ICMP errors surface here on some systems; they are not fatal.
                tracing::debug!(error = %e, "impair: recv failed");
                continue;
            }
        };
        let socket = match flow_socket(&shared, from).await {
            Some(s) => s,
            None => {
                bump(&shared.up.counters.received, 1);
                bump(&shared.up.counters.received_bytes, n as u64);
                bump(&shared.up.counters.dropped_error, 1);
                continue;
            }
        };
        shared.admit(Direction::Up, &buf[..n], || {
            Target::Upstream(Arc::clone(&socket))
        });
    }
}

async fn flow_socket(shared: &Arc<Shared>, from: SocketAddr) -> Option<Arc<UdpSocket>> {
    if let Some(flow) = lock(&shared.flows).get(&from) {
        return Some(Arc::clone(&flow.socket));
    }
    if lock(&shared.flows).len() >= MAX_CLIENTS {
        return None;
    }
    let bind_ip = match shared.upstream.ip() {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
    };
    let socket = match UdpSocket::bind(SocketAddr::new(bind_ip, 0)).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "impair: cannot bind an upstream socket");
            return None;
        }
    };
    if let Err(e) = socket.connect(shared.upstream).await {
        tracing::warn!(error = %e, "impair: cannot connect an upstream socket");
        return None;
    }
    let socket = Arc::new(socket);
    let reader = tokio::spawn(upstream_reader(
        Arc::clone(shared),
        Arc::clone(&socket),
        from,
    ))
    .abort_handle();
    lock(&shared.flows).insert(
        from,
        Flow {
            socket: Arc::clone(&socket),
            reader,
        },
    );
    Some(socket)
}

/// Receives the upstream's answers for one client.
async fn upstream_reader(shared: Arc<Shared>, socket: Arc<UdpSocket>, client: SocketAddr) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        match socket.recv(&mut buf).await {
            Ok(n) => shared.admit(Direction::Down, &buf[..n], || Target::Client(client)),
            Err(e) => {
                // E.g. ECONNREFUSED while the upstream is down: keep listening.
                tracing::debug!(error = %e, "impair: upstream recv failed");
                tokio::task::yield_now().await;
            }
        }
    }
}

/// Sends scheduled copies of one direction when they are due, in due-time order.
async fn scheduler(shared: Arc<Shared>, d: Direction, mut rx: mpsc::UnboundedReceiver<Scheduled>) {
    let mut heap: BinaryHeap<Reverse<Scheduled>> = BinaryHeap::new();
    loop {
        // Send everything that is due.
        let now = Instant::now();
        while heap.peek().is_some_and(|Reverse(top)| top.due <= now) {
            if let Some(Reverse(item)) = heap.pop() {
                shared.send(d, item).await;
            }
        }
        let next_due = heap.peek().map(|Reverse(top)| top.due);
        tokio::select! {
            item = rx.recv() => match item {
                Some(item) => heap.push(Reverse(item)),
                None => return,
            },
            () = sleep_until(next_due) => {}
        }
    }
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await,
        None => std::future::pending().await,
    }
}

struct Inner {
    shared: Arc<Shared>,
    local: SocketAddr,
    tasks: Vec<AbortHandle>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        for flow in lock(&self.shared.flows).values() {
            flow.reader.abort();
        }
    }
}

/// Controls a running [`Proxy`]: change its configuration, read its counters, stop it. Cheap to
/// clone; the proxy stops when the last clone is dropped (or on [`ProxyHandle::shutdown`]).
#[derive(Clone)]
pub struct ProxyHandle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ProxyHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyHandle")
            .field("listen", &self.inner.local)
            .field("upstream", &self.inner.shared.upstream)
            .finish_non_exhaustive()
    }
}

impl ProxyHandle {
    /// The address clients send to.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local
    }

    /// The address datagrams are forwarded to.
    pub fn upstream(&self) -> SocketAddr {
        self.inner.shared.upstream
    }

    /// The current configuration.
    pub fn config(&self) -> ImpairConfig {
        lock(&self.inner.shared.config).clone()
    }

    /// Replaces the configuration (the seed is only read at start). Applies to the next
    /// packet; a partition also drops the packets in flight.
    pub fn set_config(&self, config: ImpairConfig) -> Result<(), ImpairError> {
        config.validate()?;
        *lock(&self.inner.shared.config) = config;
        self.inner.shared.changed.notify_waiters();
        Ok(())
    }

    /// Changes the configuration in place; refused (and not applied) when the result is
    /// invalid.
    pub fn update(&self, f: impl FnOnce(&mut ImpairConfig)) -> Result<(), ImpairError> {
        let mut next = self.config();
        f(&mut next);
        self.set_config(next)
    }

    /// Partitions both directions: nothing crosses until [`ProxyHandle::heal`].
    pub fn partition(&self) {
        let mut c = lock(&self.inner.shared.config);
        c.up.partition = true;
        c.down.partition = true;
        drop(c);
        self.inner.shared.changed.notify_waiters();
    }

    /// Ends a partition of both directions.
    pub fn heal(&self) {
        let mut c = lock(&self.inner.shared.config);
        c.up.partition = false;
        c.down.partition = false;
        drop(c);
        self.inner.shared.changed.notify_waiters();
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ProxyStats {
        self.inner.shared.stats()
    }

    /// Waits until `pred` holds for the counters (checked on every counter change), for at
    /// most `timeout`; returns the snapshot that satisfied it.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&ProxyStats) -> bool,
    ) -> Result<ProxyStats, ImpairError> {
        let shared = &self.inner.shared;
        let wait = async {
            loop {
                let notified = shared.changed.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let s = shared.stats();
                if pred(&s) {
                    return s;
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| ImpairError::Timeout(timeout))
    }

    /// Stops forwarding (all clones stop working); sockets close when the tasks end.
    pub fn shutdown(&self) {
        for t in &self.inner.tasks {
            t.abort();
        }
        for flow in lock(&self.inner.shared.flows).drain() {
            flow.1.reader.abort();
        }
    }
}

/// Serde helpers: durations as (fractional) milliseconds.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64() * 1000.0)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let ms = f64::deserialize(d)?;
        if !ms.is_finite() || !(0.0..=3_600_000.0).contains(&ms) {
            return Err(serde::de::Error::custom(
                "milliseconds must be between 0 and 3600000",
            ));
        }
        Ok(Duration::from_secs_f64(ms / 1000.0))
    }
}
