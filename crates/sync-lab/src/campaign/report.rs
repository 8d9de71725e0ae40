//! The campaign's outputs once it ended: the `campaign_end` event, then `campaign-report.md`
//! and `report.html` (through [`crate::report`]) with the run's setup, phases, thresholds,
//! every message and the relay's samples.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::json;
use sync_client::{ClientStatus, InvitedGroup};

use super::Args;
use super::CampaignError;
use super::verdict::Verdict;
use crate::events::{EventLog, round3};
use crate::report::{self, Impairment, Marker, PhaseResult, Point, Report};
use crate::soak::{self, Sample};

/// The UTC date (`YYYY-MM-DD`) and time (`HH:MM:SS`) of a Unix time in seconds.
pub(super) fn utc(unix_s: u64) -> (String, String) {
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(unix_s);
    // `YYYY-MM-DDTHH:MM:SSZ`
    let stamp = humantime::format_rfc3339_seconds(at).to_string();
    let (date, time) = stamp.split_once('T').unwrap_or((&stamp, ""));
    (date.to_string(), time.trim_end_matches('Z').to_string())
}

/// The default output directory of a campaign started at `unix_s`:
/// `campaign-<UTC date>-<HHMMSS>`.
pub(super) fn default_out(unix_s: u64) -> PathBuf {
    let (d, t) = utc(unix_s);
    PathBuf::from(format!("campaign-{d}-{}", t.replace(':', "")))
}

/// What the report's setup section says about the run.
pub(super) struct Setup<'a> {
    /// The command line.
    pub(super) args: &'a Args,
    /// When the campaign started (Unix seconds).
    pub(super) started_unix: u64,
    /// Local or remote relay, in words.
    pub(super) mode: &'static str,
    /// The impairment proxy's setup line, with `--impair`.
    pub(super) impairment: Option<String>,
    /// The relay: short id and addresses.
    pub(super) relay: String,
    /// The campaign device (short id).
    pub(super) device: String,
    /// The responder's device (short id), once it answered.
    pub(super) responder: Option<String>,
    /// The group (short id).
    pub(super) group: String,
    /// The relay binary of `--local`.
    pub(super) relay_bin: Option<PathBuf>,
    /// How the local processes stopped: (process, outcome).
    pub(super) stops: Vec<(String, String)>,
    /// The output directory.
    pub(super) out: &'a Path,
}

impl<'a> Setup<'a> {
    /// The setup of a campaign with `args`, started at `started_unix`, writing to `out`, whose
    /// device has `status` in the group of `joined`.
    pub(super) fn new(
        args: &'a Args,
        started_unix: u64,
        out: &'a Path,
        joined: &InvitedGroup,
        status: &ClientStatus,
    ) -> Self {
        Setup {
            args,
            started_unix,
            mode: if args.local {
                "local (relay and responder started by this command on 127.0.0.1)"
            } else {
                "remote relay"
            },
            impairment: None,
            relay: format!(
                "{} at {}",
                joined.relay.id.short(),
                joined.relay.addrs.join(", ")
            ),
            device: status.device_id.short(),
            responder: None,
            group: status.group_id.short(),
            relay_bin: None,
            stops: Vec::new(),
            out,
        }
    }

    fn date_time(&self) -> String {
        let (date, time) = utc(self.started_unix);
        format!("{date} {time} UTC")
    }

    /// The (label, value) lines of the report's setup section.
    fn lines(self) -> Vec<(String, String)> {
        let a = self.args;
        let local = a.local;
        let setup_text = a.setup.clone().unwrap_or_else(|| {
            if local {
                "one machine, loopback (--local)".to_string()
            } else {
                "campaign device ↔ relay ↔ responder device".to_string()
            }
        });
        let counts = format!(
            "ping {} (gap {} ms), burst {}×{}, e2e {}, group {} devices + admin at {}/s each for {} s, failover {} messages from {} pushers at {}/s each, endurance {} s at {}/s (windows of {} s), reply timeout {} s",
            a.ping_count,
            a.ping_gap_ms,
            a.burst_rounds,
            a.burst_size,
            a.e2e_count,
            a.group_devices,
            a.group_rate,
            a.group_seconds(),
            a.failover_messages,
            a.failover_pushers,
            a.failover_rate,
            a.duration,
            a.rate,
            a.rolling_interval,
            a.reply_timeout
        );
        let mut lines = vec![
            ("date", self.date_time()),
            ("setup", setup_text),
            ("mode", self.mode.to_string()),
            (
                "impairment",
                self.impairment.unwrap_or_else(|| "none".to_string()),
            ),
            ("relay", self.relay),
            ("campaign device", self.device),
            (
                "responder device",
                self.responder
                    .unwrap_or_else(|| "never answered".to_string()),
            ),
            ("group", self.group),
            (
                "message path",
                "campaign → relay → responder → relay → campaign; RTT = push until the answer is pulled, verified and decrypted".to_string(),
            ),
            ("counts", counts),
        ];
        if let Some(bin) = &self.relay_bin {
            lines.push(("relay binary", bin.display().to_string()));
        }
        let mut lines: Vec<(String, String)> =
            lines.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        lines.extend(self.stops);
        lines.push(("output".to_string(), self.out.display().to_string()));
        lines
    }
}

/// What the campaign measured, for the reports.
pub(super) struct Measured {
    /// Every phase in run order (skipped and not available ones included).
    pub(super) phases: Vec<PhaseResult>,
    /// Every message sent.
    pub(super) points: Vec<Point>,
    /// Every relay sample.
    pub(super) samples: Vec<Sample>,
    /// What the samples cover.
    pub(super) sampling: String,
    /// The endurance phase's leak verdict.
    pub(super) soak: Option<soak::Verdict>,
    /// Impaired periods.
    pub(super) impairments: Vec<Impairment>,
    /// Key events.
    pub(super) markers: Vec<Marker>,
}

/// Writes the `campaign_end` event, then the event log, `campaign-report.md` and `report.html`
/// into `setup.out`; the report's result line.
pub(super) fn write(
    log: &EventLog,
    setup: Setup<'_>,
    measured: Measured,
    verdict: Verdict,
) -> Result<String, CampaignError> {
    let duration_s = log.elapsed_s();
    let phases: Vec<_> = measured
        .phases
        .iter()
        .map(|p| json!({"phase": p.name, "status": p.status.label()}))
        .collect();
    log.emit(
        "summary",
        "campaign_end",
        &[
            ("status", json!(verdict.outcome.label())),
            ("exit_code", json!(verdict.exit_code())),
            ("duration_s", json!(round3(duration_s))),
            ("phases", json!(phases)),
        ],
    );
    let out = setup.out;
    let mut points = measured.points;
    points.sort_by(|a, b| a.sent_s.total_cmp(&b.sent_s));
    let rep = Report {
        title: format!("sync-stress campaign — {}", setup.date_time()),
        setup: setup.lines(),
        phases: measured.phases,
        thresholds: verdict.thresholds.clone(),
        verdict: verdict.line(),
        points,
        samples: measured.samples,
        sampling: measured.sampling,
        soak: measured.soak,
        impairments: measured.impairments,
        markers: {
            let mut m = measured.markers;
            m.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
            m
        },
        duration_s,
    };
    log.finish()
        .map_err(CampaignError::io("cannot write events.jsonl"))?;
    std::fs::write(out.join("campaign-report.md"), report::markdown(&rep))
        .map_err(CampaignError::io("cannot write campaign-report.md"))?;
    std::fs::write(out.join("report.html"), report::html(&rep))
        .map_err(CampaignError::io("cannot write report.html"))?;
    Ok(rep.verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), ("1970-01-01".into(), "00:00:00".into()));
        assert_eq!(
            utc(1_795_305_600 + 3661),
            ("2026-11-22".into(), "01:01:01".into())
        );
        assert_eq!(
            default_out(1_795_305_600 + 3661),
            PathBuf::from("campaign-2026-11-22-010101")
        );
    }
}
