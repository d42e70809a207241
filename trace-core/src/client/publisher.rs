//! The client's background task: takes batches from the in-memory queue, publishes them
//! through JetStream with a sliding window of pending acks, spills to local files while NATS
//! is unreachable, reconnects with backoff, and replays the spill files in order first.
//!
//! Invariant: entries leave in sequence order. The window holds either replayed or live
//! entries, never both (it is drained before a spill file is replayed), so a failure knows
//! which unacked entries must be spilled (live ones) and which are still in their file.

use std::collections::VecDeque;
use std::future::{Future, IntoFuture};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::publish::PublishAck;
use futures::FutureExt as _;
use tokio::time::Instant;

use super::spill::{SpillReader, SpillRecord, SpillWriter};
use super::{ClientConfig, Queued, Shared};
use crate::entry::TraceEntry;

type AckFuture = Pin<Box<dyn Future<Output = Result<PublishAck, PublishError>> + Send>>;

/// How often failures (publish errors, unreachable NATS) are logged at most.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The spill record (subject and encoded envelope) of an entry.
pub(crate) fn record_of(config: &ClientConfig, seq: u64, entry: &TraceEntry) -> SpillRecord {
    let subject = crate::subject::publish_subject(config.kind, &config.source, &entry.event_type)
        .unwrap_or_else(|_| {
            // The envelope keeps the real type; only the subject is made valid.
            format!(
                "game.{}.{}.{}",
                config.kind,
                config.source,
                subject_safe(&entry.event_type)
            )
        });
    SpillRecord {
        seq,
        id: entry.id,
        subject,
        payload: crate::codec::encode_entry_vec(entry).into(),
    }
}

/// A type made into dotted subject tokens: wildcards and whitespace become `_`, empty tokens
/// `_`.
fn subject_safe(event_type: &str) -> String {
    let tokens: Vec<String> = event_type
        .split('.')
        .map(|token| {
            let token: String = token
                .chars()
                .map(|c| {
                    if c.is_whitespace() || c == '*' || c == '>' {
                        '_'
                    } else {
                        c
                    }
                })
                .collect();
            if token.is_empty() {
                "_".to_owned()
            } else {
                token
            }
        })
        .collect();
    tokens.join(".")
}

/// A publish error, with the likely cause when JetStream has no stream for the subject.
fn describe(e: &PublishError) -> String {
    let text = e.to_string();
    if text.contains("no responders") {
        format!("{text} (no JetStream stream captures the subject: is the trace agent running?)")
    } else {
        text
    }
}

/// One connection: async-nats does not reconnect on its own (one immediate attempt at most),
/// so messages queued in a broken connection die with it instead of arriving after the
/// replay of earlier ones.
pub(crate) struct Connection {
    client: async_nats::Client,
    js: jetstream::Context,
}

/// Connects once, with the caller's options plus the client's own.
pub(crate) async fn connect_once(config: &ClientConfig) -> Result<Connection, String> {
    let options = config
        .connect_options
        .as_ref()
        .map(|make| make())
        .unwrap_or_default();
    let client = options
        .name(format!("trace-client {}.{}", config.kind, config.source))
        .connection_timeout(Duration::from_secs(2))
        .max_reconnects(1)
        .reconnect_delay_callback(|_| Duration::ZERO)
        .connect(config.nats_url.as_str())
        .await
        .map_err(|e| e.to_string())?;
    let mut js = jetstream::new(client.clone());
    js.set_timeout(config.ack_timeout);
    Ok(Connection { client, js })
}

/// Where an entry in the window came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// From the in-memory queue: spilled if it fails.
    Live,
    /// Replayed from the front spill file; `counts` says whether its sequence is this
    /// process's (files adopted from an earlier process do not move the watermark).
    Replay { counts: bool },
}

/// A publish waiting for its ack, in sequence order. `ack: None` is an entry NATS refused for
/// good; it settles at its turn.
struct InFlight {
    record: SpillRecord,
    origin: Origin,
    ack: Option<AckFuture>,
}

/// A spill file waiting to be replayed.
struct BacklogFile {
    path: PathBuf,
    /// Records at its start already acked (skipped when the replay resumes).
    acked: u64,
    /// Left by an earlier process.
    adopted: bool,
}

/// The failure that sends the client offline.
struct Offline;

enum Wakeup {
    Tick,
    Acked(Result<PublishAck, PublishError>),
    Connected(Result<Box<Connection>, String>),
}

/// The background task.
pub(crate) struct Publisher {
    shared: Arc<Shared>,
    connection: Option<Connection>,
    connecting: Option<tokio::task::JoinHandle<Result<Connection, String>>>,
    next_attempt: Instant,
    backoff: Duration,
    window: VecDeque<InFlight>,
    backlog: VecDeque<BacklogFile>,
    spill: Option<SpillWriter>,
    close_deadline: Option<Instant>,
    last_error_log: Option<Instant>,
}

impl Publisher {
    pub(crate) fn new(
        shared: Arc<Shared>,
        connection: Option<Connection>,
        leftovers: Vec<PathBuf>,
    ) -> Self {
        if connection.is_some() {
            shared.counters.connects.fetch_add(1, Ordering::Relaxed);
            shared.counters.connected.store(true, Ordering::Relaxed);
        }
        if !leftovers.is_empty() && !shared.config.spill_only {
            tracing::info!(
                files = leftovers.len(),
                dir = %shared.spill_dir.display(),
                "replaying trace entries spilled by an earlier process"
            );
        }
        let backlog = if shared.config.spill_only {
            VecDeque::new()
        } else {
            leftovers
                .into_iter()
                .map(|path| BacklogFile {
                    path,
                    acked: 0,
                    adopted: true,
                })
                .collect()
        };
        Publisher {
            backoff: shared.config.reconnect_backoff,
            shared,
            connection,
            connecting: None,
            next_attempt: Instant::now(),
            window: VecDeque::new(),
            backlog,
            spill: None,
            close_deadline: None,
            last_error_log: None,
        }
    }

    pub(crate) fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run())
    }

    async fn run(mut self) {
        let batch_size = self.shared.config.batch_size;
        let mut batch: Vec<Queued> = Vec::with_capacity(batch_size);
        loop {
            if self.close_deadline.is_none() && self.shared.closing.load(Ordering::SeqCst) {
                self.close_deadline = Some(Instant::now() + self.shared.config.close_timeout);
            }
            self.maybe_start_connecting();
            if let Some(overflow) = self.shared.take_overflow() {
                self.close_spill();
                self.push_backlog(overflow);
            }
            if self.connection.is_some() && (!self.backlog.is_empty() || self.spill.is_some()) {
                self.replay_front().await;
                continue;
            }
            batch.clear();
            self.shared.take_batch(batch_size, &mut batch);
            if !batch.is_empty() {
                if self.connection.is_some() {
                    self.publish_live(&mut batch).await;
                } else {
                    let records = self.records_of(batch.drain(..));
                    self.spill_records(records);
                }
                self.settle_ready();
                continue;
            }
            if let Some(deadline) = self.close_deadline {
                if self.all_delivered() {
                    break;
                }
                if Instant::now() >= deadline {
                    self.give_up();
                    break;
                }
            }
            let wakeup = self.idle_wait().await;
            self.handle(wakeup);
        }
        self.close_spill();
        if let Some(connection) = self.connection.take() {
            let _ = connection.client.flush().await;
        }
        self.shared
            .counters
            .connected
            .store(false, Ordering::Relaxed);
    }

    fn all_delivered(&self) -> bool {
        let spilled_done =
            self.shared.config.spill_only || (self.backlog.is_empty() && self.spill.is_none());
        self.window.is_empty() && spilled_done && self.shared.inbox_is_empty()
    }

    /// At the close deadline: whatever is not acked goes to the spill directory.
    fn give_up(&mut self) {
        let unacked: Vec<SpillRecord> = self
            .window
            .drain(..)
            .filter(|f| f.origin == Origin::Live)
            .map(|f| f.record)
            .collect();
        self.spill_records(unacked);
        let mut batch = Vec::new();
        self.shared.take_batch(usize::MAX, &mut batch);
        let records = self.records_of(batch.drain(..));
        self.spill_records(records);
        if let Some(overflow) = self.shared.take_overflow() {
            self.close_spill();
            self.push_backlog(overflow);
        }
        if !self.shared.config.spill_only {
            tracing::warn!(
                dir = %self.shared.spill_dir.display(),
                "trace client closed before NATS acked everything: the rest stays in the spill \
                 directory (a client given this spill_dir replays it)"
            );
        }
    }

    fn records_of(&self, queued: impl Iterator<Item = Queued>) -> Vec<SpillRecord> {
        queued
            .map(|q| record_of(&self.shared.config, q.seq, &q.entry))
            .collect()
    }

    fn maybe_start_connecting(&mut self) {
        if self.shared.config.spill_only
            || self.connection.is_some()
            || self.connecting.is_some()
            || Instant::now() < self.next_attempt
        {
            return;
        }
        let config = self.shared.config.clone();
        self.connecting = Some(tokio::spawn(async move { connect_once(&config).await }));
    }

    async fn idle_wait(&mut self) -> Wakeup {
        if self.window.front().is_some_and(|f| f.ack.is_none()) {
            return Wakeup::Tick;
        }
        let shared = self.shared.clone();
        let interval = shared.config.flush_interval;
        let window = &mut self.window;
        let connecting = &mut self.connecting;
        let front_ack = async {
            match window.front_mut().and_then(|f| f.ack.as_mut()) {
                Some(ack) => ack.await,
                None => std::future::pending().await,
            }
        };
        let connected = async {
            match connecting.as_mut() {
                Some(task) => match task.await {
                    Ok(result) => result,
                    Err(e) => Err(format!("connect task failed: {e}")),
                },
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shared.wake.notified() => Wakeup::Tick,
            _ = tokio::time::sleep(interval) => Wakeup::Tick,
            ack = front_ack => Wakeup::Acked(ack),
            result = connected => Wakeup::Connected(result.map(Box::new)),
        }
    }

    fn handle(&mut self, wakeup: Wakeup) {
        match wakeup {
            Wakeup::Tick => self.settle_ready(),
            Wakeup::Acked(result) => {
                if let Some(front) = self.window.pop_front() {
                    if self.settled(front, Some(result)).is_err() {
                        return;
                    }
                }
                self.settle_ready();
            }
            Wakeup::Connected(result) => {
                self.connecting = None;
                match result {
                    Ok(connection) => {
                        // The backoff is reset by the first ack, not here: a server that
                        // accepts connections but has no stream must not be hammered.
                        self.connection = Some(*connection);
                        self.shared
                            .counters
                            .connects
                            .fetch_add(1, Ordering::Relaxed);
                        self.shared
                            .counters
                            .connected
                            .store(true, Ordering::Relaxed);
                        tracing::info!(url = %self.shared.config.nats_url, "trace client connected to NATS");
                    }
                    Err(reason) => {
                        self.log_failure(&format!(
                            "cannot connect to NATS at {}: {reason}",
                            self.shared.config.nats_url
                        ));
                        self.schedule_reconnect();
                    }
                }
            }
        }
    }

    fn schedule_reconnect(&mut self) {
        self.next_attempt = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(self.shared.config.reconnect_backoff_max);
    }

    /// Publishes a batch from the queue; on failure, it and everything unacked is spilled.
    async fn publish_live(&mut self, batch: &mut Vec<Queued>) {
        let connected = self.connection.as_ref().is_some_and(|c| {
            c.client.connection_state() == async_nats::connection::State::Connected
        });
        if !connected {
            let records = self.records_of(batch.drain(..));
            self.go_offline("the connection to NATS is down", records);
            return;
        }
        let mut queued = batch.drain(..);
        while let Some(q) = queued.next() {
            let record = record_of(&self.shared.config, q.seq, &q.entry);
            if let Err(Offline) = self.publish(record.clone(), Origin::Live).await {
                // `publish` went offline with the window; this entry and the rest follow it.
                let mut rest = vec![record];
                rest.extend(self.records_of(queued.by_ref()));
                self.spill_records(rest);
                return;
            }
        }
    }

    /// Sends one publish into the window (waiting for the oldest ack while it is full).
    async fn publish(&mut self, record: SpillRecord, origin: Origin) -> Result<(), Offline> {
        while self.window.len() >= self.shared.config.max_acks_in_flight {
            self.settle_front().await?;
        }
        let Some(connection) = self.connection.as_ref() else {
            return Err(Offline);
        };
        let message = PublishMessage::build()
            .payload(record.payload.clone())
            .message_id(record.id.to_string());
        let sent = tokio::time::timeout(
            self.shared.config.ack_timeout,
            connection.js.send_publish(record.subject.clone(), message),
        )
        .await;
        match sent {
            Ok(Ok(ack)) => {
                self.shared
                    .counters
                    .published
                    .fetch_add(1, Ordering::Relaxed);
                self.window.push_back(InFlight {
                    record,
                    origin,
                    ack: Some(Box::pin(ack.into_future())),
                });
                Ok(())
            }
            Ok(Err(e)) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                self.shared
                    .counters
                    .rejected
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    id = %record.id,
                    subject = %record.subject,
                    bytes = record.payload.len(),
                    error = %e,
                    "trace entry refused by NATS for good (too large): not recorded"
                );
                self.window.push_back(InFlight {
                    record,
                    origin,
                    ack: None,
                });
                Ok(())
            }
            Ok(Err(e)) => {
                self.go_offline(&format!("publish failed: {}", describe(&e)), Vec::new());
                Err(Offline)
            }
            Err(_) => {
                self.go_offline("publish timed out", Vec::new());
                Err(Offline)
            }
        }
    }

    /// Waits for the oldest pending ack.
    async fn settle_front(&mut self) -> Result<(), Offline> {
        let Some(mut front) = self.window.pop_front() else {
            return Ok(());
        };
        let result = match front.ack.take() {
            Some(ack) => Some(ack.await),
            None => None,
        };
        self.settled(front, result)
    }

    /// Settles every ack that is already in, in order.
    fn settle_ready(&mut self) {
        loop {
            let Some(front) = self.window.front_mut() else {
                return;
            };
            let result = match front.ack.as_mut() {
                Some(ack) => match ack.now_or_never() {
                    Some(result) => Some(result),
                    None => return,
                },
                None => None,
            };
            let Some(front) = self.window.pop_front() else {
                return;
            };
            if self.settled(front, result).is_err() {
                return;
            }
        }
    }

    /// Accounts for one settled publish: `None` is a refused entry, an error sends the client
    /// offline.
    fn settled(
        &mut self,
        front: InFlight,
        result: Option<Result<PublishAck, PublishError>>,
    ) -> Result<(), Offline> {
        let counters = &self.shared.counters;
        match result {
            Some(Ok(ack)) => {
                self.backoff = self.shared.config.reconnect_backoff;
                counters.acked.fetch_add(1, Ordering::Relaxed);
                if ack.duplicate {
                    counters.duplicates.fetch_add(1, Ordering::Relaxed);
                }
            }
            None => {}
            Some(Err(e)) => {
                // The failed entry goes back to the front, so it is spilled (or, replayed,
                // stays in its file) with the rest, in order.
                self.window.push_front(front);
                self.go_offline(&format!("publish not acked: {}", describe(&e)), Vec::new());
                return Err(Offline);
            }
        }
        match front.origin {
            Origin::Live => self.shared.mark_delivered(front.record.seq),
            Origin::Replay { counts } => {
                counters.replayed.fetch_add(1, Ordering::Relaxed);
                if let Some(file) = self.backlog.front_mut() {
                    file.acked += 1;
                }
                if counts {
                    self.shared.mark_delivered(front.record.seq);
                }
            }
        }
        Ok(())
    }

    /// Drops the connection, spills every unacked live entry (then `rest`) in order, and
    /// schedules a reconnect. Replayed entries stay in their file.
    fn go_offline(&mut self, reason: &str, rest: Vec<SpillRecord>) {
        self.shared
            .counters
            .publish_errors
            .fetch_add(1, Ordering::Relaxed);
        self.shared
            .counters
            .connected
            .store(false, Ordering::Relaxed);
        self.connection = None;
        self.log_failure(&format!(
            "trace client offline ({reason}); spilling to {} until NATS is back",
            self.shared.spill_dir.display()
        ));
        let mut records: Vec<SpillRecord> = self
            .window
            .drain(..)
            .filter(|f| f.origin == Origin::Live)
            .map(|f| f.record)
            .collect();
        records.extend(rest);
        self.spill_records(records);
        self.schedule_reconnect();
    }

    fn log_failure(&mut self, message: &str) {
        let now = Instant::now();
        if self
            .last_error_log
            .is_some_and(|last| now.duration_since(last) < ERROR_LOG_INTERVAL)
        {
            return;
        }
        self.last_error_log = Some(now);
        tracing::warn!(
            spilled = self.shared.counters.spilled.load(Ordering::Relaxed),
            "{message}"
        );
    }

    /// Appends records to the current spill file and fsyncs it.
    fn spill_records(&mut self, records: Vec<SpillRecord>) {
        if records.is_empty() {
            return;
        }
        let n = records.len() as u64;
        let written = (|| {
            if self.spill.is_none() {
                let first_seq = records.first().map_or(0, |r| r.seq);
                self.spill = Some(SpillWriter::create(&self.shared.spill_dir, first_seq)?);
            }
            if let Some(writer) = self.spill.as_mut() {
                for record in &records {
                    writer.append(record)?;
                }
                writer.sync()?;
            }
            Ok::<(), super::ClientError>(())
        })();
        match written {
            Ok(()) => {
                self.shared.counters.spilled.fetch_add(n, Ordering::Relaxed);
                if self.shared.config.spill_only {
                    // On disk is as delivered as a spill-only client gets.
                    if let Some(last) = records.last() {
                        self.shared.mark_delivered(last.seq);
                    }
                }
            }
            Err(e) => {
                self.shared.counters.dropped.fetch_add(n, Ordering::Relaxed);
                tracing::error!(error = %e, lost = n, "cannot spill trace entries: they are lost");
            }
        }
    }

    /// Closes the current spill file into the backlog.
    fn close_spill(&mut self) {
        if let Some(writer) = self.spill.take() {
            self.push_backlog(writer);
        }
    }

    fn push_backlog(&mut self, writer: SpillWriter) {
        let last_seq = writer.last_seq();
        match writer.finish() {
            Ok(path) => {
                if self.shared.config.spill_only {
                    self.shared.mark_delivered(last_seq);
                }
                // Names sort in logging order (see `spill`); the file being replayed is never
                // passed, as nothing is spilled while a replay runs.
                let at = self.backlog.partition_point(|f| f.path < path);
                self.backlog.insert(
                    at,
                    BacklogFile {
                        path,
                        acked: 0,
                        adopted: false,
                    },
                );
            }
            Err(e) => tracing::error!(error = %e, "cannot close a spill file"),
        }
    }

    /// Replays the oldest spill file; deletes it once all of it is acked.
    async fn replay_front(&mut self) {
        // Live entries in the window are older than any spill file not yet replayed: settle
        // them first, so a failure cannot put them after newer ones.
        while !self.window.is_empty() {
            if self.settle_front().await.is_err() {
                return;
            }
        }
        self.close_spill();
        let Some(file) = self.backlog.front() else {
            return;
        };
        let (path, skip, adopted) = (file.path.clone(), file.acked, file.adopted);
        let mut reader = match SpillReader::open(&path) {
            Ok(reader) => reader,
            Err(e) => {
                tracing::error!(error = %e, "cannot replay a spill file: skipping it");
                self.backlog.pop_front();
                return;
            }
        };
        let origin = Origin::Replay { counts: !adopted };
        let mut index = 0u64;
        loop {
            match reader.next_record() {
                Ok(Some(record)) => {
                    index += 1;
                    if index <= skip {
                        continue;
                    }
                    if self.publish(record, origin).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::error!(error = %e, "spill file ends in a corrupt record: replayed up to it");
                    break;
                }
            }
        }
        while !self.window.is_empty() {
            if self.settle_front().await.is_err() {
                return;
            }
        }
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove a replayed spill file");
        }
        self.backlog.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::subject_safe;

    #[test]
    fn subject_safe_types() {
        assert_eq!(subject_safe("player.move"), "player.move");
        assert_eq!(subject_safe("a b.*..>"), "a_b._._._");
    }
}
