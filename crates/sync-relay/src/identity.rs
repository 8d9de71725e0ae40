//! The relay's identity: an Ed25519 secret key (the iroh endpoint key) created once and kept in
//! the data dir, so the relay's id — what devices dial and what their Hello signatures name —
//! survives restarts.

use std::io::Write;
use std::path::{Path, PathBuf};

use iroh::SecretKey;
use zeroize::Zeroizing;

/// Name of the secret key file inside the data dir (32 raw bytes, mode 0600).
pub const KEY_FILE_NAME: &str = "relay.key";

/// Why the relay's secret key could not be loaded or created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The data dir or the key file could not be created, read or written.
    #[error("relay key {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key file exists but does not hold exactly 32 bytes.
    #[error("relay key {path} is {len} bytes long, expected 32 (refusing to replace it)")]
    BadLength {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
}

/// Loads `data_dir/relay.key`, or creates it (and `data_dir`) with a fresh random key.
///
/// A new file is written under a temporary name with mode 0600, synced, then renamed into
/// place, so a crash never leaves a partial key behind. An existing file of the wrong length is
/// an error: replacing it would silently change the relay's identity.
pub fn load_or_create_secret_key(data_dir: &Path) -> Result<SecretKey, IdentityError> {
    let path = data_dir.join(KEY_FILE_NAME);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| IdentityError::Io { path, source }
    };
    create_private_dir(data_dir).map_err(io(data_dir))?;
    match std::fs::read(&path) {
        Ok(bytes) => {
            let bytes = Zeroizing::new(bytes);
            let key: &[u8; 32] =
                bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| IdentityError::BadLength {
                        path: path.clone(),
                        len: bytes.len(),
                    })?;
            warn_if_readable_by_others(&path);
            Ok(SecretKey::from_bytes(key))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = SecretKey::generate();
            let bytes = Zeroizing::new(key.to_bytes());
            write_new_key(&path, bytes.as_slice()).map_err(io(&path))?;
            tracing::info!(path = %path.display(), "created a new relay identity");
            Ok(key)
        }
        Err(e) => Err(IdentityError::Io { path, source: e }),
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

pub(crate) fn write_new_key(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("key.tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp)?;
    #[cfg(unix)]
    {
        // A leftover temp file from an earlier crash keeps its old mode: set it explicitly.
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        // Make the rename durable; not every platform can open a directory, which is fine.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

pub(crate) fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                path = %path.display(),
                mode = format_args!("{:o}", meta.permissions().mode() & 0o777),
                "key file is accessible by other users; chmod 600 it"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_created_once_and_reloaded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("nested").join("data");
        let first = load_or_create_secret_key(&data).expect("create");
        let second = load_or_create_secret_key(&data).expect("load");
        assert_eq!(first.public(), second.public());
        assert_eq!(first.to_bytes(), second.to_bytes());
        let bytes = std::fs::read(data.join(KEY_FILE_NAME)).expect("read");
        assert_eq!(bytes.len(), 32);
        assert!(!data.join("relay.key.tmp").exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(data.join(KEY_FILE_NAME))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_damaged_key_file_is_refused_not_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(KEY_FILE_NAME), b"short").expect("write");
        let err = load_or_create_secret_key(dir.path()).expect_err("bad length");
        assert!(
            matches!(err, IdentityError::BadLength { len: 5, .. }),
            "{err}"
        );
        assert_eq!(
            std::fs::read(dir.path().join(KEY_FILE_NAME)).expect("read"),
            b"short"
        );
    }
}
