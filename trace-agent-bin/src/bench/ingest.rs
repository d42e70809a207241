//! Durable ingest, end to end, on a private nats-server. The agent's stream is pre-filled with
//! simulated game events through the publisher client (which gives the client's acked publish
//! rate), then drained three times, each time by another durable consumer with the
//! recorder's batch settings: a bare consumer that only acks; the real agent (this
//! executable's `run`, a fresh data dir) as configured by default, where the live analytics
//! read the stream too with their own consumer; and the agent with analytics off, the
//! recorder alone. Every drain is timed the same way, from the server's view of the consumer:
//! from the first delivery seen to the ack floor reaching the last message. The agent's
//! resident memory and CPU time are read from /proc meanwhile.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use async_nats::jetstream::{self, stream::Stream};
use serde_json::{json, Value};
use trace_core::bus::{ack_all, durable_consumer, ensure_stream, BatchReader, ConsumerSpec};
use trace_core::client::TraceClient;
use trace_core::SourceKind;

use super::report::{self, Figure, Report, Target};
use super::workload::Workload;
use crate::api::ApiClient;
use crate::config::AgentConfig;
use crate::tools::Progress;

/// The bare consumer's durable name.
const BARE: &str = "bench-bare";
/// How often the consumers' progress is read from the server.
const POLL: Duration = Duration::from_millis(20);
/// How often the agent's memory is read.
const RSS_EVERY: Duration = Duration::from_millis(100);
/// Entries the publisher client holds in memory; the pre-fill keeps it at most half full so
/// nothing spills to disk.
const CLIENT_BUFFER: usize = 100_000;

/// Linux reports process CPU time in `/proc/<pid>/stat` in USER_HZ, 100 per second on every
/// architecture.
const USER_HZ: f64 = 100.0;

/// What the ingest phase measured.
pub(crate) struct IngestResult {
    events: u64,
    publish_secs: f64,
    bare_secs: f64,
    agent: AgentDrain,
    solo: AgentDrain,
    profiled: Option<PathBuf>,
}

/// Runs the phase with `n` events; with `perf`, records a CPU profile of the recorder-only
/// agent's drain (the ingest path alone) into that file.
pub(crate) async fn run(n: u64, perf: Option<&Path>, tty: bool) -> anyhow::Result<IngestResult> {
    let binary = crate::demo::nats_server_binary().ok_or_else(|| {
        anyhow!(
            "nats-server is not installed: the bench starts a private one. Install it \
             (Debian/Ubuntu: sudo apt-get install nats-server; or a release from \
             https://github.com/nats-io/nats-server/releases) and run the bench again."
        )
    })?;
    let nats = crate::demo::start_private_nats(&binary)?;
    eprintln!("bench: private nats-server with JetStream at {}", nats.url);
    let config = AgentConfig {
        nats_url: nats.url.clone(),
        ..AgentConfig::default()
    };
    let client = trace_core::bus::connect(&nats.url, "trace-agent-bench").await?;
    let js = jetstream::new(client);
    // The agent's own stream, bound by the agent as it is; no size limit, so a large --ingest-
    // events run never discards the oldest messages before they are drained.
    let mut spec = config.stream_spec();
    spec.max_bytes = -1;
    let mut stream = ensure_stream(&js, &spec).await?;

    let publish_secs = prefill(&nats.url, n).await?;
    let last_seq = stream.info().await?.state.last_sequence;
    anyhow::ensure!(
        last_seq == n,
        "the stream holds {last_seq} messages, {n} were published"
    );

    eprintln!("bench: a bare consumer that only acks drains the stream");
    let bare_secs = bare_drain(&stream, &config, last_seq).await?;

    eprintln!("bench: the agent (`trace-agent run`, default config) drains the stream");
    let agent = agent_drain(&stream, &config, last_seq, AgentSetup::Default, None, tty).await?;
    eprintln!("bench: the agent with analytics off (the recorder alone) drains the stream");
    let solo = agent_drain(
        &stream,
        &config,
        last_seq,
        AgentSetup::RecorderOnly,
        perf,
        tty,
    )
    .await?;
    // the client goes first, so it does not see the server leave
    drop((stream, js));
    drop(nats);
    Ok(IngestResult {
        events: n,
        publish_secs,
        bare_secs,
        agent,
        solo,
        profiled: perf.map(Path::to_path_buf),
    })
}

/// How the agent is configured for a drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AgentSetup {
    /// The defaults: recorder and live analytics, each with its own consumer.
    Default,
    /// `[analytics] enabled = false`, and another recording consumer (the first run's is
    /// drained already).
    RecorderOnly,
}

impl AgentSetup {
    /// The recording consumer's name and the agent's environment for this setup.
    fn consumer_and_env(self, config: &AgentConfig) -> (String, Vec<(&'static str, String)>) {
        match self {
            AgentSetup::Default => (config.recorder.consumer.clone(), Vec::new()),
            AgentSetup::RecorderOnly => {
                let consumer = format!("{}-solo", config.recorder.consumer);
                let env = vec![
                    ("TRACE_AGENT_ANALYTICS__ENABLED", "false".to_owned()),
                    ("TRACE_AGENT_RECORDER__CONSUMER", consumer.clone()),
                ];
                (consumer, env)
            }
        }
    }
}

/// Events made ahead of publishing at a time (a million made at once would take a GiB).
const PREFILL_SEGMENT: u64 = 100_000;

/// Publishes `n` simulated events through a `TraceClient` and returns how long JetStream took
/// to ack them. The events are made ahead, a segment at a time, with the clock stopped: each
/// segment is timed from its first `log_entry` to its last ack, so the rate is slightly
/// conservative (the pipeline drains at each segment's end).
async fn prefill(url: &str, n: u64) -> anyhow::Result<f64> {
    let spill = tempfile::Builder::new()
        .prefix("trace-bench-client-")
        .tempdir()?;
    let client = TraceClient::builder(url, "bench", SourceKind::Agent)
        .spill_dir(spill.path())
        .buffer_capacity(CLIENT_BUFFER)
        .connect()
        .await?;
    let mut workload = Workload::new(n);
    let mut progress = Progress::new("published (acked)", Some(n));
    let mut busy = Duration::ZERO;
    while workload.made() < n {
        let mut segment = Vec::new();
        while workload.made() < n && (segment.len() as u64) < PREFILL_SEGMENT {
            segment.extend(workload.next_entries());
        }
        let started = Instant::now();
        for (i, entry) in segment.into_iter().enumerate() {
            client.log_entry(entry);
            // keep the client's buffer below half full: nothing spills to disk
            while i % 1000 == 999 && client.stats().buffered > (CLIENT_BUFFER / 2) as u64 {
                tokio::time::sleep(Duration::from_millis(1)).await;
                progress.show(client.stats().acked, false);
            }
        }
        client
            .flush_timeout(drain_limit(n))
            .await
            .context("publishing the pre-fill")?;
        busy += started.elapsed();
        progress.show(client.stats().acked, false);
    }
    progress.finish(n);
    let stats = client.close().await?;
    anyhow::ensure!(
        stats.acked == n && stats.spilled == 0 && stats.dropped == 0,
        "the pre-fill did not go as planned: {stats:?}"
    );
    Ok(busy.as_secs_f64())
}

/// How long a drain of `n` messages may take before the bench gives up.
fn drain_limit(n: u64) -> Duration {
    Duration::from_secs(60).max(Duration::from_secs(n / 2000))
}

/// A drain as the server saw it.
#[derive(Debug, Clone, Copy)]
struct Drain {
    /// From the first delivery seen to the ack floor reaching the last message.
    secs: f64,
    /// CPU time the watched process used meanwhile, when a process was given.
    cpu_secs: Option<f64>,
}

/// Waits until `consumer` has acked everything up to `last_seq`. `check` is called each
/// round and stops the wait on error; `pid`'s CPU time is read at both ends.
async fn watch_drain(
    stream: &Stream,
    consumer: &str,
    last_seq: u64,
    what: &'static str,
    pid: Option<u32>,
    mut check: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Drain> {
    let mut progress = Progress::new(what, Some(last_seq));
    let deadline = Instant::now() + drain_limit(last_seq);
    let mut first_delivery: Option<(Instant, Option<f64>)> = None;
    loop {
        check()?;
        let info = stream
            .consumer_info(consumer)
            .await
            .with_context(|| format!("reading consumer {consumer}"))?;
        let now = Instant::now();
        if first_delivery.is_none() && info.delivered.stream_sequence > 0 {
            first_delivery = Some((now, pid.and_then(cpu_secs)));
        }
        if info.ack_floor.stream_sequence >= last_seq {
            progress.finish(last_seq);
            let (started, cpu_start) = first_delivery.unwrap_or((now, None));
            let cpu_end = pid.and_then(cpu_secs);
            return Ok(Drain {
                secs: (now - started).as_secs_f64().max(POLL.as_secs_f64()),
                cpu_secs: cpu_start.zip(cpu_end).map(|(a, b)| b - a),
            });
        }
        progress.show(info.ack_floor.stream_sequence, false);
        if now > deadline {
            bail!(
                "{consumer} acked {} of {last_seq} messages within {:?}",
                info.ack_floor.stream_sequence,
                drain_limit(last_seq)
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The recorder's consumer settings under another name, read in batches and acked.
async fn bare_drain(stream: &Stream, config: &AgentConfig, last_seq: u64) -> anyhow::Result<f64> {
    let spec = ConsumerSpec {
        durable: BARE.to_owned(),
        ..config.consumer_spec()
    };
    let consumer = durable_consumer(stream, &spec).await?;
    let mut reader = BatchReader::new(&consumer, &spec).await?;
    let reading = tokio::spawn(async move {
        let mut seen = 0u64;
        while seen < last_seq {
            let Some(batch) = reader.next_batch().await else {
                break;
            };
            seen += batch.len() as u64;
            ack_all(&batch).await;
        }
    });
    let drain = watch_drain(
        stream,
        BARE,
        last_seq,
        "acked by the bare consumer",
        None,
        || Ok(()),
    )
    .await;
    reading.abort();
    Ok(drain?.secs)
}

/// What one drain by the agent gave.
struct AgentDrain {
    drain: Drain,
    stored: u64,
    batches: BatchTimes,
    rss: RssReading,
}

/// The recorder's own account of its batches (its `/metrics` histograms): how long they took
/// from decode to ack, and the acks alone. The rest of a drain is spent waiting for messages.
#[derive(Debug, Default, Clone, Copy)]
struct BatchTimes {
    count: f64,
    secs: f64,
    ack_secs: f64,
}

impl BatchTimes {
    fn from_prometheus(text: &str) -> BatchTimes {
        let value = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
                .unwrap_or(0.0)
        };
        BatchTimes {
            count: value("trace_agent_batch_duration_seconds_count"),
            secs: value("trace_agent_batch_duration_seconds_sum"),
            ack_secs: value("trace_agent_ack_duration_seconds_sum"),
        }
    }
}

/// Spawns the agent on a fresh data dir, times its drain, samples its memory, checks its
/// store holds every event, then stops it (SIGTERM).
async fn agent_drain(
    stream: &Stream,
    config: &AgentConfig,
    last_seq: u64,
    setup: AgentSetup,
    perf: Option<&Path>,
    tty: bool,
) -> anyhow::Result<AgentDrain> {
    let (consumer, env) = setup.consumer_and_env(config);
    // created here with the agent's own settings (it binds to it), so the drain is visible
    // from the first delivery
    let spec = ConsumerSpec {
        durable: consumer.clone(),
        ..config.consumer_spec()
    };
    durable_consumer(stream, &spec).await?;
    let mut agent = AgentProcess::spawn(&config.nats_url, &env)?;
    let pid = agent.pid();
    let profiler = perf.map(|file| Profiler::attach(pid, file)).transpose()?;
    let sampler = RssSampler::start(pid);
    let drained = watch_drain(
        stream,
        &consumer,
        last_seq,
        "recorded by the agent",
        Some(pid),
        || agent.check_running(),
    )
    .await;
    let rss = sampler.stop().await;
    if let Some(profiler) = profiler {
        profiler.stop()?;
    }
    let drain = drained.map_err(|e| anyhow!("{e:#}{}", agent.log_tail()))?;
    let (stored, batches) = agent.stored(last_seq).await?;
    if tty {
        eprintln!("bench: stopping the agent");
    }
    agent.terminate()?;
    Ok(AgentDrain {
        drain,
        stored,
        batches,
        rss,
    })
}

/// The CPU time (user + system, all threads) a process used so far, from /proc/<pid>/stat.
fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // after the command (which may hold spaces) come the fields from `state`, field 3 of
    // proc(5); utime and stime are fields 14 and 15
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let ticks = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some((ticks(14)? + ticks(15)?) as f64 / USER_HZ)
}

/// `trace-agent run` as a child process with its own data dir and log; killed on drop.
struct AgentProcess {
    child: Child,
    dir: tempfile::TempDir,
    url: String,
}

impl AgentProcess {
    fn spawn(url: &str, env: &[(&str, String)]) -> anyhow::Result<AgentProcess> {
        let exe = std::env::current_exe().context("locating this trace-agent executable")?;
        let dir = tempfile::Builder::new()
            .prefix("trace-bench-agent-")
            .tempdir()
            .context("creating the agent's data dir")?;
        let log = File::create(dir.path().join("agent.log")).context("creating the agent log")?;
        let mut command = Command::new(&exe);
        command
            .arg("run")
            .args(["--nats-url", url, "--http", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir.path().join("store"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // the agent runs with its defaults, whatever this shell sets
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("TRACE_AGENT_") {
                command.env_remove(&key);
            }
        }
        command.envs(env.iter().map(|(k, v)| (k, v)));
        let child = command
            .spawn()
            .with_context(|| format!("starting {} run", exe.display()))?;
        Ok(AgentProcess {
            child,
            dir,
            url: url.to_owned(),
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn check_running(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => bail!("the agent exited ({status}){}", self.log_tail()),
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "\n--- agent log (last lines) ---\n{}",
            lines[lines.len().saturating_sub(20)..].join("\n")
        )
    }

    /// Waits (briefly) until the agent reports `n` stored events; returns what it reports,
    /// with its own account of the time its batches took.
    async fn stored(&self, n: u64) -> anyhow::Result<(u64, BatchTimes)> {
        let api =
            ApiClient::connect(&self.url, &Default::default(), Duration::from_secs(10)).await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let info: Value = api.call("store_info", &json!({})).await?;
            let stored = info["recorder"]["stored"].as_u64().unwrap_or(0);
            if stored >= n {
                let metrics: Value = api.call("metrics", &json!({})).await?;
                let text = metrics["prometheus"].as_str().unwrap_or("");
                return Ok((stored, BatchTimes::from_prometheus(text)));
            }
            if Instant::now() > deadline {
                bail!(
                    "the agent acked every message but reports {stored} of {n} stored{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM, then up to 20 s for it to drain and exit 0.
    fn terminate(&mut self) -> anyhow::Result<()> {
        signal(self.pid(), "TERM")?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::ensure!(
                    status.success(),
                    "the agent exited with {status} on SIGTERM{}",
                    self.log_tail()
                );
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the agent did not exit within 20s of SIGTERM{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `SIG<name>` to a process this bench started.
fn signal(pid: u32, name: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .context("running kill")?;
    anyhow::ensure!(status.success(), "kill -{name} {pid} failed ({status})");
    Ok(())
}

/// The agent's resident memory over the drain.
#[derive(Debug, Default, Clone, Copy)]
struct RssReading {
    /// Largest VmRSS sampled.
    max_rss: u64,
    /// VmHWM at the end: the kernel's own peak of VmRSS.
    hwm: u64,
    samples: usize,
}

impl RssReading {
    fn peak_bytes(&self) -> u64 {
        self.max_rss.max(self.hwm)
    }
}

/// Samples `/proc/<pid>/status` every [`RSS_EVERY`] until stopped.
struct RssSampler {
    pid: u32,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<RssReading>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut reading = RssReading::default();
                while !stop.load(Ordering::Relaxed) {
                    if let Some(rss) = proc_status_bytes(pid, "VmRSS:") {
                        reading.max_rss = reading.max_rss.max(rss);
                        reading.samples += 1;
                    }
                    tokio::time::sleep(RSS_EVERY).await;
                }
                reading
            }
        });
        RssSampler { pid, stop, task }
    }

    async fn stop(self) -> RssReading {
        self.stop.store(true, Ordering::Relaxed);
        let mut reading = self.task.await.unwrap_or_default();
        reading.hwm = proc_status_bytes(self.pid, "VmHWM:").unwrap_or(0);
        reading
    }
}

/// A `kB` field of `/proc/<pid>/status`, in bytes.
fn proc_status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line[field.len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// `perf record` attached to the agent.
struct Profiler {
    child: Child,
}

impl Profiler {
    fn attach(pid: u32, file: &Path) -> anyhow::Result<Profiler> {
        let perf = ["/usr/bin/perf", "/usr/local/bin/perf"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from("perf"));
        let child = Command::new(&perf)
            .args(["record", "-F", "499", "--call-graph", "dwarf,16384", "-p"])
            .arg(pid.to_string())
            .arg("-o")
            .arg(file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {} record", perf.display()))?;
        eprintln!("bench: perf records the agent into {}", file.display());
        Ok(Profiler { child })
    }

    fn stop(mut self) -> anyhow::Result<()> {
        signal(self.child.id(), "INT")?;
        let status = self.child.wait().context("waiting for perf")?;
        // perf exits on SIGINT once its file is written; anything else is worth a word
        if !status.success() && status.code().is_some() {
            eprintln!("bench: perf record ended with {status}");
        }
        Ok(())
    }
}

impl IngestResult {
    /// Adds the ingest figures and details to the report.
    pub(crate) fn add_to(&self, report: &mut Report) {
        let n = self.events as f64;
        let bare = n / self.bare_secs;
        let (agent, solo) = (n / self.agent.drain.secs, n / self.solo.drain.secs);
        let of = report::count(self.events);
        report.add(Figure::new(
            "client_publish_acked_per_sec",
            format!("TraceClient publish rate, acked by JetStream ({of} events)"),
            n / self.publish_secs,
            "events/s",
            Target::None,
        ));
        report.add(Figure::new(
            "ingest_bare_events_per_sec",
            format!("bare pull consumer, ack only ({of} events)"),
            bare,
            "events/s",
            Target::None,
        ));
        report.add(Figure::new(
            "ingest_agent_events_per_sec",
            format!("agent durable ingest, default config ({of} events)"),
            agent,
            "events/s",
            Target::None,
        ));
        report.add(Figure::new(
            "ingest_agent_over_bare",
            "agent ingest / bare consumer",
            agent / bare,
            "x",
            Target::AtLeast(0.8),
        ));
        report.add(Figure::new(
            "ingest_recorder_only_events_per_sec",
            format!("agent durable ingest, analytics off ({of} events)"),
            solo,
            "events/s",
            Target::None,
        ));
        report.add(Figure::new(
            "ingest_recorder_only_over_bare",
            "agent with analytics off / bare consumer",
            solo / bare,
            "x",
            Target::AtLeast(0.8),
        ));
        report.add(Figure::new(
            "agent_peak_rss_mib",
            "agent peak RSS during ingest (VmHWM, default config)",
            self.agent.rss.peak_bytes() as f64 / (1024.0 * 1024.0),
            "MiB",
            Target::Below(256.0),
        ));
        let run = |a: &AgentDrain| {
            json!({
                "secs": a.drain.secs,
                "events_per_sec": n / a.drain.secs,
                "cpu_secs": a.drain.cpu_secs,
                "cpu_us_per_event": a.drain.cpu_secs.map(|c| c * 1e6 / n),
                "stored": a.stored,
                "batches": a.batches.count,
                "batch_secs": a.batches.secs,
                "ack_secs": a.batches.ack_secs,
                "rss_peak_bytes": a.rss.peak_bytes(),
                "rss_max_sampled_bytes": a.rss.max_rss,
                "rss_samples": a.rss.samples,
            })
        };
        report.detail(
            "ingest",
            json!({
                "events": self.events,
                "batch_size": AgentConfig::default().recorder.batch_size,
                "publish_secs": self.publish_secs,
                "bare_secs": self.bare_secs,
                "agent": run(&self.agent),
                "agent_analytics_off": run(&self.solo),
                "perf_profile": self.profiled.as_ref().map(|p| p.display().to_string()),
            }),
        );
    }
}
