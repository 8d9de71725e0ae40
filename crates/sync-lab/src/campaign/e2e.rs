//! The e2e phase: messages of random content and length that the responder must echo exactly,
//! signed by its device (not ours, not a third one) and opened under the group key; with
//! `--local`, the relay's storage is then searched for their plaintext.

use std::path::Path;
use std::sync::atomic::Ordering;

use serde_json::json;

use super::Args;
use super::phases::{begin, finish, summarize};
use super::session::Session;
use super::verdict::{E2eCheck, PlaintextScan};
use crate::events::round3;
use crate::report::PhaseResult;

/// Random bytes as hex; zeros when the operating system's random source fails.
fn random_hex(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    if getrandom::fill(&mut bytes).is_err() {
        // Still unique per message thanks to the wire number; only the content check weakens.
        return "0".repeat(len * 2);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs the e2e phase; `relay_data` is the relay's storage when it is on this machine.
pub(super) async fn run(
    session: &Session,
    args: &Args,
    relay_data: Option<&Path>,
) -> (PhaseResult, E2eCheck) {
    let start = begin(session, "e2e", &[("messages", json!(args.e2e_count))]);
    let rejected_before = session.rejected.load(Ordering::Relaxed);
    let me = session.client.device_id();
    let mut exchanges = Vec::new();
    let mut bad = 0u32;
    let mut markers = Vec::new();
    for seq in 1..=args.e2e_count {
        // 16..=271 random bytes: every message differs in content and length.
        let len = 16 + (seq as usize * 37) % 256;
        let body = random_hex(len);
        let mut sent_text = String::new();
        let e = session
            .exchange(seq, |n| {
                sent_text = format!("E2E:{n}:{body}");
                sent_text.clone()
            })
            .await;
        markers.push(body);
        match &e.answer {
            Some(a) => {
                session.note_responder(a.sender);
                // Decrypted: the client only hands over blobs whose AEAD opened under the group
                // key, and the responder could only echo our exact text if it opened ours.
                let intact = a.data == format!("ECHO:{sent_text}").into_bytes();
                // Signed: the client verified the signature of `sender`; it must be the
                // responder, not us or a third device.
                let signed = a.sender != me && session.responder() == Some(a.sender);
                if !(intact && signed) {
                    bad += 1;
                }
                session.emit(
                    "e2e",
                    "message",
                    &[
                        ("seq", json!(seq)),
                        ("encrypted", json!(intact)),
                        ("signed", json!(signed)),
                        ("bytes", json!(sent_text.len())),
                        ("rtt_ms", json!(round3(a.rtt_ms))),
                    ],
                );
            }
            None => session.emit(
                "e2e",
                "message",
                &[("seq", json!(seq)), ("lost", json!(true))],
            ),
        }
        exchanges.push(e);
    }
    let rejected = session.rejected.load(Ordering::Relaxed) - rejected_before;
    let mut notes = vec![format!(
        "{} answers verified (signature of the responder's device, AEAD, exact echo); {bad} failed; {rejected} blobs rejected by verification",
        exchanges.iter().filter(|e| e.answer.is_some()).count()
    )];
    let plaintext = match relay_data {
        Some(dir) => scan(dir, markers, &mut notes).await,
        None => PlaintextScan::NotScanned,
    };
    let check = E2eCheck {
        failed: bad,
        rejected,
        plaintext,
    };
    session.emit(
        "e2e",
        "verification",
        &[
            ("failed", json!(bad)),
            ("rejected", json!(rejected)),
            ("plaintext", json!(check.plaintext.describe())),
        ],
    );
    let summary = summarize(&exchanges);
    let ok = check.ok();
    let result = finish(
        session,
        &args.thresholds(),
        "e2e",
        start,
        summary,
        notes,
        ok,
    );
    (result, check)
}

/// Searches the relay's storage in `dir` for `markers`, off the async workers (it reads the
/// whole database); what it found, also as a note.
async fn scan(dir: &Path, markers: Vec<String>, notes: &mut Vec<String>) -> PlaintextScan {
    let (owned_dir, count) = (dir.to_path_buf(), markers.len());
    let scan = tokio::task::spawn_blocking(move || plaintext_in(&owned_dir, &markers))
        .await
        .map_err(|e| format!("scan task: {e}"))
        .and_then(|r| r.map_err(|e| e.to_string()));
    match scan {
        Ok(Scanned {
            files,
            bytes,
            found,
        }) => {
            if found == 0 {
                notes.push(format!(
                    "relay storage scanned ({}, {files} files, {bytes} bytes): no plaintext of the {count} messages found",
                    dir.display(),
                ));
            } else {
                notes.push(format!(
                    "PLAINTEXT of {found} messages found in the relay's storage"
                ));
            }
            PlaintextScan::Found(found)
        }
        Err(e) => {
            notes.push(format!(
                "relay storage scan FAILED ({}): {e}",
                dir.display()
            ));
            PlaintextScan::Failed(e)
        }
    }
}

/// What [`plaintext_in`] read and found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Scanned {
    files: usize,
    bytes: usize,
    found: usize,
}

/// How many of `markers` occur in any file under `dir` (the relay's database and WAL). An
/// empty directory is an error: finding nothing in nothing proves nothing.
fn plaintext_in(dir: &Path, markers: &[String]) -> std::io::Result<Scanned> {
    let mut haystack = Vec::new();
    let mut files = 0;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_file() {
            haystack.extend(std::fs::read(&path)?);
            files += 1;
        }
    }
    if haystack.is_empty() {
        return Err(std::io::Error::other(
            "no relay storage found (no file with any content)",
        ));
    }
    let found = markers
        .iter()
        .filter(|m| {
            let needle = &m.as_bytes()[..m.len().min(64)];
            !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
        })
        .count();
    Ok(Scanned {
        files,
        bytes: haystack.len(),
        found,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plaintext_scan_finds_markers_and_a_failed_scan_fails_the_check() {
        let dir = tempfile::tempdir().unwrap();
        let markers = vec!["aaaa1111".to_string(), "bbbb2222".to_string()];
        // Nothing to scan is an error, not a clean result.
        assert!(plaintext_in(dir.path(), &markers).is_err());
        assert!(plaintext_in(&dir.path().join("missing"), &markers).is_err());
        std::fs::write(dir.path().join("relay.db"), b"xx aaaa1111 yy").unwrap();
        let s = plaintext_in(dir.path(), &markers).unwrap();
        assert_eq!((s.files, s.found), (1, 1));

        let check = |plaintext| E2eCheck {
            failed: 0,
            rejected: 0,
            plaintext,
        };
        assert!(check(PlaintextScan::NotScanned).ok());
        assert!(check(PlaintextScan::Found(0)).ok());
        assert!(!check(PlaintextScan::Found(1)).ok());
        let failed = PlaintextScan::Failed("permission denied".into());
        assert!(failed.describe().contains("FAILED"));
        assert!(!check(failed).ok(), "with --local a scan error fails e2e");
    }

    #[test]
    fn random_hex_has_two_digits_a_byte() {
        let h = random_hex(16);
        assert_eq!(h.len(), 32);
        assert!(h.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(h, random_hex(16));
    }
}
