//! The timed runs against the relay: durable push→ack throughput (devices pushing pipelined in
//! parallel), idle push latency, and push(A)→notify(B) latency.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::cpu::{CpuMark, CpuUse};
use super::perf::Perf;
use super::relay::BenchRelay;
use super::sealed::SealedPush;
use super::session::Device;
use super::{BenchError, joined};

/// How long B may take to see A's push before the sample counts as missed.
const NOTIFY_WAIT: Duration = Duration::from_secs(5);

/// What one throughput run measured.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Run {
    /// Operations per second.
    pub(super) rate: f64,
    /// CPU per operation.
    pub(super) cpu: CpuUse,
    /// Storage operations per SQLite commit (0 when not measured).
    pub(super) per_commit: f64,
}

impl Run {
    /// `ops` operations in `elapsed`.
    pub(super) fn new(ops: usize, elapsed: Duration, cpu: CpuUse, per_commit: f64) -> Self {
        #[allow(clippy::cast_precision_loss)]
        let rate = ops as f64 / elapsed.as_secs_f64().max(1e-9);
        Self {
            rate,
            cpu,
            per_commit,
        }
    }

    /// The indented line of CPU figures printed under a relay throughput figure (with the
    /// attackers' cores when they ran).
    pub(super) fn detail(&self) -> String {
        let attackers = if self.cpu.attackers_cores > 0.0 {
            format!(", attackers {:.2}", self.cpu.attackers_cores)
        } else {
            String::new()
        };
        format!(
            "    (relay process CPU {:.1} µs/push, of which SQLite writer thread {:.1}; load generator {:.1} µs/push; \
             cores busy: relay {:.2}, generator {:.2}{attackers}; writer {:.1} pushes/commit)",
            self.cpu.server_us,
            self.cpu.writer_us,
            self.cpu.generator_us,
            self.cpu.server_cores,
            self.cpu.generator_cores,
            self.per_commit
        )
    }
}

/// A device with its untimed warm-up frames and its timed frames.
pub(super) type Load = (Device, Vec<Bytes>, Vec<Bytes>);

/// How a throughput run is profiled (see [`Perf`]).
pub(super) struct Profile<'a> {
    /// `perf record` output prefix, if any.
    pub(super) prefix: Option<&'a Path>,
    /// Record call graphs.
    pub(super) callgraph: bool,
}

/// Durable push→ack throughput: every device pushes its warm-up frames (untimed), then all
/// push their timed frames pipelined at once; the clock stops when the last push of every
/// device is acked (each ack is sent only after its commit). Gives the devices back. `label`
/// names the run's profile, if one is recorded.
pub(super) async fn throughput(
    relay: &BenchRelay,
    devices: Vec<Load>,
    profile: &Profile<'_>,
    label: &str,
) -> Result<(Run, Vec<Device>), BenchError> {
    let mut ready = Vec::with_capacity(devices.len());
    for (mut d, warm, timed) in devices {
        d.blast(&warm).await?;
        ready.push((d, timed));
    }
    let total: usize = ready.iter().map(|(_, f)| f.len()).sum();
    let commits0 = relay.metric("storage_commits_total").await;
    let ops0 = relay.metric("storage_ops_total").await;
    let perf = Perf::start(profile.prefix, profile.callgraph, relay.pid, label).await;
    let m0 = CpuMark::take(relay.pid);
    let start = Instant::now();
    let tasks: Vec<_> = ready
        .into_iter()
        .map(|(mut d, timed)| {
            tokio::spawn(async move {
                let pushed = d.blast(&timed).await;
                pushed.map(|()| d)
            })
        })
        .collect();
    let mut done = Vec::with_capacity(tasks.len());
    for t in tasks {
        done.push(joined(t.await, "a device's pushes")??);
    }
    let elapsed = start.elapsed();
    let m1 = CpuMark::take(relay.pid);
    perf.stop().await;
    let commits = relay
        .metric("storage_commits_total")
        .await
        .saturating_sub(commits0)
        .max(1);
    let ops = relay.metric("storage_ops_total").await.saturating_sub(ops0);
    #[allow(clippy::cast_precision_loss)]
    let per_commit = ops as f64 / commits as f64;
    let run = Run::new(total, elapsed, CpuUse::between(&m0, &m1, total), per_commit);
    Ok((run, done))
}

/// Idle push latency: one push at a time, from writing its frame to reading its `PushAck`.
/// The first eleventh of `pushes` is warm-up; sorted latencies of the rest.
pub(super) async fn push_latency(
    dev: &mut Device,
    pushes: &[SealedPush],
    first_request: u64,
) -> Result<Vec<Duration>, BenchError> {
    let warm = pushes.len() / 11;
    let mut out = Vec::with_capacity(pushes.len());
    for (i, (push, request_id)) in pushes.iter().zip(first_request..).enumerate() {
        let t = Instant::now();
        dev.write(&push.frame).await?;
        dev.ack(request_id).await?;
        if i >= warm {
            out.push(t.elapsed());
        }
    }
    out.sort();
    Ok(out)
}

/// push(A)→notify(B): A pushes one blob at a time; a sample ends when B reads the `Notify`
/// carrying that blob's id. The first eleventh is warm-up. Sorted latencies, and how many
/// pushes B saw no notify for within [`NOTIFY_WAIT`].
pub(super) async fn notify_latency(
    a: &mut Device,
    b: &mut Device,
    pushes: &[SealedPush],
    first_request: u64,
) -> Result<(Vec<Duration>, usize), BenchError> {
    let warm = pushes.len() / 11;
    let mut out = Vec::with_capacity(pushes.len());
    let mut missed = 0;
    for (i, (push, request_id)) in pushes.iter().zip(first_request..).enumerate() {
        let t = Instant::now();
        a.write(&push.frame).await?;
        let seen = async {
            let r = tokio::time::timeout(NOTIFY_WAIT, b.notified(push.blob_id)).await;
            (r, Instant::now())
        };
        let (acked, (seen, at)) = tokio::join!(a.ack(request_id), seen);
        acked?;
        match seen {
            Ok(Ok(())) if i >= warm => out.push(at - t),
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => missed += 1,
        }
    }
    out.sort();
    Ok((out, missed))
}
