//! Golden payloads made by Python's `msgpack` (see golden/make_golden.py): the codec must read
//! what other languages publish, byte for byte.

use chrono::{TimeZone, Utc};
use rmpv::Value;
use trace_core::{Category, DecodeErrorKind, Decoder, Incoming, Severity};

fn golden(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn incoming<'a>(subject: &'a str, payload: &'a [u8]) -> Incoming<'a> {
    Incoming {
        subject,
        payload,
        received_at: Utc
            .with_ymd_and_hms(2026, 3, 1, 12, 0, 1)
            .single()
            .expect("time"),
        fallback_id: None,
    }
}

#[test]
fn python_full_envelope() {
    let bytes = golden("python_full_envelope.msgpack");
    let e = Decoder::default()
        .decode(&incoming("game.agent.npc-7.agent.decision", &bytes))
        .expect("a valid envelope");
    assert_eq!(e.id.to_string(), "01HZY3J6W9Q2V7X8C5B4N3M2K1");
    assert_eq!(
        e.ts,
        Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0)
            .single()
            .expect("time")
            + chrono::Duration::microseconds(123_456)
    );
    assert_eq!(e.event_type, "agent.decision");
    assert_eq!(e.category, Category::AgentDecision);
    assert_eq!(e.source, "npc-7");
    assert_eq!(e.severity, Severity::Warn);
    assert_eq!(e.session.as_deref(), Some("s-1"));
    assert_eq!(
        e.player.as_deref(),
        Some("42"),
        "integer player ids become strings"
    );
    assert_eq!(
        e.parent.map(|p| p.to_string()).as_deref(),
        Some("01HZY3J6W9Q2V7X8C5B4N3M2K0")
    );
    assert_eq!(e.metrics.get("latency_ms"), Some(&12.5));
    assert_eq!(e.metrics.get("candidates"), Some(&3.0));
    let blob = e
        .data
        .as_map()
        .and_then(|m| m.iter().find(|(k, _)| k.as_str() == Some("blob")))
        .map(|(_, v)| v.clone());
    assert_eq!(
        blob,
        Some(Value::Binary(vec![0, 1, 255])),
        "binary values are kept as sent"
    );
    assert_eq!(e.meta_str("build"), Some("1.2.3"));
    assert_eq!(
        e.meta_str("subject"),
        Some("game.agent.npc-7.agent.decision")
    );
}

#[test]
fn python_minimal_envelope_takes_defaults_from_the_subject() {
    let bytes = golden("python_minimal_envelope.msgpack");
    let e = Decoder::default()
        .decode(&incoming("game.state.world.anything", &bytes))
        .expect("valid");
    assert_eq!(e.event_type, "player.move");
    assert_eq!(e.source, "world");
    assert_eq!(e.category, Category::PlayerAction);
    assert_eq!(e.severity, Severity::Info);
    assert_eq!(
        e.ts,
        Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0)
            .single()
            .expect("time")
            + chrono::Duration::milliseconds(500)
    );
}

#[test]
fn python_raw_payload_is_wrapped() {
    let bytes = golden("python_raw_payload.msgpack");
    let e = Decoder::default()
        .decode(&incoming("game.story.graph.node.entered", &bytes))
        .expect("wrapped");
    assert_eq!(e.event_type, "node.entered");
    assert_eq!(e.source, "graph");
    assert_eq!(e.meta_str("encoding"), Some("msgpack"));
    assert_eq!(e.data.as_map().map(Vec::len), Some(3));
}

#[test]
fn python_integer_ts_is_refused_with_a_reason() {
    let bytes = golden("python_bad_ts.msgpack");
    let err = Decoder::default()
        .decode(&incoming("game.state.world.x", &bytes))
        .expect_err("integer ts is not in the wire format");
    assert_eq!(err.kind, DecodeErrorKind::InvalidEnvelope);
    assert!(
        err.to_string()
            .contains("field `ts` must be an RFC 3339 string or a msgpack timestamp"),
        "{err}"
    );
}
