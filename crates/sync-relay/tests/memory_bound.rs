//! Memory bounded by bytes, on the real relay binary: five sessions pipeline pulls of a 1 MiB
//! blob and never read. The relay's resident memory (from `/proc/<pid>/status`) grows by less
//! than the worst case docs/OPERATIONS.md states for five sessions, the stalled sessions are cut
//! after the write-stall timeout, and another group's pushes are all acknowledged meanwhile.
#![cfg(target_os = "linux")]

mod common;

use std::time::{Duration, Instant};

use common::*;
use sync_testkit::RelayProcess;
use sync_types::Message;

const MIB: u64 = 1024 * 1024;
const STALLED: usize = 5;
const STALL_TIMEOUT_SECS: u64 = 8;
/// How long the stalled sessions are given at most (they are cut well before).
const RUN: Duration = Duration::from_secs(20);

/// A field of `/proc/<pid>/status` in bytes (`VmRSS`: now, `VmHWM`: peak).
fn proc_status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"));
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("a number of kB");
    kib * 1024
}

/// The worst case per session that docs/OPERATIONS.md ("Memory") derives from the config, for
/// the defaults: the outbound queue, two pulls each holding a page and its encoded frame, the
/// pushes in flight, the frame being read (and one push's payload twice while it is queued),
/// and the writer's batch.
fn documented_session_bound() -> u64 {
    let config = sync_relay::RelayConfig::default();
    let max_frame = sync_types::max_frame_for_payload(config.max_blob_bytes as usize) as u64;
    u64::from(config.session_queue_bytes)
        + 2 * u64::from(config.session_pulls) * max_frame
        + u64::from(config.session_push_bytes)
        + 2 * max_frame
        + 336 * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_that_never_read_cost_the_documented_bound_and_others_keep_pushing() {
    let mut relay = RelayProcess::builder()
        .args(["--write-stall-timeout", &format!("{STALL_TIMEOUT_SECS}s")])
        .args(["--session-push-rate", "0", "--global-push-rate", "0"])
        .start()
        .expect("relay starts");
    let pid = relay.pid().expect("running");
    let relay_id = iroh::EndpointId::from_bytes(relay.id().as_bytes()).expect("relay id");
    let addr = relay.addrs()[0];
    let open = |k: u8| async move {
        let mut c = Client::connect_to(relay_id, addr).await;
        match c.hello(&keys(k)).await {
            Message::Welcome(w) => (c, w),
            other => panic!("expected Welcome, got {other:?}"),
        }
    };

    // Group 1 holds one blob of the largest size; group 2 is the bystander.
    let (mut owner, welcome) = open(1).await;
    let big = vec![0x5a; welcome.limits.max_blob_bytes as usize];
    owner.push_acked(blob(1), &big).await;
    let (mut bystander, _) = open(2).await;
    bystander.push_acked(blob(100), b"warm up").await;
    let before = proc_status_bytes(pid, "VmRSS");

    // Five sessions ask for the blob again and again and read nothing.
    let mut stalled = Vec::new();
    for _ in 0..STALLED {
        let (mut c, _) = open(1).await;
        for i in 0..300 {
            c.tx.send(&pull_msg(1000 + i, 0, 1)).await;
        }
        stalled.push(c);
    }
    let cut = stalled
        .iter()
        .map(|c| {
            let conn = c.conn.clone();
            tokio::spawn(async move { conn.closed().await })
        })
        .collect::<Vec<_>>();

    // Meanwhile the bystander pushes, one push at a time, until the stalled sessions are cut
    // (or the run is over): every push is acknowledged.
    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut n = 200;
    while started.elapsed() < RUN && !cut.iter().all(|t| t.is_finished()) {
        let sent = Instant::now();
        bystander.push_acked(blob(n), b"bystander").await;
        latencies.push(sent.elapsed());
        n += 1;
    }
    let all_cut = cut.iter().all(|t| t.is_finished());
    let cut_after = started.elapsed();
    let peak = proc_status_bytes(pid, "VmHWM");
    for c in stalled {
        c.close().await;
    }
    // After the cut, the bystander still works.
    bystander.push_acked(blob(n), b"after").await;
    let after = proc_status_bytes(pid, "VmRSS");

    latencies.sort();
    let p99 = latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)];
    let bound = STALLED as u64 * documented_session_bound();
    println!(
        "memory bound: RSS before {} MiB, peak {} MiB (+{} MiB), after {} MiB; bound for \
         {STALLED} sessions +{} MiB; stalled sessions cut after {cut_after:?}; bystander: \
         {} pushes acked, push->ack p99 {p99:?}",
        before / MIB,
        peak / MIB,
        peak.saturating_sub(before) / MIB,
        after / MIB,
        bound / MIB,
        latencies.len(),
    );
    assert!(all_cut, "the stalled sessions were cut within {RUN:?}");
    assert!(
        cut_after >= Duration::from_secs(STALL_TIMEOUT_SECS),
        "not before the write-stall timeout"
    );
    assert!(
        peak.saturating_sub(before) < bound,
        "RSS grew by {} MiB, more than the documented {} MiB",
        peak.saturating_sub(before) / MIB,
        bound / MIB
    );
    assert!(!latencies.is_empty());
    owner.close().await;
    bystander.close().await;
    assert!(relay.stop().is_clean(), "the relay stops cleanly");
}
