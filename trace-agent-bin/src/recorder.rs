//! The recorder: the ingest path from the JetStream input stream into the store.
//!
//! Each batch is decoded (envelopes validated, game traffic wrapped, the rest quarantined),
//! redeliveries are checked against what is already stored, the batch is appended with the
//! stream watermark in one atomic write, flushed, and only then acked. A failed write keeps
//! the batch and retries (JetStream keeps the backlog); nothing is acked that is not durable,
//! and nothing durable is stored twice.
//!
//! Same id, second message (policy): an envelope's `id` is its idempotence key and the first
//! write wins. A later message (another stream sequence: a retry outside JetStream's
//! `Nats-Msg-Id` window, or a publisher reusing ids) with an id already recorded is only acked
//! when its subject and payload bytes are the same (a retry: counted in `duplicates_skipped`),
//! and quarantined as `duplicate_id`, raw bytes kept, when they differ. The ids checked are
//! those of the batch and of the last [`RECENT_IDS`] entries with a publisher-chosen id that
//! this process recorded or found already durable; an older id met again is stored a second
//! time (checking every id against the whole store would read blocks on every batch).
//! Redeliveries of one stream sequence are caught by the watermark lookup, at any age.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{Hash as _, Hasher as _};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use trace_core::bus::{
    ack_all, durable_consumer, ensure_stream, mark_in_progress, BatchReader, ConsumerSpec,
    StreamPosition, StreamSpec,
};
use trace_core::{DecodeError, DecodeErrorKind, Decoder, EventId, TraceEntry};
use trace_monitor::Monitor;
use trace_store::{AppendBatch, QuarantineRecord, Store};

/// Counters of the ingest path, readable while it runs.
#[derive(Debug, Default)]
pub struct RecorderStats {
    /// Messages taken from the stream (redeliveries included).
    pub received: AtomicU64,
    /// Entries stored.
    pub stored: AtomicU64,
    /// Messages quarantined.
    pub quarantined: AtomicU64,
    /// Redelivered messages found already durable and only acked.
    pub duplicates_skipped: AtomicU64,
    /// Batches made durable.
    pub batches: AtomicU64,
    /// Store writes that failed (each retried).
    pub write_failures: AtomicU64,
    /// Acks that could not be sent.
    pub ack_failures: AtomicU64,
    /// Highest stream sequence made durable.
    pub last_stream_seq: AtomicU64,
    /// Set while the store refuses writes.
    pub store_failing: AtomicBool,
}

/// A snapshot of [`RecorderStats`] for the API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecorderSnapshot {
    /// Messages taken from the stream.
    pub received: u64,
    /// Entries stored.
    pub stored: u64,
    /// Messages quarantined.
    pub quarantined: u64,
    /// Redeliveries skipped as already durable.
    pub duplicates_skipped: u64,
    /// Batches made durable.
    pub batches: u64,
    /// Failed store writes.
    pub write_failures: u64,
    /// Acks not sent.
    pub ack_failures: u64,
    /// Highest durable stream sequence.
    pub last_stream_seq: u64,
    /// Whether the store currently refuses writes.
    pub store_failing: bool,
}

impl RecorderStats {
    /// The counters now.
    pub fn snapshot(&self) -> RecorderSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RecorderSnapshot {
            received: l(&self.received),
            stored: l(&self.stored),
            quarantined: l(&self.quarantined),
            duplicates_skipped: l(&self.duplicates_skipped),
            batches: l(&self.batches),
            write_failures: l(&self.write_failures),
            ack_failures: l(&self.ack_failures),
            last_stream_seq: l(&self.last_stream_seq),
            store_failing: self.store_failing.load(Ordering::Relaxed),
        }
    }
}

/// The recorder's resources.
pub struct Recorder {
    /// Where entries go.
    pub store: Arc<Store>,
    /// How payloads are understood.
    pub decoder: Arc<Decoder>,
    /// The input stream.
    pub stream: StreamSpec,
    /// The durable consumer.
    pub consumer: ConsumerSpec,
    /// Counters.
    pub stats: Arc<RecorderStats>,
    /// Metrics and heartbeats of what is recorded.
    pub monitor: Arc<Monitor>,
}

/// One decoded message.
enum Decoded {
    Entry(TraceEntry),
    Quarantine(QuarantineRecord, DecodeErrorKind),
}

/// How many publisher-chosen ids the same-id policy remembers (see the module docs): about
/// 4 MiB of memory.
pub const RECENT_IDS: usize = 65_536;

/// The publisher-chosen ids of the entries recorded last, each with the fingerprint of its
/// message, oldest evicted first.
#[derive(Default)]
struct RecentIds {
    fingerprints: HashMap<EventId, u64>,
    order: VecDeque<EventId>,
}

impl RecentIds {
    fn get(&self, id: &EventId) -> Option<u64> {
        self.fingerprints.get(id).copied()
    }

    fn insert(&mut self, id: EventId, fingerprint: u64) {
        if self.fingerprints.insert(id, fingerprint).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > RECENT_IDS {
            if let Some(old) = self.order.pop_front() {
                self.fingerprints.remove(&old);
            }
        }
    }
}

/// What makes two messages with one id the same message: subject and payload bytes.
fn fingerprint(subject: &str, payload: &[u8]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    subject.hash(&mut hasher);
    payload.hash(&mut hasher);
    hasher.finish()
}

impl Recorder {
    /// Runs until `shutdown` turns true: binds the stream and consumer, then records batch
    /// after batch. On shutdown the batch in hand is finished (stored, flushed, acked).
    pub async fn run(
        self,
        js: jetstream::Context,
        mut shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        use anyhow::Context as _;
        let stream = ensure_stream(&js, &self.stream).await?;
        let consumer = durable_consumer(&stream, &self.consumer).await?;
        let mut reader = BatchReader::new(&consumer, &self.consumer)
            .await
            .context("starting the recording consumer")?;
        let name = self.consumer.durable.clone();
        let mut recent = RecentIds::default();
        let mut watermark = {
            let store = self.store.clone();
            let name = name.clone();
            tokio::task::spawn_blocking(move || store.watermark(&name)).await?
        };
        self.stats
            .last_stream_seq
            .store(watermark, Ordering::Relaxed);
        tracing::info!(stream = %self.stream.name, consumer = %name, watermark, "recorder started");
        loop {
            let batch = tokio::select! {
                b = reader.next_batch() => b,
                _ = shutdown.changed() => break,
            };
            let Some(batch) = batch else {
                anyhow::bail!("the recording consumer's message stream ended");
            };
            watermark = self
                .record(batch, watermark, &name, &mut recent, &mut shutdown)
                .await?;
            if *shutdown.borrow() {
                break;
            }
        }
        let released = reader.release_buffered().await;
        tracing::info!(
            released,
            "recorder stopped after draining its last batch; buffered messages handed back"
        );
        Ok(())
    }

    /// Decodes, deduplicates, stores durably and acks one batch; returns the new watermark.
    async fn record(
        &self,
        batch: Vec<jetstream::Message>,
        watermark: u64,
        name: &str,
        recent: &mut RecentIds,
        shutdown: &mut watch::Receiver<bool>,
    ) -> anyhow::Result<u64> {
        let started = Instant::now();
        let stats = &self.stats;
        stats
            .received
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let mut decoded = Vec::with_capacity(batch.len());
        // (publisher-chosen id, fingerprint) of each entry that has one
        let mut chosen_ids = Vec::with_capacity(batch.len());
        let mut maybe_seen = Vec::new();
        let mut batch_seqs = HashSet::with_capacity(batch.len());
        let mut in_batch_duplicates = HashSet::new();
        let mut max_seq = watermark;
        for (i, msg) in batch.iter().enumerate() {
            let position = StreamPosition::of(msg);
            let seq = position.seq;
            max_seq = max_seq.max(seq);
            let incoming = position.incoming(&self.stream.name, msg);
            let d = match self.decoder.decode(&incoming) {
                Ok(entry) => {
                    chosen_ids.push(
                        (Some(entry.id) != incoming.fallback_id)
                            .then(|| (entry.id, fingerprint(msg.subject.as_str(), &msg.payload))),
                    );
                    Decoded::Entry(entry)
                }
                Err(err) => {
                    chosen_ids.push(None);
                    self.quarantine(msg, position, err)
                }
            };
            // At or below the watermark, a message may already be durable: JetStream can hand
            // a message out again (after ack_wait, a nak, or a crash), and has been seen to do
            // so with `delivered == 1`, so the delivery count is not trusted; a lookup decides.
            if seq <= watermark {
                maybe_seen.push(i);
            }
            // the same message twice in one batch: keep the first
            if seq > 0 && !batch_seqs.insert(seq) {
                in_batch_duplicates.insert(i);
            }
            decoded.push(d);
        }
        let mut skip = self.already_durable(&decoded, &maybe_seen).await?;
        skip.extend(in_batch_duplicates);
        // the same-id policy (module docs): first write wins
        let mut remember = Vec::new();
        let mut batch_ids: HashMap<EventId, u64> = HashMap::new();
        for (i, chosen) in chosen_ids.into_iter().enumerate() {
            let Some((id, print)) = chosen else { continue };
            if skip.contains(&i) {
                remember.push((id, print));
                continue;
            }
            match batch_ids.get(&id).copied().or_else(|| recent.get(&id)) {
                None => {
                    batch_ids.insert(id, print);
                }
                Some(first) if first == print => {
                    skip.insert(i);
                }
                Some(_) => {
                    let err = DecodeError {
                        kind: DecodeErrorKind::DuplicateId,
                        detail: format!(
                            "duplicate id {id} with different content: an entry with this id \
                             is already recorded (the first write wins)"
                        ),
                    };
                    decoded[i] = self.quarantine(&batch[i], StreamPosition::of(&batch[i]), err);
                }
            }
        }
        let mut entries = Vec::with_capacity(decoded.len());
        let mut quarantined = Vec::new();
        let mut quarantine_kinds = Vec::new();
        for (i, d) in decoded.into_iter().enumerate() {
            if skip.contains(&i) {
                continue;
            }
            match d {
                Decoded::Entry(e) => entries.push(e),
                Decoded::Quarantine(q, kind) => {
                    tracing::debug!(subject = %q.subject, reason = %q.reason, "message quarantined");
                    quarantined.push(q);
                    quarantine_kinds.push(kind);
                }
            }
        }
        stats
            .duplicates_skipped
            .fetch_add(skip.len() as u64, Ordering::Relaxed);

        let entries = Arc::new(entries);
        let quarantined = Arc::new(quarantined);
        let mut backoff = Duration::from_millis(100);
        // After a failed write the store reopens its active segment (sled takes no more
        // writes until then), which keeps exactly what reached the disk: this batch (one
        // atomic write) is there entirely or not at all. So a retry appends only what a lookup
        // does not find; appending it all again could store it twice, and flushing alone
        // could ack what was lost.
        let mut retry = false;
        loop {
            let (store, e, q, n) = (
                self.store.clone(),
                entries.clone(),
                quarantined.clone(),
                name.to_owned(),
            );
            let result = tokio::task::spawn_blocking(move || {
                let missing;
                let (e, q): (&[TraceEntry], &[QuarantineRecord]) = if retry {
                    store.recover()?;
                    missing = not_yet_stored(&store, &e, &q)?;
                    (&missing.0, &missing.1)
                } else {
                    (&e, &q)
                };
                store.append(AppendBatch {
                    entries: e,
                    quarantined: q,
                    checkpoint: Some((&n, max_seq)),
                })?;
                store.flush()
            })
            .await?;
            retry = true;
            match result {
                Ok(()) => break,
                Err(err) => {
                    stats.write_failures.fetch_add(1, Ordering::Relaxed);
                    stats.store_failing.store(true, Ordering::Relaxed);
                    self.monitor
                        .metrics()
                        .record_store_write_failure(&err.to_string(), Utc::now());
                    tracing::error!(error = %err, retry_in = ?backoff, "store write failed; batch kept, not acked");
                    if *shutdown.borrow() {
                        anyhow::bail!("shutting down with a batch the store refused: {err} (JetStream will redeliver it)");
                    }
                    mark_in_progress(&batch).await;
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        stats.store_failing.store(false, Ordering::Relaxed);
        for (id, print) in batch_ids.into_iter().chain(remember) {
            recent.insert(id, print);
        }
        stats
            .stored
            .fetch_add(entries.len() as u64, Ordering::Relaxed);
        stats
            .quarantined
            .fetch_add(quarantined.len() as u64, Ordering::Relaxed);
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats.last_stream_seq.store(max_seq, Ordering::Relaxed);
        let ack_started = Instant::now();
        let failed = ack_all(&batch).await;
        stats
            .ack_failures
            .fetch_add(failed as u64, Ordering::Relaxed);
        let now = Utc::now();
        let metrics = self.monitor.metrics();
        metrics.observe_ack(ack_started.elapsed());
        metrics.observe_batch(started.elapsed());
        metrics.add_received(batch.len() as u64);
        metrics.add_stored(entries.len() as u64);
        for kind in quarantine_kinds {
            metrics.add_quarantined(kind, 1);
        }
        // the agent's own alerts and anomalies are recorded, but the agent is not one of the
        // sources it watches (it would raise `source_silent` about itself)
        metrics.observe_entries(
            entries.iter().filter(|e| {
                !e.meta_str("subject")
                    .is_some_and(|s| s.starts_with("trace."))
            }),
            now,
        );
        metrics.record_store_write_ok(now);
        Ok(max_seq)
    }

    /// The quarantine record of a refused message (without its payload under a privacy policy,
    /// which the raw bytes could defeat).
    fn quarantine(
        &self,
        msg: &jetstream::Message,
        position: StreamPosition,
        err: DecodeError,
    ) -> Decoded {
        let private = self.decoder.privacy().is_some();
        Decoded::Quarantine(
            QuarantineRecord {
                received_at: position.published,
                subject: msg.subject.to_string(),
                kind: err.kind.as_str().to_owned(),
                reason: if private {
                    format!("{err} (payload not kept: a [privacy] policy is active)")
                } else {
                    err.to_string()
                },
                stream_seq: (position.seq > 0).then_some(position.seq),
                raw: if private {
                    Vec::new()
                } else {
                    msg.payload.to_vec()
                },
            },
            err.kind,
        )
    }

    /// Which of the possibly-seen messages are already in the store (by id for entries, by
    /// stream position for quarantined ones).
    async fn already_durable(
        &self,
        decoded: &[Decoded],
        candidates: &[usize],
    ) -> anyhow::Result<HashSet<usize>> {
        if candidates.is_empty() {
            return Ok(HashSet::new());
        }
        let mut ids = Vec::new();
        let mut seqs = Vec::new();
        for &i in candidates {
            match &decoded[i] {
                Decoded::Entry(e) => ids.push((i, e.id)),
                Decoded::Quarantine(q, _) => seqs.push((i, q.stream_seq.unwrap_or(0))),
            }
        }
        let store = self.store.clone();
        let found = tokio::task::spawn_blocking(move || -> trace_store::Result<HashSet<usize>> {
            let present = store.contains_ids(&ids.iter().map(|(_, id)| *id).collect::<Vec<_>>())?;
            let mut out: HashSet<usize> = ids
                .iter()
                .filter(|(_, id)| present.contains(id))
                .map(|(i, _)| *i)
                .collect();
            for (i, seq) in seqs {
                if seq > 0 && store.has_quarantined(seq)? {
                    out.insert(i);
                }
            }
            Ok(out)
        })
        .await??;
        if !found.is_empty() {
            tracing::info!(
                count = found.len(),
                "redelivered messages already durable; acking without storing again"
            );
        }
        Ok(found)
    }
}

/// The entries and quarantine records of a batch that the store does not hold (by id, and by
/// stream position for quarantine records), for a retry after a failed write.
fn not_yet_stored(
    store: &Store,
    entries: &[TraceEntry],
    quarantined: &[QuarantineRecord],
) -> trace_store::Result<(Vec<TraceEntry>, Vec<QuarantineRecord>)> {
    let ids: Vec<EventId> = entries.iter().map(|e| e.id).collect();
    let present = store.contains_ids(&ids)?;
    let entries = entries
        .iter()
        .filter(|e| !present.contains(&e.id))
        .cloned()
        .collect();
    let mut missing = Vec::new();
    for q in quarantined {
        let stored = match q.stream_seq {
            Some(seq) if seq > 0 => store.has_quarantined(seq)?,
            _ => false,
        };
        if !stored {
            missing.push(q.clone());
        }
    }
    Ok((entries, missing))
}
