//! The traffic every phase measures with: the simulated game (`sim`) with 200 players and
//! 12 NPCs, no injected faults, one event per millisecond of game time, made in chunks so a
//! phase never holds more than it needs.

use chrono::{DateTime, Duration as TimeDelta, Utc};
use trace_core::TraceEntry;

use crate::sim::{GameSim, SimConfig, SimEvent};

/// Players in the simulated game.
pub(crate) const PLAYERS: usize = 200;

/// Events made per call of [`Workload::next_chunk`] at most.
pub(crate) const CHUNK: u64 = 10_000;

/// A deterministic stream of game events ending about now.
pub(crate) struct Workload {
    sim: GameSim,
    start: DateTime<Utc>,
    made: u64,
    total: u64,
}

impl Workload {
    /// `total` events, one per millisecond of game time, the last one about now.
    pub(crate) fn new(total: u64) -> Workload {
        let sim = GameSim::new(SimConfig {
            players: PLAYERS,
            npcs: 12,
            error_storm_at: None,
            latency_regression_from: None,
            silent_npc: None,
            ..SimConfig::default()
        });
        Workload {
            sim,
            start: Utc::now() - TimeDelta::milliseconds(total as i64),
            made: 0,
            total,
        }
    }

    /// Events made so far.
    pub(crate) fn made(&self) -> u64 {
        self.made
    }

    /// The next events with their subjects (up to [`CHUNK`]); empty once all are made.
    pub(crate) fn next_chunk(&mut self) -> Vec<SimEvent> {
        let n = CHUNK.min(self.total - self.made);
        if n == 0 {
            return Vec::new();
        }
        let from = self.start + TimeDelta::milliseconds(self.made as i64);
        self.made += n;
        self.sim
            .live(from, std::time::Duration::from_millis(n), n as usize)
    }

    /// The next events, entries only.
    pub(crate) fn next_entries(&mut self) -> Vec<TraceEntry> {
        self.next_chunk().into_iter().map(|e| e.entry).collect()
    }
}
