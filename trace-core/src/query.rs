//! The question asked of a store: a time range, filters, order, a page size and a cursor.
//! Shared by the store (which answers it), the API (which carries it) and the CLI.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::entry::{Category, EventId, Severity, TraceEntry};

/// Which end of the time range comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// Latest events first (the default).
    #[default]
    NewestFirst,
    /// Earliest events first.
    OldestFirst,
}

/// A filter over stored entries. Every field is optional; absent means "any".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Query {
    /// Only entries at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only entries before this time.
    pub until: Option<DateTime<Utc>>,
    /// Exact event type, or a prefix when it ends in `.*` (`player.*`).
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    /// Exact source.
    pub source: Option<String>,
    /// Exact category.
    pub category: Option<Category>,
    /// Minimum severity.
    pub severity: Option<Severity>,
    /// Exact player id.
    pub player: Option<String>,
    /// Exact session id.
    pub session: Option<String>,
    /// Most entries in one page (the store caps it at [`MAX_PAGE`]).
    pub limit: Option<usize>,
    /// Newest or oldest first.
    pub order: Order,
    /// Continue after this cursor (from the previous page's `next_cursor`).
    pub cursor: Option<Cursor>,
}

/// The largest page a store returns; `limit` above it is capped (follow the cursor).
pub const MAX_PAGE: usize = 1000;
/// The page size when no limit is given.
pub const DEFAULT_PAGE: usize = 100;

impl Query {
    /// The effective page size.
    pub fn page_size(&self) -> usize {
        self.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE)
    }

    /// Whether `entry` passes every filter (the time range and the cursor included).
    pub fn matches(&self, entry: &TraceEntry) -> bool {
        if self.since.is_some_and(|s| entry.ts < s) || self.until.is_some_and(|u| entry.ts >= u) {
            return false;
        }
        if let Some(t) = &self.event_type {
            if !type_matches(t, &entry.event_type) {
                return false;
            }
        }
        if self.source.as_ref().is_some_and(|s| *s != entry.source)
            || self.category.as_ref().is_some_and(|c| *c != entry.category)
            || self.severity.is_some_and(|s| entry.severity < s)
            || self
                .player
                .as_ref()
                .is_some_and(|p| Some(p) != entry.player.as_ref())
            || self
                .session
                .as_ref()
                .is_some_and(|s| Some(s) != entry.session.as_ref())
        {
            return false;
        }
        match &self.cursor {
            Some(c) => c.admits(entry.order_key(), self.order),
            None => true,
        }
    }
}

/// Whether a type filter (exact, or `prefix.*`) accepts a type.
pub fn type_matches(filter: &str, event_type: &str) -> bool {
    match filter.strip_suffix(".*") {
        Some(prefix) => {
            event_type == prefix
                || (event_type.starts_with(prefix) && event_type[prefix.len()..].starts_with('.'))
        }
        None => filter == event_type,
    }
}

/// A position in the total order of entries (time, then id): the last entry of a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// Nanoseconds since the epoch of the last entry returned.
    pub ts_nanos: i64,
    /// Its id.
    pub id: EventId,
}

impl Cursor {
    /// The cursor just after `entry`.
    pub fn after(entry: &TraceEntry) -> Cursor {
        let (ts_nanos, id) = entry.order_key();
        Cursor { ts_nanos, id }
    }

    /// Whether an entry at `key` comes after this cursor in `order`.
    pub fn admits(&self, key: (i64, EventId), order: Order) -> bool {
        let me = (self.ts_nanos, self.id);
        match order {
            Order::NewestFirst => key < me,
            Order::OldestFirst => key > me,
        }
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ts_nanos, self.id)
    }
}

impl std::str::FromStr for Cursor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ts, id) = s
            .rsplit_once('-')
            .ok_or_else(|| format!("cursor {s:?} is not <nanos>-<ulid>"))?;
        Ok(Cursor {
            ts_nanos: ts
                .parse()
                .map_err(|e| format!("cursor {s:?}: bad time part ({e})"))?,
            id: id.parse().map_err(|e| format!("cursor {s:?}: {e}"))?,
        })
    }
}

impl Serialize for Cursor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cursor {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One page of answers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QueryPage {
    /// The entries, in the requested order.
    pub entries: Vec<TraceEntry>,
    /// Where the next page starts; `None` when there is nothing more.
    pub next_cursor: Option<Cursor>,
    /// Blocks decoded to answer.
    pub blocks_read: u64,
    /// Blocks skipped thanks to their summaries.
    pub blocks_skipped: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_prefix_filters() {
        assert!(type_matches("player.*", "player.move"));
        assert!(type_matches("player.*", "player"));
        assert!(!type_matches("player.*", "players.move"));
        assert!(type_matches("player.move", "player.move"));
        assert!(!type_matches("player.move", "player.moved"));
    }

    #[test]
    fn cursor_round_trips() {
        let e = TraceEntry::new("a", "b");
        let c = Cursor::after(&e);
        let back: Cursor = c.to_string().parse().expect("parses");
        assert_eq!(back, c);
        assert!(!c.admits(e.order_key(), Order::NewestFirst));
        assert!(!c.admits(e.order_key(), Order::OldestFirst));
    }
}
