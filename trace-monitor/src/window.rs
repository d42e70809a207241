//! Sliding-window rates from cumulative counters: snapshots taken at refresh times, the rate
//! is the increase between the oldest snapshot inside the window and now (how Prometheus's
//! `rate()` reads a counter, without extrapolation).

use std::collections::VecDeque;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// Snapshots closer together than this are not kept (scrapes may refresh often).
const MIN_SPACING_MS: i64 = 1000;

/// Snapshots of a few cumulative counters, pruned to a time window.
#[derive(Debug, Clone)]
pub(crate) struct CounterWindow<const N: usize> {
    window: Duration,
    snapshots: VecDeque<(DateTime<Utc>, [u64; N])>,
}

/// The increase of each counter over a span of time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Increase<const N: usize> {
    /// Per counter, how much it went up.
    pub delta: [u64; N],
    /// Over how long, in seconds (> 0).
    pub seconds: f64,
}

impl<const N: usize> Increase<N> {
    /// Counter `i` per second.
    pub fn rate(&self, i: usize) -> f64 {
        self.delta[i] as f64 / self.seconds
    }
}

impl<const N: usize> CounterWindow<N> {
    /// An empty window of `window` length.
    pub fn new(window: Duration) -> Self {
        CounterWindow {
            window,
            snapshots: VecDeque::new(),
        }
    }

    /// A window whose first snapshot is `values` at `at` (a source first seen: zeros then).
    pub fn starting_at(window: Duration, at: DateTime<Utc>, values: [u64; N]) -> Self {
        let mut w = CounterWindow::new(window);
        w.snapshots.push_back((at, values));
        w
    }

    /// Records the counters' current values at `now` and forgets snapshots that fell out of
    /// the window. Returns the increase from the oldest snapshot kept to `values`, or `None`
    /// while less than a second of history exists.
    pub fn update(&mut self, now: DateTime<Utc>, values: [u64; N]) -> Option<Increase<N>> {
        let horizon =
            now - chrono::Duration::from_std(self.window).unwrap_or(chrono::Duration::seconds(60));
        // Keep the newest snapshot at or before the horizon as the base, so nothing counted
        // inside the window is lost; its time is clamped to the horizon so a rate is spread
        // over at most one window (with refreshes every second the error is under a second).
        while self.snapshots.get(1).is_some_and(|(t, _)| *t <= horizon) {
            self.snapshots.pop_front();
        }
        let increase = self.snapshots.front().and_then(|(t, base)| {
            let since = (*t).max(horizon);
            let ms = (now - since).num_milliseconds();
            (ms >= MIN_SPACING_MS).then(|| Increase {
                delta: std::array::from_fn(|i| values[i].saturating_sub(base[i])),
                seconds: ms as f64 / 1000.0,
            })
        });
        let spaced = self
            .snapshots
            .back()
            .is_none_or(|(t, _)| (now - *t).num_milliseconds() >= MIN_SPACING_MS);
        if spaced {
            self.snapshots.push_back((now, values));
        }
        increase
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + s, 0)
            .single()
            .expect("valid time")
    }

    #[test]
    fn rate_over_the_window() {
        let mut w = CounterWindow::<1>::new(Duration::from_secs(60));
        assert_eq!(w.update(t(0), [0]), None);
        let inc = w.update(t(10), [100]).expect("ten seconds of history");
        assert_eq!(inc.delta, [100]);
        assert!((inc.rate(0) - 10.0).abs() < 1e-9);
        for s in 11..=100 {
            w.update(t(s), [100]);
        }
        let inc = w.update(t(101), [100]).expect("history");
        assert_eq!(inc.delta, [0], "old increase fell out of the window");
        assert!(inc.seconds <= 60.0);
    }

    #[test]
    fn old_single_snapshot_is_clamped_to_the_window() {
        let mut w = CounterWindow::<1>::starting_at(Duration::from_secs(60), t(0), [0]);
        let inc = w.update(t(600), [60]).expect("history");
        assert_eq!(inc.delta, [60]);
        assert!((inc.seconds - 60.0).abs() < 1e-9);
    }
}
