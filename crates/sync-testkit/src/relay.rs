//! The real `sync-relay` binary as a process: started on loopback with free ports and its own
//! data dir, ready once it printed its readiness JSON, never left behind.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use sync_types::{RelayAddr, RelayId};

use crate::process::{ChildProcess, StopOutcome};
use crate::{TestkitError, last_lines, relay_bin};

/// How long a relay may take to report ready (a cold start on a loaded 2-core machine takes
/// well under a second; this only bounds a hang).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a relay may take to drain and exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// What the relay reported when it became ready (`sync-relay --ready-json`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct RelayReady {
    /// The relay's identity.
    #[serde(deserialize_with = "relay_id")]
    pub relay_id: RelayId,
    /// The UDP addresses devices dial.
    pub addrs: Vec<SocketAddr>,
    /// The HTTP server (`/health`, `/metrics`, `/.well-known/0k-sync`).
    pub http: SocketAddr,
    /// Its process id.
    pub pid: u32,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Its storage backend (`sqlite` or `postgres`).
    pub storage: String,
    /// The id of the log it serves (16 hex digits): relays that share a store print the same.
    pub store_id: String,
    /// Its version.
    pub version: String,
}

fn relay_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<RelayId, D::Error> {
    let text = <String as serde::Deserialize>::deserialize(d)?;
    text.parse().map_err(serde::de::Error::custom)
}

impl RelayReady {
    /// Where devices reach it.
    pub fn relay_addr(&self) -> RelayAddr {
        RelayAddr::new(self.relay_id, &self.addrs)
    }
}

/// Settings of a relay process; [`RelayProcess::builder`] makes one.
#[derive(Debug, Clone)]
pub struct RelayBuilder {
    bin: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    bind: SocketAddr,
    http_bind: SocketAddr,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    log: Option<PathBuf>,
    ready_timeout: Duration,
}

impl Default for RelayBuilder {
    fn default() -> Self {
        Self {
            bin: None,
            data_dir: None,
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            http_bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            args: Vec::new(),
            env: vec![("RUST_LOG".into(), "warn".into())],
            log: None,
            ready_timeout: READY_TIMEOUT,
        }
    }
}

impl RelayBuilder {
    /// The binary to run (default: [`relay_bin`], which is for tests).
    pub fn bin(mut self, bin: impl Into<PathBuf>) -> Self {
        self.bin = Some(bin.into());
        self
    }

    /// Its data directory (default: a fresh temporary directory, removed with the process).
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// The UDP address of its QUIC endpoint (default `127.0.0.1:0`).
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }

    /// The address of its HTTP server (default `127.0.0.1:0`).
    pub fn http_bind(mut self, addr: SocketAddr) -> Self {
        self.http_bind = addr;
        self
    }

    /// One more command-line argument (e.g. `--max-sessions`).
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// More command-line arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// An environment variable (`RUST_LOG` is `warn` unless set here).
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        let key = key.into();
        self.env.retain(|(k, _)| *k != key);
        self.env.push((key, value.into()));
        self
    }

    /// Where its stderr (the log) goes (default: `relay.log` in a temporary directory).
    pub fn log(mut self, path: impl Into<PathBuf>) -> Self {
        self.log = Some(path.into());
        self
    }

    /// How long to wait for the readiness line.
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Starts the relay and waits until it reports ready.
    pub fn start(self) -> Result<RelayProcess, TestkitError> {
        // Holds the default data dir and log; removed with the process.
        let temp = tempfile::Builder::new()
            .prefix("sync-relay-test-")
            .tempdir()
            .map_err(|source| TestkitError::Io {
                what: "cannot create a temporary directory".into(),
                source,
            })?;
        let data_dir = self
            .data_dir
            .clone()
            .unwrap_or_else(|| temp.path().join("relay"));
        let log = self
            .log
            .clone()
            .unwrap_or_else(|| temp.path().join("relay.log"));
        let (child, ready) = spawn(&self, &data_dir, &log)?;
        Ok(RelayProcess {
            child,
            ready,
            builder: RelayBuilder {
                data_dir: Some(data_dir),
                log: Some(log),
                ..self
            },
            _temp: temp,
        })
    }
}

fn spawn(
    b: &RelayBuilder,
    data_dir: &Path,
    log: &Path,
) -> Result<(ChildProcess, RelayReady), TestkitError> {
    let bin = match &b.bin {
        Some(p) => p.clone(),
        None => relay_bin(),
    };
    let err = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|source| TestkitError::Io {
            what: format!("cannot open {}", log.display()),
            source,
        })?;
    let mut cmd = Command::new(&bin);
    cmd.arg("--data-dir")
        .arg(data_dir)
        .arg("--bind")
        .arg(b.bind.to_string())
        .arg("--http-bind")
        .arg(b.http_bind.to_string())
        .arg("--ready-json")
        .args(&b.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(err));
    for (k, v) in &b.env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().map_err(|source| TestkitError::Spawn {
        bin: bin.display().to_string(),
        source,
    })?;
    let stdout = child.stdout.take();
    let mut child = ChildProcess::new("sync-relay", child);
    let (tx, rx) = mpsc::channel();
    if let Some(stdout) = stdout {
        // Read the readiness line, then keep draining so the relay never blocks on stdout.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    let not_ready = |reason: String| TestkitError::NotReady {
        what: format!("sync-relay ({})", bin.display()),
        reason,
        log: last_lines(log, 20),
    };
    loop {
        match rx.recv_timeout(b.ready_timeout) {
            Ok(line) => {
                if let Ok(ready) = serde_json::from_str::<RelayReady>(&line) {
                    return Ok((child, ready));
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                child.kill();
                return Err(not_ready(format!("nothing within {:?}", b.ready_timeout)));
            }
            Err(RecvTimeoutError::Disconnected) => {
                let outcome = child.stop(Duration::from_secs(5));
                return Err(not_ready(format!("it ended first ({outcome})")));
            }
        }
    }
}

/// A running `sync-relay` process. Dropping it SIGKILLs it (and removes its temporary data dir,
/// if the kit made one).
#[derive(Debug)]
pub struct RelayProcess {
    child: ChildProcess,
    ready: RelayReady,
    builder: RelayBuilder,
    _temp: tempfile::TempDir,
}

impl RelayProcess {
    /// Settings for a relay; `.start()` runs it.
    pub fn builder() -> RelayBuilder {
        RelayBuilder::default()
    }

    /// A relay with the defaults (loopback, free ports, temporary data dir, `RUST_LOG=warn`).
    ///
    /// # Panics
    /// When it does not start: this is for tests.
    #[allow(clippy::panic)]
    pub fn start() -> RelayProcess {
        Self::builder()
            .start()
            .unwrap_or_else(|e| panic!("relay: {e}"))
    }

    /// What it reported when it became ready.
    pub fn ready(&self) -> &RelayReady {
        &self.ready
    }

    /// Its identity.
    pub fn id(&self) -> RelayId {
        self.ready.relay_id
    }

    /// Where devices reach it.
    pub fn relay_addr(&self) -> RelayAddr {
        self.ready.relay_addr()
    }

    /// Its UDP addresses.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.ready.addrs
    }

    /// Its HTTP server's address.
    pub fn http_addr(&self) -> SocketAddr {
        self.ready.http
    }

    /// `http://IP:PORT` of its HTTP server.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.ready.http)
    }

    /// Its process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.pid()
    }

    /// Its data directory.
    pub fn data_dir(&self) -> &Path {
        &self.ready.data_dir
    }

    /// The file its log (stderr) goes to.
    pub fn log_path(&self) -> &Path {
        self.builder.log.as_deref().unwrap_or(Path::new(""))
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        last_lines(self.log_path(), n)
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.is_running()
    }

    /// SIGTERM (drain, flush, checkpoint, exit 0), bounded by 30 s, then SIGKILL.
    pub fn stop(&mut self) -> StopOutcome {
        self.child.stop(STOP_TIMEOUT)
    }

    /// [`stop`](Self::stop) off the async workers, under the test guard, asserting the relay
    /// exited cleanly; gives the process back (to restart it, or to read its log).
    ///
    /// # Panics
    /// When the relay does not stop cleanly in time: this is for tests.
    #[allow(clippy::panic, clippy::expect_used)]
    pub async fn stop_clean(mut self) -> RelayProcess {
        let stopping = tokio::task::spawn_blocking(move || {
            let outcome = self.stop();
            (self, outcome)
        });
        let (relay, outcome) = crate::guard("the relay to stop", stopping)
            .await
            .expect("the stopping task runs");
        assert!(outcome.is_clean(), "the relay stops cleanly: {outcome}");
        relay
    }

    /// SIGKILL now, as a crash would end it.
    pub fn kill(&mut self) {
        self.child.kill();
    }

    /// Starts it again (after [`stop`](Self::stop) or [`kill`](Self::kill), or stops it first)
    /// on the same data dir, UDP and HTTP addresses: same identity, same dial string.
    pub fn restart(&mut self) -> Result<(), TestkitError> {
        if self.child.pid().is_some() {
            self.stop();
        }
        let again = RelayBuilder {
            bind: self
                .ready
                .addrs
                .first()
                .copied()
                .unwrap_or(self.builder.bind),
            http_bind: self.ready.http,
            ..self.builder.clone()
        };
        let data_dir = self.ready.data_dir.clone();
        let log = self.log_path().to_path_buf();
        let (child, ready) = spawn(&again, &data_dir, &log)?;
        self.child = child;
        self.ready = ready;
        Ok(())
    }
}
