//! `trace-agent demo` runs green end to end: it starts its own nats-server, plays the
//! simulated game, and its report names the injected faults (exit code 0 only if the agent
//! found the error storm, the latency regression and the silent agent).

use std::time::Duration;

use anyhow::ensure;
use trace_tests::Cli;

use crate::util::bounded;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_green_and_finds_the_injected_faults() -> anyhow::Result<()> {
    bounded(Duration::from_secs(150), async {
        // no --nats-url: the demo must find nats-server and start a private one itself
        let cli = Cli::new("nats://127.0.0.1:1")?;
        let out = cli.run_raw(&["demo", "--duration", "6s"]).await?;
        ensure!(
            out.status.success(),
            "demo failed ({}):\n{}\n{}",
            out.status,
            out.stdout,
            out.stderr
        );
        for part in [
            "events per source:",
            "top players:",
            "top patterns",
            "anomalies found:",
            "alerts fired:",
            "health:",
            "error_rate",
            "latency_ms",
            "source_silent",
            "demo: OK",
        ] {
            ensure!(
                out.stdout.contains(part),
                "the report lacks {part:?}:\n{}",
                out.stdout
            );
        }
        Ok(())
    })
    .await
}
