//! End-to-end checks of the analyses on a generated game session stream with known answers.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use trace_analytics::detector::AnomalyKind;
use trace_analytics::trends::TrendVerdict;
use trace_analytics::{AnalyticsConfig, Analyzer, EntryFilter};
use trace_core::{Category, EventId, Severity, TraceEntry};

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_699_999_980, 0).expect("valid time")
}

fn entry(
    ts: DateTime<Utc>,
    event_type: &str,
    session: Option<&str>,
    player: Option<&str>,
) -> TraceEntry {
    TraceEntry {
        id: EventId::new_at(ts),
        ts,
        event_type: event_type.to_owned(),
        category: Category::from_type(event_type).unwrap_or(Category::SystemEvent),
        source: "game".to_owned(),
        severity: Severity::Info,
        session: session.map(str::to_owned),
        player: player.map(str::to_owned),
        parent: None,
        metrics: BTreeMap::new(),
        data: rmpv::Value::Nil,
        meta: BTreeMap::new(),
    }
}

/// Three sessions, each: session.start, (player.move, player.attack) × rounds, state.changed
/// with from/to, session.end; plus seven timeout errors with varying numbers and addresses.
fn game_stream() -> Vec<TraceEntry> {
    let mut out = Vec::new();
    let mut ts = t0();
    let tick = |out: &mut Vec<TraceEntry>, e: TraceEntry| {
        out.push(e);
    };
    for (s, rounds) in [("s1", 3), ("s2", 4), ("s3", 5)] {
        let player = format!("p{}", &s[1..]);
        let p = Some(player.as_str());
        ts += Duration::seconds(1);
        tick(&mut out, entry(ts, "session.start", Some(s), p));
        for _ in 0..rounds {
            ts += Duration::seconds(10);
            let mut moved = entry(ts, "player.move", Some(s), p);
            moved.metrics.insert("latency_ms".to_owned(), 10.0);
            tick(&mut out, moved);
            ts += Duration::seconds(10);
            tick(&mut out, entry(ts, "player.attack", Some(s), p));
        }
        ts += Duration::seconds(1);
        let mut changed = entry(ts, "state.changed", Some(s), None);
        changed.data = rmpv::Value::Map(vec![
            (rmpv::Value::from("from"), rmpv::Value::from("lobby")),
            (rmpv::Value::from("to"), rmpv::Value::from("battle")),
        ]);
        tick(&mut out, changed);
        ts += Duration::seconds(1);
        tick(&mut out, entry(ts, "session.end", Some(s), p));
    }
    for (i, secs) in [30, 5, 12, 30, 7, 60, 2].iter().enumerate() {
        ts += Duration::seconds(1);
        let mut error = entry(ts, "system.error", None, None);
        error.severity = Severity::Error;
        error.source = "net".to_owned();
        error.data = rmpv::Value::Map(vec![(
            rmpv::Value::from("message"),
            rmpv::Value::from(format!("timeout after {secs}s talking to 10.0.0.{}", i + 3)),
        )]);
        tick(&mut out, error);
    }
    out
}

#[test]
fn game_stream_gives_exact_counts_transitions_and_templates() {
    let entries = game_stream();
    let end = entries.last().map(|e| e.ts).expect("entries");
    let report = Analyzer::run(AnalyticsConfig::default(), &entries, end);

    let stats = &report.stats;
    assert_eq!(stats.total.count, 3 * 3 + 2 * (3 + 4 + 5) + 7);
    assert_eq!(stats.by_type["player.move"].count, 12);
    assert_eq!(stats.by_type["player.attack"].count, 12);
    assert_eq!(stats.by_type["session.start"].count, 3);
    assert_eq!(stats.by_type["system.error"].count, 7);
    assert_eq!(stats.by_severity["error"], 7);
    assert_eq!(stats.by_source["net"].errors, 7);
    assert_eq!(stats.by_source["net"].error_rate, 1.0);
    assert_eq!(stats.by_category["player_action"], 24);
    assert!((stats.total.error_rate - 7.0 / 40.0).abs() < 1e-12);

    let players = &report.players;
    assert_eq!(players.distinct_players, 3);
    let p3 = players
        .top_players
        .iter()
        .find(|p| p.player == "p3")
        .expect("p3");
    assert_eq!(
        (p3.events, p3.events_error, p3.actions, p3.sessions),
        (12, 0, 10, 1)
    );
    assert_eq!(players.sessions.distinct, 3);
    assert_eq!(players.sessions.ended, 3);
    let s1 = players
        .sessions
        .recent
        .iter()
        .find(|s| s.session == "s1")
        .expect("s1");
    assert_eq!(s1.events, 9);
    assert_eq!(s1.length_secs, 3.0 * 20.0 + 2.0);

    let patterns = &report.patterns;
    let count = |from: &str, to: &str| {
        patterns
            .transitions
            .iter()
            .find(|t| t.from == from && t.to == to)
            .map_or(0, |t| t.count)
    };
    assert_eq!(count("session.start", "player.move"), 3);
    assert_eq!(count("player.move", "player.attack"), 12);
    assert_eq!(count("player.attack", "player.move"), 9);
    assert_eq!(count("player.attack", "state.changed"), 3);
    assert_eq!(count("state.changed", "session.end"), 3);
    assert_eq!(patterns.start_types["session.start"], 3);
    assert_eq!(patterns.end_types["session.end"], 3);
    assert_eq!(
        patterns.sequences[0].types,
        vec!["player.move".to_owned(), "player.attack".to_owned()]
    );
    assert_eq!(patterns.sequences[0].count, 12);
    assert_eq!(patterns.story_transitions[0].from, "lobby");
    assert_eq!(patterns.story_transitions[0].count, 3);
    assert_eq!(patterns.error_templates.len(), 1);
    let template = &patterns.error_templates[0];
    assert_eq!(template.template, "timeout after <num>s talking to <ip>");
    assert_eq!(template.count, 7);
    assert_eq!(template.example, "timeout after 30s talking to 10.0.0.3");

    let latency = &report.performance.by_type["player.move"]["latency_ms"];
    assert_eq!(latency.count, 12);
    assert!((latency.p99 - 10.0).abs() <= 0.1);

    let json = serde_json_roundtrip(&report);
    assert!(json.contains("\"error_templates\""));
}

fn serde_json_roundtrip(report: &trace_analytics::AnalyticsReport) -> String {
    let json = serde_json::to_string(report).expect("report serialises");
    let back: trace_analytics::AnalyticsReport = serde_json::from_str(&json).expect("and back");
    assert_eq!(back.stats.by_type.len(), report.stats.by_type.len());
    assert_eq!(back.patterns, report.patterns);
    json
}

/// Twenty moves a minute (with a deterministic wobble) for four hours, a burst of 400 in one
/// minute, then normal again.
fn burst_stream() -> (Vec<TraceEntry>, DateTime<Utc>) {
    let mut out = Vec::new();
    let burst_minute = 240;
    for minute in 0..270i64 {
        let n = if minute == burst_minute {
            400
        } else {
            18 + (minute * 7 % 5)
        };
        for k in 0..n {
            let ts = t0() + Duration::seconds(minute * 60) + Duration::milliseconds(k * 59_000 / n);
            out.push(entry(ts, "player.move", Some("s"), Some("p")));
        }
    }
    (out, t0() + Duration::seconds(burst_minute * 60))
}

#[test]
fn injected_burst_is_an_anomaly_at_the_burst() {
    let (entries, burst_at) = burst_stream();
    let end = entries.last().map(|e| e.ts).expect("entries") + Duration::seconds(1);
    let report = Analyzer::run(AnalyticsConfig::default(), &entries, end);
    let rate: Vec<_> = report
        .anomalies
        .anomalies
        .iter()
        .filter(|a| a.series == "rate:player.move")
        .collect();
    assert_eq!(rate.len(), 1, "{:#?}", report.anomalies.anomalies);
    assert_eq!(rate[0].ts, burst_at);
    assert_eq!(rate[0].kind, AnomalyKind::Spike);
    assert!(rate[0].score >= 0.5);
}

#[test]
fn rising_rate_is_a_rising_trend() {
    let mut entries = Vec::new();
    for minute in 0..60i64 {
        for k in 0..(10 + minute) {
            let ts = t0() + Duration::seconds(minute * 60) + Duration::milliseconds(k * 500);
            entries.push(entry(ts, "npc.spawn", None, None));
        }
    }
    let end = t0() + Duration::seconds(3600);
    let report = Analyzer::run(AnalyticsConfig::default(), &entries, end);
    let trend = report
        .trends
        .series
        .iter()
        .find(|t| t.series == "rate:npc.spawn")
        .expect("trend");
    assert_eq!(trend.verdict, TrendVerdict::Rising);
    assert!(trend.mann_kendall.p_value < 1e-6);
    assert!((trend.slope_per_hour - 1.0).abs() < 0.05, "{trend:?}");
}

#[test]
fn checkpoint_restores_the_same_state() {
    let entries = game_stream();
    let (first, second) = entries.split_at(entries.len() / 2);
    let mut whole = Analyzer::new(AnalyticsConfig::default());
    let mut halves = Analyzer::new(AnalyticsConfig::default());
    for e in first {
        whole.observe(e);
        halves.observe(e);
    }
    let bytes = halves.checkpoint().expect("checkpoint");
    let mut restored = Analyzer::restore(&bytes).expect("restore");
    for e in second {
        whole.observe(e);
        restored.observe(e);
    }
    let now = entries.last().map(|e| e.ts).expect("entries");
    assert_eq!(whole.report(now), restored.report(now));
}

#[test]
fn filter_limits_what_is_analysed() {
    let config = AnalyticsConfig {
        filter: EntryFilter {
            event_types: vec!["player.*".to_owned()],
            sources: Vec::new(),
        },
        ..AnalyticsConfig::default()
    };
    let entries = game_stream();
    let now = entries.last().map(|e| e.ts).expect("entries");
    let report = Analyzer::run(config, &entries, now);
    assert_eq!(report.events, 24);
    assert_eq!(report.filtered_out, 16);
    assert!(report
        .stats
        .by_type
        .keys()
        .all(|t| t.starts_with("player.")));
}

#[test]
fn a_forgotten_player_leaves_the_per_player_state() {
    let mut a = Analyzer::new(AnalyticsConfig::default());
    for (i, p) in ["alice", "bob", "alice", "carol", "alice"]
        .iter()
        .enumerate()
    {
        let s = format!("{p}-s1");
        a.observe(&entry(
            t0() + Duration::seconds(i as i64),
            "player.move",
            Some(&s),
            Some(p),
        ));
    }
    assert!(a.players().player("alice").is_some());
    assert!(a.forget_player("alice"));
    assert!(a.players().player("alice").is_none());
    assert!(a.players().player("bob").is_some());
    let report = a.report(t0() + Duration::seconds(10));
    let json = serde_json::to_string(&report.players).expect("json");
    assert!(
        !json.contains("alice"),
        "the report still names the player: {json}"
    );
    assert!(!a.forget_player("alice"), "nothing left to forget");
}
