//! End-to-end tests: each starts its own `nats-server` (JetStream in a temp dir) and the real
//! `trace-agent` binary, publishes game traffic, and checks the results through the real CLI
//! and the NATS API. One test binary; each module is one area of the contract.
//!
//! - `analytics`: a known game session stream gives exact stats, players and patterns over a
//!   range and live; an injected burst is an anomaly at its bucket; `detect` scores a CSV.
//! - `mixed_traffic`: envelopes, raw game payloads and garbage; every query filter, ordering,
//!   limits and paging, quarantine, `get`, `explain`, table output.
//! - `crash`: SIGKILL while ingesting, restart, every event exactly once.
//! - `faults`: five SIGKILLs under load, a nats-server restart under load, a full disk that is
//!   then freed, and a flood with the agent's memory sampled: exactly once, health and alerts.
//! - `shutdown`: SIGTERM drains and exits 0; nothing lost or doubled after a restart.
//! - `retention`: age-based and size-based retention really free disk.
//! - `client`: the publisher client delivers every event once and in order across a NATS
//!   outage; the tracing layer turns spans into linked entries.
//! - `bad_config`: bad configuration is refused up front, naming the key.
//! - `bad_input`: random bytes, truncated msgpack, wrong types, oversized, 100,000-deep,
//!   invalid UTF-8, NaN metrics, skewed clocks, bad ids, the same id twice, among valid events:
//!   each quarantined with a reason or stored by its policy, the valid ones exactly once.
//! - `harness`: the fixtures themselves (server restart keeps its store, publish window).
//! - `service`: the API is a discoverable NATS micro service with the contract's errors.
//! - `demo`: the newcomer's first command runs green and finds the injected faults.
//! - `bench`: `trace-agent bench --quick` runs every phase and reports every figure with its
//!   target, the machine and the command line.
//! - `privacy`: `forget` removes a player everywhere; destructive verbs need the admin token.
//! - `tools`: `tail` sees what comes after it; `export` then `import` (store and bus) gives
//!   the same events; `emit` publishes one.
//! - `monitor`: rules fire and resolve once, health through a NATS outage, `/metrics`
//!   counters against the traffic sent, a silent source's alert, bad rules refused.
//! - `security`: TLS with client certificates, user/password, token, nkey and JWT credentials
//!   files for the agent, the CLI and the publisher client; refusals that say why; no secret
//!   in logs, output or `--help`.

mod analytics;
mod bad_config;
mod bad_input;
mod bench;
mod client;
mod crash;
mod demo;
mod faults;
mod harness;
mod mixed_traffic;
mod monitor;
mod privacy;
mod retention;
mod scale_out;
mod security;
mod service;
mod shutdown;
mod tools;
mod util;
