//! Retention frees disk for real: by age (`max_age` over 1 s segments) and by size
//! (`max_disk_bytes` over a day of hourly segments). Disk use is measured by walking the data
//! dir, not taken from the agent's own report.

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{ensure, Context as _};
use chrono::{DateTime, TimeDelta, Utc};
use trace_tests::{
    api_request, disk_usage, eventually, Agent, AgentOptions, Cli, Deadline, GameSource,
    GameTraffic, JsPublisher, NatsServer, StoreInfo,
};

use crate::util::{bounded, now_ms, wait_drained};

const MIB: u64 = 1024 * 1024;

/// One look at the agent: its own report and the data dir measured.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    segments: u64,
    events: u64,
    bytes_on_disk: u64,
    /// Allocated bytes under the data dir (what `du` says).
    disk: u64,
}

/// Samples the agent every 100 ms in the background, to find the peaks.
struct Sampler {
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start(agent: &Agent) -> Sampler {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let client = agent.client().clone();
        let data_dir = agent.data_dir();
        let task = tokio::spawn({
            let samples = samples.clone();
            let stop = stop.clone();
            async move {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(sample) = sample(&client, &data_dir).await {
                        if let Ok(mut samples) = samples.lock() {
                            samples.push(sample);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        Sampler {
            samples,
            stop,
            task,
        }
    }

    /// The largest value of each field over all samples so far.
    fn peak(&self) -> Sample {
        let samples = self.samples.lock().map(|s| s.clone()).unwrap_or_default();
        samples.iter().fold(Sample::default(), |peak, s| Sample {
            segments: peak.segments.max(s.segments),
            events: peak.events.max(s.events),
            bytes_on_disk: peak.bytes_on_disk.max(s.bytes_on_disk),
            disk: peak.disk.max(s.disk),
        })
    }

    async fn stop(mut self) -> Sample {
        self.stop.store(true, Ordering::Relaxed);
        let _ = (&mut self.task).await;
        self.peak()
    }
}

async fn sample(client: &async_nats::Client, data_dir: &Path) -> anyhow::Result<Sample> {
    let info = StoreInfo::from_json(
        &api_request(client, "store_info", &serde_json::json!({}))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?,
    )?;
    Ok(Sample {
        segments: info.segments,
        events: info.events,
        bytes_on_disk: info.bytes_on_disk,
        disk: disk_usage(data_dir)?.allocated_bytes,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_age_drops_old_segments_and_frees_disk() -> anyhow::Result<()> {
    const WAVES: usize = 6;
    const PER_WAVE: usize = 1000;
    const DATA_BYTES: usize = 2 * 1024;
    bounded(Duration::from_secs(120), async {
        let nats = NatsServer::start().await?;
        let config = r#"
[store]
segment_window = "1s"
max_age = "4s"
retention_interval = "500ms"

# this test counts exactly what it published: keep the agent's own alerts and anomalies out
[analytics]
enabled = false
[monitor]
builtin_rules = false
"#;
        let agent = Agent::start(&nats.client_url(), AgentOptions::with_config(config)).await?;
        let cli = Cli::new(&nats.client_url())?;
        let sampler = Sampler::start(&agent);

        let mut traffic = GameTraffic::new(0xA6E0_0001);
        let mut publisher = JsPublisher::new(nats.jetstream().await?);
        for wave in 0..WAVES {
            for i in 0..PER_WAVE {
                let source = GameSource::ALL[(wave + i) % 3];
                publisher
                    .send(&traffic.bulky_envelope(source, now_ms(), DATA_BYTES))
                    .await?;
            }
            publisher.flush().await?;
            // Spread the waves over several 1 s segments.
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
        let total = (WAVES * PER_WAVE) as u64;
        let peak_after_publishing = sampler.peak();

        let data_dir = agent.data_dir();
        let agent_ref = &agent;
        let peak_ref = &sampler;
        let settled = eventually(
            "segments, events and disk use to drop after max_age",
            Duration::from_secs(40),
            || {
                let data_dir = data_dir.clone();
                async move {
                    let peak = peak_ref.peak();
                    let now = sample(agent_ref.client(), &data_dir).await?;
                    if peak.segments > 1
                        && now.segments < peak.segments
                        && now.events < peak.events
                        && now.disk * 2 < peak.disk
                    {
                        Ok(ControlFlow::Break(now))
                    } else {
                        Ok(ControlFlow::Continue(format!("now {now:?}, peak {peak:?}")))
                    }
                }
            },
        )
        .await;
        let peak = sampler.stop().await;
        let settled = settled.with_context(|| {
            format!(
                "peak after publishing {peak_after_publishing:?}; overall peak {peak:?}{}",
                agent.log_tail(20)
            )
        })?;
        ensure!(
            peak.segments > 1 && peak.bytes_on_disk > 0,
            "store_info never showed several segments and a size: peak {peak:?}"
        );
        let remaining = cli.query(&["--limit", "100000"]).await?.len() as u64;
        ensure!(
            remaining < peak.events && remaining < total,
            "the query still returns {remaining} events (peak {}, published {total})",
            peak.events
        );
        eprintln!("max_age retention: peak {peak:?}, settled {settled:?}, query {remaining}");
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_disk_bytes_keeps_disk_bounded_dropping_oldest() -> anyhow::Result<()> {
    const EVENTS: usize = 12_000;
    const DATA_BYTES: usize = 2 * 1024;
    const LIMIT: u64 = 4 * MIB;
    bounded(Duration::from_secs(150), async {
        let nats = NatsServer::start().await?;
        let config = r#"
[store]
segment_window = "1h"
max_age = "30d"
max_disk_bytes = "4MiB"
retention_interval = "500ms"

# this test counts exactly what it published: keep the agent's own alerts and anomalies out
[analytics]
enabled = false
[monitor]
builtin_rules = false
"#;
        let agent = Agent::start(&nats.client_url(), AgentOptions::with_config(config)).await?;
        let cli = Cli::new(&nats.client_url())?;
        let sampler = Sampler::start(&agent);

        // A day of history, oldest first, so it spans about 25 hourly segments.
        let mut traffic = GameTraffic::new(0xD15C_0001);
        let start = now_ms() - TimeDelta::hours(24);
        let step = TimeDelta::milliseconds(24 * 3600 * 1000 / EVENTS as i64);
        let mut published: Vec<(DateTime<Utc>, String)> = Vec::with_capacity(EVENTS);
        let js = nats.jetstream().await?;
        let mut publisher = JsPublisher::new(js.clone());
        for i in 0..EVENTS {
            let ts = start + step * i as i32;
            let message = traffic.bulky_envelope(GameSource::ALL[i % 3], ts, DATA_BYTES);
            published.push((ts, message.msg_id.clone().context("envelope without id")?));
            publisher.send(&message).await?;
        }
        publisher.flush().await?;
        wait_drained(&js, Duration::from_secs(90)).await?;

        let data_dir = agent.data_dir();
        let settled = eventually(
            "the data dir to stay under 2x max_disk_bytes",
            Duration::from_secs(30),
            || {
                let data_dir = data_dir.clone();
                async move {
                    let usage = disk_usage(&data_dir)?;
                    if usage.allocated_bytes < 2 * LIMIT {
                        Ok(ControlFlow::Break(usage))
                    } else {
                        Ok(ControlFlow::Continue(format!("{usage:?}")))
                    }
                }
            },
        )
        .await;
        let peak = sampler.stop().await;
        let settled = settled.with_context(|| format!("peak {peak:?}{}", agent.log_tail(20)))?;
        // Retention works in passes: wait until the store itself reports being within its
        // budget, so the query below does not page through a pass still deleting segments.
        let deadline = Deadline::after(Duration::from_secs(30));
        loop {
            let info = agent.store_info().await?;
            if info.bytes_on_disk <= LIMIT {
                break;
            }
            ensure!(
                !deadline.expired(),
                "the store never came within max_disk_bytes: {info:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        let lines = cli.query(&["--limit", "100000", "--oldest-first"]).await?;
        let present: std::collections::HashSet<&str> =
            lines.iter().map(|l| l.id.as_str()).collect();
        let (kept, gone): (Vec<_>, Vec<_>) = published
            .iter()
            .partition(|(_, id)| present.contains(id.as_str()));
        ensure!(
            !gone.is_empty(),
            "nothing was dropped: {} events kept, disk {settled:?}, peak {peak:?}",
            kept.len()
        );
        ensure!(
            !kept.is_empty(),
            "everything was dropped (disk {settled:?})"
        );
        let newest_gone = gone.iter().map(|(ts, _)| *ts).max();
        let oldest_kept = kept.iter().map(|(ts, _)| *ts).min();
        ensure!(
            newest_gone < oldest_kept,
            "retention did not drop the oldest first: newest dropped {newest_gone:?}, oldest \
             kept {oldest_kept:?} ({} dropped, {} kept)",
            gone.len(),
            kept.len()
        );
        let newest = published.last().map(|(_, id)| id.as_str());
        ensure!(
            newest.is_some_and(|id| present.contains(id)),
            "the newest event is gone"
        );
        ensure!(
            lines.len() == kept.len(),
            "the query returned {} entries, {} of them published here",
            lines.len(),
            kept.len()
        );
        eprintln!(
            "max_disk_bytes retention: kept {} of {EVENTS}, disk {settled:?}, peak {peak:?}",
            kept.len()
        );
        Ok(())
    })
    .await
}
