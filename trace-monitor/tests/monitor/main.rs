//! Integration tests of trace-monitor: rules with a fake clock, built-in rules through the
//! real metrics, health rollup, `/metrics` parsed as Prometheus text, HTTP over a socket,
//! and resource usage on this machine.

mod builtin;
mod health;
mod http;
mod metrics;
mod resources;
mod rules;
mod util;
