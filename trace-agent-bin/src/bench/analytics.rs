//! Analytics throughput: events per second through the live `Analyzer` (stats, performance,
//! players, patterns, trends, anomalies) on one core; only `observe` is timed.

use std::time::{Duration, Instant};

use trace_analytics::{AnalyticsConfig, Analyzer};

use super::workload::Workload;

/// Feeds `n` simulated events to a default `Analyzer`; returns events per second.
pub(crate) fn throughput(n: u64) -> f64 {
    let mut analyzer = Analyzer::new(AnalyticsConfig::default());
    let mut workload = Workload::new(n);
    let mut busy = Duration::ZERO;
    loop {
        let entries = workload.next_entries();
        if entries.is_empty() {
            break;
        }
        let started = Instant::now();
        for e in &entries {
            analyzer.observe(e);
        }
        busy += started.elapsed();
    }
    analyzer.events() as f64 / busy.as_secs_f64().max(1e-9)
}
