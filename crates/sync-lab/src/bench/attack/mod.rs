//! The relay under attack (`sync-stress bench --attack`): 20 hostile connections, four of each
//! kind, run against the relay while the 16-device throughput run and the idle latency run are
//! repeated; every attacker reconnects until those runs are over, then all of them are stopped
//! (tasks ended, endpoints closed).
//!
//! - **silent**: the handshake and then nothing (no stream), or a stream and half a frame
//!   header: the pre-auth hold, until the relay's deadline closes them ([`silent`]);
//! - **stream flood**: a session, then 200 extra streams tried and 1.2 MB written into each
//!   one the relay lets open ([`streams`]);
//! - **pulls never read**: a session of a group holding a blob of the largest size, 300
//!   pipelined pulls of it and nothing read ([`pulls`]);
//! - **garbage before Hello**: random bytes, a `0xFFFFFFF0` length prefix, a bad signature, a
//!   `Hello` replayed from another connection ([`garbage`]);
//! - **invite-lookup sweep**: random lookup ids as first frames and pipelined in sessions
//!   ([`sweep`]).
//!
//! Each attacker has its own endpoint and its own group (as any stranger can). They run in
//! this process on a runtime of their own with one worker thread ([`ATTACKER_THREAD`]): at most
//! one core, whose use is printed apart from the load generator's. They connect from 127.0.0.2
//! while the devices use 127.0.0.1 (the whole 127.0.0.0/8 is loopback on Linux), so the relay's
//! per-address limits count them apart, as they would count a stranger apart from a household;
//! where 127.0.0.2 cannot be bound they share 127.0.0.1 with the devices (and so every
//! per-address limit: pre-auth connections, sessions, new groups, invite lookups), and the
//! output says so.

mod attacker;
mod counts;
mod garbage;
mod pulls;
mod readings;
mod silent;
mod streams;
mod sweep;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use iroh::{Endpoint, SecretKey};
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::cpu::ATTACKER_THREAD;
use super::relay::BenchRelay;
use super::session::{DEVICES_IP, endpoint_on};
use super::{BenchError, joined};
use crate::soak::read_rss_kb;
use attacker::Attacker;
use counts::Counts;
use readings::{Counters, RSS_EVERY, RssPeak, mib};

/// Attackers of each kind.
const PER_KIND: usize = 4;
/// Attackers in all.
pub(super) const ATTACKERS: usize = PER_KIND * Kind::ALL.len();
/// The attackers' loopback address, when it can be bound.
const ATTACKERS_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
/// Longest wait for every attacker's first connection before the runs begin.
const START_WAIT: Duration = Duration::from_secs(60);
/// Longest wait for the attackers to end once told to stop (then they are aborted).
const STOP_WAIT: Duration = Duration::from_secs(5);
/// Longest wait for an attacker's endpoint to close.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// First seed of the attackers' groups (apart from the devices' groups).
const SEED: u64 = 9000;

/// A kind of attacker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Silent,
    Streams,
    Pulls,
    Garbage,
    Sweep,
}

impl Kind {
    const ALL: [Self; 5] = [
        Self::Silent,
        Self::Streams,
        Self::Pulls,
        Self::Garbage,
        Self::Sweep,
    ];

    /// Its name in the output.
    fn name(self) -> &'static str {
        match self {
            Self::Silent => "silent",
            Self::Streams => "stream flood",
            Self::Pulls => "pulls never read",
            Self::Garbage => "garbage before Hello",
            Self::Sweep => "invite-lookup sweep",
        }
    }

    /// What each of its connections does.
    fn does(self) -> &'static str {
        match self {
            Self::Silent => {
                "no stream, or a stream and half a frame header, until the relay closes it"
            }
            Self::Streams => {
                "a session, then 100 bidirectional and 100 unidirectional extra streams tried, 1.2 MB written into each one opened"
            }
            Self::Pulls => {
                "a session of a group holding a blob of the largest size, 300 pipelined pulls of it, nothing read, dropped after 3 s"
            }
            Self::Garbage => {
                "1,000 random bytes, a 0xFFFFFFF0 length prefix, a Hello with a bad signature, or a Hello replayed from another connection"
            }
            Self::Sweep => "random lookup ids: one as a first frame, or 32 pipelined in a session",
        }
    }

    /// Runs one attacker of this kind until cancelled.
    async fn attack(self, a: &mut Attacker) {
        match self {
            Self::Silent => silent::attack(a).await,
            Self::Streams => streams::attack(a).await,
            Self::Pulls => pulls::attack(a).await,
            Self::Garbage => garbage::attack(a).await,
            Self::Sweep => sweep::attack(a).await,
        }
    }
}

/// The loopback address the attackers use: [`ATTACKERS_IP`] if this machine lets it be bound,
/// else the devices' own.
fn attackers_ip() -> IpAddr {
    match UdpSocket::bind(SocketAddr::new(ATTACKERS_IP, 0)) {
        Ok(_) => ATTACKERS_IP,
        Err(_) => DEVICES_IP,
    }
}

/// The attackers' runtime: one worker thread, named [`ATTACKER_THREAD`].
fn attackers_runtime() -> Result<Runtime, BenchError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(1)
        .thread_name(ATTACKER_THREAD)
        .enable_all()
        .build()
        .map_err(BenchError::io("start the attackers' runtime"))
}

/// The attackers while they run, and the relay's state when they started.
pub(super) struct Attack {
    /// Where the attackers run (taken when they stop).
    runtime: Option<Runtime>,
    source: IpAddr,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    endpoints: Vec<Endpoint>,
    counts: Vec<(Kind, Arc<Counts>)>,
    rss: RssPeak,
    rss_before_kib: u64,
    before: Counters,
    started: Instant,
    /// Attackers whose first connection was up before the runs began.
    connected: usize,
}

impl Attack {
    /// Starts every attacker against `relay` and returns once each has connected (or after
    /// [`START_WAIT`]).
    pub(super) async fn start(relay: &BenchRelay) -> Result<Self, BenchError> {
        let source = attackers_ip();
        let before = Counters::parse(&relay.metrics_text().await.unwrap_or_default());
        let rss_before_kib = read_rss_kb(relay.pid).unwrap_or(0);
        let (stop, stopped) = watch::channel(false);
        let (first_tx, mut first) = mpsc::channel(ATTACKERS);
        let runtime = attackers_runtime()?;
        let rt = runtime.handle().clone();
        let mut attack = Self {
            runtime: Some(runtime),
            source,
            stop,
            tasks: Vec::with_capacity(ATTACKERS),
            endpoints: Vec::with_capacity(ATTACKERS),
            counts: Vec::with_capacity(Kind::ALL.len()),
            rss: RssPeak::start(relay.pid),
            rss_before_kib,
            before,
            started: Instant::now(),
            connected: 0,
        };
        let mut seed = SEED;
        for kind in Kind::ALL {
            let counts = Arc::new(Counts::default());
            for n in 0..PER_KIND {
                let bound = rt
                    .spawn(endpoint_on(source, SecretKey::generate(), None))
                    .await;
                let ep = joined(bound, "binding an attacker's endpoint")??;
                attack.endpoints.push(ep.clone());
                let mut a = Attacker::new(
                    n,
                    ep,
                    relay.peer.clone(),
                    seed,
                    Arc::clone(&counts),
                    first_tx.clone(),
                );
                seed += 1;
                let mut stopped = stopped.clone();
                attack.tasks.push(rt.spawn(async move {
                    tokio::select! {
                        _ = stopped.wait_for(|s| *s) => {}
                        () = kind.attack(&mut a) => {}
                    }
                }));
            }
            attack.counts.push((kind, counts));
        }
        drop(first_tx);
        attack.started = Instant::now();
        let connected = &mut attack.connected;
        let _ = tokio::time::timeout(START_WAIT, async {
            while *connected < ATTACKERS && first.recv().await.is_some() {
                *connected += 1;
            }
        })
        .await;
        Ok(attack)
    }

    /// What runs and from where, for the output.
    pub(super) fn banner(&self) -> Vec<String> {
        let whence = if self.source == ATTACKERS_IP {
            format!(
                "from {}, the devices from {DEVICES_IP} (both loopback): the relay's \
                 per-address limits count attackers and devices apart",
                self.source
            )
        } else {
            format!(
                "from {DEVICES_IP}, the devices' own address ({ATTACKERS_IP} could not be \
                 bound): the relay's per-address limits count attackers and devices together"
            )
        };
        let mut lines = vec![format!(
            "[attack] {ATTACKERS} hostile connections {whence}; {PER_KIND} of each kind, each \
             reconnecting until the runs below end; {} of them connected before the runs \
             began; they run in this process on one thread of their own (at most one core, \
             counted apart below)",
            self.connected
        )];
        for kind in Kind::ALL {
            lines.push(format!("    {}: {}", kind.name(), kind.does()));
        }
        lines
    }

    /// Stops every attacker (ended, aborted if it does not end in time) and closes their
    /// endpoints; returns the lines of what they achieved and what the relay recorded.
    pub(super) async fn stop(mut self, relay: &BenchRelay) -> Vec<String> {
        let ran = self.started.elapsed();
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + STOP_WAIT;
        for task in std::mem::take(&mut self.tasks) {
            let abort = task.abort_handle();
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                abort.abort();
            }
        }
        if let Some(runtime) = self.runtime.take() {
            let closing: Vec<_> = std::mem::take(&mut self.endpoints)
                .into_iter()
                .map(|ep| {
                    runtime.spawn(async move {
                        let _ = tokio::time::timeout(CLOSE_WAIT, ep.close()).await;
                    })
                })
                .collect();
            for closed in closing {
                let _ = closed.await;
            }
            let _ = tokio::task::spawn_blocking(move || runtime.shutdown_timeout(STOP_WAIT)).await;
        }
        let peak = self.rss.peak_kib();
        let after = Counters::parse(&relay.metrics_text().await.unwrap_or_default());
        let rss_after = read_rss_kb(relay.pid).unwrap_or(0);

        let connections: u64 = self.counts.iter().map(|(_, c)| c.get("connections")).sum();
        let mut lines = vec![format!(
            "[attack] the attackers ran {:.1} s and made {connections} connections ({:.0}/s); \
             per kind:",
            ran.as_secs_f64(),
            per_second(connections, ran)
        )];
        for (kind, counts) in &self.counts {
            lines.push(format!("    {}: {}", kind.name(), counts.summary()));
        }
        lines.push(format!(
            "[attack] the relay's counters during the attack: {}",
            after.since(&self.before)
        ));
        lines.push(format!(
            "[attack] relay RSS: {:.1} MiB before the attack, peak {:.1} MiB during it (sampled \
             every {} ms), {:.1} MiB after the attackers stopped",
            mib(self.rss_before_kib),
            mib(peak),
            RSS_EVERY.as_millis(),
            mib(rss_after)
        ));
        lines
    }
}

impl Drop for Attack {
    /// An attack dropped without [`Attack::stop`] (a run failed) ends its attackers at once.
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// `n` per second over `d`.
#[allow(clippy::cast_precision_loss)]
fn per_second(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}
