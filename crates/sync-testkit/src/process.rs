//! A child process that cannot outlive its owner: stopped with SIGTERM and a bounded wait, or
//! SIGKILLed when dropped.

use std::process::{Child, ExitStatus, Output};
use std::time::{Duration, Instant};

/// How [`ChildProcess::stop`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    /// It exited within the wait after SIGTERM, with this status.
    Exited(ExitStatus),
    /// It had already exited before SIGTERM, with this status.
    AlreadyExited(ExitStatus),
    /// It did not exit in time and was SIGKILLed.
    Killed,
    /// There was no process (already stopped).
    NotRunning,
}

impl StopOutcome {
    /// Whether it exited by itself with status 0 after SIGTERM.
    pub fn is_clean(&self) -> bool {
        matches!(self, Self::Exited(s) if s.success())
    }
}

impl std::fmt::Display for StopOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exited(s) if s.success() => f.write_str("stopped cleanly (SIGTERM, exit 0)"),
            Self::Exited(s) => write!(f, "stopped by SIGTERM with {s}"),
            Self::AlreadyExited(s) => write!(f, "had already exited ({s})"),
            Self::Killed => f.write_str("did not stop after SIGTERM; killed"),
            Self::NotRunning => f.write_str("not running"),
        }
    }
}

/// A running child process, SIGKILLed and reaped when dropped.
#[derive(Debug)]
pub struct ChildProcess {
    name: String,
    child: Option<Child>,
}

impl ChildProcess {
    /// Takes ownership of `child`; `name` is used in messages.
    pub fn new(name: impl Into<String>, child: Child) -> Self {
        Self {
            name: name.into(),
            child: Some(child),
        }
    }

    /// The name given at creation.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its process id, while it has not been stopped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGTERM, then wait up to `timeout` for it to exit; SIGKILL if it does not. Blocks the
    /// calling thread (from async code: `tokio::task::block_in_place`).
    pub fn stop(&mut self, timeout: Duration) -> StopOutcome {
        let Some(mut child) = self.child.take() else {
            return StopOutcome::NotRunning;
        };
        if let Ok(Some(status)) = child.try_wait() {
            return StopOutcome::AlreadyExited(status);
        }
        signal(&child, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + timeout;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return StopOutcome::Exited(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return StopOutcome::Killed;
                }
            }
        }
    }

    /// SIGKILL now (as a crash or a power cut would end it) and reap it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Gives the child back without killing it (the caller takes over its lifetime).
    pub fn into_child(mut self) -> Option<Child> {
        self.child.take()
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn signal(child: &Child, sig: nix::sys::signal::Signal) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
    }
}

/// Waits for `child` to exit and collects its output, at most `timeout`; after that it is
/// SIGKILLed and `None` is returned.
pub fn wait_exit(child: Child, timeout: Duration) -> Option<Output> {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => out.ok(),
        Err(_) => {
            if let Ok(pid) = i32::try_from(pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            None
        }
    }
}

/// Runs `cmd` to completion with stdin closed and stdout/stderr captured; SIGKILLed if it
/// outlives `limit`.
///
/// # Panics
/// When it cannot be started or does not finish within `limit`: this is for tests.
#[allow(clippy::panic)]
pub fn run_bounded(cmd: &mut std::process::Command, limit: Duration) -> Output {
    use std::process::Stdio;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", cmd.get_program()));
    wait_exit(child, limit)
        .unwrap_or_else(|| panic!("{:?} did not finish within {limit:?}", cmd.get_program()))
}
