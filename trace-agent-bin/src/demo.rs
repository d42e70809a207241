//! `trace-agent demo`: the newcomer's first command. It finds or starts a NATS server, runs the
//! agent in-process on a temporary store, plays the simulated game (an hour and a half of
//! back-dated history with an error storm and a latency regression, then live traffic with a
//! silent NPC), and prints what the agent found: events per source and type, top players,
//! patterns, trends, anomalies (the injected faults must be among them), alerts and health.

use std::io::{IsTerminal, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use chrono::Utc;
use clap::Args;
use serde_json::Value;
use tokio::sync::oneshot;
use trace_core::human::parse_duration;

use crate::api::ApiClient;
use crate::config::AgentConfig;
use crate::sim::{GameSim, SimConfig};
use crate::tools::WindowedPublisher;

/// `demo` flags.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// How long the live part runs.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Live events per second (the history runs at 10/s: a much higher live rate shows up,
    /// rightly, as a traffic spike).
    #[arg(long, default_value_t = 10)]
    pub rate: u32,
    /// Use the NATS server at this URL (default: a private nats-server if one is installed,
    /// else nats://127.0.0.1:4222).
    #[arg(long, env = "TRACE_AGENT_NATS_URL")]
    pub nats_url: Option<String>,
    /// Keep the demo's store directory (printed at the end).
    #[arg(long)]
    pub keep: bool,
}

/// A nats-server the demo (or the bench) started for itself; killed on drop.
pub(crate) struct PrivateNats {
    child: Child,
    _dir: tempfile::TempDir,
    pub(crate) url: String,
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn nats_server_binary() -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("nats-server"))
        .chain([
            PathBuf::from("/usr/sbin/nats-server"),
            PathBuf::from("/usr/local/bin/nats-server"),
        ])
        .find(|p| p.is_file())
}

fn answers(url: &str) -> bool {
    let hostport = url.split("://").nth(1).unwrap_or(url);
    let hostport = hostport.rsplit('@').next().unwrap_or(hostport);
    use std::net::ToSocketAddrs;
    hostport
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|addr| TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok())
}

pub(crate) fn start_private_nats(binary: &PathBuf) -> anyhow::Result<PrivateNats> {
    let dir = tempfile::tempdir().context("creating a temp dir for nats-server")?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let log = std::fs::File::create(dir.path().join("nats-server.log"))?;
    let child = Command::new(binary)
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(dir.path().join("js"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let url = format!("nats://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !answers(&url) {
        if Instant::now() > deadline {
            bail!(
                "nats-server did not start on {url}; see {}",
                dir.path().join("nats-server.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(PrivateNats {
        child,
        _dir: dir,
        url,
    })
}

/// A line that rewrites itself on a terminal and is printed now and then elsewhere.
pub(crate) fn status(line: &str, tty: bool) {
    if tty {
        eprint!("\r{line}\x1b[K");
    } else {
        eprintln!("{line}");
    }
}

/// Runs the demo; an error means a part failed (the message says which).
pub async fn run(args: &DemoArgs) -> anyhow::Result<()> {
    let tty = std::io::stderr().is_terminal();
    // Where NATS is: the given URL, else a private server (never touching your streams), else
    // a local default one.
    let mut private = None;
    let url = match &args.nats_url {
        Some(u) => {
            if !answers(u) {
                bail!("no NATS server answers at {u}");
            }
            u.clone()
        }
        None => match nats_server_binary() {
            Some(bin) => {
                let p = start_private_nats(&bin)?;
                let url = p.url.clone();
                eprintln!("demo: started a private nats-server with JetStream at {url}");
                private = Some(p);
                url
            }
            None if answers("nats://127.0.0.1:4222") => "nats://127.0.0.1:4222".to_owned(),
            None => bail!(
                "no NATS server answers at nats://127.0.0.1:4222 and nats-server is not installed.\n\
                 Install it (Debian/Ubuntu: sudo apt-get install nats-server; or a release from\n\
                 https://github.com/nats-io/nats-server/releases) and run the demo again."
            ),
        },
    };
    let data = tempfile::Builder::new()
        .prefix("trace-demo-")
        .tempdir()
        .context("creating the demo store dir")?;
    let mut config = AgentConfig {
        nats_url: url.clone(),
        data_dir: data.path().join("store"),
        ..AgentConfig::default()
    };
    config.monitor.http_addr = SocketAddr::from(([127, 0, 0, 1], 0));
    // the silent NPC should page within the demo, not after a minute
    config.rules = vec![trace_monitor::RuleConfig {
        name: "source_silent".into(),
        value: Some(5.0),
        ..trace_monitor::RuleConfig::default()
    }];
    config
        .validate()
        .map_err(|(k, why)| anyhow::anyhow!("demo config `{k}`: {why}"))?;

    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let agent = tokio::spawn(crate::agent::run(config, async {
        let _ = stop_rx.await;
    }));
    let api = ApiClient::connect(&url, &Default::default(), Duration::from_secs(10)).await?;
    let ready = Instant::now() + Duration::from_secs(20);
    while api
        .call::<_, Value>("store_info", &serde_json::json!({}))
        .await
        .is_err()
    {
        if agent.is_finished() || Instant::now() > ready {
            let _ = stop_tx.send(());
            return match agent.await {
                Ok(Err(e)) => Err(e.context("the agent did not start")),
                _ => Err(anyhow::anyhow!("the agent did not answer within 20s")),
            };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let outcome = play_and_report(args, &url, &api, tty).await;
    let _ = stop_tx.send(());
    match agent.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("demo: the agent stopped with an error: {e:#}"),
        Err(e) => eprintln!("demo: the agent task failed: {e}"),
    }
    if args.keep {
        let kept = data.keep();
        eprintln!("demo: store kept in {}", kept.display());
    }
    drop(private);
    outcome
}

async fn play_and_report(
    args: &DemoArgs,
    url: &str,
    api: &ApiClient,
    tty: bool,
) -> anyhow::Result<()> {
    let client = trace_core::bus::connect(url, "trace-agent-demo").await?;
    let mut publisher = WindowedPublisher::new(async_nats::jetstream::new(client));
    let mut sim = GameSim::new(SimConfig::default());
    let started = Utc::now();

    // 1. history
    let history = sim.history(started);
    let total_history = history.len();
    for (i, e) in history.iter().enumerate() {
        publisher.publish(&e.subject, &e.entry).await?;
        if i % 2000 == 0 {
            status(
                &format!("demo: publishing 90 minutes of game history {i}/{total_history}"),
                tty,
            );
        }
    }
    publisher.finish().await?;
    let mut sent = total_history as u64;

    // 2. live, with one NPC gone silent
    let live_start = Instant::now();
    let tick = Duration::from_millis(250);
    let per_tick = ((args.rate as f64) * tick.as_secs_f64()).round().max(1.0) as usize;
    while live_start.elapsed() < args.duration {
        let batch = sim.live(Utc::now(), tick, per_tick);
        for e in &batch {
            publisher.publish(&e.subject, &e.entry).await?;
        }
        sent += batch.len() as u64;
        let info: Value = api
            .call("store_info", &serde_json::json!({}))
            .await
            .unwrap_or_default();
        let alerts: Value = api
            .call("alerts", &serde_json::json!({}))
            .await
            .unwrap_or_default();
        status(
            &format!(
                "demo: live {:>3.0}s/{:.0}s  sent {sent}  stored {}  alerts firing {}",
                live_start.elapsed().as_secs_f64(),
                args.duration.as_secs_f64(),
                info["events"].as_u64().unwrap_or(0),
                alerts["firing"].as_array().map_or(0, Vec::len)
            ),
            tty,
        );
        tokio::time::sleep(tick).await;
    }
    publisher.finish().await?;
    // 3. everything stored
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let info: Value = api.call("store_info", &serde_json::json!({})).await?;
        let stored = info["recorder"]["stored"].as_u64().unwrap_or(0);
        if stored >= sent {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {stored} of {sent} events were stored within a minute");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // the silent NPC pages 5 s after its last event: give the rule a moment if the live part
    // was shorter than that
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let alerts: Value = api
            .call("alerts", &serde_json::json!({}))
            .await
            .unwrap_or_default();
        let fired = alerts["firing"]
            .as_array()
            .into_iter()
            .chain(alerts["resolved"].as_array())
            .flatten()
            .any(|a| a["rule"] == "source_silent" && a["labels"]["source"] == "npc-4");
        if fired {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if tty {
        eprintln!();
    }
    report(api, sent).await
}

async fn report(api: &ApiClient, sent: u64) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let range =
        serde_json::json!({ "since": (Utc::now() - chrono::Duration::hours(2)).to_rfc3339() });
    let stats: Value = api.call("stats", &range).await?;
    let players: Value = api.call("players", &range).await?;
    let patterns: Value = api.call("patterns", &range).await?;
    let trends: Value = api.call("trends", &range).await?;
    let anomalies: Value = api.call("anomalies", &range).await?;
    let alerts: Value = api.call("alerts", &serde_json::json!({})).await?;
    let health: Value = api.call("health", &serde_json::json!({})).await?;
    let info: Value = api.call("store_info", &serde_json::json!({})).await?;

    writeln!(out, "\n== trace-agent demo report ==")?;
    writeln!(
        out,
        "stored {} of {sent} events sent, in {} segment(s), {} on disk ({:.1}x compression), {} quarantined",
        info["events"], info["segments"], trace_core::human::format_bytes(info["bytes_on_disk"].as_u64().unwrap_or(0)),
        info["compression_ratio"].as_f64().unwrap_or(0.0), info["quarantined"]
    )?;
    let s = &stats["report"]["stats"];
    let counts = |v: &Value| -> Vec<(String, u64)> {
        let mut rows: Vec<(String, u64)> = match v {
            Value::Array(items) => items
                .iter()
                .filter_map(|i| Some((i["name"].as_str()?.to_owned(), i["count"].as_u64()?)))
                .collect(),
            Value::Object(map) => map
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_u64().or_else(|| v["count"].as_u64())?)))
                .collect(),
            _ => Vec::new(),
        };
        rows.sort_by_key(|r| std::cmp::Reverse(r.1));
        rows
    };
    writeln!(out, "\nevents per source:")?;
    for (name, n) in counts(&s["by_source"]).iter().take(10) {
        writeln!(out, "  {name:<16} {n}")?;
    }
    writeln!(out, "\nevents per type:")?;
    for (name, n) in counts(&s["by_type"]).iter().take(10) {
        writeln!(out, "  {name:<20} {n}")?;
    }
    writeln!(out, "\ntop players:")?;
    if let Some(top) = players["report"]["top_players"].as_array() {
        for p in top.iter().take(5) {
            writeln!(
                out,
                "  {:<12} {} events, {} sessions",
                p["player"].as_str().unwrap_or("?"),
                p["events"],
                p["sessions"]
            )?;
        }
    }
    writeln!(out, "\ntop patterns (A -> B within sessions):")?;
    if let Some(rows) = patterns["report"]["transitions"].as_array() {
        for t in rows.iter().take(5) {
            writeln!(
                out,
                "  {} -> {}  x{}",
                t["from"].as_str().unwrap_or("?"),
                t["to"].as_str().unwrap_or("?"),
                t["count"]
            )?;
        }
    }
    if let Some(rows) = patterns["report"]["error_templates"].as_array() {
        for t in rows.iter().take(3) {
            writeln!(
                out,
                "  error template x{}: {}",
                t["count"],
                t["template"].as_str().unwrap_or("?")
            )?;
        }
    }
    writeln!(out, "\ntrends:")?;
    if let Some(rows) = trends["report"]["series"].as_array() {
        for t in rows.iter().filter(|t| t["verdict"] != "stable").take(6) {
            writeln!(
                out,
                "  {:<36} {} ({})",
                t["series"].as_str().unwrap_or("?"),
                t["verdict"].as_str().unwrap_or("?"),
                t["relative_change"]
            )?;
        }
    }
    let mut found: Vec<&Value> = anomalies["report"]["anomalies"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    // strongest first
    found.sort_by(|a, b| {
        b["score"]
            .as_f64()
            .unwrap_or(0.0)
            .total_cmp(&a["score"].as_f64().unwrap_or(0.0))
    });
    writeln!(out, "\nanomalies found: {}", found.len())?;
    for a in found.iter().take(10) {
        writeln!(
            out,
            "  {} {:<36} {} value {} expected {} score {}",
            a["ts"].as_str().unwrap_or("?"),
            a["series"].as_str().unwrap_or("?"),
            a["kind"].as_str().unwrap_or("?"),
            a["value"],
            a["expected"],
            a["score"]
        )?;
    }
    let alert_list: Vec<&Value> = alerts["firing"]
        .as_array()
        .into_iter()
        .chain(alerts["resolved"].as_array())
        .flatten()
        .collect();
    writeln!(out, "\nalerts fired: {}", alert_list.len())?;
    for a in alert_list.iter().take(8) {
        writeln!(
            out,
            "  [{}] {} ({}): {}",
            a["severity"].as_str().unwrap_or("?"),
            a["rule"].as_str().unwrap_or("?"),
            a["state"].as_str().unwrap_or("?"),
            a["message"].as_str().unwrap_or("")
        )?;
    }
    writeln!(
        out,
        "\nhealth: {}",
        health["status"].as_str().unwrap_or("?")
    )?;
    writeln!(
        out,
        "\nto explore further, run an agent (scripts/run) and try:"
    )?;
    for c in [
        "trace-agent query --since 15m --type 'player.*'",
        "trace-agent stats --since 2h",
        "trace-agent patterns --since 2h",
        "trace-agent anomalies --since 2h",
        "trace-agent alerts",
        "trace-agent top",
    ] {
        writeln!(out, "  {c}")?;
    }

    out.flush()?;

    // the demo fails loudly if the agent missed what the game did
    let storm = found.iter().any(|a| {
        a["series"] == "error_rate"
            || a["series"]
                .as_str()
                .is_some_and(|s| s.contains("system.error"))
    });
    let latency = found.iter().any(|a| {
        a["series"]
            .as_str()
            .is_some_and(|s| s.contains("latency_ms"))
    });
    let silent = alert_list
        .iter()
        .any(|a| a["rule"] == "source_silent" && a["labels"]["source"] == "npc-4");
    let stored = info["events"].as_u64().unwrap_or(0);
    let mut failures = Vec::new();
    if stored < sent {
        failures.push(format!("stored {stored} of {sent} events"));
    }
    if !storm {
        failures.push("the injected error storm was not found among the anomalies".to_owned());
    }
    if !latency {
        failures
            .push("the injected latency regression was not found among the anomalies".to_owned());
    }
    if !silent {
        failures.push("no source_silent alert for the silent npc-4".to_owned());
    }
    if failures.is_empty() {
        writeln!(
            out,
            "\ndemo: OK (error storm, latency regression and silent agent all detected)"
        )?;
        Ok(())
    } else {
        bail!("demo: {}", failures.join("; "))
    }
}
