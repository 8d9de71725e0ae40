//! The campaign's verdict, as pure functions of what was measured: [`check_phase`] holds one
//! phase's messages against the loss and p99 thresholds when the phase ends, [`group_rows`] the
//! group phase's key rotation and revocation, [`failover_rows`] the failover phase's relay kill,
//! [`judge`] the whole run (the threshold table, PASS / FAIL / NOT MEASURED and the exit code).

use crate::report::{PhaseResult, PhaseStatus, ThresholdRow};
use crate::soak::{self, LeakLimits};
use crate::stats::Summary;

/// Exit code when a threshold is missed.
pub const EXIT_THRESHOLD: u8 = 3;
/// Exit code when no phase that ran measured anything (e.g. `--phase group`): not a pass.
pub const EXIT_NOTHING_MEASURED: u8 = 4;

/// The limits a campaign is judged by (its `--max-*`, soak and FD options).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Largest loss of any phase, percent.
    pub max_loss_pct: f64,
    /// Largest p99 RTT of any phase, milliseconds.
    pub max_p99_ms: f64,
    /// Largest relay RSS growth after warm-up in the endurance phase, percent per hour.
    pub max_rss_growth: f64,
    /// Endurance seconds not used for RSS growth.
    pub rss_warmup_s: u64,
    /// Shortest window after warm-up over which RSS growth is judged, seconds.
    pub min_soak_window_s: u64,
    /// Open FDs of the relay at the end of endurance may exceed those at its start by this many.
    pub fd_slack: u64,
    /// Longest time from the admin calling `revoke()` to the revoked device seeing itself
    /// refused, milliseconds (group phase).
    pub max_refusal_ms: f64,
}

impl Thresholds {
    /// The limits of the endurance phase's leak checks.
    pub fn leak_limits(&self) -> LeakLimits {
        #[allow(clippy::cast_precision_loss)]
        LeakLimits {
            warmup_s: self.rss_warmup_s as f64,
            min_window_s: self.min_soak_window_s as f64,
            max_rss_growth_pct_per_hour: self.max_rss_growth,
            fd_slack: self.fd_slack,
        }
    }
}

/// The scan of the relay's storage for the e2e phase's plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlaintextScan {
    /// Remote relay: its storage is not on this machine (not a failure, and said so).
    NotScanned,
    /// Scanned: how many of the messages' plaintexts were found (must be 0).
    Found(usize),
    /// The scan was due (`--local`) but could not be done: the check fails.
    Failed(String),
}

impl PlaintextScan {
    /// Nothing found, or nothing to scan.
    pub fn ok(&self) -> bool {
        matches!(self, PlaintextScan::NotScanned | PlaintextScan::Found(0))
    }

    /// For events and reports.
    pub fn describe(&self) -> String {
        match self {
            PlaintextScan::NotScanned => "not scanned (remote relay)".into(),
            PlaintextScan::Found(n) => n.to_string(),
            PlaintextScan::Failed(e) => format!("scan FAILED ({e})"),
        }
    }
}

/// What the e2e phase verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct E2eCheck {
    /// Answers whose content, signer or decryption did not check out.
    pub failed: u32,
    /// Blobs the client rejected (signature or AEAD) during the phase.
    pub rejected: u64,
    /// The relay storage scan.
    pub plaintext: PlaintextScan,
}

impl E2eCheck {
    /// Every answer verified, nothing rejected, no plaintext at the relay.
    pub fn ok(&self) -> bool {
        self.failed == 0 && self.rejected == 0 && self.plaintext.ok()
    }
}

/// A key change the group phase's admin made (a rotation, or a revocation, which is a rotation
/// leaving devices out).
#[derive(Debug, Clone, PartialEq)]
pub enum KeyChange {
    /// Done: the new epoch, and how long the admin's call took (milliseconds).
    Done {
        /// The epoch the group moved to.
        epoch: u32,
        /// From the call to its return.
        call_ms: f64,
    },
    /// Refused, failed or never attempted (the phase's setup failed): why.
    Failed(String),
}

impl KeyChange {
    /// For reports: `epoch 1 in 12.3 ms`, or `FAILED: …`.
    pub fn describe(&self) -> String {
        match self {
            KeyChange::Done { epoch, call_ms } => format!("epoch {epoch} in {call_ms:.1} ms"),
            KeyChange::Failed(why) => format!("FAILED: {why}"),
        }
    }

    fn done(&self) -> bool {
        matches!(self, KeyChange::Done { .. })
    }
}

/// The revoked device seeing itself refused by the relay.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// From the admin calling `revoke()` to the device seeing the refusal, milliseconds.
    pub after_call_ms: f64,
    /// What it saw: its session ended, or a reconnect refused (with the relay's code).
    pub how: String,
}

/// What the group phase measured: traffic of the remaining members across a key rotation and a
/// revocation, and the revoked device after it.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupCheck {
    /// The admin's rotation.
    pub rotation: KeyChange,
    /// The admin's revocation of one device.
    pub revocation: KeyChange,
    /// Messages every other remaining member had to receive: every message of a remaining
    /// member, and every message of the revoked device the relay acknowledged before the
    /// revocation.
    pub messages: u64,
    /// Of those, messages that did not reach every other remaining member.
    pub lost: u64,
    /// Blobs a remaining member pulled and could not open or verify.
    pub undecryptable: u64,
    /// Other integrity problems remaining members found (replays, withheld cursors, gaps in a
    /// sender's numbering).
    pub integrity: u64,
    /// When and how the revoked device saw itself refused; `None`: it never did.
    pub refusal: Option<Refusal>,
    /// Plaintext blobs the revoked device obtained that were sealed after `revoke()` returned.
    pub revoked_reads: u64,
    /// Sessions the relay admitted for the revoked device after `revoke()` returned.
    pub revoked_admitted: u64,
}

impl GroupCheck {
    /// Every group threshold met.
    pub fn ok(&self, limits: &Thresholds) -> bool {
        group_rows(self, limits).iter().all(|r| r.ok)
    }
}

/// The group phase's rows of the threshold table: both key changes done, nothing lost, nothing
/// undecryptable, the revoked device refused within `--max-refusal-ms` and reading nothing new.
pub fn group_rows(c: &GroupCheck, limits: &Thresholds) -> Vec<ThresholdRow> {
    let refused = match &c.refusal {
        Some(r) => ThresholdRow {
            name: GROUP_REFUSAL.into(),
            limit: format!("≤ {} ms", limits.max_refusal_ms),
            observed: format!("{:.1} ms ({})", r.after_call_ms, r.how),
            ok: r.after_call_ms <= limits.max_refusal_ms,
        },
        None => ThresholdRow {
            name: GROUP_REFUSAL.into(),
            limit: format!("≤ {} ms", limits.max_refusal_ms),
            observed: "never refused".into(),
            ok: false,
        },
    };
    vec![
        ThresholdRow {
            name: "group: key rotation, then revocation, by the admin".into(),
            limit: "both done".into(),
            observed: format!(
                "rotation {}; revocation {}",
                c.rotation.describe(),
                c.revocation.describe()
            ),
            ok: c.rotation.done() && c.revocation.done(),
        },
        ThresholdRow {
            name: "group: messages lost across the rotation and revocation (remaining members)"
                .into(),
            limit: "0".into(),
            observed: format!("{} of {}", c.lost, c.messages),
            ok: c.lost == 0,
        },
        ThresholdRow {
            name: "group: blobs undecryptable, other integrity problems (remaining members)"
                .into(),
            limit: "0, 0".into(),
            observed: format!("{}, {}", c.undecryptable, c.integrity),
            ok: c.undecryptable == 0 && c.integrity == 0,
        },
        refused,
        ThresholdRow {
            name: "group: revoked device's reads of blobs sealed after its revocation, sessions admitted after it".into(),
            limit: "0, 0".into(),
            observed: format!("{}, {}", c.revoked_reads, c.revoked_admitted),
            ok: c.revoked_reads == 0 && c.revoked_admitted == 0,
        },
    ]
}

/// The refusal row's name.
const GROUP_REFUSAL: &str =
    "group: revoked device refused, from the revoke() call (--max-refusal-ms)";

/// The failover phase's name: its latencies carry the outage on purpose (messages pushed while
/// the device had not yet noticed the kill wait for the next relay), so they are not held
/// against `--max-p99-ms`; the interruption is reported instead.
pub const FAILOVER_PHASE: &str = "failover";

/// How the devices came through the kill of their relay.
#[derive(Debug, Clone, PartialEq)]
pub struct Interruption {
    /// From the last push acknowledged before the kill to the first one acknowledged by the next
    /// relay, milliseconds.
    pub acks_ms: f64,
    /// From the kill to the slowest device noticing its session was gone, milliseconds.
    pub detect_ms: Option<f64>,
    /// From noticing it to being connected to the next relay (the slowest device),
    /// milliseconds.
    pub reconnect_ms: Option<f64>,
}

/// What the failover phase measured: pushes through the SIGKILL of the relay the devices used,
/// read back by a device that failed over too.
#[derive(Debug, Clone, PartialEq)]
pub struct FailoverCheck {
    /// Messages pushed (each queued by its device before the phase ended).
    pub messages: u64,
    /// Of those, messages the reader never received.
    pub lost: u64,
    /// Messages the reader received more than once (each extra copy counted).
    pub duplicated: u64,
    /// The interruption; `None`: no push was acknowledged after the kill.
    pub interruption: Option<Interruption>,
}

impl FailoverCheck {
    /// Every failover threshold met.
    pub fn ok(&self) -> bool {
        failover_rows(self).iter().all(|r| r.ok)
    }
}

/// The failover phase's rows of the threshold table: something was pushed and nothing lost or
/// duplicated (fixed zeros, whatever `--max-loss-pct` says), and pushes were acknowledged again
/// after the kill.
pub fn failover_rows(c: &FailoverCheck) -> Vec<ThresholdRow> {
    let resumed = match &c.interruption {
        Some(i) => ThresholdRow {
            name: FAILOVER_RESUMED.into(),
            limit: "resumed".into(),
            observed: format!(
                "interruption {:.1} ms (last ack before the kill → first ack after); loss noticed {} after the kill, next relay connected {} later",
                i.acks_ms,
                opt_ms(i.detect_ms),
                opt_ms(i.reconnect_ms)
            ),
            ok: true,
        },
        None => ThresholdRow {
            name: FAILOVER_RESUMED.into(),
            limit: "resumed".into(),
            observed: "no push acknowledged after the kill".into(),
            ok: false,
        },
    };
    vec![
        ThresholdRow {
            name: "failover: messages lost, duplicated across the relay's kill".into(),
            limit: "0, 0".into(),
            observed: format!("{} of {}, {}", c.lost, c.messages, c.duplicated),
            ok: c.messages > 0 && c.lost == 0 && c.duplicated == 0,
        },
        resumed,
    ]
}

/// The resumption row's name.
const FAILOVER_RESUMED: &str = "failover: pushes acknowledged by the next relay after the kill";

/// `12.3 ms`, or `–`.
fn opt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.1} ms"))
}

/// Holds one phase's messages against the thresholds; what fails, in words (empty: it passes).
/// A phase that sent nothing, or got no answer at all, fails: it measured nothing.
pub fn check_phase(s: &Summary, limits: &Thresholds) -> Vec<String> {
    let mut failures = Vec::new();
    if s.sent == 0 {
        failures.push("nothing was sent: the phase measured nothing".into());
    }
    if s.sent > 0 && s.received == 0 {
        failures.push("no answer at all (is the responder running in this group?)".into());
    }
    if s.loss_pct > limits.max_loss_pct {
        failures.push(format!(
            "loss {:.2} % above the limit {} %",
            s.loss_pct, limits.max_loss_pct
        ));
    }
    if let Some(p99) = s.p99_ms
        && p99 > limits.max_p99_ms
    {
        failures.push(format!(
            "p99 RTT {p99:.1} ms above the limit {} ms",
            limits.max_p99_ms
        ));
    }
    failures
}

/// How a campaign ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every phase that ran passed, and at least one measured something.
    Pass,
    /// A phase failed (a threshold was missed).
    Fail,
    /// No phase that ran measured anything (only phases that are not available ran).
    NotMeasured,
}

impl Outcome {
    /// `PASS`, `FAIL` or `NOT MEASURED` (the `status` of the `campaign_end` event).
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Pass => "PASS",
            Outcome::Fail => "FAIL",
            Outcome::NotMeasured => "NOT MEASURED",
        }
    }

    /// The process exit code.
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Pass => 0,
            Outcome::Fail => EXIT_THRESHOLD,
            Outcome::NotMeasured => EXIT_NOTHING_MEASURED,
        }
    }

    fn sentence(self) -> &'static str {
        match self {
            Outcome::Pass => "PASS",
            Outcome::Fail => "FAIL: a threshold was missed",
            Outcome::NotMeasured => "NOT MEASURED: no phase that ran measured anything",
        }
    }
}

/// The verdict of a whole campaign.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// PASS, FAIL or NOT MEASURED.
    pub outcome: Outcome,
    /// Every threshold that applied to this run and how the run compares.
    pub thresholds: Vec<ThresholdRow>,
}

impl Verdict {
    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        self.outcome.exit_code()
    }

    /// The thresholds the run missed.
    pub fn failed(&self) -> Vec<&ThresholdRow> {
        self.thresholds.iter().filter(|t| !t.ok).collect()
    }

    /// The report's result line, e.g. `PASS (exit 0)`.
    pub fn line(&self) -> String {
        format!("{} (exit {})", self.outcome.sentence(), self.exit_code())
    }
}

/// The largest `figure` of any phase that ran, with the phase's name.
fn worst<'a>(
    phases: impl Iterator<Item = &'a PhaseResult>,
    figure: impl Fn(&Summary) -> Option<f64>,
) -> Option<(String, f64)> {
    phases
        .filter_map(|p| {
            p.summary
                .as_ref()
                .and_then(&figure)
                .map(|v| (p.name.clone(), v))
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

/// A row for a figure of every phase (loss, p99): its worst value against `limit`.
fn worst_row(
    name: &str,
    limit: f64,
    unit: &str,
    worst: Option<(String, f64)>,
    shown: impl Fn(f64) -> String,
) -> ThresholdRow {
    ThresholdRow {
        name: name.into(),
        limit: format!("≤ {limit} {unit}"),
        observed: worst
            .as_ref()
            .map_or("–".into(), |(n, v)| format!("{} ({n})", shown(*v))),
        ok: worst.as_ref().is_none_or(|(_, v)| *v <= limit),
    }
}

/// The checks of the phases that have their own, when they ran.
#[derive(Debug, Clone, Copy, Default)]
pub struct Checks<'a> {
    /// The e2e phase's verification.
    pub e2e: Option<&'a E2eCheck>,
    /// The group phase's checks.
    pub group: Option<&'a GroupCheck>,
    /// The failover phase's checks.
    pub failover: Option<&'a FailoverCheck>,
    /// The endurance phase's soak verdict.
    pub soak: Option<&'a soak::Verdict>,
}

/// Judges a finished campaign: `phases` as they ended (their status set by [`check_phase`] and
/// the phase's own checks) and the checks of the phases that have their own (e2e
/// verification, the group's key changes, the failover, the endurance soak) when they ran.
/// The p99 row leaves the failover phase out (see [`FAILOVER_PHASE`]).
pub fn judge(phases: &[PhaseResult], checks: Checks<'_>, limits: &Thresholds) -> Verdict {
    let Checks {
        e2e,
        group,
        failover,
        soak,
    } = checks;
    let mut thresholds = vec![
        worst_row(
            "loss, each phase (--max-loss-pct)",
            limits.max_loss_pct,
            "%",
            worst(phases.iter(), |s| Some(s.loss_pct)),
            |v| format!("{v:.2} %"),
        ),
        worst_row(
            "p99 RTT, each phase (--max-p99-ms)",
            limits.max_p99_ms,
            "ms",
            worst(phases.iter().filter(|p| p.name != FAILOVER_PHASE), |s| {
                s.p99_ms
            }),
            |v| format!("{v:.1} ms"),
        ),
    ];
    if let Some(c) = e2e {
        thresholds.push(ThresholdRow {
            name: "e2e: answers failing verification, blobs rejected, plaintext at the relay"
                .into(),
            limit: "0, 0, 0".into(),
            observed: format!("{}, {}, {}", c.failed, c.rejected, c.plaintext.describe()),
            ok: c.ok(),
        });
    }
    if let Some(g) = group {
        thresholds.extend(group_rows(g, limits));
    }
    if let Some(f) = failover {
        thresholds.extend(failover_rows(f));
    }
    if let Some(v) = soak {
        thresholds.push(ThresholdRow {
            name: "relay RSS growth after warm-up (--max-rss-growth)".into(),
            limit: format!(
                "≤ {} %/h over ≥ {} s",
                limits.max_rss_growth, limits.min_soak_window_s
            ),
            observed: format!("{}: {}", v.rss.label(), v.rss.detail()),
            ok: !v.rss.failed(),
        });
        thresholds.push(ThresholdRow {
            name: "relay open FDs back to baseline (--fd-slack)".into(),
            limit: format!("≤ baseline + {}", limits.fd_slack),
            observed: format!("{}: {}", v.fds.label(), v.fds.detail()),
            ok: !v.fds.failed(),
        });
    }
    // A campaign passes only on what it measured: phases that are not available (or sent
    // nothing) never make a PASS on their own.
    let measured = phases
        .iter()
        .any(|p| p.summary.as_ref().is_some_and(|s| s.sent > 0));
    let outcome = if phases.iter().any(|p| p.status == PhaseStatus::Fail) {
        Outcome::Fail
    } else if !measured {
        Outcome::NotMeasured
    } else {
        Outcome::Pass
    };
    Verdict {
        outcome,
        thresholds,
    }
}

#[cfg(test)]
mod tests;
