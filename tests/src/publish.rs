//! Publishing through JetStream the way a careful game service does: every message acked by
//! the stream, a bounded window of acks pending (async-nats holds ~5,000 permits and hangs
//! beyond them), and `Nats-Msg-Id` set to the event id so a retry is dropped as a duplicate.

use std::future::{Future, IntoFuture};
use std::pin::Pin;

use anyhow::{anyhow, Context as _};
use async_nats::jetstream::context::PublishError;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::publish::PublishAck;
use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};

use crate::traffic::Outgoing;

/// Most acks a [`JsPublisher`] leaves pending before it waits for the oldest.
pub const MAX_ACKS_IN_FLIGHT: usize = 2048;

type AckFuture = Pin<Box<dyn Future<Output = Result<PublishAck, PublishError>> + Send>>;

/// Publishes with a sliding window of pending JetStream acks.
pub struct JsPublisher {
    js: async_nats::jetstream::Context,
    pending: FuturesUnordered<AckFuture>,
    window: usize,
    acked: u64,
    duplicates: u64,
}

impl std::fmt::Debug for JsPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsPublisher")
            .field("pending", &self.pending.len())
            .field("window", &self.window)
            .field("acked", &self.acked)
            .field("duplicates", &self.duplicates)
            .finish()
    }
}

impl JsPublisher {
    /// A publisher with the default window ([`MAX_ACKS_IN_FLIGHT`]).
    pub fn new(js: async_nats::jetstream::Context) -> Self {
        Self::with_window(js, MAX_ACKS_IN_FLIGHT)
    }

    /// A publisher leaving at most `window` acks pending (at least 1).
    pub fn with_window(js: async_nats::jetstream::Context, window: usize) -> Self {
        JsPublisher {
            js,
            pending: FuturesUnordered::new(),
            window: window.max(1),
            acked: 0,
            duplicates: 0,
        }
    }

    /// Publishes one message, first waiting for acks while the window is full.
    pub async fn publish(
        &mut self,
        subject: &str,
        payload: Bytes,
        msg_id: Option<&str>,
    ) -> anyhow::Result<()> {
        while self.pending.len() >= self.window {
            self.settle_one().await?;
        }
        let mut message = PublishMessage::build().payload(payload);
        if let Some(id) = msg_id {
            message = message.message_id(id);
        }
        let ack = self
            .js
            .send_publish(subject.to_owned(), message)
            .await
            .with_context(|| format!("publishing to {subject}"))?;
        self.pending.push(ack.into_future());
        Ok(())
    }

    /// Publishes a generated message (with its id as `Nats-Msg-Id` when it has one).
    pub async fn send(&mut self, message: &Outgoing) -> anyhow::Result<()> {
        self.publish(
            &message.subject,
            message.payload.clone(),
            message.msg_id.as_deref(),
        )
        .await
    }

    /// Waits for every pending ack; returns how many messages were acked in total.
    pub async fn flush(&mut self) -> anyhow::Result<u64> {
        while !self.pending.is_empty() {
            self.settle_one().await?;
        }
        Ok(self.acked)
    }

    /// Acks received so far.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Acks that said "duplicate" (the stream already had that `Nats-Msg-Id`).
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    async fn settle_one(&mut self) -> anyhow::Result<()> {
        let Some(result) = self.pending.next().await else {
            return Ok(());
        };
        let ack = result.map_err(|e| anyhow!("JetStream did not ack a publish: {e}"))?;
        self.acked += 1;
        if ack.duplicate {
            self.duplicates += 1;
        }
        Ok(())
    }
}

/// Publishes one message through JetStream and waits for its ack.
pub async fn publish_js(
    js: &async_nats::jetstream::Context,
    subject: &str,
    payload: Bytes,
) -> anyhow::Result<PublishAck> {
    let ack = js
        .publish(subject.to_owned(), payload)
        .await
        .with_context(|| format!("publishing to {subject}"))?;
    ack.await
        .map_err(|e| anyhow!("JetStream did not ack a publish to {subject}: {e}"))
}
