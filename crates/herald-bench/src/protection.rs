//! The protection cases (`--protection`, issue 19; docs/protection.md).
//!
//! - **Circuit breaker:** five webhooks on one event and one sender. Run A
//!   has all five receivers healthy; run B is identical except that one of
//!   the five paths answers `503`, so its breaker opens and its deliveries
//!   are parked instead of attempted. The figure is how fast the other four
//!   are served in B compared with a webhook in A: a receiver that is down
//!   must not slow down the healthy ones.
//! - **Rate limit:** one webhook limited to `per_second`, a backlog fired
//!   before any sender runs, then two senders. The receiver's arrival times
//!   show whether the limit held over the whole deployment (the busiest 1 s
//!   and 10 s windows) and whether the backlog still drained at the limit.
//!
//! Each run has its own ingest, senders and receiver (the caller gives it a
//! database and queue prefix of its own), so that the parked deliveries of
//! the down webhook cannot leak into a later run.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use herald_proto::v1::{
    CreateWebhookRequest, FireRequest, ListWebhooksRequest, RateLimit, fire_request,
};
use http_body_util::{BodyExt, Empty};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpListener;
use uuid::Uuid;

use crate::herald::{
    CpuPer1000, Env, Ingest, Proc, cpu_snapshot, create_webhooks, start_ingest, start_sender,
    wait_for_events,
};
use crate::report::{Machine, Target};
use crate::stats::{self, closed_loop};

/// The event of the breaker case; its five webhooks are
/// `/hooks/bench.protect/0` … `/4` (the paths `create_webhooks` gives them).
pub const BREAKER_EVENT: &str = "bench.protect";
/// Webhooks of the breaker case.
pub const BREAKER_WEBHOOKS: usize = 5;
/// The event of the rate-limit case.
pub const LIMITED_EVENT: &str = "bench.limited";
/// The senders' default breaker threshold (`HERALD_BREAKER_FAILURES`).
pub const BREAKER_FAILURES: usize = 10;
/// The senders' default cool-down (`HERALD_BREAKER_COOLDOWN_MS`).
pub const BREAKER_COOLDOWN: Duration = Duration::from_secs(30);
/// The senders' default `HERALD_MAX_IN_FLIGHT_PER_WEBHOOK`.
pub const MAX_IN_FLIGHT_PER_WEBHOOK: usize = 32;

/// What one path of the receiver saw.
#[derive(Default)]
struct PathLog {
    /// Every request, in the order they arrived (answered 200 or 503).
    requests: Vec<Instant>,
    /// The first arrival of each delivery id answered 200.
    delivered: HashMap<Uuid, Instant>,
}

/// A receiver that answers by path: `503` for the paths it was told are
/// down, `200` for every other, and records when each request arrived on
/// which path. The bench's own receiver answers 200 to everything and keeps
/// no path, which the breaker case needs.
pub struct PathReceiver {
    pub addr: SocketAddr,
    state: Arc<Mutex<HashMap<String, PathLog>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for PathReceiver {
    fn drop(&mut self) {
        // Each run has a receiver of its own; the accept loop of an earlier
        // run must not outlive it.
        self.accept.abort();
    }
}

impl PathReceiver {
    pub async fn start(down: HashSet<String>) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state: Arc<Mutex<HashMap<String, PathLog>>> = Arc::default();
        let down = Arc::new(down);
        let shared = state.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let state = shared.clone();
                let down = down.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let state = state.clone();
                        let down = down.clone();
                        async move { Ok::<_, Infallible>(handle(&state, &down, request).await) }
                    });
                    // HTTP/1.1 only, as the senders speak it over plain TCP.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self {
            addr,
            state,
            accept,
        })
    }

    /// Distinct deliveries answered 200 on `path`.
    pub fn delivered(&self, path: &str) -> usize {
        self.state
            .lock()
            .expect("receiver state")
            .get(path)
            .map_or(0, |log| log.delivered.len())
    }

    /// Requests `path` got, whatever it answered (repeats included).
    pub fn requests(&self, path: &str) -> usize {
        self.state
            .lock()
            .expect("receiver state")
            .get(path)
            .map_or(0, |log| log.requests.len())
    }

    /// The arrival times of every request on `path`, sorted, and the first
    /// arrival of each delivery answered 200, sorted.
    pub fn arrivals(&self, path: &str) -> (Vec<Instant>, Vec<Instant>) {
        let state = self.state.lock().expect("receiver state");
        let Some(log) = state.get(path) else {
            return (Vec::new(), Vec::new());
        };
        let mut requests = log.requests.clone();
        requests.sort_unstable();
        let mut delivered: Vec<Instant> = log.delivered.values().copied().collect();
        delivered.sort_unstable();
        (requests, delivered)
    }
}

async fn handle(
    state: &Mutex<HashMap<String, PathLog>>,
    down: &HashSet<String>,
    request: Request<hyper::body::Incoming>,
) -> Response<Empty<Bytes>> {
    let now = Instant::now();
    let path = request.uri().path().to_owned();
    let id = request
        .headers()
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| Uuid::parse_str(s).ok());
    // Read the body to the end so the connection stays usable (keep-alive).
    let _ = request.into_body().collect().await;
    let is_down = down.contains(&path);
    {
        let mut state = state.lock().expect("receiver state");
        let log = state.entry(path).or_default();
        log.requests.push(now);
        if let (false, Some(id)) = (is_down, id) {
            log.delivered.entry(id).or_insert(now);
        }
    }
    let mut response = Response::new(Empty::new());
    if is_down {
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    }
    response
}

/// The most requests within any window of `window` (half open: `[t, t +
/// window)`) of the sorted arrival times `sorted`.
pub fn busiest_window(sorted: &[Instant], window: Duration) -> usize {
    let mut best = 0;
    let mut start = 0;
    for (end, at) in sorted.iter().enumerate() {
        while at.duration_since(sorted[start]) >= window {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

/// Fires `events` of `event` with `concurrency` calls in flight (closed
/// loop); returns the calls that succeeded, failed, and the first error.
async fn fire(
    ingest: &Ingest,
    event: &str,
    events: usize,
    concurrency: usize,
    payload: &str,
) -> (usize, usize, Option<String>, f64) {
    let client = ingest.ingest.clone();
    let event = event.to_owned();
    let payload = payload.to_owned();
    let outcome = closed_loop(events, concurrency, move |_, _| {
        let mut client = client.clone();
        let request = FireRequest {
            event: event.clone(),
            data: Some(fire_request::Data::Json(payload.clone())),
            ..FireRequest::default()
        };
        async move {
            client.fire(request).await?;
            Ok(())
        }
    })
    .await;
    if let Some(e) = &outcome.first_error {
        eprintln!("    {} Fire errors, first: {e}", outcome.errors);
    }
    (
        outcome.ok(),
        outcome.errors,
        outcome.first_error.clone(),
        outcome.rate(),
    )
}

/// Waits until `done` holds or `timeout` passed; returns whether it held.
async fn wait_until(timeout: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One webhook's figures in a breaker run.
#[derive(Debug, Clone, Serialize)]
pub struct WebhookRate {
    pub path: String,
    /// Whether its receiver answered 503 to everything.
    pub down: bool,
    /// Requests the path got (repeats and failures included).
    pub requests: usize,
    /// Distinct deliveries answered 200.
    pub delivered: usize,
    /// From the first Fire to its last delivery's arrival (healthy ones).
    pub last_arrival_s: f64,
    /// `delivered / last_arrival_s`.
    pub deliveries_per_s: f64,
}

/// One run of the breaker case.
#[derive(Debug, Clone, Serialize)]
pub struct BreakerRun {
    pub name: String,
    pub events: usize,
    pub concurrency: usize,
    pub fire_ok: usize,
    pub fire_errors: usize,
    pub fire_first_error: Option<String>,
    pub fire_calls_per_s: f64,
    pub webhooks: Vec<WebhookRate>,
    /// The mean of the healthy webhooks' `deliveries_per_s`.
    pub healthy_per_webhook_per_s: f64,
    /// From the first Fire until every healthy webhook had every delivery.
    pub healthy_done_s: f64,
    /// CPU seconds per 1,000 events (five deliveries each) over that time,
    /// per process: where a down webhook's parked deliveries cost.
    pub cpu_per_1000_events: CpuPer1000,
    /// Requests the down path got until the healthy ones were done.
    pub down_requests: Option<usize>,
    /// The bound docs/protection.md gives for them: failures + senders ×
    /// in-flight limit + one probe per cool-down begun.
    pub down_requests_bound: Option<usize>,
    /// The down webhook's breaker at the end (`GetWebhook`'s health).
    pub down_breaker: Option<String>,
    /// Every healthy webhook got every delivery before the timeout.
    pub complete: bool,
    pub wall_s: f64,
}

/// One run of the breaker case: five webhooks of [`BREAKER_EVENT`], one
/// sender, `events` fired closed-loop; with `down`, the last webhook's path
/// answers 503. The down webhook's deliveries are not waited for: they
/// stay parked (the caller deletes the run's queues and database).
pub async fn breaker_run(
    env: &Env,
    name: &str,
    down: bool,
    events: usize,
    concurrency: usize,
    payload: &str,
    timeout: Duration,
) -> anyhow::Result<BreakerRun> {
    let wall = Instant::now();
    let paths: Vec<String> = (0..BREAKER_WEBHOOKS)
        .map(|i| format!("/hooks/{BREAKER_EVENT}/{i}"))
        .collect();
    let down_path = down.then(|| paths[BREAKER_WEBHOOKS - 1].clone());
    let receiver = PathReceiver::start(down_path.iter().cloned().collect()).await?;
    let mut ingest = start_ingest(env).await?;
    create_webhooks(&mut ingest, BREAKER_EVENT, BREAKER_WEBHOOKS, receiver.addr).await?;
    let sender = start_sender(env, &format!("{name} sender"), None).await?;
    let result = breaker_measure(
        &mut ingest,
        sender.pid(),
        &receiver,
        &paths,
        down_path.as_deref(),
        name,
        events,
        concurrency,
        payload,
        timeout,
    )
    .await;
    sender.stop(Duration::from_secs(15)).await;
    ingest.proc.stop(Duration::from_secs(15)).await;
    let mut run = result?;
    run.wall_s = wall.elapsed().as_secs_f64();
    Ok(run)
}

#[allow(clippy::too_many_arguments)]
async fn breaker_measure(
    ingest: &mut Ingest,
    sender: u32,
    receiver: &PathReceiver,
    paths: &[String],
    down_path: Option<&str>,
    name: &str,
    events: usize,
    concurrency: usize,
    payload: &str,
    timeout: Duration,
) -> anyhow::Result<BreakerRun> {
    let healthy: Vec<&String> = paths
        .iter()
        .filter(|p| Some(p.as_str()) != down_path)
        .collect();
    let cpu_before = cpu_snapshot(ingest.proc.pid(), &[sender]);
    let first_fire = Instant::now();
    let (fire_ok, fire_errors, fire_first_error, fire_calls_per_s) =
        fire(ingest, BREAKER_EVENT, events, concurrency, payload).await;
    let complete = wait_until(timeout, || {
        healthy.iter().all(|p| receiver.delivered(p) >= fire_ok)
    })
    .await;
    let healthy_done_s = first_fire.elapsed().as_secs_f64();
    let cpu_per_1000_events =
        cpu_before.per_1000_until(&cpu_snapshot(ingest.proc.pid(), &[sender]), fire_ok);
    // Counted right when the healthy ones are done: the bound below is for
    // the time the run took, and the parked deliveries keep coming back
    // (and a probe goes out per cool-down) until the sender is stopped.
    let down_requests = down_path.map(|p| receiver.requests(p));
    if !complete {
        eprintln!(
            "    {name}: timed out; delivered {:?} of {fire_ok} each",
            healthy
                .iter()
                .map(|p| receiver.delivered(p))
                .collect::<Vec<_>>()
        );
    }
    let mut webhooks = Vec::new();
    for path in paths {
        let (requests, delivered) = receiver.arrivals(path);
        let last = delivered
            .last()
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(first_fire));
        webhooks.push(WebhookRate {
            path: path.clone(),
            down: Some(path.as_str()) == down_path,
            requests: requests.len(),
            delivered: delivered.len(),
            last_arrival_s: last.as_secs_f64(),
            deliveries_per_s: stats::per_second(delivered.len(), last),
        });
    }
    let rates: Vec<f64> = webhooks
        .iter()
        .filter(|w| !w.down)
        .map(|w| w.deliveries_per_s)
        .collect();
    let healthy_per_webhook_per_s = rates.iter().sum::<f64>() / rates.len().max(1) as f64;
    let down_breaker = match down_path {
        Some(path) => down_breaker(ingest, path).await,
        None => None,
    };
    // One probe per cool-down begun (the cool-down doubles after a failed
    // probe, so this over-counts rather than under-counts).
    let probes = (healthy_done_s / BREAKER_COOLDOWN.as_secs_f64()).ceil() as usize;
    Ok(BreakerRun {
        name: name.to_owned(),
        events,
        concurrency,
        fire_ok,
        fire_errors,
        fire_first_error,
        fire_calls_per_s,
        webhooks,
        healthy_per_webhook_per_s,
        healthy_done_s,
        cpu_per_1000_events,
        down_requests,
        down_requests_bound: down_path
            .map(|_| BREAKER_FAILURES + MAX_IN_FLIGHT_PER_WEBHOOK + probes),
        down_breaker,
        complete: complete && fire_errors == 0,
        wall_s: 0.0,
    })
}

/// The breaker state the Admin API shows for the webhook aimed at `path`.
async fn down_breaker(ingest: &mut Ingest, path: &str) -> Option<String> {
    let webhooks = ingest
        .admin
        .list_webhooks(ListWebhooksRequest::default())
        .await
        .ok()?
        .into_inner()
        .webhooks;
    let webhook = webhooks.into_iter().find(|w| w.url.ends_with(path))?;
    let health = ingest
        .admin
        .get_webhook(herald_proto::v1::GetWebhookRequest { id: webhook.id })
        .await
        .ok()?
        .into_inner()
        .health?;
    Some(format!(
        "{} after {} failures in a row",
        health.breaker, health.consecutive_failures
    ))
}

/// The rate-limit case.
#[derive(Debug, Clone, Serialize)]
pub struct RateLimitRun {
    pub events: usize,
    pub senders: usize,
    pub per_second: u32,
    /// The burst the webhook got (0 asked for the default: a fifth).
    pub burst: u32,
    pub fire_ok: usize,
    pub fire_errors: usize,
    pub fire_first_error: Option<String>,
    /// Requests the receiver got (repeats included: the limit counts them).
    pub requests: usize,
    /// Distinct deliveries.
    pub delivered: usize,
    /// From the first arrival to the last.
    pub drain_s: f64,
    /// From starting the senders to the last arrival.
    pub since_senders_started_s: f64,
    /// `delivered / drain_s`.
    pub deliveries_per_s: f64,
    pub busiest_1s: usize,
    pub busiest_10s: usize,
    /// docs/protection.md's bounds: `burst + per_second × t`.
    pub bound_1s: usize,
    pub bound_10s: usize,
    pub complete: bool,
    pub wall_s: f64,
}

/// One webhook of [`LIMITED_EVENT`] limited to `per_second` (default
/// burst), `events` fired while no sender runs, then `senders` senders
/// drain the backlog.
pub async fn rate_limit_run(
    env: &Env,
    events: usize,
    per_second: u32,
    senders: usize,
    concurrency: usize,
    payload: &str,
    timeout: Duration,
) -> anyhow::Result<RateLimitRun> {
    let wall = Instant::now();
    let receiver = PathReceiver::start(HashSet::new()).await?;
    let path = format!("/hooks/{LIMITED_EVENT}/0");
    let mut ingest = start_ingest(env).await?;
    let created = ingest
        .admin
        .create_webhook(CreateWebhookRequest {
            event: LIMITED_EVENT.into(),
            method: "POST".into(),
            url: format!("http://{}{path}", receiver.addr),
            description: "herald-bench rate limit".into(),
            rate_limit: Some(RateLimit {
                per_second,
                burst: 0,
            }),
            ..CreateWebhookRequest::default()
        })
        .await
        .context("creating the rate-limited webhook")?
        .into_inner();
    let burst = created.rate_limit.map_or(0, |r| r.burst);
    // Ingest learns of webhooks from its configuration cache (refreshed
    // every second in the bench): a Fire before that reaches none.
    wait_for_events(&mut ingest, "the rate-limited webhook", |events| {
        events.iter().any(|e| e.event == LIMITED_EVENT)
    })
    .await?;
    let (fire_ok, fire_errors, fire_first_error, _) =
        fire(&ingest, LIMITED_EVENT, events, concurrency, payload).await;

    // The senders start together, as a deployment's would after a restart,
    // and share the one bucket of the webhook.
    let started = Instant::now();
    let starting: Vec<_> = (0..senders)
        .map(|i| {
            let env = env.clone();
            tokio::spawn(
                async move { start_sender(&env, &format!("limited sender{i}"), None).await },
            )
        })
        .collect();
    let mut procs: Vec<Proc> = Vec::new();
    let mut start_error = None;
    for s in starting {
        match s.await.map_err(anyhow::Error::from).and_then(|r| r) {
            Ok(p) => procs.push(p),
            Err(e) => start_error = Some(e),
        }
    }
    let complete = match start_error {
        Some(_) => false,
        None => wait_until(timeout, || receiver.delivered(&path) >= fire_ok).await,
    };
    for p in procs {
        p.stop(Duration::from_secs(15)).await;
    }
    ingest.proc.stop(Duration::from_secs(15)).await;
    if let Some(e) = start_error {
        return Err(e);
    }
    let (requests, delivered) = receiver.arrivals(&path);
    let (first, last) = match (requests.first(), delivered.last()) {
        (Some(first), Some(last)) => (*first, *last),
        _ => anyhow::bail!("the rate-limited webhook got no request"),
    };
    let drain = last.saturating_duration_since(first);
    let bound = |secs: f64| burst as usize + (f64::from(per_second) * secs) as usize;
    Ok(RateLimitRun {
        events,
        senders,
        per_second,
        burst,
        fire_ok,
        fire_errors,
        fire_first_error,
        requests: requests.len(),
        delivered: delivered.len(),
        drain_s: drain.as_secs_f64(),
        since_senders_started_s: last.saturating_duration_since(started).as_secs_f64(),
        deliveries_per_s: stats::per_second(delivered.len(), drain),
        busiest_1s: busiest_window(&requests, Duration::from_secs(1)),
        busiest_10s: busiest_window(&requests, Duration::from_secs(10)),
        bound_1s: bound(1.0),
        bound_10s: bound(10.0),
        complete: complete && fire_errors == 0,
        wall_s: wall.elapsed().as_secs_f64(),
    })
}

/// One pair of breaker runs, made one right after the other, and their
/// ratio.
#[derive(Debug, Clone, Serialize)]
pub struct BreakerPair {
    pub all_healthy: BreakerRun,
    pub one_down: BreakerRun,
    /// The four healthy webhooks' rate in `one_down` over a webhook's rate
    /// in `all_healthy`.
    pub ratio: f64,
}

impl BreakerPair {
    /// The pair's runs and their ratio.
    pub fn new(all_healthy: BreakerRun, one_down: BreakerRun) -> Self {
        let ratio = if all_healthy.healthy_per_webhook_per_s > 0.0 {
            one_down.healthy_per_webhook_per_s / all_healthy.healthy_per_webhook_per_s
        } else {
            0.0
        };
        Self {
            all_healthy,
            one_down,
            ratio,
        }
    }
}

/// The breaker case: pairs of runs, alternating healthy and one down, so
/// that a passing load on the machine tilts one pair rather than the whole
/// comparison; the figure is the median pair's ratio.
#[derive(Debug, Clone, Serialize)]
pub struct BreakerCase {
    pub pairs: Vec<BreakerPair>,
    /// The median of the pairs' ratios.
    pub ratio: f64,
}

impl BreakerCase {
    /// The case of `pairs` (at least one).
    pub fn new(pairs: Vec<BreakerPair>) -> Self {
        let ratio = stats::median(pairs.iter().map(|p| p.ratio));
        Self { pairs, ratio }
    }

    /// The pair whose ratio is the median (the upper one of an even count).
    pub fn median_pair(&self) -> &BreakerPair {
        let mut order: Vec<&BreakerPair> = self.pairs.iter().collect();
        order.sort_by(|a, b| a.ratio.total_cmp(&b.ratio));
        order[order.len() / 2]
    }
}

/// What `--protection` writes to `<date>-protection.json`.
#[derive(Debug, Serialize)]
pub struct ProtectionResult {
    pub date: String,
    pub command: String,
    pub machine: Machine,
    pub breaker: BreakerCase,
    /// The rate-limit case's runs, in the order they ran.
    pub rate_limits: Vec<RateLimitRun>,
    pub targets: Vec<Target>,
    pub duration_s: f64,
}

fn percents(values: impl IntoIterator<Item = f64>) -> String {
    values
        .into_iter()
        .map(|v| format!("{:.0} %", v * 100.0))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The targets of issue 19 that the two cases measure: rates on the median
/// of the runs, bounds on every run.
pub fn targets(breaker: &BreakerCase, limits: &[RateLimitRun]) -> Vec<Target> {
    let median_pair = breaker.median_pair();
    let complete = breaker
        .pairs
        .iter()
        .all(|p| p.all_healthy.complete && p.one_down.complete);
    let mut targets = vec![Target {
        target: "breaker: with one of five webhooks down, the other four at >= 90 % of their \
                 rate with all five healthy (median of the pairs)"
            .into(),
        measured: format!(
            "{:.0} % ({:.0}/s each vs {:.0}/s each); pairs: {}",
            breaker.ratio * 100.0,
            median_pair.one_down.healthy_per_webhook_per_s,
            median_pair.all_healthy.healthy_per_webhook_per_s,
            percents(breaker.pairs.iter().map(|p| p.ratio))
        ),
        met: Some(complete && breaker.ratio >= 0.9),
    }];
    let down: Vec<(usize, usize, f64)> = breaker
        .pairs
        .iter()
        .filter_map(|p| {
            let b = &p.one_down;
            Some((b.down_requests?, b.down_requests_bound?, b.healthy_done_s))
        })
        .collect();
    if let Some(&(_, bound, _)) = down.iter().max_by_key(|(_, bound, _)| *bound) {
        targets.push(Target {
            target: format!(
                "breaker: the down receiver gets at most {BREAKER_FAILURES} failures + 1 sender × \
                 {MAX_IN_FLIGHT_PER_WEBHOOK} in flight + 1 probe per cool-down = {bound} requests \
                 of {} deliveries (every run)",
                median_pair.one_down.fire_ok
            ),
            measured: down
                .iter()
                .map(|(requests, _, s)| format!("{requests} in {s:.1} s"))
                .collect::<Vec<_>>()
                .join(", "),
            met: Some(down.iter().all(|(requests, bound, _)| requests <= bound)),
        });
    }
    let Some(first) = limits.first() else {
        return targets;
    };
    let per_second = f64::from(first.per_second);
    let busiest_10s = limits.iter().map(|l| l.busiest_10s).max().unwrap_or(0);
    let busiest_1s = limits.iter().map(|l| l.busiest_1s).max().unwrap_or(0);
    let limits_complete = limits.iter().all(|l| l.complete);
    let goal_10s = (per_second * 10.0 * 1.1).round() as usize;
    targets.push(Target {
        target: format!(
            "rate limit {}/s, {} senders: busiest 10 s window <= {goal_10s} (limit × 10 s + 10 %; \
             every run)",
            first.per_second, first.senders
        ),
        measured: format!(
            "{busiest_10s} at most (bound burst + limit × 10 s = {})",
            first.bound_10s
        ),
        met: Some(limits_complete && busiest_10s <= goal_10s),
    });
    let drain = stats::median(limits.iter().map(|l| l.deliveries_per_s));
    targets.push(Target {
        target: format!(
            "rate limit {}/s: a backlog drains at >= 90 % of the limit ({:.0}/s; median of the runs)",
            first.per_second,
            per_second * 0.9
        ),
        measured: format!(
            "{drain:.1}/s; runs: {}",
            limits
                .iter()
                .map(|l| format!("{:.1}/s", l.deliveries_per_s))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        met: Some(limits_complete && drain >= per_second * 0.9),
    });
    targets.push(Target {
        target: format!(
            "rate limit {}/s: busiest 1 s window (docs bound: burst + limit × 1 s = {})",
            first.per_second, first.bound_1s
        ),
        measured: format!("{busiest_1s} at most"),
        met: None,
    });
    targets
}

/// The cases' report.
pub fn render(r: &ProtectionResult) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let b = &r.breaker;
    let first = &b.pairs[0].all_healthy;
    let _ = writeln!(
        s,
        "Circuit breaker: {} webhooks of one event, 1 sender, {} events fired with {} calls in \
         flight, {} pairs of runs\n",
        BREAKER_WEBHOOKS,
        first.events,
        first.concurrency,
        b.pairs.len()
    );
    let _ = writeln!(
        s,
        "| pair | run | healthy webhooks | deliveries/s per healthy webhook | healthy done in | down path's requests | down breaker | CPU ms per event: ingest, sender, RabbitMQ, Postgres, bench |"
    );
    let _ = writeln!(s, "|---:|---|---:|---:|---:|---:|---|---|");
    for (i, pair) in b.pairs.iter().enumerate() {
        for run in [&pair.all_healthy, &pair.one_down] {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.0} | {:.1} s | {} | {} | {:.3}, {:.3}, {:.3}, {:.3}, {:.3} |",
                i + 1,
                run.name,
                run.webhooks.iter().filter(|w| !w.down).count(),
                run.healthy_per_webhook_per_s,
                run.healthy_done_s,
                run.down_requests
                    .map_or_else(|| "—".to_owned(), |n| n.to_string()),
                run.down_breaker.as_deref().unwrap_or("—"),
                run.cpu_per_1000_events.ingest,
                run.cpu_per_1000_events.sender,
                run.cpu_per_1000_events.rabbitmq,
                run.cpu_per_1000_events.postgres,
                run.cpu_per_1000_events.bench,
            );
        }
    }
    let _ = writeln!(
        s,
        "\nratio (four with one down / one with all healthy), per pair: {}; median {:.0} %",
        percents(b.pairs.iter().map(|p| p.ratio)),
        b.ratio * 100.0
    );
    for l in &r.rate_limits {
        let _ = writeln!(
            s,
            "\nRate limit {}/s (burst {}), {} senders, a backlog of {} deliveries: {} requests, \
             {} delivered in {:.1} s from the first arrival ({:.1} s from starting the senders), \
             {:.1}/s; busiest 1 s window {}, busiest 10 s window {}",
            l.per_second,
            l.burst,
            l.senders,
            l.events,
            l.requests,
            l.delivered,
            l.drain_s,
            l.since_senders_started_s,
            l.deliveries_per_s,
            l.busiest_1s,
            l.busiest_10s
        );
    }
    let _ = writeln!(s, "\n| target | measured | met |");
    let _ = writeln!(s, "|---|---|---|");
    for t in &r.targets {
        let met = match t.met {
            Some(true) => "met",
            Some(false) => "NOT met",
            None => "—",
        };
        let _ = writeln!(s, "| {} | {} | {met} |", t.target, t.measured);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busiest_window_is_half_open() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let sorted = [
            at(0),
            at(100),
            at(999),
            at(1000),
            at(1500),
            at(1600),
            at(1700),
        ];
        // [0, 1000) holds 3; [999, 1999) holds 5.
        assert_eq!(busiest_window(&sorted, Duration::from_secs(1)), 5);
        assert_eq!(busiest_window(&sorted, Duration::from_secs(10)), 7);
        assert_eq!(busiest_window(&[], Duration::from_secs(1)), 0);
    }
}
