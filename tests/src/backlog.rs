//! How far the agent's recorder is behind JetStream, read from the durable consumer's info:
//! the signal that the agent has seen everything published (whatever it then kept).

use anyhow::Context as _;

use crate::{RECORDER_CONSUMER, STREAM};

/// The recorder consumer's backlog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    /// Messages in the stream not yet delivered to the consumer.
    pub pending: u64,
    /// Messages delivered but not yet acked.
    pub ack_pending: usize,
    /// The stream's message count.
    pub stream_messages: u64,
}

impl Backlog {
    /// Nothing left to deliver or ack.
    pub fn is_drained(&self) -> bool {
        self.pending == 0 && self.ack_pending == 0
    }
}

/// Reads the backlog of the `trace-store` consumer on `TRACE_EVENTS`.
pub async fn recorder_backlog(js: &async_nats::jetstream::Context) -> anyhow::Result<Backlog> {
    let mut stream = js
        .get_stream(STREAM)
        .await
        .with_context(|| format!("looking up stream {STREAM}"))?;
    let stream_messages = stream
        .info()
        .await
        .with_context(|| format!("stream {STREAM} info"))?
        .state
        .messages;
    let info = stream
        .consumer_info(RECORDER_CONSUMER)
        .await
        .with_context(|| format!("consumer {RECORDER_CONSUMER} info"))?;
    Ok(Backlog {
        pending: info.num_pending,
        ack_pending: info.num_ack_pending,
        stream_messages,
    })
}
