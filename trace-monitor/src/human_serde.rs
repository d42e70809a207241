//! Serde helpers for durations written as people write them (`30s`, `15m`, `2h`), using
//! `trace_core::human` so config files read the same everywhere.

/// `#[serde(with = "human_duration")]` for a `Duration`: `"30s"`, `"15m"` or a number of
/// seconds.
pub(crate) mod human_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};
    use trace_core::human::{format_duration, parse_duration};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom("expected a duration such as \"30s\", \"15m\" or \"2h\"")
        })? {
            Raw::Secs(n) => Ok(Duration::from_secs(n)),
            Raw::Text(t) => parse_duration(&t).map_err(serde::de::Error::custom),
        }
    }
}

/// `#[serde(with = "human_bytes")]` for a `u64` byte count: `"512MiB"` or a number.
pub(crate) mod human_bytes {
    use serde::{Deserialize, Deserializer, Serializer};
    use trace_core::human::parse_bytes;

    pub fn serialize<S: Serializer>(n: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(*n)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "expected a size such as \"512MiB\", \"10GiB\" or a byte count",
            )
        })? {
            Raw::Bytes(n) => Ok(n),
            Raw::Text(t) => parse_bytes(&t).map_err(serde::de::Error::custom),
        }
    }
}
