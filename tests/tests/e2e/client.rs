//! The publisher client and the tracing layer against a real nats-server: every event logged
//! across a server stop and restart reaches the stream exactly once and in order; spans become
//! entries with durations and parent links.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use anyhow::{ensure, Context as _};
use async_nats::jetstream::{self, consumer, stream};
use trace_core::client::TraceClient;
use trace_core::{decode_stored_entry, EventId, SourceKind, TraceEntry};
use trace_tests::NatsServer;
use tracing_subscriber::prelude::*;

use crate::util::bounded;

const CLIENT_STREAM: &str = "CLIENT_E2E";

/// A stream over every game subject, with the default 2 min duplicate window.
async fn game_stream(js: &jetstream::Context) -> anyhow::Result<stream::Stream> {
    js.create_stream(stream::Config {
        name: CLIENT_STREAM.into(),
        subjects: vec!["game.>".into()],
        storage: stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .context("creating the test stream")
}

/// Every message in the stream, in stream order, decoded.
async fn read_stream(js: &jetstream::Context) -> anyhow::Result<Vec<TraceEntry>> {
    let mut stream = js.get_stream(CLIENT_STREAM).await?;
    let total = stream.info().await?.state.messages;
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            ack_policy: consumer::AckPolicy::None,
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await?;
    let mut entries = Vec::new();
    while (entries.len() as u64) < total {
        let mut batch = consumer
            .fetch()
            .max_messages(1000)
            .expires(Duration::from_secs(1))
            .messages()
            .await?;
        let before = entries.len();
        while let Some(message) = futures::StreamExt::next(&mut batch).await {
            let message = message.map_err(|e| anyhow::anyhow!("fetch: {e}"))?;
            let mut payload: &[u8] = &message.payload;
            entries.push(decode_stored_entry(&mut payload)?);
        }
        ensure!(
            entries.len() > before,
            "the stream stopped at {} of {total}",
            entries.len()
        );
    }
    Ok(entries)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_delivers_once_and_in_order_across_an_outage() -> anyhow::Result<()> {
    bounded(Duration::from_secs(120), async {
        const TOTAL: usize = 1500;
        let mut nats = NatsServer::start().await?;
        let js = nats.jetstream().await?;
        game_stream(&js).await?;
        let spill = tempfile::tempdir()?;
        let client = TraceClient::builder(nats.client_url(), "e2e-npc", SourceKind::Agent)
            .spill_dir(spill.path())
            .flush_interval(Duration::from_millis(10))
            .ack_timeout(Duration::from_secs(2))
            .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(300))
            .connect()
            .await?;
        ensure!(
            client.stats().connected,
            "connected at start: {:?}",
            client.stats()
        );

        // The game loop: one event per millisecond, whatever NATS is doing.
        let (logged_tx, mut logged_rx) = tokio::sync::watch::channel(0usize);
        let game = {
            let client = client.clone();
            tokio::spawn(async move {
                let mut ids = Vec::with_capacity(TOTAL);
                for i in 0..TOTAL {
                    let meta = BTreeMap::from([("i".to_owned(), rmpv::Value::from(i))]);
                    ids.push(client.log_event("npc.tick", i, meta).await);
                    let _ = logged_tx.send(i + 1);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                ids
            })
        };
        logged_rx.wait_for(|n| *n >= 400).await?;
        nats.stop().await?;
        logged_rx.wait_for(|n| *n >= 900).await?;
        let during = client.stats();
        ensure!(
            !during.connected,
            "still connected with the server down: {during:?}"
        );
        ensure!(
            during.spilled > 0,
            "nothing spilled during the outage: {during:?}"
        );
        nats.restart().await?;
        let ids: Vec<EventId> = game.await?;
        client
            .flush_timeout(Duration::from_secs(60))
            .await
            .with_context(|| format!("flushing: {:?}", client.stats()))?;
        let stats = client.close().await?;
        eprintln!("client stats: {stats:?}");
        ensure!(stats.logged == TOTAL as u64, "{stats:?}");
        ensure!(stats.dropped == 0 && stats.rejected == 0, "{stats:?}");
        ensure!(stats.replayed > 0, "nothing was replayed: {stats:?}");
        ensure!(stats.connects >= 2, "no reconnect counted: {stats:?}");

        let js = nats.jetstream().await?;
        let stored = read_stream(&js).await?;
        let stored_ids: Vec<EventId> = stored.iter().map(|e| e.id).collect();
        let unique: HashSet<EventId> = stored_ids.iter().copied().collect();
        ensure!(
            unique.len() == stored_ids.len(),
            "{} duplicates in the stream",
            stored_ids.len() - unique.len()
        );
        ensure!(
            stored_ids.len() == TOTAL,
            "{} of {TOTAL} events in the stream",
            stored_ids.len()
        );
        if stored_ids != ids {
            let first = stored_ids.iter().zip(&ids).position(|(a, b)| a != b);
            anyhow::bail!("stream order differs from logging order, first at index {first:?}");
        }
        let first = &stored[0];
        ensure!(first.source == "e2e-npc" && first.event_type == "npc.tick");
        ensure!(
            std::fs::read_dir(spill.path())?.count() == 0,
            "spill files left after a full replay"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn layer_turns_spans_into_linked_entries() -> anyhow::Result<()> {
    bounded(Duration::from_secs(60), async {
        let nats = NatsServer::start().await?;
        let js = nats.jetstream().await?;
        game_stream(&js).await?;
        let spill = tempfile::tempdir()?;
        let client = TraceClient::builder(nats.client_url(), "e2e-state", SourceKind::State)
            .spill_dir(spill.path())
            .connect()
            .await?;
        let subscriber =
            tracing_subscriber::registry().with(trace_core::layer::TraceLayer::new(client.clone()));
        {
            let _default = tracing::subscriber::set_default(subscriber);
            let session = tracing::info_span!("session", session = "s-9", player = "p-3");
            let _session = session.enter();
            tracing::info!(event_type = "state.changed", key = "door", "opened");
            let decide = tracing::info_span!("decide", npc = "n1");
            decide.in_scope(|| {
                std::thread::sleep(Duration::from_millis(5));
                tracing::warn!("slow decision");
            });
            drop(decide);
        }
        client
            .flush_timeout(Duration::from_secs(20))
            .await
            .with_context(|| format!("flushing: {:?}", client.stats()))?;
        client.close().await?;

        let stored = read_stream(&js).await?;
        let of_type = |t: &str| {
            stored
                .iter()
                .find(|e| e.event_type == t)
                .with_context(|| format!("no {t} entry among {:?}", types(&stored)))
        };
        let session = of_type("span.session")?;
        let decide = of_type("span.decide")?;
        let changed = of_type("state.changed")?;
        let slow = of_type("log.warn")?;
        ensure!(stored.len() == 4, "entries: {:?}", types(&stored));
        ensure!(changed.parent == Some(session.id), "{changed:?}");
        ensure!(changed.session.as_deref() == Some("s-9"), "{changed:?}");
        ensure!(changed.player.as_deref() == Some("p-3"), "{changed:?}");
        ensure!(
            changed.data["message"].as_str() == Some("opened"),
            "{changed:?}"
        );
        ensure!(slow.parent == Some(decide.id), "{slow:?}");
        ensure!(decide.parent == Some(session.id), "{decide:?}");
        ensure!(session.parent.is_none(), "{session:?}");
        ensure!(decide.metrics["duration_ms"] >= 5.0, "{decide:?}");
        ensure!(decide.metrics["busy_ms"] >= 5.0, "{decide:?}");
        ensure!(
            session.metrics["duration_ms"] >= decide.metrics["duration_ms"],
            "{session:?}"
        );
        ensure!(decide.session.as_deref() == Some("s-9"), "{decide:?}");
        Ok(())
    })
    .await
}

fn types(entries: &[TraceEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.event_type.as_str()).collect()
}
