//! Human-friendly values shared by config files and the CLI: durations (`500ms`, `15m`, `2h`,
//! `7d`, `1h30m`), byte sizes (`512KiB`, `10GiB`, `500MB`) and time arguments (RFC 3339 or a
//! duration meaning "that long ago").

use std::time::Duration;

use chrono::{DateTime, Utc};

/// Parses `1h30m`, `15m`, `2h`, `7d`, `500ms`, `10s`, `1w`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let hint = "use a number and a unit, e.g. 500ms, 30s, 15m, 2h, 7d";
    if t.is_empty() {
        return Err(format!("empty duration: {hint}"));
    }
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("{s:?} has a number without a unit: {hint}"))?;
        if digits == 0 {
            return Err(format!("{s:?} is not a duration: {hint}"));
        }
        let n: f64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{s:?} is not a duration: {hint}"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let secs = match unit {
            "ms" => n / 1000.0,
            "s" | "sec" | "secs" => n,
            "m" | "min" | "mins" => n * 60.0,
            "h" | "hr" | "hrs" => n * 3600.0,
            "d" | "day" | "days" => n * 86_400.0,
            "w" | "week" | "weeks" => n * 604_800.0,
            other => return Err(format!("{s:?}: unknown unit {other:?}: {hint}")),
        };
        total += Duration::from_secs_f64(secs);
    }
    Ok(total)
}

/// Formats a duration the way `parse_duration` reads it (`1h30m`, `250ms`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let mut secs = d.as_secs();
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

/// Parses `10GiB`, `512KiB`, `500MB`, `1.5GB`, `4096`; binary (KiB) and decimal (KB) units.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| {
        format!("{s:?} is not a size: use e.g. 512MiB, 10GiB, 500MB or a byte count")
    })?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" => 1e12,
        "tib" => 1024.0_f64.powi(4),
        other => {
            return Err(format!(
                "{s:?}: unknown size unit {other:?}: use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB"
            ))
        }
    };
    Ok((n * mult).round() as u64)
}

/// Formats bytes with binary units (`1.5 GiB`).
pub fn format_bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

/// A time argument: RFC 3339 (`2026-01-02T03:04:05Z`), or a duration meaning that long
/// before `now` (`15m`, `2h`, `7d`).
pub fn parse_time_arg(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s.trim()) {
        return Ok(t.with_timezone(&Utc));
    }
    let d = parse_duration(s).map_err(|_| {
        format!("{s:?} is neither an RFC 3339 time (2026-01-02T03:04:05Z) nor a relative time (15m, 2h, 7d)")
    })?;
    let d = chrono::Duration::from_std(d).map_err(|e| format!("{s:?}: {e}"))?;
    Ok(now - d)
}

/// `#[serde(with = "trace_core::human::duration_serde")]` for a `Duration`: `"30s"`, `"15m"` or a number of
/// seconds.
pub mod duration_serde {
    use std::time::Duration;

    use super::{format_duration, parse_duration};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the value as people write it.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }

    /// Reads a string with a unit, or a bare number.
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

/// `#[serde(with = "trace_core::human::bytes_serde")]` for a `u64` byte count: `"512MiB"` or a number.
pub mod bytes_serde {
    use super::parse_bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the value as people write it.
    pub fn serialize<S: Serializer>(n: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(*n)
    }

    /// Reads a string with a unit, or a bare number.
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("42"), Ok(Duration::from_secs(42)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
        for s in ["1h30m", "250ms", "7d", "45s"] {
            assert_eq!(format_duration(parse_duration(s).expect("parses")), s);
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("10GiB"), Ok(10 * 1024 * 1024 * 1024));
        assert_eq!(parse_bytes("500MB"), Ok(500_000_000));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("4 MiB"), Ok(4 * 1024 * 1024));
        assert!(parse_bytes("lots").is_err());
        assert_eq!(format_bytes(1536), "1.5 KiB");
    }

    #[test]
    fn time_args() {
        let now = Utc
            .with_ymd_and_hms(2026, 1, 2, 3, 0, 0)
            .single()
            .expect("ts");
        assert_eq!(
            parse_time_arg("2h", now),
            Ok(Utc
                .with_ymd_and_hms(2026, 1, 2, 1, 0, 0)
                .single()
                .expect("ts"))
        );
        assert_eq!(
            parse_time_arg("2026-01-01T00:00:00+01:00", now),
            Ok(Utc
                .with_ymd_and_hms(2025, 12, 31, 23, 0, 0)
                .single()
                .expect("ts"))
        );
        assert!(parse_time_arg("yesterday", now).is_err());
    }
}
