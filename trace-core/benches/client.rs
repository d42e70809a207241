//! Measures what `TraceClient::log_event` costs the game loop (median ns per call, buffered
//! only) and, when a nats-server answers on `$NATS_URL` or 127.0.0.1:4222, the sustained rate
//! at which the client gets entries acked by JetStream.
//!
//! ```sh
//! cargo bench -p trace-core --bench client
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use serde::Serialize;
use trace_core::client::{OverflowPolicy, TraceClient};
use trace_core::SourceKind;

const ROUNDS: usize = 400;
const CALLS_PER_ROUND: usize = 256;
const PUBLISH_COUNT: usize = 200_000;
const BENCH_SOURCE: &str = "bench-client";

#[derive(Serialize)]
struct Move {
    x: i32,
    y: i32,
}

fn no_meta() -> BTreeMap<String, rmpv::Value> {
    BTreeMap::new()
}

fn main() {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start a tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run()) {
        eprintln!("bench failed: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    buffered_cost().await?;
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    let probe = tokio::time::timeout(Duration::from_millis(500), async_nats::connect(&url)).await;
    match probe {
        Ok(Ok(nats)) => publish_rate(&url, nats).await?,
        _ => println!("publish rate: skipped (no nats-server answers on {url}; set NATS_URL)"),
    }
    Ok(())
}

/// The game-loop cost: the client is spill-only with room for every call, so this is the
/// buffering path (id, timestamp, payload conversion, queue push) and nothing else.
async fn buffered_cost() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let client = TraceClient::builder("nats://127.0.0.1:1", BENCH_SOURCE, SourceKind::Agent)
        .spill_dir(dir.path())
        .spill_only(true)
        .buffer_capacity(ROUNDS * CALLS_PER_ROUND + 1)
        .overflow(OverflowPolicy::DropNewest)
        .connect()
        .await?;
    // Warm-up (allocator, page faults).
    for i in 0..CALLS_PER_ROUND as i32 {
        client
            .log_event("player.move", Move { x: i, y: -i }, no_meta())
            .await;
    }
    let mut per_call_ns = Vec::with_capacity(ROUNDS);
    let started = Instant::now();
    for round in 0..ROUNDS {
        let t = Instant::now();
        for i in 0..CALLS_PER_ROUND {
            let v = (round * CALLS_PER_ROUND + i) as i32;
            client
                .log_event("player.move", Move { x: v, y: -v }, no_meta())
                .await;
        }
        per_call_ns.push(t.elapsed().as_nanos() as f64 / CALLS_PER_ROUND as f64);
    }
    let total = started.elapsed();
    per_call_ns.sort_by(f64::total_cmp);
    let median = per_call_ns[per_call_ns.len() / 2];
    let p99 = per_call_ns[per_call_ns.len() * 99 / 100];
    let calls = ROUNDS * CALLS_PER_ROUND;
    println!(
        "log_event (buffered): median {median:.0} ns/call, p99 of rounds {p99:.0} ns/call, \
         {:.2} M calls/s over {calls} calls",
        calls as f64 / total.as_secs_f64() / 1e6
    );
    let stats = client.stats();
    if stats.dropped > 0 {
        println!("  (warning: {} dropped by the bound)", stats.dropped);
    }
    let _ = client.close().await;
    Ok(())
}

/// Sustained delivery: log as fast as possible, then flush; rate = acked entries / time.
async fn publish_rate(
    url: &str,
    nats: async_nats::Client,
) -> Result<(), Box<dyn std::error::Error>> {
    let js = jetstream::new(nats);
    let probe_subject = format!("game.agent.{BENCH_SOURCE}.player.move");
    let own_stream = match js.stream_by_subject(probe_subject.as_str()).await {
        Ok(name) => {
            println!("publish rate: into the existing stream {name}");
            None
        }
        Err(_) => {
            let name = "TRACE_CLIENT_BENCH".to_owned();
            js.create_stream(stream::Config {
                name: name.clone(),
                subjects: vec![format!("game.agent.{BENCH_SOURCE}.>")],
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await?;
            Some(name)
        }
    };
    let dir = tempfile::tempdir()?;
    let client = TraceClient::builder(url, BENCH_SOURCE, SourceKind::Agent)
        .spill_dir(dir.path())
        .buffer_capacity(PUBLISH_COUNT)
        .connect()
        .await?;
    let started = Instant::now();
    for i in 0..PUBLISH_COUNT as i32 {
        client
            .log_event("player.move", Move { x: i, y: -i }, no_meta())
            .await;
        if i % 4096 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let logged_in = started.elapsed();
    let flushed = client.flush_timeout(Duration::from_secs(120)).await;
    let elapsed = started.elapsed();
    let stats = client.stats();
    println!(
        "publish rate: {PUBLISH_COUNT} entries logged in {:.0} ms, acked by JetStream after \
         {:.0} ms: {:.0} entries/s sustained ({})",
        logged_in.as_secs_f64() * 1e3,
        elapsed.as_secs_f64() * 1e3,
        stats.acked as f64 / elapsed.as_secs_f64(),
        match flushed {
            Ok(()) => "all acked".to_owned(),
            Err(e) => e.to_string(),
        }
    );
    println!("  stats: {stats:?}");
    let _ = client.close().await;
    if let Some(name) = own_stream {
        let _ = js.delete_stream(&name).await;
    }
    Ok(())
}
