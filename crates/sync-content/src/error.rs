//! Errors of large content.

use std::path::PathBuf;

/// What went wrong with large content. Nothing here carries plaintext or key material.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    /// A chunk size outside the accepted range.
    #[error("chunk size {0} outside 1 KiB..=4 MiB")]
    BadChunkSize(u32),
    /// A chunk of the wrong length was given to be sealed.
    #[error("chunk {index} has the wrong length")]
    ChunkLength {
        /// The chunk's index.
        index: u64,
    },
    /// A chunk failed authentication: it was changed, moved, swapped, taken from other content
    /// or cut short. None of its bytes were returned.
    #[error("chunk {index} failed authentication (changed, moved, swapped or cut short)")]
    ChunkRejected {
        /// The chunk's index.
        index: u64,
    },
    /// The stored ciphertext does not have the size the reference says.
    #[error("content has {found} sealed bytes, its reference says {expected}")]
    SizeMismatch {
        /// Sealed bytes the reference implies.
        expected: u64,
        /// Sealed bytes held.
        found: u64,
    },
    /// The content is not (completely) in the local store.
    #[error("content {hash} is not complete here ({have} of {size} bytes)")]
    Incomplete {
        /// The content's hash (hex).
        hash: String,
        /// Verified bytes held.
        have: u64,
        /// Sealed size.
        size: u64,
    },
    /// No key for the epoch the content was sealed under.
    #[error("no content key for key epoch {0} (this device does not hold it)")]
    NoKey(u32),
    /// A file changed size while it was being read.
    #[error("{path} changed while it was read ({expected} bytes expected, {found} read)")]
    FileChanged {
        /// The file.
        path: PathBuf,
        /// Its size when reading started.
        expected: u64,
        /// Bytes read.
        found: u64,
    },
    /// A local file could not be read or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The content store failed.
    #[error("content store: {0}")]
    Store(String),
    /// A content reference or collection could not be decoded.
    #[error("malformed content reference: {0}")]
    Malformed(String),
    /// An item name that would leave the output directory (`..`, an absolute path, …).
    #[error("unsafe item name {0:?}: names must be relative paths without `..`")]
    UnsafeName(String),
}

impl ContentError {
    pub(crate) fn store(e: impl std::fmt::Display) -> Self {
        Self::Store(e.to_string())
    }

    pub(crate) fn file(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::File {
            path: path.into(),
            source,
        }
    }
}
