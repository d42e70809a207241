//! Unit tests of the client with the spill file as its only transport (no NATS): order,
//! the buffer bound, both overflow policies, and what happens while NATS is unreachable.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;

fn offline_builder(dir: &Path) -> TraceClientBuilder {
    TraceClient::builder("nats://127.0.0.1:1", "unit", SourceKind::Agent)
        .spill_dir(dir)
        .spill_only(true)
}

#[tokio::test]
async fn spill_only_client_keeps_every_field_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let client = offline_builder(dir.path()).connect().await.unwrap();
    let mut ids = Vec::new();
    for i in 0..1000u32 {
        let meta = BTreeMap::from([("i".to_owned(), rmpv::Value::from(i))]);
        ids.push(
            client
                .log_event("player.move", serde_json::json!({"n": i}), meta)
                .await,
        );
    }
    let last = client
        .event("agent.decided")
        .player("p1")
        .session("s1")
        .severity(Severity::Warn)
        .category(Category::Other("custom".into()))
        .parent(ids[0])
        .metric("latency_ms", 3.25)
        .data(serde_json::json!({"action": "flee"}))
        .meta("zone", "forest")
        .send()
        .await;
    ids.push(last);
    let stats = client.close().await.unwrap();
    assert_eq!(stats.logged, 1001);
    assert_eq!(stats.spilled, 1001);
    assert_eq!(stats.dropped, 0);

    let entries = read_spill_dir(dir.path()).unwrap();
    let got: Vec<EventId> = entries.iter().map(|e| e.id).collect();
    assert_eq!(got, ids);
    assert_eq!(entries[7].event_type, "player.move");
    assert_eq!(entries[7].category, Category::PlayerAction);
    assert_eq!(entries[7].source, "unit");
    assert_eq!(entries[7].meta.get("i"), Some(&rmpv::Value::from(7)));
    let e = &entries[1000];
    assert_eq!(e.player.as_deref(), Some("p1"));
    assert_eq!(e.session.as_deref(), Some("s1"));
    assert_eq!(e.severity, Severity::Warn);
    assert_eq!(e.category, Category::Other("custom".into()));
    assert_eq!(e.parent, Some(ids[0]));
    assert_eq!(e.metrics.get("latency_ms"), Some(&3.25));
    assert_eq!(e.meta_str("zone"), Some("forest"));
    assert_eq!(e.data["action"].as_str(), Some("flee"));
}

#[tokio::test]
async fn a_type_without_category_takes_the_kind_default() {
    let dir = tempfile::tempdir().unwrap();
    let client = offline_builder(dir.path()).connect().await.unwrap();
    let entry = client.new_entry("checkpoint.saved");
    assert_eq!(entry.category, Category::AgentDecision);
    client.close().await.unwrap();
}

// The tests below log without awaiting anything that yields, so on the current-thread runtime
// the publisher cannot drain the queue meanwhile: the bound is hit deterministically.

#[tokio::test]
async fn drop_newest_counts_what_the_full_buffer_refused() {
    let dir = tempfile::tempdir().unwrap();
    let client = offline_builder(dir.path())
        .buffer_capacity(10)
        .overflow(OverflowPolicy::DropNewest)
        .connect()
        .await
        .unwrap();
    for i in 0..100u32 {
        client
            .log_event("t.x", i, BTreeMap::<String, rmpv::Value>::new())
            .await;
    }
    let stats = client.stats();
    assert_eq!(stats.logged, 10);
    assert_eq!(stats.buffered, 10);
    assert_eq!(stats.dropped, 90);
    let stats = client.close().await.unwrap();
    assert_eq!(stats.spilled, 10);
    let kept: Vec<u64> = read_spill_dir(dir.path())
        .unwrap()
        .iter()
        .map(|e| e.data.as_u64().unwrap())
        .collect();
    assert_eq!(kept, (0..10).collect::<Vec<u64>>());
}

#[tokio::test]
async fn spill_overflow_keeps_order_behind_the_buffer() {
    let dir = tempfile::tempdir().unwrap();
    let client = offline_builder(dir.path())
        .buffer_capacity(10)
        .overflow(OverflowPolicy::Spill)
        .connect()
        .await
        .unwrap();
    for i in 0..100u32 {
        client
            .log_event("t.x", i, BTreeMap::<String, rmpv::Value>::new())
            .await;
    }
    let stats = client.stats();
    assert_eq!((stats.logged, stats.buffered, stats.spilled), (100, 10, 90));
    // While the overflow file is open, later entries go behind it even when there is room.
    tokio::task::yield_now().await;
    for i in 100..150u32 {
        client
            .log_event("t.x", i, BTreeMap::<String, rmpv::Value>::new())
            .await;
    }
    let stats = client.close().await.unwrap();
    assert_eq!(stats.logged, 150);
    assert_eq!(stats.dropped, 0);
    let kept: Vec<u64> = read_spill_dir(dir.path())
        .unwrap()
        .iter()
        .map(|e| e.data.as_u64().unwrap())
        .collect();
    assert_eq!(kept, (0..150).collect::<Vec<u64>>());
}

#[tokio::test]
async fn unreachable_nats_spills_and_flush_says_what_is_pending() {
    let dir = tempfile::tempdir().unwrap();
    // Port 1: nothing listens there, connecting is refused at once.
    let client = TraceClient::builder("nats://127.0.0.1:1", "unit", SourceKind::Story)
        .spill_dir(dir.path())
        .initial_connect_timeout(Duration::from_millis(200))
        .close_timeout(Duration::from_millis(300))
        .flush_interval(Duration::from_millis(5))
        .connect()
        .await
        .unwrap();
    for i in 0..5u32 {
        client
            .log_event("story.node", i, BTreeMap::<String, rmpv::Value>::new())
            .await;
    }
    match client.flush_timeout(Duration::from_millis(200)).await {
        Err(ClientError::FlushTimeout { pending, .. }) => assert_eq!(pending, 5),
        other => panic!("expected a flush timeout, got {other:?}"),
    }
    assert!(!client.stats().connected);
    match client.close().await {
        Err(ClientError::FlushTimeout { pending, .. }) => assert_eq!(pending, 5),
        other => panic!("expected a close timeout, got {other:?}"),
    }
    let kept = read_spill_dir(dir.path()).unwrap();
    assert_eq!(kept.len(), 5);
    assert_eq!(client.stats().spilled, 5);
    // After close, entries are refused and counted.
    client
        .log_event("story.node", 9, BTreeMap::<String, rmpv::Value>::new())
        .await;
    assert_eq!(client.stats().dropped, 1);
}

#[tokio::test]
async fn a_source_that_is_not_a_token_is_refused() {
    let err = TraceClient::builder("nats://127.0.0.1:1", "npc.7", SourceKind::Agent)
        .spill_only(true)
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::InvalidSource { .. }), "{err}");
}
