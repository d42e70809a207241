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

/// A game's small payload: the README's figure is for this one, without metadata.
#[derive(Serialize)]
struct Position {
    x: i64,
    y: i64,
}

/// The same with a string, logged with one metadata pair: what a richer call costs.
#[derive(Serialize)]
struct Placed {
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
    /// Median with a string in the payload and one metadata pair.
    pub richer_median_ns: f64,
}

/// Times `rounds` rounds of [`CALLS_PER_ROUND`] calls of each kind, after a warm-up round.
pub(crate) async fn log_event_cost(rounds: usize) -> anyhow::Result<LogEventCost> {
    let spill = tempfile::Builder::new()
        .prefix("trace-bench-spill-")
        .tempdir()?;
    let client = TraceClient::builder("nats://127.0.0.1:1", "bench-cost", SourceKind::Agent)
        .spill_dir(spill.path())
        .spill_only(true)
        .buffer_capacity(2 * (rounds + 1) * CALLS_PER_ROUND + 1)
        .overflow(OverflowPolicy::DropNewest)
        .connect()
        .await?;
    // the plain calls first, on their own, as the README's figure was measured
    let mut plain = Vec::with_capacity(rounds);
    for round in 0..=rounds {
        let base = (round * CALLS_PER_ROUND) as i64;
        let started = Instant::now();
        for v in base..base + CALLS_PER_ROUND as i64 {
            let data = Position { x: v, y: -v };
            let meta = std::iter::empty::<(String, rmpv::Value)>();
            client.log_event("player.move", data, meta).await;
        }
        // round 0 warms the allocator and the queue up
        if round > 0 {
            plain.push(started.elapsed().as_nanos() as f64 / CALLS_PER_ROUND as f64);
        }
    }
    let mut richer = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let base = (round * CALLS_PER_ROUND) as i64;
        let started = Instant::now();
        for v in base..base + CALLS_PER_ROUND as i64 {
            let data = Placed {
                x: v,
                y: -v,
                zone: "forest",
            };
            client
                .log_event("player.move", data, [("scene", "bench")])
                .await;
        }
        richer.push(started.elapsed().as_nanos() as f64 / CALLS_PER_ROUND as f64);
    }
    let dropped = client.stats().dropped;
    let _ = client.close().await;
    anyhow::ensure!(
        dropped == 0,
        "the client dropped {dropped} entries: the measurement is off"
    );
    Ok(LogEventCost {
        rounds,
        median_ns: super::report::percentile(&mut plain, 0.5),
        p99_ns: super::report::percentile(&mut plain, 0.99),
        richer_median_ns: super::report::percentile(&mut richer, 0.5),
    })
}
