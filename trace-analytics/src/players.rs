//! Players and sessions: distinct players, per-player and per-session activity, top players.
//!
//! Distinct players and sessions are counted exactly up to a limit, then by HyperLogLog
//! (`distinct`). The per-player table keeps the `max_players` most active players with
//! Space-Saving (`space_saving`): a player admitted by evicting another inherits the evicted
//! count as `events_error`; its other figures cover the time since admission. Open sessions live
//! in a two-generation cache (an approximate LRU): when the young generation reaches half the
//! capacity, the old generation is closed (its sessions end "by eviction", length = last - first
//! event) and the young one becomes old, so a session with any event in the last
//! `max_open_sessions / 2` new sessions is never evicted.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use trace_core::{Category, TraceEntry};

use crate::distinct::DistinctCounter;
use crate::hashing::{hash_str, FastMap};
use crate::performance::{new_sketch, Percentiles, Sketch};
use crate::space_saving::SpaceSaving;

/// Limits of [`Players`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct PlayersConfig {
    /// Players kept with their own figures (the most active, by Space-Saving).
    pub max_players: usize,
    /// Open sessions kept (two generations of half this size).
    pub max_open_sessions: usize,
    /// Distinct players and sessions are counted exactly up to this many.
    pub exact_distinct_limit: usize,
    /// HyperLogLog precision beyond the exact limit (14: 16 KiB, 0.81 % standard error).
    pub hll_precision: u8,
    /// Players and sessions listed in a report.
    pub report_top: usize,
    /// Most recently ended sessions kept for the report.
    pub recent_sessions: usize,
}

impl Default for PlayersConfig {
    fn default() -> Self {
        PlayersConfig {
            max_players: 10_000,
            max_open_sessions: 10_000,
            exact_distinct_limit: 4096,
            hll_precision: 14,
            report_top: 20,
            recent_sessions: 50,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PlayerState {
    actions: u64,
    sessions: u64,
    first_seen_ms: i64,
    last_seen_ms: i64,
    last_session: Option<Box<str>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SessionState {
    id: Box<str>,
    player: Option<Box<str>>,
    player_hash: Option<u64>,
    events: u64,
    actions: u64,
    first_ms: i64,
    last_ms: i64,
    explicit_start_ms: Option<i64>,
}

/// One player's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlayerSummary {
    /// Player id.
    pub player: String,
    /// Events of this player (an upper bound: exact when `events_error` is 0).
    pub events: u64,
    /// Maximum overcount of `events` (Space-Saving error).
    pub events_error: u64,
    /// Events of category `player_action`.
    pub actions: u64,
    /// Sessions the player took part in.
    pub sessions: u64,
    /// First event seen (since admission to the table).
    pub first_seen: Option<DateTime<Utc>>,
    /// Last event seen.
    pub last_seen: Option<DateTime<Utc>>,
    /// The last session the player was seen in.
    pub last_session: Option<String>,
}

/// One session's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionSummary {
    /// Session id.
    pub session: String,
    /// The first player seen in it.
    pub player: Option<String>,
    /// Events in the session.
    pub events: u64,
    /// Events of category `player_action`.
    pub actions: u64,
    /// Start: the `session.start` event, else the first event.
    pub start: Option<DateTime<Utc>>,
    /// End: the `session.end` event, else the last event so far.
    pub end: Option<DateTime<Utc>>,
    /// `end - start` in seconds.
    pub length_secs: f64,
    /// True when a `session.start` event was seen.
    pub explicit_start: bool,
    /// How the session ended: `end_event`, `evicted`, or `open`.
    pub state: SessionEnd,
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionEnd {
    /// A `session.end` event closed it.
    EndEvent,
    /// It was evicted from the open-session cache (length = last - first event).
    Evicted,
    /// Still open.
    Open,
}

/// Session totals and lengths.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionsReport {
    /// Distinct sessions seen (exact up to the limit, then estimated).
    pub distinct: u64,
    /// Sessions ended by a `session.end` event or by eviction.
    pub ended: u64,
    /// Sessions currently open in the cache.
    pub open: usize,
    /// Lengths of ended sessions, seconds (±1 % relative).
    pub length_secs: Option<Percentiles>,
    /// The most recently ended sessions, newest first.
    pub recent: Vec<SessionSummary>,
    /// The open sessions with the most events.
    pub top_open: Vec<SessionSummary>,
}

/// What [`Players::report`] returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlayersReport {
    /// Distinct players seen (exact up to the limit, then a HyperLogLog estimate).
    pub distinct_players: u64,
    /// True while `distinct_players` is exact.
    pub distinct_exact: bool,
    /// Events that named a player.
    pub events_with_player: u64,
    /// Players kept in the table.
    pub tracked_players: usize,
    /// The most active players, most events first.
    pub top_players: Vec<PlayerSummary>,
    /// Sessions.
    pub sessions: SessionsReport,
}

/// Streaming player and session statistics.
///
/// Bounded state: `max_players` player rows (~120 B + the ids), `max_open_sessions` session
/// rows (~150 B + the ids), `recent_sessions` summaries, two distinct counters of at most
/// `max(16 B * exact_distinct_limit, 2^hll_precision B)` each, one length sketch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Players {
    config: PlayersConfig,
    distinct_players: DistinctCounter,
    distinct_sessions: DistinctCounter,
    events_with_player: u64,
    table: SpaceSaving<Box<str>, PlayerState>,
    young: FastMap<u64, SessionState>,
    old: FastMap<u64, SessionState>,
    ended: u64,
    lengths: Sketch,
    recent: VecDeque<SessionSummary>,
}

fn millis_to_time(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
}

/// True for the event types that open a session (`session.start`, `*.session.start`).
pub fn is_session_start(event_type: &str) -> bool {
    event_type.ends_with("session.start") || event_type.ends_with("session_start")
}

/// True for the event types that close a session (`session.end`, `*.session.end`).
pub fn is_session_end(event_type: &str) -> bool {
    event_type.ends_with("session.end") || event_type.ends_with("session_end")
}

impl SessionState {
    fn new(id: &str, ts_ms: i64) -> Self {
        SessionState {
            id: Box::from(id),
            player: None,
            player_hash: None,
            events: 0,
            actions: 0,
            first_ms: ts_ms,
            last_ms: ts_ms,
            explicit_start_ms: None,
        }
    }

    fn summary(&self, end_ms: i64, state: SessionEnd) -> SessionSummary {
        let start_ms = self.explicit_start_ms.unwrap_or(self.first_ms);
        SessionSummary {
            session: self.id.to_string(),
            player: self.player.as_ref().map(|p| p.to_string()),
            events: self.events,
            actions: self.actions,
            start: millis_to_time(start_ms),
            end: millis_to_time(end_ms),
            length_secs: (end_ms - start_ms).max(0) as f64 / 1000.0,
            explicit_start: self.explicit_start_ms.is_some(),
            state,
        }
    }
}

impl Players {
    /// Empty statistics with these limits.
    pub fn new(config: &PlayersConfig) -> Self {
        Players {
            config: config.clone(),
            distinct_players: DistinctCounter::new(
                config.exact_distinct_limit,
                config.hll_precision,
            ),
            distinct_sessions: DistinctCounter::new(
                config.exact_distinct_limit,
                config.hll_precision,
            ),
            events_with_player: 0,
            table: SpaceSaving::new(config.max_players),
            young: FastMap::default(),
            old: FastMap::default(),
            ended: 0,
            lengths: new_sketch(),
            recent: VecDeque::new(),
        }
    }

    /// Records one entry.
    pub fn observe(&mut self, entry: &TraceEntry) {
        let ts_ms = entry.ts.timestamp_millis();
        let action = entry.category == Category::PlayerAction;
        let player_hash = entry.player.as_deref().map(hash_str);

        if let Some(session) = entry.session.as_deref() {
            let session_hash = hash_str(session);
            let state = self.open_session(session_hash, session, ts_ms);
            state.events += 1;
            state.actions += u64::from(action);
            state.first_ms = state.first_ms.min(ts_ms);
            state.last_ms = state.last_ms.max(ts_ms);
            if is_session_start(&entry.event_type) {
                state.explicit_start_ms = Some(ts_ms);
            }
            if let (Some(hash), Some(player)) = (player_hash, entry.player.as_deref()) {
                if state.player_hash != Some(hash) {
                    state.player_hash = Some(hash);
                    if state.player.is_none() {
                        state.player = Some(Box::from(player));
                    }
                }
            }
            if is_session_end(&entry.event_type) {
                if let Some(state) = self.young.remove(&session_hash) {
                    self.finish(state.summary(ts_ms, SessionEnd::EndEvent));
                }
            }
        }

        if let (Some(hash), Some(player)) = (player_hash, entry.player.as_deref()) {
            self.events_with_player += 1;
            self.distinct_players.insert_hash(hash);
            let offered = self.table.offer(
                hash,
                1,
                || Box::from(player),
                || PlayerState {
                    actions: 0,
                    sessions: 0,
                    first_seen_ms: ts_ms,
                    last_seen_ms: ts_ms,
                    last_session: None,
                },
            );
            let state = &mut offered.counter.value;
            state.actions += u64::from(action);
            state.first_seen_ms = state.first_seen_ms.min(ts_ms);
            state.last_seen_ms = state.last_seen_ms.max(ts_ms);
            // a player counts a session when it shows up in one other than its last: exact
            // for one session at a time, which is how games run sessions
            if let Some(session) = entry.session.as_deref() {
                if state.last_session.as_deref() != Some(session) {
                    state.sessions += 1;
                    state.last_session = Some(Box::from(session));
                }
            }
        }
    }

    fn open_session(&mut self, hash: u64, id: &str, ts_ms: i64) -> &mut SessionState {
        if !self.young.contains_key(&hash) {
            let state = match self.old.remove(&hash) {
                Some(state) => state,
                None => {
                    self.distinct_sessions.insert_hash(hash);
                    SessionState::new(id, ts_ms)
                }
            };
            if self.young.len() >= (self.config.max_open_sessions / 2).max(1) {
                self.rotate_generations();
            }
            return self.young.entry(hash).or_insert(state);
        }
        self.young
            .entry(hash)
            .or_insert_with(|| SessionState::new(id, ts_ms))
    }

    fn rotate_generations(&mut self) {
        let evicted = std::mem::replace(&mut self.old, std::mem::take(&mut self.young));
        for state in evicted.into_values() {
            self.finish(state.summary(state.last_ms, SessionEnd::Evicted));
        }
    }

    fn finish(&mut self, summary: SessionSummary) {
        self.ended += 1;
        self.lengths.add(summary.length_secs);
        if self.config.recent_sessions > 0 {
            if self.recent.len() >= self.config.recent_sessions {
                self.recent.pop_back();
            }
            self.recent.push_front(summary);
        }
    }

    fn player_summary(
        counter: &crate::space_saving::Counter<Box<str>, PlayerState>,
    ) -> PlayerSummary {
        PlayerSummary {
            player: counter.key.to_string(),
            events: counter.count,
            events_error: counter.error,
            actions: counter.value.actions,
            sessions: counter.value.sessions,
            first_seen: millis_to_time(counter.value.first_seen_ms),
            last_seen: millis_to_time(counter.value.last_seen_ms),
            last_session: counter.value.last_session.as_ref().map(|s| s.to_string()),
        }
    }

    /// Forgets a player (privacy): their row and their open sessions go; the distinct-player
    /// estimate, which holds no ids (a hash set or HyperLogLog registers), keeps counting
    /// them. Returns whether the player was tracked.
    pub fn forget_player(&mut self, player: &str) -> bool {
        let hash = hash_str(player);
        let tracked = self.table.remove_by_hash(hash).is_some();
        self.young.retain(|_, s| s.player_hash != Some(hash));
        self.old.retain(|_, s| s.player_hash != Some(hash));
        self.recent.retain(|s| s.player.as_deref() != Some(player));
        tracked
    }

    /// The figures of one player, if it is in the table.
    pub fn player(&self, player: &str) -> Option<PlayerSummary> {
        self.table
            .get_by_hash(hash_str(player))
            .map(Self::player_summary)
    }

    /// The figures of one session, if it is open.
    pub fn open_session_summary(&self, session: &str) -> Option<SessionSummary> {
        let hash = hash_str(session);
        self.young
            .get(&hash)
            .or_else(|| self.old.get(&hash))
            .map(|s| s.summary(s.last_ms, SessionEnd::Open))
    }

    /// The report.
    pub fn report(&self) -> PlayersReport {
        let top = self.config.report_top;
        let mut open: Vec<&SessionState> = self.young.values().chain(self.old.values()).collect();
        open.sort_by(|a, b| b.events.cmp(&a.events).then(a.id.cmp(&b.id)));
        PlayersReport {
            distinct_players: self.distinct_players.count(),
            distinct_exact: self.distinct_players.is_exact(),
            events_with_player: self.events_with_player,
            tracked_players: self.table.len(),
            top_players: self
                .table
                .top(top)
                .into_iter()
                .map(Self::player_summary)
                .collect(),
            sessions: SessionsReport {
                distinct: self.distinct_sessions.count(),
                ended: self.ended,
                open: open.len(),
                length_secs: Percentiles::of(&self.lengths),
                recent: self.recent.iter().cloned().collect(),
                top_open: open
                    .into_iter()
                    .take(top)
                    .map(|s| s.summary(s.last_ms, SessionEnd::Open))
                    .collect(),
            },
        }
    }

    /// Approximate heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        let player_ids: usize = self
            .table
            .counters()
            .map(|c| c.key.len() + c.value.last_session.as_ref().map_or(0, |s| s.len()))
            .sum();
        let session_rows = (self.young.capacity() + self.old.capacity())
            * (std::mem::size_of::<SessionState>() + 8);
        let session_ids: usize = self
            .young
            .values()
            .chain(self.old.values())
            .map(|s| s.id.len() + s.player.as_ref().map_or(0, |p| p.len()))
            .sum();
        self.table.heap_bytes()
            + player_ids
            + session_rows
            + session_ids
            + self.distinct_players.heap_bytes()
            + self.distinct_sessions.heap_bytes()
            + self.recent.len() * 160
            + self.lengths.length() * 8
    }
}
