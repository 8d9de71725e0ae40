//! The key rotation section (`--rotation`): what rotating a group's keys costs, for groups of
//! several sizes (2, 16 and 128 devices by default).
//!
//! In this process, on one thread, with that thread's CPU clock:
//!
//! - the baselines: the bare hybrid KEM envelope (`seal_envelope` and `open_envelope` of a
//!   32-byte payload, X25519 + ML-KEM-768) and one X25519 scalar multiplication alone (the
//!   Diffie-Hellman half of an X25519-only envelope, which needs a second, cheaper one for its
//!   ephemeral key);
//! - what a member pays on every read of the group's membership: opening one grant, and
//!   decoding and checking one enrollment (each read carries every enrollment of the group);
//! - per group size, the admin's planning, with the calls the client makes: the new epoch's
//!   keys and the signed rotation record, then one `seal_grant` per other device to the hybrid
//!   KEM key read from its enrollment; CPU per grant (sealing `n − 1` grants, repeated until at
//!   least 256 are sealed, divided by their count), the grant envelope's length, the record's,
//!   and the whole `GroupUpdate` frame's (record and every grant).
//!
//! Then, against a fresh relay process of its own (rate limits off, the per-address connection
//! rate too), per group size: `n` real `SyncClient`s in one new group, each with its own iroh
//! endpoint on 127.0.0.1 and an in-memory store, connecting 8 at a time; the first one posts
//! the genesis and is the admin. Once every device is enrolled and the relay and this process
//! are quiet, each timed rotation measures the wall time from calling the admin's `rotate()`
//! to its return and to the last member holding the new epoch (its `epoch()` reached it; each
//! member listens to its events from before the call), then waits for the group to be quiet
//! again and reports the CPU the relay and this process spent from the call to then. Quiet: a
//! 250 ms window in which the relay process kept under 5 % of a core busy and this process
//! under 10 %; a rotation is not over when the last member holds the key, because members
//! enroll anew at each epoch and every enrollment makes every other member read the group
//! again. Each wait is bounded (60 s for a rotation, 60 s to be quiet, 300 s for a group to
//! join); a member that misses the new epoch is counted, not waited for.

mod crypto;
mod group;

use std::path::Path;
use std::time::Duration;

use crypto::{BARE_PAYLOAD, Baselines, Planned};
use group::{GroupRun, QUIET_DEVICES_CORES, QUIET_RELAY_CORES, QUIET_WINDOW, Timed};

use super::relay::BenchRelay;
use super::runner::{Printer, temp_dir};
use super::{BenchError, joined};

/// Group sizes measured by default.
pub const DEFAULT_SIZES: [usize; 3] = [2, 16, 128];
/// Operations timed per baseline.
const BASELINE_SAMPLES: usize = 500;
/// Grants sealed (at least) to time one group size's planning.
const MIN_GRANTS: usize = 256;
/// How long the group may take to be quiet after joining and after each rotation.
const QUIET_WAIT: Duration = Duration::from_secs(60);

/// What the section does.
#[derive(Debug, Clone)]
pub(super) struct Section<'a> {
    /// The `sync-relay` binary.
    pub(super) relay_bin: &'a Path,
    /// Group sizes, the admin included.
    pub(super) sizes: &'a [usize],
    /// Rotations timed per group size.
    pub(super) rotations: usize,
    /// Operations timed per baseline.
    pub(super) samples: usize,
    /// Grants sealed (at least) to time each size's planning.
    pub(super) min_grants: usize,
    /// How long the group may take to be quiet.
    pub(super) quiet_wait: Duration,
}

impl<'a> Section<'a> {
    /// The section of a benchmark run.
    pub(super) fn new(relay_bin: &'a Path, sizes: &'a [usize], rotations: usize) -> Self {
        Self {
            relay_bin,
            sizes,
            rotations,
            samples: BASELINE_SAMPLES,
            min_grants: MIN_GRANTS,
            quiet_wait: QUIET_WAIT,
        }
    }
}

/// One group size's figures.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct SizeFigures {
    /// The admin's planning, in process.
    pub(super) planned: Planned,
    /// The rotations against the relay.
    pub(super) run: GroupRun,
}

/// Everything the section measured.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct RotationFigures {
    /// The same-run baselines.
    pub(super) baselines: Baselines,
    /// Per group size, in order.
    pub(super) sizes: Vec<SizeFigures>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The median of `values` (the upper one of an even count); 0 when empty.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// `a / b`, 0 when `b` is not positive.
fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

/// The lines of the in-process figures.
fn baseline_lines(b: &Baselines) -> Vec<String> {
    vec![
        format!(
            "[baseline] hybrid KEM envelope (X25519 + ML-KEM-768), {BARE_PAYLOAD} B payload → {} B: seal {:.1} µs CPU, open {:.1} µs CPU ({} each)",
            b.envelope_len, b.seal_us, b.open_us, b.samples
        ),
        format!(
            "[baseline] X25519 alone, one scalar multiplication (the Diffie-Hellman): {:.1} µs CPU ({} samples)",
            b.x25519_us, b.samples
        ),
        format!(
            "[rotation] a member, on every read of the group: opening one grant {:.1} µs CPU; decoding and checking one enrollment {:.1} µs CPU (a read carries every enrollment)",
            b.open_grant_us, b.check_enrollment_us
        ),
    ]
}

/// The line of one size's planning, against the bare envelope seal.
fn planned_line(p: &Planned, b: &Baselines) -> String {
    format!(
        "[rotation] {:>3} devices, planning (in process): {:.1} µs CPU per grant = {:.2}× the bare envelope seal (grants per rotation: {}; {} sealed), record {:.1} µs; grant envelope {} B, record {} B, whole request {} B",
        p.devices,
        p.grant_us,
        ratio(p.grant_us, b.seal_us),
        p.grants,
        p.grants * p.reps,
        p.record_us,
        p.envelope_len,
        p.record_len,
        p.request_len
    )
}

/// The lines of one size's rotations against the relay.
fn run_lines(r: &GroupRun) -> Vec<String> {
    let n = r.rotations.len();
    let members = r.devices.saturating_sub(1);
    let lasts: Vec<f64> = r
        .rotations
        .iter()
        .filter_map(|t| t.last_member.map(ms))
        .collect();
    let missed: usize = r.rotations.iter().map(|t| t.missed).sum();
    let (lo, hi) = lasts.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
        (lo.min(*v), hi.max(*v))
    });
    let last = if lasts.is_empty() {
        "none complete".to_string()
    } else {
        format!(
            "median {:.1} ms (min {lo:.1}, max {hi:.1})",
            median(lasts.clone())
        )
    };
    let pick = |f: fn(&Timed) -> f64| median(r.rotations.iter().map(f).collect());
    let quiet: Vec<f64> = r
        .rotations
        .iter()
        .filter_map(|t| t.quiet_after.map(ms))
        .collect();
    let not_quiet = n - quiet.len();
    let join_quiet = r.join_quiet.map_or_else(
        || "not quiet within the wait".to_string(),
        |d| format!("quiet {:.1} s later", d.as_secs_f64()),
    );
    vec![
        format!(
            "[rotation] {:>3} devices, rotate() → the last member (of {members}) holds the new epoch: {last} over {n} rotations; rotate() returned after {:.1} ms, the median member held it after {:.1} ms (medians); {missed} missed",
            r.devices,
            pick(|t| ms(t.rotate_call)),
            pick(|t| ms(t.median_member)),
        ),
        format!(
            "    (per rotation until the group was quiet again, medians: relay CPU {:.1} ms, devices' CPU {:.1} ms, quiet from {:.0} ms after rotate(){}; joining: the {} devices enrolled in {:.1} s, {join_quiet})",
            pick(|t| t.relay_cpu_ms),
            pick(|t| t.devices_cpu_ms),
            median(quiet),
            if not_quiet > 0 {
                format!(", {not_quiet} not quiet within the wait")
            } else {
                String::new()
            },
            r.devices,
            r.join.as_secs_f64(),
        ),
    ]
}

/// Runs the section, printing each figure as it is measured.
pub(super) async fn run(
    s: &Section<'_>,
    p: &mut Printer<'_>,
) -> Result<RotationFigures, BenchError> {
    p.line(format!(
        "## Key rotation: groups of {} devices, timed rotations per group: {}; real SyncClients (one iroh endpoint and an in-memory store each) in this process, a fresh relay process; quiet: a {} ms window with the relay under {:.0} % of a core and this process under {:.0} %",
        s.sizes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        s.rotations,
        QUIET_WINDOW.as_millis(),
        QUIET_RELAY_CORES * 100.0,
        QUIET_DEVICES_CORES * 100.0,
    ))?;
    let samples = s.samples;
    let baselines = joined(
        tokio::task::spawn_blocking(move || crypto::baselines(samples)).await,
        "the rotation baselines",
    )??;
    for line in baseline_lines(&baselines) {
        p.line(line)?;
    }
    let mut planned = Vec::with_capacity(s.sizes.len());
    for &n in s.sizes {
        let min_grants = s.min_grants;
        let plan = joined(
            tokio::task::spawn_blocking(move || crypto::plan(n, min_grants)).await,
            "planning a rotation",
        )??;
        p.line(planned_line(&plan, &baselines))?;
        planned.push(plan);
    }

    let dir = temp_dir("the key rotation relay")?;
    let relay =
        BenchRelay::start_with(s.relay_bin, dir.path(), &["--ip-connect-rate", "0"]).await?;
    let mut sizes = Vec::with_capacity(planned.len());
    let mut outcome = Ok(());
    for plan in planned {
        match group::measure(&relay, plan.devices, s.rotations, s.quiet_wait).await {
            Ok(run) => {
                for line in run_lines(&run) {
                    if let Err(e) = p.line(line) {
                        outcome = Err(e);
                    }
                }
                sizes.push(SizeFigures { planned: plan, run });
            }
            Err(e) => outcome = Err(e),
        }
        if outcome.is_err() {
            break;
        }
    }
    relay.stop().await;
    outcome?;
    Ok(RotationFigures { baselines, sizes })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timed(last_ms: Option<u64>, missed: usize) -> Timed {
        Timed {
            rotate_call: Duration::from_millis(2),
            last_member: last_ms.map(Duration::from_millis),
            median_member: Duration::from_millis(3),
            missed,
            quiet_after: Some(Duration::from_millis(400)),
            relay_cpu_ms: 1.5,
            devices_cpu_ms: 4.0,
        }
    }

    #[test]
    fn the_run_lines_give_medians_and_count_what_was_missed() {
        let run = GroupRun {
            devices: 16,
            join: Duration::from_secs(2),
            join_quiet: None,
            rotations: vec![timed(Some(10), 0), timed(None, 2), timed(Some(30), 0)],
        };
        let lines = run_lines(&run);
        assert!(
            lines[0].contains("the last member (of 15)")
                && lines[0].contains("median 30.0 ms (min 10.0, max 30.0) over 3 rotations")
                && lines[0].ends_with("; 2 missed"),
            "{lines:?}"
        );
        assert!(
            lines[1].contains("relay CPU 1.5 ms, devices' CPU 4.0 ms, quiet from 400 ms")
                && lines[1].ends_with("enrolled in 2.0 s, not quiet within the wait)"),
            "{lines:?}"
        );
    }

    /// A smoke run of the whole section against the real relay binary: two devices, one
    /// rotation; every figure is there (none is judged: they depend on the machine).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_two_device_run_prints_every_figure() {
        let bin = sync_testkit::relay_bin();
        let section = Section {
            relay_bin: &bin,
            sizes: &[2],
            rotations: 1,
            samples: 2,
            min_grants: 2,
            quiet_wait: Duration::from_secs(2),
        };
        let mut out = Vec::new();
        let figures = {
            let mut p = Printer::new(&mut out);
            sync_testkit::guard("the rotation section", run(&section, &mut p))
                .await
                .unwrap()
        };
        let text = String::from_utf8(out).unwrap();
        assert_eq!(figures.sizes.len(), 1, "{text}");
        let size = &figures.sizes[0];
        assert_eq!(size.run.rotations.len(), 1);
        let t = size.run.rotations[0];
        assert_eq!(t.missed, 0, "{text}");
        assert!(t.last_member.is_some(), "{text}");
        assert_eq!(size.planned.grants, 1);
        assert!(size.planned.request_len > size.planned.envelope_len + size.planned.record_len);
        for start in [
            "## Key rotation: groups of 2 devices, timed rotations per group: 1;",
            "[baseline] hybrid KEM envelope (X25519 + ML-KEM-768), 32 B payload → 1169 B:",
            "[baseline] X25519 alone",
            "[rotation] a member, on every read of the group:",
            "[rotation]   2 devices, planning (in process):",
            "[rotation]   2 devices, rotate() → the last member (of 1) holds the new epoch: median",
            "    (per rotation until the group was quiet again, medians: relay CPU ",
        ] {
            assert!(
                text.lines().any(|l| l.starts_with(start)),
                "no line starting {start:?} in:\n{text}"
            );
        }
    }
}
