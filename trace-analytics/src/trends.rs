//! Trends: per series, the Theil–Sen slope over the last buckets, the Mann–Kendall test of
//! monotonic trend, and a verdict (rising / falling / stable) with the relative change.
//!
//! Mann–Kendall (Mann 1945, Kendall 1975): `S = Σ_{i<j} sign(x_j - x_i)`, variance with the tie
//! correction `(n(n-1)(2n+5) - Σ t(t-1)(2t+5)) / 18`, continuity-corrected normal approximation
//! `Z = (S ∓ 1) / sqrt(Var S)` and a two-sided p-value. Theil–Sen (Theil 1950, Sen 1968): the
//! median of pairwise slopes, robust to up to 29 % outliers. A series is rising or falling when
//! `p < significance` and the fitted change over the span is at least `min_relative_change` of
//! the series' median magnitude; otherwise stable.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use trace_core::TraceEntry;

use crate::robust_window::quantile_sorted;
use crate::series::{SeriesBucketer, SeriesConfig, SeriesKind, SeriesPoint};

/// Settings of [`Trends`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct TrendsConfig {
    /// Buckets kept per series (`K`).
    pub max_points: usize,
    /// Series followed; points of further series are ignored.
    pub max_series: usize,
    /// Fewer points than this give no verdict.
    pub min_points: usize,
    /// p-value below which a trend is significant.
    pub significance: f64,
    /// Minimum relative change over the span for rising/falling.
    pub min_relative_change: f64,
}

impl Default for TrendsConfig {
    fn default() -> Self {
        TrendsConfig {
            max_points: 60,
            max_series: 256,
            min_points: 8,
            significance: 0.05,
            min_relative_change: 0.1,
        }
    }
}

/// The direction of a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrendVerdict {
    /// Significantly rising.
    Rising,
    /// Significantly falling.
    Falling,
    /// No significant, material change.
    Stable,
}

/// The Mann–Kendall test result.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MannKendall {
    /// The statistic S.
    pub s: i64,
    /// Its variance under no trend, tie-corrected.
    pub variance: f64,
    /// The normal score.
    pub z: f64,
    /// Two-sided p-value.
    pub p_value: f64,
}

/// The trend of one series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trend {
    /// Series name (`rate:<type>`, `error_rate`, `p95:<type>:<metric>`).
    pub series: String,
    /// What it measures.
    pub kind: SeriesKind,
    /// Points used.
    pub points: usize,
    /// Start of the first bucket, Unix seconds.
    pub from: i64,
    /// Start of the last bucket, Unix seconds.
    pub to: i64,
    /// Theil–Sen slope, units per hour.
    pub slope_per_hour: f64,
    /// Fitted change over the span divided by the median magnitude.
    pub relative_change: f64,
    /// Mann–Kendall test.
    pub mann_kendall: MannKendall,
    /// The verdict.
    pub verdict: TrendVerdict,
}

/// What [`Trends::report`] returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrendsReport {
    /// Bucket width, seconds.
    pub bucket_secs: i64,
    /// Every series with enough points: rising and falling first, then by |Z|.
    pub series: Vec<Trend>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrendSeries {
    name: String,
    kind: SeriesKind,
    points: VecDeque<(i64, f64)>,
}

/// Trend analysis over bucketed series.
///
/// Bounded state: `max_series × max_points` points (16 B each) plus the bucketer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Trends {
    bucketer: SeriesBucketer,
    store: TrendStore,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrendStore {
    config: TrendsConfig,
    series: Vec<Option<TrendSeries>>,
    followed: usize,
}

/// The standard normal CDF, via the complementary error function (Numerical Recipes `erfcc`,
/// fractional error below 1.2e-7).
pub fn normal_cdf(x: f64) -> f64 {
    let z = x.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let erfc = t * poly.exp();
    if x >= 0.0 {
        1.0 - 0.5 * erfc
    } else {
        0.5 * erfc
    }
}

/// The Mann–Kendall test of `values` (in time order).
pub fn mann_kendall(values: &[f64]) -> MannKendall {
    let n = values.len();
    let mut s: i64 = 0;
    for i in 0..n {
        for j in i + 1..n {
            s += match values[j].partial_cmp(&values[i]) {
                Some(std::cmp::Ordering::Greater) => 1,
                Some(std::cmp::Ordering::Less) => -1,
                _ => 0,
            };
        }
    }
    let mut sorted: Vec<f64> = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mut ties = 0.0;
    let mut i = 0;
    while i < n {
        let mut j = i + 1;
        while j < n && sorted[j] == sorted[i] {
            j += 1;
        }
        let t = (j - i) as f64;
        ties += t * (t - 1.0) * (2.0 * t + 5.0);
        i = j;
    }
    let nf = n as f64;
    let variance = ((nf * (nf - 1.0) * (2.0 * nf + 5.0) - ties) / 18.0).max(0.0);
    let z = if variance <= 0.0 {
        0.0
    } else if s > 0 {
        (s - 1) as f64 / variance.sqrt()
    } else if s < 0 {
        (s + 1) as f64 / variance.sqrt()
    } else {
        0.0
    };
    MannKendall {
        s,
        variance,
        z,
        p_value: (2.0 * (1.0 - normal_cdf(z.abs()))).clamp(0.0, 1.0),
    }
}

/// The Theil–Sen slope of `(x, y)` points: the median of the pairwise slopes (0 for fewer than
/// two distinct x).
pub fn theil_sen(points: &[(f64, f64)]) -> f64 {
    let mut slopes = Vec::with_capacity(points.len() * points.len().saturating_sub(1) / 2);
    for (i, a) in points.iter().enumerate() {
        for b in &points[i + 1..] {
            if b.0 != a.0 {
                slopes.push((b.1 - a.1) / (b.0 - a.0));
            }
        }
    }
    slopes.sort_by(f64::total_cmp);
    quantile_sorted(&slopes, 0.5)
}

impl Trends {
    /// Empty trends; entries are bucketed with `series`.
    pub fn new(config: &TrendsConfig, series: &SeriesConfig) -> Self {
        Trends {
            bucketer: SeriesBucketer::new(series),
            store: TrendStore {
                config: config.clone(),
                series: Vec::new(),
                followed: 0,
            },
        }
    }

    /// Buckets one entry (when used on its own rather than fed points by an engine).
    pub fn observe(&mut self, entry: &TraceEntry) {
        let store = &mut self.store;
        self.bucketer
            .observe(entry, &mut |point| store.push(&point));
    }

    /// Closes buckets up to `now_secs` (when used on its own).
    pub fn advance_to(&mut self, now_secs: i64) {
        let store = &mut self.store;
        self.bucketer
            .advance_to(now_secs, &mut |point| store.push(&point));
    }

    /// Adds one series point (from an engine's shared bucketer).
    pub fn observe_point(&mut self, point: &SeriesPoint<'_>) {
        self.store.push(point);
    }

    /// The trend of every series with at least `min_points` points.
    pub fn report(&self) -> TrendsReport {
        self.store.report(self.bucketer.bucket_secs())
    }

    /// Approximate heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.store.heap_bytes()
    }
}

impl TrendStore {
    fn push(&mut self, point: &SeriesPoint<'_>) {
        if self.series.len() <= point.id {
            self.series.resize_with(point.id + 1, || None);
        }
        if self.series[point.id].is_none() {
            if self.followed >= self.config.max_series {
                return;
            }
            self.followed += 1;
            self.series[point.id] = Some(TrendSeries {
                name: point.name.to_owned(),
                kind: point.kind,
                points: VecDeque::with_capacity(self.config.max_points),
            });
        }
        if let Some(series) = &mut self.series[point.id] {
            if series.points.len() >= self.config.max_points.max(2) {
                series.points.pop_front();
            }
            series.points.push_back((point.bucket_start, point.value));
        }
    }

    fn report(&self, bucket_secs: i64) -> TrendsReport {
        let mut series: Vec<Trend> = self
            .series
            .iter()
            .flatten()
            .filter(|s| s.points.len() >= self.config.min_points.max(3))
            .map(|s| self.trend(s))
            .collect();
        series.sort_by(|a, b| {
            let moving = |t: &Trend| t.verdict != TrendVerdict::Stable;
            moving(b)
                .cmp(&moving(a))
                .then(b.mann_kendall.z.abs().total_cmp(&a.mann_kendall.z.abs()))
                .then(a.series.cmp(&b.series))
        });
        TrendsReport {
            bucket_secs,
            series,
        }
    }

    fn trend(&self, series: &TrendSeries) -> Trend {
        let values: Vec<f64> = series.points.iter().map(|(_, v)| *v).collect();
        let xy: Vec<(f64, f64)> = series
            .points
            .iter()
            .map(|(t, v)| (*t as f64 / 3600.0, *v))
            .collect();
        let from = series.points.front().map_or(0, |p| p.0);
        let to = series.points.back().map_or(0, |p| p.0);
        let slope = theil_sen(&xy);
        let mut magnitudes: Vec<f64> = values.iter().map(|v| v.abs()).collect();
        magnitudes.sort_by(f64::total_cmp);
        let typical = quantile_sorted(&magnitudes, 0.5).max(1e-12);
        let change = slope * (to - from) as f64 / 3600.0;
        let relative_change = change / typical;
        let mk = mann_kendall(&values);
        let verdict = if mk.p_value < self.config.significance
            && relative_change.abs() >= self.config.min_relative_change
        {
            if slope > 0.0 {
                TrendVerdict::Rising
            } else {
                TrendVerdict::Falling
            }
        } else {
            TrendVerdict::Stable
        };
        Trend {
            series: series.name.clone(),
            kind: series.kind,
            points: values.len(),
            from,
            to,
            slope_per_hour: slope,
            relative_change,
            mann_kendall: mk,
            verdict,
        }
    }

    fn heap_bytes(&self) -> usize {
        self.series
            .iter()
            .flatten()
            .map(|s| s.points.capacity() * 16 + s.name.capacity() + 64)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mann_kendall_matches_known_values() {
        let rising: Vec<f64> = (0..20)
            .map(|i| i as f64 + if i % 2 == 0 { 0.5 } else { 0.0 })
            .collect();
        let mk = mann_kendall(&rising);
        assert!(mk.s > 150 && mk.p_value < 1e-6, "{mk:?}");
        let flat = vec![3.0; 20];
        let mk = mann_kendall(&flat);
        assert_eq!(mk.s, 0);
        assert_eq!(mk.p_value, 1.0);
        assert!((normal_cdf(1.959_964) - 0.975).abs() < 1e-6);
        let line: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 2.0 * i as f64 + 1.0)).collect();
        assert!((theil_sen(&line) - 2.0).abs() < 1e-12);
    }
}
