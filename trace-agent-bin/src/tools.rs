//! The everyday commands around the bus and the store: `tail` (follow new events), `emit`
//! (publish one event from a shell), `export` (a time range to a JSON Lines or msgpack file)
//! and `import` (a file back into the bus or straight into a store directory, idempotent by id).

use std::io::{BufRead, BufReader, BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use async_nats::jetstream;
use clap::Args;
use futures::StreamExt;
use trace_core::codec::json_to_value;
use trace_core::query::MAX_PAGE;
use trace_core::subject::publish_subject;
use trace_core::{
    decode_stored_entry, encode_entry_vec, Category, Decoder, EventId, Incoming, Order, Severity,
    SourceKind, SubjectScheme, TraceEntry,
};

use crate::cli::QueryArgs;
use crate::output::clip;

/// `tail` flags: the filters of `query` (time filters excepted) and the stream to follow.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// Filters, connection and output (`--since`/`--until`/`--limit` do not apply).
    #[command(flatten)]
    pub filter: QueryArgs,
    /// The JetStream stream the agent records from.
    #[arg(long, default_value = "TRACE_EVENTS")]
    pub stream: String,
    /// Stop after this many events (default: follow until Ctrl-C).
    #[arg(long)]
    pub count: Option<u64>,
}

/// Follows events published after it starts, with `query`'s filters: coloured lines on a
/// terminal, JSON Lines with `--json`. Reads an ordered ephemeral consumer of the agent's input
/// stream, so it sees exactly what the agent records, and never falls behind silently.
pub async fn tail(args: &TailArgs) -> anyhow::Result<()> {
    let mut q = args.filter.to_query()?;
    q.since = None;
    q.until = None;
    let conn = &args.filter.conn;
    let client = conn
        .auth
        .connect(&conn.nats_url, "trace-agent-tail")
        .await?;
    let js = jetstream::new(client);
    let stream = js.get_stream(&args.stream).await.with_context(|| {
        format!(
            "stream {} not found at {}: is `trace-agent run` running there?",
            args.stream, conn.nats_url
        )
    })?;
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            deliver_policy: jetstream::consumer::DeliverPolicy::New,
            ..Default::default()
        })
        .await
        .context("creating the tail consumer")?;
    let mut messages = consumer.messages().await.context("following the stream")?;
    let decoder = Decoder::new(trace_core::Limits::default(), SubjectScheme::default());
    let colour = !conn.json && std::io::stdout().is_terminal();
    let mut shown = 0u64;
    let unfiltered = q.event_type.is_none()
        && q.source.is_none()
        && q.category.is_none()
        && q.severity.is_none()
        && q.player.is_none()
        && q.session.is_none();
    eprintln!(
        "following {} on {} (Ctrl-C to stop)",
        args.stream, conn.nats_url
    );
    loop {
        let next = tokio::select! {
            m = messages.next() => m,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let Some(msg) = next else {
            bail!("the stream ended")
        };
        let msg = msg.context("reading the stream")?;
        let received_at = msg
            .info()
            .map(|i| {
                chrono::DateTime::from_timestamp_nanos(i.published.unix_timestamp_nanos() as i64)
            })
            .unwrap_or_else(|_| chrono::Utc::now());
        let incoming = Incoming {
            subject: msg.subject.as_str(),
            payload: &msg.payload,
            received_at,
            fallback_id: None,
        };
        let line = match decoder.decode(&incoming) {
            Ok(entry) if q.matches(&entry) => {
                if conn.json {
                    serde_json::to_string(&entry)?
                } else {
                    entry_line(&entry, colour)
                }
            }
            Ok(_) => continue,
            // without filters, a refused message is shown too (it will be quarantined)
            Err(e) if unfiltered && !conn.json => {
                format!(
                    "{}  quarantined  {}  {}",
                    received_at.format("%H:%M:%S%.3f"),
                    msg.subject,
                    e
                )
            }
            Err(_) => continue,
        };
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()?;
        shown += 1;
        if args.count.is_some_and(|c| shown >= c) {
            return Ok(());
        }
    }
}

fn entry_line(e: &TraceEntry, colour: bool) -> String {
    let (on, off) = if colour {
        let code = match e.severity {
            Severity::Trace | Severity::Debug => "\x1b[2m",
            Severity::Info => "\x1b[0m",
            Severity::Warn => "\x1b[33m",
            Severity::Error => "\x1b[31m",
            Severity::Critical => "\x1b[1;31m",
        };
        (code, "\x1b[0m")
    } else {
        ("", "")
    };
    let data = if e.data.is_nil() {
        String::new()
    } else {
        serde_json::to_string(&e.data).unwrap_or_default()
    };
    let who = match (&e.player, &e.session) {
        (Some(p), Some(s)) => format!(" player={p} session={s}"),
        (Some(p), None) => format!(" player={p}"),
        (None, Some(s)) => format!(" session={s}"),
        (None, None) => String::new(),
    };
    format!(
        "{on}{} {:<8} {:<16} {}{who} {}{off}",
        e.ts.format("%H:%M:%S%.3f"),
        e.severity.as_str(),
        clip(&e.source, 16),
        e.event_type,
        clip(&data, 100)
    )
}

/// `emit` flags.
#[derive(Debug, Args)]
pub struct EmitArgs {
    /// Event type (dotted, e.g. player.move).
    #[arg(long = "type")]
    pub event_type: String,
    /// Emitting source.
    #[arg(long, default_value = "cli")]
    pub source: String,
    /// Kind of source, which picks the subject: agent, story or state.
    #[arg(long, default_value = "agent")]
    pub kind: String,
    /// Player id.
    #[arg(long)]
    pub player: Option<String>,
    /// Session id.
    #[arg(long)]
    pub session: Option<String>,
    /// Severity: trace, debug, info, warn, error, critical.
    #[arg(long, default_value = "info")]
    pub severity: String,
    /// Category (default: from the type and kind).
    #[arg(long)]
    pub category: Option<String>,
    /// The event that caused this one.
    #[arg(long)]
    pub parent: Option<String>,
    /// Payload as JSON.
    #[arg(long)]
    pub data: Option<String>,
    /// NATS server URL.
    #[arg(
        long,
        env = "TRACE_AGENT_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,
    /// Print the published entry as JSON.
    #[arg(long)]
    pub json: bool,
    /// NATS credentials and TLS.
    #[command(flatten)]
    pub auth: crate::cli::NatsArgs,
}

/// Publishes one event through JetStream and prints its id once the server has it.
pub async fn emit(args: &EmitArgs) -> anyhow::Result<()> {
    let kind: SourceKind = args
        .kind
        .parse()
        .map_err(|e: String| anyhow::anyhow!("--kind: {e}"))?;
    let severity: Severity = args
        .severity
        .parse()
        .map_err(|e| anyhow::anyhow!("--severity: {e}"))?;
    let subject = publish_subject(kind, &args.source, &args.event_type)
        .map_err(|e| anyhow::anyhow!("--source/--type: {e}"))?;
    let mut entry = TraceEntry::new(&args.event_type, &args.source);
    entry.severity = severity;
    entry.player = args.player.clone();
    entry.session = args.session.clone();
    entry.category = match &args.category {
        Some(c) => Category::parse(c),
        None => Category::from_type(&args.event_type).unwrap_or_else(|| kind.default_category()),
    };
    if let Some(p) = &args.parent {
        entry.parent = Some(
            p.parse::<EventId>()
                .map_err(|e| anyhow::anyhow!("--parent: {e}"))?,
        );
    }
    if let Some(d) = &args.data {
        let json: serde_json::Value = serde_json::from_str(d)
            .map_err(|e| anyhow::anyhow!("--data is not valid JSON: {e}"))?;
        entry.data = json_to_value(json);
    }
    let client = args
        .auth
        .connect(&args.nats_url, "trace-agent-emit")
        .await?;
    let js = jetstream::new(client);
    publish_entry(&js, &subject, &entry).await?;
    if args.json {
        println!("{}", serde_json::to_string(&entry)?);
    } else {
        println!("{}", entry.id);
    }
    Ok(())
}

async fn publish_entry(
    js: &jetstream::Context,
    subject: &str,
    entry: &TraceEntry,
) -> anyhow::Result<()> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", entry.id.to_string().as_str());
    let ack = js
        .publish_with_headers(subject.to_owned(), headers, encode_entry_vec(entry).into())
        .await
        .with_context(|| format!("publishing on {subject}"))?;
    tokio::time::timeout(Duration::from_secs(10), ack)
        .await
        .map_err(|_| anyhow::anyhow!("JetStream did not confirm {subject} within 10s: does a stream capture it (is `trace-agent run` running)?"))?
        .with_context(|| format!("JetStream refused the message on {subject}: does a stream capture it (is `trace-agent run` running)?"))?;
    Ok(())
}

/// The two file formats, chosen by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// `.jsonl` / `.json`: one JSON entry per line (binary payloads become arrays of numbers).
    JsonLines,
    /// `.msgpack` / `.mp`: the msgpack envelopes back to back (exact, binary included).
    Msgpack,
}

impl FileFormat {
    /// The format a path's extension names.
    pub fn of(path: &Path) -> anyhow::Result<FileFormat> {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("jsonl" | "json" | "ndjson") => Ok(FileFormat::JsonLines),
            Some("msgpack" | "mp" | "mpk") => Ok(FileFormat::Msgpack),
            _ => bail!(
                "{}: use a .jsonl (JSON Lines) or .msgpack file name",
                path.display()
            ),
        }
    }
}

/// `export` flags.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Filters, time range and connection (`--json`, `--oldest-first` do not apply).
    #[command(flatten)]
    pub filter: QueryArgs,
    /// The file to write: .jsonl or .msgpack.
    #[arg(long)]
    pub output: PathBuf,
}

/// A progress line on stderr when it is a terminal, at most a few times a second.
pub(crate) struct Progress {
    on: bool,
    what: &'static str,
    started: Instant,
    last: Instant,
    total: Option<u64>,
}

impl Progress {
    pub(crate) fn new(what: &'static str, total: Option<u64>) -> Self {
        let now = Instant::now();
        Progress {
            on: std::io::stderr().is_terminal(),
            what,
            started: now,
            last: now,
            total,
        }
    }

    pub(crate) fn show(&mut self, done: u64, force: bool) {
        if !self.on || (!force && self.last.elapsed() < Duration::from_millis(200)) {
            return;
        }
        self.last = Instant::now();
        let rate = done as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
        let bar = match self.total {
            Some(t) if t > 0 => {
                let pct = (done as f64 / t as f64).min(1.0);
                let filled = (pct * 30.0) as usize;
                format!(
                    "[{}{}] {:>3.0}% ",
                    "#".repeat(filled),
                    " ".repeat(30 - filled),
                    pct * 100.0
                )
            }
            _ => String::new(),
        };
        eprint!("\r{bar}{} {done} events ({rate:.0}/s)   ", self.what);
    }

    pub(crate) fn finish(&mut self, done: u64) {
        self.show(done, true);
        if self.on {
            eprintln!();
        }
    }
}

/// Writes the entries a query selects, oldest first, following the API's cursor.
pub async fn export(args: &ExportArgs) -> anyhow::Result<()> {
    let format = FileFormat::of(&args.output)?;
    let mut q = args.filter.to_query()?;
    q.order = Order::OldestFirst;
    let conn = &args.filter.conn;
    let api = conn.api().await?;
    let cluster = crate::cluster::Cluster::discover(&api).await?;
    let total = cluster
        .ask::<_, serde_json::Value>("store_info", &serde_json::json!({}))
        .await
        .ok()
        .map(|(answers, _)| {
            answers
                .iter()
                .filter_map(|(_, v)| v["events"].as_u64())
                .sum()
        });
    let file = std::fs::File::create(&args.output)
        .with_context(|| format!("creating {}", args.output.display()))?;
    let mut out = BufWriter::new(file);
    let mut progress = Progress::new("exported", total);
    let mut written = 0u64;
    let limit = args.filter.limit.map(|l| l as u64);
    loop {
        let want = limit.map_or(MAX_PAGE as u64, |l| (l - written).min(MAX_PAGE as u64));
        q.limit = Some(want as usize);
        let (page, missing) = cluster.query_page(&q).await?;
        missing.warn();
        for e in &page.entries {
            match format {
                FileFormat::JsonLines => {
                    serde_json::to_writer(&mut out, e)?;
                    out.write_all(b"\n")?;
                }
                FileFormat::Msgpack => out.write_all(&encode_entry_vec(e))?,
            }
            written += 1;
        }
        progress.show(written, false);
        match page.next_cursor {
            Some(c) if !page.entries.is_empty() && limit.is_none_or(|l| written < l) => {
                q.cursor = Some(c)
            }
            _ => break,
        }
    }
    out.flush()
        .with_context(|| format!("writing {}", args.output.display()))?;
    progress.finish(written);
    eprintln!("exported {written} events to {}", args.output.display());
    Ok(())
}

/// `import` flags.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The file: .jsonl or .msgpack (as written by `export`).
    pub file: PathBuf,
    /// Write straight into this store directory (the agent must not be running on it)
    /// instead of publishing to the bus.
    #[arg(long = "into-store", value_name = "DIR")]
    pub into_store: Option<PathBuf>,
    /// NATS server URL (when publishing).
    #[arg(
        long,
        env = "TRACE_AGENT_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,
    /// NATS credentials and TLS (when publishing).
    #[command(flatten)]
    pub auth: crate::cli::NatsArgs,
}

/// Reads every entry of an export file, checking each.
fn read_entries(path: &Path) -> anyhow::Result<Vec<TraceEntry>> {
    let format = FileFormat::of(path)?;
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut entries = Vec::new();
    match format {
        FileFormat::JsonLines => {
            for (i, line) in BufReader::new(file).lines().enumerate() {
                let line =
                    line.with_context(|| format!("{}: reading line {}", path.display(), i + 1))?;
                if line.trim().is_empty() {
                    continue;
                }
                let e: TraceEntry = serde_json::from_str(&line).with_context(|| {
                    format!(
                        "{}: line {} is not an exported entry",
                        path.display(),
                        i + 1
                    )
                })?;
                entries.push(e);
            }
        }
        FileFormat::Msgpack => {
            let mut bytes = Vec::new();
            BufReader::new(file)
                .read_to_end(&mut bytes)
                .with_context(|| format!("reading {}", path.display()))?;
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                let offset = bytes.len() - rest.len();
                let e = decode_stored_entry(&mut rest).with_context(|| {
                    format!("{}: entry at byte {offset} does not decode", path.display())
                })?;
                entries.push(e);
            }
        }
    }
    Ok(entries)
}

/// Replays an export into the bus (JetStream drops ids it saw within its duplicate window)
/// or straight into a store directory (ids already stored are skipped, so it can run twice).
pub async fn import(args: &ImportArgs) -> anyhow::Result<()> {
    let entries = read_entries(&args.file)?;
    let mut progress = Progress::new("imported", Some(entries.len() as u64));
    match &args.into_store {
        Some(dir) => {
            let dir = dir.clone();
            let (added, skipped) =
                tokio::task::spawn_blocking(move || -> anyhow::Result<(u64, u64)> {
                    let store = trace_store::Store::open(trace_store::StoreConfig::at(&dir))
                        .with_context(|| format!("opening the store in {}", dir.display()))?;
                    let (mut added, mut skipped) = (0u64, 0u64);
                    for chunk in entries.chunks(1000) {
                        let ids: Vec<EventId> = chunk.iter().map(|e| e.id).collect();
                        let present = store.contains_ids(&ids)?;
                        let fresh: Vec<TraceEntry> = chunk
                            .iter()
                            .filter(|e| !present.contains(&e.id))
                            .cloned()
                            .collect();
                        skipped += (chunk.len() - fresh.len()) as u64;
                        added += fresh.len() as u64;
                        store.append(trace_store::AppendBatch {
                            entries: &fresh,
                            ..Default::default()
                        })?;
                        progress.show(added + skipped, false);
                    }
                    store.flush()?;
                    progress.finish(added + skipped);
                    Ok((added, skipped))
                })
                .await??;
            eprintln!("imported {added} events into the store ({skipped} already there)");
        }
        None => {
            let client = args
                .auth
                .connect(&args.nats_url, "trace-agent-import")
                .await?;
            let mut publisher = WindowedPublisher::new(jetstream::new(client));
            let mut done = 0u64;
            for e in &entries {
                let subject = e
                    .meta_str("subject")
                    .map(str::to_owned)
                    .or_else(|| publish_subject(SourceKind::Agent, &e.source, &e.event_type).ok())
                    .with_context(|| format!("no subject for event {}", e.id))?;
                publisher.publish(&subject, e).await?;
                done += 1;
                progress.show(done, false);
            }
            publisher.finish().await?;
            progress.finish(done);
            eprintln!("imported {done} events into the bus ({})", args.nats_url);
        }
    }
    Ok(())
}

/// Publishes entries through JetStream with `Nats-Msg-Id` = the event id, keeping a bounded
/// window of unconfirmed publishes (an unbounded pile of ack futures stalls the client; see
/// DESIGN.md), so a bulk replay neither floods memory nor loses a refusal.
pub struct WindowedPublisher {
    js: jetstream::Context,
    window: std::collections::VecDeque<jetstream::context::PublishAckFuture>,
    max: usize,
}

impl WindowedPublisher {
    /// A publisher with a window of 1024 unconfirmed messages.
    pub fn new(js: jetstream::Context) -> Self {
        WindowedPublisher {
            js,
            window: std::collections::VecDeque::new(),
            max: 1024,
        }
    }

    /// Sends one entry as its msgpack envelope on `subject`.
    pub async fn publish(&mut self, subject: &str, entry: &TraceEntry) -> anyhow::Result<()> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", entry.id.to_string().as_str());
        let ack = self
            .js
            .publish_with_headers(subject.to_owned(), headers, encode_entry_vec(entry).into())
            .await
            .with_context(|| format!("publishing on {subject}"))?;
        self.window.push_back(ack);
        if self.window.len() >= self.max {
            if let Some(a) = self.window.pop_front() {
                a.await.context("JetStream refused a message")?;
            }
        }
        Ok(())
    }

    /// Waits for every publish to be confirmed.
    pub async fn finish(&mut self) -> anyhow::Result<()> {
        while let Some(a) = self.window.pop_front() {
            a.await.context("JetStream refused a message")?;
        }
        Ok(())
    }
}
