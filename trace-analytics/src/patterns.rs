//! Patterns: directly-follows transitions per session, frequent sequences (length 2 to 4),
//! story-graph state transitions, and recurring error templates.
//!
//! Frequent sequences and error templates are heavy hitters kept by Space-Saving (Metwally et
//! al. 2005, see `space_saving`): every sequence more frequent than `1 / sequence_counters` of
//! all sequences is listed, with its count overestimated by at most `count_error`. Per-session
//! state (the last three event types) lives in a two-generation cache of at most
//! `max_open_sessions` sessions; an evicted session ends there (its last type counts as an end
//! type) and starts afresh if it shows up again.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use trace_core::{Severity, TraceEntry};

use crate::hashing::{hash_str, FastMap};
use crate::interner::Interner;
use crate::players::is_session_end;
use crate::space_saving::{KeyHash, SpaceSaving};
use crate::templates::{error_message, mask_message};

/// Limits of [`Patterns`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct PatternsConfig {
    /// Event types with their own id (at most 65 534); later types share `(other)`.
    pub max_types: usize,
    /// Sessions whose recent types are kept (two generations of half this size).
    pub max_open_sessions: usize,
    /// Distinct `A -> B` type transitions counted; new pairs past this are counted as dropped.
    pub max_transitions: usize,
    /// Space-Saving counters for sequences of length 2 to 4.
    pub sequence_counters: usize,
    /// Story states with their own id; later states share `(other)`.
    pub max_story_states: usize,
    /// Distinct story transitions counted; new pairs past this are counted as dropped.
    pub max_story_transitions: usize,
    /// Space-Saving counters for error templates.
    pub template_counters: usize,
    /// Rows listed per table in a report.
    pub report_top: usize,
}

impl Default for PatternsConfig {
    fn default() -> Self {
        PatternsConfig {
            max_types: 1024,
            max_open_sessions: 10_000,
            max_transitions: 65_536,
            sequence_counters: 1000,
            max_story_states: 4096,
            max_story_transitions: 65_536,
            template_counters: 256,
            report_top: 50,
        }
    }
}

/// The recent event types of one session, most recent last (codes are type id + 1; 0 = none).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct SessionTail {
    types: [u16; 3],
}

impl SessionTail {
    fn last(&self) -> u16 {
        self.types[2]
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TemplateInfo {
    example: String,
    event_type: String,
    last_seen_ms: i64,
}

/// One `from -> to` transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// From this event type (or story state).
    pub from: String,
    /// To this one.
    pub to: String,
    /// How often.
    pub count: u64,
}

/// A frequent sequence of event types within a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sequence {
    /// The event types, in order (2 to 4).
    pub types: Vec<String>,
    /// How often (an upper bound; exact when `count_error` is 0).
    pub count: u64,
    /// Maximum overcount.
    pub count_error: u64,
}

/// A recurring error message shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorTemplate {
    /// The message with variable parts masked (`<num>`, `<ip>`, ...).
    pub template: String,
    /// How often (an upper bound; exact when `count_error` is 0).
    pub count: u64,
    /// Maximum overcount.
    pub count_error: u64,
    /// The first message seen with this shape.
    pub example: String,
    /// Its event type.
    pub event_type: String,
    /// When it was last seen.
    pub last_seen: Option<DateTime<Utc>>,
}

/// What [`Patterns::report`] returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatternsReport {
    /// Directly-follows transitions between event types within sessions, most frequent first.
    pub transitions: Vec<Transition>,
    /// First event type of each session.
    pub start_types: BTreeMap<String, u64>,
    /// Last event type of each session (open sessions count with their latest type).
    pub end_types: BTreeMap<String, u64>,
    /// Most frequent type sequences of length 2 to 4, most frequent first.
    pub sequences: Vec<Sequence>,
    /// Story-graph state transitions (`data.from -> data.to`), most frequent first.
    pub story_transitions: Vec<Transition>,
    /// Recurring error templates, most frequent first.
    pub error_templates: Vec<ErrorTemplate>,
    /// Events without a session (not part of transitions).
    pub events_without_session: u64,
    /// New transitions not counted because a table was full.
    pub dropped_transitions: u64,
}

/// Streaming pattern mining.
///
/// Bounded state: `max_open_sessions` × 16 B session tails, `max_transitions` and
/// `max_story_transitions` × 16 B counters, `sequence_counters` × ~40 B, `template_counters`
/// × (~100 B + the template and one example message), the type and state names.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Patterns {
    config: PatternsConfig,
    types: Interner,
    young: FastMap<u64, SessionTail>,
    old: FastMap<u64, SessionTail>,
    transitions: FastMap<(u16, u16), u64>,
    starts: Vec<u64>,
    ends: Vec<u64>,
    sequences: SpaceSaving<u64>,
    states: Interner,
    story: FastMap<(u32, u32), u64>,
    templates: SpaceSaving<String, TemplateInfo>,
    events_without_session: u64,
    dropped_transitions: u64,
}

fn bump(table: &mut Vec<u64>, code: u16) {
    let i = usize::from(code);
    if table.len() <= i {
        table.resize(i + 1, 0);
    }
    table[i] += 1;
}

fn pack(codes: &[u16]) -> u64 {
    codes
        .iter()
        .fold(0u64, |acc, c| (acc << 16) | u64::from(*c))
}

impl Patterns {
    /// Empty patterns with these limits.
    pub fn new(config: &PatternsConfig) -> Self {
        Patterns {
            config: config.clone(),
            types: Interner::new(config.max_types.min(65_534)),
            young: FastMap::default(),
            old: FastMap::default(),
            transitions: FastMap::default(),
            starts: Vec::new(),
            ends: Vec::new(),
            sequences: SpaceSaving::new(config.sequence_counters),
            states: Interner::new(config.max_story_states),
            story: FastMap::default(),
            templates: SpaceSaving::new(config.template_counters),
            events_without_session: 0,
            dropped_transitions: 0,
        }
    }

    /// Records one entry.
    pub fn observe(&mut self, entry: &TraceEntry) {
        self.observe_story(entry);
        if entry.severity >= Severity::Error {
            self.observe_error(entry);
        }
        let Some(session) = entry.session.as_deref() else {
            self.events_without_session += 1;
            return;
        };
        let code = (self.types.intern(&entry.event_type) + 1) as u16;
        let hash = hash_str(session);
        let tail = self.session_tail(hash);
        let previous = tail.types;
        tail.types = [previous[1], previous[2], code];
        if previous[2] == 0 {
            bump(&mut self.starts, code);
        } else {
            let pair = (previous[2], code);
            if let Some(n) = self.transitions.get_mut(&pair) {
                *n += 1;
            } else if self.transitions.len() < self.config.max_transitions {
                self.transitions.insert(pair, 1);
            } else {
                self.dropped_transitions += 1;
            }
            self.offer_sequence(&[previous[2], code]);
            if previous[1] != 0 {
                self.offer_sequence(&[previous[1], previous[2], code]);
                if previous[0] != 0 {
                    self.offer_sequence(&[previous[0], previous[1], previous[2], code]);
                }
            }
        }
        if is_session_end(&entry.event_type) {
            self.young.remove(&hash);
            bump(&mut self.ends, code);
        }
    }

    fn offer_sequence(&mut self, codes: &[u16]) {
        let key = pack(codes);
        self.sequences.offer(key.key_hash(), 1, || key, || ());
    }

    fn session_tail(&mut self, hash: u64) -> &mut SessionTail {
        if !self.young.contains_key(&hash) {
            let tail = self.old.remove(&hash).unwrap_or_default();
            if self.young.len() >= (self.config.max_open_sessions / 2).max(1) {
                let evicted = std::mem::replace(&mut self.old, std::mem::take(&mut self.young));
                for tail in evicted.into_values() {
                    bump(&mut self.ends, tail.last());
                }
            }
            return self.young.entry(hash).or_insert(tail);
        }
        self.young.entry(hash).or_default()
    }

    fn observe_story(&mut self, entry: &TraceEntry) {
        let rmpv::Value::Map(pairs) = &entry.data else {
            return;
        };
        let field = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| k.as_str() == Some(name))
                .and_then(|(_, v)| v.as_str())
        };
        let (Some(from), Some(to)) = (field("from"), field("to")) else {
            return;
        };
        let pair = (self.states.intern(from), self.states.intern(to));
        if let Some(n) = self.story.get_mut(&pair) {
            *n += 1;
        } else if self.story.len() < self.config.max_story_transitions {
            self.story.insert(pair, 1);
        } else {
            self.dropped_transitions += 1;
        }
    }

    fn observe_error(&mut self, entry: &TraceEntry) {
        let Some(message) = error_message(entry) else {
            return;
        };
        let template = mask_message(message);
        let ts_ms = entry.ts.timestamp_millis();
        let offered = self.templates.offer(
            hash_str(&template),
            1,
            || template.clone(),
            || TemplateInfo {
                example: message.to_owned(),
                event_type: entry.event_type.clone(),
                last_seen_ms: ts_ms,
            },
        );
        let info = &mut offered.counter.value;
        info.last_seen_ms = info.last_seen_ms.max(ts_ms);
    }

    fn type_name(&self, code: u16) -> String {
        self.types
            .name(u32::from(code).saturating_sub(1))
            .to_owned()
    }

    /// The report (each table cut to `report_top` rows).
    pub fn report(&self) -> PatternsReport {
        let top = self.config.report_top;
        let mut transitions: Vec<Transition> = self
            .transitions
            .iter()
            .map(|((from, to), count)| Transition {
                from: self.type_name(*from),
                to: self.type_name(*to),
                count: *count,
            })
            .collect();
        sort_transitions(&mut transitions, top);
        let mut story: Vec<Transition> = self
            .story
            .iter()
            .map(|((from, to), count)| Transition {
                from: self.states.name(*from).to_owned(),
                to: self.states.name(*to).to_owned(),
                count: *count,
            })
            .collect();
        sort_transitions(&mut story, top);
        let mut ends = self.ends.clone();
        for tail in self.young.values().chain(self.old.values()) {
            bump(&mut ends, tail.last());
        }
        let named = |table: &[u64]| -> BTreeMap<String, u64> {
            table
                .iter()
                .enumerate()
                .filter(|(code, n)| *code > 0 && **n > 0)
                .map(|(code, n)| (self.type_name(code as u16), *n))
                .collect()
        };
        let sequences = self
            .sequences
            .top(top)
            .into_iter()
            .map(|c| Sequence {
                types: (0..4)
                    .rev()
                    .map(|i| ((c.key >> (16 * i)) & 0xffff) as u16)
                    .filter(|code| *code != 0)
                    .map(|code| self.type_name(code))
                    .collect(),
                count: c.count,
                count_error: c.error,
            })
            .collect();
        let error_templates = self
            .templates
            .top(top)
            .into_iter()
            .map(|c| ErrorTemplate {
                template: c.key.clone(),
                count: c.count,
                count_error: c.error,
                example: c.value.example.clone(),
                event_type: c.value.event_type.clone(),
                last_seen: DateTime::from_timestamp_millis(c.value.last_seen_ms),
            })
            .collect();
        PatternsReport {
            transitions,
            start_types: named(&self.starts),
            end_types: named(&ends),
            sequences,
            story_transitions: story,
            error_templates,
            events_without_session: self.events_without_session,
            dropped_transitions: self.dropped_transitions,
        }
    }

    /// Approximate heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        let templates: usize = self
            .templates
            .counters()
            .map(|c| c.key.capacity() + c.value.example.capacity() + c.value.event_type.capacity())
            .sum();
        self.types.heap_bytes()
            + self.states.heap_bytes()
            + (self.young.capacity() + self.old.capacity()) * 16
            + (self.transitions.capacity() + self.story.capacity()) * 24
            + (self.starts.capacity() + self.ends.capacity()) * 8
            + self.sequences.heap_bytes()
            + self.templates.heap_bytes()
            + templates
    }
}

fn sort_transitions(rows: &mut Vec<Transition>, top: usize) {
    rows.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.from.cmp(&b.from))
            .then_with(|| a.to.cmp(&b.to))
    });
    rows.truncate(top);
}
