//! Stats: counts by type, source, category and severity, sliding-window rates and error rates.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use trace_core::{Severity, TraceEntry};

use crate::interner::Interner;
use crate::window::SlidingCounts;

/// Limits of [`Stats`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct StatsConfig {
    /// Distinct event types counted by name; later types count as `(other)`.
    pub max_types: usize,
    /// Distinct sources counted by name; later sources count as `(other)`.
    pub max_sources: usize,
    /// Distinct categories counted by name; later ones count as `(other)`.
    pub max_categories: usize,
}

impl Default for StatsConfig {
    fn default() -> Self {
        StatsConfig {
            max_types: 1024,
            max_sources: 256,
            max_categories: 64,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct KeyCounts {
    total: u64,
    errors: u64,
    window: SlidingCounts,
    error_window: SlidingCounts,
}

/// Streaming counts and rates.
///
/// Bounded state: `(max_types + max_sources) * ~2.9 KiB` of window rings at most (10-second
/// buckets over one hour for every counted type and source) plus the names.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stats {
    types: Interner,
    sources: Interner,
    categories: Interner,
    by_type: Vec<KeyCounts>,
    by_source: Vec<KeyCounts>,
    by_category: Vec<u64>,
    by_severity: [u64; 6],
    all: KeyCounts,
    first_ts: Option<DateTime<Utc>>,
    last_ts: Option<DateTime<Utc>>,
}

/// Rates per second over the sliding windows (bucket-aligned to 10 s, event time).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    /// Events per second over the last minute.
    pub per_sec_1m: f64,
    /// Events per second over the last five minutes.
    pub per_sec_5m: f64,
    /// Events per second over the last hour.
    pub per_sec_1h: f64,
}

/// Counts, rates and error rate of one type or source (or of everything).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyStats {
    /// Events counted.
    pub count: u64,
    /// Events with severity error or critical.
    pub errors: u64,
    /// `errors / count` over everything counted.
    pub error_rate: f64,
    /// `errors / count` over the last five minutes (0 when nothing happened).
    pub error_rate_5m: f64,
    /// Event rates over the windows.
    pub rates: Rates,
}

/// What [`Stats::report`] returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsReport {
    /// Oldest event time seen.
    pub first_ts: Option<DateTime<Utc>>,
    /// Newest event time seen.
    pub last_ts: Option<DateTime<Utc>>,
    /// Everything together.
    pub total: KeyStats,
    /// Per event type (`(other)` collects types past the limit).
    pub by_type: BTreeMap<String, KeyStats>,
    /// Per source (`(other)` collects sources past the limit).
    pub by_source: BTreeMap<String, KeyStats>,
    /// Per category.
    pub by_category: BTreeMap<String, u64>,
    /// Per severity (`trace` .. `critical`).
    pub by_severity: BTreeMap<String, u64>,
}

fn is_error(severity: Severity) -> bool {
    severity >= Severity::Error
}

impl KeyCounts {
    fn add(&mut self, ts: i64, error: bool) {
        self.total += 1;
        self.window.add(ts, 1);
        if error {
            self.errors += 1;
            self.error_window.add(ts, 1);
        }
    }

    fn report(&self, now: i64) -> KeyStats {
        let recent = self.window.sum(now, 300);
        let recent_errors = self.error_window.sum(now, 300);
        KeyStats {
            count: self.total,
            errors: self.errors,
            error_rate: ratio(self.errors, self.total),
            error_rate_5m: ratio(recent_errors, recent),
            rates: Rates {
                per_sec_1m: self.window.rate(now, 60),
                per_sec_5m: self.window.rate(now, 300),
                per_sec_1h: self.window.rate(now, 3600),
            },
        }
    }

    fn heap_bytes(&self) -> usize {
        self.window.heap_bytes() + self.error_window.heap_bytes()
    }
}

pub(crate) fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

fn slot<T: Default>(table: &mut Vec<T>, id: u32) -> &mut T {
    let id = id as usize;
    if table.len() <= id {
        table.resize_with(id + 1, T::default);
    }
    &mut table[id]
}

impl Stats {
    /// Empty stats with these limits.
    pub fn new(config: &StatsConfig) -> Self {
        Stats {
            types: Interner::new(config.max_types),
            sources: Interner::new(config.max_sources),
            categories: Interner::new(config.max_categories),
            by_type: Vec::new(),
            by_source: Vec::new(),
            by_category: Vec::new(),
            by_severity: [0; 6],
            all: KeyCounts::default(),
            first_ts: None,
            last_ts: None,
        }
    }

    /// Counts one entry.
    pub fn observe(&mut self, entry: &TraceEntry) {
        let ts = entry.ts.timestamp();
        let error = is_error(entry.severity);
        self.all.add(ts, error);
        let type_id = self.types.intern(&entry.event_type);
        slot(&mut self.by_type, type_id).add(ts, error);
        let source_id = self.sources.intern(&entry.source);
        slot(&mut self.by_source, source_id).add(ts, error);
        let category_id = self.categories.intern(entry.category.as_str());
        *slot(&mut self.by_category, category_id) += 1;
        self.by_severity[entry.severity as usize] += 1;
        if self.first_ts.is_none_or(|first| entry.ts < first) {
            self.first_ts = Some(entry.ts);
        }
        if self.last_ts.is_none_or(|last| entry.ts > last) {
            self.last_ts = Some(entry.ts);
        }
    }

    /// The total number of entries counted.
    pub fn total(&self) -> u64 {
        self.all.total
    }

    /// The report with windows ending at `now`.
    pub fn report(&self, now: DateTime<Utc>) -> StatsReport {
        let now = now.timestamp();
        let named = |interner: &Interner, table: &[KeyCounts]| {
            table
                .iter()
                .enumerate()
                .filter(|(_, counts)| counts.total > 0)
                .map(|(id, counts)| (interner.name(id as u32).to_owned(), counts.report(now)))
                .collect()
        };
        StatsReport {
            first_ts: self.first_ts,
            last_ts: self.last_ts,
            total: self.all.report(now),
            by_type: named(&self.types, &self.by_type),
            by_source: named(&self.sources, &self.by_source),
            by_category: self
                .by_category
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(id, n)| (self.categories.name(id as u32).to_owned(), *n))
                .collect(),
            by_severity: Severity::ALL
                .iter()
                .map(|s| (s.as_str().to_owned(), self.by_severity[*s as usize]))
                .collect(),
        }
    }

    /// Approximate heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.types.heap_bytes()
            + self.sources.heap_bytes()
            + self.categories.heap_bytes()
            + self
                .by_type
                .iter()
                .map(KeyCounts::heap_bytes)
                .sum::<usize>()
            + self
                .by_source
                .iter()
                .map(KeyCounts::heap_bytes)
                .sum::<usize>()
            + self.all.heap_bytes()
    }
}
