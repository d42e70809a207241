//! # trace-monitor: the agent watching itself and what it records
//!
//! Data flows one way: the binary feeds [`Metrics`] (counters and gauges from the recorder,
//! the consumer and the store, plus every recorded [`TraceEntry`](trace_core::TraceEntry)),
//! calls [`Monitor::tick`] about once a second, and publishes and records the
//! [`AlertEvent`]s it returns. Health and `/metrics` read the same state.
//!
//! ```text
//! recorder ──add_received / add_stored / observe_entries──▶ Metrics ──samples──▶ RuleEngine ──▶ AlertEvent
//! consumer ──set_consumer_lag / set_nats_connected──────────▶   │                               │
//! store ─────set_store_usage / record_store_write_*─────────▶   │                           AlertBook
//! ResourceSampler (every resource_interval) ──set_resources──▶   ├──▶ /metrics (Prometheus text)
//!                                                                └──▶ HealthInputs ──assess──▶ HealthStatus ──▶ /health
//! ```
//!
//! Modules (private; the types are re-exported here):
//! - `catalogue`: every metric name, its labels and help ([`CATALOGUE`], [`names`]).
//! - `metrics`: [`Metrics`], the Prometheus registry, per-source bookkeeping with bounded
//!   cardinality, sliding-window rates, [`Sample`] snapshots for rules.
//! - `sources`, `window`: per-source state ([`SourceActivity`]) and counter windows.
//! - `resources`: [`ResourceSampler`] and [`ResourceUsage`] (CPU %, RSS, open files, data
//!   dir bytes, free disk; Linux first, `None` where unreadable).
//! - `rule`, `selector`, `template`, `builtin_rules`: [`RuleConfig`] from the config file,
//!   validated into [`Rule`]s; metric selectors with label matchers; message templates; the
//!   built-in rules ([`builtin_rules()`], table below).
//! - `engine`: [`RuleEngine`], the pending -> firing -> resolved lifecycle at an explicit `now`.
//! - `alert`, `alert_book`: [`Alert`] (with [`Alert::to_trace_entry`]) and [`AlertBook`].
//! - `health`: [`HealthInputs`], [`assess`], [`HealthStatus`] (table of checks in its docs).
//! - `monitor`: [`Monitor`] ties it together; [`MonitorConfig`] is the `[monitor]` section.
//! - `http` (feature `http`, default): [`bind_http`], [`serve_http`], [`router`].
//!
//! ## Built-in rules
//!
//! | name | metric | condition | for | severity |
//! |---|---|---|---|---|
//! | `source_silent` | `trace_source_last_seen_seconds` | `> 60` | `0s` | warn |
//! | `source_error_rate_high` | `trace_source_error_ratio` | `> 0.05` | `1m` | error |
//! | `consumer_lag_high` | `trace_agent_consumer_lag` | `> 10000` | `1m` | warn |
//! | `store_near_budget` | `trace_agent_store_budget_ratio` | `> 0.95` | `2m` | warn |
//! | `store_write_failures` | `trace_agent_store_write_failures_recent` | `> 0` | `0s` | critical (renotify `10m`) |
//! | `quarantine_ratio_high` | `trace_agent_quarantine_ratio` | `> 0.01` | `1m` | warn |
//! | `quarantine_rate_high` | `trace_agent_events_quarantined_per_second` | `> 10` | `1m` | warn |
//!
//! Ratios are only computed over at least `min_events_for_ratio` (20) events in the window
//! (60 s), so three errors out of five events do not page anyone.
//!
//! ## Defaults
//!
//! | setting | default |
//! |---|---|
//! | HTTP address | `127.0.0.1:9464` |
//! | rate window | `60s` |
//! | distinct sources / types per source | `1000` / `20` (the rest fold into `other`) |
//! | forget a silent source after | `1h` |
//! | resource sampling | every `5s` |
//! | resolved alerts kept | `100` |
//! | health: consumer lag / free disk / budget / silence | `10000` / `512MiB` / `0.9` / `60s` |
#![deny(missing_docs)]

mod alert;
mod alert_book;
mod builtin_rules;
mod catalogue;
mod engine;
mod error;
mod health;
#[cfg(feature = "http")]
mod http;
mod human_serde;
mod metrics;
mod monitor;
mod resources;
mod rule;
mod selector;
mod sources;
mod template;
mod window;

pub use alert::{
    Alert, AlertEvent, AlertEventKind, AlertState, ALERT_EVENT_TYPE, ALERT_SOURCE,
    ALERT_SUBJECT_PREFIX,
};
pub use alert_book::{AlertBook, AlertList};
pub use builtin_rules::{builtin_names, builtin_rules};
pub use catalogue::{lookup as lookup_metric, names, MetricInfo, MetricKind, CATALOGUE};
pub use engine::RuleEngine;
pub use error::MonitorError;
pub use health::{
    assess, ConnectionState, HealthCheck, HealthInputs, HealthLevel, HealthStatus,
    HealthThresholds, StoreWriteState,
};
#[cfg(feature = "http")]
pub use http::{bind_http, router, serve_http};
pub use metrics::{Metrics, MetricsConfig, Sample, PROMETHEUS_CONTENT_TYPE};
pub use monitor::{Monitor, MonitorConfig, MonitorSource, DEFAULT_HTTP_ADDR};
pub use resources::{dir_bytes, ResourceSampler, ResourceUsage};
pub use rule::{compile_rules, Comparison, Rule, RuleConfig, DEFAULT_MESSAGE};
pub use selector::{LabelMatcher, MatchOp, Selector};
pub use sources::{SourceActivity, OTHER};
pub use template::{format_number, Template, TemplateValues};
