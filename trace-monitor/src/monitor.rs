//! `Monitor`: the one object the binary holds. It owns the metrics, the rule engine, the
//! alert book and the resource sampler; the binary feeds [`Monitor::metrics`], calls
//! [`Monitor::tick`] about once a second and sends the alerts it returns.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::alert::AlertEvent;
use crate::alert_book::{AlertBook, AlertList};
use crate::engine::RuleEngine;
use crate::error::MonitorError;
use crate::health::{assess, HealthInputs, HealthStatus, HealthThresholds};
use crate::human_serde::human_duration;
use crate::metrics::{Metrics, MetricsConfig};
use crate::resources::ResourceSampler;
use crate::rule::{Rule, RuleConfig};

/// The default address of the HTTP endpoints.
pub const DEFAULT_HTTP_ADDR: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 9464);

/// The `[monitor]` section of the agent config.
///
/// | setting | default | meaning |
/// |---|---|---|
/// | `http_addr` | `127.0.0.1:9464` | where `/metrics` and `/health` are served |
/// | `builtin_rules` | `true` | run the built-in rules (see [`crate::builtin_rules`]) |
/// | `alert_history` | `100` | resolved alerts kept for `trace-agent alerts` |
/// | `resource_interval` | `5s` | how often CPU, memory, files and disk are read |
/// | `metrics` | see [`MetricsConfig`] | window, cardinality caps |
/// | `health` | see [`HealthThresholds`] | thresholds of the degraded checks |
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MonitorConfig {
    /// Address of the HTTP endpoints.
    pub http_addr: SocketAddr,
    /// Run the built-in rules.
    pub builtin_rules: bool,
    /// Resolved alerts kept.
    pub alert_history: usize,
    /// How often resource usage is read.
    #[serde(with = "human_duration")]
    pub resource_interval: Duration,
    /// Metrics settings.
    pub metrics: MetricsConfig,
    /// Health thresholds.
    pub health: HealthThresholds,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            http_addr: DEFAULT_HTTP_ADDR,
            builtin_rules: true,
            alert_history: 100,
            resource_interval: Duration::from_secs(5),
            metrics: MetricsConfig::default(),
            health: HealthThresholds::default(),
        }
    }
}

impl MonitorConfig {
    /// Checks every setting.
    pub fn validate(&self) -> Result<(), MonitorError> {
        self.metrics.validate()?;
        if !(self.health.store_budget_ratio > 0.0 && self.health.store_budget_ratio <= 1.0) {
            return Err(MonitorError::InvalidConfig {
                setting: "health.store_budget_ratio",
                problem: format!("{} is not in (0, 1]", self.health.store_budget_ratio),
            });
        }
        if self.resource_interval < Duration::from_millis(100) {
            return Err(MonitorError::InvalidConfig {
                setting: "resource_interval",
                problem: "must be at least 100ms".into(),
            });
        }
        Ok(())
    }
}

struct Evaluation {
    engine: RuleEngine,
    book: AlertBook,
}

struct Sampling {
    sampler: ResourceSampler,
    last: Option<DateTime<Utc>>,
}

/// Metrics, rules, alerts and health of one agent. Thread-safe: share it in an `Arc`.
pub struct Monitor {
    config: MonitorConfig,
    metrics: Metrics,
    max_disk_bytes: Option<u64>,
    evaluation: Mutex<Evaluation>,
    sampling: Mutex<Sampling>,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Monitor {
    /// Validates the config and the rules (refusing a bad rule with its name) and sets up
    /// the metrics. `data_dir` is where resource usage measures disk; `max_disk_bytes` is
    /// the store's budget (the `store_near_budget` rule and the disk check use it).
    pub fn new(
        config: MonitorConfig,
        rules: &[RuleConfig],
        data_dir: Option<PathBuf>,
        max_disk_bytes: Option<u64>,
    ) -> Result<Self, MonitorError> {
        config.validate()?;
        let engine = RuleEngine::from_config(rules, config.builtin_rules)?;
        let metrics = Metrics::new(config.metrics.clone())?;
        metrics.set_store_budget(max_disk_bytes);
        Ok(Monitor {
            evaluation: Mutex::new(Evaluation {
                engine,
                book: AlertBook::new(config.alert_history),
            }),
            sampling: Mutex::new(Sampling {
                sampler: ResourceSampler::new(data_dir),
                last: None,
            }),
            max_disk_bytes,
            metrics,
            config,
        })
    }

    /// The settings in use.
    pub fn config(&self) -> &MonitorConfig {
        &self.config
    }

    /// The metrics to feed (counters, gauges, entries) and read.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The rules in force (built-ins merged with the config).
    pub fn rules(&self) -> Vec<Rule> {
        lock(&self.evaluation).engine.rules().to_vec()
    }

    /// One monitoring step at `now`: reads resource usage when `resource_interval` has
    /// passed (blocking: it walks the data directory), refreshes the derived metrics,
    /// evaluates the rules and files the resulting alerts in the book. Returns the
    /// notifications to publish on `trace.alerts.<severity>` and record as entries
    /// ([`crate::Alert::to_trace_entry`]).
    pub fn tick(&self, now: DateTime<Utc>) -> Vec<AlertEvent> {
        {
            let mut sampling = lock(&self.sampling);
            let due = sampling.last.is_none_or(|last| {
                (now - last).to_std().unwrap_or_default() >= self.config.resource_interval
            });
            if due {
                let usage = sampling.sampler.sample(now);
                sampling.last = Some(now);
                self.metrics.set_resources(&usage);
            }
        }
        self.metrics.refresh(now);
        let samples = self.metrics.samples();
        let mut evaluation = lock(&self.evaluation);
        let events = evaluation.engine.evaluate(now, &samples);
        evaluation.book.apply(&events);
        events
    }

    /// What health looks at, from the metrics as last fed and refreshed.
    pub fn health_inputs(&self) -> HealthInputs {
        let (store_bytes, budget) = self.metrics.store_usage();
        HealthInputs {
            nats: self.metrics.nats_state(),
            consumer_lag: self.metrics.consumer_lag_value(),
            store_write: self.metrics.store_write_state(),
            store_bytes,
            max_disk_bytes: budget.or(self.max_disk_bytes),
            resources: self.metrics.resources(),
            sources: self.metrics.sources(),
        }
    }

    /// The health report at `now`.
    pub fn health(&self, now: DateTime<Utc>) -> HealthStatus {
        assess(&self.health_inputs(), &self.config.health, now)
    }

    /// Firing alerts (as of their last notification) and recently resolved ones.
    pub fn alerts(&self) -> AlertList {
        lock(&self.evaluation).book.list()
    }

    /// `/metrics` at `now`: derived series refreshed, then the Prometheus text format.
    pub fn prometheus_text(&self, now: DateTime<Utc>) -> Result<String, MonitorError> {
        self.metrics.refresh(now);
        self.metrics.encode_prometheus()
    }
}

/// What the HTTP endpoints serve; [`Monitor`] implements it with the wall clock, and a
/// binary with its own state can too.
pub trait MonitorSource: Send + Sync + 'static {
    /// The `/metrics` body (Prometheus text format 0.0.4).
    fn current_metrics_text(&self) -> Result<String, MonitorError>;
    /// The current health report.
    fn current_health(&self) -> HealthStatus;
}

impl MonitorSource for Monitor {
    fn current_metrics_text(&self) -> Result<String, MonitorError> {
        self.prometheus_text(Utc::now())
    }

    fn current_health(&self) -> HealthStatus {
        self.health(Utc::now())
    }
}
