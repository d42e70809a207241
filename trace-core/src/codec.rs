//! The wire codec: decode any payload seen on an input subject into a `TraceEntry` (validated
//! envelopes, wrapped game traffic) and encode entries back to the msgpack envelope.
//!
//! Decoding order, which is also the documented policy:
//! 1. a payload over `max_message_bytes` is refused (`too_large`);
//! 2. a payload whose first non-blank byte is `{` is JSON; if it does not parse it is refused
//!    (`malformed`), since it announced JSON;
//! 3. otherwise the bytes are scanned as one msgpack value without allocating (lengths checked
//!    against the bytes left, depth, key counts and string sizes against the limits);
//!    a limit broken is refused; a payload that is not one whole msgpack value is refused if it
//!    starts with a map marker (a truncated envelope), else it is the game's opaque bytes;
//! 4. a map with a `type` key is an envelope and must validate (`invalid_envelope`);
//!    anything else is the game's own traffic, wrapped with `type`/`source` from the subject.
//!
//! Policies for values that are well-formed but wrong:
//! - clock skew: an envelope `ts` before [`MIN_TS_YEAR`] or later than its arrival plus
//!   `Limits::max_future_skew` is not refused; the entry takes the arrival time and keeps the
//!   sent one in `meta.original_ts` (RFC 3339) with `meta.clock_skew = true`. A msgpack
//!   timestamp beyond what can be represented (±262,000 years) is `invalid_envelope`.
//! - invalid UTF-8: in a name field, `id`, `ts`, `severity` or a `meta`/`metrics` key it is
//!   `invalid_envelope`; a msgpack string that is not UTF-8 anywhere in `data`, in `meta`
//!   values or in wrapped traffic is kept, same bytes, as a binary value, and the entry gets
//!   `meta.invalid_utf8 = true`.
//! - non-finite metrics are dropped and named in `meta.dropped_metrics`.
//! - ids: a ULID string, refused (`invalid_envelope`) if it is not 26 Crockford base32
//!   characters or is above `7ZZZZZZZZZZZZZZZZZZZZZZZZZ` (it would alias another id).
//! - names taken from the subject (wrapped traffic, envelopes without `source`): control
//!   characters, which nats-server lets through, become U+FFFD and empty tokens are skipped,
//!   so every accepted entry reads back from the store (`SubjectScheme::classify`).
//! - the same id twice is not the codec's to judge: the recorder keeps the first write and
//!   quarantines a later, different message with that id as `duplicate_id`.
//!
//! Whatever the input, decoding never panics and never recurses without bound (property tests
//! in `tests/decode_props.rs`, a cargo-fuzz target in `fuzz/`).

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use rmpv::Value;

use crate::entry::{Category, EventId, Severity, TraceEntry};
use crate::error::{DecodeError, DecodeErrorKind, FieldError};
use crate::limits::{Limits, MAX_DEPTH_LIMIT};
use crate::subject::{SubjectInfo, SubjectScheme};

/// The msgpack extension type of timestamps.
const TIMESTAMP_EXT: i8 = -1;

/// Envelope times before the start of this year are clock skew (see the module docs).
pub const MIN_TS_YEAR: i32 = 2000;

/// A message as it arrived on the bus.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    /// The subject it was published on.
    pub subject: &'a str,
    /// The raw payload.
    pub payload: &'a [u8],
    /// When the agent received it.
    pub received_at: DateTime<Utc>,
    /// The id to give it if it carries none (derive it from the stream position so a
    /// redelivery gets the same id); `None` makes a fresh one.
    pub fallback_id: Option<EventId>,
}

/// How a payload was understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadEncoding {
    /// A msgpack value.
    Msgpack,
    /// A JSON value.
    Json,
    /// UTF-8 text that is neither.
    Text,
    /// Opaque bytes (protobuf or anything else).
    Bytes,
}

impl PayloadEncoding {
    /// The name recorded in `meta.encoding` of wrapped payloads.
    pub fn as_str(self) -> &'static str {
        match self {
            PayloadEncoding::Msgpack => "msgpack",
            PayloadEncoding::Json => "json",
            PayloadEncoding::Text => "text",
            PayloadEncoding::Bytes => "bytes",
        }
    }
}

/// Decodes incoming payloads with the configured limits and subject scheme.
#[derive(Debug, Clone, Default)]
pub struct Decoder {
    limits: Limits,
    scheme: SubjectScheme,
    privacy: Option<crate::privacy::Privacy>,
}

impl Decoder {
    /// A decoder with these limits and inputs.
    pub fn new(limits: Limits, scheme: SubjectScheme) -> Self {
        Decoder {
            limits,
            scheme,
            privacy: None,
        }
    }

    /// Applies `privacy` (redactions, pseudonyms) to every decoded entry, so nothing that reads
    /// through this decoder (the recorder, the analytics) sees the original fields.
    pub fn with_privacy(mut self, privacy: crate::privacy::Privacy) -> Self {
        self.privacy = privacy.is_active().then_some(privacy);
        self
    }

    /// The privacy policy in force, if it changes anything.
    pub fn privacy(&self) -> Option<&crate::privacy::Privacy> {
        self.privacy.as_ref()
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The subject scheme in force.
    pub fn scheme(&self) -> &SubjectScheme {
        &self.scheme
    }

    /// Decodes one message into an entry, or says why it must be quarantined.
    pub fn decode(&self, msg: &Incoming<'_>) -> Result<TraceEntry, DecodeError> {
        let mut entry = self.decode_plain(msg)?;
        if let Some(privacy) = &self.privacy {
            privacy.apply(&mut entry);
        }
        Ok(entry)
    }

    fn decode_plain(&self, msg: &Incoming<'_>) -> Result<TraceEntry, DecodeError> {
        let payload = msg.payload;
        if payload.len() > self.limits.max_message_bytes {
            return Err(DecodeError::new(
                DecodeErrorKind::TooLarge,
                format!(
                    "payload is {} bytes, the limit (max_message_bytes) is {}",
                    payload.len(),
                    self.limits.max_message_bytes
                ),
            ));
        }
        let (value, encoding) = self.parse_payload(payload)?;
        let info = self.scheme.classify(msg.subject);
        match value {
            Value::Map(fields) if has_type_key(&fields) => {
                let mut entry = envelope_to_entry(fields, &self.limits, Some((&info, msg)))?;
                entry.meta.insert("subject".into(), msg.subject.into());
                entry
                    .meta
                    .insert("received_at".into(), Value::from(rfc3339(msg.received_at)));
                Ok(entry)
            }
            mut other => {
                let bad_utf8 = binary_for_bad_utf8(&mut other);
                let mut entry = wrap(other, encoding, &info, msg);
                if bad_utf8 {
                    entry
                        .meta
                        .insert("invalid_utf8".into(), Value::Boolean(true));
                }
                Ok(entry)
            }
        }
    }

    fn parse_payload(&self, payload: &[u8]) -> Result<(Value, PayloadEncoding), DecodeError> {
        let first = payload.iter().find(|b| !b.is_ascii_whitespace()).copied();
        if first == Some(b'{') {
            let json: serde_json::Value = serde_json::from_slice(payload).map_err(|e| {
                if e.to_string().contains("recursion limit") {
                    DecodeError::new(
                        DecodeErrorKind::TooDeep,
                        format!("JSON nested deeper than the limit ({e})"),
                    )
                } else {
                    DecodeError::new(
                        DecodeErrorKind::Malformed,
                        format!("payload starts with '{{' but is not valid JSON: {e}"),
                    )
                }
            })?;
            let value = json_to_value(json);
            check_value_limits(&value, &self.limits, 1)?;
            return Ok((value, PayloadEncoding::Json));
        }
        match scan_msgpack(payload, &self.limits) {
            Ok(()) => {
                let value = rmpv::decode::read_value(&mut &payload[..]).map_err(|e| {
                    DecodeError::new(DecodeErrorKind::Malformed, format!("msgpack: {e}"))
                })?;
                let scalar = !matches!(value, Value::Map(_) | Value::Array(_));
                if scalar && is_text(payload) {
                    Ok((Value::from(text_of(payload)), PayloadEncoding::Text))
                } else {
                    Ok((value, PayloadEncoding::Msgpack))
                }
            }
            Err(ScanError::Limit(e)) => Err(e),
            Err(ScanError::Structure(why)) => {
                if starts_with_map_marker(payload) {
                    Err(DecodeError::new(
                        DecodeErrorKind::Malformed,
                        format!(
                            "payload starts with a msgpack map but is not one whole value: {why}"
                        ),
                    ))
                } else if is_text(payload) {
                    Ok((Value::from(text_of(payload)), PayloadEncoding::Text))
                } else {
                    Ok((Value::Binary(payload.to_vec()), PayloadEncoding::Bytes))
                }
            }
        }
    }
}

fn has_type_key(fields: &[(Value, Value)]) -> bool {
    fields.iter().any(|(k, _)| k.as_str() == Some("type"))
}

fn starts_with_map_marker(payload: &[u8]) -> bool {
    matches!(payload.first(), Some(0x80..=0x8f | 0xde | 0xdf))
}

fn is_text(payload: &[u8]) -> bool {
    match std::str::from_utf8(payload) {
        Ok(s) => !s.is_empty() && s.chars().all(|c| !c.is_control() || c.is_whitespace()),
        Err(_) => false,
    }
}

fn text_of(payload: &[u8]) -> String {
    String::from_utf8_lossy(payload).into_owned()
}

fn wrap(
    value: Value,
    encoding: PayloadEncoding,
    info: &SubjectInfo,
    msg: &Incoming<'_>,
) -> TraceEntry {
    let mut meta = BTreeMap::new();
    meta.insert("subject".to_owned(), Value::from(msg.subject));
    meta.insert(
        "received_at".to_owned(),
        Value::from(rfc3339(msg.received_at)),
    );
    meta.insert("wrapped".to_owned(), Value::Boolean(true));
    meta.insert("encoding".to_owned(), Value::from(encoding.as_str()));
    TraceEntry {
        id: msg
            .fallback_id
            .unwrap_or_else(|| EventId::new_at(msg.received_at)),
        ts: msg.received_at,
        category: Category::from_type(&info.event_type)
            .unwrap_or_else(|| info.kind.default_category()),
        event_type: info.event_type.clone(),
        source: info.source.clone(),
        severity: Severity::Info,
        session: None,
        player: None,
        parent: None,
        metrics: BTreeMap::new(),
        data: value,
        meta,
    }
}

/// Serialises a payload value (`data`, `meta` values). Binary formats get it exactly; in
/// human-readable ones (JSON) map keys that are not strings (msgpack allows any value as a
/// key: integers, binary, nil, arrays) are written as strings, since JSON would refuse the
/// whole entry: integers, floats, booleans and nil as their JSON text, binary and non-UTF-8
/// strings as `0x` and hex, arrays and maps as their JSON text.
pub(crate) fn serialize_value<S: serde::Serializer>(v: &Value, s: S) -> Result<S::Ok, S::Error> {
    use serde::Serialize as _;
    if s.is_human_readable() {
        JsonSafe(v).serialize(s)
    } else {
        v.serialize(s)
    }
}

/// [`serialize_value`] for every value of a `meta` map.
pub(crate) fn serialize_meta<S: serde::Serializer>(
    m: &BTreeMap<String, Value>,
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap as _;
    use serde::Serialize as _;
    if !s.is_human_readable() {
        return m.serialize(s);
    }
    let mut map = s.serialize_map(Some(m.len()))?;
    for (k, v) in m {
        map.serialize_entry(k, &JsonSafe(v))?;
    }
    map.end()
}

struct JsonSafe<'a>(&'a Value);

impl serde::Serialize for JsonSafe<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap as _, SerializeSeq as _};
        match self.0 {
            Value::Map(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    match k {
                        Value::String(ks) if ks.is_str() => map.serialize_key(k)?,
                        other => map.serialize_key(&key_text(other))?,
                    }
                    map.serialize_value(&JsonSafe(v))?;
                }
                map.end()
            }
            Value::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&JsonSafe(item))?;
                }
                seq.end()
            }
            other => other.serialize(s),
        }
    }
}

/// A map key that is not a string, as a string.
fn key_text(k: &Value) -> String {
    let hex = |b: &[u8]| {
        let mut out = String::with_capacity(2 + 2 * b.len());
        out.push_str("0x");
        for byte in b {
            out.push_str(&format!("{byte:02x}"));
        }
        out
    };
    match k {
        Value::String(s) => s.as_str().map_or_else(|| hex(s.as_bytes()), str::to_owned),
        Value::Binary(b) => hex(b),
        Value::Nil => "null".to_owned(),
        Value::Boolean(b) => b.to_string(),
        Value::Integer(i) => i.to_string(),
        Value::F32(f) => f.to_string(),
        Value::F64(f) => f.to_string(),
        other => serde_json::to_string(&JsonSafe(other)).unwrap_or_else(|_| "?".to_owned()),
    }
}

/// RFC 3339 with nanoseconds when there are any, `Z` for UTC.
pub fn rfc3339(ts: DateTime<Utc>) -> String {
    ts.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// Converts an envelope map into an entry. `ctx` carries the subject defaults for wire
/// messages; stored entries (which always carry every field) pass `None`.
fn envelope_to_entry(
    fields: Vec<(Value, Value)>,
    limits: &Limits,
    ctx: Option<(&SubjectInfo, &Incoming<'_>)>,
) -> Result<TraceEntry, DecodeError> {
    let mut id = None;
    let mut ts = None;
    let mut event_type = None;
    let mut category = None;
    let mut source = None;
    let mut severity = None;
    let mut session = None;
    let mut player = None;
    let mut parent = None;
    let mut metrics = BTreeMap::new();
    let mut data = Value::Nil;
    let mut meta = BTreeMap::new();
    let mut extra = Vec::new();
    let mut bad_metrics = Vec::new();

    for (key, value) in fields {
        let key = match key {
            Value::String(s) => s.into_str().ok_or_else(|| {
                DecodeError::new(
                    DecodeErrorKind::InvalidEnvelope,
                    "a field name is not valid UTF-8",
                )
            })?,
            other => {
                return Err(FieldError::WrongType {
                    field: "<field name>",
                    expected: "a string",
                    got: type_name(&other).into(),
                }
                .into())
            }
        };
        match key.as_str() {
            "id" => {
                if !value.is_nil() {
                    id = Some(parse_id("id", value)?);
                }
            }
            "ts" => {
                if !value.is_nil() {
                    ts = Some(parse_ts(value)?);
                }
            }
            "type" => event_type = Some(name_field("type", value, limits, false)?),
            "category" => {
                if !value.is_nil() {
                    category = Some(Category::parse(&name_field(
                        "category", value, limits, false,
                    )?));
                }
            }
            "source" => {
                if !value.is_nil() {
                    source = Some(name_field("source", value, limits, false)?);
                }
            }
            "severity" => {
                if !value.is_nil() {
                    severity = Some(parse_severity(value)?);
                }
            }
            "session" => session = optional_name("session", value, limits)?,
            "player" => player = optional_name("player", value, limits)?,
            "parent" => {
                if !value.is_nil() {
                    parent = Some(parse_id("parent", value)?);
                }
            }
            "metrics" => parse_metrics(value, &mut metrics, &mut bad_metrics)?,
            "data" => data = value,
            "meta" => match value {
                Value::Nil => {}
                Value::Map(entries) => {
                    for (k, v) in entries {
                        let k = string_key("meta", k)?;
                        meta.insert(k, v);
                    }
                }
                other => {
                    return Err(FieldError::WrongType {
                        field: "meta",
                        expected: "a map",
                        got: type_name(&other).into(),
                    }
                    .into())
                }
            },
            _ => extra.push((key, value)),
        }
    }

    let event_type = event_type.ok_or(FieldError::Missing("type"))?;
    if ctx.is_some() {
        // what the game sent is kept, but only as well-formed values
        let mut bad_utf8 = binary_for_bad_utf8(&mut data);
        for v in meta.values_mut() {
            bad_utf8 |= binary_for_bad_utf8(v);
        }
        for (_, v) in &mut extra {
            bad_utf8 |= binary_for_bad_utf8(v);
        }
        if bad_utf8 {
            meta.insert("invalid_utf8".into(), Value::Boolean(true));
        }
    }
    // Unknown top-level fields are kept (schema evolution), under their own name in `meta`.
    for (k, v) in extra {
        meta.entry(k).or_insert(v);
    }
    if !bad_metrics.is_empty() {
        meta.insert(
            "dropped_metrics".into(),
            Value::Array(bad_metrics.into_iter().map(Value::from).collect()),
        );
    }
    let (ts, id, source, category) = match ctx {
        Some((info, msg)) => (
            match ts {
                Some(t) if !plausible_ts(t, msg.received_at, limits) => {
                    meta.insert("original_ts".into(), Value::from(rfc3339(t)));
                    meta.insert("clock_skew".into(), Value::Boolean(true));
                    msg.received_at
                }
                Some(t) => t,
                None => msg.received_at,
            },
            id.or(msg.fallback_id)
                .unwrap_or_else(|| EventId::new_at(msg.received_at)),
            source.unwrap_or_else(|| info.source.clone()),
            category
                .or_else(|| Category::from_type(&event_type))
                .unwrap_or_else(|| info.kind.default_category()),
        ),
        None => (
            ts.ok_or(FieldError::Missing("ts"))?,
            id.ok_or(FieldError::Missing("id"))?,
            source.ok_or(FieldError::Missing("source"))?,
            category
                .or_else(|| Category::from_type(&event_type))
                .unwrap_or(Category::SystemEvent),
        ),
    };
    Ok(TraceEntry {
        id,
        ts,
        event_type,
        category,
        source,
        severity: severity.unwrap_or_default(),
        session,
        player,
        parent,
        metrics,
        data,
        meta,
    })
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Nil => "nil",
        Value::Boolean(_) => "a boolean",
        Value::Integer(_) => "an integer",
        Value::F32(_) | Value::F64(_) => "a float",
        Value::String(_) => "a string",
        Value::Binary(_) => "binary",
        Value::Array(_) => "an array",
        Value::Map(_) => "a map",
        Value::Ext(_, _) => "an ext value",
    }
}

/// The text of a string field, or why it has none.
fn utf8<'a>(field: &'static str, s: &'a rmpv::Utf8String) -> Result<&'a str, DecodeError> {
    s.as_str().ok_or_else(|| {
        FieldError::Invalid {
            field,
            reason: "not valid UTF-8".into(),
        }
        .into()
    })
}

/// A key of `meta` or `metrics`: a UTF-8 string.
fn string_key(field: &'static str, k: Value) -> Result<String, DecodeError> {
    match k {
        Value::String(s) => s.into_str().ok_or_else(|| {
            FieldError::Invalid {
                field,
                reason: "a key is not valid UTF-8".into(),
            }
            .into()
        }),
        other => Err(FieldError::WrongType {
            field,
            expected: "a map with string keys",
            got: format!("{} key", type_name(&other)),
        }
        .into()),
    }
}

/// Whether an envelope time is believable: from [`MIN_TS_YEAR`] on, and at most
/// `max_future_skew` after the message arrived.
fn plausible_ts(ts: DateTime<Utc>, received_at: DateTime<Utc>, limits: &Limits) -> bool {
    let earliest = Utc.with_ymd_and_hms(MIN_TS_YEAR, 1, 1, 0, 0, 0).single();
    let latest = chrono::TimeDelta::from_std(limits.max_future_skew)
        .ok()
        .and_then(|skew| received_at.checked_add_signed(skew));
    earliest.is_none_or(|e| ts >= e) && latest.is_none_or(|l| ts <= l)
}

/// Replaces every string that is not valid UTF-8 (msgpack `str` with bad bytes) by a binary
/// value holding the same bytes, keys included, without recursion. True if any was found.
fn binary_for_bad_utf8(value: &mut Value) -> bool {
    // nearly every value is valid: look first, without allocating
    if !may_hold_bad_utf8(value, 8) {
        return false;
    }
    let mut found = false;
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::String(s) if s.is_err() => {
                *v = Value::Binary(s.as_bytes().to_vec());
                found = true;
            }
            Value::Array(items) => stack.extend(items.iter_mut()),
            Value::Map(entries) => {
                for (k, v) in entries.iter_mut() {
                    stack.push(k);
                    stack.push(v);
                }
            }
            _ => {}
        }
    }
    found
}

/// False only if no string in `value` is invalid UTF-8; recurses at most `depth` levels and
/// answers true below them (the caller then walks the value without recursion).
fn may_hold_bad_utf8(value: &Value, depth: u8) -> bool {
    match value {
        Value::String(s) => s.is_err(),
        Value::Array(_) | Value::Map(_) if depth == 0 => true,
        Value::Array(items) => items.iter().any(|v| may_hold_bad_utf8(v, depth - 1)),
        Value::Map(entries) => entries
            .iter()
            .any(|(k, v)| may_hold_bad_utf8(k, depth - 1) || may_hold_bad_utf8(v, depth - 1)),
        _ => false,
    }
}

fn parse_id(field: &'static str, value: Value) -> Result<EventId, DecodeError> {
    match value {
        Value::String(s) => {
            let s = utf8(field, &s)?;
            s.parse().map_err(|_| {
                FieldError::Invalid {
                    field,
                    reason: format!("{s:?} is not a ULID (26 Crockford base32 characters)"),
                }
                .into()
            })
        }
        other => Err(FieldError::WrongType {
            field,
            expected: "a ULID string",
            got: type_name(&other).into(),
        }
        .into()),
    }
}

fn parse_ts(value: Value) -> Result<DateTime<Utc>, DecodeError> {
    match value {
        Value::String(s) => {
            let s = utf8("ts", &s)?;
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| {
                    FieldError::Invalid {
                        field: "ts",
                        reason: format!("{s:?} is not an RFC 3339 timestamp ({e})"),
                    }
                    .into()
                })
        }
        Value::Ext(TIMESTAMP_EXT, bytes) => decode_timestamp_ext(&bytes).ok_or_else(|| {
            FieldError::Invalid {
                field: "ts",
                reason: format!(
                    "msgpack timestamp of {} bytes is not valid or out of the representable \
                     range",
                    bytes.len()
                ),
            }
            .into()
        }),
        other => Err(FieldError::WrongType {
            field: "ts",
            expected: "an RFC 3339 string or a msgpack timestamp",
            got: type_name(&other).into(),
        }
        .into()),
    }
}

/// Decodes the msgpack timestamp extension (type -1) in its 32, 64 and 96-bit forms.
pub fn decode_timestamp_ext(bytes: &[u8]) -> Option<DateTime<Utc>> {
    let (secs, nanos): (i64, u32) = match bytes.len() {
        4 => (i64::from(u32::from_be_bytes(bytes.try_into().ok()?)), 0),
        8 => {
            let v = u64::from_be_bytes(bytes.try_into().ok()?);
            ((v & 0x3_ffff_ffff) as i64, (v >> 34) as u32)
        }
        12 => (
            i64::from_be_bytes(bytes[4..12].try_into().ok()?),
            u32::from_be_bytes(bytes[0..4].try_into().ok()?),
        ),
        _ => return None,
    };
    if nanos >= 1_000_000_000 {
        return None;
    }
    Utc.timestamp_opt(secs, nanos).single()
}

/// Encodes a timestamp as the msgpack timestamp extension payload (shortest form).
pub fn encode_timestamp_ext(ts: DateTime<Utc>) -> Vec<u8> {
    let secs = ts.timestamp();
    let nanos = ts.timestamp_subsec_nanos();
    if (0..1 << 34).contains(&secs) {
        if nanos == 0 && secs < 1 << 32 {
            return (secs as u32).to_be_bytes().to_vec();
        }
        let v = (u64::from(nanos) << 34) | secs as u64;
        return v.to_be_bytes().to_vec();
    }
    let mut out = nanos.to_be_bytes().to_vec();
    out.extend_from_slice(&secs.to_be_bytes());
    out
}

fn name_field(
    field: &'static str,
    value: Value,
    limits: &Limits,
    allow_int: bool,
) -> Result<String, DecodeError> {
    let s = match value {
        Value::String(s) => s.into_str().ok_or(FieldError::Invalid {
            field,
            reason: "not valid UTF-8".into(),
        })?,
        Value::Integer(i) if allow_int => i.to_string(),
        other => {
            return Err(FieldError::WrongType {
                field,
                expected: if allow_int {
                    "a string or an integer"
                } else {
                    "a string"
                },
                got: type_name(&other).into(),
            }
            .into())
        }
    };
    if s.is_empty() {
        return Err(FieldError::Invalid {
            field,
            reason: "must not be empty".into(),
        }
        .into());
    }
    if s.len() > limits.max_name_bytes {
        return Err(DecodeError::new(
            DecodeErrorKind::StringTooLong,
            format!(
                "field `{field}` is {} bytes, the limit (max_name_bytes) is {}",
                s.len(),
                limits.max_name_bytes
            ),
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(FieldError::Invalid {
            field,
            reason: format!("{s:?} contains control characters"),
        }
        .into());
    }
    Ok(s)
}

fn optional_name(
    field: &'static str,
    value: Value,
    limits: &Limits,
) -> Result<Option<String>, DecodeError> {
    if value.is_nil() {
        Ok(None)
    } else {
        name_field(field, value, limits, true).map(Some)
    }
}

fn parse_severity(value: Value) -> Result<Severity, DecodeError> {
    match value {
        Value::String(s) => Ok(utf8("severity", &s)?.parse::<Severity>()?),
        other => Err(FieldError::WrongType {
            field: "severity",
            expected: "one of the strings trace, debug, info, warn, error, critical",
            got: type_name(&other).into(),
        }
        .into()),
    }
}

/// Metrics must be a map of string to number. Non-finite numbers (NaN, inf) are not errors
/// of the publisher's envelope as a whole: they are dropped and named in `meta.dropped_metrics`.
fn parse_metrics(
    value: Value,
    metrics: &mut BTreeMap<String, f64>,
    bad: &mut Vec<String>,
) -> Result<(), DecodeError> {
    let entries = match value {
        Value::Nil => return Ok(()),
        Value::Map(entries) => entries,
        other => {
            return Err(FieldError::WrongType {
                field: "metrics",
                expected: "a map of string to number",
                got: type_name(&other).into(),
            }
            .into())
        }
    };
    for (k, v) in entries {
        let k = string_key("metrics", k)?;
        let n = match &v {
            Value::Integer(i) => i.as_f64(),
            Value::F32(f) => Some(f64::from(*f)),
            Value::F64(f) => Some(*f),
            _ => None,
        };
        match n {
            Some(n) if n.is_finite() => {
                metrics.insert(k, n);
            }
            Some(_) => bad.push(k),
            None => {
                return Err(FieldError::WrongType {
                    field: "metrics",
                    expected: "numbers as values",
                    got: format!("{} for key {k:?}", type_name(&v)),
                }
                .into())
            }
        }
    }
    Ok(())
}

/// Converts a JSON value to msgpack's value model (numbers stay integers when they are).
pub fn json_to_value(json: serde_json::Value) -> Value {
    match json {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Boolean(b),
        serde_json::Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                Value::from(u)
            } else if let Some(i) = n.as_i64() {
                Value::from(i)
            } else {
                Value::F64(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_json::Value::String(s) => Value::from(s),
        serde_json::Value::Array(a) => Value::Array(a.into_iter().map(json_to_value).collect()),
        serde_json::Value::Object(o) => Value::Map(
            o.into_iter()
                .map(|(k, v)| (Value::from(k), json_to_value(v)))
                .collect(),
        ),
    }
}

fn check_value_limits(value: &Value, limits: &Limits, depth: usize) -> Result<(), DecodeError> {
    match value {
        Value::String(s) if s.as_bytes().len() > limits.max_string_bytes => {
            Err(string_too_long(s.as_bytes().len(), limits))
        }
        Value::Array(items) => {
            check_depth(depth, limits)?;
            if items.len() > limits.max_array_len {
                return Err(too_many(
                    "array elements",
                    items.len(),
                    limits.max_array_len,
                    "max_array_len",
                ));
            }
            items
                .iter()
                .try_for_each(|v| check_value_limits(v, limits, depth + 1))
        }
        Value::Map(entries) => {
            check_depth(depth, limits)?;
            if entries.len() > limits.max_map_keys {
                return Err(too_many(
                    "map keys",
                    entries.len(),
                    limits.max_map_keys,
                    "max_map_keys",
                ));
            }
            entries.iter().try_for_each(|(k, v)| {
                check_value_limits(k, limits, depth + 1)?;
                check_value_limits(v, limits, depth + 1)
            })
        }
        _ => Ok(()),
    }
}

fn check_depth(depth: usize, limits: &Limits) -> Result<(), DecodeError> {
    if depth > limits.max_depth {
        Err(DecodeError::new(
            DecodeErrorKind::TooDeep,
            format!(
                "nesting deeper than the limit (max_depth) of {}",
                limits.max_depth
            ),
        ))
    } else {
        Ok(())
    }
}

fn string_too_long(len: usize, limits: &Limits) -> DecodeError {
    DecodeError::new(
        DecodeErrorKind::StringTooLong,
        format!(
            "a string or binary of {len} bytes, the limit (max_string_bytes) is {}",
            limits.max_string_bytes
        ),
    )
}

fn too_many(what: &str, n: usize, limit: usize, key: &str) -> DecodeError {
    DecodeError::new(
        DecodeErrorKind::TooManyKeys,
        format!("{n} {what}, the limit ({key}) is {limit}"),
    )
}

enum ScanError {
    /// A limit was broken by an otherwise well-formed value.
    Limit(DecodeError),
    /// The bytes are not one whole msgpack value.
    Structure(String),
}

/// Walks one msgpack value without allocating per element and without recursion, checking
/// every declared length against the bytes that remain and against the limits, and that the
/// value spans the whole buffer. After it passes, `rmpv` can decode without risk.
fn scan_msgpack(buf: &[u8], limits: &Limits) -> Result<(), ScanError> {
    let mut pos = 0usize;
    // Items still to read at each open container level; the bottom is the one top value.
    let mut pending: Vec<u64> = vec![1];
    let structure = |why: &str, pos: usize| ScanError::Structure(format!("{why} at byte {pos}"));
    while let Some(top) = pending.last_mut() {
        if *top == 0 {
            pending.pop();
            continue;
        }
        *top -= 1;
        let Some(&marker) = buf.get(pos) else {
            return Err(structure("unexpected end", pos));
        };
        pos += 1;
        let read_len = |pos: &mut usize, n: usize| -> Result<u64, ScanError> {
            let bytes = buf.get(*pos..*pos + n).ok_or_else(|| {
                ScanError::Structure(format!("truncated length at byte {}", *pos))
            })?;
            *pos += n;
            Ok(bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
        };
        // (bytes of payload to skip, container items to push, is a map)
        let (skip, container): (u64, Option<(u64, bool)>) = match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, None),
            0x80..=0x8f => (0, Some((u64::from(marker & 0x0f), true))),
            0x90..=0x9f => (0, Some((u64::from(marker & 0x0f), false))),
            0xa0..=0xbf => (u64::from(marker & 0x1f), None),
            0xc1 => return Err(structure("reserved marker 0xc1", pos - 1)),
            0xc4 | 0xd9 => (read_len(&mut pos, 1)?, None),
            0xc5 | 0xda => (read_len(&mut pos, 2)?, None),
            0xc6 | 0xdb => (read_len(&mut pos, 4)?, None),
            0xc7 => (read_len(&mut pos, 1)? + 1, None),
            0xc8 => (read_len(&mut pos, 2)? + 1, None),
            0xc9 => (read_len(&mut pos, 4)? + 1, None),
            0xca => (4, None),
            0xcb => (8, None),
            0xcc | 0xd0 => (1, None),
            0xcd | 0xd1 => (2, None),
            0xce | 0xd2 => (4, None),
            0xcf | 0xd3 => (8, None),
            0xd4 => (2, None),
            0xd5 => (3, None),
            0xd6 => (5, None),
            0xd7 => (9, None),
            0xd8 => (17, None),
            0xdc => (0, Some((read_len(&mut pos, 2)?, false))),
            0xdd => (0, Some((read_len(&mut pos, 4)?, false))),
            0xde => (0, Some((read_len(&mut pos, 2)?, true))),
            0xdf => (0, Some((read_len(&mut pos, 4)?, true))),
        };
        if skip > 0 {
            let remaining = (buf.len() - pos) as u64;
            if skip > remaining {
                return Err(structure("declared length runs past the end", pos));
            }
            let is_ext = matches!(marker, 0xc7..=0xc9 | 0xd4..=0xd8);
            let data_len = if is_ext { skip - 1 } else { skip };
            if data_len > limits.max_string_bytes as u64 && !matches!(marker, 0xca..=0xd3) {
                return Err(ScanError::Limit(string_too_long(data_len as usize, limits)));
            }
            pos += skip as usize;
        }
        if let Some((n, is_map)) = container {
            let depth = pending.len();
            if depth > limits.max_depth {
                return Err(ScanError::Limit(DecodeError::new(
                    DecodeErrorKind::TooDeep,
                    format!(
                        "nesting deeper than the limit (max_depth) of {}",
                        limits.max_depth
                    ),
                )));
            }
            let (items, limit, key, what) = if is_map {
                (n * 2, limits.max_map_keys, "max_map_keys", "map keys")
            } else {
                (n, limits.max_array_len, "max_array_len", "array elements")
            };
            if n > limit as u64 {
                return Err(ScanError::Limit(too_many(what, n as usize, limit, key)));
            }
            if items > (buf.len() - pos) as u64 {
                return Err(structure(
                    "container declares more items than bytes left",
                    pos,
                ));
            }
            if items > 0 {
                pending.push(items);
            }
        }
    }
    if pos != buf.len() {
        return Err(structure("trailing bytes after the value", pos));
    }
    Ok(())
}

/// Encodes an entry as the msgpack envelope (a map with the wire field names; `ts` as a
/// msgpack timestamp), appending to `out`. This is both what publishers send and what blocks
/// store, so every reader of one reads the other.
pub fn encode_entry(entry: &TraceEntry, out: &mut Vec<u8>) {
    use rmp::encode as enc;
    let n = 6
        + u32::from(entry.session.is_some())
        + u32::from(entry.player.is_some())
        + u32::from(entry.parent.is_some())
        + u32::from(!entry.metrics.is_empty())
        + u32::from(!entry.data.is_nil())
        + u32::from(!entry.meta.is_empty());
    // Writes into a Vec cannot fail; the results are ignored on purpose.
    let _ = enc::write_map_len(out, n);
    let mut id_buf = [0u8; ulid::ULID_LEN];
    let _ = enc::write_str(out, "id");
    let _ = enc::write_str(out, entry.id.0.array_to_str(&mut id_buf));
    let _ = enc::write_str(out, "ts");
    let ts = encode_timestamp_ext(entry.ts);
    let _ = enc::write_ext_meta(out, ts.len() as u32, TIMESTAMP_EXT);
    out.extend_from_slice(&ts);
    let _ = enc::write_str(out, "type");
    let _ = enc::write_str(out, &entry.event_type);
    let _ = enc::write_str(out, "category");
    let _ = enc::write_str(out, entry.category.as_str());
    let _ = enc::write_str(out, "source");
    let _ = enc::write_str(out, &entry.source);
    let _ = enc::write_str(out, "severity");
    let _ = enc::write_str(out, entry.severity.as_str());
    if let Some(s) = &entry.session {
        let _ = enc::write_str(out, "session");
        let _ = enc::write_str(out, s);
    }
    if let Some(p) = &entry.player {
        let _ = enc::write_str(out, "player");
        let _ = enc::write_str(out, p);
    }
    if let Some(p) = &entry.parent {
        let _ = enc::write_str(out, "parent");
        let _ = enc::write_str(out, p.0.array_to_str(&mut id_buf));
    }
    if !entry.metrics.is_empty() {
        let _ = enc::write_str(out, "metrics");
        let _ = enc::write_map_len(out, entry.metrics.len() as u32);
        for (k, v) in &entry.metrics {
            let _ = enc::write_str(out, k);
            let _ = enc::write_f64(out, *v);
        }
    }
    if !entry.data.is_nil() {
        let _ = enc::write_str(out, "data");
        let _ = rmpv::encode::write_value(out, &entry.data);
    }
    if !entry.meta.is_empty() {
        let _ = enc::write_str(out, "meta");
        let _ = enc::write_map_len(out, entry.meta.len() as u32);
        for (k, v) in &entry.meta {
            let _ = enc::write_str(out, k);
            let _ = rmpv::encode::write_value(out, v);
        }
    }
}

/// Encodes an entry to a fresh buffer (see [`encode_entry`]).
pub fn encode_entry_vec(entry: &TraceEntry) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    encode_entry(entry, &mut out);
    out
}

/// Decodes one entry written by [`encode_entry`] from the front of `buf`, advancing it.
/// Used for stored blocks: every field must be present, no subject defaults apply.
pub fn decode_stored_entry(buf: &mut &[u8]) -> Result<TraceEntry, DecodeError> {
    // rmpv recurses and counts two units per container level: room for the deepest entry the
    // decoder can accept (the envelope map, `MAX_DEPTH_LIMIT` levels, a leaf), and no more, so
    // a damaged block cannot overflow the stack.
    let value = rmpv::decode::read_value_with_max_depth(buf, 2 * MAX_DEPTH_LIMIT + 8)
        .map_err(|e| DecodeError::new(DecodeErrorKind::Malformed, format!("stored entry: {e}")))?;
    match value {
        Value::Map(fields) => envelope_to_entry(fields, &Limits::stored(), None),
        other => Err(DecodeError::new(
            DecodeErrorKind::Malformed,
            format!("stored entry is {}, not a map", type_name(&other)),
        )),
    }
}

impl Limits {
    /// Limits for reading back what the agent itself wrote (already validated once).
    fn stored() -> Limits {
        Limits {
            max_name_bytes: usize::MAX,
            ..Limits::default()
        }
    }
}

#[cfg(test)]
mod tests;
