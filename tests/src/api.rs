//! The agent's NATS micro-service API as a test sees it: one JSON request on
//! `trace.api.<verb>`, and the reply or the reason there is none.

use std::fmt;
use std::time::Duration;

use async_nats::client::RequestErrorKind;
use async_nats::service::{NATS_SERVICE_ERROR, NATS_SERVICE_ERROR_CODE};
use serde::Deserialize;

/// The default time one API request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an API request gave no usable answer.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    /// Nobody listens on the subject (the agent is not up, or not yet).
    NoResponders {
        /// The request subject.
        subject: String,
    },
    /// No reply within the timeout.
    TimedOut {
        /// The request subject.
        subject: String,
        /// How long it waited.
        timeout: Duration,
    },
    /// The service answered with an error (`Nats-Service-Error-Code` header).
    Service {
        /// The request subject.
        subject: String,
        /// The error code header.
        code: String,
        /// The `error` field of the JSON body, or the `Nats-Service-Error` header.
        message: String,
    },
    /// The reply is not JSON.
    BadReply {
        /// The request subject.
        subject: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Any other client error.
    Transport {
        /// The request subject.
        subject: String,
        /// The client's error.
        reason: String,
    },
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::NoResponders { subject } => write!(f, "no responders on {subject}"),
            ApiError::TimedOut { subject, timeout } => {
                write!(f, "no reply on {subject} within {timeout:?}")
            }
            ApiError::Service {
                subject,
                code,
                message,
            } => write!(f, "{subject} answered error {code}: {message}"),
            ApiError::BadReply { subject, reason } => write!(f, "bad reply on {subject}: {reason}"),
            ApiError::Transport { subject, reason } => write!(f, "request on {subject}: {reason}"),
        }
    }
}

impl std::error::Error for ApiError {}

/// Sends `body` as JSON to `trace.api.<verb>` and returns the JSON reply (10 s timeout).
pub async fn api_request(
    client: &async_nats::Client,
    verb: &str,
    body: &serde_json::Value,
) -> Result<serde_json::Value, ApiError> {
    api_request_with_timeout(client, verb, body, REQUEST_TIMEOUT).await
}

/// [`api_request`] with a chosen timeout.
pub async fn api_request_with_timeout(
    client: &async_nats::Client,
    verb: &str,
    body: &serde_json::Value,
    timeout: Duration,
) -> Result<serde_json::Value, ApiError> {
    let subject = format!("trace.api.{verb}");
    let payload = serde_json::to_vec(body).map_err(|e| ApiError::BadReply {
        subject: subject.clone(),
        reason: format!("cannot encode the request: {e}"),
    })?;
    let request = async_nats::Request::new()
        .payload(payload.into())
        .timeout(Some(timeout));
    let reply = client
        .send_request(subject.clone(), request)
        .await
        .map_err(|e| match e.kind() {
            RequestErrorKind::NoResponders => ApiError::NoResponders {
                subject: subject.clone(),
            },
            RequestErrorKind::TimedOut => ApiError::TimedOut {
                subject: subject.clone(),
                timeout,
            },
            _ => ApiError::Transport {
                subject: subject.clone(),
                reason: e.to_string(),
            },
        })?;
    let json: Result<serde_json::Value, _> = serde_json::from_slice(&reply.payload);
    if let Some(code) = reply
        .headers
        .as_ref()
        .and_then(|h| h.get(NATS_SERVICE_ERROR_CODE))
    {
        let header_message = reply
            .headers
            .as_ref()
            .and_then(|h| h.get(NATS_SERVICE_ERROR))
            .map(|v| v.as_str().to_owned());
        let body_message = json
            .as_ref()
            .ok()
            .and_then(|v| v.get("error"))
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        return Err(ApiError::Service {
            subject,
            code: code.as_str().to_owned(),
            message: body_message
                .or(header_message)
                .unwrap_or_else(|| String::from_utf8_lossy(&reply.payload).into_owned()),
        });
    }
    json.map_err(|e| ApiError::BadReply {
        subject,
        reason: format!(
            "{e}; body: {}",
            String::from_utf8_lossy(&reply.payload[..reply.payload.len().min(500)])
        ),
    })
}

/// The agent's `store_info` answer (also what `trace-agent store-info --json` prints).
/// Every field the contract names is required, so a missing one fails the parse.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct StoreInfo {
    /// Segments on disk.
    pub segments: u64,
    /// Blocks over all segments.
    pub blocks: u64,
    /// Stored entries.
    pub events: u64,
    /// What the store takes on disk, by its own account.
    pub bytes_on_disk: u64,
    /// Encoded size of the entries before compression.
    pub raw_bytes: u64,
    /// `raw_bytes / compressed bytes`.
    pub compression_ratio: f64,
    /// Messages in quarantine.
    pub quarantined: u64,
}

impl StoreInfo {
    /// Parses the JSON object.
    pub fn from_json(value: &serde_json::Value) -> anyhow::Result<StoreInfo> {
        serde_json::from_value(value.clone()).map_err(|e| {
            anyhow::anyhow!("store info {value} does not have the contract's fields: {e}")
        })
    }
}
