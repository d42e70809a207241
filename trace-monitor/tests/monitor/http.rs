//! The HTTP endpoints over a real socket on 127.0.0.1:0, spoken to with raw HTTP/1.1.

use std::net::SocketAddr;
use std::sync::Arc;

use chrono::Utc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use trace_core::Severity;
use trace_monitor::{bind_http, serve_http, Monitor, MonitorConfig, MonitorError};

use crate::util::entry;

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

async fn get(addr: SocketAddr, path: &str) -> Reply {
    let mut stream = TcpStream::connect(addr).await.expect("connects");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("sends");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("reads");
    let text = String::from_utf8(raw).expect("utf-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_string(),
    }
}

#[tokio::test]
async fn endpoints_answer_over_a_real_socket() {
    let monitor =
        Arc::new(Monitor::new(MonitorConfig::default(), &[], None, None).expect("monitor"));
    let listener = bind_http("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("binds");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_http(listener, monitor.clone(), async {
        let _ = stopped.await;
    }));

    // Not connected to NATS yet: unhealthy, not ready, but live.
    let r = get(addr, "/health").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let json: serde_json::Value = serde_json::from_str(&r.body).expect("json");
    assert_eq!(json["status"], "unhealthy");
    assert!(json["checks"].as_array().is_some_and(|c| !c.is_empty()));
    assert_eq!(get(addr, "/health/ready").await.status, 503);
    assert_eq!(get(addr, "/health/live").await.status, 200);

    let now = Utc::now();
    monitor.metrics().set_nats_connected(true, now);
    monitor.metrics().record_store_write_ok(now);
    monitor.metrics().set_consumer_lag(20_000); // degraded, still 200
    monitor.metrics().add_received(7);
    monitor.metrics().add_stored(7);
    let batch: Vec<_> = (0..7)
        .map(|_| entry("npc1", "npc.move", Severity::Info))
        .collect();
    monitor.metrics().observe_entries(&batch, now);

    let r = get(addr, "/health").await;
    assert_eq!(r.status, 200);
    let json: serde_json::Value = serde_json::from_str(&r.body).expect("json");
    assert_eq!(json["status"], "degraded");
    let r = get(addr, "/health/ready").await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("\"ready\":true"), "{}", r.body);

    let r = get(addr, "/metrics").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/plain; version=0.0.4"));
    let scrape =
        prometheus_parse::Scrape::parse(r.body.lines().map(|l| Ok(l.to_string()))).expect("parses");
    let received = scrape
        .samples
        .iter()
        .find(|s| s.metric == "trace_agent_events_received_total")
        .map(|s| s.value.clone());
    assert_eq!(received, Some(prometheus_parse::Value::Counter(7.0)));
    let npc1 = scrape.samples.iter().find(|s| {
        s.metric == "trace_source_events_total" && s.labels.get("source") == Some("npc1")
    });
    assert_eq!(
        npc1.map(|s| s.value.clone()),
        Some(prometheus_parse::Value::Counter(7.0))
    );

    assert_eq!(get(addr, "/nope").await.status, 404);

    let _ = stop.send(());
    server.await.expect("joins").expect("stops cleanly");
}

#[tokio::test]
async fn a_taken_address_is_reported_with_the_address() {
    let first = bind_http("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("binds");
    let addr = first.local_addr().expect("addr");
    match bind_http(addr).await {
        Err(e @ MonitorError::Bind { .. }) => {
            assert!(e.to_string().contains(&addr.to_string()), "{e}");
        }
        other => panic!("expected a bind error, got {other:?}"),
    }
}
