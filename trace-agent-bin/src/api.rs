//! The API: a NATS micro service (`nats micro ls` finds it) with one endpoint per verb on
//! `trace.api.<verb>`. Requests and replies are JSON or msgpack; a reply uses the request's
//! encoding (an empty body or one starting with `{` is JSON). Errors carry the standard
//! `Nats-Service-Error` / `Nats-Service-Error-Code` headers and a JSON `{"error": ...}` body.
//!
//! This module holds both sides: the service the agent runs and the client the CLI uses.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::service::ServiceExt;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Semaphore};
use trace_core::{EventId, Query, QueryPage, TraceEntry};
use trace_monitor::{AlertList, HealthStatus, Monitor, Sample, SourceActivity};
use trace_store::{QuarantineRecord, Store, StoreInfo};

use crate::recorder::{RecorderSnapshot, RecorderStats};

/// The subject prefix of every verb.
pub const API_PREFIX: &str = "trace.api";

/// Verbs served by this build.
pub const VERBS: &[&str] = &[
    "query",
    "get",
    "explain",
    "quarantine",
    "store_info",
    "health",
    "alerts",
    "metrics",
    "stats",
    "players",
    "patterns",
    "trends",
    "anomalies",
    "verify",
    "forget",
];

/// `get` and `explain` take an id.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IdRequest {
    /// The event id (ULID).
    pub id: String,
}

/// `explain` replies with the chain, the asked event first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExplainReply {
    /// The event, its parent, the parent's parent... up to the root.
    pub chain: Vec<TraceEntry>,
    /// True when the chain was cut to fit one reply.
    #[serde(default)]
    pub truncated: bool,
}

/// `quarantine` takes a limit.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct QuarantineRequest {
    /// Most records returned (default 100).
    pub limit: Option<usize>,
}

/// One quarantined message as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuarantineView {
    /// When it arrived.
    pub received_at: DateTime<Utc>,
    /// Its subject.
    pub subject: String,
    /// The broken rule.
    pub kind: String,
    /// Why it was refused.
    pub reason: String,
    /// Its stream position.
    pub stream_seq: Option<u64>,
    /// Payload size.
    pub raw_len: usize,
    /// The payload's first bytes, printable.
    pub preview: String,
    /// The payload hex-encoded, at most its first [`QUARANTINE_RAW_SHOWN`] bytes.
    pub raw_hex: String,
}

impl From<QuarantineRecord> for QuarantineView {
    fn from(r: QuarantineRecord) -> Self {
        QuarantineView {
            preview: r.preview(120),
            raw_len: r.raw.len(),
            raw_hex: r
                .raw
                .iter()
                .take(QUARANTINE_RAW_SHOWN)
                .map(|b| format!("{b:02x}"))
                .collect(),
            received_at: r.received_at,
            subject: r.subject,
            kind: r.kind,
            reason: r.reason,
            stream_seq: r.stream_seq,
        }
    }
}

/// `quarantine` reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QuarantineReply {
    /// How many are kept in all.
    pub total: u64,
    /// The newest ones.
    pub records: Vec<QuarantineView>,
}

/// `store_info` reply: the store's figures and the recorder's counters.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoreInfoReply {
    /// Store figures.
    #[serde(flatten)]
    pub store: StoreInfo,
    /// Ingest counters.
    pub recorder: RecorderSnapshot,
}

/// `metrics` reply: everything a live view needs in one answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MetricsReply {
    /// Every series, as rules see them.
    pub samples: Vec<Sample>,
    /// Each source's activity.
    pub sources: Vec<SourceActivity>,
    /// The health report.
    pub health: HealthStatus,
    /// Firing and recently resolved alerts.
    pub alerts: AlertList,
    /// The Prometheus text exposition of the same metrics.
    pub prometheus: String,
}

/// `verify` request: check every block; `repair` (destructive) needs the admin token.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct VerifyRequest {
    /// Remove corrupt blocks.
    pub repair: bool,
    /// The admin token (`[api] admin_token`).
    pub token: Option<String>,
}

/// `forget` request (destructive: needs the admin token).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ForgetRequest {
    /// The player to remove everywhere.
    pub player: String,
    /// The admin token (`[api] admin_token`).
    pub token: Option<String>,
}

/// `forget` reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForgetReply {
    /// The player.
    pub player: String,
    /// Stored events removed.
    pub events_removed: u64,
    /// Whether the live analytics held per-player state for them (now gone).
    pub analytics_state_removed: bool,
}

/// The analytics verbs, each answering one part of the analysis.
pub const ANALYTICS_VERBS: &[&str] = &["stats", "players", "patterns", "trends", "anomalies"];

/// Request of the analytics verbs. No field set: the live state (everything since the
/// analytics consumer started, checkpointed across restarts). Any field set: the same
/// algorithms run over the stored events in that range (`since` defaults to the oldest
/// stored event, `until` to now) that pass the filters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AnalyticsRequest {
    /// Start of the range (inclusive).
    pub since: Option<DateTime<Utc>>,
    /// End of the range (exclusive).
    pub until: Option<DateTime<Utc>>,
    /// Event type, exact or a `prefix.*`.
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    /// Source.
    pub source: Option<String>,
}

impl AnalyticsRequest {
    /// True when the live state answers.
    pub fn is_live(&self) -> bool {
        *self == AnalyticsRequest::default()
    }
}

/// Whether an answer is the live state or a run over a stored range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnalyticsScope {
    /// The live state.
    Live,
    /// A run over stored events.
    Range,
}

/// `stats` answers counts, rates, error rates and the metric percentiles together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsAndPerformance {
    /// Counts and rates.
    pub stats: trace_analytics::StatsReport,
    /// Percentiles of every metric per event type.
    pub performance: trace_analytics::PerformanceReport,
}

/// Reply of the analytics verbs: the scope, the range, how many events, and the part asked
/// for (`stats`: [`StatsAndPerformance`]; `players`: `PlayersReport`; `patterns`:
/// `PatternsReport`; `trends`: `TrendsReport`; `anomalies`: `AnomaliesReport`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalyticsReply<T> {
    /// Live state or stored range.
    pub scope: AnalyticsScope,
    /// The range analysed (for a range run).
    pub since: Option<DateTime<Utc>>,
    /// The range's end.
    pub until: Option<DateTime<Utc>>,
    /// Events analysed.
    pub events: u64,
    /// When the answer was made (the end of the rate windows).
    pub generated_at: DateTime<Utc>,
    /// The part asked for.
    pub report: T,
}

impl AnalyticsReply<()> {
    /// The same head with a report.
    fn with<T>(&self, report: T) -> AnalyticsReply<T> {
        AnalyticsReply {
            scope: self.scope,
            since: self.since,
            until: self.until,
            events: self.events,
            generated_at: self.generated_at,
            report,
        }
    }
}

/// An API failure: a code (HTTP-like) and a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (code {code})")]
pub struct ApiError {
    /// 400 bad request, 404 not found, 500 internal, 503 unavailable.
    pub code: usize,
    /// What went wrong.
    pub message: String,
}

impl ApiError {
    fn bad_request(m: impl Into<String>) -> Self {
        ApiError {
            code: 400,
            message: m.into(),
        }
    }
    fn internal(m: impl std::fmt::Display) -> Self {
        ApiError {
            code: 500,
            message: m.to_string(),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Json,
    Msgpack,
}

fn encoding_of(body: &[u8]) -> Encoding {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        None | Some(b'{') => Encoding::Json,
        Some(_) => Encoding::Msgpack,
    }
}

fn decode_request<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    match encoding_of(body) {
        Encoding::Json => serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("request is not valid JSON for this verb: {e}"))
        }),
        Encoding::Msgpack => rmp_serde::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("request is not valid msgpack for this verb: {e}"))
        }),
    }
}

fn encode_reply<T: Serialize>(value: &T, enc: Encoding) -> Result<Bytes, ApiError> {
    match enc {
        Encoding::Json => serde_json::to_vec(value)
            .map(Bytes::from)
            .map_err(ApiError::internal),
        Encoding::Msgpack => rmp_serde::to_vec_named(value)
            .map(Bytes::from)
            .map_err(ApiError::internal),
    }
}

/// What the API answers from.
pub struct ApiState {
    /// The store.
    pub store: Arc<Store>,
    /// The recorder's counters.
    pub recorder: Arc<RecorderStats>,
    /// Metrics, alerts and health.
    pub monitor: Arc<Monitor>,
    /// The live analytics state.
    pub live: crate::analytics::LiveAnalyzer,
    /// Analytics settings (for runs over stored ranges).
    pub analytics: crate::config::AnalyticsSection,
    /// The token destructive verbs require (none: refused).
    pub admin_token: Option<String>,
    /// The `[privacy]` policy: `forget` looks a pseudonymised player up by its pseudonym.
    pub privacy: trace_core::privacy::Privacy,
    /// Most bytes one reply may take: a little under the server's `max_payload`, so a page
    /// is cut short (with a cursor to the rest) rather than never sent.
    pub reply_budget: usize,
}

/// Quarantine listings show at most this many bytes of each payload (`raw_len` is the size).
pub const QUARANTINE_RAW_SHOWN: usize = 4096;

/// Compares without an early exit, so timing does not reveal how much of a token matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The reply budget for a server that accepts `max_payload` bytes.
pub fn reply_budget(max_payload: usize) -> usize {
    (max_payload / 10 * 9).saturating_sub(4096).max(16 * 1024)
}

fn encoded_len<T: Serialize>(value: &T, enc: Encoding) -> usize {
    match enc {
        Encoding::Json => serde_json::to_vec(value).map_or(0, |v| v.len()),
        Encoding::Msgpack => rmp_serde::to_vec_named(value).map_or(0, |v| v.len()),
    }
}

/// How many of `items`, taken from the front, fit in `budget` bytes (at least one, so a
/// reply always makes progress).
fn fitting<T: Serialize>(items: &[T], enc: Encoding, budget: usize) -> usize {
    let mut total = 256;
    for (i, item) in items.iter().enumerate() {
        total += encoded_len(item, enc) + 1;
        if total > budget {
            return i.max(1);
        }
    }
    items.len()
}

impl ApiState {
    /// Answers one request of `verb`; blocking store work runs off the async threads.
    async fn answer(self: &Arc<Self>, verb: &str, body: Bytes) -> Result<Bytes, ApiError> {
        let enc = encoding_of(&body);
        let state = self.clone();
        let verb = verb.to_owned();
        tokio::task::spawn_blocking(move || state.answer_blocking(&verb, &body, enc))
            .await
            .map_err(ApiError::internal)?
    }

    fn answer_blocking(&self, verb: &str, body: &[u8], enc: Encoding) -> Result<Bytes, ApiError> {
        let parse_id = |body: &[u8]| -> Result<EventId, ApiError> {
            let req: IdRequest = decode_request(body)?;
            if req.id.is_empty() {
                return Err(ApiError::bad_request("missing `id`"));
            }
            req.id
                .parse()
                .map_err(|e: trace_core::FieldError| ApiError::bad_request(e.to_string()))
        };
        match verb {
            "query" => {
                let q: Query = decode_request(body)?;
                let mut page: QueryPage = self.store.query(&q).map_err(ApiError::internal)?;
                let keep = fitting(&page.entries, enc, self.reply_budget);
                if keep < page.entries.len() {
                    page.entries.truncate(keep);
                    page.next_cursor = page.entries.last().map(trace_core::Cursor::after);
                }
                encode_reply(&page, enc)
            }
            "get" => {
                let id = parse_id(body)?;
                match self.store.get(&id).map_err(ApiError::internal)? {
                    Some(e) => encode_reply(&e, enc),
                    None => Err(ApiError {
                        code: 404,
                        message: format!("no event with id {id}"),
                    }),
                }
            }
            "explain" => {
                let id = parse_id(body)?;
                let chain = self.store.explain(&id).map_err(|e| match e {
                    trace_store::StoreError::NotFound(m) => ApiError {
                        code: 404,
                        message: format!("no event with id {m}"),
                    },
                    other => ApiError::internal(other),
                })?;
                let mut chain = chain;
                let keep = fitting(&chain, enc, self.reply_budget);
                let truncated = keep < chain.len();
                chain.truncate(keep);
                encode_reply(&ExplainReply { chain, truncated }, enc)
            }
            "quarantine" => {
                let req: QuarantineRequest = decode_request(body)?;
                let (total, records) = self
                    .store
                    .quarantine(req.limit.unwrap_or(100))
                    .map_err(ApiError::internal)?;
                let mut records: Vec<QuarantineView> =
                    records.into_iter().map(Into::into).collect();
                let keep = fitting(&records, enc, self.reply_budget);
                records.truncate(keep);
                encode_reply(&QuarantineReply { total, records }, enc)
            }
            "store_info" => {
                let reply = StoreInfoReply {
                    store: self.store.info(),
                    recorder: self.recorder.snapshot(),
                };
                encode_reply(&reply, enc)
            }
            verb if ANALYTICS_VERBS.contains(&verb) => {
                let req: AnalyticsRequest = decode_request(body)?;
                self.analytics_answer(verb, &req, enc)
            }
            "verify" => {
                let req: VerifyRequest = decode_request(body)?;
                if req.repair && !self.admin_allowed(req.token.as_deref()) {
                    return Err(ApiError {
                        code: 403,
                        message: "verify --repair is refused: set [api] admin_token on the agent and pass it with --token".into(),
                    });
                }
                encode_reply(
                    &self.store.verify(req.repair).map_err(ApiError::internal)?,
                    enc,
                )
            }
            "forget" => {
                let req: ForgetRequest = decode_request(body)?;
                if !self.admin_allowed(req.token.as_deref()) {
                    return Err(ApiError {
                        code: 403,
                        message: "forget is refused: set [api] admin_token on the agent and pass it with --token".into(),
                    });
                }
                if req.player.is_empty() {
                    return Err(ApiError::bad_request("missing `player`"));
                }
                // players are stored under their pseudonym when `player` is pseudonymised;
                // the caller may give either the real id or the pseudonym itself
                let stored_as = if self.privacy.pseudonymises_player()
                    && !self.privacy.is_pseudonym(&req.player)
                {
                    self.privacy.pseudonym(&req.player)
                } else {
                    req.player.clone()
                };
                let events_removed = self
                    .store
                    .forget_player(&stored_as)
                    .map_err(ApiError::internal)?;
                let analytics_state_removed =
                    crate::analytics::lock(&self.live).forget_player(&stored_as);
                tracing::info!(
                    events_removed,
                    analytics_state_removed,
                    "a player was forgotten"
                );
                encode_reply(
                    &ForgetReply {
                        player: req.player,
                        events_removed,
                        analytics_state_removed,
                    },
                    enc,
                )
            }
            "health" => encode_reply(&self.monitor.health(Utc::now()), enc),
            "alerts" => encode_reply(&self.monitor.alerts(), enc),
            "metrics" => {
                let now = Utc::now();
                let prometheus = self
                    .monitor
                    .prometheus_text(now)
                    .map_err(ApiError::internal)?;
                let reply = MetricsReply {
                    samples: self.monitor.metrics().samples(),
                    sources: self.monitor.metrics().sources(),
                    health: self.monitor.health(now),
                    alerts: self.monitor.alerts(),
                    prometheus,
                };
                encode_reply(&reply, enc)
            }
            other => Err(ApiError::bad_request(format!("unknown verb {other}"))),
        }
    }
}

impl ApiState {
    /// Whether `token` is the configured admin token (no token configured: never).
    fn admin_allowed(&self, token: Option<&str>) -> bool {
        match (&self.admin_token, token) {
            (Some(want), Some(got)) => constant_time_eq(want.as_bytes(), got.as_bytes()),
            _ => false,
        }
    }

    /// The live state, or the same algorithms over the stored events the request selects.
    fn analytics_answer(
        &self,
        verb: &str,
        req: &AnalyticsRequest,
        enc: Encoding,
    ) -> Result<Bytes, ApiError> {
        let now = Utc::now();
        let (scope, report) = if req.is_live() {
            let live = crate::analytics::lock(&self.live);
            (AnalyticsScope::Live, live.report(now))
        } else {
            if let (Some(s), Some(u)) = (req.since, req.until) {
                if s >= u {
                    return Err(ApiError::bad_request(format!(
                        "since ({s}) must be before until ({u})"
                    )));
                }
            }
            let q = Query {
                since: req.since,
                until: req.until,
                event_type: req.event_type.clone(),
                source: req.source.clone(),
                ..Query::default()
            };
            let mut analyzer = trace_analytics::Analyzer::new(self.analytics.engine.clone());
            let cap = self.analytics.max_range_events;
            let mut seen = 0u64;
            self.store
                .scan(&q, |e| {
                    observe_stored(&mut analyzer, &e);
                    seen += 1;
                    if seen >= cap {
                        std::ops::ControlFlow::Break(())
                    } else {
                        std::ops::ControlFlow::Continue(())
                    }
                })
                .map_err(ApiError::internal)?;
            let end = req.until.unwrap_or(now).min(now);
            analyzer.advance_to(end);
            (AnalyticsScope::Range, analyzer.report(end))
        };
        encode_reply(&analytics_reply(verb, scope, req, report)?, enc)
    }
}

/// The answer of the analytics `verb` for `report`: the head (scope, range, events) and the
/// part asked for, as the API sends it.
pub fn analytics_reply(
    verb: &str,
    scope: AnalyticsScope,
    req: &AnalyticsRequest,
    report: trace_analytics::AnalyticsReport,
) -> Result<serde_json::Value, ApiError> {
    let head = AnalyticsReply {
        scope,
        since: req.since,
        until: req.until,
        events: report.events,
        generated_at: report.generated_at,
        report: (),
    };
    let value = match verb {
        "stats" => serde_json::to_value(head.with(StatsAndPerformance {
            stats: report.stats,
            performance: report.performance,
        })),
        "players" => serde_json::to_value(head.with(report.players)),
        "patterns" => serde_json::to_value(head.with(report.patterns)),
        "trends" => serde_json::to_value(head.with(report.trends)),
        "anomalies" => serde_json::to_value(head.with(report.anomalies)),
        other => {
            return Err(ApiError::bad_request(format!(
                "unknown analytics verb {other}"
            )))
        }
    };
    value.map_err(ApiError::internal)
}

/// Feeds one stored entry to a range analysis; the agent's own outputs (`trace.*`) are not
/// analysed, live or over a range.
pub fn observe_stored(analyzer: &mut trace_analytics::Analyzer, e: &TraceEntry) {
    if !e.event_type.starts_with("trace.") {
        analyzer.observe(e);
    }
}

/// Serves the API until `shutdown`; at most `concurrency` requests are answered at once.
pub async fn serve(
    client: async_nats::Client,
    name: &str,
    instance: &str,
    state: Arc<ApiState>,
    concurrency: usize,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let service = client
        .service_builder()
        .description("trace-agent: recorded game events, queries and analytics")
        .metadata([(INSTANCE_META.to_owned(), instance.to_owned())].into())
        .start(name, env!("CARGO_PKG_VERSION"))
        .await
        .map_err(|e| anyhow::anyhow!("starting the micro service {name}: {e}"))?;
    // every verb twice: on the shared subjects (one instance of the queue group answers) and
    // on this instance's own, for scatter-gather over all instances
    let shared = service.group(API_PREFIX);
    let own_prefix = instance_prefix(instance);
    let own = service.group_with_queue_group(&own_prefix, format!("i-{instance}"));
    let limit = Arc::new(Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    let endpoints = VERBS
        .iter()
        .map(|verb| (&shared, API_PREFIX, (*verb).to_owned(), *verb))
        .chain(
            VERBS
                .iter()
                .map(|verb| (&own, own_prefix.as_str(), format!("{verb}-own"), *verb)),
        );
    for (group, prefix, endpoint_name, verb) in endpoints {
        let mut endpoint = group
            .endpoint_builder()
            .name(endpoint_name)
            .add(verb)
            .await
            .map_err(|e| anyhow::anyhow!("adding endpoint {prefix}.{verb}: {e}"))?;
        let (state, limit, verb) = (state.clone(), limit.clone(), (*verb).to_owned());
        tasks.spawn(async move {
            while let Some(request) = endpoint.next().await {
                let Ok(permit) = limit.clone().acquire_owned().await else {
                    break;
                };
                let state = state.clone();
                let verb = verb.clone();
                tokio::spawn(async move {
                    let reply = state.answer(&verb, request.message.payload.clone()).await;
                    let sent = match reply {
                        Ok(body) => request.respond(Ok(body)).await,
                        Err(err) => {
                            // the standard error headers, plus a JSON body that says the same
                            let mut headers = async_nats::HeaderMap::new();
                            headers.insert("Nats-Service-Error", err.message.as_str());
                            headers
                                .insert("Nats-Service-Error-Code", err.code.to_string().as_str());
                            let body =
                                serde_json::json!({ "error": err.message, "code": err.code })
                                    .to_string();
                            request.respond_with_headers(Ok(body.into()), headers).await
                        }
                    };
                    if let Err(e) = sent {
                        tracing::warn!(error = %e, verb = %verb, "API reply not sent; answering with an error");
                        let mut headers = async_nats::HeaderMap::new();
                        let message = format!("the reply could not be sent: {e}");
                        headers.insert("Nats-Service-Error", message.as_str());
                        headers.insert("Nats-Service-Error-Code", "500");
                        let body = serde_json::json!({ "error": message, "code": 500 }).to_string();
                        let _ = request.respond_with_headers(Ok(body.into()), headers).await;
                    }
                    drop(permit);
                });
            }
        });
    }
    tracing::info!(service = name, instance, subjects = %format!("{API_PREFIX}.{{{}}} and {own_prefix}.*", VERBS.join(",")), "API serving");
    let _ = shutdown.changed().await;
    tasks.abort_all();
    service
        .stop()
        .await
        .map_err(|e| anyhow::anyhow!("stopping the micro service: {e}"))?;
    Ok(())
}

/// How long discovery waits for one more instance after the last reply.
pub const DISCOVERY_QUIET: Duration = Duration::from_millis(250);

/// The micro service metadata key holding the instance name.
pub const INSTANCE_META: &str = "trace_instance";

/// Where one instance's own endpoints are: `trace.api.i.<instance>.<verb>`, next to the
/// shared `trace.api.<verb>` that any one instance answers.
pub fn instance_prefix(instance: &str) -> String {
    format!("{API_PREFIX}.i.{instance}")
}

/// The part of a discovery (`$SRV.PING`) reply this CLI reads.
#[derive(Debug, Deserialize)]
struct ServicePing {
    #[serde(default)]
    metadata: std::collections::HashMap<String, String>,
}

/// The CLI's side: requests to a running agent.
pub struct ApiClient {
    client: async_nats::Client,
    timeout: Duration,
    url: String,
}

impl ApiClient {
    /// Connects to NATS at `url` with `auth`'s credentials and TLS.
    pub async fn connect(
        url: &str,
        auth: &trace_core::auth::NatsAuth,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let client = trace_core::bus::connect_auth(url, "trace-agent-cli", auth).await?;
        Ok(ApiClient {
            client,
            timeout,
            url: url.to_owned(),
        })
    }

    /// Sends `req` to `trace.api.<verb>` (whichever instance takes it) as JSON and decodes the
    /// JSON reply.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        verb: &str,
        req: &Req,
    ) -> anyhow::Result<Resp> {
        self.call_subject(format!("{API_PREFIX}.{verb}"), req).await
    }

    /// The agent instances answering on this bus, by name, found through the micro service
    /// discovery (`$SRV.PING`): every reply that arrives while the replies keep coming
    /// (`DISCOVERY_QUIET` after the last one), within the timeout.
    pub async fn instances(&self) -> anyhow::Result<Vec<String>> {
        let inbox = self.client.new_inbox();
        let mut replies = self
            .client
            .subscribe(inbox.clone())
            .await
            .context("subscribing to the discovery replies")?;
        self.client
            .publish_with_reply("$SRV.PING", inbox, Bytes::new())
            .await
            .context("sending the discovery ping")?;
        self.client
            .flush()
            .await
            .context("sending the discovery ping")?;
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut names = Vec::new();
        loop {
            // the first reply may take up to the timeout, later ones come close together
            let wait = if names.is_empty() {
                deadline
            } else {
                (tokio::time::Instant::now() + DISCOVERY_QUIET).min(deadline)
            };
            match tokio::time::timeout_at(wait, replies.next()).await {
                Ok(Some(msg)) => {
                    if let Ok(ping) = serde_json::from_slice::<ServicePing>(&msg.payload) {
                        if let Some(name) = ping.metadata.get(INSTANCE_META) {
                            names.push(name.clone());
                        }
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Sends `req` to every instance in `instances` at once; each answer (or why there is
    /// none) by instance, within the timeout.
    pub async fn gather<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        instances: &[String],
        verb: &str,
        req: &Req,
    ) -> Vec<(String, anyhow::Result<Resp>)> {
        let calls = instances.iter().map(|name| async move {
            let subject = format!("{}.{verb}", instance_prefix(name));
            (name.clone(), self.call_subject(subject, req).await)
        });
        futures::future::join_all(calls).await
    }

    async fn call_subject<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        subject: String,
        req: &Req,
    ) -> anyhow::Result<Resp> {
        let body = serde_json::to_vec(req)?;
        let reply = tokio::time::timeout(
            self.timeout,
            self.client.request(subject.clone(), body.into()),
        )
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "no answer on {subject} within {:?}: is `trace-agent run` running against {}?",
                self.timeout,
                self.url
            )
        })?
        .map_err(|e| match e.kind() {
            async_nats::client::RequestErrorKind::NoResponders => anyhow::anyhow!(
                "no trace-agent answers on {subject} at {}: start one with `trace-agent run`",
                self.url
            ),
            _ => anyhow::anyhow!("request on {subject}: {e}"),
        })?;
        if let Some(headers) = &reply.headers {
            if let Some(code) = headers.get("Nats-Service-Error-Code") {
                let message = headers
                    .get("Nats-Service-Error")
                    .map(|v| v.to_string())
                    .unwrap_or_default();
                anyhow::bail!("{message} (code {code})");
            }
        }
        serde_json::from_slice(&reply.payload)
            .with_context(|| format!("reply on {subject} is not what this CLI expects"))
    }
}
