//! The HTTP endpoints (feature `http`, axum on tokio):
//!
//! | path | answer |
//! |---|---|
//! | `GET /metrics` | Prometheus text format 0.0.4 (`text/plain; version=0.0.4`) |
//! | `GET /health` | the health report as JSON; 200 when healthy or degraded, 503 when unhealthy |
//! | `GET /health/live` | 200 while the process serves (liveness) |
//! | `GET /health/ready` | 200 when ready (NATS connected, store not failing), else 503 |
//!
//! Like the rest of the agent's services, the server takes a bound listener and a shutdown
//! future: [`bind_http`] reports a bind error with the address, [`serve_http`] runs until
//! `shutdown` completes and lets in-flight requests finish.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Serialize;
use tokio::net::TcpListener;

use crate::error::MonitorError;
use crate::health::HealthLevel;
use crate::metrics::PROMETHEUS_CONTENT_TYPE;
use crate::monitor::MonitorSource;

type Source = Arc<dyn MonitorSource>;

/// Binds the HTTP listener; the error names the address.
pub async fn bind_http(addr: SocketAddr) -> Result<TcpListener, MonitorError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| MonitorError::Bind { addr, source })
}

/// The routes, for a binary that wants to mount them in its own server.
pub fn router(source: Source) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .with_state(source)
}

/// Serves the endpoints on `listener` until `shutdown` completes.
pub async fn serve_http(
    listener: TcpListener,
    source: Source,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), MonitorError> {
    let addr = listener
        .local_addr()
        .map_or_else(|_| "an unknown address".to_string(), |a| a.to_string());
    axum::serve(listener, router(source))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| MonitorError::Serve { addr, source })
}

fn json(status: StatusCode, body: &impl Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the response: {e}"),
        )
            .into_response(),
    }
}

async fn metrics(State(source): State<Source>) -> Response {
    match source.current_metrics_text() {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn health(State(source): State<Source>) -> Response {
    let report = source.current_health();
    let status = if report.status == HealthLevel::Unhealthy {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    json(status, &report)
}

async fn live() -> Response {
    json(StatusCode::OK, &serde_json::json!({"status": "live"}))
}

async fn ready(State(source): State<Source>) -> Response {
    let report = source.current_health();
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(
        status,
        &serde_json::json!({"ready": report.ready, "status": report.status}),
    )
}
