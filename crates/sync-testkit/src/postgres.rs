//! A private PostgreSQL server for a test: its own cluster in a temporary directory, on a free
//! loopback port, stopped (and its files removed) when the value is dropped, whatever happens
//! to the test.
//!
//! The cluster is copied from a template made once per machine with `initdb` (kept in the
//! system temp dir), so a server starts in well under a second. PostgreSQL refuses to run as
//! root: under root, `initdb` and the server run as the `postgres` user (through `setpriv`,
//! which execs, so the process the kit holds is the postmaster itself).
//!
//! The server binaries are found with `pg_config --bindir`, else under
//! `/usr/lib/postgresql/<version>/bin`, or in `SYNC_TESTKIT_PG_BIN`.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use crate::TestkitError;
use crate::process::{ChildProcess, run_bounded};

/// Where the server binaries are, when set.
pub const PG_BIN_ENV: &str = "SYNC_TESTKIT_PG_BIN";

/// How long a server may take to accept connections (bounds a hang; it takes a fraction of a
/// second).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a fast or immediate shutdown may take before the server is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// The line PostgreSQL logs once it accepts connections.
const READY_LINE: &str = "database system is ready to accept connections";

/// A running private PostgreSQL server.
#[derive(Debug)]
pub struct PostgresServer {
    process: Option<ChildProcess>,
    bin: PathBuf,
    port: u16,
    fsync: bool,
    log: PathBuf,
    as_postgres: bool,
    next_db: u32,
    // Last: removed after the server is gone.
    dir: tempfile::TempDir,
}

impl PostgresServer {
    /// Starts a server with `fsync` off (tests: a crash of the server, not of the machine,
    /// loses nothing committed).
    ///
    /// # Errors
    /// When the binaries are missing, the cluster cannot be made, or the server does not
    /// report ready.
    pub fn start() -> Result<Self, TestkitError> {
        Self::start_with(false)
    }

    /// Starts a server, with `fsync` on or off (benchmarks keep it on).
    ///
    /// # Errors
    /// As [`PostgresServer::start`].
    pub fn start_with(fsync: bool) -> Result<Self, TestkitError> {
        Self::start_inner(fsync, false)
    }

    /// Starts a server that accepts TCP connections over TLS only (`hostssl` in
    /// `pg_hba.conf`), with a certificate for `127.0.0.1` issued by a CA of its own; the CA's
    /// certificate is at [`PostgresServer::ca_file`].
    ///
    /// # Errors
    /// As [`PostgresServer::start`], or when `openssl` cannot make the certificates.
    pub fn start_tls() -> Result<Self, TestkitError> {
        Self::start_inner(false, true)
    }

    /// The CA certificate (PEM) of a server started with [`PostgresServer::start_tls`].
    pub fn ca_file(&self) -> Option<PathBuf> {
        let ca = self.dir.path().join("tls").join("ca.pem");
        ca.exists().then_some(ca)
    }

    fn start_inner(fsync: bool, tls: bool) -> Result<Self, TestkitError> {
        let bin = bin_dir()?;
        let as_postgres = nix::unistd::geteuid().is_root();
        let template = template(&bin, as_postgres)?;
        let dir = tempfile::Builder::new()
            .prefix("sync-testkit-pg-")
            .tempdir()
            .map_err(|e| TestkitError::NoBinary(format!("cannot make a temp dir: {e}")))?;
        let data = dir.path().join("data");
        let out = run_bounded(
            Command::new("cp").arg("-a").arg(&template).arg(&data),
            Duration::from_secs(60),
        );
        if !out.status.success() {
            return Err(TestkitError::NoBinary(format!(
                "cannot copy the cluster template: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        if tls {
            make_certificates(&dir.path().join("tls"))?;
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
            )
            .map_err(|e| TestkitError::NoBinary(format!("cannot write pg_hba.conf: {e}")))?;
        }
        if as_postgres {
            chown_to_postgres(dir.path())?;
        }
        let port = free_port()?;
        let mut server = Self {
            process: None,
            bin,
            port,
            fsync,
            log: dir.path().join("postgres.log"),
            as_postgres,
            next_db: 0,
            dir,
        };
        server.launch()?;
        Ok(server)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn launch(&mut self) -> Result<(), TestkitError> {
        let data = self.data_dir();
        let mut cmd = self.command("postgres");
        cmd.arg("-D")
            .arg(&data)
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", data.display()))
            .args(["-c", "max_connections=300"])
            .args(["-c", "shared_buffers=128MB"])
            .args(["-c", if self.fsync { "fsync=on" } else { "fsync=off" }])
            .args(["-c", "log_min_messages=warning"]);
        let tls = self.dir.path().join("tls");
        if tls.join("server.key").exists() {
            cmd.args(["-c", "ssl=on"])
                .arg("-c")
                .arg(format!(
                    "ssl_cert_file={}",
                    tls.join("server.pem").display()
                ))
                .arg("-c")
                .arg(format!("ssl_key_file={}", tls.join("server.key").display()));
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|source| TestkitError::Spawn {
            bin: "postgres".into(),
            source,
        })?;
        let stderr = child.stderr.take();
        let process = ChildProcess::new("postgres", child);
        self.process = Some(process);
        // Copy the server's log to a file and wait for its ready line.
        let (ready_tx, ready_rx) = mpsc::channel();
        let log_path = self.log.clone();
        if let Some(stderr) = stderr {
            std::thread::spawn(move || {
                let mut log = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log_path)
                    .ok();
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Some(f) = log.as_mut() {
                        let _ = writeln!(f, "{line}");
                    }
                    if line.contains(READY_LINE) {
                        let _ = ready_tx.send(());
                    }
                }
            });
        }
        match ready_rx.recv_timeout(READY_TIMEOUT) {
            Ok(()) => Ok(()),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                let log = crate::last_lines(&self.log, 20);
                self.kill();
                Err(TestkitError::NotReady {
                    what: "postgres".into(),
                    reason: "no ready line".into(),
                    log,
                })
            }
        }
    }

    /// A command for server binary `name`, run as `postgres` when we are root.
    fn command(&self, name: &str) -> Command {
        command(&self.bin, name, self.as_postgres)
    }

    /// Its TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The connection string of database `db` (user `postgres`, no password: the cluster
    /// trusts loopback).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates a fresh database and returns its connection string.
    ///
    /// # Errors
    /// When `createdb` fails.
    pub fn create_database(&mut self) -> Result<String, TestkitError> {
        self.next_db += 1;
        let name = format!("relay_{}", self.next_db);
        let out = run_bounded(
            Command::new(self.bin.join("createdb"))
                .args(["-h", "127.0.0.1", "-U", "postgres", "-p"])
                .arg(self.port.to_string())
                .arg(&name),
            Duration::from_secs(60),
        );
        if !out.status.success() {
            return Err(TestkitError::NoBinary(format!(
                "createdb {name} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(self.url(&name))
    }

    /// Whether the server process is running.
    pub fn is_running(&mut self) -> bool {
        self.process.as_mut().is_some_and(ChildProcess::is_running)
    }

    /// Stops the server the way a crash would look to its clients: an immediate shutdown
    /// (SIGQUIT; the next start recovers from the WAL). Committed data survives.
    pub fn crash(&mut self) {
        self.signal_and_wait(nix::sys::signal::Signal::SIGQUIT);
    }

    /// Stops the server with a fast shutdown (SIGINT: clients are disconnected, then it
    /// checkpoints and exits).
    pub fn stop(&mut self) {
        self.signal_and_wait(nix::sys::signal::Signal::SIGINT);
    }

    fn signal_and_wait(&mut self, sig: nix::sys::signal::Signal) {
        if let Some(mut p) = self.process.take() {
            if let Some(pid) = p.pid().and_then(|p| i32::try_from(p).ok()) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
            }
            // SIGTERM after our signal does not change the shutdown mode it started.
            let _ = p.stop(STOP_TIMEOUT);
        }
    }

    /// Starts the server again on the same data and port after [`PostgresServer::crash`] or
    /// [`PostgresServer::stop`].
    ///
    /// # Errors
    /// When it does not report ready.
    pub fn restart(&mut self) -> Result<(), TestkitError> {
        if self.process.is_some() {
            self.stop();
        }
        self.launch()
    }

    fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    /// The server's log so far (its last `n` lines).
    pub fn log_tail(&self, n: usize) -> String {
        crate::last_lines(&self.log, n)
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        // Immediate shutdown ends the backends too; a SIGKILL follows if it hangs.
        self.crash();
    }
}

fn command(bin: &Path, name: &str, as_postgres: bool) -> Command {
    if as_postgres {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ])
        .arg(bin.join(name));
        c
    } else {
        Command::new(bin.join(name))
    }
}

fn chown_to_postgres(dir: &Path) -> Result<(), TestkitError> {
    let out = run_bounded(
        Command::new("chown")
            .arg("-R")
            .arg("postgres:postgres")
            .arg(dir),
        Duration::from_secs(60),
    );
    if out.status.success() {
        Ok(())
    } else {
        Err(TestkitError::NoBinary(format!(
            "cannot give {} to the postgres user (does it exist?): {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

/// A CA and a server certificate for `127.0.0.1` it issued (P-256 keys, two days), made with
/// the `openssl` command in `dir`.
fn make_certificates(dir: &Path) -> Result<(), TestkitError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| TestkitError::NoBinary(format!("cannot make {}: {e}", dir.display())))?;
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .map_err(|e| TestkitError::NoBinary(format!("cannot write the extensions: {e}")))?;
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let steps: [&[&str]; 3] = [
        &[
            &["req", "-x509"],
            &ec[..],
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=sync-testkit CA",
            ],
        ]
        .concat(),
        &[
            &["req"],
            &ec[..],
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        ]
        .concat(),
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    ];
    for args in steps {
        let out = run_bounded(
            Command::new("openssl").args(args).current_dir(dir),
            Duration::from_secs(60),
        );
        if !out.status.success() {
            return Err(TestkitError::NoBinary(format!(
                "openssl {} failed: {}",
                args.first().copied().unwrap_or_default(),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
    }
    // PostgreSQL refuses a key others can read.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.join("server.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .map_err(|e| TestkitError::NoBinary(format!("cannot protect the key: {e}")))
}

/// A port free on 127.0.0.1 right now.
fn free_port() -> Result<u16, TestkitError> {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| TestkitError::NoBinary(format!("no free port: {e}")))
}

/// The directory of the PostgreSQL server binaries.
fn bin_dir() -> Result<PathBuf, TestkitError> {
    if let Some(dir) = std::env::var_os(PG_BIN_ENV) {
        return Ok(PathBuf::from(dir));
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("postgres").exists() {
            return Ok(dir);
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|d| d.join("postgres").exists() && d.join("initdb").exists())
        .collect();
    found.sort();
    found.pop().ok_or_else(|| {
        TestkitError::NoBinary(format!(
            "no PostgreSQL server binaries (install the `postgresql` package, or set {PG_BIN_ENV})"
        ))
    })
}

/// The cluster every server is copied from, made once per machine and binary directory.
fn template(bin: &Path, as_postgres: bool) -> Result<PathBuf, TestkitError> {
    static TEMPLATE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    TEMPLATE
        .get_or_init(|| make_template(bin, as_postgres))
        .clone()
        .map_err(TestkitError::NoBinary)
}

fn make_template(bin: &Path, as_postgres: bool) -> Result<PathBuf, String> {
    let tag: String = bin
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let root = std::env::temp_dir().join(format!("sync-testkit-pg-template{tag}"));
    let done = root.join("data");
    if done.join("PG_VERSION").exists() {
        return Ok(done);
    }
    std::fs::create_dir_all(&root).map_err(|e| format!("cannot make {}: {e}", root.display()))?;
    // Made aside and renamed into place, so concurrent test processes never see half of it.
    let work = tempfile::Builder::new()
        .prefix("initdb-")
        .tempdir_in(&root)
        .map_err(|e| format!("cannot make a temp dir: {e}"))?;
    let data = work.path().join("data");
    if as_postgres {
        chown_to_postgres(work.path()).map_err(|e| e.to_string())?;
    }
    let out = run_bounded(
        command(bin, "initdb", as_postgres)
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"])
            .env("LC_ALL", "C"),
        Duration::from_secs(120),
    );
    if !out.status.success() {
        return Err(format!(
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    match std::fs::rename(&data, &done) {
        Ok(()) => Ok(done),
        // Another process finished first.
        Err(_) if done.join("PG_VERSION").exists() => Ok(done),
        Err(e) => Err(format!("cannot move the template into place: {e}")),
    }
}
