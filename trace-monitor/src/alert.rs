//! Alerts: what a rule says when it fires, re-notifies or resolves, in a form the binary
//! publishes on `trace.alerts.<severity>` and records as a `trace.alert` entry.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use rmpv::Value;
use serde::{Deserialize, Serialize};
use trace_core::{Category, EventId, Severity, TraceEntry};

use crate::rule::Comparison;

/// The `type` of the trace entries alerts are recorded as.
pub const ALERT_EVENT_TYPE: &str = "trace.alert";
/// The `source` of those entries.
pub const ALERT_SOURCE: &str = "trace-agent";
/// Subjects alerts are published on: `trace.alerts.<severity>`.
pub const ALERT_SUBJECT_PREFIX: &str = "trace.alerts";

/// Where an alert is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// The condition held for the rule's `for` duration and still holds.
    Firing,
    /// The condition no longer holds.
    Resolved,
}

impl AlertState {
    /// `firing` or `resolved`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }
}

/// One alert: a rule and the series (label set) it fired for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// The rule's name.
    pub rule: String,
    /// The rule's severity.
    pub severity: Severity,
    /// Firing or resolved.
    pub state: AlertState,
    /// The metric the rule watches.
    pub metric: String,
    /// The series' labels (e.g. `source`).
    pub labels: BTreeMap<String, String>,
    /// The last value seen while the condition held.
    pub value: f64,
    /// The comparison.
    pub op: Comparison,
    /// The rule's threshold.
    pub threshold: f64,
    /// The rendered message.
    pub message: String,
    /// When it started firing.
    pub started_at: DateTime<Utc>,
    /// When it resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<DateTime<Utc>>,
    /// When this notification (firing, re-notify or resolved) was made.
    pub notified_at: DateTime<Utc>,
}

/// Why an alert is being announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertEventKind {
    /// It just started firing.
    Firing,
    /// Still firing after the rule's `renotify` interval.
    Renotify,
    /// It stopped firing.
    Resolved,
}

/// A notification the engine produced: publish and record each one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertEvent {
    /// Firing, renotify or resolved.
    pub kind: AlertEventKind,
    /// The alert as of this notification.
    pub alert: Alert,
}

fn time_text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl Alert {
    /// The subject to publish it on: `trace.alerts.<severity>`.
    pub fn subject(&self) -> String {
        format!("{ALERT_SUBJECT_PREFIX}.{}", self.severity)
    }

    /// The alert as a msgpack map with the same keys as its JSON form.
    pub fn to_msgpack(&self) -> Value {
        let s = |v: &str| Value::from(v);
        let labels = Value::Map(self.labels.iter().map(|(k, v)| (s(k), s(v))).collect());
        let mut map = vec![
            (s("rule"), s(&self.rule)),
            (s("severity"), s(self.severity.as_str())),
            (s("state"), s(self.state.as_str())),
            (s("metric"), s(&self.metric)),
            (s("labels"), labels),
            (s("value"), Value::from(self.value)),
            (s("op"), s(self.op.as_str())),
            (s("threshold"), Value::from(self.threshold)),
            (s("message"), s(&self.message)),
            (s("started_at"), s(&time_text(self.started_at))),
        ];
        if let Some(resolved) = self.resolved_at {
            map.push((s("resolved_at"), s(&time_text(resolved))));
        }
        map.push((s("notified_at"), s(&time_text(self.notified_at))));
        Value::Map(map)
    }

    /// The trace entry recording this notification: type `trace.alert`, source
    /// `trace-agent`, category `system_event`, the rule's severity, `ts` = when it was
    /// notified, `data` = the alert as a msgpack map, `metrics` = value and threshold.
    ///
    /// The id is derived from the rule, labels, state and time, so recording the same
    /// notification twice stores it once.
    pub fn to_trace_entry(&self) -> TraceEntry {
        let mut key = format!("{}\u{0}{}", self.rule, self.state.as_str());
        for (k, v) in &self.labels {
            key.push('\u{0}');
            key.push_str(k);
            key.push('=');
            key.push_str(v);
        }
        key.push('\u{0}');
        key.push_str(&time_text(self.notified_at));
        let ms = u64::try_from(self.notified_at.timestamp_millis()).unwrap_or(0);
        let mut entry = TraceEntry::new(ALERT_EVENT_TYPE, ALERT_SOURCE);
        entry.id = EventId::derived(ms, key.as_bytes());
        entry.ts = self.notified_at;
        entry.category = Category::SystemEvent;
        entry.severity = self.severity;
        entry.metrics.insert("value".into(), self.value);
        entry.metrics.insert("threshold".into(), self.threshold);
        entry.data = self.to_msgpack();
        entry
    }
}
