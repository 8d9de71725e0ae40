//! The operator's status page in a real browser: the relay binary serves traffic from a device,
//! headless Chromium (Debian's `chromium`) opens `http://127.0.0.1:…/`, runs the page's script
//! and the test reads the DOM it built: every chart drawn from the relay's samples, the totals
//! equal to `/metrics`, no script or policy error, nothing loaded from anywhere else. It also
//! takes the screenshot in `docs/img/status.png` (written there when
//! `SYNC_UPDATE_SCREENSHOT=1`).

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use iroh::EndpointId;
use sync_testkit::{RelayProcess, guard};
use sync_types::{ErrorCode, Message};

/// Runs headless Chromium on `url` with `extra` flags; returns what it printed.
fn chromium(url: &str, extra: &[&str]) -> String {
    let out = Command::new("timeout")
        .args(["--kill-after=5s", "60s", "chromium"])
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--metrics-recording-only",
            // A name that is not 127.0.0.1 resolves to nothing: the page may reach nothing else.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            // Lets the page's timers and fetches run before the DOM is read.
            "--virtual-time-budget=3000",
            "--window-size=1200,900",
        ])
        .args(extra)
        .arg(url)
        .output()
        .expect("chromium (Debian package `chromium`) runs");
    assert!(out.status.success(), "chromium: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The samples `/api/stats` holds now.
async fn samples(http: std::net::SocketAddr) -> Vec<serde_json::Value> {
    let (_, body) = http_get(http, "/api/stats").await;
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    v["samples"].as_array().cloned().unwrap_or_default()
}

/// The value of `attr` on the element that carries `marker` (`name="value"` in the DOM text).
fn attr_after<'a>(dom: &'a str, marker: &str, attr: &str) -> Option<&'a str> {
    let at = dom.find(marker)?;
    let tag_end = dom[at..].find('>')? + at;
    let tag_start = dom[..at].rfind('<')?;
    let tag = &dom[tag_start..tag_end];
    let key = format!("{attr}=\"");
    let v = tag.find(&key)? + key.len();
    let end = tag[v..].find('"')? + v;
    Some(&tag[v..end])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_draws_the_relays_traffic_in_a_real_browser() {
    let relay = RelayProcess::builder()
        .args(["--status-interval", "200ms"])
        .start()
        .expect("relay starts");
    let id = EndpointId::from_bytes(relay.id().as_bytes()).expect("relay id");
    let http = relay.http_addr();
    let group = keys(3);
    let (mut device, _) = Client::open_at(id, relay.addrs()[0], &group).await;
    // Waves of pushes, one per sample, so the charts have a shape.
    let mut n = 0;
    for wave in 1..=6u64 {
        let before = samples(http).await.len();
        for _ in 0..wave * 5 {
            n += 1;
            device.push_acked(blob(n), b"status page traffic").await;
        }
        guard("the next sample", async {
            while samples(http).await.len() <= before {
                tokio::task::yield_now().await;
            }
        })
        .await;
    }
    let refused = device.push(blob(1), b"other bytes").await;
    assert!(matches!(&refused, Message::Error(e) if e.code == ErrorCode::Conflict));
    assert!(matches!(
        device.pull(0, 100).await,
        Message::PullResponse(_)
    ));

    // Until a sample holds the pushes and a later one the refusal (the sampler runs every
    // 200 ms; each check is one request).
    guard("the samples to show the traffic", async {
        loop {
            let samples = samples(http).await;
            let pushed = samples
                .iter()
                .any(|s| s["pushes_per_s"].as_f64() > Some(0.0));
            let refused = samples
                .iter()
                .any(|s| s["refusals"]["Conflict"].as_u64() == Some(1));
            if pushed && refused {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    let pushes_total = metric(http, "pushes_total").await;
    assert_eq!(pushes_total, 105.0);

    let url = format!("http://{http}/");
    let dom = chromium(&url, &["--dump-dom"]);

    // Every chart is there, drawn from samples.
    for chart in [
        "sessions", "traffic", "bytes", "latency", "notify", "storage", "refusals",
    ] {
        let marker = format!("data-chart=\"{chart}\"");
        let points: usize = attr_after(&dom, &marker, "data-points")
            .unwrap_or_else(|| panic!("no chart {chart} in the page"))
            .parse()
            .expect("a count");
        assert!(points >= 2, "{chart}: {points} points");
    }
    assert!(
        dom.matches("<polyline").count() >= 11,
        "every series is drawn"
    );
    // The totals are the relay's.
    assert_eq!(
        attr_after(&dom, "data-now=\"pushes_total\"", "data-value"),
        Some("105")
    );
    assert_eq!(
        attr_after(&dom, "data-now=\"refusals_total\"", "data-value"),
        Some("1")
    );
    assert!(dom.contains(">ok<"), "status ok");
    assert!(
        dom.contains("Conflict"),
        "the refusal's reason is in the legend"
    );
    assert!(dom.contains(&relay.id().to_string()[..16]), "the relay id");
    // No script error, no load blocked by the page's policy (it may load nothing from
    // elsewhere): the page records both on <body data-errors>. Nothing names the group in full.
    assert!(
        !dom.contains("data-errors="),
        "the page recorded errors:\n{dom}"
    );
    assert!(
        dom.contains("<span id=\"error\"></span>"),
        "the page could not read its data"
    );
    let group_hex = hex_id(group.group_id().as_bytes());
    assert!(!dom.contains(&group_hex));

    // The screenshot the README shows.
    let dir = tempfile::tempdir().expect("tempdir");
    let shot = dir.path().join("status.png");
    let arg = format!("--screenshot={}", shot.display());
    chromium(&url, &["--hide-scrollbars", &arg]);
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    if std::env::var_os("SYNC_UPDATE_SCREENSHOT").is_some() {
        let to = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/img/status.png");
        std::fs::write(&to, &png).expect("write the screenshot");
    }
    device.close().await;
}
