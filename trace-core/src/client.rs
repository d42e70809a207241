//! The publisher client game services use to emit trace entries (feature `nats`):
//! [`TraceClient`] buffers entries in memory without ever waiting on the network, a background
//! task publishes them through JetStream in order, and a local spill file holds them, in order,
//! while NATS is unreachable.
//!
//! How an entry travels, and what each step guarantees:
//! 1. [`TraceClient::log_event`] (or [`TraceClient::event`]`(..).send()`) stamps a ULID id and
//!    the time, and appends the entry to a bounded in-memory queue; it returns at once. When
//!    the queue is full the [`OverflowPolicy`] applies: drop the newest (counted and logged) or
//!    append it to an overflow spill file (a buffered local write; no network).
//! 2. The publisher task takes batches from the queue and publishes each entry on
//!    `game.<kind>.<source>.<type>` with `Nats-Msg-Id` set to the entry id, keeping a sliding
//!    window of pending JetStream acks (never more than
//!    [`ClientConfig::max_acks_in_flight`]).
//! 3. When a publish or an ack fails (NATS down, no stream, timeout), every entry not yet acked
//!    goes, in order, to a spill file (fsynced), the connection is dropped, and the task
//!    reconnects with backoff, spilling what arrives meanwhile. After reconnecting it replays
//!    the spill files in order before anything newer, deleting each once all of it is acked.
//!    Retries carry the same id, so JetStream's duplicate window drops what was stored but
//!    not acknowledged.
//! 4. [`TraceClient::flush`] returns once everything logged before it is acked by JetStream;
//!    [`TraceClient::close`] flushes (within [`ClientConfig::close_timeout`]) and stops,
//!    leaving what could not be delivered in the spill directory.
//!
//! Per client, entries reach the stream in the order they were logged, across outages too.
//! The connection does not reconnect on its own (async-nats would resend messages queued
//! while disconnected *before* the replay of earlier ones that were lost): a broken connection
//! is dropped and a new one made, so the replay always comes first.

mod publisher;
pub mod spill;

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::Utc;
use serde::Serialize;
use thiserror::Error;

use crate::entry::{Category, EventId, Severity, TraceEntry};
use crate::subject::SourceKind;

pub use spill::read_spill_dir;

use spill::SpillWriter;

/// Builds the async-nats options for each connection attempt (auth, TLS, ...). The client
/// adds its own name, timeouts and reconnect settings on top.
pub type ConnectOptionsFactory = Arc<dyn Fn() -> async_nats::ConnectOptions + Send + Sync>;

/// What went wrong in the client; each variant names the file or the source concerned.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The source name cannot be a subject token.
    #[error("invalid source {source_name:?}: it must be one subject token (no dots, spaces or wildcards)")]
    InvalidSource {
        /// The source as given.
        source_name: String,
    },
    /// A spill file or directory could not be created, written or read.
    #[error("spill file {}: {action} failed: {error}", path.display())]
    SpillIo {
        /// The file or directory.
        path: PathBuf,
        /// What the client was doing (`creating`, `appending to`, `syncing`, ...).
        action: &'static str,
        /// The operating system's error.
        error: std::io::Error,
    },
    /// A spill file holds a record that cannot be read back.
    #[error("spill file {}: {reason}", path.display())]
    SpillCorrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The authentication or TLS settings given to `auth` cannot work.
    #[error("NATS authentication settings: {0}")]
    Auth(#[from] crate::auth::AuthError),
    /// `flush_timeout` or `close` gave up before everything was acked.
    #[error("{pending} entries not yet acknowledged by JetStream after {waited:?} (they stay buffered or in the spill directory)")]
    FlushTimeout {
        /// How many logged entries were not yet acked.
        pending: u64,
        /// How long it waited.
        waited: Duration,
    },
}

impl ClientError {
    pub(crate) fn spill(path: &Path, action: &'static str, error: std::io::Error) -> Self {
        ClientError::SpillIo {
            path: path.to_path_buf(),
            action,
            error,
        }
    }
}

/// What `log_event` does when the in-memory buffer is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OverflowPolicy {
    /// Append the entry to an overflow spill file (a local buffered write), replayed in order
    /// after what is in memory. Nothing is dropped unless the disk fails.
    #[default]
    Spill,
    /// Drop the newest entry; drops are counted in [`ClientStats::dropped`] and logged
    /// (at most once per 5 s).
    DropNewest,
}

/// The client's settings. Defaults:
///
/// | setting | default |
/// |---|---|
/// | `buffer_capacity` | 100,000 entries in memory |
/// | `batch_size` | 512 entries: the publisher wakes when this many are waiting... |
/// | `flush_interval` | 50 ms: ...or after this long |
/// | `max_acks_in_flight` | 2,048 pending JetStream acks |
/// | `ack_timeout` | 5 s for one publish to be acked before NATS counts as unreachable |
/// | `spill_dir` | `<temp dir>/trace-client/<kind>.<source>.<pid>` |
/// | `overflow` | [`OverflowPolicy::Spill`] |
/// | `initial_connect_timeout` | 1 s that `connect()` waits for NATS before going on without |
/// | `reconnect_backoff` | 100 ms, doubling to 2 s, between connection attempts |
/// | `close_timeout` | 10 s that `close()` waits for everything to be acked |
/// | `spill_only` | false: never connect, keep everything in the spill dir (tests, offline) |
#[derive(Clone)]
pub struct ClientConfig {
    /// NATS server URL(s), comma-separated.
    pub nats_url: String,
    /// The emitting service: one subject token.
    pub source: String,
    /// The kind of service (the subject's second token).
    pub kind: SourceKind,
    /// Most entries held in memory.
    pub buffer_capacity: usize,
    /// Entries per publish batch.
    pub batch_size: usize,
    /// Longest an entry waits in memory before the publisher picks it up.
    pub flush_interval: Duration,
    /// Most JetStream acks pending at once.
    pub max_acks_in_flight: usize,
    /// How long a publish may wait for its ack.
    pub ack_timeout: Duration,
    /// Where spill files go; `None`: the default under the OS temp dir. Spill files already in
    /// a given directory (left by an earlier process) are replayed first: one client per
    /// directory.
    pub spill_dir: Option<PathBuf>,
    /// What happens when the buffer is full.
    pub overflow: OverflowPolicy,
    /// How long `connect()` waits for the first connection.
    pub initial_connect_timeout: Duration,
    /// First delay between connection attempts (doubles up to `reconnect_backoff_max`).
    pub reconnect_backoff: Duration,
    /// Longest delay between connection attempts.
    pub reconnect_backoff_max: Duration,
    /// How long `close()` waits for delivery.
    pub close_timeout: Duration,
    /// Never connect: every entry goes to the spill directory.
    pub spill_only: bool,
    /// Caller-built connection options (auth, TLS); `None`: plain `ConnectOptions::new()`.
    pub connect_options: Option<ConnectOptionsFactory>,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("nats_url", &self.nats_url)
            .field("source", &self.source)
            .field("kind", &self.kind)
            .field("buffer_capacity", &self.buffer_capacity)
            .field("batch_size", &self.batch_size)
            .field("flush_interval", &self.flush_interval)
            .field("max_acks_in_flight", &self.max_acks_in_flight)
            .field("ack_timeout", &self.ack_timeout)
            .field("spill_dir", &self.spill_dir)
            .field("overflow", &self.overflow)
            .field("spill_only", &self.spill_only)
            .field("connect_options", &self.connect_options.is_some())
            .finish_non_exhaustive()
    }
}

impl ClientConfig {
    /// The defaults for a source.
    pub fn new(nats_url: impl Into<String>, source: impl Into<String>, kind: SourceKind) -> Self {
        ClientConfig {
            nats_url: nats_url.into(),
            source: source.into(),
            kind,
            buffer_capacity: 100_000,
            batch_size: 512,
            flush_interval: Duration::from_millis(50),
            max_acks_in_flight: 2048,
            ack_timeout: Duration::from_secs(5),
            spill_dir: None,
            overflow: OverflowPolicy::Spill,
            initial_connect_timeout: Duration::from_secs(1),
            reconnect_backoff: Duration::from_millis(100),
            reconnect_backoff_max: Duration::from_secs(2),
            close_timeout: Duration::from_secs(10),
            spill_only: false,
            connect_options: None,
        }
    }

    fn resolved_spill_dir(&self) -> PathBuf {
        self.spill_dir.clone().unwrap_or_else(|| {
            std::env::temp_dir().join("trace-client").join(format!(
                "{}.{}.{}",
                self.kind,
                self.source,
                std::process::id()
            ))
        })
    }
}

/// Builds a [`TraceClient`]; see [`ClientConfig`] for the defaults.
#[derive(Debug, Clone)]
pub struct TraceClientBuilder {
    config: ClientConfig,
}

impl TraceClientBuilder {
    /// Most entries held in memory (at least 1).
    pub fn buffer_capacity(mut self, entries: usize) -> Self {
        self.config.buffer_capacity = entries.max(1);
        self
    }

    /// Entries per publish batch (at least 1).
    pub fn batch_size(mut self, entries: usize) -> Self {
        self.config.batch_size = entries.max(1);
        self
    }

    /// Longest an entry waits in memory before the publisher picks it up.
    pub fn flush_interval(mut self, interval: Duration) -> Self {
        self.config.flush_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Most JetStream acks pending at once (1..=4096; async-nats holds ~5,000 permits).
    pub fn max_acks_in_flight(mut self, acks: usize) -> Self {
        self.config.max_acks_in_flight = acks.clamp(1, 4096);
        self
    }

    /// How long one publish may wait for its ack before NATS counts as unreachable.
    pub fn ack_timeout(mut self, timeout: Duration) -> Self {
        self.config.ack_timeout = timeout;
        self
    }

    /// The spill directory (created if missing). Spill files already there are replayed first.
    pub fn spill_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.spill_dir = Some(dir.into());
        self
    }

    /// What happens when the buffer is full.
    pub fn overflow(mut self, policy: OverflowPolicy) -> Self {
        self.config.overflow = policy;
        self
    }

    /// How long `connect()` waits for the first connection before going on without it.
    pub fn initial_connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.initial_connect_timeout = timeout;
        self
    }

    /// Delays between connection attempts: `first`, doubling up to `max`.
    pub fn reconnect_backoff(mut self, first: Duration, max: Duration) -> Self {
        self.config.reconnect_backoff = first.max(Duration::from_millis(1));
        self.config.reconnect_backoff_max = max.max(self.config.reconnect_backoff);
        self
    }

    /// How long `close()` waits for everything to be acked.
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.config.close_timeout = timeout;
        self
    }

    /// Never connect: entries go to the spill directory only (read them with
    /// [`read_spill_dir`], or replay them later with a connected client on the same dir).
    pub fn spill_only(mut self, spill_only: bool) -> Self {
        self.config.spill_only = spill_only;
        self
    }

    /// Options for each connection (auth, TLS, ...), built anew for every attempt.
    pub fn connect_options(
        mut self,
        options: impl Fn() -> async_nats::ConnectOptions + Send + Sync + 'static,
    ) -> Self {
        self.config.connect_options = Some(Arc::new(options));
        self
    }

    /// Credentials and TLS for every connection (user/password, token, nkey, credentials
    /// file, CA, client certificate), through [`Self::connect_options`]. Checked now: an
    /// invalid setting (a password without a user, a missing file) is refused naming the key.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), trace_core::client::ClientError> {
    /// use trace_core::{auth::NatsAuth, client::TraceClient, SourceKind};
    /// let auth = NatsAuth {
    ///     user: Some("game".into()),
    ///     password: std::env::var("NATS_PASSWORD").ok(),
    ///     tls_ca: Some("/etc/nats/ca.pem".into()),
    ///     ..NatsAuth::default()
    /// };
    /// let client = TraceClient::builder("tls://nats:4222", "match-server", SourceKind::State)
    ///     .auth(auth)?
    ///     .connect()
    ///     .await?;
    /// # drop(client); Ok(()) }
    /// ```
    pub fn auth(self, auth: crate::auth::NatsAuth) -> Result<Self, ClientError> {
        auth.validate()?;
        Ok(self.connect_options(move || {
            auth.apply(async_nats::ConnectOptions::new())
                .unwrap_or_else(|e| {
                    // a file went away since `auth` checked it: connect without the credentials
                    // (the server refuses, and the client spills) and say why, but never
                    // without the TLS that was asked for
                    tracing::warn!(error = %e, "NATS credentials unusable; connecting without them");
                    async_nats::ConnectOptions::new().require_tls(auth.wants_tls())
                })
        }))
    }

    /// The settings so far.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Starts the client. Fails only on a bad source name or an unusable spill directory:
    /// if NATS is unreachable it connects in the background (spilling meanwhile) and still
    /// returns the client.
    pub async fn connect(self) -> Result<TraceClient, ClientError> {
        TraceClient::start(self.config).await
    }
}

/// Counts that say where every logged entry went. Nothing is dropped silently.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ClientStats {
    /// Entries accepted by `log_event` (buffered or overflow-spilled).
    pub logged: u64,
    /// Entries in memory now.
    pub buffered: u64,
    /// Publishes sent to JetStream (replays and retries included).
    pub published: u64,
    /// Publishes acked by JetStream (duplicates included).
    pub acked: u64,
    /// Acks that said JetStream already had the message (a retry it dropped).
    pub duplicates: u64,
    /// Entries written to spill files.
    pub spilled: u64,
    /// Entries acked when replayed from spill files.
    pub replayed: u64,
    /// Entries dropped by the overflow policy or logged after `close`.
    pub dropped: u64,
    /// Entries NATS refused for good (over the server's max payload); logged each time.
    pub rejected: u64,
    /// Failed publishes or acks (each one sent the unacked entries to the spill file).
    pub publish_errors: u64,
    /// Connections made.
    pub connects: u64,
    /// Whether the client is connected now.
    pub connected: bool,
}

/// An entry waiting in memory with its sequence number.
#[derive(Debug)]
pub(crate) struct Queued {
    pub(crate) seq: u64,
    pub(crate) entry: TraceEntry,
}

/// What callers and the publisher share.
pub(crate) struct Shared {
    pub(crate) config: ClientConfig,
    pub(crate) spill_dir: PathBuf,
    inbox: Mutex<Inbox>,
    /// Wakes the publisher (a full batch, a flush, close).
    pub(crate) wake: tokio::sync::Notify,
    /// Every entry with a sequence at or below this is acked (or finally accounted for).
    pub(crate) delivered: tokio::sync::watch::Sender<u64>,
    pub(crate) counters: Counters,
    /// Set by `close` or when the last handle is dropped.
    pub(crate) closing: AtomicBool,
    last_drop_log_ms: AtomicU64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) published: AtomicU64,
    pub(crate) acked: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) spilled: AtomicU64,
    pub(crate) replayed: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) publish_errors: AtomicU64,
    pub(crate) connects: AtomicU64,
    pub(crate) connected: AtomicBool,
}

/// The bounded queue, and the overflow file that takes over while it is full.
#[derive(Debug, Default)]
struct Inbox {
    queue: VecDeque<Queued>,
    /// Set while the queue overflowed: every new entry goes here until the publisher has
    /// emptied the queue and taken the file, so order is kept.
    overflow: Option<SpillWriter>,
    /// The last sequence number given.
    last_seq: u64,
    closed: bool,
}

/// Why `submit` did not take an entry.
enum Refused {
    Full,
    Closed,
    SpillFailed(ClientError),
}

impl Shared {
    fn inbox(&self) -> MutexGuard<'_, Inbox> {
        // A panic while holding the lock leaves the queue consistent (pushes and drains are
        // single calls), so a poisoned lock is still usable.
        self.inbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Buffers one entry (the hot path: a lock, a push, sometimes a wake-up).
    fn submit(&self, entry: TraceEntry) -> EventId {
        let id = entry.id;
        let outcome = {
            let mut inbox = self.inbox();
            if inbox.closed {
                Err(Refused::Closed)
            } else if inbox.overflow.is_none() && inbox.queue.len() < self.config.buffer_capacity {
                inbox.last_seq += 1;
                let seq = inbox.last_seq;
                inbox.queue.push_back(Queued { seq, entry });
                Ok(inbox.queue.len() == self.config.batch_size)
            } else {
                match self.config.overflow {
                    OverflowPolicy::DropNewest => Err(Refused::Full),
                    OverflowPolicy::Spill => match self.spill_overflow(&mut inbox, entry) {
                        Ok(()) => Ok(false),
                        Err(e) => Err(Refused::SpillFailed(e)),
                    },
                }
            }
        };
        match outcome {
            Ok(true) => self.wake.notify_one(),
            Ok(false) => {}
            Err(refused) => self.count_drop(refused),
        }
        id
    }

    fn spill_overflow(&self, inbox: &mut Inbox, entry: TraceEntry) -> Result<(), ClientError> {
        let seq = inbox.last_seq + 1;
        if inbox.overflow.is_none() {
            inbox.overflow = Some(SpillWriter::create(&self.spill_dir, seq)?);
        }
        let record = publisher::record_of(&self.config, seq, &entry);
        if let Some(writer) = inbox.overflow.as_mut() {
            writer.append(&record)?;
        }
        inbox.last_seq = seq;
        self.counters.spilled.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn count_drop(&self, refused: Refused) {
        let dropped = self.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        let now_ms = u64::try_from(Utc::now().timestamp_millis()).unwrap_or(0);
        let last = self.last_drop_log_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(last) < 5_000
            || self
                .last_drop_log_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        match refused {
            Refused::Full => tracing::warn!(
                dropped,
                capacity = self.config.buffer_capacity,
                "trace client buffer full: dropping the newest entries (overflow policy drop_newest)"
            ),
            Refused::Closed => {
                tracing::warn!(dropped, "trace client closed: entries logged after close are dropped")
            }
            Refused::SpillFailed(e) => {
                tracing::error!(dropped, error = %e, "trace client buffer full and the overflow spill failed: dropping")
            }
        }
    }

    /// Up to `max` entries from the front of the queue.
    pub(crate) fn take_batch(&self, max: usize, into: &mut Vec<Queued>) {
        let mut inbox = self.inbox();
        let n = inbox.queue.len().min(max);
        into.extend(inbox.queue.drain(..n));
    }

    /// The overflow file, once the queue in front of it is empty.
    pub(crate) fn take_overflow(&self) -> Option<SpillWriter> {
        let mut inbox = self.inbox();
        if inbox.queue.is_empty() {
            inbox.overflow.take()
        } else {
            None
        }
    }

    /// Whether nothing waits in memory or in the overflow file.
    pub(crate) fn inbox_is_empty(&self) -> bool {
        let inbox = self.inbox();
        inbox.queue.is_empty() && inbox.overflow.is_none()
    }

    fn queue_len(&self) -> usize {
        self.inbox().queue.len()
    }

    fn last_seq(&self) -> u64 {
        self.inbox().last_seq
    }

    fn close_inbox(&self) {
        self.inbox().closed = true;
        self.closing.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Moves the delivered watermark forward to `seq`.
    pub(crate) fn mark_delivered(&self, seq: u64) {
        self.delivered.send_if_modified(|w| {
            if seq > *w {
                *w = seq;
                true
            } else {
                false
            }
        });
    }
}

/// Ends the publisher when the last [`TraceClient`] handle goes away.
struct ClientHandle {
    shared: Arc<Shared>,
    publisher: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for ClientHandle {
    fn drop(&mut self) {
        self.shared.close_inbox();
    }
}

/// The publisher client: cheap to clone, safe to share between tasks and threads.
///
/// ```no_run
/// use std::collections::BTreeMap;
/// use trace_core::client::TraceClient;
/// use trace_core::{Severity, SourceKind};
///
/// # async fn run() -> Result<(), trace_core::client::ClientError> {
/// let client = TraceClient::builder("nats://127.0.0.1:4222", "npc-7", SourceKind::Agent)
///     .connect()
///     .await?; // never fails because NATS is down: it connects in the background
///
/// // The primary call: returns as soon as the entry is buffered. Metadata is any
/// // iterable of pairs: an array, a `BTreeMap<String, rmpv::Value>`, ...
/// let decided = client
///     .log_event("agent.decision", serde_json::json!({"action": "flee"}), [("model", "v2")])
///     .await;
/// let no_meta: BTreeMap<String, rmpv::Value> = BTreeMap::new();
/// client.log_event("agent.idle", (), no_meta).await;
///
/// // Richer entries through the builder.
/// client
///     .event("agent.acted")
///     .player("p42")
///     .session("s-7")
///     .severity(Severity::Warn)
///     .parent(decided)
///     .metric("latency_ms", 12.5)
///     .data(serde_json::json!({"hp": 3}))
///     .meta("zone", "forest")
///     .send()
///     .await;
///
/// client.flush().await; // everything above is acked by JetStream
/// println!("{:?}", client.stats());
/// client.close().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct TraceClient {
    handle: Arc<ClientHandle>,
}

impl std::fmt::Debug for TraceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceClient")
            .field("source", &self.handle.shared.config.source)
            .field("kind", &self.handle.shared.config.kind)
            .field("stats", &self.stats())
            .finish()
    }
}

impl TraceClient {
    /// A builder for a client publishing as `source` of `kind` to the NATS at `nats_url`.
    pub fn builder(
        nats_url: impl Into<String>,
        source: impl Into<String>,
        kind: SourceKind,
    ) -> TraceClientBuilder {
        TraceClientBuilder {
            config: ClientConfig::new(nats_url, source, kind),
        }
    }

    /// Starts a client with these settings (what [`TraceClientBuilder::connect`] does).
    pub async fn start(config: ClientConfig) -> Result<TraceClient, ClientError> {
        if crate::subject::publish_subject(config.kind, &config.source, "x").is_err() {
            return Err(ClientError::InvalidSource {
                source_name: config.source.clone(),
            });
        }
        let spill_dir = config.resolved_spill_dir();
        std::fs::create_dir_all(&spill_dir)
            .map_err(|e| ClientError::spill(&spill_dir, "creating the directory", e))?;
        let leftovers = spill::spill_files(&spill_dir)?;
        let (delivered, _) = tokio::sync::watch::channel(0);
        let shared = Arc::new(Shared {
            config,
            spill_dir,
            inbox: Mutex::new(Inbox::default()),
            wake: tokio::sync::Notify::new(),
            delivered,
            counters: Counters::default(),
            closing: AtomicBool::new(false),
            last_drop_log_ms: AtomicU64::new(0),
        });
        let first_connection = if shared.config.spill_only {
            None
        } else {
            let attempt = publisher::connect_once(&shared.config);
            tokio::time::timeout(shared.config.initial_connect_timeout, attempt)
                .await
                .ok()
                .and_then(Result::ok)
        };
        if first_connection.is_none() && !shared.config.spill_only {
            tracing::warn!(
                url = %shared.config.nats_url,
                spill_dir = %shared.spill_dir.display(),
                "NATS not reachable yet: spilling trace entries and retrying in the background"
            );
        }
        let publisher =
            publisher::Publisher::new(shared.clone(), first_connection, leftovers).spawn();
        Ok(TraceClient {
            handle: Arc::new(ClientHandle {
                shared,
                publisher: Mutex::new(Some(publisher)),
            }),
        })
    }

    fn shared(&self) -> &Shared {
        &self.handle.shared
    }

    /// Logs one event: `data` is any serialisable payload (a `serde_json::Value`, a struct,
    /// an `rmpv::Value`), `metadata` goes to `meta`. Returns the new entry's id as soon as
    /// the entry is buffered; it never waits on the network.
    pub async fn log_event<D, M, K, V>(&self, event_type: &str, data: D, metadata: M) -> EventId
    where
        D: Serialize,
        M: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<rmpv::Value>,
    {
        let mut entry = self.new_entry(event_type);
        entry.data = to_value(&data);
        entry.meta = metadata
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        self.log_entry(entry)
    }

    /// A builder for an event with more fields; `send().await` logs it.
    pub fn event(&self, event_type: &str) -> EventBuilder<'_> {
        EventBuilder {
            client: self,
            entry: self.new_entry(event_type),
        }
    }

    /// Buffers an entry built by hand (keeping its id and time); never waits, never blocks
    /// on the network. This is the synchronous core of `log_event`, for callers outside async
    /// code (such as [`TraceLayer`](crate::layer::TraceLayer)).
    pub fn log_entry(&self, entry: TraceEntry) -> EventId {
        self.shared().submit(entry)
    }

    /// A new entry from this client's source with a fresh id, now.
    pub fn new_entry(&self, event_type: &str) -> TraceEntry {
        let config = &self.shared().config;
        let mut entry = TraceEntry::new(event_type, config.source.as_str());
        if Category::from_type(event_type).is_none() {
            entry.category = config.kind.default_category();
        }
        entry
    }

    /// Waits until everything logged before this call is acked by JetStream (however long
    /// NATS is away). See [`TraceClient::flush_timeout`] for a bounded wait.
    pub async fn flush(&self) {
        let target = self.shared().last_seq();
        self.shared().wake.notify_one();
        let mut delivered = self.shared().delivered.subscribe();
        // The sender lives as long as `self`, so this only ends when the target is reached.
        let _ = delivered.wait_for(|w| *w >= target).await;
    }

    /// [`TraceClient::flush`] with a time limit; on timeout, says how many are still pending.
    pub async fn flush_timeout(&self, limit: Duration) -> Result<(), ClientError> {
        let target = self.shared().last_seq();
        match tokio::time::timeout(limit, self.flush()).await {
            Ok(()) => Ok(()),
            Err(_) => Err(ClientError::FlushTimeout {
                pending: target.saturating_sub(*self.shared().delivered.borrow()),
                waited: limit,
            }),
        }
    }

    /// Flushes (within [`ClientConfig::close_timeout`]) and stops the publisher. Entries not
    /// acked by then stay in the spill directory (logged with its path) and the error says how
    /// many. Entries logged after `close` are dropped and counted.
    pub async fn close(&self) -> Result<ClientStats, ClientError> {
        let limit = self.shared().config.close_timeout;
        let target = self.shared().last_seq();
        self.shared().close_inbox();
        let publisher = self
            .handle
            .publisher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(task) = publisher {
            // The publisher itself gives up at the close deadline; the margin covers its
            // last spill and sync.
            let _ = tokio::time::timeout(limit + Duration::from_secs(5), task).await;
        }
        let delivered = *self.shared().delivered.borrow();
        if delivered >= target {
            if self.shared().config.spill_dir.is_none() {
                // The default directory is this process's own: tidy it up when it is empty
                // (this fails, harmlessly, when anything is left in it).
                let _ = std::fs::remove_dir(&self.shared().spill_dir);
            }
            Ok(self.stats())
        } else {
            Err(ClientError::FlushTimeout {
                pending: target - delivered,
                waited: limit,
            })
        }
    }

    /// Where every entry went so far.
    pub fn stats(&self) -> ClientStats {
        let shared = self.shared();
        let c = &shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ClientStats {
            logged: shared.last_seq(),
            buffered: shared.queue_len() as u64,
            published: get(&c.published),
            acked: get(&c.acked),
            duplicates: get(&c.duplicates),
            spilled: get(&c.spilled),
            replayed: get(&c.replayed),
            dropped: get(&c.dropped),
            rejected: get(&c.rejected),
            publish_errors: get(&c.publish_errors),
            connects: get(&c.connects),
            connected: c.connected.load(Ordering::Relaxed),
        }
    }

    /// The spill directory in use.
    pub fn spill_dir(&self) -> &Path {
        &self.shared().spill_dir
    }

    /// The settings in use.
    pub fn config(&self) -> &ClientConfig {
        &self.shared().config
    }
}

/// Converts any serialisable payload to the msgpack value kept in `data`; a value serde
/// cannot represent becomes its error text (so the event is still recorded).
fn to_value<D: Serialize>(data: &D) -> rmpv::Value {
    rmpv::ext::to_value(data)
        .unwrap_or_else(|e| rmpv::Value::from(format!("<data not serialisable: {e}>")))
}

/// An event being built; [`EventBuilder::send`] logs it.
#[derive(Debug)]
#[must_use = "an event is logged only by `send()`"]
pub struct EventBuilder<'a> {
    client: &'a TraceClient,
    entry: TraceEntry,
}

impl EventBuilder<'_> {
    /// The player concerned.
    pub fn player(mut self, player: impl Into<String>) -> Self {
        self.entry.player = Some(player.into());
        self
    }

    /// The game session.
    pub fn session(mut self, session: impl Into<String>) -> Self {
        self.entry.session = Some(session.into());
        self
    }

    /// How serious it is (default `info`).
    pub fn severity(mut self, severity: Severity) -> Self {
        self.entry.severity = severity;
        self
    }

    /// The category (default: from the type's first token, else from the source kind).
    pub fn category(mut self, category: Category) -> Self {
        self.entry.category = category;
        self
    }

    /// The event that caused this one.
    pub fn parent(mut self, parent: EventId) -> Self {
        self.entry.parent = Some(parent);
        self
    }

    /// A performance figure (`latency_ms`, `tick_ms`, ...).
    pub fn metric(mut self, name: impl Into<String>, value: f64) -> Self {
        self.entry.metrics.insert(name.into(), value);
        self
    }

    /// The payload: anything serialisable.
    pub fn data(mut self, data: impl Serialize) -> Self {
        self.entry.data = to_value(&data);
        self
    }

    /// One metadata key.
    pub fn meta(mut self, key: impl Into<String>, value: impl Into<rmpv::Value>) -> Self {
        self.entry.meta.insert(key.into(), value.into());
        self
    }

    /// All metadata at once (replacing what was set).
    pub fn metadata(mut self, meta: BTreeMap<String, rmpv::Value>) -> Self {
        self.entry.meta = meta;
        self
    }

    /// The entry as built so far (id and time are already set).
    pub fn entry(&self) -> &TraceEntry {
        &self.entry
    }

    /// Logs it; returns its id as soon as it is buffered.
    pub async fn send(self) -> EventId {
        self.client.log_entry(self.entry)
    }
}

#[cfg(test)]
mod tests;
