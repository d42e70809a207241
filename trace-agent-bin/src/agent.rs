//! `trace-agent run`: opens the store, connects to NATS, and runs the recorder, the API and
//! the store's maintenance (rotation, retention) until asked to stop; then drains.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::watch;
use trace_core::{Decoder, SubjectScheme};
use trace_store::Store;

use crate::api::{self, ApiState};
use crate::config::AgentConfig;
use crate::recorder::{Recorder, RecorderStats};

/// Runs the sidecar until `shutdown` resolves, then drains: the recorder finishes its batch
/// (stored, flushed, acked), the API stops, the store is flushed.
pub async fn run(
    config: AgentConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let store_cfg = config.store_config();
    let dir = store_cfg.dir.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(store_cfg))
        .await?
        .with_context(|| format!("opening the store in {}", dir.display()))?;
    let store = Arc::new(store);
    let info = store.info();
    tracing::info!(dir = %dir.display(), segments = info.segments, events = info.events, "store open");

    let client = trace_core::bus::connect(&config.nats_url, "trace-agent").await?;
    let js = async_nats::jetstream::new(client.clone());
    let decoder = Arc::new(Decoder::new(
        config.limits,
        SubjectScheme::new(config.inputs.clone()),
    ));
    let stats = Arc::new(RecorderStats::default());
    let (stop_tx, stop_rx) = watch::channel(false);

    let recorder = Recorder {
        store: store.clone(),
        decoder,
        stream: config.stream_spec(),
        consumer: config.consumer_spec(),
        stats: stats.clone(),
    };
    let mut recorder_task = tokio::spawn(recorder.run(js, stop_rx.clone()));
    let api_state = Arc::new(ApiState {
        store: store.clone(),
        recorder: stats.clone(),
        reply_budget: api::reply_budget(client.server_info().max_payload),
    });
    let mut api_task = tokio::spawn({
        let (client, name, rx) = (client.clone(), config.api.name.clone(), stop_rx.clone());
        let concurrency = config.api.concurrency;
        async move { api::serve(client, &name, api_state, concurrency, rx).await }
    });
    let maintain_task = tokio::spawn(maintain(
        store.clone(),
        config.store.retention_interval,
        stop_rx.clone(),
    ));
    tracing::info!(nats = %config.nats_url, inputs = ?config.inputs.iter().map(|i| &i.subject).collect::<Vec<_>>(), "trace-agent running");

    tokio::pin!(shutdown);
    let outcome: anyhow::Result<()> = tokio::select! {
        _ = &mut shutdown => { tracing::info!("shutdown requested; draining"); Ok(()) }
        r = &mut recorder_task => Err(r.map_err(anyhow::Error::from).and_then(|r| r).err().unwrap_or_else(|| anyhow::anyhow!("recorder stopped")).context("recorder failed")),
        r = &mut api_task => Err(r.map_err(anyhow::Error::from).and_then(|r| r).err().unwrap_or_else(|| anyhow::anyhow!("API stopped")).context("API failed")),
    };
    let _ = stop_tx.send(true);
    let drain = async {
        if !recorder_task.is_finished() {
            match (&mut recorder_task).await {
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "recorder ended with an error while draining")
                }
                Err(e) => tracing::error!(error = %e, "recorder task failed while draining"),
                Ok(Ok(())) => {}
            }
        }
        if !api_task.is_finished() {
            let _ = (&mut api_task).await;
        }
        let _ = maintain_task.await;
    };
    if tokio::time::timeout(Duration::from_secs(20), drain)
        .await
        .is_err()
    {
        tracing::warn!("drain took longer than 20s; unacked messages will be redelivered");
    }
    let flush_store = store.clone();
    tokio::task::spawn_blocking(move || flush_store.flush())
        .await?
        .context("final flush of the store")?;
    if let Err(e) = client.flush().await {
        tracing::debug!(error = %e, "final NATS flush");
    }
    tracing::info!("trace-agent stopped");
    outcome
}

/// Rotation and retention every `every`.
async fn maintain(store: Arc<Store>, every: Duration, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let s = store.clone();
        match tokio::task::spawn_blocking(move || s.maintain()).await {
            Ok(Ok(r)) if r.deleted_for_age + r.deleted_for_size > 0 || r.rotated => {
                tracing::info!(
                    rotated = r.rotated,
                    deleted_for_age = r.deleted_for_age,
                    deleted_for_size = r.deleted_for_size,
                    freed_bytes = r.freed_bytes,
                    deleted_events = r.deleted_events,
                    "store maintenance"
                )
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "store maintenance failed"),
            Err(e) => tracing::error!(error = %e, "store maintenance task failed"),
        }
    }
}
