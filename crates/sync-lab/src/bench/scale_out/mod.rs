//! The scale-out section (`--scale-out`): relays sharing one PostgreSQL database (a private
//! server started for the run, fsync on), against same-run baselines.
//!
//! - `[baseline] raw PostgreSQL inserts`: rows/s of bare inserts into the relay's `blobs`
//!   table (its schema, made by its storage library in a scratch database) through one direct
//!   `tokio-postgres` connection, batched as the relay's writers batch them, with their
//!   largest batch (512 rows) per transaction (see `pg_baseline`).
//! - push→ack throughput of 16 devices (each in its own group, the benchmark's pre-sealed
//!   1 KiB blobs pipelined up to the relay's `max_in_flight`, as in `[1]`) spread over 1, 2 and
//!   3 relays on one database (device k on relay k mod n; a fresh database for each), and of
//!   the same 16 devices on one SQLite relay; with the relays' CPU per push. Ratio to the raw
//!   inserts printed against the target of 80 % (not asserted).
//! - cross-relay push→notify: device A pushes through relay 1, device B of the same group is
//!   connected to relay 2 and reads the `Notify` for that blob (relay 2 hears of the commit
//!   through PostgreSQL's `LISTEN`/`NOTIFY`); p50/p99 from A writing the push to B reading it.
//! - failover: a `SyncClient` knowing both relays pushes steadily; the relay it uses is
//!   SIGKILLed `kills` times (restarted after each round); the interruption (last ack before →
//!   first ack after), loss detection and reconnection, p50 and max (see `failover`).

mod failover;
mod pg_baseline;

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sync_testkit::PostgresServer;

use super::cpu::{CpuMark, CpuUse};
use super::measure::notify_latency;
use super::relay::BenchRelay;
use super::runner::{Printer, temp_dir};
use super::sealed::{Group, SealedPush, device_key, frames, seal_pushes};
use super::session::Device;
use super::{BenchError, WARMUP, joined};
use crate::stats::percentile;

/// Devices of the throughput runs (each in its own group).
const DEVICES: usize = 16;
/// Relay counts of the throughput runs on PostgreSQL.
const RELAYS: [usize; 3] = [1, 2, 3];
/// The target: relays on PostgreSQL reach this share of the raw inserts.
const TARGET_SHARE: f64 = 0.80;
/// First device seed of the section (keys and sessions).
const DEVICE_SEED: u64 = 7000;

/// What the section does.
#[derive(Debug, Clone)]
pub(super) struct Section<'a> {
    /// The `sync-relay` binary.
    pub(super) relay_bin: &'a Path,
    /// Pushes per throughput run (shared by the 16 devices).
    pub(super) pushes: usize,
    /// Samples of the cross-relay notify run (a tenth more are taken as warm-up).
    pub(super) samples: usize,
    /// Relay kills of the failover run.
    pub(super) kills: usize,
}

/// Everything the section measured.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct ScaleOutFigures {
    /// Raw PostgreSQL inserts, rows/s.
    pub(super) raw_postgres: f64,
    /// 16 devices on one SQLite relay, pushes/s.
    pub(super) sqlite: f64,
    /// 16 devices on 1, 2, 3 relays on PostgreSQL: (relays, pushes/s, relays' CPU µs/push).
    pub(super) postgres: Vec<(usize, f64, f64)>,
    /// Cross-relay push→notify p50 and p99 (µs), samples, missed.
    pub(super) notify: (f64, f64, usize, usize),
    /// Failover: the interruptions, detections and reconnections (ms), one per kill.
    pub(super) kills: Vec<(f64, f64, f64)>,
}

/// The pushes of one device: warm-up (untimed) and timed frames.
struct Load {
    group: Group,
    seed: u64,
    warm: Vec<Bytes>,
    timed: Vec<Bytes>,
}

/// The percentile `q` of `values` (sorted here); 0 when empty.
fn pct(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    percentile(&v, q).unwrap_or(0.0)
}

/// The largest of `values`; 0 when empty.
fn max(values: &[f64]) -> f64 {
    values.iter().copied().fold(0.0, f64::max)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Seals the 16 devices' pushes and the notify run's (blocking).
fn seal(pushes: usize, samples: usize) -> Result<(Vec<Load>, Group, Vec<SealedPush>), BenchError> {
    let per_device = (pushes / DEVICES).max(1);
    let loads = (0..DEVICES as u64)
        .map(|k| {
            let group = Group::from_seed(700 + k);
            let seed = DEVICE_SEED + k;
            let dev = device_key(seed);
            let warm = frames(&seal_pushes(&group, &dev, WARMUP, 2, 800 + 2 * k)?);
            let first = 2 + WARMUP as u64;
            let timed = frames(&seal_pushes(&group, &dev, per_device, first, 801 + 2 * k)?);
            Ok(Load {
                group,
                seed,
                warm,
                timed,
            })
        })
        .collect::<Result<Vec<_>, BenchError>>()?;
    let notify_group = Group::from_seed(799);
    let a = device_key(DEVICE_SEED + 100);
    let notify = seal_pushes(&notify_group, &a, samples + samples / 10, 2, 900)?;
    Ok((loads, notify_group, notify))
}

/// 16 devices, device k on `relays[k mod n]`: warm-up, then every device's timed pushes at
/// once; pushes/s and the relays' CPU per push.
async fn throughput(relays: &[BenchRelay], loads: &[Load]) -> Result<(f64, f64), BenchError> {
    let mut devices = Vec::with_capacity(loads.len());
    for (k, l) in loads.iter().enumerate() {
        let relay = relays
            .get(k % relays.len().max(1))
            .ok_or_else(|| BenchError::Protocol("no relay".into()))?;
        let mut d = Device::open(&relay.peer, &l.group, l.seed).await?;
        d.blast(&l.warm).await?;
        devices.push(d);
    }
    let total: usize = loads.iter().map(|l| l.timed.len()).sum();
    let marks: Vec<CpuMark> = relays.iter().map(|r| CpuMark::take(r.pid)).collect();
    let start = Instant::now();
    let tasks: Vec<_> = devices
        .into_iter()
        .zip(loads)
        .map(|(mut d, l)| {
            let timed = l.timed.clone();
            tokio::spawn(async move { d.blast(&timed).await.map(|()| d) })
        })
        .collect();
    let mut done = Vec::with_capacity(tasks.len());
    for t in tasks {
        done.push(joined(t.await, "a device's pushes")??);
    }
    let elapsed = start.elapsed();
    let cpu_us: f64 = relays
        .iter()
        .zip(&marks)
        .map(|(r, m0)| CpuUse::between(m0, &CpuMark::take(r.pid), total).server_us)
        .sum();
    for d in done {
        d.close().await;
    }
    #[allow(clippy::cast_precision_loss)]
    let rate = total as f64 / elapsed.as_secs_f64().max(1e-9);
    Ok((rate, cpu_us))
}

/// Starts `n` relays on the database at `url`.
async fn pg_relays(
    bin: &Path,
    url: &str,
    n: usize,
) -> Result<(Vec<BenchRelay>, Vec<tempfile::TempDir>), BenchError> {
    let mut relays = Vec::with_capacity(n);
    let mut dirs = Vec::with_capacity(n);
    for _ in 0..n {
        let dir = temp_dir("a relay on PostgreSQL")?;
        let extra = ["--storage", "postgres", "--postgres-url", url];
        relays.push(BenchRelay::start_with(bin, dir.path(), &extra).await?);
        dirs.push(dir);
    }
    Ok((relays, dirs))
}

async fn stop_all(relays: Vec<BenchRelay>) {
    for r in relays {
        r.stop().await;
    }
}

/// A fresh database of `pg` (blocking call, off the workers).
async fn database(pg: &mut PostgresServer) -> Result<String, BenchError> {
    tokio::task::block_in_place(|| pg.create_database()).map_err(BenchError::Relay)
}

/// Runs the section, printing each figure as it is measured.
pub(super) async fn run(
    s: &Section<'_>,
    p: &mut Printer<'_>,
) -> Result<ScaleOutFigures, BenchError> {
    p.line(format!(
        "## Scale-out: relays on one PostgreSQL (a private server, fsync on); {DEVICES} devices in their own groups spread over the relays (device k on relay k mod n), pre-sealed 1 KiB blobs pipelined up to max_in_flight; {} pushes per run, {} notify samples, {} relay kills",
        s.pushes, s.samples, s.kills
    ))?;
    let (pushes, samples) = (s.pushes, s.samples);
    let (loads, notify_group, notify) = joined(
        tokio::task::spawn_blocking(move || seal(pushes, samples)).await,
        "sealing the scale-out pushes",
    )??;
    let mut pg = joined(
        tokio::task::spawn_blocking(|| PostgresServer::start_with(true)).await,
        "starting PostgreSQL",
    )?
    .map_err(BenchError::Relay)?;
    let mut f = ScaleOutFigures::default();

    let url = database(&mut pg).await?;
    let total: usize = loads.iter().map(|l| l.timed.len()).sum();
    let raw = pg_baseline::measure(&url, total).await?;
    f.raw_postgres = raw.rate;
    p.line(format!(
        "[baseline] raw PostgreSQL inserts (one connection, one unnest INSERT of {} rows per transaction, the relay writers' largest batch): {:>8.0} rows/s",
        raw.batch, raw.rate
    ))?;

    let dir = temp_dir("the SQLite relay")?;
    let sqlite = BenchRelay::start(s.relay_bin, dir.path()).await?;
    let measured = throughput(std::slice::from_ref(&sqlite), &loads).await;
    sqlite.stop().await;
    drop(dir);
    let (rate, cpu) = measured?;
    f.sqlite = rate;
    p.line(format!(
        "[scale-out] push→ack throughput, {DEVICES} devices, 1 relay on SQLite:     {rate:>8.0} pushes/s  (relay CPU {cpu:.1} µs/push)"
    ))?;

    for n in RELAYS {
        let url = database(&mut pg).await?;
        let (relays, dirs) = pg_relays(s.relay_bin, &url, n).await?;
        let measured = throughput(&relays, &loads).await;
        stop_all(relays).await;
        drop(dirs);
        let (rate, cpu) = measured?;
        f.postgres.push((n, rate, cpu));
        p.line(format!(
            "[scale-out] push→ack throughput, {DEVICES} devices, {n} relay{} on PostgreSQL: {rate:>8.0} pushes/s = {:>5.1} % of raw PostgreSQL inserts  (relays' CPU {cpu:.1} µs/push)",
            if n == 1 { " " } else { "s" },
            100.0 * rate / f.raw_postgres.max(1e-9)
        ))?;
    }

    let url = database(&mut pg).await?;
    let (relays, dirs) = pg_relays(s.relay_bin, &url, 2).await?;
    let measured = cross_notify(&relays, &notify_group, &notify).await;
    stop_all(relays).await;
    drop(dirs);
    let (lat, missed) = measured?;
    let us: Vec<f64> = lat.iter().map(|d| d.as_secs_f64() * 1e6).collect();
    f.notify = (pct(&us, 0.50), pct(&us, 0.99), us.len(), missed);
    p.line(format!(
        "[scale-out] push(A via relay 1)→notify(B via relay 2): p50 {:>8.1} µs  p99 {:>8.1} µs  ({} samples, {missed} without a notify within 5 s)",
        f.notify.0, f.notify.1, f.notify.2
    ))?;

    let url = database(&mut pg).await?;
    let mut relays = failover::start_relays(s.relay_bin, &url).await?;
    let dir = temp_dir("the failover device")?;
    let measured = failover::measure(&mut relays, dir.path(), s.kills).await;
    tokio::task::block_in_place(|| {
        for r in &mut relays {
            r.stop();
        }
    });
    let kills = measured?;
    f.kills = kills
        .iter()
        .map(|k| (ms(k.interruption), ms(k.detect), ms(k.reconnect)))
        .collect();
    let col = |i: usize| -> Vec<f64> {
        f.kills
            .iter()
            .map(|k| match i {
                0 => k.0,
                1 => k.1,
                _ => k.2,
            })
            .collect()
    };
    let (inter, detect, reconnect) = (col(0), col(1), col(2));
    p.line(format!(
        "[scale-out] failover, {} kills (SIGKILL of the device's relay): interruption (last ack → first ack after) p50 {:.1} ms, max {:.1} ms; loss noticed p50 {:.1} ms (max {:.1}); next relay connected p50 {:.1} ms after (max {:.1})",
        f.kills.len(),
        pct(&inter, 0.50),
        max(&inter),
        pct(&detect, 0.50),
        max(&detect),
        pct(&reconnect, 0.50),
        max(&reconnect)
    ))?;
    drop(pg);
    for line in table(&f) {
        p.line(line)?;
    }
    Ok(f)
}

/// A on relay 1, B on relay 2, both in `g`: A pushes one blob at a time, B reads its notify.
async fn cross_notify(
    relays: &[BenchRelay],
    g: &Group,
    pushes: &[SealedPush],
) -> Result<(Vec<Duration>, usize), BenchError> {
    let (Some(one), Some(two)) = (relays.first(), relays.get(1)) else {
        return Err(BenchError::Protocol("two relays needed".into()));
    };
    let mut a = Device::open(&one.peer, g, DEVICE_SEED + 100).await?;
    let mut b = Device::open(&two.peer, g, DEVICE_SEED + 101).await?;
    let measured = notify_latency(&mut a, &mut b, pushes, 2).await;
    a.close().await;
    b.close().await;
    measured
}

/// The section's summary table, and the target line (reported, never asserted).
pub(super) fn table(f: &ScaleOutFigures) -> Vec<String> {
    let raw = f.raw_postgres.max(1e-9);
    let mut lines = vec![
        String::new(),
        "| store | relays | pushes/s | vs raw PostgreSQL inserts |".to_string(),
        "|---|---:|---:|---:|".to_string(),
        format!(
            "| raw PostgreSQL inserts (baseline) | – | {:.0} | 100 % |",
            f.raw_postgres
        ),
        format!(
            "| SQLite | 1 | {:.0} | {:.1} % |",
            f.sqlite,
            100.0 * f.sqlite / raw
        ),
    ];
    for (n, rate, _) in &f.postgres {
        lines.push(format!(
            "| PostgreSQL | {n} | {rate:.0} | {:.1} % |",
            100.0 * rate / raw
        ));
    }
    let best = f.postgres.iter().map(|(_, r, _)| *r).fold(0.0, f64::max);
    lines.push(String::new());
    lines.push(format!(
        "relays on PostgreSQL ≥ {:.0} % of raw PostgreSQL inserts: best {:.1} % — {}",
        TARGET_SHARE * 100.0,
        100.0 * best / raw,
        if best >= TARGET_SHARE * f.raw_postgres {
            "met"
        } else {
            "not met"
        }
    ));
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_each_run_against_the_raw_inserts() {
        let f = ScaleOutFigures {
            raw_postgres: 10_000.0,
            sqlite: 12_000.0,
            postgres: vec![(1, 5_000.0, 90.0), (2, 8_500.0, 95.0), (3, 7_000.0, 99.0)],
            ..ScaleOutFigures::default()
        };
        let t = table(&f);
        assert!(
            t.contains(&"| SQLite | 1 | 12000 | 120.0 % |".to_string()),
            "{t:?}"
        );
        assert!(
            t.contains(&"| PostgreSQL | 2 | 8500 | 85.0 % |".to_string()),
            "{t:?}"
        );
        assert_eq!(
            t.last().map(String::as_str),
            Some("relays on PostgreSQL ≥ 80 % of raw PostgreSQL inserts: best 85.0 % — met")
        );
        let slow = ScaleOutFigures {
            postgres: vec![(1, 5_000.0, 90.0)],
            ..f
        };
        assert!(
            table(&slow)
                .last()
                .is_some_and(|l| l.ends_with("best 50.0 % — not met"))
        );
    }

    #[test]
    fn percentiles_and_maxima_of_nothing_are_zero() {
        assert_eq!((pct(&[], 0.5), max(&[])), (0.0, 0.0));
        assert_eq!(pct(&[3.0, 1.0, 2.0], 0.5), 2.0);
        assert_eq!(max(&[3.0, 1.0, 2.0]), 3.0);
    }
}
