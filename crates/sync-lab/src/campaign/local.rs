//! `campaign --local`: a relay (the `sync-relay` binary, through [`RelayProcess`]) and a
//! responder (this executable's `responder` subcommand) on loopback, in a group created for the
//! run; stopped with SIGTERM at its end.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use sync_testkit::{ChildProcess, RelayProcess, StopOutcome, TestkitError, find_relay_bin};
use sync_types::DeviceId;
use tokio::sync::mpsc;

use super::Args;
use crate::device::{self, INVITE_ENV, JoinError};

/// How long the local relay and responder get to start and to stop.
pub(super) const CHILD_TIMEOUT: Duration = Duration::from_secs(30);
/// The line the responder prints once connected, before its device id.
const READY_PREFIX: &str = "responder ready: device";

/// Why the local relay or responder could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocalError {
    /// The relay binary could not be found or started.
    #[error(transparent)]
    Relay(#[from] TestkitError),
    /// The task starting the relay was cancelled.
    #[error("the relay start was cancelled")]
    Cancelled,
    /// A file, directory or process could not be created.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The group's invite could not be made.
    #[error("cannot create the group invite")]
    Invite(#[source] JoinError),
    /// The responder exited before it was ready.
    #[error("the responder exited before printing {READY_PREFIX:?}; see {log}: {last_line}")]
    Exited {
        /// Its log file.
        log: String,
        /// The last line of its log.
        last_line: String,
    },
    /// The responder did not get ready in time.
    #[error("the responder did not print {READY_PREFIX:?} within {CHILD_TIMEOUT:?}; see {log}")]
    Silent {
        /// Its log file.
        log: String,
    },
    /// The responder's ready line did not carry a device id.
    #[error("unexpected responder output (ready line)")]
    ReadyLine,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LocalError {
    let what = what.into();
    move |source| LocalError::Io { what, source }
}

/// The relay and responder of `--local`.
pub(super) struct LocalLab {
    _temp: tempfile::TempDir,
    pub(super) relay: RelayProcess,
    responder: ChildProcess,
    pub(super) relay_bin: PathBuf,
    pub(super) invite: String,
    pub(super) responder_id: DeviceId,
}

impl LocalLab {
    /// Starts the relay, creates the group and starts the responder in it; logs go to `out`.
    pub(super) async fn start(args: &Args, out: &Path) -> Result<LocalLab, LocalError> {
        let relay_bin = find_relay_bin(args.relay_bin.as_deref())?;
        // Behind the impairment proxy the relay (and the responder, which dials it directly)
        // live on [::1] only, the campaign device on 127.0.0.1 only: no direct path exists for
        // iroh to migrate to, so every campaign packet crosses the proxy.
        let relay_bind: SocketAddr = if args.impair.is_some() {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 0))
        } else {
            SocketAddr::from(([127, 0, 0, 1], 0))
        };
        let temp = tempfile::Builder::new()
            .prefix("sync-stress-local-")
            .tempdir()
            .map_err(io("cannot create a temporary directory"))?;
        let relay = RelayProcess::builder()
            .bin(&relay_bin)
            .data_dir(temp.path().join("relay"))
            .bind(relay_bind)
            .args(["--stats-interval", "1h"])
            .env("RUST_LOG", log_filter("SYNC_STRESS_RELAY_LOG"))
            .log(out.join("relay.log"));
        let relay = tokio::task::spawn_blocking(move || relay.start())
            .await
            .map_err(|_| LocalError::Cancelled)??;
        let invite = device::new_group_invite(
            &relay.relay_addr(),
            Duration::from_secs(24 * 3600)
                .min(Duration::from_secs(args.duration.saturating_add(3600))),
        )
        .map_err(LocalError::Invite)?;
        let exe = std::env::current_exe().map_err(io("cannot find this executable"))?;
        let mut cmd = Command::new(exe);
        cmd.arg("responder")
            .arg("--data-dir")
            .arg(temp.path().join("responder"))
            .arg("--bind")
            .arg(relay_bind.to_string())
            .arg("--fast-reconnect")
            .env(INVITE_ENV, &invite)
            .env("RUST_LOG", log_filter("SYNC_STRESS_RESPONDER_LOG"));
        let responder_log = out.join("responder.log");
        let (responder, mut lines) = spawn_with_lines("responder", cmd, &responder_log)?;
        let ready = wait_ready(&mut lines, &responder_log).await?;
        let responder_id: DeviceId = ready
            .split_whitespace()
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or(LocalError::ReadyLine)?;
        Ok(LocalLab {
            _temp: temp,
            relay,
            responder,
            relay_bin,
            invite,
            responder_id,
        })
    }

    /// Stops the responder, then the relay (SIGTERM, bounded waits); how each went.
    pub(super) fn stop(&mut self) -> [(&'static str, StopOutcome); 2] {
        [
            ("responder", self.responder.stop(CHILD_TIMEOUT)),
            ("relay", self.relay.stop()),
        ]
    }
}

/// The `RUST_LOG` of a child: the environment variable `var`, else `info`.
pub(super) fn log_filter(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| "info".into())
}

/// Spawns `cmd` with stdout piped (stderr to `log`) and returns the guard and its stdout lines.
fn spawn_with_lines(
    name: &'static str,
    mut cmd: Command,
    log: &Path,
) -> Result<(ChildProcess, mpsc::UnboundedReceiver<String>), LocalError> {
    let err = std::fs::File::create(log).map_err(io(format!("cannot create {}", log.display())))?;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::from(err))
        .stdin(Stdio::null())
        .spawn()
        .map_err(io(format!("cannot start the {name}")))?;
    let (tx, rx) = mpsc::unbounded_channel();
    if let Some(out) = child.stdout.take() {
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    Ok((ChildProcess::new(name, child), rx))
}

/// Waits for the responder's ready line; its remainder (the device id and group), trimmed.
async fn wait_ready(
    lines: &mut mpsc::UnboundedReceiver<String>,
    log: &Path,
) -> Result<String, LocalError> {
    let found = tokio::time::timeout(CHILD_TIMEOUT, async {
        while let Some(line) = lines.recv().await {
            if let Some(rest) = line.strip_prefix(READY_PREFIX) {
                return Some(rest.trim().to_string());
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(v)) => Ok(v),
        Ok(None) => Err(LocalError::Exited {
            log: log.display().to_string(),
            last_line: sync_testkit::last_lines(log, 1),
        }),
        Err(_) => Err(LocalError::Silent {
            log: log.display().to_string(),
        }),
    }
}
