//! A minimal HTTP endpoint for probes and Prometheus scrapes, shared by both
//! services. It serves a handful of fixed paths and nothing else.

use std::convert::Infallible;
use std::future::Future;

use bytes::Bytes;
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
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else { continue };
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
