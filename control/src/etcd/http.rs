//! HTTP/1.1 to etcd's gateway: endpoint parsing, one connection per request through hyper's
//! low-level client (keyhop talks to etcd a few times a second at most, so pooling would buy
//! nothing), and the choice of endpoint: tried in order, sticky to the last one that answered.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::EtcdError;
use super::json::error_text;

/// One `http://host:port` endpoint.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    /// As configured, without a trailing slash (for messages).
    pub url: String,
    host: String,
    port: u16,
}

impl Endpoint {
    /// `host:port` for the Host header (IPv6 addresses in brackets).
    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Parses `http://host:port` (a trailing `/` is allowed; no path, no https yet).
pub(crate) fn parse_endpoint(s: &str) -> Result<Endpoint, String> {
    let url = s.trim().trim_end_matches('/').to_string();
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(if url.starts_with("https://") {
            format!("etcd endpoint {s:?}: https is not supported yet; use an http:// endpoint")
        } else {
            format!("etcd endpoint {s:?} must look like http://host:port")
        });
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && !h.contains('/') => (h, p),
        _ => {
            return Err(format!(
                "etcd endpoint {s:?} must look like http://host:port (the port is required)"
            ));
        }
    };
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("etcd endpoint {s:?}: {port:?} is not a port (1-65535)"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
    Ok(Endpoint { url, host, port })
}

/// What one request got back.
pub(crate) enum Answer {
    /// A whole response body (unary calls, and any error status).
    Full(Bytes),
    /// A 2xx response whose body is read as a stream; the task drives the connection.
    Stream(Incoming, JoinHandle<()>),
}

/// Why one endpoint did not give an answer.
enum Fail {
    /// Not reachable; try the next endpoint.
    Down(String),
    /// Reachable but unable to serve now (503/504); try the next endpoint.
    Busy(String),
    /// Refused the request: the same would happen elsewhere.
    Refused(String),
}

/// The endpoints and which one answered last.
pub(crate) struct Endpoints {
    list: Vec<Endpoint>,
    current: AtomicUsize,
    timeout: Duration,
}

impl Endpoints {
    /// Validated endpoints (at least one) with the per-attempt timeout.
    pub fn new(endpoints: &[String], timeout: Duration) -> Result<Endpoints, String> {
        if endpoints.is_empty() {
            return Err("no etcd endpoints: give at least one, like http://127.0.0.1:2379".into());
        }
        let list = endpoints.iter().map(|e| parse_endpoint(e)).collect::<Result<Vec<_>, _>>()?;
        Ok(Endpoints { list, current: AtomicUsize::new(0), timeout })
    }

    /// The per-attempt timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// POSTs `body` to `path`, trying each endpoint from the last good one, each within the
    /// timeout. With `stream`, a 2xx body is handed back unread (the timeout then covers only
    /// the response head). Returns the answering endpoint's URL with the answer.
    pub async fn post(
        &self,
        path: &str,
        body: &Value,
        stream: bool,
    ) -> Result<(String, Answer), EtcdError> {
        let payload =
            Bytes::from(serde_json::to_vec(body).map_err(|e| EtcdError::Server(e.to_string()))?);
        let n = self.list.len();
        let start = self.current.load(Ordering::Relaxed) % n;
        let mut last = EtcdError::Timeout;
        for i in 0..n {
            let idx = (start + i) % n;
            let ep = &self.list[idx];
            match tokio::time::timeout(self.timeout, attempt(ep, path, payload.clone(), stream))
                .await
            {
                Ok(Ok(answer)) => {
                    self.current.store(idx, Ordering::Relaxed);
                    return Ok((ep.url.clone(), answer));
                }
                Ok(Err(Fail::Refused(msg))) => {
                    self.current.store(idx, Ordering::Relaxed);
                    return Err(EtcdError::Server(format!(
                        "etcd at {} refused {path}: {msg}",
                        ep.url
                    )));
                }
                Ok(Err(Fail::Busy(msg))) => {
                    last = EtcdError::Server(format!(
                        "etcd at {} could not serve {path}: {msg}",
                        ep.url
                    ));
                }
                Ok(Err(Fail::Down(msg))) => {
                    last = EtcdError::Unreachable(format!("etcd at {}: {msg}", ep.url));
                }
                Err(_) => {
                    tracing::warn!(endpoint = %ep.url, path, timeout = ?self.timeout, "etcd did not answer in time");
                    last = EtcdError::Timeout;
                }
            }
        }
        Err(last)
    }
}

/// One request on a fresh connection.
async fn attempt(ep: &Endpoint, path: &str, payload: Bytes, stream: bool) -> Result<Answer, Fail> {
    let tcp = TcpStream::connect((ep.host.as_str(), ep.port))
        .await
        .map_err(|e| Fail::Down(format!("cannot connect: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(tcp))
            .await
            .map_err(|e| Fail::Down(format!("HTTP handshake: {e}")))?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::post(path)
        .header(hyper::header::HOST, ep.authority())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(payload))
        .map_err(|e| Fail::Refused(format!("bad request: {e}")))?;
    let resp = match sender.send_request(req).await {
        Ok(r) => r,
        Err(e) => {
            driver.abort();
            return Err(Fail::Down(format!("request failed: {e}")));
        }
    };
    let status = resp.status();
    if stream && status.is_success() {
        return Ok(Answer::Stream(resp.into_body(), driver));
    }
    let body = resp.into_body().collect().await.map(|b| b.to_bytes());
    driver.abort();
    let body = body.map_err(|e| Fail::Down(format!("reading the response: {e}")))?;
    if status.is_success() {
        Ok(Answer::Full(body))
    } else if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::GATEWAY_TIMEOUT {
        Err(Fail::Busy(format!("{status}: {}", error_text(&body))))
    } else {
        Err(Fail::Refused(format!("{status}: {}", error_text(&body))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_must_be_http_host_port() {
        let e = parse_endpoint("http://127.0.0.1:2379/").expect("valid");
        assert_eq!(
            (e.url.as_str(), e.host.as_str(), e.port),
            ("http://127.0.0.1:2379", "127.0.0.1", 2379)
        );
        let e = parse_endpoint("http://[::1]:2379").expect("valid");
        assert_eq!((e.host.as_str(), e.port), ("::1", 2379));
        let err = |s| parse_endpoint(s).expect_err("invalid");
        assert_eq!(
            err("https://e:2379"),
            "etcd endpoint \"https://e:2379\": https is not supported yet; use an http:// endpoint"
        );
        assert_eq!(
            err("127.0.0.1:2379"),
            "etcd endpoint \"127.0.0.1:2379\" must look like http://host:port"
        );
        assert_eq!(
            err("http://e"),
            "etcd endpoint \"http://e\" must look like http://host:port (the port is required)"
        );
        assert_eq!(
            err("http://e:99999"),
            "etcd endpoint \"http://e:99999\": \"99999\" is not a port (1-65535)"
        );
        assert!(Endpoints::new(&[], Duration::from_secs(1)).is_err());
    }
}
