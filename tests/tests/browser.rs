//! A real browser calls the JSON door from another origin (docs/api.md,
//! "Browsers on other origins (CORS)"): Debian's headless Chromium loads a
//! page from a page server on one loopback port, and the page's script
//! fires through ingest on another port, once at an ingest that allows the
//! page's origin (`HERALD_CORS_ORIGINS`) and once at one that does not. The
//! browser's own CORS checks decide: the first call is answered and
//! delivered, the second fails in the page and reaches nothing. The page
//! posts what it saw back to the page server, which the test waits for.
//!
//! A missing Chromium fails the test with the package to install: CI
//! installs it (.ci/run), so a skip would only hide that the test never ran.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use herald_ingest::{AuthMode, BootstrapKey, CorsOrigins};
use herald_tests::{Receiver, TestEnv};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::sync::Notify;

const ADMIN_KEY: &str = "browser-test-admin-key-0123456789abcdef";

/// How long the browser may take to load the page and report.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(60);

/// The page: two cross-origin Fire calls, then a same-origin report.
fn page(allowed: SocketAddr, closed: SocketAddr) -> String {
    format!(
        r#"<!doctype html><meta charset="utf-8"><title>Herald CORS</title>
<script>
async function fire(name, base) {{
  try {{
    const response = await fetch(base + "/v1/fire", {{
      method: "POST",
      headers: {{"Authorization": "Bearer {ADMIN_KEY}", "Content-Type": "application/json"}},
      body: JSON.stringify({{event: "order.created", json: JSON.stringify({{via: name}})}}),
    }});
    return {{name, status: response.status, body: await response.json()}};
  }} catch (e) {{
    return {{name, error: String(e)}};
  }}
}}
(async () => {{
  const results = [
    await fire("allowed", "http://{allowed}"),
    await fire("closed", "http://{closed}"),
  ];
  await fetch("/report", {{method: "POST", body: JSON.stringify(results)}});
}})();
</script>"#
    )
}

/// Serves `html` at `/` (read when asked, so it can be filled in after the
/// server's address is known) and takes the report at `/report`.
async fn page_server(
    html: Arc<Mutex<String>>,
) -> (SocketAddr, Arc<Mutex<Option<String>>>, Arc<Notify>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let report = Arc::new(Mutex::new(None));
    let reported = Arc::new(Notify::new());
    let (slot, notify) = (report.clone(), reported.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (html, slot, notify) = (html.clone(), slot.clone(), notify.clone());
            tokio::spawn(async move {
                let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let (html, slot, notify) = (html.clone(), slot.clone(), notify.clone());
                    async move {
                        let body = if request.uri().path() == "/report" {
                            let bytes = request.into_body().collect().await?.to_bytes();
                            *slot.lock().unwrap() =
                                Some(String::from_utf8_lossy(&bytes).into_owned());
                            notify.notify_one();
                            Bytes::new()
                        } else {
                            Bytes::from(html.lock().unwrap().clone())
                        };
                        Ok::<_, hyper::Error>(
                            http::Response::builder()
                                .header("content-type", "text/html; charset=utf-8")
                                .body(Full::new(body))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, report, reported)
}

fn require_auth(c: &mut herald_ingest::IngestConfig) {
    c.auth = AuthMode::Required;
    c.admin_key = Some(BootstrapKey::new(ADMIN_KEY).unwrap());
}

/// A directory removed when dropped, also when the test fails.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_page_on_an_allowed_origin_fires_and_another_is_refused() {
    let mut env = TestEnv::new("0s").await.unwrap();
    let receiver = Receiver::ok().await;
    // The page server starts first: its address is the origin to allow.
    let html = Arc::new(Mutex::new(String::new()));
    let (page_addr, report, reported) = page_server(html.clone()).await;
    let origin = format!("http://{page_addr}");
    let allowed = env
        .start_ingest(env.queue.clone(), |c| {
            require_auth(c);
            c.cors = Some(CorsOrigins::parse(&origin).unwrap());
        })
        .await
        .unwrap();
    let closed = env
        .start_ingest(env.queue.clone(), require_auth)
        .await
        .unwrap();
    env.start_sender(|_| {}).await.unwrap();
    let mut admin = herald_proto::v1::admin_client::AdminClient::with_interceptor(
        herald_tests::auth::channel(allowed).await,
        herald_tests::auth::Token::bearer(ADMIN_KEY),
    );
    admin
        .create_webhook(herald_proto::v1::CreateWebhookRequest {
            event: "order.created".into(),
            method: "POST".into(),
            url: receiver.url("/orders"),
            ..Default::default()
        })
        .await
        .unwrap();
    // The closed ingest learns the webhook through its own cache.
    let closed_client = herald_proto::v1::ingest_client::IngestClient::with_interceptor(
        herald_tests::auth::channel(closed).await,
        herald_tests::auth::Token::bearer(ADMIN_KEY),
    );
    herald_tests::eventually(
        Duration::from_secs(10),
        "both ingests know the webhook",
        || {
            let mut client = closed_client.clone();
            async move {
                client
                    .list_events(herald_proto::v1::ListEventsRequest::default())
                    .await
                    .is_ok_and(|r| !r.into_inner().events.is_empty())
            }
        },
    )
    .await;
    *html.lock().unwrap() = page(allowed, closed);

    let profile = TempDir(
        std::env::temp_dir().join(format!("herald-chromium-{}", uuid::Uuid::new_v4().simple())),
    );
    let chromium = std::env::var("HERALD_TEST_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let mut browser = tokio::process::Command::new(&chromium)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
        ])
        .arg(format!("--user-data-dir={}", profile.0.display()))
        .arg(format!("{origin}/"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {chromium} ({e}): apt-get install chromium \
                 (deploy/local/services.sh herald_install_browser does), or set HERALD_TEST_CHROMIUM"
            )
        });
    let waited = tokio::time::timeout(BROWSER_TIMEOUT, reported.notified()).await;
    let _ = browser.kill().await;
    waited.expect("the page reported within the time limit");
    let results: Value = serde_json::from_str(report.lock().unwrap().as_deref().unwrap()).unwrap();
    eprintln!("the page saw: {results}");

    // The allowed origin's call was answered, with the delivery's id.
    let fired = &results[0];
    assert_eq!(fired["name"], "allowed");
    assert_eq!(fired["status"], 200, "{fired}");
    let id = fired["body"]["deliveryIds"][0]
        .as_str()
        .expect("a delivery id")
        .to_owned();
    assert_eq!(
        env.wait_final(&id, Duration::from_secs(20)).await.state,
        "succeeded"
    );
    // The other ingest sends no CORS headers: the browser refused the call
    // before sending it, so the page saw only a network error.
    let refused = &results[1];
    assert_eq!(refused["name"], "closed");
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("Failed to fetch")),
        "{refused}"
    );
    // And nothing of it arrived: once the sender stopped, the queues are
    // empty and the receiver has the one allowed delivery.
    env.stop().await;
    assert_eq!(env.queued_messages().await, 0);
    assert_eq!(receiver.requests().len(), 1);
}
