//! Waiting without sleeping to assert: poll a probe until it is satisfied or a deadline passes,
//! and when it is not, say what the probe saw last.

use std::future::Future;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use anyhow::bail;

/// How often [`eventually`] polls.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A point in time a wait must not pass.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(Instant);

impl Deadline {
    /// The deadline `timeout` from now.
    pub fn after(timeout: Duration) -> Self {
        Deadline(Instant::now() + timeout)
    }

    /// Whether it has passed.
    pub fn expired(&self) -> bool {
        Instant::now() >= self.0
    }

    /// Time left (zero once expired).
    pub fn remaining(&self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }
}

/// Polls `probe` every 50 ms until it returns `Break(value)`, for at most `timeout`.
///
/// `Continue(seen)` means "not yet" and `seen` describes the state observed, which becomes
/// part of the error when the deadline passes. An `Err` from the probe stops the wait at once.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<ControlFlow<T, String>>>,
{
    let deadline = Deadline::after(timeout);
    let mut last_seen = String::from("(never polled)");
    loop {
        // A probe that hangs must not outlive the deadline.
        let remaining = deadline.remaining().max(Duration::from_millis(1));
        match tokio::time::timeout(remaining, probe()).await {
            Ok(result) => match result? {
                ControlFlow::Break(value) => return Ok(value),
                ControlFlow::Continue(seen) => last_seen = seen,
            },
            Err(_) => {
                last_seen =
                    format!("a probe was still running at the deadline; before: {last_seen}")
            }
        }
        if deadline.expired() {
            bail!("timed out after {timeout:?} waiting for {what}; last seen: {last_seen}");
        }
        tokio::time::sleep(POLL_INTERVAL.min(deadline.remaining())).await;
    }
}
