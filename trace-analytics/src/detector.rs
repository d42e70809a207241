//! `AnomalyDetector`: a streaming, never-looking-ahead anomaly score in [0, 1] for one series.
//!
//! Three views of every new point `x_t`, each a statistic compared against the recent history
//! of *the same statistic* (robust, self-normalising z-scores, see `RobustWindow::z`):
//!
//! | view | statistic | catches |
//! |---|---|---|
//! | point | `x_t - median(x_{t-R..t-1})` (residual from the local level) | spikes, dips |
//! | level | `median(x_{t-R+1..t}) - median(older W values)` | level shifts, fast drift |
//! | variance | `ln(median |Δx| of the last V steps / median |Δx| before)` | changed variance, flat lines |
//!
//! Because each statistic is judged against its own distribution over the last
//! `stat_window` points, regular behaviour (a daily cycle, bursts that always happen, heavy
//! tails, quantised values) widens what counts as normal instead of raising alarms; the
//! point view only looks `R` points back, so a smooth seasonal curve barely moves it. A view's
//! z-score `z` becomes a score `1 - exp(-(z - z0) / zs)` (0 below `z0`); the point's score is the
//! largest view score, its kind that view's. During warm-up (`warmup` points) the score is 0.
//!
//! Seasonality with timestamps ([`AnomalyDetector::observe_at`]): a daily profile keeps, per
//! time-of-day bin (30 min), the mean of each of the last 7 days; once a bin has two days, the
//! residual from their median (and the median of the last `R + 1` residuals) is scored like
//! the other statistics and caps the point (and level) score, so what happens every day at this hour (a business-hours step, a nightly batch)
//! does not alarm while a spike on top of it still does.
//! Scoring uses only points up to and including `x_t`; state is updated after scoring.
//! State: five windows of `f64`, about `16 * (2 * window + 2 * stat_window + recent + variance)`
//! bytes, plus the daily profile (14 KiB + 7 KiB with the defaults).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::robust_window::{median_of, RobustWindow};

/// Settings of an [`AnomalyDetector`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct DetectorConfig {
    /// Points of the local level (`R`).
    pub recent: usize,
    /// Older values forming the baseline level and the baseline step size (`W`).
    pub window: usize,
    /// History of each view's statistic used to normalise it.
    pub stat_window: usize,
    /// Recent steps compared with the baseline step size (`V`).
    pub variance_window: usize,
    /// Points scored 0 while the windows fill.
    pub warmup: usize,
    /// Scores at or above this flag an anomaly.
    pub threshold: f64,
    /// Tail distance (2 % quantile) that maps to this z-score at most.
    pub tail_z: f64,
    /// z-score where a view's score starts to rise above 0.
    pub z_start: f64,
    /// z-score units per e-fold of `1 - score`.
    pub z_scale: f64,
    /// Daily profile: width of a time-of-day bin, seconds (0 turns the seasonal gate off).
    pub season_bin_secs: i64,
    /// Daily profile: days remembered per bin.
    pub season_days: usize,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            recent: 5,
            window: 96,
            stat_window: 288,
            variance_window: 16,
            warmup: 48,
            threshold: 0.5,
            tail_z: 3.5,
            z_start: 3.5,
            z_scale: 2.5,
            season_bin_secs: 1800,
            season_days: 7,
        }
    }
}

/// What kind of anomaly a point is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyKind {
    /// A point far above the local level.
    Spike,
    /// A point far below the local level.
    Dip,
    /// The level moved and stayed.
    LevelShift,
    /// The variability changed.
    Variance,
}

impl AnomalyKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            AnomalyKind::Spike => "spike",
            AnomalyKind::Dip => "dip",
            AnomalyKind::LevelShift => "level_shift",
            AnomalyKind::Variance => "variance",
        }
    }
}

/// The assessment of one point.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Assessment {
    /// Anomaly score in [0, 1].
    pub score: f64,
    /// True when `score >= threshold`.
    pub is_anomaly: bool,
    /// The value the strongest view expected.
    pub expected: f64,
    /// The strongest view, when any view scored above 0.
    pub kind: Option<AnomalyKind>,
}

/// Per time-of-day bin, the mean of each of the last `season_days` days (Holt–Winters-like
/// seasonal index without smoothing: the median of those days is the seasonal expectation).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct DailyProfile {
    bin_secs: i64,
    days: usize,
    day_means: Vec<VecDeque<f64>>,
    /// Per bin: (day, sum, count) of the day in progress.
    current: Vec<(i64, f64, u32)>,
}

const DAY_SECS: i64 = 86_400;

impl DailyProfile {
    fn new(bin_secs: i64, days: usize) -> Self {
        let bins = (DAY_SECS / bin_secs.max(1)).max(1) as usize;
        DailyProfile {
            bin_secs: bin_secs.max(1),
            days: days.max(2),
            day_means: vec![VecDeque::new(); bins],
            current: vec![(i64::MIN, 0.0, 0); bins],
        }
    }

    fn bin(&self, ts: i64) -> usize {
        (ts.rem_euclid(DAY_SECS) / self.bin_secs) as usize % self.day_means.len()
    }

    /// The seasonal expectation at `ts`: the median of this bin's earlier daily means, once
    /// two days are known.
    fn expected(&self, ts: i64, scratch: &mut Vec<f64>) -> Option<f64> {
        let means = &self.day_means[self.bin(ts)];
        (means.len() >= 2).then(|| median_of(means.iter().copied(), scratch))
    }

    fn learn(&mut self, ts: i64, value: f64) {
        let bin = self.bin(ts);
        let day = ts.div_euclid(DAY_SECS);
        let (current_day, sum, count) = self.current[bin];
        if current_day != day {
            if count > 0 {
                let means = &mut self.day_means[bin];
                if means.len() >= self.days {
                    means.pop_front();
                }
                means.push_back(sum / f64::from(count));
            }
            self.current[bin] = (day, value, 1);
        } else {
            self.current[bin] = (day, sum + value, count + 1);
        }
    }

    fn heap_bytes(&self) -> usize {
        self.day_means.len() * (self.days * 8 + 32 + 24)
    }
}

/// A streaming anomaly detector for one series (see the module docs).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AnomalyDetector {
    config: DetectorConfig,
    seen: u64,
    recent: VecDeque<f64>,
    baseline: RobustWindow,
    residuals: RobustWindow,
    shifts: RobustWindow,
    recent_steps: VecDeque<f64>,
    baseline_steps: RobustWindow,
    step_ratios: RobustWindow,
    last: Option<f64>,
    season: Option<DailyProfile>,
    seasonal_residuals: RobustWindow,
    seasonal_levels: RobustWindow,
    recent_seasonal: VecDeque<f64>,
    #[serde(skip)]
    scratch: Vec<f64>,
}

/// Minimum history of a statistic before its view scores.
const MIN_STAT_HISTORY: usize = 24;

impl AnomalyDetector {
    /// A detector with these settings.
    pub fn new(config: DetectorConfig) -> Self {
        let config = DetectorConfig {
            recent: config.recent.max(1),
            window: config.window.max(8),
            stat_window: config.stat_window.max(MIN_STAT_HISTORY),
            variance_window: config.variance_window.max(4),
            ..config
        };
        AnomalyDetector {
            seen: 0,
            recent: VecDeque::with_capacity(config.recent),
            baseline: RobustWindow::new(config.window),
            residuals: RobustWindow::new(config.stat_window),
            shifts: RobustWindow::new(config.stat_window),
            recent_steps: VecDeque::with_capacity(config.variance_window),
            baseline_steps: RobustWindow::new(config.window),
            step_ratios: RobustWindow::new(config.stat_window),
            last: None,
            season: (config.season_bin_secs > 0)
                .then(|| DailyProfile::new(config.season_bin_secs, config.season_days)),
            seasonal_residuals: RobustWindow::new(config.stat_window),
            seasonal_levels: RobustWindow::new(config.stat_window),
            recent_seasonal: VecDeque::with_capacity(config.recent),
            scratch: Vec::new(),
            config,
        }
    }

    /// The settings.
    pub fn config(&self) -> &DetectorConfig {
        &self.config
    }

    /// Points seen.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Scores `value` without a timestamp (no seasonal gate), then learns it.
    pub fn observe(&mut self, value: f64) -> Assessment {
        self.observe_at(None, value)
    }

    /// Scores `value` observed at `ts_secs` (Unix seconds; enables the daily seasonal gate),
    /// then learns it. Non-finite values score 0 and are not learned.
    pub fn observe_at(&mut self, ts_secs: Option<i64>, value: f64) -> Assessment {
        let quiet = Assessment {
            score: 0.0,
            is_anomaly: false,
            expected: value,
            kind: None,
        };
        if !value.is_finite() {
            return quiet;
        }
        let config = self.config.clone();
        let floor = 1e-9 + 1e-9 * value.abs();

        // Point view: residual from the local level.
        let local = if self.recent.is_empty() {
            value
        } else {
            median_of(self.recent.iter().copied(), &mut self.scratch)
        };
        let residual = value - local;
        let point_z = if self.residuals.len() >= MIN_STAT_HISTORY {
            self.residuals.z(residual, config.tail_z, floor)
        } else {
            0.0
        };

        // Level view: the recent level (with this point) against the older baseline.
        let level_now = median_of(
            self.recent.iter().copied().chain(std::iter::once(value)),
            &mut self.scratch,
        );
        let baseline_level = self.baseline.median();
        let shift = level_now - baseline_level;
        let shift_ready = self.baseline.len() >= config.window.min(MIN_STAT_HISTORY);
        let shift_z = if shift_ready && self.shifts.len() >= MIN_STAT_HISTORY {
            self.shifts.z(shift, config.tail_z, floor)
        } else {
            0.0
        };

        // Variance view: recent step size against the baseline step size.
        let step = self.last.map(|last| (value - last).abs());
        let steps_ready = self.baseline_steps.len() >= config.window.min(MIN_STAT_HISTORY);
        let step_ratio = match step {
            Some(step) if steps_ready => {
                let recent = median_of(
                    self.recent_steps
                        .iter()
                        .copied()
                        .chain(std::iter::once(step)),
                    &mut self.scratch,
                );
                let base = self.baseline_steps.median();
                let tiny = 1e-9 + 1e-6 * baseline_level.abs();
                Some(((recent + tiny) / (base + tiny)).ln())
            }
            _ => None,
        };
        let variance_z = match step_ratio {
            Some(ratio) if self.step_ratios.len() >= MIN_STAT_HISTORY => {
                self.step_ratios.z(ratio, config.tail_z, 0.05)
            }
            _ => 0.0,
        };

        let squash = |z: f64| {
            let excess = (z.abs() - config.z_start).max(0.0);
            1.0 - (-excess / config.z_scale).exp()
        };
        // Seasonal gate: a point or level move that matches what this time of day looked like
        // on earlier days is not an anomaly, so the point and level views are capped by the
        // seasonal residual's score once two days are known.
        let seasonal = match (ts_secs, &self.season) {
            (Some(ts), Some(season)) => season
                .expected(ts, &mut self.scratch)
                .map(|expected| (ts, value - expected)),
            _ => None,
        };
        let seasonal_level = seasonal.map(|(_, residual)| {
            median_of(
                self.recent_seasonal
                    .iter()
                    .copied()
                    .chain(std::iter::once(residual)),
                &mut self.scratch,
            )
        });
        let (point_cap, level_cap) = match (seasonal, seasonal_level) {
            (Some((_, residual)), Some(level))
                if self.seasonal_residuals.len() >= MIN_STAT_HISTORY =>
            {
                (
                    squash(self.seasonal_residuals.z(residual, config.tail_z, floor)),
                    squash(self.seasonal_levels.z(level, config.tail_z, floor)),
                )
            }
            _ => (1.0, 1.0),
        };
        let views = [
            (
                squash(point_z).min(point_cap),
                if point_z >= 0.0 {
                    AnomalyKind::Spike
                } else {
                    AnomalyKind::Dip
                },
                local,
            ),
            (
                squash(shift_z).min(level_cap),
                AnomalyKind::LevelShift,
                baseline_level,
            ),
            (squash(variance_z), AnomalyKind::Variance, local),
        ];
        let (mut score, kind, expected) =
            views
                .iter()
                .copied()
                .fold((0.0, None, value), |best, (s, k, e)| {
                    if s > best.0 {
                        (s, Some(k), e)
                    } else {
                        best
                    }
                });
        if self.seen < config.warmup as u64 {
            score = 0.0;
        }

        // Learn.
        self.seen += 1;
        self.residuals.push(residual);
        if shift_ready {
            self.shifts.push(shift);
        }
        if let Some(ratio) = step_ratio {
            self.step_ratios.push(ratio);
        }
        self.recent.push_back(value);
        if self.recent.len() > config.recent {
            if let Some(old) = self.recent.pop_front() {
                self.baseline.push(old);
            }
        }
        if let Some(step) = step {
            self.recent_steps.push_back(step);
            if self.recent_steps.len() > config.variance_window {
                if let Some(old) = self.recent_steps.pop_front() {
                    self.baseline_steps.push(old);
                }
            }
        }
        self.last = Some(value);
        match (seasonal, seasonal_level) {
            (Some((_, residual)), Some(level)) => {
                self.seasonal_residuals.push(residual);
                self.seasonal_levels.push(level);
                self.recent_seasonal.push_back(residual);
                if self.recent_seasonal.len() >= config.recent {
                    self.recent_seasonal.pop_front();
                }
            }
            _ => self.recent_seasonal.clear(),
        }
        if let (Some(ts), Some(season)) = (ts_secs, &mut self.season) {
            season.learn(ts, value);
        }

        let score = score.clamp(0.0, 1.0);
        Assessment {
            score,
            is_anomaly: score >= config.threshold && score > 0.0,
            expected: if kind.is_some() { expected } else { local },
            kind: if score > 0.0 { kind } else { None },
        }
    }

    /// Approximate heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.baseline.heap_bytes()
            + self.residuals.heap_bytes()
            + self.shifts.heap_bytes()
            + self.baseline_steps.heap_bytes()
            + self.step_ratios.heap_bytes()
            + (self.recent.capacity() + self.recent_steps.capacity()) * 8
            + self.seasonal_residuals.heap_bytes()
            + self.seasonal_levels.heap_bytes()
            + self.season.as_ref().map_or(0, DailyProfile::heap_bytes)
    }
}
