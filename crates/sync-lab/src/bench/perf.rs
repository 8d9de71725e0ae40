//! Optional profiling (`--perf-record PREFIX`): a `perf record` of the relay process for the
//! duration of one throughput run, into `<PREFIX>-<label>.data`. Off by default; a missing
//! `perf` only means no profile.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use sync_testkit::ChildProcess;

/// Time `perf` gets to attach before the run starts (it reports nothing when it has).
const ATTACH: Duration = Duration::from_millis(300);
/// How long `perf` may take to write its file after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `perf record`, or nothing.
pub(super) struct Perf(Option<ChildProcess>);

impl Perf {
    /// Starts `perf record` on `pid` when `prefix` is set.
    pub(super) async fn start(
        prefix: Option<&Path>,
        callgraph: bool,
        pid: u32,
        label: &str,
    ) -> Self {
        let Some(prefix) = prefix else {
            return Self(None);
        };
        let mut out = prefix.as_os_str().to_owned();
        out.push(format!("-{label}.data"));
        let mut cmd = Command::new("perf");
        cmd.args(["record", "-q", "-F", "2999", "-p", &pid.to_string(), "-o"])
            .arg(out);
        if callgraph {
            cmd.args(["--call-graph", "dwarf,16384"]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()
            .map(|c| ChildProcess::new("perf", c));
        if child.is_some() {
            tokio::time::sleep(ATTACH).await;
        }
        Self(child)
    }

    /// Stops the recording (perf writes its file on SIGTERM).
    pub(super) async fn stop(self) {
        if let Some(mut child) = self.0 {
            let _ = tokio::task::spawn_blocking(move || child.stop(STOP_TIMEOUT)).await;
        }
    }
}
