//! The metric catalogue: every series the agent exports on `/metrics`, which rules may name.

/// How a metric behaves, as Prometheus types it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up (resets on restart).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations in buckets; rules see `<name>_count` and `<name>_sum`.
    Histogram,
}

/// One entry of the catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricInfo {
    /// The exported name (also what rules use).
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: MetricKind,
    /// Label names the series carry.
    pub labels: &'static [&'static str],
    /// The HELP text.
    pub help: &'static str,
}

macro_rules! names {
    ($($(#[$doc:meta])* $id:ident = $name:literal;)*) => {
        $($(#[$doc])* pub const $id: &str = $name;)*
    };
}

/// Metric names as constants, so the code and the rules agree on spelling.
pub mod names {
    names! {
        /// Messages taken from the consumer.
        EVENTS_RECEIVED = "trace_agent_events_received_total";
        /// Entries durably stored.
        EVENTS_STORED = "trace_agent_events_stored_total";
        /// Messages quarantined, by decode error kind.
        EVENTS_QUARANTINED = "trace_agent_events_quarantined_total";
        /// Batches written.
        BATCHES = "trace_agent_batches_total";
        /// Time to decode, store and flush one batch.
        BATCH_DURATION = "trace_agent_batch_duration_seconds";
        /// Time to ack one batch.
        ACK_DURATION = "trace_agent_ack_duration_seconds";
        /// Messages the consumer has not received yet.
        CONSUMER_LAG = "trace_agent_consumer_lag";
        /// Bytes the store occupies.
        STORE_BYTES = "trace_agent_store_bytes";
        /// Segments in the store.
        STORE_SEGMENTS = "trace_agent_store_segments";
        /// Store writes (append or flush) that failed.
        STORE_WRITE_FAILURES = "trace_agent_store_write_failures_total";
        /// The store's disk budget (`max_disk_bytes`), 0 when there is none.
        STORE_BUDGET_BYTES = "trace_agent_store_budget_bytes";
        /// Store bytes over the budget.
        STORE_BUDGET_RATIO = "trace_agent_store_budget_ratio";
        /// 1 while connected to NATS, else 0.
        NATS_CONNECTED = "trace_agent_nats_connected";
        /// Received messages per second over the window.
        RECEIVED_RATE = "trace_agent_events_received_per_second";
        /// Quarantined messages per second over the window.
        QUARANTINED_RATE = "trace_agent_events_quarantined_per_second";
        /// Quarantined over received, over the window.
        QUARANTINE_RATIO = "trace_agent_quarantine_ratio";
        /// Store write failures within the window.
        RECENT_WRITE_FAILURES = "trace_agent_store_write_failures_recent";
        /// CPU used by the agent, percent of one core.
        CPU_PERCENT = "trace_agent_cpu_percent";
        /// Resident memory of the agent.
        RSS_BYTES = "trace_agent_rss_bytes";
        /// Open file descriptors of the agent.
        OPEN_FILES = "trace_agent_open_files";
        /// Bytes on disk under the data directory.
        DATA_DIR_BYTES = "trace_agent_data_dir_bytes";
        /// Free bytes (for unprivileged users) on the data directory's file system.
        DISK_FREE_BYTES = "trace_agent_disk_free_bytes";
        /// Entries recorded per source and type.
        SOURCE_EVENTS = "trace_source_events_total";
        /// Entries with severity error or critical, per source.
        SOURCE_ERRORS = "trace_source_errors_total";
        /// Seconds since the source's last entry arrived.
        SOURCE_LAST_SEEN = "trace_source_last_seen_seconds";
        /// Unix time of the source's last entry.
        SOURCE_LAST_SEEN_TIMESTAMP = "trace_source_last_seen_timestamp_seconds";
        /// Entries per second per source, over the window.
        SOURCE_RATE = "trace_source_events_per_second";
        /// Errors over entries per source, over the window.
        SOURCE_ERROR_RATIO = "trace_source_error_ratio";
    }
}

use names::*;
use MetricKind::{Counter, Gauge, Histogram};

const NONE: &[&str] = &[];
const SOURCE: &[&str] = &["source"];

/// The whole catalogue, in the order `/metrics` lists it.
#[rustfmt::skip]
pub const CATALOGUE: &[MetricInfo] = &[
    MetricInfo { name: EVENTS_RECEIVED, kind: Counter, labels: NONE, help: "Messages taken from the JetStream consumer." },
    MetricInfo { name: EVENTS_STORED, kind: Counter, labels: NONE, help: "Entries durably stored." },
    MetricInfo { name: EVENTS_QUARANTINED, kind: Counter, labels: &["kind"], help: "Messages quarantined, by decode error kind." },
    MetricInfo { name: BATCHES, kind: Counter, labels: NONE, help: "Batches written to the store." },
    MetricInfo { name: BATCH_DURATION, kind: Histogram, labels: NONE, help: "Seconds to decode, store and flush one batch." },
    MetricInfo { name: ACK_DURATION, kind: Histogram, labels: NONE, help: "Seconds to ack one batch." },
    MetricInfo { name: CONSUMER_LAG, kind: Gauge, labels: NONE, help: "Messages in the stream the consumer has not received yet." },
    MetricInfo { name: STORE_BYTES, kind: Gauge, labels: NONE, help: "Bytes the store occupies on disk." },
    MetricInfo { name: STORE_SEGMENTS, kind: Gauge, labels: NONE, help: "Segments in the store." },
    MetricInfo { name: STORE_WRITE_FAILURES, kind: Counter, labels: NONE, help: "Store writes (append or flush) that failed." },
    MetricInfo { name: STORE_BUDGET_BYTES, kind: Gauge, labels: NONE, help: "The store's disk budget (max_disk_bytes); 0 when unlimited." },
    MetricInfo { name: STORE_BUDGET_RATIO, kind: Gauge, labels: NONE, help: "Store bytes divided by the disk budget (absent when unlimited)." },
    MetricInfo { name: NATS_CONNECTED, kind: Gauge, labels: NONE, help: "1 while connected to NATS, else 0." },
    MetricInfo { name: RECEIVED_RATE, kind: Gauge, labels: NONE, help: "Messages received per second over the rate window." },
    MetricInfo { name: QUARANTINED_RATE, kind: Gauge, labels: NONE, help: "Messages quarantined per second over the rate window." },
    MetricInfo { name: QUARANTINE_RATIO, kind: Gauge, labels: NONE, help: "Quarantined over received messages in the rate window (absent below the minimum count)." },
    MetricInfo { name: RECENT_WRITE_FAILURES, kind: Gauge, labels: NONE, help: "Store write failures within the rate window." },
    MetricInfo { name: CPU_PERCENT, kind: Gauge, labels: NONE, help: "CPU used by the agent process, percent of one core." },
    MetricInfo { name: RSS_BYTES, kind: Gauge, labels: NONE, help: "Resident memory of the agent process." },
    MetricInfo { name: OPEN_FILES, kind: Gauge, labels: NONE, help: "Open file descriptors of the agent process." },
    MetricInfo { name: DATA_DIR_BYTES, kind: Gauge, labels: NONE, help: "Bytes allocated on disk under the data directory." },
    MetricInfo { name: DISK_FREE_BYTES, kind: Gauge, labels: NONE, help: "Bytes available to the agent on the data directory's file system." },
    MetricInfo { name: SOURCE_EVENTS, kind: Counter, labels: &["source", "type"], help: "Entries recorded per source and event type (bounded: excess sources and types fold into \"other\")." },
    MetricInfo { name: SOURCE_ERRORS, kind: Counter, labels: SOURCE, help: "Entries of severity error or critical per source." },
    MetricInfo { name: SOURCE_LAST_SEEN, kind: Gauge, labels: SOURCE, help: "Seconds since the source's last entry arrived (heartbeat freshness)." },
    MetricInfo { name: SOURCE_LAST_SEEN_TIMESTAMP, kind: Gauge, labels: SOURCE, help: "Unix time at which the source's last entry arrived." },
    MetricInfo { name: SOURCE_RATE, kind: Gauge, labels: SOURCE, help: "Entries per second per source over the rate window." },
    MetricInfo { name: SOURCE_ERROR_RATIO, kind: Gauge, labels: SOURCE, help: "Errors over entries per source in the rate window (absent below the minimum count)." },
];

/// The catalogue entry a rule's metric name refers to. Histograms are named by their
/// `_count` or `_sum` series.
pub fn lookup(name: &str) -> Option<&'static MetricInfo> {
    CATALOGUE.iter().find(|m| match m.kind {
        MetricKind::Histogram => name
            .strip_prefix(m.name)
            .is_some_and(|rest| rest == "_count" || rest == "_sum"),
        _ => m.name == name,
    })
}

/// The names rules may use, for error messages.
pub fn rule_metric_names() -> Vec<String> {
    CATALOGUE
        .iter()
        .flat_map(|m| match m.kind {
            MetricKind::Histogram => vec![format!("{}_count", m.name), format!("{}_sum", m.name)],
            _ => vec![m.name.to_string()],
        })
        .collect()
}
