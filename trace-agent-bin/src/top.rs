//! `trace-agent top`: a live terminal view of the running agent, refreshed every second from
//! the `metrics` API verb. Per-type rates come from the difference of the per-source, per-type
//! counters between two frames.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::Instant;

use trace_core::human::format_bytes;
use trace_monitor::Sample;

use crate::api::MetricsReply;
use crate::cli::TopArgs;
use crate::output::{clip, Table};

/// Runs until Ctrl-C (or after one frame with `--once`).
pub async fn run(args: &TopArgs) -> anyhow::Result<()> {
    let api = args.conn.api().await?;
    let clear = !args.once && std::io::stdout().is_terminal();
    let mut previous: Option<(Instant, TypeCounts)> = None;
    let mut frames = 0u32;
    loop {
        let reply: MetricsReply = api.call("metrics", &serde_json::json!({})).await?;
        let now = Instant::now();
        let counts = type_counts(&reply.samples);
        let rates = previous.as_ref().map(|(at, before)| {
            let secs = now.duration_since(*at).as_secs_f64().max(1e-3);
            counts
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        (v - before.get(k).copied().unwrap_or(0.0)).max(0.0) / secs,
                    )
                })
                .collect::<BTreeMap<_, _>>()
        });
        previous = Some((now, counts));
        frames += 1;
        // --once still waits for a second frame so per-type rates can be shown
        if !args.once || frames >= 2 {
            let mut out = std::io::stdout().lock();
            if clear {
                write!(out, "\x1b[2J\x1b[H")?;
            }
            frame(&reply, rates.as_ref(), &mut out)?;
            out.flush()?;
            if args.once {
                return Ok(());
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(args.interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// Events so far per (source, type).
type TypeCounts = BTreeMap<(String, String), f64>;

fn type_counts(samples: &[Sample]) -> TypeCounts {
    samples
        .iter()
        .filter(|s| s.name == "trace_source_events_total")
        .map(|s| {
            let label = |k: &str| s.labels.get(k).cloned().unwrap_or_default();
            ((label("source"), label("type")), s.value)
        })
        .collect()
}

fn value(samples: &[Sample], name: &str) -> Option<f64> {
    samples
        .iter()
        .find(|s| s.name == name && s.labels.is_empty())
        .map(|s| s.value)
}

/// One screen.
fn frame(
    reply: &MetricsReply,
    type_rates: Option<&TypeCounts>,
    out: &mut impl Write,
) -> std::io::Result<()> {
    let s = &reply.samples;
    let num = |name: &str, digits: usize| {
        value(s, name).map_or("-".to_owned(), |v| format!("{v:.digits$}"))
    };
    let bytes = |name: &str| value(s, name).map_or("-".to_owned(), |v| format_bytes(v as u64));
    writeln!(
        out,
        "trace-agent top  {}  health: {}  lag: {}  received: {}/s  quarantined: {}/s",
        reply.health.checked_at.format("%Y-%m-%d %H:%M:%S UTC"),
        reply.health.status.as_str(),
        num("trace_agent_consumer_lag", 0),
        num("trace_agent_events_received_per_second", 1),
        num("trace_agent_events_quarantined_per_second", 1),
    )?;
    writeln!(
        out,
        "cpu: {}%  rss: {}  open files: {}  data dir: {}  free disk: {}  stored: {}",
        num("trace_agent_cpu_percent", 1),
        bytes("trace_agent_rss_bytes"),
        num("trace_agent_open_files", 0),
        bytes("trace_agent_data_dir_bytes"),
        bytes("trace_agent_disk_free_bytes"),
        num("trace_agent_events_stored_total", 0),
    )?;
    writeln!(out)?;
    let mut t = Table::new(&[
        "SOURCE",
        "EVENTS/S",
        "ERROR %",
        "SILENT FOR",
        "EVENTS",
        "ERRORS",
    ]);
    let mut sources = reply.sources.clone();
    sources.sort_by(|a, b| {
        b.events_per_second
            .unwrap_or(0.0)
            .total_cmp(&a.events_per_second.unwrap_or(0.0))
    });
    for src in sources.iter().take(15) {
        t.row(vec![
            clip(&src.source, 24),
            src.events_per_second
                .map_or("-".into(), |r| format!("{r:.1}")),
            src.error_ratio
                .map_or("-".into(), |r| format!("{:.2}", r * 100.0)),
            format!("{:.0}s", src.seconds_silent),
            src.events_total.to_string(),
            src.errors_total.to_string(),
        ]);
    }
    t.print(out)?;
    writeln!(out)?;
    let mut t = Table::new(&["TYPE", "SOURCE", "EVENTS/S"]);
    if let Some(rates) = type_rates {
        let mut rows: Vec<_> = rates.iter().collect();
        rows.sort_by(|a, b| b.1.total_cmp(a.1));
        for ((source, ty), rate) in rows.into_iter().take(15) {
            t.row(vec![clip(ty, 32), clip(source, 24), format!("{rate:.1}")]);
        }
    }
    t.print(out)?;
    writeln!(out)?;
    writeln!(out, "FIRING ALERTS ({})", reply.alerts.firing.len())?;
    for a in &reply.alerts.firing {
        writeln!(
            out,
            "  [{}] {}: {}",
            a.severity,
            a.rule,
            clip(&a.message, 100)
        )?;
    }
    Ok(())
}
