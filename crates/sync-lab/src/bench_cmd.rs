//! `sync-stress bench`: the end-to-end relay benchmark ([`sync_lab::bench`]) against the real
//! `sync-relay` binary, and `sync-stress bench-echo`, the echo process of its QUIC baselines
//! (started by `bench` itself; hidden from the help).
//!
//! Exit codes: 0 when every figure was measured (whether or not the targets are met); 1 when
//! the run could not complete (relay binary missing or not starting, a session failing);
//! 2 bad command line (counts out of range).

use std::ffi::OsString;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use sync_lab::bench::{
    BenchConfig, ContentConfig, DEFAULT_CONTENT_SIZES, DEFAULT_KILLS, DEFAULT_ROTATION_SIZES,
    KILLS_RANGE, MAX_ROTATION_SIZES, PRELOAD_RANGE, PUSHES_RANGE, ROTATION_SIZE_RANGE,
    ROTATIONS_RANGE, SAMPLES_RANGE, ScaleOut, check_sizes, parse_size, serve_echo,
};
use sync_relay::StopSignals;
use sync_testkit::find_relay_bin;

/// A count within `range` (underscores allowed: 1_000_000).
fn count_in(s: &str, range: &RangeInclusive<usize>) -> Result<usize, String> {
    let n: usize = s
        .trim()
        .replace('_', "")
        .parse()
        .map_err(|_| format!("{s:?} is not a whole number"))?;
    if !range.contains(&n) {
        return Err(format!("must be {} to {}", range.start(), range.end()));
    }
    Ok(n)
}

fn preload(s: &str) -> Result<usize, String> {
    count_in(s, &PRELOAD_RANGE)
}
fn pushes(s: &str) -> Result<usize, String> {
    count_in(s, &PUSHES_RANGE)
}
fn samples(s: &str) -> Result<usize, String> {
    count_in(s, &SAMPLES_RANGE)
}
fn rotations(s: &str) -> Result<usize, String> {
    count_in(s, &ROTATIONS_RANGE)
}
fn kills(s: &str) -> Result<usize, String> {
    count_in(s, &KILLS_RANGE)
}

/// Group sizes separated by commas (`2,16,128`), each in range, at most
/// [`MAX_ROTATION_SIZES`] of them.
fn rotation_sizes(s: &str) -> Result<RotationSizes, String> {
    let sizes = s
        .split(',')
        .map(|n| count_in(n, &ROTATION_SIZE_RANGE).map_err(|e| format!("group size {n:?}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    if sizes.len() > MAX_ROTATION_SIZES {
        return Err(format!("at most {MAX_ROTATION_SIZES} group sizes"));
    }
    Ok(RotationSizes(sizes))
}

/// Content sizes separated by commas (`100MiB,1GiB`), each in range.
fn content_sizes(s: &str) -> Result<ContentSizes, String> {
    let sizes = s
        .split(',')
        .map(parse_size)
        .collect::<Result<Vec<_>, _>>()?;
    check_sizes(&sizes)?;
    Ok(ContentSizes(sizes))
}

/// The sizes of `--content-sizes`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ContentSizes(Vec<u64>);

/// The group sizes of `--rotation-sizes`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RotationSizes(Vec<usize>);

/// Shown after `--help`.
const AFTER_HELP: &str = "Build both binaries in release first (cargo build --release -p \
sync-lab -p sync-relay): a debug build measures the compiler. The figures, the same-run \
baselines and what each means are described in the sync_lab::bench module documentation. \
Exit codes: 0 every figure measured (targets met or not); 1 the run could not complete; 2 bad \
command line.";

/// Measures the relay end to end over real QUIC on loopback: push→ack throughput (1 and 16
/// devices), idle push latency, push→notify latency, throughput into a group holding many
/// blobs; with same-run baselines (raw SQLite inserts, raw iroh echo) and the relay's CPU per
/// push. Prints the figures, the ratios and whether each of this project's targets is met.
/// With --rotation, also what rotating a group's keys costs; with --scale-out, relays sharing
/// one PostgreSQL.
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub(crate) struct Args {
    /// Blobs preloaded into the large group (1 to 10,000,000; default 1,000,000, 5,000 with
    /// --quick).
    #[arg(long, value_name = "N", value_parser = preload)]
    preload: Option<usize>,
    /// Pushes per throughput run (16 to 10,000,000; default 20,000, 2,000 with --quick).
    #[arg(long, value_name = "N", value_parser = pushes)]
    pushes: Option<usize>,
    /// Latency samples per latency run (10 to 1,000,000; default 2,000, 200 with --quick).
    #[arg(long, value_name = "N", value_parser = samples)]
    samples: Option<usize>,
    /// A short run with small counts (well under a minute); explicit counts still apply.
    #[arg(long)]
    quick: bool,
    /// The sync-relay binary (default: next to sync-stress, then on PATH).
    #[arg(long, value_name = "PATH")]
    relay_bin: Option<PathBuf>,
    /// Record the relay with `perf record` during each throughput run, into
    /// PREFIX-RUN.data, RUN one of 1dev, 16dev, empty-group, full-group, and 16dev-attack with
    /// --attack (needs perf).
    #[arg(long, value_name = "PREFIX")]
    perf_record: Option<PathBuf>,
    /// With --perf-record: record call graphs too.
    #[arg(long, requires = "perf_record")]
    perf_callgraph: bool,
    /// Also repeat the 16-device throughput run and the idle latency run while 20 hostile
    /// connections attack the relay (silent connections, stream floods, pulls never read,
    /// garbage before Hello, an invite-lookup sweep), and print the ratios to the quiet runs.
    #[arg(long)]
    attack: bool,
    /// Also measure key rotation: the hybrid KEM grants' CPU and bytes per group size against
    /// the bare envelope, and the wall time from the admin's rotate() to the last member
    /// holding the new key, with real clients against a relay of its own.
    #[arg(long)]
    rotation: bool,
    /// With --rotation: the group sizes, devices with the admin, separated by commas (2 to
    /// 512, at most 8 sizes; default 2,16,128).
    #[arg(long, value_name = "N,N,…", value_parser = rotation_sizes, requires = "rotation")]
    rotation_sizes: Option<RotationSizes>,
    /// With --rotation: timed rotations per group size (1 to 100; default 5, 3 with --quick).
    #[arg(long, value_name = "N", value_parser = rotations, requires = "rotation")]
    rotations: Option<usize>,
    /// Also measure relays on one PostgreSQL (a private server started for the run; needs the
    /// PostgreSQL server binaries): raw PostgreSQL inserts on the relay's schema, push→ack
    /// throughput of 16 devices over 1, 2 and 3 relays and over one SQLite relay, cross-relay
    /// push→notify latency, and the failover interruption over --kills relay kills.
    #[arg(long)]
    scale_out: bool,
    /// With --scale-out: pushes per throughput run there (16 to 10,000,000; default --pushes).
    #[arg(long, value_name = "N", value_parser = pushes, requires = "scale_out")]
    scale_out_pushes: Option<usize>,
    /// With --scale-out: relay kills of the failover run (1 to 1000; default 20). Each takes
    /// about 7 s (the client notices a dead relay within its 6 s idle timeout).
    #[arg(long, value_name = "N", value_parser = kills, requires = "scale_out")]
    kills: Option<usize>,
    /// Also measure large content per size: sealing and BLAKE3 hashing on one core, raw iroh
    /// bulk throughput on one QUIC stream, a file between two content nodes (seal, fetch,
    /// open), and a file sent through the relay's content store and received from it.
    #[arg(long)]
    content: bool,
    /// With --content: the file sizes, separated by commas, with units B, KiB, MiB, GiB
    /// (1MiB to 16GiB, at most 4; default 100MiB,1GiB). Inputs above 256 MiB are sparse files.
    #[arg(long, value_name = "SIZE,…", value_parser = content_sizes, requires = "content")]
    content_sizes: Option<ContentSizes>,
    /// With --content: run the large content section alone (no relay push runs, baselines or
    /// targets).
    #[arg(long, requires = "content")]
    content_only: bool,
    /// Also write the figures as JSON to PATH (the relay runs' figures and, with --content,
    /// the large content section's).
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
}

/// Runs the benchmark, printing to stdout.
pub(crate) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let relay_bin = find_relay_bin(args.relay_bin.as_deref())?;
    let own = std::env::current_exe().context("cannot find this program to start its echo")?;
    let mut config = BenchConfig::new(relay_bin, (own, vec![OsString::from("bench-echo")]));
    if args.quick {
        config = config.quick();
    }
    config.preload = args.preload.unwrap_or(config.preload);
    config.pushes = args.pushes.unwrap_or(config.pushes);
    config.samples = args.samples.unwrap_or(config.samples);
    config.perf_prefix = args.perf_record;
    config.perf_callgraph = args.perf_callgraph;
    config.attack = args.attack;
    if args.rotation {
        config.rotation_sizes = args
            .rotation_sizes
            .map_or_else(|| DEFAULT_ROTATION_SIZES.to_vec(), |s| s.0);
        config.rotations = args.rotations.unwrap_or(config.rotations);
    }
    if args.scale_out {
        config.scale_out = Some(ScaleOut {
            pushes: args.scale_out_pushes.unwrap_or(config.pushes),
            kills: args.kills.unwrap_or(DEFAULT_KILLS),
        });
    }
    if args.content {
        config.content = Some(ContentConfig {
            sizes: args
                .content_sizes
                .map_or_else(|| DEFAULT_CONTENT_SIZES.to_vec(), |s| s.0),
            only: args.content_only,
        });
    }
    let mut out = std::io::stdout();
    let report = sync_lab::bench::run(&config, &mut out).await?;
    if let Some(path) = args.json {
        let json = serde_json::to_vec_pretty(&report).context("cannot encode the JSON report")?;
        std::fs::write(&path, json)
            .with_context(|| format!("cannot write the JSON report to {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The echo process: serves until SIGTERM or Ctrl-C.
pub(crate) async fn echo() -> anyhow::Result<ExitCode> {
    let mut signals = StopSignals::watch().context("cannot watch SIGTERM and SIGINT")?;
    serve_echo(async move { signals.recv().await }).await?;
    Ok(ExitCode::SUCCESS)
}
