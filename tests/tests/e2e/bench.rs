//! `trace-agent bench --quick` runs every phase end to end (its own nats-server, the real
//! agent as a child process) and its JSON holds every figure, finite and positive, with its
//! target and verdict, the machine and the command line. No timing is asserted: the quick
//! sizes only show that the suite runs.

use std::time::Duration;

use anyhow::{ensure, Context as _};
use serde_json::Value;
use trace_tests::Cli;

use crate::util::bounded;

/// Every figure the bench reports, by its JSON key.
const FIGURES: [&str; 17] = [
    "client_log_event_median_ns",
    "analytics_events_per_sec",
    "store_append_events_per_sec",
    "store_raw_bytes_per_event",
    "store_disk_bytes_per_event",
    "store_disk_over_raw",
    "query_player_p50_ms",
    "query_player_p99_ms",
    "query_type_p50_ms",
    "query_type_p99_ms",
    "client_publish_acked_per_sec",
    "ingest_bare_events_per_sec",
    "ingest_agent_events_per_sec",
    "ingest_agent_over_bare",
    "ingest_recorder_only_events_per_sec",
    "ingest_recorder_only_over_bare",
    "agent_peak_rss_mib",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_bench_reports_every_figure() -> anyhow::Result<()> {
    bounded(Duration::from_secs(180), async {
        let dir = tempfile::tempdir()?;
        let out = dir.path().join("bench.json");
        let out_arg = out.to_str().context("temp path is not UTF-8")?;
        // no --nats-url: the bench starts a private nats-server itself
        let cli = Cli::new("nats://127.0.0.1:1")?.with_timeout(Duration::from_secs(170));
        let run = cli
            .run_raw(&["bench", "--quick", "--json", "--out", out_arg])
            .await?;
        ensure!(run.status.success(), "bench failed: {}", run.describe());

        let written: Value = serde_json::from_str(
            &std::fs::read_to_string(&out).with_context(|| format!("reading {out_arg}"))?,
        )
        .context("--out is not JSON")?;
        let printed: Value = serde_json::from_str(&run.stdout).context("--json output")?;
        ensure!(
            written == printed,
            "--out and --json differ:\n{written:#}\n{printed:#}"
        );

        ensure!(written["mode"] == "quick", "mode: {}", written["mode"]);
        ensure!(
            written["command"]
                .as_str()
                .is_some_and(|c| c.contains("bench --quick --json --out")),
            "command line: {}",
            written["command"]
        );
        let machine = &written["machine"];
        ensure!(
            machine["cores"].as_u64().is_some_and(|c| c >= 1),
            "machine: {machine}"
        );
        ensure!(
            machine["memory_bytes"].as_u64().is_some_and(|m| m > 0),
            "machine: {machine}"
        );
        ensure!(machine["cpu_model"].is_string(), "machine: {machine}");

        let figures = written["figures"]
            .as_object()
            .context("no figures object")?;
        for key in FIGURES {
            let figure = &figures
                .get(key)
                .with_context(|| format!("figure {key} missing: {written:#}"))?;
            let value = figure["value"]
                .as_f64()
                .with_context(|| format!("{key} has no numeric value: {figure}"))?;
            ensure!(
                value.is_finite() && value > 0.0,
                "{key} = {value}: not finite and positive"
            );
            ensure!(figure["unit"].is_string(), "{key} has no unit: {figure}");
            ensure!(figure["label"].is_string(), "{key} has no label: {figure}");
            // a figure with a target says whether it met it; one without has neither
            ensure!(
                figure["target"].is_string() == figure["pass"].is_boolean(),
                "{key}: target and verdict disagree: {figure}"
            );
        }
        for key in [
            "store_append_events_per_sec",
            "store_disk_over_raw",
            "query_player_p99_ms",
            "query_type_p99_ms",
            "ingest_agent_over_bare",
            "agent_peak_rss_mib",
            "analytics_events_per_sec",
            "client_log_event_median_ns",
        ] {
            ensure!(
                figures[key]["target"].is_string(),
                "{key} is printed without its target"
            );
        }
        let ingest = &written["details"]["ingest"];
        ensure!(
            ingest["agent"]["stored"].as_u64() >= ingest["events"].as_u64(),
            "the agent did not store every event: {ingest}"
        );
        Ok(())
    })
    .await
}
