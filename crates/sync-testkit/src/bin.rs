//! Where the `sync-relay` binary is.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::SystemTime;

use crate::TestkitError;

/// Environment variable that names the relay binary to use, overriding the search.
pub const RELAY_BIN_ENV: &str = "SYNC_RELAY_BIN";

/// Crates (under `crates/`) whose sources go into the relay binary.
const RELAY_SOURCES: &[&str] = &["sync-relay", "sync-types", "sync-crypto"];

/// The relay binary for a test: `$SYNC_RELAY_BIN` if set, else `sync-relay` in the target
/// directory and profile of the running test, built first (`cargo build -p sync-relay`) when it
/// is missing or older than its sources. Under `cargo test --workspace` it was built by the same
/// command and is used as it is; under `cargo test -p <crate>` after a change to the relay it is
/// rebuilt once per test process.
///
/// # Panics
/// When no binary can be found or built: this is for tests.
#[allow(clippy::panic)]
pub fn relay_bin() -> PathBuf {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BIN.get_or_init(|| locate_for_tests().map_err(|e| e.to_string())) {
        Ok(p) => p.clone(),
        Err(e) => panic!("{e}"),
    }
}

/// The relay binary for the lab at run time: `explicit` if given, else `sync-relay` next to the
/// running executable, else on `PATH`. Nothing is built.
pub fn find_relay_bin(explicit: Option<&Path>) -> Result<PathBuf, TestkitError> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(TestkitError::NoBinary(format!(
                "relay binary {} not found",
                p.display()
            )))
        };
    }
    let mut dirs: Vec<PathBuf> = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
        .into_iter()
        .collect();
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs.into_iter()
        .map(|d| d.join("sync-relay"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            TestkitError::NoBinary(
                "no sync-relay binary next to this executable or on PATH (build it with \
                 `cargo build -p sync-relay`, or name it explicitly)"
                    .into(),
            )
        })
}

fn locate_for_tests() -> Result<PathBuf, TestkitError> {
    if let Some(p) = std::env::var_os(RELAY_BIN_ENV) {
        return find_relay_bin(Some(Path::new(&p)));
    }
    let exe = std::env::current_exe()
        .map_err(|e| TestkitError::NoBinary(format!("cannot find the running test: {e}")))?;
    // A test runs from `target/<profile>/deps/`, a binary from `target/<profile>/`.
    let mut profile_dir = exe
        .parent()
        .ok_or_else(|| TestkitError::NoBinary("the test executable has no directory".into()))?;
    if profile_dir.file_name().is_some_and(|n| n == "deps") {
        profile_dir = profile_dir.parent().unwrap_or(profile_dir);
    }
    let bin = profile_dir.join("sync-relay");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| TestkitError::NoBinary("no workspace root".into()))?;
    if let Ok(built) = std::fs::metadata(&bin).and_then(|m| m.modified())
        && newest_source(workspace).is_some_and(|newest| newest <= built)
    {
        return Ok(bin);
    }
    build(workspace, profile_dir)?;
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(TestkitError::NoBinary(format!(
            "{} missing after the build",
            bin.display()
        )))
    }
}

/// Builds the relay binary into `profile_dir`, with the profile `cargo test` (or `cargo
/// bench`) used for the running test.
fn build(workspace: &Path, profile_dir: &Path) -> Result<(), TestkitError> {
    let target_dir = profile_dir
        .parent()
        .ok_or_else(|| TestkitError::NoBinary("no target dir".into()))?;
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "test",
        Some("release") => "bench",
        Some(other) => other,
        None => return Err(TestkitError::NoBinary("no profile dir".into())),
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "-p",
            "sync-relay",
            "--bin",
            "sync-relay",
        ])
        .args(["--profile", profile])
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(workspace)
        .output()
        .map_err(|e| {
            TestkitError::NoBinary(format!("cannot run cargo to build sync-relay: {e}"))
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(TestkitError::NoBinary(format!(
            "cargo build -p sync-relay failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

/// Latest modification time of the relay's sources and the workspace manifests; `None` if a
/// source directory cannot be read (the binary is then treated as stale).
fn newest_source(workspace: &Path) -> Option<SystemTime> {
    let mut newest = None;
    let mut visit = |p: &Path| {
        if let Ok(t) = std::fs::metadata(p).and_then(|m| m.modified()) {
            newest = newest.max(Some(t));
        }
    };
    visit(&workspace.join("Cargo.toml"));
    visit(&workspace.join("Cargo.lock"));
    let mut stack = Vec::new();
    for krate in RELAY_SOURCES {
        let dir = workspace.join("crates").join(krate);
        visit(&dir.join("Cargo.toml"));
        stack.push(dir.join("src"));
    }
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).ok()?.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                visit(&p);
            }
        }
    }
    newest
}
