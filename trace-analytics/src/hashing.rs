//! Fast, deterministic 64-bit hashing of keys (players, sessions) for the hot path.
//!
//! `FxHasher` (rustc-hash) is fast but its low bits are weak, so [`hash_str`] finishes with the
//! MurmurHash3 `fmix64` finalizer: every output bit then depends on every input bit, which the
//! HyperLogLog estimator and the 64-bit key identities in the bounded tables rely on.

use std::hash::Hasher;

use rustc_hash::FxHasher;

/// A `HashMap` with the fast Fx hasher (keys here are never attacker-chosen hash-flooding
/// vectors in a way that matters: every table is bounded).
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, rustc_hash::FxBuildHasher>;

/// A `HashSet` with the fast Fx hasher.
pub(crate) type FastSet<K> = std::collections::HashSet<K, rustc_hash::FxBuildHasher>;

/// MurmurHash3's 64-bit finalizer (Appleby), a bijection with full avalanche.
pub(crate) fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

/// A well-mixed 64-bit hash of a string. Two distinct keys collide with probability about
/// `2^-64` per pair, so among a million keys a collision is a one in ten million event.
pub fn hash_str(s: &str) -> u64 {
    let mut hasher = FxHasher::default();
    hasher.write(s.as_bytes());
    hasher.write_u8(0xff);
    fmix64(hasher.finish())
}
