//! Quarantined messages: what could not become an entry, kept with the raw bytes, the subject
//! and the reason, so nothing is dropped silently and every rejection can be inspected.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One message the decoder refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuarantineRecord {
    /// When the agent received it.
    pub received_at: DateTime<Utc>,
    /// The subject it came on.
    pub subject: String,
    /// The rule it broke (`DecodeErrorKind::as_str`).
    pub kind: String,
    /// The full reason.
    pub reason: String,
    /// Its position in the input stream, when it came from JetStream.
    pub stream_seq: Option<u64>,
    /// The payload exactly as received.
    #[serde(with = "serde_bytes")]
    pub raw: Vec<u8>,
}

impl QuarantineRecord {
    /// The first bytes of the payload as printable text (non-printable bytes escaped).
    pub fn preview(&self, max: usize) -> String {
        let mut out = String::new();
        for b in self.raw.iter().take(max) {
            match *b {
                b' '..=b'~' => out.push(*b as char),
                _ => out.push_str(&format!("\\x{b:02x}")),
            }
        }
        if self.raw.len() > max {
            out.push('…');
        }
        out
    }
}
