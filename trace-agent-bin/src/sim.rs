//! A simulated game for the demo and for tests: players acting in sessions, NPC agents making
//! decisions with latencies, a story graph moving along its nodes, a state manager writing
//! changes and checkpoints. It can produce back-dated history (so trends and anomaly
//! detection have something to learn from) and live traffic at a given rate, and inject
//! faults: an error storm, a latency regression, a silent agent. Deterministic for a seed.

use chrono::{DateTime, Duration as TimeDelta, Utc};
use rmpv::Value;
use trace_core::subject::publish_subject;
use trace_core::{Category, EventId, Severity, SourceKind, TraceEntry};

/// What the simulation does.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Players (each plays sessions one after another).
    pub players: usize,
    /// NPC agents `npc-1..=npcs`.
    pub npcs: usize,
    /// Events per minute of history.
    pub history_per_minute: usize,
    /// Minutes of back-dated history.
    pub history_minutes: i64,
    /// An error storm this many minutes before the end of the history (None: no storm).
    pub error_storm_at: Option<i64>,
    /// From this many minutes before the end of the history, NPC decisions take 6x longer.
    pub latency_regression_from: Option<i64>,
    /// The NPC that stops sending in the live phase.
    pub silent_npc: Option<usize>,
    /// RNG seed.
    pub seed: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            players: 12,
            npcs: 4,
            history_per_minute: 600,
            history_minutes: 90,
            error_storm_at: Some(12),
            latency_regression_from: Some(25),
            silent_npc: Some(4),
            seed: 0x5EED_0001,
        }
    }
}

/// One event and the subject its service publishes it on.
#[derive(Debug, Clone)]
pub struct SimEvent {
    /// `game.<kind>.<source>.<type>`.
    pub subject: String,
    /// The entry.
    pub entry: TraceEntry,
}

const STORY: [&str; 7] = [
    "intro", "village", "forest", "cave", "boss", "ending", "credits",
];
const ACTIONS: [&str; 4] = ["player.move", "player.move", "player.attack", "player.chat"];
const DECISIONS: [&str; 4] = ["patrol", "flee", "attack", "trade"];

struct PlayerState {
    session: Option<String>,
    sessions: u64,
    left_in_session: u32,
}

/// The game.
pub struct GameSim {
    cfg: SimConfig,
    rng: u64,
    players: Vec<PlayerState>,
    story_node: usize,
    /// Events made so far (for ids and variety).
    made: u64,
}

impl GameSim {
    /// A game in its initial state.
    pub fn new(cfg: SimConfig) -> Self {
        let players = (0..cfg.players)
            .map(|_| PlayerState {
                session: None,
                sessions: 0,
                left_in_session: 0,
            })
            .collect();
        GameSim {
            rng: cfg.seed | 1,
            cfg,
            players,
            story_node: 0,
            made: 0,
        }
    }

    fn next(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The back-dated history ending at `end`, oldest first, with the configured faults.
    pub fn history(&mut self, end: DateTime<Utc>) -> Vec<SimEvent> {
        let minutes = self.cfg.history_minutes;
        let per_minute = self.cfg.history_per_minute;
        let mut out = Vec::with_capacity(minutes as usize * per_minute);
        for m in 0..minutes {
            let minutes_before_end = minutes - m;
            let start = end - TimeDelta::minutes(minutes_before_end);
            let slow = self
                .cfg
                .latency_regression_from
                .is_some_and(|f| minutes_before_end <= f);
            for i in 0..per_minute {
                let ts = start + TimeDelta::milliseconds((i as i64 * 60_000) / per_minute as i64);
                out.push(self.one(ts, slow, None));
            }
            if self.cfg.error_storm_at == Some(minutes_before_end) {
                for i in 0..per_minute / 2 {
                    let ts = start
                        + TimeDelta::milliseconds(
                            (i as i64 * 60_000) / (per_minute as i64 / 2).max(1),
                        );
                    out.push(self.error(ts));
                }
            }
        }
        out
    }

    /// `n` live events spread over `[from, from + span)`; the silent NPC sends nothing.
    pub fn live(
        &mut self,
        from: DateTime<Utc>,
        span: std::time::Duration,
        n: usize,
    ) -> Vec<SimEvent> {
        let span_ms = span.as_millis().max(1) as i64;
        (0..n)
            .map(|i| {
                let ts = from + TimeDelta::milliseconds(i as i64 * span_ms / n.max(1) as i64);
                let silent = self.cfg.silent_npc;
                self.one(ts, self.cfg.latency_regression_from.is_some(), silent)
            })
            .collect()
    }

    /// One event of a random service.
    fn one(&mut self, ts: DateTime<Utc>, slow: bool, silent_npc: Option<usize>) -> SimEvent {
        self.made += 1;
        match self.below(100) {
            0..=44 => self.player_event(ts),
            45..=74 => {
                let mut npc = 1 + self.below(self.cfg.npcs as u64) as usize;
                if Some(npc) == silent_npc {
                    npc = if npc == 1 {
                        2.min(self.cfg.npcs)
                    } else {
                        npc - 1
                    };
                }
                self.decision(ts, npc, slow)
            }
            75..=84 => self.story(ts),
            85..=98 => self.state_change(ts),
            _ => self.checkpoint(ts),
        }
    }

    fn event(
        &mut self,
        kind: SourceKind,
        source: &str,
        event_type: &str,
        ts: DateTime<Utc>,
    ) -> SimEvent {
        let mut entry = TraceEntry::new(event_type, source);
        entry.ts = ts;
        entry.id = EventId::derived(
            ts.timestamp_millis().max(0) as u64,
            &self.next().to_le_bytes(),
        );
        entry.category = Category::from_type(event_type).unwrap_or_else(|| kind.default_category());
        let subject = publish_subject(kind, source, event_type)
            .unwrap_or_else(|_| format!("game.{kind}.{source}.event"));
        SimEvent { subject, entry }
    }

    fn player_event(&mut self, ts: DateTime<Utc>) -> SimEvent {
        let p = self.below(self.players.len() as u64) as usize;
        let player = format!("player-{:02}", p + 1);
        let (event_type, session) = match self.players[p].session.clone() {
            None => {
                self.players[p].sessions += 1;
                let s = format!("{player}-s{}", self.players[p].sessions);
                self.players[p].session = Some(s.clone());
                self.players[p].left_in_session = 10 + self.below(30) as u32;
                ("session.start", s)
            }
            Some(s) if self.players[p].left_in_session == 0 => {
                self.players[p].session = None;
                ("session.end", s)
            }
            Some(s) => {
                self.players[p].left_in_session -= 1;
                (ACTIONS[self.below(ACTIONS.len() as u64) as usize], s)
            }
        };
        let mut e = self.event(SourceKind::State, "world", event_type, ts);
        e.entry.player = Some(player);
        e.entry.session = Some(session);
        e.entry.data = Value::Map(vec![
            ("x".into(), Value::from(self.below(1000))),
            ("y".into(), Value::from(self.below(1000))),
            (
                "zone".into(),
                Value::from(STORY[self.story_node % STORY.len()]),
            ),
        ]);
        e
    }

    fn decision(&mut self, ts: DateTime<Utc>, npc: usize, slow: bool) -> SimEvent {
        let mut e = self.event(
            SourceKind::Agent,
            &format!("npc-{npc}"),
            "agent.decision",
            ts,
        );
        let base = 8.0 + 12.0 * self.unit();
        let latency = if slow { base * 6.0 } else { base };
        e.entry
            .metrics
            .insert("latency_ms".into(), (latency * 10.0).round() / 10.0);
        e.entry
            .metrics
            .insert("candidates".into(), (2 + self.below(6)) as f64);
        let target = format!("player-{:02}", 1 + self.below(self.players.len() as u64));
        e.entry.data = Value::Map(vec![
            (
                "action".into(),
                Value::from(DECISIONS[self.below(4) as usize]),
            ),
            ("target".into(), Value::from(target)),
            (
                "score".into(),
                Value::F64((self.unit() * 100.0).round() / 100.0),
            ),
        ]);
        e
    }

    fn story(&mut self, ts: DateTime<Utc>) -> SimEvent {
        let from = STORY[self.story_node % STORY.len()];
        self.story_node = (self.story_node + 1) % STORY.len();
        let to = STORY[self.story_node];
        let mut e = self.event(SourceKind::Story, "graph", "story.transition", ts);
        e.entry.data = Value::Map(vec![
            ("from".into(), Value::from(from)),
            ("to".into(), Value::from(to)),
        ]);
        e
    }

    fn state_change(&mut self, ts: DateTime<Utc>) -> SimEvent {
        let mut e = self.event(SourceKind::State, "state-manager", "state.changed", ts);
        let key = format!("inventory.slot{}", self.below(20));
        let old = self.below(10);
        e.entry.data = Value::Map(vec![
            ("key".into(), Value::from(key)),
            ("old".into(), Value::from(old)),
            ("new".into(), Value::from(old + 1)),
        ]);
        e
    }

    fn checkpoint(&mut self, ts: DateTime<Utc>) -> SimEvent {
        let mut e = self.event(SourceKind::State, "state-manager", "state.checkpoint", ts);
        e.entry
            .metrics
            .insert("bytes".into(), (40_000 + self.below(20_000)) as f64);
        e
    }

    fn error(&mut self, ts: DateTime<Utc>) -> SimEvent {
        let mut e = self.event(SourceKind::State, "state-manager", "system.error", ts);
        e.entry.severity = Severity::Error;
        let secs = [5, 10, 30, 60][self.below(4) as usize];
        let message = format!(
            "timeout after {secs}s talking to 10.0.{}.{}",
            self.below(4),
            1 + self.below(250)
        );
        e.entry.data = Value::Map(vec![("message".into(), Value::from(message))]);
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_has_the_faults_and_is_deterministic() {
        let end = Utc::now();
        let a = GameSim::new(SimConfig::default()).history(end);
        let b = GameSim::new(SimConfig::default()).history(end);
        assert_eq!(a.len(), b.len());
        assert!(a.iter().zip(&b).all(|(x, y)| x.entry.id == y.entry.id));
        let errors = a
            .iter()
            .filter(|e| e.entry.event_type == "system.error")
            .count();
        assert_eq!(errors, 300, "one storm minute of errors");
        assert!(
            a.windows(2)
                .filter(|w| w[0].entry.ts > w[1].entry.ts)
                .count()
                < a.len() / 100
        );
        let live =
            GameSim::new(SimConfig::default()).live(end, std::time::Duration::from_secs(10), 500);
        assert!(
            live.iter().all(|e| e.entry.source != "npc-4"),
            "the silent agent sends nothing live"
        );
        assert!(live.iter().any(|e| e.entry.source == "npc-3"));
    }
}
