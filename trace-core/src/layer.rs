//! `TraceLayer` (feature `nats`): a `tracing_subscriber::Layer` that turns the `tracing` events
//! and spans of any Rust service into trace entries through a [`TraceClient`], so a service
//! gets recorded by adding one layer.
//!
//! The mapping:
//!
//! | tracing | trace entry |
//! |---|---|
//! | event fields | `data` (the message is `data.message`); the fields of the enclosing spans are merged in as context (the event's own win) |
//! | field `event_type` or `type` (a string) | `type`; without one: `log.<level>` (`log.info`, `log.warn`, ...) |
//! | fields `player`, `session`, `category` (event or enclosing span) | the entry's `player`, `session`, `category` |
//! | fields named `metrics.<name>` with a number | `metrics.<name>` |
//! | level TRACE/DEBUG/INFO/WARN/ERROR | severity `trace`/`debug`/`info`/`warn`/`error` |
//! | target, module path, file, line | `meta.target`, `meta.module`, `meta.file`, `meta.line` |
//! | enclosing span | `parent` = the id of that span's entry |
//! | a span, when it closes | an entry of type `span.<name>`: `ts` = when it was created, `metrics.duration_ms` = wall time from creation to close, `metrics.busy_ms` = time spent entered, `data` = its fields, `parent` = the enclosing span's entry |
//!
//! A span's entry id is chosen when the span is created (kept in its extensions), so events
//! and child spans link to it before it is sent at close.
//!
//! The layer never blocks (it only buffers through [`TraceClient::log_entry`]) and never
//! recurses: events and spans whose target starts with `trace_core::client`,
//! `trace_core::bus` or `async_nats` (the client's and its connection's own logging) are
//! ignored, as is anything emitted while the layer is running on the same thread. More
//! prefixes can be ignored with [`TraceLayer::ignore_target`].

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rmpv::Value;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use crate::client::TraceClient;
use crate::entry::{Category, EventId, Severity, TraceEntry};

/// Targets never recorded: the client's own logging would feed back into it.
const ALWAYS_IGNORED: [&str; 3] = ["trace_core::client", "trace_core::bus", "async_nats"];

thread_local! {
    /// Set while the layer handles something on this thread.
    static IN_LAYER: Cell<bool> = const { Cell::new(false) };
}

/// Turns `tracing` events and spans into trace entries; see the [module docs](self) for the
/// mapping.
///
/// ```no_run
/// use tracing_subscriber::prelude::*;
/// use trace_core::client::TraceClient;
/// use trace_core::layer::TraceLayer;
/// use trace_core::SourceKind;
///
/// # async fn run() -> Result<(), trace_core::client::ClientError> {
/// let client = TraceClient::builder("nats://127.0.0.1:4222", "state-manager", SourceKind::State)
///     .connect()
///     .await?;
/// tracing_subscriber::registry()
///     .with(TraceLayer::new(client.clone()))
///     .init();
///
/// let span = tracing::info_span!("checkpoint", session = "s-7");
/// span.in_scope(|| {
///     tracing::info!(event_type = "state.changed", key = "door", "door opened");
/// });
/// drop(span); // the span's entry (`span.checkpoint`, with metrics.duration_ms) is sent here
/// client.flush().await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct TraceLayer {
    client: TraceClient,
    ignored_targets: Vec<String>,
}

impl TraceLayer {
    /// A layer logging through `client`.
    pub fn new(client: TraceClient) -> Self {
        TraceLayer {
            client,
            ignored_targets: Vec::new(),
        }
    }

    /// Also ignores events and spans whose target starts with `prefix`.
    pub fn ignore_target(mut self, prefix: impl Into<String>) -> Self {
        self.ignored_targets.push(prefix.into());
        self
    }

    fn ignored(&self, metadata: &Metadata<'_>) -> bool {
        let target = metadata.target();
        ALWAYS_IGNORED.iter().any(|p| target.starts_with(p))
            || self
                .ignored_targets
                .iter()
                .any(|p| target.starts_with(p.as_str()))
    }
}

/// Runs `f` unless the layer is already running on this thread.
fn guarded(f: impl FnOnce()) {
    let entered = IN_LAYER.with(|flag| !flag.replace(true));
    if entered {
        f();
        IN_LAYER.with(|flag| flag.set(false));
    }
}

/// What the layer keeps in a span's extensions.
struct SpanRecord {
    id: EventId,
    parent: Option<EventId>,
    created: DateTime<Utc>,
    created_at: Instant,
    fields: BTreeMap<String, Value>,
    busy: Duration,
    /// Nested enters of the span and when the outermost began.
    entered: u32,
    entered_at: Option<Instant>,
}

impl<S> Layer<S> for TraceLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if self.ignored(attrs.metadata()) {
            return;
        }
        guarded(|| {
            let Some(span) = ctx.span(id) else {
                return;
            };
            let mut fields = BTreeMap::new();
            attrs.record(&mut FieldVisitor(&mut fields));
            let parent = span
                .scope()
                .skip(1)
                .find_map(|ancestor| ancestor.extensions().get::<SpanRecord>().map(|r| r.id));
            let created = Utc::now();
            span.extensions_mut().insert(SpanRecord {
                id: EventId::new_at(created),
                parent,
                created,
                created_at: Instant::now(),
                fields,
                busy: Duration::ZERO,
                entered: 0,
                entered_at: None,
            });
        });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        guarded(|| {
            if let Some(span) = ctx.span(id) {
                if let Some(record) = span.extensions_mut().get_mut::<SpanRecord>() {
                    values.record(&mut FieldVisitor(&mut record.fields));
                }
            }
        });
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            if let Some(record) = span.extensions_mut().get_mut::<SpanRecord>() {
                if record.entered == 0 {
                    record.entered_at = Some(Instant::now());
                }
                record.entered += 1;
            }
        }
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            if let Some(record) = span.extensions_mut().get_mut::<SpanRecord>() {
                record.entered = record.entered.saturating_sub(1);
                if record.entered == 0 {
                    if let Some(at) = record.entered_at.take() {
                        record.busy += at.elapsed();
                    }
                }
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if self.ignored(event.metadata()) {
            return;
        }
        guarded(|| {
            let metadata = event.metadata();
            let mut fields = BTreeMap::new();
            event.record(&mut FieldVisitor(&mut fields));
            let event_type = take_string(&mut fields, "event_type")
                .or_else(|| take_string(&mut fields, "type"))
                .unwrap_or_else(|| format!("log.{}", severity_of(metadata.level())));
            let mut entry = self.client.new_entry(&event_type);
            entry.severity = severity_of(metadata.level());
            let mut parent = None;
            if let Some(scope) = ctx.event_scope(event) {
                for span in scope {
                    // Innermost first: the nearest span's value wins over outer ones.
                    if let Some(record) = span.extensions().get::<SpanRecord>() {
                        parent.get_or_insert(record.id);
                        for (k, v) in &record.fields {
                            fields.entry(k.clone()).or_insert_with(|| v.clone());
                        }
                    }
                }
            }
            entry.parent = take_string(&mut fields, "parent")
                .and_then(|p| p.parse().ok())
                .or(parent);
            fill_entry(&mut entry, fields, metadata);
            self.client.log_entry(entry);
        });
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        guarded(|| {
            let Some(span) = ctx.span(&id) else {
                return;
            };
            let Some(record) = span.extensions_mut().remove::<SpanRecord>() else {
                return;
            };
            let metadata = span.metadata();
            let mut fields = record.fields;
            for ancestor in span.scope().skip(1) {
                if let Some(outer) = ancestor.extensions().get::<SpanRecord>() {
                    for key in ["player", "session", "category"] {
                        if let Some(v) = outer.fields.get(key) {
                            fields.entry(key.to_owned()).or_insert_with(|| v.clone());
                        }
                    }
                }
            }
            let mut entry = self.client.new_entry(&format!("span.{}", metadata.name()));
            entry.id = record.id;
            entry.ts = record.created;
            entry.severity = severity_of(metadata.level());
            entry.parent = record.parent;
            let mut busy = record.busy;
            if let Some(at) = record.entered_at {
                busy += at.elapsed();
            }
            entry
                .metrics
                .insert("duration_ms".into(), millis(record.created_at.elapsed()));
            entry.metrics.insert("busy_ms".into(), millis(busy));
            fill_entry(&mut entry, fields, metadata);
            self.client.log_entry(entry);
        });
    }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `tracing`'s level as a severity.
pub fn severity_of(level: &Level) -> Severity {
    match *level {
        Level::TRACE => Severity::Trace,
        Level::DEBUG => Severity::Debug,
        Level::INFO => Severity::Info,
        Level::WARN => Severity::Warn,
        Level::ERROR => Severity::Error,
    }
}

fn take_string(fields: &mut BTreeMap<String, Value>, key: &str) -> Option<String> {
    match fields.remove(key) {
        Some(Value::String(s)) => s.into_str(),
        Some(other) => {
            // Not a string: leave it in the data as it was.
            fields.insert(key.to_owned(), other);
            None
        }
        None => None,
    }
}

/// Moves the well-known fields to their places, the rest to `data`, the callsite to `meta`.
fn fill_entry(
    entry: &mut TraceEntry,
    mut fields: BTreeMap<String, Value>,
    metadata: &Metadata<'_>,
) {
    if let Some(player) = take_string(&mut fields, "player") {
        entry.player = Some(player);
    }
    if let Some(session) = take_string(&mut fields, "session") {
        entry.session = Some(session);
    }
    if let Some(category) = take_string(&mut fields, "category") {
        entry.category = Category::parse(&category);
    }
    let metric_keys: Vec<String> = fields
        .keys()
        .filter(|k| k.starts_with("metrics."))
        .cloned()
        .collect();
    for key in metric_keys {
        let number = match fields.get(&key) {
            Some(Value::F64(f)) => Some(*f),
            Some(Value::F32(f)) => Some(f64::from(*f)),
            Some(Value::Integer(i)) => i.as_f64(),
            _ => None,
        };
        if let Some(number) = number.filter(|n| n.is_finite()) {
            fields.remove(&key);
            entry
                .metrics
                .insert(key["metrics.".len()..].to_owned(), number);
        }
    }
    if !fields.is_empty() {
        entry.data = Value::Map(
            fields
                .into_iter()
                .map(|(k, v)| (Value::from(k), v))
                .collect(),
        );
    }
    entry
        .meta
        .insert("target".into(), Value::from(metadata.target()));
    if let Some(module) = metadata.module_path() {
        entry.meta.insert("module".into(), Value::from(module));
    }
    if let Some(file) = metadata.file() {
        entry.meta.insert("file".into(), Value::from(file));
    }
    if let Some(line) = metadata.line() {
        entry.meta.insert("line".into(), Value::from(line));
    }
}

/// Records `tracing` fields as msgpack values.
struct FieldVisitor<'a>(&'a mut BTreeMap<String, Value>);

impl Visit for FieldVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .insert(field.name().to_owned(), Value::from(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), Value::from(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests;
