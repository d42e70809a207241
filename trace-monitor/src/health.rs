//! Health: one check per part of the agent, rolled up into healthy / degraded / unhealthy.
//!
//! | check | unhealthy when | degraded when |
//! |---|---|---|
//! | `nats` | not connected (still connecting, or disconnected) | never |
//! | `consumer_lag` | never | lag above `max_consumer_lag`, or not measured |
//! | `store` | the last write failed | never |
//! | `disk` | never | free space below `min_free_disk_bytes`, or store bytes above `store_budget_ratio` of `max_disk_bytes` |
//! | `process` | never | never (reports CPU, memory, open files) |
//! | `source:<name>` | never | no entry for longer than `source_silence` |
//!
//! The overall status is the worst check. *Ready* (for `/health/ready`) means NATS is
//! connected and the store is not failing: the agent can record.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use trace_core::human::{format_bytes, format_duration};

use crate::human_serde::{human_bytes, human_duration};
use crate::resources::ResourceUsage;
use crate::sources::SourceActivity;

/// How healthy something is; ordered from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthLevel {
    /// Working as intended.
    Healthy,
    /// Working, but something needs a look (lag, disk, a silent source).
    Degraded,
    /// Not recording (NATS down, store failing).
    Unhealthy,
}

impl HealthLevel {
    /// `healthy`, `degraded` or `unhealthy`.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthLevel::Healthy => "healthy",
            HealthLevel::Degraded => "degraded",
            HealthLevel::Unhealthy => "unhealthy",
        }
    }

    /// The exit code of `trace-agent health`: 0 healthy, 1 degraded, 2 unhealthy.
    pub fn exit_code(self) -> i32 {
        self as i32
    }
}

impl std::fmt::Display for HealthLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The NATS connection as the binary last reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum ConnectionState {
    /// Not connected yet since start.
    Connecting,
    /// Connected.
    Connected,
    /// Lost the connection.
    Disconnected {
        /// Since when.
        since: DateTime<Utc>,
    },
}

/// Whether the store accepts writes, from the last attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum StoreWriteState {
    /// Nothing written since start.
    NotYetWritten,
    /// The last write succeeded.
    Ok {
        /// When.
        at: DateTime<Utc>,
    },
    /// Writes fail.
    Failing {
        /// When the first of the current run of failures happened.
        since: DateTime<Utc>,
        /// The last error.
        error: String,
    },
}

/// Thresholds of the degraded checks.
///
/// | setting | default | check |
/// |---|---|---|
/// | `max_consumer_lag` | `10000` messages | `consumer_lag` |
/// | `min_free_disk_bytes` | `512MiB` | `disk` |
/// | `store_budget_ratio` | `0.9` | `disk` (store bytes over `max_disk_bytes`) |
/// | `source_silence` | `60s` | `source:<name>` |
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthThresholds {
    /// Consumer lag (messages) above which the agent is degraded.
    pub max_consumer_lag: u64,
    /// Free disk below which the agent is degraded.
    #[serde(with = "human_bytes")]
    pub min_free_disk_bytes: u64,
    /// Fraction of `max_disk_bytes` above which the agent is degraded.
    pub store_budget_ratio: f64,
    /// Silence after which a known source is degraded.
    #[serde(with = "human_duration")]
    pub source_silence: Duration,
}

impl Default for HealthThresholds {
    fn default() -> Self {
        HealthThresholds {
            max_consumer_lag: 10_000,
            min_free_disk_bytes: 512 * 1024 * 1024,
            store_budget_ratio: 0.9,
            source_silence: Duration::from_secs(60),
        }
    }
}

/// Everything health looks at; [`crate::Monitor::health_inputs`] fills it from the metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthInputs {
    /// The NATS connection.
    pub nats: ConnectionState,
    /// Messages the consumer has not received yet (`None`: not measured).
    pub consumer_lag: Option<u64>,
    /// The store's last write.
    pub store_write: StoreWriteState,
    /// Bytes the store occupies.
    pub store_bytes: Option<u64>,
    /// The store's disk budget.
    pub max_disk_bytes: Option<u64>,
    /// The latest resource reading.
    pub resources: Option<ResourceUsage>,
    /// Every known source.
    pub sources: Vec<SourceActivity>,
}

/// One check of the health report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// `nats`, `consumer_lag`, `store`, `disk`, `process` or `source:<name>`.
    pub name: String,
    /// Its status.
    pub status: HealthLevel,
    /// What was found, for people.
    pub message: String,
    /// What was measured, for machines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<serde_json::Value>,
}

/// The health report: overall status, readiness, and every check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthStatus {
    /// The worst status of any check.
    pub status: HealthLevel,
    /// NATS connected and store not failing: the agent can record.
    pub ready: bool,
    /// When the report was made.
    pub checked_at: DateTime<Utc>,
    /// One per part.
    pub checks: Vec<HealthCheck>,
}

impl HealthStatus {
    /// The check called `name`.
    pub fn check(&self, name: &str) -> Option<&HealthCheck> {
        self.checks.iter().find(|c| c.name == name)
    }
}

fn check(
    name: impl Into<String>,
    status: HealthLevel,
    message: impl Into<String>,
    observed: serde_json::Value,
) -> HealthCheck {
    HealthCheck {
        name: name.into(),
        status,
        message: message.into(),
        observed: (!observed.is_null()).then_some(observed),
    }
}

fn seconds_between(from: DateTime<Utc>, to: DateTime<Utc>) -> Duration {
    (to - from).to_std().unwrap_or(Duration::ZERO)
}

fn rounded(d: Duration) -> String {
    format_duration(Duration::from_secs(d.as_secs()))
}

/// Assesses every part at `now`.
pub fn assess(
    inputs: &HealthInputs,
    thresholds: &HealthThresholds,
    now: DateTime<Utc>,
) -> HealthStatus {
    use HealthLevel::*;
    let mut checks = Vec::new();

    checks.push(match &inputs.nats {
        ConnectionState::Connected => {
            check("nats", Healthy, "connected", json!({"connected": true}))
        }
        ConnectionState::Connecting => check(
            "nats",
            Unhealthy,
            "not connected yet",
            json!({"connected": false}),
        ),
        ConnectionState::Disconnected { since } => check(
            "nats",
            Unhealthy,
            format!("disconnected for {}", rounded(seconds_between(*since, now))),
            json!({"connected": false, "since": since}),
        ),
    });

    checks.push(match inputs.consumer_lag {
        None => check(
            "consumer_lag",
            Degraded,
            "consumer lag not measured",
            serde_json::Value::Null,
        ),
        Some(lag) => {
            let status = if lag > thresholds.max_consumer_lag {
                Degraded
            } else {
                Healthy
            };
            check(
                "consumer_lag",
                status,
                format!(
                    "{lag} messages pending (threshold {})",
                    thresholds.max_consumer_lag
                ),
                json!({"pending": lag, "threshold": thresholds.max_consumer_lag}),
            )
        }
    });

    checks.push(match &inputs.store_write {
        StoreWriteState::NotYetWritten => {
            check("store", Healthy, "no writes yet", json!({"writable": true}))
        }
        StoreWriteState::Ok { at } => check(
            "store",
            Healthy,
            format!("last write ok {} ago", rounded(seconds_between(*at, now))),
            json!({"writable": true, "last_write": at}),
        ),
        StoreWriteState::Failing { since, error } => check(
            "store",
            Unhealthy,
            format!(
                "writes failing for {}: {error}",
                rounded(seconds_between(*since, now))
            ),
            json!({"writable": false, "since": since, "error": error}),
        ),
    });

    checks.push(disk_check(inputs, thresholds));
    checks.push(process_check(inputs.resources.as_ref()));

    for source in inputs.sources.iter().filter(|s| !s.folded) {
        let silent = seconds_between(source.last_seen, now);
        let status = if silent > thresholds.source_silence {
            Degraded
        } else {
            Healthy
        };
        let message = if status == Degraded {
            format!(
                "silent for {} (threshold {})",
                rounded(silent),
                format_duration(thresholds.source_silence)
            )
        } else {
            format!("last event {} ago", rounded(silent))
        };
        checks.push(check(
            format!("source:{}", source.source),
            status,
            message,
            json!({
                "seconds_silent": silent.as_secs_f64(),
                "last_seen": source.last_seen,
                "events_per_second": source.events_per_second,
                "error_ratio": source.error_ratio,
            }),
        ));
    }

    let status = checks.iter().map(|c| c.status).max().unwrap_or(Healthy);
    let ready = matches!(inputs.nats, ConnectionState::Connected)
        && !matches!(inputs.store_write, StoreWriteState::Failing { .. });
    HealthStatus {
        status,
        ready,
        checked_at: now,
        checks,
    }
}

fn disk_check(inputs: &HealthInputs, thresholds: &HealthThresholds) -> HealthCheck {
    let r = inputs.resources.as_ref();
    let free = r.and_then(|r| r.disk_free_bytes);
    let observed = json!({
        "free_bytes": free,
        "total_bytes": r.and_then(|r| r.disk_total_bytes),
        "data_dir_bytes": r.and_then(|r| r.data_dir_bytes),
        "store_bytes": inputs.store_bytes,
        "max_disk_bytes": inputs.max_disk_bytes,
    });
    let mut problems = Vec::new();
    if let Some(free) = free.filter(|f| *f < thresholds.min_free_disk_bytes) {
        problems.push(format!(
            "only {} free (threshold {})",
            format_bytes(free),
            format_bytes(thresholds.min_free_disk_bytes)
        ));
    }
    if let (Some(bytes), Some(budget)) = (inputs.store_bytes, inputs.max_disk_bytes) {
        if budget > 0 && bytes as f64 > thresholds.store_budget_ratio * budget as f64 {
            problems.push(format!(
                "store uses {} of its {} budget ({:.0}%)",
                format_bytes(bytes),
                format_bytes(budget),
                bytes as f64 / budget as f64 * 100.0
            ));
        }
    }
    if !problems.is_empty() {
        return check("disk", HealthLevel::Degraded, problems.join("; "), observed);
    }
    let mut parts = Vec::new();
    match free {
        Some(f) => parts.push(format!("{} free", format_bytes(f))),
        None => parts.push("free space unknown".to_string()),
    }
    if let Some(bytes) = inputs.store_bytes {
        match inputs.max_disk_bytes {
            Some(budget) if budget > 0 => parts.push(format!(
                "store {} of {}",
                format_bytes(bytes),
                format_bytes(budget)
            )),
            _ => parts.push(format!("store {}", format_bytes(bytes))),
        }
    }
    check("disk", HealthLevel::Healthy, parts.join(", "), observed)
}

fn process_check(resources: Option<&ResourceUsage>) -> HealthCheck {
    let Some(r) = resources else {
        return check(
            "process",
            HealthLevel::Healthy,
            "resource usage not sampled yet",
            serde_json::Value::Null,
        );
    };
    let mut parts = Vec::new();
    if let Some(cpu) = r.cpu_percent {
        parts.push(format!("cpu {cpu:.1}%"));
    }
    if let Some(rss) = r.rss_bytes {
        parts.push(format!("rss {}", format_bytes(rss)));
    }
    if let Some(files) = r.open_files {
        parts.push(format!("{files} open files"));
    }
    let message = if parts.is_empty() {
        "resource usage not readable on this system".to_string()
    } else {
        parts.join(", ")
    };
    check(
        "process",
        HealthLevel::Healthy,
        message,
        json!({
            "cpu_percent": r.cpu_percent,
            "rss_bytes": r.rss_bytes,
            "open_files": r.open_files,
            "sampled_at": r.sampled_at,
        }),
    )
}
