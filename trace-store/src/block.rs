//! Blocks: a sorted run of entries, msgpack-encoded, zstd-compressed and checksummed, stored
//! as one sled value, with a [`BlockSummary`] that lets queries skip it.
//!
//! Value layout: `TB` magic, version (1), codec (1 = zstd), `count: u32`, `raw_len: u32`,
//! `crc32(compressed): u32`, then the compressed bytes. All integers big-endian.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use trace_core::{decode_stored_entry, encode_entry, EventId, Query, TraceEntry};

use crate::bloom::{hash64, Bloom};

const MAGIC: [u8; 2] = *b"TB";
const VERSION: u8 = 1;
const CODEC_ZSTD: u8 = 1;
const HEADER: usize = 16;
/// Distinct types/sources listed exactly in a summary; beyond it the summary says "any".
const MAX_LISTED: usize = 32;

/// What a block holds, in a few hundred bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockSummary {
    /// Block sequence number within its segment (its key).
    pub seq: u64,
    /// Entries in the block.
    pub count: u32,
    /// Earliest entry time, ns since the epoch.
    pub ts_min: i64,
    /// Latest entry time, ns since the epoch.
    pub ts_max: i64,
    /// Bit `r` set when an entry of severity rank `r` is present.
    pub severities: u8,
    /// Union of `Category::bit` of the entries.
    pub categories: u8,
    /// The distinct types, or `None` when there are too many to list.
    pub types: Option<Vec<String>>,
    /// The distinct sources, or `None` when there are too many to list.
    pub sources: Option<Vec<String>>,
    /// Players present.
    pub players: Bloom,
    /// Sessions present.
    pub sessions: Bloom,
    /// Ids present.
    pub ids: Bloom,
    /// Uncompressed bytes.
    pub raw_bytes: u32,
    /// Stored (compressed + header) bytes.
    pub stored_bytes: u32,
}

impl BlockSummary {
    /// False when no entry of this block can match `query` (time range, cursor and filters).
    pub fn may_match(&self, q: &Query) -> bool {
        if q.since.is_some_and(|s| self.ts_max < nanos(s))
            || q.until.is_some_and(|u| self.ts_min >= nanos(u))
        {
            return false;
        }
        if let Some(c) = &q.cursor {
            let beyond = match q.order {
                trace_core::Order::NewestFirst => self.ts_min > c.ts_nanos,
                trace_core::Order::OldestFirst => self.ts_max < c.ts_nanos,
            };
            if beyond {
                return false;
            }
        }
        if let Some(sev) = q.severity {
            if u16::from(self.severities) >> (sev as u8) == 0 {
                return false;
            }
        }
        if let Some(cat) = &q.category {
            if self.categories & cat.bit() == 0 {
                return false;
            }
        }
        if let (Some(t), Some(types)) = (&q.event_type, &self.types) {
            if !types.iter().any(|x| trace_core::query::type_matches(t, x)) {
                return false;
            }
        }
        if let (Some(s), Some(sources)) = (&q.source, &self.sources) {
            if !sources.iter().any(|x| x == s) {
                return false;
            }
        }
        if q.player
            .as_ref()
            .is_some_and(|p| !self.players.may_contain(hash64(p.as_bytes())))
        {
            return false;
        }
        if q.session
            .as_ref()
            .is_some_and(|s| !self.sessions.may_contain(hash64(s.as_bytes())))
        {
            return false;
        }
        true
    }

    /// False when the block certainly does not hold `id`.
    pub fn may_hold(&self, id: &EventId) -> bool {
        self.ids.may_contain(hash64(&id.0.to_bytes()))
    }
}

pub(crate) fn nanos(ts: chrono::DateTime<chrono::Utc>) -> i64 {
    ts.timestamp_nanos_opt().unwrap_or(if ts.timestamp() < 0 {
        i64::MIN
    } else {
        i64::MAX
    })
}

/// Entries gathered for the next block: encoded once on arrival, sorted when the block is
/// built, with what the summary needs.
#[derive(Default)]
pub(crate) struct PendingBlock {
    buf: Vec<u8>,
    /// (order key, start, end) of each entry in `buf`.
    spans: Vec<((i64, EventId), usize, usize)>,
    severities: u8,
    categories: u8,
    types: BTreeSet<String>,
    sources: BTreeSet<String>,
    players: Vec<u64>,
    sessions: Vec<u64>,
    ids: Vec<u64>,
}

impl PendingBlock {
    pub(crate) fn len(&self) -> usize {
        self.spans.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    pub(crate) fn push(&mut self, e: &TraceEntry) {
        let start = self.buf.len();
        encode_entry(e, &mut self.buf);
        self.spans.push((e.order_key(), start, self.buf.len()));
        self.severities |= 1 << (e.severity as u8);
        self.categories |= e.category.bit();
        if self.types.len() <= MAX_LISTED && !self.types.contains(&e.event_type) {
            self.types.insert(e.event_type.clone());
        }
        if self.sources.len() <= MAX_LISTED && !self.sources.contains(&e.source) {
            self.sources.insert(e.source.clone());
        }
        if let Some(p) = &e.player {
            self.players.push(hash64(p.as_bytes()));
        }
        if let Some(s) = &e.session {
            self.sessions.push(hash64(s.as_bytes()));
        }
        self.ids.push(hash64(&e.id.0.to_bytes()));
    }

    /// Builds the stored value and its summary. `scratch` is reused between calls.
    pub(crate) fn build(
        &mut self,
        seq: u64,
        compressor: &mut zstd::bulk::Compressor<'static>,
        scratch: &mut Vec<u8>,
    ) -> std::io::Result<(Vec<u8>, BlockSummary)> {
        self.spans.sort_unstable_by_key(|s| s.0);
        scratch.clear();
        for (_, start, end) in &self.spans {
            scratch.extend_from_slice(&self.buf[*start..*end]);
        }
        let bound = zstd::zstd_safe::compress_bound(scratch.len());
        let mut value = Vec::with_capacity(HEADER + bound);
        value.extend_from_slice(&MAGIC);
        value.push(VERSION);
        value.push(CODEC_ZSTD);
        value.extend_from_slice(&(self.spans.len() as u32).to_be_bytes());
        value.extend_from_slice(&(scratch.len() as u32).to_be_bytes());
        value.extend_from_slice(&[0; 4]);
        value.resize(HEADER + bound, 0);
        let n = compressor.compress_to_buffer(scratch, &mut value[HEADER..])?;
        value.truncate(HEADER + n);
        let crc = crc32fast::hash(&value[HEADER..]);
        value[12..16].copy_from_slice(&crc.to_be_bytes());

        let listed = |set: &BTreeSet<String>| {
            (set.len() <= MAX_LISTED).then(|| set.iter().cloned().collect())
        };
        let bloom = |hashes: &mut Vec<u64>, bits| {
            hashes.sort_unstable();
            hashes.dedup();
            let mut b = Bloom::with_capacity(hashes.len(), bits, 4);
            hashes.iter().for_each(|h| b.insert(*h));
            b
        };
        let summary = BlockSummary {
            seq,
            count: self.spans.len() as u32,
            ts_min: self.spans.first().map_or(0, |s| s.0 .0),
            ts_max: self.spans.last().map_or(0, |s| s.0 .0),
            severities: self.severities,
            categories: self.categories,
            types: listed(&self.types),
            sources: listed(&self.sources),
            players: bloom(&mut self.players, 10),
            sessions: bloom(&mut self.sessions, 10),
            ids: bloom(&mut self.ids, 8),
            raw_bytes: scratch.len() as u32,
            stored_bytes: value.len() as u32,
        };
        Ok((value, summary))
    }

    pub(crate) fn clear(&mut self) {
        *self = PendingBlock {
            buf: std::mem::take(&mut self.buf),
            spans: std::mem::take(&mut self.spans),
            ..PendingBlock::default()
        };
        self.buf.clear();
        self.spans.clear();
    }
}

/// Checks and decompresses a stored block, returning its entries in time order.
pub(crate) fn decode_block(value: &[u8]) -> Result<Vec<TraceEntry>, String> {
    if value.len() < HEADER || value[0..2] != MAGIC {
        return Err("not a block (bad magic or too short)".into());
    }
    if value[2] != VERSION || value[3] != CODEC_ZSTD {
        return Err(format!(
            "unknown block version {} / codec {}",
            value[2], value[3]
        ));
    }
    let word = |i: usize| u32::from_be_bytes([value[i], value[i + 1], value[i + 2], value[i + 3]]);
    let (count, raw_len, crc) = (word(4) as usize, word(8) as usize, word(12));
    if crc32fast::hash(&value[HEADER..]) != crc {
        return Err("checksum mismatch".into());
    }
    let raw =
        zstd::bulk::decompress(&value[HEADER..], raw_len).map_err(|e| format!("zstd: {e}"))?;
    if raw.len() != raw_len {
        return Err(format!(
            "decompressed {} bytes, header says {raw_len}",
            raw.len()
        ));
    }
    let mut cursor = &raw[..];
    let mut entries = Vec::with_capacity(count);
    for i in 0..count {
        entries.push(decode_stored_entry(&mut cursor).map_err(|e| format!("entry {i}: {e}"))?);
    }
    if !cursor.is_empty() {
        return Err(format!(
            "{} trailing bytes after {count} entries",
            cursor.len()
        ));
    }
    Ok(entries)
}
