//! Scale-out: two agents share the durable recording consumer, each with its own store. Every
//! event is stored exactly once across them, the CLI's merged `query`, `store-info` and
//! `stats` see all of it, and stopping one instance loses nothing: what it had not taken is
//! delivered to the other, and what it stored comes back with it.

use std::time::Duration;

use anyhow::{ensure, Context as _};
use chrono::TimeDelta;
use trace_tests::{Agent, AgentOptions, Cli, GameSource, GameTraffic, JsPublisher, NatsServer};

use crate::util::{assert_exactly_once, bounded, now_ms, wait_drained};

const FIRST: usize = 6_000;
const SECOND: usize = 3_000;

/// Events stored by both agents together, by each one's own `store_info`.
async fn stored(a: &Agent, b: Option<&Agent>) -> anyhow::Result<(u64, u64)> {
    let ea = a.store_info().await?.events;
    let eb = match b {
        Some(b) => b.store_info().await?.events,
        None => 0,
    };
    Ok((ea, eb))
}

async fn wait_stored(a: &Agent, b: Option<&Agent>, total: u64) -> anyhow::Result<(u64, u64)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let counts = stored(a, b).await;
        match counts {
            Ok((ea, eb)) if ea + eb >= total => return Ok((ea, eb)),
            _ if tokio::time::Instant::now() > deadline => {
                anyhow::bail!("never saw {total} events stored across the agents: {counts:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_share_the_load_and_lose_nothing() -> anyhow::Result<()> {
    bounded(Duration::from_secs(150), async {
        let nats = NatsServer::start().await?;
        // small batches, so both instances take part in a stream of a few thousand
        let config = "[recorder]\nbatch_size = 100\n";
        let a = Agent::start(&nats.client_url(), AgentOptions::with_config(config)).await?;
        let mut b = Agent::start(&nats.client_url(), AgentOptions::with_config(config)).await?;
        let (name_a, name_b) = (
            a.instance().context("agent a has no instance name")?,
            b.instance().context("agent b has no instance name")?,
        );
        ensure!(name_a != name_b, "both instances are called {name_a}");
        let cli = Cli::new(&nats.client_url())?;

        let mut traffic = GameTraffic::new(0x5CA1_E001);
        let start = now_ms() - TimeDelta::minutes(5);
        let messages: Vec<_> = (0..FIRST + SECOND)
            .map(|i| {
                let ts = start + TimeDelta::milliseconds(i as i64 * 10);
                traffic.msgpack_envelope(GameSource::ALL[i % 3], ts)
            })
            .collect();
        let ids: Vec<String> = messages.iter().filter_map(|m| m.msg_id.clone()).collect();
        let js = nats.jetstream().await?;
        let mut publisher = JsPublisher::new(js.clone());
        for m in &messages[..FIRST] {
            publisher.send(m).await?;
        }
        publisher.flush().await?;
        let (ea, eb) = wait_stored(&a, Some(&b), FIRST as u64).await?;
        wait_drained(&js, Duration::from_secs(30)).await?;
        ensure!(
            ea + eb == FIRST as u64,
            "{ea} + {eb} stored for {FIRST} published: doubled"
        );
        ensure!(
            ea > 0 && eb > 0,
            "one instance took everything: {ea} / {eb}"
        );
        eprintln!("shared: {name_a} stored {ea}, {name_b} stored {eb}");

        // the merged answers see everything
        let lines = cli.query(&["--limit", "100000"]).await?;
        assert_exactly_once(&lines, &ids[..FIRST]).context("merged query over two instances")?;
        let info = cli.json(&["store-info", "--json"]).await?;
        ensure!(
            info["events"] == FIRST as u64
                && info["instances"].as_object().map(|m| m.len()) == Some(2),
            "merged store-info: {info}"
        );
        let stats = cli.json(&["stats", "--json"]).await?;
        ensure!(
            stats["events"].as_u64() == Some(FIRST as u64),
            "live stats saw {} events, expected {FIRST}",
            stats["events"]
        );
        let out = cli.run(&["health"]).await?;
        ensure!(out.status.success(), "health: {}", out.describe());
        ensure!(
            out.stdout.contains(&name_a) && out.stdout.contains(&name_b),
            "health does not show both instances: {}",
            out.stdout
        );

        // stop one instance; the rest of the stream goes to the other
        let status = b.terminate(Duration::from_secs(30)).await?;
        ensure!(status.success(), "agent b exited with {status}");
        for m in &messages[FIRST..] {
            publisher.send(m).await?;
        }
        publisher.flush().await?;
        let (ea2, _) = wait_stored(&a, None, ea + SECOND as u64).await?;
        wait_drained(&js, Duration::from_secs(30)).await?;
        ensure!(
            ea2 == ea + SECOND as u64,
            "agent a stored {} of the {SECOND} published while b was stopped",
            ea2 - ea
        );
        // b comes back with what it had stored: everything, exactly once, across both
        b.restart().await?;
        ensure!(
            b.instance().as_deref() == Some(name_b.as_str()),
            "b came back under another name"
        );
        let (ea3, eb3) = stored(&a, Some(&b)).await?;
        ensure!(
            ea3 + eb3 == (FIRST + SECOND) as u64,
            "{ea3} + {eb3} stored for {} published",
            FIRST + SECOND
        );
        let lines = cli.query(&["--limit", "100000"]).await?;
        assert_exactly_once(&lines, &ids).context("after stopping and restarting b")?;
        Ok(())
    })
    .await
}
