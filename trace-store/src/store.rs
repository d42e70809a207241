//! `Store`: the facade over segments. Appends go to the active segment through one atomic
//! sled batch per call (blocks, summaries, quarantine records and the consumer watermark
//! together); queries walk block summaries newest- or oldest-first and decode only blocks
//! that may match; `maintain` rotates and applies retention.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashSet};
use std::fs;
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex, MutexGuard, RwLock};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use trace_core::{Cursor, EventId, Order, Query, QueryPage, TraceEntry};

use crate::block::{decode_block, BlockSummary, PendingBlock};
use crate::config::StoreConfig;
use crate::error::{Result, StoreError};
use crate::quarantine::QuarantineRecord;
use crate::segment::{self, Segment};

/// High bit of quarantine keys of messages without a stream position.
const QUARANTINE_LOCAL: u64 = 1 << 63;

/// Longest `explain` chain followed.
pub const MAX_CHAIN: usize = 256;

/// What one append writes, atomically.
#[derive(Debug, Default, Clone, Copy)]
pub struct AppendBatch<'a> {
    /// Valid entries.
    pub entries: &'a [TraceEntry],
    /// Messages refused by the decoder.
    pub quarantined: &'a [QuarantineRecord],
    /// A consumer watermark `(name, stream sequence)` stored with the batch, so a restart
    /// knows exactly what is already durable.
    pub checkpoint: Option<(&'a str, u64)>,
}

/// What `Store::info` reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoreInfo {
    /// The store's root directory.
    pub dir: String,
    /// Segments on disk.
    pub segments: u64,
    /// Blocks in all segments.
    pub blocks: u64,
    /// Entries stored.
    pub events: u64,
    /// Quarantined messages kept.
    pub quarantined: u64,
    /// Uncompressed msgpack bytes of the entries.
    pub raw_bytes: u64,
    /// Compressed block bytes.
    pub compressed_bytes: u64,
    /// Everything the store takes on disk (sled overhead, summaries and quarantine included).
    pub bytes_on_disk: u64,
    /// `raw_bytes / compressed_bytes`.
    pub compression_ratio: f64,
    /// `bytes_on_disk / raw_bytes`: what one raw msgpack byte costs on disk.
    pub disk_bytes_per_raw_byte: f64,
    /// Earliest entry time.
    pub oldest: Option<DateTime<Utc>>,
    /// Latest entry time.
    pub newest: Option<DateTime<Utc>>,
    /// Per segment: name, events, bytes on disk, sealed.
    pub segment_list: Vec<SegmentInfo>,
}

/// One segment in `StoreInfo`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SegmentInfo {
    /// Directory name.
    pub name: String,
    /// Entries.
    pub events: u64,
    /// Blocks.
    pub blocks: u64,
    /// Bytes on disk.
    pub bytes_on_disk: u64,
    /// Whether it still takes writes.
    pub active: bool,
}

/// What `Store::verify` found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// Segments checked.
    pub segments: u64,
    /// Blocks checked.
    pub blocks: u64,
    /// The corrupt ones.
    pub corrupt: Vec<CorruptBlock>,
    /// Corrupt blocks removed (with `repair`).
    pub repaired: u64,
}

/// One corrupt block, by location.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CorruptBlock {
    /// Segment directory name.
    pub segment: String,
    /// Block number in the segment.
    pub block: u64,
    /// Entries its summary says it held.
    pub events: u64,
    /// What is wrong.
    pub detail: String,
}

/// What `Store::scan` went through.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanStats {
    /// Entries visited.
    pub entries: u64,
    /// Blocks decoded.
    pub blocks_read: u64,
    /// Blocks skipped by their summaries.
    pub blocks_skipped: u64,
}

/// What `maintain` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaintainReport {
    /// Whether the active segment was sealed and a new one started.
    pub rotated: bool,
    /// Segments deleted for age.
    pub deleted_for_age: u64,
    /// Segments deleted for the disk budget.
    pub deleted_for_size: u64,
    /// Bytes freed on disk.
    pub freed_bytes: u64,
    /// Entries deleted.
    pub deleted_events: u64,
}

struct Writer {
    active: Arc<Segment>,
    /// The active segment's database; `None` only while it is being reopened.
    db: Option<sled::Db>,
    /// A write or flush failed since the database was opened: sled takes no more writes
    /// from it (it keeps its first I/O error), so the next append reopens it first.
    failed: bool,
    /// Signals when the failed database's handles have been dropped (on their own thread).
    closing: Option<mpsc::Receiver<()>>,
    pending: PendingBlock,
    /// The key the pending block is currently written under (rewritten until full).
    tail_seq: Option<u64>,
    next_seq: u64,
    next_q: u64,
    compressor: zstd::bulk::Compressor<'static>,
    scratch: Vec<u8>,
    counter: u64,
}

/// The trace store. Cheap to share behind an `Arc`; appends are serialised, reads run
/// concurrently with them.
pub struct Store {
    cfg: StoreConfig,
    segments_dir: PathBuf,
    catalog: RwLock<Vec<Arc<Segment>>>,
    writer: Mutex<Writer>,
    /// Watermarks of segments deleted by retention, so a restart never forgets them.
    retired_watermarks: Mutex<BTreeMap<String, u64>>,
    /// Held for the store's lifetime: one process per store directory.
    _lock: fs::File,
}

fn now_ms(now: DateTime<Utc>) -> i64 {
    now.timestamp_millis()
}

impl Store {
    /// Opens (or creates) the store at `cfg.dir`. Segments left unsealed by a previous run
    /// are sealed, and a fresh active segment is started.
    pub fn open(cfg: StoreConfig) -> Result<Store> {
        Store::open_at(cfg, Utc::now())
    }

    /// `open` with an explicit clock.
    pub fn open_at(cfg: StoreConfig, now: DateTime<Utc>) -> Result<Store> {
        cfg.validate()?;
        let segments_dir = cfg.dir.join("segments");
        fs::create_dir_all(&segments_dir)
            .map_err(|e| StoreError::io("create store dir", &segments_dir, e))?;
        let lock_path = cfg.dir.join("LOCK");
        let lock =
            fs::File::create(&lock_path).map_err(|e| StoreError::io("create", &lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(StoreError::Locked(cfg.dir.clone())),
            Err(fs::TryLockError::Error(e)) => return Err(StoreError::io("lock", &lock_path, e)),
        }
        let mut dirs: Vec<PathBuf> = fs::read_dir(&segments_dir)
            .map_err(|e| StoreError::io("list", &segments_dir, e))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.is_dir()
                    && p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("seg-"))
            })
            .collect();
        dirs.sort();
        let mut segments = Vec::with_capacity(dirs.len() + 1);
        for dir in dirs {
            match Segment::load(&dir) {
                Ok(seg) => {
                    if !seg.state().sealed {
                        seg.seal()?;
                    }
                    segments.push(Arc::new(seg));
                }
                // A damaged segment must not stop the agent: set it aside, keep the rest.
                Err(e) => {
                    tracing::error!(segment = %dir.display(), error = %e, "segment unreadable; moved aside");
                    let aside = dir.with_extension("damaged");
                    let _ = fs::rename(&dir, aside);
                }
            }
        }
        let retired = read_retired(&cfg.dir);
        // after every name in use, set-aside ones included, so a new segment never takes the
        // name of one that exists (segments set aside or deleted make `len` too small)
        let counter = fs::read_dir(&segments_dir)
            .map_err(|e| StoreError::io("list", &segments_dir, e))?
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let stem = name.split('.').next()?.to_owned();
                stem.strip_prefix("seg-")?
                    .rsplit('-')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .max()
            .map_or(0, |c| c + 1);
        let active = Arc::new(Segment::create(
            &segments_dir,
            now_ms(now),
            counter,
            cfg.cache_bytes,
        )?);
        let db = active.db()?;
        segments.push(active.clone());
        let compressor = zstd::bulk::Compressor::new(cfg.compression_level)
            .map_err(|e| StoreError::io("create zstd compressor", &cfg.dir, e))?;
        Ok(Store {
            writer: Mutex::new(Writer {
                active,
                db: Some(db),
                failed: false,
                closing: None,
                pending: PendingBlock::default(),
                tail_seq: None,
                next_seq: 0,
                next_q: 0,
                compressor,
                scratch: Vec::new(),
                counter: counter + 1,
            }),
            cfg,
            segments_dir,
            catalog: RwLock::new(segments),
            retired_watermarks: Mutex::new(retired),
            _lock: lock,
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &StoreConfig {
        &self.cfg
    }

    fn writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn segments(&self) -> Vec<Arc<Segment>> {
        self.catalog
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Appends a batch atomically (not yet durable: call [`Store::flush`] before acking).
    pub fn append(&self, batch: AppendBatch<'_>) -> Result<()> {
        self.append_at(batch, Utc::now())
    }

    /// `append` with an explicit clock (rotation by time uses it).
    pub fn append_at(&self, batch: AppendBatch<'_>, now: DateTime<Utc>) -> Result<()> {
        let mut w = self.writer();
        self.recover_locked(&mut w)?;
        self.rotate_if_due(&mut w, now)?;
        let result = self.append_locked(&mut w, batch, now);
        if let Err(e) = &result {
            // The pending block may hold entries that were not written: forget it. What the
            // tail key holds on disk stays valid; new blocks take new keys.
            w.pending.clear();
            w.tail_seq = None;
            w.failed |= is_write_failure(e);
        }
        result
    }

    /// Reopens the active segment's database if a write or flush failed since it was opened
    /// (e.g. the disk was full): sled refuses every write after its first I/O error until it
    /// is opened again, which recovers exactly what reached the disk. Returns whether it
    /// reopened. [`Store::append`] does this first by itself; a caller retrying a batch calls
    /// it before looking up which of the batch's entries are stored, because an append that
    /// failed to flush is either entirely on disk or not at all (one atomic sled batch).
    pub fn recover(&self) -> Result<bool> {
        let mut w = self.writer();
        self.recover_locked(&mut w)
    }

    fn recover_locked(&self, w: &mut Writer) -> Result<bool> {
        if !w.failed {
            return Ok(false);
        }
        w.pending.clear();
        w.tail_seq = None;
        // Every handle must be gone before sled opens the database again (its file lock).
        // They are dropped on a thread of their own: sled flushes on drop, and after a failed
        // blob write (a value over ~128 KiB) its flush never returns, which must not hold the
        // writer (and with it the health loop and every append) forever.
        if w.closing.is_none() {
            let handles = (w.db.take(), w.active.take_db());
            w.closing = Some(close_in_background(handles, &w.active.dir)?);
        }
        if let Some(closing) = &w.closing {
            match closing.recv_timeout(CLOSE_WAIT) {
                Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => w.closing = None,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(StoreError::io(
                        "reopen",
                        &w.active.dir,
                        std::io::Error::other(
                            "the failed database has not closed yet (sled is stuck after a \
                             failed write); writes are refused until it does or the agent \
                             restarts",
                        ),
                    ))
                }
            }
        }
        let db = w.active.reopen(self.cfg.cache_bytes)?;
        w.db = Some(db);
        w.failed = false;
        tracing::warn!(segment = %w.active.name, "store reopened its active segment after a failed write");
        Ok(true)
    }

    fn append_locked(
        &self,
        w: &mut Writer,
        batch: AppendBatch<'_>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let mut sled_batch = sled::Batch::default();
        // bytes of the values written, for the free-space check before sled sees them
        let mut batch_bytes = 0u64;
        let mut new_summaries: Vec<BlockSummary> = Vec::new();
        let block_events = self.cfg.block_events;
        let build = |w: &mut Writer,
                     summaries: &mut Vec<BlockSummary>,
                     sb: &mut sled::Batch,
                     bytes: &mut u64|
         -> Result<()> {
            let seq = match w.tail_seq {
                Some(s) => s,
                None => {
                    w.next_seq += 1;
                    w.next_seq - 1
                }
            };
            let (value, summary) = w
                .pending
                .build(seq, &mut w.compressor, &mut w.scratch)
                .map_err(|e| StoreError::io("compress block", &w.active.dir, e))?;
            *bytes += value.len() as u64;
            sb.insert(&segment::block_key(seq), value);
            let encoded = rmp_serde::to_vec_named(&summary).map_err(|e| StoreError::Corrupt {
                what: format!("summary {seq}"),
                path: w.active.dir.clone(),
                detail: e.to_string(),
            })?;
            sb.insert(&segment::summary_key(seq), encoded);
            summaries.retain(|s| s.seq != seq);
            summaries.push(summary);
            Ok(())
        };
        for e in batch.entries {
            w.pending.push(e);
            if w.pending.len() >= block_events {
                build(w, &mut new_summaries, &mut sled_batch, &mut batch_bytes)?;
                w.pending.clear();
                w.tail_seq = None;
            }
        }
        if !w.pending.is_empty() && !batch.entries.is_empty() {
            build(w, &mut new_summaries, &mut sled_batch, &mut batch_bytes)?;
            if w.pending.len() >= block_events / 2 {
                // big enough to stand as a block: no rewrites under load
                w.pending.clear();
                w.tail_seq = None;
            } else {
                // a small tail is rewritten under the same key until it fills up, so a
                // trickle of events still ends up in well-compressed blocks
                w.tail_seq = new_summaries.last().map(|s| s.seq);
            }
        }
        for q in batch.quarantined {
            let v = rmp_serde::to_vec_named(q).map_err(|e| StoreError::Corrupt {
                what: "quarantine record".into(),
                path: w.active.dir.clone(),
                detail: e.to_string(),
            })?;
            // keyed by stream position when known, so a redelivery overwrites, never doubles
            let key = match q.stream_seq {
                Some(seq) => segment::quarantine_key(seq & !QUARANTINE_LOCAL),
                None => {
                    w.next_q += 1;
                    segment::quarantine_key(QUARANTINE_LOCAL | w.next_q)
                }
            };
            batch_bytes += v.len() as u64;
            sled_batch.insert(&key, v);
        }
        if let Some((name, seq)) = batch.checkpoint {
            sled_batch.insert(segment::watermark_key(name), &seq.to_be_bytes());
        }
        let ms = now_ms(now);
        sled_batch.insert(b"lastwrite", &ms.to_be_bytes());
        ensure_room(&w.active.dir, batch_bytes)?;
        w.db.as_ref()
            .ok_or_else(|| not_open(&w.active.dir))?
            .apply_batch(sled_batch)
            .map_err(|e| StoreError::sled("write batch", &w.active.dir, e))?;
        let mut st = w.active.state_mut();
        for s in new_summaries {
            match st.summaries.last_mut() {
                Some(last) if last.seq == s.seq => *last = s,
                _ => st.summaries.push(s),
            }
        }
        st.quarantined += batch.quarantined.len() as u64;
        if let Some((name, seq)) = batch.checkpoint {
            st.watermarks.insert(name.to_owned(), seq);
        }
        st.last_write_ms = ms;
        Ok(())
    }

    /// Makes everything appended so far durable (fsync). Ack only after this returns.
    ///
    /// After a failed write it fails until an append has reopened the active segment: what
    /// was appended before may not have survived, so a flush alone must not report it durable.
    pub fn flush(&self) -> Result<()> {
        let db = {
            let w = self.writer();
            if w.failed {
                return Err(StoreError::io(
                    "flush",
                    &w.active.dir,
                    std::io::Error::other("an earlier write failed: append again"),
                ));
            }
            w.db.clone().ok_or_else(|| not_open(&w.active.dir))?
        };
        db.flush().map(|_| ()).map_err(|e| {
            self.writer().failed = true;
            StoreError::sled("flush", self.cfg.dir.clone(), e)
        })
    }

    /// The highest stream sequence stored under `name` (0 if none).
    pub fn watermark(&self, name: &str) -> u64 {
        let live = self
            .segments()
            .iter()
            .filter_map(|s| s.state().watermarks.get(name).copied())
            .max()
            .unwrap_or(0);
        let retired = self
            .retired_watermarks
            .lock()
            .map(|r| r.get(name).copied().unwrap_or(0))
            .unwrap_or(0);
        live.max(retired)
    }

    fn rotate_if_due(&self, w: &mut Writer, now: DateTime<Utc>) -> Result<bool> {
        let (created, disk) = {
            let st = w.active.state();
            (
                st.created_ms,
                st.summaries
                    .iter()
                    .map(|s| u64::from(s.stored_bytes))
                    .sum::<u64>(),
            )
        };
        let age_ms = now_ms(now) - created;
        let due =
            age_ms >= self.cfg.segment_window.as_millis() as i64 || disk >= self.cfg.seal_bytes();
        if !due {
            return Ok(false);
        }
        self.rotate(w, now)?;
        Ok(true)
    }

    fn rotate(&self, w: &mut Writer, now: DateTime<Utc>) -> Result<()> {
        let new = Arc::new(Segment::create(
            &self.segments_dir,
            now_ms(now),
            w.counter,
            self.cfg.cache_bytes,
        )?);
        w.counter += 1;
        // carry watermarks forward so the newest segment always holds the latest ones
        let marks = w.active.state().watermarks.clone();
        let db = new.db()?;
        if !marks.is_empty() {
            let mut b = sled::Batch::default();
            for (name, seq) in &marks {
                b.insert(segment::watermark_key(name), &seq.to_be_bytes());
            }
            db.apply_batch(b)
                .map_err(|e| StoreError::sled("write watermarks", &new.dir, e))?;
            db.flush()
                .map_err(|e| StoreError::sled("flush", &new.dir, e))?;
            new.state_mut().watermarks = marks;
        }
        let old = std::mem::replace(&mut w.active, new.clone());
        let old_is_empty = {
            let st = old.state();
            st.summaries.is_empty() && st.quarantined == 0
        };
        w.db = Some(db);
        w.failed = false;
        w.pending.clear();
        w.tail_seq = None;
        w.next_seq = 0;
        w.next_q = 0;
        self.catalog
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(new);
        if old_is_empty {
            // an idle window leaves nothing worth keeping: drop it instead of sealing it
            self.catalog
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|s| s.name != old.name);
            old.delete()?;
        } else {
            old.seal()?;
        }
        Ok(())
    }

    /// Rotation by time and retention by age and disk budget; call it periodically.
    pub fn maintain(&self) -> Result<MaintainReport> {
        self.maintain_at(Utc::now())
    }

    /// `maintain` with an explicit clock.
    pub fn maintain_at(&self, now: DateTime<Utc>) -> Result<MaintainReport> {
        let mut report = MaintainReport::default();
        {
            let mut w = self.writer();
            report.rotated = self.rotate_if_due(&mut w, now)?;
        }
        let cutoff = now_ms(now) - self.cfg.max_age.as_millis() as i64;
        // Only sealed segments are ever deleted: the active one may change under our feet (an
        // append can rotate while this runs), but a sealed segment never takes writes again.
        // by age: sealed segments whose last write is older than max_age
        for seg in self.segments() {
            if !seg.state().sealed {
                continue;
            }
            if seg.state().last_write_ms < cutoff {
                self.delete_segment(&seg, &mut report)?;
                report.deleted_for_age += 1;
            }
        }
        // by disk budget: oldest first, never the active one
        loop {
            let total = self.disk_bytes();
            if total <= self.cfg.max_disk_bytes {
                break;
            }
            let oldest = self.segments().into_iter().find(|s| s.state().sealed);
            match oldest {
                Some(seg) => {
                    self.delete_segment(&seg, &mut report)?;
                    report.deleted_for_size += 1;
                }
                None => {
                    // only the active segment is left and it alone is over budget: seal it
                    // so the next pass can delete it
                    let mut w = self.writer();
                    self.rotate(&mut w, now)?;
                    report.rotated = true;
                    break;
                }
            }
        }
        // keep few sealed databases open
        let open: Vec<_> = self
            .segments()
            .into_iter()
            .filter(|s| s.state().sealed && s.is_open())
            .collect();
        if open.len() > self.cfg.open_segments {
            for s in &open[..open.len() - self.cfg.open_segments] {
                s.close();
            }
        }
        Ok(report)
    }

    fn delete_segment(&self, seg: &Arc<Segment>, report: &mut MaintainReport) -> Result<()> {
        {
            let st = seg.state();
            let mut retired = self
                .retired_watermarks
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            for (k, v) in &st.watermarks {
                let e = retired.entry(k.clone()).or_insert(0);
                *e = (*e).max(*v);
            }
            write_retired(&self.cfg.dir, &retired)?;
            report.deleted_events += st.events();
        }
        self.catalog
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|s| s.name != seg.name);
        report.freed_bytes += seg.delete()?;
        tracing::info!(segment = %seg.name, "segment deleted by retention");
        Ok(())
    }

    /// Bytes on disk of all segments (the active one measured now, sealed ones as sealed).
    pub fn disk_bytes(&self) -> u64 {
        self.segments()
            .iter()
            .map(|s| {
                let st = s.state();
                if st.sealed {
                    st.disk_bytes
                } else {
                    segment::dir_size(&s.dir)
                }
            })
            .sum()
    }

    /// Counts and sizes.
    pub fn info(&self) -> StoreInfo {
        let mut info = StoreInfo {
            dir: self.cfg.dir.display().to_string(),
            ..StoreInfo::default()
        };
        let active = self.writer().active.name.clone();
        let (mut oldest, mut newest) = (i64::MAX, i64::MIN);
        for seg in self.segments() {
            let st = seg.state();
            let bytes = if st.sealed {
                st.disk_bytes
            } else {
                segment::dir_size(&seg.dir)
            };
            let events = st.events();
            info.segments += 1;
            info.blocks += st.summaries.len() as u64;
            info.events += events;
            info.quarantined += st.quarantined;
            info.bytes_on_disk += bytes;
            for s in &st.summaries {
                info.raw_bytes += u64::from(s.raw_bytes);
                info.compressed_bytes += u64::from(s.stored_bytes);
                oldest = oldest.min(s.ts_min);
                newest = newest.max(s.ts_max);
            }
            info.segment_list.push(SegmentInfo {
                name: seg.name.clone(),
                events,
                blocks: st.summaries.len() as u64,
                bytes_on_disk: bytes,
                active: seg.name == active,
            });
        }
        if info.compressed_bytes > 0 {
            info.compression_ratio = info.raw_bytes as f64 / info.compressed_bytes as f64;
        }
        if info.raw_bytes > 0 {
            info.disk_bytes_per_raw_byte = info.bytes_on_disk as f64 / info.raw_bytes as f64;
        }
        if info.events > 0 {
            info.oldest = Some(DateTime::from_timestamp_nanos(oldest));
            info.newest = Some(DateTime::from_timestamp_nanos(newest));
        }
        info
    }

    /// Answers a query: one page in the requested order, with the cursor to the next.
    pub fn query(&self, q: &Query) -> Result<QueryPage> {
        let limit = q.page_size();
        let mut page = QueryPage::default();
        // candidate blocks, best first: newest-first visits by ts_max descending
        let mut candidates: Vec<(Arc<Segment>, u64, i64, i64)> = Vec::new();
        for seg in self.segments() {
            let st = seg.state();
            for s in &st.summaries {
                if s.may_match(q) {
                    candidates.push((seg.clone(), s.seq, s.ts_min, s.ts_max));
                } else {
                    page.blocks_skipped += 1;
                }
            }
        }
        match q.order {
            Order::NewestFirst => candidates.sort_by_key(|c| Reverse(c.3)),
            Order::OldestFirst => candidates.sort_by_key(|c| c.2),
        }
        // the best `limit + 1` entries so far; the heap's top is the worst of them
        let mut best: BinaryHeap<Ranked> = BinaryHeap::new();
        for (seg, seq, ts_min, ts_max) in candidates {
            if best.len() > limit {
                let worst = best.peek().map(|r| r.key.0);
                let cannot_improve = match (q.order, worst) {
                    (Order::NewestFirst, Some(w)) => ts_max < w,
                    (Order::OldestFirst, Some(w)) => ts_min > w,
                    _ => false,
                };
                if cannot_improve {
                    break;
                }
            }
            let Some(entries) = self.read_entries(&seg, seq)? else {
                continue;
            };
            page.blocks_read += 1;
            for e in entries {
                if q.matches(&e) {
                    best.push(Ranked::new(e, q.order));
                    if best.len() > limit + 1 {
                        best.pop();
                    }
                }
            }
        }
        let mut ranked = best.into_sorted_vec();
        let more = ranked.len() > limit;
        ranked.truncate(limit);
        page.entries = ranked.into_iter().map(|r| r.entry).collect();
        if more {
            page.next_cursor = page.entries.last().map(Cursor::after);
        }
        Ok(page)
    }

    /// Visits every entry matching `q` (its time range and filters; its order, limit and
    /// cursor are ignored) oldest first, in exact (ts, id) order, without holding more than
    /// the blocks whose time ranges overlap. `visit` returns `Break` to stop early. This is
    /// how analytics run over a stored time range.
    pub fn scan(
        &self,
        q: &Query,
        mut visit: impl FnMut(TraceEntry) -> std::ops::ControlFlow<()>,
    ) -> Result<ScanStats> {
        let mut stats = ScanStats::default();
        let filter = Query {
            cursor: None,
            ..q.clone()
        };
        let mut candidates: Vec<(Arc<Segment>, u64, i64)> = Vec::new();
        for seg in self.segments() {
            let st = seg.state();
            for s in &st.summaries {
                if s.may_match(&filter) {
                    candidates.push((seg.clone(), s.seq, s.ts_min));
                } else {
                    stats.blocks_skipped += 1;
                }
            }
        }
        candidates.sort_by_key(|c| c.2);
        // k-way merge: entries wait in the heap until no later block can hold an earlier one
        let mut heap: BinaryHeap<Reverse<Ranked>> = BinaryHeap::new();
        let mut emit =
            |heap: &mut BinaryHeap<Reverse<Ranked>>, below: Option<i64>, stats: &mut ScanStats| {
                while let Some(Reverse(top)) = heap.peek() {
                    if below.is_some_and(|b| top.key.0 >= b) {
                        return false;
                    }
                    let Some(Reverse(r)) = heap.pop() else { break };
                    stats.entries += 1;
                    if visit(r.entry).is_break() {
                        return true;
                    }
                }
                false
            };
        for (seg, seq, ts_min) in candidates {
            if emit(&mut heap, Some(ts_min), &mut stats) {
                return Ok(stats);
            }
            let Some(entries) = self.read_entries(&seg, seq)? else {
                continue;
            };
            stats.blocks_read += 1;
            for e in entries {
                if filter.matches(&e) {
                    heap.push(Reverse(Ranked::new(e, Order::OldestFirst)));
                }
            }
        }
        emit(&mut heap, None, &mut stats);
        Ok(stats)
    }

    /// Checks every block of every segment (checksum, decompression, every entry decodes)
    /// and reports the corrupt ones by location. With `repair`, corrupt blocks are removed
    /// (their entries are lost already; removing them stops the warnings and the wasted
    /// reads) and each touched segment's summaries are rewritten.
    pub fn verify(&self, repair: bool) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        let active = self.writer().active.name.clone();
        for seg in self.segments() {
            report.segments += 1;
            let seqs: Vec<u64> = seg.state().summaries.iter().map(|s| s.seq).collect();
            let mut bad = Vec::new();
            for seq in seqs {
                report.blocks += 1;
                let problem = match seg.read_block(seq) {
                    Ok(Some(value)) => decode_block(&value).err(),
                    Ok(None) => Some("block listed in the summaries but missing".to_owned()),
                    Err(e) => Some(e.to_string()),
                };
                if let Some(detail) = problem {
                    let events = seg
                        .state()
                        .summaries
                        .iter()
                        .find(|s| s.seq == seq)
                        .map_or(0, |s| u64::from(s.count));
                    report.corrupt.push(CorruptBlock {
                        segment: seg.name.clone(),
                        block: seq,
                        events,
                        detail,
                    });
                    bad.push(seq);
                }
            }
            if repair && !bad.is_empty() {
                // the writer lock keeps appends out while the active segment is repaired
                let _w = (seg.name == active).then(|| self.writer());
                let db = seg.db()?;
                for seq in &bad {
                    db.remove(segment::block_key(*seq))
                        .map_err(|e| StoreError::sled("remove block", &seg.dir, e))?;
                    db.remove(segment::summary_key(*seq))
                        .map_err(|e| StoreError::sled("remove summary", &seg.dir, e))?;
                }
                db.flush()
                    .map_err(|e| StoreError::sled("flush", &seg.dir, e))?;
                seg.state_mut().summaries.retain(|s| !bad.contains(&s.seq));
                if seg.state().sealed {
                    drop(db);
                    seg.seal()?;
                }
                report.repaired += bad.len() as u64;
            }
        }
        Ok(report)
    }

    /// Removes every entry of `player` from every segment (privacy: the right to be
    /// forgotten) and returns how many were removed. Blocks whose summary may hold the player
    /// are rewritten without them (an emptied block is deleted); sealed segments get their
    /// summaries rewritten too. Appends wait while the active segment is rewritten.
    pub fn forget_player(&self, player: &str) -> Result<u64> {
        let probe = Query {
            player: Some(player.to_owned()),
            ..Query::default()
        };
        let mut removed = 0u64;
        let mut guard = self.writer();
        let w = &mut *guard;
        let active = w.active.name.clone();
        // the pending tail may hold the player too: it is on disk already (written under its
        // key), so it is rewritten below like any block; forget it in memory
        if !w.pending.is_empty() {
            w.pending.clear();
            w.tail_seq = None;
        }
        for seg in self.segments() {
            let candidates: Vec<BlockSummary> = seg
                .state()
                .summaries
                .iter()
                .filter(|s| s.may_match(&probe))
                .cloned()
                .collect();
            if candidates.is_empty() {
                continue;
            }
            let db = seg.db()?;
            let mut batch = sled::Batch::default();
            let mut changed: Vec<(u64, Option<BlockSummary>)> = Vec::new();
            for summary in candidates {
                let Some(entries) = self.read_entries(&seg, summary.seq)? else {
                    continue;
                };
                let before = entries.len();
                let kept: Vec<TraceEntry> = entries
                    .into_iter()
                    .filter(|e| e.player.as_deref() != Some(player))
                    .collect();
                if kept.len() == before {
                    continue;
                }
                removed += (before - kept.len()) as u64;
                if kept.is_empty() {
                    batch.remove(&segment::block_key(summary.seq));
                    batch.remove(&segment::summary_key(summary.seq));
                    changed.push((summary.seq, None));
                    continue;
                }
                let mut pending = PendingBlock::default();
                kept.iter().for_each(|e| pending.push(e));
                let (value, new_summary) = pending
                    .build(summary.seq, &mut w.compressor, &mut w.scratch)
                    .map_err(|e| StoreError::io("compress block", &seg.dir, e))?;
                let encoded =
                    rmp_serde::to_vec_named(&new_summary).map_err(|e| StoreError::Corrupt {
                        what: format!("summary {}", summary.seq),
                        path: seg.dir.clone(),
                        detail: e.to_string(),
                    })?;
                batch.insert(&segment::block_key(summary.seq), value);
                batch.insert(&segment::summary_key(summary.seq), encoded);
                changed.push((summary.seq, Some(new_summary)));
            }
            if changed.is_empty() {
                continue;
            }
            db.apply_batch(batch)
                .map_err(|e| StoreError::sled("rewrite blocks", &seg.dir, e))?;
            db.flush()
                .map_err(|e| StoreError::sled("flush", &seg.dir, e))?;
            {
                let mut st = seg.state_mut();
                for (seq, summary) in changed {
                    match summary {
                        Some(s) => {
                            if let Some(slot) = st.summaries.iter_mut().find(|x| x.seq == seq) {
                                *slot = s;
                            }
                        }
                        None => st.summaries.retain(|x| x.seq != seq),
                    }
                }
            }
            if seg.name != active && seg.state().sealed {
                drop(db);
                seg.seal()?;
            }
        }
        drop(guard);
        tracing::info!(removed, "player forgotten");
        Ok(removed)
    }

    /// Decodes one block; a corrupt block is reported and skipped, never fatal.
    fn read_entries(&self, seg: &Segment, seq: u64) -> Result<Option<Vec<TraceEntry>>> {
        let Some(value) = seg.read_block(seq)? else {
            return Ok(None);
        };
        match decode_block(&value) {
            Ok(entries) => Ok(Some(entries)),
            Err(detail) => {
                tracing::warn!(segment = %seg.name, block = seq, %detail, "corrupt block skipped");
                Ok(None)
            }
        }
    }

    /// The entry with this id.
    pub fn get(&self, id: &EventId) -> Result<Option<TraceEntry>> {
        let mut segments = self.segments();
        segments.reverse();
        for seg in segments {
            let seqs: Vec<u64> = seg
                .state()
                .summaries
                .iter()
                .filter(|s| s.may_hold(id))
                .map(|s| s.seq)
                .collect();
            for seq in seqs {
                if let Some(entries) = self.read_entries(&seg, seq)? {
                    if let Some(e) = entries.into_iter().find(|e| e.id == *id) {
                        return Ok(Some(e));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Which of `ids` are stored: one pass over the summaries, each candidate block decoded
    /// once. Used to deduplicate redelivered messages.
    pub fn contains_ids(&self, ids: &[EventId]) -> Result<HashSet<EventId>> {
        let mut found = HashSet::new();
        if ids.is_empty() {
            return Ok(found);
        }
        let wanted: HashSet<EventId> = ids.iter().copied().collect();
        let mut segments = self.segments();
        segments.reverse();
        for seg in segments {
            let seqs: Vec<u64> = seg
                .state()
                .summaries
                .iter()
                .filter(|s| {
                    wanted
                        .iter()
                        .any(|id| !found.contains(id) && s.may_hold(id))
                })
                .map(|s| s.seq)
                .collect();
            for seq in seqs {
                if let Some(entries) = self.read_entries(&seg, seq)? {
                    found.extend(
                        entries
                            .iter()
                            .map(|e| e.id)
                            .filter(|id| wanted.contains(id)),
                    );
                }
            }
            if found.len() == wanted.len() {
                break;
            }
        }
        Ok(found)
    }

    /// Whether a message at this stream position is already quarantined.
    pub fn has_quarantined(&self, stream_seq: u64) -> Result<bool> {
        let key = segment::quarantine_key(stream_seq & !QUARANTINE_LOCAL);
        for seg in self.segments().iter().rev() {
            if seg.state().quarantined == 0 {
                continue;
            }
            let db = seg.db()?;
            if db
                .contains_key(key)
                .map_err(|e| StoreError::sled("read quarantine", &seg.dir, e))?
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The chain of causes: the entry, its parent, the parent's parent... up to the root (or
    /// the first parent not stored, or [`MAX_CHAIN`] links, or a cycle).
    pub fn explain(&self, id: &EventId) -> Result<Vec<TraceEntry>> {
        let first = self
            .get(id)?
            .ok_or_else(|| StoreError::NotFound(id.to_string()))?;
        let mut chain = vec![first];
        while chain.len() < MAX_CHAIN {
            let Some(parent) = chain.last().and_then(|e| e.parent) else {
                break;
            };
            if chain.iter().any(|e| e.id == parent) {
                break;
            }
            match self.get(&parent)? {
                Some(p) => chain.push(p),
                None => break,
            }
        }
        Ok(chain)
    }

    /// Quarantined messages, newest first, at most `limit`; and the total kept.
    pub fn quarantine(&self, limit: usize) -> Result<(u64, Vec<QuarantineRecord>)> {
        let mut segments = self.segments();
        segments.reverse();
        let total = segments.iter().map(|s| s.state().quarantined).sum();
        let mut out = Vec::new();
        for seg in segments {
            if out.len() >= limit {
                break;
            }
            if seg.state().quarantined == 0 {
                continue;
            }
            let mut records = seg.quarantine()?;
            records.reverse();
            out.extend(records.into_iter().take(limit - out.len()));
        }
        Ok((total, out))
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::error!(error = %e, "final flush of the store failed");
        }
        // a failed database may not close at all (see `recover_locked`): never wait for it
        let mut w = self.writer();
        if w.failed && w.closing.is_none() {
            let handles = (w.db.take(), w.active.take_db());
            let _ = close_in_background(handles, &w.active.dir);
        }
    }
}

/// How long a retry waits for a failed database to close before giving up for this time.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Free space kept on the store's file system: a write that would leave less is refused
/// before sled sees it ([`StoreError::DiskFull`]). sled 0.34 does not survive a full disk
/// well: a failed log write makes it refuse every write until it is reopened, and a failed
/// blob write leaves it unable to flush or close at all.
const MIN_FREE_BYTES: u64 = 8 * 1024 * 1024;

/// Refuses a write of `bytes` (sled may write them twice: log, then segment cleaning) that
/// would leave less than [`MIN_FREE_BYTES`] free where `dir` is.
#[cfg(unix)]
#[allow(clippy::unnecessary_cast, clippy::useless_conversion)] // widths differ by platform
fn ensure_room(dir: &std::path::Path, bytes: u64) -> Result<()> {
    let Ok(st) = nix::sys::statvfs::statvfs(dir) else {
        return Ok(());
    };
    let free = (st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64);
    let needed = bytes.saturating_mul(2).saturating_add(MIN_FREE_BYTES);
    if free < needed {
        return Err(StoreError::DiskFull {
            path: dir.to_owned(),
            free_bytes: free,
            needed_bytes: needed,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn ensure_room(_dir: &std::path::Path, _bytes: u64) -> Result<()> {
    Ok(())
}

/// Drops a failed database's handles on a thread of their own; the receiver hears when
/// they are gone.
fn close_in_background(
    handles: (Option<sled::Db>, Option<sled::Db>),
    dir: &std::path::Path,
) -> Result<mpsc::Receiver<()>> {
    let (done, closed) = mpsc::channel();
    std::thread::Builder::new()
        .name("store-close".into())
        .spawn(move || {
            drop(handles);
            let _ = done.send(());
        })
        .map_err(|e| StoreError::io("start a thread to close", dir, e))?;
    Ok(closed)
}

/// Whether an append failed writing (sled or the file system), as opposed to encoding.
fn is_write_failure(e: &StoreError) -> bool {
    matches!(e, StoreError::Sled { .. } | StoreError::Io { .. })
}

fn not_open(dir: &std::path::Path) -> StoreError {
    StoreError::io(
        "write",
        dir,
        std::io::Error::other("the active segment is not open (reopening failed)"),
    )
}

/// An entry ranked so that the heap's top is the worst of the kept ones.
struct Ranked {
    key: (i64, EventId),
    newest_first: bool,
    entry: TraceEntry,
}

impl Ranked {
    fn new(entry: TraceEntry, order: Order) -> Self {
        Ranked {
            key: entry.order_key(),
            newest_first: order == Order::NewestFirst,
            entry,
        }
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl Eq for Ranked {}
impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ranked {
    /// "Greater" means "worse": for newest-first an older entry is worse.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        if self.newest_first {
            other.key.cmp(&self.key)
        } else {
            self.key.cmp(&other.key)
        }
    }
}

const RETIRED_FILE: &str = "retired-watermarks.json";

fn read_retired(dir: &std::path::Path) -> BTreeMap<String, u64> {
    fs::read(dir.join(RETIRED_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn write_retired(dir: &std::path::Path, marks: &BTreeMap<String, u64>) -> Result<()> {
    let tmp = dir.join(format!("{RETIRED_FILE}.tmp"));
    let bytes = serde_json::to_vec(marks).unwrap_or_default();
    fs::write(&tmp, bytes).map_err(|e| StoreError::io("write", &tmp, e))?;
    fs::rename(&tmp, dir.join(RETIRED_FILE))
        .map_err(|e| StoreError::io("rename", dir.join(RETIRED_FILE), e))
}
