//! Fault injection with real processes only: the agent SIGKILLed five times under load, the
//! nats-server restarted under load (same port, same JetStream file store), the store's disk
//! filled up and then freed, and a flood far faster than the agent can store while its RSS is
//! sampled. After each fault every published event is stored exactly once, health went bad
//! and came back, and an alert said why.
//!
//! The publisher client's side of an outage (nothing lost, order kept) is
//! `client::client_delivers_once_and_in_order_across_an_outage`.

use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use chrono::TimeDelta;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use trace_tests::{
    eventually, http_get_with_timeout, recorder_backlog, Agent, AgentOptions, AlertWatch, Cli,
    Deadline, EntryLine, GameSource, GameTraffic, JsPublisher, NatsServer, Outgoing, STREAM,
};

use crate::util::{
    assert_exactly_once, assert_ids_exactly_once, bounded, now_ms, wait_drained, wait_for_counts,
};

/// The time limit of each test.
const TEST_LIMIT: Duration = Duration::from_secs(90);
/// How long one CLI invocation may take.
const CLI_LIMIT: Duration = Duration::from_secs(30);
/// How long a chunk may take to publish before it is tried again.
const CHUNK_LIMIT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------
// 1. SIGKILL five times in a row under load.
// ---------------------------------------------------------------------------------------

/// A short `ack_wait`, so the messages a killed agent held come back within the test; lag
/// above 500 degrades health and fires `consumer_lag_high` at once (built-in: 10,000 for 1m).
const KILL_CONFIG: &str = r#"
[recorder]
ack_wait = "3s"

[monitor.health]
min_free_disk_bytes = 1
max_consumer_lag = 500

[[rules]]
name = "consumer_lag_high"
value = 500
for = "0s"
"#;

const KILL_TOTAL: usize = 20_000;
/// How many more events the agent must have stored (since its last restart) before each
/// kill. The third kill lands as soon as the restarted agent stored anything: while it is
/// still taking back what the previous run held.
const KILL_STEPS: [u64; 5] = [1_500, 2_500, 1, 2_500, 2_500];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_sigkills_under_load_lose_and_double_nothing() -> anyhow::Result<()> {
    bounded(TEST_LIMIT, async {
        let started = Instant::now();
        let nats = NatsServer::start().await?;
        let mut agent =
            Agent::start(&nats.client_url(), AgentOptions::with_config(KILL_CONFIG)).await?;
        let cli = Cli::new(&nats.client_url())?.with_timeout(CLI_LIMIT);
        let mut alerts = AlertWatch::start(&nats.client_url()).await?;
        let trail = HealthTrail::start(agent.http_addr());
        wait_health(&agent, "healthy", Duration::from_secs(20)).await?;

        let messages = game_messages(0xFA17_0001, KILL_TOTAL);
        let ids = ids_of(&messages);
        let (progress, _) = watch::channel(0);
        let publisher = SteadyPublisher::spawn(
            nats.client_url(),
            messages,
            250,
            Duration::from_millis(40),
            progress,
        );

        let mut kills = Vec::new();
        let mut restarts = Vec::new();
        let mut floor = 0;
        for (k, step) in KILL_STEPS.iter().enumerate() {
            let stored = stored_at_least(&agent, floor + step, Duration::from_secs(60)).await?;
            agent.kill()?;
            ensure!(
                stored < KILL_TOTAL as u64,
                "the agent had stored all {KILL_TOTAL} events before kill #{} (saw {stored}); \
                 the kill did not happen under load",
                k + 1
            );
            agent.restart().await?;
            restarts.push(Instant::now());
            floor = agent.store_info().await?.events;
            eprintln!(
                "kill #{}: at {stored} stored; {floor} durable after restart",
                k + 1
            );
            kills.push((stored, floor));
        }

        let published = publisher.finish(Duration::from_secs(60)).await?;
        wait_drained(&nats.jetstream().await?, Duration::from_secs(45)).await?;
        let lines = game_entries(&cli, KILL_TOTAL).await?;
        assert_exactly_once(&lines, &ids)
            .with_context(|| format!("after five SIGKILLs at (stored, durable) {kills:?}"))?;

        let firing = alerts
            .wait_for("consumer_lag_high firing", Duration::from_secs(10), |n| {
                n.is("consumer_lag_high", "firing")
            })
            .await?;
        alerts
            .wait_for("consumer_lag_high resolved", Duration::from_secs(15), |n| {
                n.is("consumer_lag_high", "resolved") && n.arrived > firing.arrived
            })
            .await?;
        wait_health(&agent, "healthy", Duration::from_secs(20)).await?;
        // After a restart the messages the killed agent held wait out `ack_wait` unacked: the
        // lag is over the threshold and health says so, then recovers (checked just above).
        let degraded_after = restarts
            .iter()
            .filter(|r| {
                trail
                    .between(**r, **r + Duration::from_secs(3))
                    .iter()
                    .any(|s| s == "degraded" || s == "unhealthy")
            })
            .count();
        ensure!(
            degraded_after > 0,
            "health was never degraded or unhealthy in the 3 s after a restart: {}",
            trail.summary()
        );
        eprintln!(
            "five SIGKILLs: published {KILL_TOTAL} ({published:?}), stored {} exactly once; \
             kills at (stored, durable after restart) {kills:?}; degraded after {degraded_after} \
             of 5 restarts; health {}; {:.1?}",
            lines.len(),
            trail.summary(),
            started.elapsed()
        );
        Ok(())
    })
    .await
}

// ---------------------------------------------------------------------------------------
// 2. The nats-server restarted under load.
// ---------------------------------------------------------------------------------------

/// A rule on the connection gauge: while NATS is away the alert cannot go out on NATS, so
/// the agent records it straight into the store.
const NATS_CONFIG: &str = r#"
[monitor.health]
min_free_disk_bytes = 1

[[rules]]
name = "nats_disconnected"
metric = "trace_agent_nats_connected"
op = "<"
value = 1
for = "0s"
severity = "critical"
message = "the agent lost its NATS connection"
"#;

const NATS_TOTAL: usize = 15_000;
/// How long the server stays down: longer than the publisher's ack timeout (2 s).
const OUTAGE: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restart_under_load_loses_and_doubles_nothing() -> anyhow::Result<()> {
    bounded(TEST_LIMIT, async {
        let started = Instant::now();
        let mut nats = NatsServer::start().await?;
        let mut agent =
            Agent::start(&nats.client_url(), AgentOptions::with_config(NATS_CONFIG)).await?;
        let pid = agent.pid();
        let cli = Cli::new(&nats.client_url())?.with_timeout(CLI_LIMIT);
        let trail = HealthTrail::start(agent.http_addr());
        wait_health(&agent, "healthy", Duration::from_secs(20)).await?;

        let messages = game_messages(0xFA17_0002, NATS_TOTAL);
        let ids = ids_of(&messages);
        let (progress, _) = watch::channel(0);
        let publisher = SteadyPublisher::spawn(
            nats.client_url(),
            messages,
            250,
            Duration::from_millis(50),
            progress,
        );
        stored_at_least(&agent, 3_000, Duration::from_secs(60)).await?;

        nats.stop().await?;
        let down = Instant::now();
        let report = wait_health(&agent, "unhealthy", Duration::from_secs(20)).await?;
        ensure!(
            check_named(&report, "nats")?["status"] == "unhealthy",
            "unhealthy, but not for NATS: {report}"
        );
        // Down long enough for publishes to time out: the publisher must publish again.
        tokio::time::sleep(OUTAGE.saturating_sub(down.elapsed())).await;
        nats.restart().await?;
        let outage = down.elapsed();
        ensure!(
            agent.is_running() && agent.pid() == pid,
            "the agent did not ride through the outage{}",
            agent.log_tail(40)
        );
        wait_health(&agent, "healthy", Duration::from_secs(30)).await?;

        let published = publisher.finish(Duration::from_secs(60)).await?;
        ensure!(
            published.retried_chunks > 0,
            "the outage did not interrupt the publisher: {published:?}"
        );
        wait_drained(&nats.jetstream().await?, Duration::from_secs(45)).await?;
        let lines = game_entries(&cli, NATS_TOTAL).await?;
        assert_exactly_once(&lines, &ids).context("after a nats-server restart under load")?;

        // The alert fired while NATS was away (recorded directly), and resolved after.
        let states = eventually(
            "nats_disconnected to be recorded firing and resolved",
            Duration::from_secs(15),
            || async {
                let recorded = cli
                    .query(&["--type", "trace.alert", "--limit", "1000"])
                    .await?;
                let states: Vec<String> = recorded
                    .iter()
                    .filter(|e| e.data["rule"] == "nats_disconnected")
                    .filter_map(|e| e.data["state"].as_str().map(str::to_owned))
                    .collect();
                Ok(
                    if states.iter().any(|s| s == "firing")
                        && states.iter().any(|s| s == "resolved")
                    {
                        ControlFlow::Break(states)
                    } else {
                        ControlFlow::Continue(format!("{states:?}"))
                    },
                )
            },
        )
        .await?;
        eprintln!(
            "nats-server restart: down {outage:.1?}; published {NATS_TOTAL} ({published:?}), \
             stored {} exactly once; alert states recorded {states:?}; health {}; {:.1?}",
            lines.len(),
            trail.summary(),
            started.elapsed()
        );
        Ok(())
    })
    .await
}

// ---------------------------------------------------------------------------------------
// 3. The store's disk fills up mid-run, then is freed.
// ---------------------------------------------------------------------------------------

/// A 3 s metrics window, so `store_write_failures` resolves soon after writes succeed again.
const DISK_CONFIG: &str = r#"
[monitor.health]
min_free_disk_bytes = 1

[monitor.metrics]
window = "3s"
"#;

const DISK_TOTAL: usize = 12_000;
/// The tmpfs the store lives on: room for the store, then filled by the test.
const DISK_SIZE: &str = "64m";
/// How long the disk stays full (the publisher goes on meanwhile).
const FULL_FOR: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stalls_recording_without_loss_until_it_is_freed() -> anyhow::Result<()> {
    bounded(TEST_LIMIT, async {
        let started = Instant::now();
        // Root ignores permission bits, and chmod does not stop writes to files sled already
        // has open: a full file system is what really makes its writes fail.
        let Some(disk) = Tmpfs::mount(DISK_SIZE)? else {
            return Ok(());
        };
        let nats = NatsServer::start().await?;
        let mut options = AgentOptions::with_config(DISK_CONFIG);
        options.data_dir = Some(disk.path().join("data"));
        let mut agent = Agent::start(&nats.client_url(), options).await?;
        let pid = agent.pid();
        let cli = Cli::new(&nats.client_url())?.with_timeout(CLI_LIMIT);
        let mut alerts = AlertWatch::start(&nats.client_url()).await?;
        let trail = HealthTrail::start(agent.http_addr());
        wait_health(&agent, "healthy", Duration::from_secs(20)).await?;

        let messages = game_messages(0xFA17_0003, DISK_TOTAL);
        let ids = ids_of(&messages);
        let (progress, progress_rx) = watch::channel(0);
        let publisher = SteadyPublisher::spawn(
            nats.client_url(),
            messages,
            100,
            Duration::from_millis(40),
            progress,
        );
        stored_at_least(&agent, 2_000, Duration::from_secs(60)).await?;

        let filled = disk.fill()?;
        let full = Instant::now();
        let report = wait_health(&agent, "unhealthy", Duration::from_secs(20)).await?;
        ensure!(
            check_named(&report, "store")?["status"] == "unhealthy",
            "unhealthy, but not for the store: {report}"
        );
        alerts
            .wait_for(
                "store_write_failures firing",
                Duration::from_secs(10),
                |n| n.is("store_write_failures", "firing"),
            )
            .await?;
        // Nothing is stored or acked while the store refuses it: the backlog grows and stays
        // in JetStream while the publisher goes on, for a few seconds of retries.
        let js = nats.jetstream().await?;
        let frozen = agent.store_info().await?.events;
        let during = recorder_backlog(&js).await?;
        let sent_during = *progress_rx.borrow();
        eventually(
            "the publisher to go on while the disk is full",
            Duration::from_secs(20),
            || async {
                let sent = *progress_rx.borrow();
                Ok(
                    if sent >= sent_during + 2_000 && full.elapsed() >= FULL_FOR {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(format!("{sent} sent"))
                    },
                )
            },
        )
        .await?;
        let later = recorder_backlog(&js).await?;
        let still = agent.store_info().await?.events;
        ensure!(
            still == frozen,
            "the store took {} events while its disk was full",
            still - frozen
        );
        ensure!(
            later.pending + later.ack_pending as u64 > during.pending + during.ack_pending as u64,
            "the backlog did not grow while the disk was full: {during:?} then {later:?}"
        );
        ensure!(
            agent.is_running() && agent.pid() == pid,
            "the agent did not survive the full disk{}",
            agent.log_tail(40)
        );
        let stalled_for = full.elapsed();

        disk.free(filled)?;
        let freed = Instant::now();
        wait_health(&agent, "healthy", Duration::from_secs(30)).await?;
        let recovered_in = freed.elapsed();
        let published = publisher.finish(Duration::from_secs(60)).await?;
        wait_drained(&js, Duration::from_secs(45)).await?;
        let lines = game_entries(&cli, DISK_TOTAL).await?;
        assert_exactly_once(&lines, &ids).context("after the disk was full and freed")?;
        alerts
            .wait_for(
                "store_write_failures resolved",
                Duration::from_secs(15),
                |n| n.is("store_write_failures", "resolved"),
            )
            .await?;
        ensure!(
            agent.is_running() && agent.pid() == pid,
            "the agent was restarted or exited{}",
            agent.log_tail(40)
        );
        // The live analytics (their checkpoint is on the same disk) went on too: once each.
        eventually(
            "the live analytics to count every event once",
            Duration::from_secs(20),
            || async {
                let live = cli.json(&["stats", "--json"]).await?;
                Ok(if live["events"] == DISK_TOTAL {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(format!(
                        "{} events; {}",
                        live["events"],
                        consumers_summary(&js).await
                    ))
                })
            },
        )
        .await?;
        eprintln!(
            "full disk: stalled {stalled_for:.1?} (backlog {during:?} -> {later:?}), healthy \
             {recovered_in:.1?} after freeing; published {DISK_TOTAL} ({published:?}), stored \
             {} exactly once; health {}; {:.1?}",
            lines.len(),
            trail.summary(),
            started.elapsed()
        );
        Ok(())
    })
    .await
}

/// A small tmpfs mounted on a temp dir for one test (unmounted on Drop).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`mount -t tmpfs -o size=..`). `None`, with a note on stderr,
    /// where mounting is not permitted (it needs root or CAP_SYS_ADMIN).
    fn mount(size: &str) -> anyhow::Result<Option<Tmpfs>> {
        let dir = tempfile::Builder::new()
            .prefix("trace-tests-tmpfs-")
            .tempdir()
            .context("creating the tmpfs mount point")?;
        let output = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match output {
            Ok(out) if out.status.success() => Ok(Some(Tmpfs { dir })),
            Ok(out) => {
                eprintln!(
                    "SKIPPED: cannot mount a tmpfs to fill ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                Ok(None)
            }
            Err(e) => {
                eprintln!("SKIPPED: cannot run mount: {e}");
                Ok(None)
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the file system at once (one `fallocate` of the free space, as when another
    /// process takes it all), topped up until a write fails for lack of space; returns the
    /// file. The agent writes meanwhile, so a `fallocate` that finds less room is retried
    /// 1 MiB smaller.
    fn fill(&self) -> anyhow::Result<PathBuf> {
        use std::io::Write as _;
        let path = self.path().join("filler");
        let free = std::process::Command::new("stat")
            .args(["-f", "-c", "%a %S"])
            .arg(self.path())
            .output()
            .context("running stat -f")?;
        let text = String::from_utf8_lossy(&free.stdout);
        let mut numbers = text.split_whitespace().map(str::parse::<u64>);
        let (Some(Ok(blocks)), Some(Ok(size))) = (numbers.next(), numbers.next()) else {
            bail!("stat -f printed {text:?}");
        };
        let mut length = blocks * size;
        loop {
            let status = std::process::Command::new("fallocate")
                .args(["-l", &length.to_string()])
                .arg(&path)
                .status()
                .context("running fallocate")?;
            if status.success() {
                break;
            }
            ensure!(
                length > 1 << 20,
                "fallocate failed down to {length} bytes: {status}"
            );
            length -= 1 << 20;
        }
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let chunk = vec![0x5a_u8; 4096];
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => return Err(e).with_context(|| format!("filling {}", path.display())),
            }
        }
        Ok(path)
    }

    fn free(&self, filler: PathBuf) -> anyhow::Result<()> {
        std::fs::remove_file(&filler).with_context(|| format!("removing {}", filler.display()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: the agent (killed by its own Drop, which runs first) may still hold files.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

// ---------------------------------------------------------------------------------------
// 4. A flood far faster than the agent stores: memory stays bounded, the backlog stays in
//    JetStream.
// ---------------------------------------------------------------------------------------

/// What bounds the agent's memory, set explicitly: at most `max_ack_pending` messages in
/// flight for the recorder (in batches of `batch_size`) and as many for the analytics
/// consumer, which shares the setting; sled's cache of the active segment (`cache_bytes`);
/// and the block size, since sled keeps up to one page per cache shard (256) beyond its
/// cache, whatever `cache_bytes` says: 256 blocks.
const FLOOD_CONFIG: &str = r#"
[recorder]
batch_size = 250
max_ack_pending = 1000

[store]
cache_bytes = "16MiB"
block_events = 1024

[monitor.health]
min_free_disk_bytes = 1
"#;
const FLOOD_MAX_ACK_PENDING: u64 = 1_000;

const FLOOD_TOTAL: usize = 80_000;
/// Bytes of text in each event's `data` (the envelope is about 1 KiB).
const FLOOD_DATA_BYTES: usize = 800;
/// The agent's RSS must stay under this. Expected: the idle process (~56 MiB, debug build),
/// the messages in flight (2 x 1000 of ~1 KiB, each held as bytes, decoded entry and block
/// encoding: ~6 MiB), sled's cache (16 MiB) and the pages it keeps beyond it (~80 blocks of
/// ~60 KiB here): ~85 MiB, and half as much again for the allocator.
const RSS_BUDGET_KIB: u64 = 128 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_stays_in_jetstream_and_memory_stays_bounded() -> anyhow::Result<()> {
    bounded(TEST_LIMIT, async {
        let nats = NatsServer::start().await?;
        let agent =
            Agent::start(&nats.client_url(), AgentOptions::with_config(FLOOD_CONFIG)).await?;
        let pid = agent.pid().context("the agent has no pid")?;
        let cli = Cli::new(&nats.client_url())?.with_timeout(Duration::from_secs(60));
        let js = nats.jetstream().await?;
        let idle_kib = rss_kib(pid).context("reading the agent's RSS")?;
        let sampler = RssSampler::start(pid, js.clone());
        let started = Instant::now();

        let (ids, bytes) = flood(js.clone()).await?;
        let flooded = started.elapsed();
        wait_for_counts(&agent, FLOOD_TOTAL as u64, 0, Duration::from_secs(75)).await?;
        wait_drained(&js, Duration::from_secs(30)).await?;
        let stored_in = started.elapsed();
        let curve = sampler.stop().await;

        let peak = curve.iter().map(|s| s.rss_kib).max().unwrap_or(0);
        let max_pending = curve.iter().map(|s| s.pending).max().unwrap_or(0);
        if let Some(path) = std::env::var_os("TRACE_RSS_CURVE") {
            let mut csv = String::from("ms,rss_kib,pending\n");
            for s in &curve {
                csv.push_str(&format!("{},{},{}\n", s.ms, s.rss_kib, s.pending));
            }
            std::fs::write(&path, csv)
                .with_context(|| format!("writing the RSS curve to {path:?}"))?;
        }
        eprintln!(
            "flood: {FLOOD_TOTAL} events, {} MiB, published in {flooded:.1?}, stored in \
             {stored_in:.1?}; RSS idle {} MiB, peak {} MiB (budget {} MiB) over {} samples; \
             JetStream held up to {max_pending} pending",
            bytes >> 20,
            idle_kib / 1024,
            peak / 1024,
            RSS_BUDGET_KIB / 1024,
            curve.len()
        );
        ensure!(
            curve.len() >= 10,
            "only {} RSS samples: the sampler did not keep up",
            curve.len()
        );
        ensure!(
            peak < RSS_BUDGET_KIB,
            "the agent's RSS peaked at {} MiB, over the budget of {} MiB",
            peak / 1024,
            RSS_BUDGET_KIB / 1024
        );
        ensure!(
            max_pending >= 5 * FLOOD_MAX_ACK_PENDING,
            "the backlog never built up in JetStream (at most {max_pending} pending): the \
             flood was not faster than the agent"
        );

        // Exactly once: every id, through an export (msgpack) of the whole store.
        let export = tempfile::Builder::new()
            .prefix("trace-tests-flood-")
            .suffix(".msgpack")
            .tempfile()
            .context("creating the export file")?;
        let export_path = export.path().to_str().context("temp path not UTF-8")?;
        cli.success(&["export", "--output", export_path]).await?;
        let exported = std::fs::read(export.path()).context("reading the export")?;
        let mut rest: &[u8] = &exported;
        let mut stored = Vec::with_capacity(FLOOD_TOTAL);
        while !rest.is_empty() {
            let entry =
                trace_core::decode_stored_entry(&mut rest).context("decoding the export")?;
            if !entry.event_type.starts_with("trace.") {
                stored.push(entry.id.to_string());
            }
        }
        assert_ids_exactly_once(stored.iter().map(String::as_str), &ids)
            .context("after the flood")?;
        eprintln!(
            "flood: {} stored exactly once; {:.1?} in all",
            stored.len(),
            started.elapsed()
        );
        Ok(())
    })
    .await
}

/// Publishes `FLOOD_TOTAL` events of ~1 KiB as fast as JetStream acks them (a window of 2048
/// pending acks). Returns the ids and the bytes published.
async fn flood(js: async_nats::jetstream::Context) -> anyhow::Result<(Vec<String>, usize)> {
    let mut traffic = GameTraffic::new(0xF100_D000);
    // A few texts, reused: building text is the slow part of a debug-built test.
    let fillers: Vec<rmpv::Value> = (0..16)
        .map(|_| rmpv::Value::from(traffic.filler(FLOOD_DATA_BYTES)))
        .collect();
    let start = now_ms() - TimeDelta::seconds(120);
    let mut publisher = JsPublisher::new(js);
    let mut ids = Vec::with_capacity(FLOOD_TOTAL);
    let mut bytes = 0;
    for i in 0..FLOOD_TOTAL {
        let source = GameSource::ALL[i % 3];
        let mut entry = traffic.entry(source, start + TimeDelta::microseconds(i as i64 * 100));
        entry.data = rmpv::Value::Map(vec![
            ("seq".into(), rmpv::Value::from(i)),
            ("text".into(), fillers[i % fillers.len()].clone()),
        ]);
        let message = GameTraffic::envelope_of(source, &entry);
        bytes += message.payload.len();
        publisher.send(&message).await?;
        ids.extend(message.msg_id);
    }
    publisher.flush().await?;
    Ok((ids, bytes))
}

/// One sample of the agent under load.
#[derive(Debug, Clone, Copy)]
struct RssSample {
    /// Since the sampler started.
    ms: u128,
    /// `VmRSS` of the agent.
    rss_kib: u64,
    /// The recorder consumer's messages not yet delivered.
    pending: u64,
}

/// Samples the agent's RSS (from `/proc/<pid>/status`) and the recorder consumer's backlog
/// every 100 ms in the background.
struct RssSampler {
    stop: watch::Sender<bool>,
    task: JoinHandle<Vec<RssSample>>,
}

impl RssSampler {
    fn start(pid: u32, js: async_nats::jetstream::Context) -> RssSampler {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let t0 = Instant::now();
            let mut samples = Vec::new();
            let mut pending = 0;
            loop {
                if let Some(rss_kib) = rss_kib(pid) {
                    if let Ok(backlog) = recorder_backlog(&js).await {
                        pending = backlog.pending;
                    }
                    samples.push(RssSample {
                        ms: t0.elapsed().as_millis(),
                        rss_kib,
                        pending,
                    });
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = stopped.changed() => return samples,
                }
            }
        });
        RssSampler { stop, task }
    }

    async fn stop(self) -> Vec<RssSample> {
        self.stop.send_replace(true);
        self.task.await.unwrap_or_default()
    }
}

/// `VmRSS` of a process, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

// ---------------------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------------------

/// `n` realistic msgpack envelopes from the three game sources, a millisecond apart.
fn game_messages(seed: u64, n: usize) -> Vec<Outgoing> {
    let mut traffic = GameTraffic::new(seed);
    let start = now_ms() - TimeDelta::seconds(60);
    (0..n)
        .map(|i| {
            let ts = start + TimeDelta::milliseconds(i as i64);
            traffic.msgpack_envelope(GameSource::ALL[i % 3], ts)
        })
        .collect()
}

fn ids_of(messages: &[Outgoing]) -> Vec<String> {
    messages.iter().filter_map(|m| m.msg_id.clone()).collect()
}

/// Every stored entry except the agent's own (`trace.alert`, `trace.anomaly`).
async fn game_entries(cli: &Cli, expected: usize) -> anyhow::Result<Vec<EntryLine>> {
    let limit = (expected * 2).to_string();
    let lines = cli.query(&["--limit", &limit]).await?;
    Ok(lines
        .into_iter()
        .filter(|l| !l.event_type.starts_with("trace."))
        .collect())
}

/// Polls `store_info` without pause until at least `events` are stored; returns the count.
async fn stored_at_least(agent: &Agent, events: u64, timeout: Duration) -> anyhow::Result<u64> {
    let deadline = Deadline::after(timeout);
    loop {
        match agent.store_info().await {
            Ok(info) if info.events >= events => return Ok(info.events),
            Ok(info) if deadline.expired() => {
                bail!("never saw {events} events stored within {timeout:?}: {info:?}")
            }
            Err(e) if deadline.expired() => return Err(e),
            _ => tokio::time::sleep(Duration::from_millis(2)).await,
        }
    }
}

/// What a [`SteadyPublisher`] did.
#[derive(Debug, Clone, Copy, Default)]
struct Published {
    /// Messages JetStream took (acks not marked duplicate).
    new: u64,
    /// Acks marked duplicate: a chunk published again after a failure, part of which the
    /// stream had in fact taken the first time.
    duplicates: u64,
    /// Chunks published again after a failure.
    retried_chunks: u64,
}

/// A game service that keeps publishing through faults: chunks with a pause between them; a
/// chunk that fails (server away, JetStream not back yet) is published again whole, its
/// `Nats-Msg-Id`s letting JetStream drop what it already has.
struct SteadyPublisher {
    task: JoinHandle<anyhow::Result<Published>>,
}

impl SteadyPublisher {
    fn spawn(
        nats_url: String,
        messages: Vec<Outgoing>,
        chunk: usize,
        pause: Duration,
        progress: watch::Sender<usize>,
    ) -> SteadyPublisher {
        let task = tokio::spawn(async move {
            let client = async_nats::ConnectOptions::new()
                .connection_timeout(Duration::from_secs(5))
                .connect(&nats_url)
                .await
                .with_context(|| format!("connecting the publisher to {nats_url}"))?;
            let mut js = async_nats::jetstream::new(client);
            js.set_timeout(Duration::from_secs(2));
            let mut published = Published::default();
            let deadline = Deadline::after(Duration::from_secs(75));
            let mut sent = 0;
            for part in messages.chunks(chunk) {
                loop {
                    let attempt = tokio::time::timeout(CHUNK_LIMIT, publish_chunk(&js, part)).await;
                    match attempt {
                        Ok(Ok((new, duplicates))) => {
                            published.new += new;
                            published.duplicates += duplicates;
                            break;
                        }
                        failed => {
                            if deadline.expired() {
                                bail!("publishing still fails at the deadline: {failed:?}");
                            }
                            published.retried_chunks += 1;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
                sent += part.len();
                progress.send_replace(sent);
                tokio::time::sleep(pause).await;
            }
            Ok(published)
        });
        SteadyPublisher { task }
    }

    /// Waits for the last chunk to be acked.
    async fn finish(self, timeout: Duration) -> anyhow::Result<Published> {
        tokio::time::timeout(timeout, self.task)
            .await
            .with_context(|| format!("the publisher did not finish within {timeout:?}"))?
            .context("the publisher task panicked")?
    }
}

/// Publishes a chunk with a window of pending acks; returns (new, duplicate) acks.
async fn publish_chunk(
    js: &async_nats::jetstream::Context,
    part: &[Outgoing],
) -> anyhow::Result<(u64, u64)> {
    let mut publisher = JsPublisher::new(js.clone());
    for message in part {
        publisher.send(message).await?;
    }
    let acked = publisher.flush().await?;
    ensure!(
        acked == part.len() as u64,
        "{acked} of {} acked",
        part.len()
    );
    Ok((acked - publisher.duplicates(), publisher.duplicates()))
}

/// `GET /health` every 100 ms in the background, each answer's `status` (or `unreachable`)
/// kept with the instant it was seen.
struct HealthTrail {
    samples: Arc<Mutex<Vec<(Instant, String)>>>,
    task: JoinHandle<()>,
}

impl HealthTrail {
    fn start(addr: SocketAddr) -> HealthTrail {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let task =
            tokio::spawn({
                let samples = samples.clone();
                async move {
                    loop {
                        let status =
                            match http_get_with_timeout(addr, "/health", Duration::from_secs(1))
                                .await
                            {
                                Ok(response) => serde_json::from_str::<Value>(&response.body)
                                    .ok()
                                    .and_then(|v| v["status"].as_str().map(str::to_owned))
                                    .unwrap_or_else(|| format!("http {}", response.status)),
                                Err(_) => "unreachable".to_owned(),
                            };
                        lock(&samples).push((Instant::now(), status));
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            });
        HealthTrail { samples, task }
    }

    /// The statuses seen from `from` to `to`.
    fn between(&self, from: Instant, to: Instant) -> Vec<String> {
        lock(&self.samples)
            .iter()
            .filter(|(at, _)| *at >= from && *at <= to)
            .map(|(_, s)| s.clone())
            .collect()
    }

    /// Run-length summary: `healthy x12 -> unreachable x5 -> degraded x8 -> healthy x3`.
    fn summary(&self) -> String {
        let samples = lock(&self.samples);
        let mut runs: Vec<(String, usize)> = Vec::new();
        for (_, status) in samples.iter() {
            match runs.last_mut() {
                Some((last, n)) if last == status => *n += 1,
                _ => runs.push((status.clone(), 1)),
            }
        }
        runs.iter()
            .map(|(s, n)| format!("{s} x{n}"))
            .collect::<Vec<_>>()
            .join(" -> ")
    }
}

impl Drop for HealthTrail {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Polls `GET /health` until its `status` is `level`; returns the report.
async fn wait_health(agent: &Agent, level: &str, timeout: Duration) -> anyhow::Result<Value> {
    eventually(&format!("GET /health to say {level}"), timeout, || async {
        match agent.http_get("/health").await {
            Ok(response) => match serde_json::from_str::<Value>(&response.body) {
                Ok(body) if body["status"] == level => Ok(ControlFlow::Break(body)),
                _ => Ok(ControlFlow::Continue(response.describe())),
            },
            Err(e) => Ok(ControlFlow::Continue(format!("{e:#}"))),
        }
    })
    .await
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

/// Every consumer of the input stream with its backlog, for failure messages.
async fn consumers_summary(js: &async_nats::jetstream::Context) -> String {
    use futures::StreamExt as _;
    let Ok(stream) = js.get_stream(STREAM).await else {
        return format!("no stream {STREAM}");
    };
    let mut out = Vec::new();
    let mut names = stream.consumer_names();
    while let Some(Ok(name)) = names.next().await {
        if let Ok(mut consumer) = stream
            .get_consumer::<async_nats::jetstream::consumer::pull::Config>(&name)
            .await
        {
            if let Ok(info) = consumer.info().await {
                out.push(format!(
                    "{name}: {} pending, {} unacked, ack floor {}, delivered {}",
                    info.num_pending,
                    info.num_ack_pending,
                    info.ack_floor.stream_sequence,
                    info.delivered.stream_sequence
                ));
            }
        }
    }
    out.join("; ")
}
