//! The everyday commands end to end: `tail` sees exactly the events published after it
//! started, in order; `export` then `import` (into a fresh store directory, twice, and into a
//! fresh bus) gives back the same events, binary payloads included; `emit` publishes one.

use std::time::Duration;

use anyhow::{ensure, Context as _};
use chrono::TimeDelta;
use rmpv::Value;
use trace_core::TraceEntry;
use trace_tests::{
    Agent, AgentOptions, Cli, GameSource, GameTraffic, JsPublisher, NatsServer, Outgoing,
};

use crate::util::{bounded, now_ms, wait_drained, wait_for_counts};

/// Events with a binary payload, so the msgpack round trip is checked byte for byte.
fn events(n: usize, seed: u64) -> Vec<Outgoing> {
    let mut traffic = GameTraffic::new(seed);
    let start = now_ms() - TimeDelta::minutes(5);
    (0..n)
        .map(|i| {
            let source = GameSource::ALL[i % 3];
            let mut entry: TraceEntry =
                traffic.entry(source, start + TimeDelta::milliseconds(i as i64 * 250));
            entry.data = Value::Map(vec![
                ("i".into(), Value::from(i as u64)),
                (
                    "blob".into(),
                    Value::Binary(vec![0, 1, 2, (i % 256) as u8, 255]),
                ),
            ]);
            GameTraffic::envelope_of(source, &entry)
        })
        .collect()
}

async fn publish_all(nats: &NatsServer, messages: &[Outgoing]) -> anyhow::Result<()> {
    let mut publisher = JsPublisher::new(nats.jetstream().await?);
    for m in messages {
        publisher.send(m).await?;
    }
    publisher.flush().await.map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_sees_exactly_what_is_published_after_it_starts() -> anyhow::Result<()> {
    bounded(Duration::from_secs(90), async {
        let nats = NatsServer::start().await?;
        let agent = Agent::start(&nats.client_url(), AgentOptions::default()).await?;
        let before = events(5, 0x7A11_0001);
        publish_all(&nats, &before).await?;
        wait_for_counts(&agent, 5, 0, Duration::from_secs(30)).await?;

        let cli = Cli::new(&nats.client_url())?;
        let tail = tokio::spawn(async move { cli.run(&["tail", "--json", "--count", "7"]).await });
        // give tail a moment to create its consumer: it only sees what comes after
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = events(7, 0x7A11_0002);
        publish_all(&nats, &after).await?;
        let out = tokio::time::timeout(Duration::from_secs(30), tail)
            .await
            .context("tail did not return after 7 events")??
            .context("tail")?;
        ensure!(out.status.success(), "tail failed: {}", out.stderr);
        let seen: Vec<String> = out
            .stdout
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .map(|v| v["id"].as_str().unwrap_or_default().to_owned())
            })
            .collect::<Result<_, _>>()
            .context("tail --json printed something that is not JSON")?;
        let expected: Vec<String> = after.iter().filter_map(|m| m.msg_id.clone()).collect();
        ensure!(
            seen == expected,
            "tail printed {seen:?}, expected exactly the later events {expected:?}"
        );
        drop(agent);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_import_gives_the_same_events() -> anyhow::Result<()> {
    bounded(Duration::from_secs(150), async {
        const N: usize = 300;
        let nats = NatsServer::start().await?;
        let agent = Agent::start(&nats.client_url(), AgentOptions::default()).await?;
        let cli = Cli::new(&nats.client_url())?;
        publish_all(&nats, &events(N, 0xE4_0001)).await?;
        wait_for_counts(&agent, N as u64, 0, Duration::from_secs(30)).await?;
        wait_drained(&nats.jetstream().await?, Duration::from_secs(30)).await?;
        let original = cli
            .json_lines(&["query", "--json", "--limit", "100000", "--oldest-first"])
            .await?;
        ensure!(
            original.len() == N,
            "{} stored, {N} published",
            original.len()
        );

        let dir = tempfile::tempdir()?;
        let mp = dir.path().join("events.msgpack");
        let jsonl = dir.path().join("events.jsonl");
        for file in [&mp, &jsonl] {
            let path = file.to_str().context("temp path")?;
            let out = cli
                .run(&["export", "--since", "1h", "--output", path])
                .await?;
            ensure!(out.status.success(), "export failed: {}", out.stderr);
        }
        let lines = std::fs::read_to_string(&jsonl)?;
        ensure!(
            lines.lines().count() == N,
            "the JSON Lines export has {} lines",
            lines.lines().count()
        );

        // into a fresh store directory, twice (idempotent), then served by an agent there
        let nats2 = NatsServer::start().await?;
        let mut agent2 = Agent::start(&nats2.client_url(), AgentOptions::default()).await?;
        agent2.kill()?;
        let cli2 = Cli::new(&nats2.client_url())?;
        let store = agent2.data_dir();
        for round in 0..2 {
            let out = cli2
                .run_raw(&[
                    "import",
                    mp.to_str().context("path")?,
                    "--into-store",
                    store.to_str().context("path")?,
                ])
                .await?;
            ensure!(
                out.status.success(),
                "import #{round} failed: {}",
                out.stderr
            );
            let expected = if round == 0 {
                format!("imported {N} events into the store (0 already there)")
            } else {
                format!("imported 0 events into the store ({N} already there)")
            };
            ensure!(
                out.stderr.contains(&expected),
                "import #{round} said: {}",
                out.stderr
            );
        }
        agent2.restart().await?;
        let copied = cli2
            .json_lines(&["query", "--json", "--limit", "100000", "--oldest-first"])
            .await?;
        ensure!(
            copied == original,
            "the store import differs from the original ({} vs {} entries)",
            copied.len(),
            original.len()
        );

        // into a fresh bus: the agent there records them again, same ids and payloads
        let nats3 = NatsServer::start().await?;
        let agent3 = Agent::start(&nats3.client_url(), AgentOptions::default()).await?;
        let cli3 = Cli::new(&nats3.client_url())?;
        let out = cli3.run(&["import", mp.to_str().context("path")?]).await?;
        ensure!(out.status.success(), "bus import failed: {}", out.stderr);
        wait_for_counts(&agent3, N as u64, 0, Duration::from_secs(30)).await?;
        let replayed = cli3
            .json_lines(&["query", "--json", "--limit", "100000", "--oldest-first"])
            .await?;
        ensure!(replayed.len() == N, "{} replayed", replayed.len());
        for (a, b) in original.iter().zip(&replayed) {
            ensure!(
                a["id"] == b["id"]
                    && a["data"] == b["data"]
                    && a["type"] == b["type"]
                    && a["ts"] == b["ts"],
                "replayed {b} differs from {a}"
            );
        }

        // emit: one event from a shell, found by its id
        let out = cli3
            .run(&[
                "emit",
                "--type",
                "player.chat",
                "--source",
                "console",
                "--player",
                "p9",
                "--data",
                r#"{"text":"hi"}"#,
            ])
            .await?;
        ensure!(out.status.success(), "emit failed: {}", out.stderr);
        let id = out.stdout.trim().to_owned();
        wait_for_counts(&agent3, N as u64 + 1, 0, Duration::from_secs(30)).await?;
        let got = cli3.json(&["get", &id, "--json"]).await?;
        ensure!(
            got["type"] == "player.chat" && got["player"] == "p9" && got["data"]["text"] == "hi",
            "emitted event read back as {got}"
        );
        drop((agent, agent3));
        Ok(())
    })
    .await
}
