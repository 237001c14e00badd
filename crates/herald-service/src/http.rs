//! A minimal HTTP endpoint for probes and Prometheus scrapes, shared by both
//! services. It serves a handful of fixed paths and nothing else.
//!
//! It must not hold service logic (what a path answers is the service's
//! `route`) and must not serve the gRPC API, which tonic serves.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use herald_core::backoff::Backoff;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What a path answers: status, content type, body.
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Reply {
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }

    pub fn metrics(body: String) -> Self {
        Self {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body,
        }
    }
}

/// Serves `route(path)` on `listener` until `shutdown` is cancelled.
pub async fn serve<F, Fut>(listener: TcpListener, route: F, shutdown: CancellationToken)
where
    F: Fn(String) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Reply> + Send + 'static,
{
    while let Some((stream, _)) = accept_next(|| listener.accept(), &shutdown).await {
        let route = route.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let route = route.clone();
                async move {
                    let reply = route(request.uri().path().to_owned()).await;
                    let response = Response::builder()
                        .status(reply.status)
                        .header("content-type", reply.content_type)
                        .body(Full::new(Bytes::from(reply.body)))
                        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())));
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The shortest wait after a failed accept; the waits double (with jitter:
/// herald-core's [`Backoff`]) after each further failure in a row, up to
/// [`ACCEPT_BACKOFF_MAX`].
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// The longest wait between two accepts that fail.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The next accepted connection, or `None` once `shutdown` is cancelled.
///
/// An accept error such as EMFILE (the process ran out of file
/// descriptors) comes back at once on the next call, so retrying at once
/// would spin a core and flood the log while the condition lasts. Instead
/// each error is logged and followed by a wait of 10–20 ms, doubling to at
/// most 1 s, and the waits start over after a connection is accepted (mini-redis's
/// `server.rs` does the same, but gives up; an endpoint for probes should
/// rather come back once descriptors are free).
async fn accept_next<T, F, Fut>(mut accept: F, shutdown: &CancellationToken) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::io::Result<T>>,
{
    let mut backoff = Backoff::between(ACCEPT_BACKOFF_MIN, ACCEPT_BACKOFF_MAX);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return None,
            accepted = accept() => accepted,
        };
        match accepted {
            Ok(connection) => return Some(connection),
            Err(error) => {
                let wait = backoff.next_delay();
                tracing::warn!(%error, retry_in = ?wait, "cannot accept an HTTP connection; backing off");
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

/// Installs the process-wide Prometheus recorder (binaries only; libraries
/// just emit metrics) with buckets for Herald's histograms.
pub fn install_prometheus()
-> Result<metrics_exporter_prometheus::PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".into()),
            &[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ],
        )?
        .set_buckets_for_metric(
            Matcher::Full("herald_db_write_batch_size".into()),
            &[1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 512.0, 1024.0],
        )?
        .install_recorder()
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::time::Instant;

    use super::*;

    /// An accept that fails `failures` times, then succeeds, recording when
    /// it was called.
    fn flaky_accept(
        failures: usize,
        calls: Arc<Mutex<Vec<Instant>>>,
    ) -> impl FnMut() -> std::future::Ready<std::io::Result<()>> {
        scripted_accept(move |call| call >= failures, calls)
    }

    /// An accept whose call number `n` (from 0) succeeds when `succeeds(n)`.
    fn scripted_accept(
        succeeds: impl Fn(usize) -> bool,
        calls: Arc<Mutex<Vec<Instant>>>,
    ) -> impl FnMut() -> std::future::Ready<std::io::Result<()>> {
        move || {
            let mut calls = calls.lock().unwrap();
            let call = calls.len();
            calls.push(Instant::now());
            std::future::ready(if succeeds(call) {
                Ok(())
            } else {
                Err(std::io::Error::other("Too many open files (os error 24)"))
            })
        }
    }

    /// The waits between calls, in whole milliseconds.
    fn waits_ms(calls: &[Instant]) -> Vec<u128> {
        calls
            .windows(2)
            .map(|pair| (pair[1] - pair[0]).as_millis())
            .collect()
    }

    /// Each wait lies between its un-jittered delay and twice that (the
    /// jitter), the delay doubling from 10 ms and stopping at half the cap,
    /// and no wait passes 1 s. The timer rounds a sleep up to the next
    /// millisecond.
    fn assert_backs_off(waits: &[u128]) {
        let mut base = 10;
        for (n, wait) in waits.iter().enumerate() {
            let most = (base * 2).min(1_000) + 1;
            assert!(
                (base..=most).contains(wait),
                "wait {n} is {wait} ms, expected {base}..={most} ms (all: {waits:?})"
            );
            base = (base * 2).min(500);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn accept_errors_back_off_from_10_ms_doubling_to_1_s() {
        for _ in 0..20 {
            let calls = Arc::new(Mutex::new(Vec::new()));
            let shutdown = CancellationToken::new();
            let accepted = accept_next(flaky_accept(9, calls.clone()), &shutdown).await;
            assert_eq!(accepted, Some(()));
            let waits = waits_ms(&calls.lock().unwrap());
            assert_eq!(waits.len(), 9, "one wait after each failure");
            assert_backs_off(&waits);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_back_off_starts_over_after_a_connection() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let shutdown = CancellationToken::new();
        // Calls 0-2 fail, 3 succeeds, 4-5 fail, 6 succeeds.
        let mut accept = scripted_accept(|call| call == 3 || call == 6, calls.clone());
        assert_eq!(accept_next(&mut accept, &shutdown).await, Some(()));
        assert_eq!(accept_next(&mut accept, &shutdown).await, Some(()));
        let calls = calls.lock().unwrap();
        let waits = waits_ms(&calls[3..]);
        // No wait after the success, then 10-20 ms again, not 80-160 ms.
        assert_eq!(waits.len(), 3);
        assert_eq!(waits[0], 0);
        assert_backs_off(&waits[1..]);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_a_back_off() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let shutdown = CancellationToken::new();
        let cancel = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            cancel.cancel();
        });
        let start = Instant::now();
        let accepted = accept_next(flaky_accept(usize::MAX, calls.clone()), &shutdown).await;
        assert_eq!(accepted, None);
        assert_eq!(start.elapsed(), Duration::from_millis(500));
    }
}
