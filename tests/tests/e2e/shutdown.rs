//! Graceful shutdown: SIGTERM while the agent ingests makes it drain and exit 0 within 10 s;
//! after a restart every event is stored exactly once.

use std::time::Duration;

use anyhow::{bail, ensure, Context as _};
use chrono::TimeDelta;
use trace_tests::{
    recorder_backlog, Agent, AgentOptions, Cli, Deadline, GameSource, GameTraffic, JsPublisher,
    NatsServer,
};

use crate::util::{assert_exactly_once, bounded, now_ms, wait_drained, wait_for_counts};

const TOTAL: usize = 5_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_zero() -> anyhow::Result<()> {
    bounded(Duration::from_secs(120), async {
        let nats = NatsServer::start().await?;
        let mut agent = Agent::start(&nats.client_url(), AgentOptions::default()).await?;
        let cli = Cli::new(&nats.client_url())?;

        let mut traffic = GameTraffic::new(0x7E2A_0001);
        let start = now_ms() - TimeDelta::seconds(10);
        let messages: Vec<_> = (0..TOTAL)
            .map(|i| {
                let ts = start + TimeDelta::milliseconds(i as i64);
                traffic.json_envelope(GameSource::ALL[i % 3], ts)
            })
            .collect();
        let ids: Vec<String> = messages.iter().filter_map(|m| m.msg_id.clone()).collect();

        // Publish in the background, paced, and send SIGTERM once a third is stored: the agent
        // is then in the middle of ingesting.
        let js = nats.jetstream().await?;
        let publisher_js = js.clone();
        let publisher = tokio::spawn(async move {
            let mut publisher = JsPublisher::new(publisher_js);
            for chunk in messages.chunks(250) {
                for message in chunk {
                    publisher.send(message).await?;
                }
                publisher.flush().await?;
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
            anyhow::Ok(publisher.acked())
        });
        let deadline = Deadline::after(Duration::from_secs(30));
        let before = loop {
            match agent.store_info().await {
                Ok(info) if info.events >= TOTAL as u64 / 3 => break info,
                Ok(info) if deadline.expired() => bail!("ingestion did not start: {info:?}"),
                Err(e) if deadline.expired() => return Err(e),
                _ => tokio::time::sleep(Duration::from_millis(2)).await,
            }
        };

        let status = agent.terminate(Duration::from_secs(10)).await?;
        ensure!(
            status.success(),
            "trace-agent exited with {status} on SIGTERM (had stored {} of {TOTAL} when it was \
             sent){}",
            before.events,
            agent.log_tail(30)
        );
        let acked = tokio::time::timeout(Duration::from_secs(60), publisher)
            .await
            .context("the publisher did not finish within 60 s")?
            .context("the publisher task panicked")??;
        ensure!(acked == TOTAL as u64, "JetStream acked {acked} of {TOTAL}");
        // Delivered but unacked messages wait for the consumer's ack_wait before redelivery.
        eprintln!(
            "after SIGTERM at {} stored: {:?}",
            before.events,
            recorder_backlog(&js).await
        );

        agent.restart().await?;
        wait_for_counts(&agent, TOTAL as u64, 0, Duration::from_secs(60)).await?;
        wait_drained(&js, Duration::from_secs(30)).await?;
        let info = agent.store_info().await?;
        ensure!(
            info.events == TOTAL as u64,
            "{} events stored after SIGTERM and restart, expected {TOTAL}",
            info.events
        );
        let lines = cli.query(&["--limit", "100000"]).await?;
        assert_exactly_once(&lines, &ids)?;

        // And an idle agent stops just as cleanly.
        let status = agent.terminate(Duration::from_secs(10)).await?;
        ensure!(
            status.success(),
            "idle trace-agent exited with {status} on SIGTERM"
        );
        Ok(())
    })
    .await
}
