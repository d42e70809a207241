//! `AnomalyTracker`: one [`AnomalyDetector`] per live series (event rate per type, error rate,
//! metric p95 per type), emitting an [`Anomaly`] record when a series enters an anomalous
//! episode (consecutive flagged buckets form one episode, reported once at its first bucket).

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use trace_core::TraceEntry;

use crate::detector::{AnomalyDetector, AnomalyKind, DetectorConfig};
use crate::series::{SeriesBucketer, SeriesConfig, SeriesKind, SeriesPoint};

/// Settings of the [`AnomalyTracker`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct TrackerConfig {
    /// Series with a detector; further series are not watched.
    pub max_series: usize,
    /// Anomalies kept for reports (and pending for [`AnomalyTracker::drain_new`]).
    pub keep_anomalies: usize,
    /// The detector settings for every series.
    pub detector: DetectorConfig,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            max_series: 256,
            keep_anomalies: 1000,
            detector: DetectorConfig::default(),
        }
    }
}

/// One detected anomaly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Anomaly {
    /// Series name (`rate:<type>`, `error_rate`, `p95:<type>:<metric>`).
    pub series: String,
    /// What the series measures.
    pub series_kind: SeriesKind,
    /// Start of the bucket.
    pub ts: DateTime<Utc>,
    /// The bucket's value.
    pub value: f64,
    /// What the detector expected.
    pub expected: f64,
    /// Anomaly score in [0, 1].
    pub score: f64,
    /// Spike, dip, level shift or variance.
    pub kind: AnomalyKind,
}

/// The state of one watched series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesStatus {
    /// Series name.
    pub series: String,
    /// Points scored.
    pub points: u64,
    /// The last point's score.
    pub last_score: f64,
    /// True while in an anomalous episode.
    pub anomalous: bool,
}

/// What [`AnomalyTracker::report`] returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnomaliesReport {
    /// Bucket width, seconds.
    pub bucket_secs: i64,
    /// Score threshold.
    pub threshold: f64,
    /// Recent anomalies, newest first.
    pub anomalies: Vec<Anomaly>,
    /// Every watched series.
    pub series: Vec<SeriesStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Watched {
    name: String,
    detector: AnomalyDetector,
    last_score: f64,
    in_episode: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Watch {
    config: TrackerConfig,
    /// Width of a bucket, seconds (turns event rates back into counts).
    #[serde(default = "default_bucket_secs")]
    bucket_secs: i64,
    series: Vec<Option<Watched>>,
    watched: usize,
    recent: VecDeque<Anomaly>,
    pending: VecDeque<Anomaly>,
}

fn default_bucket_secs() -> i64 {
    60
}

/// Whether a rate that the detector flags is also too far from what it expected to be
/// chance: the bucket's count must differ from the expected count by more than three
/// Poisson standard deviations plus one event. One event in a usually empty minute is not
/// an anomaly however rare it is.
fn rate_is_significant(value: f64, expected: f64, bucket_secs: i64) -> bool {
    let secs = bucket_secs.max(1) as f64;
    let (count, expected_count) = (value * secs, expected.max(0.0) * secs);
    (count - expected_count).abs() > 3.0 * expected_count.max(1.0).sqrt() + 1.0
}

/// Anomaly detection over the live series.
///
/// Bounded state: `max_series` detectors (about 37 KiB each with the default windows), at most
/// `2 × keep_anomalies` records, the bucketer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AnomalyTracker {
    bucketer: SeriesBucketer,
    watch: Watch,
}

impl AnomalyTracker {
    /// A tracker bucketing entries with `series`.
    pub fn new(config: &TrackerConfig, series: &SeriesConfig) -> Self {
        AnomalyTracker {
            bucketer: SeriesBucketer::new(series),
            watch: Watch {
                config: config.clone(),
                bucket_secs: series.bucket_secs,
                series: Vec::new(),
                watched: 0,
                recent: VecDeque::new(),
                pending: VecDeque::new(),
            },
        }
    }

    /// Buckets one entry (when used on its own rather than fed points by an engine).
    pub fn observe(&mut self, entry: &TraceEntry) {
        let watch = &mut self.watch;
        self.bucketer
            .observe(entry, &mut |point| watch.push(&point));
    }

    /// Closes buckets up to `now_secs`, so silence is scored too.
    pub fn advance_to(&mut self, now_secs: i64) {
        let watch = &mut self.watch;
        self.bucketer
            .advance_to(now_secs, &mut |point| watch.push(&point));
    }

    /// Scores one series point (from an engine's shared bucketer).
    pub fn observe_point(&mut self, point: &SeriesPoint<'_>) {
        self.watch.push(point);
    }

    /// Anomalies emitted since the last call, oldest first (for publishing).
    pub fn drain_new(&mut self) -> Vec<Anomaly> {
        self.watch.pending.drain(..).collect()
    }

    /// Recent anomalies and the state of every series.
    pub fn report(&self) -> AnomaliesReport {
        self.watch.report(self.bucketer.bucket_secs())
    }

    /// Approximate heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.watch
            .series
            .iter()
            .flatten()
            .map(|w| w.detector.heap_bytes() + w.name.capacity() + 64)
            .sum::<usize>()
            + (self.watch.recent.len() + self.watch.pending.len()) * 128
    }
}

impl Watch {
    fn push(&mut self, point: &SeriesPoint<'_>) {
        if self.series.len() <= point.id {
            self.series.resize_with(point.id + 1, || None);
        }
        if self.series[point.id].is_none() {
            if self.watched >= self.config.max_series {
                return;
            }
            self.watched += 1;
            self.series[point.id] = Some(Watched {
                name: point.name.to_owned(),
                detector: AnomalyDetector::new(self.config.detector.clone()),
                last_score: 0.0,
                in_episode: false,
            });
        }
        let Some(watched) = &mut self.series[point.id] else {
            return;
        };
        let assessment = watched
            .detector
            .observe_at(Some(point.bucket_start), point.value);
        watched.last_score = assessment.score;
        let is_anomaly = assessment.is_anomaly
            && (point.kind != SeriesKind::EventRate
                || rate_is_significant(point.value, assessment.expected, self.bucket_secs));
        let starts_episode = is_anomaly && !watched.in_episode;
        watched.in_episode = is_anomaly;
        if let (true, Some(kind)) = (starts_episode, assessment.kind) {
            let anomaly = Anomaly {
                series: watched.name.clone(),
                series_kind: point.kind,
                ts: DateTime::from_timestamp(point.bucket_start, 0).unwrap_or_default(),
                value: point.value,
                expected: assessment.expected,
                score: assessment.score,
                kind,
            };
            let keep = self.config.keep_anomalies.max(1);
            if self.recent.len() >= keep {
                self.recent.pop_front();
            }
            if self.pending.len() >= keep {
                self.pending.pop_front();
            }
            self.recent.push_back(anomaly.clone());
            self.pending.push_back(anomaly);
        }
    }

    fn report(&self, bucket_secs: i64) -> AnomaliesReport {
        AnomaliesReport {
            bucket_secs,
            threshold: self.config.detector.threshold,
            anomalies: self.recent.iter().rev().cloned().collect(),
            series: self
                .series
                .iter()
                .flatten()
                .map(|w| SeriesStatus {
                    series: w.name.clone(),
                    points: w.detector.seen(),
                    last_score: w.last_score,
                    anomalous: w.in_episode,
                })
                .collect(),
        }
    }
}
