//! Space-Saving heavy hitters (Metwally, Agrawal, El Abbadi, "Efficient Computation of Frequent
//! and Top-k Elements in Data Streams", ICDT 2005), with a payload per monitored key.
//!
//! Guarantees with `m` counters after `N` offered units of weight: every key whose true count
//! exceeds `N / m` is monitored; a monitored key's `count` overestimates its true count by at
//! most its `error` (≤ `N / m`), and `count - error` is a lower bound. Counters form a min-heap
//! so an update costs `O(log m)` and a miss evicts the smallest counter. Keys are found by a
//! 64-bit hash (see `hashing`), so a hit allocates nothing.

use serde::{Deserialize, Serialize};

use crate::hashing::FastMap;

/// One monitored key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Counter<K, V> {
    /// The key.
    pub key: K,
    /// Estimated count (an upper bound of the true count).
    pub count: u64,
    /// Maximum overestimation of `count` (the count of the counter this key replaced).
    pub error: u64,
    /// Caller data kept with the key since it was admitted.
    pub value: V,
    #[serde(skip)]
    hash: u64,
}

/// The outcome of [`SpaceSaving::offer`].
pub struct Offered<'a, K, V> {
    /// The monitored counter of the offered key.
    pub counter: &'a mut Counter<K, V>,
    /// True when the key was not monitored before this offer.
    pub admitted: bool,
    /// The counter evicted to make room, if any.
    pub evicted: Option<(K, V)>,
}

/// A Space-Saving sketch with at most `capacity` counters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(
    from = "SpaceSavingRepr<K, V>",
    into = "SpaceSavingRepr<K, V>",
    bound(
        serialize = "K: Serialize + Clone + KeyHash, V: Serialize + Clone",
        deserialize = "K: Deserialize<'de> + KeyHash, V: Deserialize<'de>"
    )
)]
pub struct SpaceSaving<K, V = ()> {
    capacity: usize,
    total: u64,
    heap: Vec<Counter<K, V>>,
    index: FastMap<u64, u32>,
}

/// How a key is hashed for the index; implemented for the key types this crate uses.
pub trait KeyHash {
    /// A well-mixed 64-bit hash.
    fn key_hash(&self) -> u64;
}

impl KeyHash for String {
    fn key_hash(&self) -> u64 {
        crate::hashing::hash_str(self)
    }
}

impl KeyHash for Box<str> {
    fn key_hash(&self) -> u64 {
        crate::hashing::hash_str(self)
    }
}

impl KeyHash for u64 {
    fn key_hash(&self) -> u64 {
        crate::hashing::fmix64(*self)
    }
}

#[derive(Serialize, Deserialize)]
struct SpaceSavingRepr<K, V> {
    capacity: usize,
    total: u64,
    counters: Vec<Counter<K, V>>,
}

impl<K: KeyHash, V> From<SpaceSavingRepr<K, V>> for SpaceSaving<K, V> {
    fn from(repr: SpaceSavingRepr<K, V>) -> Self {
        let mut sketch = SpaceSaving {
            capacity: repr.capacity.max(1),
            total: repr.total,
            heap: Vec::with_capacity(repr.counters.len()),
            index: FastMap::default(),
        };
        for mut counter in repr.counters {
            if sketch.heap.len() >= sketch.capacity {
                break;
            }
            counter.hash = counter.key.key_hash();
            sketch.index.insert(counter.hash, sketch.heap.len() as u32);
            sketch.heap.push(counter);
            let last = sketch.heap.len() - 1;
            sketch.sift_up(last);
        }
        sketch
    }
}

impl<K, V> From<SpaceSaving<K, V>> for SpaceSavingRepr<K, V> {
    fn from(sketch: SpaceSaving<K, V>) -> Self {
        SpaceSavingRepr {
            capacity: sketch.capacity,
            total: sketch.total,
            counters: sketch.heap,
        }
    }
}

impl<K, V> SpaceSaving<K, V> {
    /// A sketch with `capacity` counters (at least one).
    pub fn new(capacity: usize) -> Self {
        SpaceSaving {
            capacity: capacity.max(1),
            total: 0,
            heap: Vec::new(),
            index: FastMap::default(),
        }
    }

    /// The total weight offered.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The number of monitored keys.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// True when nothing was offered.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// The configured number of counters.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The monitored counters, in no particular order.
    pub fn counters(&self) -> impl Iterator<Item = &Counter<K, V>> {
        self.heap.iter()
    }

    /// The monitored counters, mutable, in no particular order.
    pub fn counters_mut(&mut self) -> impl Iterator<Item = &mut Counter<K, V>> {
        self.heap.iter_mut()
    }

    /// The `n` largest counters, largest first (ties by smaller error first).
    pub fn top(&self, n: usize) -> Vec<&Counter<K, V>> {
        let mut all: Vec<&Counter<K, V>> = self.heap.iter().collect();
        all.sort_by(|a, b| b.count.cmp(&a.count).then(a.error.cmp(&b.error)));
        all.truncate(n);
        all
    }

    /// The counter for the key with this hash, if monitored.
    pub fn get_by_hash(&self, hash: u64) -> Option<&Counter<K, V>> {
        self.index
            .get(&hash)
            .and_then(|i| self.heap.get(*i as usize))
    }

    /// Adds `weight` to the key with hash `hash`; `make_key` and `make_value` are only called
    /// when the key is not monitored yet.
    pub fn offer(
        &mut self,
        hash: u64,
        weight: u64,
        make_key: impl FnOnce() -> K,
        make_value: impl FnOnce() -> V,
    ) -> Offered<'_, K, V> {
        self.total += weight;
        if let Some(&pos) = self.index.get(&hash) {
            let pos = pos as usize;
            self.heap[pos].count += weight;
            let pos = self.sift_down(pos);
            return Offered {
                counter: &mut self.heap[pos],
                admitted: false,
                evicted: None,
            };
        }
        let fresh = |count: u64, error: u64| Counter {
            key: make_key(),
            count,
            error,
            value: make_value(),
            hash,
        };
        if self.heap.len() < self.capacity {
            self.heap.push(fresh(weight, 0));
            let last = self.heap.len() - 1;
            self.index.insert(hash, last as u32);
            let pos = self.sift_up(last);
            return Offered {
                counter: &mut self.heap[pos],
                admitted: true,
                evicted: None,
            };
        }
        let floor = self.heap[0].count;
        let old = std::mem::replace(&mut self.heap[0], fresh(floor + weight, floor));
        self.index.remove(&old.hash);
        self.index.insert(hash, 0);
        let pos = self.sift_down(0);
        Offered {
            counter: &mut self.heap[pos],
            admitted: true,
            evicted: Some((old.key, old.value)),
        }
    }

    /// Stops monitoring the key with hash `hash` (its count leaves the total too), returning
    /// its counter. Used to forget a player.
    pub fn remove_by_hash(&mut self, hash: u64) -> Option<Counter<K, V>> {
        let pos = self.index.remove(&hash)? as usize;
        let last = self.heap.len() - 1;
        if pos != last {
            self.heap.swap(pos, last);
            self.index.insert(self.heap[pos].hash, pos as u32);
        }
        let removed = self.heap.pop()?;
        if pos < self.heap.len() {
            let pos = self.sift_up(pos);
            self.sift_down(pos);
        }
        self.total = self.total.saturating_sub(removed.count);
        Some(removed)
    }

    /// Approximate heap bytes held, not counting what keys and values own.
    pub fn heap_bytes(&self) -> usize {
        self.heap.capacity() * std::mem::size_of::<Counter<K, V>>() + self.index.capacity() * 16
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.index.insert(self.heap[a].hash, a as u32);
        self.index.insert(self.heap[b].hash, b as u32);
    }

    fn sift_up(&mut self, mut pos: usize) -> usize {
        while pos > 0 {
            let parent = (pos - 1) / 2;
            if self.heap[parent].count <= self.heap[pos].count {
                break;
            }
            self.swap(parent, pos);
            pos = parent;
        }
        pos
    }

    fn sift_down(&mut self, mut pos: usize) -> usize {
        let len = self.heap.len();
        loop {
            let left = 2 * pos + 1;
            if left >= len {
                return pos;
            }
            let right = left + 1;
            let smallest = if right < len && self.heap[right].count < self.heap[left].count {
                right
            } else {
                left
            };
            if self.heap[smallest].count >= self.heap[pos].count {
                return pos;
            }
            self.swap(smallest, pos);
            pos = smallest;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_while_under_capacity_and_keeps_heavy_hitters() {
        let mut sketch: SpaceSaving<u64> = SpaceSaving::new(10);
        for i in 0..1000u64 {
            let key = if i % 2 == 0 { 7 } else { 1000 + i };
            sketch.offer(key.key_hash(), 1, || key, || ());
        }
        let top = sketch.top(1);
        assert_eq!(top[0].key, 7);
        assert!(top[0].count >= 500 && top[0].count - top[0].error <= 500);
        assert_eq!(sketch.len(), 10);
    }
}
