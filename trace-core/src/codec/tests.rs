//! Codec tests: what publishers in other languages send, what must be wrapped, what must be
//! quarantined, and that stored entries round-trip.

use super::*;
use crate::subject::{SourceKind, SubjectScheme};

fn map(fields: Vec<(&str, Value)>) -> Value {
    Value::Map(
        fields
            .into_iter()
            .map(|(k, v)| (Value::from(k), v))
            .collect(),
    )
}

fn mp(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, v).expect("encode");
    out
}

fn incoming<'a>(subject: &'a str, payload: &'a [u8]) -> Incoming<'a> {
    Incoming {
        subject,
        payload,
        received_at: Utc
            .with_ymd_and_hms(2026, 6, 1, 3, 4, 5)
            .single()
            .expect("ts"),
        fallback_id: None,
    }
}

fn decode(subject: &str, payload: &[u8]) -> Result<TraceEntry, DecodeError> {
    Decoder::default().decode(&incoming(subject, payload))
}

#[test]
fn python_msgpack_dict_with_binary_and_timestamp_ext() {
    // What `msgpack.packb({...}, datetime=True)` produces: str keys, bin values, ext -1 ts.
    let ts = Utc
        .with_ymd_and_hms(2026, 3, 1, 12, 0, 0)
        .single()
        .expect("ts")
        + chrono::Duration::nanoseconds(123_456_789);
    let v = map(vec![
        ("id", Value::from("01HZY3J6W9Q2V7X8C5B4N3M2K1")),
        ("ts", Value::Ext(-1, encode_timestamp_ext(ts))),
        ("type", Value::from("player.move")),
        ("player", Value::from("p1")),
        ("session", Value::from(42)),
        ("severity", Value::from("warn")),
        (
            "metrics",
            map(vec![
                ("latency_ms", Value::from(12)),
                ("tick_ms", Value::F64(1.5)),
            ]),
        ),
        (
            "data",
            map(vec![("blob", Value::Binary(vec![0, 1, 2, 255]))]),
        ),
        ("meta", map(vec![("region", Value::from("eu"))])),
    ]);
    let e = decode("game.agent.npc7.whatever", &mp(&v)).expect("valid envelope");
    assert_eq!(e.ts, ts);
    assert_eq!(e.event_type, "player.move");
    assert_eq!(e.category, Category::PlayerAction);
    assert_eq!(e.source, "npc7");
    assert_eq!(e.severity, Severity::Warn);
    assert_eq!(e.player.as_deref(), Some("p1"));
    assert_eq!(e.session.as_deref(), Some("42"));
    assert_eq!(e.metrics.get("latency_ms"), Some(&12.0));
    assert_eq!(e.metrics.get("tick_ms"), Some(&1.5));
    assert_eq!(
        e.data,
        map(vec![("blob", Value::Binary(vec![0, 1, 2, 255]))])
    );
    assert_eq!(e.meta_str("region"), Some("eu"));
    assert_eq!(e.meta_str("subject"), Some("game.agent.npc7.whatever"));
    assert!(e.meta.contains_key("received_at"));
}

#[test]
fn all_timestamp_ext_forms_decode() {
    let t32 = Utc.timestamp_opt(1_700_000_000, 0).single().expect("ts");
    assert_eq!(encode_timestamp_ext(t32).len(), 4);
    let t64 = Utc.timestamp_opt(1_700_000_000, 5).single().expect("ts");
    assert_eq!(encode_timestamp_ext(t64).len(), 8);
    let t96 = Utc.timestamp_opt(-5, 7).single().expect("ts");
    assert_eq!(encode_timestamp_ext(t96).len(), 12);
    for t in [t32, t64, t96] {
        assert_eq!(decode_timestamp_ext(&encode_timestamp_ext(t)), Some(t));
    }
    assert_eq!(decode_timestamp_ext(&[1, 2, 3]), None);
}

#[test]
fn json_envelope_with_rfc3339_ts_and_subject_defaults() {
    let payload = br#"{"type":"state.changed","ts":"2026-05-01T10:00:00.5+02:00","data":{"hp":3}}"#;
    let e = decode("game.state.world.x", payload).expect("valid");
    assert_eq!(
        e.ts,
        Utc.with_ymd_and_hms(2026, 5, 1, 8, 0, 0)
            .single()
            .expect("ts")
            + chrono::Duration::milliseconds(500)
    );
    assert_eq!(e.source, "world");
    assert_eq!(e.category, Category::StateChange);
    assert_eq!(e.severity, Severity::Info);
    assert_eq!(e.data, map(vec![("hp", Value::from(3))]));
}

#[test]
fn non_envelopes_are_wrapped_not_rejected() {
    // a msgpack map without `type`: the game's own traffic
    let e = decode(
        "game.agent.npc1.moved",
        &mp(&map(vec![("x", Value::from(1))])),
    )
    .expect("wrapped");
    assert_eq!(e.event_type, "moved");
    assert_eq!(e.source, "npc1");
    assert_eq!(e.category, Category::AgentDecision);
    assert_eq!(e.meta_str("encoding"), Some("msgpack"));
    assert_eq!(e.meta.get("wrapped"), Some(&Value::Boolean(true)));
    // JSON object without `type`
    let e = decode("game.story.graph.node.entered", br#"{"node":"cave"}"#).expect("wrapped");
    assert_eq!(e.event_type, "node.entered");
    assert_eq!(e.meta_str("encoding"), Some("json"));
    // text
    let e = decode("game.state.mgr.log", b"hello world").expect("wrapped");
    assert_eq!(e.data, Value::from("hello world"));
    assert_eq!(e.meta_str("encoding"), Some("text"));
    // opaque bytes (protobuf-like)
    let bytes = [0x08, 0x96, 0x01, 0x12, 0x04, 0xff, 0xfe, 0x00, 0x01];
    let e = decode("game.state.mgr.proto", &bytes).expect("wrapped");
    assert_eq!(e.data, Value::Binary(bytes.to_vec()));
    assert_eq!(e.meta_str("encoding"), Some("bytes"));
    // a subject with no type tokens
    let e = decode("game.agent.npc1", b"x y").expect("wrapped");
    assert_eq!(e.event_type, "message");
}

#[test]
fn fallback_id_is_used_when_absent() {
    let id = EventId::derived(1_700_000_000_000, b"stream:42");
    let payload = br#"{"type":"a.b"}"#;
    let mut msg = incoming("game.agent.x.y", payload);
    msg.fallback_id = Some(id);
    let e = Decoder::default().decode(&msg).expect("valid");
    assert_eq!(e.id, id);
    assert_eq!(EventId::derived(1_700_000_000_000, b"stream:42"), id);
    assert_ne!(EventId::derived(1_700_000_000_000, b"stream:43"), id);
}

#[test]
fn invalid_envelopes_say_what_is_wrong() {
    let cases: Vec<(Value, &str)> = vec![
        (
            map(vec![("type", Value::from(5))]),
            "field `type` must be a string, got an integer",
        ),
        (
            map(vec![
                ("type", Value::from("a")),
                ("ts", Value::from("yesterday")),
            ]),
            "field `ts`",
        ),
        (
            map(vec![("type", Value::from("a")), ("ts", Value::from(17))]),
            "field `ts` must be",
        ),
        (
            map(vec![
                ("type", Value::from("a")),
                ("id", Value::from("nope")),
            ]),
            "not a ULID",
        ),
        (
            map(vec![
                ("type", Value::from("a")),
                ("severity", Value::from("loud")),
            ]),
            "severity",
        ),
        (
            map(vec![
                ("type", Value::from("a")),
                ("metrics", Value::from("x")),
            ]),
            "metrics",
        ),
        (
            map(vec![
                ("type", Value::from("a")),
                ("metrics", map(vec![("m", Value::from("x"))])),
            ]),
            "numbers",
        ),
        (
            map(vec![("type", Value::from("a")), ("meta", Value::from(1))]),
            "meta",
        ),
        (map(vec![("type", Value::from(""))]), "must not be empty"),
    ];
    for (v, expected) in cases {
        let err = decode("game.agent.x.y", &mp(&v)).expect_err("must be refused");
        assert_eq!(err.kind, DecodeErrorKind::InvalidEnvelope, "{err}");
        assert!(
            err.to_string().contains(expected),
            "{err} should contain {expected}"
        );
    }
}

#[test]
fn non_finite_metrics_are_dropped_and_named() {
    let v = map(vec![
        ("type", Value::from("a")),
        (
            "metrics",
            map(vec![
                ("ok", Value::F64(1.0)),
                ("bad", Value::F64(f64::NAN)),
                ("inf", Value::F64(f64::INFINITY)),
            ]),
        ),
    ]);
    let e = decode("game.agent.x.y", &mp(&v)).expect("valid");
    assert_eq!(e.metrics.len(), 1);
    assert_eq!(
        e.meta.get("dropped_metrics"),
        Some(&Value::Array(vec![Value::from("bad"), Value::from("inf")]))
    );
}

#[test]
fn limits_are_enforced() {
    let limits = Limits::default();
    let big = vec![b'x'; limits.max_message_bytes + 1];
    assert_eq!(
        decode("game.agent.x.y", &big).expect_err("too large").kind,
        DecodeErrorKind::TooLarge
    );

    // 100,000 nested arrays: must be refused without recursing
    let mut deep = vec![0x91u8; 100_000];
    deep.push(0xc0);
    assert_eq!(
        decode("game.agent.x.y", &deep).expect_err("too deep").kind,
        DecodeErrorKind::TooDeep
    );
    let deep_json = format!("{}{}", "{\"a\":".repeat(100_000), "1");
    assert_eq!(
        decode("game.agent.x.y", deep_json.as_bytes())
            .expect_err("too deep")
            .kind,
        DecodeErrorKind::TooDeep
    );
    let deep_ok_json = format!("{}1{}", "{\"a\":".repeat(20), "}".repeat(20));
    assert!(decode("game.agent.x.y", deep_ok_json.as_bytes()).is_ok());
    let deep_json_small = format!("{}1{}", "{\"a\":".repeat(40), "}".repeat(40));
    assert_eq!(
        decode("game.agent.x.y", deep_json_small.as_bytes())
            .expect_err("too deep")
            .kind,
        DecodeErrorKind::TooDeep
    );

    let many: Vec<(&str, Value)> = Vec::new();
    let mut m = map(many);
    if let Value::Map(entries) = &mut m {
        for i in 0..2000 {
            entries.push((Value::from(format!("k{i}")), Value::from(i)));
        }
    }
    assert_eq!(
        decode("game.agent.x.y", &mp(&m)).expect_err("keys").kind,
        DecodeErrorKind::TooManyKeys
    );

    let long = map(vec![
        ("type", Value::from("a")),
        ("data", Value::from("y".repeat(70_000))),
    ]);
    assert_eq!(
        decode("game.agent.x.y", &mp(&long)).expect_err("long").kind,
        DecodeErrorKind::StringTooLong
    );

    let long_name = map(vec![("type", Value::from("t".repeat(300)))]);
    assert_eq!(
        decode("game.agent.x.y", &mp(&long_name))
            .expect_err("long")
            .kind,
        DecodeErrorKind::StringTooLong
    );
}

#[test]
fn truncated_envelopes_are_malformed() {
    let full = mp(&map(vec![
        ("type", Value::from("player.move")),
        ("player", Value::from("p")),
    ]));
    let cut = &full[..full.len() - 3];
    assert_eq!(
        decode("game.agent.x.y", cut).expect_err("truncated").kind,
        DecodeErrorKind::Malformed
    );
    assert_eq!(
        decode("game.agent.x.y", br#"{"type": "a""#)
            .expect_err("bad json")
            .kind,
        DecodeErrorKind::Malformed
    );
    // a huge declared length with no bytes behind it must not allocate
    assert_eq!(
        decode("game.agent.x.y", &[0xdf, 0xff, 0xff, 0xff, 0xff])
            .expect_err("huge")
            .kind,
        DecodeErrorKind::TooManyKeys
    );
    assert_eq!(
        decode("game.agent.x.y", &[0xde, 0x00, 0x10, 0xc0])
            .expect_err("short")
            .kind,
        DecodeErrorKind::Malformed
    );
}

#[test]
fn stored_entries_round_trip() {
    let mut e = TraceEntry::new("agent.decision", "npc3");
    e.severity = Severity::Error;
    e.player = Some("p9".into());
    e.session = Some("s1".into());
    e.parent = Some(EventId::new_at(e.ts));
    e.metrics.insert("latency_ms".into(), 3.25);
    e.data = map(vec![
        ("bin", Value::Binary(vec![1, 2, 3])),
        ("n", Value::from(-4)),
    ]);
    e.meta.insert(
        "subject".into(),
        Value::from("game.agent.npc3.agent.decision"),
    );
    e.category = Category::Other("custom".into());
    let mut buf = encode_entry_vec(&e);
    let e2 = TraceEntry::new("system.start", "mgr");
    encode_entry(&e2, &mut buf);
    let mut cursor = &buf[..];
    assert_eq!(decode_stored_entry(&mut cursor).expect("first"), e);
    assert_eq!(decode_stored_entry(&mut cursor).expect("second"), e2);
    assert!(cursor.is_empty());
    // the stored form is also a valid wire envelope
    let payload = encode_entry_vec(&e);
    let mut msg = incoming("game.agent.npc3.x", &payload);
    msg.received_at = e.ts;
    let wire = Decoder::default().decode(&msg).expect("valid on the wire");
    assert_eq!(wire.id, e.id);
    assert_eq!(wire.ts, e.ts);
    assert_eq!(wire.category, e.category);
}

#[test]
fn json_output_uses_wire_names() {
    let mut e = TraceEntry::new("player.move", "npc1");
    e.player = Some("p1".into());
    let json = serde_json::to_value(&e).expect("json");
    assert_eq!(json["type"], "player.move");
    assert_eq!(json["severity"], "info");
    assert_eq!(json["category"], "player_action");
    assert_eq!(json["player"], "p1");
    let back: TraceEntry = serde_json::from_value(json).expect("back");
    assert_eq!(back, e);
}

#[test]
fn kinds_give_default_categories() {
    assert_eq!(
        SourceKind::Agent.default_category(),
        Category::AgentDecision
    );
    assert_eq!(
        Category::from_type("system.error"),
        Some(Category::SystemEvent)
    );
    assert_eq!(Category::from_type("zone.enter"), None);
}

fn ts_envelope(ts: Value) -> Vec<u8> {
    mp(&map(vec![
        ("id", Value::from("01HZY3J6W9Q2V7X8C5B4N3M2K1")),
        ("type", Value::from("player.move")),
        ("ts", ts),
    ]))
}

fn received() -> DateTime<Utc> {
    incoming("", b"").received_at
}

/// 96-bit msgpack timestamp of `secs` since 1970.
fn ext96(secs: i64) -> Value {
    let mut b = 0u32.to_be_bytes().to_vec();
    b.extend_from_slice(&secs.to_be_bytes());
    Value::Ext(-1, b)
}

#[test]
fn skewed_timestamps_take_the_arrival_time_and_keep_the_original() {
    let year0 = Utc
        .with_ymd_and_hms(0, 1, 1, 0, 0, 0)
        .single()
        .expect("year 0");
    let year9999 = Utc
        .with_ymd_and_hms(9999, 12, 31, 23, 59, 59)
        .single()
        .expect("year 9999");
    let cases: Vec<(Value, &str)> = vec![
        (Value::from("0000-01-01T00:00:00Z"), "0000-01-01T00:00:00Z"),
        (Value::from("9999-12-31T23:59:59Z"), "9999-12-31T23:59:59Z"),
        (Value::from("1970-01-01T00:00:00Z"), "1970-01-01T00:00:00Z"),
        (
            Value::from("1999-12-31T23:59:59.999Z"),
            "1999-12-31T23:59:59.999Z",
        ),
        (ext96(year0.timestamp()), "0000-01-01T00:00:00Z"),
        (ext96(year9999.timestamp()), "9999-12-31T23:59:59Z"),
        (Value::Ext(-1, vec![0, 0, 0, 0]), "1970-01-01T00:00:00Z"),
        // a day and a second after arrival
        (
            Value::Ext(
                -1,
                encode_timestamp_ext(received() + chrono::Duration::seconds(86_401)),
            ),
            "2026-06-02T03:04:06Z",
        ),
        // beyond year 9999: formatted with a sign, never a panic
        (ext96(year9999.timestamp() + 86_400 * 366), "+10000"),
        (ext96(-70_000_000_000), "-0249"),
    ];
    for (ts, original) in cases {
        let e = decode("game.agent.x.y", &ts_envelope(ts.clone())).expect("clamped, not refused");
        assert_eq!(e.ts, received(), "{ts:?}");
        assert_eq!(
            e.meta.get("clock_skew"),
            Some(&Value::Boolean(true)),
            "{ts:?}"
        );
        let got = e.meta_str("original_ts").expect("original_ts");
        assert!(got.starts_with(original), "{got} for {ts:?}");
        // the clamped entry is stored and read back like any other
        let mut buf = &encode_entry_vec(&e)[..];
        assert_eq!(decode_stored_entry(&mut buf).expect("stored"), e);
    }
    // inside the window: kept as sent
    for ts in [
        Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0)
            .single()
            .expect("ts"),
        received() + chrono::Duration::seconds(86_400),
        received() - chrono::Duration::days(3650),
    ] {
        let e = decode(
            "game.agent.x.y",
            &ts_envelope(Value::Ext(-1, encode_timestamp_ext(ts))),
        )
        .expect("valid");
        assert_eq!(e.ts, ts);
        assert!(!e.meta.contains_key("clock_skew") && !e.meta.contains_key("original_ts"));
    }
    // the window is configurable
    let limits = Limits {
        max_future_skew: std::time::Duration::from_secs(60),
        ..Limits::default()
    };
    let soon = received() + chrono::Duration::seconds(120);
    let payload = ts_envelope(Value::Ext(-1, encode_timestamp_ext(soon)));
    let e = Decoder::new(limits, SubjectScheme::default())
        .decode(&incoming("game.agent.x.y", &payload))
        .expect("clamped");
    assert_eq!(e.ts, received());
    assert_eq!(e.meta_str("original_ts"), Some(rfc3339(soon).as_str()));
    // unrepresentable (beyond chrono's ±262,000 years): not a time at all
    for secs in [i64::MAX, i64::MIN] {
        let err = decode("game.agent.x.y", &ts_envelope(ext96(secs))).expect_err("refused");
        assert_eq!(err.kind, DecodeErrorKind::InvalidEnvelope);
        assert!(err.to_string().contains("range"), "{err}");
    }
    // RFC 3339 cannot spell years past 9999 nor negative ones
    let err = decode(
        "game.agent.x.y",
        &ts_envelope(Value::from("10000-01-01T00:00:00Z")),
    )
    .expect_err("refused");
    assert!(err.to_string().contains("field `ts`"), "{err}");
}

#[test]
fn max_future_skew_is_read_as_a_duration() {
    let limits: Limits = serde_json::from_str(r#"{"max_future_skew": "2h"}"#).expect("limits");
    assert_eq!(limits.max_future_skew, std::time::Duration::from_secs(7200));
    assert_eq!(limits.max_depth, Limits::default().max_depth);
    assert_eq!(
        Limits::default().max_future_skew,
        std::time::Duration::from_secs(86_400)
    );
    let huge = Limits {
        max_future_skew: std::time::Duration::from_secs(u64::MAX),
        ..Limits::default()
    };
    assert_eq!(huge.validate().map_err(|(k, _)| k), Err("max_future_skew"));
}

/// A msgpack str (fixstr) holding these bytes, valid UTF-8 or not.
fn raw_str(bytes: &[u8]) -> Vec<u8> {
    assert!(bytes.len() < 32);
    let mut out = vec![0xa0 | bytes.len() as u8];
    out.extend_from_slice(bytes);
    out
}

/// A msgpack map of (raw key bytes, raw value bytes).
fn raw_map(fields: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = vec![0x80 | fields.len() as u8];
    for (k, v) in fields {
        out.extend_from_slice(k);
        out.extend_from_slice(v);
    }
    out
}

#[test]
fn invalid_utf8_is_refused_in_fields_and_kept_as_binary_in_data() {
    let bad = b"ab\xff\xfecd".as_slice();
    let ty = (raw_str(b"type"), raw_str(b"player.move"));
    // in data (value and nested key) and in meta: kept, same bytes, as binary
    let payload = raw_map(&[
        ty.clone(),
        (
            raw_str(b"data"),
            raw_map(&[
                (raw_str(bad), raw_str(bad)),
                (raw_str(b"ok"), raw_str(b"fine")),
            ]),
        ),
        (
            raw_str(b"meta"),
            raw_map(&[(raw_str(b"note"), raw_str(bad))]),
        ),
        (raw_str(b"extra"), raw_str(bad)),
    ]);
    let e = decode("game.agent.x.y", &payload).expect("kept");
    assert_eq!(
        e.data,
        Value::Map(vec![
            (Value::Binary(bad.to_vec()), Value::Binary(bad.to_vec())),
            (Value::from("ok"), Value::from("fine")),
        ])
    );
    assert_eq!(e.meta.get("note"), Some(&Value::Binary(bad.to_vec())));
    assert_eq!(e.meta.get("extra"), Some(&Value::Binary(bad.to_vec())));
    assert_eq!(e.meta.get("invalid_utf8"), Some(&Value::Boolean(true)));
    // JSON output: a binary key is written as hex, never an error
    let json = serde_json::to_value(&e).expect("serialises");
    assert_eq!(json["meta"]["invalid_utf8"], true);
    assert_eq!(
        json["data"]["0x6162fffe6364"],
        serde_json::json!([97, 98, 255, 254, 99, 100])
    );
    // wrapped traffic: the same
    let e = decode(
        "game.agent.x.moved",
        &raw_map(&[(raw_str(b"k"), raw_str(bad))]),
    )
    .expect("wrapped");
    assert_eq!(e.meta.get("wrapped"), Some(&Value::Boolean(true)));
    assert_eq!(e.meta.get("invalid_utf8"), Some(&Value::Boolean(true)));
    assert_eq!(
        e.data,
        Value::Map(vec![(Value::from("k"), Value::Binary(bad.to_vec()))])
    );
    let e = decode("game.agent.x.moved", &raw_str(bad)).expect("wrapped scalar");
    assert_eq!(e.data, Value::Binary(bad.to_vec()));
    // valid traffic carries no flag
    let e = decode("game.agent.x.y", &raw_map(std::slice::from_ref(&ty))).expect("valid");
    assert!(!e.meta.contains_key("invalid_utf8"));

    // in a field the agent reads: refused, naming it
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            raw_map(&[(raw_str(b"type"), raw_str(bad))]),
            "field `type`: not valid UTF-8",
        ),
        (
            raw_map(&[ty.clone(), (raw_str(b"source"), raw_str(bad))]),
            "field `source`: not valid UTF-8",
        ),
        (
            raw_map(&[ty.clone(), (raw_str(b"player"), raw_str(bad))]),
            "field `player`: not valid UTF-8",
        ),
        (
            raw_map(&[ty.clone(), (raw_str(b"id"), raw_str(bad))]),
            "field `id`: not valid UTF-8",
        ),
        (
            raw_map(&[ty.clone(), (raw_str(b"parent"), raw_str(bad))]),
            "field `parent`: not valid UTF-8",
        ),
        (
            raw_map(&[ty.clone(), (raw_str(b"ts"), raw_str(bad))]),
            "field `ts`: not valid UTF-8",
        ),
        (
            raw_map(&[ty.clone(), (raw_str(b"severity"), raw_str(bad))]),
            "field `severity`: not valid UTF-8",
        ),
        (
            raw_map(&[
                ty.clone(),
                (raw_str(b"meta"), raw_map(&[(raw_str(bad), vec![1])])),
            ]),
            "field `meta`: a key is not valid UTF-8",
        ),
        (
            raw_map(&[
                ty.clone(),
                (raw_str(b"metrics"), raw_map(&[(raw_str(bad), vec![1])])),
            ]),
            "field `metrics`: a key is not valid UTF-8",
        ),
        (
            raw_map(&[ty.clone(), (raw_str(bad), vec![1])]),
            "a field name is not valid UTF-8",
        ),
    ];
    for (payload, expected) in cases {
        let err = decode("game.agent.x.y", &payload).expect_err("refused");
        assert_eq!(err.kind, DecodeErrorKind::InvalidEnvelope, "{err}");
        assert!(
            err.to_string().contains(expected),
            "{err} should say {expected}"
        );
    }
    // JSON is UTF-8 by definition: a JSON payload with bad bytes is malformed
    let err = decode("game.agent.x.y", b"{\"type\":\"a\",\"data\":\"\xff\"}").expect_err("bad");
    assert_eq!(err.kind, DecodeErrorKind::Malformed);
}

#[test]
fn wrong_key_types_are_named() {
    let v = map(vec![
        ("type", Value::from("a")),
        ("meta", Value::Map(vec![(Value::from(1), Value::from(2))])),
    ]);
    let err = decode("game.agent.x.y", &mp(&v)).expect_err("refused");
    assert!(
        err.to_string()
            .contains("field `meta` must be a map with string keys, got an integer key"),
        "{err}"
    );
}

#[test]
fn any_msgpack_map_key_serialises_to_json() {
    let keys = vec![
        (Value::Nil, "null"),
        (Value::Boolean(true), "true"),
        (Value::from(-3), "-3"),
        (Value::F64(1.5), "1.5"),
        (Value::Binary(vec![0, 255]), "0x00ff"),
        (Value::Array(vec![Value::from(1), Value::Nil]), "[1,null]"),
        (
            Value::Map(vec![(Value::Nil, Value::from(1))]),
            "{\"null\":1}",
        ),
        (Value::Ext(5, vec![1]), "[5,[1]]"),
    ];
    let data = Value::Map(
        keys.iter()
            .map(|(k, _)| (k.clone(), Value::Map(vec![(k.clone(), Value::from(1))])))
            .collect(),
    );
    // wrapped game traffic with such keys is stored, and its JSON form does not fail
    let e = decode("game.agent.x.moved", &mp(&data)).expect("wrapped");
    let mut e2 = e.clone();
    e2.meta.insert("nested".into(), data.clone());
    let json = serde_json::to_value(&e2).expect("JSON");
    for (_, text) in &keys {
        assert_eq!(json["data"][text][text], 1, "{text} in {json}");
        assert_eq!(json["meta"]["nested"][text][text], 1, "{text} in {json}");
    }
    // the binary forms stay exact
    let mut buf = &encode_entry_vec(&e2)[..];
    assert_eq!(decode_stored_entry(&mut buf).expect("stored"), e2);
    let back: TraceEntry =
        rmp_serde::from_slice(&rmp_serde::to_vec_named(&e2).expect("msgpack")).expect("back");
    assert_eq!(back.data, e2.data);
}

#[test]
fn invalid_utf8_deeper_than_the_quick_look_is_still_kept_as_binary() {
    // the quick look recurses 8 levels, then hands over to the full walk
    let bad = b"ab\xff\xfecd".as_slice();
    let mut nested = raw_str(bad);
    for _ in 0..12 {
        let mut array = vec![0x91]; // fixarray of one
        array.extend_from_slice(&nested);
        nested = array;
    }
    let payload = raw_map(&[
        (raw_str(b"type"), raw_str(b"player.move")),
        (raw_str(b"data"), nested),
    ]);
    let e = decode("game.agent.x.y", &payload).expect("kept");
    let mut inner = &e.data;
    for _ in 0..12 {
        match inner {
            Value::Array(items) if items.len() == 1 => inner = &items[0],
            other => panic!("not the nested array: {other:?}"),
        }
    }
    assert_eq!(inner, &Value::Binary(bad.to_vec()));
    assert_eq!(e.meta.get("invalid_utf8"), Some(&Value::Boolean(true)));
}
