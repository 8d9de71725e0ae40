//! The forwarding tasks: a listener for the clients, one upstream socket and reader per client,
//! and a scheduler per direction that sends each copy when it is due.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};
use tokio::net::UdpSocket;
use tokio::sync::{Notify, mpsc};
use tokio::task::AbortHandle;

use super::handle::{Inner, ProxyHandle};
use super::stats::{Counters, bump};
use super::{Direction, ImpairConfig, ImpairError, MAX_CLIENTS, MAX_DATAGRAM, ProxyStats, lock};

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

pub(super) struct Flow {
    socket: Arc<UdpSocket>,
    pub(super) reader: AbortHandle,
}

struct DirState {
    counters: Counters,
    /// When the rate-limited link is free again.
    link_free: Mutex<Instant>,
    queue: mpsc::UnboundedSender<Scheduled>,
}

pub(super) struct Shared {
    pub(super) config: Mutex<ImpairConfig>,
    rng: Mutex<ChaCha8Rng>,
    up: DirState,
    down: DirState,
    pub(super) flows: Mutex<HashMap<SocketAddr, Flow>>,
    listen: Arc<UdpSocket>,
    pub(super) upstream: SocketAddr,
    seq: AtomicU64,
    in_flight: AtomicU64,
    pub(super) changed: Notify,
}

impl Shared {
    fn dir(&self, d: Direction) -> &DirState {
        match d {
            Direction::Up => &self.up,
            Direction::Down => &self.down,
        }
    }

    pub(super) fn stats(&self) -> ProxyStats {
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

/// The UDP impairment proxy; see the [module documentation](super).
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
