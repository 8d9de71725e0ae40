//! Shared by the test suites that drive the real `sync-relay` binary from another package
//! (`sync-cli`, `sync-lab`): finds it next to the package's own binary, in the same target dir and
//! profile, and builds it only when it is missing or older than the sources it is built from.
//!
//! Under `cargo test --workspace` the binary was built by the same command (sync-relay has
//! integration tests), so nothing is rebuilt; under `cargo test -p sync-cli` after a change to
//! the relay, the binary is brought up to date once per test process.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::SystemTime;

/// Crates (under `crates/`) whose sources go into the relay binary.
const RELAY_SOURCES: &[&str] = &["sync-relay", "sync-types", "sync-crypto", "sync-core"];

/// The `sync-relay` binary in the directory of `own_bin` (a `CARGO_BIN_EXE_*` path), up to date.
pub(crate) fn relay_bin_next_to(own_bin: &Path) -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| locate(own_bin)).clone()
}

fn locate(own_bin: &Path) -> PathBuf {
    let profile_dir = own_bin.parent().expect("binary dir");
    let bin = profile_dir.join("sync-relay");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(Path::parent)
        .expect("workspace root");
    if let Ok(built) = std::fs::metadata(&bin).and_then(|m| m.modified())
        && newest_source(workspace).is_some_and(|newest| newest <= built)
    {
        return bin;
    }
    let target_dir = profile_dir.parent().expect("target dir");
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.args([
        "build",
        "--quiet",
        "-p",
        "sync-relay",
        "--bin",
        "sync-relay",
    ])
    .arg("--target-dir")
    .arg(target_dir)
    .current_dir(workspace);
    // `cargo test` builds into `debug` with the `test` profile and into `release` with `bench`.
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => cmd.args(["--profile", "test"]),
        Some("release") => cmd.args(["--profile", "bench"]),
        Some(other) => cmd.args(["--profile", other]),
        None => panic!("no profile dir in {}", own_bin.display()),
    };
    let out = cmd.output().expect("run cargo to build sync-relay");
    assert!(
        out.status.success(),
        "cargo build -p sync-relay failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(bin.is_file(), "{} missing after the build", bin.display());
    bin
}

/// Latest modification time of the relay's sources and the workspace manifests.
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
        // A source dir that cannot be read: treat the binary as stale.
        let entries = std::fs::read_dir(&dir).ok()?;
        for e in entries.flatten() {
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
