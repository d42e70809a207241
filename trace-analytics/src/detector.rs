//! `AnomalyDetector`: a streaming, never-looking-ahead anomaly score in [0, 1] for one series.
//!
//! **Algorithm.** Every new point `x_t` is (1) mapped to log space if the warm-up chose it,
//! (2) summarised by three statistics, each turned into a robust z-score against the recent
//! history of *the same statistic*, (3) gated by a daily seasonal profile, and (4) squashed
//! into a score; the point's score is the largest view score, its kind that view's.
//!
//! | view | statistic | catches |
//! |---|---|---|
//! | point | `x_t - median(x_{t-R..t-1})` (residual from the local level) | spikes, dips |
//! | level | `median(x_{t-R+1..t}) - median(older W values)` | level shifts, drift |
//! | variance | `ln(median |Δx| of the last V steps / median |Δx| before)` | changed variance, flat lines |
//!
//! - *Transform* (variance stabilisation, after Box & Cox 1964): at the end of the warm-up,
//!   when the values are non-negative, spread on the scale of their level, right-skewed and
//!   more symmetric after `ln(x + c)` (Bowley/Kelly quantile skewness), the series is scored
//!   in log space, so multiplicative, heavy-tailed series (network bytes, counts) look
//!   homoscedastic; the warm-up points are relearned transformed.
//! - *Self-normalisation*: a statistic's scale is the largest of its half-IQR (as a standard
//!   deviation), its 1 % tail distance / `tail_z` and, for residuals, the 97 % quantile of
//!   block maxima over a week / `extreme_z` (block maxima, as in extreme value theory; cf.
//!   SPOT, Siffer et al., KDD 2017). So regular behaviour (a daily cycle, the series' own
//!   normal bursts, heavy tails, quantised values) raises the bar instead of raising alarms.
//! - *Guard*: the level statistics enter their history `guard` points late (once a first
//!   full window is known), so a slow drift or a new level cannot widen its own yardstick; after
//!   a level shift is called the baseline restarts, as sequential change-point tests restart
//!   after an alarm (CUSUM, Page 1954).
//! - *Seasonal gate* ([`AnomalyDetector::observe_at`]): a daily profile keeps, per 30-minute
//!   time-of-day bin, the mean of each of the last 7 days; from two days on, the residual from
//!   their median (a Holt–Winters-like seasonal index) and its recent median are scored like
//!   the other statistics and cap the point and level scores, so what happens every day at
//!   this hour does not alarm while a spike on top of it still does.
//! - *Score*: `1 - exp(-(|z| - z_start) / z_scale)`, 0 below `z_start`; a point is flagged at
//!   `threshold` (0.6, chosen for precision on the tuning seeds of the quality bench).
//!
//! **Guarantees.** Streaming: the score of `x_t` depends only on points up to and including
//! `x_t` (state is updated after scoring; property-tested). Scores are in [0, 1] and 0 during
//! the `warmup`; non-finite values score 0 and are not learned. Timestamps may be irregular
//! or missing: only the seasonal profile uses them (time-of-day bins), the other views go by
//! arrival order. Memory is bounded: fixed-size windows, about 37 KiB with the defaults
//! (five statistic histories of `stat_window`, two baselines of `window`, a week of block
//! extremes, the daily profile). Cost per point is `O(stat_window)` (sorted-window
//! insertion), a few microseconds. The offline CSV detector ([`crate::offline::detect_csv`])
//! and the live tracker run this same detector.
//!
//! **Quality** (`cargo bench -p trace-analytics --bench detector_quality`: 20 held-out seeds
//! × 11 generated series of 14 days at 5 min, event-level windows ±1 h; tuning used seeds
//! 1-5 only). "Before" is the previous detector (no transform, guard, burst memory; threshold
//! 0.5) on the same series:
//!
//! | series | anomalies | false positives | precision | recall | F1 | F1 before |
//! |---|---|---|---|---|---|---|
//! | spikes | 100 | 6 | 0.94 | 0.93 | 0.93 | 0.95 |
//! | dips | 100 | 4 | 0.96 | 0.97 | 0.97 | 0.94 |
//! | level_shifts | 60 | 9 | 0.85 | 0.87 | 0.86 | 0.79 |
//! | drift | 20 | 5 | 0.79 | 0.95 | 0.86 | 0.34 |
//! | variance | 60 | 4 | 0.94 | 0.97 | 0.95 | 0.92 |
//! | seasonal_clean | 0 | 3 | 0.00 | 1.00 | 0.00 | 0.00 |
//! | seasonal_spikes | 100 | 5 | 0.94 | 0.80 | 0.86 | 0.92 |
//! | combined | 60 | 14 | 0.67 | 0.47 | 0.55 | 0.72 |
//! | cpu | 40 | 77 | 0.34 | 1.00 | 0.51 | 0.25 |
//! | requests | 40 | 14 | 0.71 | 0.88 | 0.79 | 0.83 |
//! | traffic | 40 | 24 | 0.33 | 0.30 | 0.32 | 0.17 |
//! | (all) | 620 | 165 | 0.76 | 0.83 | 0.79 | 0.62 |

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::robust_window::{median_of, quantile_sorted, BlockExtremes, RobustWindow};

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
    /// Scores at or above this flag an anomaly (and end a level-shift baseline).
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
    /// Points between a level statistic and the history it is judged against, so an episode
    /// shorter than this cannot widen its own yardstick.
    pub guard: usize,
    /// Score in log space when the warm-up values are non-negative and right-skewed.
    pub auto_log: bool,
    /// Burst memory: points per block of the block maxima of residuals.
    pub extreme_block: usize,
    /// Burst memory: blocks remembered (with the defaults, 7 days of 1 h blocks at 5 min).
    pub extreme_blocks: usize,
    /// z-score that the recurring extreme residual (97 % quantile of block maxima) maps to
    /// at most, so normal bursts of the series' own size stay below the threshold.
    pub extreme_z: f64,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            recent: 5,
            window: 96,
            stat_window: 288,
            variance_window: 16,
            warmup: 48,
            threshold: 0.6,
            tail_z: 3.5,
            z_start: 3.5,
            z_scale: 2.5,
            season_bin_secs: 1800,
            season_days: 7,
            guard: 48,
            auto_log: true,
            extreme_block: 12,
            extreme_blocks: 168,
            extreme_z: 4.5,
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

    /// The seasonal expectation at `ts`: the median of this bin's earlier daily means (with
    /// the last finished day even before a new point committed it), once two days are known.
    fn expected(&self, ts: i64, scratch: &mut Vec<f64>) -> Option<f64> {
        let bin = self.bin(ts);
        let (current_day, sum, count) = self.current[bin];
        let finished =
            (current_day < ts.div_euclid(DAY_SECS) && count > 0).then(|| sum / f64::from(count));
        let means = &self.day_means[bin];
        let skip = usize::from(finished.is_some() && means.len() >= self.days);
        let known = means.len() - skip + usize::from(finished.is_some());
        (known >= 2).then(|| median_of(means.iter().skip(skip).copied().chain(finished), scratch))
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

/// How values are mapped before scoring, decided once at the end of the warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
enum Transform {
    /// Not decided yet (warm-up).
    #[default]
    Undecided,
    /// Raw values.
    Identity,
    /// `ln(x + offset)`: non-negative, right-skewed (multiplicative) series.
    Log {
        /// Keeps zeros finite: 1 % of the warm-up median (at least half a count for integer
        /// series).
        offset: f64,
    },
}

impl Transform {
    /// Chooses log space when the warm-up values are non-negative, spread on the scale of
    /// their level and right-skewed, and their logarithms are more symmetric than they are
    /// (Bowley's and Kelly's skewness), a cheap stand-in for a Box–Cox fit.
    fn choose(values: &mut [f64]) -> Transform {
        values.sort_by(f64::total_cmp);
        let q = |p: f64| quantile_sorted(values, p);
        let (min, q10, q25, q50, q75, q90) = (q(0.0), q(0.1), q(0.25), q(0.5), q(0.75), q(0.9));
        if values.len() < 8 || min < 0.0 || q50 <= 0.0 || q90 - q10 < 0.5 * q50 {
            return Transform::Identity;
        }
        // Mean of Bowley's (quartiles) and Kelly's (deciles) skewness, in [-1, 1].
        let skewness = |f: &dyn Fn(f64) -> f64| {
            let one = |lo: f64, hi: f64| {
                let (lo, mid, hi) = (f(lo), f(q50), f(hi));
                (hi + lo - 2.0 * mid) / (hi - lo).max(1e-300)
            };
            0.5 * (one(q25, q75) + one(q10, q90))
        };
        // Counts keep zeros half a count below one; continuous values get 1 % of the median,
        // small enough that a drop to a few percent stays a large move.
        let counts = values.iter().all(|v| v.fract() == 0.0);
        let offset = if counts {
            (0.01 * q50).max(0.5)
        } else {
            0.01 * q50
        };
        let ln = |v: f64| (v + offset).ln();
        let skew = skewness(&|v| v);
        if skew > 0.0 && skewness(&ln).abs() < skew {
            Transform::Log { offset }
        } else {
            Transform::Identity
        }
    }

    fn forward(self, x: f64) -> f64 {
        match self {
            Transform::Log { offset } => (x + offset).max(0.5 * offset).ln(),
            _ => x,
        }
    }

    fn inverse(self, y: f64) -> f64 {
        match self {
            Transform::Log { offset } => y.exp() - offset,
            _ => y,
        }
    }
}

/// A streaming anomaly detector for one series (see the module docs).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AnomalyDetector {
    config: DetectorConfig,
    seen: u64,
    #[serde(default)]
    transform: Transform,
    /// Raw warm-up points, kept until the transform is decided, then replayed.
    #[serde(default)]
    warm: Vec<(Option<i64>, f64)>,
    state: State,
}

/// Everything learned from the (transformed) values.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    recent: VecDeque<f64>,
    baseline: RobustWindow,
    residuals: RobustWindow,
    residual_extremes: BlockExtremes,
    shift_guard: VecDeque<f64>,
    shifts: RobustWindow,
    recent_steps: VecDeque<f64>,
    baseline_steps: RobustWindow,
    step_ratios: RobustWindow,
    last: Option<f64>,
    season: Option<DailyProfile>,
    seasonal_residuals: RobustWindow,
    seasonal_extremes: BlockExtremes,
    seasonal_level_guard: VecDeque<f64>,
    seasonal_levels: RobustWindow,
    recent_seasonal: VecDeque<f64>,
    #[serde(skip)]
    scratch: Vec<f64>,
}

/// Minimum history of a statistic before its view scores.
const MIN_STAT_HISTORY: usize = 24;

/// Pushes `v` into `guard`; what leaves the guard enters `history`. Until `history` is full
/// (a first full window of what is normal), `v` enters it at once.
fn push_guarded(guard: &mut VecDeque<f64>, history: &mut RobustWindow, len: usize, v: f64) {
    if !history.is_full() {
        history.push(v);
        return;
    }
    guard.push_back(v);
    while guard.len() > len {
        if let Some(old) = guard.pop_front() {
            history.push(old);
        }
    }
}

/// One point's outcome in transformed space: score, kind, expectation.
type Scored = (f64, Option<AnomalyKind>, f64);

impl State {
    fn new(config: &DetectorConfig) -> Self {
        State {
            recent: VecDeque::with_capacity(config.recent + 1),
            baseline: RobustWindow::new(config.window),
            residuals: RobustWindow::new(config.stat_window),
            residual_extremes: BlockExtremes::new(config.extreme_block, config.extreme_blocks),
            shift_guard: VecDeque::with_capacity(config.guard + 1),
            shifts: RobustWindow::new(config.stat_window),
            recent_steps: VecDeque::with_capacity(config.variance_window + 1),
            baseline_steps: RobustWindow::new(config.window),
            step_ratios: RobustWindow::new(config.stat_window),
            last: None,
            season: (config.season_bin_secs > 0)
                .then(|| DailyProfile::new(config.season_bin_secs, config.season_days)),
            seasonal_residuals: RobustWindow::new(config.stat_window),
            seasonal_extremes: BlockExtremes::new(config.extreme_block, config.extreme_blocks),
            seasonal_level_guard: VecDeque::with_capacity(config.guard + 1),
            seasonal_levels: RobustWindow::new(config.stat_window),
            recent_seasonal: VecDeque::with_capacity(config.recent + 1),
            scratch: Vec::new(),
        }
    }

    /// Scores `value` (transformed) against the state, then learns it.
    fn step(&mut self, config: &DetectorConfig, ts_secs: Option<i64>, value: f64) -> Scored {
        let floor = 1e-9 + 1e-9 * value.abs();

        // Point view: residual from the local level.
        let local = if self.recent.is_empty() {
            value
        } else {
            median_of(self.recent.iter().copied(), &mut self.scratch)
        };
        let residual = value - local;
        let extremes = |e: &BlockExtremes| e.get().map(|(hi, lo)| (hi, lo, config.extreme_z));
        let point_z = if self.residuals.len() >= MIN_STAT_HISTORY {
            self.residuals.z_bounded(
                residual,
                config.tail_z,
                floor,
                extremes(&self.residual_extremes),
            )
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
                .map(|expected| value - expected),
            _ => None,
        };
        let seasonal_level = seasonal.map(|residual| {
            median_of(
                self.recent_seasonal
                    .iter()
                    .copied()
                    .chain(std::iter::once(residual)),
                &mut self.scratch,
            )
        });
        let point_cap = match seasonal {
            Some(residual) if self.seasonal_residuals.len() >= MIN_STAT_HISTORY => {
                squash(self.seasonal_residuals.z_bounded(
                    residual,
                    config.tail_z,
                    floor,
                    extremes(&self.seasonal_extremes),
                ))
            }
            _ => 1.0,
        };
        let level_cap = match seasonal_level {
            Some(level) if self.seasonal_levels.len() >= MIN_STAT_HISTORY => {
                squash(self.seasonal_levels.z(level, config.tail_z, floor))
            }
            _ => 1.0,
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
        let (score, kind, expected) =
            views
                .iter()
                .copied()
                .fold((0.0, None, local), |best, (s, k, e)| {
                    if s > best.0 {
                        (s, Some(k), e)
                    } else {
                        best
                    }
                });

        // Learn.
        self.residuals.push(residual);
        self.residual_extremes.push(residual, &mut self.scratch);
        if shift_ready {
            push_guarded(&mut self.shift_guard, &mut self.shifts, config.guard, shift);
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
            (Some(residual), Some(level)) => {
                self.seasonal_residuals.push(residual);
                self.seasonal_extremes.push(residual, &mut self.scratch);
                push_guarded(
                    &mut self.seasonal_level_guard,
                    &mut self.seasonal_levels,
                    config.guard,
                    level,
                );
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
        if score >= config.threshold && kind == Some(AnomalyKind::LevelShift) {
            // A level shift was called: the old baseline is history, start a new one (the
            // view is silent until it holds enough points), as after a change point.
            self.baseline = RobustWindow::new(config.window);
        }
        (score, kind, expected)
    }

    fn heap_bytes(&self) -> usize {
        self.baseline.heap_bytes()
            + self.residuals.heap_bytes()
            + self.shifts.heap_bytes()
            + self.baseline_steps.heap_bytes()
            + self.step_ratios.heap_bytes()
            + (self.recent.capacity()
                + self.recent_steps.capacity()
                + self.shift_guard.capacity()
                + self.seasonal_level_guard.capacity()
                + self.recent_seasonal.capacity())
                * 8
            + self.seasonal_residuals.heap_bytes()
            + self.seasonal_levels.heap_bytes()
            + self.residual_extremes.heap_bytes()
            + self.seasonal_extremes.heap_bytes()
            + self.season.as_ref().map_or(0, DailyProfile::heap_bytes)
    }
}

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
            transform: Transform::Undecided,
            warm: Vec::new(),
            state: State::new(&config),
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

    /// True once the warm-up chose log space for this series.
    pub fn log_space(&self) -> bool {
        matches!(self.transform, Transform::Log { .. })
    }

    /// Scores `value` without a timestamp (no seasonal gate), then learns it.
    pub fn observe(&mut self, value: f64) -> Assessment {
        self.observe_at(None, value)
    }

    /// Scores `value` observed at `ts_secs` (Unix seconds; enables the daily seasonal gate),
    /// then learns it. Non-finite values score 0 and are not learned. Timestamps need not be
    /// regular: the seasonal profile bins by time of day, the other views by arrival order.
    pub fn observe_at(&mut self, ts_secs: Option<i64>, value: f64) -> Assessment {
        if !value.is_finite() {
            return Assessment {
                score: 0.0,
                is_anomaly: false,
                expected: value,
                kind: None,
            };
        }
        if self.transform == Transform::Undecided {
            if self.warm.len() >= self.config.warmup {
                self.decide_transform();
            } else {
                self.warm.push((ts_secs, value));
            }
        }
        let transform = match self.transform {
            Transform::Undecided => Transform::Identity,
            t => t,
        };
        let (mut score, kind, expected) =
            self.state
                .step(&self.config, ts_secs, transform.forward(value));
        if self.seen < self.config.warmup as u64 {
            score = 0.0;
        }
        self.seen += 1;
        let score = score.clamp(0.0, 1.0);
        Assessment {
            score,
            is_anomaly: score >= self.config.threshold && score > 0.0,
            expected: transform.inverse(expected),
            kind: if score > 0.0 { kind } else { None },
        }
    }

    /// Ends the warm-up: chooses the transform from the warm-up values and, for log space,
    /// relearns them transformed (their scores were 0 either way).
    fn decide_transform(&mut self) {
        let mut values: Vec<f64> = self.warm.iter().map(|(_, v)| *v).collect();
        self.transform = if self.config.auto_log {
            Transform::choose(&mut values)
        } else {
            Transform::Identity
        };
        if self.transform != Transform::Identity {
            self.state = State::new(&self.config);
            for (ts, v) in std::mem::take(&mut self.warm) {
                self.state.step(&self.config, ts, self.transform.forward(v));
            }
        }
        self.warm = Vec::new();
    }

    /// Approximate heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.state.heap_bytes() + self.warm.capacity() * 16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SplitMix64 → uniform, Box–Muller → normal.
    fn normals(seed: u64, n: usize) -> Vec<f64> {
        let mut state = seed;
        let mut uniform = || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        };
        (0..n)
            .map(|_| {
                let (u1, u2) = (uniform().max(1e-300), uniform());
                (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
            })
            .collect()
    }

    #[test]
    fn log_space_only_for_skewed_positive_series() {
        let noise = normals(7, 200);
        let mut lognormal = AnomalyDetector::new(DetectorConfig::default());
        let mut normal = AnomalyDetector::new(DetectorConfig::default());
        let mut signed = AnomalyDetector::new(DetectorConfig::default());
        for z in &noise {
            lognormal.observe(1e6 * (0.8 * z).exp());
            normal.observe(50.0 + 2.0 * z);
            signed.observe(5.0 * z);
        }
        assert!(lognormal.log_space());
        assert!(!normal.log_space());
        assert!(!signed.log_space());
    }

    #[test]
    fn heavy_tail_is_normal_but_a_flood_is_not() {
        let noise = normals(11, 2000);
        let mut detector = AnomalyDetector::new(DetectorConfig::default());
        let (mut false_alarms, mut flood_flagged) = (0, false);
        for (i, z) in noise.iter().enumerate() {
            let flood = if (1500..1512).contains(&i) { 20.0 } else { 1.0 };
            let a = detector.observe_at(Some(i as i64 * 300), 1e6 * flood * (0.5 * z).exp());
            assert!((0.0..=1.0).contains(&a.score));
            if (1500..1512).contains(&i) {
                flood_flagged |= a.is_anomaly;
            } else if a.is_anomaly && !(1512..1530).contains(&i) {
                false_alarms += 1;
            }
        }
        assert!(flood_flagged);
        assert!(false_alarms <= 2, "{false_alarms} false alarms");
    }

    #[test]
    fn irregular_timestamps_and_gaps_are_accepted() {
        let noise = normals(3, 1500);
        let mut detector = AnomalyDetector::new(DetectorConfig::default());
        let mut ts = 1_396_310_400i64;
        let mut flagged_at_spike = false;
        for (i, z) in noise.iter().enumerate() {
            // Jittered 1-9 minute steps, a 6-hour hole, and one duplicate timestamp.
            ts += match i {
                700 => 6 * 3600,
                900 => 0,
                _ => 60 + (i as i64 * 37 % 480),
            };
            let spike = if i == 1200 { 30.0 } else { 0.0 };
            let a = detector.observe_at(Some(ts), 100.0 + 2.0 * z + spike);
            assert!((0.0..=1.0).contains(&a.score));
            flagged_at_spike |= i == 1200 && a.is_anomaly;
        }
        assert!(flagged_at_spike);
    }
}
