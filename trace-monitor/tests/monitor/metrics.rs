//! `/metrics` parsed with a Prometheus text parser: names, types and counts match what was
//! fed; label cardinality stays bounded.

use std::collections::HashMap;
use std::time::Duration;

use prometheus_parse::{Scrape, Value};
use trace_core::error::DecodeErrorKind;
use trace_core::Severity;
use trace_monitor::{Metrics, MetricsConfig, CATALOGUE, PROMETHEUS_CONTENT_TYPE};

use crate::util::{entry, t};

fn scrape(metrics: &Metrics) -> Scrape {
    let text = metrics.encode_prometheus().expect("encodes");
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("valid Prometheus text")
}

fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples
        .iter()
        .find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .and_then(|x| match &x.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(*v),
            _ => None,
        })
}

#[test]
fn counters_match_what_was_fed() {
    let m = Metrics::new(MetricsConfig::default()).expect("metrics");
    m.refresh(t(0));
    m.add_received(105);
    m.add_stored(100);
    m.add_quarantined(DecodeErrorKind::Malformed, 3);
    m.add_quarantined(DecodeErrorKind::TooLarge, 2);
    m.observe_batch(Duration::from_millis(12));
    m.observe_batch(Duration::from_millis(30));
    m.observe_ack(Duration::from_millis(2));
    m.set_consumer_lag(42);
    m.set_store_usage(123_456, 4);
    m.set_store_budget(Some(1_000_000));
    m.set_nats_connected(true, t(0));
    m.record_store_write_failure("disk full", t(0));
    let mut entries = Vec::new();
    for i in 0..60 {
        entries.push(entry("npc1", "npc.move", Severity::Info));
        if i % 3 == 0 {
            entries.push(entry("npc1", "npc.speak", Severity::Error));
        }
        entries.push(entry("quest", "quest.step", Severity::Info));
    }
    m.observe_entries(&entries, t(10));
    m.refresh(t(10));

    let s = scrape(&m);
    assert_eq!(
        value(&s, "trace_agent_events_received_total", &[]),
        Some(105.0)
    );
    assert_eq!(
        value(&s, "trace_agent_events_stored_total", &[]),
        Some(100.0)
    );
    assert_eq!(
        value(
            &s,
            "trace_agent_events_quarantined_total",
            &[("kind", "malformed")]
        ),
        Some(3.0)
    );
    assert_eq!(
        value(
            &s,
            "trace_agent_events_quarantined_total",
            &[("kind", "too_large")]
        ),
        Some(2.0)
    );
    assert_eq!(value(&s, "trace_agent_batches_total", &[]), Some(2.0));
    assert_eq!(value(&s, "trace_agent_consumer_lag", &[]), Some(42.0));
    assert_eq!(value(&s, "trace_agent_store_bytes", &[]), Some(123_456.0));
    assert_eq!(value(&s, "trace_agent_store_segments", &[]), Some(4.0));
    assert_eq!(
        value(&s, "trace_agent_store_write_failures_total", &[]),
        Some(1.0)
    );
    assert_eq!(value(&s, "trace_agent_nats_connected", &[]), Some(1.0));
    assert!(
        (value(&s, "trace_agent_store_budget_ratio", &[]).expect("ratio") - 0.123456).abs() < 1e-9
    );
    assert_eq!(
        value(
            &s,
            "trace_source_events_total",
            &[("source", "npc1"), ("type", "npc.move")]
        ),
        Some(60.0)
    );
    assert_eq!(
        value(
            &s,
            "trace_source_events_total",
            &[("source", "npc1"), ("type", "npc.speak")]
        ),
        Some(20.0)
    );
    assert_eq!(
        value(
            &s,
            "trace_source_events_total",
            &[("source", "quest"), ("type", "quest.step")]
        ),
        Some(60.0)
    );
    assert_eq!(
        value(&s, "trace_source_errors_total", &[("source", "npc1")]),
        Some(20.0)
    );
    assert_eq!(
        value(&s, "trace_source_errors_total", &[("source", "quest")]),
        Some(0.0)
    );
    assert_eq!(
        value(&s, "trace_source_last_seen_seconds", &[("source", "npc1")]),
        Some(0.0)
    );
    // 80 events of npc1 in the 10 s since the first snapshot... the source was first seen at
    // +10 s, so it has no second of history yet: no rate.
    assert_eq!(
        value(&s, "trace_source_events_per_second", &[("source", "npc1")]),
        None
    );
    // The agent's window: 105 received over 10 s.
    assert!(
        (value(&s, "trace_agent_events_received_per_second", &[]).expect("rate") - 10.5).abs()
            < 1e-9
    );
    assert!(
        (value(&s, "trace_agent_quarantine_ratio", &[]).expect("ratio") - 5.0 / 105.0).abs() < 1e-9
    );
    assert_eq!(
        value(&s, "trace_agent_store_write_failures_recent", &[]),
        Some(1.0)
    );

    let batch = s
        .samples
        .iter()
        .find(|x| x.metric == "trace_agent_batch_duration_seconds")
        .expect("histogram");
    match &batch.value {
        Value::Histogram(buckets) => {
            let inf = buckets
                .iter()
                .find(|b| b.less_than.is_infinite())
                .expect("+Inf");
            assert_eq!(inf.count, 2.0);
        }
        other => panic!("expected a histogram, got {other:?}"),
    }

    m.refresh(t(20));
    let s = scrape(&m);
    assert_eq!(
        value(&s, "trace_source_last_seen_seconds", &[("source", "npc1")]),
        Some(10.0)
    );
    assert!(
        (value(&s, "trace_source_events_per_second", &[("source", "npc1")]).expect("rate") - 8.0)
            .abs()
            < 1e-9
    );
    assert!(
        (value(&s, "trace_source_error_ratio", &[("source", "npc1")]).expect("ratio") - 0.25).abs()
            < 1e-9
    );
    assert!(
        s.docs.contains_key("trace_source_events_total"),
        "HELP lines"
    );
    assert_eq!(PROMETHEUS_CONTENT_TYPE, "text/plain; version=0.0.4");
}

#[test]
fn every_catalogue_metric_is_exported_and_every_sample_is_in_the_catalogue() {
    let m = Metrics::new(MetricsConfig::default()).expect("metrics");
    m.set_store_budget(Some(10));
    m.set_store_usage(1, 1);
    m.add_quarantined(DecodeErrorKind::TooDeep, 1);
    m.add_received(100);
    m.observe_batch(Duration::from_millis(1));
    m.observe_ack(Duration::from_millis(1));
    m.set_resources(&trace_monitor::ResourceUsage {
        sampled_at: t(0),
        cpu_percent: Some(1.0),
        rss_bytes: Some(1),
        open_files: Some(1),
        data_dir_bytes: Some(1),
        disk_free_bytes: Some(1),
        disk_total_bytes: Some(1),
    });
    m.refresh(t(0));
    for _ in 0..30 {
        m.observe_entry(&entry("a", "b", Severity::Error), t(0));
    }
    m.add_received(100);
    m.refresh(t(5));
    let text = m.encode_prometheus().expect("encodes");
    for info in CATALOGUE {
        assert!(
            text.contains(&format!("# TYPE {} ", info.name)),
            "{} missing from /metrics",
            info.name
        );
    }
    for sample in m.samples() {
        assert!(
            trace_monitor::lookup_metric(&sample.name).is_some(),
            "{} is not in the catalogue",
            sample.name
        );
    }
}

#[test]
fn source_and_type_cardinality_is_capped() {
    let m = Metrics::new(MetricsConfig {
        max_sources: 3,
        max_types_per_source: 2,
        ..MetricsConfig::default()
    })
    .expect("metrics");
    for src in ["s1", "s2", "s3", "s4", "s5"] {
        for ty in ["t1", "t2", "t3"] {
            m.observe_entry(&entry(src, ty, Severity::Info), t(0));
        }
    }
    m.refresh(t(1));
    let s = scrape(&m);
    let mut per_source: HashMap<String, f64> = HashMap::new();
    for x in s
        .samples
        .iter()
        .filter(|x| x.metric == "trace_source_events_total")
    {
        if let Value::Counter(v) = x.value {
            *per_source
                .entry(x.labels.get("source").unwrap_or_default().to_string())
                .or_default() += v;
        }
    }
    assert_eq!(
        per_source.len(),
        4,
        "three sources and other: {per_source:?}"
    );
    assert_eq!(per_source["other"], 6.0, "s4 and s5 folded");
    assert_eq!(per_source["s1"], 3.0, "nothing lost");
    assert_eq!(
        value(
            &s,
            "trace_source_events_total",
            &[("source", "s1"), ("type", "other")]
        ),
        Some(1.0),
        "the third type folds"
    );
    assert!(
        value(&s, "trace_source_last_seen_seconds", &[("source", "other")]).is_none(),
        "the folded bucket has no heartbeat"
    );
}

#[test]
fn long_silent_sources_are_forgotten() {
    let m = Metrics::new(MetricsConfig {
        source_forget_after: Duration::from_secs(120),
        ..MetricsConfig::default()
    })
    .expect("metrics");
    m.observe_entry(&entry("gone", "x", Severity::Info), t(0));
    m.observe_entry(&entry("here", "x", Severity::Info), t(0));
    m.refresh(t(60));
    assert_eq!(m.sources().len(), 2);
    m.observe_entry(&entry("here", "x", Severity::Info), t(100));
    m.refresh(t(121));
    let names: Vec<String> = m.sources().into_iter().map(|s| s.source).collect();
    assert_eq!(names, ["here"]);
    let s = scrape(&m);
    assert!(value(&s, "trace_source_events_total", &[("source", "gone")]).is_none());
    assert!(value(&s, "trace_source_last_seen_seconds", &[("source", "gone")]).is_none());
}
