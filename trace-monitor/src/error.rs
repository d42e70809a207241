//! The crate's error type: each variant names what failed and with what input.

use std::net::SocketAddr;

use thiserror::Error;

/// What can go wrong in the monitor.
#[derive(Debug, Error)]
pub enum MonitorError {
    /// A threshold rule from the config is refused; says which rule and why.
    #[error("rule {rule:?}: {problem}")]
    InvalidRule {
        /// The rule's `name` (or its position when it has none).
        rule: String,
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// A monitor setting is out of range.
    #[error("monitor setting `{setting}`: {problem}")]
    InvalidConfig {
        /// The setting's key.
        setting: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// The metrics library refused a registration or encoding.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The HTTP listener could not bind.
    #[error("cannot listen for HTTP on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The HTTP server stopped with an error.
    #[error("HTTP server on {addr} failed: {source}")]
    Serve {
        /// The address it served on.
        addr: String,
        /// Why it failed.
        source: std::io::Error,
    },
}
