//! Shared helpers: a fixed clock and entry builders.

use chrono::{DateTime, TimeZone, Utc};
use trace_core::{Severity, TraceEntry};

/// A fixed instant plus `secs` seconds: tests move time by hand.
pub fn t(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0)
        .single()
        .expect("valid time")
        + chrono::Duration::seconds(secs)
}

/// An entry of `event_type` from `source` at `severity`.
pub fn entry(source: &str, event_type: &str, severity: Severity) -> TraceEntry {
    let mut e = TraceEntry::new(event_type, source);
    e.severity = severity;
    e
}
