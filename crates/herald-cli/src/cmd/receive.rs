//! `herald receive`: a demo webhook target. It prints every request it gets
//! (time, method, path and query, headers, body) and answers a fixed status;
//! `--fail-first N` answers 500 to the first N requests so retries show.
//!
//! Plain hyper 1 (HTTP/1.1) on tokio; it is a demo, not a production server.
//!
//! Unlike every other command it needs no server: it must never talk to
//! Herald's API, RabbitMQ or Postgres.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow};
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::output::format_unix_ms;

/// How the receiver answers.
#[derive(Debug, Clone, Copy)]
pub struct ReceiverOptions {
    /// Status of every answer after the first `fail_first` ones.
    pub status: StatusCode,
    /// How many requests get 500 first.
    pub fail_first: u64,
}

/// Where the receiver writes its report of each request.
pub type Report = Arc<dyn Fn(String) + Send + Sync>;

/// Writes each report to standard output.
pub fn stdout_report() -> Report {
    Arc::new(|text: String| {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    })
}

struct State {
    options: ReceiverOptions,
    count: AtomicU64,
    report: Report,
}

/// Serves requests on `listener` until `shutdown` resolves. Connections still
/// open then are dropped with the runtime.
pub async fn serve(
    listener: TcpListener,
    options: ReceiverOptions,
    report: Report,
    shutdown: impl Future<Output = ()>,
) {
    let state = Arc::new(State {
        options,
        count: AtomicU64::new(0),
        report,
    });
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // E.g. out of file descriptors: wait instead of spinning.
                    eprintln!("herald receive: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(Arc::clone(&state), peer, req));
            // A client that goes away mid-request is not worth a message.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(
    state: Arc<State>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let number = state.count.fetch_add(1, Ordering::SeqCst) + 1;
    let (parts, body) = req.into_parts();
    let (body, body_error) = match body.collect().await {
        Ok(collected) => (collected.to_bytes(), None),
        Err(e) => (Bytes::new(), Some(e.to_string())),
    };
    let (status, answer) = if number <= state.options.fail_first {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "failing on purpose: request {number} of the first {}",
                state.options.fail_first
            ),
        )
    } else {
        (state.options.status, "ok".to_owned())
    };
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let mut text = format_request(number, now_ms, peer, &parts, &body, status);
    if let Some(e) = body_error {
        let _ = writeln!(text, "(reading the body failed: {e})");
    }
    (state.report)(text);

    let mut response = Response::new(Full::new(Bytes::from(answer)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(response)
}

/// The printed report of one request.
pub fn format_request(
    number: u64,
    now_unix_ms: i64,
    peer: SocketAddr,
    parts: &hyper::http::request::Parts,
    body: &[u8],
    answered: StatusCode,
) -> String {
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.to_string(), ToString::to_string);
    let mut text = format!(
        "--- #{number} {} from {peer}: {} {target} -> answered {}\n",
        format_unix_ms(now_unix_ms),
        parts.method,
        answered.as_u16()
    );
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        let _ = writeln!(text, "{name}: {value}");
    }
    text.push('\n');
    if body.is_empty() {
        text.push_str("(no body)\n");
    } else {
        text.push_str(&String::from_utf8_lossy(body));
        if !body.ends_with(b"\n") {
            text.push('\n');
        }
    }
    text.push('\n');
    text
}

#[derive(Debug, Args)]
pub struct ReceiveArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub listen: SocketAddr,
    /// Status code to answer with.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u16).range(100..=599))]
    pub status: u16,
    /// Answer 500 to the first N requests (to show retries).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub fail_first: u64,
}

/// `herald receive`: serves until Ctrl-C or SIGTERM.
pub async fn run(args: ReceiveArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let local = listener.local_addr()?;
    let status = hyper::StatusCode::from_u16(args.status)
        .map_err(|_| anyhow!("--status {} is not an HTTP status code", args.status))?;
    if args.fail_first > 0 {
        println!(
            "herald receive: listening on http://{local}; answering 500 to the first {} request(s), then {status}; Ctrl-C stops",
            args.fail_first
        );
    } else {
        println!("herald receive: listening on http://{local}; answering {status}; Ctrl-C stops");
    }
    let options = ReceiverOptions {
        status,
        fail_first: args.fail_first,
    };
    serve(listener, options, stdout_report(), shutdown_signal()).await;
    println!("herald receive: stopped");
    Ok(())
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    // Without a handler Ctrl-C would kill the process anyway.
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use crate::cli::{Command, parse};

    #[test]
    fn receive_defaults_and_limits() {
        let Command::Receive(a) = parse(&["receive"]).unwrap().command else {
            panic!()
        };
        assert_eq!(a.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(a.status, 200);
        assert_eq!(a.fail_first, 0);
        assert!(parse(&["receive", "--status", "99"]).is_err());
        assert!(parse(&["receive", "--status", "600"]).is_err());
    }
}
