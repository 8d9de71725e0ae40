//! The benchmark from start to end: seal, baselines, the runs against a fresh relay (and those
//! runs again under attack), the runs against a relay holding the preload, then ratios and
//! targets; every figure printed as soon as it is measured.

use std::io::Write;
use std::time::{Duration, Instant};

use iroh::SecretKey;

use super::attack::Attack;
use super::content::{self, ContentFigures};
use super::cpu::loadavg;
use super::echo::ECHO_ALPN;
use super::measure::{Load, Profile, Run, notify_latency, push_latency, throughput};
use super::plan::{DEVICE_A, DEVICE_B, DEVICE_EMPTY, DEVICE_FULL, DEVICE_MANY, MANY, Plan, Pushes};
use super::preload::preload;
use super::quic_baseline::{EchoProcess, pipelined, rtt};
use super::relay::BenchRelay;
use super::rotation::{self, Section};
use super::sealed::{Group, frames};
use super::session::{Device, endpoint};
use super::targets::{AttackFigures, Figures, target_lines};
use super::{BenchConfig, BenchError, PLAIN, SEALED, joined, scale_out, sqlite_baseline};
use crate::stats::percentile;

/// Lines to the output, flushed one by one (a full run takes minutes).
pub(super) struct Printer<'a> {
    out: &'a mut (dyn Write + Send),
}

impl<'a> Printer<'a> {
    /// Lines to `out`.
    pub(super) fn new(out: &'a mut (dyn Write + Send)) -> Self {
        Self { out }
    }

    /// One line, flushed.
    pub(super) fn line(&mut self, text: impl AsRef<str>) -> Result<(), BenchError> {
        writeln!(self.out, "{}", text.as_ref())
            .and_then(|()| self.out.flush())
            .map_err(BenchError::io("write the report"))
    }

    /// A throughput figure and its CPU line.
    fn run(&mut self, label: &str, run: &Run) -> Result<(), BenchError> {
        self.line(format!("{label} {:>8.0} pushes/s", run.rate))?;
        self.line(run.detail())
    }
}

/// p50 and p99 of sorted durations, in µs.
fn p50_p99(sorted: &[Duration]) -> (f64, f64) {
    let us: Vec<f64> = sorted.iter().map(|d| d.as_secs_f64() * 1e6).collect();
    (
        percentile(&us, 0.50).unwrap_or(0.0),
        percentile(&us, 0.99).unwrap_or(0.0),
    )
}

/// A device's load: its session, warm-up frames and timed frames.
fn load(device: Device, pushes: &Pushes) -> Load {
    (device, frames(&pushes.warm), frames(&pushes.timed))
}

async fn close_all(devices: Vec<Device>) {
    for d in devices {
        d.close().await;
    }
}

/// A temporary directory for one relay's data or the raw SQLite baseline.
pub(super) fn temp_dir(what: &str) -> Result<tempfile::TempDir, BenchError> {
    tempfile::Builder::new()
        .prefix("sync-bench-")
        .tempdir()
        .map_err(BenchError::io(format!(
            "create a temporary directory for {what}"
        )))
}

/// What a run measured, for the JSON report: the relay runs' figures (absent when the run was
/// the large content section alone) and the large content section's.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Report {
    /// Cores of this machine.
    pub cores: usize,
    /// The figures the ratios and targets were computed from.
    pub figures: Option<Figures>,
    /// The large content section, when the run had it.
    pub content: Option<ContentFigures>,
}

/// Runs the whole benchmark and prints every figure to `out`; returns the figures (those the
/// ratios and targets were computed from, and the large content section's).
pub async fn run(config: &BenchConfig, out: &mut (dyn Write + Send)) -> Result<Report, BenchError> {
    config.validate()?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    if let Some(content) = config.content.as_ref().filter(|c| c.only) {
        let mut p = Printer::new(out);
        let wall = Instant::now();
        p.line("# 0k-sync large content benchmark")?;
        p.line("")?;
        let section = content::Section {
            relay_bin: &config.relay_bin,
            sizes: &content.sizes,
        };
        let figures = content::run(&section, &mut p).await?;
        p.line("")?;
        p.line(format!(
            "total wall time: {:.1} s",
            wall.elapsed().as_secs_f64()
        ))?;
        return Ok(Report {
            cores,
            figures: None,
            content: Some(figures),
        });
    }
    let (f, content) = run_all(config, out).await?;
    Ok(Report {
        cores,
        figures: Some(f),
        content,
    })
}

async fn run_all(
    config: &BenchConfig,
    out: &mut (dyn Write + Send),
) -> Result<(Figures, Option<ContentFigures>), BenchError> {
    let mut p = Printer::new(out);
    let wall = Instant::now();
    p.line("# 0k-sync relay end-to-end benchmark")?;
    p.line(format!(
        "blobs: {SEALED} B sealed ({PLAIN} B plaintext + {} B seal), sealed before the clock \
         starts; relay: the sync-relay binary {}, own process, real iroh QUIC on 127.0.0.1, SQLite \
         WAL synchronous=NORMAL in a temporary directory, rate limits off; load generator: this \
         process, one iroh endpoint per device, pipelined pushes up to the relay's max_in_flight",
        SEALED - PLAIN,
        config.relay_bin.display()
    ))?;
    p.line(format!(
        "pushes per throughput run: {}; latency samples: {}; preload: {}; cores: {}; load \
         average at start: {}",
        config.pushes,
        config.samples,
        config.preload,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg()
    ))?;
    p.line("")?;

    let (pushes, samples, attack) = (config.pushes, config.samples, config.attack);
    let plan = joined(
        tokio::task::spawn_blocking(move || Plan::seal(pushes, samples, attack)).await,
        "sealing",
    )??;
    p.line(format!(
        "[device] sealing one blob (Ed25519 sign + XChaCha20-Poly1305), done before the runs: \
         {:.1} µs CPU ({:.1} µs wall), {} blobs",
        plan.seal_cpu_us, plan.seal_wall_us, plan.sealed
    ))?;

    let mut bench = Bench {
        config,
        profile: Profile {
            prefix: config.perf_prefix.as_deref(),
            callgraph: config.perf_callgraph,
        },
        plan,
        f: Figures {
            preload: config.preload,
            ..Figures::default()
        },
        p,
    };
    bench.baselines().await?;
    bench.p.line("")?;
    bench.fresh_relay().await?;
    bench.preloaded_relay().await?;
    if !config.rotation_sizes.is_empty() {
        bench.p.line("")?;
        let section = Section::new(&config.relay_bin, &config.rotation_sizes, config.rotations);
        rotation::run(&section, &mut bench.p).await?;
    }
    if let Some(sizes) = config.scale_out {
        bench.p.line("")?;
        let section = scale_out::Section {
            relay_bin: &config.relay_bin,
            pushes: sizes.pushes,
            samples: config.samples,
            kills: sizes.kills,
        };
        scale_out::run(&section, &mut bench.p).await?;
    }
    let mut content_figures = None;
    if let Some(content) = &config.content {
        bench.p.line("")?;
        let section = content::Section {
            relay_bin: &config.relay_bin,
            sizes: &content.sizes,
        };
        content_figures = Some(content::run(&section, &mut bench.p).await?);
    }
    let Bench { f, mut p, .. } = bench;
    p.line("")?;

    p.line(format!(
        "## Ratios and this project's targets (load average now: {})",
        loadavg()
    ))?;
    for line in target_lines(&f) {
        p.line(line)?;
    }
    p.line("")?;
    p.line(format!(
        "total wall time: {:.1} s",
        wall.elapsed().as_secs_f64()
    ))?;
    Ok((f, content_figures))
}

/// A run in progress: what it does, what it pushes, what it measured so far, where it prints.
struct Bench<'a> {
    config: &'a BenchConfig,
    profile: Profile<'a>,
    plan: Plan,
    f: Figures,
    p: Printer<'a>,
}

impl Bench<'_> {
    /// Raw SQLite inserts, then the echo process: RTT and pipelined throughput.
    async fn baselines(&mut self) -> Result<(), BenchError> {
        let raw_dir = temp_dir("the raw SQLite baseline")?;
        let raw_path = raw_dir.path().to_path_buf();
        let rows = self.config.pushes;
        let raw = joined(
            tokio::task::spawn_blocking(move || sqlite_baseline::measure(&raw_path, rows)).await,
            "the raw SQLite baseline",
        )??;
        drop(raw_dir);
        (self.f.raw_sqlite_rate, self.f.raw_sqlite_cpu_us) = (raw.rate, raw.cpu_us);
        self.p.line(format!(
            "[baseline] raw SQLite inserts (100 rows/txn):      {:>8.0} rows/s  ({:.1} µs CPU/row)",
            raw.rate, raw.cpu_us
        ))?;

        let echo = EchoProcess::start(self.config).await?;
        let ep = endpoint(SecretKey::generate(), None).await?;
        let conn = echo.peer.dial(&ep, ECHO_ALPN).await?;
        let (rtt50, rtt99) = p50_p99(&rtt(&conn, self.config.samples).await?);
        self.f.echo_rtt_p99_us = rtt99;
        self.p.line(format!(
            "[baseline] raw iroh echo RTT 64 B (echo process):  p50 {rtt50:>7.1} µs  p99 {rtt99:>7.1} µs"
        ))?;
        let window = sync_relay::RelayConfig::default().max_in_flight as usize;
        let frame = self
            .plan
            .one
            .timed
            .first()
            .map(|s| s.frame.clone())
            .unwrap_or_default();
        let quic = pipelined(echo.pid, &conn, &frame, self.config.pushes, window).await?;
        (self.f.echo_rate, self.f.echo_cpu_us) = (quic.rate, quic.cpu.server_us);
        self.p.line(format!(
            "[baseline] raw iroh pipelined 1 KiB frames → ack-sized replies, 1 stream: {:>8.0} msgs/s",
            quic.rate
        ))?;
        self.p.line(format!(
            "    (echo process CPU {:.1} µs/msg; load generator {:.1} µs/msg; cores busy: echo {:.2}, generator {:.2})",
            quic.cpu.server_us, quic.cpu.generator_us, quic.cpu.server_cores, quic.cpu.generator_cores
        ))?;
        conn.close(0u32.into(), b"bye");
        ep.close().await;
        echo.stop().await;
        Ok(())
    }

    /// Runs `[1]`–`[3]` against a relay on a fresh data dir, then (with `--attack`) the runs
    /// under attack against the same relay.
    async fn fresh_relay(&mut self) -> Result<(), BenchError> {
        let dir = temp_dir("the relay")?;
        let relay = BenchRelay::start(&self.config.relay_bin, dir.path()).await?;
        let plan = &self.plan;

        let a = Device::open(&relay.peer, &plan.main, DEVICE_A).await?;
        let (one, mut back) =
            throughput(&relay, vec![load(a, &plan.one)], &self.profile, "1dev").await?;
        let mut a = back
            .pop()
            .ok_or_else(|| BenchError::Protocol("device A went missing".into()))?;
        (self.f.one_device_rate, self.f.one_device_cpu_us) = (one.rate, one.cpu.server_us);
        self.p
            .run("[1] push→ack throughput, 1 device:               ", &one)?;

        let mut loads = Vec::with_capacity(MANY);
        for ((g, pushes), seed) in plan.many.iter().zip(DEVICE_MANY..) {
            loads.push(load(Device::open(&relay.peer, g, seed).await?, pushes));
        }
        let (many, devices) = throughput(&relay, loads, &self.profile, "16dev").await?;
        close_all(devices).await;
        (self.f.sixteen_devices_rate, self.f.sixteen_devices_cpu_us) =
            (many.rate, many.cpu.server_us);
        self.p
            .run("[1] push→ack throughput, 16 devices (own groups):", &many)?;

        let latencies = push_latency(&mut a, &plan.latency, plan.latency_first).await?;
        let (lat50, lat99) = p50_p99(&latencies);
        self.f.idle_p99_us = lat99;
        self.p.line(format!(
            "[2] idle push latency:                        p50 {lat50:>7.1} µs  p99 {lat99:>7.1} µs"
        ))?;

        let mut b = Device::open(&relay.peer, &plan.main, DEVICE_B).await?;
        let (nl, missed) = notify_latency(&mut a, &mut b, &plan.notify, plan.notify_first).await?;
        let (n50, n99) = p50_p99(&nl);
        (self.f.notify_p99_us, self.f.notify_missed) = (n99, missed);
        self.p.line(format!(
            "[3] push(A)→notify(B) latency:                p50 {n50:>7.1} µs  p99 {n99:>7.1} µs  ({} samples, {missed} without a notify within 5 s)",
            nl.len()
        ))?;
        b.close().await;
        a.close().await;
        if self.config.attack {
            let attack = Attack::start(&relay).await?;
            for line in attack.banner() {
                self.p.line(line)?;
            }
            let measured = self.under_attack(&relay).await;
            for line in attack.stop(&relay).await {
                self.p.line(line)?;
            }
            measured?;
        }
        relay.stop().await;
        Ok(())
    }

    /// The 16-device throughput run and the idle latency run again, against the same relay,
    /// while it is attacked (new blobs; the devices and A connect under attack).
    async fn under_attack(&mut self, relay: &BenchRelay) -> Result<(), BenchError> {
        let Some(attacked) = &self.plan.attacked else {
            return Ok(());
        };
        let mut loads = Vec::with_capacity(MANY);
        for (((g, _), pushes), seed) in self.plan.many.iter().zip(&attacked.many).zip(DEVICE_MANY..)
        {
            loads.push(load(Device::open(&relay.peer, g, seed).await?, pushes));
        }
        let (many, devices) = throughput(relay, loads, &self.profile, "16dev-attack").await?;
        close_all(devices).await;
        self.p.run(
            "[attack] push→ack throughput, 16 devices (own groups):",
            &many,
        )?;
        self.p.line(format!(
            "    (quiet run: {:.0} pushes/s; under attack {:.1} % of it)",
            self.f.sixteen_devices_rate,
            100.0 * many.rate / self.f.sixteen_devices_rate.max(1e-9)
        ))?;

        let mut a = Device::open(&relay.peer, &self.plan.main, DEVICE_A).await?;
        let latencies = push_latency(&mut a, &attacked.latency, attacked.latency_first).await;
        a.close().await;
        let (lat50, lat99) = p50_p99(&latencies?);
        self.p.line(format!(
            "[attack] idle push latency:                   p50 {lat50:>7.1} µs  p99 {lat99:>7.1} µs  (quiet run: p99 {:.1} µs)",
            self.f.idle_p99_us
        ))?;
        self.f.attack = Some(AttackFigures {
            sixteen_devices_rate: many.rate,
            sixteen_devices_cpu_us: many.cpu.server_us,
            idle_p99_us: lat99,
        });
        Ok(())
    }

    /// Runs `[4]`: a relay whose full group already holds the preload, and an empty group in it.
    async fn preloaded_relay(&mut self) -> Result<(), BenchError> {
        let dir = temp_dir("the preloaded relay")?;
        let n = self.config.preload;
        let rate = preload(dir.path(), self.plan.full.0.id, n).await?;
        self.p.line(format!(
            "[4] preloaded {n} blobs through the storage API at {rate:.0} blobs/s"
        ))?;
        let relay = BenchRelay::start(&self.config.relay_bin, dir.path()).await?;
        let empty = self
            .one_device(&relay, &self.plan.empty, DEVICE_EMPTY, "empty-group")
            .await?;
        let full = self
            .one_device(&relay, &self.plan.full, DEVICE_FULL, "full-group")
            .await?;
        relay.stop().await;
        (self.f.empty_group_rate, self.f.full_group_rate) = (empty.rate, full.rate);
        self.p.run(
            "[4] push→ack throughput, 1 device, empty group in that relay: ",
            &empty,
        )?;
        self.p.run(
            &format!("[4] push→ack throughput, 1 device, group holding {n}:"),
            &full,
        )
    }

    /// A throughput run (profiled as `label`) of one device (from `seed`) in group `g` of
    /// `relay`.
    async fn one_device(
        &self,
        relay: &BenchRelay,
        (g, pushes): &(Group, Pushes),
        seed: u64,
        label: &str,
    ) -> Result<Run, BenchError> {
        let d = Device::open(&relay.peer, g, seed).await?;
        let (run, back) = throughput(relay, vec![load(d, pushes)], &self.profile, label).await?;
        close_all(back).await;
        Ok(run)
    }
}
