//! Test support: the real `sync-cli` and `sync-relay` binaries as processes on 127.0.0.1, a UDP
//! proxy that can cut a device off mid-transfer, bounded waits everywhere (no sleeps waiting for
//! events).
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sync_testkit::RelayProcess;
use tempfile::TempDir;

/// Longest any single CLI command may take in a test.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait for a process to report something or to exit.
pub const WAIT: Duration = Duration::from_secs(60);

pub fn cli_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sync-cli"))
}

/// Waits for a child to exit, at most `timeout` (then SIGKILL and panic).
pub fn wait_exit(child: Child, timeout: Duration) -> Output {
    let pid = child.id();
    sync_testkit::wait_exit(child, timeout)
        .unwrap_or_else(|| panic!("process {pid} did not exit within {timeout:?}"))
}

/// A device: a data directory driven through the real `sync-cli`.
pub struct Device {
    pub dir: PathBuf,
    pub env: Vec<(String, String)>,
}

/// What a CLI run gave.
#[derive(Debug)]
pub struct Run {
    /// The command line after `--data-dir`, to name the run in failures.
    pub args: Vec<String>,
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Run {
    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }
    pub fn out(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", self.out(), self.stderr))
    }
    /// The `warning:` lines on stderr (one per integrity problem).
    pub fn warnings(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| l.starts_with("warning: "))
            .collect()
    }
    /// Asserts a refusal: exit `code` and a one-line message holding each of `words`.
    #[track_caller]
    pub fn refused(&self, code: i32, words: &[&str]) -> &Self {
        let Run { args, stderr, .. } = self;
        assert_eq!(self.code(), code, "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: one line: {stderr}");
        for word in words {
            assert!(stderr.contains(word), "{args:?}: no {word:?} in: {stderr}");
        }
        self
    }
    #[track_caller]
    pub fn ok(self) -> Self {
        assert!(
            self.status.success(),
            "exit {}\nstdout: {}\nstderr: {}",
            self.code(),
            self.out(),
            self.stderr
        );
        self
    }
}

impl Device {
    pub fn new(root: &Path, name: &str) -> Device {
        Device {
            dir: root.join(name),
            env: vec![("SYNC_CLI_CONNECT_TIMEOUT".into(), "10".into())],
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(cli_bin());
        cmd.arg("--data-dir").arg(&self.dir).args(args);
        cmd.env_remove("RUST_LOG");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Starts a command with standard input `stdin` (`Stdio::null()` or `Stdio::piped()`), its
    /// standard output and error piped.
    pub fn spawn(&self, args: &[&str], stdin: Stdio) -> Child {
        self.command(args)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sync-cli")
    }

    /// Runs a command with `stdin` as standard input, bounded by [`CMD_TIMEOUT`].
    pub fn run_with_stdin(&self, args: &[&str], stdin: &[u8]) -> Run {
        let mut child = self.spawn(args, Stdio::piped());
        let mut input = child.stdin.take().expect("stdin");
        let data = stdin.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = input.write_all(&data);
        });
        let out = wait_exit(child, CMD_TIMEOUT);
        let _ = writer.join();
        Run {
            args: args.iter().map(|a| a.to_string()).collect(),
            status: out.status,
            stdout: out.stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with_stdin(args, b"")
    }

    pub fn init(&self, name: &str) {
        self.run(&["init", "--name", name]).ok();
    }

    /// Pulls (JSON) and returns the blobs' data, in cursor order.
    pub fn pull(&self) -> Vec<Vec<u8>> {
        let v = self.run(&["pull", "--json"]).ok().json();
        blobs_data(&v)
    }

    /// Creates a group on `relay_arg`; returns (invite string, short code).
    pub fn create_group(&self, relay_arg: &str) -> (String, String) {
        let v = self
            .run(&["pair", "--create", "--relay", relay_arg, "--json"])
            .ok()
            .json();
        (
            v["invite"].as_str().unwrap().to_string(),
            v["short_code"].as_str().unwrap().to_string(),
        )
    }
}

/// A device `a` in a fresh temporary directory, not initialised (the directory goes with the
/// returned guard).
pub fn lone_device() -> (TempDir, Device) {
    let tmp = tempfile::tempdir().unwrap();
    let a = Device::new(tmp.path(), "a");
    (tmp, a)
}

/// A relay on 127.0.0.1 and two initialised devices, A ("laptop") and B ("phone"), in one
/// temporary directory.
pub struct TwoDevices {
    pub relay: Relay,
    pub a: Device,
    pub b: Device,
    // Last, so that it is removed after the relay stopped.
    tmp: TempDir,
}

impl TwoDevices {
    pub fn start() -> TwoDevices {
        TwoDevices::start_with(&[])
    }

    /// [`TwoDevices::start`] with extra `sync-relay` flags.
    pub fn start_with(relay_flags: &[&str]) -> TwoDevices {
        let tmp = tempfile::tempdir().unwrap();
        let relay = Relay::start_with(&tmp.path().join("relay"), 0, relay_flags);
        let a = Device::new(tmp.path(), "a");
        let b = Device::new(tmp.path(), "b");
        a.init("laptop");
        b.init("phone");
        TwoDevices { relay, a, b, tmp }
    }

    /// Started, A created a group on the relay and B joined it by the invite string.
    pub fn paired() -> TwoDevices {
        TwoDevices::paired_with(&[])
    }

    /// [`TwoDevices::paired`] with extra `sync-relay` flags.
    pub fn paired_with(relay_flags: &[&str]) -> TwoDevices {
        let t = TwoDevices::start_with(relay_flags);
        let (invite, _) = t.a.create_group(&t.relay.dial);
        t.b.run(&["pair", "--join", &invite]).ok();
        t
    }

    /// The temporary directory (the devices' and the relay's data are below it).
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// One more device in directory `dir`, initialised as `name`.
    pub fn device(&self, dir: &str, name: &str) -> Device {
        let d = Device::new(self.path(), dir);
        d.init(name);
        d
    }
}

/// Reads `child`'s standard output and error (both piped) on two threads: each line arrives on
/// the channel as `out LINE` or `err LINE`.
pub fn output_lines(child: &mut Child) -> Receiver<String> {
    fn forward(from: impl Read + Send + 'static, tag: &'static str, tx: mpsc::Sender<String>) {
        std::thread::spawn(move || {
            for line in BufReader::new(from).lines().map_while(Result::ok) {
                let _ = tx.send(format!("{tag} {line}"));
            }
        });
    }
    let (tx, rx) = mpsc::channel();
    forward(
        child.stdout.take().expect("stdout piped"),
        "out",
        tx.clone(),
    );
    forward(child.stderr.take().expect("stderr piped"), "err", tx);
    rx
}

/// Stops a child with SIGTERM and waits for it (bounded).
pub fn terminate(child: Child) -> Output {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    wait_exit(child, WAIT)
}

pub fn blobs_data(v: &serde_json::Value) -> Vec<Vec<u8>> {
    use base64::Engine as _;
    v["blobs"]
        .as_array()
        .expect("blobs")
        .iter()
        .map(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b["data_b64"].as_str().expect("data_b64"))
                .expect("base64")
        })
        .collect()
}

/// A `sync-relay` process on 127.0.0.1 (the test kit's [`RelayProcess`]), with the strings the
/// CLI is given.
pub struct Relay {
    process: RelayProcess,
    /// `ENDPOINT_ID@127.0.0.1:PORT`.
    pub dial: String,
    /// The relay id (hex).
    pub id: String,
    /// `http://127.0.0.1:PORT` of its HTTP server.
    pub http: String,
    /// Its UDP port.
    pub port: u16,
}

impl Relay {
    /// Starts a relay on `port` (0 = any) with its data in `data_dir`; returns once it reported
    /// ready.
    pub fn start(data_dir: &Path, port: u16) -> Relay {
        Relay::start_with(data_dir, port, &[])
    }

    /// [`Relay::start`] with extra `sync-relay` flags.
    pub fn start_with(data_dir: &Path, port: u16, extra: &[&str]) -> Relay {
        let process = RelayProcess::builder()
            .data_dir(data_dir)
            .bind(SocketAddr::from(([127, 0, 0, 1], port)))
            .args(extra)
            .start()
            .expect("relay starts");
        Relay::from_process(process)
    }

    fn from_process(process: RelayProcess) -> Relay {
        Relay {
            dial: process.relay_addr().to_string(),
            id: process.id().to_string(),
            http: process.http_url(),
            port: process.addrs()[0].port(),
            process,
        }
    }

    /// SIGTERM, and wait (bounded) for a clean exit.
    pub fn stop(&mut self) {
        let outcome = self.process.stop();
        assert!(outcome.is_clean(), "relay: {outcome}");
    }

    /// Starts it again on the same port and data dir (same identity).
    pub fn restart(&mut self) {
        self.process.restart().expect("relay restarts");
        let dial = self.process.relay_addr().to_string();
        assert_eq!(dial, self.dial, "same identity and address");
    }
}

/// A UDP proxy in front of the relay. Once armed with a byte count, the first device whose
/// upstream traffic passes it is cut off in both directions (as if its network died mid
/// transfer) and the test is told; devices that connect later pass again.
pub struct Proxy {
    pub addr: SocketAddr,
    arm_bytes: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    cut_rx: Mutex<Receiver<SocketAddr>>,
}

impl Proxy {
    pub fn start(relay: SocketAddr) -> Proxy {
        let front = UdpSocket::bind("127.0.0.1:0").expect("bind proxy");
        front
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let addr = front.local_addr().expect("addr");
        let arm_bytes = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (cut_tx, cut_rx) = mpsc::channel();
        let (arm, stopping) = (Arc::clone(&arm_bytes), Arc::clone(&stop));
        std::thread::spawn(move || {
            struct Peer {
                up: UdpSocket,
                bytes: u64,
                cut: Arc<AtomicBool>,
            }
            let mut peers: HashMap<SocketAddr, Peer> = HashMap::new();
            let mut buf = vec![0u8; 65_536];
            while !stopping.load(Ordering::Relaxed) {
                let (n, from) = match front.recv_from(&mut buf) {
                    Ok(v) => v,
                    Err(_) => continue,
                };
                let peer = peers.entry(from).or_insert_with(|| {
                    let up = UdpSocket::bind("127.0.0.1:0").expect("bind upstream");
                    up.connect(relay).expect("connect upstream");
                    up.set_read_timeout(Some(Duration::from_millis(50)))
                        .expect("timeout");
                    let cut = Arc::new(AtomicBool::new(false));
                    let (down, back, cut2, stop2) = (
                        up.try_clone().expect("clone"),
                        front.try_clone().expect("clone"),
                        Arc::clone(&cut),
                        Arc::clone(&stopping),
                    );
                    std::thread::spawn(move || {
                        let mut buf = vec![0u8; 65_536];
                        while !stop2.load(Ordering::Relaxed) {
                            if let Ok(n) = down.recv(&mut buf)
                                && !cut2.load(Ordering::Relaxed)
                            {
                                let _ = back.send_to(&buf[..n], from);
                            }
                        }
                    });
                    Peer { up, bytes: 0, cut }
                });
                if peer.cut.load(Ordering::Relaxed) {
                    continue;
                }
                peer.bytes += n as u64;
                let threshold = arm.load(Ordering::Relaxed);
                if threshold > 0 && peer.bytes >= threshold {
                    peer.cut.store(true, Ordering::Relaxed);
                    arm.store(0, Ordering::Relaxed);
                    let _ = cut_tx.send(from);
                    continue;
                }
                let _ = peer.up.send(&buf[..n]);
            }
        });
        Proxy {
            addr,
            arm_bytes,
            stop,
            cut_rx: Mutex::new(cut_rx),
        }
    }

    /// Cuts off the next device whose upstream bytes reach `bytes`.
    pub fn arm(&self, bytes: u64) {
        self.arm_bytes.store(bytes, Ordering::Relaxed);
    }

    /// Waits (bounded) until a device was cut off; `None` if `child` exited first (it then
    /// never sent enough) or the time ran out.
    pub fn wait_cut(&self, child: &mut Child, timeout: Duration) -> Option<SocketAddr> {
        let rx = self.cut_rx.lock().expect("lock");
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(addr) => return Some(addr),
                Err(RecvTimeoutError::Timeout) => {
                    if child.try_wait().ok().flatten().is_some() {
                        return None;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
        None
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Deterministic pseudo-random bytes (xorshift), so a failure is reproducible.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    sync_testkit::pattern_bytes(len, seed)
}
