//! Distinct counting: an exact set of 64-bit key hashes while small, a HyperLogLog beyond.
//!
//! HyperLogLog after Flajolet, Fusy, Gandouet, Meunier, "HyperLogLog: the analysis of a
//! near-optimal cardinality estimation algorithm" (AofA 2007) with the 64-bit hash of Heule,
//! Nunkesser, Hall, "HyperLogLog in Practice" (EDBT 2013), estimated by Ertl's improved
//! estimator (2017), which needs neither the small-range switch to linear counting nor
//! empirical bias tables. With precision
//! `p` the sketch holds `2^p` one-byte registers and its standard error is `1.04 / sqrt(2^p)`
//! (0.81 % for the default `p = 14`, 16 KiB).

use serde::{Deserialize, Serialize};

use crate::hashing::FastSet;

/// HyperLogLog registers of precision `p` (4..=18).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HyperLogLog {
    precision: u8,
    registers: Vec<u8>,
}

impl HyperLogLog {
    /// An empty sketch with `2^precision` registers (`precision` clamped to 4..=18).
    pub fn new(precision: u8) -> Self {
        let precision = precision.clamp(4, 18);
        HyperLogLog {
            precision,
            registers: vec![0; 1 << precision],
        }
    }

    /// Adds an item by its well-mixed 64-bit hash.
    pub fn insert_hash(&mut self, hash: u64) {
        let p = u32::from(self.precision);
        let index = (hash >> (64 - p)) as usize;
        // The remaining 64 - p bits, with a sentinel bit so the run length is bounded.
        let rest = (hash << p) | (1u64 << (p - 1));
        let rank = rest.leading_zeros() as u8 + 1;
        if let Some(register) = self.registers.get_mut(index) {
            if rank > *register {
                *register = rank;
            }
        }
    }

    /// The estimated number of distinct items, by Ertl's improved estimator ("New cardinality
    /// estimation algorithms for HyperLogLog sketches", 2017): unbiased over the whole range,
    /// without the bias of the classic raw estimate around the switch from linear counting
    /// (near `2.5 m`), where it was seen 3.4 % off at `p = 14`.
    pub fn estimate(&self) -> f64 {
        let m = self.registers.len() as f64;
        let q = 64 - usize::from(self.precision);
        // histogram of register values 0..=q+1
        let mut counts = vec![0u32; q + 2];
        for &r in &self.registers {
            if let Some(c) = counts.get_mut(usize::from(r).min(q + 1)) {
                *c += 1;
            }
        }
        let mut z = m * tau(1.0 - f64::from(counts[q + 1]) / m);
        for k in (1..=q).rev() {
            z = 0.5 * (z + f64::from(counts[k]));
        }
        z += m * sigma(f64::from(counts[0]) / m);
        if !z.is_finite() || z <= 0.0 {
            return 0.0;
        }
        m * m / (2.0 * std::f64::consts::LN_2) / z
    }

    /// Merges another sketch of the same precision into this one (register-wise max).
    pub fn merge(&mut self, other: &HyperLogLog) {
        if other.precision != self.precision {
            return;
        }
        for (a, b) in self.registers.iter_mut().zip(&other.registers) {
            *a = (*a).max(*b);
        }
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.registers.capacity()
    }
}

/// Ertl's sigma: `x + sum_k x^(2^k) 2^(k-1)`, infinite at 1 (an empty sketch).
fn sigma(mut x: f64) -> f64 {
    if x >= 1.0 {
        return f64::INFINITY;
    }
    let (mut y, mut z) = (1.0, x);
    loop {
        x *= x;
        let before = z;
        z += x * y;
        y += y;
        if z == before {
            return z;
        }
    }
}

/// Ertl's tau: `(1 - x - sum_k (1 - x^(2^-k))^2 2^-k) / 3`.
fn tau(mut x: f64) -> f64 {
    if x <= 0.0 || x >= 1.0 {
        return 0.0;
    }
    let (mut y, mut z) = (1.0, 1.0 - x);
    loop {
        x = x.sqrt();
        let before = z;
        y *= 0.5;
        z -= (1.0 - x).powi(2) * y;
        if z == before {
            return z / 3.0;
        }
    }
}

/// Counts distinct keys exactly up to `exact_limit`, then switches to a [`HyperLogLog`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DistinctCounter {
    exact_limit: usize,
    precision: u8,
    exact: Option<FastSet<u64>>,
    sketch: Option<HyperLogLog>,
}

impl DistinctCounter {
    /// Exact up to `exact_limit` distinct keys, then a HyperLogLog of `precision`.
    pub fn new(exact_limit: usize, precision: u8) -> Self {
        DistinctCounter {
            exact_limit,
            precision,
            exact: Some(FastSet::default()),
            sketch: None,
        }
    }

    /// Adds a key by its well-mixed 64-bit hash.
    pub fn insert_hash(&mut self, hash: u64) {
        if let Some(sketch) = &mut self.sketch {
            sketch.insert_hash(hash);
            return;
        }
        let exact = self.exact.get_or_insert_with(FastSet::default);
        exact.insert(hash);
        if exact.len() > self.exact_limit {
            let mut sketch = HyperLogLog::new(self.precision);
            for h in exact.iter() {
                sketch.insert_hash(*h);
            }
            self.exact = None;
            self.sketch = Some(sketch);
        }
    }

    /// The number of distinct keys: exact, or estimated once past the exact limit.
    pub fn count(&self) -> u64 {
        match (&self.sketch, &self.exact) {
            (Some(sketch), _) => sketch.estimate().round() as u64,
            (None, Some(exact)) => exact.len() as u64,
            (None, None) => 0,
        }
    }

    /// True while the count is exact.
    pub fn is_exact(&self) -> bool {
        self.sketch.is_none()
    }

    /// Heap bytes held (at most about `max(16 * exact_limit, 2^precision)`).
    pub fn heap_bytes(&self) -> usize {
        self.sketch.as_ref().map_or(0, HyperLogLog::heap_bytes)
            + self.exact.as_ref().map_or(0, |e| e.capacity() * 9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hashing::hash_str;

    /// The worst relative error over 20 sketches at each cardinality, across the range where
    /// the classic estimator switches from linear counting (about 41,000 at p = 14).
    #[test]
    fn estimate_is_unbiased_across_the_linear_counting_switch() {
        for n in [
            100u64, 5_000, 30_000, 38_000, 41_000, 45_000, 60_000, 200_000,
        ] {
            let mut worst = 0.0f64;
            let mut mean = 0.0;
            for salt in 0..20 {
                let mut hll = HyperLogLog::new(14);
                for i in 0..n {
                    hll.insert_hash(hash_str(&format!("p-{salt}-{i}")));
                }
                let err = (hll.estimate() - n as f64) / n as f64;
                worst = worst.max(err.abs());
                mean += err / 20.0;
            }
            // 3.7 standard errors (0.81 %) for the worst of 20; bias well under one
            assert!(worst < 0.03, "n = {n}: worst error {worst}");
            assert!(mean.abs() < 0.005, "n = {n}: mean error {mean}");
        }
        assert_eq!(HyperLogLog::new(14).estimate(), 0.0);
    }

    #[test]
    fn exact_then_estimated_within_three_percent() {
        let mut counter = DistinctCounter::new(1000, 14);
        for i in 0..1000 {
            counter.insert_hash(hash_str(&format!("player-{i}")));
            counter.insert_hash(hash_str(&format!("player-{i}")));
        }
        assert_eq!(counter.count(), 1000);
        assert!(counter.is_exact());
        for i in 0..200_000 {
            counter.insert_hash(hash_str(&format!("player-{i}")));
        }
        let estimate = counter.count() as f64;
        assert!(
            (estimate - 200_000.0).abs() / 200_000.0 < 0.03,
            "{estimate}"
        );
    }
}
