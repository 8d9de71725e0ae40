//! The command line of `sync-stress campaign`: where the relay and the responder are, which
//! phases run, how many messages they send, and the thresholds the run is judged by.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::verdict::Thresholds;
use crate::device::INVITE_ENV;
use crate::values::{parse_number, parse_rate_within};

/// Fastest endurance rate: one message per millisecond (a shorter period is no period at all
/// for the timer).
pub(super) const MAX_RATE: f64 = 1000.0;
/// Slowest endurance rate.
pub(super) const MIN_RATE: f64 = 0.001;

/// `--rate`: messages per second, from [`MIN_RATE`] to [`MAX_RATE`].
fn parse_rate(s: &str) -> Result<f64, String> {
    parse_rate_within(s, MIN_RATE, MAX_RATE, " (a period of at least 1 ms)")
}

/// Slowest message rate of a group device.
pub(super) const MIN_GROUP_RATE: f64 = 0.1;
/// Fastest message rate of a group device.
pub(super) const MAX_GROUP_RATE: f64 = 50.0;
/// Shortest group phase, in seconds: a third of it each for traffic before the rotation,
/// between the rotation and the revocation, and after the revocation.
pub(super) const MIN_GROUP_SECONDS: u64 = 3;
/// Longest group phase taken from `--duration` when `--group-duration` is not given.
const GROUP_SECONDS_FROM_DURATION: u64 = 60;

/// `--group-rate`: messages per second of each group device.
fn parse_group_rate(s: &str) -> Result<f64, String> {
    parse_rate_within(s, MIN_GROUP_RATE, MAX_GROUP_RATE, " per device")
}

/// Slowest message rate of a failover pusher.
pub(super) const MIN_FAILOVER_RATE: f64 = 0.1;
/// Fastest message rate of a failover pusher.
pub(super) const MAX_FAILOVER_RATE: f64 = 1000.0;

/// `--failover-rate`: messages per second of each failover pusher.
fn parse_failover_rate(s: &str) -> Result<f64, String> {
    parse_rate_within(s, MIN_FAILOVER_RATE, MAX_FAILOVER_RATE, " per pusher")
}

/// A threshold: a finite number ≥ 0 (NaN would make every comparison pass).
fn parse_threshold(s: &str) -> Result<f64, String> {
    parse_number(s, |v| v >= 0.0, "must be a finite number ≥ 0")
}

/// Shown after `--help`.
const AFTER_HELP: &str = "Exit codes: 0 every phase that ran passed and at least one measured \
something; 3 a threshold was missed; 4 nothing was measured (only phases that are not \
available ran, e.g. --phase failover without --local); 1 setup or runtime error; 2 bad command \
line.";

/// Which phases to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PhaseArg {
    /// RTT baseline.
    Ping,
    /// Loss under load.
    Burst,
    /// Encryption and signatures verified end to end.
    E2e,
    /// Group traffic across a key rotation and a revocation; the revoked device refused.
    Group,
    /// Two relays on one PostgreSQL; the one the devices use is SIGKILLed mid-traffic
    /// (with --local).
    Failover,
    /// 1 msg/s for --duration, rolling stats, relay soak checks.
    Endurance,
    /// Every phase in order.
    All,
}

impl PhaseArg {
    /// The lowercase name used on the command line and in reports.
    pub fn name(self) -> String {
        format!("{self:?}").to_lowercase()
    }
}

/// Arguments of `sync-stress campaign`.
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
#[allow(clippy::struct_excessive_bools)]
pub struct Args {
    /// Invite string (`0ksync1:…`) of the group the responder answers in. Prefer the
    /// environment variable. Not needed with --local.
    #[arg(long, env = INVITE_ENV, hide_env_values = true, value_name = "INVITE",
          required_unless_present = "local", conflicts_with = "local")]
    pub invite: Option<String>,
    /// Start a relay (the `sync-relay` binary) and a responder (`sync-stress responder`) on
    /// loopback, create the group, run the campaign and stop them.
    #[arg(long)]
    pub local: bool,
    /// The relay binary for --local. Default: `sync-relay` next to this binary, then on PATH.
    #[arg(long, value_name = "PATH", requires = "local")]
    pub relay_bin: Option<PathBuf>,
    /// Phase to run.
    #[arg(long, value_enum, default_value_t = PhaseArg::All)]
    pub phase: PhaseArg,
    /// With --local: route the campaign device's traffic through the UDP impairment proxy with
    /// these impairments, both directions, e.g. `loss=5%,delay=20ms`. Keys: delay, jitter, loss,
    /// reorder, duplicate, rate. The relay then listens on `[::1]` only and the device on
    /// 127.0.0.1 only, so iroh cannot migrate to a direct path around the proxy.
    #[arg(long, value_name = "IMPAIRMENTS", requires = "local")]
    pub impair: Option<String>,
    /// Phases during which --impair applies (comma-separated; default: every phase that
    /// runs). Outside them the proxy forwards untouched.
    #[arg(
        long,
        value_name = "PHASES",
        value_enum,
        value_delimiter = ',',
        requires = "impair"
    )]
    pub impair_phases: Vec<PhaseArg>,
    /// Length of the endurance phase in seconds (1 to 2592000, 30 days); also of the group
    /// phase when --group-duration is not given (then at least 3 and at most 60).
    #[arg(long, value_name = "SECONDS", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(1..=2_592_000))]
    pub duration: u64,
    /// Output directory (created). Default: `campaign-<UTC date>-<time>`.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The relay's HTTP address (`host:port`, as printed after `health:`) for session counts,
    /// when the relay is not local. Only reachable figures are sampled.
    #[arg(long, value_name = "ADDR", conflicts_with = "local")]
    pub relay_http: Option<SocketAddr>,
    /// The relay's process id, when it runs on this machine (RSS and FDs from /proc).
    #[arg(long, value_name = "PID", conflicts_with = "local")]
    pub relay_pid: Option<u32>,
    /// Directory of the campaign device's state. Default: temporary (a new device each run).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Text for the report's setup line (e.g. "MacBook (WiFi) ↔ NAS (LAN)").
    #[arg(long, value_name = "TEXT")]
    pub setup: Option<String>,

    /// Messages in the ping phase (1 to 1,000,000).
    #[arg(long, value_name = "N", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub ping_count: u32,
    /// Pause between pings, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 500)]
    pub ping_gap_ms: u64,
    /// Rounds in the burst phase (1 to 10,000).
    #[arg(long, value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub burst_rounds: u32,
    /// Messages per burst round, sent back to back (1 to 100,000).
    #[arg(long, value_name = "N", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub burst_size: u32,
    /// Messages in the e2e phase (1 to 1,000,000).
    #[arg(long, value_name = "N", default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub e2e_count: u32,
    /// Devices besides the admin in the group phase (2 to 16); the last one is revoked.
    #[arg(long, value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u16).range(2..=16))]
    pub group_devices: u16,
    /// Messages per second each group device pushes, the admin included (0.1 to 50).
    #[arg(long, value_name = "RATE", default_value_t = 2.0, value_parser = parse_group_rate)]
    pub group_rate: f64,
    /// Length of the group phase's traffic in seconds (3 to 86400): the rotation comes after a
    /// third of it, the revocation after two thirds. Default: --duration, at most 60.
    #[arg(long, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(3..=86_400))]
    pub group_duration: Option<u64>,
    /// Messages the failover phase pushes in all (2 to 100,000), shared by its pushers; the
    /// relay is killed once a third of them were acknowledged.
    #[arg(long, value_name = "N", default_value_t = 300,
          value_parser = clap::value_parser!(u32).range(2..=100_000))]
    pub failover_messages: u32,
    /// Devices pushing in the failover phase (1 to 16), besides its reader.
    #[arg(long, value_name = "N", default_value_t = 2,
          value_parser = clap::value_parser!(u16).range(1..=16))]
    pub failover_pushers: u16,
    /// Messages per second each failover pusher pushes (0.1 to 1000).
    #[arg(long, value_name = "RATE", default_value_t = 10.0, value_parser = parse_failover_rate)]
    pub failover_rate: f64,
    /// Messages per second in the endurance phase (0.001 to 1000).
    #[arg(long, value_name = "RATE", default_value_t = 1.0, value_parser = parse_rate)]
    pub rate: f64,
    /// Length of an endurance rolling-stats window, in seconds (1 to 86400).
    #[arg(long, value_name = "SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub rolling_interval: u64,
    /// Interval between relay samples (RSS, FDs, sessions), in seconds (1 to 86400).
    #[arg(long, value_name = "SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub sample_interval: u64,
    /// A message not answered within this many seconds counts as lost (1 to 86400).
    #[arg(long, value_name = "SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub reply_timeout: u64,

    /// Threshold: largest loss of any phase, percent.
    #[arg(long, value_name = "PCT", default_value_t = 0.0, value_parser = parse_threshold)]
    pub max_loss_pct: f64,
    /// Threshold: largest p99 RTT of any phase, milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 2000.0, value_parser = parse_threshold)]
    pub max_p99_ms: f64,
    /// Threshold: longest time from the admin's revoke() call to the revoked device seeing
    /// itself refused (its session ended or its reconnect refused), milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 10_000.0, value_parser = parse_threshold)]
    pub max_refusal_ms: f64,
    /// Threshold: largest relay RSS growth after warm-up in the endurance phase, percent per
    /// hour (judged only over at least --min-soak-window seconds).
    #[arg(long, value_name = "PCT", default_value_t = 10.0, value_parser = parse_threshold)]
    pub max_rss_growth: f64,
    /// Endurance seconds not used for RSS growth (warm-up).
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub rss_warmup: u64,
    /// Shortest window after warm-up over which RSS growth is judged, seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub min_soak_window: u64,
    /// Threshold: open FDs of the relay at the end of endurance may exceed those at its start by
    /// this many.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub fd_slack: u64,
}

impl Args {
    /// Whether `phase` runs in this campaign.
    pub fn selected(&self, phase: PhaseArg) -> bool {
        self.phase == PhaseArg::All || self.phase == phase
    }

    /// Length of the group phase's traffic in seconds: `--group-duration`, else `--duration`
    /// within 3 to 60.
    pub fn group_seconds(&self) -> u64 {
        self.group_duration.unwrap_or_else(|| {
            self.duration
                .clamp(MIN_GROUP_SECONDS, GROUP_SECONDS_FROM_DURATION)
        })
    }

    /// Messages the selected phases are planned to send (the progress bar's length).
    pub fn planned_messages(&self) -> u64 {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let endurance = (self.duration as f64 * self.rate) as u64;
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let group = (f64::from(self.group_devices + 1)
            * self.group_rate
            * self.group_seconds() as f64) as u64;
        [
            (PhaseArg::Ping, u64::from(self.ping_count)),
            (
                PhaseArg::Burst,
                u64::from(self.burst_rounds) * u64::from(self.burst_size),
            ),
            (PhaseArg::E2e, u64::from(self.e2e_count)),
            (PhaseArg::Group, group),
            (PhaseArg::Failover, u64::from(self.failover_messages)),
            (PhaseArg::Endurance, endurance),
        ]
        .iter()
        .filter(|(p, _)| self.selected(*p))
        .map(|(_, n)| n)
        .sum()
    }

    /// The thresholds the campaign is judged by.
    pub fn thresholds(&self) -> Thresholds {
        Thresholds {
            max_loss_pct: self.max_loss_pct,
            max_p99_ms: self.max_p99_ms,
            max_rss_growth: self.max_rss_growth,
            rss_warmup_s: self.rss_warmup,
            min_soak_window_s: self.min_soak_window,
            fd_slack: self.fd_slack,
            max_refusal_ms: self.max_refusal_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    /// `campaign --local` and `extra`, parsed.
    fn parse(extra: &[&str]) -> Result<Args, clap::Error> {
        use clap::Parser as _;
        let mut argv = vec!["campaign", "--local"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).map(|c| c.args)
    }

    #[test]
    fn counts_that_measure_nothing_and_rates_without_a_period_are_refused() {
        assert!(parse(&[]).is_ok());
        for bad in [
            &["--ping-count", "0"][..],
            &["--e2e-count", "0"],
            &["--burst-size", "0"],
            &["--burst-rounds", "0"],
            &["--duration", "0"],
            &["--rate", "0"],
            &["--rate", "1e9"],
            &["--rate", "1000.5"],
            &["--rate", "NaN"],
            &["--rate", "inf"],
            &["--reply-timeout", "18446744073709551615"],
            &["--max-loss-pct", "NaN"],
            &["--max-p99-ms", "-1"],
            &["--group-devices", "1"],
            &["--group-devices", "17"],
            &["--group-rate", "0"],
            &["--group-rate", "51"],
            &["--group-duration", "2"],
            &["--max-refusal-ms", "NaN"],
            &["--failover-messages", "1"],
            &["--failover-pushers", "0"],
            &["--failover-pushers", "17"],
            &["--failover-rate", "0"],
            &["--failover-rate", "1001"],
        ] {
            let e = parse(bad).expect_err(&format!("{bad:?} must be refused"));
            assert_eq!(e.exit_code(), 2, "{bad:?}: a bad command line");
        }
        let a = parse(&["--rate", "1000", "--duration", "5"]).unwrap();
        assert!((a.rate - 1000.0).abs() < f64::EPSILON);
    }

    #[test]
    fn only_selected_phases_count_towards_the_plan() {
        let all = parse(&["--duration", "10", "--rate", "2"]).unwrap();
        // The group phase: 5 devices at 2 msg/s for 10 s.
        assert_eq!(all.planned_messages(), 20 + 3 * 100 + 50 + 100 + 300 + 20);
        let ping = parse(&["--phase", "ping", "--ping-count", "7"]).unwrap();
        assert_eq!(ping.planned_messages(), 7);
        assert!(ping.selected(PhaseArg::Ping) && !ping.selected(PhaseArg::Burst));
        let group = parse(&[
            "--phase",
            "group",
            "--group-devices",
            "3",
            "--duration",
            "20",
        ]);
        assert_eq!(group.unwrap().planned_messages(), 4 * 2 * 20);
        let failover = parse(&["--phase", "failover", "--failover-messages", "40"]).unwrap();
        assert_eq!(failover.planned_messages(), 40);
    }

    #[test]
    fn the_group_phase_takes_its_length_from_duration_within_bounds() {
        let len = |extra: &[&str]| parse(extra).unwrap().group_seconds();
        assert_eq!(len(&[]), 60, "the 1 h default is capped");
        assert_eq!(len(&["--duration", "20"]), 20);
        assert_eq!(len(&["--duration", "1"]), 3, "a third each needs 3 s");
        assert_eq!(len(&["--duration", "5", "--group-duration", "600"]), 600);
    }
}
