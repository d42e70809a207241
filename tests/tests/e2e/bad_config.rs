//! Bad configuration is refused before the agent touches NATS, with a message that names the
//! key and says what is wrong; an unreachable NATS server is reported with its URL.

use std::time::Duration;

use anyhow::{ensure, Context as _};
use trace_tests::{Cli, CliOutput, NatsServer, STREAM};

use crate::util::bounded;

/// Runs `trace-agent run --config <toml> --data-dir <tmp>` against a live server and requires a
/// non-zero exit that did not create the agent's stream (so it stopped before its NATS setup).
async fn refused(nats: &NatsServer, toml: &str) -> anyhow::Result<CliOutput> {
    let dir = tempfile::tempdir().context("temp dir")?;
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, toml).context("writing bad.toml")?;
    let data = dir.path().join("data");
    let cli = Cli::new(&nats.client_url())?.with_timeout(Duration::from_secs(20));
    let output = cli
        .run(&[
            "run",
            "--config",
            config.to_str().context("utf-8 path")?,
            "--data-dir",
            data.to_str().context("utf-8 path")?,
        ])
        .await?;
    ensure!(
        output.code().is_some_and(|c| c != 0),
        "a bad config was not refused with an error exit:\n{toml}\n{}",
        output.describe()
    );
    let js = nats.jetstream().await?;
    ensure!(
        js.get_stream(STREAM).await.is_err(),
        "the agent created stream {STREAM} before refusing its config:\n{toml}"
    );
    Ok(output)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_config_is_refused_naming_the_key() -> anyhow::Result<()> {
    bounded(Duration::from_secs(90), async {
        let nats = NatsServer::start().await?;

        let output = refused(&nats, "[store]\nsegment_windw = \"1h\"\n").await?;
        let stderr = output.stderr.to_lowercase();
        ensure!(
            stderr.contains("segment_windw") && stderr.contains("unknown"),
            "an unknown key is not named as unknown: {}",
            output.describe()
        );

        let output = refused(&nats, "[store]\nmax_age = \"soon\"\n").await?;
        ensure!(
            output.stderr.contains("max_age") && output.stderr.contains("soon"),
            "a bad duration is not reported with its key and value: {}",
            output.describe()
        );

        let output = refused(
            &nats,
            "[[inputs]]\nsubject = \"game..x\"\nkind = \"agent\"\n",
        )
        .await?;
        ensure!(
            output.stderr.contains("game..x"),
            "a bad input subject is not quoted in the error: {}",
            output.describe()
        );
        let stderr = output.stderr.to_lowercase();
        ensure!(
            stderr.contains("empty token") || stderr.contains("invalid"),
            "the error does not say what is wrong with the subject: {}",
            output.describe()
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_env_setting_is_refused_naming_the_key() -> anyhow::Result<()> {
    bounded(Duration::from_secs(60), async {
        let nats = NatsServer::start().await?;
        let dir = tempfile::tempdir().context("temp dir")?;
        let data = dir.path().join("data");
        let cli = Cli::new(&nats.client_url())?
            .with_timeout(Duration::from_secs(20))
            .with_env("TRACE_AGENT_STORE__MAX_AGE", "soon");
        let output = cli
            .run(&["run", "--data-dir", data.to_str().context("utf-8 path")?])
            .await?;
        ensure!(
            output.code().is_some_and(|c| c != 0) && output.stderr.contains("max_age"),
            "TRACE_AGENT_STORE__MAX_AGE=soon was not refused naming max_age: {}",
            output.describe()
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_nats_is_reported_with_its_url() -> anyhow::Result<()> {
    bounded(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().context("temp dir")?;
        let data = dir.path().join("data");
        let url = "nats://127.0.0.1:1";
        let cli = Cli::new(url)?.with_timeout(Duration::from_secs(45));
        let output = cli
            .run_raw(&[
                "run",
                "--nats-url",
                url,
                "--data-dir",
                data.to_str().context("utf-8 path")?,
            ])
            .await?;
        ensure!(
            output.code().is_some_and(|c| c != 0) && output.stderr.contains("127.0.0.1:1"),
            "an unreachable NATS URL did not fail naming it: {}",
            output.describe()
        );
        Ok(())
    })
    .await
}
