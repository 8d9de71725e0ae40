//! The operator's key file: the Ed25519 secret that signs admission tokens. It belongs with the
//! operator, not on the relay (the relay is configured with the public key only).

use std::path::{Path, PathBuf};

use sync_crypto::{OperatorKey, OperatorPublicKey};
use zeroize::Zeroizing;

use crate::identity::{warn_if_readable_by_others, write_new_key};

/// Why an operator key file could not be created or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OperatorKeyError {
    /// `create_operator_key` found a file at the path (it never replaces a key).
    #[error("operator key {path} already exists (refusing to replace it)")]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// The file could not be read or written.
    #[error("operator key {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file does not hold exactly 32 bytes.
    #[error("operator key {path} is {len} bytes long, expected 32")]
    BadLength {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
    /// The OS random number generator failed.
    #[error("no randomness available for a new operator key")]
    Random,
}

/// Creates a new operator key at `path` (32 raw bytes, mode 0600, written to a temporary file
/// and renamed into place) and returns its public key. An existing file is never replaced.
pub fn create_operator_key(path: &Path) -> Result<OperatorPublicKey, OperatorKeyError> {
    if path.exists() {
        return Err(OperatorKeyError::Exists {
            path: path.to_path_buf(),
        });
    }
    let mut seed = Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut_slice()).map_err(|_| OperatorKeyError::Random)?;
    let key = OperatorKey::from_secret_bytes(*seed);
    write_new_key(path, key.secret_bytes().as_slice()).map_err(|source| OperatorKeyError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(key.public_key())
}

/// Reads the operator key at `path` (warns when other users may read it).
pub fn load_operator_key(path: &Path) -> Result<OperatorKey, OperatorKeyError> {
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|source| OperatorKeyError::Io {
        path: path.to_path_buf(),
        source,
    })?);
    let seed: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| OperatorKeyError::BadLength {
            path: path.to_path_buf(),
            len: bytes.len(),
        })?;
    warn_if_readable_by_others(path);
    Ok(OperatorKey::from_secret_bytes(seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_created_once_private_and_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("operator.key");
        let public = create_operator_key(&path).expect("create");
        assert_eq!(load_operator_key(&path).expect("load").public_key(), public);
        assert!(matches!(
            create_operator_key(&path),
            Err(OperatorKeyError::Exists { .. })
        ));
        assert_eq!(load_operator_key(&path).expect("kept").public_key(), public);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, b"short").expect("write");
        assert!(matches!(
            load_operator_key(&path),
            Err(OperatorKeyError::BadLength { len: 5, .. })
        ));
    }
}
