//! The rule lifecycle with a fake clock, label matchers, templates and validation.

use trace_core::Severity;
use trace_monitor::{
    builtin_names, compile_rules, AlertEventKind, AlertState, MonitorError, RuleConfig, RuleEngine,
    Sample,
};

use crate::util::t;

fn rules_from_toml(text: &str) -> Vec<RuleConfig> {
    #[derive(serde::Deserialize)]
    struct File {
        rules: Vec<RuleConfig>,
    }
    toml::from_str::<File>(text)
        .expect("rule file parses")
        .rules
}

fn engine(text: &str) -> RuleEngine {
    RuleEngine::from_config(&rules_from_toml(text), false).expect("rules are valid")
}

fn lag(v: f64) -> Vec<Sample> {
    vec![Sample::new("trace_agent_consumer_lag", v)]
}

fn silence(source: &str, v: f64) -> Sample {
    Sample::new("trace_source_last_seen_seconds", v).with_label("source", source)
}

#[test]
fn pending_then_firing_once_then_renotify_then_resolved() {
    let mut e = engine(
        r#"
        [[rules]]
        name = "lag"
        metric = "trace_agent_consumer_lag"
        op = ">"
        value = 100
        for = "30s"
        severity = "error"
        renotify = "60s"
        message = "lag {{value}} over {{threshold}}"
        "#,
    );
    assert!(
        e.evaluate(t(0), &lag(500.0)).is_empty(),
        "pending, not firing"
    );
    assert_eq!(e.pending_count(), 1);
    assert!(e.evaluate(t(10), &lag(600.0)).is_empty());
    assert!(e.evaluate(t(29), &lag(600.0)).is_empty(), "for not elapsed");

    let fired = e.evaluate(t(30), &lag(700.0));
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].kind, AlertEventKind::Firing);
    let a = &fired[0].alert;
    assert_eq!(a.rule, "lag");
    assert_eq!(a.state, AlertState::Firing);
    assert_eq!(a.severity, Severity::Error);
    assert_eq!(a.value, 700.0);
    assert_eq!(a.threshold, 100.0);
    assert_eq!(a.message, "lag 700 over 100");
    assert_eq!(a.started_at, t(30));
    assert_eq!(a.subject(), "trace.alerts.error");

    for s in 31..90 {
        assert!(
            e.evaluate(t(s), &lag(700.0)).is_empty(),
            "no duplicate notification at +{s}s"
        );
    }
    let again = e.evaluate(t(90), &lag(800.0));
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].kind, AlertEventKind::Renotify);
    assert_eq!(
        again[0].alert.started_at,
        t(30),
        "same alert, still since +30s"
    );
    assert!(e.evaluate(t(91), &lag(800.0)).is_empty());
    assert_eq!(e.firing().len(), 1);

    let resolved = e.evaluate(t(100), &lag(50.0));
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].kind, AlertEventKind::Resolved);
    assert_eq!(resolved[0].alert.state, AlertState::Resolved);
    assert_eq!(resolved[0].alert.resolved_at, Some(t(100)));
    assert_eq!(resolved[0].alert.value, 800.0, "last value while firing");
    assert!(e.evaluate(t(101), &lag(50.0)).is_empty(), "resolved once");
    assert!(e.firing().is_empty());
}

#[test]
fn a_condition_that_clears_while_pending_never_fires_and_starts_over() {
    let mut e = engine(
        r#"
        [[rules]]
        name = "lag"
        metric = "trace_agent_consumer_lag"
        op = ">="
        value = 100
        for = "30s"
        "#,
    );
    assert!(e.evaluate(t(0), &lag(100.0)).is_empty());
    assert!(e.evaluate(t(20), &lag(99.0)).is_empty(), "cleared silently");
    assert_eq!(e.pending_count(), 0);
    assert!(e.evaluate(t(25), &lag(150.0)).is_empty());
    assert!(
        e.evaluate(t(40), &lag(150.0)).is_empty(),
        "pending restarted at +25s"
    );
    assert_eq!(e.evaluate(t(55), &lag(150.0)).len(), 1);
}

#[test]
fn without_renotify_a_firing_alert_is_announced_once() {
    let mut e = engine(
        r#"
        [[rules]]
        name = "lag"
        metric = "trace_agent_consumer_lag"
        op = ">"
        value = 1
        "#,
    );
    assert_eq!(
        e.evaluate(t(0), &lag(2.0)).len(),
        1,
        "for = 0s fires at once"
    );
    for s in 1..1000 {
        assert!(e.evaluate(t(s), &lag(2.0)).is_empty());
    }
}

#[test]
fn label_matchers_select_series_and_each_label_set_has_its_own_lifecycle() {
    let mut only_npc1 = engine(
        r#"
        [[rules]]
        name = "npc1_quiet"
        metric = 'trace_source_last_seen_seconds{source="npc1"}'
        op = ">"
        value = 30
        message = "{{labels.source}} silent for {{value}}s"
        "#,
    );
    let events = only_npc1.evaluate(t(0), &[silence("npc1", 40.0), silence("npc2", 40.0)]);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].alert.labels["source"], "npc1");
    assert_eq!(events[0].alert.message, "npc1 silent for 40s");

    let mut all_but_npc1 = engine(
        r#"
        [[rules]]
        name = "quiet"
        metric = 'trace_source_last_seen_seconds{source!="npc1"}'
        op = ">"
        value = 30
        "#,
    );
    let events = all_but_npc1.evaluate(
        t(0),
        &[
            silence("npc1", 40.0),
            silence("npc2", 40.0),
            silence("npc3", 45.0),
        ],
    );
    let sources: Vec<&str> = events
        .iter()
        .map(|e| e.alert.labels["source"].as_str())
        .collect();
    assert_eq!(sources, ["npc2", "npc3"]);

    // npc2 comes back; npc3 stays silent; npc4 disappears from the snapshot entirely.
    let events = all_but_npc1.evaluate(t(1), &[silence("npc2", 1.0), silence("npc3", 46.0)]);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, AlertEventKind::Resolved);
    assert_eq!(events[0].alert.labels["source"], "npc2");
    let events = all_but_npc1.evaluate(t(2), &[]);
    assert_eq!(events.len(), 1, "a series that vanished resolves");
    assert_eq!(events[0].alert.labels["source"], "npc3");
}

#[test]
fn comparisons() {
    for (op, value, fires) in [
        (">", 10.0, false),
        (">=", 10.0, true),
        ("<", 10.0, false),
        ("<=", 10.0, true),
        ("==", 10.0, true),
        ("!=", 10.0, false),
        ("<", 9.0, true),
        ("!=", 9.0, true),
    ] {
        let mut e = engine(&format!(
            "[[rules]]\nname = \"r\"\nmetric = \"trace_agent_consumer_lag\"\nop = \"{op}\"\nvalue = 10\n"
        ));
        assert_eq!(
            !e.evaluate(t(0), &lag(value)).is_empty(),
            fires,
            "{value} {op} 10"
        );
    }
}

fn refusal(text: &str) -> (String, String) {
    match compile_rules(&rules_from_toml(text), false) {
        Err(MonitorError::InvalidRule { rule, problem }) => (rule, problem),
        other => panic!("expected a refused rule, got {other:?}"),
    }
}

#[test]
fn bad_rules_are_refused_with_their_name_and_the_problem() {
    let cases = [
        (
            r#"metric = "no_such_metric"
            op = ">"
            value = 1"#,
            "not in the catalogue",
        ),
        (
            r#"metric = "trace_agent_consumer_lag"
            op = "=>"
            value = 1"#,
            "not one of",
        ),
        (
            r#"metric = "trace_agent_consumer_lag"
            op = ">"
            value = 1
            for = "soon""#,
            "for:",
        ),
        (
            r#"metric = 'trace_agent_consumer_lag{source="x"}'
            op = ">"
            value = 1"#,
            "has no label \"source\"",
        ),
        (
            r#"metric = "trace_agent_consumer_lag"
            op = ">"
            value = 1
            message = "{{valeu}}""#,
            "unknown placeholder",
        ),
        (
            r#"metric = "trace_agent_consumer_lag"
            op = ">"
            value = 1
            severity = "info""#,
            "severity",
        ),
        (
            r#"metric = "trace_agent_consumer_lag"
            op = ">""#,
            "`value` is missing",
        ),
        (
            r#"metric = "trace_agent_consumer_lag"
            op = ">"
            value = 1
            renotify = "0s""#,
            "renotify",
        ),
    ];
    for (body, expected) in cases {
        let (rule, problem) = refusal(&format!("[[rules]]\nname = \"my_rule\"\n{body}\n"));
        assert_eq!(rule, "my_rule");
        assert!(
            problem.contains(expected),
            "{problem:?} should mention {expected:?}"
        );
        let shown = MonitorError::InvalidRule {
            rule: rule.clone(),
            problem: problem.clone(),
        }
        .to_string();
        assert!(shown.starts_with("rule \"my_rule\""), "{shown}");
    }
    let (rule, problem) = refusal(
        r#"
        [[rules]]
        name = "twice"
        metric = "trace_agent_consumer_lag"
        op = ">"
        value = 1
        [[rules]]
        name = "twice"
        metric = "trace_agent_consumer_lag"
        op = ">"
        value = 2
        "#,
    );
    assert_eq!(rule, "twice");
    assert!(problem.contains("unique"));
    // Unknown keys are refused by serde (a typo such as `treshold`).
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct File {
        rules: Vec<RuleConfig>,
    }
    assert!(toml::from_str::<File>("[[rules]]\nname = \"x\"\ntreshold = 3\n").is_err());
}

#[test]
fn builtins_are_on_by_default_and_can_be_overridden_or_disabled_by_name() {
    let all = compile_rules(&[], true).expect("built-ins are valid");
    let names: Vec<&str> = all.iter().map(|r| r.name.as_str()).collect();
    for expected in [
        builtin_names::SOURCE_SILENT,
        builtin_names::SOURCE_ERROR_RATE_HIGH,
        builtin_names::CONSUMER_LAG_HIGH,
        builtin_names::STORE_NEAR_BUDGET,
        builtin_names::STORE_WRITE_FAILURES,
        builtin_names::QUARANTINE_RATIO_HIGH,
        builtin_names::QUARANTINE_RATE_HIGH,
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }

    let rules = compile_rules(
        &rules_from_toml(
            r#"
            [[rules]]
            name = "consumer_lag_high"
            value = 50
            severity = "critical"
            [[rules]]
            name = "source_silent"
            enabled = false
            [[rules]]
            name = "mine"
            comparison = "<"
            metric = "trace_agent_events_received_per_second"
            value = 1
            for = 120
            "#,
        ),
        true,
    )
    .expect("valid");
    let lag = rules
        .iter()
        .find(|r| r.name == "consumer_lag_high")
        .expect("still there");
    assert_eq!(lag.threshold, 50.0);
    assert_eq!(lag.severity, Severity::Critical);
    assert_eq!(
        lag.for_duration,
        std::time::Duration::from_secs(60),
        "unset fields keep the built-in's"
    );
    assert!(lag.builtin);
    assert!(rules.iter().all(|r| r.name != "source_silent"));
    let mine = rules
        .iter()
        .find(|r| r.name == "mine")
        .expect("custom rule");
    assert_eq!(mine.for_duration, std::time::Duration::from_secs(120));
    assert!(!mine.builtin);

    assert!(compile_rules(&[], false).expect("valid").is_empty());
}

#[test]
fn the_monitor_section_reads_from_toml_with_human_values() {
    let config: trace_monitor::MonitorConfig = toml::from_str(
        r#"
        http_addr = "0.0.0.0:9500"
        resource_interval = "10s"
        builtin_rules = true
        [metrics]
        window = "2m"
        max_sources = 50
        [health]
        min_free_disk_bytes = "1GiB"
        source_silence = 90
        "#,
    )
    .expect("parses");
    assert_eq!(config.http_addr.port(), 9500);
    assert_eq!(config.metrics.window, std::time::Duration::from_secs(120));
    assert_eq!(config.metrics.max_sources, 50);
    assert_eq!(config.metrics.max_types_per_source, 20, "default kept");
    assert_eq!(config.health.min_free_disk_bytes, 1 << 30);
    assert_eq!(
        config.health.source_silence,
        std::time::Duration::from_secs(90)
    );
    assert!(config.validate().is_ok());
    let text = toml::to_string(&config).expect("serializes");
    let back: trace_monitor::MonitorConfig = toml::from_str(&text).expect("round trip");
    assert_eq!(back, config);
    assert!(toml::from_str::<trace_monitor::MonitorConfig>("colour = 1").is_err());
    let bad = trace_monitor::MonitorConfig {
        metrics: trace_monitor::MetricsConfig {
            window: std::time::Duration::from_secs(1),
            ..Default::default()
        },
        ..Default::default()
    };
    assert!(bad
        .validate()
        .expect_err("refused")
        .to_string()
        .contains("window"));
    let rules = rules_from_toml(
        "[[rules]]\nname = \"x\"\nmetric = \"trace_agent_consumer_lag\"\nop = \">\"\nvalue = 1\nfor = \"30s\"\n",
    );
    #[derive(serde::Serialize, serde::Deserialize)]
    struct File {
        rules: Vec<RuleConfig>,
    }
    let text = toml::to_string(&File {
        rules: rules.clone(),
    })
    .expect("serializes");
    let back: File = toml::from_str(&text).expect("round trip");
    assert_eq!(back.rules, rules);
}
