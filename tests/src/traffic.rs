//! A deterministic generator of what game services put on the bus, each message paired with
//! what the agent must make of it: an entry with known fields, or a quarantine record of a
//! known kind. Tests compute every expected count from these pairs.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use rmpv::Value;
use serde_json::json;
use trace_core::{encode_entry_vec, Category, EventId, Severity, SourceKind, TraceEntry};
use ulid::Ulid;

/// The three game services of the tests, one per input subject of the default config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GameSource {
    /// An NPC agent: `game.agent.npc1.<type>`.
    Npc1,
    /// The story graph: `game.story.graph.<type>`.
    StoryGraph,
    /// The world state manager: `game.state.world.<type>`.
    StateWorld,
}

impl GameSource {
    /// All three.
    pub const ALL: [GameSource; 3] = [
        GameSource::Npc1,
        GameSource::StoryGraph,
        GameSource::StateWorld,
    ];

    /// The source kind its subjects fall under.
    pub fn kind(self) -> SourceKind {
        match self {
            GameSource::Npc1 => SourceKind::Agent,
            GameSource::StoryGraph => SourceKind::Story,
            GameSource::StateWorld => SourceKind::State,
        }
    }

    /// The source name (the subject token after the kind).
    pub fn name(self) -> &'static str {
        match self {
            GameSource::Npc1 => "npc1",
            GameSource::StoryGraph => "graph",
            GameSource::StateWorld => "world",
        }
    }

    /// `game.<kind>.<name>.<event_type>`.
    pub fn subject(self, event_type: &str) -> String {
        format!("game.{}.{}.{event_type}", self.kind(), self.name())
    }

    /// The envelope types this source emits.
    pub fn event_types(self) -> &'static [&'static str] {
        match self {
            GameSource::Npc1 => &[
                "agent.decision",
                "npc.move",
                "combat.attack",
                "system.error",
            ],
            GameSource::StoryGraph => &[
                "story.node_entered",
                "quest.completed",
                "player.dialogue_choice",
            ],
            GameSource::StateWorld => &[
                "state.changed",
                "player.move",
                "player.trade",
                "system.checkpoint",
            ],
        }
    }

    /// The subject type its raw (non-envelope) traffic uses.
    pub fn raw_type(self) -> &'static str {
        match self {
            GameSource::Npc1 => "telemetry",
            GameSource::StoryGraph => "raw.node",
            GameSource::StateWorld => "tick",
        }
    }

    /// The category the agent gives an event of `event_type` from here when the envelope
    /// names none: the type's own (`player.*` ...), else the source kind's default. This is
    /// trace-core's codec rule.
    pub fn default_category(self, event_type: &str) -> Category {
        Category::from_type(event_type).unwrap_or_else(|| self.kind().default_category())
    }
}

/// One message to publish and what the agent must make of it.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Where it goes.
    pub subject: String,
    /// The bytes.
    pub payload: Bytes,
    /// `Nats-Msg-Id`: the event id when the message carries one.
    pub msg_id: Option<String>,
    /// The expected outcome.
    pub expect: Expect,
}

/// What the agent must do with a message.
#[derive(Debug, Clone)]
pub enum Expect {
    /// Record it as this entry.
    Stored(Expected),
    /// Quarantine it with this `kind` (trace-core's `DecodeErrorKind` names).
    Quarantined {
        /// `malformed`, `invalid_envelope`, `too_large`, ...
        kind: &'static str,
        /// A word or two on what is wrong, for messages.
        what: &'static str,
    },
}

impl Outgoing {
    /// The expected entry, if it must be stored.
    pub fn expected(&self) -> Option<&Expected> {
        match &self.expect {
            Expect::Stored(e) => Some(e),
            Expect::Quarantined { .. } => None,
        }
    }
}

/// The fields a stored entry must have.
#[derive(Debug, Clone, PartialEq)]
pub struct Expected {
    /// The id, when the publisher chose it (`None`: the agent assigns one).
    pub id: Option<EventId>,
    /// The event time, when the publisher set it (`None`: the agent's receive time).
    pub ts: Option<DateTime<Utc>>,
    /// Dotted type.
    pub event_type: String,
    /// Category.
    pub category: Category,
    /// Source.
    pub source: String,
    /// Severity.
    pub severity: Severity,
    /// Player id.
    pub player: Option<String>,
    /// Session id.
    pub session: Option<String>,
    /// Parent id.
    pub parent: Option<EventId>,
    /// Whether the agent wraps it (raw game traffic, not an envelope).
    pub wrapped: bool,
}

impl Expected {
    /// What storing `entry` (sent as an envelope) must give.
    pub fn of_entry(entry: &TraceEntry) -> Expected {
        Expected {
            id: Some(entry.id),
            ts: Some(entry.ts),
            event_type: entry.event_type.clone(),
            category: entry.category.clone(),
            source: entry.source.clone(),
            severity: entry.severity,
            player: entry.player.clone(),
            session: entry.session.clone(),
            parent: entry.parent,
            wrapped: false,
        }
    }

    fn wrapped(source: GameSource) -> Expected {
        let event_type = source.raw_type().to_owned();
        Expected {
            id: None,
            ts: None,
            category: source.default_category(&event_type),
            event_type,
            source: source.name().to_owned(),
            severity: Severity::Info,
            player: None,
            session: None,
            parent: None,
            wrapped: true,
        }
    }
}

/// SplitMix64: tiny, seedable, good enough to vary test data deterministically.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    fn float(&mut self, lo: f64, hi: f64) -> f64 {
        // 53 random bits -> [0, 1); rounded to 3 decimals so JSON round-trips exactly.
        let unit = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        ((lo + unit * (hi - lo)) * 1000.0).round() / 1000.0
    }
}

/// Generates game traffic from a seed: the same seed gives the same messages (ids included).
#[derive(Debug, Clone)]
pub struct GameTraffic {
    rng: SplitMix64,
    vocabulary: Vec<String>,
}

impl GameTraffic {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        let mut rng = SplitMix64(seed);
        let vocabulary = (0..96)
            .map(|_| {
                let len = 3 + rng.below(8) as usize;
                (0..len)
                    .map(|_| char::from(b'a' + rng.below(26) as u8))
                    .collect()
            })
            .collect();
        GameTraffic { rng, vocabulary }
    }

    /// A fresh id whose time part is `ts`, from the generator's randomness.
    pub fn id_at(&mut self, ts: DateTime<Utc>) -> EventId {
        let ms = u64::try_from(ts.timestamp_millis()).unwrap_or(0);
        let random = (u128::from(self.rng.next()) << 64) | u128::from(self.rng.next());
        EventId(Ulid::from_parts(ms, random))
    }

    /// A realistic entry from `source` at `ts`: one of its types, a severity (mostly info),
    /// player and session where the type has them, metrics and a small data map.
    pub fn entry(&mut self, source: GameSource, ts: DateTime<Utc>) -> TraceEntry {
        let event_type = (*self.rng.pick(source.event_types())).to_owned();
        let mut entry = TraceEntry::new(event_type.clone(), source.name());
        entry.id = self.id_at(ts);
        entry.ts = ts;
        entry.category = if event_type == "player.trade" {
            Category::Other("economy".into())
        } else {
            source.default_category(&event_type)
        };
        entry.severity = if event_type == "system.error" {
            *self
                .rng
                .pick(&[Severity::Error, Severity::Error, Severity::Critical])
        } else {
            match self.rng.below(100) {
                0..=9 => Severity::Trace,
                10..=24 => Severity::Debug,
                25..=79 => Severity::Info,
                80..=91 => Severity::Warn,
                92..=97 => Severity::Error,
                _ => Severity::Critical,
            }
        };
        let player_type = event_type.starts_with("player.") || event_type == "combat.attack";
        if player_type || self.rng.chance(20) {
            let player = self.rng.below(6);
            entry.player = Some(format!("player-{player}"));
            entry.session = Some(format!("session-{}", player % 3));
        } else if self.rng.chance(30) {
            entry.session = Some(format!("session-{}", self.rng.below(3)));
        }
        entry
            .metrics
            .insert("latency_ms".into(), self.rng.float(0.2, 40.0));
        if source == GameSource::StateWorld {
            entry
                .metrics
                .insert("tick_ms".into(), self.rng.float(1.0, 16.0));
        }
        entry.data = self.data_for(&event_type);
        entry
    }

    /// `entry` published as a msgpack envelope (trace-core's encoder) on its source's subject.
    pub fn envelope_of(source: GameSource, entry: &TraceEntry) -> Outgoing {
        Outgoing {
            subject: source.subject(&entry.event_type),
            payload: Bytes::from(encode_entry_vec(entry)),
            msg_id: Some(entry.id.to_string()),
            expect: Expect::Stored(Expected::of_entry(entry)),
        }
    }

    /// A realistic msgpack envelope.
    pub fn msgpack_envelope(&mut self, source: GameSource, ts: DateTime<Utc>) -> Outgoing {
        let entry = self.entry(source, ts);
        Self::envelope_of(source, &entry)
    }

    /// A msgpack envelope whose `data` carries `data_bytes` of random-ish but compressible
    /// text (for filling disks).
    pub fn bulky_envelope(
        &mut self,
        source: GameSource,
        ts: DateTime<Utc>,
        data_bytes: usize,
    ) -> Outgoing {
        let mut entry = self.entry(source, ts);
        entry.data = Value::Map(vec![
            ("seq".into(), Value::from(self.rng.next() >> 1)),
            ("blob".into(), Value::from(self.filler(data_bytes))),
        ]);
        Self::envelope_of(source, &entry)
    }

    /// A realistic JSON envelope (as a Python or JS publisher writes it): `ts` as RFC 3339,
    /// and half the time without `category` and/or `source`, which the agent then derives.
    pub fn json_envelope(&mut self, source: GameSource, ts: DateTime<Utc>) -> Outgoing {
        let entry = self.entry(source, ts);
        let mut expected = Expected::of_entry(&entry);
        let mut object = serde_json::Map::new();
        object.insert("id".into(), json!(entry.id.to_string()));
        object.insert(
            "ts".into(),
            json!(entry.ts.to_rfc3339_opts(SecondsFormat::Millis, true)),
        );
        object.insert("type".into(), json!(entry.event_type));
        if self.rng.chance(50) {
            object.insert("category".into(), json!(entry.category.as_str()));
        } else {
            expected.category = source.default_category(&entry.event_type);
        }
        if self.rng.chance(50) {
            object.insert("source".into(), json!(entry.source));
        }
        object.insert("severity".into(), json!(entry.severity.as_str()));
        if let Some(player) = &entry.player {
            object.insert("player".into(), json!(player));
        }
        if let Some(session) = &entry.session {
            object.insert("session".into(), json!(session));
        }
        object.insert("metrics".into(), json!(entry.metrics));
        object.insert(
            "data".into(),
            json!({"hp": self.rng.below(100), "zone": self.zone(), "tags": ["a", "b"]}),
        );
        Outgoing {
            subject: source.subject(&entry.event_type),
            payload: Bytes::from(serde_json::Value::Object(object).to_string()),
            msg_id: Some(entry.id.to_string()),
            expect: Expect::Stored(expected),
        }
    }

    /// The game's own msgpack: a map without `type`, wrapped by the agent.
    pub fn raw_msgpack(&mut self, source: GameSource) -> Outgoing {
        let value = Value::Map(vec![
            ("x".into(), Value::from(self.rng.below(1000))),
            ("y".into(), Value::from(self.rng.below(1000))),
            ("zone".into(), Value::from(self.zone())),
            (
                "path".into(),
                Value::Array(vec![Value::from(1), Value::from(2), Value::from(3)]),
            ),
        ]);
        let mut payload = Vec::new();
        // Writing to a Vec cannot fail.
        let _ = rmpv::encode::write_value(&mut payload, &value);
        Self::raw(source, payload)
    }

    /// The game's own JSON: an object without `type`, wrapped by the agent.
    pub fn raw_json(&mut self, source: GameSource) -> Outgoing {
        let body = json!({"hp": self.rng.below(100), "pos": [self.rng.below(50), self.rng.below(50)], "zone": self.zone()});
        Self::raw(source, body.to_string().into_bytes())
    }

    /// Plain text (a log line), wrapped by the agent.
    pub fn raw_text(&mut self, source: GameSource) -> Outgoing {
        let text = format!(
            "{} reached {} after {} ticks",
            source.name(),
            self.zone(),
            self.rng.below(500)
        );
        Self::raw(source, text.into_bytes())
    }

    /// Protobuf-encoded bytes (field 1 varint, field 2 string, field 3 fixed64): opaque to the
    /// agent, wrapped as binary.
    pub fn raw_protobuf(&mut self, source: GameSource) -> Outgoing {
        let mut bytes = vec![0x08, 0x96, 0x01, 0x12, 0x06];
        bytes.extend_from_slice(b"npc-42");
        bytes.push(0x19);
        bytes.extend_from_slice(&self.rng.next().to_le_bytes());
        Self::raw(source, bytes)
    }

    fn raw(source: GameSource, payload: Vec<u8>) -> Outgoing {
        Outgoing {
            subject: source.subject(source.raw_type()),
            payload: Bytes::from(payload),
            msg_id: None,
            expect: Expect::Stored(Expected::wrapped(source)),
        }
    }

    /// Everything that must be quarantined, one of each: a truncated msgpack envelope, a JSON
    /// envelope with a numeric `type`, JSON and msgpack envelopes with `ts: "yesterday"`, an
    /// unknown severity, and a payload over 1 MiB.
    pub fn garbage(&mut self, ts: DateTime<Utc>) -> Vec<Outgoing> {
        vec![
            self.truncated_msgpack(GameSource::Npc1, ts),
            Self::non_string_type(GameSource::StoryGraph),
            Self::json_bad_ts(GameSource::StateWorld),
            Self::msgpack_bad_ts(GameSource::Npc1),
            Self::bad_severity(GameSource::StoryGraph),
            self.oversized(GameSource::StateWorld, ts),
        ]
    }

    /// A msgpack envelope cut in half.
    pub fn truncated_msgpack(&mut self, source: GameSource, ts: DateTime<Utc>) -> Outgoing {
        let entry = self.entry(source, ts);
        let full = encode_entry_vec(&entry);
        let cut = full[..full.len() / 2].to_vec();
        Self::bad(source, "broken", cut, "malformed", "truncated msgpack")
    }

    /// `{"type": 5, ...}`.
    pub fn non_string_type(source: GameSource) -> Outgoing {
        let body = json!({"type": 5, "data": {"hp": 3}});
        Self::bad(
            source,
            "numeric",
            body.to_string().into_bytes(),
            "invalid_envelope",
            "numeric type",
        )
    }

    /// A JSON envelope with `ts: "yesterday"`.
    pub fn json_bad_ts(source: GameSource) -> Outgoing {
        let body = json!({"type": "player.move", "ts": "yesterday", "player": "player-1"});
        Self::bad(
            source,
            "player.move",
            body.to_string().into_bytes(),
            "invalid_envelope",
            "ts yesterday (json)",
        )
    }

    /// A msgpack envelope with `ts: "yesterday"`.
    pub fn msgpack_bad_ts(source: GameSource) -> Outgoing {
        let value = Value::Map(vec![
            ("type".into(), Value::from("agent.decision")),
            ("ts".into(), Value::from("yesterday")),
            ("data".into(), Value::from(7)),
        ]);
        let mut payload = Vec::new();
        let _ = rmpv::encode::write_value(&mut payload, &value);
        Self::bad(
            source,
            "agent.decision",
            payload,
            "invalid_envelope",
            "ts yesterday (msgpack)",
        )
    }

    /// A JSON envelope with `severity: "loud"`.
    pub fn bad_severity(source: GameSource) -> Outgoing {
        let body = json!({"type": "quest.completed", "severity": "loud"});
        Self::bad(
            source,
            "quest.completed",
            body.to_string().into_bytes(),
            "invalid_envelope",
            "unknown severity",
        )
    }

    /// An otherwise valid JSON envelope of 1 MiB + 1 KiB.
    pub fn oversized(&mut self, source: GameSource, ts: DateTime<Utc>) -> Outgoing {
        let id = self.id_at(ts);
        let body = json!({
            "id": id.to_string(),
            "type": "state.changed",
            "data": {"blob": self.filler(1024 * 1024 + 1024)},
        });
        Self::bad(
            source,
            "state.changed",
            body.to_string().into_bytes(),
            "too_large",
            "over 1 MiB",
        )
    }

    fn bad(
        source: GameSource,
        event_type: &str,
        payload: Vec<u8>,
        kind: &'static str,
        what: &'static str,
    ) -> Outgoing {
        Outgoing {
            subject: source.subject(event_type),
            payload: Bytes::from(payload),
            msg_id: None,
            expect: Expect::Quarantined { kind, what },
        }
    }

    /// `n` envelopes from `source` linked by `parent` (each caused by the previous), root
    /// first, at `ts`, `ts`+1 ms, ...
    pub fn chain(&mut self, source: GameSource, ts: DateTime<Utc>, n: usize) -> Vec<Outgoing> {
        let mut parent = None;
        (0..n)
            .map(|i| {
                let at = ts + chrono::Duration::milliseconds(i as i64);
                let mut entry = self.entry(source, at);
                entry.parent = parent;
                parent = Some(entry.id);
                Self::envelope_of(source, &entry)
            })
            .collect()
    }

    /// About `bytes` of text: words from a fixed vocabulary with numbers in between, so it
    /// compresses a few times but not to nothing.
    pub fn filler(&mut self, bytes: usize) -> String {
        let mut out = String::with_capacity(bytes + 16);
        while out.len() < bytes {
            let word = self.rng.below(self.vocabulary.len() as u64) as usize;
            out.push_str(&self.vocabulary[word]);
            if self.rng.chance(25) {
                out.push_str(&format!(" {}", self.rng.below(100_000)));
            }
            out.push(' ');
        }
        out.truncate(bytes);
        out
    }

    fn zone(&mut self) -> &'static str {
        const ZONES: [&str; 5] = ["north-gate", "harbor", "old-mill", "crypt", "market"];
        ZONES[self.rng.below(ZONES.len() as u64) as usize]
    }

    fn data_for(&mut self, event_type: &str) -> Value {
        let mut map: BTreeMap<&str, Value> = BTreeMap::new();
        match event_type {
            "agent.decision" => {
                map.insert(
                    "action",
                    Value::from(*self.rng.pick(&["patrol", "flee", "trade", "attack"])),
                );
                map.insert("score", Value::F64(self.rng.float(0.0, 1.0)));
                map.insert(
                    "options",
                    Value::Array(vec!["patrol".into(), "flee".into(), "attack".into()]),
                );
            }
            "state.changed" => {
                map.insert("key", Value::from("weather"));
                map.insert("from", Value::from("rain"));
                map.insert("to", Value::from("fog"));
            }
            _ => {
                map.insert("x", Value::from(self.rng.below(1000)));
                map.insert("y", Value::from(self.rng.below(1000)));
                map.insert("zone", Value::from(self.zone()));
            }
        }
        Value::Map(map.into_iter().map(|(k, v)| (Value::from(k), v)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DurationRound;
    use trace_core::{Decoder, Incoming};

    /// The generator's expectations agree with trace-core's codec, so an end-to-end failure
    /// points at the agent, not at the test's model.
    #[test]
    fn expectations_agree_with_the_codec() {
        let mut traffic = GameTraffic::new(42);
        // Whole milliseconds: JSON envelopes carry RFC 3339 with milliseconds.
        let ts = (Utc::now() - chrono::TimeDelta::minutes(3))
            .duration_trunc(chrono::TimeDelta::milliseconds(1))
            .expect("in range");
        let mut messages = Vec::new();
        for source in GameSource::ALL {
            for _ in 0..50 {
                messages.push(traffic.msgpack_envelope(source, ts));
                messages.push(traffic.json_envelope(source, ts));
            }
            messages.push(traffic.raw_msgpack(source));
            messages.push(traffic.raw_json(source));
            messages.push(traffic.raw_text(source));
            messages.push(traffic.raw_protobuf(source));
            messages.push(traffic.bulky_envelope(source, ts, 2048));
        }
        messages.extend(traffic.chain(GameSource::Npc1, ts, 3));
        messages.extend(traffic.garbage(ts));
        let decoder = Decoder::default();
        let received_at = Utc::now();
        for message in &messages {
            let decoded = decoder.decode(&Incoming {
                subject: &message.subject,
                payload: &message.payload,
                received_at,
                fallback_id: None,
            });
            match (&message.expect, decoded) {
                (Expect::Stored(expected), Ok(entry)) => {
                    let mut got = Expected::of_entry(&entry);
                    if expected.wrapped {
                        got.id = None;
                        got.ts = None;
                        got.wrapped = true;
                        assert_eq!(
                            entry.meta.get("wrapped"),
                            Some(&Value::Boolean(true)),
                            "{message:?}"
                        );
                    }
                    assert_eq!(&got, expected, "{}", message.subject);
                    assert_eq!(
                        message.msg_id,
                        expected.id.map(|id| id.to_string()),
                        "{}",
                        message.subject
                    );
                }
                (Expect::Quarantined { kind, what }, Err(e)) => {
                    assert_eq!(e.kind.as_str(), *kind, "{what}: {e}");
                }
                (expect, decoded) => {
                    panic!(
                        "{}: expected {expect:?}, decoded {decoded:?}",
                        message.subject
                    )
                }
            }
        }
    }

    #[test]
    fn filler_compresses_but_not_to_nothing() {
        let mut traffic = GameTraffic::new(7);
        let text = traffic.filler(4096);
        assert_eq!(text.len(), 4096);
        let distinct: std::collections::HashSet<&str> = text.split(' ').collect();
        assert!(distinct.len() > 50, "too repetitive: {}", distinct.len());
    }
}
