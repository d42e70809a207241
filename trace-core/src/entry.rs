//! `TraceEntry`, the one record everything in the project is about, and its parts.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use ulid::Ulid;

use crate::error::FieldError;

/// A ULID identifying one event; also its idempotence key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId(pub Ulid);

impl EventId {
    /// A fresh id whose time part is `ts`.
    pub fn new_at(ts: DateTime<Utc>) -> Self {
        EventId(Ulid::from_datetime(std::time::SystemTime::from(ts)))
    }

    /// An id derived from a stable key (`ms` for the time part, `key` hashed into the
    /// random part): the same key always gives the same id, so a redelivered message that
    /// needed an id gets the one it got the first time.
    pub fn derived(ms: u64, key: &[u8]) -> Self {
        // FNV-1a over the key, widened to the 80 random bits ULIDs carry.
        let mut h: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
        for b in key {
            h ^= u128::from(*b);
            h = h.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013B);
        }
        EventId(Ulid::from_parts(ms, h))
    }

    /// The millisecond timestamp encoded in the ULID.
    pub fn timestamp_ms(&self) -> u64 {
        self.0.timestamp_ms()
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for EventId {
    type Err = FieldError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // 26 base32 characters hold 130 bits; the ulid crate drops the top two, so
        // "8ZZZ...Z" would alias "0ZZZ...Z". The ULID spec says to refuse anything above
        // "7ZZZZZZZZZZZZZZZZZZZZZZZZZ".
        if s.len() == ulid::ULID_LEN && !matches!(s.as_bytes().first(), Some(b'0'..=b'7')) {
            return Err(FieldError::Invalid {
                field: "id",
                reason: format!("{s:?} is not a ULID (larger than 7ZZZZZZZZZZZZZZZZZZZZZZZZZ)"),
            });
        }
        Ulid::from_string(s)
            .map(EventId)
            .map_err(|e| FieldError::Invalid {
                field: "id",
                reason: format!("{s:?} is not a ULID ({e})"),
            })
    }
}

impl Serialize for EventId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for EventId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// How serious an event is, ordered from `Trace` to `Critical`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Fine-grained tracing.
    Trace = 0,
    /// Debugging detail.
    Debug = 1,
    /// Normal operation (the default).
    #[default]
    Info = 2,
    /// Something unexpected that did not fail.
    Warn = 3,
    /// A failure.
    Error = 4,
    /// A failure that needs attention now.
    Critical = 5,
}

impl Severity {
    /// All severities, lowest first.
    pub const ALL: [Severity; 6] = [
        Severity::Trace,
        Severity::Debug,
        Severity::Info,
        Severity::Warn,
        Severity::Error,
        Severity::Critical,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Trace => "trace",
            Severity::Debug => "debug",
            Severity::Info => "info",
            Severity::Warn => "warn",
            Severity::Error => "error",
            Severity::Critical => "critical",
        }
    }

    /// The severity with this numeric rank (0 = trace .. 5 = critical).
    pub fn from_rank(rank: u8) -> Option<Severity> {
        Severity::ALL.get(usize::from(rank)).copied()
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Severity {
    type Err = FieldError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "trace" => Severity::Trace,
            "debug" => Severity::Debug,
            "info" => Severity::Info,
            "warn" | "warning" => Severity::Warn,
            "error" => Severity::Error,
            "critical" | "fatal" => Severity::Critical,
            _ => {
                return Err(FieldError::Invalid {
                    field: "severity",
                    reason: format!(
                        "{s:?} is not one of trace, debug, info, warn, error, critical"
                    ),
                })
            }
        })
    }
}

/// What kind of thing happened.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Category {
    /// The game state changed.
    StateChange,
    /// A player did something.
    PlayerAction,
    /// Something in the system (start, stop, error, checkpoint).
    SystemEvent,
    /// An NPC or game agent decided something.
    AgentDecision,
    /// Any other category a publisher names.
    Other(String),
}

impl Category {
    /// The wire name.
    pub fn as_str(&self) -> &str {
        match self {
            Category::StateChange => "state_change",
            Category::PlayerAction => "player_action",
            Category::SystemEvent => "system_event",
            Category::AgentDecision => "agent_decision",
            Category::Other(s) => s,
        }
    }

    /// Parses a wire name; unknown names become `Other`.
    pub fn parse(s: &str) -> Category {
        match s {
            "state_change" => Category::StateChange,
            "player_action" => Category::PlayerAction,
            "system_event" => Category::SystemEvent,
            "agent_decision" => Category::AgentDecision,
            other => Category::Other(other.to_owned()),
        }
    }

    /// A small bit for the four known categories (bit 4 for any other), used by block summaries.
    pub fn bit(&self) -> u8 {
        match self {
            Category::StateChange => 1,
            Category::PlayerAction => 2,
            Category::SystemEvent => 4,
            Category::AgentDecision => 8,
            Category::Other(_) => 16,
        }
    }

    /// The default category for an event type: its first dotted token when that names one
    /// (`player.*`, `state.*`, `system.*`/`error.*`, `agent.*`/`decision.*`), else none.
    pub fn from_type(event_type: &str) -> Option<Category> {
        let head = event_type.split('.').next().unwrap_or("");
        match head {
            "player" => Some(Category::PlayerAction),
            "state" => Some(Category::StateChange),
            "system" | "error" => Some(Category::SystemEvent),
            "agent" | "decision" | "npc" => Some(Category::AgentDecision),
            _ => None,
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Category {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Category {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(Category::parse(&s))
    }
}

/// One recorded event: the envelope of the wire format, normalised.
///
/// Serialises (serde) with the wire field names, so JSON output reads like what was sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceEntry {
    /// Unique id (ULID), the idempotence key.
    pub id: EventId,
    /// When it happened (UTC).
    pub ts: DateTime<Utc>,
    /// Dotted event type, e.g. `player.move`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// What kind of event this is.
    pub category: Category,
    /// The emitting service.
    pub source: String,
    /// How serious it is.
    #[serde(default)]
    pub severity: Severity,
    /// The game session, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The player, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub player: Option<String>,
    /// The event that caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<EventId>,
    /// Performance figures such as `latency_ms`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
    /// The payload, kept as sent.
    #[serde(
        default = "nil",
        skip_serializing_if = "rmpv::Value::is_nil",
        serialize_with = "crate::codec::serialize_value"
    )]
    pub data: rmpv::Value,
    /// Metadata; the agent adds `subject` and `received_at`.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        serialize_with = "crate::codec::serialize_meta"
    )]
    pub meta: BTreeMap<String, rmpv::Value>,
}

fn nil() -> rmpv::Value {
    rmpv::Value::Nil
}

impl TraceEntry {
    /// A new entry of `event_type` from `source`, now, with a fresh id and defaults elsewhere.
    pub fn new(event_type: impl Into<String>, source: impl Into<String>) -> Self {
        let ts = Utc::now();
        let event_type = event_type.into();
        TraceEntry {
            id: EventId::new_at(ts),
            ts,
            category: Category::from_type(&event_type).unwrap_or(Category::SystemEvent),
            event_type,
            source: source.into(),
            severity: Severity::Info,
            session: None,
            player: None,
            parent: None,
            metrics: BTreeMap::new(),
            data: rmpv::Value::Nil,
            meta: BTreeMap::new(),
        }
    }

    /// The total order used by queries and cursors: time, then id.
    pub fn order_key(&self) -> (i64, EventId) {
        (self.ts.timestamp_nanos_opt().unwrap_or(i64::MAX), self.id)
    }

    /// A `meta` value as a string, if it is one.
    pub fn meta_str(&self, key: &str) -> Option<&str> {
        self.meta.get(key).and_then(|v| v.as_str())
    }
}
