//! `Metrics`: the agent's Prometheus registry, fed by the binary (counters, gauges, every
//! recorded entry) and read by the rules (as [`Sample`]s), health and `/metrics`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus::core::Collector;
use prometheus::proto::MetricType;
use prometheus::{
    exponential_buckets, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    Opts, Registry, TextEncoder,
};
use serde::{Deserialize, Serialize};
use trace_core::error::DecodeErrorKind;
use trace_core::{Severity, TraceEntry};

use crate::catalogue::{self, names, MetricInfo};
use crate::error::MonitorError;
use crate::health::{ConnectionState, StoreWriteState};
use crate::human_serde::human_duration;
use crate::resources::ResourceUsage;
use crate::sources::{SourceActivity, SourceBook, SourceLimits};
use crate::window::CounterWindow;

/// Content type of [`Metrics::encode_prometheus`]: the Prometheus text format 0.0.4.
pub const PROMETHEUS_CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// One series of a metrics snapshot: what rules evaluate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Metric name from the catalogue (histograms appear as `<name>_count` and `<name>_sum`).
    pub name: String,
    /// Label names and values.
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
}

impl Sample {
    /// A sample without labels.
    pub fn new(name: impl Into<String>, value: f64) -> Self {
        Sample {
            name: name.into(),
            labels: BTreeMap::new(),
            value,
        }
    }

    /// Adds a label.
    pub fn with_label(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(name.into(), value.into());
        self
    }
}

/// How the metrics count and bound what they see.
///
/// | setting | default | meaning |
/// |---|---|---|
/// | `window` | `60s` | span of the sliding window behind every `_per_second`, `_ratio` and `_recent` series |
/// | `max_sources` | `1000` | distinct sources tracked; more are counted as `source="other"` |
/// | `max_types_per_source` | `20` | distinct event types per source; more are counted as `type="other"` |
/// | `source_forget_after` | `1h` | a source silent this long is dropped (its series disappear, its alert resolves) |
/// | `min_events_for_ratio` | `20` | error and quarantine ratios are only computed over at least this many events in the window |
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Span of the sliding window for rates and ratios.
    #[serde(with = "human_duration")]
    pub window: Duration,
    /// Distinct sources tracked before folding into `other`.
    pub max_sources: usize,
    /// Distinct event types per source before folding into `other`.
    pub max_types_per_source: usize,
    /// A source silent this long is forgotten.
    #[serde(with = "human_duration")]
    pub source_forget_after: Duration,
    /// Minimum events in the window before a ratio is computed.
    pub min_events_for_ratio: u64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            window: Duration::from_secs(60),
            max_sources: 1000,
            max_types_per_source: 20,
            source_forget_after: Duration::from_secs(3600),
            min_events_for_ratio: 20,
        }
    }
}

impl MetricsConfig {
    /// Checks the settings are usable.
    pub fn validate(&self) -> Result<(), MonitorError> {
        if self.window < Duration::from_secs(2) {
            return Err(MonitorError::InvalidConfig {
                setting: "window",
                problem: "must be at least 2s (rates need two snapshots a second apart)".into(),
            });
        }
        if self.max_sources == 0 || self.max_types_per_source == 0 {
            return Err(MonitorError::InvalidConfig {
                setting: "max_sources",
                problem: "max_sources and max_types_per_source must be at least 1".into(),
            });
        }
        if self.source_forget_after <= self.window {
            return Err(MonitorError::InvalidConfig {
                setting: "source_forget_after",
                problem: "must be longer than the window".into(),
            });
        }
        Ok(())
    }
}

/// A gauge that can be absent (a ratio without enough events, a resource not readable
/// here): a vector with no labels, whose one child exists only while there is a value.
#[derive(Clone)]
struct MaybeGauge(GaugeVec);

impl MaybeGauge {
    fn set(&self, value: Option<f64>) {
        match value {
            Some(v) => {
                if let Ok(g) = self.0.get_metric_with_label_values(&[] as &[&str]) {
                    g.set(v);
                }
            }
            None => {
                // Err only means it was absent already.
                let _ = self.0.remove_label_values(&[] as &[&str]);
            }
        }
    }
}

/// Facts health needs that counters cannot hold.
#[derive(Debug)]
struct Facts {
    nats: ConnectionState,
    consumer_lag: Option<u64>,
    store_write: StoreWriteState,
    store_usage: Option<(u64, u64)>,
    store_budget: Option<u64>,
    resources: Option<ResourceUsage>,
}

/// The agent's metrics registry: thread-safe, shared by reference (wrap it in an `Arc` or
/// use it through [`crate::Monitor`]).
///
/// Counters and gauges are lock-free; per-source bookkeeping takes one short lock per entry
/// (or per batch with [`Metrics::observe_entries`]).
pub struct Metrics {
    registry: Registry,
    config: MetricsConfig,
    events_received: IntCounter,
    events_stored: IntCounter,
    events_quarantined: IntCounterVec,
    quarantined_all: AtomicU64,
    batches: IntCounter,
    batch_duration: Histogram,
    ack_duration: Histogram,
    consumer_lag: IntGauge,
    store_bytes: IntGauge,
    store_segments: IntGauge,
    store_write_failures: IntCounter,
    store_budget_bytes: IntGauge,
    store_budget_ratio: MaybeGauge,
    nats_connected: IntGauge,
    received_rate: MaybeGauge,
    quarantined_rate: MaybeGauge,
    quarantine_ratio: MaybeGauge,
    recent_write_failures: MaybeGauge,
    cpu_percent: MaybeGauge,
    rss_bytes: MaybeGauge,
    open_files: MaybeGauge,
    data_dir_bytes: MaybeGauge,
    disk_free_bytes: MaybeGauge,
    source_events: IntCounterVec,
    source_errors: IntCounterVec,
    source_last_seen: GaugeVec,
    source_last_seen_timestamp: GaugeVec,
    source_rate: GaugeVec,
    source_error_ratio: GaugeVec,
    sources: Mutex<SourceBook>,
    agent_window: Mutex<CounterWindow<3>>,
    facts: Mutex<Facts>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn info(name: &str) -> Result<&'static MetricInfo, MonitorError> {
    catalogue::lookup(name)
        .or_else(|| catalogue::CATALOGUE.iter().find(|m| m.name == name))
        .ok_or_else(|| MonitorError::InvalidConfig {
            setting: "metrics",
            problem: format!("{name} is not in the catalogue"),
        })
}

fn opts(name: &str) -> Result<(Opts, &'static [&'static str]), MonitorError> {
    let m = info(name)?;
    Ok((Opts::new(m.name, m.help), m.labels))
}

/// Locks, recovering the data if a panicking thread poisoned the lock (the state is
/// counters and timestamps: always consistent enough to keep going).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Metrics {
    /// A registry with every catalogue metric registered.
    pub fn new(config: MetricsConfig) -> Result<Self, MonitorError> {
        config.validate()?;
        let registry = Registry::new();
        fn reg<C: Collector + Clone + 'static>(r: &Registry, c: C) -> Result<C, MonitorError> {
            r.register(Box::new(c.clone()))?;
            Ok(c)
        }
        let counter = |name: &str| -> Result<IntCounter, MonitorError> {
            reg(&registry, IntCounter::with_opts(opts(name)?.0)?)
        };
        let counter_vec = |name: &str| -> Result<IntCounterVec, MonitorError> {
            let (o, labels) = opts(name)?;
            reg(&registry, IntCounterVec::new(o, labels)?)
        };
        let gauge = |name: &str| -> Result<IntGauge, MonitorError> {
            reg(&registry, IntGauge::with_opts(opts(name)?.0)?)
        };
        let gauge_vec = |name: &str| -> Result<GaugeVec, MonitorError> {
            let (o, labels) = opts(name)?;
            reg(&registry, GaugeVec::new(o, labels)?)
        };
        let maybe = |name: &str| -> Result<MaybeGauge, MonitorError> {
            let (o, _) = opts(name)?;
            Ok(MaybeGauge(reg(&registry, GaugeVec::new(o, &[])?)?))
        };
        let histogram = |name: &str| -> Result<Histogram, MonitorError> {
            let m = info(name)?;
            // 1 ms .. ~16 s, doubling.
            let buckets = exponential_buckets(0.001, 2.0, 15)?;
            reg(
                &registry,
                Histogram::with_opts(HistogramOpts::new(m.name, m.help).buckets(buckets))?,
            )
        };
        let limits = SourceLimits {
            max_sources: config.max_sources,
            max_types_per_source: config.max_types_per_source,
            window: config.window,
            forget_after: config.source_forget_after,
            error_ratio_min_events: config.min_events_for_ratio,
        };
        Ok(Metrics {
            events_received: counter(names::EVENTS_RECEIVED)?,
            events_stored: counter(names::EVENTS_STORED)?,
            events_quarantined: counter_vec(names::EVENTS_QUARANTINED)?,
            quarantined_all: AtomicU64::new(0),
            batches: counter(names::BATCHES)?,
            batch_duration: histogram(names::BATCH_DURATION)?,
            ack_duration: histogram(names::ACK_DURATION)?,
            consumer_lag: gauge(names::CONSUMER_LAG)?,
            store_bytes: gauge(names::STORE_BYTES)?,
            store_segments: gauge(names::STORE_SEGMENTS)?,
            store_write_failures: counter(names::STORE_WRITE_FAILURES)?,
            store_budget_bytes: gauge(names::STORE_BUDGET_BYTES)?,
            store_budget_ratio: maybe(names::STORE_BUDGET_RATIO)?,
            nats_connected: gauge(names::NATS_CONNECTED)?,
            received_rate: maybe(names::RECEIVED_RATE)?,
            quarantined_rate: maybe(names::QUARANTINED_RATE)?,
            quarantine_ratio: maybe(names::QUARANTINE_RATIO)?,
            recent_write_failures: maybe(names::RECENT_WRITE_FAILURES)?,
            cpu_percent: maybe(names::CPU_PERCENT)?,
            rss_bytes: maybe(names::RSS_BYTES)?,
            open_files: maybe(names::OPEN_FILES)?,
            data_dir_bytes: maybe(names::DATA_DIR_BYTES)?,
            disk_free_bytes: maybe(names::DISK_FREE_BYTES)?,
            source_events: counter_vec(names::SOURCE_EVENTS)?,
            source_errors: counter_vec(names::SOURCE_ERRORS)?,
            source_last_seen: gauge_vec(names::SOURCE_LAST_SEEN)?,
            source_last_seen_timestamp: gauge_vec(names::SOURCE_LAST_SEEN_TIMESTAMP)?,
            source_rate: gauge_vec(names::SOURCE_RATE)?,
            source_error_ratio: gauge_vec(names::SOURCE_ERROR_RATIO)?,
            sources: Mutex::new(SourceBook::new(limits)),
            agent_window: Mutex::new(CounterWindow::new(config.window)),
            facts: Mutex::new(Facts {
                nats: ConnectionState::Connecting,
                consumer_lag: None,
                store_write: StoreWriteState::NotYetWritten,
                store_usage: None,
                store_budget: None,
                resources: None,
            }),
            registry,
            config,
        })
    }

    /// The settings in use.
    pub fn config(&self) -> &MetricsConfig {
        &self.config
    }

    /// `n` messages were taken from the consumer.
    pub fn add_received(&self, n: u64) {
        self.events_received.inc_by(n);
    }

    /// `n` entries were durably stored.
    pub fn add_stored(&self, n: u64) {
        self.events_stored.inc_by(n);
    }

    /// `n` messages were quarantined for `kind`.
    pub fn add_quarantined(&self, kind: DecodeErrorKind, n: u64) {
        self.events_quarantined
            .with_label_values(&[kind.as_str()])
            .inc_by(n);
        self.quarantined_all.fetch_add(n, Ordering::Relaxed);
    }

    /// One batch was decoded, stored and flushed in `took`.
    pub fn observe_batch(&self, took: Duration) {
        self.batches.inc();
        self.batch_duration.observe(took.as_secs_f64());
    }

    /// One batch was acked in `took`.
    pub fn observe_ack(&self, took: Duration) {
        self.ack_duration.observe(took.as_secs_f64());
    }

    /// The consumer's pending message count, as JetStream reports it.
    pub fn set_consumer_lag(&self, pending: u64) {
        self.consumer_lag.set(clamp_i64(pending));
        lock(&self.facts).consumer_lag = Some(pending);
    }

    /// The store's size on disk and segment count (from `Store::info`).
    pub fn set_store_usage(&self, bytes: u64, segments: u64) {
        self.store_bytes.set(clamp_i64(bytes));
        self.store_segments.set(clamp_i64(segments));
        let mut facts = lock(&self.facts);
        facts.store_usage = Some((bytes, segments));
        self.update_budget_ratio(&facts);
    }

    /// The store's disk budget (`max_disk_bytes`); `None` when unlimited.
    pub fn set_store_budget(&self, max_disk_bytes: Option<u64>) {
        self.store_budget_bytes
            .set(clamp_i64(max_disk_bytes.unwrap_or(0)));
        let mut facts = lock(&self.facts);
        facts.store_budget = max_disk_bytes.filter(|b| *b > 0);
        self.update_budget_ratio(&facts);
    }

    fn update_budget_ratio(&self, facts: &Facts) {
        let ratio = match (facts.store_usage, facts.store_budget) {
            (Some((bytes, _)), Some(budget)) => Some(bytes as f64 / budget as f64),
            _ => None,
        };
        self.store_budget_ratio.set(ratio);
    }

    /// A store write (append + flush) succeeded.
    pub fn record_store_write_ok(&self, now: DateTime<Utc>) {
        lock(&self.facts).store_write = StoreWriteState::Ok { at: now };
    }

    /// A store write failed with `error` (its message is shown by health).
    pub fn record_store_write_failure(&self, error: &str, now: DateTime<Utc>) {
        self.store_write_failures.inc();
        let mut facts = lock(&self.facts);
        let since = match &facts.store_write {
            StoreWriteState::Failing { since, .. } => *since,
            _ => now,
        };
        facts.store_write = StoreWriteState::Failing {
            since,
            error: error.to_string(),
        };
    }

    /// The NATS connection came up (`true`) or went down (`false`).
    pub fn set_nats_connected(&self, connected: bool, now: DateTime<Utc>) {
        self.nats_connected.set(i64::from(connected));
        let mut facts = lock(&self.facts);
        facts.nats = match (connected, &facts.nats) {
            (true, _) => ConnectionState::Connected,
            (false, ConnectionState::Disconnected { since }) => {
                ConnectionState::Disconnected { since: *since }
            }
            (false, _) => ConnectionState::Disconnected { since: now },
        };
    }

    /// The latest resource usage (from [`crate::ResourceSampler::sample`]).
    pub fn set_resources(&self, usage: &ResourceUsage) {
        self.cpu_percent.set(usage.cpu_percent);
        self.rss_bytes.set(usage.rss_bytes.map(|v| v as f64));
        self.open_files.set(usage.open_files.map(|v| v as f64));
        self.data_dir_bytes
            .set(usage.data_dir_bytes.map(|v| v as f64));
        self.disk_free_bytes
            .set(usage.disk_free_bytes.map(|v| v as f64));
        lock(&self.facts).resources = Some(usage.clone());
    }

    /// Counts one recorded entry for its source and type, and marks the source as seen at
    /// `now` (arrival time on the agent's clock: an entry's own `ts` may be skewed).
    pub fn observe_entry(&self, entry: &TraceEntry, now: DateTime<Utc>) {
        self.observe_entries(std::iter::once(entry), now);
    }

    /// [`Metrics::observe_entry`] for a whole batch under one lock.
    pub fn observe_entries<'a>(
        &self,
        entries: impl IntoIterator<Item = &'a TraceEntry>,
        now: DateTime<Utc>,
    ) {
        let mut book = lock(&self.sources);
        for entry in entries {
            let is_error = entry.severity >= Severity::Error;
            let admitted = book.observe(&entry.source, &entry.event_type, is_error, now);
            self.source_events
                .with_label_values(&[admitted.source, admitted.event_type])
                .inc();
            let errors = self.source_errors.with_label_values(&[admitted.source]);
            if is_error {
                errors.inc();
            }
        }
    }

    /// Recomputes every derived series (rates, ratios, seconds since last seen) at `now` and
    /// forgets long-silent sources. Call it about once a second; [`crate::Monitor::tick`]
    /// does.
    pub fn refresh(&self, now: DateTime<Utc>) {
        let received = self.events_received.get();
        let quarantined = self.quarantined_all.load(Ordering::Relaxed);
        let failures = self.store_write_failures.get();
        let increase = lock(&self.agent_window).update(now, [received, quarantined, failures]);
        self.received_rate.set(increase.map(|i| i.rate(0)));
        self.quarantined_rate.set(increase.map(|i| i.rate(1)));
        self.quarantine_ratio.set(
            increase
                .filter(|i| i.delta[0] > 0 && i.delta[0] >= self.config.min_events_for_ratio)
                .map(|i| i.delta[1] as f64 / i.delta[0] as f64),
        );
        // Before the window has two snapshots, failures counted so far are all "recent".
        self.recent_write_failures
            .set(Some(increase.map_or(failures, |i| i.delta[2]) as f64));

        let mut book = lock(&self.sources);
        for gone in book.refresh(now) {
            for t in &gone.types {
                let _ = self.source_events.remove_label_values(&[&gone.source, t]);
            }
            for vec in [
                &self.source_last_seen,
                &self.source_last_seen_timestamp,
                &self.source_rate,
                &self.source_error_ratio,
            ] {
                let _ = vec.remove_label_values(&[&gone.source]);
            }
            let _ = self.source_errors.remove_label_values(&[&gone.source]);
        }
        for a in book.activity() {
            let labels = [a.source.as_str()];
            if !a.folded {
                self.source_last_seen
                    .with_label_values(&labels)
                    .set(a.seconds_silent);
                self.source_last_seen_timestamp
                    .with_label_values(&labels)
                    .set(a.last_seen.timestamp_millis() as f64 / 1000.0);
            }
            match a.events_per_second {
                Some(r) => self.source_rate.with_label_values(&labels).set(r),
                None => {
                    let _ = self.source_rate.remove_label_values(&labels);
                }
            }
            match a.error_ratio {
                Some(r) => self.source_error_ratio.with_label_values(&labels).set(r),
                None => {
                    let _ = self.source_error_ratio.remove_label_values(&labels);
                }
            }
        }
    }

    /// Every source's activity as of the last [`Metrics::refresh`], by name.
    pub fn sources(&self) -> Vec<SourceActivity> {
        lock(&self.sources).activity()
    }

    /// The current value of every series, for rules (histograms as `_count` and `_sum`).
    pub fn samples(&self) -> Vec<Sample> {
        let mut out = Vec::new();
        for family in self.registry.gather() {
            let name = family.name();
            for m in family.get_metric() {
                let labels: BTreeMap<String, String> = m
                    .get_label()
                    .iter()
                    .map(|l| (l.name().to_string(), l.value().to_string()))
                    .collect();
                match family.get_field_type() {
                    MetricType::COUNTER => out.push(Sample {
                        name: name.to_string(),
                        labels,
                        value: m.get_counter().get_value(),
                    }),
                    MetricType::GAUGE => out.push(Sample {
                        name: name.to_string(),
                        labels,
                        value: m.get_gauge().get_value(),
                    }),
                    MetricType::HISTOGRAM => {
                        let h = m.get_histogram();
                        out.push(Sample {
                            name: format!("{name}_count"),
                            labels: labels.clone(),
                            value: h.get_sample_count() as f64,
                        });
                        out.push(Sample {
                            name: format!("{name}_sum"),
                            labels,
                            value: h.get_sample_sum(),
                        });
                    }
                    // Not registered by this crate.
                    _ => {}
                }
            }
        }
        out
    }

    /// Everything in the Prometheus text format 0.0.4 ([`PROMETHEUS_CONTENT_TYPE`]).
    pub fn encode_prometheus(&self) -> Result<String, MonitorError> {
        Ok(TextEncoder::new().encode_to_string(&self.registry.gather())?)
    }

    pub(crate) fn nats_state(&self) -> ConnectionState {
        lock(&self.facts).nats.clone()
    }

    pub(crate) fn consumer_lag_value(&self) -> Option<u64> {
        lock(&self.facts).consumer_lag
    }

    pub(crate) fn store_write_state(&self) -> StoreWriteState {
        lock(&self.facts).store_write.clone()
    }

    pub(crate) fn store_usage(&self) -> (Option<u64>, Option<u64>) {
        let facts = lock(&self.facts);
        (facts.store_usage.map(|(b, _)| b), facts.store_budget)
    }

    pub(crate) fn resources(&self) -> Option<ResourceUsage> {
        lock(&self.facts).resources.clone()
    }
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
