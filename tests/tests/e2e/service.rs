//! The API is a NATS micro service: `$SRV.PING`/`$SRV.INFO` find it with its endpoints, and
//! errors come back with `Nats-Service-Error-Code` and a JSON `error`.

use std::time::Duration;

use anyhow::{bail, ensure, Context as _};
use serde_json::json;
use trace_tests::{Agent, AgentOptions, ApiError, NatsServer};

use crate::util::bounded;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_is_a_discoverable_micro_service() -> anyhow::Result<()> {
    bounded(Duration::from_secs(60), async {
        let nats = NatsServer::start().await?;
        let agent = Agent::start(&nats.client_url(), AgentOptions::default()).await?;
        let client = nats.client().await?;

        let ping = request_json(&client, "$SRV.PING").await?;
        ensure!(
            ping["name"] == "trace-agent",
            "$SRV.PING answered by {ping}, not trace-agent"
        );
        let info = request_json(&client, "$SRV.INFO.trace-agent").await?;
        ensure!(info["name"] == "trace-agent", "$SRV.INFO answer: {info}");
        let subjects: Vec<&str> = info["endpoints"]
            .as_array()
            .with_context(|| format!("INFO without endpoints: {info}"))?
            .iter()
            .filter_map(|e| e["subject"].as_str())
            .collect();
        for verb in ["query", "get", "explain", "quarantine", "store_info"] {
            let subject = format!("trace.api.{verb}");
            ensure!(
                subjects.contains(&subject.as_str()),
                "INFO does not list {subject}: {subjects:?}"
            );
        }

        match agent.request("get", &json!({"id": "not-a-ulid"})).await {
            Err(ApiError::Service { code, message, .. }) => ensure!(
                !code.is_empty() && !message.is_empty(),
                "error reply without code or message: {code:?} {message:?}"
            ),
            other => bail!("get with a bad id answered {other:?}, expected a service error"),
        }
        let unknown = ulid::Ulid::new().to_string();
        match agent.request("get", &json!({ "id": unknown })).await {
            Err(ApiError::Service { .. }) => {}
            other => bail!("get of an unknown id answered {other:?}, expected a service error"),
        }
        match agent.request("query", &json!({"severity": "loud"})).await {
            Err(ApiError::Service { message, .. }) => ensure!(
                message.contains("loud") || message.contains("severity"),
                "a bad query is refused without saying why: {message}"
            ),
            other => bail!("query with a bad severity answered {other:?}"),
        }
        let empty = agent
            .request("query", &json!({}))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        ensure!(
            empty["entries"].as_array().is_some_and(Vec::is_empty),
            "query on an empty store: {empty}"
        );
        Ok(())
    })
    .await
}

async fn request_json(
    client: &async_nats::Client,
    subject: &str,
) -> anyhow::Result<serde_json::Value> {
    let reply = tokio::time::timeout(
        Duration::from_secs(5),
        client.request(subject.to_owned(), "".into()),
    )
    .await
    .with_context(|| format!("no answer on {subject} within 5 s"))?
    .with_context(|| format!("request on {subject}"))?;
    serde_json::from_slice(&reply.payload)
        .with_context(|| format!("{subject} answered non-JSON: {:?}", reply.payload))
}
