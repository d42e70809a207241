//! The fixtures themselves: a server restarts on its port with its JetStream store intact,
//! the publisher's window acks everything, the backlog helper reads a durable consumer.

use std::time::Duration;

use anyhow::ensure;
use async_nats::jetstream::{consumer, stream};
use trace_tests::{
    recorder_backlog, GameSource, GameTraffic, JsPublisher, NatsServer, RECORDER_CONSUMER, STREAM,
};

use crate::util::{bounded, now_ms};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_server_restarts_with_its_store() -> anyhow::Result<()> {
    bounded(Duration::from_secs(60), async {
        let mut nats = NatsServer::start().await?;
        let port = nats.port();
        let js = nats.jetstream().await?;
        let stream = js
            .create_stream(stream::Config {
                name: STREAM.into(),
                subjects: vec!["game.agent.>".into()],
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await?;
        stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some(RECORDER_CONSUMER.into()),
                ack_policy: consumer::AckPolicy::Explicit,
                ..Default::default()
            })
            .await?;

        let mut traffic = GameTraffic::new(1);
        // A window far smaller than the count, so it has to slide.
        let mut publisher = JsPublisher::with_window(js.clone(), 64);
        for _ in 0..3000 {
            publisher
                .send(&traffic.msgpack_envelope(GameSource::Npc1, now_ms()))
                .await?;
        }
        // The same id again is dropped by JetStream's duplicate window.
        let again = traffic.msgpack_envelope(GameSource::Npc1, now_ms());
        publisher.send(&again).await?;
        publisher.send(&again).await?;
        ensure!(publisher.flush().await? == 3002);
        ensure!(publisher.duplicates() == 1, "{publisher:?}");
        let backlog = recorder_backlog(&js).await?;
        ensure!(
            backlog.pending == 3001 && backlog.stream_messages == 3001,
            "{backlog:?}"
        );

        nats.restart().await?;
        ensure!(nats.port() == port);
        let js = nats.jetstream().await?;
        let backlog = recorder_backlog(&js).await?;
        ensure!(
            backlog.pending == 3001 && backlog.stream_messages == 3001,
            "after restart: {backlog:?}"
        );

        nats.stop().await?;
        ensure!(
            nats.client().await.is_err(),
            "a stopped server still accepts clients"
        );
        Ok(())
    })
    .await
}
