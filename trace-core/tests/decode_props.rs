//! Property tests of the wire decoder against bad input: whatever bytes arrive on whatever
//! subject, `Decoder::decode` (and `decode_stored_entry`, which reads blocks back) never
//! panics; it either gives an entry that can be stored, read back and printed as JSON, or a
//! `DecodeError` whose reason says something. Valid envelopes round-trip exactly.
//!
//! Cases per property: [`CASES`] for bytes and single values, [`BIG_CASES`] for envelopes,
//! deep nesting, random limits and round trips; the whole file takes a few seconds.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use rmpv::Value;
use trace_core::{
    decode_stored_entry, encode_entry_vec, Category, DecodeError, Decoder, EventId, Incoming,
    Limits, Severity, SubjectScheme, TraceEntry,
};

/// Cases of each "never panics" property over small inputs.
const CASES: u32 = 1000;
/// Cases of the properties over larger inputs (envelopes, deep nesting, round trips).
const BIG_CASES: u32 = 400;
/// Depth of the fixed deep-nesting inputs (well past every limit and parser).
const DEEP: usize = 100_000;

/// The envelope's field names, so generated maps often look like (broken) envelopes.
const FIELD_NAMES: [&str; 13] = [
    "id", "ts", "type", "category", "source", "severity", "session", "player", "parent", "metrics",
    "data", "meta", "extra",
];

fn received() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, 3, 4, 5)
        .single()
        .expect("a valid time")
}

fn incoming<'a>(subject: &'a str, payload: &'a [u8]) -> Incoming<'a> {
    Incoming {
        subject,
        payload,
        received_at: received(),
        fallback_id: None,
    }
}

/// What every decode must satisfy: an error names its rule and says why; an entry has the
/// agent's meta, is stored and read back to the same bytes, and prints as JSON.
fn check_outcome(
    result: Result<TraceEntry, DecodeError>,
    subject: &str,
) -> Result<(), TestCaseError> {
    match result {
        Err(e) => {
            prop_assert!(!e.kind.as_str().is_empty());
            prop_assert!(!e.detail.trim().is_empty(), "empty reason for {:?}", e.kind);
            prop_assert!(e.to_string().len() > e.kind.as_str().len() + 2);
        }
        Ok(entry) => {
            prop_assert_eq!(entry.meta_str("subject"), Some(subject));
            prop_assert!(entry.meta.contains_key("received_at"));
            let bytes = encode_entry_vec(&entry);
            let stored = decode_stored_entry(&mut &bytes[..]);
            prop_assert!(
                stored.is_ok(),
                "an accepted entry cannot be read back from storage: {:?}\nentry: {:?}",
                stored.err(),
                entry
            );
            if let Ok(stored) = stored {
                prop_assert_eq!(encode_entry_vec(&stored), bytes);
            }
            let json = serde_json::to_string(&entry);
            prop_assert!(json.is_ok(), "JSON output failed: {:?}", json.err());
        }
    }
    Ok(())
}

/// A msgpack `str` holding exactly these bytes, valid UTF-8 or not (rmpv keeps bad bytes).
fn raw_str(bytes: &[u8]) -> Value {
    let mut buf = vec![0xdb];
    buf.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    buf.extend_from_slice(bytes);
    rmpv::decode::read_value(&mut &buf[..]).expect("a str value")
}

/// Encodes like `rmpv::encode::write_value`, except that a string which is not UTF-8 is
/// written as a msgpack `str` with its bytes (rmpv would write it as binary).
fn encode(v: &Value) -> Vec<u8> {
    fn write(out: &mut Vec<u8>, v: &Value) {
        match v {
            Value::String(s) if s.is_err() => {
                let bytes = s.as_bytes();
                rmp::encode::write_str_len(out, bytes.len() as u32).expect("into a Vec");
                out.extend_from_slice(bytes);
            }
            Value::Array(items) => {
                rmp::encode::write_array_len(out, items.len() as u32).expect("into a Vec");
                items.iter().for_each(|item| write(out, item));
            }
            Value::Map(entries) => {
                rmp::encode::write_map_len(out, entries.len() as u32).expect("into a Vec");
                for (k, v) in entries {
                    write(out, k);
                    write(out, v);
                }
            }
            other => rmpv::encode::write_value(out, other).expect("into a Vec"),
        }
    }
    let mut out = Vec::new();
    write(&mut out, v);
    out
}

fn subject() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "game\\.(agent|story|state)\\.[a-z0-9-]{1,8}(\\.[a-z_]{1,8}){0,3}",
        1 => Just("game.agent.npc1".to_owned()),
        1 => "game\\.(agent|story|state)(\\.[a-z]{0,3}){0,4}\\.?",
        1 => "trace\\.alerts\\.[a-z]{1,6}",
        1 => ".{0,40}",
        1 => "[\\x00-\\x1f .*>a-z]{0,16}",
    ]
}

fn ts_ext() -> impl Strategy<Value = Value> {
    prop_oneof![
        vec(any::<u8>(), 4..=4),
        vec(any::<u8>(), 8..=8),
        vec(any::<u8>(), 12..=12),
        vec(any::<u8>(), 0..16),
        any::<i64>().prop_map(|secs| {
            let mut b = 0u32.to_be_bytes().to_vec();
            b.extend_from_slice(&secs.to_be_bytes());
            b
        }),
    ]
    .prop_map(|b| Value::Ext(-1, b))
}

/// Scalars, including what publishers get wrong: huge ints, NaN and infinities, strings that
/// are not UTF-8, timestamps of any size, the envelope's own field names and values.
fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Nil),
        any::<bool>().prop_map(Value::Boolean),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop::sample::select(vec![u64::MAX, i64::MAX as u64, 1 << 53, (1 << 53) + 1])
            .prop_map(Value::from),
        Just(Value::from(i64::MIN)),
        any::<f32>().prop_map(Value::F32),
        any::<f64>().prop_map(Value::F64),
        prop::sample::select(vec![f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.0])
            .prop_map(Value::F64),
        Just(Value::F32(f32::NAN)),
        ".{0,12}".prop_map(Value::from),
        vec(any::<u8>(), 0..12).prop_map(|b| raw_str(&b)),
        vec(any::<u8>(), 0..16).prop_map(Value::Binary),
        (any::<i8>(), vec(any::<u8>(), 0..16)).prop_map(|(t, b)| Value::Ext(t, b)),
        ts_ext(),
        prop::sample::select(FIELD_NAMES.to_vec()).prop_map(Value::from),
        prop::sample::select(vec![
            "01HZY3J6W9Q2V7X8C5B4N3M2K1",
            "8ZZZZZZZZZZZZZZZZZZZZZZZZZ",
            "not-a-ulid",
            "",
            "2026-06-01T03:04:05Z",
            "0000-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "yesterday",
            "warn",
            "fatal",
            "player.move",
            "a\u{0}b",
        ])
        .prop_map(Value::from),
    ]
}

/// Any msgpack value tree: arrays and maps with keys of any type, nested up to 8 levels.
fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(6, 48, 5, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            vec((inner.clone(), inner.clone()), 0..6).prop_map(Value::Map),
            // maps keyed by envelope field names: deeper envelope validation
            vec((prop::sample::select(FIELD_NAMES.to_vec()), inner), 0..6).prop_map(|fields| {
                Value::Map(
                    fields
                        .into_iter()
                        .map(|(k, v)| (Value::from(k), v))
                        .collect(),
                )
            }),
        ]
    })
}

/// A map with a `type` key (so it is an envelope) and any other fields with any values.
fn envelope() -> impl Strategy<Value = Value> {
    (
        prop_oneof![
            3 => "[a-z]{1,8}(\\.[a-z]{1,8}){0,2}".prop_map(Value::from),
            1 => leaf(),
        ],
        vec(
            (
                prop_oneof![
                    4 => prop::sample::select(FIELD_NAMES.to_vec()).prop_map(Value::from),
                    1 => leaf(),
                ],
                prop_oneof![
                    3 => leaf(),
                    1 => value(),
                ],
            ),
            0..10,
        ),
    )
        .prop_map(|(ty, mut fields)| {
            fields.insert(0, (Value::from("type"), ty));
            Value::Map(fields)
        })
}

/// `depth` nested arrays or single-key maps around a nil, written directly as bytes.
fn nested_msgpack(depth: usize, maps: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(depth * 3 + 1);
    for _ in 0..depth {
        if maps {
            out.extend_from_slice(&[0x81, 0xa1, b'k']);
        } else {
            out.push(0x91);
        }
    }
    out.push(0xc0);
    out
}

/// `depth` nested JSON arrays or objects, optionally inside an envelope's `data`.
fn nested_json(depth: usize, maps: bool, in_envelope: bool) -> Vec<u8> {
    let (open, close) = if maps { ("{\"k\":", "}") } else { ("[", "]") };
    let mut s = String::new();
    if in_envelope {
        s.push_str("{\"type\":\"deep\",\"data\":");
    }
    s.push_str(&open.repeat(depth));
    s.push_str("null");
    s.push_str(&close.repeat(depth));
    if in_envelope {
        s.push('}');
    }
    s.into_bytes()
}

/// Limits that pass `Limits::validate`, small enough that generated values hit them.
fn limits() -> impl Strategy<Value = Limits> {
    (
        64usize..4096,
        2usize..12,
        16usize..256,
        16usize..64,
        1usize..64,
        16usize..64,
    )
        .prop_map(|(bytes, depth, string, keys, array, name)| Limits {
            max_message_bytes: bytes,
            max_depth: depth,
            max_string_bytes: string,
            max_map_keys: keys,
            max_array_len: array,
            max_name_bytes: name,
            ..Limits::default()
        })
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z][a-z0-9_-]{0,11}(\\.[a-z0-9_]{1,8}){0,3}",
        1 => "\\PC{1,24}",
    ]
}

fn category() -> impl Strategy<Value = Category> {
    prop_oneof![
        Just(Category::StateChange),
        Just(Category::PlayerAction),
        Just(Category::SystemEvent),
        Just(Category::AgentDecision),
        "[a-z]{1,12}"
            .prop_filter("a known category name", |s| {
                !matches!(
                    Category::parse(s),
                    Category::StateChange
                        | Category::PlayerAction
                        | Category::SystemEvent
                        | Category::AgentDecision
                )
            })
            .prop_map(Category::Other),
    ]
}

/// Floats written with few decimals, as game code sends them: serde_json (without its
/// `float_roundtrip` feature) parses these exactly, arbitrary doubles only to within one ulp.
fn decimal() -> impl Strategy<Value = f64> {
    (any::<i32>(), 0i32..7).prop_map(|(m, e)| f64::from(m) / 10f64.powi(e))
}

/// Payload values that survive msgpack exactly (no NaN, which is not equal to itself; no
/// strings with bad UTF-8, which the decoder turns into binary on purpose).
fn clean_value(json_native: bool) -> BoxedStrategy<Value> {
    let scalar = if json_native {
        prop_oneof![
            Just(Value::Nil),
            any::<bool>().prop_map(Value::Boolean),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            decimal().prop_map(Value::F64),
            ".{0,16}".prop_map(Value::from),
        ]
        .boxed()
    } else {
        prop_oneof![
            Just(Value::Nil),
            any::<bool>().prop_map(Value::Boolean),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (prop::num::f64::NORMAL | prop::num::f64::ZERO | prop::num::f64::INFINITE)
                .prop_map(Value::F64),
            (prop::num::f32::NORMAL | prop::num::f32::ZERO).prop_map(Value::F32),
            ".{0,16}".prop_map(Value::from),
            vec(any::<u8>(), 0..16).prop_map(Value::Binary),
            (any::<i8>(), vec(any::<u8>(), 0..8)).prop_map(|(t, b)| Value::Ext(t, b)),
        ]
        .boxed()
    };
    scalar
        .prop_recursive(5, 48, 5, move |inner| {
            let keyed = btree_map(".{0,8}", inner.clone(), 0..5).prop_map(|m| {
                Value::Map(m.into_iter().map(|(k, v)| (Value::from(k), v)).collect())
            });
            if json_native {
                prop_oneof![vec(inner, 0..5).prop_map(Value::Array), keyed].boxed()
            } else {
                prop_oneof![
                    vec(inner.clone(), 0..5).prop_map(Value::Array),
                    keyed,
                    vec((inner.clone(), inner), 0..4).prop_map(Value::Map),
                ]
                .boxed()
            }
        })
        .boxed()
}

/// A valid entry as a publisher would send it: every field within the limits, `ts` in the
/// plausible window [2000, arrival + 1 day], finite metrics.
fn valid_entry(json_native: bool) -> impl Strategy<Value = TraceEntry> {
    let earliest = Utc
        .with_ymd_and_hms(2000, 1, 1, 0, 0, 0)
        .single()
        .expect("a valid time")
        .timestamp_nanos_opt()
        .expect("in range");
    let latest = (received() + chrono::Duration::days(1))
        .timestamp_nanos_opt()
        .expect("in range");
    (
        (
            any::<u128>(),
            earliest..=latest,
            name(),
            category(),
            name(),
            prop::sample::select(Severity::ALL.to_vec()),
        ),
        (
            prop::option::of(name()),
            prop::option::of(name()),
            prop::option::of(any::<u128>()),
            btree_map(
                "[a-z_]{1,10}",
                if json_native {
                    decimal().boxed()
                } else {
                    (prop::num::f64::NORMAL | prop::num::f64::ZERO | prop::num::f64::SUBNORMAL)
                        .boxed()
                },
                0..4,
            ),
            clean_value(json_native),
            btree_map(
                "[a-z_]{1,10}".prop_filter("a key the agent sets", |k| {
                    k != "subject" && k != "received_at"
                }),
                clean_value(json_native),
                0..4,
            ),
        ),
    )
        .prop_map(
            |(
                (id, ts, event_type, category, source, severity),
                (session, player, parent, metrics, data, meta),
            )| TraceEntry {
                id: EventId(ulid::Ulid(id)),
                ts: DateTime::from_timestamp_nanos(ts),
                event_type,
                category,
                source,
                severity,
                session,
                player,
                parent: parent.map(|p| EventId(ulid::Ulid(p))),
                metrics,
                data,
                meta,
            },
        )
}

/// The entry the decoder must make of `sent` arriving on `subject`.
fn as_received(sent: &TraceEntry, subject: &str) -> TraceEntry {
    let mut want = sent.clone();
    want.meta.insert("subject".into(), Value::from(subject));
    want.meta.insert(
        "received_at".into(),
        Value::from(trace_core::codec::rfc3339(received())),
    );
    want
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    /// Any bytes on any subject: msgpack, text, opaque bytes, whatever the first byte says.
    #[test]
    fn arbitrary_bytes_never_panic(subject in subject(), payload in vec(any::<u8>(), 0..512)) {
        check_outcome(Decoder::default().decode(&incoming(&subject, &payload)), &subject)?;
        let _ = decode_stored_entry(&mut &payload[..]);
    }

    /// Bytes that announce JSON (`{` after blanks): the JSON path, whatever follows.
    #[test]
    fn json_shaped_bytes_never_panic(
        subject in subject(),
        blanks in "[ \t\r\n]{0,3}",
        body in prop_oneof![
            vec(any::<u8>(), 0..256),
            "[\\[\\]{}\":,0-9a-z.eE+-]{0,128}".prop_map(String::into_bytes),
            value().prop_map(|v| serde_json::to_vec(&v).unwrap_or_default()),
        ],
    ) {
        let mut payload = blanks.into_bytes();
        payload.push(b'{');
        payload.extend_from_slice(&body);
        check_outcome(Decoder::default().decode(&incoming(&subject, &payload)), &subject)?;
    }

    /// An id that parses is the id that was sent: 26 base32 characters hold 130 bits, and
    /// anything above `7ZZ...Z` must be refused, not silently cut to another id.
    #[test]
    fn ids_parse_to_themselves_or_are_refused(id in "[0-9A-HJKMNP-TV-Z]{26}") {
        match id.parse::<EventId>() {
            Ok(parsed) => prop_assert_eq!(parsed.to_string(), id),
            Err(e) => prop_assert!(id.as_bytes()[0] > b'7', "{} refused: {}", id, e),
        }
    }

    /// Any msgpack value tree, whole, cut short, or with one byte changed: decoded or refused
    /// with a reason, by the input decoder and by the stored-entry reader.
    #[test]
    fn arbitrary_msgpack_values_never_panic(
        subject in subject(),
        value in value(),
        cut in any::<prop::sample::Index>(),
        flip in any::<(prop::sample::Index, u8)>(),
    ) {
        let bytes = encode(&value);
        let decoder = Decoder::default();
        check_outcome(decoder.decode(&incoming(&subject, &bytes)), &subject)?;
        let _ = decode_stored_entry(&mut &bytes[..]);
        if !bytes.is_empty() {
            let truncated = &bytes[..cut.index(bytes.len())];
            check_outcome(decoder.decode(&incoming(&subject, truncated)), &subject)?;
            let _ = decode_stored_entry(&mut &truncated[..]);
            let mut changed = bytes.clone();
            changed[flip.0.index(bytes.len())] ^= flip.1 | 1;
            check_outcome(decoder.decode(&incoming(&subject, &changed)), &subject)?;
            let _ = decode_stored_entry(&mut &changed[..]);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: BIG_CASES, ..ProptestConfig::default() })]

    /// Maps with a `type` (envelopes) whose other fields hold anything: validated, never a
    /// panic, in msgpack and (where JSON can say it) in JSON.
    #[test]
    fn envelopes_with_arbitrary_fields_never_panic(subject in subject(), env in envelope()) {
        let decoder = Decoder::default();
        check_outcome(decoder.decode(&incoming(&subject, &encode(&env))), &subject)?;
        if let Ok(json) = serde_json::to_vec(&env) {
            if json.first() == Some(&b'{') {
                check_outcome(decoder.decode(&incoming(&subject, &json)), &subject)?;
            }
        }
    }

    /// Nesting of any depth, arrays or maps, msgpack or JSON, bare or in an envelope's `data`:
    /// refused as `too_deep` (or decoded when within the limit), never a stack overflow.
    #[test]
    fn deep_nesting_never_panics(depth in 0usize..5000, maps: bool, json: bool, in_envelope: bool) {
        let payload = if json {
            nested_json(depth, maps, in_envelope)
        } else if in_envelope {
            let mut p = vec![0x82, 0xa4];
            p.extend_from_slice(b"type");
            p.extend_from_slice(&[0xa4]);
            p.extend_from_slice(b"deep");
            p.extend_from_slice(&[0xa4]);
            p.extend_from_slice(b"data");
            p.extend_from_slice(&nested_msgpack(depth, maps));
            p
        } else {
            nested_msgpack(depth, maps)
        };
        let subject = "game.agent.npc1.deep";
        let result = Decoder::default().decode(&incoming(subject, &payload));
        let bare_json_array = json && !maps && !in_envelope;
        if bare_json_array {
            // not `{`: not the JSON path; wrapped as text, by policy
            let wrapped = result.as_ref().ok().and_then(|e| e.meta_str("encoding"));
            prop_assert_eq!(wrapped, Some("text"));
        } else if depth > 32 {
            let kind = result.as_ref().err().map(|e| e.kind.as_str());
            prop_assert_eq!(kind, Some("too_deep"), "{} deep", depth);
        }
        check_outcome(result, subject)?;
    }

    /// The same generated inputs under small random limits (each limit's edge is reachable).
    #[test]
    fn any_valid_limits_never_panic(limits in limits(), subject in subject(), value in value()) {
        prop_assert!(limits.validate().is_ok());
        let decoder = Decoder::new(limits, SubjectScheme::default());
        let bytes = encode(&value);
        check_outcome(decoder.decode(&incoming(&subject, &bytes)), &subject)?;
        if let Ok(json) = serde_json::to_vec(&value) {
            check_outcome(decoder.decode(&incoming(&subject, &json)), &subject)?;
        }
    }

    /// A valid msgpack envelope (`encode_entry`, what publishers and blocks use) decodes to
    /// exactly the entry sent, plus `meta.subject` and `meta.received_at`; the stored form
    /// reads back to the same entry.
    #[test]
    fn valid_msgpack_envelopes_round_trip(entry in valid_entry(false)) {
        let subject = "game.agent.npc1.anything";
        let bytes = encode_entry_vec(&entry);
        let decoded = Decoder::default().decode(&incoming(subject, &bytes));
        prop_assert!(decoded.is_ok(), "refused: {:?}", decoded.err());
        if let Ok(decoded) = decoded {
            prop_assert_eq!(&decoded, &as_received(&entry, subject));
        }
        let stored = decode_stored_entry(&mut &bytes[..]);
        prop_assert_eq!(stored.ok(), Some(entry));
    }

    /// A valid JSON envelope (the entry's own JSON form) decodes to the same entry.
    #[test]
    fn valid_json_envelopes_round_trip(entry in valid_entry(true)) {
        let subject = "game.story.graph.anything";
        let json = serde_json::to_vec(&entry).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let decoded = Decoder::default().decode(&incoming(subject, &json));
        prop_assert!(decoded.is_ok(), "refused: {:?}", decoded.err());
        if let Ok(decoded) = decoded {
            prop_assert_eq!(&decoded, &as_received(&entry, subject));
        }
    }
}

/// 100,000 levels, both encodings, bare and as an envelope's `data`: refused as too deep,
/// quickly, without recursion.
#[test]
fn hundred_thousand_levels_are_refused_as_too_deep() {
    let decoder = Decoder::default();
    for maps in [false, true] {
        let mut envelope = vec![0x82, 0xa4];
        envelope.extend_from_slice(b"type");
        envelope.push(0xa4);
        envelope.extend_from_slice(b"deep");
        envelope.push(0xa4);
        envelope.extend_from_slice(b"data");
        envelope.extend_from_slice(&nested_msgpack(DEEP, maps));
        let mut payloads = vec![
            nested_msgpack(DEEP, maps),
            envelope,
            nested_json(DEEP, maps, true),
        ];
        if maps {
            payloads.push(nested_json(DEEP, maps, false));
        }
        for payload in payloads {
            let err = decoder
                .decode(&incoming("game.agent.npc1.deep", &payload))
                .expect_err("refused");
            assert_eq!(err.kind.as_str(), "too_deep", "{err}");
            // the stored-entry reader has its own depth bound
            assert!(decode_stored_entry(&mut &payload[..]).is_err());
        }
    }
    // a bare JSON array does not start with `{`: it is the game's text, wrapped
    let entry = decoder
        .decode(&incoming(
            "game.agent.npc1.deep",
            &nested_json(DEEP, false, false),
        ))
        .expect("wrapped");
    assert_eq!(entry.meta_str("encoding"), Some("text"));
}

/// The same bad UTF-8 bytes are refused in a name field and kept (as binary) in `data`.
#[test]
fn invalid_utf8_policy_holds_for_generated_bytes() {
    let bad = raw_str(b"\xc3\x28 bad \xff");
    let env = |field: &str, v: Value| {
        Value::Map(vec![
            (Value::from("type"), Value::from("player.move")),
            (Value::from(field), v),
        ])
    };
    let decoder = Decoder::default();
    for field in ["source", "player", "session", "category"] {
        let err = decoder
            .decode(&incoming(
                "game.agent.x.y",
                &encode(&env(field, bad.clone())),
            ))
            .expect_err("a name must be UTF-8");
        assert_eq!(err.kind.as_str(), "invalid_envelope");
        assert!(err.detail.contains(field), "{err}");
    }
    let entry = decoder
        .decode(&incoming("game.agent.x.y", &encode(&env("data", bad))))
        .expect("kept");
    assert_eq!(
        entry.data,
        Value::Binary(b"\xc3\x28 bad \xff".to_vec()),
        "kept as the same bytes"
    );
    assert_eq!(entry.meta.get("invalid_utf8"), Some(&Value::Boolean(true)));
}

/// Non-finite metrics are dropped and named, the finite ones kept.
#[test]
fn non_finite_metrics_are_dropped_and_named() {
    let metrics: BTreeMap<&str, Value> = [
        ("nan", Value::F64(f64::NAN)),
        ("inf", Value::F64(f64::INFINITY)),
        ("ninf", Value::F32(f32::NEG_INFINITY)),
        ("ok", Value::F64(1.5)),
        ("big", Value::from(u64::MAX)),
    ]
    .into_iter()
    .collect();
    let env = Value::Map(vec![
        (Value::from("type"), Value::from("npc.tick")),
        (
            Value::from("metrics"),
            Value::Map(
                metrics
                    .into_iter()
                    .map(|(k, v)| (Value::from(k), v))
                    .collect(),
            ),
        ),
    ]);
    let entry = Decoder::default()
        .decode(&incoming("game.agent.x.y", &encode(&env)))
        .expect("kept");
    assert_eq!(entry.metrics.get("ok"), Some(&1.5));
    assert_eq!(entry.metrics.get("big"), Some(&(u64::MAX as f64)));
    let mut dropped: Vec<&str> = match entry.meta.get("dropped_metrics") {
        Some(Value::Array(names)) => names.iter().filter_map(Value::as_str).collect(),
        other => panic!("dropped_metrics is {other:?}"),
    };
    dropped.sort_unstable();
    assert_eq!(dropped, ["inf", "nan", "ninf"]);
}
