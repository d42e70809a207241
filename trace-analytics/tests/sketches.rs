//! Property tests: the sketches keep their bounds and their stated accuracy.

use proptest::prelude::*;
use trace_analytics::detector::{AnomalyDetector, DetectorConfig};
use trace_analytics::sketches::{hash_str, DistinctCounter, KeyHash, SpaceSaving};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Space-Saving: never more than `capacity` counters, and for every monitored key
    /// `count - error <= true count <= count`.
    #[test]
    fn space_saving_bounds(keys in prop::collection::vec(0u64..200, 1..3000), capacity in 1usize..64) {
        let mut sketch: SpaceSaving<u64> = SpaceSaving::new(capacity);
        let mut truth = std::collections::HashMap::new();
        for k in &keys {
            sketch.offer(k.key_hash(), 1, || *k, || ());
            *truth.entry(*k).or_insert(0u64) += 1;
            prop_assert!(sketch.len() <= capacity);
        }
        prop_assert_eq!(sketch.total(), keys.len() as u64);
        for c in sketch.counters() {
            let t = truth[&c.key];
            prop_assert!(c.count >= t && c.count - c.error <= t, "{} {} {}", c.count, c.error, t);
            prop_assert!(c.error <= keys.len() as u64 / capacity as u64);
        }
    }

    /// DDSketch percentiles are within 1 % of the exact value at the same rank.
    #[test]
    fn percentiles_within_one_percent(values in prop::collection::vec(0.001f64..1e6, 1..2000)) {
        let mut performance = trace_analytics::Performance::new(&Default::default());
        let mut entry = trace_core::TraceEntry::new("t", "s");
        for v in &values {
            entry.metrics.insert("m".to_owned(), *v);
            performance.observe(&entry);
        }
        let report = performance.report();
        let p = &report.by_type["t"]["m"];
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        for (q, got) in [(0.5, p.p50), (0.9, p.p90), (0.95, p.p95), (0.99, p.p99)] {
            let exact = sorted[(q * (sorted.len() - 1) as f64) as usize];
            prop_assert!((got - exact).abs() <= 0.01 * exact + 1e-12, "q{q}: {got} vs {exact}");
        }
        prop_assert_eq!(p.max, sorted[sorted.len() - 1]);
    }

    /// Scores lie in [0, 1] and never depend on later points (no look-ahead).
    #[test]
    fn detector_never_looks_ahead(
        prefix in prop::collection::vec(-100.0f64..100.0, 60..200),
        tail_a in prop::collection::vec(-1e4f64..1e4, 1..20),
        tail_b in prop::collection::vec(-1e4f64..1e4, 1..20),
    ) {
        let mut a = AnomalyDetector::new(DetectorConfig::default());
        let mut b = AnomalyDetector::new(DetectorConfig::default());
        for v in &prefix {
            let (sa, sb) = (a.observe(*v), b.observe(*v));
            prop_assert_eq!(sa, sb);
            prop_assert!((0.0..=1.0).contains(&sa.score));
        }
        for (x, y) in tail_a.iter().zip(&tail_b) {
            prop_assert!((0.0..=1.0).contains(&a.observe(*x).score));
            prop_assert!((0.0..=1.0).contains(&b.observe(*y).score));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]

    /// HyperLogLog (p = 14) estimates within 3 % (about four standard errors).
    #[test]
    fn distinct_estimate_within_three_percent(n in 5_000usize..150_000, salt in any::<u64>()) {
        let mut counter = DistinctCounter::new(1000, 14);
        for i in 0..n as u64 {
            counter.insert_hash(hash_str(&format!("player-{salt}-{i}")));
        }
        let estimate = counter.count() as f64;
        prop_assert!((estimate - n as f64).abs() / (n as f64) < 0.03, "{estimate} vs {n}");
    }
}

/// The state of every analysis stops growing: 200 000 distinct players and sessions take no
/// more memory than 50 000 do (within a margin for hash-table growth steps).
#[test]
fn state_does_not_grow_with_events() {
    let mut analyzer = trace_analytics::Analyzer::new(Default::default());
    let mut entry = trace_core::TraceEntry::new("player.move", "game");
    let start = chrono::DateTime::from_timestamp(1_699_999_980, 0).unwrap_or_default();
    let mut size_at = Vec::new();
    for i in 0..200_000u32 {
        entry.ts = start + chrono::Duration::milliseconds(20 * i64::from(i));
        entry.player = Some(format!("player-{i}"));
        entry.session = Some(format!("session-{i}"));
        entry.event_type = format!("type-{}", i % 2000);
        analyzer.observe(&entry);
        if i == 49_999 || i == 199_999 {
            size_at.push(analyzer.state_size().total);
        }
    }
    assert!(size_at[1] as f64 <= size_at[0] as f64 * 1.25, "{size_at:?}");
    assert!(size_at[1] < 32 << 20, "{size_at:?}");
}
