//! One `sync-cli` process per data directory at a time. Every command that works on the device
//! (all but `devices`, which only reads) holds an exclusive lock on `sync-cli.lock` in the data
//! directory while it runs: two processes would each hold their own copy of the outbox and the
//! cursor in memory and could send a push twice or move the cursor backwards. A second process
//! does not wait: it fails at once with [`Kind::Busy`] (exit 10). The operating system releases
//! the lock when the process ends, however it ends.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use crate::fail::{Failure, Kind};

/// Name of the lock file in the data directory.
pub(crate) const LOCK_FILE: &str = "sync-cli.lock";

/// Holds the data directory's lock until dropped (or the process ends).
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

/// Takes the lock of `dir` (which must exist), or fails with [`Kind::Busy`] if another process
/// holds it.
pub(crate) fn lock(dir: &Path) -> Result<DirLock, Failure> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| Failure::new(Kind::Other, format!("{}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(DirLock { _file: file }),
        Err(TryLockError::WouldBlock) => Err(Failure::new(
            Kind::Busy,
            format!(
                "another sync-cli process is using {} (e.g. `watch`): stop it, or wait for it to finish, then run this again",
                dir.display()
            ),
        )),
        Err(TryLockError::Error(e)) => Err(Failure::new(
            Kind::Other,
            format!("cannot lock {}: {e}", path.display()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock(dir.path()).unwrap();
        let second = lock(dir.path()).unwrap_err();
        assert_eq!(second.kind, Kind::Busy);
        drop(first);
        lock(dir.path()).unwrap();
    }
}
