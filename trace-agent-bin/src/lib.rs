//! # trace-agent-bin: the `trace-agent` sidecar and CLI
//!
//! The binary is wiring: no algorithm lives here.
//! - [`config`]: `AgentConfig`, layered file < `TRACE_AGENT_*` env < flags, validated up front.
//! - [`recorder`]: the ingest path, JetStream batch -> decode -> dedupe -> store -> flush -> ack.
//! - [`api`]: the NATS micro service on `trace.api.<verb>` and the CLI's client for it.
//! - [`analytics`]: the live analytics driver (own durable consumer, checkpointed state).
//! - [`agent`]: `trace-agent run`: starts recorder, API and store maintenance; drains on stop.
//! - [`cli`]: argument definitions and the client commands.
//! - [`cluster`]: several instances: discovery, scatter-gather and the merge of answers.
//! - [`output`]: tables for people, JSON Lines for programs.
//! - [`analytics_cli`]: the analytics commands (stats, players, patterns, trends, anomalies, detect).
//! - [`demo`]: `trace-agent demo`, the newcomer's first command.
//! - [`bench`]: `trace-agent bench`, the benchmark suite against the README's targets.
//! - [`sim`]: the simulated game (demo and tests).
//! - [`tools`]: tail, emit, export, import.
//! - [`top`]: the live terminal view.
#![deny(missing_docs)]

pub mod agent;
pub mod analytics;
pub mod analytics_cli;
pub mod api;
pub mod bench;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod output;
pub mod recorder;
pub mod sim;
pub mod tools;
pub mod top;
