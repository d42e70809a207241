//! The offline detector: `timestamp,value` CSV in, `timestamp,value,anomaly_score` CSV out,
//! scored by the same streaming [`AnomalyDetector`] the live tracker uses.
//!
//! Rows are scored one at a time in input order and written at once (no look-ahead; the
//! output could be read while the input still grows). Timestamps and values are written back
//! exactly as they appeared. Accepted timestamps: `2014-04-10 07:15:00` (naive, taken as UTC,
//! optional fraction), `2014-04-10T07:15:00`, RFC 3339, and integer Unix seconds. Fields may be
//! double-quoted; extra columns are ignored.

use std::io::{BufRead, BufReader, Read, Write};

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::detector::{AnomalyDetector, DetectorConfig};
use crate::error::AnalyticsError;

/// What [`detect_csv`] did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectSummary {
    /// Data rows scored.
    pub rows: usize,
    /// Rows flagged (score at or above the threshold).
    pub anomalies: usize,
    /// The highest score.
    pub max_score: f64,
}

/// Parses a timestamp in one of the accepted forms (see the module docs).
pub fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(ts) = DateTime::parse_from_rfc3339(text) {
        return Some(ts.with_timezone(&Utc));
    }
    for format in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(text, format) {
            return Some(naive.and_utc());
        }
    }
    text.parse::<i64>()
        .ok()
        .and_then(|secs| DateTime::from_timestamp(secs, 0))
}

/// Splits one CSV line into raw fields (as written, quotes kept) honouring double quotes.
fn split_fields(line: &str) -> Result<Vec<&str>, String> {
    let mut fields = Vec::new();
    let mut start = 0;
    let mut in_quotes = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => in_quotes = !in_quotes,
            ',' if !in_quotes => {
                fields.push(&line[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if in_quotes {
        return Err("a quoted field is not closed".to_owned());
    }
    fields.push(&line[start..]);
    Ok(fields)
}

fn unquote(field: &str) -> String {
    let trimmed = field.trim();
    match trimmed
        .strip_prefix('"')
        .and_then(|inner| inner.strip_suffix('"'))
    {
        Some(inner) => inner.replace("\"\"", "\""),
        None => trimmed.to_owned(),
    }
}

/// Reads `timestamp,value` rows from `input`, writes `timestamp,value,anomaly_score` rows to
/// `output` (one per input row, same order, score in [0, 1] with six decimals).
///
/// Errors name the 1-based line: a missing column, an unparsable timestamp or value, a
/// non-finite value. Blank lines are skipped (and not echoed).
pub fn detect_csv(
    input: impl Read,
    mut output: impl Write,
    config: &DetectorConfig,
) -> Result<DetectSummary, AnalyticsError> {
    let mut reader = BufReader::new(input);
    let mut line = String::new();
    let mut line_no = 0usize;
    let header = loop {
        line.clear();
        line_no += 1;
        let read = reader
            .read_line(&mut line)
            .map_err(|source| AnalyticsError::Read {
                line: line_no,
                source,
            })?;
        if read == 0 {
            return Err(AnalyticsError::EmptyCsv);
        }
        let trimmed = line.trim_start_matches('\u{feff}').trim();
        if !trimmed.is_empty() {
            break trimmed.to_owned();
        }
    };
    let names: Vec<String> = split_fields(&header)
        .map_err(|reason| AnalyticsError::CsvRow {
            line: line_no,
            reason,
        })?
        .into_iter()
        .map(|f| unquote(f).to_ascii_lowercase())
        .collect();
    let column = |wanted: &'static str| {
        names
            .iter()
            .position(|n| n == wanted)
            .ok_or_else(|| AnalyticsError::CsvHeader {
                header: header.clone(),
                column: wanted,
            })
    };
    let ts_col = column("timestamp")?;
    let value_col = column("value")?;

    output
        .write_all(b"timestamp,value,anomaly_score\n")
        .map_err(AnalyticsError::Write)?;
    let mut detector = AnomalyDetector::new(config.clone());
    let mut summary = DetectSummary {
        rows: 0,
        anomalies: 0,
        max_score: 0.0,
    };
    loop {
        line.clear();
        line_no += 1;
        let read = reader
            .read_line(&mut line)
            .map_err(|source| AnalyticsError::Read {
                line: line_no,
                source,
            })?;
        if read == 0 {
            break;
        }
        let row = line.trim_end_matches(['\n', '\r']);
        if row.trim().is_empty() {
            continue;
        }
        let bad = |reason: String| AnalyticsError::CsvRow {
            line: line_no,
            reason,
        };
        let fields = split_fields(row).map_err(bad)?;
        let (Some(ts_raw), Some(value_raw)) = (fields.get(ts_col), fields.get(value_col)) else {
            return Err(bad(format!(
                "expected at least {} fields, found {} in {row:?}",
                ts_col.max(value_col) + 1,
                fields.len()
            )));
        };
        let ts_text = unquote(ts_raw);
        let Some(ts) = parse_timestamp(&ts_text) else {
            return Err(bad(format!(
                "timestamp {ts_text:?} is not `YYYY-MM-DD HH:MM:SS`, RFC 3339 or Unix seconds"
            )));
        };
        let value_text = unquote(value_raw);
        let value: f64 = value_text
            .parse()
            .map_err(|_| bad(format!("value {value_text:?} is not a number")))?;
        if !value.is_finite() {
            return Err(bad(format!("value {value_text:?} is not a finite number")));
        }
        let assessment = detector.observe_at(Some(ts.timestamp()), value);
        summary.rows += 1;
        summary.anomalies += usize::from(assessment.is_anomaly);
        summary.max_score = summary.max_score.max(assessment.score);
        writeln!(output, "{ts_raw},{value_raw},{:.6}", assessment.score)
            .map_err(AnalyticsError::Write)?;
    }
    output.flush().map_err(AnalyticsError::Write)?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_rows_with_scores_and_names_bad_lines() {
        let mut input = String::from("timestamp,value\n");
        for i in 0..100 {
            input.push_str(&format!(
                "2014-04-10 {:02}:{:02}:00,{}\n",
                i / 60,
                i % 60,
                10 + i % 3
            ));
        }
        let mut out = Vec::new();
        let summary = detect_csv(input.as_bytes(), &mut out, &DetectorConfig::default())
            .expect("valid input");
        assert_eq!(summary.rows, 100);
        let text = String::from_utf8(out).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "timestamp,value,anomaly_score");
        assert!(lines[1].starts_with("2014-04-10 00:00:00,10,"));
        assert_eq!(lines.len(), 101);

        let bad = "timestamp,value\n2014-04-10 00:00:00,1\n2014-04-10 00:05:00,abc\n";
        let err = detect_csv(bad.as_bytes(), Vec::new(), &DetectorConfig::default())
            .expect_err("bad value");
        assert!(err.to_string().starts_with("line 3:"), "{err}");
        let bad = "timestamp,value\nyesterday,1\n";
        let err = detect_csv(bad.as_bytes(), Vec::new(), &DetectorConfig::default())
            .expect_err("bad timestamp");
        assert!(err.to_string().starts_with("line 2:"), "{err}");
        assert!(parse_timestamp("2014-04-10T07:15:00Z").is_some());
    }

    /// The CSV scores are exactly the streaming detector's, irregular timestamps included.
    #[test]
    fn scores_match_the_streaming_detector_on_irregular_timestamps() {
        let mut input = String::from("timestamp,value\n");
        let mut ts = 1_396_310_400i64;
        let mut points = Vec::new();
        for i in 0..600i64 {
            ts += 60 + (i * 53 % 600) + if i == 300 { 4 * 3600 } else { 0 };
            let value = 1000.0 + ((i * 7919) % 97) as f64 + if i == 500 { 900.0 } else { 0.0 };
            let stamp = DateTime::from_timestamp(ts, 0).expect("valid");
            input.push_str(&format!("{},{value}\n", stamp.format("%Y-%m-%d %H:%M:%S")));
            points.push((ts, value));
        }
        let config = DetectorConfig::default();
        let mut out = Vec::new();
        detect_csv(input.as_bytes(), &mut out, &config).expect("valid input");
        let text = String::from_utf8(out).expect("utf-8");
        let mut detector = AnomalyDetector::new(config);
        for (line, (ts, value)) in text.lines().skip(1).zip(points) {
            let expected = detector.observe_at(Some(ts), value).score;
            let got: f64 = line
                .rsplit(',')
                .next()
                .expect("score")
                .parse()
                .expect("number");
            assert!((got - expected).abs() < 1e-6, "{line}: {expected}");
        }
    }
}
