//! Segments: one sled database (one directory) per time window. Rotation seals a segment
//! (its summaries written to `sealed.mp`, its database closed); retention deletes whole
//! directories, which is what gives disk space back (sled's `drop_tree` does not).
//!
//! Keys inside a segment: `b<seq>` block, `s<seq>` its summary, `q<seq>` a quarantined
//! message, `w<name>` a consumer watermark, all written by one atomic sled batch per append.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde::{Deserialize, Serialize};

use crate::block::BlockSummary;
use crate::error::{Result, StoreError};
use crate::quarantine::QuarantineRecord;

/// The file that marks a segment as sealed and holds its summaries.
const SEALED_FILE: &str = "sealed.mp";
/// The sled database directory inside a segment directory.
const DB_DIR: &str = "db";

pub(crate) fn block_key(seq: u64) -> [u8; 9] {
    prefixed(b'b', seq)
}
pub(crate) fn summary_key(seq: u64) -> [u8; 9] {
    prefixed(b's', seq)
}
pub(crate) fn quarantine_key(seq: u64) -> [u8; 9] {
    prefixed(b'q', seq)
}
pub(crate) fn watermark_key(name: &str) -> Vec<u8> {
    let mut k = vec![b'w'];
    k.extend_from_slice(name.as_bytes());
    k
}
fn prefixed(p: u8, seq: u64) -> [u8; 9] {
    let mut k = [p; 9];
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// What a segment knows about itself, persisted in `sealed.mp` once sealed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct SegmentState {
    pub sealed: bool,
    pub created_ms: i64,
    pub last_write_ms: i64,
    pub summaries: Vec<BlockSummary>,
    pub quarantined: u64,
    pub watermarks: BTreeMap<String, u64>,
    /// Bytes on disk, measured when sealed (and refreshed for the active one).
    pub disk_bytes: u64,
}

impl SegmentState {
    pub(crate) fn events(&self) -> u64 {
        self.summaries.iter().map(|s| u64::from(s.count)).sum()
    }
}

/// A segment directory with its state and, while open, its database.
pub(crate) struct Segment {
    pub name: String,
    pub dir: PathBuf,
    state: RwLock<SegmentState>,
    db: Mutex<Option<sled::Db>>,
}

impl Segment {
    /// Creates a new, empty, open segment.
    pub(crate) fn create(
        parent: &Path,
        created_ms: i64,
        counter: u64,
        cache_bytes: u64,
    ) -> Result<Segment> {
        let name = format!("seg-{created_ms:016}-{counter:06}");
        let dir = parent.join(&name);
        fs::create_dir_all(&dir).map_err(|e| StoreError::io("create segment dir", &dir, e))?;
        let db = open_db(&dir, cache_bytes, true)?;
        let state = SegmentState {
            created_ms,
            last_write_ms: created_ms,
            ..SegmentState::default()
        };
        Ok(Segment {
            name,
            dir,
            state: RwLock::new(state),
            db: Mutex::new(Some(db)),
        })
    }

    /// Loads a segment found on disk. A sealed one reads only `sealed.mp`; an unsealed one
    /// (the active segment of a previous run) is opened and its keys read back.
    pub(crate) fn load(dir: &Path) -> Result<Segment> {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let created_ms = name
            .strip_prefix("seg-")
            .and_then(|r| r.split('-').next())
            .and_then(|ms| ms.parse::<i64>().ok())
            .ok_or_else(|| StoreError::Corrupt {
                what: "segment name".into(),
                path: dir.to_owned(),
                detail: "expected seg-<millis>-<counter>".into(),
            })?;
        let sealed_path = dir.join(SEALED_FILE);
        let segment = Segment {
            name,
            dir: dir.to_owned(),
            state: RwLock::new(SegmentState::default()),
            db: Mutex::new(None),
        };
        let sealed = match fs::read(&sealed_path) {
            Ok(bytes) => match rmp_serde::from_slice::<SegmentState>(&bytes) {
                Ok(state) => Ok(state),
                // the summary file is only a cache of what the database holds: rebuild it
                Err(e) => {
                    tracing::warn!(segment = %dir.display(), error = %e,
                        "{SEALED_FILE} unreadable; reading the segment's state from its database");
                    Err(std::io::Error::from(std::io::ErrorKind::NotFound))
                }
            },
            Err(e) => Err(e),
        };
        match sealed {
            Ok(state) => {
                *segment.state_mut() = state;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let db = open_db(dir, 4 * 1024 * 1024, false)?;
                let state = read_state(&db, dir, created_ms)?;
                *segment.state_mut() = state;
                *segment.db_slot() = Some(db);
            }
            Err(e) => return Err(StoreError::io("read", sealed_path, e)),
        }
        Ok(segment)
    }

    pub(crate) fn state(&self) -> RwLockReadGuard<'_, SegmentState> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn state_mut(&self) -> RwLockWriteGuard<'_, SegmentState> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    fn db_slot(&self) -> MutexGuard<'_, Option<sled::Db>> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The database, opened on first use for a sealed segment.
    pub(crate) fn db(&self) -> Result<sled::Db> {
        let mut slot = self.db_slot();
        if let Some(db) = slot.as_ref() {
            return Ok(db.clone());
        }
        let db = open_db(&self.dir, 2 * 1024 * 1024, false)?;
        *slot = Some(db.clone());
        Ok(db)
    }

    pub(crate) fn is_open(&self) -> bool {
        self.db_slot().is_some()
    }

    /// Closes the database handle (reads reopen it).
    pub(crate) fn close(&self) {
        self.db_slot().take();
    }

    /// Takes the database handle out (for [`Segment::reopen`]: every handle must be gone
    /// before sled opens the database again, since it locks the file).
    pub(crate) fn take_db(&self) -> Option<sled::Db> {
        self.db_slot().take()
    }

    /// Opens the database again (the active segment, after a failed write) and reads its state
    /// back from what is on disk. Fails while another handle is alive, e.g. a reader's in the
    /// middle of a read (sled locks the database file): the caller tries again later.
    pub(crate) fn reopen(&self, cache_bytes: u64) -> Result<sled::Db> {
        let db = {
            let mut slot = self.db_slot();
            slot.take();
            let db = open_db(&self.dir, cache_bytes, true)?;
            *slot = Some(db.clone());
            db
        };
        let (created_ms, disk_bytes) = {
            let st = self.state();
            (st.created_ms, st.disk_bytes)
        };
        let mut state = read_state(&db, &self.dir, created_ms)?;
        state.disk_bytes = disk_bytes;
        *self.state_mut() = state;
        Ok(db)
    }

    /// Seals: writes `sealed.mp` atomically (tmp + rename), flushes and closes the database,
    /// and measures the directory.
    pub(crate) fn seal(&self) -> Result<()> {
        if let Some(db) = self.db_slot().take() {
            db.flush()
                .map_err(|e| StoreError::sled("flush", &self.dir, e))?;
        }
        let mut state = self.state_mut();
        state.sealed = true;
        state.disk_bytes = dir_size(&self.dir);
        let bytes = rmp_serde::to_vec_named(&*state).map_err(|e| StoreError::Corrupt {
            what: SEALED_FILE.into(),
            path: self.dir.clone(),
            detail: format!("encode: {e}"),
        })?;
        let tmp = self.dir.join(format!("{SEALED_FILE}.tmp"));
        fs::write(&tmp, &bytes).map_err(|e| StoreError::io("write", &tmp, e))?;
        let file = fs::File::open(&tmp).map_err(|e| StoreError::io("open", &tmp, e))?;
        file.sync_all()
            .map_err(|e| StoreError::io("fsync", &tmp, e))?;
        fs::rename(&tmp, self.dir.join(SEALED_FILE))
            .map_err(|e| StoreError::io("rename", self.dir.join(SEALED_FILE), e))?;
        Ok(())
    }

    /// Deletes the segment from disk, returning the bytes it took.
    pub(crate) fn delete(&self) -> Result<u64> {
        self.close();
        let bytes = dir_size(&self.dir);
        fs::remove_dir_all(&self.dir)
            .map_err(|e| StoreError::io("delete segment", &self.dir, e))?;
        Ok(bytes)
    }

    /// Reads a block's stored value.
    pub(crate) fn read_block(&self, seq: u64) -> Result<Option<sled::IVec>> {
        let db = self.db()?;
        db.get(block_key(seq))
            .map_err(|e| StoreError::sled("read block", &self.dir, e))
    }

    /// All quarantined records, oldest first.
    pub(crate) fn quarantine(&self) -> Result<Vec<QuarantineRecord>> {
        let db = self.db()?;
        let mut out = Vec::new();
        for kv in db.scan_prefix([b'q']) {
            let (_, v) = kv.map_err(|e| StoreError::sled("scan quarantine", &self.dir, e))?;
            match rmp_serde::from_slice(&v) {
                Ok(r) => out.push(r),
                Err(e) => {
                    tracing::warn!(segment = %self.name, error = %e, "skipping unreadable quarantine record")
                }
            }
        }
        Ok(out)
    }
}

pub(crate) fn open_db(dir: &Path, cache_bytes: u64, active: bool) -> Result<sled::Db> {
    let path = dir.join(DB_DIR);
    sled::Config::new()
        .path(&path)
        .cache_capacity(cache_bytes)
        .mode(sled::Mode::HighThroughput)
        .flush_every_ms(if active { Some(1000) } else { None })
        .open()
        .map_err(|e| StoreError::sled("open", path, e))
}

/// Rebuilds the state of an unsealed segment from its keys.
fn read_state(db: &sled::Db, dir: &Path, created_ms: i64) -> Result<SegmentState> {
    let mut state = SegmentState {
        created_ms,
        last_write_ms: created_ms,
        ..SegmentState::default()
    };
    for kv in db.scan_prefix([b's']) {
        let (k, v) = kv.map_err(|e| StoreError::sled("scan summaries", dir, e))?;
        match rmp_serde::from_slice::<BlockSummary>(&v) {
            Ok(s) => state.summaries.push(s),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), key = ?k, error = %e, "skipping unreadable block summary")
            }
        }
    }
    state.quarantined = db.scan_prefix([b'q']).count() as u64;
    for kv in db.scan_prefix([b'w']) {
        let (k, v) = kv.map_err(|e| StoreError::sled("scan watermarks", dir, e))?;
        if let (Ok(name), Ok(seq)) = (std::str::from_utf8(&k[1..]), <[u8; 8]>::try_from(&v[..])) {
            state
                .watermarks
                .insert(name.to_owned(), u64::from_be_bytes(seq));
        }
    }
    if let Ok(Some(v)) = db.get(b"lastwrite") {
        if let Ok(b) = <[u8; 8]>::try_from(&v[..]) {
            state.last_write_ms = i64::from_be_bytes(b);
        }
    }
    Ok(state)
}

/// Total size of the files below `dir` (what the store really takes on disk).
pub(crate) fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for entry in rd.flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => stack.push(entry.path()),
                Ok(m) => total += disk_len(&m),
                Err(_) => {}
            }
        }
    }
    total
}

#[cfg(unix)]
fn disk_len(m: &fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    // allocated blocks: sparse or preallocated files count for what they really use
    m.blocks() * 512
}

#[cfg(not(unix))]
fn disk_len(m: &fs::Metadata) -> u64 {
    m.len()
}
