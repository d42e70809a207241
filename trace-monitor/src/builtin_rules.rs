//! The rules every agent runs unless the config turns them off (`enabled = false`) or
//! overrides them by name (only the fields set change).
//!
//! | name | metric | condition | for | severity | renotify |
//! |---|---|---|---|---|---|
//! | `source_silent` | `trace_source_last_seen_seconds` | `> 60` (s since a known source's last entry) | `0s` | warn | never |
//! | `source_error_rate_high` | `trace_source_error_ratio` | `> 0.05` (over the window, at least `min_events_for_ratio` entries) | `1m` | error | never |
//! | `consumer_lag_high` | `trace_agent_consumer_lag` | `> 10000` messages | `1m` | warn | never |
//! | `store_near_budget` | `trace_agent_store_budget_ratio` | `> 0.95` of `max_disk_bytes` | `2m` | warn | never |
//! | `store_write_failures` | `trace_agent_store_write_failures_recent` | `> 0` failures in the window | `0s` | critical | `10m` |
//! | `quarantine_ratio_high` | `trace_agent_quarantine_ratio` | `> 0.01` of received (at least `min_events_for_ratio` received) | `1m` | warn | never |
//! | `quarantine_rate_high` | `trace_agent_events_quarantined_per_second` | `> 10` per second | `1m` | warn | never |
//!
//! A store that retention keeps at its budget hovers between 7/8 and all of it (segments are
//! sealed at an eighth of the budget), so `store_near_budget` waits two minutes above 95 %:
//! it reports retention not keeping up, not retention working.
//! `store_near_budget` only has a series to look at when the store has a budget; a source
//! stops being watched by `source_silent` once it is forgotten (`source_forget_after`).

use crate::catalogue::names;
use crate::rule::RuleConfig;

/// Names of the built-in rules.
pub mod builtin_names {
    /// A known source sent nothing for too long.
    pub const SOURCE_SILENT: &str = "source_silent";
    /// A source's share of error entries is too high.
    pub const SOURCE_ERROR_RATE_HIGH: &str = "source_error_rate_high";
    /// The consumer is far behind the stream.
    pub const CONSUMER_LAG_HIGH: &str = "consumer_lag_high";
    /// The store is close to its disk budget.
    pub const STORE_NEAR_BUDGET: &str = "store_near_budget";
    /// Store writes fail.
    pub const STORE_WRITE_FAILURES: &str = "store_write_failures";
    /// Too large a share of messages is quarantined.
    pub const QUARANTINE_RATIO_HIGH: &str = "quarantine_ratio_high";
    /// Too many messages per second are quarantined.
    pub const QUARANTINE_RATE_HIGH: &str = "quarantine_rate_high";
}

#[allow(clippy::too_many_arguments)]
fn rule(
    name: &str,
    metric: &str,
    op: &str,
    value: f64,
    for_duration: &str,
    severity: &str,
    message: &str,
    renotify: Option<&str>,
) -> RuleConfig {
    RuleConfig {
        name: name.to_string(),
        enabled: Some(true),
        metric: Some(metric.to_string()),
        op: Some(op.to_string()),
        value: Some(value),
        for_duration: Some(for_duration.to_string()),
        severity: Some(severity.to_string()),
        message: Some(message.to_string()),
        renotify: renotify.map(str::to_string),
    }
}

/// The built-in rules, as config (see the module docs for the table).
pub fn builtin_rules() -> Vec<RuleConfig> {
    use builtin_names::*;
    vec![
        rule(
            SOURCE_SILENT,
            names::SOURCE_LAST_SEEN,
            ">",
            60.0,
            "0s",
            "warn",
            "source {{labels.source}} silent for {{value}}s (threshold {{threshold}}s)",
            None,
        ),
        rule(
            SOURCE_ERROR_RATE_HIGH,
            names::SOURCE_ERROR_RATIO,
            ">",
            0.05,
            "1m",
            "error",
            "source {{labels.source}}: error ratio {{value}} over the window (threshold {{threshold}})",
            None,
        ),
        rule(
            CONSUMER_LAG_HIGH,
            names::CONSUMER_LAG,
            ">",
            10_000.0,
            "1m",
            "warn",
            "consumer is {{value}} messages behind (threshold {{threshold}})",
            None,
        ),
        rule(
            STORE_NEAR_BUDGET,
            names::STORE_BUDGET_RATIO,
            ">",
            0.95,
            "2m",
            "warn",
            "store uses {{value}} of its disk budget (threshold {{threshold}})",
            None,
        ),
        rule(
            STORE_WRITE_FAILURES,
            names::RECENT_WRITE_FAILURES,
            ">",
            0.0,
            "0s",
            "critical",
            "{{value}} store write failures in the last window",
            Some("10m"),
        ),
        rule(
            QUARANTINE_RATIO_HIGH,
            names::QUARANTINE_RATIO,
            ">",
            0.01,
            "1m",
            "warn",
            "{{value}} of received messages quarantined over the window (threshold {{threshold}})",
            None,
        ),
        rule(
            QUARANTINE_RATE_HIGH,
            names::QUARANTINED_RATE,
            ">",
            10.0,
            "1m",
            "warn",
            "{{value}} messages quarantined per second (threshold {{threshold}})",
            None,
        ),
    ]
}
