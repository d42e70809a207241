//! The bench's results: figures with their targets, the machine they were measured on, a
//! table for people and JSON for programs.

use std::io::Write;
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::output::Table;

/// What a figure should be.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target {
    /// At least this much.
    AtLeast(f64),
    /// At most this much.
    AtMost(f64),
    /// Strictly less.
    Below(f64),
    /// Informative: no target.
    None,
}

impl Target {
    fn met(self, value: f64) -> Option<bool> {
        match self {
            Target::AtLeast(t) => Some(value >= t),
            Target::AtMost(t) => Some(value <= t),
            Target::Below(t) => Some(value < t),
            Target::None => None,
        }
    }

    fn describe(self, unit: &str) -> String {
        match self {
            Target::AtLeast(t) => format!(">= {}", value_text(t, unit)),
            Target::AtMost(t) => format!("<= {}", value_text(t, unit)),
            Target::Below(t) => format!("< {}", value_text(t, unit)),
            Target::None => "-".to_owned(),
        }
    }
}

/// One measured figure.
#[derive(Debug, Clone)]
pub(crate) struct Figure {
    key: &'static str,
    label: String,
    value: f64,
    unit: &'static str,
    target: Target,
}

impl Figure {
    /// A figure under a stable JSON key, with a label for people.
    pub(crate) fn new(
        key: &'static str,
        label: impl Into<String>,
        value: f64,
        unit: &'static str,
        target: Target,
    ) -> Figure {
        Figure {
            key,
            label: label.into(),
            value,
            unit,
            target,
        }
    }
}

/// Every figure of one run, and the details behind them.
pub(crate) struct Report {
    mode: &'static str,
    started_at: chrono::DateTime<chrono::Utc>,
    elapsed: Duration,
    figures: Vec<Figure>,
    details: Map<String, Value>,
    machine: Value,
}

impl Report {
    /// An empty report of a `quick` or `full` run, started now.
    pub(crate) fn new(mode: &'static str) -> Report {
        Report {
            mode,
            started_at: chrono::Utc::now(),
            elapsed: Duration::ZERO,
            figures: Vec::new(),
            details: Map::new(),
            machine: machine(),
        }
    }

    /// Adds a figure.
    pub(crate) fn add(&mut self, figure: Figure) {
        self.figures.push(figure);
    }

    /// Adds a detail (sizes, counts, secondary figures) under `key` in the JSON.
    pub(crate) fn detail(&mut self, key: &str, value: Value) {
        self.details.insert(key.to_owned(), value);
    }

    /// Records how long the whole run took, and the load the machine was under by then.
    pub(crate) fn finish(&mut self, elapsed: Duration) {
        self.elapsed = elapsed;
        self.machine["load_average_end"] = load_average();
    }

    /// The results as JSON: the command line, the machine, each figure with its target and
    /// whether it was met, and the details.
    pub(crate) fn json(&self) -> Value {
        let figures: Map<String, Value> = self
            .figures
            .iter()
            .map(|f| {
                (
                    f.key.to_owned(),
                    json!({
                        "label": f.label,
                        "value": f.value,
                        "unit": f.unit,
                        "target": match f.target {
                            Target::None => Value::Null,
                            t => Value::from(t.describe(f.unit)),
                        },
                        "pass": f.target.met(f.value),
                    }),
                )
            })
            .collect();
        json!({
            "command": std::env::args().collect::<Vec<_>>().join(" "),
            "mode": self.mode,
            "started_at": self.started_at.to_rfc3339(),
            "duration_secs": self.elapsed.as_secs_f64(),
            "version": env!("CARGO_PKG_VERSION"),
            "machine": self.machine,
            "figures": figures,
            "details": self.details,
        })
    }

    /// The table: one row per figure with its target and pass/fail.
    pub(crate) fn print(&self, out: &mut impl Write) -> std::io::Result<()> {
        let m = &self.machine;
        writeln!(
            out,
            "trace-agent bench ({}), {}: {} cores, {}, {}, nats-server {}, {:.0} s, load {} -> {}",
            self.mode,
            self.started_at.format("%Y-%m-%d"),
            m["cores"],
            m["cpu_model"].as_str().unwrap_or("unknown CPU"),
            trace_core::human::format_bytes(m["memory_bytes"].as_u64().unwrap_or(0)),
            m["nats_server"].as_str().unwrap_or("?"),
            self.elapsed.as_secs_f64(),
            m["load_average_start"],
            m["load_average_end"],
        )?;
        let mut t = Table::new(&["FIGURE", "MEASURED", "TARGET", "RESULT"]);
        for f in &self.figures {
            t.row(vec![
                f.label.clone(),
                value_text(f.value, f.unit),
                f.target.describe(f.unit),
                match f.target.met(f.value) {
                    Some(true) => "pass".to_owned(),
                    Some(false) => "FAIL".to_owned(),
                    None => String::new(),
                },
            ]);
        }
        t.print(out)?;
        let missed = self
            .figures
            .iter()
            .filter(|f| f.target.met(f.value) == Some(false))
            .count();
        if self.mode == "quick" {
            writeln!(
                out,
                "quick run: small sizes, the figures only show that every phase runs"
            )?;
        } else if missed > 0 {
            writeln!(out, "{missed} figure(s) missed their target")?;
        } else {
            writeln!(out, "every figure met its target")?;
        }
        Ok(())
    }
}

/// `12345678` as `12,345,678`.
pub(crate) fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A value with its unit, with as many decimals as the unit deserves.
fn value_text(v: f64, unit: &str) -> String {
    match unit {
        "events/s" | "ns" => format!("{} {unit}", count(v.round().max(0.0) as u64)),
        "x" => format!("{v:.3}x"),
        "ms" => format!("{v:.2} ms"),
        _ => format!("{v:.1} {unit}"),
    }
}

/// The `p` quantile (0..=1) of `values`, nearest rank; 0 for none. Sorts `values`.
pub(crate) fn percentile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let rank = (p * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

/// Cores, memory, CPU model, kernel and nats-server version, from /proc and the binary.
fn machine() -> Value {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned());
    let meminfo = read("/proc/meminfo");
    let memory_bytes = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024);
    let nats_server = crate::demo::nats_server_binary().and_then(|bin| {
        let out = std::process::Command::new(bin)
            .arg("--version")
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        Some(text.trim().trim_start_matches("nats-server: ").to_owned())
    });
    json!({
        "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "memory_bytes": memory_bytes,
        "cpu_model": cpu_model,
        "arch": std::env::consts::ARCH,
        "os": std::env::consts::OS,
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "nats_server": nats_server,
        "load_average_start": load_average(),
    })
}

/// The 1-minute load average (other work on the machine skews every figure).
fn load_average() -> Value {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(Value::Null, Value::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_percentiles() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(12_345_678), "12,345,678");
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&mut v, 0.5), 50.0);
        assert_eq!(percentile(&mut v, 0.99), 99.0);
        assert_eq!(percentile(&mut [], 0.5), 0.0);
        assert_eq!(Target::Below(20.0).met(19.9), Some(true));
        assert_eq!(Target::AtLeast(0.8).met(0.79), Some(false));
        assert_eq!(Target::None.met(1.0), None);
    }
}
