//! Time-bucketed series derived from entries: event rate per type, error rate, and a metric's
//! p95 per type, one point per bucket. Trends and anomaly tracking consume these points.
//!
//! Buckets are aligned to event time (`ts / bucket_secs`). A bucket closes when an entry (or
//! [`SeriesBucketer::advance_to`]) reaches a later bucket; then every known rate series gets a
//! point (0 when its type had no events, so silence shows as a dip), the error-rate series a
//! point when the bucket had events, and each p95 series a point when it had values. Empty
//! buckets in a gap are filled with zero-rate points, at most `max_gap_buckets` of them. An
//! entry older than the open bucket counts towards the open bucket.

use serde::{Deserialize, Serialize};
use trace_core::{Severity, TraceEntry};

use crate::interner::Interner;
use crate::performance::{new_sketch, quantile, Sketch};

/// Settings of the [`SeriesBucketer`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct SeriesConfig {
    /// Bucket width, seconds.
    pub bucket_secs: i64,
    /// Event types with their own rate series; later types share `(other)`.
    pub max_types: usize,
    /// (type, metric) p95 series; values of further series are ignored.
    pub max_metric_series: usize,
    /// Empty buckets filled with zero points after a gap.
    pub max_gap_buckets: i64,
}

impl Default for SeriesConfig {
    fn default() -> Self {
        SeriesConfig {
            bucket_secs: 60,
            max_types: 128,
            max_metric_series: 128,
            max_gap_buckets: 60,
        }
    }
}

/// Which quantity a series measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeriesKind {
    /// Events per second of one type.
    EventRate,
    /// Share of events with severity error or above.
    ErrorRate,
    /// 95th percentile of one metric of one type.
    MetricP95,
}

/// One point of one series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SeriesPoint<'a> {
    /// Dense id of the series (stable for the bucketer's lifetime).
    pub id: usize,
    /// The series name: `rate:<type>`, `error_rate`, `p95:<type>:<metric>`.
    pub name: &'a str,
    /// What it measures.
    pub kind: SeriesKind,
    /// Start of the bucket, Unix seconds.
    pub bucket_start: i64,
    /// The value.
    pub value: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct MetricBucket {
    type_id: u32,
    metric: Box<str>,
    series_id: usize,
    sketch: Sketch,
}

/// Turns entries into per-bucket series points.
///
/// Bounded state: `max_types` counters, `max_metric_series` sketches (one bucket's values
/// each), the series names.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeriesBucketer {
    config: SeriesConfig,
    open_bucket: Option<i64>,
    types: Interner,
    names: Vec<String>,
    kinds: Vec<SeriesKind>,
    rate_series: Vec<Option<usize>>,
    type_counts: Vec<u64>,
    total: u64,
    errors: u64,
    metrics: Vec<MetricBucket>,
}

/// Id of the error-rate series.
pub const ERROR_RATE_SERIES: usize = 0;

impl SeriesBucketer {
    /// An empty bucketer.
    pub fn new(config: &SeriesConfig) -> Self {
        SeriesBucketer {
            config: SeriesConfig {
                bucket_secs: config.bucket_secs.max(1),
                ..config.clone()
            },
            open_bucket: None,
            types: Interner::new(config.max_types),
            names: vec!["error_rate".to_owned()],
            kinds: vec![SeriesKind::ErrorRate],
            rate_series: Vec::new(),
            type_counts: Vec::new(),
            total: 0,
            errors: 0,
            metrics: Vec::new(),
        }
    }

    /// The bucket width, seconds.
    pub fn bucket_secs(&self) -> i64 {
        self.config.bucket_secs
    }

    /// Number of series so far.
    pub fn series_count(&self) -> usize {
        self.names.len()
    }

    /// The name of a series.
    pub fn name(&self, id: usize) -> &str {
        self.names.get(id).map_or("", String::as_str)
    }

    /// The kind of a series.
    pub fn kind(&self, id: usize) -> SeriesKind {
        self.kinds.get(id).copied().unwrap_or(SeriesKind::EventRate)
    }

    fn new_series(&mut self, name: String, kind: SeriesKind) -> usize {
        self.names.push(name);
        self.kinds.push(kind);
        self.names.len() - 1
    }

    /// Counts one entry, first emitting the points of any bucket it closes.
    pub fn observe(&mut self, entry: &TraceEntry, sink: &mut impl FnMut(SeriesPoint<'_>)) {
        let bucket = entry.ts.timestamp().div_euclid(self.config.bucket_secs);
        match self.open_bucket {
            None => self.open_bucket = Some(bucket),
            Some(open) if bucket > open => self.close_until(bucket, sink),
            Some(_) => {}
        }
        let type_id = self.types.intern(&entry.event_type);
        let slot = type_id as usize;
        if self.type_counts.len() <= slot {
            self.type_counts.resize(slot + 1, 0);
            self.rate_series.resize(slot + 1, None);
        }
        if self.rate_series[slot].is_none() {
            let name = format!("rate:{}", self.types.name(type_id));
            self.rate_series[slot] = Some(self.new_series(name, SeriesKind::EventRate));
        }
        self.type_counts[slot] += 1;
        self.total += 1;
        self.errors += u64::from(entry.severity >= Severity::Error);
        for (metric, value) in &entry.metrics {
            if !value.is_finite() {
                continue;
            }
            if let Some(m) = self
                .metrics
                .iter_mut()
                .find(|m| m.type_id == type_id && &*m.metric == metric.as_str())
            {
                m.sketch.add(*value);
            } else if self.metrics.len() < self.config.max_metric_series {
                let name = format!("p95:{}:{metric}", self.types.name(type_id));
                let series_id = self.new_series(name, SeriesKind::MetricP95);
                let mut sketch = new_sketch();
                sketch.add(*value);
                self.metrics.push(MetricBucket {
                    type_id,
                    metric: Box::from(metric.as_str()),
                    series_id,
                    sketch,
                });
            }
        }
    }

    /// Closes every bucket before the one holding `now_secs` (for quiet periods).
    pub fn advance_to(&mut self, now_secs: i64, sink: &mut impl FnMut(SeriesPoint<'_>)) {
        let bucket = now_secs.div_euclid(self.config.bucket_secs);
        if let Some(open) = self.open_bucket {
            if bucket > open {
                self.close_until(bucket, sink);
            }
        }
    }

    fn close_until(&mut self, bucket: i64, sink: &mut impl FnMut(SeriesPoint<'_>)) {
        let Some(open) = self.open_bucket else {
            return;
        };
        let width = self.config.bucket_secs;
        let start = open * width;
        for (slot, series) in self.rate_series.iter().enumerate() {
            if let Some(id) = series {
                sink(SeriesPoint {
                    id: *id,
                    name: &self.names[*id],
                    kind: SeriesKind::EventRate,
                    bucket_start: start,
                    value: self.type_counts[slot] as f64 / width as f64,
                });
            }
        }
        if self.total > 0 {
            sink(SeriesPoint {
                id: ERROR_RATE_SERIES,
                name: &self.names[ERROR_RATE_SERIES],
                kind: SeriesKind::ErrorRate,
                bucket_start: start,
                value: self.errors as f64 / self.total as f64,
            });
        }
        for m in &mut self.metrics {
            if m.sketch.count() > 0 {
                if let Some(p95) = quantile(&m.sketch, 0.95) {
                    sink(SeriesPoint {
                        id: m.series_id,
                        name: &self.names[m.series_id],
                        kind: SeriesKind::MetricP95,
                        bucket_start: start,
                        value: p95,
                    });
                }
                m.sketch = new_sketch();
            }
        }
        // Empty buckets in the gap: zero rates.
        let gap_from = (bucket - self.config.max_gap_buckets).max(open + 1);
        for empty in gap_from..bucket {
            for id in self.rate_series.iter().flatten() {
                sink(SeriesPoint {
                    id: *id,
                    name: &self.names[*id],
                    kind: SeriesKind::EventRate,
                    bucket_start: empty * width,
                    value: 0.0,
                });
            }
        }
        self.type_counts.iter_mut().for_each(|c| *c = 0);
        self.total = 0;
        self.errors = 0;
        self.open_bucket = Some(bucket);
    }
}
