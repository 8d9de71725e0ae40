//! The raw iroh baselines: the echo process (this program re-executed as
//! `sync-stress bench-echo`, in its own process like the relay), 64-byte round trips to it,
//! and push-sized frames pipelined to it with the relay's window.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use iroh::endpoint::{Connection, RecvStream, SendStream};
use sync_testkit::ChildProcess;
use sync_types::RelayAddr;

use super::cpu::{CpuMark, CpuUse};
use super::echo::{ECHO_MAX, ECHO_REPLY, READY_PREFIX};
use super::measure::Run;
use super::session::Peer;
use super::{BenchConfig, BenchError, WARMUP, quic_error};

/// How long the echo process may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the echo process may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The running echo process; killed if dropped before [`EchoProcess::stop`].
pub(super) struct EchoProcess {
    child: ChildProcess,
    /// Where to dial it.
    pub(super) peer: Peer,
    /// Its process id.
    pub(super) pid: u32,
}

impl EchoProcess {
    /// Starts `config.echo_command` and waits for its ready line.
    pub(super) async fn start(config: &BenchConfig) -> Result<Self, BenchError> {
        let (program, args) = config.echo_command.clone();
        let started = tokio::task::spawn_blocking(move || start_blocking(&program, &args)).await;
        super::joined(started, "starting the echo process")?
    }

    /// SIGTERM, bounded wait.
    pub(super) async fn stop(self) {
        let mut child = self.child;
        let _ = tokio::task::spawn_blocking(move || child.stop(STOP_TIMEOUT)).await;
    }
}

fn start_blocking(
    program: &std::path::Path,
    args: &[std::ffi::OsString],
) -> Result<EchoProcess, BenchError> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| BenchError::Echo(format!("cannot start {}: {e}", program.display())))?;
    let stdout = child.stdout.take();
    let mut child = ChildProcess::new("bench-echo", child);
    let pid = child
        .pid()
        .ok_or_else(|| BenchError::Echo("no process id".into()))?;
    let (tx, rx) = mpsc::channel();
    if let Some(stdout) = stdout {
        // Read the ready line, then keep draining so the child never blocks on stdout.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    loop {
        match rx.recv_timeout(READY_TIMEOUT) {
            Ok(line) => {
                if let Some(dial) = line.strip_prefix(READY_PREFIX) {
                    let addr: RelayAddr = dial.trim().parse().map_err(|e| {
                        BenchError::Echo(format!("ready line {line:?} unreadable: {e}"))
                    })?;
                    let peer = Peer::new(&addr)?;
                    return Ok(EchoProcess { child, peer, pid });
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                child.kill();
                return Err(BenchError::Echo(format!(
                    "no ready line within {READY_TIMEOUT:?}"
                )));
            }
            Err(RecvTimeoutError::Disconnected) => {
                let outcome = child.stop(Duration::from_secs(5));
                return Err(BenchError::Echo(format!(
                    "it ended before it was ready ({outcome})"
                )));
            }
        }
    }
}

/// 64-byte round trips on one stream: `samples` timed after a tenth as many untimed. Sorted
/// round-trip times.
pub(super) async fn rtt(conn: &Connection, samples: usize) -> Result<Vec<Duration>, BenchError> {
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| quic_error("echo stream", e))?;
    let mut frame = [1u8; ECHO_MAX];
    frame[..4].copy_from_slice(&((ECHO_MAX - 4) as u32).to_be_bytes());
    let mut buf = [0u8; ECHO_MAX];
    let warm = samples / 10;
    let mut out = Vec::with_capacity(samples);
    for i in 0..samples + warm {
        let t = Instant::now();
        send.write_all(&frame)
            .await
            .map_err(|e| quic_error("echo write", e))?;
        recv.read_exact(&mut buf)
            .await
            .map_err(|e| quic_error("echo read", e))?;
        if i >= warm {
            out.push(t.elapsed());
        }
    }
    let _ = send.finish();
    out.sort();
    Ok(out)
}

/// `n` copies of `frame` pipelined exactly like the load generator's pushes (same `window`),
/// one ack-sized reply each, after [`WARMUP`] untimed: messages/s and CPU of the echo process
/// (`echo_pid`) and of this process.
pub(super) async fn pipelined(
    echo_pid: u32,
    conn: &Connection,
    frame: &Bytes,
    n: usize,
    window: usize,
) -> Result<Run, BenchError> {
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| quic_error("echo stream", e))?;
    blast(&mut send, &mut recv, frame, WARMUP, window).await?;
    let m0 = CpuMark::take(echo_pid);
    let start = Instant::now();
    blast(&mut send, &mut recv, frame, n, window).await?;
    let elapsed = start.elapsed();
    let m1 = CpuMark::take(echo_pid);
    let _ = send.finish();
    Ok(Run::new(n, elapsed, CpuUse::between(&m0, &m1, n), 0.0))
}

/// Writes `count` frames, never more than `window` unanswered, until every reply is read.
async fn blast(
    send: &mut SendStream,
    recv: &mut RecvStream,
    frame: &Bytes,
    count: usize,
    window: usize,
) -> Result<(), BenchError> {
    let mut buf = vec![0u8; 64 * 1024];
    let (mut sent, mut acked_bytes) = (0usize, 0usize);
    let mut out = BytesMut::new();
    while acked_bytes < count * ECHO_REPLY {
        let acked = acked_bytes / ECHO_REPLY;
        while sent < count && sent - acked < window {
            out.extend_from_slice(frame);
            sent += 1;
        }
        if !out.is_empty() {
            send.write_all(&out)
                .await
                .map_err(|e| quic_error("echo write", e))?;
            out.clear();
        }
        let read = recv
            .read(&mut buf)
            .await
            .map_err(|e| quic_error("echo read", e))?;
        match read {
            Some(r) => acked_bytes += r,
            None => return Err(quic_error("echo stream", "closed early")),
        }
    }
    Ok(())
}
