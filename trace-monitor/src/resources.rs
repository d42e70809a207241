//! Resource usage of the agent process (CPU %, RSS, open files, from `/proc/self`) and of its
//! data directory (bytes on disk, free space via `statvfs`). Linux first: on other systems
//! whatever cannot be read is `None`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One reading of the agent's resource usage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceUsage {
    /// When it was read.
    pub sampled_at: DateTime<Utc>,
    /// CPU used since the previous reading (the first reading: since the process started),
    /// in percent of one core, as `top` shows it.
    pub cpu_percent: Option<f64>,
    /// Resident memory.
    pub rss_bytes: Option<u64>,
    /// Open file descriptors.
    pub open_files: Option<u64>,
    /// Bytes allocated on disk under the data directory.
    pub data_dir_bytes: Option<u64>,
    /// Bytes available to unprivileged users on the data directory's file system.
    pub disk_free_bytes: Option<u64>,
    /// Size of that file system.
    pub disk_total_bytes: Option<u64>,
}

/// Reads resource usage; keeps the previous CPU reading so each sample reports the CPU used
/// between two samples.
#[derive(Debug)]
pub struct ResourceSampler {
    data_dir: Option<PathBuf>,
    previous_cpu: Option<(Instant, u64)>,
}

impl ResourceSampler {
    /// A sampler for this process and, when given, the data directory.
    pub fn new(data_dir: Option<PathBuf>) -> Self {
        ResourceSampler {
            data_dir,
            previous_cpu: None,
        }
    }

    /// Reads everything now. Walks the data directory: blocking I/O proportional to the
    /// number of files there (a few hundred for a store), so call it from a blocking context
    /// or at a modest interval.
    pub fn sample(&mut self, now: DateTime<Utc>) -> ResourceUsage {
        let cpu_percent = self.cpu_percent();
        let (disk_free_bytes, disk_total_bytes) = match &self.data_dir {
            Some(dir) => disk_space(dir),
            None => (None, None),
        };
        ResourceUsage {
            sampled_at: now,
            cpu_percent,
            rss_bytes: rss_bytes(),
            open_files: open_files(),
            data_dir_bytes: self.data_dir.as_deref().and_then(dir_bytes),
            disk_free_bytes,
            disk_total_bytes,
        }
    }

    fn cpu_percent(&mut self) -> Option<f64> {
        let stat = ProcStat::read()?;
        let ticks_per_second = clock_ticks_per_second()?;
        let now = Instant::now();
        let busy = stat.utime + stat.stime;
        let percent = match self.previous_cpu {
            Some((at, before)) => {
                let wall = now.duration_since(at).as_secs_f64();
                (wall > 0.0)
                    .then(|| busy.saturating_sub(before) as f64 / ticks_per_second / wall * 100.0)
            }
            None => {
                let uptime = system_uptime_seconds()?;
                let alive = uptime - stat.start_ticks as f64 / ticks_per_second;
                (alive > 0.0).then(|| busy as f64 / ticks_per_second / alive * 100.0)
            }
        };
        self.previous_cpu = Some((now, busy));
        percent
    }
}

/// The fields of `/proc/self/stat` used here, in clock ticks.
struct ProcStat {
    utime: u64,
    stime: u64,
    start_ticks: u64,
}

impl ProcStat {
    fn read() -> Option<ProcStat> {
        let text = std::fs::read_to_string("/proc/self/stat").ok()?;
        ProcStat::parse(&text)
    }

    /// `pid (comm) state ppid ...`: `comm` may hold spaces and parentheses, so fields are
    /// counted from the last `)`; after it, field 3 (`state`) is index 0 (proc(5)).
    fn parse(text: &str) -> Option<ProcStat> {
        let rest = &text[text.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
        Some(ProcStat {
            utime: field(14)?,
            stime: field(15)?,
            start_ticks: field(22)?,
        })
    }
}

#[cfg(unix)]
fn clock_ticks_per_second() -> Option<f64> {
    use nix::unistd::{sysconf, SysconfVar};
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(n)) if n > 0 => Some(n as f64),
        _ => None,
    }
}

#[cfg(not(unix))]
fn clock_ticks_per_second() -> Option<f64> {
    None
}

fn system_uptime_seconds() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/uptime").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_rss(&status)
}

/// `VmRSS:     12345 kB` in `/proc/self/status`.
fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut parts = line["VmRSS:".len()..].split_whitespace();
    let n: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | None => Some(n * 1024),
        Some(_) => None,
    }
}

fn open_files() -> Option<u64> {
    let entries = std::fs::read_dir("/proc/self/fd").ok()?;
    // Listing the directory opens one descriptor of its own, which the listing includes.
    Some((entries.count() as u64).saturating_sub(1))
}

/// Bytes allocated under `root` (not following symbolic links). Files that vanish during
/// the walk (retention deleting a segment) are skipped.
pub fn dir_bytes(root: &Path) -> Option<u64> {
    let meta = std::fs::symlink_metadata(root).ok()?;
    let mut total = allocated(&meta);
    if !meta.is_dir() {
        return Some(total);
    }
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            total += allocated(&meta);
            if meta.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    Some(total)
}

#[cfg(unix)]
fn allocated(meta: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    // st_blocks is in 512-byte units regardless of the file system's block size.
    meta.blocks() * 512
}

#[cfg(not(unix))]
fn allocated(meta: &std::fs::Metadata) -> u64 {
    meta.len()
}

/// (available to unprivileged users, total) bytes of the file system holding `path`.
#[cfg(unix)]
#[allow(clippy::unnecessary_cast, clippy::useless_conversion)] // widths differ by platform
fn disk_space(path: &Path) -> (Option<u64>, Option<u64>) {
    match nix::sys::statvfs::statvfs(path) {
        Ok(s) => {
            let unit = s.fragment_size() as u64;
            (
                Some((s.blocks_available() as u64).saturating_mul(unit)),
                Some((s.blocks() as u64).saturating_mul(unit)),
            )
        }
        Err(_) => (None, None),
    }
}

#[cfg(not(unix))]
fn disk_space(_path: &Path) -> (Option<u64>, Option<u64>) {
    (None, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_command_names() {
        let line = "1234 (my (odd) cmd) S 1 1234 1234 0 -1 4194560 100 0 0 0 \
                    250 75 0 0 20 0 4 0 9000 1000000 300 18446744073709551615";
        let stat = ProcStat::parse(line).expect("parses");
        assert_eq!((stat.utime, stat.stime, stat.start_ticks), (250, 75, 9000));
    }

    #[test]
    fn parses_vm_rss() {
        let status = "Name:\tx\nVmPeak:\t  2000 kB\nVmRSS:\t    1536 kB\nThreads: 3\n";
        assert_eq!(parse_vm_rss(status), Some(1536 * 1024));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
    }
}
