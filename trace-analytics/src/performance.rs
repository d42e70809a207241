//! Performance: p50/p90/p95/p99/max of every `metrics` key per event type, with DDSketch.
//!
//! DDSketch (Masson, Rim, Lee, "DDSketch: A Fast and Fully-Mergeable Quantile Sketch with
//! Relative-Error Guarantees", VLDB 2019; crate `sketches-ddsketch`) answers every quantile
//! within a relative error of [`RELATIVE_ACCURACY`] (1 %) of the value at that rank, for positive
//! and negative values alike, as long as the values span fewer than `gamma^MAX_BINS` (about
//! 10^17 with 2048 bins): beyond that the smallest bins collapse. `max` and `min` are exact.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sketches_ddsketch::{Config as SketchConfig, DDSketch};
use trace_core::TraceEntry;

use crate::interner::Interner;

/// Relative accuracy of every percentile (1 %).
pub const RELATIVE_ACCURACY: f64 = 0.01;
/// Bins per sketch; with 1 % accuracy they span 17 orders of magnitude.
pub const MAX_BINS: u32 = 2048;
/// Values closer to zero than this count as zero.
pub const MIN_VALUE: f64 = 1e-9;

/// A DDSketch with the crate's accuracy (a newtype: the crate's type has no `Debug`).
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct Sketch(pub(crate) DDSketch);

impl std::fmt::Debug for Sketch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sketch")
            .field("count", &self.0.count())
            .field("bins", &self.0.length())
            .finish()
    }
}

impl Sketch {
    pub(crate) fn add(&mut self, value: f64) {
        self.0.add(value);
    }

    pub(crate) fn count(&self) -> usize {
        self.0.count()
    }

    /// Bins allocated (8 bytes each).
    pub(crate) fn length(&self) -> usize {
        self.0.length()
    }
}

/// A new sketch with the crate's accuracy.
pub(crate) fn new_sketch() -> Sketch {
    Sketch(DDSketch::new(SketchConfig::new(
        RELATIVE_ACCURACY,
        MAX_BINS,
        MIN_VALUE,
    )))
}

/// A quantile of a sketch, `None` when empty.
pub(crate) fn quantile(sketch: &Sketch, q: f64) -> Option<f64> {
    sketch.0.quantile(q).ok().flatten()
}

/// Limits of [`Performance`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct PerformanceConfig {
    /// Distinct event types with their own series; later types share `(other)`.
    pub max_types: usize,
    /// Distinct (type, metric) series; values of further series are counted as dropped.
    pub max_series: usize,
}

impl Default for PerformanceConfig {
    fn default() -> Self {
        PerformanceConfig {
            max_types: 256,
            max_series: 512,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct MetricSeries {
    metric: Box<str>,
    sketch: Sketch,
}

/// Percentile sketches per (event type, metric key).
///
/// Bounded state: at most `max_series` sketches of at most `2 * MAX_BINS` 8-byte bins
/// (32 KiB worst case; about 2 KiB for values spanning two orders of magnitude).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Performance {
    types: Interner,
    series: Vec<Vec<MetricSeries>>,
    series_count: usize,
    max_series: usize,
    dropped_values: u64,
    non_finite_values: u64,
}

/// Percentiles of one metric of one event type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Values seen.
    pub count: u64,
    /// Smallest value (exact).
    pub min: f64,
    /// Mean value.
    pub mean: f64,
    /// Median (±1 % relative).
    pub p50: f64,
    /// 90th percentile (±1 % relative).
    pub p90: f64,
    /// 95th percentile (±1 % relative).
    pub p95: f64,
    /// 99th percentile (±1 % relative).
    pub p99: f64,
    /// Largest value (exact).
    pub max: f64,
}

impl Percentiles {
    /// The summary of a non-empty sketch.
    pub(crate) fn of(sketch: &Sketch) -> Option<Percentiles> {
        let count = sketch.count() as u64;
        if count == 0 {
            return None;
        }
        Some(Percentiles {
            count,
            min: sketch.0.min()?,
            mean: sketch.0.sum()? / count as f64,
            p50: quantile(sketch, 0.5)?,
            p90: quantile(sketch, 0.9)?,
            p95: quantile(sketch, 0.95)?,
            p99: quantile(sketch, 0.99)?,
            max: sketch.0.max()?,
        })
    }
}

/// What [`Performance::report`] returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerformanceReport {
    /// Relative accuracy of the percentiles (0.01 = 1 %).
    pub relative_accuracy: f64,
    /// Event type -> metric key -> percentiles.
    pub by_type: BTreeMap<String, BTreeMap<String, Percentiles>>,
    /// Values not recorded because the series limit was reached.
    pub dropped_values: u64,
    /// NaN or infinite values ignored.
    pub non_finite_values: u64,
}

impl Performance {
    /// Empty sketches with these limits.
    pub fn new(config: &PerformanceConfig) -> Self {
        Performance {
            types: Interner::new(config.max_types),
            series: Vec::new(),
            series_count: 0,
            max_series: config.max_series,
            dropped_values: 0,
            non_finite_values: 0,
        }
    }

    /// Records the metrics of one entry.
    pub fn observe(&mut self, entry: &TraceEntry) {
        if entry.metrics.is_empty() {
            return;
        }
        let type_id = self.types.intern(&entry.event_type) as usize;
        if self.series.len() <= type_id {
            self.series.resize_with(type_id + 1, Vec::new);
        }
        for (key, value) in &entry.metrics {
            if !value.is_finite() {
                self.non_finite_values += 1;
                continue;
            }
            let per_type = &mut self.series[type_id];
            if let Some(series) = per_type.iter_mut().find(|s| &*s.metric == key.as_str()) {
                series.sketch.add(*value);
            } else if self.series_count < self.max_series {
                let mut sketch = new_sketch();
                sketch.add(*value);
                per_type.push(MetricSeries {
                    metric: Box::from(key.as_str()),
                    sketch,
                });
                self.series_count += 1;
            } else {
                self.dropped_values += 1;
            }
        }
    }

    /// The percentiles of every series.
    pub fn report(&self) -> PerformanceReport {
        let by_type = self
            .series
            .iter()
            .enumerate()
            .filter(|(_, per_type)| !per_type.is_empty())
            .map(|(id, per_type)| {
                let metrics = per_type
                    .iter()
                    .filter_map(|s| Some((s.metric.to_string(), Percentiles::of(&s.sketch)?)))
                    .collect();
                (self.types.name(id as u32).to_owned(), metrics)
            })
            .collect();
        PerformanceReport {
            relative_accuracy: RELATIVE_ACCURACY,
            by_type,
            dropped_values: self.dropped_values,
            non_finite_values: self.non_finite_values,
        }
    }

    /// Approximate heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.types.heap_bytes()
            + self
                .series
                .iter()
                .flatten()
                .map(|s| s.metric.len() + 8 * s.sketch.length() + 128)
                .sum::<usize>()
    }
}
