//! Looking at what a process left on disk.

use std::path::{Path, PathBuf};

/// Every regular file under `dir` (recursively) with its size, sorted by path; a directory
/// that cannot be read counts as empty (it may be changing under a running process).
pub fn files_under(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                out.push((entry.path(), meta.len()));
            }
        }
    }
    out.sort();
    out
}

/// The files under `dir` whose name ends in `.ext`, with their sizes (see [`files_under`]).
pub fn files_with_extension(dir: &Path, ext: &str) -> Vec<(PathBuf, u64)> {
    files_under(dir)
        .into_iter()
        .filter(|(p, _)| p.extension().is_some_and(|e| e == ext))
        .collect()
}

/// Reads every regular file under `dir` and returns the paths of those whose bytes contain
/// `needle`, with the number of bytes read in all. A file removed between listing and reading
/// (a journal or a temporary file of a running process) is skipped; its bytes are not counted,
/// so a caller can check that what it meant to search was actually read.
///
/// # Panics
/// When a listed file exists but cannot be read: this is for tests.
#[allow(clippy::panic)]
pub fn files_containing(dir: &Path, needle: &[u8]) -> (Vec<PathBuf>, u64) {
    let mut found = Vec::new();
    let mut read = 0u64;
    for (path, _) in files_under(dir) {
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("read {}: {e}", path.display()),
        };
        read += bytes.len() as u64;
        if !needle.is_empty() && bytes.windows(needle.len()).any(|w| w == needle) {
            found.push(path);
        }
    }
    (found, read)
}
