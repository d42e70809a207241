//! Publishes a few trace entries the two ways a service can: the client's builder and plain
//! `tracing` through `TraceLayer`; then flushes and prints where every entry went.
//!
//! ```sh
//! cargo run -p trace-core --example publish -- --nats-url nats://127.0.0.1:4222
//! ```
//! The URL comes from `--nats-url`, else `$NATS_URL`, else `nats://127.0.0.1:4222`. With no
//! server there, the entries wait in the spill directory and the flush times out (said so).

use std::collections::BTreeMap;
use std::time::Duration;

use trace_core::client::TraceClient;
use trace_core::layer::TraceLayer;
use trace_core::{Severity, SourceKind};
use tracing_subscriber::prelude::*;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let nats_url = nats_url_argument();
    let client = TraceClient::builder(&nats_url, "example-npc", SourceKind::Agent)
        .connect()
        .await?;
    println!(
        "publishing to {nats_url} (spill dir {})",
        client.spill_dir().display()
    );

    // Everything `tracing` sees becomes a trace entry too.
    tracing_subscriber::registry()
        .with(TraceLayer::new(client.clone()))
        .init();

    let decided = client
        .log_event(
            "agent.decision",
            serde_json::json!({"action": "flee", "threat": 0.8}),
            BTreeMap::from([("model".to_owned(), rmpv::Value::from("utility-v2"))]),
        )
        .await;
    client
        .event("player.move")
        .player("p42")
        .session("s-7")
        .parent(decided)
        .metric("latency_ms", 3.2)
        .data(serde_json::json!({"x": 10, "y": -4}))
        .send()
        .await;
    client
        .event("system.error")
        .severity(Severity::Error)
        .data("pathfinding gave up")
        .meta("retries", 3)
        .send()
        .await;

    let tick = tracing::info_span!("tick", session = "s-7", tick = 1812);
    tick.in_scope(|| {
        tracing::info!(event_type = "agent.plan", steps = 4, "planned a route");
        tracing::warn!(player = "p42", "player is idle");
    });
    drop(tick); // sends `span.tick` with metrics.duration_ms

    match client.flush_timeout(Duration::from_secs(5)).await {
        Ok(()) => println!("flushed: every entry is acked by JetStream"),
        Err(e) => println!("not flushed: {e}"),
    }
    println!("{:#?}", client.stats());
    let _ = client.close().await;
    Ok(())
}

fn nats_url_argument() -> String {
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--nats-url" {
            if let Some(url) = args.next() {
                return url;
            }
        } else if let Some(url) = arg.strip_prefix("--nats-url=") {
            return url.to_owned();
        }
    }
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}
