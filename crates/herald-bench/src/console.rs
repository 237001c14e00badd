//! The console case (`--console`): Herald Console's pages over a delivery log
//! of a million rows for one webhook.
//!
//! The rows are written straight into the bench database with
//! `generate_series` (one attempt each, one in fifty failed after three),
//! fired half a second apart so that they span the 7 days of the webhook
//! page's charts. Then a real herald-ingest and herald-console run as
//! processes, the bench signs in like a browser (the login form's CSRF
//! cookie and field, then the session cookie) and requests each page many
//! times. The figure that counts is the server's own time for a page, which
//! the console reports in its `Server-Timing` header; the request's time at
//! the client is reported beside it. The plans of the queries behind the
//! log and delivery pages are printed with `EXPLAIN (ANALYZE, BUFFERS)`.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use uuid::Uuid;

use crate::herald::{Env, Ingest, Proc, free_port};
use crate::stats::Latency;

/// Requests of each page measured (after a few warm-up requests).
const SAMPLES: usize = 40;
const WARM_UP: usize = 3;

/// One page's figures.
#[derive(Debug, Serialize)]
pub struct PageTiming {
    pub page: String,
    pub requests: usize,
    /// The console's own time (`Server-Timing: app;dur=`).
    pub server: Latency,
    /// The whole request at the bench's client (loopback).
    pub client: Latency,
}

#[derive(Debug, Serialize)]
pub struct ConsoleResult {
    pub rows: usize,
    pub seed_s: f64,
    pub pages: Vec<PageTiming>,
    /// `EXPLAIN (ANALYZE, BUFFERS)` of the queries behind the pages.
    pub plans: Vec<(String, String)>,
}

type Http = Client<HttpConnector, Full<Bytes>>;

/// Starts herald-console against `ingest` with none of the services'
/// credentials in its environment.
fn start_console(env: &Env, ingest: SocketAddr) -> anyhow::Result<(Proc, SocketAddr)> {
    let listen = free_port()?;
    let log = std::fs::File::create(env.log_dir.join("console.log"))?;
    let path = env.bin_dir.join("herald-console");
    let child = Command::new(&path)
        .env_clear()
        .env("HERALD_CONSOLE_LISTEN", listen.to_string())
        .env("HERALD_CONSOLE_INGEST_URL", format!("http://{ingest}"))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("spawning {}", path.display()))?;
    Ok((Proc::new("console", child), listen))
}

/// A GET or POST with the session cookie; returns status, headers, body.
async fn request(
    http: &Http,
    method: &str,
    url: &str,
    cookie: &str,
    form: Option<String>,
) -> anyhow::Result<(u16, hyper::HeaderMap, String)> {
    let mut builder = Request::builder().method(method).uri(url);
    if !cookie.is_empty() {
        builder = builder.header("cookie", cookie);
    }
    if form.is_some() {
        builder = builder.header("content-type", "application/x-www-form-urlencoded");
    }
    let body = Full::new(Bytes::from(form.unwrap_or_default()));
    let response = http.request(builder.body(body)?).await?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, headers, String::from_utf8_lossy(&body).into_owned()))
}

fn set_cookie(headers: &hyper::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .find(|pair| pair.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

/// Signs in as a browser does; returns the session cookie (`name=value`).
async fn sign_in(http: &Http, base: &str) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let (headers, body) = loop {
        match request(http, "GET", &format!("{base}/login"), "", None).await {
            Ok((200, headers, body)) => break (headers, body),
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            other => anyhow::bail!("the console's sign-in page did not answer: {other:?}"),
        }
    };
    let login = set_cookie(&headers, "herald_login").context("no login cookie")?;
    let csrf = body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .context("no CSRF field on the sign-in page")?;
    let (status, headers, _) = request(
        http,
        "POST",
        &format!("{base}/login"),
        &login,
        // Ingest runs with HERALD_AUTH=disabled: any key signs in.
        Some(format!("token=hrk_bench&csrf={csrf}")),
    )
    .await?;
    anyhow::ensure!(status == 303, "sign-in answered {status}");
    set_cookie(&headers, "herald_session").context("no session cookie")
}

fn server_ms(headers: &hyper::HeaderMap) -> Option<f64> {
    headers
        .get("server-timing")?
        .to_str()
        .ok()?
        .split("dur=")
        .nth(1)?
        .parse()
        .ok()
}

/// Requests each of `urls` in turn (cycling) `SAMPLES` times after a
/// warm-up; every answer must be 200 and contain `must_contain`.
async fn measure(
    http: &Http,
    cookie: &str,
    page: &str,
    urls: &[String],
    must_contain: &str,
) -> anyhow::Result<PageTiming> {
    let mut server = Vec::new();
    let mut client = Vec::new();
    for i in 0..WARM_UP + SAMPLES {
        let url = &urls[i % urls.len()];
        let started = Instant::now();
        let (status, headers, body) = request(http, "GET", url, cookie, None).await?;
        let took = started.elapsed();
        anyhow::ensure!(status == 200, "{page}: {url} answered {status}: {body}");
        anyhow::ensure!(
            body.contains(must_contain),
            "{page}: {url} does not show {must_contain:?}"
        );
        if i >= WARM_UP {
            let ms = server_ms(&headers).context("no Server-Timing header")?;
            server.push(Duration::from_secs_f64(ms / 1000.0));
            client.push(took);
        }
    }
    Ok(PageTiming {
        page: page.to_owned(),
        requests: SAMPLES,
        server: Latency::of(&mut server),
        client: Latency::of(&mut client),
    })
}

/// Writes `rows` deliveries (and one attempt each) of `webhook_id`.
async fn seed(db: &tokio_postgres::Client, webhook_id: Uuid, rows: usize) -> anyhow::Result<()> {
    let rows = i64::try_from(rows)?;
    db.execute(
        "INSERT INTO deliveries (id, tenant, event, webhook_id, target_url, method, payload, \
             payload_kind, fired_at, state, attempts, last_status_code, last_attempt_at, finished_at) \
         SELECT gen_random_uuid(), '', 'bench.console', $1, 'http://127.0.0.1:9/hooks', 'POST', \
             '{\"order\":' || g || ',\"note\":\"<b>bench</b>\"}', 'json', \
             now() - make_interval(secs => g * 0.5), \
             CASE WHEN g % 50 = 0 THEN 'failed' ELSE 'succeeded' END, \
             CASE WHEN g % 50 = 0 THEN 3 ELSE 1 END, \
             CASE WHEN g % 50 = 0 THEN 503 ELSE 200 END, \
             now() - make_interval(secs => g * 0.5), now() - make_interval(secs => g * 0.5) \
         FROM generate_series(1, $2::bigint) AS g",
        &[&webhook_id, &rows],
    )
    .await
    .context("seeding deliveries")?;
    db.execute(
        "INSERT INTO delivery_attempts (delivery_id, attempt, started_at, duration_ms, url, \
             status_code, error_kind, error_message, response_excerpt) \
         SELECT id, 1, fired_at, 5 + (hashtext(id::text) & 63), target_url, last_status_code, \
             CASE WHEN state = 'failed' THEN 'status' END, \
             CASE WHEN state = 'failed' THEN 'the target answered 503' END, \
             CASE WHEN state = 'failed' THEN 'busy' ELSE 'ok' END \
         FROM deliveries WHERE webhook_id = $1",
        &[&webhook_id],
    )
    .await
    .context("seeding attempts")?;
    db.batch_execute("ANALYZE deliveries; ANALYZE delivery_attempts")
        .await?;
    Ok(())
}

async fn explain(db: &tokio_postgres::Client, sql: &str) -> anyhow::Result<String> {
    let rows = db
        .query(&format!("EXPLAIN (ANALYZE, BUFFERS) {sql}"), &[])
        .await?;
    Ok(rows
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n"))
}

/// A cursor for the page after the row at `offset` (newest first).
async fn cursor_at(
    db: &tokio_postgres::Client,
    webhook_id: Uuid,
    offset: i64,
) -> anyhow::Result<(String, String, Uuid)> {
    let row = db
        .query_one(
            "SELECT fired_at, id, fired_at::text AS shown FROM deliveries WHERE webhook_id = $1 \
             ORDER BY fired_at DESC, id DESC OFFSET $2 LIMIT 1",
            &[&webhook_id, &offset],
        )
        .await?;
    let cursor = herald_store::Cursor {
        fired_at: row.get(0),
        id: row.get(1),
    };
    Ok((cursor.encode(), row.get(2), row.get(1)))
}

pub async fn run(
    env: &Env,
    ingest: &mut Ingest,
    db: &tokio_postgres::Client,
    rows: usize,
) -> anyhow::Result<ConsoleResult> {
    let webhook = ingest
        .admin
        .create_webhook(herald_proto::v1::CreateWebhookRequest {
            event: "bench.console".into(),
            method: "POST".into(),
            url: "http://127.0.0.1:9/hooks".into(),
            description: "console bench".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let webhook_id: Uuid = webhook.id.parse()?;
    eprintln!("  console: writing {rows} deliveries and their attempts…");
    let started = Instant::now();
    seed(db, webhook_id, rows).await?;
    let seed_s = started.elapsed().as_secs_f64();
    eprintln!("    {seed_s:.1} s");

    let (console, addr) = start_console(env, ingest.addr)?;
    let http: Http = Client::builder(TokioExecutor::new()).build_http();
    let base = format!("http://{addr}");
    let cookie = sign_in(&http, &base).await?;

    let log = format!("{base}/webhooks/{webhook_id}/deliveries?refresh=off");
    let mut pages = vec![
        measure(
            &http,
            &cookie,
            "log, first page",
            std::slice::from_ref(&log),
            "deliveries",
        )
        .await?,
    ];
    // Later pages: the cursor after the 50th, 250,000th, 500,000th and the
    // 999,900th row (the last pages of the log).
    let total = i64::try_from(rows)?;
    let mut later = Vec::new();
    let mut deep = None;
    for offset in [49, total / 4, total / 2, total - 100] {
        let (cursor, fired_at, id) = cursor_at(db, webhook_id, offset.max(0)).await?;
        later.push(format!("{log}&cursor={cursor}"));
        deep = Some((fired_at, id));
    }
    pages.push(
        measure(
            &http,
            &cookie,
            "log, later pages by cursor",
            &later,
            "deliveries",
        )
        .await?,
    );
    let filtered = format!("{log}&state=failed");
    pages.push(
        measure(
            &http,
            &cookie,
            "log, state=failed",
            std::slice::from_ref(&filtered),
            "deliveries",
        )
        .await?,
    );
    let ids: Vec<Uuid> = db
        .query(
            "SELECT id FROM deliveries WHERE webhook_id = $1 ORDER BY random() LIMIT 20",
            &[&webhook_id],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let delivery_urls: Vec<String> = ids
        .iter()
        .map(|id| format!("{base}/deliveries/{id}"))
        .collect();
    pages.push(measure(&http, &cookie, "delivery page", &delivery_urls, "attempts").await?);
    pages.push(
        measure(
            &http,
            &cookie,
            "webhook page",
            &[format!("{base}/webhooks/{webhook_id}")],
            "charts.svg",
        )
        .await?,
    );
    pages.push(
        measure(
            &http,
            &cookie,
            "webhook charts (7 days, SVG image)",
            &[format!("{base}/webhooks/{webhook_id}/charts.svg")],
            "deliveries in 7 days",
        )
        .await?,
    );
    pages.push(
        measure(
            &http,
            &cookie,
            "webhooks list",
            &[format!("{base}/webhooks")],
            "webhooks",
        )
        .await?,
    );
    console.stop(Duration::from_secs(5)).await;

    let cols = herald_store::DELIVERY_COLUMNS;
    let (deep_at, deep_id) = deep.context("no cursor")?;
    let one = ids[0];
    let mut plans = Vec::new();
    for (name, sql) in [
        (
            "log, first page",
            format!(
                "SELECT {cols} FROM deliveries_with_scheduled WHERE webhook_id = '{webhook_id}' \
                 ORDER BY fired_at DESC, id DESC LIMIT 51"
            ),
        ),
        (
            "log, last page by cursor",
            format!(
                "SELECT {cols} FROM deliveries_with_scheduled WHERE webhook_id = '{webhook_id}' \
                 AND fired_at <= '{deep_at}' AND (fired_at < '{deep_at}' OR id < '{deep_id}') \
                 ORDER BY fired_at DESC, id DESC LIMIT 51"
            ),
        ),
        (
            "delivery page: the delivery",
            format!("SELECT {cols} FROM deliveries_with_scheduled WHERE id = '{one}'"),
        ),
        (
            "delivery page: its attempts",
            format!(
                "SELECT attempt, started_at, duration_ms, url, status_code, error_kind, \
                 error_message, response_excerpt FROM delivery_attempts \
                 WHERE delivery_id = '{one}' ORDER BY attempt"
            ),
        ),
        (
            "delivery page: its resends",
            format!(
                "SELECT id FROM deliveries_with_scheduled WHERE resent_from = '{one}' \
                 ORDER BY fired_at, id LIMIT 100"
            ),
        ),
    ] {
        plans.push((name.to_owned(), explain(db, &sql).await?));
    }
    Ok(ConsoleResult {
        rows,
        seed_s,
        pages,
        plans,
    })
}

/// The case's report.
pub fn render(r: &ConsoleResult) -> String {
    let mut out = format!(
        "Herald Console over {} deliveries of one webhook (seeded in {:.1} s); {SAMPLES} requests per page\n\n\
         | page | server p50 | server p99 | server max | client p50 |\n|---|---|---|---|---|\n",
        r.rows, r.seed_s
    );
    for p in &r.pages {
        out.push_str(&format!(
            "| {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms |\n",
            p.page, p.server.p50_ms, p.server.p99_ms, p.server.max_ms, p.client.p50_ms
        ));
    }
    for (name, plan) in &r.plans {
        out.push_str(&format!("\n{name}:\n{plan}\n"));
    }
    out
}
