//! The agent's configuration: a TOML file, then `TRACE_AGENT_*` environment variables, then
//! command-line flags, each layer overriding the one before. Everything is validated once, up
//! front, and a bad value is refused with the key, where it came from, and how to fix it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use trace_core::bus::{ConsumerSpec, StreamSpec};
use trace_core::human::format_duration;
use trace_core::human::{bytes_serde as human_bytes, duration_serde as human_duration};
use trace_core::subject::{default_inputs, validate_pattern};
use trace_core::{InputSubject, Limits};
use trace_monitor::{MonitorConfig, RuleConfig};
use trace_store::StoreConfig;

/// Subjects the agent publishes on and records itself.
pub const OWN_OUTPUTS: [&str; 2] = ["trace.alerts.>", "trace.anomalies.>"];

/// The whole configuration, as the file spells it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// This instance's name among agents sharing the bus (letters, digits, `-`, `_`); unset:
    /// generated once and kept in `<data_dir>/instance.id`.
    pub instance: Option<String>,
    /// NATS server URL.
    pub nats_url: String,
    /// NATS credentials and TLS (`[nats]`: user/password, token, nkey, creds file, CA, client
    /// certificate). Secrets are never logged.
    pub nats: trace_core::auth::NatsAuth,
    /// Where the store lives.
    pub data_dir: PathBuf,
    /// Subjects recorded and the kind of source on each.
    pub inputs: Vec<InputSubject>,
    /// The JetStream stream in front of the store.
    pub stream: StreamSection,
    /// The recording consumer.
    pub recorder: RecorderSection,
    /// Store layout and retention.
    pub store: StoreSection,
    /// Limits every incoming message is checked against.
    pub limits: Limits,
    /// The NATS micro service API.
    pub api: ApiSection,
    /// Metrics, health, HTTP endpoints and rule settings.
    pub monitor: MonitorConfig,
    /// Threshold rules (`[[rules]]`), merged with the built-in ones by name.
    pub rules: Vec<RuleConfig>,
    /// The live analytics driver.
    pub analytics: AnalyticsSection,
    /// Fields redacted or pseudonymised before anything is stored or analysed (`[privacy]`).
    pub privacy: trace_core::privacy::PrivacyConfig,
}

/// `[analytics]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnalyticsSection {
    /// Run the live analytics consumer.
    pub enabled: bool,
    /// Its durable consumer name.
    pub consumer: String,
    /// How often its state is checkpointed (and its messages acked).
    #[serde(with = "human_duration")]
    pub checkpoint_every: Duration,
    /// How often a stats summary is published on `trace.stats`.
    #[serde(with = "human_duration")]
    pub stats_every: Duration,
    /// Most stored events one `--since/--until` run reads.
    pub max_range_events: u64,
    /// The algorithms' settings (bounds, bucket width, detector), `[analytics.engine]`.
    pub engine: trace_analytics::AnalyticsConfig,
}

impl Default for AnalyticsSection {
    fn default() -> Self {
        AnalyticsSection {
            enabled: true,
            consumer: "trace-analytics".into(),
            checkpoint_every: Duration::from_secs(5),
            stats_every: Duration::from_secs(10),
            max_range_events: 20_000_000,
            engine: trace_analytics::AnalyticsConfig::default(),
        }
    }
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            instance: None,
            nats_url: "nats://127.0.0.1:4222".into(),
            nats: trace_core::auth::NatsAuth::default(),
            privacy: trace_core::privacy::PrivacyConfig::default(),
            data_dir: PathBuf::from("./trace-data"),
            inputs: default_inputs(),
            stream: StreamSection::default(),
            recorder: RecorderSection::default(),
            store: StoreSection::default(),
            limits: Limits::default(),
            api: ApiSection::default(),
            monitor: MonitorConfig::default(),
            rules: Vec::new(),
            analytics: AnalyticsSection::default(),
        }
    }
}

/// `[stream]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamSection {
    /// Stream name.
    pub name: String,
    /// How long JetStream keeps messages.
    #[serde(with = "human_duration")]
    pub max_age: Duration,
    /// Most bytes JetStream keeps.
    #[serde(with = "human_bytes")]
    pub max_bytes: u64,
    /// `Nats-Msg-Id` duplicate window.
    #[serde(with = "human_duration")]
    pub duplicate_window: Duration,
    /// JetStream replicas of the stream on a cluster (1 to 5; set when it is created).
    pub replicas: usize,
}

impl Default for StreamSection {
    fn default() -> Self {
        let d = StreamSpec::over(&[]);
        StreamSection {
            name: d.name,
            max_age: d.max_age,
            max_bytes: d.max_bytes as u64,
            duplicate_window: d.duplicate_window,
            replicas: d.replicas,
        }
    }
}

/// `[recorder]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecorderSection {
    /// Durable consumer name.
    pub consumer: String,
    /// Most messages per batch.
    pub batch_size: usize,
    /// Longest wait for a batch to fill.
    #[serde(with = "human_duration")]
    pub batch_wait: Duration,
    /// Most unacknowledged messages in flight.
    pub max_ack_pending: i64,
    /// Redelivery delay of unacked messages.
    #[serde(with = "human_duration")]
    pub ack_wait: Duration,
}

impl Default for RecorderSection {
    fn default() -> Self {
        let d = ConsumerSpec::durable("trace-store");
        RecorderSection {
            consumer: d.durable,
            batch_size: d.batch_size,
            batch_wait: d.batch_wait,
            max_ack_pending: d.max_ack_pending,
            ack_wait: d.ack_wait,
        }
    }
}

/// `[store]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSection {
    /// A segment takes writes this long.
    #[serde(with = "human_duration")]
    pub segment_window: Duration,
    /// A segment is sealed early at this size.
    #[serde(with = "human_bytes")]
    pub max_segment_bytes: u64,
    /// Sealed segments older than this are deleted.
    #[serde(with = "human_duration")]
    pub max_age: Duration,
    /// Disk budget of the store.
    #[serde(with = "human_bytes")]
    pub max_disk_bytes: u64,
    /// Events per block.
    pub block_events: usize,
    /// zstd level.
    pub compression_level: i32,
    /// sled cache of the active segment.
    #[serde(with = "human_bytes")]
    pub cache_bytes: u64,
    /// How often rotation and retention run.
    #[serde(with = "human_duration")]
    pub retention_interval: Duration,
}

impl Default for StoreSection {
    fn default() -> Self {
        let d = StoreConfig::default();
        StoreSection {
            segment_window: d.segment_window,
            max_segment_bytes: d.max_segment_bytes,
            max_age: d.max_age,
            max_disk_bytes: d.max_disk_bytes,
            block_events: d.block_events,
            compression_level: d.compression_level,
            cache_bytes: d.cache_bytes,
            retention_interval: Duration::from_secs(10),
        }
    }
}

/// `[api]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSection {
    /// Micro service name (what `nats micro ls` shows).
    pub name: String,
    /// Requests answered at once.
    pub concurrency: usize,
    /// The token destructive verbs (`verify` with repair) require; none set: they are
    /// refused. Give it in the file or as `TRACE_AGENT_API__ADMIN_TOKEN`; it is never logged.
    #[serde(skip_serializing)]
    pub admin_token: Option<String>,
}

impl Default for ApiSection {
    fn default() -> Self {
        ApiSection {
            name: "trace-agent".into(),
            concurrency: 16,
            admin_token: None,
        }
    }
}

/// Values given on the command line (the last layer).
#[derive(Debug, Clone, Default)]
pub struct FlagOverrides {
    /// `--nats-url`.
    pub nats_url: Option<String>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--http`.
    pub http_addr: Option<String>,
    /// `--nats-user`, `--tls-ca`, ...: `[nats]` keys with the flag that set them.
    pub nats: Vec<NatsFlag>,
}

/// One `[nats]` key set on the command line (or its `TRACE_AGENT_NATS_*`/`TRACE_AGENT_TLS_*`
/// variable, which clap reads into the flag).
#[derive(Clone)]
pub struct NatsFlag {
    /// The `[nats]` key (`user`, `password`, `tls_ca`, ...).
    pub key: &'static str,
    /// The flag, for error messages (`--nats-user`).
    pub flag: &'static str,
    /// The value.
    pub value: String,
}

impl std::fmt::Debug for NatsFlag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsFlag")
            .field("key", &self.key)
            .field("flag", &self.flag)
            .field("value", &"<redacted>")
            .finish()
    }
}

/// The CLI's single-underscore variables (`TRACE_AGENT_NATS_USER`, shared with the client
/// commands) and the `[nats]` key each one sets; `TRACE_AGENT_NATS__USER` works as well.
pub const NATS_ENV_ALIASES: [(&str, &str); 8] = [
    ("TRACE_AGENT_NATS_USER", "user"),
    ("TRACE_AGENT_NATS_PASSWORD", "password"),
    ("TRACE_AGENT_NATS_TOKEN", "token"),
    ("TRACE_AGENT_NATS_CREDS", "creds_file"),
    ("TRACE_AGENT_NATS_NKEY", "nkey_seed_file"),
    ("TRACE_AGENT_TLS_CA", "tls_ca"),
    ("TRACE_AGENT_TLS_CERT", "tls_cert"),
    ("TRACE_AGENT_TLS_KEY", "tls_key"),
];

/// Keys whose values are secrets: an error about one never quotes its value.
const SECRET_KEYS: [&str; 5] = [
    "nats.password",
    "nats.token",
    "nats.nkey_seed",
    "api.admin_token",
    "privacy.key",
];

/// Where a configuration value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origin {
    File(PathBuf),
    Env(String),
    Flag(&'static str),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::File(p) => write!(f, "in {}", p.display()),
            Origin::Env(v) => write!(f, "from environment variable {v}"),
            Origin::Flag(name) => write!(f, "from flag {name}"),
        }
    }
}

/// A configuration the agent refuses to start with.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl AgentConfig {
    /// Loads file < environment < flags and validates. `env` is the process environment
    /// (passed in so tests need not touch the real one).
    pub fn load(
        file: Option<&Path>,
        env: &BTreeMap<String, String>,
        flags: &FlagOverrides,
    ) -> Result<AgentConfig, ConfigError> {
        let mut table = toml::Table::new();
        let mut origins: BTreeMap<String, Origin> = BTreeMap::new();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError(format!("cannot read config file {}: {e}", path.display()))
            })?;
            table = toml::from_str(&text).map_err(|e| toml_error(path, &text, &e))?;
            let mut keys = Vec::new();
            collect_keys(&table, "", &mut keys);
            for k in keys {
                origins.insert(k, Origin::File(path.to_owned()));
            }
        }
        for (var, value) in env {
            let Some(rest) = var.strip_prefix("TRACE_AGENT_") else {
                continue;
            };
            if rest == "CONFIG" || rest == "LOG" {
                continue;
            }
            let path: Vec<String> = match NATS_ENV_ALIASES.iter().find(|(v, _)| v == var) {
                // secrets and paths are strings as given, never parsed as TOML
                Some((_, key)) => {
                    let path = vec!["nats".to_owned(), (*key).to_owned()];
                    set_path(&mut table, &path, toml::Value::String(value.clone()));
                    origins.insert(path.join("."), Origin::Env(var.clone()));
                    continue;
                }
                None => rest.split("__").map(|p| p.to_ascii_lowercase()).collect(),
            };
            // secrets are strings as given (a numeric password stays a string); `[nats]`
            // values are all strings but its one flag
            let value = match path.as_slice() {
                [section, key] if section == "nats" && key != "tls_required" => {
                    toml::Value::String(value.clone())
                }
                [section, key]
                    if (section == "privacy" && key == "key")
                        || (section == "api" && key == "admin_token") =>
                {
                    toml::Value::String(value.clone())
                }
                _ => env_value(value),
            };
            set_path(&mut table, &path, value);
            origins.insert(path.join("."), Origin::Env(var.clone()));
        }
        if let Some(url) = &flags.nats_url {
            table.insert("nats_url".into(), toml::Value::String(url.clone()));
            origins.insert("nats_url".into(), Origin::Flag("--nats-url"));
        }
        if let Some(dir) = &flags.data_dir {
            table.insert(
                "data_dir".into(),
                toml::Value::String(dir.to_string_lossy().into_owned()),
            );
            origins.insert("data_dir".into(), Origin::Flag("--data-dir"));
        }
        if let Some(addr) = &flags.http_addr {
            let monitor = table
                .entry("monitor")
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let toml::Value::Table(t) = monitor {
                t.insert("http_addr".into(), toml::Value::String(addr.clone()));
            }
            origins.insert("monitor.http_addr".into(), Origin::Flag("--http"));
        }
        for f in &flags.nats {
            let path = vec!["nats".to_owned(), f.key.to_owned()];
            set_path(&mut table, &path, toml::Value::String(f.value.clone()));
            origins.insert(path.join("."), Origin::Flag(f.flag));
        }
        let origin_of = |key: &str| {
            origins
                .iter()
                .filter(|(k, _)| {
                    key == k.as_str()
                        || key.starts_with(&format!("{k}."))
                        || k.starts_with(&format!("{key}."))
                })
                .map(|(_, o)| format!(" ({o})"))
                .next()
                .unwrap_or_default()
        };
        let config: AgentConfig = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| {
                let key = e.path().to_string();
                let key = if key == "." { String::new() } else { key };
                let inner = if SECRET_KEYS.contains(&key.as_str()) {
                    // serde quotes the value it refused ("invalid type: integer `1234`")
                    "must be a string (the value is not shown: it may be a secret)".to_owned()
                } else {
                    e.into_inner().to_string()
                };
                if key.is_empty() {
                    ConfigError(inner)
                } else {
                    ConfigError(format!("`{key}`{}: {inner}", origin_of(&key)))
                }
            })?;
        config
            .validate()
            .map_err(|(key, why)| ConfigError(format!("`{key}`{}: {why}", origin_of(&key))))?;
        Ok(config)
    }

    /// The compiled `[privacy]` policy; the error names the key.
    pub fn privacy_policy(&self) -> Result<trace_core::privacy::Privacy, (String, String)> {
        trace_core::privacy::Privacy::new(&self.privacy)
            .map_err(|(key, why)| (format!("privacy.{key}"), why))
    }

    /// Checks values that parse but cannot work; returns the key and the problem.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let url = self.nats_url.trim();
        let scheme_ok = ["nats://", "tls://", "ws://", "wss://"]
            .iter()
            .any(|s| url.starts_with(s))
            || !url.contains("://");
        if url.is_empty() || !scheme_ok {
            return Err((
                "nats_url".into(),
                format!(
                    "{:?} is not a NATS URL: use nats://HOST:PORT (or tls://, ws://, wss://)",
                    trace_core::auth::redact_url(url)
                ),
            ));
        }
        self.nats
            .validate()
            .map_err(|e| (format!("nats.{}", e.key), e.reason))?;
        self.privacy_policy()?;
        if !(1..=5).contains(&self.stream.replicas) {
            return Err((
                "stream.replicas".into(),
                format!(
                    "must be 1 to 5 (JetStream's limit), got {}",
                    self.stream.replicas
                ),
            ));
        }
        if let Some(name) = &self.instance {
            valid_instance_name(name).map_err(|why| ("instance".to_owned(), why))?;
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(("data_dir".into(), "must not be empty".into()));
        }
        if self.inputs.is_empty() {
            return Err((
                "inputs".into(),
                "at least one input subject is needed, e.g. [[inputs]] subject = \"game.agent.>\" kind = \"agent\"".into(),
            ));
        }
        for (i, input) in self.inputs.iter().enumerate() {
            validate_pattern(&input.subject)
                .map_err(|e| (format!("inputs[{i}].subject"), e.to_string()))?;
        }
        self.limits
            .validate()
            .map_err(|(k, why)| (format!("limits.{k}"), why))?;
        self.store_config().validate().map_err(|e| match e {
            trace_store::StoreError::Config { key, reason } => (format!("store.{key}"), reason),
            other => ("store".into(), other.to_string()),
        })?;
        if self.store.retention_interval < Duration::from_millis(100) {
            return Err((
                "store.retention_interval".into(),
                "must be at least 100ms".into(),
            ));
        }
        let r = &self.recorder;
        if !(1..=10_000).contains(&r.batch_size) {
            return Err((
                "recorder.batch_size".into(),
                format!("must be 1..=10000, got {}", r.batch_size),
            ));
        }
        if r.batch_wait.is_zero() || r.batch_wait > Duration::from_secs(10) {
            return Err((
                "recorder.batch_wait".into(),
                format!(
                    "must be between 1ms and 10s, got {}",
                    format_duration(r.batch_wait)
                ),
            ));
        }
        if r.max_ack_pending < r.batch_size as i64 {
            return Err((
                "recorder.max_ack_pending".into(),
                format!(
                    "must be at least recorder.batch_size ({}), got {}",
                    r.batch_size, r.max_ack_pending
                ),
            ));
        }
        if r.ack_wait < Duration::from_secs(1) {
            return Err(("recorder.ack_wait".into(), "must be at least 1s".into()));
        }
        if r.consumer.is_empty() || r.consumer.contains(['.', ' ', '*', '>']) {
            return Err((
                "recorder.consumer".into(),
                format!(
                    "{:?} is not a valid durable name (no dots, spaces or wildcards)",
                    r.consumer
                ),
            ));
        }
        if self.stream.name.is_empty() || self.stream.name.contains(['.', ' ', '*', '>']) {
            return Err((
                "stream.name".into(),
                format!(
                    "{:?} is not a valid stream name (no dots, spaces or wildcards)",
                    self.stream.name
                ),
            ));
        }
        if self.stream.max_bytes > i64::MAX as u64 {
            return Err(("stream.max_bytes".into(), "too large".into()));
        }
        self.monitor.validate().map_err(|e| match e {
            trace_monitor::MonitorError::InvalidConfig { setting, problem } => {
                (format!("monitor.{setting}"), problem)
            }
            other => ("monitor".into(), other.to_string()),
        })?;
        trace_monitor::compile_rules(&self.rules, self.monitor.builtin_rules).map_err(
            |e| match e {
                trace_monitor::MonitorError::InvalidRule { rule, problem } => {
                    (format!("rules[{rule}]"), problem)
                }
                other => ("rules".into(), other.to_string()),
            },
        )?;
        let a = &self.analytics;
        if a.consumer.is_empty()
            || a.consumer.contains(['.', ' ', '*', '>'])
            || a.consumer == r.consumer
        {
            return Err((
                "analytics.consumer".into(),
                format!(
                    "{:?} must be a valid durable name different from recorder.consumer",
                    a.consumer
                ),
            ));
        }
        if a.checkpoint_every < Duration::from_millis(100)
            || a.stats_every < Duration::from_millis(100)
        {
            return Err((
                "analytics.checkpoint_every".into(),
                "checkpoint_every and stats_every must be at least 100ms".into(),
            ));
        }
        if self.api.concurrency == 0 {
            return Err(("api.concurrency".into(), "must be at least 1".into()));
        }
        Ok(())
    }

    /// The store's configuration.
    pub fn store_config(&self) -> StoreConfig {
        StoreConfig {
            dir: self.data_dir.clone(),
            segment_window: self.store.segment_window,
            max_segment_bytes: self.store.max_segment_bytes,
            max_age: self.store.max_age,
            max_disk_bytes: self.store.max_disk_bytes,
            block_events: self.store.block_events,
            compression_level: self.store.compression_level,
            cache_bytes: self.store.cache_bytes,
            ..StoreConfig::default()
        }
    }

    /// What the recorder records: the configured inputs, then the agent's own outputs
    /// (`trace.alerts.>`, `trace.anomalies.>`), so alerts and anomalies are stored and
    /// queried like everything else.
    pub fn recorded_inputs(&self) -> Vec<InputSubject> {
        let mut inputs = self.inputs.clone();
        for subject in OWN_OUTPUTS {
            if !inputs.iter().any(|i| i.subject == subject) {
                inputs.push(InputSubject {
                    subject: subject.to_owned(),
                    kind: trace_core::SourceKind::System,
                });
            }
        }
        inputs
    }

    /// The input stream's spec.
    pub fn stream_spec(&self) -> StreamSpec {
        StreamSpec {
            name: self.stream.name.clone(),
            subjects: self
                .recorded_inputs()
                .iter()
                .map(|i| i.subject.clone())
                .collect(),
            max_age: self.stream.max_age,
            max_bytes: self.stream.max_bytes as i64,
            duplicate_window: self.stream.duplicate_window,
            replicas: self.stream.replicas,
        }
    }

    /// The analytics consumer's spec (the recorder's batching, its own durable name).
    /// Each instance analyses the whole stream, so its consumer is its own:
    /// `<analytics.consumer>-<instance>`.
    pub fn analytics_consumer_spec(&self, instance: &str) -> ConsumerSpec {
        ConsumerSpec {
            durable: format!("{}-{instance}", self.analytics.consumer),
            ..self.consumer_spec()
        }
    }

    /// The recording consumer's spec.
    pub fn consumer_spec(&self) -> ConsumerSpec {
        ConsumerSpec {
            durable: self.recorder.consumer.clone(),
            batch_size: self.recorder.batch_size,
            batch_wait: self.recorder.batch_wait,
            max_ack_pending: self.recorder.max_ack_pending,
            ack_wait: self.recorder.ack_wait,
        }
    }
}

/// An instance name is one NATS subject token and part of a consumer name.
pub fn valid_instance_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not an instance name: use 1 to 64 letters, digits, `-` or `_`"
        ))
    }
}

/// A TOML syntax error, with the offending line quoted unless it may hold a secret.
fn toml_error(path: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
    let line_at = |offset: usize| text[..offset.min(text.len())].matches('\n').count();
    let secret_line = e.span().is_some_and(|span| {
        let line = text.lines().nth(line_at(span.start)).unwrap_or("");
        let lower = line.to_ascii_lowercase();
        ["password", "token", "seed"]
            .iter()
            .any(|k| lower.contains(k))
    });
    match (secret_line, e.span()) {
        (true, Some(span)) => ConfigError(format!(
            "config file {} is not valid TOML: line {}: {} (the line is not shown: it may hold a secret)",
            path.display(),
            line_at(span.start) + 1,
            e.message()
        )),
        _ => ConfigError(format!(
            "config file {} is not valid TOML: {e}",
            path.display()
        )),
    }
}

fn collect_keys(table: &toml::Table, prefix: &str, out: &mut Vec<String>) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        if let toml::Value::Table(t) = v {
            collect_keys(t, &key, out);
        }
        out.push(key);
    }
}

/// An environment value: TOML when it parses as a value (numbers, booleans, arrays), else a
/// plain string.
fn env_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) {
    match path {
        [] => {}
        [last] => {
            table.insert(last.clone(), value);
        }
        [head, rest @ ..] => {
            let entry = table
                .entry(head.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if !entry.is_table() {
                *entry = toml::Value::Table(toml::Table::new());
            }
            if let toml::Value::Table(t) = entry {
                set_path(t, rest, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(
        text: &str,
        env: &[(&str, &str)],
        flags: FlagOverrides,
    ) -> Result<AgentConfig, ConfigError> {
        let dir = tempfile::tempdir().map_err(|e| ConfigError(e.to_string()))?;
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, text).map_err(|e| ConfigError(e.to_string()))?;
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        AgentConfig::load(Some(&path), &env, &flags)
    }

    #[test]
    fn bad_rules_and_monitor_settings_are_refused_by_name() {
        let e = load_str(
            "[[rules]]\nname = \"too_hot\"\nmetric = \"trace_agent_rss_bytes\"\nop = \"~\"\nvalue = 1\n",
            &[],
            FlagOverrides::default(),
        )
        .expect_err("bad op");
        assert!(e.to_string().contains("too_hot"), "{e}");
        let e = load_str(
            "",
            &[],
            FlagOverrides {
                http_addr: Some("nowhere".into()),
                ..FlagOverrides::default()
            },
        )
        .expect_err("bad address");
        assert!(
            e.to_string().contains("monitor.http_addr") && e.to_string().contains("--http"),
            "{e}"
        );
    }

    #[test]
    fn defaults_are_valid() {
        let c =
            AgentConfig::load(None, &BTreeMap::new(), &FlagOverrides::default()).expect("defaults");
        assert_eq!(c.nats_url, "nats://127.0.0.1:4222");
        assert_eq!(c.inputs.len(), 3);
    }

    #[test]
    fn layers_file_env_flags() {
        let c = load_str(
            "nats_url = \"nats://file:1\"\ndata_dir = \"/file\"\n[store]\nmax_age = \"2d\"\nblock_events = 100\n",
            &[("TRACE_AGENT_STORE__MAX_AGE", "3d"), ("TRACE_AGENT_DATA_DIR", "/env")],
            FlagOverrides { data_dir: Some("/flag".into()), ..FlagOverrides::default() },
        )
        .expect("valid");
        assert_eq!(c.nats_url, "nats://file:1");
        assert_eq!(c.data_dir, PathBuf::from("/flag"));
        assert_eq!(c.store.max_age, Duration::from_secs(3 * 86_400));
        assert_eq!(c.store.block_events, 100);
    }

    #[test]
    fn privacy_section_is_checked_and_its_key_stays_a_string() {
        let e = load_str(
            "[privacy]\npseudonymise = [\"player\"]\nkey = \"short\"\n",
            &[],
            FlagOverrides::default(),
        )
        .expect_err("short key");
        assert!(e.to_string().contains("privacy.key"), "{e}");
        assert!(!e.to_string().contains("\"short\""), "{e}");
        let e = load_str(
            "[privacy]\nredact = [\"email\"]\n",
            &[],
            FlagOverrides::default(),
        )
        .expect_err("bad path");
        assert!(e.to_string().contains("privacy.redact"), "{e}");
        // a numeric key from the environment is a string, not a TOML integer
        let c = load_str(
            "[privacy]\npseudonymise = [\"player\"]\n",
            &[("TRACE_AGENT_PRIVACY__KEY", "12345678901234567890")],
            FlagOverrides::default(),
        )
        .expect("valid");
        assert_eq!(c.privacy.key.as_deref(), Some("12345678901234567890"));
        assert!(!format!("{c:?}").contains("12345678901234567890"));
        assert!(c.privacy_policy().expect("policy").pseudonymises_player());
    }

    #[test]
    fn bad_values_name_the_key_and_origin() {
        let e = load_str(
            "[store]\nmax_age = \"soon\"\n",
            &[],
            FlagOverrides::default(),
        )
        .expect_err("bad");
        assert!(e.to_string().contains("store.max_age"), "{e}");
        assert!(e.to_string().contains("agent.toml"), "{e}");
        let e = load_str("colour = 1\n", &[], FlagOverrides::default()).expect_err("bad");
        assert!(e.to_string().contains("colour"), "{e}");
        let e = load_str(
            "[[inputs]]\nsubject = \"game..x\"\nkind = \"agent\"\n",
            &[],
            FlagOverrides::default(),
        )
        .expect_err("bad");
        assert!(e.to_string().contains("inputs[0].subject"), "{e}");
        let e = load_str(
            "[[inputs]]\nsubject = \"game.x\"\nkind = \"robot\"\n",
            &[],
            FlagOverrides::default(),
        )
        .expect_err("bad");
        assert!(e.to_string().contains("inputs[0].kind"), "{e}");
        let e = load_str(
            "",
            &[("TRACE_AGENT_RECORDER__BATCH_SIZE", "0")],
            FlagOverrides::default(),
        )
        .expect_err("bad");
        assert!(
            e.to_string().contains("recorder.batch_size")
                && e.to_string().contains("TRACE_AGENT_RECORDER__BATCH_SIZE"),
            "{e}"
        );
        let e = load_str(
            "",
            &[],
            FlagOverrides {
                nats_url: Some("http://x".into()),
                ..FlagOverrides::default()
            },
        )
        .expect_err("bad");
        assert!(
            e.to_string().contains("nats_url") && e.to_string().contains("--nats-url"),
            "{e}"
        );
        let e = load_str(
            "[store]\nmax_disk_bytes = \"lots\"\n",
            &[],
            FlagOverrides::default(),
        )
        .expect_err("bad");
        assert!(e.to_string().contains("store.max_disk_bytes"), "{e}");
    }
}
