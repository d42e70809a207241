//! A sliding window of recent values kept sorted, for medians, quantiles and robust z-scores.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// The tail quantile whose distance from the median bounds the scale from below.
pub(crate) const TAIL: f64 = 0.01;

/// The last `capacity` values, in arrival order and sorted (`O(capacity)` per push).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RobustWindow {
    capacity: usize,
    ring: VecDeque<f64>,
    sorted: Vec<f64>,
}

fn position(sorted: &[f64], v: f64) -> usize {
    sorted.partition_point(|x| x.total_cmp(&v).is_lt())
}

impl RobustWindow {
    pub(crate) fn new(capacity: usize) -> Self {
        RobustWindow {
            capacity: capacity.max(1),
            ring: VecDeque::with_capacity(capacity.max(1)),
            sorted: Vec::with_capacity(capacity.max(1)),
        }
    }

    /// Adds `v`, returning the value that fell out of the window, if any.
    pub(crate) fn push(&mut self, v: f64) -> Option<f64> {
        let mut evicted = None;
        if self.ring.len() == self.capacity {
            if let Some(old) = self.ring.pop_front() {
                let at = position(&self.sorted, old);
                if at < self.sorted.len() {
                    self.sorted.remove(at);
                }
                evicted = Some(old);
            }
        }
        self.ring.push_back(v);
        let at = position(&self.sorted, v);
        self.sorted.insert(at, v);
        evicted
    }

    pub(crate) fn is_full(&self) -> bool {
        self.ring.len() >= self.capacity
    }

    pub(crate) fn len(&self) -> usize {
        self.ring.len()
    }

    /// The `q` quantile (nearest rank with linear interpolation); 0 when empty.
    pub(crate) fn quantile(&self, q: f64) -> f64 {
        quantile_sorted(&self.sorted, q)
    }

    pub(crate) fn median(&self) -> f64 {
        self.quantile(0.5)
    }

    /// A signed robust z-score of `v` against the window: positive above the median.
    ///
    /// The scale is taken on the side of `v`: the larger of the half inter-quartile spread
    /// (`(q75 - median) / 0.6745`, a standard deviation for normal data) and the 1 % tail
    /// distance divided by `tail_z`, so values as extreme as the window's own tails score at most
    /// about `tail_z` even when the data are heavy-tailed or quantised. `floor` keeps a constant
    /// window from dividing by zero.
    pub(crate) fn z(&self, v: f64, tail_z: f64, floor: f64) -> f64 {
        self.z_bounded(v, tail_z, floor, None)
    }

    /// [`RobustWindow::z`], with the scale also at least the distance from the median to a
    /// longer-memory extreme (`(high, low)`, see `BlockExtremes`) divided by `extreme_z`.
    pub(crate) fn z_bounded(
        &self,
        v: f64,
        tail_z: f64,
        floor: f64,
        extremes: Option<(f64, f64, f64)>,
    ) -> f64 {
        if self.sorted.is_empty() {
            return 0.0;
        }
        let median = self.median();
        let floor = match extremes {
            Some((high, low, extreme_z)) => {
                let distance = if v >= median {
                    high - median
                } else {
                    median - low
                };
                floor.max(distance / extreme_z)
            }
            None => floor,
        };
        let (quartile, tail) = if v >= median {
            (
                self.quantile(0.75) - median,
                self.quantile(1.0 - TAIL) - median,
            )
        } else {
            (median - self.quantile(0.25), median - self.quantile(TAIL))
        };
        let scale = (quartile / 0.6745).max(tail / tail_z).max(floor);
        (v - median) / scale
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        (self.ring.capacity() + self.sorted.capacity()) * 8
    }
}

/// The `q` quantile of sorted values with linear interpolation; 0 when empty.
pub(crate) fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    match sorted.len() {
        0 => 0.0,
        1 => sorted[0],
        n => {
            let rank = q.clamp(0.0, 1.0) * (n - 1) as f64;
            let low = rank.floor() as usize;
            let high = (low + 1).min(n - 1);
            let frac = rank - low as f64;
            sorted[low] + (sorted[high] - sorted[low]) * frac
        }
    }
}

/// The median of a small unsorted slice (copied into `scratch`).
pub(crate) fn median_of(values: impl Iterator<Item = f64>, scratch: &mut Vec<f64>) -> f64 {
    scratch.clear();
    scratch.extend(values);
    scratch.sort_by(f64::total_cmp);
    quantile_sorted(scratch, 0.5)
}

/// Block maxima and minima of a statistic over a long memory (`keep` blocks of `block`
/// points), summarised by a high quantile of the maxima and a low quantile of the minima:
/// "the largest excursion that recurs", robust to a few anomalies (block-maxima idea of
/// extreme value theory). Recomputed once per block.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct BlockExtremes {
    block: usize,
    keep: usize,
    in_block: usize,
    high_now: f64,
    low_now: f64,
    highs: VecDeque<f64>,
    lows: VecDeque<f64>,
    high: f64,
    low: f64,
}

/// The quantile of block maxima (and `1 -` it of minima) taken as the recurring extreme.
const BLOCK_QUANTILE: f64 = 0.97;

impl BlockExtremes {
    pub(crate) fn new(block: usize, keep: usize) -> Self {
        BlockExtremes {
            block: block.max(1),
            keep: keep.max(1),
            in_block: 0,
            high_now: f64::NEG_INFINITY,
            low_now: f64::INFINITY,
            highs: VecDeque::with_capacity(keep.max(1)),
            lows: VecDeque::with_capacity(keep.max(1)),
            high: f64::NAN,
            low: f64::NAN,
        }
    }

    pub(crate) fn push(&mut self, v: f64, scratch: &mut Vec<f64>) {
        self.high_now = self.high_now.max(v);
        self.low_now = self.low_now.min(v);
        self.in_block += 1;
        if self.in_block < self.block {
            return;
        }
        if self.highs.len() >= self.keep {
            self.highs.pop_front();
            self.lows.pop_front();
        }
        self.highs.push_back(self.high_now);
        self.lows.push_back(self.low_now);
        self.in_block = 0;
        self.high_now = f64::NEG_INFINITY;
        self.low_now = f64::INFINITY;
        scratch.clear();
        scratch.extend(self.highs.iter().copied());
        scratch.sort_by(f64::total_cmp);
        self.high = quantile_sorted(scratch, BLOCK_QUANTILE);
        scratch.clear();
        scratch.extend(self.lows.iter().copied());
        scratch.sort_by(f64::total_cmp);
        self.low = quantile_sorted(scratch, 1.0 - BLOCK_QUANTILE);
    }

    /// `(high, low)` once a block is complete.
    pub(crate) fn get(&self) -> Option<(f64, f64)> {
        (!self.highs.is_empty()).then_some((self.high, self.low))
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        (self.highs.capacity() + self.lows.capacity()) * 8
    }
}
