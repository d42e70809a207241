//! Destructive verbs: `forget --player` removes the player's events from every segment and
//! from the live analytics, and, like `verify --repair`, is refused without the admin token.

use std::time::Duration;

use anyhow::ensure;
use chrono::TimeDelta;
use trace_core::TraceEntry;
use trace_tests::{Agent, AgentOptions, Cli, GameSource, GameTraffic, JsPublisher, NatsServer};

use crate::util::{bounded, now_ms, wait_for_counts};

/// Publishes `n` game events, every `alice_every`-th of player alice (session `alice-s1`),
/// the rest of bob, each shaped further by `shape`; returns how many are alice's.
async fn publish_alice_and_bob(
    publisher: &mut JsPublisher,
    seed: u64,
    n: u64,
    alice_every: u64,
    shape: impl Fn(u64, &mut TraceEntry),
) -> anyhow::Result<u64> {
    let mut traffic = GameTraffic::new(seed);
    let start = now_ms() - TimeDelta::minutes(2);
    let mut alice = 0u64;
    for i in 0..n {
        let source = GameSource::ALL[(i % 3) as usize];
        let mut entry: TraceEntry =
            traffic.entry(source, start + TimeDelta::milliseconds(i as i64 * 100));
        let player = if i % alice_every == 0 { "alice" } else { "bob" };
        alice += u64::from(player == "alice");
        entry.player = Some(player.to_owned());
        entry.session = Some(format!("{player}-s1"));
        shape(i, &mut entry);
        publisher
            .send(&GameTraffic::envelope_of(source, &entry))
            .await?;
    }
    Ok(alice)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_removes_a_player_everywhere_and_needs_the_admin_token() -> anyhow::Result<()> {
    bounded(Duration::from_secs(90), async {
        let nats = NatsServer::start().await?;
        let config = "[api]\nadmin_token = \"s3cret-admin-token\"\n";
        let agent = Agent::start(&nats.client_url(), AgentOptions::with_config(config)).await?;
        let cli = Cli::new(&nats.client_url())?;
        let mut publisher = JsPublisher::new(nats.jetstream().await?);
        let alice = publish_alice_and_bob(&mut publisher, 0xF0_0001, 400, 4, |_, _| {}).await?;
        publisher.flush().await?;
        wait_for_counts(&agent, 400, 0, Duration::from_secs(30)).await?;

        for args in [
            vec!["forget", "--player", "alice"],
            vec!["forget", "--player", "alice", "--token", "wrong"],
            vec!["verify", "--repair"],
        ] {
            let out = cli.run(&args).await?;
            ensure!(
                !out.status.success() && out.stderr.contains("admin_token"),
                "{args:?} was not refused: {}",
                out.stderr
            );
        }
        ensure!(
            cli.query(&["--player", "alice", "--limit", "100000"])
                .await?
                .len() as u64
                == alice,
            "refused, yet changed"
        );

        let reply = cli
            .json(&[
                "forget",
                "--player",
                "alice",
                "--token",
                "s3cret-admin-token",
                "--json",
            ])
            .await?;
        ensure!(
            reply["events_removed"] == alice,
            "forget said {reply}, expected {alice} events"
        );
        ensure!(
            cli.query(&["--player", "alice", "--limit", "100000"])
                .await?
                .is_empty(),
            "alice's events are still stored"
        );
        ensure!(
            cli.query(&["--player", "bob", "--limit", "100000"])
                .await?
                .len() as u64
                == 400 - alice,
            "bob lost events"
        );
        let info = agent.store_info().await?;
        ensure!(
            info.events == 400 - alice,
            "store-info counts {} events",
            info.events
        );
        let out = cli
            .run(&["verify", "--repair", "--token", "s3cret-admin-token"])
            .await?;
        ensure!(
            out.status.success() && out.stdout.contains("0 corrupt"),
            "verify after forget: {}{}",
            out.stdout,
            out.stderr
        );
        let logs = agent.log_tail(400);
        ensure!(
            !logs.contains("s3cret-admin-token"),
            "the admin token was logged"
        );
        Ok(())
    })
    .await
}

/// With `[privacy]`, players are stored and analysed only as keyed pseudonyms and redacted
/// fields never reach the store; `forget` takes the real id; quarantined payloads are not kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privacy_policy_applies_before_storage_and_analytics() -> anyhow::Result<()> {
    bounded(Duration::from_secs(90), async {
        let nats = NatsServer::start().await?;
        let config = "[api]\nadmin_token = \"s3cret-admin-token\"\n\
                      [privacy]\nredact = [\"data.email\"]\npseudonymise = [\"player\", \"session\"]\n";
        let key = "pseudonym-key-for-the-test-0001";
        let mut options = AgentOptions::with_config(config);
        options
            .env
            .push(("TRACE_AGENT_PRIVACY__KEY".into(), key.into()));
        let agent = Agent::start(&nats.client_url(), options).await?;
        let cli = Cli::new(&nats.client_url())?;
        let mut publisher = JsPublisher::new(nats.jetstream().await?);
        let alice = publish_alice_and_bob(&mut publisher, 0xF0_0002, 300, 3, |i, entry| {
            let player = entry.player.clone().unwrap_or_default();
            entry.data = rmpv::Value::Map(vec![
                ("email".into(), format!("{player}@example.com").into()),
                ("level".into(), rmpv::Value::from(i)),
            ]);
        })
        .await?;
        // refused, and its payload (with an email in it) must not be kept
        publisher
            .publish(
                "game.agent.npc.broken",
                bytes::Bytes::from_static(b"{\"type\": 7, \"player\": \"carol@example.com\"}"),
                None,
            )
            .await?;
        publisher.flush().await?;
        wait_for_counts(&agent, 300, 1, Duration::from_secs(30)).await?;

        let all = cli.json_lines(&["query", "--limit", "1000", "--json"]).await?;
        ensure!(all.len() == 300, "{} events stored", all.len());
        let text = serde_json::to_string(&all)?;
        for secret in ["alice", "bob", "example.com"] {
            ensure!(!text.contains(secret), "{secret:?} reached the store");
        }
        ensure!(text.contains("\"level\""), "unredacted fields were lost");
        let pseudonyms: std::collections::BTreeSet<String> = all
            .iter()
            .filter_map(|e| e["player"].as_str().map(str::to_owned))
            .collect();
        ensure!(
            pseudonyms.len() == 2 && pseudonyms.iter().all(|p| p.starts_with("ps_")),
            "players stored as {pseudonyms:?}"
        );

        let players = cli.json(&["players", "--json"]).await?;
        let players_text = players.to_string();
        ensure!(
            !players_text.contains("alice") && players_text.contains("ps_"),
            "analytics saw real ids: {players_text}"
        );

        let quarantine = cli.json_lines(&["quarantine", "--json"]).await?;
        ensure!(quarantine.len() == 1, "{quarantine:?}");
        let q = quarantine[0].to_string();
        ensure!(
            !q.contains("carol") && q.contains("privacy"),
            "the quarantined payload was kept: {q}"
        );

        let reply = cli
            .json(&[
                "forget",
                "--player",
                "alice",
                "--token",
                "s3cret-admin-token",
                "--json",
            ])
            .await?;
        ensure!(
            reply["events_removed"] == alice,
            "forget by the real id said {reply}, expected {alice} events"
        );
        let left = agent.store_info().await?;
        ensure!(left.events == 300 - alice, "{} events left", left.events);
        let logs = agent.log_tail(400);
        ensure!(!logs.contains(key), "the privacy key was logged");
        Ok(())
    })
    .await
}
