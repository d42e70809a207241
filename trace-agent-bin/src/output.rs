//! Terminal output: aligned tables for people, JSON (Lines) for programs.

use std::io::Write;

use trace_core::human::format_bytes;
use trace_core::TraceEntry;

use crate::api::QuarantineView;
use crate::api::StoreInfoReply;

/// A table: a header and rows, printed with columns padded to their widest cell.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(header: &[&str]) -> Self {
        Table {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (cells beyond the header are ignored, missing ones are empty).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Renders to `out`; the last column is not padded.
    pub fn print(&self, out: &mut impl Write) -> std::io::Result<()> {
        let n = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().take(n).enumerate() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        let line = |cells: &[String]| -> String {
            let mut s = String::new();
            for (i, width) in widths.iter().enumerate() {
                let c = cells.get(i).map(String::as_str).unwrap_or("");
                if i + 1 == n {
                    s.push_str(c);
                } else {
                    s.push_str(c);
                    s.push_str(&" ".repeat(width - c.chars().count() + 2));
                }
            }
            s.trim_end().to_owned()
        };
        writeln!(out, "{}", line(&self.header))?;
        for r in &self.rows {
            writeln!(out, "{}", line(r))?;
        }
        Ok(())
    }
}

/// Shortens to `max` characters with an ellipsis.
pub fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// Entries as a table.
pub fn entries_table(entries: &[TraceEntry]) -> Table {
    let mut t = Table::new(&[
        "TIME (UTC)",
        "SEVERITY",
        "SOURCE",
        "TYPE",
        "PLAYER",
        "SESSION",
        "ID",
        "DATA",
    ]);
    for e in entries {
        let data = if e.data.is_nil() {
            String::new()
        } else {
            serde_json::to_string(&e.data).unwrap_or_default()
        };
        t.row(vec![
            e.ts.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
            e.severity.to_string(),
            clip(&e.source, 20),
            clip(&e.event_type, 28),
            clip(e.player.as_deref().unwrap_or("-"), 16),
            clip(e.session.as_deref().unwrap_or("-"), 16),
            e.id.to_string(),
            clip(&data, 60),
        ]);
    }
    t
}

/// One entry in full, as `key: value` lines.
pub fn entry_detail(e: &TraceEntry, out: &mut impl Write) -> std::io::Result<()> {
    let json = serde_json::to_value(e).unwrap_or_default();
    if let Some(map) = json.as_object() {
        let width = map.keys().map(String::len).max().unwrap_or(0);
        for (k, v) in map {
            let v = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            writeln!(out, "{k:>width$}: {v}")?;
        }
    }
    Ok(())
}

/// Quarantined messages as a table.
pub fn quarantine_table(records: &[QuarantineView]) -> Table {
    let mut t = Table::new(&[
        "RECEIVED (UTC)",
        "SUBJECT",
        "KIND",
        "SIZE",
        "REASON",
        "PAYLOAD",
    ]);
    for r in records {
        t.row(vec![
            r.received_at.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
            clip(&r.subject, 40),
            r.kind.clone(),
            format_bytes(r.raw_len as u64),
            clip(&r.reason, 70),
            clip(&r.preview, 40),
        ]);
    }
    t
}

/// Store figures as a two-column table, then the segments.
pub fn store_info(info: &StoreInfoReply, out: &mut impl Write) -> std::io::Result<()> {
    let s = &info.store;
    let r = &info.recorder;
    let mut t = Table::new(&["STORE", ""]);
    let ts = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map_or("-".to_owned(), |t| {
            t.format("%Y-%m-%d %H:%M:%S%.3f").to_string()
        })
    };
    for (k, v) in [
        ("directory", s.dir.clone()),
        ("segments", s.segments.to_string()),
        ("blocks", s.blocks.to_string()),
        ("events", s.events.to_string()),
        ("quarantined", s.quarantined.to_string()),
        ("raw msgpack", format_bytes(s.raw_bytes)),
        ("compressed", format_bytes(s.compressed_bytes)),
        ("on disk", format_bytes(s.bytes_on_disk)),
        ("compression ratio", format!("{:.2}x", s.compression_ratio)),
        (
            "disk per raw byte",
            format!("{:.3}", s.disk_bytes_per_raw_byte),
        ),
        ("oldest event", ts(s.oldest)),
        ("newest event", ts(s.newest)),
    ] {
        t.row(vec![k.to_owned(), v]);
    }
    t.print(out)?;
    writeln!(out)?;
    let mut t = Table::new(&["RECORDER", ""]);
    for (k, v) in [
        ("received", r.received.to_string()),
        ("stored", r.stored.to_string()),
        ("quarantined", r.quarantined.to_string()),
        ("duplicates skipped", r.duplicates_skipped.to_string()),
        ("batches", r.batches.to_string()),
        ("write failures", r.write_failures.to_string()),
        ("stream sequence", r.last_stream_seq.to_string()),
        ("store failing", r.store_failing.to_string()),
    ] {
        t.row(vec![k.to_owned(), v]);
    }
    t.print(out)?;
    writeln!(out)?;
    let mut t = Table::new(&["SEGMENT", "EVENTS", "BLOCKS", "ON DISK", "STATE"]);
    for seg in &s.segment_list {
        t.row(vec![
            seg.name.clone(),
            seg.events.to_string(),
            seg.blocks.to_string(),
            format_bytes(seg.bytes_on_disk),
            if seg.active {
                "active".into()
            } else {
                "sealed".into()
            },
        ]);
    }
    t.print(out)
}

/// The health report: overall status, then one line per check.
pub fn health(h: &trace_monitor::HealthStatus, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{} (ready: {}, checked {})",
        h.status.as_str().to_uppercase(),
        if h.ready { "yes" } else { "no" },
        h.checked_at.format("%Y-%m-%d %H:%M:%S UTC")
    )?;
    let mut t = Table::new(&["CHECK", "STATUS", "DETAIL"]);
    for c in &h.checks {
        t.row(vec![
            c.name.clone(),
            c.status.as_str().to_owned(),
            c.message.clone(),
        ]);
    }
    t.print(out)
}

/// Firing alerts, then recently resolved ones.
pub fn alerts(list: &trace_monitor::AlertList, out: &mut impl Write) -> std::io::Result<()> {
    let table = |alerts: &[trace_monitor::Alert], resolved: bool| {
        let mut t = Table::new(&[
            "RULE",
            "SEVERITY",
            "LABELS",
            "VALUE",
            "SINCE (UTC)",
            if resolved {
                "RESOLVED (UTC)"
            } else {
                "MESSAGE"
            },
        ]);
        for a in alerts {
            let labels = a
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            t.row(vec![
                a.rule.clone(),
                a.severity.to_string(),
                if labels.is_empty() {
                    "-".into()
                } else {
                    labels
                },
                trace_monitor::format_number(a.value),
                a.started_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                if resolved {
                    a.resolved_at
                        .map_or("-".into(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                } else {
                    clip(&a.message, 80)
                },
            ]);
        }
        t
    };
    writeln!(out, "FIRING ({})", list.firing.len())?;
    if !list.firing.is_empty() {
        table(&list.firing, false).print(out)?;
    }
    writeln!(out)?;
    writeln!(out, "RECENTLY RESOLVED ({})", list.resolved.len())?;
    if !list.resolved.is_empty() {
        table(&list.resolved, true).print(out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let mut t = Table::new(&["A", "BB", "C"]);
        t.row(vec!["xxx".into(), "y".into(), "z".into()]);
        let mut out = Vec::new();
        t.print(&mut out).expect("print");
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            "A    BB  C\nxxx  y   z\n"
        );
        assert_eq!(clip("abcdef", 4), "abc…");
    }
}
