//! `trace-agent bench`: the benchmark suite in one command. It measures, on this machine and
//! against a private nats-server it starts itself, what the README promises: store append
//! throughput and bytes on disk, durable ingest by the real agent against a bare JetStream
//! consumer, the agent's memory, query latency over a large store, analytics throughput, and
//! what the publisher client costs a game. Each figure is printed with its target.
//!
//! - [`report`]: figures, targets, machine info, the table and the JSON.
//! - [`workload`]: the simulated game traffic every phase measures with.
//! - [`store`]: append throughput, disk usage, query latency (in-process store).
//! - [`ingest`]: pre-filled stream drained by a bare consumer, then by the real agent.
//! - [`publisher`]: `log_event` cost and the client's acked publish rate.
//! - [`analytics`]: events per second through the `Analyzer`.

mod analytics;
mod ingest;
mod publisher;
mod report;
mod store;
mod workload;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use clap::Args;

use report::{Figure, Report, Target};

/// `bench` flags.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Small sizes (seconds, for CI: checks that every phase runs, not how fast).
    #[arg(long)]
    pub quick: bool,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON results to this file.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Events in the store that queries run over [default: 10,000,000; --quick 200,000].
    #[arg(long, value_name = "N")]
    pub store_events: Option<u64>,
    /// Events pre-filled into the stream and drained [default: 1,000,000; --quick 20,000].
    #[arg(long, value_name = "N")]
    pub ingest_events: Option<u64>,
    /// Record a CPU profile of the agent (analytics off: the ingest path alone) while it drains
    /// the stream (`perf record`, needs perf; slows that run, so its figures are not comparable).
    #[arg(long, value_name = "FILE")]
    pub perf: Option<PathBuf>,
    /// Run only these phases (repeat or comma-separate) [default: all].
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Phase>,
}

/// The phases, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Phase {
    /// `log_event` cost.
    Publisher,
    /// Analyzer throughput.
    Analytics,
    /// Store append, disk usage, queries.
    Store,
    /// Pre-fill through the client, bare consumer and agent drains, agent memory.
    Ingest,
}

/// How much each phase does.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    store_events: u64,
    queries: usize,
    ingest_events: u64,
    analytics_events: u64,
    log_rounds: usize,
}

impl Sizes {
    fn of(args: &BenchArgs) -> Sizes {
        let base = if args.quick {
            Sizes {
                store_events: 200_000,
                queries: 10,
                ingest_events: 20_000,
                analytics_events: 100_000,
                log_rounds: 100,
            }
        } else {
            Sizes {
                store_events: 10_000_000,
                queries: 300,
                ingest_events: 1_000_000,
                analytics_events: 2_000_000,
                log_rounds: 400,
            }
        };
        Sizes {
            store_events: args.store_events.unwrap_or(base.store_events).max(1000),
            ingest_events: args.ingest_events.unwrap_or(base.ingest_events).max(1000),
            ..base
        }
    }
}

/// Runs every phase, prints the table (or JSON) and writes `--out`.
pub async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let sizes = Sizes::of(args);
    let tty = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut report = Report::new(if args.quick { "quick" } else { "full" });

    let runs = |p: Phase| args.only.is_empty() || args.only.contains(&p);

    if runs(Phase::Publisher) {
        phase("publisher log_event cost (spill-only client, no network)");
        let cost = publisher::log_event_cost(sizes.log_rounds).await?;
        report.add(Figure::new(
            "client_log_event_median_ns",
            format!(
                "TraceClient::log_event cost per call, {{x, y}} payload (median of {} rounds of {})",
                cost.rounds,
                publisher::CALLS_PER_ROUND
            ),
            cost.median_ns,
            "ns",
            Target::Below(1000.0),
        ));
        report.detail(
            "client_log_event",
            serde_json::json!({
                "rounds": cost.rounds,
                "calls_per_round": publisher::CALLS_PER_ROUND,
                "median_ns": cost.median_ns,
                "p99_ns": cost.p99_ns,
                "with_string_and_one_meta_pair_median_ns": cost.richer_median_ns,
            }),
        );
    }

    if runs(Phase::Analytics) {
        phase(&format!(
            "analytics: {} events through the Analyzer",
            report::count(sizes.analytics_events)
        ));
        let n = sizes.analytics_events;
        let rate = tokio::task::spawn_blocking(move || analytics::throughput(n)).await?;
        report.add(Figure::new(
            "analytics_events_per_sec",
            format!(
                "analytics throughput (all analyses, {} events, one core)",
                report::count(n)
            ),
            rate,
            "events/s",
            Target::AtLeast(1_000_000.0),
        ));
    }

    if runs(Phase::Store) {
        phase(&format!(
            "store: appending {} events, then queries",
            report::count(sizes.store_events)
        ));
        let (n, queries) = (sizes.store_events, sizes.queries);
        let stored = tokio::task::spawn_blocking(move || store::run(n, queries)).await??;
        stored.add_to(&mut report);
    }

    if runs(Phase::Ingest) {
        phase(&format!(
            "ingest: {} events through JetStream (private nats-server)",
            report::count(sizes.ingest_events)
        ));
        let ingest = ingest::run(sizes.ingest_events, args.perf.as_deref(), tty).await?;
        ingest.add_to(&mut report);
    }

    report.finish(started.elapsed());
    let json = report.json();
    let text = serde_json::to_string_pretty(&json)?;
    if let Some(path) = &args.out {
        std::fs::write(path, format!("{text}\n"))
            .with_context(|| format!("writing the results to {}", path.display()))?;
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{text}")?;
    } else {
        report.print(&mut out)?;
    }
    out.flush()?;
    Ok(())
}

/// Announces a phase on stderr.
fn phase(what: &str) {
    eprintln!("bench: {what}");
}
