//! A tiny HTTP/1.1 client for the agent's monitoring endpoints: one `GET` over a fresh
//! `TcpStream` with `Connection: close`, answering status, headers and body (chunked bodies
//! decoded). Enough for `/metrics` and `/health`, and no dependency on an HTTP crate.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};

/// The default time one request may take (connect, send, read to the end).
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// What the server answered.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status code (`200`, `503`, ...).
    pub status: u16,
    /// Header names (lower-cased) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body as text (lossy UTF-8).
    pub body: String,
}

impl HttpResponse {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_str(&self.body)
            .with_context(|| format!("the body is not JSON: {}", self.describe()))
    }

    /// A summary for assertion messages.
    pub fn describe(&self) -> String {
        let mut body = self.body.clone();
        if body.len() > 2000 {
            let mut end = 2000;
            while !body.is_char_boundary(end) {
                end -= 1;
            }
            body.truncate(end);
            body.push_str(" ...");
        }
        format!("HTTP {} {:?}\n{body}", self.status, self.headers)
    }
}

/// `GET http://addr/path` with a 5 s limit.
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<HttpResponse> {
    http_get_with_timeout(addr, path, HTTP_TIMEOUT).await
}

/// [`http_get`] with a chosen limit (applies to connecting and to each read and write).
pub async fn http_get_with_timeout(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> anyhow::Result<HttpResponse> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || blocking_get(addr, &path, timeout))
        .await
        .map_err(|e| anyhow!("the HTTP request task failed: {e}"))?
}

fn blocking_get(addr: SocketAddr, path: &str, timeout: Duration) -> anyhow::Result<HttpResponse> {
    let what = format!("GET http://{addr}{path}");
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).with_context(|| format!("{what}: connect"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: trace-tests\r\nAccept: */*\r\n\
         Connection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .with_context(|| format!("{what}: send"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .with_context(|| format!("{what}: read"))?;
    parse_response(&raw).with_context(|| {
        format!(
            "{what}: bad response: {}",
            String::from_utf8_lossy(&raw[..raw.len().min(500)])
        )
    })
}

fn parse_response(raw: &[u8]) -> anyhow::Result<HttpResponse> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("no end of headers"))?;
    let head = std::str::from_utf8(&raw[..split]).context("headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        bail!("not an HTTP/1.x status line: {status_line:?}");
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("no status code in {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            Some((name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        })
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        body = dechunk(&body)?;
    } else if let Some((_, len)) = headers.iter().find(|(n, _)| n == "content-length") {
        let len: usize = len.parse().context("bad content-length")?;
        if body.len() < len {
            bail!("body cut short: {} of {len} bytes", body.len());
        }
        body.truncate(len);
    }
    Ok(HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("chunk size line not terminated"))?;
        let size_text = std::str::from_utf8(&data[..line_end]).context("chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .with_context(|| format!("bad chunk size {size_text:?}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            bail!("chunk cut short");
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// An address on 127.0.0.1 nothing listens on right now (the kernel picks the port; the
/// listener is closed at once, so another process could take it before it is used).
pub fn free_local_addr() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    listener.local_addr().context("local addr")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_responses() {
        let plain = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
                      content-length: 2\r\n\r\n{}";
        let r = parse_response(plain).expect("plain");
        assert_eq!(r.status, 503);
        assert_eq!(r.header("Content-Type"), Some("application/json"));
        assert_eq!(r.body, "{}");

        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                        5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        let r = parse_response(chunked).expect("chunked");
        assert_eq!(r.status, 200);
        assert_eq!(r.body, "hello world");
    }
}
