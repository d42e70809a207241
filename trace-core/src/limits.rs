//! Limits every incoming message is checked against before it is decoded, so no message can
//! make the agent allocate without bound, recurse without bound, or hold huge strings.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The highest `max_depth` a configuration may set: serde_json stops at 128 levels anyway, and
/// the stored-entry reader (which recurses) is bounded to match, so it can never overflow a
/// thread's stack.
pub const MAX_DEPTH_LIMIT: usize = 128;

/// Limits on incoming messages. Defaults:
///
/// | field | default | what it bounds |
/// |---|---|---|
/// | `max_message_bytes` | 1 MiB | the whole payload |
/// | `max_depth` | 32 | nesting of maps/arrays (the top level is depth 1; at most [`MAX_DEPTH_LIMIT`]) |
/// | `max_string_bytes` | 64 KiB | any one string, binary or ext value |
/// | `max_map_keys` | 1024 | keys in any one map |
/// | `max_array_len` | 65536 | elements in any one array |
/// | `max_name_bytes` | 256 | `type`, `source`, `category`, `session`, `player` |
/// | `max_future_skew` | 1 day | how far past its arrival an envelope's `ts` may lie |
///
/// An envelope `ts` outside [2000-01-01, arrival + `max_future_skew`] is not refused: the
/// entry takes the arrival time and keeps the original in `meta.original_ts` (see the codec).
///
/// JSON payloads are also bounded by serde_json's fixed recursion limit of 128.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest accepted payload in bytes.
    pub max_message_bytes: usize,
    /// Deepest accepted nesting of maps and arrays.
    pub max_depth: usize,
    /// Longest accepted string, binary or ext value in bytes.
    pub max_string_bytes: usize,
    /// Most keys accepted in one map.
    pub max_map_keys: usize,
    /// Most elements accepted in one array.
    pub max_array_len: usize,
    /// Longest accepted name field (`type`, `source`, `category`, `session`, `player`).
    pub max_name_bytes: usize,
    /// How far after its arrival an envelope's `ts` may lie before it counts as clock skew.
    #[serde(with = "crate::human::duration_serde")]
    pub max_future_skew: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 1024 * 1024,
            max_depth: 32,
            max_string_bytes: 64 * 1024,
            max_map_keys: 1024,
            max_array_len: 65536,
            max_name_bytes: 256,
            max_future_skew: Duration::from_secs(86_400),
        }
    }
}

impl Limits {
    /// Checks that every limit is usable; returns the name of the first bad key and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let checks: [(&'static str, usize, usize); 6] = [
            ("max_message_bytes", self.max_message_bytes, 64),
            ("max_depth", self.max_depth, 2),
            ("max_string_bytes", self.max_string_bytes, 16),
            ("max_map_keys", self.max_map_keys, 16),
            ("max_array_len", self.max_array_len, 1),
            ("max_name_bytes", self.max_name_bytes, 16),
        ];
        for (name, value, min) in checks {
            if value < min {
                return Err((name, format!("must be at least {min}, got {value}")));
            }
        }
        if self.max_depth > MAX_DEPTH_LIMIT {
            return Err((
                "max_depth",
                format!("must be at most {MAX_DEPTH_LIMIT}, got {}", self.max_depth),
            ));
        }
        if self.max_future_skew > Duration::from_secs(100 * 365 * 86_400) {
            return Err((
                "max_future_skew",
                "must be at most 100 years (36500d)".to_owned(),
            ));
        }
        if self.max_message_bytes > 64 * 1024 * 1024 {
            return Err((
                "max_message_bytes",
                format!(
                    "must be at most 64 MiB (NATS payloads are smaller), got {}",
                    self.max_message_bytes
                ),
            ));
        }
        Ok(())
    }
}
