//! The store's configuration and its defaults.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Result, StoreError};

/// How the store lays out and keeps data. Defaults:
///
/// | field | default | meaning |
/// |---|---|---|
/// | `dir` | `./trace-data` | root directory (segments live in `dir/segments/`) |
/// | `segment_window` | 1 h | a segment takes writes for this long, then is sealed |
/// | `max_segment_bytes` | 256 MiB | a segment is also sealed when it reaches this size |
/// | `max_age` | 7 days | sealed segments older than this are deleted |
/// | `max_disk_bytes` | 10 GiB | oldest segments are deleted while the store is larger |
/// | `block_events` | 1024 | events per compressed block |
/// | `compression_level` | 1 | zstd level (1 fastest .. 19 smallest; negative = faster still) |
/// | `cache_bytes` | 32 MiB | sled page cache of the active segment |
/// | `open_segments` | 8 | sealed segments kept open for reads |
#[derive(Debug, Clone, PartialEq)]
pub struct StoreConfig {
    /// Root directory.
    pub dir: PathBuf,
    /// How long a segment takes writes.
    pub segment_window: Duration,
    /// Size at which a segment is sealed early.
    pub max_segment_bytes: u64,
    /// Age after which sealed segments are deleted.
    pub max_age: Duration,
    /// Disk budget of the whole store.
    pub max_disk_bytes: u64,
    /// Events per block.
    pub block_events: usize,
    /// zstd level.
    pub compression_level: i32,
    /// sled cache of the active segment, bytes.
    pub cache_bytes: u64,
    /// Sealed segments kept open for reads.
    pub open_segments: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            dir: PathBuf::from("./trace-data"),
            segment_window: Duration::from_secs(3600),
            max_segment_bytes: 256 * 1024 * 1024,
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_disk_bytes: 10 * 1024 * 1024 * 1024,
            block_events: 1024,
            compression_level: 1,
            cache_bytes: 32 * 1024 * 1024,
            open_segments: 8,
        }
    }
}

impl StoreConfig {
    /// The defaults with another root directory.
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        StoreConfig {
            dir: dir.into(),
            ..StoreConfig::default()
        }
    }

    /// Refuses values the store cannot work with, naming the key.
    pub fn validate(&self) -> Result<()> {
        let bad = |key, reason: String| Err(StoreError::Config { key, reason });
        if self.segment_window < Duration::from_millis(100) {
            return bad("segment_window", "must be at least 100ms".into());
        }
        if self.max_age < self.segment_window {
            return bad(
                "max_age",
                format!(
                    "must be at least segment_window ({:?}), got {:?}",
                    self.segment_window, self.max_age
                ),
            );
        }
        if self.max_disk_bytes < 1024 * 1024 {
            return bad("max_disk_bytes", "must be at least 1 MiB".into());
        }
        if self.max_segment_bytes < 64 * 1024 {
            return bad("max_segment_bytes", "must be at least 64 KiB".into());
        }
        if !(1..=100_000).contains(&self.block_events) {
            return bad(
                "block_events",
                format!("must be 1..=100000, got {}", self.block_events),
            );
        }
        if !(-7..=22).contains(&self.compression_level) {
            return bad(
                "compression_level",
                format!("zstd levels are -7..=22, got {}", self.compression_level),
            );
        }
        if self.open_segments == 0 {
            return bad("open_segments", "must be at least 1".into());
        }
        Ok(())
    }

    /// The size at which the active segment is sealed: the configured size, but never more
    /// than an eighth of the disk budget so retention can free space in steps.
    pub(crate) fn seal_bytes(&self) -> u64 {
        self.max_segment_bytes
            .min(self.max_disk_bytes / 8)
            .max(64 * 1024)
    }
}
