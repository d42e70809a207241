//! Store append benchmark: events/s appended on one core, and bytes on disk per event versus
//! the raw msgpack bytes of the same events. Run: `cargo bench -p trace-store --bench append`
//! (`-- --quick` for a short run). Prints a table and writes `target/bench-append.json`.

use std::time::Instant;

use chrono::{Duration, TimeZone, Utc};
use trace_core::{encode_entry_vec, EventId, Severity, TraceEntry};
use trace_store::{AppendBatch, Store, StoreConfig};

/// Realistic game traffic: player actions, agent decisions with latencies, state changes,
/// a few errors; 200 players over 40 sessions, 12 NPC agents.
fn realistic(i: u64, t0: chrono::DateTime<Utc>) -> TraceEntry {
    let kinds = [
        ("player.move", "world"),
        ("player.attack", "world"),
        ("agent.decision", "npc"),
        ("state.changed", "state"),
        ("story.node.entered", "graph"),
        ("player.chat", "world"),
    ];
    let (t, src) = kinds[(i % 6) as usize];
    let source = if src == "npc" {
        format!("npc{}", i % 12)
    } else {
        src.to_owned()
    };
    let mut e = TraceEntry::new(t, source.clone());
    e.ts = t0 + Duration::microseconds((i * 250) as i64);
    e.id = EventId::derived(e.ts.timestamp_millis() as u64, &i.to_le_bytes());
    let player = i.wrapping_mul(2_654_435_761) % 200;
    e.player = Some(format!("player-{player:04}"));
    e.session = Some(format!("sess-{:04}", player % 40));
    e.severity = if i.is_multiple_of(97) {
        Severity::Error
    } else {
        Severity::Info
    };
    e.metrics
        .insert("latency_ms".into(), ((i * 37) % 400) as f64 / 10.0);
    e.meta
        .insert("subject".into(), format!("game.agent.{source}.{t}").into());
    e.data = match t {
        "player.move" => rmpv::Value::Map(vec![
            ("x".into(), ((i * 13) % 1000).into()),
            ("y".into(), ((i * 7) % 1000).into()),
            ("zone".into(), format!("zone-{}", i % 9).into()),
        ]),
        "agent.decision" => rmpv::Value::Map(vec![
            (
                "action".into(),
                ["patrol", "flee", "attack", "trade"][(i % 4) as usize].into(),
            ),
            (
                "score".into(),
                rmpv::Value::F64(((i * 31) % 100) as f64 / 100.0),
            ),
            (
                "target".into(),
                format!("player-{:04}", (i * 17) % 200).into(),
            ),
        ]),
        "state.changed" => rmpv::Value::Map(vec![
            ("key".into(), format!("inventory.{}", i % 50).into()),
            ("old".into(), (i % 20).into()),
            ("new".into(), (i % 20 + 1).into()),
        ]),
        _ => rmpv::Value::Map(vec![("text".into(), format!("message {}", i % 300).into())]),
    };
    e
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n: u64 = if quick { 200_000 } else { 2_000_000 };
    let batch = 1000usize;
    let t0 = Utc
        .with_ymd_and_hms(2026, 6, 1, 0, 0, 0)
        .single()
        .expect("time");
    let events: Vec<TraceEntry> = (0..n).map(|i| realistic(i, t0)).collect();
    let raw_bytes: u64 = events
        .iter()
        .map(|e| encode_entry_vec(e).len() as u64)
        .sum();

    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = StoreConfig::at(dir.path());
    if let Some(level) = std::env::var("BENCH_LEVEL")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        cfg.compression_level = level;
    }
    if let Some(block) = std::env::var("BENCH_BLOCK")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        cfg.block_events = block;
    }
    println!(
        "zstd level {}, {} events per block",
        cfg.compression_level, cfg.block_events
    );
    let store = Store::open(cfg).expect("open store");
    let start = Instant::now();
    for chunk in events.chunks(batch) {
        store
            .append(AppendBatch {
                entries: chunk,
                ..Default::default()
            })
            .expect("append");
    }
    let append_secs = start.elapsed().as_secs_f64();
    store.flush().expect("flush");
    let total_secs = start.elapsed().as_secs_f64();
    drop(store);
    let store = Store::open(StoreConfig::at(dir.path())).expect("reopen");
    let info = store.info();

    let rate = n as f64 / append_secs;
    let rate_flushed = n as f64 / total_secs;
    let ratio = info.bytes_on_disk as f64 / raw_bytes as f64;
    println!("store append benchmark ({n} realistic events, batches of {batch}, one thread)");
    println!("{:<40} {:>16}", "metric", "value");
    println!("{:<40} {:>16.0}", "append events/s", rate);
    println!(
        "{:<40} {:>16.0}",
        "append + final flush events/s", rate_flushed
    );
    println!(
        "{:<40} {:>16.1}",
        "raw msgpack bytes/event",
        raw_bytes as f64 / n as f64
    );
    println!(
        "{:<40} {:>16.1}",
        "bytes on disk/event",
        info.bytes_on_disk as f64 / n as f64
    );
    println!("{:<40} {:>16.3}", "disk / raw msgpack", ratio);
    println!(
        "{:<40} {:>16.2}",
        "compression ratio (raw/compressed)", info.compression_ratio
    );
    let json = serde_json::json!({
        "events": n,
        "batch": batch,
        "append_events_per_sec": rate,
        "append_flush_events_per_sec": rate_flushed,
        "raw_bytes_per_event": raw_bytes as f64 / n as f64,
        "disk_bytes_per_event": info.bytes_on_disk as f64 / n as f64,
        "disk_over_raw": ratio,
        "compression_ratio": info.compression_ratio,
    });
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-append.json");
    if let Err(e) = std::fs::write(
        &out,
        serde_json::to_string_pretty(&json).unwrap_or_default(),
    ) {
        eprintln!("could not write {}: {e}", out.display());
    }
}
