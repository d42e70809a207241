//! Crash safety: SIGKILL the agent three times while it ingests a stream of 20,000 events
//! published with acks, restart it each time, and find every event stored exactly once.

use std::time::Duration;

use anyhow::{bail, ensure, Context as _};
use chrono::TimeDelta;
use trace_tests::{
    Agent, AgentOptions, Cli, Deadline, GameSource, GameTraffic, JsPublisher, NatsServer,
};

use crate::util::{assert_exactly_once, bounded, now_ms, wait_drained, wait_for_counts};

const TOTAL: usize = 20_000;
/// Published in chunks with a pause between them, so ingestion lasts several seconds and the
/// kills land in the middle of it.
const CHUNK: usize = 250;
const PAUSE: Duration = Duration::from_millis(60);
/// Stored-event counts at which the agent is killed: not chunk boundaries, and polled
/// without pause, so the kill hits a batch in progress rather than an idle agent.
const KILL_AT: [u64; 3] = [3_100, 8_100, 13_100];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_ingesting_loses_and_doubles_nothing() -> anyhow::Result<()> {
    bounded(Duration::from_secs(180), async {
        let nats = NatsServer::start().await?;
        let mut agent = Agent::start(&nats.client_url(), AgentOptions::default()).await?;
        let cli = Cli::new(&nats.client_url())?;

        let mut traffic = GameTraffic::new(0xC4A5_0001);
        let start = now_ms() - TimeDelta::seconds(30);
        let messages: Vec<_> = (0..TOTAL)
            .map(|i| {
                let ts = start + TimeDelta::microseconds(i as i64 * 1_000);
                traffic.msgpack_envelope(GameSource::ALL[i % 3], ts)
            })
            .collect();
        let ids: Vec<String> = messages.iter().filter_map(|m| m.msg_id.clone()).collect();
        ensure!(ids.len() == TOTAL);

        let js = nats.jetstream().await?;
        let publisher_js = js.clone();
        let publisher = tokio::spawn(async move {
            let mut publisher = JsPublisher::new(publisher_js);
            for chunk in messages.chunks(CHUNK) {
                for message in chunk {
                    publisher.send(message).await?;
                }
                publisher.flush().await?;
                tokio::time::sleep(PAUSE).await;
            }
            anyhow::Ok((publisher.acked(), publisher.duplicates()))
        });

        let mut killed_at = Vec::new();
        for threshold in KILL_AT {
            let deadline = Deadline::after(Duration::from_secs(60));
            let stored = loop {
                match agent.store_info().await {
                    Ok(info) if info.events >= threshold => break info.events,
                    Ok(info) if deadline.expired() => {
                        bail!("never saw {threshold} events stored before killing: {info:?}")
                    }
                    Err(e) if deadline.expired() => return Err(e),
                    _ => tokio::time::sleep(Duration::from_millis(2)).await,
                }
            };
            agent.kill()?;
            ensure!(
                stored < TOTAL as u64,
                "the agent had stored all {TOTAL} events before kill #{} (saw {stored}); \
                 the kill did not happen mid-ingest",
                killed_at.len() + 1
            );
            killed_at.push(stored);
            agent.restart().await?;
            eprintln!("killed at {stored} stored events, restarted");
        }

        let (acked, duplicates) = tokio::time::timeout(Duration::from_secs(60), publisher)
            .await
            .context("the publisher did not finish within 60 s")?
            .context("the publisher task panicked")??;
        ensure!(
            acked == TOTAL as u64 && duplicates == 0,
            "JetStream acked {acked} of {TOTAL} ({duplicates} duplicates)"
        );

        wait_for_counts(&agent, TOTAL as u64, 0, Duration::from_secs(60)).await?;
        wait_drained(&js, Duration::from_secs(30)).await?;
        let info = agent.store_info().await?;
        ensure!(
            info.events == TOTAL as u64,
            "store_info reports {} events after killing at {killed_at:?}, expected {TOTAL}",
            info.events
        );
        let lines = cli.query(&["--limit", "100000"]).await?;
        assert_exactly_once(&lines, &ids)
            .with_context(|| format!("after SIGKILLs at {killed_at:?} stored events"))?;
        ensure!(
            info.quarantined == 0,
            "{} messages quarantined, none expected",
            info.quarantined
        );
        Ok(())
    })
    .await
}
