//! `sync-stress impair` as a process: UDP through it, its HTTP control (stats, patch, partition,
//! heal, refused settings) and its final counters on Ctrl-C (SIGINT).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const GUARD: Duration = Duration::from_secs(30);

/// One HTTP/1.1 request; returns (status, body).
fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(GUARD)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

/// Kills the proxy when the test ends early (a failed assertion): an orphaned proxy would run
/// forever.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `/stats` until the upstream counter `name` reaches `n` (bounded by [`GUARD`]).
fn wait_until_counted(control: SocketAddr, name: &str, n: u64) {
    let deadline = std::time::Instant::now() + GUARD;
    loop {
        let (_, stats) = http(control, "GET", "/stats", "");
        if stats["up"][name].as_u64() >= Some(n) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the proxy never counted {n} {name}: {stats}"
        );
        std::thread::yield_now();
    }
}

#[test]
fn the_impair_command_forwards_is_controlled_over_http_and_reports_on_ctrl_c() {
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    server.set_read_timeout(Some(GUARD)).unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_sync-stress"))
        .args(["impair", "--listen", "127.0.0.1:0", "--upstream"])
        .arg(server.local_addr().unwrap().to_string())
        .args([
            "--up-delay",
            "5ms",
            "--down-loss",
            "0%",
            "--seed",
            "1",
            "--stats-every",
            "0",
        ])
        .stdout(Stdio::piped())
        // Not inherited: a proxy left behind must not hold the test harness's output open.
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let mut field = |prefix: &str| -> String {
        loop {
            let line = lines
                .next()
                .expect("the proxy prints its addresses")
                .unwrap();
            if let Some(v) = line.strip_prefix(prefix) {
                return v.trim().to_string();
            }
        }
    };
    let listen: SocketAddr = field("listen:").parse().unwrap();
    let control: SocketAddr = field("control:")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap();

    let mut buf = [0u8; 64];
    client.send_to(b"one", listen).unwrap();
    let (n, _) = server.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"one");
    let (status, stats) = http(control, "GET", "/stats", "");
    assert_eq!(status, 200);
    assert_eq!(stats["up"]["forwarded"], 1);
    let (_, config) = http(control, "GET", "/config", "");
    assert_eq!(config["up"]["delay_ms"], 5.0);

    // Patch: drop everything upstream; a bad value is refused and changes nothing.
    let (status, config) = http(control, "POST", "/config", r#"{"up": {"loss": 1.0}}"#);
    assert_eq!((status, config["up"]["loss"].as_f64()), (200, Some(1.0)));
    let (status, err) = http(control, "POST", "/config", r#"{"both": {"loss": 2}}"#);
    assert_eq!(status, 400, "{err}");
    assert!(err["error"].as_str().unwrap().contains("loss"));
    client.send_to(b"lost", listen).unwrap();
    // The proxy reads its socket on its own task: the packet must have been judged under the
    // loss setting before the setting changes back, or it would be forwarded after all.
    wait_until_counted(control, "dropped_loss", 1);
    let (status, _) = http(control, "POST", "/config", r#"{"up": {"loss": 0}}"#);
    assert_eq!(status, 200);
    let (_, config) = http(control, "POST", "/partition", "");
    assert_eq!(config["up"]["partition"], true);
    client.send_to(b"partitioned", listen).unwrap();
    wait_until_counted(control, "dropped_partition", 1);
    let (_, config) = http(control, "POST", "/heal", "");
    assert_eq!(config["down"]["partition"], false);
    client.send_to(b"two", listen).unwrap();
    let (n, _) = server.recv_from(&mut buf).unwrap();
    assert_eq!(
        &buf[..n],
        b"two",
        "the lost and partitioned packets never arrived"
    );
    let (_, stats) = http(control, "GET", "/stats", "");
    assert_eq!(stats["up"]["received"], 4);
    assert_eq!(stats["up"]["dropped_loss"], 1);
    assert_eq!(stats["up"]["dropped_partition"], 1);

    // Ctrl-C: final counters, exit 0.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.0.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let last = lines
        .map(Result::unwrap)
        .find(|l| l.contains("\"final\""))
        .expect("final counters");
    let v: serde_json::Value = serde_json::from_str(&last).unwrap();
    assert_eq!(v["stats"]["up"]["forwarded"], 2);
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status}");
    // The bad loopback check of the command line.
    let out = Command::new(env!("CARGO_BIN_EXE_sync-stress"))
        .args([
            "impair",
            "--listen",
            "0.0.0.0:0",
            "--upstream",
            "127.0.0.1:9",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("loopback") && err.lines().count() == 1,
        "{err}"
    );
}
