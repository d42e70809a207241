//! # trace-analytics: streaming analytics over trace entries, in bounded memory
//!
//! Every analysis takes `&TraceEntry` one at a time and keeps state whose size does not grow
//! with the number of events, so the same code runs live on the stream and over a stored time
//! range (entries oldest first). Every state and report type is serde: reports are served as
//! JSON, states are checkpointed as MessagePack.
//!
//! ```text
//! TraceEntry ─▶ Analyzer ─┬─▶ Stats         counts, 1 m / 5 m / 1 h rates, error rates
//!                         ├─▶ Performance   p50..p99/max per (type, metric)   (DDSketch)
//!                         ├─▶ Players       distinct players (exact → HLL), top players, sessions
//!                         ├─▶ Patterns      A→B transitions, sequences (Space-Saving),
//!                         │                 story transitions, error templates
//!                         └─▶ SeriesBucketer ─▶ per-bucket points ─┬─▶ Trends (Theil–Sen, Mann–Kendall)
//!                                                                  └─▶ AnomalyTracker ─▶ AnomalyDetector per series
//! CSV ─▶ offline::detect_csv ─▶ AnomalyDetector ─▶ CSV with anomaly_score
//! ```
//!
//! ## Modules
//! - [`engine`]: [`Analyzer`] (all analyses, filter, checkpoint), [`AnalyticsConfig`],
//!   [`AnalyticsReport`].
//! - [`stats`], [`performance`], [`players`], [`patterns`] (with [`templates`] for error
//!   message masking), [`series`], [`trends`], [`detector`], [`tracker`]: one analysis each.
//! - [`offline`]: the CSV detector. [`sketches`]: Space-Saving and HyperLogLog.
//! - [`error`]: the crate error, [`AnalyticsError`].
//!
//! ## Bounds (defaults)
//!
//! | state | bound | size at the bound |
//! |---|---|---|
//! | stats | 1024 types + 256 sources, each a 1 h ring of 10 s buckets (×2: all, errors) | ≈ 3.7 MB |
//! | performance | 512 (type, metric) DDSketches, ≤ 2048 bins each, 1 % relative accuracy | ≈ 1 MB typical, 16 MB worst |
//! | players: distinct | exact set ≤ 4096 hashes, then HyperLogLog p = 14 (0.81 % std. error) | 64 KiB / 16 KiB |
//! | players: table | 10 000 most active players (Space-Saving), 10 000 open sessions (2-generation LRU) | ≈ 3 MB + ids |
//! | patterns | 10 000 session tails, 65 536 transitions, 1000 sequence + 256 template counters | ≈ 2.5 MB |
//! | series / trends | 128 types + 128 metric series per bucket; 256 series × 60 buckets | ≈ 0.3 MB |
//! | anomalies | 256 detectors × ≈ 37 KiB, 1000 anomaly records | ≈ 9.6 MB |
//!
//! No analysis allocates per event once its keys are known, except error templates (one
//! masked string per error event) and a Space-Saving miss (the new key).
#![deny(missing_docs)]

mod distinct;
mod hashing;
mod interner;
mod robust_window;
mod space_saving;
mod window;

pub mod detector;
pub mod engine;
pub mod error;
pub mod offline;
pub mod patterns;
pub mod performance;
pub mod players;
pub mod series;
pub mod stats;
pub mod templates;
pub mod tracker;
pub mod trends;

/// Sketches used by the analyses, public for reuse and property tests.
pub mod sketches {
    pub use crate::distinct::{DistinctCounter, HyperLogLog};
    pub use crate::hashing::hash_str;
    pub use crate::interner::Interner;
    pub use crate::space_saving::{Counter, KeyHash, Offered, SpaceSaving};
    pub use crate::window::SlidingCounts;
}

pub use detector::{AnomalyDetector, AnomalyKind, Assessment, DetectorConfig};
pub use engine::{AnalyticsConfig, AnalyticsReport, Analyzer, EntryFilter, StateSize};
pub use error::AnalyticsError;
pub use offline::{detect_csv, DetectSummary};
pub use patterns::{Patterns, PatternsReport};
pub use performance::{Performance, PerformanceReport};
pub use players::{Players, PlayersReport};
pub use stats::{Stats, StatsReport};
pub use tracker::{AnomaliesReport, Anomaly, AnomalyTracker};
pub use trends::{Trends, TrendsReport};
