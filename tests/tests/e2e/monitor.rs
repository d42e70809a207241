//! Monitoring end to end: threshold rules and their alerts (published on `trace.alerts.>`,
//! listed by `trace-agent alerts`, recorded as `trace.alert` entries), health over HTTP, the
//! API and the CLI through a NATS outage, `/metrics` checked with a Prometheus text parser
//! against the traffic sent, a silent source, and bad rules refused at start.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use trace_core::Severity;
use trace_tests::{
    eventually, free_local_addr, publish_js, Agent, AgentOptions, AlertWatch, Cli, CliOutput,
    GameSource, GameTraffic, HttpResponse, JsPublisher, NatsServer, Outgoing, STREAM,
};

use crate::util::{bounded, now_ms, wait_drained, wait_for_counts};

/// The time limit of each test.
const TEST_LIMIT: Duration = Duration::from_secs(60);
/// How long one CLI invocation may take.
const CLI_LIMIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------
// 1. A custom rule fires after its `for` window, once, and resolves, once.
// ---------------------------------------------------------------------------------------

const BUSY_RULE: &str = "npc1_busy";

/// A 3 s rate window so the rate falls back soon after the burst; no built-in rules, so
/// every alert is the one under test.
const BUSY_CONFIG: &str = r#"
[monitor]
builtin_rules = false

[monitor.metrics]
window = "3s"

[[rules]]
name = "npc1_busy"
metric = 'trace_source_events_per_second{source="npc1"}'
op = ">"
value = 5
for = "2s"
severity = "warn"
message = "{{labels.source}} sends {{value}} events/s"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_rule_fires_after_its_for_window_and_resolves_once() -> anyhow::Result<()> {
    bounded(TEST_LIMIT, async {
        let nats = NatsServer::start().await?;
        let agent =
            Agent::start(&nats.client_url(), AgentOptions::with_config(BUSY_CONFIG)).await?;
        let cli = Cli::new(&nats.client_url())?.with_timeout(CLI_LIMIT);
        let mut watch = AlertWatch::start(&nats.client_url()).await?;
        let js = nats.jetstream().await?;
        let mut traffic = GameTraffic::new(0x5EED_A1E7);

        let list = alert_list(&cli).await?;
        ensure!(
            alerts_in(&list, "firing", BUSY_RULE)?.is_empty(),
            "{BUSY_RULE} fires before any traffic: {list}"
        );

        // A sustained burst from npc1, about 20 events/s, until the rule fires. The condition
        // cannot hold before the first event, so nothing may fire in the first 2 s.
        let started = Instant::now();
        let started_wall = Utc::now();
        let mut sent = 0u64;
        let mut early_check = false;
        let fired = loop {
            let message = traffic.msgpack_envelope(GameSource::Npc1, now_ms());
            publish_js(&js, &message.subject, message.payload.clone()).await?;
            sent += 1;
            watch.collect(Duration::ZERO).await?;
            if let Some(n) = watch.notices().iter().find(|n| n.rule() == BUSY_RULE) {
                break n.clone();
            }
            if !early_check && started.elapsed() >= Duration::from_secs(1) {
                early_check = true;
                let list = alert_list(&cli).await?;
                // Only meaningful if the answer came within the `for` window.
                if started.elapsed() < Duration::from_millis(1900) {
                    ensure!(
                        alerts_in(&list, "firing", BUSY_RULE)?.is_empty(),
                        "{BUSY_RULE} fires {:?} after the burst began, before its `for` \
                         window of 2s: {list}",
                        started.elapsed()
                    );
                }
            }
            ensure!(
                started.elapsed() < Duration::from_secs(20),
                "{BUSY_RULE} did not fire within 20s of a burst of {sent} events at ~20/s; \
                 notifications: {}",
                watch.summary()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let fired_after = fired.arrived.duration_since(started);
        ensure!(
            fired.state() == "firing",
            "the first notification of {BUSY_RULE} is not `firing`: {}",
            fired.alert
        );
        ensure!(
            fired_after >= Duration::from_secs(2),
            "{BUSY_RULE} fired {fired_after:?} after the burst began, before its `for` window"
        );
        let started_at = time_field(&fired.alert, "started_at")?;
        ensure!(
            started_at - started_wall >= chrono::TimeDelta::milliseconds(1990),
            "the alert started at {started_at}, less than 2s after the burst began at \
             {started_wall}: {}",
            fired.alert
        );
        check_notice_shape(&fired, "warn")?;
        ensure!(
            fired.label("source") == Some("npc1")
                && fired.alert["value"].as_f64().is_some_and(|v| v > 5.0)
                && fired.alert["threshold"].as_f64() == Some(5.0),
            "the firing alert does not carry the series and values: {}",
            fired.alert
        );
        ensure!(
            fired.alert["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("npc1 sends ")),
            "the message template was not rendered: {}",
            fired.alert
        );

        // Still bursting: `alerts --json` lists it as firing.
        let list = alert_list(&cli).await?;
        let firing = alerts_in(&list, "firing", BUSY_RULE)?;
        ensure!(
            firing.len() == 1
                && firing[0]["state"] == "firing"
                && firing[0]["labels"]["source"] == "npc1",
            "`alerts --json` does not list {BUSY_RULE} firing once for npc1: {list}"
        );

        // Stop: the rate falls under 5/s within the 3 s window and the alert resolves.
        let stopped = Instant::now();
        let resolved = watch
            .wait_for(
                &format!("{BUSY_RULE} resolved"),
                Duration::from_secs(20),
                |n| n.is(BUSY_RULE, "resolved"),
            )
            .await?;
        check_notice_shape(&resolved, "warn")?;
        let resolved_at = time_field(&resolved.alert, "resolved_at")?;
        ensure!(
            time_field(&resolved.alert, "started_at")? == started_at && resolved_at > started_at,
            "the resolved alert does not keep started_at {started_at} or has no later \
             resolved_at: {}",
            resolved.alert
        );
        eprintln!(
            "{BUSY_RULE}: fired {fired_after:?} after the burst began, resolved {:?} after \
             it stopped ({sent} events sent)",
            resolved.arrived.duration_since(stopped)
        );

        // One more evaluation or two: no duplicate and no re-notification.
        watch.collect(Duration::from_millis(2500)).await?;
        let of_rule = watch.of_rule(BUSY_RULE);
        let firing_n = of_rule.iter().filter(|n| n.state() == "firing").count();
        let resolved_n = of_rule.iter().filter(|n| n.state() == "resolved").count();
        ensure!(
            firing_n == 1 && resolved_n == 1 && of_rule.len() == 2,
            "expected exactly one firing and one resolved notification of {BUSY_RULE}, got: {}",
            watch.summary()
        );

        let list = alert_list(&cli).await?;
        let resolved_list = alerts_in(&list, "resolved", BUSY_RULE)?;
        ensure!(
            alerts_in(&list, "firing", BUSY_RULE)?.is_empty()
                && resolved_list.len() == 1
                && resolved_list[0]["state"] == "resolved"
                && resolved_list[0]["resolved_at"].is_string(),
            "`alerts --json` does not show {BUSY_RULE} resolved (and no longer firing): {list}"
        );
        let api = agent
            .request("alerts", &json!({}))
            .await
            .map_err(|e| anyhow::anyhow!("trace.api.alerts: {e}"))?;
        ensure!(
            alerts_in(&api, "resolved", BUSY_RULE)?.len() == 1,
            "trace.api.alerts does not list the resolved alert: {api}"
        );

        // Both notifications are recorded as trace entries.
        let recorded = eventually(
            "a firing and a resolved trace.alert entry",
            Duration::from_secs(15),
            || async {
                let lines = cli.query(&["--type", "trace.alert"]).await?;
                let of_rule: Vec<_> = lines
                    .into_iter()
                    .filter(|l| l.data["rule"] == BUSY_RULE)
                    .collect();
                let states: Vec<String> = of_rule
                    .iter()
                    .map(|l| l.data["state"].as_str().unwrap_or("?").to_owned())
                    .collect();
                if states.iter().any(|s| s == "firing") && states.iter().any(|s| s == "resolved") {
                    Ok(ControlFlow::Break(of_rule))
                } else {
                    Ok(ControlFlow::Continue(format!("states {states:?}")))
                }
            },
        )
        .await?;
        ensure!(
            recorded.len() == 2,
            "expected 2 recorded alerts of {BUSY_RULE}, got {}: {:?}",
            recorded.len(),
            recorded.iter().map(|l| &l.raw).collect::<Vec<_>>()
        );
        for line in &recorded {
            ensure!(
                line.event_type == "trace.alert"
                    && line.source == "trace-agent"
                    && line.severity == Severity::Warn
                    && line.data["labels"]["source"] == "npc1"
                    && line.data["threshold"].as_f64() == Some(5.0)
                    && line.data["started_at"].is_string()
                    && line.data["message"].is_string(),
                "a recorded alert lacks the contract's fields: {}",
                line.raw
            );
        }
        Ok(())
    })
    .await
}

// ---------------------------------------------------------------------------------------
// 2. A NATS outage: unhealthy while the server is down, healthy again after it returns.
// ---------------------------------------------------------------------------------------

/// Free disk on a test machine may be below the 512 MiB default; only NATS matters here.
const OUTAGE_CONFIG: &str = r#"
[monitor.health]
min_free_disk_bytes = 1
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_outage_turns_health_unhealthy_and_recovers_without_restart() -> anyhow::Result<()> {
    bounded(TEST_LIMIT, async {
        let mut nats = NatsServer::start().await?;
        let mut agent =
            Agent::start(&nats.client_url(), AgentOptions::with_config(OUTAGE_CONFIG)).await?;
        let pid = agent.pid();
        let cli = Cli::new(&nats.client_url())?.with_timeout(CLI_LIMIT);
        let mut traffic = GameTraffic::new(0x0D0A);

        wait_health(&agent, 200, "healthy", Duration::from_secs(20)).await?;
        expect_status(&agent, "/health/live", 200).await?;
        expect_status(&agent, "/health/ready", 200).await?;
        let (code, report) = health_cli(&cli).await?;
        ensure!(
            code == Some(0) && report.as_ref().is_some_and(|r| r["status"] == "healthy"),
            "`trace-agent health` before the outage: exit {code:?}, report {report:?}"
        );
        publish_some(&nats, &mut traffic, 5).await?;
        wait_for_counts(&agent, 5, 0, Duration::from_secs(15)).await?;

        nats.stop().await?;
        let down = Instant::now();
        let report = wait_health(&agent, 503, "unhealthy", Duration::from_secs(20)).await?;
        let nats_check = check_named(&report, "nats")?;
        ensure!(
            nats_check["status"] == "unhealthy",
            "health is unhealthy but the nats check is not failing: {report}"
        );
        eprintln!(
            "health turned unhealthy {:?} after the server stopped",
            down.elapsed()
        );
        expect_status(&agent, "/health/ready", 503).await?;
        expect_status(&agent, "/health/live", 200).await?;
        let (code, _) = health_cli(&cli).await?;
        ensure!(
            code == Some(2),
            "`trace-agent health` with the server down exited {code:?}, expected 2 (unreachable)"
        );
        ensure!(
            agent.is_running(),
            "the agent exited during the outage{}",
            agent.log_tail(40)
        );

        nats.restart().await?;
        let up = Instant::now();
        let report = wait_health(&agent, 200, "healthy", Duration::from_secs(30)).await?;
        ensure!(
            check_named(&report, "nats")?["status"] == "healthy",
            "healthy without a healthy nats check: {report}"
        );
        eprintln!(
            "health turned healthy {:?} after the server restarted",
            up.elapsed()
        );
        expect_status(&agent, "/health/ready", 200).await?;
        eventually(
            "`trace-agent health` to exit 0 after the restart",
            Duration::from_secs(15),
            || async {
                let (code, report) = health_cli(&cli).await?;
                Ok(if code == Some(0) {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(format!("exit {code:?}, report {report:?}"))
                })
            },
        )
        .await?;
        ensure!(
            agent.is_running() && agent.pid() == pid,
            "the agent was restarted or exited (pid {pid:?} -> {:?})",
            agent.pid()
        );

        // And it records again.
        publish_some(&nats, &mut traffic, 5).await?;
        wait_for_counts(&agent, 10, 0, Duration::from_secs(20)).await?;
        Ok(())
    })
    .await
}

// ---------------------------------------------------------------------------------------
// 3. `/metrics` parses as Prometheus text and its counters match what was sent.
// ---------------------------------------------------------------------------------------

/// No rules: no alert entries are recorded, so every counter is about the traffic sent.
const METRICS_CONFIG: &str = r#"
[monitor]
builtin_rules = false
"#;

/// What the counters must say after the traffic of [`metrics_traffic`].
#[derive(Debug, Default)]
struct ExpectedCounters {
    received: f64,
    stored: f64,
    quarantined: BTreeMap<String, f64>,
    /// (source, type) -> entries.
    source_events: BTreeMap<(String, String), f64>,
    /// source -> entries of severity error or critical.
    source_errors: BTreeMap<String, f64>,
}

fn metrics_traffic() -> (Vec<Outgoing>, ExpectedCounters) {
    let mut traffic = GameTraffic::new(0x3E7_81C5);
    let now = now_ms();
    let mut out = Vec::new();
    for (i, source) in GameSource::ALL.into_iter().enumerate() {
        // Different counts per source, so a mix-up between sources shows.
        for _ in 0..(30 + 10 * i) {
            out.push(traffic.msgpack_envelope(source, now));
        }
        for _ in 0..(5 + i) {
            out.push(traffic.json_envelope(source, now));
        }
        out.push(traffic.raw_msgpack(source));
        out.push(traffic.raw_json(source));
        out.push(traffic.raw_text(source));
        out.push(traffic.raw_protobuf(source));
    }
    out.extend(traffic.garbage(now));
    let mut expected = ExpectedCounters {
        received: out.len() as f64,
        ..ExpectedCounters::default()
    };
    for message in &out {
        match &message.expect {
            trace_tests::Expect::Stored(e) => {
                expected.stored += 1.0;
                *expected
                    .source_events
                    .entry((e.source.clone(), e.event_type.clone()))
                    .or_default() += 1.0;
                let errors = expected.source_errors.entry(e.source.clone()).or_default();
                if e.severity >= Severity::Error {
                    *errors += 1.0;
                }
            }
            trace_tests::Expect::Quarantined { kind, .. } => {
                *expected.quarantined.entry((*kind).to_owned()).or_default() += 1.0;
            }
        }
    }
    (out, expected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_match_the_traffic() -> anyhow::Result<()> {
    bounded(TEST_LIMIT, async {
        let nats = NatsServer::start().await?;
        let agent = Agent::start(
            &nats.client_url(),
            AgentOptions::with_config(METRICS_CONFIG),
        )
        .await?;
        let (outgoing, expected) = metrics_traffic();
        let js = nats.jetstream().await?;
        let mut publisher = JsPublisher::new(js.clone());
        for message in &outgoing {
            publisher.send(message).await?;
        }
        publisher.flush().await?;
        ensure!(publisher.duplicates() == 0, "JetStream dropped duplicates");
        let garbage: f64 = expected.quarantined.values().sum();
        wait_for_counts(
            &agent,
            expected.stored as u64,
            garbage as u64,
            Duration::from_secs(30),
        )
        .await?;
        wait_drained(&js, Duration::from_secs(20)).await?;

        let scrape = eventually(
            "/metrics to count exactly the traffic sent",
            Duration::from_secs(15),
            || async {
                let response = agent.http_get("/metrics").await?;
                ensure!(
                    response.status == 200,
                    "GET /metrics: {}",
                    response.describe()
                );
                let scrape = parse_exposition(&response.body)?;
                let diff = counter_mismatches(&scrape, &expected);
                Ok(if diff.is_empty() {
                    ControlFlow::Break((response, scrape))
                } else {
                    ControlFlow::Continue(diff.join("; "))
                })
            },
        )
        .await;
        let (response, scrape) = scrape?;
        let content_type = response.header("content-type").unwrap_or_default();
        ensure!(
            content_type.starts_with("text/plain") && content_type.contains("version=0.0.4"),
            "/metrics has content type {content_type:?}, expected text/plain; version=0.0.4"
        );
        for name in [
            "trace_agent_events_received_total",
            "trace_agent_events_stored_total",
            "trace_agent_events_quarantined_total",
            "trace_agent_batches_total",
            "trace_source_events_total",
            "trace_source_errors_total",
        ] {
            ensure!(
                scrape.docs.contains_key(name),
                "/metrics has no HELP for {name}"
            );
            let samples: Vec<_> = scrape.samples.iter().filter(|s| s.metric == name).collect();
            ensure!(
                !samples.is_empty()
                    && samples
                        .iter()
                        .all(|s| matches!(s.value, prometheus_parse::Value::Counter(_))),
                "{name} is missing or not typed as a counter: {samples:?}"
            );
        }
        ensure!(
            value_of(&scrape, "trace_agent_batches_total", &[]).is_some_and(|v| v >= 1.0),
            "no batch counted"
        );
        for source in GameSource::ALL {
            let seen = value_of(
                &scrape,
                "trace_source_last_seen_seconds",
                &[("source", source.name())],
            );
            ensure!(
                seen.is_some_and(|s| (0.0..60.0).contains(&s)),
                "trace_source_last_seen_seconds{{source={:?}}} is {seen:?}",
                source.name()
            );
        }
        // Gauges fed by the consumer and the resource sampler.
        eventually(
            "connected, no lag, and resource usage in /metrics",
            Duration::from_secs(15),
            || async {
                let scrape = parse_exposition(&agent.http_get("/metrics").await?.body)?;
                let connected = value_of(&scrape, "trace_agent_nats_connected", &[]);
                let lag = value_of(&scrape, "trace_agent_consumer_lag", &[]);
                let rss = value_of(&scrape, "trace_agent_rss_bytes", &[]);
                Ok(
                    if connected == Some(1.0) && lag == Some(0.0) && rss.is_some_and(|r| r > 0.0) {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(format!(
                            "nats_connected {connected:?}, consumer_lag {lag:?}, rss {rss:?}"
                        ))
                    },
                )
            },
        )
        .await?;

        // The same numbers through the API's `metrics` verb.
        let api = agent
            .request("metrics", &json!({}))
            .await
            .map_err(|e| anyhow::anyhow!("trace.api.metrics: {e}"))?;
        let samples = api["samples"]
            .as_array()
            .with_context(|| format!("trace.api.metrics without samples: {api}"))?;
        let stored = samples
            .iter()
            .find(|s| s["name"] == "trace_agent_events_stored_total")
            .and_then(|s| s["value"].as_f64());
        ensure!(
            stored == Some(expected.stored),
            "trace.api.metrics says {stored:?} stored, expected {}",
            expected.stored
        );
        let text = api["prometheus"]
            .as_str()
            .with_context(|| format!("trace.api.metrics without prometheus text: {api}"))?;
        let from_api = parse_exposition(text)?;
        ensure!(
            value_of(&from_api, "trace_agent_events_received_total", &[])
                == Some(expected.received),
            "the API's prometheus text disagrees on received"
        );
        Ok(())
    })
    .await
}

/// Parses `/metrics` with prometheus-parse, first requiring every line to be a comment, a
/// sample or blank (the parser itself skips lines it does not understand).
fn parse_exposition(text: &str) -> anyhow::Result<prometheus_parse::Scrape> {
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if !matches!(
            prometheus_parse::LineInfo::parse(line),
            prometheus_parse::LineInfo::Sample { .. }
        ) {
            bail!("/metrics line {} is not a sample: {line:?}", n + 1);
        }
    }
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .context("prometheus-parse refused /metrics")?;
    ensure!(!scrape.samples.is_empty(), "/metrics has no samples");
    Ok(scrape)
}

fn sample_value(value: &prometheus_parse::Value) -> Option<f64> {
    match value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => Some(*v),
        _ => None,
    }
}

/// The value of the series `name` with exactly these labels.
fn value_of(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == name
                && s.labels.len() == labels.len()
                && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
        })
        .and_then(|s| sample_value(&s.value))
}

/// Non-zero series of `name`, keyed by the values of `label_names`.
fn series_of(
    scrape: &prometheus_parse::Scrape,
    name: &str,
    label_names: &[&str],
) -> BTreeMap<Vec<String>, f64> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter_map(|s| {
            let value = sample_value(&s.value)?;
            let key = label_names
                .iter()
                .map(|l| s.labels.get(l).unwrap_or("").to_owned())
                .collect();
            (value != 0.0).then_some((key, value))
        })
        .collect()
}

fn counter_mismatches(
    scrape: &prometheus_parse::Scrape,
    expected: &ExpectedCounters,
) -> Vec<String> {
    let mut diff = Vec::new();
    let received = value_of(scrape, "trace_agent_events_received_total", &[]);
    if received != Some(expected.received) {
        diff.push(format!("received {received:?} != {}", expected.received));
    }
    let stored = value_of(scrape, "trace_agent_events_stored_total", &[]);
    if stored != Some(expected.stored) {
        diff.push(format!("stored {stored:?} != {}", expected.stored));
    }
    let quarantined = series_of(scrape, "trace_agent_events_quarantined_total", &["kind"]);
    let want: BTreeMap<Vec<String>, f64> = expected
        .quarantined
        .iter()
        .map(|(k, v)| (vec![k.clone()], *v))
        .collect();
    if quarantined != want {
        diff.push(format!("quarantined {quarantined:?} != {want:?}"));
    }
    let events = series_of(scrape, "trace_source_events_total", &["source", "type"]);
    let want: BTreeMap<Vec<String>, f64> = expected
        .source_events
        .iter()
        .map(|((s, t), v)| (vec![s.clone(), t.clone()], *v))
        .collect();
    if events != want {
        diff.push(format!("trace_source_events_total {events:?} != {want:?}"));
    }
    let mut per_source: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for ((source, _), v) in &expected.source_events {
        per_source.entry(source.clone()).or_default().0 += v;
    }
    for (key, v) in &events {
        per_source.entry(key[0].clone()).or_default().1 += v;
    }
    for (source, (want, got)) in per_source {
        if want != got {
            diff.push(format!(
                "source {source}: {got} events counted, {want} sent"
            ));
        }
    }
    let errors = series_of(scrape, "trace_source_errors_total", &["source"]);
    let want: BTreeMap<Vec<String>, f64> = expected
        .source_errors
        .iter()
        .filter(|(_, v)| **v != 0.0)
        .map(|(s, v)| (vec![s.clone()], *v))
        .collect();
    if errors != want {
        diff.push(format!("trace_source_errors_total {errors:?} != {want:?}"));
    }
    diff
}

// ---------------------------------------------------------------------------------------
// 4. A source that goes silent raises its alert and degrades health; the others do not.
// ---------------------------------------------------------------------------------------

const QUIET: &str = "scout";
const CHATTY: &str = "herald";

/// `source_silent` overridden to 3 s (the fields not set keep the built-in's values).
const SILENCE_CONFIG: &str = r#"
[monitor.health]
source_silence = "3s"
min_free_disk_bytes = 1

[[rules]]
name = "source_silent"
value = 3
for = "0s"
"#;

fn heartbeat(source: &str) -> (String, Bytes) {
    (
        format!("game.agent.{source}.heartbeat"),
        Bytes::from(json!({"type": "agent.heartbeat", "severity": "info"}).to_string()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_source_raises_its_alert_and_degrades_health() -> anyhow::Result<()> {
    bounded(TEST_LIMIT, async {
        let nats = NatsServer::start().await?;
        let agent = Agent::start(
            &nats.client_url(),
            AgentOptions::with_config(SILENCE_CONFIG),
        )
        .await?;
        let cli = Cli::new(&nats.client_url())?.with_timeout(CLI_LIMIT);
        let mut watch = AlertWatch::start(&nats.client_url()).await?;
        let js = nats.jetstream().await?;

        // The chatty source keeps beating every 200 ms for the whole test.
        let chatty_js = js.clone();
        // It only ends on a publish error (or when aborted at the end).
        let chatty = tokio::spawn(async move {
            let (subject, payload) = heartbeat(CHATTY);
            loop {
                if let Err(e) = publish_js(&chatty_js, &subject, payload.clone()).await {
                    break e;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        let _stop_chatty = AbortOnDrop(chatty.abort_handle());

        // The quiet one beats five times, then stops.
        let (subject, payload) = heartbeat(QUIET);
        for _ in 0..5 {
            publish_js(&js, &subject, payload.clone()).await?;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let quiet_since = Instant::now();

        let list = eventually(
            &format!("source_silent firing for {QUIET}"),
            Duration::from_secs(20),
            || async {
                if chatty.is_finished() {
                    bail!("the heartbeat publisher of {CHATTY} stopped");
                }
                let list = alert_list(&cli).await?;
                let quiet = alerts_in(&list, "firing", "source_silent")?
                    .iter()
                    .any(|a| a["labels"]["source"] == QUIET);
                Ok(if quiet {
                    ControlFlow::Break(list)
                } else {
                    ControlFlow::Continue(list.to_string())
                })
            },
        )
        .await?;
        let silent = alerts_in(&list, "firing", "source_silent")?;
        ensure!(
            !silent.iter().any(|a| a["labels"]["source"] == CHATTY),
            "source_silent fires for {CHATTY}, which never stopped: {list}"
        );
        let alert = silent
            .iter()
            .find(|a| a["labels"]["source"] == QUIET)
            .context("checked above")?;
        ensure!(
            alert["value"].as_f64().is_some_and(|v| v > 3.0)
                && alert["threshold"].as_f64() == Some(3.0)
                && alert["severity"] == "warn",
            "the silence alert does not carry value > 3, threshold 3, severity warn: {alert}"
        );

        let notice = watch
            .wait_for(
                &format!("source_silent firing for {QUIET}"),
                Duration::from_secs(10),
                |n| n.is("source_silent", "firing") && n.label("source") == Some(QUIET),
            )
            .await?;
        check_notice_shape(&notice, "warn")?;
        let after = notice.arrived.duration_since(quiet_since);
        ensure!(
            after >= Duration::from_millis(2900),
            "source_silent fired for {QUIET} {after:?} after its last event, before the 3s \
             threshold"
        );
        ensure!(
            !watch
                .notices()
                .iter()
                .any(|n| n.rule() == "source_silent" && n.label("source") == Some(CHATTY)),
            "a source_silent notification for {CHATTY}: {}",
            watch.summary()
        );

        // Health: degraded (HTTP 200), the quiet source's freshness check degraded.
        let response = agent.http_get("/health").await?;
        let report = response.json()?;
        ensure!(
            response.status == 200 && report["status"] == "degraded",
            "GET /health with a silent source: {}",
            response.describe()
        );
        ensure!(
            check_named(&report, &format!("source:{QUIET}"))?["status"] == "degraded"
                && check_named(&report, &format!("source:{CHATTY}"))?["status"] == "healthy",
            "the sources' freshness checks are wrong: {report}"
        );
        let (code, report) = health_cli(&cli).await?;
        let report = report.context("`trace-agent health --json` printed no report")?;
        ensure!(
            code == Some(1)
                && report["status"] == "degraded"
                && check_named(&report, &format!("source:{QUIET}"))?["status"] == "degraded",
            "`trace-agent health --json` with a silent source: exit {code:?}, {report}"
        );
        let api = agent
            .request("health", &json!({}))
            .await
            .map_err(|e| anyhow::anyhow!("trace.api.health: {e}"))?;
        ensure!(
            api["status"] == "degraded" && api["checks"].is_array() && api["ready"] == true,
            "trace.api.health with a silent source: {api}"
        );

        // One frame of `top` shows both sources and the firing alert.
        let top = cli.run(&["top", "--once"]).await?;
        ensure!(
            top.status.success()
                && top.stdout.contains(QUIET)
                && top.stdout.contains(CHATTY)
                && top.stdout.contains("source_silent"),
            "`trace-agent top --once` does not show the sources and the alert: {}",
            top.describe()
        );
        Ok(())
    })
    .await
}

/// Aborts a task when dropped (also when the test fails early).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

// ---------------------------------------------------------------------------------------
// 5. Bad rules are refused at start, naming the rule.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rules_are_refused_at_start_naming_the_rule() -> anyhow::Result<()> {
    bounded(TEST_LIMIT, async {
        let nats = NatsServer::start().await?;
        let cases = [
            (
                "weird_op",
                "[[rules]]\nname = \"weird_op\"\nmetric = \"trace_agent_consumer_lag\"\n\
                 op = \"~\"\nvalue = 1\n",
                "~",
            ),
            (
                "no_such_metric",
                "[[rules]]\nname = \"no_such_metric\"\nmetric = \"trace_agent_nonsense\"\n\
                 op = \">\"\nvalue = 1\n",
                "trace_agent_nonsense",
            ),
        ];
        for (rule, toml, detail) in cases {
            let output = refused_run(&nats, toml).await?;
            ensure!(
                output.stderr.contains(rule) && output.stderr.contains(detail),
                "the refusal does not name rule {rule:?} and {detail:?}: {}",
                output.describe()
            );
        }
        let js = nats.jetstream().await?;
        ensure!(
            js.get_stream(STREAM).await.is_err(),
            "the agent created stream {STREAM} before refusing its rules"
        );
        Ok(())
    })
    .await
}

/// Runs `trace-agent run` with `toml` and requires a non-zero exit.
async fn refused_run(nats: &NatsServer, toml: &str) -> anyhow::Result<CliOutput> {
    let dir = tempfile::tempdir().context("temp dir")?;
    let config = dir.path().join("rules.toml");
    std::fs::write(&config, toml).context("writing rules.toml")?;
    let data = dir.path().join("data");
    let http = free_local_addr()?.to_string();
    let cli = Cli::new(&nats.client_url())?.with_timeout(CLI_LIMIT);
    let output = cli
        .run(&[
            "run",
            "--config",
            config.to_str().context("utf-8 path")?,
            "--data-dir",
            data.to_str().context("utf-8 path")?,
            "--http",
            &http,
        ])
        .await?;
    ensure!(
        output.code().is_some_and(|c| c != 0),
        "a bad rule was not refused with an error exit:\n{toml}\n{}",
        output.describe()
    );
    Ok(output)
}

// ---------------------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------------------

/// `trace-agent alerts --json`: `{firing: [...], resolved: [...]}`.
async fn alert_list(cli: &Cli) -> anyhow::Result<Value> {
    cli.json(&["alerts", "--json"]).await
}

/// The alerts of `rule` in `list[key]` (`firing` or `resolved`).
fn alerts_in<'a>(list: &'a Value, key: &str, rule: &str) -> anyhow::Result<Vec<&'a Value>> {
    let items = list[key]
        .as_array()
        .with_context(|| format!("the alert list has no `{key}` array: {list}"))?;
    Ok(items.iter().filter(|a| a["rule"] == rule).collect())
}

/// An RFC 3339 field of an alert.
fn time_field(alert: &Value, field: &str) -> anyhow::Result<DateTime<Utc>> {
    let text = alert[field]
        .as_str()
        .with_context(|| format!("the alert has no `{field}`: {alert}"))?;
    Ok(DateTime::parse_from_rfc3339(text)
        .with_context(|| format!("`{field}` = {text:?} is not RFC 3339"))?
        .with_timezone(&Utc))
}

/// A notification is a `trace.alert` entry from `trace-agent` on `trace.alerts.<severity>`.
fn check_notice_shape(notice: &trace_tests::AlertNotice, severity: &str) -> anyhow::Result<()> {
    ensure!(
        notice.subject == format!("trace.alerts.{severity}")
            && notice.entry.event_type == "trace.alert"
            && notice.entry.source == "trace-agent"
            && notice.entry.severity.as_str() == severity
            && notice.alert["severity"] == severity
            && notice.alert["labels"].is_object()
            && notice.alert["value"].is_number()
            && notice.alert["threshold"].is_number()
            && notice.alert["message"].is_string()
            && notice.alert["started_at"].is_string(),
        "the notification on {} does not have the contract's shape: entry {} from {}, alert {}",
        notice.subject,
        notice.entry.event_type,
        notice.entry.source,
        notice.alert
    );
    Ok(())
}

/// `trace-agent health --json`: the exit code and the report, if it printed one.
async fn health_cli(cli: &Cli) -> anyhow::Result<(Option<i32>, Option<Value>)> {
    let output = cli.run(&["health", "--json"]).await?;
    let report = serde_json::from_str::<Value>(output.stdout.trim()).ok();
    Ok((output.code(), report))
}

/// The check called `name` of a health report.
fn check_named<'a>(report: &'a Value, name: &str) -> anyhow::Result<&'a Value> {
    report["checks"]
        .as_array()
        .with_context(|| format!("the health report has no checks: {report}"))?
        .iter()
        .find(|c| c["name"] == name)
        .with_context(|| format!("the health report has no check {name:?}: {report}"))
}

/// Polls `GET /health` until it answers `status` with `{"status": level}`; returns the body.
async fn wait_health(
    agent: &Agent,
    status: u16,
    level: &str,
    timeout: Duration,
) -> anyhow::Result<Value> {
    eventually(
        &format!("GET /health to answer {status} {level}"),
        timeout,
        || async {
            match agent.http_get("/health").await {
                Ok(response) => {
                    let body: Option<Value> = serde_json::from_str(&response.body).ok();
                    match body {
                        Some(body) if response.status == status && body["status"] == level => {
                            Ok(ControlFlow::Break(body))
                        }
                        _ => Ok(ControlFlow::Continue(response.describe())),
                    }
                }
                Err(e) => Ok(ControlFlow::Continue(format!("{e:#}"))),
            }
        },
    )
    .await
}

/// `GET path` must answer `status` (polled briefly: health is re-read on every request, the
/// connection state may take a moment to change).
async fn expect_status(agent: &Agent, path: &str, status: u16) -> anyhow::Result<HttpResponse> {
    eventually(
        &format!("GET {path} to answer {status}"),
        Duration::from_secs(5),
        || async {
            let response = agent.http_get(path).await?;
            Ok(if response.status == status {
                ControlFlow::Break(response)
            } else {
                ControlFlow::Continue(response.describe())
            })
        },
    )
    .await
}

/// Publishes `n` msgpack envelopes from npc1 through JetStream.
async fn publish_some(
    nats: &NatsServer,
    traffic: &mut GameTraffic,
    n: usize,
) -> anyhow::Result<()> {
    let js = nats.jetstream().await?;
    for _ in 0..n {
        let message = traffic.msgpack_envelope(GameSource::Npc1, now_ms());
        publish_js(&js, &message.subject, message.payload.clone()).await?;
    }
    Ok(())
}
