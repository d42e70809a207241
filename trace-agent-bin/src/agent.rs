//! `trace-agent run`: opens the store, connects to NATS, and runs the recorder, the API, the
//! monitor (rules, alerts, health, HTTP) and the store's maintenance until asked to stop;
//! then drains.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;
use chrono::Utc;
use tokio::sync::watch;
use trace_core::{encode_entry_vec, Decoder, SubjectScheme, TraceEntry};
use trace_monitor::{AlertEvent, Monitor};
use trace_store::{AppendBatch, Store};

use crate::analytics::{self, AnalyticsDriver};
use crate::api::{self, ApiState};
use crate::config::AgentConfig;
use crate::recorder::{Recorder, RecorderStats};

/// This instance's name: the configured one, else the one kept in `<data_dir>/instance.id`,
/// made on first start from the host name and a random suffix.
fn instance_name(config: &AgentConfig) -> anyhow::Result<String> {
    if let Some(name) = &config.instance {
        return Ok(name.clone());
    }
    let path = config.data_dir.join("instance.id");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let name = text.trim().to_owned();
            crate::config::valid_instance_name(&name).map_err(|why| {
                anyhow::anyhow!("{}: {why} (fix or delete the file)", path.display())
            })?;
            Ok(name)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let host: String = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .unwrap_or_default()
                .trim()
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .take(40)
                .collect();
            let suffix = trace_core::EventId::new_at(Utc::now()).to_string();
            let suffix = suffix[suffix.len() - 6..].to_ascii_lowercase();
            let name = if host.is_empty() {
                format!("agent-{suffix}")
            } else {
                format!("{host}-{suffix}")
            };
            std::fs::create_dir_all(&config.data_dir)
                .and_then(|()| std::fs::write(&path, format!("{name}\n")))
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(name)
        }
        Err(e) => Err(anyhow::anyhow!("reading {}: {e}", path.display())),
    }
}

/// Runs the sidecar until `shutdown` resolves, then drains: the recorder finishes its batch
/// (stored, flushed, acked), the API and HTTP stop, the store is flushed.
pub async fn run(
    config: AgentConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let store_cfg = config.store_config();
    let dir = store_cfg.dir.clone();
    let monitor = Arc::new(
        Monitor::new(
            config.monitor.clone(),
            &config.rules,
            Some(dir.clone()),
            Some(store_cfg.max_disk_bytes),
        )
        .context("setting up the monitor")?,
    );
    // bind HTTP before anything else starts, so a taken port is refused up front
    let http_listener = trace_monitor::bind_http(config.monitor.http_addr)
        .await
        .context("starting the HTTP endpoints (set [monitor] http_addr or --http)")?;
    let store = tokio::task::spawn_blocking(move || Store::open(store_cfg))
        .await?
        .with_context(|| format!("opening the store in {}", dir.display()))?;
    let store = Arc::new(store);
    let info = store.info();
    tracing::info!(dir = %dir.display(), segments = info.segments, events = info.events, "store open");

    let instance = instance_name(&config)?;
    let client =
        trace_core::bus::connect_auth(&config.nats_url, "trace-agent", &config.nats).await?;
    monitor.metrics().set_nats_connected(true, Utc::now());
    let js = jetstream::new(client.clone());
    let privacy = config
        .privacy_policy()
        .map_err(|(key, why)| anyhow::anyhow!("`{key}`: {why}"))?;
    let decoder = Arc::new(
        Decoder::new(config.limits, SubjectScheme::new(config.recorded_inputs()))
            .with_privacy(privacy.clone()),
    );
    let stats = Arc::new(RecorderStats::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let checkpoint_path = config.data_dir.join("analytics").join("checkpoint.mp");
    let (live, seen) = {
        let (path, engine) = (checkpoint_path.clone(), config.analytics.engine.clone());
        tokio::task::spawn_blocking(move || analytics::load_live(&path, &engine)).await??
    };

    let recorder = Recorder {
        store: store.clone(),
        decoder: decoder.clone(),
        stream: config.stream_spec(),
        consumer: config.consumer_spec(),
        stats: stats.clone(),
        monitor: monitor.clone(),
    };
    let mut recorder_task = tokio::spawn(recorder.run(js.clone(), stop_rx.clone()));
    let analytics_task = config.analytics.enabled.then(|| {
        let driver = AnalyticsDriver {
            decoder: decoder.clone(),
            stream: config.stream_spec(),
            consumer: config.analytics_consumer_spec(&instance),
            checkpoint_path,
            checkpoint_every: config.analytics.checkpoint_every,
            stats_every: config.analytics.stats_every,
            live: live.clone(),
        };
        tokio::spawn(driver.run(client.clone(), js.clone(), seen, stop_rx.clone()))
    });
    let api_state = Arc::new(ApiState {
        store: store.clone(),
        recorder: stats.clone(),
        monitor: monitor.clone(),
        live: live.clone(),
        analytics: config.analytics.clone(),
        admin_token: config.api.admin_token.clone(),
        privacy,
        reply_budget: api::reply_budget(client.server_info().max_payload),
    });
    let mut api_task = tokio::spawn({
        let (client, name, rx) = (client.clone(), config.api.name.clone(), stop_rx.clone());
        let (concurrency, instance) = (config.api.concurrency, instance.clone());
        async move { api::serve(client, &name, &instance, api_state, concurrency, rx).await }
    });
    let http_addr = http_listener.local_addr().ok();
    let http_task = tokio::spawn(trace_monitor::serve_http(
        http_listener,
        monitor.clone(),
        stopped(stop_rx.clone()),
    ));
    let maintain_task = tokio::spawn(maintain(
        store.clone(),
        config.store.retention_interval,
        stop_rx.clone(),
    ));
    let watch_task = tokio::spawn(watch_health(
        Watch {
            monitor: monitor.clone(),
            store: store.clone(),
            client: client.clone(),
            js,
            stream: config.stream.name.clone(),
            consumer: config.recorder.consumer.clone(),
        },
        stop_rx.clone(),
    ));
    tracing::info!(
        nats = %trace_core::auth::redact_url(&config.nats_url),
        nats_auth = %config.nats.summary(),
        instance = %instance,
        http = ?http_addr,
        inputs = ?config.recorded_inputs().iter().map(|i| i.subject.clone()).collect::<Vec<_>>(),
        "trace-agent running"
    );

    tokio::pin!(shutdown);
    let outcome: anyhow::Result<()> = tokio::select! {
        _ = &mut shutdown => { tracing::info!("shutdown requested; draining"); Ok(()) }
        r = &mut recorder_task => Err(task_error(r, "recorder")),
        r = &mut api_task => Err(task_error(r, "API")),
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
        let _ = watch_task.await;
        let _ = http_task.await;
        if let Some(task) = analytics_task {
            match task.await {
                Ok(Err(e)) => tracing::error!(error = %e, "analytics ended with an error"),
                Err(e) => tracing::error!(error = %e, "analytics task failed"),
                Ok(Ok(())) => {}
            }
        }
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

fn task_error(r: Result<anyhow::Result<()>, tokio::task::JoinError>, what: &str) -> anyhow::Error {
    let e = match r {
        Ok(Ok(())) => anyhow::anyhow!("{what} stopped"),
        Ok(Err(e)) => e,
        Err(e) => e.into(),
    };
    e.context(format!("{what} failed"))
}

/// Resolves when the stop flag turns true.
async fn stopped(mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            return;
        }
    }
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

/// What the once-a-second health loop reads and feeds.
struct Watch {
    monitor: Arc<Monitor>,
    store: Arc<Store>,
    client: async_nats::Client,
    js: jetstream::Context,
    stream: String,
    consumer: String,
}

/// Once a second: NATS connection state, consumer lag, store usage; then one monitor tick,
/// whose alerts are published on `trace.alerts.<severity>` (and so recorded).
async fn watch_health(w: Watch, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut consumer: Option<jetstream::consumer::PullConsumer> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let now = Utc::now();
        let metrics = w.monitor.metrics();
        let connected = w.client.connection_state() == async_nats::connection::State::Connected;
        metrics.set_nats_connected(connected, now);
        if connected {
            match lag(&w, &mut consumer).await {
                Ok(lag) => metrics.set_consumer_lag(lag),
                Err(e) => {
                    consumer = None;
                    tracing::debug!(error = %e, "consumer lag not read");
                }
            }
        }
        let (monitor, store) = (w.monitor.clone(), w.store.clone());
        let events = tokio::task::spawn_blocking(move || {
            let info = store.info();
            monitor
                .metrics()
                .set_store_usage(info.bytes_on_disk, info.segments);
            monitor.tick(Utc::now())
        })
        .await
        .unwrap_or_default();
        for event in events {
            publish_alert(&w, &event).await;
        }
    }
}

/// Messages not yet acked by the recording consumer: pending delivery plus delivered and
/// unacknowledged.
async fn lag(
    w: &Watch,
    consumer: &mut Option<jetstream::consumer::PullConsumer>,
) -> anyhow::Result<u64> {
    if consumer.is_none() {
        let stream = w.js.get_stream(&w.stream).await?;
        *consumer = Some(
            stream
                .get_consumer::<jetstream::consumer::pull::Config>(&w.consumer)
                .await
                .map_err(|e| anyhow::anyhow!("consumer {}: {e}", w.consumer))?,
        );
    }
    let c = consumer
        .as_mut()
        .ok_or_else(|| anyhow::anyhow!("no consumer"))?;
    let info = c.info().await?;
    Ok(info.num_pending + info.num_ack_pending as u64)
}

/// Publishes an alert on its subject through JetStream (so the recorder stores it); if NATS
/// cannot take it, writes it straight into the store, so no alert is lost.
async fn publish_alert(w: &Watch, event: &AlertEvent) {
    let entry: TraceEntry = event.alert.to_trace_entry();
    tracing::warn!(
        rule = %event.alert.rule,
        state = ?event.kind,
        message = %event.alert.message,
        "alert"
    );
    let payload = encode_entry_vec(&entry);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", entry.id.to_string().as_str());
    let subject = event.alert.subject();
    let published = async {
        let ack =
            w.js.publish_with_headers(subject.clone(), headers, payload.into())
                .await?;
        ack.await?;
        anyhow::Ok(())
    };
    match tokio::time::timeout(Duration::from_secs(2), published).await {
        Ok(Ok(())) => {}
        failed => {
            tracing::warn!(?failed, subject = %subject, "alert not published; recording it directly");
            let store = w.store.clone();
            let result = tokio::task::spawn_blocking(move || {
                store.append(AppendBatch {
                    entries: std::slice::from_ref(&entry),
                    ..Default::default()
                })?;
                store.flush()
            })
            .await;
            if !matches!(result, Ok(Ok(()))) {
                tracing::error!(?result, "alert could not be recorded either");
            }
        }
    }
}
