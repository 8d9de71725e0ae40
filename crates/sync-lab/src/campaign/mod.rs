//! `sync-stress campaign`: drives the phases against a responder through a relay, writes
//! `events.jsonl` (also on stdout), `campaign-report.md` and `report.html`, and sets the exit
//! code from the thresholds.
//!
//! - [`Args`]: the command line;
//! - `--local` starts a relay (`sync-relay`) and a responder (this executable's `responder`
//!   subcommand) on loopback for the run, optionally behind the impairment proxy (`--impair`);
//! - the phases: ping, burst, e2e, group (a group of its own: traffic across a key rotation
//!   and a revocation), failover (with `--local`: two relays on one PostgreSQL, the one the
//!   devices use SIGKILLed mid-traffic), endurance;
//! - [`verdict`]: the pure judgement of what was measured.
//!
//! Exit codes: 0 every phase that ran met its thresholds and at least one measured something;
//! 3 a threshold was missed; 4 nothing was measured (only phases that are not available ran);
//! 1 setup or runtime error (relay unreachable, responder silent, files not writable); 2 bad
//! command line.

mod args;
mod e2e;
mod error;
mod failover;
mod group;
mod impairment;
mod local;
mod phases;
mod report;
mod session;
mod tagged;
pub mod verdict;

use std::io::{IsTerminal as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use sync_client::{InvitedGroup, SyncClient};
use sync_types::{bind_addr_for, unix_ms};

use self::failover::FailoverTarget;
use self::group::GroupTarget;

pub use args::{Args, PhaseArg};
pub use error::CampaignError;
pub use local::LocalError;

use self::impairment::Impairment;
use self::local::{CHILD_TIMEOUT, LocalLab};
use self::report::{Measured, Setup};
use self::session::{Background, Session};
use crate::device;
use crate::events::{Echo, EventLog};
use crate::impair::DirectionConfig;
use crate::report::PhaseResult;
use crate::soak::{self, Target};

/// Runs the campaign; see the module documentation for exit codes. Logging is the caller's.
pub async fn run(args: Args) -> Result<ExitCode, CampaignError> {
    let direction = args.impair.as_deref().map(impairment::parse_spec);
    let direction = direction.transpose().map_err(CampaignError::ImpairSpec)?;
    let started_unix = unix_ms() / 1000;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| report::default_out(started_unix));
    std::fs::create_dir_all(&out).map_err(CampaignError::io(format!(
        "cannot create {}",
        out.display()
    )))?;
    let t0 = Instant::now();

    let mut local = if args.local {
        let lab = LocalLab::start(&args, &out).await;
        Some(lab.map_err(CampaignError::Local)?)
    } else {
        None
    };
    let invite = match (&local, &args.invite) {
        (Some(l), _) => l.invite.clone(),
        (None, Some(i)) => i.clone(),
        (None, None) => return Err(CampaignError::NoInvite),
    };
    let joined = device::parse_invite(&invite).map_err(CampaignError::Invite)?;
    let target = sampling_target(local.as_ref(), &args);
    let bar = progress_bar();
    let log_path = out.join("events.jsonl");
    let log = EventLog::create(&log_path, t0, echo_around(&bar)).map_err(CampaignError::io(
        format!("cannot write {}", log_path.display()),
    ))?;
    let log = Arc::new(log);
    let impair = match (direction, &args.impair) {
        (Some(direction), Some(spec)) => {
            Some(start_impairment(&args, spec, direction, &joined).await?)
        }
        _ => None,
    };
    let (device_dir, _temp_device) = device_dir(&args)?;
    let dial = impair.as_ref().map(|i| vec![i.local_addr()]);
    let group_target = group_target(&joined, dial.clone(), local.is_some());
    let client = connect(&joined, &device_dir, dial, local.is_some()).await?;

    bar.set_length(args.planned_messages());
    let (session, background) = Session::start(
        client.clone(),
        Arc::clone(&log),
        bar.clone(),
        target.clone(),
        Duration::from_secs(args.reply_timeout),
        local.as_ref().map(|l| l.responder_id),
        impair,
    );
    let mut setup = Setup::new(&args, started_unix, &out, &joined, &client.status());
    setup.relay_bin = local.as_ref().map(|l| l.relay_bin.clone());
    setup.impairment = session.impair.as_ref().map(Impairment::describe);
    log.emit(
        "setup",
        "campaign_start",
        &[
            ("mode", json!(setup.mode)),
            ("relay_addrs", json!(joined.relay.addrs)),
            ("device", json!(setup.device)),
            ("group", json!(setup.group)),
            ("phase", json!(args.phase.name())),
            ("sampling", json!(target.describe())),
        ],
    );

    // Periodic relay samples for the whole run.
    let sampler = session.spawn_sampler(Duration::from_secs(args.sample_interval));
    let relay_data = local.as_ref().map(|l| l.relay.data_dir().to_path_buf());
    let failover_target = local.as_ref().map(|l| FailoverTarget {
        relay_bin: l.relay_bin.clone(),
        out: out.clone(),
    });
    let targets = Targets {
        relay_data: relay_data.as_deref(),
        group: &group_target,
        failover: failover_target.as_ref(),
    };
    let ran = run_phases(&session, &args, &targets).await;
    sampler.abort();
    teardown(&session, background, &client).await;
    let mut stop_ok = true;
    if let Some(l) = local.as_mut() {
        (setup.stops, stop_ok) = stop_local(l, &log);
    }

    let verdict = verdict::judge(
        &ran.phases,
        verdict::Checks {
            e2e: ran.e2e.as_ref(),
            group: ran.group.as_ref(),
            failover: ran.failover.as_ref(),
            soak: ran.soak.as_ref(),
        },
        &args.thresholds(),
    );
    let code = verdict.exit_code();
    setup.responder = session.responder().map(|d| d.short());
    let measured = measured(&session, ran, target.describe());
    let written = report::write(&log, setup, measured, verdict);
    bar.finish_and_clear();
    let line = written?;
    eprintln!("sync-stress: {line} — reports in {}", out.display());
    if !stop_ok {
        return Err(CampaignError::NotStopped {
            out: out.display().to_string(),
        });
    }
    Ok(ExitCode::from(code))
}

/// What the relay samples come from: the local relay's process and HTTP address, or what the
/// command line says about a remote one.
fn sampling_target(local: Option<&LocalLab>, args: &Args) -> Target {
    match local {
        Some(l) => Target {
            pid: l.relay.pid(),
            http: Some(l.relay.http_addr()),
        },
        None => Target {
            pid: args.relay_pid,
            http: args.relay_http,
        },
    }
}

/// Everything the reports show of what `session` measured.
fn measured(session: &Session, ran: Ran, sampling: String) -> Measured {
    Measured {
        phases: ran.phases,
        points: session.points.lock().map(|v| v.clone()).unwrap_or_default(),
        samples: session
            .samples
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default(),
        sampling,
        soak: ran.soak,
        impairments: session
            .impair
            .as_ref()
            .map(Impairment::periods)
            .unwrap_or_default(),
        markers: session
            .markers
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default(),
    }
}

/// Starts the impairment proxy in front of the relay of `joined`.
async fn start_impairment(
    args: &Args,
    spec: &str,
    direction: DirectionConfig,
    joined: &InvitedGroup,
) -> Result<Impairment, CampaignError> {
    let upstream = *joined
        .relay
        .socket_addrs()
        .first()
        .ok_or(CampaignError::NoRelayAddr)?;
    Impairment::start(upstream, spec, direction, args.impair_phases.clone())
        .await
        .map_err(CampaignError::Proxy)
}

/// The campaign device's state directory: `--data-dir`, or a temporary one (removed when the
/// returned guard drops).
fn device_dir(args: &Args) -> Result<(PathBuf, Option<tempfile::TempDir>), CampaignError> {
    match &args.data_dir {
        Some(d) => Ok((d.clone(), None)),
        None => {
            let temp = tempfile::tempdir()
                .map_err(CampaignError::io("cannot create a temporary data dir"))?;
            Ok((temp.path().to_path_buf(), Some(temp)))
        }
    }
}

/// After the phases: the proxy's counters, a last relay sample, the device closed, the proxy
/// stopped.
async fn teardown(session: &Session, background: Background, client: &SyncClient) {
    session.set_phase("teardown");
    if let Some(i) = &session.impair {
        let st = i.stats();
        session.emit(
            "teardown",
            "proxy_stats",
            &[("up", json!(st.up)), ("down", json!(st.down))],
        );
    }
    session.sample_now().await;
    background.close(client).await;
    if let Some(i) = &session.impair {
        i.shutdown();
    }
}

/// A progress bar on a terminal only (the JSONL goes to stdout either way).
fn progress_bar() -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    b.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {msg:>10} {wide_bar} {pos}/{len}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    b
}

/// Event lines to stdout, around the progress bar.
fn echo_around(bar: &ProgressBar) -> Echo {
    let bar = bar.clone();
    Box::new(move |line: &str| {
        bar.suspend(|| {
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "{line}");
            let _ = stdout.flush();
        });
    })
}

/// Where the group phase's devices connect: like the campaign device, to the relay of `joined`
/// or to `dial` (the impairment proxy).
fn group_target(joined: &InvitedGroup, dial: Option<Vec<SocketAddr>>, local: bool) -> GroupTarget {
    let relay = joined.relay.socket_addrs();
    GroupTarget {
        relay_id: joined.relay.id,
        bind: if local {
            SocketAddr::from(([127, 0, 0, 1], 0))
        } else {
            bind_addr_for(&relay)
        },
        dial: dial.unwrap_or(relay),
        fast_reconnect: local,
    }
}

/// Connects the campaign device (state in `dir`) to the relay of `joined`, or to `dial` (the
/// impairment proxy) when given; it must be connected to go on.
async fn connect(
    joined: &InvitedGroup,
    dir: &Path,
    dial: Option<Vec<SocketAddr>>,
    local: bool,
) -> Result<SyncClient, CampaignError> {
    std::fs::create_dir_all(dir).map_err(CampaignError::io(format!(
        "cannot create {}",
        dir.display()
    )))?;
    let bind = if local {
        SocketAddr::from(([127, 0, 0, 1], 0))
    } else {
        bind_addr_for(&joined.relay.socket_addrs())
    };
    let connecting = device::connect(joined, dir, dial, bind, "sync-stress campaign", local);
    let client = tokio::time::timeout(CHILD_TIMEOUT, connecting)
        .await
        .map_err(|_| CampaignError::ConnectTimeout)?
        .map_err(CampaignError::Device)?;
    let connection = client.status().connection;
    if !matches!(connection, sync_core::ConnectionStatus::Connected) {
        client.close().await;
        return Err(CampaignError::Unreachable {
            addrs: joined.relay.addrs.join(", "),
            connection: format!("{:?}", client.status().connection),
        });
    }
    Ok(client)
}

/// What the phases came to.
struct Ran {
    phases: Vec<PhaseResult>,
    e2e: Option<verdict::E2eCheck>,
    group: Option<verdict::GroupCheck>,
    failover: Option<verdict::FailoverCheck>,
    soak: Option<soak::Verdict>,
}

/// Where the phases that need more than the campaign device find it.
struct Targets<'a> {
    /// The local relay's data directory (the e2e phase's storage scan), with `--local`.
    relay_data: Option<&'a Path>,
    /// Where the group phase's devices connect.
    group: &'a GroupTarget,
    /// What the failover phase starts its relays with, with `--local`.
    failover: Option<&'a FailoverTarget>,
}

/// Runs (or skips) every phase in order, each impaired when `--impair` applies to it.
async fn run_phases(session: &Arc<Session>, args: &Args, targets: &Targets<'_>) -> Ran {
    let mut ran = Ran {
        phases: Vec::new(),
        e2e: None,
        group: None,
        failover: None,
        soak: None,
    };
    for phase in [
        PhaseArg::Ping,
        PhaseArg::Burst,
        PhaseArg::E2e,
        PhaseArg::Group,
        PhaseArg::Failover,
        PhaseArg::Endurance,
    ] {
        let name = phase.name();
        if !args.selected(phase) {
            ran.phases.push(phases::skipped(&name));
            continue;
        }
        let why = match phase {
            PhaseArg::Failover if targets.failover.is_none() => Some(
                "the failover phase starts PostgreSQL and two relays of its own on this machine: run it with --local",
            ),
            _ => None,
        };
        if let Some(why) = why {
            ran.phases.push(phases::not_available(session, &name, why));
            continue;
        }
        // The failover phase's devices dial its own relays directly: never through the proxy.
        let mark = if phase == PhaseArg::Failover {
            None
        } else {
            impairment::begin(session, phase)
        };
        let mut result = match phase {
            PhaseArg::Ping => phases::ping(session, args).await,
            PhaseArg::Burst => phases::burst(session, args).await,
            PhaseArg::E2e => {
                let (result, check) = e2e::run(session, args, targets.relay_data).await;
                ran.e2e = Some(check);
                result
            }
            PhaseArg::Group => {
                let (result, check) = group::run(session, args, targets.group).await;
                ran.group = Some(check);
                result
            }
            PhaseArg::Failover => {
                let Some(target) = targets.failover else {
                    continue;
                };
                let (result, check) = failover::run(session, args, target).await;
                ran.failover = Some(check);
                result
            }
            _ => {
                let (result, soak) = phases::endurance(session, args).await;
                ran.soak = Some(soak);
                result
            }
        };
        impairment::end(session, mark, &mut result);
        ran.phases.push(result);
    }
    ran
}

/// Stops the local responder and relay (SIGTERM) and records how they went: the report's setup
/// lines, and whether both stopped cleanly.
fn stop_local(local: &mut LocalLab, log: &EventLog) -> (Vec<(String, String)>, bool) {
    let stopped = tokio::task::block_in_place(|| local.stop());
    let mut lines = Vec::new();
    let mut clean = true;
    for (name, outcome) in stopped {
        clean &= outcome.is_clean();
        let how = outcome.to_string();
        log.emit(
            "teardown",
            "process_stopped",
            &[("process", json!(name)), ("result", json!(how))],
        );
        lines.push((format!("local {name}"), how));
    }
    (lines, clean)
}
