//! A real HTTP receiver on loopback that records every request and answers
//! as the test tells it to.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioExecutor;
use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto;
use tokio::sync::Notify;

/// One request as the receiver got it.
#[derive(Debug, Clone)]
pub struct Received {
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    pub method: String,
    /// Path and query, exactly as sent.
    pub uri: String,
    pub headers: HashMap<String, String>,
    pub body: Bytes,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// How to answer.
#[derive(Debug, Clone, Copy)]
pub struct Reply {
    pub status: u16,
    /// Wait this long before answering.
    pub delay: Duration,
    /// The response body; `None` answers `status N`.
    pub body: Option<&'static str>,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            delay: Duration::ZERO,
            body: None,
        }
    }

    pub fn after(delay: Duration, status: u16) -> Self {
        Self {
            status,
            delay,
            body: None,
        }
    }

    /// Answers `status` with `body`.
    pub fn with_body(status: u16, body: &'static str) -> Self {
        Self {
            body: Some(body),
            ..Self::status(status)
        }
    }
}

type Behaviour = dyn Fn(&Received, usize) -> Reply + Send + Sync;

/// A recording HTTP server (HTTP/1.1, or HTTPS with HTTP/1.1 or HTTP/2).
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Received>>>,
    arrived: Arc<Notify>,
}

impl Receiver {
    /// Answers 200 to everything.
    pub async fn ok() -> Self {
        Self::start(|_, _| Reply::status(200)).await
    }

    /// `behaviour(request, n)` decides the answer; `n` counts the earlier
    /// requests that carried the same `Webhook-Id` header (0 for the first).
    pub async fn start(
        behaviour: impl Fn(&Received, usize) -> Reply + Send + Sync + 'static,
    ) -> Self {
        Self::start_with(None, behaviour).await
    }

    /// An HTTPS receiver with `tls`; HTTP/1.1 or HTTP/2 as ALPN decides.
    pub async fn start_tls(
        tls: Arc<rustls::ServerConfig>,
        behaviour: impl Fn(&Received, usize) -> Reply + Send + Sync + 'static,
    ) -> Self {
        Self::start_with(Some(tokio_rustls::TlsAcceptor::from(tls)), behaviour).await
    }

    async fn start_with(
        tls: Option<tokio_rustls::TlsAcceptor>,
        behaviour: impl Fn(&Received, usize) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("receiver address");
        let requests: Arc<Mutex<Vec<Received>>> = Arc::default();
        let arrived = Arc::new(Notify::new());
        let behaviour: Arc<Behaviour> = Arc::new(behaviour);
        let receiver = Self {
            addr,
            requests: requests.clone(),
            arrived: arrived.clone(),
        };
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    break;
                };
                let tls = tls.clone();
                let requests = requests.clone();
                let arrived = arrived.clone();
                let behaviour = behaviour.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                        let requests = requests.clone();
                        let arrived = arrived.clone();
                        let behaviour = behaviour.clone();
                        async move {
                            let at = Instant::now();
                            let version = format!("{:?}", request.version());
                            let method = request.method().to_string();
                            let uri = request
                                .uri()
                                .path_and_query()
                                .map(|p| p.as_str().to_owned())
                                .unwrap_or_default();
                            let headers = request
                                .headers()
                                .iter()
                                .map(|(k, v)| {
                                    (
                                        k.as_str().to_owned(),
                                        v.to_str().unwrap_or_default().to_owned(),
                                    )
                                })
                                .collect();
                            let body = request.into_body().collect().await?.to_bytes();
                            let received = Received {
                                version,
                                method,
                                uri,
                                headers,
                                body,
                                at,
                            };
                            let reply = {
                                let mut all = requests.lock().expect("receiver lock");
                                let id = received.header("webhook-id").map(str::to_owned);
                                let earlier = all
                                    .iter()
                                    .filter(|r| {
                                        id.is_some()
                                            && r.header("webhook-id").map(str::to_owned) == id
                                    })
                                    .count();
                                let reply = behaviour(&received, earlier);
                                all.push(received);
                                reply
                            };
                            arrived.notify_waiters();
                            if !reply.delay.is_zero() {
                                tokio::time::sleep(reply.delay).await;
                            }
                            Ok::<_, hyper::Error>(
                                Response::builder()
                                    .status(reply.status)
                                    .body(Full::new(match reply.body {
                                        Some(body) => Bytes::from_static(body.as_bytes()),
                                        None => Bytes::from(format!("status {}", reply.status)),
                                    }))
                                    .expect("response"),
                            )
                        }
                    });
                    let server = auto::Builder::new(TokioExecutor::new());
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ =
                                    server.serve_connection(TokioIo::new(stream), service).await;
                            }
                        }
                        None => {
                            let _ = server.serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                });
            }
        });
        receiver
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn requests(&self) -> Vec<Received> {
        self.requests.lock().expect("receiver lock").clone()
    }

    /// Requests that carried this delivery id.
    pub fn for_delivery(&self, id: &str) -> Vec<Received> {
        self.requests()
            .into_iter()
            .filter(|r| r.header("webhook-id") == Some(id))
            .collect()
    }

    /// Waits until at least `n` requests arrived; panics after `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.arrived.notified();
            let requests = self.requests();
            if requests.len() >= n {
                return requests;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "expected {n} requests within {timeout:?}, got {}",
                requests.len()
            );
            let _ = tokio::time::timeout(left.min(Duration::from_millis(100)), notified).await;
        }
    }
}

/// A receiver that keeps each request head exactly as it arrived on the
/// wire (header names in the sender's spelling), answering 200 and closing
/// the connection. Only for HTTP/1.1 requests with a `content-length` body.
#[derive(Clone)]
pub struct HeadRecorder {
    pub addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
    arrived: Arc<Notify>,
}

impl HeadRecorder {
    pub async fn start() -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind head recorder");
        let recorder = Self {
            addr: listener.local_addr().expect("recorder address"),
            heads: Arc::default(),
            arrived: Arc::new(Notify::new()),
        };
        let (heads, arrived) = (recorder.heads.clone(), recorder.arrived.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (heads, arrived) = (heads.clone(), arrived.clone());
                tokio::spawn(async move {
                    let mut raw = Vec::new();
                    let mut buf = [0u8; 4096];
                    let end = loop {
                        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                            break end + 4;
                        }
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => raw.extend_from_slice(&buf[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            let (name, value) = l.split_once(':')?;
                            name.eq_ignore_ascii_case("content-length")
                                .then(|| value.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    while raw.len() < end + length {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => raw.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = stream
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                    heads.lock().unwrap().push(head);
                    arrived.notify_waiters();
                });
            }
        });
        recorder
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Waits until `n` heads arrived (or panics after `timeout`).
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.arrived.notified();
            {
                let heads = self.heads.lock().unwrap();
                if heads.len() >= n {
                    return heads.clone();
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{n} request heads did not arrive within {timeout:?}"
            );
            let _ = tokio::time::timeout(left, notified).await;
        }
    }
}
