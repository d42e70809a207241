//! Watching the alerts the agent publishes on `trace.alerts.<severity>`: each payload is the
//! msgpack envelope of a `trace.alert` entry whose `data` is the alert; [`AlertWatch`] keeps
//! every notification in arrival order, decoded, with the instant it arrived.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use chrono::Utc;
use futures::StreamExt as _;
use trace_core::{decode_stored_entry, Decoder, Incoming, TraceEntry};

use crate::wait::Deadline;

/// The subjects alerts are published on.
pub const ALERT_SUBJECTS: &str = "trace.alerts.>";

/// One alert notification as received.
#[derive(Debug, Clone)]
pub struct AlertNotice {
    /// The subject (`trace.alerts.warn`, ...).
    pub subject: String,
    /// When the test received it (monotonic clock).
    pub arrived: Instant,
    /// The entry the payload encodes.
    pub entry: TraceEntry,
    /// The entry's `data` (the alert) as JSON.
    pub alert: serde_json::Value,
}

impl AlertNotice {
    /// `alert.rule`.
    pub fn rule(&self) -> &str {
        self.alert["rule"].as_str().unwrap_or_default()
    }

    /// `alert.state`: `firing` or `resolved`.
    pub fn state(&self) -> &str {
        self.alert["state"].as_str().unwrap_or_default()
    }

    /// `alert.labels.<name>`.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.alert["labels"][name].as_str()
    }

    /// Whether it is about `rule` with `state`.
    pub fn is(&self, rule: &str, state: &str) -> bool {
        self.rule() == rule && self.state() == state
    }
}

/// A subscription on `trace.alerts.>` and everything it received so far.
#[derive(Debug)]
pub struct AlertWatch {
    client: async_nats::Client,
    subscriber: async_nats::Subscriber,
    notices: Vec<AlertNotice>,
}

impl AlertWatch {
    /// Subscribes on its own connection to `nats_url` (the subscription is in place at the
    /// server when this returns).
    pub async fn start(nats_url: &str) -> anyhow::Result<AlertWatch> {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .connect(nats_url)
            .await
            .with_context(|| format!("connecting the alert watcher to {nats_url}"))?;
        let subscriber = client
            .subscribe(ALERT_SUBJECTS)
            .await
            .context("subscribing to trace.alerts.>")?;
        client
            .flush()
            .await
            .context("flushing the alert subscription")?;
        Ok(AlertWatch {
            client,
            subscriber,
            notices: Vec::new(),
        })
    }

    /// Every notification received so far, in arrival order.
    pub fn notices(&self) -> &[AlertNotice] {
        &self.notices
    }

    /// Those about `rule`.
    pub fn of_rule(&self, rule: &str) -> Vec<&AlertNotice> {
        self.notices.iter().filter(|n| n.rule() == rule).collect()
    }

    /// Takes in whatever arrives within `wait` (returns after `wait`, or as soon as nothing is
    /// left when `wait` is zero). A payload that is not an alert entry is an error.
    pub async fn collect(&mut self, wait: Duration) -> anyhow::Result<()> {
        let deadline = Deadline::after(wait);
        loop {
            // Past the deadline, still take what is already there (1 ms), then stop.
            let remaining = deadline.remaining().max(Duration::from_millis(1));
            match tokio::time::timeout(remaining, self.subscriber.next()).await {
                Ok(Some(message)) => {
                    let notice = decode_notice(&message)?;
                    self.notices.push(notice);
                }
                Ok(None) => bail!("the trace.alerts.> subscription ended"),
                Err(_) => return Ok(()),
            }
        }
    }

    /// Waits up to `timeout` for a notification satisfying `pred` (including ones already
    /// received) and returns the first.
    pub async fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&AlertNotice) -> bool,
    ) -> anyhow::Result<AlertNotice> {
        let deadline = Deadline::after(timeout);
        loop {
            if let Some(found) = self.notices.iter().find(|n| pred(n)) {
                return Ok(found.clone());
            }
            if deadline.expired() {
                bail!(
                    "no alert notification for {what} within {timeout:?}; received: {}",
                    self.summary()
                );
            }
            self.collect(deadline.remaining().min(Duration::from_millis(200)))
                .await?;
        }
    }

    /// `rule/state{labels}` of every notification, for messages.
    pub fn summary(&self) -> String {
        if self.notices.is_empty() {
            return "(none)".to_owned();
        }
        self.notices
            .iter()
            .map(|n| {
                format!(
                    "{} {}/{} {}",
                    n.subject,
                    n.rule(),
                    n.state(),
                    n.alert["labels"]
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The connection it listens on.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }
}

fn decode_notice(message: &async_nats::Message) -> anyhow::Result<AlertNotice> {
    let arrived = Instant::now();
    let subject = message.subject.to_string();
    let payload: &[u8] = &message.payload;
    let entry = match decode_stored_entry(&mut &payload[..]) {
        Ok(entry) => entry,
        Err(stored_error) => Decoder::default()
            .decode(&Incoming {
                subject: &subject,
                payload,
                received_at: Utc::now(),
                fallback_id: None,
            })
            .map_err(|e| {
                anyhow!(
                    "the payload on {subject} is not a trace entry envelope ({stored_error}; {e}): \
                     {}",
                    String::from_utf8_lossy(&payload[..payload.len().min(300)])
                )
            })?,
    };
    let alert = msgpack_to_json(&entry.data);
    Ok(AlertNotice {
        subject,
        arrived,
        entry,
        alert,
    })
}

/// A msgpack value as JSON: strings, numbers, booleans, arrays and maps with string keys;
/// binary and extension values become `null`.
pub fn msgpack_to_json(value: &rmpv::Value) -> serde_json::Value {
    use rmpv::Value as M;
    use serde_json::Value as J;
    match value {
        M::Nil | M::Binary(_) | M::Ext(..) => J::Null,
        M::Boolean(b) => J::Bool(*b),
        M::Integer(i) => i
            .as_i64()
            .map(J::from)
            .or_else(|| i.as_u64().map(J::from))
            .unwrap_or(J::Null),
        M::F32(f) => J::from(f64::from(*f)),
        M::F64(f) => J::from(*f),
        M::String(s) => J::String(s.as_str().unwrap_or_default().to_owned()),
        M::Array(items) => J::Array(items.iter().map(msgpack_to_json).collect()),
        M::Map(pairs) => {
            let map: BTreeMap<String, J> = pairs
                .iter()
                .map(|(k, v)| {
                    let key = match k {
                        M::String(s) => s.as_str().unwrap_or_default().to_owned(),
                        other => other.to_string(),
                    };
                    (key, msgpack_to_json(v))
                })
                .collect();
            J::Object(map.into_iter().collect())
        }
    }
}
