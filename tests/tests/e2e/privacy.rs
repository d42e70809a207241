//! Destructive verbs: `forget --player` removes the player's events from every segment and
//! from the live analytics, and, like `verify --repair`, is refused without the admin token.

use std::time::Duration;

use anyhow::ensure;
use chrono::TimeDelta;
use trace_core::TraceEntry;
use trace_tests::{Agent, AgentOptions, Cli, GameSource, GameTraffic, JsPublisher, NatsServer};

use crate::util::{bounded, now_ms, wait_for_counts};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_removes_a_player_everywhere_and_needs_the_admin_token() -> anyhow::Result<()> {
    bounded(Duration::from_secs(90), async {
        let nats = NatsServer::start().await?;
        let config = "[api]\nadmin_token = \"s3cret-admin-token\"\n";
        let agent = Agent::start(&nats.client_url(), AgentOptions::with_config(config)).await?;
        let cli = Cli::new(&nats.client_url())?;
        let mut traffic = GameTraffic::new(0xF0_0001);
        let mut publisher = JsPublisher::new(nats.jetstream().await?);
        let start = now_ms() - TimeDelta::minutes(2);
        let mut alice = 0u64;
        for i in 0..400u64 {
            let source = GameSource::ALL[(i % 3) as usize];
            let mut entry: TraceEntry =
                traffic.entry(source, start + TimeDelta::milliseconds(i as i64 * 100));
            let player = if i % 4 == 0 { "alice" } else { "bob" };
            alice += u64::from(player == "alice");
            entry.player = Some(player.to_owned());
            entry.session = Some(format!("{player}-s1"));
            publisher
                .send(&GameTraffic::envelope_of(source, &entry))
                .await?;
        }
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
