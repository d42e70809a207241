//! Analytics end to end, through the real CLI: a generated game session stream with known
//! content gives exactly the expected stats, players, sessions, transitions, story
//! transitions and error template, over a stored range (`--since`) and live; an injected
//! burst after an hour of steady traffic is reported as an anomaly at the burst's bucket, over
//! the range and live (where it is also recorded as a `trace.anomaly` entry); and the offline
//! `detect` scores a CSV row by row; and the live state survives a clean restart and a
//! SIGKILL without losing or double-counting an event.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context as _};
use bytes::Bytes;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde_json::{json, Value};
use trace_core::{encode_entry_vec, Category, EventId, Severity, TraceEntry};
use trace_tests::{eventually, Agent, AgentOptions, Cli, JsPublisher, NatsServer};
use ulid::Ulid;

use crate::util::{bounded, now_ms, wait_drained, wait_for_counts};

/// How long the agent may take to see what was published (stored, or analysed live).
const SETTLE: Duration = Duration::from_secs(45);

/// The players of the session stream.
const PLAYERS: [&str; 3] = ["player-1", "player-2", "player-3"];
/// Time between two events of one session.
const STEP_MS: i64 = 9_500;
/// The error template every `system.error` message follows once masked.
const TEMPLATE: &str = "timeout after <num>s talking to <ip>";
/// The messages of the `system.error` events, in time order (the first is the example).
const ERROR_MESSAGES: [&str; 5] = [
    "timeout after 30s talking to 10.0.0.7",
    "timeout after 45s talking to 10.0.0.12",
    "timeout after 5s talking to 192.168.1.20",
    "timeout after 120s talking to 10.2.0.7",
    "timeout after 30s talking to 10.0.0.9",
];

/// One event to publish: the entry and its subject.
struct Event {
    subject: String,
    entry: TraceEntry,
}

/// An ended session as `players` must report it.
#[derive(Debug, Clone, PartialEq)]
struct SessionModel {
    player: String,
    events: u64,
    actions: u64,
    length_secs: f64,
}

/// The session stream and everything the analyses must find in it.
struct SessionStream {
    events: Vec<Event>,
    by_type: BTreeMap<String, u64>,
    by_source: BTreeMap<String, u64>,
    errors_by_source: BTreeMap<String, u64>,
    by_category: BTreeMap<String, u64>,
    by_severity: BTreeMap<String, u64>,
    errors: u64,
    sessions: BTreeMap<String, SessionModel>,
    /// Per player: (events, actions, sessions).
    players: BTreeMap<String, (u64, u64, u64)>,
    transitions: BTreeMap<(String, String), u64>,
    story: BTreeMap<(String, String), u64>,
    damage: Vec<f64>,
}

/// A whole minute (plus `secs`) `minutes_ago` minutes before now.
fn minute_ago(minutes_ago: i64) -> DateTime<Utc> {
    let now = now_ms();
    (now - TimeDelta::minutes(minutes_ago))
        .duration_trunc(TimeDelta::minutes(1))
        .unwrap_or(now - TimeDelta::minutes(minutes_ago + 1))
}

fn event(
    subject_kind: &str,
    source: &str,
    event_type: &str,
    category: Category,
    severity: Severity,
    ts: DateTime<Utc>,
    seq: u64,
) -> Event {
    let mut entry = TraceEntry::new(event_type, source);
    entry.ts = ts;
    let ms = u64::try_from(ts.timestamp_millis()).unwrap_or(0);
    entry.id = EventId(Ulid::from_parts(ms, u128::from(seq) | (0xA11 << 64)));
    entry.category = category;
    entry.severity = severity;
    Event {
        subject: format!("game.{subject_kind}.{source}.{event_type}"),
        entry,
    }
}

impl SessionStream {
    /// 3 players × 2 sessions, each `session.start`, `player.move` × k (k = 2..7),
    /// `player.attack` (metric `damage`), `state.changed` (story `data.from/to`),
    /// `session.end`, 9.5 s apart; and 5 `system.error` events from `gateway` whose messages
    /// share one template. Everything between 40 and 10 minutes ago (fewer buckets than the
    /// detector's warm-up, so no anomaly is raised and recorded).
    fn build() -> SessionStream {
        let base = minute_ago(40) + TimeDelta::milliseconds(7_123);
        let mut events = Vec::new();
        let mut seq = 0u64;
        let mut next = || {
            seq += 1;
            seq
        };
        let mut sessions = BTreeMap::new();
        let mut players: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
        let mut story = BTreeMap::new();
        let mut damage = Vec::new();
        for j in 0..6usize {
            let player = PLAYERS[j % 3];
            let session = format!("s-{player}-{}", j / 3 + 1);
            let moves = 2 + j;
            let start = base + TimeDelta::minutes(5 * j as i64);
            let (from, to) = if j % 3 == 2 {
                ("combat", "victory")
            } else {
                ("explore", "combat")
            };
            let mut kinds: Vec<(&str, &str, &str, Category, Severity)> = vec![(
                "agent",
                "client",
                "session.start",
                Category::SystemEvent,
                Severity::Info,
            )];
            for _ in 0..moves {
                kinds.push((
                    "agent",
                    "client",
                    "player.move",
                    Category::PlayerAction,
                    Severity::Debug,
                ));
            }
            kinds.push((
                "agent",
                "client",
                "player.attack",
                Category::PlayerAction,
                Severity::Info,
            ));
            kinds.push((
                "story",
                "graph",
                "state.changed",
                Category::StateChange,
                Severity::Info,
            ));
            kinds.push((
                "agent",
                "client",
                "session.end",
                Category::SystemEvent,
                Severity::Info,
            ));
            for (i, (kind, source, event_type, category, severity)) in kinds.iter().enumerate() {
                let ts = start + TimeDelta::milliseconds(i as i64 * STEP_MS);
                let mut e = event(
                    kind,
                    source,
                    event_type,
                    category.clone(),
                    *severity,
                    ts,
                    next(),
                );
                e.entry.player = Some(player.to_owned());
                e.entry.session = Some(session.clone());
                if *event_type == "player.attack" {
                    let value = 10.0 * (j as f64 + 1.0);
                    e.entry.metrics.insert("damage".into(), value);
                    damage.push(value);
                }
                if *event_type == "state.changed" {
                    e.entry.data = rmpv::Value::Map(vec![
                        ("from".into(), from.into()),
                        ("to".into(), to.into()),
                    ]);
                }
                events.push(e);
            }
            *story.entry((from.to_owned(), to.to_owned())).or_default() += 1;
            let n = kinds.len() as u64;
            let actions = moves as u64 + 1;
            sessions.insert(
                session,
                SessionModel {
                    player: player.to_owned(),
                    events: n,
                    actions,
                    length_secs: (n - 1) as f64 * STEP_MS as f64 / 1000.0,
                },
            );
            let p = players.entry(player.to_owned()).or_default();
            p.0 += n;
            p.1 += actions;
            p.2 += 1;
        }
        for (i, message) in ERROR_MESSAGES.iter().enumerate() {
            let ts = base + TimeDelta::minutes(6 * i as i64) + TimeDelta::seconds(30);
            let severity = if i == 4 {
                Severity::Critical
            } else {
                Severity::Error
            };
            let mut e = event(
                "agent",
                "gateway",
                "system.error",
                Category::SystemEvent,
                severity,
                ts,
                next(),
            );
            e.entry.data = rmpv::Value::Map(vec![("message".into(), (*message).into())]);
            events.push(e);
        }
        // published in time order, like a live game
        events.sort_by_key(|e| (e.entry.ts, e.entry.id));

        let mut stream = SessionStream {
            events: Vec::new(),
            by_type: BTreeMap::new(),
            by_source: BTreeMap::new(),
            errors_by_source: BTreeMap::new(),
            by_category: BTreeMap::new(),
            by_severity: BTreeMap::new(),
            errors: 0,
            sessions,
            players,
            transitions: BTreeMap::new(),
            story,
            damage,
        };
        let mut last_type: BTreeMap<String, String> = BTreeMap::new();
        for e in &events {
            let entry = &e.entry;
            *stream.by_type.entry(entry.event_type.clone()).or_default() += 1;
            *stream.by_source.entry(entry.source.clone()).or_default() += 1;
            *stream
                .by_category
                .entry(entry.category.as_str().to_owned())
                .or_default() += 1;
            *stream
                .by_severity
                .entry(entry.severity.as_str().to_owned())
                .or_default() += 1;
            let error = entry.severity >= Severity::Error;
            stream.errors += u64::from(error);
            *stream
                .errors_by_source
                .entry(entry.source.clone())
                .or_default() += u64::from(error);
            if let Some(session) = &entry.session {
                if let Some(previous) = last_type.insert(session.clone(), entry.event_type.clone())
                {
                    *stream
                        .transitions
                        .entry((previous, entry.event_type.clone()))
                        .or_default() += 1;
                }
            }
        }
        stream.events = events;
        stream
    }

    fn total(&self) -> u64 {
        self.events.len() as u64
    }
}

async fn publish(js: &async_nats::jetstream::Context, events: &[Event]) -> anyhow::Result<()> {
    let mut publisher = JsPublisher::new(js.clone());
    for e in events {
        let id = e.entry.id.to_string();
        publisher
            .publish(
                &e.subject,
                Bytes::from(encode_entry_vec(&e.entry)),
                Some(&id),
            )
            .await?;
    }
    publisher.flush().await?;
    ensure!(
        publisher.duplicates() == 0,
        "JetStream reported {} duplicates",
        publisher.duplicates()
    );
    Ok(())
}

fn u(v: &Value) -> Option<u64> {
    v.as_u64()
}

fn close(a: f64, b: f64, relative: f64) -> bool {
    (a - b).abs() <= relative * b.abs().max(1e-12)
}

/// `{name: {count, errors, error_rate, ...}}` as `{name: count}`.
fn counts_of(map: &Value) -> BTreeMap<String, u64> {
    map.as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v["count"].as_u64().map(|n| (k.clone(), n)))
                .collect()
        })
        .unwrap_or_default()
}

/// `{name: n}`, zero counts left out.
fn plain_counts(map: &Value) -> BTreeMap<String, u64> {
    map.as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_u64().filter(|n| *n > 0).map(|n| (k.clone(), n)))
                .collect()
        })
        .unwrap_or_default()
}

fn transitions_of(rows: &Value) -> BTreeMap<(String, String), u64> {
    rows.as_array()
        .map(|rows| {
            rows.iter()
                .filter_map(|t| {
                    Some((
                        (t["from"].as_str()?.to_owned(), t["to"].as_str()?.to_owned()),
                        t["count"].as_u64()?,
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Checks a `stats --json` reply against the stream (`scope` is `live` or `range`).
fn check_stats(reply: &Value, stream: &SessionStream, scope: &str) -> anyhow::Result<()> {
    let ctx = || format!("stats reply ({scope}): {reply:#}");
    ensure!(reply["scope"] == scope, "scope is not {scope}: {}", ctx());
    ensure!(
        u(&reply["events"]) == Some(stream.total()),
        "events analysed: {} expected {}",
        reply["events"],
        stream.total()
    );
    let stats = &reply["report"]["stats"];
    let total = &stats["total"];
    ensure!(
        u(&total["count"]) == Some(stream.total()) && u(&total["errors"]) == Some(stream.errors),
        "total {total} expected count {} errors {}",
        stream.total(),
        stream.errors
    );
    let rate = stream.errors as f64 / stream.total() as f64;
    ensure!(
        total["error_rate"]
            .as_f64()
            .is_some_and(|r| close(r, rate, 1e-9)),
        "error rate {} expected {rate}",
        total["error_rate"]
    );
    // everything happened between 40 and 10 minutes ago: all of it in the last hour
    let per_sec_1h = stream.total() as f64 / 3600.0;
    ensure!(
        total["rates"]["per_sec_1h"]
            .as_f64()
            .is_some_and(|r| close(r, per_sec_1h, 1e-9)),
        "1h rate {} expected {per_sec_1h}",
        total["rates"]
    );
    ensure!(
        total["rates"]["per_sec_1m"].as_f64() == Some(0.0),
        "1m rate {} expected 0 (nothing in the last minute)",
        total["rates"]
    );
    let by_type = counts_of(&stats["by_type"]);
    ensure!(
        by_type == stream.by_type,
        "by type {by_type:?} expected {:?}",
        stream.by_type
    );
    let by_source = counts_of(&stats["by_source"]);
    ensure!(
        by_source == stream.by_source,
        "by source {by_source:?} expected {:?}",
        stream.by_source
    );
    for (source, errors) in &stream.errors_by_source {
        let row = &stats["by_source"][source];
        let expected = *errors as f64 / stream.by_source[source] as f64;
        ensure!(
            u(&row["errors"]) == Some(*errors)
                && row["error_rate"]
                    .as_f64()
                    .is_some_and(|r| close(r, expected, 1e-9)),
            "source {source}: {row} expected {errors} errors, error rate {expected}"
        );
    }
    let by_category = plain_counts(&stats["by_category"]);
    ensure!(
        by_category == stream.by_category,
        "by category {by_category:?} expected {:?}",
        stream.by_category
    );
    let by_severity = plain_counts(&stats["by_severity"]);
    ensure!(
        by_severity == stream.by_severity,
        "by severity {by_severity:?} expected {:?}",
        stream.by_severity
    );
    let damage = &reply["report"]["performance"]["by_type"]["player.attack"]["damage"];
    let max = stream.damage.iter().copied().fold(f64::MIN, f64::max);
    let min = stream.damage.iter().copied().fold(f64::MAX, f64::min);
    ensure!(
        u(&damage["count"]) == Some(stream.damage.len() as u64)
            && damage["max"].as_f64() == Some(max)
            && damage["min"].as_f64() == Some(min),
        "damage percentiles {damage} expected count {}, min {min}, max {max}",
        stream.damage.len()
    );
    // each percentile is one of the values within the sketch's 1 %, and they do not decrease
    let mut previous = min;
    for q in ["p50", "p90", "p95", "p99", "max"] {
        let p = damage[q].as_f64().unwrap_or(f64::NAN);
        ensure!(
            stream.damage.iter().any(|v| close(p, *v, 0.01)) && p >= previous * 0.99,
            "damage {q} = {p} is not within 1 % of a value of {:?} at or above the previous percentile {previous}: {damage}",
            stream.damage
        );
        previous = p;
    }
    Ok(())
}

/// Checks a `players --json` reply against the stream.
fn check_players(reply: &Value, stream: &SessionStream, scope: &str) -> anyhow::Result<()> {
    ensure!(reply["scope"] == scope, "scope is not {scope}: {reply:#}");
    let r = &reply["report"];
    ensure!(
        u(&r["distinct_players"]) == Some(PLAYERS.len() as u64) && r["distinct_exact"] == true,
        "distinct players {} (exact {}) expected {} exactly",
        r["distinct_players"],
        r["distinct_exact"],
        PLAYERS.len()
    );
    let with_player: u64 = stream.players.values().map(|p| p.0).sum();
    ensure!(
        u(&r["events_with_player"]) == Some(with_player),
        "events with a player {} expected {with_player}",
        r["events_with_player"]
    );
    let s = &r["sessions"];
    ensure!(
        u(&s["distinct"]) == Some(stream.sessions.len() as u64)
            && u(&s["ended"]) == Some(stream.sessions.len() as u64)
            && u(&s["open"]) == Some(0),
        "sessions {} / ended {} / open {} expected {} ended, 0 open",
        s["distinct"],
        s["ended"],
        s["open"],
        stream.sessions.len()
    );
    let mut seen = BTreeMap::new();
    for row in s["recent"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let id = row["session"].as_str().unwrap_or_default().to_owned();
        ensure!(
            row["state"] == "end_event" && row["explicit_start"] == true,
            "session {id} not ended by its session.end: {row}"
        );
        seen.insert(
            id,
            SessionModel {
                player: row["player"].as_str().unwrap_or_default().to_owned(),
                events: u(&row["events"]).unwrap_or_default(),
                actions: u(&row["actions"]).unwrap_or_default(),
                length_secs: row["length_secs"].as_f64().unwrap_or_default(),
            },
        );
    }
    ensure!(
        seen == stream.sessions,
        "sessions {seen:#?}\nexpected {:#?}",
        stream.sessions
    );
    let top: Vec<(String, u64, u64, u64)> = r["top_players"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|p| {
            (
                p["player"].as_str().unwrap_or_default().to_owned(),
                u(&p["events"]).unwrap_or_default(),
                u(&p["actions"]).unwrap_or_default(),
                u(&p["sessions"]).unwrap_or_default(),
            )
        })
        .collect();
    let mut expected: Vec<(String, u64, u64, u64)> = stream
        .players
        .iter()
        .map(|(p, (e, a, s))| (p.clone(), *e, *a, *s))
        .collect();
    expected.sort_by_key(|p| std::cmp::Reverse(p.1));
    ensure!(
        top == expected,
        "top players {top:?} expected (most events first) {expected:?}"
    );
    Ok(())
}

/// Checks a `patterns --json` reply against the stream.
fn check_patterns(reply: &Value, stream: &SessionStream, scope: &str) -> anyhow::Result<()> {
    ensure!(reply["scope"] == scope, "scope is not {scope}: {reply:#}");
    let r = &reply["report"];
    let transitions = transitions_of(&r["transitions"]);
    ensure!(
        transitions == stream.transitions,
        "transitions {transitions:?} expected {:?}",
        stream.transitions
    );
    let sessions = stream.sessions.len() as u64;
    let starts = plain_counts(&r["start_types"]);
    let ends = plain_counts(&r["end_types"]);
    ensure!(
        starts == BTreeMap::from([("session.start".to_owned(), sessions)])
            && ends == BTreeMap::from([("session.end".to_owned(), sessions)]),
        "start types {starts:?} / end types {ends:?}: expected session.start / session.end × {sessions}"
    );
    let story = transitions_of(&r["story_transitions"]);
    ensure!(
        story == stream.story,
        "story transitions {story:?} expected {:?}",
        stream.story
    );
    let tail = [
        "player.move",
        "player.attack",
        "state.changed",
        "session.end",
    ];
    let sequence = r["sequences"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .find(|s| s["types"] == json!(tail));
    ensure!(
        sequence
            .is_some_and(|s| u(&s["count"]) == Some(sessions) && u(&s["count_error"]) == Some(0)),
        "sequence {tail:?} should count {sessions} exactly: {:?} in {}",
        sequence,
        r["sequences"]
    );
    let errors = stream
        .by_type
        .get("system.error")
        .copied()
        .unwrap_or_default();
    let templates = r["error_templates"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    ensure!(
        templates.len() == 1
            && templates[0]["template"] == TEMPLATE
            && u(&templates[0]["count"]) == Some(errors)
            && templates[0]["example"] == ERROR_MESSAGES[0]
            && templates[0]["event_type"] == "system.error",
        "error templates {} expected one: {TEMPLATE:?} × {errors}, example {:?}",
        r["error_templates"],
        ERROR_MESSAGES[0]
    );
    ensure!(
        u(&r["events_without_session"]) == Some(errors),
        "events without a session {} expected {errors}",
        r["events_without_session"]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_stream_gives_exact_stats_players_and_patterns() -> anyhow::Result<()> {
    bounded(Duration::from_secs(180), async {
        let nats = NatsServer::start().await?;
        let agent = Agent::start(&nats.client_url(), AgentOptions::default()).await?;
        let cli = Cli::new(&nats.client_url())?;
        let stream = SessionStream::build();
        let js = nats.jetstream().await?;
        publish(&js, &stream.events).await?;
        wait_for_counts(&agent, stream.total(), 0, SETTLE).await?;
        wait_drained(&js, SETTLE).await?;

        // over the stored range
        let range = ["--since", "1h", "--json"];
        let stats = cli.json(&[&["stats"][..], &range[..]].concat()).await?;
        check_stats(&stats, &stream, "range")?;
        ensure!(
            stats["since"].is_string() && stats["until"].is_null(),
            "range reply without its since: {stats:#}"
        );
        let players = cli.json(&[&["players"][..], &range[..]].concat()).await?;
        check_players(&players, &stream, "range")?;
        let patterns = cli.json(&[&["patterns"][..], &range[..]].concat()).await?;
        check_patterns(&patterns, &stream, "range")?;

        // the filters
        let filtered = cli
            .json(&["stats", "--since", "1h", "--type", "player.*", "--json"])
            .await?;
        let actions: u64 = stream
            .by_type
            .iter()
            .filter(|(t, _)| t.starts_with("player."))
            .map(|(_, n)| n)
            .sum();
        let types = counts_of(&filtered["report"]["stats"]["by_type"]);
        ensure!(
            u(&filtered["events"]) == Some(actions)
                && types.keys().all(|t| t.starts_with("player."))
                && types.values().sum::<u64>() == actions,
            "--type player.* analysed {} events of {types:?}, expected {actions} player.*",
            filtered["events"]
        );
        let gateway = cli
            .json(&["stats", "--since", "1h", "--source", "gateway", "--json"])
            .await?;
        let total = &gateway["report"]["stats"]["total"];
        ensure!(
            u(&gateway["events"]) == Some(stream.by_source["gateway"])
                && total["error_rate"].as_f64() == Some(1.0),
            "--source gateway: {} events, total {total}; expected {} errors only",
            gateway["events"],
            stream.by_source["gateway"]
        );
        let empty = cli
            .json(&["stats", "--since", "1h", "--until", "50m", "--json"])
            .await?;
        ensure!(
            u(&empty["events"]) == Some(0),
            "a range before every event analysed {}",
            empty["events"]
        );

        // live, once the analytics consumer has seen everything
        let total = stream.total();
        let live = eventually("the live stats to count the stream", SETTLE, || {
            let cli = cli.clone();
            async move {
                let reply = cli.json(&["stats", "--json"]).await?;
                if u(&reply["events"]) >= Some(total) {
                    Ok(ControlFlow::Break(reply))
                } else {
                    Ok(ControlFlow::Continue(format!(
                        "{} events analysed live",
                        reply["events"]
                    )))
                }
            }
        })
        .await?;
        check_stats(&live, &stream, "live")?;
        check_players(&cli.json(&["players", "--json"]).await?, &stream, "live")?;
        check_patterns(&cli.json(&["patterns", "--json"]).await?, &stream, "live")?;

        // readable tables
        let table = cli.success(&["stats", "--since", "1h"]).await?;
        for wanted in [
            "scope: range",
            "BY TYPE",
            "player.move",
            "BY SOURCE",
            "gateway",
            "PERCENTILES",
            "damage",
        ] {
            ensure!(
                table.stdout.contains(wanted),
                "stats table without {wanted:?}: {}",
                table.describe()
            );
        }
        let table = cli.success(&["patterns"]).await?;
        for wanted in [
            "scope: live",
            "TRANSITIONS",
            "session.start",
            "STORY TRANSITIONS",
            "explore",
            TEMPLATE,
            ERROR_MESSAGES[0],
        ] {
            ensure!(
                table.stdout.contains(wanted),
                "patterns table without {wanted:?}: {}",
                table.describe()
            );
        }
        let table = cli.success(&["players", "--top", "2"]).await?;
        ensure!(
            table.stdout.contains("distinct players: 3 (exact)")
                && table.stdout.contains("player-3")
                && table.stdout.contains("(top 2 of 3)"),
            "players table: {}",
            table.describe()
        );
        for verb in ["trends", "anomalies"] {
            let reply = cli.json(&[verb, "--since", "1h", "--json"]).await?;
            ensure!(
                reply["scope"] == "range" && reply["report"].is_object(),
                "{verb}: {reply:#}"
            );
            cli.success(&[verb]).await?;
        }
        let bad = cli.run(&["stats", "--since", "yesterday-ish"]).await?;
        ensure!(
            !bad.status.success() && bad.stderr.contains("--since"),
            "a bad --since is not refused naming the flag: {}",
            bad.describe()
        );
        drop(agent);
        Ok(())
    })
    .await
}

/// The event type of the burst test.
const TICK: &str = "npc.tick";
/// Steady one-minute buckets before the burst.
const STEADY_MINUTES: i64 = 70;

/// ~10 `npc.tick` per minute for 70 minutes (back-dated), then 100 in one minute (the burst),
/// then 5 steady minutes more; returns the events and the burst bucket's start.
fn burst_stream() -> (Vec<Event>, DateTime<Utc>) {
    let minute0 = minute_ago(STEADY_MINUTES + 12);
    let burst = minute0 + TimeDelta::minutes(STEADY_MINUTES);
    let mut events = Vec::new();
    let mut seq = 0u64;
    for m in 0..STEADY_MINUTES + 6 {
        let start = minute0 + TimeDelta::minutes(m);
        let n = if m == STEADY_MINUTES {
            100
        } else {
            8 + (m * 7 % 5)
        };
        for i in 0..n {
            seq += 1;
            let ts = start + TimeDelta::milliseconds(i * 59_000 / n + 250);
            events.push(event(
                "agent",
                "npc1",
                TICK,
                Category::AgentDecision,
                Severity::Info,
                ts,
                seq,
            ));
        }
    }
    (events, burst)
}

fn anomaly_at(reply: &Value, series: &str, at: DateTime<Utc>) -> Option<Value> {
    reply["report"]["anomalies"]
        .as_array()?
        .iter()
        .find(|a| {
            a["series"] == series
                && a["ts"]
                    .as_str()
                    .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                    .is_some_and(|t| t == at)
        })
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_burst_is_an_anomaly_at_its_bucket() -> anyhow::Result<()> {
    bounded(Duration::from_secs(180), async {
        let nats = NatsServer::start().await?;
        let agent = Agent::start(&nats.client_url(), AgentOptions::default()).await?;
        let cli = Cli::new(&nats.client_url())?;
        let (events, burst) = burst_stream();
        let js = nats.jetstream().await?;
        publish(&js, &events).await?;
        wait_for_counts(&agent, events.len() as u64, 0, SETTLE).await?;
        let series = format!("rate:{TICK}");

        // over the stored range, with and without the type filter
        for args in [
            vec!["anomalies", "--since", "2h", "--json"],
            vec!["anomalies", "--since", "2h", "--type", TICK, "--json"],
        ] {
            let reply = cli.json(&args).await?;
            ensure!(reply["scope"] == "range", "{reply:#}");
            let found = anomaly_at(&reply, &series, burst).with_context(|| {
                format!(
                    "`{}`: no anomaly of {series} at the burst {burst}: {:#}",
                    args.join(" "),
                    reply["report"]["anomalies"]
                )
            })?;
            ensure!(
                found["kind"] == "spike"
                    && found["score"].as_f64().is_some_and(|s| s >= 0.5)
                    && found["value"]
                        .as_f64()
                        .is_some_and(|v| close(v, 100.0 / 60.0, 1e-9)),
                "the burst's anomaly: {found}"
            );
            let earlier = reply["report"]["anomalies"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .filter(|a| {
                    a["ts"]
                        .as_str()
                        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                        .is_some_and(|t| t < burst)
                })
                .cloned()
                .collect::<Vec<_>>();
            ensure!(
                earlier.is_empty(),
                "false alarms in the steady hour before the burst: {earlier:?}"
            );
        }
        let table = cli.success(&["anomalies", "--since", "2h"]).await?;
        ensure!(
            table.stdout.contains(&series)
                && table
                    .stdout
                    .contains(&burst.format("%Y-%m-%d %H:%M:%S").to_string())
                && table.stdout.contains("spike"),
            "anomalies table: {}",
            table.describe()
        );

        // live: the driver raises it, and it is recorded as a trace.anomaly entry
        let live = eventually("the live anomaly at the burst", SETTLE, || {
            let (cli, series) = (cli.clone(), series.clone());
            async move {
                let reply = cli.json(&["anomalies", "--json"]).await?;
                match anomaly_at(&reply, &series, burst) {
                    Some(found) => Ok(ControlFlow::Break(found)),
                    None => Ok(ControlFlow::Continue(format!(
                        "{} events analysed, anomalies {}",
                        reply["events"], reply["report"]["anomalies"]
                    ))),
                }
            }
        })
        .await?;
        ensure!(live["kind"] == "spike", "live anomaly: {live}");
        let recorded = eventually("a trace.anomaly entry for the burst", SETTLE, || {
            let (cli, series) = (cli.clone(), series.clone());
            async move {
                let lines = cli
                    .query(&["--type", "trace.anomaly", "--since", "3h"])
                    .await?;
                let found = lines.iter().find(|l| {
                    l.ts == burst
                        && (l.meta.get("series").and_then(Value::as_str) == Some(series.as_str())
                            || l.data["series"] == series.as_str())
                });
                match found {
                    Some(line) => Ok(ControlFlow::Break(line.clone())),
                    None => Ok(ControlFlow::Continue(format!(
                        "{} trace.anomaly entries: {:?}",
                        lines.len(),
                        lines
                            .iter()
                            .map(|l| (l.ts, l.meta.get("series").cloned()))
                            .collect::<Vec<_>>()
                    ))),
                }
            }
        })
        .await?;
        ensure!(
            recorded.category == "system_event" && recorded.severity >= Severity::Warn,
            "the recorded anomaly: {:?}",
            recorded.raw
        );
        drop(agent);
        Ok(())
    })
    .await
}

/// A flat noisy series of `rows` rows, 5 minutes apart, with one spike at `spike`.
fn flat_series_csv(rows: usize, spike: usize) -> String {
    let mut csv = String::from("timestamp,value\n");
    let mut x: u64 = 12_345;
    for i in 0..rows {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let noise = ((x >> 33) % 1000) as f64 / 1000.0 - 0.5;
        let value = if i == spike { 60.0 } else { 20.0 + 2.0 * noise };
        let ts = DateTime::from_timestamp(1_400_000_000 + i as i64 * 300, 0).unwrap_or_default();
        csv.push_str(&format!("{},{value:.3}\n", ts.format("%Y-%m-%d %H:%M:%S")));
    }
    csv
}

/// Checks `detect` output against its input: same rows, same order, scores in [0, 1], and
/// the highest score on row `spike`.
fn check_scored(input: &str, output: &str, spike: usize) -> anyhow::Result<()> {
    let mut lines = output.lines();
    ensure!(
        lines.next() == Some("timestamp,value,anomaly_score"),
        "output header: {:?}",
        output.lines().next()
    );
    let rows: Vec<&str> = lines.collect();
    let inputs: Vec<&str> = input.lines().skip(1).collect();
    ensure!(
        rows.len() == inputs.len(),
        "{} output rows for {} input rows",
        rows.len(),
        inputs.len()
    );
    let mut best = (usize::MAX, -1.0f64);
    for (i, (row, input)) in rows.iter().zip(&inputs).enumerate() {
        let (echo, score) = row
            .rsplit_once(',')
            .with_context(|| format!("output row {i} has no score: {row:?}"))?;
        ensure!(
            echo == *input,
            "output row {i} {row:?} does not echo {input:?}"
        );
        let score: f64 = score
            .parse()
            .with_context(|| format!("output row {i}: score {score:?}"))?;
        ensure!((0.0..=1.0).contains(&score), "row {i}: score {score}");
        if score > best.1 {
            best = (i, score);
        }
    }
    ensure!(
        best.0 == spike && best.1 >= 0.5,
        "the highest score {} is on row {}, not on the spike's row {spike}",
        best.1,
        best.0
    );
    Ok(())
}

fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detect_scores_a_csv_row_by_row() -> anyhow::Result<()> {
    bounded(Duration::from_secs(120), async {
        let dir = tempfile::tempdir()?;
        let cli = Cli::new("nats://127.0.0.1:1")?;
        let (rows, spike) = (200, 150);
        let csv = flat_series_csv(rows, spike);
        let input = dir.path().join("series.csv");
        std::fs::write(&input, &csv)?;
        let output = dir.path().join("scored.csv");

        let run = cli
            .run_raw(&[
                "detect",
                "--input",
                path_str(&input)?,
                "--output",
                path_str(&output)?,
            ])
            .await?;
        ensure!(run.status.success(), "{}", run.describe());
        ensure!(
            run.stdout.is_empty() && run.stderr.contains(&format!("{rows} row(s)")),
            "with --output, stdout stays empty and stderr summarises: {}",
            run.describe()
        );
        check_scored(&csv, &std::fs::read_to_string(&output)?, spike)?;

        // default output: stdout
        let run = cli
            .run_raw(&["detect", "--input", path_str(&input)?])
            .await?;
        ensure!(run.status.success(), "{}", run.describe());
        check_scored(&csv, &run.stdout, spike)?;

        // a bad row is refused, naming the file and the line
        let mut bad = csv.lines().take(4).collect::<Vec<_>>().join("\n");
        bad.push_str("\n2014-05-14 08:00:00,not-a-number\n");
        let bad_path = dir.path().join("bad.csv");
        std::fs::write(&bad_path, bad)?;
        let run = cli
            .run_raw(&["detect", "--input", path_str(&bad_path)?])
            .await?;
        ensure!(
            !run.status.success()
                && run.stderr.contains("line 5")
                && run.stderr.contains("bad.csv"),
            "a bad row must fail naming bad.csv and line 5: {}",
            run.describe()
        );
        let missing = dir.path().join("missing.csv");
        let run = cli
            .run_raw(&["detect", "--input", path_str(&missing)?])
            .await?;
        ensure!(
            !run.status.success() && run.stderr.contains("missing.csv"),
            "a missing input must fail naming it: {}",
            run.describe()
        );
        Ok(())
    })
    .await
}

/// The live `events` count of the stats verb.
async fn live_events(cli: &Cli) -> anyhow::Result<u64> {
    let stats = cli.json(&["stats", "--json"]).await?;
    ensure!(stats["scope"] == "live", "not the live state: {stats:#}");
    u(&stats["events"]).context("live stats without an event count")
}

/// Polls the live count until it equals `want` (it must never pass it).
async fn wait_live_events(cli: &Cli, want: u64) -> anyhow::Result<()> {
    let mut last = 0;
    let deadline = std::time::Instant::now() + SETTLE;
    while std::time::Instant::now() < deadline {
        if let Ok(n) = live_events(cli).await {
            ensure!(
                n <= want,
                "the live state counted {n} events, only {want} were sent"
            );
            if n == want {
                return Ok(());
            }
            last = n;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!("the live state stayed at {last} events, expected {want}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_state_survives_restarts_without_double_counting() -> anyhow::Result<()> {
    bounded(Duration::from_secs(150), async {
        let nats = NatsServer::start().await?;
        let mut agent = Agent::start(&nats.client_url(), AgentOptions::default()).await?;
        let cli = Cli::new(&nats.client_url())?;
        let js = nats.jetstream().await?;
        let stream = SessionStream::build();
        publish(&js, &stream.events).await?;
        let first = stream.total();
        wait_live_events(&cli, first).await?;

        // a clean stop writes a final checkpoint: the restarted agent starts where it was
        let status = agent.terminate(Duration::from_secs(15)).await?;
        ensure!(status.success(), "SIGTERM exit status {status}");
        agent.restart().await?;
        ensure!(
            live_events(&cli).await? == first,
            "after a clean restart the live state is not the checkpointed one"
        );

        // a SIGKILL loses what came after the last checkpoint; JetStream hands it back, and
        // what the checkpoint already holds is not counted again
        let more: Vec<Event> = (0..300)
            .map(|i| {
                let mut e = TraceEntry::new("player.move", "world");
                e.ts = now_ms() - TimeDelta::seconds(30) + TimeDelta::milliseconds(i * 10);
                e.id = EventId(Ulid::new());
                e.player = Some(PLAYERS[(i % 3) as usize].to_owned());
                Event {
                    subject: "game.state.world.player.move".to_owned(),
                    entry: e,
                }
            })
            .collect();
        publish(&js, &more).await?;
        let total = first + more.len() as u64;
        wait_live_events(&cli, total).await?;
        agent.kill()?;
        agent.restart().await?;
        wait_live_events(&cli, total).await?;
        // redeliveries of unacked messages arrive within ack_wait (10 s): none may count twice
        tokio::time::sleep(Duration::from_secs(12)).await;
        let after = live_events(&cli).await?;
        ensure!(
            after == total,
            "after SIGKILL and redelivery the live state counted {after}, expected {total}"
        );
        Ok(())
    })
    .await
}
