//! The analytics commands: `stats|players|patterns|trends|anomalies` ask a running agent
//! (`trace.api.<verb>`) and print readable tables (or the whole reply as JSON), and `detect`
//! scores a `timestamp,value` CSV offline with the same streaming detector the agent uses live.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use trace_analytics::{
    AnalyticsError, AnomaliesReport, DetectorConfig, PatternsReport, PlayersReport, TrendsReport,
};
use trace_core::human::parse_time_arg;

use crate::api::{
    AnalyticsReply, AnalyticsRequest, AnalyticsScope, StatsAndPerformance, ANALYTICS_VERBS,
};
use crate::cluster::Cluster;
use crate::output::{clip, Table};
use trace_core::query::MAX_PAGE;
use trace_core::{Order, Query};

/// Flags shared by stats|players|patterns|trends|anomalies.
#[derive(Debug, clap::Args)]
pub struct AnalyticsArgs {
    /// Analyse the stored events at or after this time (RFC 3339 or relative: 15m, 2h, 7d)
    /// instead of the live state.
    #[arg(long)]
    pub since: Option<String>,
    /// Analyse the stored events before this time (RFC 3339 or relative).
    #[arg(long)]
    pub until: Option<String>,
    /// Only events of this type, exact or a prefix ending in `.*` (player.*).
    #[arg(long = "type")]
    pub event_type: Option<String>,
    /// Only events from this source.
    #[arg(long)]
    pub source: Option<String>,
    /// How many rows per table.
    #[arg(long, default_value_t = 20)]
    pub top: usize,
    /// Connection and output.
    #[command(flatten)]
    pub conn: crate::cli::ConnArgs,
}

impl AnalyticsArgs {
    /// The API request: empty (the live state) when no range or filter flag is given.
    /// `--since`/`--until` take RFC 3339 or a relative time; errors name the flag.
    pub fn to_request(&self) -> anyhow::Result<AnalyticsRequest> {
        let now = Utc::now();
        let time = |flag: &str, value: &Option<String>| -> anyhow::Result<Option<DateTime<Utc>>> {
            value
                .as_deref()
                .map(|s| parse_time_arg(s, now).map_err(|e| anyhow::anyhow!("--{flag}: {e}")))
                .transpose()
        };
        let text = |flag: &str, value: &Option<String>| -> anyhow::Result<Option<String>> {
            match value.as_deref().map(str::trim) {
                Some("") => anyhow::bail!("--{flag} must not be empty"),
                other => Ok(other.map(str::to_owned)),
            }
        };
        let request = AnalyticsRequest {
            since: time("since", &self.since)?,
            until: time("until", &self.until)?,
            event_type: text("type", &self.event_type)?,
            source: text("source", &self.source)?,
        };
        if let (Some(since), Some(until)) = (request.since, request.until) {
            if since >= until {
                anyhow::bail!("--since ({since}) must be before --until ({until})");
            }
        }
        Ok(request)
    }
}

/// Runs one analytics verb (one of [`ANALYTICS_VERBS`]) against the running agent and prints
/// the answer: the whole `AnalyticsReply` as one pretty JSON document with `--json`, readable
/// tables otherwise.
pub async fn run(verb: &str, args: &AnalyticsArgs) -> anyhow::Result<()> {
    if !ANALYTICS_VERBS.contains(&verb) {
        anyhow::bail!(
            "unknown analytics verb {verb:?}: use one of {}",
            ANALYTICS_VERBS.join(", ")
        );
    }
    let request = args.to_request()?;
    let api = args.conn.api().await?;
    let cluster = Cluster::discover(&api).await?;
    let reply: serde_json::Value = if !cluster.is_scaled_out() {
        api.call(verb, &request).await?
    } else if request.is_live() {
        // every instance analyses the whole stream: the one that has seen most is freshest
        let (answers, missing) = cluster.ask::<_, serde_json::Value>(verb, &request).await?;
        missing.warn();
        answers
            .into_iter()
            .map(|(_, reply)| reply)
            .max_by_key(|reply| reply["events"].as_u64().unwrap_or(0))
            .ok_or_else(|| anyhow::anyhow!("no instance answered {verb}"))?
    } else {
        range_over_instances(&cluster, verb, &request).await?
    };
    let mut out = std::io::stdout().lock();
    if args.conn.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&reply)?)?;
    } else {
        let top = args.top.max(1);
        match verb {
            "stats" => print_stats(&decode::<StatsAndPerformance>(verb, reply)?, top, &mut out)?,
            "players" => print_players(&decode::<PlayersReport>(verb, reply)?, top, &mut out)?,
            "patterns" => print_patterns(&decode::<PatternsReport>(verb, reply)?, top, &mut out)?,
            "trends" => print_trends(&decode::<TrendsReport>(verb, reply)?, top, &mut out)?,
            _ => print_anomalies(&decode::<AnomaliesReport>(verb, reply)?, top, &mut out)?,
        }
    }
    out.flush().context("writing output")?;
    Ok(())
}

/// Most stored events one range analysis here reads (the agents' own default cap).
const MAX_RANGE_EVENTS: usize = 20_000_000;

/// A range analysis when the range is scattered over several instances' stores: the events
/// are read through the merged query, oldest first, and analysed here by the same engine
/// (with its default settings).
async fn range_over_instances(
    cluster: &Cluster<'_>,
    verb: &str,
    request: &AnalyticsRequest,
) -> anyhow::Result<serde_json::Value> {
    let mut q = Query {
        since: request.since,
        until: request.until,
        event_type: request.event_type.clone(),
        source: request.source.clone(),
        order: Order::OldestFirst,
        ..Query::default()
    };
    let mut analyzer = trace_analytics::Analyzer::new(Default::default());
    let mut seen = 0usize;
    while seen < MAX_RANGE_EVENTS {
        q.limit = Some(MAX_PAGE.min(MAX_RANGE_EVENTS - seen));
        let (page, missing) = cluster.query_page(&q).await?;
        missing.warn();
        seen += page.entries.len();
        for e in &page.entries {
            crate::api::observe_stored(&mut analyzer, e);
        }
        match page.next_cursor {
            Some(c) if !page.entries.is_empty() => q.cursor = Some(c),
            _ => break,
        }
    }
    let now = chrono::Utc::now();
    let end = request.until.unwrap_or(now).min(now);
    analyzer.advance_to(end);
    crate::api::analytics_reply(verb, AnalyticsScope::Range, request, analyzer.report(end))
        .map_err(|e| anyhow::anyhow!("{}", e.message))
}

/// The reply of `verb` as its typed report.
fn decode<T: DeserializeOwned>(
    verb: &str,
    reply: serde_json::Value,
) -> anyhow::Result<AnalyticsReply<T>> {
    serde_json::from_value(reply)
        .with_context(|| format!("the reply of trace.api.{verb} is not what this CLI expects"))
}

/// `detect` flags.
#[derive(Debug, clap::Args)]
pub struct DetectArgs {
    /// CSV with header and columns timestamp,value.
    #[arg(long)]
    pub input: PathBuf,
    /// Where to write timestamp,value,anomaly_score (default stdout).
    #[arg(long)]
    pub output: Option<PathBuf>,
}

/// Scores `--input` offline with the live tracker's detector (default [`DetectorConfig`]) and
/// writes `timestamp,value,anomaly_score`, one row per input row in the same order. Errors
/// name the file (and the line, for a bad row); a one-line summary goes to stderr.
pub fn detect(args: &DetectArgs) -> anyhow::Result<()> {
    let input = File::open(&args.input)
        .with_context(|| format!("cannot open --input {}", args.input.display()))?;
    let config = DetectorConfig::default();
    let summary = match &args.output {
        Some(path) => {
            let file = File::create(path)
                .with_context(|| format!("cannot create --output {}", path.display()))?;
            trace_analytics::detect_csv(input, BufWriter::new(file), &config)
                .map_err(|e| detect_error(e, &args.input, Some(path)))?
        }
        None => {
            let stdout = std::io::stdout().lock();
            trace_analytics::detect_csv(input, BufWriter::new(stdout), &config)
                .map_err(|e| detect_error(e, &args.input, None))?
        }
    };
    eprintln!(
        "{}: {} row(s) scored, {} anomal{} flagged (score >= {}), highest score {:.3}",
        args.input.display(),
        summary.rows,
        summary.anomalies,
        if summary.anomalies == 1 { "y" } else { "ies" },
        num(config.threshold),
        summary.max_score
    );
    Ok(())
}

/// Names the file a detector error is about (its line is in the error itself).
fn detect_error(error: AnalyticsError, input: &Path, output: Option<&Path>) -> anyhow::Error {
    match (&error, output) {
        (AnalyticsError::Write(_), Some(path)) => {
            anyhow::anyhow!("writing {}: {error}", path.display())
        }
        (AnalyticsError::Write(_), None) => anyhow::anyhow!("writing to stdout: {error}"),
        _ => anyhow::anyhow!("{}: {error}", input.display()),
    }
}

/// A number for people: integers as such, others with at most three decimals (or in
/// scientific notation when tiny).
fn num(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    if v.fract() == 0.0 && v.abs() < 1e15 {
        return format!("{v:.0}");
    }
    if v != 0.0 && v.abs() < 0.001 {
        return format!("{v:.2e}");
    }
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// A share as a percentage.
fn pct(v: f64) -> String {
    if v == 0.0 {
        "0%".to_owned()
    } else {
        format!("{:.2}%", v * 100.0)
    }
}

/// A signed relative change as a percentage.
fn signed_pct(v: f64) -> String {
    if v.is_finite() {
        format!("{:+.1}%", v * 100.0)
    } else {
        v.to_string()
    }
}

fn time(t: Option<DateTime<Utc>>) -> String {
    t.map_or("-".to_owned(), |t| {
        t.format("%Y-%m-%d %H:%M:%S").to_string()
    })
}

fn unix_time(secs: i64) -> String {
    time(DateTime::from_timestamp(secs, 0))
}

/// Seconds as `1h02m03s`, `4m05s`, `12.5s`.
fn length(secs: f64) -> String {
    if !secs.is_finite() || secs < 60.0 {
        return format!("{}s", num(secs));
    }
    let whole = secs.round() as u64;
    let (h, m, s) = (whole / 3600, whole / 60 % 60, whole % 60);
    if h > 0 {
        format!("{h}h{m:02}m{s:02}s")
    } else {
        format!("{m}m{s:02}s")
    }
}

/// The header line of every answer: scope, range, events analysed.
fn header<T>(reply: &AnalyticsReply<T>, out: &mut impl Write) -> std::io::Result<()> {
    let scope = match reply.scope {
        AnalyticsScope::Live => "live",
        AnalyticsScope::Range => "range",
    };
    let range = match (reply.scope, reply.since, reply.until) {
        (AnalyticsScope::Live, None, None) => "since the analytics consumer started".to_owned(),
        (_, since, until) => format!(
            "{} .. {} (UTC)",
            since.map_or("the oldest stored event".to_owned(), |t| time(Some(t))),
            until.map_or("now".to_owned(), |t| time(Some(t)))
        ),
    };
    writeln!(
        out,
        "scope: {scope}  range: {range}  events analysed: {}  at {} UTC",
        reply.events,
        time(Some(reply.generated_at))
    )
}

/// A [`Table`] that prints `(none)` instead of a lone header when it has no rows.
struct Listing {
    table: Table,
    rows: usize,
}

impl Listing {
    fn new(header: &[&str]) -> Self {
        Listing {
            table: Table::new(header),
            rows: 0,
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows += 1;
        self.table.row(cells);
    }

    fn print(&self, out: &mut impl Write) -> std::io::Result<()> {
        if self.rows == 0 {
            writeln!(out, "(none)")
        } else {
            self.table.print(out)
        }
    }
}

fn section(out: &mut impl Write, title: &str, shown: usize, total: usize) -> std::io::Result<()> {
    writeln!(out)?;
    if shown < total {
        writeln!(out, "{title} (top {shown} of {total})")
    } else {
        writeln!(out, "{title}")
    }
}

fn key_stats_table<'a>(
    title: &str,
    rows: impl Iterator<Item = (&'a String, &'a trace_analytics::stats::KeyStats)>,
    top: usize,
    out: &mut impl Write,
) -> std::io::Result<()> {
    let mut rows: Vec<_> = rows.collect();
    rows.sort_by(|a, b| b.1.count.cmp(&a.1.count).then_with(|| a.0.cmp(b.0)));
    section(out, title, rows.len().min(top), rows.len())?;
    let mut t = Listing::new(&[
        "NAME",
        "COUNT",
        "ERRORS",
        "ERROR RATE",
        "ERR 5M",
        "/S 1M",
        "/S 5M",
        "/S 1H",
    ]);
    for (name, s) in rows.into_iter().take(top) {
        t.row(vec![
            clip(name, 40),
            s.count.to_string(),
            s.errors.to_string(),
            pct(s.error_rate),
            pct(s.error_rate_5m),
            num(s.rates.per_sec_1m),
            num(s.rates.per_sec_5m),
            num(s.rates.per_sec_1h),
        ]);
    }
    t.print(out)
}

fn print_stats(
    reply: &AnalyticsReply<StatsAndPerformance>,
    top: usize,
    out: &mut impl Write,
) -> std::io::Result<()> {
    header(reply, out)?;
    let stats = &reply.report.stats;
    let total = &stats.total;
    writeln!(
        out,
        "events: {}  errors: {} (error rate {}, last 5m {})  first: {}  last: {}",
        total.count,
        total.errors,
        pct(total.error_rate),
        pct(total.error_rate_5m),
        time(stats.first_ts),
        time(stats.last_ts)
    )?;
    writeln!(
        out,
        "rates (events/s): 1m {}  5m {}  1h {}",
        num(total.rates.per_sec_1m),
        num(total.rates.per_sec_5m),
        num(total.rates.per_sec_1h)
    )?;
    key_stats_table("BY TYPE", stats.by_type.iter(), top, out)?;
    key_stats_table(
        "BY SOURCE (error rate per source)",
        stats.by_source.iter(),
        top,
        out,
    )?;

    let mut categories: Vec<_> = stats.by_category.iter().collect();
    categories.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    section(
        out,
        "BY CATEGORY",
        categories.len().min(top),
        categories.len(),
    )?;
    let mut t = Listing::new(&["CATEGORY", "COUNT"]);
    for (name, n) in categories.into_iter().take(top) {
        t.row(vec![clip(name, 40), n.to_string()]);
    }
    t.print(out)?;

    section(
        out,
        "BY SEVERITY",
        stats.by_severity.len(),
        stats.by_severity.len(),
    )?;
    let mut t = Listing::new(&["SEVERITY", "COUNT"]);
    // trace .. critical, in severity order
    for name in ["trace", "debug", "info", "warn", "error", "critical"] {
        if let Some(n) = stats.by_severity.get(name) {
            t.row(vec![name.to_owned(), n.to_string()]);
        }
    }
    for (name, n) in &stats.by_severity {
        if !["trace", "debug", "info", "warn", "error", "critical"].contains(&name.as_str()) {
            t.row(vec![name.clone(), n.to_string()]);
        }
    }
    t.print(out)?;

    let perf = &reply.report.performance;
    let mut rows: Vec<_> = perf
        .by_type
        .iter()
        .flat_map(|(ty, metrics)| metrics.iter().map(move |(m, p)| (ty, m, p)))
        .collect();
    rows.sort_by(|a, b| {
        b.2.count
            .cmp(&a.2.count)
            .then_with(|| a.0.cmp(b.0))
            .then_with(|| a.1.cmp(b.1))
    });
    writeln!(out)?;
    let title = format!(
        "PERCENTILES (±{}% relative)",
        num(perf.relative_accuracy * 100.0)
    );
    if rows.len() > top {
        writeln!(out, "{title} (top {top} of {})", rows.len())?;
    } else {
        writeln!(out, "{title}")?;
    }
    let mut t = Listing::new(&["TYPE", "METRIC", "COUNT", "P50", "P90", "P95", "P99", "MAX"]);
    for (ty, metric, p) in rows.into_iter().take(top) {
        t.row(vec![
            clip(ty, 32),
            clip(metric, 24),
            p.count.to_string(),
            num(p.p50),
            num(p.p90),
            num(p.p95),
            num(p.p99),
            num(p.max),
        ]);
    }
    t.print(out)?;
    if perf.dropped_values > 0 || perf.non_finite_values > 0 {
        writeln!(
            out,
            "{} value(s) dropped (series limit), {} non-finite ignored",
            perf.dropped_values, perf.non_finite_values
        )?;
    }
    Ok(())
}

fn print_players(
    reply: &AnalyticsReply<PlayersReport>,
    top: usize,
    out: &mut impl Write,
) -> std::io::Result<()> {
    header(reply, out)?;
    let r = &reply.report;
    let s = &r.sessions;
    writeln!(
        out,
        "distinct players: {} ({})  events with a player: {}  players tracked: {}",
        r.distinct_players,
        if r.distinct_exact {
            "exact"
        } else {
            "estimated, HyperLogLog"
        },
        r.events_with_player,
        r.tracked_players
    )?;
    write!(
        out,
        "sessions: {} distinct  {} ended  {} open",
        s.distinct, s.ended, s.open
    )?;
    match &s.length_secs {
        Some(p) => writeln!(
            out,
            "  length of ended sessions: p50 {}  p90 {}  p99 {}  max {}",
            length(p.p50),
            length(p.p90),
            length(p.p99),
            length(p.max)
        )?,
        None => writeln!(out)?,
    }

    section(
        out,
        "TOP PLAYERS",
        r.top_players.len().min(top),
        r.top_players.len(),
    )?;
    let mut t = Listing::new(&[
        "PLAYER",
        "EVENTS",
        "ACTIONS",
        "SESSIONS",
        "FIRST SEEN (UTC)",
        "LAST SEEN (UTC)",
        "LAST SESSION",
    ]);
    for p in r.top_players.iter().take(top) {
        let events = if p.events_error > 0 {
            format!("{} (±{})", p.events, p.events_error)
        } else {
            p.events.to_string()
        };
        t.row(vec![
            clip(&p.player, 24),
            events,
            p.actions.to_string(),
            p.sessions.to_string(),
            time(p.first_seen),
            time(p.last_seen),
            clip(p.last_session.as_deref().unwrap_or("-"), 24),
        ]);
    }
    t.print(out)?;

    let sessions: Vec<_> = s.recent.iter().chain(s.top_open.iter()).collect();
    section(out, "SESSIONS", sessions.len().min(top), sessions.len())?;
    let mut t = Listing::new(&[
        "SESSION",
        "PLAYER",
        "EVENTS",
        "ACTIONS",
        "START (UTC)",
        "LENGTH",
        "STATE",
    ]);
    for session in sessions.into_iter().take(top) {
        let state = serde_json::to_value(session.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        t.row(vec![
            clip(&session.session, 24),
            clip(session.player.as_deref().unwrap_or("-"), 24),
            session.events.to_string(),
            session.actions.to_string(),
            time(session.start),
            length(session.length_secs),
            state,
        ]);
    }
    t.print(out)
}

fn transitions_table(
    title: &str,
    rows: &[trace_analytics::patterns::Transition],
    top: usize,
    out: &mut impl Write,
) -> std::io::Result<()> {
    section(out, title, rows.len().min(top), rows.len())?;
    let mut t = Listing::new(&["FROM", "", "TO", "COUNT"]);
    for tr in rows.iter().take(top) {
        t.row(vec![
            clip(&tr.from, 40),
            "->".to_owned(),
            clip(&tr.to, 40),
            tr.count.to_string(),
        ]);
    }
    t.print(out)
}

fn type_counts_table(
    title: &str,
    map: &BTreeMap<String, u64>,
    top: usize,
    out: &mut impl Write,
) -> std::io::Result<()> {
    let mut rows: Vec<_> = map.iter().collect();
    rows.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    section(out, title, rows.len().min(top), rows.len())?;
    let mut t = Listing::new(&["TYPE", "SESSIONS"]);
    for (name, n) in rows.into_iter().take(top) {
        t.row(vec![clip(name, 40), n.to_string()]);
    }
    t.print(out)
}

fn print_patterns(
    reply: &AnalyticsReply<PatternsReport>,
    top: usize,
    out: &mut impl Write,
) -> std::io::Result<()> {
    header(reply, out)?;
    let r = &reply.report;
    writeln!(
        out,
        "events without a session: {}  transitions not counted (tables full): {}",
        r.events_without_session, r.dropped_transitions
    )?;
    transitions_table("TRANSITIONS (within sessions)", &r.transitions, top, out)?;
    type_counts_table("START TYPES", &r.start_types, top, out)?;
    type_counts_table("END TYPES", &r.end_types, top, out)?;

    section(
        out,
        "FREQUENT SEQUENCES",
        r.sequences.len().min(top),
        r.sequences.len(),
    )?;
    let mut t = Listing::new(&["COUNT", "SEQUENCE"]);
    for s in r.sequences.iter().take(top) {
        let count = if s.count_error > 0 {
            format!("{} (±{})", s.count, s.count_error)
        } else {
            s.count.to_string()
        };
        t.row(vec![count, s.types.join(" -> ")]);
    }
    t.print(out)?;

    transitions_table(
        "STORY TRANSITIONS (data.from -> data.to)",
        &r.story_transitions,
        top,
        out,
    )?;

    section(
        out,
        "ERROR TEMPLATES",
        r.error_templates.len().min(top),
        r.error_templates.len(),
    )?;
    let mut t = Listing::new(&["COUNT", "TYPE", "LAST SEEN (UTC)", "TEMPLATE", "EXAMPLE"]);
    for e in r.error_templates.iter().take(top) {
        let count = if e.count_error > 0 {
            format!("{} (±{})", e.count, e.count_error)
        } else {
            e.count.to_string()
        };
        t.row(vec![
            count,
            clip(&e.event_type, 28),
            time(e.last_seen),
            clip(&e.template, 60),
            clip(&e.example, 60),
        ]);
    }
    t.print(out)
}

fn print_trends(
    reply: &AnalyticsReply<TrendsReport>,
    top: usize,
    out: &mut impl Write,
) -> std::io::Result<()> {
    header(reply, out)?;
    let r = &reply.report;
    writeln!(out, "buckets of {}s", r.bucket_secs)?;
    section(out, "TRENDS", r.series.len().min(top), r.series.len())?;
    let mut t = Listing::new(&[
        "SERIES",
        "POINTS",
        "FROM (UTC)",
        "TO (UTC)",
        "SLOPE/H",
        "P-VALUE",
        "VERDICT",
        "CHANGE",
    ]);
    for s in r.series.iter().take(top) {
        let verdict = serde_json::to_value(s.verdict)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        t.row(vec![
            clip(&s.series, 48),
            s.points.to_string(),
            unix_time(s.from),
            unix_time(s.to),
            num(s.slope_per_hour),
            num(s.mann_kendall.p_value),
            verdict,
            signed_pct(s.relative_change),
        ]);
    }
    t.print(out)
}

fn print_anomalies(
    reply: &AnalyticsReply<AnomaliesReport>,
    top: usize,
    out: &mut impl Write,
) -> std::io::Result<()> {
    header(reply, out)?;
    let r = &reply.report;
    let flagged = r.series.iter().filter(|s| s.anomalous).count();
    writeln!(
        out,
        "buckets of {}s  threshold {}  series watched: {} ({} anomalous now)",
        r.bucket_secs,
        num(r.threshold),
        r.series.len(),
        flagged
    )?;
    section(
        out,
        "ANOMALIES (newest first)",
        r.anomalies.len().min(top),
        r.anomalies.len(),
    )?;
    let mut t = Listing::new(&["SERIES", "TIME (UTC)", "VALUE", "EXPECTED", "SCORE", "KIND"]);
    for a in r.anomalies.iter().take(top) {
        t.row(vec![
            clip(&a.series, 48),
            time(Some(a.ts)),
            num(a.value),
            num(a.expected),
            format!("{:.3}", a.score),
            a.kind.as_str().to_owned(),
        ]);
    }
    t.print(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(since: Option<&str>, until: Option<&str>) -> AnalyticsArgs {
        AnalyticsArgs {
            since: since.map(str::to_owned),
            until: until.map(str::to_owned),
            event_type: None,
            source: None,
            top: 20,
            conn: crate::cli::ConnArgs {
                nats_url: "nats://127.0.0.1:4222".into(),
                timeout: std::time::Duration::from_secs(1),
                json: false,
                auth: Default::default(),
            },
        }
    }

    #[test]
    fn request_is_live_without_flags_and_errors_name_the_flag() {
        let live = args(None, None).to_request().expect("no flags");
        assert!(live.is_live());
        let range = args(Some("1h"), None).to_request().expect("relative");
        assert!(!range.is_live() && range.since.is_some() && range.until.is_none());
        let err = args(Some("soon"), None)
            .to_request()
            .expect_err("bad since");
        assert!(err.to_string().starts_with("--since:"), "{err}");
        let err = args(None, Some("later"))
            .to_request()
            .expect_err("bad until");
        assert!(err.to_string().starts_with("--until:"), "{err}");
        let err = args(Some("1h"), Some("2h"))
            .to_request()
            .expect_err("inverted");
        assert!(err.to_string().contains("before --until"), "{err}");
    }

    #[test]
    fn numbers_and_lengths_read_well() {
        assert_eq!(num(3.0), "3");
        assert_eq!(num(0.25), "0.25");
        assert_eq!(num(0.0001), "1.00e-4");
        assert_eq!(length(12.5), "12.5s");
        assert_eq!(length(125.0), "2m05s");
        assert_eq!(length(3725.0), "1h02m05s");
        assert_eq!(signed_pct(-0.5), "-50.0%");
    }
}
