//! `RuleEngine`: evaluates rules over a snapshot of samples at an explicit `now`, keeping a
//! lifecycle per (rule, label set):
//!
//! ```text
//! inactive --condition holds--> pending --held for `for`--> firing --condition clears--> resolved
//!                                  |                          |  \__ every `renotify`: renotify
//!                                  '--condition clears--------'(pending: dropped silently)
//! ```
//!
//! Each transition into firing and into resolved is announced exactly once; a series that
//! disappears from the snapshot counts as "condition clears". Time only moves through the
//! `now` argument, so tests drive it without sleeping.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};

use crate::alert::{Alert, AlertEvent, AlertEventKind, AlertState};
use crate::error::MonitorError;
use crate::metrics::Sample;
use crate::rule::{compile_rules, Rule, RuleConfig};

type Labels = BTreeMap<String, String>;

#[derive(Debug, Clone)]
struct SeriesState {
    pending_since: DateTime<Utc>,
    value: f64,
    firing: Option<Firing>,
}

#[derive(Debug, Clone, Copy)]
struct Firing {
    started_at: DateTime<Utc>,
    last_notified: DateTime<Utc>,
}

/// Evaluates threshold rules; see the module docs for the lifecycle.
#[derive(Debug, Clone)]
pub struct RuleEngine {
    rules: Vec<Rule>,
    /// Keyed by rule index and labels; a BTreeMap so events come out in a stable order.
    series: BTreeMap<(usize, Labels), SeriesState>,
}

fn elapsed(from: DateTime<Utc>, to: DateTime<Utc>) -> std::time::Duration {
    (to - from).to_std().unwrap_or_default()
}

impl RuleEngine {
    /// An engine running `rules` (already validated).
    pub fn new(rules: Vec<Rule>) -> Self {
        RuleEngine {
            rules,
            series: BTreeMap::new(),
        }
    }

    /// Validates `configured` (plus the built-ins when `with_builtins`) and builds the
    /// engine; a bad rule is refused with its name and the problem.
    pub fn from_config(
        configured: &[RuleConfig],
        with_builtins: bool,
    ) -> Result<Self, MonitorError> {
        Ok(RuleEngine::new(compile_rules(configured, with_builtins)?))
    }

    /// The rules in evaluation order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Evaluates every rule over `samples` at `now`; returns the notifications to send.
    pub fn evaluate(&mut self, now: DateTime<Utc>, samples: &[Sample]) -> Vec<AlertEvent> {
        let mut events = Vec::new();
        for (index, rule) in self.rules.iter().enumerate() {
            let mut holding: HashSet<&Labels> = HashSet::new();
            for sample in samples {
                if !rule.selector.matches(&sample.name, &sample.labels)
                    || !rule.op.holds(sample.value, rule.threshold)
                {
                    continue;
                }
                holding.insert(&sample.labels);
                let state =
                    self.series
                        .entry((index, sample.labels.clone()))
                        .or_insert(SeriesState {
                            pending_since: now,
                            value: sample.value,
                            firing: None,
                        });
                state.value = sample.value;
                match &mut state.firing {
                    None => {
                        if elapsed(state.pending_since, now) >= rule.for_duration {
                            state.firing = Some(Firing {
                                started_at: now,
                                last_notified: now,
                            });
                            events.push(AlertEvent {
                                kind: AlertEventKind::Firing,
                                alert: alert(rule, &sample.labels, state, now, None),
                            });
                        }
                    }
                    Some(firing) => {
                        if let Some(every) = rule.renotify {
                            if elapsed(firing.last_notified, now) >= every {
                                firing.last_notified = now;
                                events.push(AlertEvent {
                                    kind: AlertEventKind::Renotify,
                                    alert: alert(rule, &sample.labels, state, now, None),
                                });
                            }
                        }
                    }
                }
            }
            let cleared: Vec<Labels> = self
                .series
                .range((index, Labels::new())..)
                .take_while(|((i, _), _)| *i == index)
                .filter(|((_, labels), _)| !holding.contains(labels))
                .map(|((_, labels), _)| labels.clone())
                .collect();
            for labels in cleared {
                if let Some(state) = self.series.remove(&(index, labels.clone())) {
                    if state.firing.is_some() {
                        events.push(AlertEvent {
                            kind: AlertEventKind::Resolved,
                            alert: alert(rule, &labels, &state, now, Some(now)),
                        });
                    }
                }
            }
        }
        events
    }

    /// Alerts firing now, with their latest values.
    pub fn firing(&self) -> Vec<Alert> {
        self.series
            .iter()
            .filter_map(|((index, labels), state)| {
                let firing = state.firing?;
                let rule = self.rules.get(*index)?;
                Some(alert(rule, labels, state, firing.last_notified, None))
            })
            .collect()
    }

    /// How many series are pending (condition holds, `for` not elapsed yet).
    pub fn pending_count(&self) -> usize {
        self.series.values().filter(|s| s.firing.is_none()).count()
    }
}

fn alert(
    rule: &Rule,
    labels: &Labels,
    state: &SeriesState,
    notified_at: DateTime<Utc>,
    resolved_at: Option<DateTime<Utc>>,
) -> Alert {
    Alert {
        rule: rule.name.clone(),
        severity: rule.severity,
        state: if resolved_at.is_some() {
            AlertState::Resolved
        } else {
            AlertState::Firing
        },
        metric: rule.selector.metric.clone(),
        labels: labels.clone(),
        value: state.value,
        op: rule.op,
        threshold: rule.threshold,
        message: rule.render_message(state.value, labels),
        started_at: state.firing.map_or(notified_at, |f| f.started_at),
        resolved_at,
        notified_at,
    }
}
