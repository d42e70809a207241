//! A small, persisted Bloom filter (fixed hash, so it reads the same after a restart) used by
//! block summaries to skip blocks that cannot hold a player, session or id.

use serde::{Deserialize, Serialize};

/// Bloom filter over byte strings with `k` probes derived by double hashing
/// (Kirsch & Mitzenmacher, "Less hashing, same performance", 2006).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bloom {
    #[serde(with = "serde_bytes")]
    bits: Vec<u8>,
    k: u8,
}

impl Bloom {
    /// A filter sized for `distinct` items at `bits_per_item` bits each (rounded up to a
    /// power of two, at least 64 bits); an empty filter when there is nothing to hold.
    pub fn with_capacity(distinct: usize, bits_per_item: usize, k: u8) -> Self {
        if distinct == 0 {
            return Bloom::default();
        }
        let bits = (distinct * bits_per_item).next_power_of_two().max(64);
        Bloom {
            bits: vec![0; bits / 8],
            k,
        }
    }

    /// Adds an item given by its hash (see [`hash64`]).
    pub fn insert(&mut self, h: u64) {
        let m = self.bits.len() as u64 * 8;
        if m == 0 {
            return;
        }
        let (h1, h2) = (h as u32 as u64, (h >> 32) | 1);
        for i in 0..u64::from(self.k) {
            let bit = h1.wrapping_add(i.wrapping_mul(h2)) & (m - 1);
            self.bits[(bit / 8) as usize] |= 1 << (bit % 8);
        }
    }

    /// False when the item is certainly absent.
    pub fn may_contain(&self, h: u64) -> bool {
        let m = self.bits.len() as u64 * 8;
        if m == 0 {
            return false;
        }
        let (h1, h2) = (h as u32 as u64, (h >> 32) | 1);
        (0..u64::from(self.k)).all(|i| {
            let bit = h1.wrapping_add(i.wrapping_mul(h2)) & (m - 1);
            self.bits[(bit / 8) as usize] & (1 << (bit % 8)) != 0
        })
    }

    /// Bytes the filter takes.
    pub fn byte_len(&self) -> usize {
        self.bits.len()
    }
}

/// A fixed 64-bit hash (FNV-1a followed by the splitmix64 finalizer): stable across
/// processes and versions, unlike `std`'s randomly seeded hasher.
pub fn hash64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_false_negatives_and_few_false_positives() {
        let mut b = Bloom::with_capacity(500, 8, 4);
        for i in 0..500u32 {
            b.insert(hash64(format!("player-{i}").as_bytes()));
        }
        for i in 0..500u32 {
            assert!(b.may_contain(hash64(format!("player-{i}").as_bytes())));
        }
        let fp = (0..10_000u32)
            .filter(|i| b.may_contain(hash64(format!("other-{i}").as_bytes())))
            .count();
        assert!(fp < 600, "false positive rate too high: {fp}/10000");
        assert!(!Bloom::default().may_contain(1));
    }
}
