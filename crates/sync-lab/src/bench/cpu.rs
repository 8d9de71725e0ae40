//! CPU accounting from `/proc`: on-CPU time of every thread of a process (the relay or echo
//! process, and this load generator), per-operation figures between two snapshots, and the
//! load average. Linux only; elsewhere every figure reads 0.

use std::collections::HashMap;
use std::time::Instant;

/// Clock ticks per second of `/proc/*/stat` (USER_HZ; 100 on Linux).
const TICKS: f64 = 100.0;

/// Name of the relay's SQLite writer thread (threads whose name starts with this).
const WRITER_THREAD: &str = "relay-storage";

/// Name of the thread the attackers of the runs under attack run on, in this process: its CPU
/// is counted apart from the load generator's.
pub(super) const ATTACKER_THREAD: &str = "bench-attacker";

/// On-CPU seconds per live thread, keyed by thread id, with the thread's name.
type Threads = HashMap<String, (String, f64)>;

/// User + system CPU seconds of a whole process (every thread, dead ones included), from
/// `/proc/<pid>/stat` (10 ms ticks). `pid` may be `self`.
fn process_cpu(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let Some(rest) = stat.rsplit(')').next() else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // After the command name: state is field 0, utime field 11, stime field 12.
    #[allow(clippy::cast_precision_loss)]
    let ticks = (tick(11) + tick(12)) as f64;
    ticks / TICKS
}

/// First field of a `schedstat` file (nanoseconds on CPU) in seconds.
fn schedstat_secs(path: &std::path::Path) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    let ns = text.split_whitespace().next()?.parse::<u64>().ok()?;
    #[allow(clippy::cast_precision_loss)]
    Some(ns as f64 / 1e9)
}

/// On-CPU seconds per live thread of `pid` (from `/proc/<pid>/task/<tid>/schedstat`,
/// nanosecond resolution).
fn thread_cpu(pid: &str) -> Threads {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for entry in dir.flatten() {
        let tid = entry.file_name().to_string_lossy().into_owned();
        let base = entry.path();
        let name = std::fs::read_to_string(base.join("comm"))
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        let secs = schedstat_secs(&base.join("schedstat")).unwrap_or(0.0);
        out.insert(tid, (name, secs));
    }
    out
}

/// On-CPU seconds of the calling thread (nanosecond resolution).
pub(super) fn this_thread_cpu() -> f64 {
    schedstat_secs(std::path::Path::new("/proc/thread-self/schedstat")).unwrap_or(0.0)
}

/// The 1, 5 and 15 minute load averages, or "unknown".
pub(super) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// A CPU snapshot of a server process (relay or echo) and of this (load generator) process.
pub(super) struct CpuMark {
    server: f64,
    server_threads: Threads,
    generator: f64,
    generator_threads: Threads,
    at: Instant,
}

impl CpuMark {
    /// Takes a snapshot; `server_pid` is the relay's or the echo process's.
    pub(super) fn take(server_pid: u32) -> Self {
        let pid = server_pid.to_string();
        Self {
            server: process_cpu(&pid),
            server_threads: thread_cpu(&pid),
            generator: process_cpu("self"),
            generator_threads: thread_cpu("self"),
            at: Instant::now(),
        }
    }
}

/// CPU seconds the threads whose name starts with `prefix` (all for "") used between two
/// snapshots (threads that ended in between are not counted; none do during a run).
fn threads_delta(a: &Threads, b: &Threads, prefix: &str) -> f64 {
    b.iter()
        .filter(|(_, (name, _))| name.starts_with(prefix))
        .map(|(tid, (_, t1))| t1 - a.get(tid).map_or(0.0, |(_, t)| *t))
        .sum()
}

/// CPU spent between two marks, per operation.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct CpuUse {
    /// Server (relay or echo) process CPU µs per operation.
    pub(super) server_us: f64,
    /// Of which the relay's SQLite writer thread.
    pub(super) writer_us: f64,
    /// Load generator CPU µs per operation.
    pub(super) generator_us: f64,
    /// Cores the server kept busy on average.
    pub(super) server_cores: f64,
    /// Cores the load generator kept busy on average.
    pub(super) generator_cores: f64,
    /// Cores the attackers' thread kept busy on average (0 without attackers).
    pub(super) attackers_cores: f64,
}

impl CpuUse {
    /// CPU used between `a` and `b` for `ops` operations.
    pub(super) fn between(a: &CpuMark, b: &CpuMark, ops: usize) -> Self {
        #[allow(clippy::cast_precision_loss)]
        let ops = ops.max(1) as f64;
        let secs = b.at.duration_since(a.at).as_secs_f64().max(1e-9);
        // Per-thread schedstat has nanosecond resolution; /proc/<pid>/stat (10 ms ticks, every
        // thread ever) is the fallback when the thread list is unavailable.
        let pick = |threads: f64, ticks: f64| if threads > 0.0 { threads } else { ticks };
        let server = pick(
            threads_delta(&a.server_threads, &b.server_threads, ""),
            b.server - a.server,
        );
        let attackers = threads_delta(&a.generator_threads, &b.generator_threads, ATTACKER_THREAD);
        let generator = pick(
            threads_delta(&a.generator_threads, &b.generator_threads, "") - attackers,
            b.generator - a.generator,
        );
        let writer = threads_delta(&a.server_threads, &b.server_threads, WRITER_THREAD);
        Self {
            server_us: server * 1e6 / ops,
            writer_us: writer * 1e6 / ops,
            generator_us: generator * 1e6 / ops,
            server_cores: server / secs,
            generator_cores: generator / secs,
            attackers_cores: attackers / secs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn threads(v: &[(&str, &str, f64)]) -> Threads {
        v.iter()
            .map(|(tid, name, t)| ((*tid).to_string(), ((*name).to_string(), *t)))
            .collect()
    }

    #[test]
    fn thread_deltas_count_new_threads_whole_and_filter_by_name() {
        let a = threads(&[("1", "tokio-rt", 1.0), ("2", "relay-storage-writer", 2.0)]);
        let b = threads(&[
            ("1", "tokio-rt", 1.5),
            ("2", "relay-storage-writer", 2.25),
            ("3", "tokio-rt", 0.25),
        ]);
        assert!((threads_delta(&a, &b, "") - 1.0).abs() < 1e-9);
        assert!((threads_delta(&a, &b, WRITER_THREAD) - 0.25).abs() < 1e-9);
    }

    #[test]
    fn the_attackers_thread_is_counted_apart_from_the_load_generator() {
        let at = Instant::now();
        let mark = |generator: f64, attacker: f64, at: Instant| CpuMark {
            server: 0.0,
            server_threads: threads(&[("9", "tokio-rt", 0.0)]),
            generator: 0.0,
            generator_threads: threads(&[
                ("1", "tokio-rt", generator),
                ("2", ATTACKER_THREAD, attacker),
            ]),
            at,
        };
        let a = mark(1.0, 1.0, at);
        let b = mark(1.5, 2.0, at + std::time::Duration::from_secs(2));
        let used = CpuUse::between(&a, &b, 100);
        assert!((used.generator_cores - 0.25).abs() < 1e-9, "{used:?}");
        assert!((used.generator_us - 5000.0).abs() < 1e-6, "{used:?}");
        assert!((used.attackers_cores - 0.5).abs() < 1e-9, "{used:?}");
    }

    #[test]
    fn a_busy_thread_is_seen_using_cpu() {
        let own = thread_cpu("self");
        assert!(!own.is_empty(), "this test runs in at least one thread");
        // The kernel updates a running thread's figure at its next tick or switch: spin until
        // it moves, bounded.
        let before = this_thread_cpu();
        let deadline = Instant::now() + std::time::Duration::from_secs(30);
        let mut x = 0u64;
        while this_thread_cpu() <= before {
            assert!(
                Instant::now() < deadline,
                "no CPU time seen after 30 s of spinning"
            );
            for i in 0..100_000u64 {
                x = std::hint::black_box(x.wrapping_add(i));
            }
        }
    }
}
