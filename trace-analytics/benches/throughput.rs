//! Analytics throughput (events/s through stats, performance, players, patterns, trends and
//! anomalies on one core) and the bounded state size with one million distinct players.
//!
//! `cargo bench -p trace-analytics --bench throughput [-- --quick]` prints a table and writes
//! `target/bench-analytics.json`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use trace_analytics::{AnalyticsConfig, Analyzer, Patterns, Performance, Players, Stats};
use trace_core::{Category, EventId, Severity, TraceEntry};

const TYPES: [&str; 12] = [
    "player.move",
    "player.attack",
    "player.chat",
    "player.trade",
    "state.changed",
    "state.saved",
    "agent.decide",
    "npc.spawn",
    "system.tick",
    "session.start",
    "session.end",
    "system.error",
];

/// xorshift64*: deterministic stream generation.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A realistic mix: 10 000 players in 2 000 concurrent sessions, 12 types, 6 sources, metrics on
/// a third of the events, 1 % errors with messages; 1 000 events per second of event time.
fn stream(count: usize, start: DateTime<Utc>) -> Vec<TraceEntry> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    (0..count)
        .map(|i| {
            let ts = start + Duration::milliseconds(i as i64);
            let event_type = TYPES[rng.below(TYPES.len() as u64 - 1) as usize];
            let session = rng.below(2000);
            let mut entry = TraceEntry {
                id: EventId::derived(ts.timestamp_millis() as u64, &(i as u64).to_le_bytes()),
                ts,
                event_type: event_type.to_owned(),
                category: Category::from_type(event_type).unwrap_or(Category::SystemEvent),
                source: format!("svc-{}", rng.below(6)),
                severity: Severity::Info,
                session: Some(format!("s-{session}")),
                player: Some(format!("p-{}", session * 5 + rng.below(5))),
                parent: None,
                metrics: BTreeMap::new(),
                data: rmpv::Value::Nil,
                meta: BTreeMap::new(),
            };
            if rng.below(3) == 0 {
                entry
                    .metrics
                    .insert("latency_ms".to_owned(), 1.0 + rng.below(500) as f64 / 7.0);
            }
            if rng.below(100) == 0 {
                entry.severity = Severity::Error;
                entry.event_type = "system.error".to_owned();
                entry.data = rmpv::Value::from(format!(
                    "timeout after {}s talking to 10.0.{}.{}",
                    rng.below(60),
                    rng.below(255),
                    rng.below(255)
                ));
            }
            entry
        })
        .collect()
}

/// Feeds `entries` `passes` times (shifting event time each pass) and returns events/s.
fn measure(entries: &mut [TraceEntry], passes: usize, mut feed: impl FnMut(&TraceEntry)) -> f64 {
    let span = Duration::milliseconds(entries.len() as i64);
    let started = Instant::now();
    for pass in 0..passes {
        if pass > 0 {
            for e in entries.iter_mut() {
                e.ts += span;
            }
        }
        for e in entries.iter() {
            feed(e);
        }
    }
    (entries.len() * passes) as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (count, passes, players) = if quick {
        (100_000, 2, 100_000)
    } else {
        (500_000, 4, 1_000_000)
    };
    let start = DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default();
    let config = AnalyticsConfig::default();
    let mut rows: Vec<(String, f64)> = Vec::new();

    let mut entries = stream(count, start);
    let mut analyzer = Analyzer::new(config.clone());
    rows.push((
        "all (stats + performance + players + patterns + trends + anomalies)".to_owned(),
        measure(&mut entries, passes, |e| {
            analyzer.observe(e);
        }),
    ));
    let mut entries = stream(count, start);
    let mut stats = Stats::new(&config.stats);
    rows.push((
        "stats".to_owned(),
        measure(&mut entries, passes, |e| stats.observe(e)),
    ));
    let mut entries = stream(count, start);
    let mut performance = Performance::new(&config.performance);
    rows.push((
        "performance".to_owned(),
        measure(&mut entries, passes, |e| performance.observe(e)),
    ));
    let mut entries = stream(count, start);
    let mut players_state = Players::new(&config.players);
    rows.push((
        "players".to_owned(),
        measure(&mut entries, passes, |e| players_state.observe(e)),
    ));
    let mut entries = stream(count, start);
    let mut patterns = Patterns::new(&config.patterns);
    rows.push((
        "patterns".to_owned(),
        measure(&mut entries, passes, |e| patterns.observe(e)),
    ));
    let state_mixed = analyzer.state_size();

    // One million distinct players (and sessions): the state must stay bounded.
    let mut many = Analyzer::new(config);
    let mut entry = stream(1, start).remove(0);
    let started = Instant::now();
    for i in 0..players {
        entry.ts = start + Duration::milliseconds(i as i64);
        entry.player = Some(format!("player-{i:07}"));
        entry.session = Some(format!("session-{i:07}"));
        many.observe(&entry);
    }
    let distinct_rate = players as f64 / started.elapsed().as_secs_f64();
    let report = many.report(entry.ts);
    let state_many = many.state_size();
    let checkpoint_bytes = many.checkpoint().map_or(0, |b| b.len());

    let mut table = String::new();
    let _ = writeln!(table, "| measurement | value |");
    let _ = writeln!(table, "|---|---|");
    for (name, rate) in &rows {
        let _ = writeln!(table, "| throughput: {name} | {:.0} events/s |", rate);
    }
    let _ = writeln!(
        table,
        "| throughput: all, every event a new player and session | {distinct_rate:.0} events/s |"
    );
    let _ = writeln!(
        table,
        "| state after {} events (10 000 players, 2 000 sessions) | {:.1} MiB |",
        count * passes,
        state_mixed.total as f64 / 1048576.0
    );
    let _ = writeln!(
        table,
        "| state after {players} distinct players: players / total | {:.1} MiB / {:.1} MiB |",
        state_many.players as f64 / 1048576.0,
        state_many.total as f64 / 1048576.0
    );
    let _ = writeln!(
        table,
        "| distinct players estimated (HLL) | {} ({:+.2} %) |",
        report.players.distinct_players,
        (report.players.distinct_players as f64 / players as f64 - 1.0) * 100.0
    );
    let _ = writeln!(
        table,
        "| checkpoint size after {players} players | {:.1} MiB |",
        checkpoint_bytes as f64 / 1048576.0
    );
    println!(
        "Analytics benchmark ({}; one core):\n",
        if quick { "quick" } else { "full" }
    );
    print!("{table}");

    let json_rows: Vec<String> = rows
        .iter()
        .map(|(name, rate)| format!("{{\"part\":\"{name}\",\"events_per_sec\":{rate:.0}}}"))
        .collect();
    let json = format!(
        "{{\"quick\":{quick},\"events\":{},\"throughput\":[{}],\"distinct_players\":{players},\"distinct_players_events_per_sec\":{distinct_rate:.0},\"distinct_players_estimate\":{},\"state_bytes_mixed\":{},\"state_bytes_players_1m\":{},\"state_bytes_total_1m\":{},\"checkpoint_bytes_1m\":{checkpoint_bytes}}}\n",
        count * passes,
        json_rows.join(","),
        report.players.distinct_players,
        state_mixed.total,
        state_many.players,
        state_many.total,
    );
    let target = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../target").to_owned());
    let path = std::path::Path::new(&target).join("bench-analytics.json");
    match std::fs::write(&path, json) {
        Ok(()) => println!("\nwrote {}", path.display()),
        Err(e) => eprintln!("could not write {}: {e}", path.display()),
    }
}
