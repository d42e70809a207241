//! Health rollup: which checks can make the agent unhealthy, which only degraded.

use trace_core::Severity;
use trace_monitor::{
    assess, ConnectionState, HealthInputs, HealthLevel, HealthThresholds, Monitor, MonitorConfig,
    ResourceUsage, SourceActivity, StoreWriteState,
};

use crate::util::{entry, t};

fn good() -> HealthInputs {
    HealthInputs {
        nats: ConnectionState::Connected,
        consumer_lag: Some(3),
        store_write: StoreWriteState::Ok { at: t(99) },
        store_bytes: Some(1000),
        max_disk_bytes: Some(10_000),
        resources: Some(ResourceUsage {
            sampled_at: t(99),
            cpu_percent: Some(2.5),
            rss_bytes: Some(40 << 20),
            open_files: Some(20),
            data_dir_bytes: Some(1200),
            disk_free_bytes: Some(50 << 30),
            disk_total_bytes: Some(100 << 30),
        }),
        sources: vec![source("npc1", 95)],
    }
}

fn source(name: &str, last_seen_secs: i64) -> SourceActivity {
    SourceActivity {
        source: name.into(),
        events_total: 10,
        errors_total: 0,
        last_seen: t(last_seen_secs),
        seconds_silent: 0.0,
        events_per_second: Some(1.0),
        error_ratio: None,
        window_events: 10,
        folded: false,
    }
}

fn status(inputs: &HealthInputs) -> (HealthLevel, bool) {
    let h = assess(inputs, &HealthThresholds::default(), t(100));
    (h.status, h.ready)
}

#[test]
fn all_good_is_healthy_and_ready() {
    let h = assess(&good(), &HealthThresholds::default(), t(100));
    assert_eq!(h.status, HealthLevel::Healthy);
    assert!(h.ready);
    let names: Vec<&str> = h.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "nats",
            "consumer_lag",
            "store",
            "disk",
            "process",
            "source:npc1"
        ]
    );
    let json = serde_json::to_value(&h).expect("json");
    assert_eq!(json["status"], "healthy");
    assert_eq!(json["checks"][0]["name"], "nats");
    assert_eq!(json["checks"][0]["status"], "healthy");
    assert!(json["checks"][0]["message"].is_string());
    assert_eq!(json["checks"][1]["observed"]["pending"], 3);
}

#[test]
fn nats_down_or_store_failing_is_unhealthy_and_not_ready() {
    let mut i = good();
    i.nats = ConnectionState::Disconnected { since: t(90) };
    assert_eq!(status(&i), (HealthLevel::Unhealthy, false));
    let h = assess(&i, &HealthThresholds::default(), t(100));
    assert!(h.check("nats").expect("nats").message.contains("10s"));

    let mut i = good();
    i.nats = ConnectionState::Connecting;
    assert_eq!(status(&i), (HealthLevel::Unhealthy, false));

    let mut i = good();
    i.store_write = StoreWriteState::Failing {
        since: t(80),
        error: "No space left on device".into(),
    };
    assert_eq!(status(&i), (HealthLevel::Unhealthy, false));
    let h = assess(&i, &HealthThresholds::default(), t(100));
    assert!(h
        .check("store")
        .expect("store")
        .message
        .contains("No space left"));
}

#[test]
fn lag_disk_and_silence_only_degrade() {
    let mut i = good();
    i.consumer_lag = Some(50_000);
    assert_eq!(status(&i), (HealthLevel::Degraded, true));

    let mut i = good();
    i.consumer_lag = None;
    assert_eq!(status(&i), (HealthLevel::Degraded, true));

    let mut i = good();
    i.store_bytes = Some(9_500);
    assert_eq!(status(&i), (HealthLevel::Degraded, true));

    let mut i = good();
    if let Some(r) = i.resources.as_mut() {
        r.disk_free_bytes = Some(10 << 20);
    }
    assert_eq!(status(&i), (HealthLevel::Degraded, true));

    let mut i = good();
    i.sources.push(source("npc2", 10));
    assert_eq!(status(&i), (HealthLevel::Degraded, true));
    let h = assess(&i, &HealthThresholds::default(), t(100));
    assert_eq!(
        h.check("source:npc2").expect("npc2").status,
        HealthLevel::Degraded
    );
    assert_eq!(
        h.check("source:npc1").expect("npc1").status,
        HealthLevel::Healthy
    );

    // The worst check wins.
    i.nats = ConnectionState::Disconnected { since: t(0) };
    assert_eq!(status(&i).0, HealthLevel::Unhealthy);
    assert_eq!(HealthLevel::Degraded.exit_code(), 1);
}

#[test]
fn monitor_health_follows_what_the_binary_feeds() {
    let m = Monitor::new(MonitorConfig::default(), &[], None, None).expect("monitor");
    assert_eq!(
        m.health(t(0)).status,
        HealthLevel::Unhealthy,
        "not connected yet"
    );
    m.metrics().set_nats_connected(true, t(1));
    m.metrics().set_consumer_lag(0);
    m.metrics().record_store_write_ok(t(1));
    m.metrics()
        .observe_entry(&entry("npc1", "npc.move", Severity::Info), t(1));
    m.tick(t(1));
    let h = m.health(t(2));
    assert_eq!(h.status, HealthLevel::Healthy, "{h:#?}");
    assert!(h.ready);
    assert!(h.check("source:npc1").is_some());

    m.metrics().set_nats_connected(false, t(3));
    let h = m.health(t(5));
    assert_eq!(h.status, HealthLevel::Unhealthy);
    assert!(!h.ready);
    m.metrics().set_nats_connected(true, t(6));
    let h = m.health(t(7));
    assert_eq!(h.status, HealthLevel::Healthy, "recovers without a restart");
}
