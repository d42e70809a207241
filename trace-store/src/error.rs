//! The store's error type: every variant names the file, segment or key involved.

use std::path::PathBuf;

use thiserror::Error;

/// What went wrong in the store.
#[derive(Debug, Error)]
pub enum StoreError {
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// sled failed.
    #[error("sled {op} in {path}: {source}")]
    Sled {
        /// What was being done.
        op: &'static str,
        /// The segment directory.
        path: PathBuf,
        /// sled's error.
        #[source]
        source: sled::Error,
    },
    /// A block or summary failed its checksum or did not decode.
    #[error("corrupt {what} in {path}: {detail}")]
    Corrupt {
        /// Which object (e.g. `block 12`).
        what: String,
        /// The segment directory.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The configuration is not usable.
    #[error("store config `{key}`: {reason}")]
    Config {
        /// The config key.
        key: &'static str,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// Another process holds the store directory.
    #[error("the store in {0} is in use by another process (another trace-agent?): stop it or use another --data-dir")]
    Locked(PathBuf),
    /// The store's file system has too little free space for a write; nothing was written.
    #[error(
        "no room to write in {path}: {free_bytes} bytes free, {needed_bytes} needed \
         (the write is refused until space is freed)"
    )]
    DiskFull {
        /// The segment directory.
        path: PathBuf,
        /// Free bytes on its file system (for unprivileged users).
        free_bytes: u64,
        /// What the write needs, with the reserve kept free.
        needed_bytes: u64,
    },
    /// An id asked for is not in the store.
    #[error("no event with id {0}")]
    NotFound(String),
}

impl StoreError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StoreError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn sled(op: &'static str, path: impl Into<PathBuf>, source: sled::Error) -> Self {
        StoreError::Sled {
            op,
            path: path.into(),
            source,
        }
    }
}

/// The store's result type.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
