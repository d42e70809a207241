//! What the publisher client costs a game: `TraceClient::log_event` per call on the buffering
//! path alone (a spill-only client with room for every call, so no network and no drop), and
//! the sustained rate at which the client gets entries acked by JetStream (see `ingest`,
//! which pre-fills its stream through the client).

use std::time::Instant;

use serde::Serialize;
use trace_core::client::{OverflowPolicy, TraceClient};
use trace_core::SourceKind;

/// `log_event` calls timed together (one clock read per round keeps the clock out of it).
pub(crate) const CALLS_PER_ROUND: usize = 256;

/// A game's typical small payload.
#[derive(Serialize)]
struct Position {
    x: i64,
    y: i64,
    zone: &'static str,
}

/// The measured cost.
pub(crate) struct LogEventCost {
    /// Rounds timed.
    pub rounds: usize,
    /// Median over rounds of the mean cost per call.
    pub median_ns: f64,
    /// 99th percentile over rounds.
    pub p99_ns: f64,
}

/// Times `rounds` rounds of [`CALLS_PER_ROUND`] calls after one warm-up round.
pub(crate) async fn log_event_cost(rounds: usize) -> anyhow::Result<LogEventCost> {
    let spill = tempfile::Builder::new()
        .prefix("trace-bench-spill-")
        .tempdir()?;
    let client = TraceClient::builder("nats://127.0.0.1:1", "bench-cost", SourceKind::Agent)
        .spill_dir(spill.path())
        .spill_only(true)
        .buffer_capacity((rounds + 1) * CALLS_PER_ROUND + 1)
        .overflow(OverflowPolicy::DropNewest)
        .connect()
        .await?;
    let meta = [("scene", "bench")];
    let mut per_call = Vec::with_capacity(rounds);
    for round in 0..=rounds {
        let started = Instant::now();
        for i in 0..CALLS_PER_ROUND {
            let v = (round * CALLS_PER_ROUND + i) as i64;
            client
                .log_event(
                    "player.move",
                    Position {
                        x: v,
                        y: -v,
                        zone: "forest",
                    },
                    meta,
                )
                .await;
        }
        // round 0 warms the allocator and the queue up
        if round > 0 {
            per_call.push(started.elapsed().as_nanos() as f64 / CALLS_PER_ROUND as f64);
        }
    }
    let dropped = client.stats().dropped;
    let _ = client.close().await;
    anyhow::ensure!(
        dropped == 0,
        "the client dropped {dropped} entries: the measurement is off"
    );
    Ok(LogEventCost {
        rounds,
        median_ns: super::report::percentile(&mut per_call, 0.5),
        p99_ns: super::report::percentile(&mut per_call, 0.99),
    })
}
