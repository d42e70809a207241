//! What a directory takes on disk, measured by walking it (not by asking the agent).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::Context as _;

/// Sizes of everything under a directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskUsage {
    /// Sum of the files' lengths.
    pub apparent_bytes: u64,
    /// Sum of the blocks the files occupy (what `du` reports; sparse files count less).
    pub allocated_bytes: u64,
    /// Number of regular files.
    pub files: u64,
}

/// Walks `dir` (not following symlinks) and sums its regular files. Files that vanish while
/// walking (the agent deletes segments concurrently) are skipped.
pub fn disk_usage(dir: &Path) -> anyhow::Result<DiskUsage> {
    let mut usage = DiskUsage::default();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let entries = match std::fs::read_dir(&path) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading dir {}", path.display())),
        };
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).with_context(|| format!("listing {}", path.display())),
            };
            let meta = match entry.path().symlink_metadata() {
                Ok(meta) => meta,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(e).with_context(|| format!("stat {}", entry.path().display()))
                }
            };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                usage.apparent_bytes += meta.len();
                usage.allocated_bytes += meta.blocks() * 512;
                usage.files += 1;
            }
        }
    }
    Ok(usage)
}
