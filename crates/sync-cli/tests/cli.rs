//! The real `sync-cli` binary against a real `sync-relay` process on 127.0.0.1: pairing by
//! invite string, short code and passphrase; text and a 512 KiB file byte for byte; the offline
//! outbox; SIGKILL mid push; refused codes; truthful status; watch; exit codes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use support::{
    CMD_TIMEOUT, Device, Proxy, Relay, Run, TwoDevices, WAIT, blobs_data, bytes, cli_bin,
    lone_device, output_lines, terminate, wait_exit,
};
use sync_client::STORE_FILE_NAME;

const FILE_LEN: usize = 512 * 1024;

/// Text one way, a 512 KiB file the other way (from a file, then through stdin), byte for byte.
fn exchange(t: &TwoDevices) {
    let TwoDevices { a, b, .. } = t;
    a.run(&["push", "hello from A"]).ok();
    assert_eq!(b.pull(), vec![b"hello from A".to_vec()]);

    let data = bytes(FILE_LEN, 7);
    let file = t.path().join("file.bin");
    std::fs::write(&file, &data).unwrap();
    b.run(&["push", "--file", file.to_str().unwrap()]).ok();
    let raw = a.run(&["pull", "--raw"]).ok();
    assert_eq!(raw.stdout.len(), FILE_LEN);
    assert!(raw.stdout == data, "file arrives byte for byte");

    let other = bytes(FILE_LEN, 8);
    b.run_with_stdin(&["push", "--file", "-"], &other).ok();
    assert!(a.pull() == vec![other], "stdin file arrives byte for byte");
    assert!(b.pull().is_empty(), "own pushes are not pulled back");
}

#[test]
fn pair_by_invite_string_then_exchange_and_a_third_device_reuses_the_invite() {
    let t = TwoDevices::start();
    let TwoDevices { relay, a, b, .. } = &t;
    let (invite, _code) = a.create_group(&relay.dial);
    assert!(invite.starts_with("0ksync1:"));
    b.run(&["pair", "--join", &invite]).ok();
    exchange(&t);

    // The same invite string admits more devices until it expires (the lab relies on it).
    let c = t.device("c", "tablet");
    c.run(&["pair", "--join", &invite]).ok();
    let got = c.pull();
    assert_eq!(got.len(), 3, "C sees the whole history");
    assert_eq!(got[0], b"hello from A");
}

#[test]
fn pair_by_short_code_over_the_http_url_then_exchange() {
    let t = TwoDevices::start();
    let TwoDevices { relay, a, b, .. } = &t;
    // --relay as the relay's HTTP URL: the CLI reads /.well-known/0k-sync.
    let (_invite, code) = a.create_group(&relay.http);
    assert_eq!(code.len(), 19, "XXXX-XXXX-XXXX-XXXX: {code}");
    let joined = b
        .run(&["pair", "--join", &code, "--relay", &relay.dial, "--json"])
        .ok()
        .json();
    assert_eq!(joined["online"], true);
    exchange(&t);

    // `invite` gives the third device a fresh single-use code.
    let v = a.run(&["invite", "--json"]).ok().json();
    let code = v["short_code"].as_str().unwrap();
    // A relay id pinned with --relay-id must be the one the URL's relay announces: another
    // is refused before the code is used.
    let join = |device: &Device, relay_id: &str| {
        device.run(&[
            "pair",
            "--join",
            code,
            "--relay",
            &relay.http,
            "--relay-id",
            relay_id,
        ])
    };
    let d = t.device("d", "intruder check");
    let refused = join(&d, &"ab".repeat(32));
    assert_eq!(refused.code(), 9, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("refusing") && refused.stderr.contains(&relay.id),
        "{}",
        refused.stderr
    );
    let c = t.device("c", "tablet");
    join(&c, &relay.id).ok();
    assert_eq!(c.pull().len(), 3);
    // Without a pin, an id read over plain http is trusted on first use, and said so.
    let tofu = a.run(&["invite", "--relay", &relay.http]).ok();
    assert!(
        tofu.stderr.contains("trusted on first use") && tofu.stderr.contains(&relay.id),
        "{}",
        tofu.stderr
    );
    let devices = a.run(&["devices", "--json"]).ok().json();
    assert_eq!(devices["devices"].as_array().unwrap().len(), 2, "{devices}");
}

#[test]
fn pair_by_passphrase_then_exchange_and_a_wrong_passphrase_is_refused() {
    let t = TwoDevices::start();
    let TwoDevices { relay, a, b, .. } = &t;
    // Not a terminal: the passphrase is the first line of standard input.
    let v = a
        .run_with_stdin(
            &[
                "pair",
                "--create",
                "--passphrase",
                "--relay",
                &relay.dial,
                "--json",
            ],
            b"correct horse battery staple\n",
        )
        .ok()
        .json();
    assert_eq!(v["passphrase"], true);
    let code = v["short_code"].as_str().unwrap().to_string();
    let invite = v["invite"].as_str().unwrap().to_string();

    // The invite alone does not hold the key: a wrong passphrase is refused with code 5.
    let c = t.device("c", "intruder");
    // The invite and then the passphrase, both from standard input.
    let wrong = c.run_with_stdin(
        &["pair", "--join", "-", "--passphrase"],
        format!("{invite}\nwrong horse\n").as_bytes(),
    );
    wrong.refused(5, &["wrong passphrase"]);

    let pw = t.path().join("pw");
    std::fs::write(&pw, "correct horse battery staple\n").unwrap();
    // The code from standard input (`--join -`), the passphrase from a file.
    b.run_with_stdin(
        &[
            "pair",
            "--join",
            "-",
            "--relay",
            &relay.dial,
            "--passphrase-file",
            pw.to_str().unwrap(),
        ],
        format!("{code}\n").as_bytes(),
    )
    .ok();
    exchange(&t);
}

#[test]
fn offline_push_is_queued_then_delivered_exactly_once_when_the_relay_is_back() {
    let mut t = TwoDevices::paired();
    let TwoDevices { relay, a, b, .. } = &mut t;

    relay.stop();
    a.env.push(("SYNC_CLI_CONNECT_TIMEOUT".into(), "1".into()));
    let queued = a.run(&["push", "written offline"]).ok();
    assert!(queued.stderr.contains("queued"), "{}", queued.stderr);
    assert!(
        queued.stderr.contains(&relay.dial),
        "names the address tried: {}",
        queued.stderr
    );
    let st = a.run(&["status", "--json"]).ok().json();
    assert_eq!(st["online"], false);
    assert_eq!(st["pending"], 1);
    let pull = a.run(&["pull"]);
    assert_eq!(pull.code(), 4, "{}", pull.stderr);
    assert!(pull.stderr.contains(&relay.dial), "{}", pull.stderr);
    a.env.pop();

    relay.restart();
    // B pulls first: nothing yet, the push is still on A.
    assert!(b.pull().is_empty());
    // The next command that connects on A sends it.
    let st = a.run(&["status", "--json"]).ok().json();
    assert_eq!(st["online"], true);
    assert_eq!(st["pending"], 0);
    assert_eq!(st["sent_now"], 1);
    assert_eq!(b.pull(), vec![b"written offline".to_vec()]);
    let flushed = a.run(&["flush", "--json"]).ok().json();
    assert_eq!(flushed["sent"], 0);
    assert!(b.pull().is_empty(), "exactly once");
    let all = b
        .run(&["pull", "--after-cursor", "0", "--json"])
        .ok()
        .json();
    let written = blobs_data(&all)
        .iter()
        .filter(|d| d.as_slice() == b"written offline")
        .count();
    assert_eq!(written, 1, "stored once on the relay");
}

/// A pushes "one", "two" and "three"; `tamper` then changes the stopped relay's database, as
/// an operator with a shell on the relay host could; then B pulls. The pull exits 11, prints
/// the good blobs ("one" and "three") and warns once. Returns the pair and the pull.
fn pull_after_tampering(tamper: impl FnOnce(&rusqlite::Connection)) -> (TwoDevices, Run) {
    let mut t = TwoDevices::paired();
    for text in ["one", "two", "three"] {
        t.a.run(&["push", text]).ok();
    }
    t.relay.stop();
    let conn = rusqlite::Connection::open(t.path().join("relay").join("relay.db")).unwrap();
    tamper(&conn);
    drop(conn);
    t.relay.restart();

    let pulled = t.b.run(&["pull", "--json"]);
    assert_eq!(pulled.code(), 11, "{}", pulled.stderr);
    assert_eq!(
        blobs_data(&pulled.json()),
        vec![b"one".to_vec(), b"three".to_vec()],
        "the good blobs are printed, the damaged one is not"
    );
    assert_eq!(pulled.warnings().len(), 1, "{}", pulled.stderr);
    (t, pulled)
}

#[test]
fn a_blob_damaged_on_the_relay_is_a_warning_and_exit_11_and_the_rest_is_printed() {
    // Flips one byte in the middle of the stored payload of blob 2.
    let (t, pulled) = pull_after_tampering(|conn| {
        let mut payload: Vec<u8> = conn
            .query_row("SELECT payload FROM blobs WHERE cursor = 2", [], |r| {
                r.get(0)
            })
            .unwrap();
        let mid = payload.len() / 2;
        payload[mid] ^= 0x20;
        let changed = conn
            .execute(
                "UPDATE blobs SET payload = ?1 WHERE cursor = 2",
                rusqlite::params![payload],
            )
            .unwrap();
        assert_eq!(changed, 1);
    });
    assert_eq!(pulled.json()["problems"].as_array().map(Vec::len), Some(1));
    let warning = pulled.warnings()[0];
    assert!(
        warning.contains("blob #2") && warning.contains("failed verification"),
        "{warning}"
    );
    // The cursor moved past it: the next pull has nothing and nothing to warn about.
    let again = t.b.run(&["pull"]);
    assert_eq!(again.code(), 0, "{}", again.stderr);
    assert!(!again.stderr.contains("warning"), "{}", again.stderr);
}

#[test]
fn a_blob_deleted_from_the_relay_by_hand_is_reported_as_withheld() {
    // One row deleted: no expiry, no delete request.
    let (_t, pulled) = pull_after_tampering(|conn| {
        let deleted = conn
            .execute("DELETE FROM blobs WHERE cursor = 2", [])
            .unwrap();
        assert_eq!(deleted, 1);
    });
    let warning = pulled.warnings()[0];
    assert!(
        warning.contains("did not serve blob #2") && warning.contains("withheld"),
        "{warning}"
    );
}

/// Copies the files of a stopped relay's data directory (its database and identity).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

#[test]
fn a_relay_restored_from_an_older_copy_delivers_everything_pushed_afterwards() {
    let mut t = TwoDevices::paired();
    let relay_dir = t.path().join("relay");
    let backup = t.path().join("relay-backup");
    t.a.run(&["push", "one"]).ok();
    t.a.run(&["push", "two"]).ok();
    assert_eq!(t.b.pull().len(), 2);
    t.relay.stop();
    copy_dir(&relay_dir, &backup);
    t.relay.restart();
    t.a.run(&["push", "three"]).ok();
    t.a.run(&["push", "four"]).ok();
    assert_eq!(t.b.pull().len(), 2, "B has pulled up to cursor 4");

    // The operator restores the relay from the older copy; A pushes three more blobs, which
    // get cursors 3, 4, 5: at or below B's cursor.
    t.relay.stop();
    std::fs::remove_dir_all(&relay_dir).unwrap();
    copy_dir(&backup, &relay_dir);
    t.relay.restart();
    // A notices on its next connection, and pushes again what the relay lost of its own.
    let first = t.a.run(&["push", "x"]).ok();
    assert!(
        first
            .stderr
            .contains("the relay's log is behind this device")
            && first.stderr.contains("pushed again"),
        "{}",
        first.stderr
    );
    for text in ["y", "z"] {
        t.a.run(&["push", text]).ok();
    }
    let pulled = t.b.run(&["pull", "--json"]).ok();
    assert_eq!(
        blobs_data(&pulled.json()),
        vec![b"x".to_vec(), b"y".to_vec(), b"z".to_vec()],
        "3 of 3 pushed after the restore, none of the old ones twice"
    );
    assert!(t.b.pull().is_empty());
    // The relay's log is whole again: "three" and "four" are back, each blob once.
    let everything = t.b.run(&["pull", "--after-cursor", "0", "--json"]).ok();
    let mut all = blobs_data(&everything.json());
    all.sort();
    let mut expected: Vec<Vec<u8>> = ["one", "two", "three", "four", "x", "y", "z"]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
    expected.sort();
    assert_eq!(all, expected);
}

#[test]
fn another_relay_at_the_pinned_address_is_refused_clearly_and_never_re_pinned() {
    let mut t = TwoDevices::paired();
    let port = t.relay.port;
    let pinned = t.relay.id.clone();
    t.relay.stop();
    // Another relay (another identity) answers at the same address.
    let mut other = Relay::start(&t.path().join("other-relay"), port);
    assert_ne!(other.id, pinned);
    let pushed = t.a.run(&["push", "not for the other relay"]);
    assert_eq!(pushed.code(), 9, "{}", pushed.stderr);
    assert!(
        pushed.stderr.contains(&format!("is not relay {pinned}")),
        "{}",
        pushed.stderr
    );
    other.stop();
    // The pin is kept: with the real relay back, the device syncs again.
    t.relay.restart();
    t.a.run(&["push", "back home"]).ok();
    assert_eq!(t.b.pull(), vec![b"back home".to_vec()]);
}

#[test]
fn a_local_push_does_not_make_a_later_pull_skip_earlier_blobs() {
    let t = TwoDevices::paired();
    let TwoDevices { a, b, .. } = &t;
    a.run(&["push", "one"]).ok();
    a.run(&["push", "two"]).ok();
    // B pushes (cursor 3) before pulling 1 and 2.
    b.run(&["push", "three"]).ok();
    assert_eq!(b.pull(), vec![b"one".to_vec(), b"two".to_vec()]);
    assert!(b.pull().is_empty());
    assert_eq!(a.pull(), vec![b"three".to_vec()]);
    // A re-read does not move the cursor.
    let again = b
        .run(&["pull", "--after-cursor", "1", "--json"])
        .ok()
        .json();
    assert_eq!(blobs_data(&again), vec![b"two".to_vec(), b"three".to_vec()]);
    assert!(b.pull().is_empty());
}

#[test]
fn used_and_expired_short_codes_are_refused_with_exit_code_6() {
    let t = TwoDevices::start();
    let TwoDevices { relay, a, b, .. } = &t;
    let (_, code) = a.create_group(&relay.dial);
    b.run(&["pair", "--join", &code, "--relay", &relay.dial])
        .ok();
    let c = t.device("c", "late");
    let used = c.run(&["pair", "--join", &code, "--relay", &relay.dial]);
    assert_eq!(used.code(), 6, "{}", used.stderr);
    assert!(used.stderr.contains("already used"), "{}", used.stderr);

    let v = a
        .run(&["invite", "--expires-in", "1", "--json"])
        .ok()
        .json();
    let code = v["short_code"].as_str().unwrap().to_string();
    let invite = v["invite"].as_str().unwrap().to_string();
    // Waiting for the expiry itself: the clock passing the invite's expiry time.
    let expires = v["expires_at_ms"].as_u64().unwrap();
    let left = expires.saturating_sub(sync_types::unix_ms()) + 50;
    assert!(left < 2_000);
    std::thread::sleep(Duration::from_millis(left));
    let expired = c.run(&["pair", "--join", &code, "--relay", &relay.dial]);
    assert_eq!(expired.code(), 6, "{}", expired.stderr);
    assert!(expired.stderr.contains("expired"), "{}", expired.stderr);
    let expired = c.run(&["pair", "--join", &invite]);
    assert_eq!(expired.code(), 6, "{}", expired.stderr);
    assert!(expired.stderr.contains("expired"), "{}", expired.stderr);
    // Still in no group.
    assert_eq!(c.run(&["status"]).code(), 3);
}

#[test]
fn status_reports_online_and_offline_truthfully() {
    let mut t = TwoDevices::start();
    let TwoDevices { relay, a, .. } = &mut t;
    a.create_group(&relay.dial);
    let on = a.run(&["status", "--json"]).ok().json();
    assert_eq!(on["online"], true);
    assert_eq!(on["relay"], relay.dial.as_str());
    let text = a.run(&["status"]).ok().out();
    assert!(text.contains("connection: online"), "{text}");

    relay.stop();
    a.env.push(("SYNC_CLI_CONNECT_TIMEOUT".into(), "1".into()));
    let off = a.run(&["status", "--json"]).ok().json();
    assert_eq!(off["online"], false);
    assert_eq!(off["pending"], 0);
    let text = a.run(&["status"]).ok().out();
    assert!(text.contains("connection: offline"), "{text}");
    assert!(text.contains(&relay.dial), "{text}");
}

#[test]
fn sigkill_mid_push_then_rerun_delivers_exactly_once() {
    let t = TwoDevices::start();
    let TwoDevices { relay, a, b, .. } = &t;
    let proxy = Proxy::start(format!("127.0.0.1:{}", relay.port).parse().unwrap());
    let via_proxy = format!("{}@{}", relay.id, proxy.addr);
    let (invite, _) = a.create_group(&via_proxy);
    b.run(&["pair", "--join", &invite]).ok();

    let data = bytes(FILE_LEN, 11);
    let file = t.path().join("big.bin");
    std::fs::write(&file, &data).unwrap();
    // Cut A off once half the file went up, then SIGKILL it: mid push, no acknowledgement.
    proxy.arm(FILE_LEN as u64 / 2);
    let mut child = a.spawn(
        &[
            "--connect-timeout",
            "60",
            "push",
            "--file",
            file.to_str().unwrap(),
        ],
        Stdio::null(),
    );
    if proxy.wait_cut(&mut child, WAIT).is_none() {
        let out = wait_exit(child, WAIT);
        panic!(
            "the push was not cut off mid transfer: exit {:?}, stderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    child.kill().unwrap();
    let out = wait_exit(child, WAIT);
    assert!(!out.status.success(), "killed");
    assert!(b.pull().is_empty(), "nothing arrived yet");

    // The rerun (any command that connects) sends it; the same blob id lands once.
    let st = a.run(&["status", "--json"]).ok().json();
    assert_eq!(st["sent_now"], 1, "{st}");
    let got = b.pull();
    assert_eq!(got.len(), 1);
    assert!(got[0] == data, "byte for byte");
    a.run(&["flush"]).ok();
    assert!(b.pull().is_empty(), "exactly once");
}

/// The next line of a child's output (see [`output_lines`]), bounded by [`WAIT`].
fn next_line(lines: &Receiver<String>) -> String {
    lines.recv_timeout(WAIT).expect("output in time")
}

#[test]
fn watch_prints_arrivals_and_exits_0_on_sigterm() {
    let t = TwoDevices::paired();
    let TwoDevices { a, b, .. } = &t;
    a.run(&["push", "before watch"]).ok();

    let mut child = b.spawn(&["watch", "--json"], Stdio::null());
    let lines = output_lines(&mut child);
    // stdout and stderr are read by two threads: wait for both the initial pull's line and the
    // "watching" line (printed after subscribing), in whatever order they are read.
    let (mut texts, mut watching) = (Vec::new(), false);
    while !watching || texts.is_empty() {
        let line = next_line(&lines);
        if let Some(json) = line.strip_prefix("out ") {
            let v: serde_json::Value = serde_json::from_str(json).unwrap();
            texts.push(v["text"].as_str().unwrap().to_string());
        } else if line.starts_with("err watching") {
            watching = true;
        }
    }
    assert_eq!(texts, ["before watch"]);
    a.run(&["push", "while watching"]).ok();
    loop {
        let line = next_line(&lines);
        if let Some(json) = line.strip_prefix("out ") {
            let v: serde_json::Value = serde_json::from_str(json).unwrap();
            assert_eq!(v["text"], "while watching");
            break;
        }
    }
    let out = terminate(child);
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn quota_exceeded_is_exit_7_and_the_push_stays_queued() {
    let t = TwoDevices::paired_with(&["--group-max-blobs", "1"]);
    let TwoDevices { a, b, .. } = &t;
    a.run(&["push", "fits"]).ok();
    let r = a.run(&["--wait", "2", "push", "over quota"]);
    r.refused(7, &["queued"]);
    assert_eq!(b.pull(), vec![b"fits".to_vec()]);
    let st = a.run(&["--wait", "1", "status", "--json"]).ok().json();
    assert_eq!(st["pending"], 1, "kept on the device: {st}");
}

#[test]
fn errors_are_one_line_with_their_exit_codes() {
    let (tmp, a) = lone_device();
    // Not initialised.
    let r = a.run(&["push", "x"]);
    r.refused(3, &["sync-cli init"]);
    a.init("solo");
    // No group yet.
    let r = a.run(&["pull"]);
    assert_eq!(r.code(), 3, "{}", r.stderr);
    assert!(r.stderr.contains("pair"), "{}", r.stderr);
    // A passphrase in argv is refused.
    let r = a.run(&["pair", "--create", "--passphrase=hunter2", "--relay", "x"]);
    assert_eq!(r.code(), 2, "{}", r.stderr);
    assert!(!r.stderr.contains("hunter2"), "never echoed: {}", r.stderr);
    // Not an invite nor a code.
    let r = a.run(&["pair", "--join", "hello"]);
    assert_eq!(r.code(), 2, "{}", r.stderr);
    let r = a.run(&["pair", "--create", "--relay", "nonsense"]);
    assert_eq!(r.code(), 2, "{}", r.stderr);
    // Relay unreachable: the address tried is named.
    let dead = format!("{}@127.0.0.1:9", "ab".repeat(32));
    let mut b = Device::new(tmp.path(), "b");
    b.init("b");
    b.env.push(("SYNC_CLI_CONNECT_TIMEOUT".into(), "1".into()));
    let r = b.run(&["pair", "--join", "ABCD-EFGH-JKMN-PQRS", "--relay", &dead]);
    assert_eq!(r.code(), 4, "{}", r.stderr);
    assert!(r.stderr.contains("127.0.0.1:9"), "{}", r.stderr);
    // The table of exit codes is in --help.
    let help = a.run(&["--help"]).ok().out();
    for code in [
        "wrong passphrase",
        "relay unreachable",
        "quota exceeded",
        "rate limited",
    ] {
        assert!(help.contains(code), "{code} in --help");
    }
    // Data dir files are owner-only.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&a.dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    let db = a.dir.join(STORE_FILE_NAME);
    let mode = std::fs::metadata(db).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn join_reads_the_code_or_invite_from_stdin_and_warns_about_an_invite_in_argv() {
    let t = TwoDevices::start();
    let TwoDevices { relay, a, b, .. } = &t;
    let (invite, code) = a.create_group(&relay.dial);
    // The hints name the safe form.
    let v = a.run(&["invite"]).ok().out();
    assert!(v.contains("pair --join - --relay"), "{v}");
    assert!(!v.contains("--join '0ksync1"), "{v}");

    // Short code on standard input: nothing secret in argv, no warning.
    let joined = b.run_with_stdin(
        &["pair", "--join", "-", "--relay", &relay.dial, "--json"],
        format!("{code}\n").as_bytes(),
    );
    let joined = joined.ok();
    assert!(joined.stderr.is_empty(), "{}", joined.stderr);
    assert_eq!(joined.json()["online"], true);

    // `--join` alone, the invite string on standard input.
    let c = t.device("c", "tablet");
    let r = c
        .run_with_stdin(&["pair", "--join"], format!("{invite}\n").as_bytes())
        .ok();
    assert!(!r.stderr.contains("warning"), "{}", r.stderr);
    a.run(&["push", "to both"]).ok();
    assert_eq!(b.pull(), vec![b"to both".to_vec()]);
    assert_eq!(c.pull(), vec![b"to both".to_vec()]);

    // The invite in argv still works, with a one-line warning.
    let d = t.device("d", "old habits");
    let r = d.run(&["pair", "--join", &invite]).ok();
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(r.stderr.contains("warning"), "{}", r.stderr);
    assert!(r.stderr.contains("--join -"), "{}", r.stderr);
    assert!(!r.stderr.contains(&invite), "never echoed: {}", r.stderr);

    // Nothing on standard input: a readable refusal.
    let e = t.device("e", "empty");
    let r = e.run(&["pair", "--join", "-"]);
    assert_eq!(r.code(), 2, "{}", r.stderr);
}

#[test]
fn a_device_in_a_group_does_not_use_up_a_short_code() {
    let t = TwoDevices::start();
    let TwoDevices { relay, a, b, .. } = &t;
    let (_, code) = a.create_group(&relay.dial);
    // A (already in the group) tries the code: refused locally, before the relay sees it.
    let r = a.run(&["pair", "--join", &code, "--relay", &relay.dial]);
    r.refused(2, &["already in group", "not used"]);
    // The code still works for B.
    b.run(&["pair", "--join", &code, "--relay", &relay.dial])
        .ok();
    a.run(&["push", "welcome"]).ok();
    assert_eq!(b.pull(), vec![b"welcome".to_vec()]);
}

#[test]
fn absurd_timeouts_are_bad_input_not_a_panic() {
    let (_tmp, a) = lone_device();
    a.init("solo");
    for args in [
        ["--connect-timeout", "1e19", "status"],
        ["--wait", "1e19", "status"],
        ["--wait", "86401", "pull"],
        ["--wait", "inf", "flush"],
        ["--wait", "NaN", "flush"],
        ["--connect-timeout", "0", "status"],
    ] {
        let r = a.run(&args);
        r.refused(2, &[]);
        assert!(!r.stderr.contains("panicked"), "{args:?}: {}", r.stderr);
    }
    // A day is still accepted (the command then fails for its own reason: no group).
    let r = a.run(&["--wait", "86400", "--connect-timeout", "86400", "status"]);
    assert_eq!(r.code(), 3, "{}", r.stderr);
}

/// Runs `args` on `device` with its standard output closed before anything is written; returns
/// the exit code and stderr.
fn run_with_stdout_closed(device: &Device, args: &[&str]) -> (Option<i32>, String) {
    let mut child = device.spawn(args, Stdio::null());
    // The reader goes away at once (like `| head -c1` after its byte).
    drop(child.stdout.take());
    let out = wait_exit(child, WAIT);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn closed_stdout_is_a_quiet_exit_and_the_pull_cursor_stays() {
    let t = TwoDevices::paired();
    let TwoDevices { a, b, .. } = &t;
    // More than a pipe buffer of output, so the writes fail however the race goes.
    let big = bytes(FILE_LEN, 3);
    a.run_with_stdin(&["push", "--file", "-"], &big).ok();
    a.run(&["push", "small"]).ok();

    for args in [
        &["pull", "--json"][..],
        &["pull", "--raw"][..],
        &["pull", "--after-cursor", "0", "--raw"][..],
    ] {
        let (code, stderr) = run_with_stdout_closed(b, args);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_ne!(code, Some(101), "{args:?}: {stderr}");
        assert_eq!(code, Some(141), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "quiet: {args:?}: {stderr}");
    }
    // `watch` too: a batch it could not print is not committed.
    let (code, stderr) = run_with_stdout_closed(b, &["watch", "--json"]);
    assert!(!stderr.contains("panicked"), "watch: {stderr}");
    assert_eq!(code, Some(141), "watch: {stderr}");
    // Nothing reached a reader: the next pull still returns both blobs, then the cursor moves.
    let got = b.pull();
    assert_eq!(got.len(), 2);
    assert!(got[0] == big, "byte for byte");
    assert_eq!(got[1], b"small");
    assert!(b.pull().is_empty());
    // Other commands with data output too.
    for args in [&["status"][..], &["devices"][..], &["invite", "--json"][..]] {
        let (code, stderr) = run_with_stdout_closed(a, args);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_ne!(code, Some(101), "{args:?}: {stderr}");
    }
}

#[test]
fn one_process_per_data_dir_a_second_one_exits_10() {
    let t = TwoDevices::paired();
    let TwoDevices { a, b, .. } = &t;

    let mut child = b.spawn(&["watch"], Stdio::null());
    // Wait (bounded) until watch is watching: it holds the lock by then.
    let lines = output_lines(&mut child);
    while !next_line(&lines).starts_with("err watching") {}
    for args in [
        &["push", "x"][..],
        &["pull"][..],
        &["status"][..],
        &["init", "--name", "x"][..],
    ] {
        let r = b.run(args);
        r.refused(10, &["another sync-cli"]);
    }
    // `devices` only reads.
    b.run(&["devices"]).ok();
    let out = terminate(child);
    assert_eq!(out.status.code(), Some(0));
    // The lock went with the process.
    b.run(&["push", "after watch"]).ok();
    assert_eq!(a.pull(), vec![b"after watch".to_vec()]);
}

#[test]
fn init_and_devices_help_list_the_exit_codes() {
    let (_tmp, a) = lone_device();
    for cmd in ["init", "devices", "pull", "pair"] {
        let help = a.run(&[cmd, "--help"]).ok().out();
        assert!(help.contains("Exit codes"), "{cmd}: {help}");
        assert!(help.contains("NOT queued"), "{cmd}: {help}");
        assert!(help.contains("141"), "{cmd}: {help}");
    }
}

/// Runs `init` without --data-dir, in `cwd`, with `xdg` as `XDG_DATA_HOME` and `home` as
/// `HOME`; returns the data directory it reports.
fn init_in_default_dir(cwd: &Path, xdg: &str, home: &Path) -> String {
    let out = sync_testkit::run_bounded(
        std::process::Command::new(cli_bin())
            .args(["init", "--name", "default", "--json"])
            .current_dir(cwd)
            .env_remove("SYNC_CLI_DATA_DIR")
            .env_remove("RUST_LOG")
            .env("XDG_DATA_HOME", xdg)
            .env("HOME", home),
        CMD_TIMEOUT,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["data_dir"].as_str().unwrap().to_string()
}

#[test]
fn the_default_data_dir_is_under_xdg_data_home_else_home_and_a_relative_one_is_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let xdg = tmp.path().join("xdg");
    let dir = init_in_default_dir(tmp.path(), xdg.to_str().unwrap(), &home);
    assert_eq!(dir, xdg.join("0k-sync").to_str().unwrap());
    assert!(xdg.join("0k-sync").join(STORE_FILE_NAME).exists());

    // A relative or empty XDG_DATA_HOME is ignored: ~/.local/share is used instead.
    let under_home = home.join(".local").join("share").join("0k-sync");
    for relative in ["relative", ""] {
        let dir = init_in_default_dir(tmp.path(), relative, &home);
        assert_eq!(dir, under_home.to_str().unwrap(), "{relative:?}");
    }
    assert!(under_home.join(STORE_FILE_NAME).exists());
    assert!(!tmp.path().join("relative").exists());
}

/// First line of what `sync-relay token …` printed on stdout.
fn relay_token_command(args: &[&str]) -> String {
    let out = sync_testkit::run_bounded(
        std::process::Command::new(sync_testkit::relay_bin())
            .arg("token")
            .args(args),
        CMD_TIMEOUT,
    );
    assert!(
        out.status.success(),
        "sync-relay token {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap()
        .trim()
        .to_string()
}

/// A relay that admits only devices holding its operator's token: without one pairing is
/// refused (exit 9, and the message says to pass --token), a garbled token is bad input (exit
/// 2), another operator's token is refused; with the right one it works, and the token is kept
/// for the commands that follow.
#[test]
fn a_token_relay_admits_only_devices_with_the_operators_token() {
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("operator.key");
    let other = keys.path().join("other.key");
    let public = relay_token_command(&["keygen", "--out", key.to_str().unwrap()]);
    relay_token_command(&["keygen", "--out", other.to_str().unwrap()]);
    let issue = |key: &Path| {
        relay_token_command(&[
            "issue",
            "--key",
            key.to_str().unwrap(),
            "--expires-in",
            "1h",
        ])
    };
    let token = issue(&key);
    let forged = issue(&other);

    let t = TwoDevices::start_with(&["--admission", "token", "--admission-key", &public]);
    let TwoDevices { relay, a, b, .. } = &t;

    // The group is made on the device first; sharing it needs the relay, which refuses.
    let refused = a.run(&["pair", "--create", "--relay", relay.dial.as_str(), "--json"]);
    assert_eq!(refused.code(), 9, "{}", refused.stderr);
    assert!(refused.stderr.contains("--token"), "{}", refused.stderr);
    let garbled = a.run(&["--token", "not-a-token", "invite", "--json"]);
    assert_eq!(garbled.code(), 2, "{}", garbled.stderr);
    let wrong = a.run(&["--token", forged.as_str(), "invite", "--json"]);
    assert_eq!(wrong.code(), 9, "{}", wrong.stderr);
    assert!(wrong.stderr.contains("operator"), "{}", wrong.stderr);

    let v = a
        .run(&["--token", token.as_str(), "invite", "--json"])
        .ok()
        .json();
    let invite = v["invite"].as_str().unwrap();
    // No --token from here on for A: the one given is kept in its store.
    a.run(&["push", "admitted"]).ok();
    b.run(&["--token", &token, "pair", "--join", invite]).ok();
    assert_eq!(b.pull(), vec![b"admitted".to_vec()]);
}

#[test]
fn rotate_and_revoke_from_the_command_line() {
    let t = TwoDevices::start();
    let TwoDevices { relay, a, b, .. } = &t;
    let (invite, _) = a.create_group(&relay.dial);
    b.run(&["pair", "--join", &invite]).ok();
    let c = t.device("c", "tablet");
    c.run(&["pair", "--join", &invite]).ok();
    // Asking for the members settles each device's enrollment first.
    for d in [b, &c] {
        d.run(&["devices", "members"]).ok();
    }
    let v = a.run(&["devices", "members", "--json"]).ok().json();
    let members = v["members"].as_array().unwrap();
    assert_eq!(members.len(), 3, "{v}");
    let me = members.iter().find(|m| m["this_device"] == true).unwrap();
    assert_eq!(me["admin"], true, "the group's creator is its admin");
    let names: Vec<_> = members
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"phone") && names.contains(&"tablet"),
        "{names:?}"
    );
    let c_id = members.iter().find(|m| m["name"] == "tablet").unwrap()["device_id"]
        .as_str()
        .unwrap()
        .to_string();

    // Only an admin rotates; B is refused with a sentence and exit 9.
    b.run(&["rotate"]).refused(9, &["not an admin"]);
    let v = a.run(&["rotate", "--json"]).ok().json();
    assert_eq!(v["epoch"], 1);
    a.run(&["push", "under epoch 1"]).ok();
    // B was offline during the rotation: it catches up on its next command.
    assert_eq!(b.pull(), vec![b"under epoch 1".to_vec()]);

    // C is revoked: its next command is refused for good, B keeps reading.
    let v = a.run(&["devices", "revoke", &c_id, "--json"]).ok().json();
    assert_eq!(v["epoch"], 2);
    a.run(&["push", "under epoch 2"]).ok();
    c.run(&["pull"]).refused(9, &["revoked"]);
    assert_eq!(b.pull(), vec![b"under epoch 2".to_vec()]);
    let v = b.run(&["devices", "members", "--json"]).ok().json();
    let revoked = v["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["device_id"] == c_id.as_str())
        .unwrap();
    assert_eq!(revoked["revoked_at_epoch"], 2);
    a.run(&["devices", "revoke", "not-a-device"])
        .refused(2, &["not a device id"]);
}
