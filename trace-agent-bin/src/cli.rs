//! Command-line interface: the argument definitions (stage one: raw flags) and the commands
//! that turn them into validated settings and run (stage two).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use trace_core::human::{parse_duration, parse_time_arg};
use trace_core::query::MAX_PAGE;
use trace_core::{Category, Order, Query, Severity, TraceEntry};

use crate::analytics_cli::{AnalyticsArgs, DetectArgs};
use crate::api::{ApiClient, QuarantineReply, QuarantineRequest, StoreInfoReply};
use crate::cluster::Cluster;
use crate::config::{AgentConfig, FlagOverrides, NatsFlag, NATS_ENV_ALIASES};
use crate::output;
use crate::tools::{EmitArgs, ExportArgs, ImportArgs, TailArgs};
use trace_core::auth::NatsAuth;
use trace_monitor::{AlertList, HealthStatus};

/// trace-agent: records every game event from NATS durably and answers questions about them.
#[derive(Debug, Parser)]
#[command(name = "trace-agent", version, about, long_about = None)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the sidecar: record the input subjects into the store and serve the API.
    Run(RunArgs),
    /// Find recorded events (newest first) by time, type, source, category, severity, player, session.
    Query(QueryArgs),
    /// Show one event by id.
    Get(IdArgs),
    /// Show an event and the chain of events that caused it (its `parent` links).
    Explain(IdArgs),
    /// List messages that were refused (with the reason) instead of recorded.
    Quarantine(QuarantineArgs),
    /// Show the store: segments, blocks, events, bytes on disk, compression ratio.
    StoreInfo(InfoArgs),
    /// Show the agent's health; exit 0 healthy, 1 degraded, 2 unhealthy or unreachable.
    Health(InfoArgs),
    /// Show firing and recently resolved alerts.
    Alerts(InfoArgs),
    /// A live view: rates per source and type, errors, lag, alerts, resources (every second).
    Top(TopArgs),
    /// Counts by type, source, category, severity; rates; error rates; metric percentiles.
    Stats(AnalyticsArgs),
    /// Distinct players and sessions, top players, session lengths.
    Players(AnalyticsArgs),
    /// Transitions between event types, frequent sequences, story transitions, error templates.
    Patterns(AnalyticsArgs),
    /// Per series: slope, significance (Mann-Kendall), rising / falling / stable.
    Trends(AnalyticsArgs),
    /// Anomalies found by the streaming detector.
    Anomalies(AnalyticsArgs),
    /// Score a CSV (timestamp,value) with the same streaming detector, offline.
    Detect(DetectArgs),
    /// Follow new events live, with query's filters (coloured lines, or --json).
    Tail(TailArgs),
    /// Publish one event from a shell.
    Emit(EmitArgs),
    /// Write the events a query selects to a .jsonl or .msgpack file (oldest first).
    Export(ExportArgs),
    /// Replay an export into the bus, or straight into a store directory (idempotent by id).
    Import(ImportArgs),
    /// Run the agent and a simulated game for a while, then report what it found.
    Demo(crate::demo::DemoArgs),
    /// Measure ingest, store, queries, analytics and the client against targets (own nats-server).
    Bench(crate::bench::BenchArgs),
    /// Check every stored block (checksums, decoding); --repair removes corrupt ones.
    Verify(VerifyArgs),
    /// Remove a player's events from every segment and from the analytics state (privacy).
    Forget(ForgetArgs),
}

/// `forget` flags.
#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// The player to forget.
    #[arg(long)]
    pub player: String,
    /// The agent's admin token.
    #[arg(long, env = "TRACE_AGENT_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Connection and output.
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// `verify` flags.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Remove corrupt blocks (destructive: through the agent it needs --token).
    #[arg(long)]
    pub repair: bool,
    /// Check this store directory directly (the agent must not be running on it) instead of
    /// asking the running agent.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The agent's admin token, for --repair through the agent.
    #[arg(long, env = "TRACE_AGENT_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Connection and output.
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// `top` flags.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// Print one frame and exit (no screen clearing).
    #[arg(long)]
    pub once: bool,
    /// Refresh interval.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Connection.
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// `run` flags.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// TOML configuration file (see README); env TRACE_AGENT_CONFIG.
    #[arg(long, env = "TRACE_AGENT_CONFIG")]
    pub config: Option<PathBuf>,
    /// NATS server URL [default: nats://127.0.0.1:4222]. Overrides the file and TRACE_AGENT_NATS_URL.
    #[arg(long)]
    pub nats_url: Option<String>,
    /// Store directory [default: ./trace-data]. Overrides the file and TRACE_AGENT_DATA_DIR.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Address of the HTTP endpoints /metrics and /health [default: 127.0.0.1:9464].
    #[arg(long = "http", value_name = "ADDR")]
    pub http_addr: Option<String>,
    /// NATS credentials and TLS (override the `[nats]` section).
    #[command(flatten)]
    pub auth: NatsArgs,
}

/// NATS credentials and TLS, for `run` (over the `[nats]` section) and every client command.
/// Each flag also reads its environment variable; secret values are never shown in `--help`.
#[derive(Debug, Args, Clone, Default)]
pub struct NatsArgs {
    /// NATS user name (with --nats-password).
    #[arg(long, env = "TRACE_AGENT_NATS_USER", value_name = "USER")]
    pub nats_user: Option<String>,
    /// NATS password. Prefer the environment variable: flags show in `ps`.
    #[arg(
        long,
        env = "TRACE_AGENT_NATS_PASSWORD",
        hide_env_values = true,
        value_name = "PASSWORD"
    )]
    pub nats_password: Option<String>,
    /// NATS authentication token. Prefer the environment variable.
    #[arg(
        long,
        env = "TRACE_AGENT_NATS_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub nats_token: Option<String>,
    /// NATS credentials file (.creds: user JWT and nkey seed).
    #[arg(long, env = "TRACE_AGENT_NATS_CREDS", value_name = "FILE")]
    pub nats_creds: Option<PathBuf>,
    /// File holding an nkey user seed (SU...).
    #[arg(long, env = "TRACE_AGENT_NATS_NKEY", value_name = "FILE")]
    pub nats_nkey: Option<PathBuf>,
    /// PEM CA certificate(s) the server's certificate must chain to (turns TLS on).
    #[arg(long, env = "TRACE_AGENT_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate, for servers that verify clients (with --tls-key).
    #[arg(long, env = "TRACE_AGENT_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "TRACE_AGENT_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
}

impl NatsArgs {
    /// The settings given, as `[nats]` keys with the flag that set each (for `run`, where they
    /// override the config file).
    pub fn flags(&self) -> Vec<NatsFlag> {
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        [
            ("user", "--nats-user", self.nats_user.clone()),
            ("password", "--nats-password", self.nats_password.clone()),
            ("token", "--nats-token", self.nats_token.clone()),
            ("creds_file", "--nats-creds", path(&self.nats_creds)),
            ("nkey_seed_file", "--nats-nkey", path(&self.nats_nkey)),
            ("tls_ca", "--tls-ca", path(&self.tls_ca)),
            ("tls_cert", "--tls-cert", path(&self.tls_cert)),
            ("tls_key", "--tls-key", path(&self.tls_key)),
        ]
        .into_iter()
        .filter_map(|(key, flag, value)| value.map(|value| NatsFlag { key, flag, value }))
        .collect()
    }

    /// The settings as a checked `NatsAuth` (client commands); the error names the flag.
    pub fn auth(&self) -> anyhow::Result<NatsAuth> {
        let auth = NatsAuth {
            user: self.nats_user.clone(),
            password: self.nats_password.clone(),
            token: self.nats_token.clone(),
            creds_file: self.nats_creds.clone(),
            nkey_seed_file: self.nats_nkey.clone(),
            tls_ca: self.tls_ca.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            ..NatsAuth::default()
        };
        auth.validate().map_err(|e| {
            let flag = self
                .flags()
                .into_iter()
                .find(|f| f.key == e.key)
                .map_or(e.key, |f| f.flag);
            anyhow::anyhow!("{flag}: {}", e.reason)
        })?;
        Ok(auth)
    }

    /// Connects to NATS at `url` with these settings.
    pub async fn connect(&self, url: &str, name: &str) -> anyhow::Result<async_nats::Client> {
        Ok(trace_core::bus::connect_auth(url, name, &self.auth()?).await?)
    }
}

/// How the CLI reaches a running agent.
#[derive(Debug, Args, Clone)]
pub struct ConnArgs {
    /// NATS server URL of the running agent.
    #[arg(
        long,
        env = "TRACE_AGENT_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,
    /// How long to wait for each answer (e.g. 5s).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Print JSON (JSON Lines for lists) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// NATS credentials and TLS.
    #[command(flatten)]
    pub auth: NatsArgs,
}

impl ConnArgs {
    /// Connects to the agent's API.
    pub async fn api(&self) -> anyhow::Result<ApiClient> {
        ApiClient::connect(&self.nats_url, &self.auth.auth()?, self.timeout).await
    }
}

/// `query` flags.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// Only events at or after this time: RFC 3339 or relative (15m, 2h, 7d ago).
    #[arg(long)]
    pub since: Option<String>,
    /// Only events before this time: RFC 3339 or relative.
    #[arg(long)]
    pub until: Option<String>,
    /// Event type, exact or a prefix ending in `.*` (player.*).
    #[arg(long = "type")]
    pub event_type: Option<String>,
    /// Emitting source.
    #[arg(long)]
    pub source: Option<String>,
    /// Category: state_change, player_action, system_event, agent_decision or another name.
    #[arg(long)]
    pub category: Option<String>,
    /// Minimum severity: trace, debug, info, warn, error, critical.
    #[arg(long)]
    pub severity: Option<String>,
    /// Player id.
    #[arg(long)]
    pub player: Option<String>,
    /// Session id.
    #[arg(long)]
    pub session: Option<String>,
    /// Most events to return, pages followed as needed [default: 100 for query, all for export].
    #[arg(long)]
    pub limit: Option<usize>,
    /// Oldest first instead of newest first.
    #[arg(long)]
    pub oldest_first: bool,
    /// Connection and output.
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// An event id argument.
#[derive(Debug, Args)]
pub struct IdArgs {
    /// The event id (ULID).
    pub id: String,
    /// Connection and output.
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// `quarantine` flags.
#[derive(Debug, Args)]
pub struct QuarantineArgs {
    /// Most records to show, newest first.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Connection and output.
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// `store-info` flags.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Connection and output.
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// Entries `query` returns when no `--limit` is given.
pub const DEFAULT_LIMIT: usize = 100;

/// Loads and validates the configuration of `run` (file < env < flags).
pub fn load_run_config(args: &RunArgs) -> anyhow::Result<AgentConfig> {
    let env: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("TRACE_AGENT_"))
        .collect();
    // clap fills the `--nats-*`/`--tls-*` flags from their variables too; a value that is the
    // variable's own is left to the environment layer, so an error names the variable.
    let mut nats = args.auth.flags();
    nats.retain(|f| {
        let var = NATS_ENV_ALIASES.iter().find(|(_, key)| *key == f.key);
        var.and_then(|(var, _)| env.get(*var)) != Some(&f.value)
    });
    let flags = FlagOverrides {
        nats_url: args.nats_url.clone(),
        data_dir: args.data_dir.clone(),
        http_addr: args.http_addr.clone(),
        nats,
    };
    Ok(AgentConfig::load(args.config.as_deref(), &env, &flags)?)
}

impl QueryArgs {
    /// Validates the filters into a `Query` (stage two of parsing).
    pub fn to_query(&self) -> anyhow::Result<Query> {
        let now = chrono::Utc::now();
        let time = |flag: &str, v: &Option<String>| -> anyhow::Result<_> {
            v.as_deref()
                .map(|s| parse_time_arg(s, now).map_err(|e| anyhow::anyhow!("--{flag}: {e}")))
                .transpose()
        };
        let severity = self
            .severity
            .as_deref()
            .map(|s| {
                s.parse::<Severity>()
                    .map_err(|e| anyhow::anyhow!("--severity: {e}"))
            })
            .transpose()?;
        if self.limit == Some(0) {
            anyhow::bail!("--limit must be at least 1");
        }
        let q = Query {
            since: time("since", &self.since)?,
            until: time("until", &self.until)?,
            event_type: self.event_type.clone(),
            source: self.source.clone(),
            category: self.category.as_deref().map(Category::parse),
            severity,
            player: self.player.clone(),
            session: self.session.clone(),
            limit: Some(self.limit.unwrap_or(DEFAULT_LIMIT).min(MAX_PAGE)),
            order: if self.oldest_first {
                Order::OldestFirst
            } else {
                Order::NewestFirst
            },
            cursor: None,
        };
        if let (Some(s), Some(u)) = (q.since, q.until) {
            if s >= u {
                anyhow::bail!("--since ({s}) must be before --until ({u})");
            }
        }
        Ok(q)
    }
}

/// What a client command asks the process to exit with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitCode(pub u8);

/// Runs a client command against a running agent; `health` sets the exit code.
pub async fn run_client(command: Command) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match command {
        Command::Run(_) => anyhow::bail!("`run` is not a client command"),
        Command::Query(args) => {
            let mut q = args.to_query()?;
            let limit = args.limit.unwrap_or(DEFAULT_LIMIT);
            let api = args.conn.api().await?;
            let cluster = Cluster::discover(&api).await?;
            let mut entries: Vec<TraceEntry> = Vec::new();
            loop {
                q.limit = Some((limit - entries.len()).min(MAX_PAGE));
                let (page, missing) = cluster.query_page(&q).await?;
                missing.warn();
                let got = page.entries.len();
                if args.conn.json {
                    for e in &page.entries {
                        writeln!(out, "{}", serde_json::to_string(e)?)?;
                    }
                }
                entries.extend(page.entries);
                match page.next_cursor {
                    Some(c) if entries.len() < limit && got > 0 => q.cursor = Some(c),
                    _ => break,
                }
            }
            if !args.conn.json {
                output::entries_table(&entries).print(&mut out)?;
                writeln!(out, "{} event(s)", entries.len())?;
            }
        }
        Command::Get(args) => {
            let api = args.conn.api().await?;
            let e = Cluster::discover(&api).await?.get(&args.id).await?;
            if args.conn.json {
                writeln!(out, "{}", serde_json::to_string(&e)?)?;
            } else {
                output::entry_detail(&e, &mut out)?;
            }
        }
        Command::Explain(args) => {
            let api = args.conn.api().await?;
            let reply = Cluster::discover(&api).await?.explain(&args.id).await?;
            if args.conn.json {
                for e in &reply.chain {
                    writeln!(out, "{}", serde_json::to_string(e)?)?;
                }
            } else {
                writeln!(
                    out,
                    "{} (the asked event first, then what caused it)",
                    plural(reply.chain.len(), "event")
                )?;
                output::entries_table(&reply.chain).print(&mut out)?;
            }
        }
        Command::Quarantine(args) => {
            let api = args.conn.api().await?;
            let req = QuarantineRequest {
                limit: Some(args.limit),
            };
            let (replies, missing) = Cluster::discover(&api)
                .await?
                .ask::<_, QuarantineReply>("quarantine", &req)
                .await?;
            missing.warn();
            let mut reply = QuarantineReply {
                total: replies.iter().map(|(_, r)| r.total).sum(),
                records: replies.into_iter().flat_map(|(_, r)| r.records).collect(),
            };
            reply
                .records
                .sort_by_key(|r| std::cmp::Reverse(r.received_at));
            reply.records.truncate(args.limit);
            if args.conn.json {
                for r in &reply.records {
                    writeln!(out, "{}", serde_json::to_string(r)?)?;
                }
            } else {
                output::quarantine_table(&reply.records).print(&mut out)?;
                writeln!(
                    out,
                    "{} shown, {} quarantined in all",
                    reply.records.len(),
                    reply.total
                )?;
            }
        }
        Command::Health(args) => {
            let api = match args.conn.api().await {
                Ok(api) => api,
                Err(e) => {
                    eprintln!("unhealthy: {e:#}");
                    return Ok(ExitCode(2));
                }
            };
            let asked = match Cluster::discover(&api).await {
                Ok(cluster) => {
                    cluster
                        .ask::<_, HealthStatus>("health", &serde_json::json!({}))
                        .await
                }
                Err(e) => Err(e),
            };
            let (answers, missing) = match asked {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("unhealthy: {e:#}");
                    return Ok(ExitCode(2));
                }
            };
            missing.warn();
            // the worst instance decides; one that did not answer is unhealthy
            let worst = answers
                .iter()
                .map(|(_, h)| h.status.exit_code())
                .chain(missing.0.iter().map(|_| 2))
                .max()
                .unwrap_or(2);
            match answers.as_slice() {
                [(_, health)] if missing.0.is_empty() => {
                    if args.conn.json {
                        writeln!(out, "{}", serde_json::to_string_pretty(health)?)?;
                    } else {
                        output::health(health, &mut out)?;
                    }
                }
                _ => {
                    if args.conn.json {
                        let map: BTreeMap<&str, &HealthStatus> =
                            answers.iter().map(|(n, h)| (n.as_str(), h)).collect();
                        let doc = serde_json::json!({ "exit_code": worst, "instances": map });
                        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
                    } else {
                        for (name, health) in &answers {
                            writeln!(out, "instance {name}:")?;
                            output::health(health, &mut out)?;
                        }
                    }
                }
            }
            out.flush().context("writing output")?;
            return Ok(ExitCode(worst.clamp(0, 2) as u8));
        }
        Command::Alerts(args) => {
            let api = args.conn.api().await?;
            let cluster = Cluster::discover(&api).await?;
            let (answers, missing) = cluster
                .ask::<_, AlertList>("alerts", &serde_json::json!({}))
                .await?;
            missing.warn();
            for (name, alerts) in &answers {
                if args.conn.json {
                    if cluster.is_scaled_out() {
                        let doc = serde_json::json!({ "instance": name, "alerts": alerts });
                        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
                    } else {
                        writeln!(out, "{}", serde_json::to_string_pretty(alerts)?)?;
                    }
                } else {
                    if cluster.is_scaled_out() {
                        writeln!(out, "instance {name}:")?;
                    }
                    output::alerts(alerts, &mut out)?;
                }
            }
        }
        Command::Stats(args) => crate::analytics_cli::run("stats", &args).await?,
        Command::Players(args) => crate::analytics_cli::run("players", &args).await?,
        Command::Patterns(args) => crate::analytics_cli::run("patterns", &args).await?,
        Command::Trends(args) => crate::analytics_cli::run("trends", &args).await?,
        Command::Anomalies(args) => crate::analytics_cli::run("anomalies", &args).await?,
        Command::Detect(args) => crate::analytics_cli::detect(&args)?,
        Command::Tail(args) => {
            drop(out);
            crate::tools::tail(&args).await?;
            return Ok(ExitCode(0));
        }
        Command::Emit(args) => crate::tools::emit(&args).await?,
        Command::Export(args) => crate::tools::export(&args).await?,
        Command::Import(args) => crate::tools::import(&args).await?,
        Command::Forget(args) => {
            let api = args.conn.api().await?;
            let req = crate::api::ForgetRequest {
                player: args.player.clone(),
                token: args.token.clone(),
            };
            let (replies, missing) = Cluster::discover(&api)
                .await?
                .ask::<_, crate::api::ForgetReply>("forget", &req)
                .await?;
            missing.warn();
            let reply = crate::api::ForgetReply {
                player: args.player.clone(),
                events_removed: replies.iter().map(|(_, r)| r.events_removed).sum(),
                analytics_state_removed: replies.iter().any(|(_, r)| r.analytics_state_removed),
            };
            if args.conn.json {
                writeln!(out, "{}", serde_json::to_string(&reply)?)?;
            } else {
                writeln!(
                    out,
                    "forgot player {}: {} stored events removed{}",
                    reply.player,
                    reply.events_removed,
                    if reply.analytics_state_removed {
                        ", analytics state removed"
                    } else {
                        ""
                    }
                )?;
            }
        }
        Command::Verify(args) => {
            let report: trace_store::VerifyReport = match &args.data_dir {
                Some(dir) => {
                    let (dir, repair) = (dir.clone(), args.repair);
                    tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
                        let store = trace_store::Store::open(trace_store::StoreConfig::at(&dir))
                            .with_context(|| format!("opening the store in {}", dir.display()))?;
                        Ok(store.verify(repair)?)
                    })
                    .await??
                }
                None => {
                    let api = args.conn.api().await?;
                    let req = crate::api::VerifyRequest {
                        repair: args.repair,
                        token: args.token.clone(),
                    };
                    let (replies, missing) = Cluster::discover(&api)
                        .await?
                        .ask::<_, trace_store::VerifyReport>("verify", &req)
                        .await?;
                    missing.warn();
                    let several = replies.len() > 1;
                    let mut total = trace_store::VerifyReport::default();
                    for (name, r) in replies {
                        total.segments += r.segments;
                        total.blocks += r.blocks;
                        total.repaired += r.repaired;
                        total.corrupt.extend(r.corrupt.into_iter().map(|mut c| {
                            if several {
                                c.segment = format!("{name}/{}", c.segment);
                            }
                            c
                        }));
                    }
                    total
                }
            };
            if args.conn.json {
                writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
            } else {
                writeln!(
                    out,
                    "checked {} blocks in {} segments: {} corrupt{}",
                    report.blocks,
                    report.segments,
                    report.corrupt.len(),
                    if args.repair {
                        format!(", {} removed", report.repaired)
                    } else {
                        String::new()
                    }
                )?;
                if !report.corrupt.is_empty() {
                    let mut t = output::Table::new(&["SEGMENT", "BLOCK", "EVENTS", "PROBLEM"]);
                    for c in &report.corrupt {
                        t.row(vec![
                            c.segment.clone(),
                            c.block.to_string(),
                            c.events.to_string(),
                            c.detail.clone(),
                        ]);
                    }
                    t.print(&mut out)?;
                }
            }
            out.flush().context("writing output")?;
            return Ok(ExitCode(if report.corrupt.is_empty() || args.repair {
                0
            } else {
                1
            }));
        }
        Command::Demo(args) => {
            drop(out);
            crate::demo::run(&args).await?;
            return Ok(ExitCode(0));
        }
        Command::Bench(args) => {
            drop(out);
            crate::bench::run(&args).await?;
            return Ok(ExitCode(0));
        }
        Command::Top(args) => {
            drop(out);
            crate::top::run(&args).await?;
            return Ok(ExitCode(0));
        }
        Command::StoreInfo(args) => {
            let api = args.conn.api().await?;
            let cluster = Cluster::discover(&api).await?;
            let (answers, missing) = cluster
                .ask::<_, StoreInfoReply>("store_info", &serde_json::json!({}))
                .await?;
            missing.warn();
            match answers.as_slice() {
                [(_, info)] if !cluster.is_scaled_out() => {
                    if args.conn.json {
                        writeln!(out, "{}", serde_json::to_string_pretty(info)?)?;
                    } else {
                        output::store_info(info, &mut out)?;
                    }
                }
                _ => {
                    let events: u64 = answers.iter().map(|(_, i)| i.store.events).sum();
                    let bytes: u64 = answers.iter().map(|(_, i)| i.store.bytes_on_disk).sum();
                    if args.conn.json {
                        let map: BTreeMap<&str, &StoreInfoReply> =
                            answers.iter().map(|(n, i)| (n.as_str(), i)).collect();
                        let doc = serde_json::json!({
                            "events": events, "bytes_on_disk": bytes, "instances": map
                        });
                        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
                    } else {
                        for (name, info) in &answers {
                            writeln!(out, "instance {name}:")?;
                            output::store_info(info, &mut out)?;
                        }
                        writeln!(
                            out,
                            "{} instances: {events} events, {} on disk",
                            answers.len(),
                            trace_core::human::format_bytes(bytes)
                        )?;
                    }
                }
            }
        }
    }
    out.flush().context("writing output")?;
    Ok(ExitCode(0))
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}
