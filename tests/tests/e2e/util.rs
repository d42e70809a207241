//! Helpers shared by the end-to-end tests: time limits, waiting for the agent to store what
//! was published, and exactly-once checks over query results.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::ops::ControlFlow;
use std::time::Duration;

use anyhow::{anyhow, bail, ensure};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use trace_tests::{eventually, recorder_backlog, Agent, EntryLine, StoreInfo};

/// Runs a whole test body with a time limit, so a hang fails instead of stalling the suite.
pub async fn bounded<T>(
    limit: Duration,
    body: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::time::timeout(limit, body)
        .await
        .map_err(|_| anyhow!("the test did not finish within {limit:?}"))?
}

/// Now, truncated to whole milliseconds (what every encoding here round-trips exactly).
pub fn now_ms() -> DateTime<Utc> {
    let now = Utc::now();
    now.duration_trunc(TimeDelta::milliseconds(1))
        .unwrap_or(now)
}

/// Waits until the agent reports at least `events` stored entries and `quarantined`
/// quarantine records, then returns its store info.
pub async fn wait_for_counts(
    agent: &Agent,
    events: u64,
    quarantined: u64,
    timeout: Duration,
) -> anyhow::Result<StoreInfo> {
    eventually(
        &format!("the agent to store {events} events and quarantine {quarantined}"),
        timeout,
        || async move {
            match agent.store_info().await {
                Ok(info) if info.events >= events && info.quarantined >= quarantined => {
                    Ok(ControlFlow::Break(info))
                }
                Ok(info) => Ok(ControlFlow::Continue(format!("{info:?}"))),
                Err(e) => Ok(ControlFlow::Continue(format!("store_info failed: {e:#}"))),
            }
        },
    )
    .await
}

/// Waits until the recorder's durable consumer has nothing pending or unacked.
pub async fn wait_drained(
    js: &async_nats::jetstream::Context,
    timeout: Duration,
) -> anyhow::Result<()> {
    eventually(
        "the trace-store consumer to drain",
        timeout,
        || async move {
            match recorder_backlog(js).await {
                Ok(backlog) if backlog.is_drained() => Ok(ControlFlow::Break(())),
                Ok(backlog) => Ok(ControlFlow::Continue(format!("{backlog:?}"))),
                Err(e) => Ok(ControlFlow::Continue(format!("{e:#}"))),
            }
        },
    )
    .await
}

/// Checks that `lines` hold every id of `published` exactly once and nothing else.
pub fn assert_exactly_once(lines: &[EntryLine], published: &[String]) -> anyhow::Result<()> {
    assert_ids_exactly_once(lines.iter().map(|l| l.id.as_str()), published)
}

/// Checks that the `stored` ids are those of `published`, each exactly once.
pub fn assert_ids_exactly_once<'a>(
    stored: impl IntoIterator<Item = &'a str>,
    published: &[String],
) -> anyhow::Result<()> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut total = 0;
    for id in stored {
        *seen.entry(id).or_default() += 1;
        total += 1;
    }
    let doubled: Vec<(&str, usize)> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, n)| (*id, *n))
        .collect();
    let wanted: HashSet<&str> = published.iter().map(String::as_str).collect();
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|id| !seen.contains_key(*id))
        .copied()
        .collect();
    let unknown: Vec<&str> = seen
        .keys()
        .filter(|id| !wanted.contains(*id))
        .copied()
        .collect();
    if !doubled.is_empty() || !missing.is_empty() || !unknown.is_empty() {
        bail!(
            "not exactly once: {} entries for {} published ids; {} ids doubled (e.g. {:?}), \
             {} missing (e.g. {:?}), {} unknown (e.g. {:?})",
            total,
            published.len(),
            doubled.len(),
            &doubled[..doubled.len().min(5)],
            missing.len(),
            &missing[..missing.len().min(5)],
            unknown.len(),
            &unknown[..unknown.len().min(5)],
        );
    }
    ensure!(total == published.len());
    Ok(())
}
