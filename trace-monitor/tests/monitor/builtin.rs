//! Built-in rules end to end through `Monitor`: fed like the binary feeds it, ticked with a
//! fake clock.

use trace_core::error::DecodeErrorKind;
use trace_core::Severity;
use trace_monitor::{
    AlertEvent, AlertEventKind, Monitor, MonitorConfig, RuleConfig, ALERT_EVENT_TYPE,
};

use crate::util::{entry, t};

fn monitor(max_disk_bytes: Option<u64>) -> Monitor {
    Monitor::new(MonitorConfig::default(), &[], None, max_disk_bytes).expect("monitor")
}

fn by_rule<'a>(events: &'a [AlertEvent], rule: &str) -> Vec<&'a AlertEvent> {
    events.iter().filter(|e| e.alert.rule == rule).collect()
}

#[test]
fn a_silent_source_raises_its_alert_and_resolves_when_it_speaks_again() {
    let m = monitor(None);
    m.metrics()
        .observe_entry(&entry("npc1", "npc.move", Severity::Info), t(0));
    m.metrics()
        .observe_entry(&entry("npc2", "npc.move", Severity::Info), t(0));
    for s in 0..=60 {
        let events = m.tick(t(s));
        assert!(
            by_rule(&events, "source_silent").is_empty(),
            "not silent long enough at +{s}s"
        );
        // npc2 keeps talking.
        m.metrics()
            .observe_entry(&entry("npc2", "npc.move", Severity::Info), t(s));
    }
    let events = m.tick(t(61));
    let silent = by_rule(&events, "source_silent");
    assert_eq!(silent.len(), 1, "{events:?}");
    assert_eq!(silent[0].kind, AlertEventKind::Firing);
    assert_eq!(silent[0].alert.labels["source"], "npc1");
    assert_eq!(silent[0].alert.severity, Severity::Warn);
    assert!(
        silent[0].alert.message.contains("npc1"),
        "{}",
        silent[0].alert.message
    );
    assert_eq!(m.alerts().firing.len(), 1);

    // Health agrees: the source is degraded.
    let health = m.health(t(61));
    assert_eq!(
        health.check("source:npc1").expect("checked").status,
        trace_monitor::HealthLevel::Degraded
    );

    assert!(
        by_rule(&m.tick(t(62)), "source_silent").is_empty(),
        "no duplicate"
    );
    m.metrics()
        .observe_entry(&entry("npc1", "npc.move", Severity::Info), t(70));
    let events = m.tick(t(70));
    let resolved = by_rule(&events, "source_silent");
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].kind, AlertEventKind::Resolved);
    let book = m.alerts();
    assert!(book.firing.is_empty());
    assert_eq!(book.resolved.len(), 1);
    assert_eq!(book.resolved[0].resolved_at, Some(t(70)));
}

#[test]
fn a_high_error_ratio_fires_after_its_for_window() {
    let m = monitor(None);
    m.tick(t(0));
    for s in 1..=80 {
        // 10 events a second, 1 of them an error: 10% > 5%.
        for i in 0..10 {
            let sev = if i == 0 {
                Severity::Error
            } else {
                Severity::Info
            };
            m.metrics()
                .observe_entry(&entry("quest", "quest.step", sev), t(s));
        }
        let events = m.tick(t(s));
        let fired = by_rule(&events, "source_error_rate_high");
        // The ratio exists from +2s (20 events in the window), so it fires 1m later.
        if s < 62 {
            assert!(fired.is_empty(), "for = 1m not elapsed at +{s}s");
        } else if s == 62 {
            assert_eq!(fired.len(), 1, "fires once the ratio held for 1m");
            assert_eq!(fired[0].alert.labels["source"], "quest");
            assert!((fired[0].alert.value - 0.1).abs() < 1e-9);
            assert_eq!(fired[0].alert.severity, Severity::Error);
        } else {
            assert!(fired.is_empty(), "no duplicates");
        }
    }
    let activity = m.metrics().sources();
    let quest = activity
        .iter()
        .find(|s| s.source == "quest")
        .expect("known");
    assert!((quest.events_per_second.expect("rate") - 10.0).abs() < 0.5);
}

#[test]
fn too_few_events_give_no_error_ratio() {
    let m = monitor(None);
    m.tick(t(0));
    for s in 1..=120 {
        if s % 20 == 0 {
            m.metrics()
                .observe_entry(&entry("rare", "x", Severity::Error), t(s));
        }
        assert!(by_rule(&m.tick(t(s)), "source_error_rate_high").is_empty());
    }
}

#[test]
fn consumer_lag_store_budget_and_write_failures() {
    let m = monitor(Some(1000));
    m.metrics().set_consumer_lag(20_000);
    m.metrics().set_store_usage(960, 3);
    let events = m.tick(t(0));
    assert!(by_rule(&events, "store_near_budget").is_empty(), "for = 2m");
    assert!(by_rule(&events, "consumer_lag_high").is_empty(), "for = 1m");
    let fired = by_rule(&m.tick(t(60)), "consumer_lag_high").len();
    assert_eq!(fired, 1);
    let events = m.tick(t(120));
    let near = by_rule(&events, "store_near_budget");
    assert_eq!(near.len(), 1, "96% of the budget for two minutes fires");
    assert!((near[0].alert.value - 0.96).abs() < 1e-9);

    m.metrics()
        .record_store_write_failure("sled: io error: No space left on device", t(61));
    let events = m.tick(t(61));
    let failures = by_rule(&events, "store_write_failures");
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].alert.severity, Severity::Critical);
    assert_eq!(failures[0].alert.subject(), "trace.alerts.critical");
    // Re-notified every 10 minutes while failures keep coming.
    let mut renotified = 0;
    for s in 62..=(61 + 600) {
        if s % 30 == 0 {
            m.metrics()
                .record_store_write_failure("still failing", t(s));
        }
        renotified += by_rule(&m.tick(t(s)), "store_write_failures")
            .iter()
            .filter(|e| e.kind == AlertEventKind::Renotify)
            .count();
    }
    assert_eq!(renotified, 1);
    // No failure for a whole window: resolved.
    m.metrics().record_store_write_ok(t(662));
    let mut resolved = 0;
    for s in 662..=800 {
        resolved += by_rule(&m.tick(t(s)), "store_write_failures")
            .iter()
            .filter(|e| e.kind == AlertEventKind::Resolved)
            .count();
    }
    assert_eq!(resolved, 1);

    m.metrics().set_consumer_lag(5);
    m.metrics().set_store_usage(100, 3);
    let events = m.tick(t(801));
    assert_eq!(
        by_rule(&events, "consumer_lag_high")[0].kind,
        AlertEventKind::Resolved
    );
    assert_eq!(
        by_rule(&events, "store_near_budget")[0].kind,
        AlertEventKind::Resolved
    );
}

#[test]
fn quarantine_ratio_and_rate() {
    let m = monitor(None);
    m.tick(t(0));
    let mut ratio_fired = false;
    let mut rate_fired = false;
    for s in 1..=70 {
        // 100 received a second, 20 quarantined: 20% and 20/s.
        m.metrics().add_received(100);
        m.metrics().add_stored(80);
        m.metrics().add_quarantined(DecodeErrorKind::Malformed, 20);
        let events = m.tick(t(s));
        ratio_fired |= !by_rule(&events, "quarantine_ratio_high").is_empty();
        rate_fired |= !by_rule(&events, "quarantine_rate_high").is_empty();
    }
    assert!(ratio_fired);
    assert!(rate_fired);
}

#[test]
fn builtins_can_be_turned_off_by_config() {
    let config = MonitorConfig {
        builtin_rules: false,
        ..MonitorConfig::default()
    };
    let m = Monitor::new(config, &[], None, Some(10)).expect("monitor");
    m.metrics().set_store_usage(1000, 1);
    assert!(m.tick(t(0)).is_empty());

    let off = RuleConfig {
        name: "store_near_budget".into(),
        enabled: Some(false),
        ..RuleConfig::default()
    };
    let m = Monitor::new(MonitorConfig::default(), &[off], None, Some(10)).expect("monitor");
    m.metrics().set_store_usage(1000, 1);
    assert!(by_rule(&m.tick(t(0)), "store_near_budget").is_empty());
}

#[test]
fn alerts_become_trace_entries_that_survive_the_codec() {
    let m = monitor(Some(100));
    m.metrics().set_store_usage(99, 1);
    m.tick(t(0));
    let events = m.tick(t(5 + 120));
    let alert = &by_rule(&events, "store_near_budget")[0].alert;
    let e = alert.to_trace_entry();
    assert_eq!(e.event_type, ALERT_EVENT_TYPE);
    assert_eq!(e.source, "trace-agent");
    assert_eq!(e.category, trace_core::Category::SystemEvent);
    assert_eq!(e.severity, Severity::Warn);
    assert_eq!(e.ts, t(125));
    assert_eq!(e.id, alert.to_trace_entry().id, "same alert, same id");
    let map = e.data.as_map().expect("data is a map");
    let get = |k: &str| {
        map.iter()
            .find(|(key, _)| key.as_str() == Some(k))
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        get("rule").and_then(|v| v.as_str().map(String::from)),
        Some("store_near_budget".into())
    );
    assert_eq!(
        get("state").and_then(|v| v.as_str().map(String::from)),
        Some("firing".into())
    );
    assert!(get("threshold").and_then(|v| v.as_f64()).is_some());

    let bytes = trace_core::encode_entry_vec(&e);
    let decoded = trace_core::decode_stored_entry(&mut bytes.as_slice()).expect("decodes");
    assert_eq!(decoded, e);

    // JSON form for the API and the CLI.
    let json = serde_json::to_value(alert).expect("json");
    assert_eq!(json["state"], "firing");
    assert_eq!(json["severity"], "warn");
    assert_eq!(json["op"], ">");
    let back: trace_monitor::Alert = serde_json::from_value(json).expect("round trip");
    assert_eq!(&back, alert);
}

#[test]
fn resolved_history_is_bounded() {
    let config = MonitorConfig {
        alert_history: 3,
        ..MonitorConfig::default()
    };
    // the built-in waits two minutes; this test wants one that flips at once
    let quick = RuleConfig {
        name: "store_near_budget".into(),
        for_duration: Some("0s".into()),
        ..RuleConfig::default()
    };
    let m = Monitor::new(config, &[quick], None, Some(100)).expect("monitor");
    for round in 0..10 {
        m.metrics().set_store_usage(99, 1);
        m.tick(t(round * 2));
        m.metrics().set_store_usage(1, 1);
        m.tick(t(round * 2 + 1));
    }
    let list = m.alerts();
    assert_eq!(list.resolved.len(), 3);
    assert_eq!(list.resolved[0].resolved_at, Some(t(19)), "newest first");
}
