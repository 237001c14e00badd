//! A fast HTTP receiver: answers 200 to everything and records when each
//! delivery id (`Webhook-Id`) arrived.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use uuid::Uuid;

#[derive(Default)]
struct State {
    count: AtomicUsize,
    arrivals: Mutex<Vec<(Uuid, Instant)>>,
}

/// The receiver; stops when dropped... never: it lives for the whole run.
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl Receiver {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        let shared = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(&state, request).await) }
                    });
                    // HTTP/1.1 only, as the sender and the raw HTTP stage's
                    // client speak it over plain TCP: the auto builder's
                    // version sniffing per connection would only add cost.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self { addr, state })
    }

    /// Requests received since the last `take`.
    pub fn count(&self) -> usize {
        self.state.count.load(Ordering::Relaxed)
    }

    /// The recorded arrivals, and resets the count.
    pub fn take(&self) -> Vec<(Uuid, Instant)> {
        let arrivals = std::mem::take(&mut *self.state.arrivals.lock().expect("arrivals"));
        self.state.count.store(0, Ordering::Relaxed);
        arrivals
    }
}

async fn handle(state: &State, request: Request<hyper::body::Incoming>) -> Response<Empty<Bytes>> {
    let now = Instant::now();
    let id = request
        .headers()
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| Uuid::parse_str(s).ok());
    // Read the body to the end so the connection stays usable (keep-alive).
    let _ = request.into_body().collect().await;
    if let Some(id) = id {
        state.arrivals.lock().expect("arrivals").push((id, now));
    }
    state.count.fetch_add(1, Ordering::Relaxed);
    Response::new(Empty::new())
}
