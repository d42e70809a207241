//! Typed errors of the model and the codec: each says what is wrong and where.

use thiserror::Error;

/// A field of an envelope that is missing or has the wrong type or value.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FieldError {
    /// A required field is absent.
    #[error("missing required field `{0}`")]
    Missing(&'static str),
    /// The field holds a value of the wrong type.
    #[error("field `{field}` must be {expected}, got {got}")]
    WrongType {
        /// Wire name of the field.
        field: &'static str,
        /// What the wire format allows.
        expected: &'static str,
        /// What was found.
        got: String,
    },
    /// The field has the right type but a value the format refuses.
    #[error("field `{field}`: {reason}")]
    Invalid {
        /// Wire name of the field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// Which rule a message broke; `Copy` so callers can match and count by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecodeErrorKind {
    /// Larger than `Limits::max_message_bytes`.
    TooLarge,
    /// Nested deeper than `Limits::max_depth`.
    TooDeep,
    /// A string or binary longer than `Limits::max_string_bytes`.
    StringTooLong,
    /// A map with more than `Limits::max_map_keys` keys, or an array over `max_array_len`.
    TooManyKeys,
    /// Bytes that announce msgpack or JSON but do not parse.
    Malformed,
    /// An envelope (a map with `type`) whose fields do not validate.
    InvalidEnvelope,
    /// An envelope whose `id` an earlier message with different content already took (the
    /// recorder's same-id policy: the first write wins).
    DuplicateId,
}

impl DecodeErrorKind {
    /// A short stable name, used as a metric label and in quarantine records.
    pub fn as_str(self) -> &'static str {
        match self {
            DecodeErrorKind::TooLarge => "too_large",
            DecodeErrorKind::TooDeep => "too_deep",
            DecodeErrorKind::StringTooLong => "string_too_long",
            DecodeErrorKind::TooManyKeys => "too_many_keys",
            DecodeErrorKind::Malformed => "malformed",
            DecodeErrorKind::InvalidEnvelope => "invalid_envelope",
            DecodeErrorKind::DuplicateId => "duplicate_id",
        }
    }
}

/// Why a message could not become a `TraceEntry`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{kind_name}: {detail}", kind_name = self.kind.as_str())]
pub struct DecodeError {
    /// The rule that was broken.
    pub kind: DecodeErrorKind,
    /// What exactly is wrong, with the offending value or size.
    pub detail: String,
}

impl DecodeError {
    pub(crate) fn new(kind: DecodeErrorKind, detail: impl Into<String>) -> Self {
        DecodeError {
            kind,
            detail: detail.into(),
        }
    }
}

impl From<FieldError> for DecodeError {
    fn from(e: FieldError) -> Self {
        DecodeError::new(DecodeErrorKind::InvalidEnvelope, e.to_string())
    }
}

/// A subject pattern or source name that the subject scheme refuses.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid subject {subject:?}: {reason}")]
pub struct SubjectError {
    /// The subject or pattern as given.
    pub subject: String,
    /// What is wrong with it.
    pub reason: String,
}
