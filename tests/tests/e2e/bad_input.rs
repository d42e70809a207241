//! The bad-input battery against the real agent and a real nats-server: random bytes,
//! truncated msgpack, JSON of wrong types, a payload over the size limit (and one over the
//! server's own `max_payload`), nesting 100,000 deep, invalid UTF-8, NaN/inf metrics,
//! timestamps at year 0 and 9999, malformed ids, control characters in the subject, and the
//! same id twice, interleaved with valid events. Every bad message must end as the codec's
//! documented policy says (quarantined with a reason, or stored as the policy shapes it), the
//! valid traffic around it stored exactly once, the quarantine counters must agree, and the
//! agent must stay up, healthy and recording.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::ControlFlow;
use std::time::Duration;

use anyhow::{bail, ensure, Context as _};
use bytes::Bytes;
use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use rmpv::Value;
use serde_json::json;
use trace_core::{encode_entry_vec, Decoder, EventId, Incoming};
use trace_tests::{
    eventually, Agent, AgentOptions, Cli, EntryLine, GameSource, GameTraffic, JsPublisher,
    NatsServer,
};

use crate::util::{bounded, now_ms, wait_drained};

/// Valid envelopes published before each bad message.
const VALID_PER_BAD: usize = 3;
/// Random payloads in the battery.
const RANDOM_PAYLOADS: usize = 60;
/// Truncated msgpack envelopes in the battery.
const TRUNCATED: usize = 12;
/// Nesting depth of the deep payloads.
const DEEP: usize = 100_000;

/// What the agent must make of one bad message.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    /// A quarantine record of this kind whose reason contains this text.
    Quarantined {
        kind: &'static str,
        reason_has: &'static str,
    },
    /// Stored under its own id, shaped by a policy.
    Stored { id: EventId, policy: Policy },
    /// Stored wrapped (no id of its own), with this `meta.encoding`.
    Wrapped { encoding: &'static str },
    /// Acked as a retry of a message already stored (same id, same bytes): not stored again.
    Retry,
    /// A valid envelope of the traffic around the bad messages.
    Valid,
}

/// The policy that shapes a stored bad message, checked on the stored entry.
#[derive(Debug, Clone, PartialEq)]
enum Policy {
    /// Strings with bad UTF-8 in `data` kept as binary, `meta.invalid_utf8 = true`.
    InvalidUtf8InData,
    /// Non-finite metrics dropped, named in `meta.dropped_metrics`; the finite ones kept.
    DroppedMetrics {
        dropped: Vec<&'static str>,
        kept: Vec<&'static str>,
    },
    /// `ts` outside the plausible window: arrival time, `meta.original_ts` starting with
    /// this, `meta.clock_skew = true`.
    ClockSkew { original: &'static str },
    /// The first of two messages with one id: stored as sent.
    FirstWriteWins,
}

/// One message of the battery.
#[derive(Debug, Clone)]
struct Message {
    /// Unique per bad message, so its quarantine record or wrapped entry is found by subject.
    subject: String,
    payload: Bytes,
    msg_id: Option<String>,
    outcome: Outcome,
    /// Publish only once this id is stored (so the message arrives in a later batch).
    after: Option<EventId>,
}

/// A tiny seeded generator (xorshift64*): the battery is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn bad_subject(case: &str, n: usize) -> String {
    format!("game.agent.bad.{case}.n{n}")
}

fn mp(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    // writing into a Vec cannot fail
    let _ = rmpv::encode::write_value(&mut out, value);
    out
}

fn map(fields: Vec<(&str, Value)>) -> Value {
    Value::Map(
        fields
            .into_iter()
            .map(|(k, v)| (Value::from(k), v))
            .collect(),
    )
}

/// A msgpack `str` header and these bytes, UTF-8 or not.
fn raw_str(bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![0xd9, bytes.len() as u8];
    out.extend_from_slice(bytes);
    out
}

/// A msgpack map of already-encoded keys and values.
fn raw_map(fields: &[(&[u8], Vec<u8>)]) -> Vec<u8> {
    let mut out = vec![0x80 | fields.len() as u8];
    for (k, v) in fields {
        out.extend_from_slice(&raw_str(k));
        out.extend_from_slice(v);
    }
    out
}

/// A 96-bit msgpack timestamp (ext -1) of `ts`.
fn ts_ext(ts: DateTime<Utc>) -> Value {
    let mut b = ts.timestamp_subsec_nanos().to_be_bytes().to_vec();
    b.extend_from_slice(&ts.timestamp().to_be_bytes());
    Value::Ext(-1, b)
}

/// `depth` nested one-element arrays around a nil.
fn deep_msgpack(depth: usize) -> Vec<u8> {
    let mut out = vec![0x91; depth];
    out.push(0xc0);
    out
}

/// The whole battery: bad messages, each preceded by valid envelopes. Returns the messages
/// in publish order and the valid ones' ids.
fn battery(now: DateTime<Utc>) -> anyhow::Result<(Vec<Message>, Vec<String>)> {
    let mut traffic = GameTraffic::new(0xBAD_1A9E);
    let mut rng = Rng(0x5EED_BAD1);
    let mut bad: Vec<Message> = Vec::new();
    let quarantined = |subject: String, payload: Vec<u8>, kind, reason_has| Message {
        subject,
        payload: Bytes::from(payload),
        msg_id: None,
        outcome: Outcome::Quarantined { kind, reason_has },
        after: None,
    };

    // Random bytes: what the agent must do is what the codec says (unit- and property-tested);
    // here it must do exactly that, for each one.
    let decoder = Decoder::default();
    for n in 0..RANDOM_PAYLOADS {
        let len = 1 + rng.below(300);
        let mut payload = rng.bytes(len);
        // a third start like an envelope would (map markers, `{`), to reach those paths too
        match n % 6 {
            0 => payload[0] = 0x80 | (payload[0] & 0x0f),
            1 => payload[0] = b'{',
            _ => {}
        }
        let subject = bad_subject("random", n);
        let outcome = match decoder.decode(&Incoming {
            subject: &subject,
            payload: &payload,
            received_at: now,
            fallback_id: None,
        }) {
            Err(e) => Outcome::Quarantined {
                kind: e.kind.as_str(),
                reason_has: "",
            },
            Ok(entry) => match entry.meta_str("encoding") {
                Some("msgpack") => Outcome::Wrapped {
                    encoding: "msgpack",
                },
                Some("text") => Outcome::Wrapped { encoding: "text" },
                Some("bytes") => Outcome::Wrapped { encoding: "bytes" },
                Some("json") => Outcome::Wrapped { encoding: "json" },
                _ => bail!("random payload {n} decoded as an envelope: {entry:?}"),
            },
        };
        bad.push(Message {
            subject,
            payload: Bytes::from(payload),
            msg_id: None,
            outcome,
            after: None,
        });
    }

    // Truncated msgpack envelopes: cut anywhere after the map marker.
    for n in 0..TRUNCATED {
        let entry = traffic.entry(GameSource::Npc1, now - TimeDelta::seconds(5));
        let full = encode_entry_vec(&entry);
        let cut = 1 + rng.below(full.len() - 1);
        bad.push(quarantined(
            bad_subject("truncated", n),
            full[..cut].to_vec(),
            "malformed",
            "not one whole value",
        ));
    }

    // JSON envelopes with fields of the wrong type.
    let wrong_types = [
        (json!({"type": 5}), "field `type` must be a string"),
        (json!({"type": ["a"]}), "field `type` must be a string"),
        (json!({"type": "a.b", "ts": 1_700_000_000}), "field `ts`"),
        (json!({"type": "a.b", "ts": "yesterday"}), "field `ts`"),
        (json!({"type": "a.b", "metrics": "fast"}), "field `metrics`"),
        (
            json!({"type": "a.b", "metrics": {"ms": "12"}}),
            "field `metrics`",
        ),
        (
            json!({"type": "a.b", "player": {"id": 1}}),
            "field `player`",
        ),
        (json!({"type": "a.b", "session": 1.5}), "field `session`"),
        (json!({"type": "a.b", "severity": true}), "field `severity`"),
        (
            json!({"type": "a.b", "severity": "loud"}),
            "field `severity`",
        ),
        (json!({"type": "a.b", "meta": [1, 2]}), "field `meta`"),
        (
            json!({"type": "a.b", "source": null, "category": 7}),
            "field `category`",
        ),
        (json!({"type": ""}), "field `type`: must not be empty"),
    ];
    for (n, (body, reason_has)) in wrong_types.into_iter().enumerate() {
        bad.push(quarantined(
            bad_subject("wrongtype", n),
            body.to_string().into_bytes(),
            "invalid_envelope",
            reason_has,
        ));
    }

    // Malformed ids (and a malformed parent), in JSON and msgpack.
    let bad_ids = [
        json!("not-a-ulid"),
        json!(""),
        json!("01HZY3J6W9Q2V7X8C5B4N3M2K"),
        json!("01HZY3J6W9Q2V7X8C5B4N3M2K1X"),
        json!("8ZZZZZZZZZZZZZZZZZZZZZZZZZ"),
        json!(42),
        json!(["01HZY3J6W9Q2V7X8C5B4N3M2K1"]),
    ];
    for (n, id) in bad_ids.iter().enumerate() {
        let body = json!({"id": id, "type": "player.move"});
        bad.push(quarantined(
            bad_subject("badid", n),
            body.to_string().into_bytes(),
            "invalid_envelope",
            "field `id`",
        ));
    }
    bad.push(quarantined(
        bad_subject("badid", bad_ids.len()),
        mp(&map(vec![
            ("type", Value::from("player.move")),
            ("id", Value::from("01HZY3J6W9Q2V7X8C5B4N3M2KU")),
        ])),
        "invalid_envelope",
        "field `id`",
    ));
    bad.push(quarantined(
        bad_subject("badparent", 0),
        mp(&map(vec![
            ("type", Value::from("player.move")),
            ("parent", Value::Binary(vec![1, 2, 3])),
        ])),
        "invalid_envelope",
        "field `parent`",
    ));

    // Over the agent's limit (1 MiB) but under the server's max_payload (2 MiB in the
    // fixture): reaches the agent, quarantined with its size.
    let mut big = br#"{"type":"state.changed","data":""#.to_vec();
    big.extend(std::iter::repeat_n(b'x', 1024 * 1024 + 1024));
    big.extend_from_slice(br#""}"#);
    bad.push(quarantined(
        bad_subject("toolarge", 0),
        big,
        "too_large",
        "max_message_bytes",
    ));

    // Nesting 100,000 deep: msgpack bare and in `data`, JSON objects bare and in `data`.
    let mut in_data = mp(&map(vec![("type", Value::from("deep"))]));
    in_data[0] = 0x82;
    in_data.extend_from_slice(&raw_str(b"data"));
    in_data.extend_from_slice(&deep_msgpack(DEEP));
    let json_objects = format!("{}null{}", r#"{"k":"#.repeat(DEEP), "}".repeat(DEEP));
    let json_in_data = format!(
        r#"{{"type":"deep","data":{}null{}}}"#,
        "[".repeat(DEEP),
        "]".repeat(DEEP)
    );
    for (n, payload) in [
        deep_msgpack(DEEP),
        in_data,
        json_objects.into_bytes(),
        json_in_data.into_bytes(),
    ]
    .into_iter()
    .enumerate()
    {
        bad.push(quarantined(
            bad_subject("deep", n),
            payload,
            "too_deep",
            "deeper than the limit",
        ));
    }
    // A bare JSON array does not start with `{`: by policy it is the game's text, wrapped.
    bad.push(Message {
        subject: bad_subject("deep", 4),
        payload: Bytes::from(format!("{}{}", "[".repeat(DEEP), "]".repeat(DEEP))),
        msg_id: None,
        outcome: Outcome::Wrapped { encoding: "text" },
        after: None,
    });

    // Invalid UTF-8: in a name field quarantined, naming the field; in data kept as binary.
    let bad_utf8: &[u8] = b"p\xff\xfe1";
    for (n, field) in ["player", "source", "type", "session"]
        .into_iter()
        .enumerate()
    {
        let mut fields: Vec<(&[u8], Vec<u8>)> = vec![(field.as_bytes(), raw_str(bad_utf8))];
        if field != "type" {
            fields.push((b"type", raw_str(b"player.move")));
        }
        bad.push(quarantined(
            bad_subject("utf8name", n),
            raw_map(&fields),
            "invalid_envelope",
            "not valid UTF-8",
        ));
    }
    let id = traffic.id_at(now);
    bad.push(Message {
        subject: bad_subject("utf8data", 0),
        payload: Bytes::from(raw_map(&[
            (b"id", raw_str(id.to_string().as_bytes())),
            (b"type", raw_str(b"player.chat")),
            (b"data", raw_map(&[(b"text", raw_str(bad_utf8))])),
        ])),
        msg_id: Some(id.to_string()),
        outcome: Outcome::Stored {
            id,
            policy: Policy::InvalidUtf8InData,
        },
        after: None,
    });

    // NaN and infinite metrics: dropped and named, the finite ones kept.
    let id = traffic.id_at(now);
    let metrics = Value::Map(vec![
        (Value::from("latency_ms"), Value::F64(12.5)),
        (Value::from("nan_ms"), Value::F64(f64::NAN)),
        (Value::from("inf_ms"), Value::F64(f64::INFINITY)),
        (Value::from("ninf_ms"), Value::F32(f32::NEG_INFINITY)),
    ]);
    bad.push(Message {
        subject: bad_subject("nanmetrics", 0),
        payload: Bytes::from(mp(&map(vec![
            ("id", Value::from(id.to_string())),
            ("type", Value::from("npc.tick")),
            ("metrics", metrics),
        ]))),
        msg_id: Some(id.to_string()),
        outcome: Outcome::Stored {
            id,
            policy: Policy::DroppedMetrics {
                dropped: vec!["inf_ms", "nan_ms", "ninf_ms"],
                kept: vec!["latency_ms"],
            },
        },
        after: None,
    });

    // Timestamps at year 0 and 9999, as msgpack timestamps and RFC 3339 strings.
    let year0 = Utc
        .with_ymd_and_hms(0, 1, 1, 0, 0, 0)
        .single()
        .context("year 0")?;
    let year9999 = Utc
        .with_ymd_and_hms(9999, 12, 31, 23, 59, 59)
        .single()
        .context("year 9999")?;
    let skewed = [
        (ts_ext(year0), "0000-01-01T00:00:00"),
        (ts_ext(year9999), "9999-12-31T23:59:59"),
        (Value::from("0000-01-01T00:00:00Z"), "0000-01-01T00:00:00"),
        (Value::from("9999-12-31T23:59:59Z"), "9999-12-31T23:59:59"),
    ];
    for (n, (ts, original)) in skewed.into_iter().enumerate() {
        let id = traffic.id_at(now);
        bad.push(Message {
            subject: bad_subject("skew", n),
            payload: Bytes::from(mp(&map(vec![
                ("id", Value::from(id.to_string())),
                ("type", Value::from("system.checkpoint")),
                ("ts", ts),
            ]))),
            msg_id: Some(id.to_string()),
            outcome: Outcome::Stored {
                id,
                policy: Policy::ClockSkew { original },
            },
            after: None,
        });
    }

    // Control characters in the subject (nats-server takes them): wrapped, with names the
    // store can read back.
    bad.push(Message {
        subject: "game.agent.npc\u{1}bad.tick\u{7f}".to_owned(),
        payload: Bytes::from_static(b"\x08\x96\x01"),
        msg_id: None,
        outcome: Outcome::Wrapped { encoding: "bytes" },
        after: None,
    });

    // The same id twice. Without Nats-Msg-Id (JetStream's own duplicate window is tested
    // below), so both reach the agent: first write wins; the same bytes again are a retry.
    for (n, spaced) in [false, true].into_iter().enumerate() {
        let first = traffic.entry(GameSource::StateWorld, now - TimeDelta::seconds(2));
        let mut second = first.clone();
        second.data = Value::from(format!("different content {n}"));
        let subject = bad_subject("sameid", n);
        let first_msg = Message {
            subject: subject.clone(),
            payload: Bytes::from(encode_entry_vec(&first)),
            msg_id: None,
            outcome: Outcome::Stored {
                id: first.id,
                policy: Policy::FirstWriteWins,
            },
            after: None,
        };
        // spaced: in later batches than the first, so the recorder's memory of recent ids
        // decides; else most likely in the same batch
        let after = spaced.then_some(first.id);
        let retry = Message {
            outcome: Outcome::Retry,
            after,
            ..first_msg.clone()
        };
        let differing = Message {
            after,
            ..quarantined(
                format!("{subject}.second"),
                encode_entry_vec(&second),
                "duplicate_id",
                "duplicate id",
            )
        };
        bad.push(first_msg);
        bad.push(retry);
        bad.push(differing);
    }

    // Interleave: valid envelopes (msgpack and JSON, with Nats-Msg-Id) before each bad one.
    let mut messages = Vec::new();
    let mut valid_ids = Vec::new();
    for (i, b) in bad.into_iter().enumerate() {
        for k in 0..VALID_PER_BAD {
            let source = GameSource::ALL[(i + k) % 3];
            let ts = now - TimeDelta::milliseconds((i * VALID_PER_BAD + k) as i64 + 10);
            let valid = if k == 2 {
                traffic.json_envelope(source, ts)
            } else {
                traffic.msgpack_envelope(source, ts)
            };
            valid_ids.push(
                valid
                    .msg_id
                    .clone()
                    .context("a valid envelope without id")?,
            );
            messages.push(Message {
                subject: valid.subject,
                payload: valid.payload,
                msg_id: valid.msg_id,
                outcome: Outcome::Valid,
                after: None,
            });
        }
        messages.push(b);
    }
    // The expectations agree with the codec, so a failure points at the agent, not the model.
    for m in &messages {
        let local = decoder.decode(&Incoming {
            subject: &m.subject,
            payload: &m.payload,
            received_at: now,
            fallback_id: None,
        });
        match (&m.outcome, local) {
            (Outcome::Quarantined { kind, reason_has }, Err(e))
                if e.kind.as_str() == *kind && e.to_string().contains(reason_has) => {}
            (Outcome::Quarantined { kind, .. }, Ok(_)) if *kind == "duplicate_id" => {}
            (Outcome::Quarantined { .. }, _) | (_, Err(_)) => {
                bail!(
                    "the battery's expectation for {} disagrees with the codec",
                    m.subject
                )
            }
            (_, Ok(_)) => {}
        }
    }
    Ok((messages, valid_ids))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_quarantined_or_handled_by_policy_and_valid_traffic_survives(
) -> anyhow::Result<()> {
    bounded(Duration::from_secs(90), async {
        let nats = NatsServer::start().await?;
        let mut agent = Agent::start(&nats.client_url(), AgentOptions::default()).await?;
        let cli = Cli::new(&nats.client_url())?;
        let js = nats.jetstream().await?;
        let started = now_ms();
        let (messages, valid_ids) = battery(started)?;
        let valid: HashSet<&str> = valid_ids.iter().map(String::as_str).collect();

        // Publish in order; a message with `after` waits until that id is stored.
        let mut publisher = JsPublisher::new(js.clone());
        for message in &messages {
            if let Some(id) = message.after {
                publisher.flush().await?;
                wait_stored(&cli, id).await?;
            }
            publisher
                .publish(
                    &message.subject,
                    message.payload.clone(),
                    message.msg_id.as_deref(),
                )
                .await?;
        }
        publisher.flush().await?;
        ensure!(
            publisher.duplicates() == 0,
            "JetStream reported {} duplicates",
            publisher.duplicates()
        );

        // Over the server's max_payload: the client refuses it, nothing reaches the agent.
        let huge = Bytes::from(vec![b'x'; 2 * 1024 * 1024 + 1]);
        let refused = js.publish("game.agent.bad.huge", huge).await;
        let refused = match refused {
            Err(e) => Some(e.to_string()),
            Ok(ack) => ack.await.err().map(|e| e.to_string()),
        };
        ensure!(
            refused.is_some(),
            "a payload over nats-server's max_payload was accepted"
        );

        // JetStream's own duplicate window: the same Nats-Msg-Id twice is dropped by the
        // stream (the agent never sees the second).
        let mut traffic = GameTraffic::new(0xD0_0B1E);
        let windowed = traffic.msgpack_envelope(GameSource::Npc1, started);
        let mut dedup = JsPublisher::new(js.clone());
        dedup.send(&windowed).await?;
        let mut changed = windowed.clone();
        changed.payload = Bytes::from(b"{\"type\":\"x\"}".to_vec());
        dedup.send(&changed).await?;
        dedup.flush().await?;
        ensure!(
            dedup.duplicates() == 1,
            "JetStream did not drop the second Nats-Msg-Id"
        );

        // A final valid event after the battery: the agent still records.
        let last = traffic.msgpack_envelope(GameSource::StoryGraph, now_ms());
        let mut tail = JsPublisher::new(js.clone());
        tail.send(&last).await?;
        tail.flush().await?;
        let mut all_valid = valid_ids.clone();
        all_valid.extend(windowed.msg_id.clone());
        all_valid.extend(last.msg_id.clone());

        let expected = Expectations::of(&messages, &all_valid);
        let info = eventually(
            "the agent to record the whole battery",
            Duration::from_secs(30),
            || async {
                let info = agent.store_info().await?;
                Ok(
                    if info.events >= expected.events()
                        && info.quarantined >= expected.quarantined()
                    {
                        ControlFlow::Break(info)
                    } else {
                        ControlFlow::Continue(format!(
                            "{info:?}; expected {} events, {} quarantined",
                            expected.events(),
                            expected.quarantined()
                        ))
                    },
                )
            },
        )
        .await?;
        wait_drained(&js, Duration::from_secs(20)).await?;
        let info_now = agent.store_info().await?;
        ensure!(
            info_now.events == expected.events() && info_now.quarantined == expected.quarantined(),
            "store_info {info_now:?} (first reached {info:?}); expected {} events and {} \
             quarantined",
            expected.events(),
            expected.quarantined()
        );

        // Alive, healthy, no panic.
        ensure!(agent.is_running(), "the agent exited{}", agent.log_tail(40));
        let live = agent.http_get("/health/live").await?;
        ensure!(live.status == 200, "/health/live: {}", live.describe());
        let ready = agent.http_get("/health/ready").await?;
        ensure!(ready.status == 200, "/health/ready: {}", ready.describe());
        let health = agent.http_get("/health").await?.json()?;
        ensure!(
            health["status"] != "unhealthy",
            "health after the battery: {health}"
        );
        let logs = agent.log_tail(100_000);
        ensure!(!logs.contains("panicked"), "the agent panicked:{logs}");

        let lines = cli.query(&["--limit", "100000"]).await?;
        check_stored(&lines, &expected, &valid).await?;
        check_policies(&lines, &messages)?;
        let by_kind = check_quarantine(&cli, &expected).await?;
        check_counters(&agent, &by_kind, &expected).await?;
        eprintln!("bad_input: quarantined by kind {by_kind:?}");
        // the figures of the battery: the battery's messages, plus the one over max_payload,
        // the Nats-Msg-Id pair and the final event
        let bad = messages.len() - valid_ids.len() + 2;
        eprintln!(
            "bad_input: {} publishes: {} valid, {bad} bad ({} quarantined, {} stored by policy, \
             {} wrapped, {} retries acked, 2 stopped by NATS); {} entries stored, 0 valid lost",
            messages.len() + 4,
            all_valid.len(),
            info_now.quarantined,
            expected.ids.len() - all_valid.len(),
            expected.wrapped.values().sum::<usize>(),
            messages
                .iter()
                .filter(|m| m.outcome == Outcome::Retry)
                .count(),
            info_now.events,
        );
        Ok(())
    })
    .await
}

/// Waits until the entry `id` is stored.
async fn wait_stored(cli: &Cli, id: EventId) -> anyhow::Result<()> {
    let id = id.to_string();
    eventually(
        &format!("{id} to be stored"),
        Duration::from_secs(20),
        || async {
            let output = cli.run(&["get", &id, "--json"]).await?;
            Ok(if output.status.success() {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(output.describe())
            })
        },
    )
    .await
}

/// What the battery must leave behind.
struct Expectations {
    /// Ids stored under their own id: the valid events and the policy-shaped bad ones.
    ids: HashSet<String>,
    /// Wrapped entries per subject.
    wrapped: BTreeMap<String, usize>,
    /// Quarantine records by subject: (kind, text the reason must contain).
    quarantined: BTreeMap<String, (&'static str, &'static str)>,
}

impl Expectations {
    fn of(messages: &[Message], valid: &[String]) -> Expectations {
        let mut ids: HashSet<String> = valid.iter().cloned().collect();
        let mut wrapped = BTreeMap::new();
        let mut quarantined = BTreeMap::new();
        for m in messages {
            match &m.outcome {
                Outcome::Stored { id, .. } => {
                    ids.insert(id.to_string());
                }
                Outcome::Wrapped { .. } => {
                    *wrapped.entry(m.subject.clone()).or_default() += 1;
                }
                Outcome::Quarantined { kind, reason_has } => {
                    quarantined.insert(m.subject.clone(), (*kind, *reason_has));
                }
                Outcome::Retry | Outcome::Valid => {}
            }
        }
        Expectations {
            ids,
            wrapped,
            quarantined,
        }
    }

    fn events(&self) -> u64 {
        (self.ids.len() + self.wrapped.values().sum::<usize>()) as u64
    }

    fn quarantined(&self) -> u64 {
        self.quarantined.len() as u64
    }
}

/// Every expected id exactly once, every wrapped subject as often as sent, nothing else.
async fn check_stored(
    lines: &[EntryLine],
    expected: &Expectations,
    valid: &HashSet<&str>,
) -> anyhow::Result<()> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut wrapped: BTreeMap<String, usize> = BTreeMap::new();
    for line in lines {
        *seen.entry(line.id.as_str()).or_default() += 1;
        if line.is_wrapped() {
            let subject = line.meta.get("subject").and_then(|v| v.as_str());
            *wrapped
                .entry(subject.unwrap_or("<none>").to_owned())
                .or_default() += 1;
        }
    }
    let doubled: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    ensure!(doubled.is_empty(), "ids stored more than once: {doubled:?}");
    let missing_valid: Vec<_> = valid.iter().filter(|id| !seen.contains_key(**id)).collect();
    ensure!(
        missing_valid.is_empty(),
        "{} valid events lost, e.g. {:?}",
        missing_valid.len(),
        &missing_valid[..missing_valid.len().min(5)]
    );
    let missing: Vec<_> = expected
        .ids
        .iter()
        .filter(|id| !seen.contains_key(id.as_str()))
        .collect();
    ensure!(missing.is_empty(), "entries missing: {missing:?}");
    let unexpected: Vec<&EntryLine> = lines
        .iter()
        .filter(|l| !l.is_wrapped() && !expected.ids.contains(&l.id))
        .collect();
    ensure!(
        unexpected.is_empty(),
        "entries nobody expected: {:?}",
        unexpected.iter().map(|l| &l.raw).collect::<Vec<_>>()
    );
    ensure!(
        wrapped == expected.wrapped,
        "wrapped entries by subject differ:\n got  {wrapped:?}\n want {:?}",
        expected.wrapped
    );
    Ok(())
}

/// The stored bad messages carry what their policy says.
fn check_policies(lines: &[EntryLine], messages: &[Message]) -> anyhow::Result<()> {
    for m in messages {
        match &m.outcome {
            Outcome::Stored { id, policy } => {
                let id = id.to_string();
                let line = lines
                    .iter()
                    .find(|l| l.id == id)
                    .with_context(|| format!("{id} ({}) is not stored", m.subject))?;
                check_policy(line, policy, m)
                    .with_context(|| format!("{} ({policy:?}): {}", m.subject, line.raw))?;
            }
            Outcome::Wrapped { encoding } => {
                let line = lines
                    .iter()
                    .find(|l| l.meta.get("subject").and_then(|v| v.as_str()) == Some(&m.subject))
                    .with_context(|| format!("no wrapped entry for {:?}", m.subject))?;
                ensure!(
                    line.meta.get("encoding").and_then(|v| v.as_str()) == Some(encoding),
                    "{:?} wrapped with the wrong encoding: {}",
                    m.subject,
                    line.raw
                );
                ensure!(
                    !line.source.is_empty()
                        && !line.event_type.is_empty()
                        && !line.source.chars().any(char::is_control)
                        && !line.event_type.chars().any(char::is_control),
                    "wrapped entry with a name the store cannot hold: {}",
                    line.raw
                );
            }
            _ => {}
        }
    }
    Ok(())
}

fn check_policy(line: &EntryLine, policy: &Policy, sent: &Message) -> anyhow::Result<()> {
    let received_at = line
        .meta
        .get("received_at")
        .and_then(|v| v.as_str())
        .context("no meta.received_at")?;
    let received_at: DateTime<Utc> = received_at.parse().context("received_at")?;
    match policy {
        Policy::InvalidUtf8InData => {
            ensure!(line.meta.get("invalid_utf8") == Some(&json!(true)));
            // binary in JSON output: the same bytes as numbers
            ensure!(line.data["text"] == json!([112, 255, 254, 49]));
        }
        Policy::DroppedMetrics { dropped, kept } => {
            let mut names: Vec<&str> = line.meta["dropped_metrics"]
                .as_array()
                .context("dropped_metrics is not a list")?
                .iter()
                .filter_map(|v| v.as_str())
                .collect();
            names.sort_unstable();
            ensure!(names == *dropped, "dropped_metrics {names:?}");
            let metric_names: Vec<&str> = line.metrics.keys().map(String::as_str).collect();
            ensure!(metric_names == *kept, "metrics {metric_names:?}");
        }
        Policy::ClockSkew { original } => {
            ensure!(line.ts == received_at, "ts is not the arrival time");
            ensure!(line.meta.get("clock_skew") == Some(&json!(true)));
            let got = line.meta["original_ts"].as_str().unwrap_or_default();
            ensure!(got.starts_with(original), "original_ts {got:?}");
        }
        Policy::FirstWriteWins => {
            let sent = trace_core::decode_stored_entry(&mut &sent.payload[..])?;
            ensure!(
                line.data == serde_json::to_value(&sent)?["data"],
                "the stored entry is not the first one sent"
            );
        }
    }
    Ok(())
}

/// `quarantine --json` holds one record per quarantined message, with its kind and a reason
/// that says what is wrong. Returns the records per kind.
async fn check_quarantine(
    cli: &Cli,
    expected: &Expectations,
) -> anyhow::Result<BTreeMap<String, u64>> {
    let records = cli
        .json_lines(&["quarantine", "--json", "--limit", "1000"])
        .await?;
    let mut by_subject: BTreeMap<String, (String, String)> = BTreeMap::new();
    for r in &records {
        let subject = r["subject"].as_str().context("no subject")?.to_owned();
        let kind = r["kind"].as_str().context("no kind")?.to_owned();
        let reason = r["reason"].as_str().context("no reason")?.to_owned();
        ensure!(
            reason.len() > kind.len() + 2,
            "record without a reason: {r}"
        );
        ensure!(
            by_subject.insert(subject.clone(), (kind, reason)).is_none(),
            "two quarantine records for {subject}"
        );
    }
    let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
    for (subject, (kind, reason_has)) in &expected.quarantined {
        let (got_kind, reason) = by_subject
            .get(subject)
            .with_context(|| format!("{subject} ({kind}) is not in quarantine"))?;
        ensure!(
            got_kind == kind && reason.contains(reason_has),
            "{subject}: quarantined as {got_kind} ({reason}), expected {kind} saying {reason_has:?}"
        );
        *by_kind.entry(got_kind.clone()).or_default() += 1;
    }
    ensure!(
        by_subject.len() == expected.quarantined.len(),
        "{} quarantine records, {} expected: extra {:?}",
        by_subject.len(),
        expected.quarantined.len(),
        by_subject
            .keys()
            .filter(|s| !expected.quarantined.contains_key(*s))
            .collect::<Vec<_>>()
    );
    Ok(by_kind)
}

/// `trace_agent_events_quarantined_total{kind}` and the recorder's counters agree with the
/// quarantine list; the retries were counted as duplicates, not stored.
async fn check_counters(
    agent: &Agent,
    by_kind: &BTreeMap<String, u64>,
    expected: &Expectations,
) -> anyhow::Result<()> {
    eventually(
        "/metrics to count the quarantine by kind",
        Duration::from_secs(10),
        || async {
            let body = agent.http_get("/metrics").await?.body;
            let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))?;
            let mut got: BTreeMap<String, u64> = BTreeMap::new();
            for s in scrape
                .samples
                .iter()
                .filter(|s| s.metric == "trace_agent_events_quarantined_total")
            {
                if let prometheus_parse::Value::Counter(v) = s.value {
                    if v > 0.0 {
                        let kind = s.labels.get("kind").unwrap_or("").to_owned();
                        got.insert(kind, v as u64);
                    }
                }
            }
            Ok(if got == *by_kind {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(format!("metrics {got:?}, records {by_kind:?}"))
            })
        },
    )
    .await?;
    let info = agent
        .request(&agent.own_verb("store_info"), &json!({}))
        .await
        .map_err(|e| anyhow::anyhow!("store_info: {e}"))?;
    let recorder = &info["recorder"];
    ensure!(
        recorder["quarantined"].as_u64() == Some(expected.quarantined()),
        "recorder counters {recorder}"
    );
    ensure!(
        recorder["duplicates_skipped"].as_u64() >= Some(2),
        "the same-id retries were not counted as duplicates: {recorder}"
    );
    Ok(())
}
