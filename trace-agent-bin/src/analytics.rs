//! The live analytics driver: its own durable consumer (`trace-analytics`) on the input
//! stream feeds one [`Analyzer`]; anomalies are published on `trace.anomalies.<type>` as
//! `trace.anomaly` entries (and so recorded); a stats summary goes out on `trace.stats`.
//!
//! Exactly-once into the state: messages are acked only after a checkpoint (the analyzer's
//! state plus the stream sequences it has seen above the consumer's ack floor) is on disk.
//! After a crash the state is the last checkpoint, everything after it comes back from
//! JetStream, and a message already in the checkpoint (seen again because an ack was lost)
//! is recognised by its sequence and skipped.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use trace_analytics::{AnalyticsConfig, Analyzer, Anomaly};
use trace_core::bus::{
    ack_all, durable_consumer, ensure_stream, mark_in_progress, BatchReader, ConsumerSpec,
    StreamPosition, StreamSpec,
};
use trace_core::{encode_entry_vec, Category, Decoder, EventId, Severity, TraceEntry};

/// Subject of the periodic stats summary.
pub const STATS_SUBJECT: &str = "trace.stats";
/// Prefix of anomaly subjects.
pub const ANOMALY_SUBJECT_PREFIX: &str = "trace.anomalies";
/// Type of the entries that record anomalies.
pub const ANOMALY_EVENT_TYPE: &str = "trace.anomaly";

/// The live analyzer, shared with the API.
pub type LiveAnalyzer = Arc<Mutex<Analyzer>>;

/// Locks the live analyzer (a panic elsewhere does not make its state unusable).
pub fn lock(live: &LiveAnalyzer) -> MutexGuard<'_, Analyzer> {
    live.lock().unwrap_or_else(|p| p.into_inner())
}

/// Stream sequences already folded into the state, as sorted disjoint ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenSequences {
    ranges: Vec<(u64, u64)>,
}

impl SeenSequences {
    /// Whether `seq` is in.
    pub fn contains(&self, seq: u64) -> bool {
        let i = self.ranges.partition_point(|r| r.1 < seq);
        self.ranges.get(i).is_some_and(|r| r.0 <= seq)
    }

    /// Adds `seq`, merging neighbouring ranges.
    pub fn insert(&mut self, seq: u64) {
        let i = self.ranges.partition_point(|r| r.1 < seq);
        if self.ranges.get(i).is_some_and(|r| r.0 <= seq) {
            return;
        }
        let joins_left = i > 0 && self.ranges[i - 1].1 + 1 == seq;
        let joins_right = self.ranges.get(i).is_some_and(|r| r.0 == seq + 1);
        match (joins_left, joins_right) {
            (true, true) => {
                self.ranges[i - 1].1 = self.ranges[i].1;
                self.ranges.remove(i);
            }
            (true, false) => self.ranges[i - 1].1 = seq,
            (false, true) => self.ranges[i].0 = seq,
            (false, false) => self.ranges.insert(i, (seq, seq)),
        }
    }

    /// Forgets everything at or below `floor` (JetStream will not hand it out again).
    pub fn prune_through(&mut self, floor: u64) {
        self.ranges.retain(|r| r.1 > floor);
        if let Some(first) = self.ranges.first_mut() {
            first.0 = first.0.max(floor + 1);
        }
    }

    /// Number of ranges kept (the state's size).
    pub fn ranges(&self) -> usize {
        self.ranges.len()
    }
}

/// What is written to disk: the analyzer and the sequences it has seen.
#[derive(Debug, Serialize, Deserialize)]
struct Checkpoint {
    version: u32,
    saved_at: DateTime<Utc>,
    #[serde(with = "serde_bytes")]
    analyzer: Vec<u8>,
    seen: SeenSequences,
}

/// The driver's resources and settings.
pub struct AnalyticsDriver {
    /// How payloads are understood (the recorder's decoder).
    pub decoder: Arc<Decoder>,
    /// The input stream.
    pub stream: StreamSpec,
    /// The durable consumer (`trace-analytics`).
    pub consumer: ConsumerSpec,
    /// Where the checkpoint lives.
    pub checkpoint_path: PathBuf,
    /// How often the checkpoint is written (and messages acked).
    pub checkpoint_every: Duration,
    /// How often the stats summary is published.
    pub stats_every: Duration,
    /// The live state, shared with the API.
    pub live: LiveAnalyzer,
}

/// Loads the checkpoint at `path` into a live analyzer (or starts fresh), returning the
/// sequences it has seen.
pub fn load_live(
    path: &std::path::Path,
    config: &AnalyticsConfig,
) -> anyhow::Result<(LiveAnalyzer, SeenSequences)> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let cp: Checkpoint = rmp_serde::from_slice(&bytes)
                .with_context(|| format!("reading the analytics checkpoint {}", path.display()))?;
            let analyzer = Analyzer::restore(&cp.analyzer).with_context(|| {
                format!("restoring the analytics state from {}", path.display())
            })?;
            tracing::info!(path = %path.display(), saved_at = %cp.saved_at, "analytics state restored");
            Ok((Arc::new(Mutex::new(analyzer)), cp.seen))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((
            Arc::new(Mutex::new(Analyzer::new(config.clone()))),
            SeenSequences::default(),
        )),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

impl AnalyticsDriver {
    /// Runs until `shutdown`; on the way out writes a last checkpoint and acks.
    pub async fn run(
        self,
        client: async_nats::Client,
        js: jetstream::Context,
        mut seen: SeenSequences,
        mut shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let stream = ensure_stream(&js, &self.stream).await?;
        let mut consumer = durable_consumer(&stream, &self.consumer).await?;
        let mut reader = BatchReader::new(&consumer, &self.consumer)
            .await
            .context("starting the analytics consumer")?;
        let mut unacked: Vec<jetstream::Message> = Vec::new();
        let mut checkpoint_tick = tokio::time::interval(self.checkpoint_every);
        let mut stats_tick = tokio::time::interval(self.stats_every);
        checkpoint_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        stats_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // stay well under max_ack_pending, or JetStream stops delivering before we checkpoint
        let ack_threshold = (self.consumer.max_ack_pending as usize / 2).max(1);
        // after a failed checkpoint only the tick retries, not every batch
        let mut checkpoint_failing = false;
        tracing::info!(consumer = %self.consumer.durable, "analytics started");
        loop {
            tokio::select! {
                batch = reader.next_batch() => {
                    let Some(batch) = batch else { anyhow::bail!("the analytics consumer's message stream ended") };
                    let anomalies = self.observe(&batch, &mut seen);
                    unacked.extend(batch);
                    for a in anomalies {
                        publish_anomaly(&js, &a).await;
                    }
                    if unacked.len() >= ack_threshold && !checkpoint_failing {
                        checkpoint_failing = !self.checkpoint_or_keep(&mut consumer, &mut unacked, &mut seen).await;
                    }
                }
                _ = checkpoint_tick.tick() => {
                    // Close quiet buckets up to now (so silence is scored) only once the
                    // backlog is consumed: advancing while old messages still come would put
                    // the rest of the backlog into the current bucket.
                    let caught_up = matches!(consumer.info().await, Ok(info) if info.num_pending == 0);
                    if caught_up {
                        lock(&self.live).advance_to(Utc::now());
                        let anomalies = lock(&self.live).drain_anomalies();
                        for a in anomalies {
                            publish_anomaly(&js, &a).await;
                        }
                    }
                    checkpoint_failing = !self.checkpoint_or_keep(&mut consumer, &mut unacked, &mut seen).await;
                }
                _ = stats_tick.tick() => {
                    let report = lock(&self.live).report(Utc::now());
                    match serde_json::to_vec(&report.stats) {
                        Ok(body) => {
                            if let Err(e) = client.publish(STATS_SUBJECT, body.into()).await {
                                tracing::debug!(error = %e, "stats summary not published");
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "stats summary not encoded"),
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
        self.checkpoint_and_ack(&mut consumer, &mut unacked, &mut seen)
            .await?;
        reader.release_buffered().await;
        tracing::info!("analytics stopped after a final checkpoint");
        Ok(())
    }

    /// Folds a batch into the live state (skipping what it has already seen and the agent's
    /// own outputs) and returns the anomalies it raised.
    fn observe(&self, batch: &[jetstream::Message], seen: &mut SeenSequences) -> Vec<Anomaly> {
        let mut live = lock(&self.live);
        for msg in batch {
            let position = StreamPosition::of(msg);
            let seq = position.seq;
            if seq > 0 && seen.contains(seq) {
                continue;
            }
            // the agent's own alerts and anomalies are recorded, not analysed (no feedback)
            if !msg.subject.starts_with("trace.") {
                let incoming = position.incoming(&self.stream.name, msg);
                if let Ok(entry) = self.decoder.decode(&incoming) {
                    live.observe(&entry);
                }
            }
            if seq > 0 {
                seen.insert(seq);
            }
        }
        live.drain_anomalies()
    }

    /// [`Self::checkpoint_and_ack`], but a failure (a full disk) does not stop the analytics:
    /// it is logged and the messages stay unacked (marked in progress, so JetStream does not
    /// hand them out again meanwhile) until a later checkpoint succeeds. Returns whether this
    /// one did.
    async fn checkpoint_or_keep(
        &self,
        consumer: &mut jetstream::consumer::PullConsumer,
        unacked: &mut Vec<jetstream::Message>,
        seen: &mut SeenSequences,
    ) -> bool {
        match self.checkpoint_and_ack(consumer, unacked, seen).await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(
                    error = format!("{e:#}"),
                    unacked = unacked.len(),
                    "analytics checkpoint failed; messages kept unacked until one succeeds"
                );
                mark_in_progress(unacked).await;
                false
            }
        }
    }

    /// Writes the checkpoint (tmp file, fsync, rename), then acks what it covers and forgets
    /// sequences below the consumer's ack floor.
    async fn checkpoint_and_ack(
        &self,
        consumer: &mut jetstream::consumer::PullConsumer,
        unacked: &mut Vec<jetstream::Message>,
        seen: &mut SeenSequences,
    ) -> anyhow::Result<()> {
        if unacked.is_empty() {
            return Ok(());
        }
        let analyzer = lock(&self.live)
            .checkpoint()
            .context("encoding the analytics state")?;
        let cp = Checkpoint {
            version: 1,
            saved_at: Utc::now(),
            analyzer,
            seen: seen.clone(),
        };
        let bytes = rmp_serde::to_vec_named(&cp).context("encoding the analytics checkpoint")?;
        let path = self.checkpoint_path.clone();
        tokio::task::spawn_blocking(move || write_atomically(&path, &bytes)).await??;
        ack_all(unacked).await;
        unacked.clear();
        match consumer.info().await {
            Ok(info) => seen.prune_through(info.ack_floor.stream_sequence),
            Err(e) => tracing::debug!(error = %e, "analytics consumer info not read"),
        }
        Ok(())
    }
}

fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.sync_all()
        .with_context(|| format!("syncing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

/// The entry that records an anomaly: stable id per (series, bucket), so a re-detection
/// after a restart is dropped by JetStream's duplicate window rather than stored twice.
pub fn anomaly_entry(a: &Anomaly) -> TraceEntry {
    let mut e = TraceEntry::new(ANOMALY_EVENT_TYPE, "trace-agent");
    e.ts = a.ts;
    e.id = EventId::derived(a.ts.timestamp_millis().max(0) as u64, a.series.as_bytes());
    e.category = Category::SystemEvent;
    e.severity = if a.score >= 0.9 {
        Severity::Error
    } else {
        Severity::Warn
    };
    e.data = rmpv::ext::to_value(a).unwrap_or(rmpv::Value::Nil);
    e.metrics.insert("score".into(), a.score);
    e.metrics.insert("value".into(), a.value);
    e.metrics.insert("expected".into(), a.expected);
    e.meta.insert("series".into(), a.series.clone().into());
    e
}

/// `trace.anomalies.<type>`: the event type the series is about (`error_rate` for the
/// error rate).
pub fn anomaly_subject(a: &Anomaly) -> String {
    let mut parts = a.series.split(':');
    let head = parts.next().unwrap_or("series");
    let token = match head {
        "rate" | "p95" => parts.next().unwrap_or(head),
        other => other,
    };
    let clean: String = token
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let clean = clean.trim_matches('.');
    format!(
        "{ANOMALY_SUBJECT_PREFIX}.{}",
        if clean.is_empty() { "unknown" } else { clean }
    )
}

async fn publish_anomaly(js: &jetstream::Context, a: &Anomaly) {
    let entry = anomaly_entry(a);
    let subject = anomaly_subject(a);
    tracing::warn!(series = %a.series, ts = %a.ts, value = a.value, expected = a.expected, score = a.score, "anomaly");
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", entry.id.to_string().as_str());
    let published = async {
        js.publish_with_headers(subject.clone(), headers, encode_entry_vec(&entry).into())
            .await?
            .await?;
        anyhow::Ok(())
    };
    match tokio::time::timeout(Duration::from_secs(2), published).await {
        Ok(Ok(())) => {}
        other => tracing::warn!(?other, %subject, "anomaly not published"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_sequences_merge_and_prune() {
        let mut s = SeenSequences::default();
        for seq in [5, 3, 4, 10, 11, 7] {
            s.insert(seq);
        }
        assert_eq!(s.ranges, vec![(3, 5), (7, 7), (10, 11)]);
        s.insert(6);
        assert_eq!(s.ranges, vec![(3, 7), (10, 11)]);
        assert!(s.contains(3) && s.contains(7) && s.contains(11));
        assert!(!s.contains(2) && !s.contains(8) && !s.contains(12));
        s.prune_through(4);
        assert_eq!(s.ranges, vec![(5, 7), (10, 11)]);
        s.prune_through(9);
        assert_eq!(s.ranges, vec![(10, 11)]);
    }

    #[test]
    fn anomaly_subjects_name_the_type() {
        let a = |series: &str| Anomaly {
            series: series.into(),
            series_kind: trace_analytics::series::SeriesKind::EventRate,
            ts: Utc::now(),
            value: 1.0,
            expected: 0.0,
            score: 1.0,
            kind: trace_analytics::AnomalyKind::Spike,
        };
        assert_eq!(
            anomaly_subject(&a("rate:player.move")),
            "trace.anomalies.player.move"
        );
        assert_eq!(
            anomaly_subject(&a("error_rate")),
            "trace.anomalies.error_rate"
        );
        assert_eq!(
            anomaly_subject(&a("p95:agent.decision:latency_ms")),
            "trace.anomalies.agent.decision"
        );
    }
}
