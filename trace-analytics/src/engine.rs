//! `Analyzer`: every analysis together, fed entry by entry, live or over a stored time range.

use std::borrow::Borrow;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use trace_core::TraceEntry;

use crate::error::AnalyticsError;
use crate::patterns::{Patterns, PatternsConfig, PatternsReport};
use crate::performance::{Performance, PerformanceConfig, PerformanceReport};
use crate::players::{Players, PlayersConfig, PlayersReport};
use crate::series::{SeriesBucketer, SeriesConfig};
use crate::stats::{Stats, StatsConfig, StatsReport};
use crate::tracker::{AnomaliesReport, Anomaly, AnomalyTracker, TrackerConfig};
use crate::trends::{Trends, TrendsConfig, TrendsReport};

/// Which entries an [`Analyzer`] looks at. Empty lists match everything; a pattern ending in
/// `*` matches by prefix (`player.*`), any other pattern exactly.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EntryFilter {
    /// Event type patterns.
    pub event_types: Vec<String>,
    /// Source patterns.
    pub sources: Vec<String>,
}

fn matches_any(patterns: &[String], value: &str) -> bool {
    patterns.is_empty()
        || patterns.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => value.starts_with(prefix),
            None => p == value,
        })
}

impl EntryFilter {
    /// True when the entry passes.
    pub fn matches(&self, entry: &TraceEntry) -> bool {
        matches_any(&self.event_types, &entry.event_type)
            && matches_any(&self.sources, &entry.source)
    }
}

/// Settings of every analysis. Defaults:
///
/// | setting | default | bounds |
/// |---|---|---|
/// | `stats.max_types` / `max_sources` / `max_categories` | 1024 / 256 / 64 | names counted apart |
/// | `performance.max_types` / `max_series` | 256 / 512 | percentile sketches |
/// | `players.max_players` / `max_open_sessions` | 10 000 / 10 000 | per-player / per-session rows |
/// | `players.exact_distinct_limit` / `hll_precision` | 4096 / 14 | exact set, then a 16 KiB HLL |
/// | `patterns.max_open_sessions` / `max_transitions` | 10 000 / 65 536 | session tails, pairs |
/// | `patterns.sequence_counters` / `template_counters` | 1000 / 256 | Space-Saving counters |
/// | `series.bucket_secs` / `max_types` / `max_metric_series` | 60 / 128 / 128 | series points |
/// | `trends.max_points` / `max_series` | 60 / 256 | buckets kept per series |
/// | `anomalies.max_series` / `keep_anomalies` | 256 / 1000 | detectors, records |
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AnalyticsConfig {
    /// Counts and rates.
    pub stats: StatsConfig,
    /// Metric percentiles.
    pub performance: PerformanceConfig,
    /// Players and sessions.
    pub players: PlayersConfig,
    /// Transitions, sequences, story transitions, error templates.
    pub patterns: PatternsConfig,
    /// Bucketing for trends and anomalies.
    pub series: SeriesConfig,
    /// Trend tests.
    pub trends: TrendsConfig,
    /// Anomaly detection.
    pub anomalies: TrackerConfig,
    /// Entries looked at.
    pub filter: EntryFilter,
}

/// Everything an [`Analyzer`] knows, ready to serve as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalyticsReport {
    /// The `now` the windows end at.
    pub generated_at: DateTime<Utc>,
    /// Entries analysed.
    pub events: u64,
    /// Entries skipped by the filter.
    pub filtered_out: u64,
    /// Counts and rates.
    pub stats: StatsReport,
    /// Metric percentiles.
    pub performance: PerformanceReport,
    /// Players and sessions.
    pub players: PlayersReport,
    /// Patterns.
    pub patterns: PatternsReport,
    /// Trends.
    pub trends: TrendsReport,
    /// Anomalies.
    pub anomalies: AnomaliesReport,
}

/// Approximate heap bytes held by each part of an [`Analyzer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateSize {
    /// [`Stats`].
    pub stats: usize,
    /// [`Performance`].
    pub performance: usize,
    /// [`Players`].
    pub players: usize,
    /// [`Patterns`].
    pub patterns: usize,
    /// [`Trends`].
    pub trends: usize,
    /// [`AnomalyTracker`].
    pub anomalies: usize,
    /// The sum.
    pub total: usize,
}

/// All analyses over one stream of entries.
///
/// The same code serves the live stream (feed entries as they arrive, call
/// [`Analyzer::advance_to`] now and then so quiet buckets close, publish
/// [`Analyzer::drain_anomalies`]) and a stored range ([`Analyzer::run`] over entries oldest
/// first). The whole state serialises, so it can be checkpointed ([`Analyzer::checkpoint`]) and
/// restored ([`Analyzer::restore`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Analyzer {
    config: AnalyticsConfig,
    events: u64,
    filtered_out: u64,
    stats: Stats,
    performance: Performance,
    players: Players,
    patterns: Patterns,
    bucketer: SeriesBucketer,
    trends: Trends,
    anomalies: AnomalyTracker,
}

impl Analyzer {
    /// An empty analyzer.
    pub fn new(config: AnalyticsConfig) -> Self {
        Analyzer {
            events: 0,
            filtered_out: 0,
            stats: Stats::new(&config.stats),
            performance: Performance::new(&config.performance),
            players: Players::new(&config.players),
            patterns: Patterns::new(&config.patterns),
            bucketer: SeriesBucketer::new(&config.series),
            trends: Trends::new(&config.trends, &config.series),
            anomalies: AnomalyTracker::new(&config.anomalies, &config.series),
            config,
        }
    }

    /// Runs every analysis over `entries` (oldest first) and reports with windows ending at
    /// `now` (the end of the range): the historical `--since/--until` path.
    pub fn run<E: Borrow<TraceEntry>>(
        config: AnalyticsConfig,
        entries: impl IntoIterator<Item = E>,
        now: DateTime<Utc>,
    ) -> AnalyticsReport {
        let mut analyzer = Analyzer::new(config);
        for entry in entries {
            analyzer.observe(entry.borrow());
        }
        analyzer.advance_to(now);
        analyzer.report(now)
    }

    /// The settings.
    pub fn config(&self) -> &AnalyticsConfig {
        &self.config
    }

    /// Feeds one entry; returns false when the filter skipped it.
    pub fn observe(&mut self, entry: &TraceEntry) -> bool {
        if !self.config.filter.matches(entry) {
            self.filtered_out += 1;
            return false;
        }
        self.events += 1;
        self.stats.observe(entry);
        self.performance.observe(entry);
        self.players.observe(entry);
        self.patterns.observe(entry);
        let (trends, anomalies) = (&mut self.trends, &mut self.anomalies);
        self.bucketer.observe(entry, &mut |point| {
            trends.observe_point(&point);
            anomalies.observe_point(&point);
        });
        true
    }

    /// Closes the time buckets before `now`, so quiet periods are scored as such.
    pub fn advance_to(&mut self, now: DateTime<Utc>) {
        let (trends, anomalies) = (&mut self.trends, &mut self.anomalies);
        self.bucketer.advance_to(now.timestamp(), &mut |point| {
            trends.observe_point(&point);
            anomalies.observe_point(&point);
        });
    }

    /// Anomalies found since the last call, oldest first.
    pub fn drain_anomalies(&mut self) -> Vec<Anomaly> {
        self.anomalies.drain_new()
    }

    /// Everything, with sliding windows ending at `now`.
    pub fn report(&self, now: DateTime<Utc>) -> AnalyticsReport {
        AnalyticsReport {
            generated_at: now,
            events: self.events,
            filtered_out: self.filtered_out,
            stats: self.stats.report(now),
            performance: self.performance.report(),
            players: self.players.report(),
            patterns: self.patterns.report(),
            trends: self.trends.report(),
            anomalies: self.anomalies.report(),
        }
    }

    /// Entries analysed.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// The counts and rates.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The metric percentiles.
    pub fn performance(&self) -> &Performance {
        &self.performance
    }

    /// Forgets a player in every analysis that keeps per-player state (privacy). Returns
    /// whether any state held them.
    pub fn forget_player(&mut self, player: &str) -> bool {
        self.players.forget_player(player)
    }

    /// The player and session statistics.
    pub fn players(&self) -> &Players {
        &self.players
    }

    /// The patterns.
    pub fn patterns(&self) -> &Patterns {
        &self.patterns
    }

    /// The trends.
    pub fn trends(&self) -> &Trends {
        &self.trends
    }

    /// The anomaly tracker.
    pub fn anomalies(&self) -> &AnomalyTracker {
        &self.anomalies
    }

    /// The whole state as MessagePack (named fields), for a checkpoint.
    pub fn checkpoint(&self) -> Result<Vec<u8>, AnalyticsError> {
        Ok(rmp_serde::to_vec_named(self)?)
    }

    /// An analyzer restored from [`Analyzer::checkpoint`] bytes.
    pub fn restore(bytes: &[u8]) -> Result<Analyzer, AnalyticsError> {
        Ok(rmp_serde::from_slice(bytes)?)
    }

    /// Approximate heap bytes held, per part.
    pub fn state_size(&self) -> StateSize {
        let stats = self.stats.heap_bytes();
        let performance = self.performance.heap_bytes();
        let players = self.players.heap_bytes();
        let patterns = self.patterns.heap_bytes();
        let trends = self.trends.heap_bytes();
        let anomalies = self.anomalies.heap_bytes();
        StateSize {
            stats,
            performance,
            players,
            patterns,
            trends,
            anomalies,
            total: stats + performance + players + patterns + trends + anomalies,
        }
    }
}
