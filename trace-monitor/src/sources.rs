//! What the agent knows of each source: totals, the last arrival (heartbeat), and windowed
//! rates; bounded so a publisher inventing source names cannot grow memory or label
//! cardinality without limit.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::window::CounterWindow;

/// The label value that sources and types beyond the caps are folded into.
pub const OTHER: &str = "other";

/// One source as seen at the last refresh.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceActivity {
    /// The source name (`other` for the folded remainder).
    pub source: String,
    /// Entries recorded since the agent started.
    pub events_total: u64,
    /// Entries of severity error or critical since the agent started.
    pub errors_total: u64,
    /// When its last entry arrived (agent clock, not the entry's own `ts`).
    pub last_seen: DateTime<Utc>,
    /// Seconds from `last_seen` to the refresh.
    pub seconds_silent: f64,
    /// Entries per second over the window (`None` until a second of history exists).
    pub events_per_second: Option<f64>,
    /// Errors over entries in the window (`None` below the minimum event count).
    pub error_ratio: Option<f64>,
    /// Entries in the window.
    pub window_events: u64,
    /// True for the `other` bucket, which is not a real source and has no heartbeat.
    pub folded: bool,
}

#[derive(Debug)]
struct SourceState {
    events: u64,
    errors: u64,
    last_seen: DateTime<Utc>,
    types: HashSet<String>,
    window: CounterWindow<2>,
    activity: Option<SourceActivity>,
}

/// Limits of the source book.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SourceLimits {
    pub max_sources: usize,
    pub max_types_per_source: usize,
    pub window: Duration,
    pub forget_after: Duration,
    pub error_ratio_min_events: u64,
}

/// Per-source state; one lock in `Metrics` guards it.
#[derive(Debug)]
pub(crate) struct SourceBook {
    limits: SourceLimits,
    sources: HashMap<String, SourceState>,
}

/// The label values an entry is counted under.
pub(crate) struct Admitted<'a> {
    pub source: &'a str,
    pub event_type: &'a str,
}

/// A source dropped after `forget_after` of silence, with the types it was counted under.
pub(crate) struct Forgotten {
    pub source: String,
    pub types: Vec<String>,
}

impl SourceBook {
    pub fn new(limits: SourceLimits) -> Self {
        SourceBook {
            limits,
            sources: HashMap::new(),
        }
    }

    /// Counts one entry; returns the (possibly folded) label values to count it under.
    pub fn observe<'a>(
        &mut self,
        source: &'a str,
        event_type: &'a str,
        is_error: bool,
        now: DateTime<Utc>,
    ) -> Admitted<'a> {
        let named = self.sources.contains_key(source)
            || (source != OTHER && self.named_count() < self.limits.max_sources);
        let key = if named { source } else { OTHER };
        if !self.sources.contains_key(key) {
            let window = self.limits.window;
            self.sources.insert(
                key.to_string(),
                SourceState {
                    events: 0,
                    errors: 0,
                    last_seen: now,
                    types: HashSet::new(),
                    window: CounterWindow::starting_at(window, now, [0, 0]),
                    activity: None,
                },
            );
        }
        let Some(state) = self.sources.get_mut(key) else {
            // Inserted just above.
            return Admitted {
                source: OTHER,
                event_type: OTHER,
            };
        };
        state.events += 1;
        if is_error {
            state.errors += 1;
        }
        state.last_seen = state.last_seen.max(now);
        let type_label = if state.types.contains(event_type) {
            event_type
        } else if state.types.len() < self.limits.max_types_per_source {
            state.types.insert(event_type.to_string());
            event_type
        } else {
            state.types.insert(OTHER.to_string());
            OTHER
        };
        Admitted {
            source: if named { source } else { OTHER },
            event_type: type_label,
        }
    }

    fn named_count(&self) -> usize {
        self.sources.len() - usize::from(self.sources.contains_key(OTHER))
    }

    /// Recomputes every source's activity at `now` and forgets sources silent for longer
    /// than `forget_after`.
    pub fn refresh(&mut self, now: DateTime<Utc>) -> Vec<Forgotten> {
        let forget_ms = i64::try_from(self.limits.forget_after.as_millis()).unwrap_or(i64::MAX);
        let stale: Vec<String> = self
            .sources
            .iter()
            .filter(|(_, s)| (now - s.last_seen).num_milliseconds() > forget_ms)
            .map(|(name, _)| name.clone())
            .collect();
        let mut forgotten = Vec::with_capacity(stale.len());
        for name in stale {
            if let Some(state) = self.sources.remove(&name) {
                forgotten.push(Forgotten {
                    source: name,
                    types: state.types.into_iter().collect(),
                });
            }
        }
        let min_events = self.limits.error_ratio_min_events;
        for (name, state) in &mut self.sources {
            let increase = state.window.update(now, [state.events, state.errors]);
            let window_events = increase.map_or(0, |i| i.delta[0]);
            state.activity = Some(SourceActivity {
                source: name.clone(),
                events_total: state.events,
                errors_total: state.errors,
                last_seen: state.last_seen,
                seconds_silent: ((now - state.last_seen).num_milliseconds().max(0) as f64) / 1000.0,
                events_per_second: increase.map(|i| i.rate(0)),
                error_ratio: increase
                    .filter(|i| i.delta[0] > 0 && i.delta[0] >= min_events)
                    .map(|i| i.delta[1] as f64 / i.delta[0] as f64),
                window_events,
                folded: name == OTHER,
            });
        }
        forgotten
    }

    /// Every source's activity as of the last refresh, by name.
    pub fn activity(&self) -> Vec<SourceActivity> {
        let mut out: Vec<SourceActivity> = self
            .sources
            .values()
            .filter_map(|s| s.activity.clone())
            .collect();
        out.sort_by(|a, b| a.source.cmp(&b.source));
        out
    }
}
