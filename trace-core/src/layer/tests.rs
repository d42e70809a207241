//! Unit tests of the layer's mapping, through a spill-only client (no NATS).
#![allow(clippy::unwrap_used)]

use tracing_subscriber::prelude::*;

use super::*;
use crate::client::{read_spill_dir, TraceClient};
use crate::subject::SourceKind;

#[tokio::test]
async fn events_and_spans_become_linked_entries() {
    let dir = tempfile::tempdir().unwrap();
    let client = TraceClient::builder("nats://127.0.0.1:1", "svc", SourceKind::State)
        .spill_dir(dir.path())
        .spill_only(true)
        .connect()
        .await
        .unwrap();
    let subscriber = tracing_subscriber::registry().with(TraceLayer::new(client.clone()));
    tracing::subscriber::with_default(subscriber, || {
        let outer = tracing::info_span!("tick", session = "s1", zone = "forest");
        let _outer = outer.enter();
        tracing::warn!(
            player = "p1",
            hp = 3,
            metrics.latency_ms = 2.5,
            "low health"
        );
        {
            let inner = tracing::debug_span!("decide", npc = "n7");
            let _inner = inner.enter();
            tracing::info!(event_type = "agent.decision", action = "flee");
        }
        tracing::error!(target: "trace_core::client", "must not be recorded");
        tracing::info!(target: "async_nats", "must not be recorded either");
    });
    client.close().await.unwrap();
    let entries = read_spill_dir(dir.path()).unwrap();
    let types: Vec<&str> = entries.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        ["log.warn", "agent.decision", "span.decide", "span.tick"]
    );
    let (warn, decision, decide, tick) = (&entries[0], &entries[1], &entries[2], &entries[3]);

    assert_eq!(warn.severity, Severity::Warn);
    assert_eq!(warn.data["message"].as_str(), Some("low health"));
    assert_eq!(warn.data["hp"].as_i64(), Some(3));
    assert_eq!(
        warn.data["zone"].as_str(),
        Some("forest"),
        "span fields are context"
    );
    assert_eq!(warn.player.as_deref(), Some("p1"));
    assert_eq!(warn.session.as_deref(), Some("s1"));
    assert_eq!(warn.metrics.get("latency_ms"), Some(&2.5));
    assert_eq!(warn.parent, Some(tick.id));
    assert_eq!(warn.meta_str("target"), Some(module_path!()));
    assert!(warn.meta_str("file").unwrap().ends_with("tests.rs"));
    assert!(warn.meta.get("line").and_then(|l| l.as_u64()).is_some());

    assert_eq!(decision.severity, Severity::Info);
    assert_eq!(decision.category, Category::AgentDecision);
    assert_eq!(decision.data["action"].as_str(), Some("flee"));
    assert_eq!(decision.data["npc"].as_str(), Some("n7"));
    assert_eq!(decision.parent, Some(decide.id));
    assert_eq!(decision.session.as_deref(), Some("s1"));

    assert_eq!(decide.severity, Severity::Debug);
    assert_eq!(decide.parent, Some(tick.id));
    assert_eq!(
        decide.session.as_deref(),
        Some("s1"),
        "inherited from the outer span"
    );
    assert!(decide.metrics["duration_ms"] >= 0.0);
    assert!(decide.metrics["busy_ms"] <= decide.metrics["duration_ms"] + 0.001);
    assert_eq!(tick.parent, None);
    assert!(tick.metrics["duration_ms"] >= decide.metrics["duration_ms"]);
    assert!(tick.ts <= decide.ts, "a span's ts is when it was created");
}

#[test]
fn levels_map_to_severities() {
    assert_eq!(severity_of(&Level::TRACE), Severity::Trace);
    assert_eq!(severity_of(&Level::DEBUG), Severity::Debug);
    assert_eq!(severity_of(&Level::INFO), Severity::Info);
    assert_eq!(severity_of(&Level::WARN), Severity::Warn);
    assert_eq!(severity_of(&Level::ERROR), Severity::Error);
}
