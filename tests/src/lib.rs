//! # trace-tests: the end-to-end harness
//!
//! Every end-to-end test runs real processes: its own `nats-server` with JetStream in a temp
//! dir, and the real `trace-agent` binary. The pieces, in the order a test uses them:
//!
//! - [`NatsServer`] (`nats_server`): starts `nats-server` on a free port with a JetStream
//!   store it owns; `stop`/`restart` keep the port and the store; killed on Drop;
//!   `start_with_config` adds server configuration (TLS, authorization, operator mode) and
//!   the client options that get past it.
//! - [`Agent`] (`agent`): spawns `trace-agent run` against a server with its own data dir,
//!   logs to files (their tail is printed when a test fails), `wait_ready`, `kill` (SIGKILL),
//!   `terminate` (SIGTERM), `restart`; killed on Drop; `start_with_client` for a server that
//!   needs credentials. [`agent_binary`] finds or builds it.
//! - [`Cli`] (`cli`): runs `trace-agent <subcommand> ... --nats-url URL` and captures its
//!   output; [`EntryLine`] is one line of `query --json`.
//! - [`GameTraffic`] (`traffic`): a deterministic generator of what game services send:
//!   msgpack and JSON envelopes, the games' own raw payloads, and garbage for quarantine,
//!   each paired with what the agent is expected to make of it ([`Expect`]).
//! - [`JsPublisher`] (`publish`): JetStream publishing with a bounded window of pending acks
//!   and `Nats-Msg-Id` when the id is known.
//! - [`api_request`] (`api`): one request to the agent's micro-service API, with
//!   [`StoreInfo`] and the [`ApiError`] cases (not up yet, timed out, error reply).
//! - [`recorder_backlog`] (`backlog`): what the agent's durable consumer has not yet acked.
//! - [`eventually`] (`wait`): polling with a deadline, the only way tests wait.
//! - [`disk_usage`] (`disk`): what a directory really takes on disk.
//! - [`http_get`] (`http`): one HTTP/1.1 `GET` to the agent's monitoring endpoints
//!   ([`Agent::http_get`]; every agent serves them on a free port).
//! - [`AlertWatch`] (`alerts`): a subscriber on `trace.alerts.>` decoding each notification.
//!
//! The harness never sleeps to assert: it polls with deadlines and says what it last saw.
#![deny(missing_docs)]

mod agent;
mod alerts;
mod api;
mod backlog;
mod cli;
mod disk;
mod http;
mod logs;
mod nats_server;
mod publish;
mod traffic;
mod wait;

pub use agent::{agent_binary, Agent, AgentOptions};
pub use alerts::{msgpack_to_json, AlertNotice, AlertWatch, ALERT_SUBJECTS};
pub use api::{api_request, api_request_with_timeout, ApiError, StoreInfo};
pub use backlog::{recorder_backlog, Backlog};
pub use cli::{parse_json_lines, Cli, CliOutput, EntryLine};
pub use disk::{disk_usage, DiskUsage};
pub use http::{free_local_addr, http_get, http_get_with_timeout, HttpResponse};
pub use nats_server::NatsServer;
pub use publish::{publish_js, JsPublisher, MAX_ACKS_IN_FLIGHT};
pub use traffic::{Expect, Expected, GameSource, GameTraffic, Outgoing};
pub use wait::{eventually, Deadline};

/// The JetStream stream the agent records from (created by the agent).
pub const STREAM: &str = "TRACE_EVENTS";
/// The durable consumer the agent's recorder reads with.
pub const RECORDER_CONSUMER: &str = "trace-store";
