//! `sync-stress bench --content --content-only`: the large content section alone, quick
//! (8 MiB), against the real relay binary: it prints every step and writes every figure to the
//! JSON report, positive, for the size asked (no timing is asserted: the figures depend on the
//! machine).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{run_stress, run_stress_with_relay, succeeded, text};
use serde_json::Value;

/// Bounds the whole run (seconds on an idle machine; a loaded 2-core host with debug binaries
/// is far slower).
const GUARD: Duration = Duration::from_secs(600);

const SIZE: u64 = 8 << 20;

/// The number at `path` in `v`, which must be positive.
fn positive(v: &Value, path: &[&str]) -> f64 {
    let mut at = v;
    for key in path {
        at = &at[*key];
    }
    let n = at
        .as_f64()
        .unwrap_or_else(|| panic!("no number at {path:?} in {v:#}"));
    assert!(n > 0.0, "{path:?} is {n}, not positive");
    n
}

#[test]
fn quick_content_section_prints_and_reports_every_figure() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let out = run_stress_with_relay(
        &[
            "bench",
            "--content",
            "--content-only",
            "--content-sizes",
            "8MiB",
            "--json",
            json.to_str().unwrap(),
        ],
        GUARD,
    );
    let stdout = succeeded(&out);
    for start in [
        "## Large content",
        "### 8 MiB",
        "[content 8 MiB] 1. bare seal+hash",
        "[content 8 MiB] 2. raw iroh bulk",
        "[content 8 MiB] 3. direct: seal into A's store",
        "[content 8 MiB] 3. direct: B fetches from A",
        "[content 8 MiB] 3. direct: fetch + open to a file",
        "[content 8 MiB] 4. via relay: A uploads to the relay",
        "[content 8 MiB] 4. via relay: A send_file whole",
        "[content 8 MiB] 4. via relay: A offline, B downloads from the relay",
        "Large content summary (MB/s)",
        "  8 MiB",
        "total wall time:",
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(start)),
            "no line starting {start:?} in:\n{stdout}"
        );
    }

    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert!(report["figures"].is_null(), "the content section alone");
    let content = &report["content"];
    assert!(content["cores"].as_u64().unwrap() >= 1);
    let sizes = content["sizes"].as_array().unwrap();
    assert_eq!(sizes.len(), 1, "{content:#}");
    let s = &sizes[0];
    assert_eq!(s["bytes"].as_u64(), Some(SIZE));
    // A 16-byte tag per 64 KiB chunk.
    assert_eq!(s["sealed_bytes"].as_u64(), Some(SIZE + SIZE / 65_536 * 16));
    assert_eq!(s["input"], "pseudo-random");
    for step in ["seal", "hash", "seal_and_hash"] {
        positive(s, &["seal_hash", step, "mb_per_s"]);
        positive(s, &["seal_hash", step, "seconds"]);
    }
    positive(s, &["raw_iroh", "mb_per_s"]);
    positive(s, &["raw_iroh", "seconds"]);
    for step in ["seal", "fetch", "fetch_and_open"] {
        positive(s, &["direct", step, "mb_per_s"]);
        positive(s, &["direct", step, "seconds"]);
    }
    positive(s, &["direct", "fetch_share_of_raw"]);
    assert!(s["direct"]["target_met"].is_boolean());
    assert!(s["direct"]["floor_met"].is_boolean());
    let relay = &s["via_relay"];
    assert_eq!(relay["status"], "measured", "{relay:#}");
    assert!(relay["upload_seen_by_relay"].is_boolean());
    assert!(relay["send_file_after_stored_s"].as_f64().unwrap() >= 0.0);
    for step in [
        "send_file",
        "seal",
        "upload",
        "download",
        "download_and_open",
    ] {
        positive(relay, &[step, "mb_per_s"]);
        positive(relay, &[step, "seconds"]);
    }
}

#[test]
fn content_sizes_out_of_range_or_without_content_are_refused() {
    for args in [
        &["bench", "--content", "--content-sizes", "512KiB"][..],
        &["bench", "--content", "--content-sizes", "8 parsecs"][..],
        &[
            "bench",
            "--content",
            "--content-sizes",
            "1MiB,2MiB,3MiB,4MiB,5MiB",
        ][..],
        &["bench", "--content-sizes", "8MiB"][..],
        &["bench", "--content-only"][..],
    ] {
        let out = run_stress(args, GUARD);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}
