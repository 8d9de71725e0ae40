//! Large content through the real `sync-cli` and `sync-relay` processes: a 5 MiB file sent with
//! `push --content` and a folder sent with `push --dir` arrive byte for byte under `pull --out`,
//! a file above the blob limit goes as content by itself, output is parseable JSON with
//! `--json`, and nothing but lines reaches a pipe (no progress bar).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc::Receiver;

use support::{Device, Run, TwoDevices, WAIT, bytes, output_lines, terminate};

const BIG: usize = 5 * 1024 * 1024;

/// Nothing on stderr redraws a line: no progress bar when stderr is a pipe.
#[track_caller]
fn no_progress_bar(run: &Run) {
    assert!(
        !run.stderr.contains('\r') && !run.stderr.contains('\u{1b}'),
        "{:?}: progress output on a pipe: {:?}",
        run.args,
        run.stderr
    );
}

/// Starts `watch` on `device` (it serves the device's content) and waits until it watches.
fn serving(device: &Device) -> (Child, Receiver<String>) {
    let mut child = device.spawn(&["watch", "--json"], Stdio::null());
    let lines = output_lines(&mut child);
    loop {
        let line = lines.recv_timeout(WAIT).expect("watch starts in time");
        if line.starts_with("err watching") {
            break;
        }
    }
    (child, lines)
}

fn arg(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_5_mib_file_sent_as_content_arrives_from_the_sender_device_byte_for_byte_under_out() {
    // No content store on the relay: the content comes from A's device or not at all.
    let t = TwoDevices::paired_with(&["--content-store", "false"]);
    let TwoDevices { a, b, .. } = &t;
    let data = bytes(BIG, 21);
    let file = t.path().join("big.bin");
    std::fs::write(&file, &data).unwrap();

    let sent = a.run(&["push", "--content", "--file", arg(&file)]).ok();
    no_progress_bar(&sent);
    let line = sent.out();
    assert!(
        line.starts_with(&format!(
            "sent {} ({BIG} bytes) as content ",
            file.display()
        )),
        "{line}"
    );
    assert!(line.trim_end().ends_with("relay copy: no)"), "{line}");
    a.run(&["push", "after the file"]).ok();

    // A is offline: the content cannot be fetched, the pull says so and exits 12, the other
    // blob is printed, and the failure names the cursor to pull again after.
    let out = t.path().join("received");
    let missed = b.run(&["pull", "--out", arg(&out)]);
    assert_eq!(missed.code(), 12, "{missed:?}");
    let text = missed.out();
    assert!(text.contains("NOT received big.bin"), "{text}");
    assert!(text.contains("after the file"), "{text}");
    let again_after = missed
        .stderr
        .split("--after-cursor ")
        .nth(1)
        .and_then(|rest| rest.split('`').next())
        .unwrap_or_else(|| panic!("no --after-cursor in: {}", missed.stderr))
        .to_string();
    assert!(
        !out.join("big.bin").exists(),
        "nothing unverified is written"
    );

    // A serves its content while it watches: pulled again, it arrives.
    let (watch, _lines) = serving(a);
    let pulled = b.run(&["pull", "--after-cursor", &again_after, "--out", arg(&out)]);
    let watch_out = terminate(watch);
    let pulled = pulled.ok();
    assert!(
        watch_out.status.success(),
        "watch: {}",
        String::from_utf8_lossy(&watch_out.stderr)
    );
    no_progress_bar(&pulled);
    let target = out.join("big.bin");
    let first = pulled.out();
    assert_eq!(
        first.lines().next(),
        Some(format!("received big.bin ({BIG} bytes) -> {}", target.display()).as_str()),
        "{first}"
    );
    assert!(std::fs::read(&target).unwrap() == data, "byte for byte");

    // Read again (held complete on B now, A gone): written beside, not over.
    let again = b
        .run(&[
            "pull",
            "--after-cursor",
            &again_after,
            "--out",
            arg(&out),
            "--json",
        ])
        .ok();
    let v = again.json();
    assert_eq!(v["blobs"].as_array().unwrap().len(), 1, "{v}");
    let content = &v["content"][0];
    assert_eq!(content["kind"], "content", "{v}");
    assert_eq!(content["complete"], true, "{v}");
    assert_eq!(content["bytes"], BIG, "{v}");
    let beside = out.join("big (1).bin");
    assert_eq!(content["path"], beside.display().to_string(), "{v}");
    assert!(std::fs::read(&beside).unwrap() == data, "byte for byte");
}

#[test]
fn content_over_the_groups_quota_is_refused_with_exit_7_and_nothing_announced() {
    let t = TwoDevices::paired_with(&["--content-group-bytes", "100000"]);
    let TwoDevices { a, b, .. } = &t;
    let file = t.path().join("big.bin");
    std::fs::write(&file, bytes(BIG, 22)).unwrap();
    a.run(&["push", "--file", arg(&file)])
        .refused(7, &["quota", "nothing was uploaded or announced"]);
    let v = b.run(&["pull", "--json"]).ok().json();
    assert_eq!(v["content"].as_array().unwrap().len(), 0, "{v}");
    assert_eq!(v["blobs"].as_array().unwrap().len(), 0, "{v}");
}

/// Every regular file under `dir`, by relative path, with its bytes.
fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(dir).unwrap().to_path_buf();
                out.push((rel, std::fs::read(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_folder_and_a_file_above_the_blob_limit_arrive_complete_with_json_output() {
    let t = TwoDevices::paired();
    let TwoDevices { a, b, .. } = &t;
    let folder = t.path().join("album");
    std::fs::create_dir_all(folder.join("sub/deeper")).unwrap();
    std::fs::write(folder.join("notes.txt"), b"top level\n").unwrap();
    std::fs::write(folder.join("sub/photo.bin"), bytes(1_500_000, 31)).unwrap();
    std::fs::write(folder.join("sub/deeper/tiny.txt"), b"deep").unwrap();
    let file = t.path().join("large.bin");
    let large = bytes(2 * 1024 * 1024, 32);
    std::fs::write(&file, &large).unwrap();

    let dir_sent = a.run(&["push", "--dir", arg(&folder), "--json"]).ok();
    no_progress_bar(&dir_sent);
    let v = dir_sent.json();
    assert_eq!(v["status"], "sent", "{v}");
    assert_eq!(v["kind"], "collection", "{v}");
    assert_eq!(v["name"], "album", "{v}");
    assert_eq!(v["items"], 3, "{v}");
    assert_eq!(v["bytes"], 10 + 1_500_000 + 4, "{v}");
    assert!(
        v["cursor"].as_u64().is_some() && v["blob_id"].is_string(),
        "{v}"
    );
    assert!(v["relay_copy"].is_boolean(), "{v}");

    // Above the blob limit: content without being asked.
    let relay_copy = v["relay_copy"] == true;
    let file_sent = a.run(&["push", "--file", arg(&file), "--json"]).ok();
    let v = file_sent.json();
    assert_eq!(v["kind"], "content", "{v}");
    assert_eq!(v["bytes"], large.len(), "{v}");
    assert_eq!(v["hash"].as_str().map(str::len), Some(64), "{v}");
    a.run(&["push", "small text"]).ok();

    // With a relay copy, A stays offline and B fetches from the relay; without one, A serves
    // its content while it watches.
    let watch = (!relay_copy || v["relay_copy"] != true).then(|| serving(a));
    let out = t.path().join("received");
    let pulled = b.run(&["pull", "--out", arg(&out), "--json"]);
    if let Some((watch, _lines)) = watch {
        let watch_out = terminate(watch);
        assert!(
            watch_out.status.success(),
            "watch: {}",
            String::from_utf8_lossy(&watch_out.stderr)
        );
    }
    let pulled = pulled.ok();
    no_progress_bar(&pulled);
    let v = pulled.json();
    let blobs = support::blobs_data(&v);
    assert_eq!(blobs, vec![b"small text".to_vec()], "{v}");
    let content = v["content"].as_array().unwrap();
    assert_eq!(content.len(), 2, "{v}");
    assert_eq!(content[0]["kind"], "collection", "{v}");
    assert_eq!(content[0]["complete"], true, "{v}");
    assert_eq!(content[0]["paths"].as_array().unwrap().len(), 3, "{v}");
    assert_eq!(content[0]["path"], out.join("album").display().to_string());
    assert!(
        tree(&out.join("album")) == tree(&folder),
        "the folder arrives as sent"
    );
    assert_eq!(content[1]["kind"], "content", "{v}");
    assert!(std::fs::read(out.join("large.bin")).unwrap() == large);
}

/// The size of the largest `.data` file under `dir` (content the store is receiving).
fn largest_data_file(dir: &Path) -> u64 {
    sync_testkit::files_with_extension(dir, "data")
        .iter()
        .map(|(_, n)| *n)
        .max()
        .unwrap_or(0)
}

#[test]
fn a_pull_killed_mid_transfer_resumes_from_what_it_verified() {
    let t = TwoDevices::paired();
    let TwoDevices { a, b, .. } = &t;
    let len = 100 * 1024 * 1024;
    let data = bytes(len, 33);
    let file = t.path().join("movie.bin");
    std::fs::write(&file, &data).unwrap();
    // Above the blob limit: large content, kept by the relay; A is offline afterwards.
    let sent = a.run(&["push", "--file", arg(&file), "--json"]).ok().json();
    assert_eq!(sent["relay_copy"], true, "{sent}");

    // B's first pull is killed (SIGKILL) once 40 % of the content is on its disk.
    let out = t.path().join("out");
    let store = b.dir.join("content");
    let mut first = b.spawn(&["pull", "--out", arg(&out)], Stdio::null());
    let deadline = std::time::Instant::now() + WAIT;
    let on_disk = loop {
        let n = largest_data_file(&store);
        if n >= (len as u64) * 2 / 5 {
            break n;
        }
        assert!(
            first.try_wait().unwrap().is_none(),
            "the pull ended before it could be interrupted"
        );
        assert!(std::time::Instant::now() < deadline, "no transfer started");
        std::thread::sleep(std::time::Duration::from_millis(1));
    };
    first.kill().unwrap();
    let status = first.wait().unwrap();
    assert!(!status.success(), "killed mid-transfer");
    assert!(
        on_disk < sent["bytes"].as_u64().unwrap(),
        "interrupted before the end"
    );
    assert!(
        !out.join("movie.bin").exists(),
        "nothing opened from a partial transfer"
    );

    // Pulled again: only the rest moves, and the file is whole.
    let again = b.run(&["pull", "--out", arg(&out), "--json"]).ok().json();
    let content = &again["content"][0];
    let sealed = len as u64 + (len as u64).div_ceil(64 * 1024) * 16;
    let fetched = content["bytes_fetched"].as_u64().unwrap();
    let resumed = content["bytes_resumed"].as_u64().unwrap();
    assert_eq!(fetched + resumed, sealed, "{content}");
    println!(
        "killed with {on_disk} bytes on disk; resumed {resumed}, fetched {fetched} of {sealed}"
    );
    const CHUNK_GROUP: u64 = 16 * 1024;
    assert!(
        fetched < sealed - on_disk + CHUNK_GROUP,
        "second transfer moved {fetched} bytes; {on_disk} of {sealed} were on disk at the kill"
    );
    assert_eq!(
        std::fs::read(out.join("movie.bin")).unwrap(),
        data,
        "byte for byte"
    );
}
