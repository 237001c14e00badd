//! Herald Console in a real browser (docs/console.md): Debian's headless
//! Chromium, driven through chromium-driver (WebDriver, with fantoccini),
//! against a real ingest, sender, RabbitMQ and Postgres.
//!
//! One browser session walks through what a shop's operator does: sign in,
//! create a webhook with the form, fire an event whose data and whose
//! receiver's answers carry `<script>` and `"><img onerror>` text, watch the
//! delivery appear in the log, open it and see the failed and then the
//! successful attempt, Resend it, disable the webhook and see Fire refused;
//! then a read-only key finds no action that works, and another tenant's key
//! sees nothing of this tenant. Screenshots go to
//! `$CARGO_TARGET_TMPDIR/console-screenshots` (or `HERALD_SCREENSHOTS`).
//!
//! A second test checks the session rules over plain HTTP: cookie flags,
//! CSRF, sign-out and expiry.
//!
//! A missing chromium or chromedriver fails the test with the packages to
//! install: CI installs them (.ci/run), so a skip would only hide that the
//! test never ran.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use herald_console::ConsoleConfig;
use herald_ingest::{AuthMode, BootstrapKey};
use herald_proto::v1::admin_client::AdminClient;
use herald_proto::v1::ingest_client::IngestClient;
use herald_proto::v1::{
    CreateApiKeyRequest, FireRequest, GetWebhookRequest, ListWebhooksRequest, fire_request,
};
use herald_tests::auth::{Token, channel};
use herald_tests::receiver::Reply;
use herald_tests::{Receiver, TestEnv};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const ADMIN_KEY: &str = "console-test-admin-key-0123456789abcdef";

/// Attacker-controlled text: in the fired data and in the receiver's answers.
const XSS: &str =
    r#"<script>window.__herald_xss = 1</script>"><img src=x onerror="window.__herald_xss = 2">"#;

/// How long one wait for the browser to show something may take.
const WAIT: Duration = Duration::from_secs(30);

fn require_auth(c: &mut herald_ingest::IngestConfig) {
    c.auth = AuthMode::Required;
    c.admin_key = Some(BootstrapKey::new(ADMIN_KEY).unwrap());
}

/// A running console, stopped when dropped.
struct Console {
    addr: SocketAddr,
    stop: CancellationToken,
}

impl Drop for Console {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start_console(ingest: SocketAddr, ttl: Option<Duration>) -> Console {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let mut config = ConsoleConfig::new(format!("http://{ingest}"));
    if let Some(ttl) = ttl {
        config.session_ttl = ttl;
    }
    let token = stop.clone();
    tokio::spawn(async move {
        herald_console::run(config, listener, token).await.unwrap();
    });
    Console { addr, stop }
}

/// chromedriver on a free port with a headless chromium session.
struct Browser {
    client: Client,
    driver: tokio::process::Child,
    shots: PathBuf,
}

impl Browser {
    async fn start() -> Browser {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let driver_bin =
            std::env::var("HERALD_TEST_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        // A process group of its own, which chromium joins, so that a
        // failed test kills the browser too (see Drop).
        let driver = tokio::process::Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {driver_bin} ({e}): apt-get install chromium chromium-driver \
                     (deploy/local/services.sh herald_install_browser does), or set \
                     HERALD_TEST_CHROMEDRIVER"
                )
            });
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000", "--no-first-run",
            ] }),
        );
        let started = Instant::now();
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(client) => break client,
                Err(e) if started.elapsed() < WAIT => {
                    tracing::debug!(error = %e, "chromedriver not ready yet");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("no WebDriver session with chromium: {e}"),
            }
        };
        let shots = std::env::var_os("HERALD_SCREENSHOTS").map_or_else(
            || PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots"),
            PathBuf::from,
        );
        std::fs::create_dir_all(&shots).unwrap();
        Browser {
            client,
            driver,
            shots,
        }
    }

    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }

    /// Ends the WebDriver session (chromium quits), then the driver.
    async fn stop(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver and the chromium it started share a process group:
        // kill the whole group, or a test that failed half-way would leave
        // a browser behind, refreshing its pages and eating CPU.
        if let Some(pid) = self.driver.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
        }
    }
}

async fn text(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn exists(c: &Client, css: &str) -> bool {
    !c.find_all(Locator::Css(css)).await.unwrap().is_empty()
}

/// Reloads the page until `css` matches an element whose text contains
/// `wanted`.
async fn wait_for_text(c: &Client, css: &str, wanted: &str) {
    let started = Instant::now();
    loop {
        if let Ok(e) = c.find(Locator::Css(css)).await
            && e.text().await.is_ok_and(|t| t.contains(wanted))
        {
            return;
        }
        assert!(
            started.elapsed() < WAIT,
            "the page never showed {wanted:?} in {css}; it shows:\n{}",
            c.source().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.refresh().await.unwrap();
    }
}

async fn sign_in(c: &Client, base: &str, token: &str) {
    c.goto(&format!("{base}/login")).await.unwrap();
    c.find(Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys(token)
        .await
        .unwrap();
    c.find(Locator::Css("#sign-in"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(c, "h1", "Webhooks").await;
}

async fn sign_out(c: &Client) {
    c.find(Locator::Css("#sign-out"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(c, "h1", "Sign in").await;
}

/// Nothing of the attacker's text ran or became markup: no script element
/// and no image but the console's own charts anywhere in the page, and the
/// flag the text would set is unset.
async fn assert_nothing_ran(c: &Client, page: &str) {
    let found = c
        .execute(
            "return [document.querySelectorAll('script').length, \
                     document.querySelectorAll('img:not([src$=\"/charts.svg\"])').length, \
                     typeof window.__herald_xss];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(found, json!([0, 0, "undefined"]), "{page}: {found}");
}

/// Submits a POST form the page does not offer, as the page's own origin
/// (so the session cookie goes with it), with the session's CSRF token
/// from the sign-out form unless `csrf` is given.
async fn post_form(c: &Client, action: &str, fields: &[(&str, &str)], csrf: Option<&str>) {
    let script = r#"
        const [action, fields, csrf] = arguments;
        const form = document.createElement('form');
        form.method = 'post';
        form.action = action;
        const add = (name, value) => {
            const input = document.createElement('input');
            input.type = 'hidden'; input.name = name; input.value = value;
            form.appendChild(input);
        };
        add('csrf', csrf ?? document.querySelector('form[action="/logout"] input[name=csrf]').value);
        for (const [name, value] of fields) add(name, value);
        document.body.appendChild(form);
        form.submit();
    "#;
    c.execute(script, vec![json!(action), json!(fields), json!(csrf)])
        .await
        .unwrap();
}

async fn create_key(
    admin: &mut AdminClient<
        tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Token>,
    >,
    name: &str,
    scope: &str,
    tenant: &str,
) -> String {
    admin
        .create_api_key(CreateApiKeyRequest {
            name: name.into(),
            scopes: vec![scope.into()],
            tenant: Some(tenant.into()),
        })
        .await
        .unwrap()
        .into_inner()
        .token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_follows_a_delivery_in_the_browser_and_keys_limit_what_works() {
    let mut env = TestEnv::new("0s,500ms,500ms").await.unwrap();
    // The first attempt of each delivery fails with 503, later ones
    // succeed; both answers carry the attacker's text.
    let receiver = Receiver::start(|_, n| {
        if n == 0 {
            Reply::with_body(503, XSS)
        } else {
            Reply::with_body(200, XSS)
        }
    })
    .await;
    let ingest = env
        .start_ingest(env.queue.clone(), require_auth)
        .await
        .unwrap();
    env.start_sender(|_| {}).await.unwrap();
    let console = start_console(ingest, None).await;
    let base = format!("http://{}", console.addr);

    let mut bootstrap =
        AdminClient::with_interceptor(channel(ingest).await, Token::bearer(ADMIN_KEY));
    let shop_admin = create_key(&mut bootstrap, "shop-a admin", "admin", "shop-a").await;
    let shop_reader = create_key(&mut bootstrap, "shop-a reader", "read", "shop-a").await;
    let other_shop = create_key(&mut bootstrap, "shop-b admin", "admin", "shop-b").await;

    let browser = Browser::start().await;
    let c = &browser.client;

    // Sign in; create the webhook with the form.
    sign_in(c, &base, &shop_admin).await;
    c.find(Locator::Css("#events"))
        .await
        .unwrap()
        .send_keys("order.paid")
        .await
        .unwrap();
    c.find(Locator::Css("#url"))
        .await
        .unwrap()
        .send_keys(&receiver.url("/orders"))
        .await
        .unwrap();
    c.find(Locator::Css("#secret_headers"))
        .await
        .unwrap()
        .send_keys("X-Api-Key: s3cret-value-for-the-erp")
        .await
        .unwrap();
    c.find(Locator::Css("#rate_limit"))
        .await
        .unwrap()
        .send_keys("500")
        .await
        .unwrap();
    c.find(Locator::Css("#breaker_failures"))
        .await
        .unwrap()
        .send_keys("7")
        .await
        .unwrap();
    c.find(Locator::Css("#description"))
        .await
        .unwrap()
        .send_keys("orders to the ERP")
        .await
        .unwrap();
    c.find(Locator::Css("#create-webhook"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(c, "h1", "Webhook order.paid").await;
    assert!(
        text(c, "#new-secret").await.starts_with("whsec_"),
        "the signing secret is shown once, on creation"
    );
    let webhook_id = text(c, "#configuration code").await;
    // A secret header's value is never shown, only its name.
    let configuration = text(c, "#configuration").await;
    assert!(
        configuration.contains("X-Api-Key: ••••••"),
        "{configuration}"
    );
    assert!(
        configuration.contains("Breaker closed"),
        "a new webhook's breaker: {configuration}"
    );
    assert!(
        configuration.contains("after 7 failures in a row, for the default cool-down"),
        "{configuration}"
    );
    assert!(
        configuration.contains("500/s, burst 100"),
        "the rate limit with its default burst: {configuration}"
    );
    assert!(!c.source().await.unwrap().contains("s3cret-value"));
    let listed = bootstrap
        .list_webhooks(ListWebhooksRequest {
            tenant: Some("shop-a".into()),
            event: None,
        })
        .await
        .unwrap()
        .into_inner()
        .webhooks;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, webhook_id);
    assert_eq!(listed[0].url, receiver.url("/orders"));
    assert_eq!(listed[0].rate_limit.map(|l| l.per_second), Some(500));
    c.goto(&format!("{base}/webhooks/{webhook_id}"))
        .await
        .unwrap();
    assert!(
        !exists(c, "#new-secret").await,
        "the secret is not shown again"
    );

    // Fire, with the attacker's text in the data.
    let mut fire =
        IngestClient::with_interceptor(channel(ingest).await, Token::bearer(&shop_admin));
    let data = json!({ "order": 42, "note": XSS }).to_string();
    let fired = fire
        .fire(FireRequest {
            tenant: "shop-a".into(),
            event: "order.paid".into(),
            data: Some(fire_request::Data::Json(data)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .delivery_ids;
    let id = fired[0].clone();

    // It appears in the log; open it; the failed, then the successful attempt.
    c.find(Locator::Css("#delivery-log"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(c, "#deliveries", &id).await;
    browser.screenshot("delivery-log-first").await;
    c.find(Locator::Css(&format!("a[href='/deliveries/{id}']")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(c, "#state", "succeeded").await;
    assert_eq!(text(c, "tr[data-attempt='1'] .status").await, "503");
    assert_eq!(text(c, "tr[data-attempt='2'] .status").await, "200");
    // In the data it is a JSON string, so its quotes show escaped.
    let escaped = serde_json::to_string(XSS).unwrap();
    assert!(
        text(c, "#payload")
            .await
            .contains(escaped.trim_matches('"')),
        "the data shows as text"
    );
    assert!(
        text(c, "#attempts").await.contains(XSS),
        "so does the response"
    );
    assert!(!c.source().await.unwrap().contains("s3cret-value"));
    assert_nothing_ran(c, "delivery page").await;
    browser.screenshot("delivery").await;

    // Resend: a new delivery, linked both ways, that succeeds too.
    c.find(Locator::Css("#resend"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(c, "#resent", "Resent as").await;
    let resent = text(c, "#resent code").await;
    assert_ne!(resent, id);
    c.find(Locator::Css("#resent a"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(c, "#state", "succeeded").await;
    assert_eq!(text(c, "#original").await, id);
    c.goto(&format!("{base}/deliveries/{id}")).await.unwrap();
    assert!(text(c, "#resent-as").await.contains(&resent));
    c.goto(&format!("{base}/webhooks/{webhook_id}/deliveries"))
        .await
        .unwrap();
    wait_for_text(c, "#deliveries", &resent).await;
    browser.screenshot("delivery-log").await;

    // Search by the id a receiver reports.
    c.find(Locator::Css("input[name=id]"))
        .await
        .unwrap()
        .send_keys(&resent)
        .await
        .unwrap();
    c.find(Locator::Css("form.search button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(c, "#delivery-id", &resent).await;

    // The webhook page: its charts count the deliveries; disable it.
    c.goto(&format!("{base}/webhooks/{webhook_id}/charts.svg"))
        .await
        .unwrap();
    let svg = c.source().await.unwrap();
    assert!(
        svg.contains("2 deliveries in 7 days"),
        "the chart counts the delivery and its resend: {svg}"
    );
    c.goto(&format!("{base}/webhooks/{webhook_id}"))
        .await
        .unwrap();
    let loaded = c
        .execute(
            "const img = document.querySelector('#charts img'); \
             return img.complete && img.naturalWidth > 0;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(loaded, json!(true), "the chart image loads in the page");
    assert_nothing_ran(c, "webhook page").await;
    browser.screenshot("webhook").await;
    let charts = c.find(Locator::Css("#charts img")).await.unwrap();
    std::fs::write(
        browser.shots.join("charts.png"),
        charts.screenshot().await.unwrap(),
    )
    .unwrap();
    c.find(Locator::Css("#disable"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(c, "#disabled", "disabled").await;
    let refused = fire
        .fire(FireRequest {
            tenant: "shop-a".into(),
            event: "order.paid".into(),
            data: Some(fire_request::Data::Json("{}".into())),
            ..Default::default()
        })
        .await
        .expect_err("Fire is refused while the only webhook is disabled");
    assert!(refused.message().contains("disabled"), "{refused:?}");
    c.find(Locator::Css("#enable"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(c, ".notice", "Webhook enabled").await;

    // The webhooks list shows the day's figures.
    c.goto(&format!("{base}/webhooks")).await.unwrap();
    let row = text(c, "#webhooks tbody tr").await;
    assert!(
        row.contains("order.paid") && row.contains("100.0 %"),
        "{row}"
    );
    sign_out(c).await;
    // The old session is gone: pages send to the sign-in page.
    c.goto(&format!("{base}/webhooks")).await.unwrap();
    wait_for_text(c, "h1", "Sign in").await;

    // A read-only key: everything readable, no action, and POSTs refused.
    sign_in(c, &base, &shop_reader).await;
    c.goto(&format!("{base}/webhooks/{webhook_id}"))
        .await
        .unwrap();
    for action in [
        "#disable",
        "#enable",
        "#edit",
        "#test-send",
        "#rotate",
        "#replay",
    ] {
        assert!(!exists(c, action).await, "a read key sees no {action}");
    }
    assert!(!exists(c, "#create-webhook").await);
    post_form(
        c,
        &format!("/webhooks/{webhook_id}/enabled"),
        &[("enabled", "false")],
        None,
    )
    .await;
    wait_for_text(c, "h1", "Not allowed").await;
    assert!(text(c, ".error").await.contains("not an admin key"));
    c.goto(&format!("{base}/deliveries/{id}")).await.unwrap();
    assert!(!exists(c, "#resend").await);
    post_form(
        c,
        &format!("/deliveries/{id}/resend"),
        &[("request_id", "r-1")],
        None,
    )
    .await;
    wait_for_text(c, "h1", "Not allowed").await;
    browser.screenshot("read-only").await;
    sign_out(c).await;

    // An admin key whose CSRF token is wrong changes nothing either.
    sign_in(c, &base, &shop_admin).await;
    post_form(
        c,
        &format!("/webhooks/{webhook_id}/enabled"),
        &[("enabled", "false")],
        Some("forged"),
    )
    .await;
    wait_for_text(c, "h1", "Not allowed").await;
    let webhook = bootstrap
        .get_webhook(GetWebhookRequest {
            id: webhook_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(webhook.enabled, "no refused POST changed the webhook");
    sign_out(c).await;

    // Another tenant's key sees nothing of shop-a.
    sign_in(c, &base, &other_shop).await;
    assert!(text(c, "main").await.contains("No webhooks yet"));
    for page in [
        format!("/webhooks/{webhook_id}"),
        format!("/webhooks/{webhook_id}/deliveries"),
        format!("/deliveries/{id}"),
        format!("/search?id={id}"),
    ] {
        c.goto(&format!("{base}{page}")).await.unwrap();
        wait_for_text(c, "h1", "Not found").await;
        assert!(!text(c, "main").await.contains("order.paid"), "{page}");
    }
    browser.stop().await;

    // Exactly the fired delivery and its resend reached the receiver: two
    // requests each (503, then 200), nothing from refused actions.
    assert_eq!(receiver.for_delivery(&id).len(), 2);
    assert_eq!(
        receiver.for_delivery(&id)[0].header("x-api-key"),
        Some("s3cret-value-for-the-erp"),
        "the secret header goes to the receiver, only there"
    );
    assert_eq!(receiver.for_delivery(&resent).len(), 2);
    assert_eq!(receiver.requests().len(), 4);
    drop(console);
    env.stop().await;
}

/// An HTTP/1.1 request to the console; returns status, headers and body.
async fn http(
    console: SocketAddr,
    method: &str,
    path: &str,
    cookie: &str,
    form: Option<&str>,
) -> (u16, hyper::HeaderMap, String) {
    use http_body_util::{BodyExt, Full};
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(format!("http://{console}{path}"));
    if !cookie.is_empty() {
        request = request.header("cookie", cookie);
    }
    if form.is_some() {
        request = request.header("content-type", "application/x-www-form-urlencoded");
    }
    let body = Full::new(bytes::Bytes::from(form.unwrap_or_default().to_owned()));
    let response = client.request(request.body(body).unwrap()).await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

/// The `Set-Cookie` header that sets `name`, whole.
fn set_cookie(headers: &hyper::HeaderMap, name: &str) -> String {
    headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie in {headers:?}"))
        .to_owned()
}

fn cookie_pair(set_cookie: &str) -> &str {
    set_cookie.split(';').next().unwrap()
}

/// The login form's CSRF field.
fn csrf_of(body: &str) -> String {
    body.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a CSRF field")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_httponly_strict_csrf_checked_and_expire() {
    let mut env = TestEnv::new("0s").await.unwrap();
    let ingest = env
        .start_ingest(env.queue.clone(), require_auth)
        .await
        .unwrap();
    let ttl = Duration::from_secs(2);
    let console = start_console(ingest, Some(ttl)).await;
    let addr = console.addr;

    // Pages need a session; without one they send to the sign-in page.
    let (status, headers, _) = http(addr, "GET", "/webhooks", "", None).await;
    assert_eq!(status, 303);
    assert_eq!(headers["location"], "/login");

    let (status, headers, body) = http(addr, "GET", "/login", "", None).await;
    assert_eq!(status, 200);
    let login = set_cookie(&headers, "herald_login");
    let csrf = csrf_of(&body);
    assert!(
        headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    assert!(
        headers["server-timing"]
            .to_str()
            .unwrap()
            .starts_with("app;dur=")
    );

    // A sign-in without the login cookie's token is refused (login CSRF).
    let form = format!("token={ADMIN_KEY}&csrf=forged");
    let (status, _, body) = http(addr, "POST", "/login", cookie_pair(&login), Some(&form)).await;
    assert_eq!(status, 403, "{body}");
    // A key Herald does not know: 401 and a message, no session.
    let form = format!("token=hrk_not-a-key&csrf={csrf}");
    let (status, headers, body) =
        http(addr, "POST", "/login", cookie_pair(&login), Some(&form)).await;
    assert_eq!(status, 401);
    assert!(body.contains("does not accept that key"), "{body}");
    assert!(
        headers
            .get_all("set-cookie")
            .iter()
            .all(|v| !v.to_str().unwrap().starts_with("herald_session="))
    );

    // The right key: a session cookie that scripts cannot read and other
    // sites cannot send, lasting the configured lifetime.
    let form = format!("token={ADMIN_KEY}&csrf={csrf}");
    let (status, headers, _) = http(addr, "POST", "/login", cookie_pair(&login), Some(&form)).await;
    assert_eq!(status, 303);
    let session = set_cookie(&headers, "herald_session");
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=2"] {
        assert!(session.contains(flag), "{session} lacks {flag}");
    }
    assert!(
        !session.contains("Secure"),
        "plain HTTP without --secure-cookies"
    );
    assert!(!session.contains(ADMIN_KEY), "the key stays on the server");
    let cookie = cookie_pair(&session).to_owned();
    let (status, _, body) = http(addr, "GET", "/webhooks", &cookie, None).await;
    assert_eq!(status, 200);
    assert!(body.contains("bootstrap admin key"), "{body}");
    assert!(!body.contains("<script"), "the pages need no JavaScript");
    assert!(!body.contains(ADMIN_KEY), "the key is never rendered");

    // A POST without the session's CSRF token changes nothing.
    let (status, _, _) = http(addr, "POST", "/logout", &cookie, Some("csrf=forged")).await;
    assert_eq!(status, 403);
    let (status, _, _) = http(addr, "GET", "/webhooks", &cookie, None).await;
    assert_eq!(status, 200, "still signed in");

    // The session expires after its lifetime.
    tokio::time::sleep(ttl + Duration::from_millis(200)).await;
    let (status, headers, _) = http(addr, "GET", "/webhooks", &cookie, None).await;
    assert_eq!(status, 303);
    assert_eq!(headers["location"], "/login");
    drop(console);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_the_session_cookie_is_secure() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    herald_tests::init();
    let mut env = TestEnv::new("0s").await.unwrap();
    let ingest = env
        .start_ingest(env.queue.clone(), require_auth)
        .await
        .unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = ConsoleConfig::new(format!("http://{ingest}"));
    config.tls = Some((
        certified.cert.pem().into_bytes(),
        certified.signing_key.serialize_pem().into_bytes(),
    ));
    let stop = CancellationToken::new();
    let token = stop.clone();
    let served = tokio::spawn(async move { herald_console::run(config, listener, token).await });

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(b"GET /login HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tls.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let cookie = answer
        .lines()
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with("set-cookie: herald_login=")
        })
        .unwrap_or_else(|| panic!("no login cookie: {answer}"));
    assert!(cookie.ends_with("; Secure"), "{cookie}");

    // A shutdown ends the server cleanly.
    stop.cancel();
    served.await.unwrap().unwrap();
    env.stop().await;
}
