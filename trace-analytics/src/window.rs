//! Event-time sliding window counts: a ring of fixed-width time buckets.
//!
//! The ring covers `buckets * bucket_secs` seconds ending at the newest bucket seen. An event
//! older than the ring is not counted (it is still counted in the totals kept by the caller);
//! an event newer than the ring's head advances it, clearing the buckets it passes.

use serde::{Deserialize, Serialize};

/// Width of one bucket of [`SlidingCounts`], seconds.
pub const BUCKET_SECS: i64 = 10;
/// Number of buckets of [`SlidingCounts`]: one hour.
pub const BUCKETS: usize = 360;

/// Counts in 10-second buckets over the last hour of event time (1.4 KiB).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SlidingCounts {
    /// Index (ts / BUCKET_SECS) of the newest bucket; `i64::MIN` while empty.
    head: i64,
    counts: Vec<u32>,
}

impl Default for SlidingCounts {
    fn default() -> Self {
        SlidingCounts {
            head: i64::MIN,
            counts: vec![0; BUCKETS],
        }
    }
}

impl SlidingCounts {
    /// Adds `n` at event time `ts_secs`.
    pub fn add(&mut self, ts_secs: i64, n: u32) {
        let bucket = ts_secs.div_euclid(BUCKET_SECS);
        if self.head == i64::MIN {
            self.head = bucket;
        } else if bucket > self.head {
            let steps = (bucket - self.head).min(BUCKETS as i64);
            for k in 1..=steps {
                let slot = (self.head + k).rem_euclid(BUCKETS as i64) as usize;
                self.counts[slot] = 0;
            }
            self.head = bucket;
        } else if self.head - bucket >= BUCKETS as i64 {
            return;
        }
        let slot = bucket.rem_euclid(BUCKETS as i64) as usize;
        self.counts[slot] = self.counts[slot].saturating_add(n);
    }

    /// The count over the last `window_secs` seconds before `now_secs` (bucket-aligned: the
    /// buckets whose start lies in `(now - window, now]`).
    pub fn sum(&self, now_secs: i64, window_secs: i64) -> u64 {
        if self.head == i64::MIN {
            return 0;
        }
        let now_bucket = now_secs.div_euclid(BUCKET_SECS);
        let width = (window_secs / BUCKET_SECS).clamp(1, BUCKETS as i64);
        let oldest_in_ring = self.head - BUCKETS as i64 + 1;
        let from = (now_bucket - width + 1).max(oldest_in_ring);
        let to = now_bucket.min(self.head);
        (from..=to)
            .map(|b| u64::from(self.counts[b.rem_euclid(BUCKETS as i64) as usize]))
            .sum()
    }

    /// The rate per second over the last `window_secs` seconds before `now_secs`.
    pub fn rate(&self, now_secs: i64, window_secs: i64) -> f64 {
        let width = (window_secs / BUCKET_SECS).clamp(1, BUCKETS as i64) * BUCKET_SECS;
        self.sum(now_secs, window_secs) as f64 / width as f64
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.counts.capacity() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_slide_with_event_time() {
        let mut counts = SlidingCounts::default();
        for s in 0..3600 {
            counts.add(s, 1);
        }
        assert_eq!(counts.sum(3599, 60), 60);
        assert_eq!(counts.sum(3599, 300), 300);
        assert_eq!(counts.sum(3599, 3600), 3600);
        counts.add(3600 + 600, 5);
        assert_eq!(counts.sum(4200, 60), 5);
        assert_eq!(counts.sum(4200, 3600), 5 + 2990);
        counts.add(0, 1);
        assert_eq!(counts.sum(4200, 3600), 5 + 2990);
    }
}
