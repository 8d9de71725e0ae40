//! End-to-end relay benchmark (`sync-stress bench`), deployment-shaped.
//!
//! The relay is the real `sync-relay` binary in its own process (started through the test kit
//! on loopback, free ports, its own temporary data dir: SQLite WAL, `synchronous=NORMAL`, rate
//! limits and group quotas off so the relay itself is measured). This process is the load
//! generator: one iroh endpoint per device, real QUIC over 127.0.0.1, the real protocol (signed
//! `Hello`, `Push` frames pipelined up to the relay's `max_in_flight`), with 1 KiB blobs
//! **sealed before the clock starts** (sealing is the device's cost; it is measured and printed
//! separately).
//!
//! # Running it
//!
//! ```sh
//! cargo build --release -p sync-lab -p sync-relay
//! target/release/sync-stress bench                    # 1,000,000-blob preload (≈ 1 GiB of
//!                                                     # temporary disk), under a minute
//! target/release/sync-stress bench --preload 100000   # shorter
//! target/release/sync-stress bench --quick            # small counts, a few seconds
//! target/release/sync-stress bench --attack           # also the runs under attack
//! target/release/sync-stress bench --quick --rotation # also the key rotation section
//! target/release/sync-stress bench --quick --scale-out # also relays on one PostgreSQL
//! target/release/sync-stress bench --content --content-only   # large content alone,
//!                                                     # 100 MiB and 1 GiB
//! target/release/sync-stress bench --content --content-only --content-sizes 8MiB --json r.json
//! ```
//!
//! `--pushes N` (pushes per throughput run, default 20,000), `--samples N` (latency samples,
//! default 2,000), `--relay-bin PATH` (default: `sync-relay` next to `sync-stress`, then on
//! `PATH`), `--perf-record PREFIX` (a `perf record` of the relay during each throughput run, into
//! `PREFIX-1dev.data`, `PREFIX-16dev.data`, `PREFIX-empty-group.data`, `PREFIX-full-group.data`,
//! and `PREFIX-16dev-attack.data` with `--attack`), `--attack` (the runs under attack below),
//! `--rotation` (the key rotation section below) with `--rotation-sizes N,N,…` (group sizes,
//! default 2,16,128) and `--rotations N` (timed rotations per size, default 5, 3 with
//! `--quick`), `--scale-out` (the scale-out section below) with `--scale-out-pushes N` (pushes
//! per throughput run there, default `--pushes`) and `--kills N` (relay kills of its failover
//! run, default 20), `--content` (the large content section below) with `--content-sizes
//! SIZE,…` (default `100MiB,1GiB`) and `--content-only` (that section alone), `--json PATH`
//! (every figure as JSON too). Build both in release: a debug build measures the compiler, not the relay.
//!
//! # What it prints
//!
//! - `[device]` sealing one blob (Ed25519 signature + XChaCha20-Poly1305): CPU and wall time
//!   per blob, for every blob of the run, before any timed run.
//! - `[baseline] raw SQLite inserts`: rows/s and CPU per row of bare inserts on the relay's own
//!   schema and writer pragmas, 100 rows per transaction, in this process. What storage alone
//!   costs on this machine right now.
//! - `[baseline] raw iroh echo RTT`: p50/p99 of 64-byte round trips on one QUIC stream to an
//!   echo process (this program re-executed as `sync-stress bench-echo`). The network floor of
//!   every latency below.
//! - `[baseline] raw iroh pipelined`: messages/s of push-sized frames pipelined with the same
//!   window against the echo process, one ack-sized reply each, and the echo process's CPU per
//!   message. The QUIC-only ceiling of the relay's throughput.
//! - `[1] push→ack throughput` with 1 device, and with 16 devices in their own groups: durable
//!   pushes per second (a push counts when its `PushAck`, sent after its commit, is read), with
//!   the relay process's CPU per push (and its SQLite writer thread's share), the load
//!   generator's, the cores each kept busy, and pushes per SQLite commit.
//! - `[2] idle push latency`: p50/p99 from writing one push to reading its ack, one at a time.
//! - `[3] push(A)→notify(B) latency`: p50/p99 from A writing a push to B reading the `Notify`
//!   for that blob (and how many got no notify within 5 s).
//! - With `--attack`, `[attack]`: on the same relay, after `[3]`, 20 hostile connections start
//!   (four each of: silent connections, stream floods, pulls never read, garbage before `Hello`,
//!   an invite-lookup sweep; from 127.0.0.2, on a thread of their own, each reconnecting until
//!   the runs end) and the 16-device throughput run and the idle latency run are repeated with
//!   new blobs, the devices connecting while attacked; then what the attackers achieved per
//!   kind, what the relay's `/metrics` counted (`admission_refusals_total` and
//!   `rejections_total` by reason, `connections_total`), and the relay's RSS before, at its peak
//!   during, and after the attack (see the `attack` module).
//! - `[4]` a second relay whose "full" group already holds `--preload` blobs (written through
//!   the relay's storage library on its data dir before the binary starts on it): the preload
//!   rate, then push→ack throughput into an empty group and into the full group of that relay.
//! - With `--rotation`, `## Key rotation`, after `[4]`: the bare hybrid KEM envelope
//!   (X25519 + ML-KEM-768, seal and open of a 32-byte payload) and one X25519 scalar
//!   multiplication alone as baselines; what a member pays on each read of the group (opening
//!   a grant, checking an enrollment); per group size the admin's planning in process (CPU per
//!   grant, sealed with `seal_grant` to real KEM keys, against the bare envelope; the grant
//!   envelope's, the record's and the whole request's bytes); then, against a relay process
//!   of its own, one real `SyncClient` per device, and the wall time from the admin's
//!   `rotate()` to the last member holding the new epoch, with the relay's and the devices'
//!   CPU per rotation until the group is quiet again (see the `rotation` module). No target.
//! - With `--scale-out`, `## Scale-out`, last: a private PostgreSQL server (fsync on); raw
//!   PostgreSQL inserts on the relay's schema as the baseline; push→ack throughput of 16
//!   devices spread over 1, 2 and 3 relays on one database, and on one SQLite relay, with the
//!   ratio to the raw inserts (target 80 %, printed, not asserted); cross-relay push→notify
//!   p50/p99 (A on relay 1, B on relay 2); failover interruption p50/max over `--kills` SIGKILLs
//!   of the relay a `SyncClient` uses (see the `scale_out` module).
//! - With `--content`, `## Large content`, after the sections above (or alone with
//!   `--content-only`): per file size, sealing + BLAKE3 on one core in memory, raw iroh bulk
//!   throughput on one QUIC stream, a file between two content nodes (seal, fetch against the
//!   raw bulk figure: target 50 %, floor 50 MB/s, fetch + open), and a file sent through the
//!   relay's content store by one device and received from it by another once the sender is
//!   offline (skipped, with the reason, when the relay has no content store); then a summary
//!   table (see the `content` module). No verdict among the targets below.
//! - Ratios and this project's targets, each marked `met` or `not met`: relay throughput at
//!   least 80 % of raw SQLite inserts (1 and 16 devices); idle push p99 at most 1 ms;
//!   push→notify p99 at most 1.5 ms with no notify missing; a group holding the preload within
//!   10 % of an empty group's throughput (against run `[1]`'s single device, and within the
//!   same relay); with `--attack`, 16-device throughput under attack at least 80 % of the quiet
//!   run's and idle push p99 under attack at most twice the quiet run's. Also, without target:
//!   relay throughput against the pipelined echo ceiling, relay CPU per push against the raw
//!   SQLite CPU per row, and (with `--attack`) relay CPU per push under attack against quiet.
//!
//! The benchmark reports; a missed target never makes it fail. Its exit status says only
//! whether it could run.
//!
//! CPU figures come from `/proc` (per-thread `schedstat`, nanoseconds; Linux only), so they
//! count every thread of the relay or echo process and of this load generator (the attackers'
//! thread apart).

mod attack;
mod content;
mod cpu;
mod echo;
mod frames;
mod measure;
mod perf;
mod plan;
mod preload;
mod quic_baseline;
mod relay;
mod rotation;
mod runner;
mod scale_out;
mod sealed;
mod session;
mod sqlite_baseline;
mod targets;

use std::ffi::OsString;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

pub use content::{
    CONTENT_SIZE_RANGE, ContentFigures, DEFAULT_CONTENT_SIZES, MAX_CONTENT_SIZES, check_sizes,
    parse_size,
};
pub use echo::serve_echo;
pub use rotation::DEFAULT_SIZES as DEFAULT_ROTATION_SIZES;
pub use runner::{Report, run};
pub use targets::{AttackFigures, Figures, Verdict, target_lines};

/// Size of every sealed blob the relay stores.
pub const SEALED: usize = 1024;
/// Plaintext size that seals to [`SEALED`] bytes.
pub const PLAIN: usize = SEALED - sync_crypto::SEAL_OVERHEAD;
/// Lifetime of the preloaded blobs (the relay's default TTL).
const TTL: Duration = Duration::from_secs(7 * 86_400);
/// Pushes per device before each timed run (not timed).
const WARMUP: usize = 50;

/// Accepted `--preload` values.
pub const PRELOAD_RANGE: RangeInclusive<usize> = 1..=10_000_000;
/// Accepted `--pushes` values (16 devices share one run, so at least one push each).
pub const PUSHES_RANGE: RangeInclusive<usize> = 16..=10_000_000;
/// Accepted `--samples` values (a tenth more are taken and dropped as warm-up).
pub const SAMPLES_RANGE: RangeInclusive<usize> = 10..=1_000_000;
/// Accepted group sizes of the key rotation section (devices, the admin included; a group's
/// records name at most 512).
pub const ROTATION_SIZE_RANGE: RangeInclusive<usize> = 2..=sync_crypto::MAX_MEMBERS;
/// Most group sizes one key rotation section measures.
pub const MAX_ROTATION_SIZES: usize = 8;
/// Accepted `--rotations` values (timed rotations per group size).
pub const ROTATIONS_RANGE: RangeInclusive<usize> = 1..=100;
/// Accepted `--kills` values (relay kills of the scale-out section's failover run).
pub const KILLS_RANGE: RangeInclusive<usize> = 1..=1000;
/// Relay kills of the scale-out section's failover run by default.
pub const DEFAULT_KILLS: usize = 20;

/// What the scale-out section measures (see the `scale_out` module).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleOut {
    /// Pushes per throughput run, shared by its 16 devices (range [`PUSHES_RANGE`]).
    pub pushes: usize,
    /// Relay kills of the failover run (range [`KILLS_RANGE`]).
    pub kills: usize,
}

/// What the large content section measures (see the `content` module).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentConfig {
    /// Plaintext sizes, in order (each in [`CONTENT_SIZE_RANGE`], at most
    /// [`MAX_CONTENT_SIZES`]).
    pub sizes: Vec<u64>,
    /// Run this section alone: none of the relay push runs, baselines or targets.
    pub only: bool,
}

/// What one benchmark run does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchConfig {
    /// Blobs preloaded into the "full" group of the second relay.
    pub preload: usize,
    /// Pushes per throughput run.
    pub pushes: usize,
    /// Latency samples per latency run.
    pub samples: usize,
    /// The `sync-relay` binary.
    pub relay_bin: PathBuf,
    /// How to start the echo process: a program and its arguments (`sync-stress bench-echo`).
    pub echo_command: (PathBuf, Vec<OsString>),
    /// When set, `perf record` of the relay during each throughput run, into
    /// `<prefix>-<label>.data`.
    pub perf_prefix: Option<PathBuf>,
    /// With `perf_prefix`: record call graphs too (DWARF unwinding).
    pub perf_callgraph: bool,
    /// Repeat the 16-device throughput run and the idle latency run while hostile connections
    /// attack the relay (see the `attack` runs in the module documentation).
    pub attack: bool,
    /// Group sizes of the key rotation section, in order; empty: no such section.
    pub rotation_sizes: Vec<usize>,
    /// Timed rotations per group size in the key rotation section.
    pub rotations: usize,
    /// The scale-out section (relays on one PostgreSQL), when the run has it.
    pub scale_out: Option<ScaleOut>,
    /// The large content section, when the run has it.
    pub content: Option<ContentConfig>,
}

impl BenchConfig {
    /// The defaults of a full run: 1,000,000 preloaded blobs, 20,000 pushes, 2,000 samples.
    pub fn new(relay_bin: PathBuf, echo_command: (PathBuf, Vec<OsString>)) -> Self {
        Self {
            preload: 1_000_000,
            pushes: 20_000,
            samples: 2_000,
            relay_bin,
            echo_command,
            perf_prefix: None,
            perf_callgraph: false,
            attack: false,
            rotation_sizes: Vec::new(),
            rotations: 5,
            scale_out: None,
            content: None,
        }
    }

    /// The counts of `--quick`: a short run that still exercises every figure.
    pub fn quick(mut self) -> Self {
        self.preload = 5_000;
        self.pushes = 2_000;
        self.samples = 200;
        self.rotations = 3;
        self
    }

    /// Checks the counts against [`PRELOAD_RANGE`], [`PUSHES_RANGE`], [`SAMPLES_RANGE`],
    /// [`ROTATIONS_RANGE`], the key rotation group sizes against [`ROTATION_SIZE_RANGE`] (at
    /// most [`MAX_ROTATION_SIZES`] of them), and the scale-out section's pushes and kills
    /// against [`PUSHES_RANGE`] and [`KILLS_RANGE`].
    pub fn validate(&self) -> Result<(), BenchError> {
        if let Some(content) = &self.content {
            check_sizes(&content.sizes).map_err(BenchError::Invalid)?;
        }
        if self.rotation_sizes.len() > MAX_ROTATION_SIZES {
            return Err(BenchError::Invalid(format!(
                "{} rotation group sizes (at most {MAX_ROTATION_SIZES})",
                self.rotation_sizes.len()
            )));
        }
        let sizes = self
            .rotation_sizes
            .iter()
            .map(|n| ("rotation group size", *n, ROTATION_SIZE_RANGE));
        let scale_out = self.scale_out.iter().flat_map(|s| {
            [
                ("scale-out pushes", s.pushes, PUSHES_RANGE),
                ("kills", s.kills, KILLS_RANGE),
            ]
        });
        for (name, value, range) in [
            ("preload", self.preload, PRELOAD_RANGE),
            ("pushes", self.pushes, PUSHES_RANGE),
            ("samples", self.samples, SAMPLES_RANGE),
            ("rotations", self.rotations, ROTATIONS_RANGE),
        ]
        .into_iter()
        .chain(sizes)
        .chain(scale_out)
        {
            if !range.contains(&value) {
                return Err(BenchError::Invalid(format!(
                    "{name} {value} is out of range ({} to {})",
                    range.start(),
                    range.end()
                )));
            }
        }
        Ok(())
    }
}

/// Why a benchmark run could not complete (a missed target is not an error).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// A count is out of range.
    #[error("{0}")]
    Invalid(String),
    /// The relay process could not be started.
    #[error("relay: {0}")]
    Relay(#[from] sync_testkit::TestkitError),
    /// The echo process could not be started or did not report ready.
    #[error("echo process: {0}")]
    Echo(String),
    /// A QUIC endpoint, connection or stream failed.
    #[error("QUIC: {0}")]
    Quic(String),
    /// The relay answered something the benchmark did not ask for (e.g. refused a push).
    #[error("relay answered unexpectedly: {0}")]
    Protocol(String),
    /// A frame could not be encoded or decoded.
    #[error("frame: {0}")]
    Frame(#[from] sync_types::FrameError),
    /// Sealing a blob failed.
    #[error("sealing: {0}")]
    Crypto(#[from] sync_crypto::CryptoError),
    /// The relay's storage library failed during the preload.
    #[error("preload: {0}")]
    Storage(#[from] sync_relay::StorageError),
    /// The raw SQLite baseline failed.
    #[error("raw SQLite baseline: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A device of the key rotation section failed (connect, rotate, a wait that ran out).
    #[error("key rotation: {0}")]
    Rotation(String),
    /// The PostgreSQL server or the raw PostgreSQL baseline failed.
    #[error("PostgreSQL: {0}")]
    Postgres(String),
    /// The scale-out section's failover run failed (the device, a wait that ran out).
    #[error("failover: {0}")]
    Failover(String),
    /// The large content section failed (sealing, a store, a transfer, a device).
    #[error("large content: {0}")]
    Content(String),
    /// A file, directory, thread or the output failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The operating system's error.
        source: std::io::Error,
    },
}

impl BenchError {
    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}

/// A QUIC failure while doing `what`.
fn quic_error(what: &str, e: impl std::fmt::Display) -> BenchError {
    BenchError::Quic(format!("{what}: {e}"))
}

/// A task or blocking job the benchmark waited on was cancelled or panicked.
fn joined<T>(r: Result<T, tokio::task::JoinError>, what: &str) -> Result<T, BenchError> {
    r.map_err(|e| BenchError::Io {
        what: format!("{what} did not finish"),
        source: std::io::Error::other(e.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BenchConfig {
        BenchConfig::new("sync-relay".into(), ("sync-stress".into(), Vec::new()))
    }

    #[test]
    fn defaults_and_quick_counts_are_valid() {
        config().validate().unwrap();
        config().quick().validate().unwrap();
        BenchConfig {
            rotation_sizes: DEFAULT_ROTATION_SIZES.to_vec(),
            ..config().quick()
        }
        .validate()
        .unwrap();
        BenchConfig {
            scale_out: Some(ScaleOut {
                pushes: 2_000,
                kills: DEFAULT_KILLS,
            }),
            ..config().quick()
        }
        .validate()
        .unwrap();
        assert!(config().quick().preload < config().preload);
    }

    #[test]
    fn counts_out_of_range_are_refused() {
        for bad in [
            BenchConfig {
                preload: 0,
                ..config()
            },
            BenchConfig {
                pushes: 15,
                ..config()
            },
            BenchConfig {
                samples: 2_000_000,
                ..config()
            },
            BenchConfig {
                rotations: 0,
                ..config()
            },
            BenchConfig {
                rotation_sizes: vec![2, 1],
                ..config()
            },
            BenchConfig {
                rotation_sizes: vec![513],
                ..config()
            },
            BenchConfig {
                rotation_sizes: vec![2; MAX_ROTATION_SIZES + 1],
                ..config()
            },
            BenchConfig {
                scale_out: Some(ScaleOut {
                    pushes: 20_000,
                    kills: 0,
                }),
                ..config()
            },
            BenchConfig {
                scale_out: Some(ScaleOut {
                    pushes: 15,
                    kills: 20,
                }),
                ..config()
            },
            BenchConfig {
                content: Some(ContentConfig {
                    sizes: vec![512 << 10],
                    only: true,
                }),
                ..config()
            },
            BenchConfig {
                content: Some(ContentConfig {
                    sizes: Vec::new(),
                    only: false,
                }),
                ..config()
            },
        ] {
            assert!(matches!(bad.validate(), Err(BenchError::Invalid(_))));
        }
        BenchConfig {
            content: Some(ContentConfig {
                sizes: DEFAULT_CONTENT_SIZES.to_vec(),
                only: false,
            }),
            ..config()
        }
        .validate()
        .unwrap();
    }
}
