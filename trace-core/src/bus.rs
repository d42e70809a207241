//! Bus helpers (feature `nats`): connecting, creating or binding the input stream, durable
//! pull consumers, and reading them in batches bounded by size and time.
//!
//! The delivery contract the readers build on: a consumer acks a batch only after its sink
//! made it durable; a message seen again (`delivered > 1`) may already be durable and must be
//! checked before it is stored again.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use thiserror::Error;

use crate::subject::InputSubject;

/// What went wrong talking to NATS; every variant names the server, stream or consumer.
#[derive(Debug, Error)]
pub enum BusError {
    /// The server could not be reached or refused the connection.
    #[error("cannot connect to NATS at {url}: {reason} ({hint})")]
    Connect {
        /// The URL tried (user information redacted).
        url: String,
        /// What the client said.
        reason: String,
        /// What to check, by kind of failure (unreachable, credentials refused, TLS).
        hint: String,
    },
    /// The authentication or TLS settings cannot work (checked before connecting).
    #[error("NATS authentication settings: {0}")]
    Auth(#[from] crate::auth::AuthError),
    /// JetStream refused to create, update or read the stream.
    #[error("JetStream stream {stream}: {reason} (is JetStream enabled on the server? start nats-server with -js)")]
    Stream {
        /// The stream name.
        stream: String,
        /// What the server said.
        reason: String,
    },
    /// JetStream refused to create or read the consumer.
    #[error("JetStream consumer {consumer} on {stream}: {reason}")]
    Consumer {
        /// The stream name.
        stream: String,
        /// The durable consumer name.
        consumer: String,
        /// What the server said.
        reason: String,
    },
}

/// Connects with the options every trace-agent component uses: a connection name, a bounded
/// connect timeout, endless reconnects, and disconnects logged.
pub async fn connect(url: &str, name: &str) -> Result<async_nats::Client, BusError> {
    connect_with(url, async_nats::ConnectOptions::new().name(name)).await
}

/// `connect` with credentials and TLS settings (see [`crate::auth::NatsAuth`]); invalid
/// settings are refused before any connection attempt, naming the key, and so is a URL with
/// credentials in it (`nats://user:pass@host`), which the client would ignore.
pub async fn connect_auth(
    url: &str,
    name: &str,
    auth: &crate::auth::NatsAuth,
) -> Result<async_nats::Client, BusError> {
    let options = auth.apply(async_nats::ConnectOptions::new().name(name))?;
    if crate::auth::redact_url(url) != url {
        // async-nats 0.51 drops them silently: the server would only say "authorization
        // violation", with the right password in hand
        return Err(BusError::Connect {
            url: crate::auth::redact_url(url),
            reason: "credentials in the URL are not used by the NATS client".to_owned(),
            hint: "give them with --nats-user/--nats-password or --nats-token (or the \
                   TRACE_AGENT_NATS_* variables, or the agent's [nats] section)"
                .to_owned(),
        });
    }
    connect_with(url, options).await
}

/// `connect` with caller-built options (auth, TLS, capacity).
pub async fn connect_with(
    url: &str,
    options: async_nats::ConnectOptions,
) -> Result<async_nats::Client, BusError> {
    options
        .connection_timeout(Duration::from_secs(5))
        .max_reconnects(None)
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Disconnected => tracing::warn!("disconnected from NATS"),
                async_nats::Event::Connected => tracing::info!("connected to NATS"),
                async_nats::Event::SlowConsumer(sid) => {
                    tracing::warn!(sid, "slow consumer: messages dropped client-side")
                }
                other => tracing::debug!(event = %other, "NATS event"),
            }
        })
        .connect(url)
        .await
        .map_err(|e| {
            use async_nats::ConnectErrorKind as K;
            let reason = e.to_string();
            let hint = match e.kind() {
                K::AuthorizationViolation | K::Authentication => {
                    "the server refused the credentials: check \
                     --nats-user/--nats-password, --nats-token, --nats-creds or --nats-nkey \
                     (TRACE_AGENT_NATS_* variables, or the agent's [nats] section)"
                }
                K::Tls => TLS_HINT,
                _ if looks_like_tls_failure(&reason) => TLS_HINT,
                _ => {
                    "is nats-server running there, with the credentials and TLS settings it \
                     needs? set --nats-url or TRACE_AGENT_NATS_URL"
                }
            };
            BusError::Connect {
                url: crate::auth::redact_url(url),
                reason,
                hint: hint.to_owned(),
            }
        })
}

const TLS_HINT: &str = "TLS failed: check --tls-ca (the CA the server's certificate chains \
     to), --tls-cert and --tls-key (a client certificate, if the server verifies clients), or \
     tls_ca, tls_cert, tls_key in [nats]; and that the server speaks TLS";

/// async-nats reports a failed TLS handshake (an untrusted server certificate, a client
/// certificate the server refused) as an I/O error; only its text tells.
fn looks_like_tls_failure(reason: &str) -> bool {
    let reason = reason.to_ascii_lowercase();
    ["certificate", "tls", "handshake", "fatal alert"]
        .iter()
        .any(|w| reason.contains(w))
}

/// The input stream: a file stream over the input subjects with age and size limits and a
/// duplicate window for `Nats-Msg-Id`.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamSpec {
    /// Stream name (default `TRACE_EVENTS`).
    pub name: String,
    /// Subjects it captures.
    pub subjects: Vec<String>,
    /// How long JetStream keeps messages (the backlog window if the agent is down).
    pub max_age: Duration,
    /// Most bytes JetStream keeps.
    pub max_bytes: i64,
    /// Window in which a repeated `Nats-Msg-Id` is dropped.
    pub duplicate_window: Duration,
    /// Copies JetStream keeps on a cluster (1 on a single server; 3 to survive the loss of a
    /// server). Applied when the stream is created; an existing stream keeps its own.
    pub replicas: usize,
}

impl StreamSpec {
    /// The defaults over these inputs: `TRACE_EVENTS`, 24 h, 1 GiB, 2 min duplicate window.
    pub fn over(inputs: &[InputSubject]) -> Self {
        StreamSpec {
            name: "TRACE_EVENTS".into(),
            subjects: inputs.iter().map(|i| i.subject.clone()).collect(),
            max_age: Duration::from_secs(24 * 3600),
            max_bytes: 1024 * 1024 * 1024,
            duplicate_window: Duration::from_secs(120),
            replicas: 1,
        }
    }
}

/// Creates the stream, or binds to an existing one and adds any missing subjects to it.
pub async fn ensure_stream(
    js: &jetstream::Context,
    spec: &StreamSpec,
) -> Result<stream::Stream, BusError> {
    let err = |reason: String| BusError::Stream {
        stream: spec.name.clone(),
        reason,
    };
    match js.get_stream(&spec.name).await {
        Ok(mut existing) => {
            let info = existing.info().await.map_err(|e| err(e.to_string()))?;
            let mut config = info.config.clone();
            if config.num_replicas != spec.replicas {
                tracing::warn!(stream = %spec.name, existing = config.num_replicas, configured = spec.replicas,
                    "the stream exists with another replica count; keeping it (change it with `nats stream edit`)");
            }
            let missing: Vec<String> = spec
                .subjects
                .iter()
                .filter(|s| !config.subjects.contains(s))
                .cloned()
                .collect();
            if !missing.is_empty() {
                tracing::info!(stream = %spec.name, ?missing, "adding subjects to the existing stream");
                config.subjects.extend(missing);
                js.update_stream(config)
                    .await
                    .map_err(|e| err(e.to_string()))?;
            }
            js.get_stream(&spec.name)
                .await
                .map_err(|e| err(e.to_string()))
        }
        Err(e) if is_stream_not_found(&e) => js
            .create_stream(stream::Config {
                name: spec.name.clone(),
                subjects: spec.subjects.clone(),
                storage: stream::StorageType::File,
                retention: stream::RetentionPolicy::Limits,
                max_age: spec.max_age,
                max_bytes: spec.max_bytes,
                duplicate_window: spec.duplicate_window,
                num_replicas: spec.replicas,
                discard: stream::DiscardPolicy::Old,
                ..Default::default()
            })
            .await
            .map_err(|e| err(e.to_string())),
        Err(e) => Err(err(e.to_string())),
    }
}

fn is_stream_not_found(e: &jetstream::context::GetStreamError) -> bool {
    matches!(
        e.kind(),
        jetstream::context::GetStreamErrorKind::JetStream(j)
            if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
    )
}

/// A durable pull consumer with explicit acks.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerSpec {
    /// Durable name (`trace-store` for the recorder).
    pub durable: String,
    /// Most messages in one batch.
    pub batch_size: usize,
    /// Longest wait for a batch to fill once its first message arrived.
    pub batch_wait: Duration,
    /// Most unacknowledged messages the server hands out (bounds memory in flight).
    pub max_ack_pending: i64,
    /// How long an unacked message waits before redelivery.
    pub ack_wait: Duration,
}

impl ConsumerSpec {
    /// Defaults for a durable name: batches of 1000 within 100 ms, 20,000 pending, 10 s ack
    /// wait (how long unacked messages of a crashed agent wait before redelivery).
    pub fn durable(name: &str) -> Self {
        ConsumerSpec {
            durable: name.to_owned(),
            batch_size: 1000,
            batch_wait: Duration::from_millis(100),
            max_ack_pending: 20_000,
            ack_wait: Duration::from_secs(10),
        }
    }
}

/// Creates or binds the durable consumer.
pub async fn durable_consumer(
    stream: &stream::Stream,
    spec: &ConsumerSpec,
) -> Result<consumer::PullConsumer, BusError> {
    let stream_name = stream.cached_info().config.name.clone();
    stream
        .get_or_create_consumer(
            &spec.durable,
            consumer::pull::Config {
                durable_name: Some(spec.durable.clone()),
                ack_policy: consumer::AckPolicy::Explicit,
                deliver_policy: consumer::DeliverPolicy::All,
                max_ack_pending: spec.max_ack_pending,
                ack_wait: spec.ack_wait,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| BusError::Consumer {
            stream: stream_name,
            consumer: spec.durable.clone(),
            reason: e.to_string(),
        })
}

/// Reads a pull consumer as batches: waits for a first message, then takes what follows
/// until the batch is full or `batch_wait` has passed.
pub struct BatchReader {
    messages: consumer::pull::Stream,
    batch_size: usize,
    batch_wait: Duration,
    /// The batch being filled and when it closes: kept here, not in `next_batch`'s future,
    /// so a caller that drops that future (a `select!` branch losing) loses no message.
    filling: Vec<jetstream::Message>,
    closes_at: Option<tokio::time::Instant>,
}

impl BatchReader {
    /// Starts pulling (the server is asked for up to `batch_size` messages at a time).
    pub async fn new(
        consumer: &consumer::PullConsumer,
        spec: &ConsumerSpec,
    ) -> Result<Self, BusError> {
        let messages = consumer
            .stream()
            .max_messages_per_batch(spec.batch_size)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .map_err(|e| BusError::Consumer {
                stream: String::new(),
                consumer: spec.durable.clone(),
                reason: e.to_string(),
            })?;
        Ok(BatchReader {
            messages,
            batch_size: spec.batch_size,
            batch_wait: spec.batch_wait,
            filling: Vec::new(),
            closes_at: None,
        })
    }

    /// The next batch (never empty), or `None` when the stream of messages ended. Transient
    /// errors (missed heartbeats while NATS is away) are logged and waited out.
    ///
    /// Cancel-safe: if the future is dropped before it completes (e.g. in `select!`), the
    /// messages taken so far stay in the reader and open the next call's batch; otherwise
    /// they would wait out `ack_wait` to be delivered again.
    pub async fn next_batch(&mut self) -> Option<Vec<jetstream::Message>> {
        let closes_at = match self.closes_at {
            Some(at) => at,
            None => {
                let first = loop {
                    match self.messages.next().await? {
                        Ok(m) => break m,
                        Err(e) => {
                            tracing::warn!(error = %e, "pull consumer error; retrying");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                };
                self.filling.push(first);
                let at = tokio::time::Instant::now() + self.batch_wait;
                self.closes_at = Some(at);
                at
            }
        };
        while self.filling.len() < self.batch_size {
            match tokio::time::timeout_at(closes_at, self.messages.next()).await {
                Ok(Some(Ok(m))) => self.filling.push(m),
                Ok(Some(Err(e))) => {
                    tracing::warn!(error = %e, "pull consumer error during a batch");
                    break;
                }
                Ok(None) | Err(_) => break,
            }
        }
        self.closes_at = None;
        Some(std::mem::take(&mut self.filling))
    }
}

impl BatchReader {
    /// Hands back (naks) the messages already delivered to this reader but not yet taken in a
    /// batch, so JetStream redelivers them at once instead of after `ack_wait`. Call on
    /// shutdown, after the last batch was acked. Returns how many were handed back.
    pub async fn release_buffered(&mut self) -> usize {
        use futures::FutureExt as _;
        let mut released = 0;
        self.closes_at = None;
        for m in std::mem::take(&mut self.filling) {
            if m.ack_with(jetstream::AckKind::Nak(None)).await.is_ok() {
                released += 1;
            }
        }
        while let Some(Some(item)) = self.messages.next().now_or_never() {
            if let Ok(m) = item {
                if m.ack_with(jetstream::AckKind::Nak(None)).await.is_ok() {
                    released += 1;
                }
            }
        }
        released
    }
}

/// Tells JetStream a batch is still being worked on (resets its `ack_wait`), e.g. while the
/// store refuses writes and the batch is retried.
pub async fn mark_in_progress(batch: &[jetstream::Message]) {
    for m in batch {
        let _ = m.ack_with(jetstream::AckKind::Progress).await;
    }
}

/// Where a JetStream message sits in its stream, and when the stream took it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamPosition {
    /// Stream sequence (0 when the message carries no JetStream metadata).
    pub seq: u64,
    /// When the stream stored it (now, without metadata).
    pub published: chrono::DateTime<chrono::Utc>,
}

impl StreamPosition {
    /// Reads the position from the message's JetStream metadata.
    pub fn of(msg: &jetstream::Message) -> Self {
        match msg.info() {
            Ok(info) => StreamPosition {
                seq: info.stream_sequence,
                published: chrono::DateTime::from_timestamp_nanos(
                    info.published.unix_timestamp_nanos() as i64,
                ),
            },
            Err(_) => StreamPosition {
                seq: 0,
                published: chrono::Utc::now(),
            },
        }
    }

    /// The message as the decoder sees it: received when the stream took it, and, for a
    /// message that carries no id, an id derived from its stream position, so every consumer
    /// (recorder, analytics) and every redelivery gives it the same one.
    pub fn incoming<'a>(&self, stream: &str, msg: &'a jetstream::Message) -> crate::Incoming<'a> {
        let key = format!("{stream}:{}", self.seq);
        crate::Incoming {
            subject: msg.subject.as_str(),
            payload: &msg.payload,
            received_at: self.published,
            fallback_id: Some(crate::EventId::derived(
                self.published.timestamp_millis().max(0) as u64,
                key.as_bytes(),
            )),
        }
    }
}

/// Acks every message (fire-and-forget acks; the server applies them in order). Returns how
/// many acks could not be sent (they will be redelivered and deduplicated).
pub async fn ack_all(batch: &[jetstream::Message]) -> usize {
    let mut failed = 0;
    for m in batch {
        if let Err(e) = m.ack().await {
            failed += 1;
            tracing::debug!(error = %e, "ack not sent");
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::looks_like_tls_failure;

    #[test]
    fn handshake_failures_reported_as_io_errors_are_recognised() {
        // what async-nats 0.51 says for an untrusted server and a refused client certificate
        assert!(looks_like_tls_failure(
            "IO error: invalid peer certificate: UnknownIssuer"
        ));
        assert!(looks_like_tls_failure(
            "IO error: received fatal alert: BadCertificate"
        ));
        assert!(!looks_like_tls_failure(
            "IO error: Connection refused (os error 111)"
        ));
        assert!(!looks_like_tls_failure(
            "authorization violation: nats: authorization violation"
        ));
    }
}
