//! Store figures, in-process through trace-store's API: append throughput (batches of 1000 as
//! the recorder writes them, final flush included; making the events is not timed), bytes on
//! disk per event against the raw msgpack bytes, then query latency over the store just
//! built (reopened, as after a restart), for a player filter and a type filter, limit 100,
//! newest first, each query ending at another point of the stored time range.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serde_json::json;
use trace_core::{Order, Query};
use trace_store::{AppendBatch, Store, StoreConfig};

use super::report::{self, Figure, Report, Target};
use super::workload::Workload;
use crate::tools::Progress;

/// Entries per append, as the recorder's default batch.
const BATCH: usize = 1000;
/// Entries a query asks for.
const LIMIT: usize = 100;
/// Queries run first and not counted (opening sealed segments, first page faults), at most.
const WARMUP: usize = 5;

/// Latencies of one kind of query.
pub(crate) struct Latency {
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    mean_entries: f64,
    mean_blocks_read: f64,
}

/// What the store phase measured.
pub(crate) struct StoreResult {
    events: u64,
    append_secs: f64,
    /// Append rate over each tenth of the events (does it hold as the store grows?).
    append_rate_by_tenth: Vec<f64>,
    make_secs: f64,
    raw_bytes: u64,
    disk_bytes: u64,
    compression_ratio: f64,
    segments: u64,
    blocks: u64,
    queries: usize,
    player: Latency,
    event_type: Latency,
}

/// Builds a store of `n` events in a temp dir and runs `queries` queries of each kind.
pub(crate) fn run(n: u64, queries: usize) -> anyhow::Result<StoreResult> {
    let dir = tempfile::Builder::new()
        .prefix("trace-bench-store-")
        .tempdir()
        .context("creating the bench store dir")?;
    let cfg = StoreConfig::at(dir.path().join("store"));
    let store = Store::open(cfg.clone()).context("opening the bench store")?;
    let mut workload = Workload::new(n);
    let (mut players, mut types) = (BTreeSet::new(), BTreeSet::new());
    let mut progress = Progress::new("appended", Some(n));
    let (mut append, mut make) = (Duration::ZERO, Duration::ZERO);
    let mut by_tenth = Vec::with_capacity(10);
    let (mut tenth_start_secs, mut tenth_start_events) = (0.0, 0u64);
    loop {
        let t = Instant::now();
        let entries = workload.next_entries();
        make += t.elapsed();
        if entries.is_empty() {
            break;
        }
        if players.len() < super::workload::PLAYERS {
            players.extend(entries.iter().filter_map(|e| e.player.clone()));
            types.extend(entries.iter().map(|e| e.event_type.clone()));
        }
        let t = Instant::now();
        for batch in entries.chunks(BATCH) {
            store.append(AppendBatch {
                entries: batch,
                ..AppendBatch::default()
            })?;
        }
        append += t.elapsed();
        progress.show(workload.made(), false);
        if workload.made() - tenth_start_events >= n / 10 {
            let secs = append.as_secs_f64() - tenth_start_secs;
            by_tenth.push((workload.made() - tenth_start_events) as f64 / secs.max(1e-9));
            (tenth_start_secs, tenth_start_events) = (append.as_secs_f64(), workload.made());
        }
    }
    let t = Instant::now();
    store.flush()?;
    append += t.elapsed();
    progress.finish(n);
    drop(store);

    let store = Store::open(cfg).context("reopening the bench store")?;
    let info = store.info();
    anyhow::ensure!(
        info.events == n,
        "the store holds {} events, {n} were appended",
        info.events
    );
    let (oldest, newest) = match (info.oldest, info.newest) {
        (Some(o), Some(n)) => (o, n),
        _ => anyhow::bail!("the store reports no time range"),
    };
    let players: Vec<String> = players.into_iter().collect();
    let types: Vec<String> = types.into_iter().collect();
    let player = latency(&store, queries, oldest, newest, |q, i| {
        q.player = Some(players[i % players.len()].clone());
    })?;
    let event_type = latency(&store, queries, oldest, newest, |q, i| {
        q.event_type = Some(types[i % types.len()].clone());
    })?;
    Ok(StoreResult {
        events: n,
        append_secs: append.as_secs_f64(),
        append_rate_by_tenth: by_tenth,
        make_secs: make.as_secs_f64(),
        raw_bytes: info.raw_bytes,
        disk_bytes: info.bytes_on_disk,
        compression_ratio: info.compression_ratio,
        segments: info.segments,
        blocks: info.blocks,
        queries,
        player,
        event_type,
    })
}

/// Runs `count` queries (after a warm-up), query `i` filtered by `filter(q, i)` and ending
/// at a point spread over `[oldest, newest]` (the first one at the newest event).
fn latency(
    store: &Store,
    count: usize,
    oldest: DateTime<Utc>,
    newest: DateTime<Utc>,
    filter: impl Fn(&mut Query, usize),
) -> anyhow::Result<Latency> {
    let span_ms = (newest - oldest).num_milliseconds().max(1) as f64;
    let warmup = (count / 10).clamp(1, WARMUP);
    let mut ms = Vec::with_capacity(count);
    let (mut entries, mut blocks) = (0usize, 0u64);
    for i in 0..warmup + count {
        // a stride coprime with most counts visits the range in a scattered order
        let at = ((i * 7919) % count.max(1)) as f64 / count.max(1) as f64;
        let until = newest - chrono::Duration::milliseconds((at * span_ms * 0.95) as i64);
        let mut q = Query {
            until: Some(until + chrono::Duration::milliseconds(1)),
            limit: Some(LIMIT),
            order: Order::NewestFirst,
            ..Query::default()
        };
        filter(&mut q, i);
        let started = Instant::now();
        let page = store.query(&q)?;
        let took = started.elapsed().as_secs_f64() * 1e3;
        if i >= warmup {
            ms.push(took);
            entries += page.entries.len();
            blocks += page.blocks_read;
        }
    }
    let n = ms.len().max(1) as f64;
    Ok(Latency {
        p50_ms: report::percentile(&mut ms, 0.5),
        p99_ms: report::percentile(&mut ms, 0.99),
        max_ms: ms.last().copied().unwrap_or(0.0),
        mean_entries: entries as f64 / n,
        mean_blocks_read: blocks as f64 / n,
    })
}

impl StoreResult {
    /// Adds the store's figures and details to the report.
    pub(crate) fn add_to(&self, report: &mut Report) {
        let n = self.events as f64;
        report.add(Figure::new(
            "store_append_events_per_sec",
            format!(
                "store append ({} events, batches of {BATCH}, one thread)",
                report::count(self.events)
            ),
            n / self.append_secs.max(1e-9),
            "events/s",
            Target::AtLeast(1_000_000.0),
        ));
        report.add(Figure::new(
            "store_raw_bytes_per_event",
            "raw msgpack per event",
            self.raw_bytes as f64 / n,
            "bytes",
            Target::None,
        ));
        report.add(Figure::new(
            "store_disk_bytes_per_event",
            "on disk per event (sled, summaries included)",
            self.disk_bytes as f64 / n,
            "bytes",
            Target::None,
        ));
        report.add(Figure::new(
            "store_disk_over_raw",
            "on disk / raw msgpack",
            self.disk_bytes as f64 / self.raw_bytes.max(1) as f64,
            "x",
            Target::AtMost(0.3),
        ));
        let over = format!("limit {LIMIT}, over {} events", report::count(self.events));
        for (key50, key99, what, l) in [
            (
                "query_player_p50_ms",
                "query_player_p99_ms",
                "player",
                &self.player,
            ),
            (
                "query_type_p50_ms",
                "query_type_p99_ms",
                "type",
                &self.event_type,
            ),
        ] {
            report.add(Figure::new(
                key50,
                format!("query p50, {what} filter, {over}"),
                l.p50_ms,
                "ms",
                Target::None,
            ));
            report.add(Figure::new(
                key99,
                format!("query p99, {what} filter, {over}"),
                l.p99_ms,
                "ms",
                Target::Below(20.0),
            ));
        }
        let lat = |l: &Latency| {
            json!({
                "p50_ms": l.p50_ms, "p99_ms": l.p99_ms, "max_ms": l.max_ms,
                "mean_entries": l.mean_entries, "mean_blocks_read": l.mean_blocks_read,
            })
        };
        report.detail(
            "store",
            json!({
                "events": self.events,
                "append_batch": BATCH,
                "append_secs": self.append_secs,
                "append_events_per_sec_by_tenth": self.append_rate_by_tenth,
                "make_events_secs": self.make_secs,
                "raw_bytes": self.raw_bytes,
                "disk_bytes": self.disk_bytes,
                "compression_ratio": self.compression_ratio,
                "segments": self.segments,
                "blocks": self.blocks,
                "queries_per_filter": self.queries,
                "query_limit": LIMIT,
                "query_player": lat(&self.player),
                "query_type": lat(&self.event_type),
            }),
        );
    }
}
