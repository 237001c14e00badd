//! The routes: each handler checks the session (and, for a POST, its CSRF
//! token and the key's admin scope), makes its Admin API calls with the
//! person's key, and renders a page. Ingest decides what the key may see;
//! the scope check here only spares a call ingest would refuse.

// A refused request's `Err` is the page that says so, returned at once to
// axum; boxing it would only add an allocation on that path.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{AppendHeaders, Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use herald_core::secret::Secret;
use herald_proto::v1::{
    CircuitBreaker, CreateWebhookRequest, EventList, GetDeliveryRequest, GetWebhookRequest,
    GetWebhookSummaryRequest, GetWebhookTimelineRequest, Headers, ListDeliveriesRequest,
    ListWebhooksRequest, RateLimit, ReplayFailedRequest, ResendDeliveryRequest,
    RotateSigningSecretRequest, SendTestEventRequest, SetWebhookEnabledRequest,
    UpdateWebhookRequest, WhoAmIRequest, send_test_event_request,
};
use maud::Markup;
use tonic::{Code, Status};

use crate::AppState;
use crate::api::Admin;
use crate::pages::{self, delivery, log, login, webhook, webhooks};
use crate::session::{LOGIN_COOKIE, SESSION_COOKIE, Session, cookie, random_token, set_cookie};
use crate::time_fmt;

/// Deliveries per page of the log.
const PAGE_SIZE: u32 = 50;
/// Most webhooks whose day figures one list page asks for.
const MAX_SUMMARIES: usize = 200;

pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/webhooks") }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/static/console.css", get(css))
        .route("/login", get(login_form).post(sign_in))
        .route("/logout", post(sign_out))
        .route("/webhooks", get(list_webhooks).post(create_webhook))
        .route("/webhooks/{id}", get(show_webhook))
        .route("/webhooks/{id}/edit", get(edit_form).post(save_edit))
        .route("/webhooks/{id}/enabled", post(set_enabled))
        .route("/webhooks/{id}/test", post(test_send))
        .route("/webhooks/{id}/rotate", post(rotate_secret))
        .route("/webhooks/{id}/replay", post(replay_failed))
        .route("/webhooks/{id}/deliveries", get(delivery_log))
        .route("/webhooks/{id}/charts.svg", get(charts))
        .route("/deliveries/{id}", get(show_delivery))
        .route("/deliveries/{id}/resend", post(resend))
        .route("/search", get(search))
        .layer(axum::middleware::from_fn(timing_and_headers))
        .with_state(state)
}

/// Adds `Server-Timing` (the server's time for the response, which the
/// bench reads) and the headers every page carries: a Content Security
/// Policy that allows no script at all (the pages need none), no sniffing,
/// no referrer, no caching of pages that show delivery data.
async fn timing_and_headers(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let mut response = next.run(request).await;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&format!("app;dur={ms:.2}")) {
        headers.insert("server-timing", value);
    }
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    headers
        .entry(CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

async fn css() -> Response {
    (
        [
            (CONTENT_TYPE, "text/css; charset=utf-8"),
            (CACHE_CONTROL, "public, max-age=3600"),
        ],
        pages::CSS,
    )
        .into_response()
}

/// A signed-in request: its session. Without one, the request is sent to
/// the sign-in page.
pub(crate) struct Signed(Arc<Session>, String);

impl FromRequestParts<AppState> for Signed {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Response> {
        cookie(&parts.headers, SESSION_COOKIE)
            .and_then(|id| state.sessions.get(id).map(|s| Signed(s, id.to_owned())))
            .ok_or_else(|| Redirect::to("/login").into_response())
    }
}

impl Signed {
    fn admin(&self, state: &AppState) -> Admin {
        state.api.admin(&self.0.token)
    }

    /// A POST's checks: the form's CSRF token, then the admin scope.
    fn may_change(&self, csrf: &str) -> Result<(), Response> {
        if !self.0.csrf_matches(csrf) {
            return Err(self.refuse(
                StatusCode::FORBIDDEN,
                "This form did not come from your current session of the console (or is stale); \
                 reload the page and try again.",
            ));
        }
        if !self.0.is_admin() {
            return Err(self.refuse(
                StatusCode::FORBIDDEN,
                "The API key you signed in with is not an admin key: it may look, not change \
                 anything. Sign in with an admin key to do this.",
            ));
        }
        Ok(())
    }

    fn refuse(&self, status: StatusCode, message: &str) -> Response {
        html(
            status,
            pages::error_page(Some(&self.0), status.as_u16(), message),
        )
    }

    /// A failed API call as a page. A key that stopped working (revoked)
    /// ends the session.
    fn failed(&self, state: &AppState, status: &Status) -> Response {
        if status.code() == Code::Unauthenticated {
            state.sessions.remove(&self.1);
            return Redirect::to("/login").into_response();
        }
        let code = http_status(status.code());
        self.refuse(code, &api_message(status))
    }
}

fn html(status: StatusCode, markup: Markup) -> Response {
    (status, Html(markup.into_string())).into_response()
}

fn http_status(code: Code) -> StatusCode {
    match code {
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unavailable | Code::DeadlineExceeded => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_GATEWAY,
    }
}

fn api_message(status: &Status) -> String {
    match status.code() {
        Code::Unavailable => format!(
            "Herald's ingest cannot be reached right now ({}); try again in a moment.",
            status.message()
        ),
        _ => status.message().to_owned(),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

// ---- sign-in -------------------------------------------------------------

#[derive(serde::Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    csrf: String,
}

/// The sign-in form, with a fresh CSRF token in a cookie and the form
/// (double submit: there is no session yet to hold it).
async fn login_form(State(state): State<AppState>) -> Response {
    login_page(&state, StatusCode::OK, None)
}

fn login_page(state: &AppState, status: StatusCode, problem: Option<&str>) -> Response {
    let csrf = random_token();
    let cookie = set_cookie(
        LOGIN_COOKIE,
        &csrf,
        Some(Duration::from_secs(3600)),
        state.secure_cookies,
    );
    (
        status,
        [(SET_COOKIE, cookie)],
        Html(login::page(&csrf, problem).into_string()),
    )
        .into_response()
}

async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !crate::session::same(expected, &form.csrf) {
        return login_page(
            &state,
            StatusCode::FORBIDDEN,
            Some("The sign-in form was stale or did not come from this console; try again."),
        );
    }
    let token = form.token.trim().to_owned();
    if token.is_empty() {
        return login_page(
            &state,
            StatusCode::BAD_REQUEST,
            Some("Enter an API key (it starts with hrk_)."),
        );
    }
    let token = Secret::new(token);
    let caller = match state.api.admin(&token).who_am_i(WhoAmIRequest {}).await {
        Ok(caller) => caller.into_inner(),
        Err(status) if status.code() == Code::Unauthenticated => {
            tracing::info!("console sign-in refused: the key is not valid");
            return login_page(
                &state,
                StatusCode::UNAUTHORIZED,
                Some("Herald does not accept that key: it is unknown, revoked or mistyped."),
            );
        }
        Err(status) => {
            return login_page(
                &state,
                http_status(status.code()),
                Some(&api_message(&status)),
            );
        }
    };
    tracing::info!(key = %caller.token_prefix, name = %caller.name, "console sign-in");
    let id = state.sessions.create(token, caller);
    let session = set_cookie(
        SESSION_COOKIE,
        &id,
        Some(state.sessions.ttl()),
        state.secure_cookies,
    );
    let forget_login = set_cookie(LOGIN_COOKIE, "", None, state.secure_cookies);
    (
        AppendHeaders([(SET_COOKIE, session), (SET_COOKIE, forget_login)]),
        Redirect::to("/webhooks"),
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn sign_out(
    State(state): State<AppState>,
    signed: Signed,
    Form(form): Form<CsrfForm>,
) -> Response {
    if !signed.0.csrf_matches(&form.csrf) {
        return signed.refuse(
            StatusCode::FORBIDDEN,
            "This form did not come from your current session; reload the page and try again.",
        );
    }
    state.sessions.remove(&signed.1);
    let gone = set_cookie(SESSION_COOKIE, "", None, state.secure_cookies);
    ([(SET_COOKIE, gone)], Redirect::to("/login")).into_response()
}

// ---- webhooks ------------------------------------------------------------

#[derive(serde::Deserialize, Default)]
struct TenantQuery {
    tenant: Option<String>,
}

async fn list_webhooks(
    State(state): State<AppState>,
    signed: Signed,
    Query(q): Query<TenantQuery>,
) -> Response {
    let tenant = q.tenant.filter(|t| t != "*");
    webhooks_page(
        &state,
        &signed,
        tenant,
        webhooks::WebhookForm::default(),
        None,
    )
    .await
}

async fn webhooks_page(
    state: &AppState,
    signed: &Signed,
    tenant: Option<String>,
    form: webhooks::WebhookForm,
    problem: Option<(StatusCode, String)>,
) -> Response {
    let mut admin = signed.admin(state);
    let all = match admin
        .list_webhooks(ListWebhooksRequest {
            tenant: None,
            event: None,
        })
        .await
    {
        Ok(r) => r.into_inner().webhooks,
        Err(status) => return signed.failed(state, &status),
    };
    let mut tenants: Vec<String> = all.iter().map(|w| w.tenant.clone()).collect();
    tenants.sort();
    tenants.dedup();
    let tenant = tenant.or_else(|| signed.0.caller.tenant.clone());
    let shown: Vec<_> = all
        .into_iter()
        .filter(|w| tenant.as_ref().is_none_or(|t| *t == w.tenant))
        .collect();
    let day_ago = now_ms() - 24 * 3600 * 1000;
    let rows = futures_util::future::join_all(shown.into_iter().enumerate().map(|(i, w)| {
        let mut admin = admin.clone();
        async move {
            if i >= MAX_SUMMARIES {
                return webhooks::Row {
                    webhook: w,
                    day: None,
                    last: None,
                };
            }
            let mut admin2 = admin.clone();
            let summary = admin.get_webhook_summary(GetWebhookSummaryRequest {
                webhook_id: w.id.clone(),
                from_unix_ms: Some(day_ago),
                to_unix_ms: None,
            });
            let last = admin2.list_deliveries(ListDeliveriesRequest {
                webhook_id: Some(w.id.clone()),
                page_size: 1,
                ..ListDeliveriesRequest::default()
            });
            let (summary, last) = tokio::join!(summary, last);
            webhooks::Row {
                webhook: w,
                day: summary.ok().map(tonic::Response::into_inner),
                last: last
                    .ok()
                    .and_then(|r| r.into_inner().deliveries.into_iter().next()),
            }
        }
    }))
    .await;
    let (status, problem) = match problem {
        Some((status, text)) => (status, Some(text)),
        None => (StatusCode::OK, None),
    };
    let page = webhooks::Page {
        session: &signed.0,
        tenants: if signed.0.caller.tenant.is_none() {
            tenants
        } else {
            Vec::new()
        },
        tenant,
        rows,
        form,
        problem,
    };
    html(status, webhooks::page(&page))
}

/// `Name: value` lines as a header map.
fn header_lines(
    field: &str,
    text: &str,
) -> Result<std::collections::BTreeMap<String, String>, String> {
    let mut headers = std::collections::BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!(
                "{field}: line {} ({line:?}) has no colon; write one Name: value per line",
                n + 1
            ));
        };
        headers.insert(name.trim().to_owned(), value.trim().to_owned());
    }
    Ok(headers)
}

fn events_of(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The form's rate limit: empty is none (a rate of 0, which an update
/// takes as "remove").
fn rate_limit_of(text: &str) -> Result<RateLimit, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(RateLimit::default());
    }
    let (per_second, burst) = herald_core::rate_limit::parse_spec(text)
        .map_err(|e| format!("Rate limit: {e}; leave it empty for none"))?;
    Ok(RateLimit { per_second, burst })
}

/// A whole number field where empty means 0 (the senders' default).
fn count_of(field: &str, text: &str) -> Result<u32, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(0);
    }
    text.parse().map_err(|_| {
        format!("{field}: {text:?} is not a whole number; leave it empty for the default")
    })
}

/// The form's breaker settings (both empty = the senders' defaults).
fn breaker_of(form: &webhooks::WebhookForm) -> Result<CircuitBreaker, String> {
    Ok(CircuitBreaker {
        failures: count_of("Circuit breaker failures", &form.breaker_failures)?,
        cooldown_ms: count_of("Circuit breaker cool-down", &form.breaker_cooldown_ms)?,
    })
}

fn timeout_of(text: &str) -> Result<Option<u32>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        format!("Timeout: {text:?} is not a number of milliseconds; leave it empty for the default")
    })
}

async fn create_webhook(
    State(state): State<AppState>,
    signed: Signed,
    Form(form): Form<webhooks::WebhookForm>,
) -> Response {
    if let Err(refused) = signed.may_change(&form.csrf) {
        return refused;
    }
    let tenant = Some(form.tenant.clone());
    let request = (|| {
        Ok::<_, String>(CreateWebhookRequest {
            tenant: form.tenant.clone(),
            events: events_of(&form.events),
            method: form.method.clone(),
            url: form.url.trim().to_owned(),
            headers: header_lines("Headers", &form.headers)?,
            secret_headers: header_lines("Secret headers", &form.secret_headers)?,
            body_template: form.body_template.clone(),
            body_mode: form.body_mode.clone(),
            timeout_ms: timeout_of(&form.timeout_ms)?,
            rate_limit: Some(rate_limit_of(&form.rate_limit)?).filter(|l| l.per_second > 0),
            breaker: Some(breaker_of(&form)?).filter(|b| b.failures > 0 || b.cooldown_ms > 0),
            auto_disable_after_s: count_of("Disable after", &form.auto_disable_after_s)?,
            description: form.description.clone(),
            ..CreateWebhookRequest::default()
        })
    })();
    let request = match request {
        Ok(r) => r,
        Err(problem) => {
            return webhooks_page(
                &state,
                &signed,
                tenant,
                form,
                Some((StatusCode::BAD_REQUEST, problem)),
            )
            .await;
        }
    };
    match signed.admin(&state).create_webhook(request).await {
        Ok(created) => {
            let created = created.into_inner();
            tracing::info!(webhook_id = %created.id, "webhook created in the console");
            if created.signing_secret.is_empty() {
                see_other(&format!("/webhooks/{}?done=created", created.id))
            } else {
                let shown = signed
                    .0
                    .keep_new_secret(&created.id, created.signing_secret);
                see_other(&format!(
                    "/webhooks/{}?done=created&shown={shown}",
                    created.id
                ))
            }
        }
        Err(status) if status.code() == Code::InvalidArgument => {
            let problem = status.message().to_owned();
            webhooks_page(
                &state,
                &signed,
                tenant,
                form,
                Some((StatusCode::BAD_REQUEST, problem)),
            )
            .await
        }
        Err(status) => signed.failed(&state, &status),
    }
}

#[derive(serde::Deserialize, Default)]
struct WebhookQuery {
    done: Option<String>,
    /// Names the signing secret the form before kept to show here.
    shown: Option<String>,
    sent: Option<String>,
    replayed: Option<usize>,
}

async fn get_webhook(
    state: &AppState,
    signed: &Signed,
    id: &str,
) -> Result<herald_proto::v1::Webhook, Response> {
    signed
        .admin(state)
        .get_webhook(GetWebhookRequest { id: id.to_owned() })
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| signed.failed(state, &status))
}

async fn show_webhook(
    State(state): State<AppState>,
    signed: Signed,
    Path(id): Path<String>,
    Query(q): Query<WebhookQuery>,
) -> Response {
    let w = match get_webhook(&state, &signed, &id).await {
        Ok(w) => w,
        Err(page) => return page,
    };
    let notice = match (q.done.as_deref(), q.sent, q.replayed) {
        (_, Some(id), _) => webhook::Notice::Sent(id),
        (_, _, Some(n)) => webhook::Notice::Text(format!(
            "{n} failed deliver{} queued again (see the delivery log).",
            if n == 1 { "y" } else { "ies" }
        )),
        (Some("enabled"), ..) => webhook::Notice::Text("Webhook enabled.".into()),
        (Some("disabled"), ..) => webhook::Notice::Text(
            "Webhook disabled: Fire makes no deliveries for it until it is enabled again.".into(),
        ),
        (Some("saved"), ..) => webhook::Notice::Text("Changes saved.".into()),
        (Some("created"), ..) => webhook::Notice::Text("Webhook created.".into()),
        _ => webhook::Notice::None,
    };
    let shown = q
        .shown
        .as_deref()
        .and_then(|n| signed.0.new_secret(&w.id, n));
    let notice = match shown {
        Some(secret) => webhook::Notice::Secret(secret),
        None => notice,
    };
    webhook_page(&signed, w, notice, None)
}

fn webhook_page(
    signed: &Signed,
    w: herald_proto::v1::Webhook,
    notice: webhook::Notice,
    problem: Option<(StatusCode, String)>,
) -> Response {
    let now = now_ms();
    let (status, problem) = match problem {
        Some((status, text)) => (status, Some(text)),
        None => (StatusCode::OK, None),
    };
    let page = webhook::Page {
        session: &signed.0,
        webhook: w,
        notice,
        problem,
        now_ms: now,
        request_id: uuid::Uuid::new_v4().to_string(),
    };
    html(status, webhook::page(&page))
}

/// The webhook's 7-day charts as an SVG image (see `pages::chart`).
async fn charts(State(state): State<AppState>, signed: Signed, Path(id): Path<String>) -> Response {
    let now = now_ms();
    let timeline = signed
        .admin(&state)
        .get_webhook_timeline(GetWebhookTimelineRequest {
            webhook_id: id,
            from_unix_ms: Some(now - 7 * 24 * 3600 * 1000 - 3600 * 1000),
            to_unix_ms: Some(now + 1),
            bucket_seconds: 3600,
        })
        .await;
    match timeline {
        Ok(t) => (
            [(CONTENT_TYPE, "image/svg+xml")],
            pages::chart::document(&t.into_inner(), now).into_string(),
        )
            .into_response(),
        Err(status) => signed.failed(&state, &status),
    }
}

#[derive(serde::Deserialize)]
struct EnabledForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    enabled: String,
}

async fn set_enabled(
    State(state): State<AppState>,
    signed: Signed,
    Path(id): Path<String>,
    Form(form): Form<EnabledForm>,
) -> Response {
    if let Err(refused) = signed.may_change(&form.csrf) {
        return refused;
    }
    let enabled = form.enabled == "true";
    match signed
        .admin(&state)
        .set_webhook_enabled(SetWebhookEnabledRequest {
            id: id.clone(),
            enabled,
        })
        .await
    {
        Ok(_) => see_other(&format!(
            "/webhooks/{id}?done={}",
            if enabled { "enabled" } else { "disabled" }
        )),
        Err(status) => signed.failed(&state, &status),
    }
}

async fn edit_form(
    State(state): State<AppState>,
    signed: Signed,
    Path(id): Path<String>,
) -> Response {
    if !signed.0.is_admin() {
        return signed.refuse(
            StatusCode::FORBIDDEN,
            "The API key you signed in with is not an admin key: it may look, not change anything.",
        );
    }
    match get_webhook(&state, &signed, &id).await {
        Ok(w) => html(
            StatusCode::OK,
            webhook::edit_page(&signed.0, &w, &webhook::form_of(&w), None),
        ),
        Err(page) => page,
    }
}

async fn save_edit(
    State(state): State<AppState>,
    signed: Signed,
    Path(id): Path<String>,
    Form(form): Form<webhooks::WebhookForm>,
) -> Response {
    if let Err(refused) = signed.may_change(&form.csrf) {
        return refused;
    }
    let w = match get_webhook(&state, &signed, &id).await {
        Ok(w) => w,
        Err(page) => return page,
    };
    let request = (|| {
        let secret = header_lines("Secret headers", &form.secret_headers)?;
        Ok::<_, String>(UpdateWebhookRequest {
            id: id.clone(),
            events: Some(EventList {
                values: events_of(&form.events),
            }),
            method: Some(form.method.clone()),
            url: Some(form.url.trim().to_owned()),
            headers: Some(Headers {
                values: header_lines("Headers", &form.headers)?,
            }),
            secret_headers: (!secret.is_empty()).then_some(Headers { values: secret }),
            body_template: Some(form.body_template.clone()),
            body_mode: Some(form.body_mode.clone()),
            timeout_ms: timeout_of(&form.timeout_ms)?,
            rate_limit: Some(rate_limit_of(&form.rate_limit)?),
            breaker: Some(breaker_of(&form)?),
            auto_disable_after_s: Some(count_of("Disable after", &form.auto_disable_after_s)?),
            description: Some(form.description.clone()),
            ..UpdateWebhookRequest::default()
        })
    })();
    let refused = |problem: &str| {
        html(
            StatusCode::BAD_REQUEST,
            webhook::edit_page(&signed.0, &w, &form, Some(problem)),
        )
    };
    let request = match request {
        Ok(r) => r,
        Err(problem) => return refused(&problem),
    };
    match signed.admin(&state).update_webhook(request).await {
        Ok(_) => see_other(&format!("/webhooks/{id}?done=saved")),
        Err(status) if status.code() == Code::InvalidArgument => refused(status.message()),
        Err(status) => signed.failed(&state, &status),
    }
}

async fn test_send(
    State(state): State<AppState>,
    signed: Signed,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(refused) = signed.may_change(&form.csrf) {
        return refused;
    }
    match signed
        .admin(&state)
        .send_test_event(SendTestEventRequest {
            webhook_id: id.clone(),
            data: Some(send_test_event_request::Data::Json(
                r#"{"test":true,"sent_from":"herald-console"}"#.to_owned(),
            )),
        })
        .await
    {
        Ok(r) => {
            let sent = r
                .into_inner()
                .delivery_ids
                .into_iter()
                .next()
                .unwrap_or_default();
            see_other(&format!("/webhooks/{id}?sent={sent}"))
        }
        Err(status) => signed.failed(&state, &status),
    }
}

async fn rotate_secret(
    State(state): State<AppState>,
    signed: Signed,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(refused) = signed.may_change(&form.csrf) {
        return refused;
    }
    let rotated = signed
        .admin(&state)
        .rotate_signing_secret(RotateSigningSecretRequest {
            id: id.clone(),
            new_secret: String::new(),
            overlap_seconds: None,
        })
        .await;
    let secret = match rotated {
        Ok(s) => s.into_inner().secret,
        Err(status) => return signed.failed(&state, &status),
    };
    tracing::info!(webhook_id = %id, "signing secret rotated in the console");
    let shown = signed.0.keep_new_secret(&id, secret);
    see_other(&format!("/webhooks/{id}?shown={shown}"))
}

#[derive(serde::Deserialize)]
struct ReplayForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    request_id: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
}

/// The webhook's page again, saying why the form was refused (400).
async fn webhook_with_problem(
    state: &AppState,
    signed: &Signed,
    id: &str,
    problem: String,
) -> Response {
    match get_webhook(state, signed, id).await {
        Ok(w) => webhook_page(
            signed,
            w,
            webhook::Notice::None,
            Some((StatusCode::BAD_REQUEST, problem)),
        ),
        Err(page) => page,
    }
}

/// The form's request id (made when the page was rendered, so that a
/// double submit resends once), or a fresh one if the form had none.
fn request_id_or_new(from_form: String) -> String {
    if from_form.is_empty() {
        uuid::Uuid::new_v4().to_string()
    } else {
        from_form
    }
}

async fn replay_failed(
    State(state): State<AppState>,
    signed: Signed,
    Path(id): Path<String>,
    Form(form): Form<ReplayForm>,
) -> Response {
    if let Err(refused) = signed.may_change(&form.csrf) {
        return refused;
    }
    let range = time_fmt::parse_input("From", &form.from)
        .and_then(|from| Ok((from, time_fmt::parse_input("To", &form.to)?)));
    let (from, to) = match range {
        Ok(range) => range,
        Err(problem) => return webhook_with_problem(&state, &signed, &id, problem).await,
    };
    let request_id = request_id_or_new(form.request_id);
    match signed
        .admin(&state)
        .replay_failed(ReplayFailedRequest {
            webhook_id: id.clone(),
            from_unix_ms: from,
            to_unix_ms: to,
            request_id,
            include_cancelled: false,
        })
        .await
    {
        Ok(r) => see_other(&format!(
            "/webhooks/{id}?replayed={}",
            r.into_inner().delivery_ids.len()
        )),
        Err(status) if status.code() == Code::InvalidArgument => {
            webhook_with_problem(&state, &signed, &id, status.message().to_owned()).await
        }
        Err(status) => signed.failed(&state, &status),
    }
}

// ---- the delivery log ----------------------------------------------------

async fn delivery_log(
    State(state): State<AppState>,
    signed: Signed,
    Path(id): Path<String>,
    Query(filters): Query<log::Filters>,
) -> Response {
    let w = match get_webhook(&state, &signed, &id).await {
        Ok(w) => w,
        Err(page) => return page,
    };
    let range = time_fmt::parse_input("Fired from", &filters.from)
        .and_then(|from| Ok((from, time_fmt::parse_input("to", &filters.to)?)));
    let listed = match range {
        Err(problem) => Err((StatusCode::BAD_REQUEST, problem)),
        Ok((from, to)) => signed
            .admin(&state)
            .list_deliveries(ListDeliveriesRequest {
                tenant: None,
                event: Some(filters.event.trim().to_owned()).filter(|e| !e.is_empty()),
                webhook_id: Some(id.clone()),
                state: Some(filters.state.clone()).filter(|s| !s.is_empty()),
                from_unix_ms: from,
                to_unix_ms: to,
                page_size: PAGE_SIZE,
                cursor: filters.cursor.clone(),
            })
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| {
                if status.code() == Code::InvalidArgument {
                    (StatusCode::BAD_REQUEST, status.message().to_owned())
                } else {
                    (http_status(status.code()), api_message(&status))
                }
            }),
    };
    let (status, deliveries, next_cursor, problem) = match listed {
        Ok(page) => (StatusCode::OK, page.deliveries, page.next_cursor, None),
        Err((status, problem)) => (status, Vec::new(), String::new(), Some(problem)),
    };
    let page = log::Page {
        session: &signed.0,
        webhook: w,
        filters,
        deliveries,
        next_cursor,
        problem,
    };
    html(status, log::page(&page))
}

#[derive(serde::Deserialize, Default)]
struct DeliveryQuery {
    resent: Option<String>,
}

async fn show_delivery(
    State(state): State<AppState>,
    signed: Signed,
    Path(id): Path<String>,
    Query(q): Query<DeliveryQuery>,
) -> Response {
    delivery_page(&state, &signed, &id, q.resent, None).await
}

async fn delivery_page(
    state: &AppState,
    signed: &Signed,
    id: &str,
    resent: Option<String>,
    problem: Option<(StatusCode, String)>,
) -> Response {
    let mut admin = signed.admin(state);
    let d = match admin
        .get_delivery(GetDeliveryRequest { id: id.to_owned() })
        .await
    {
        Ok(d) => d.into_inner(),
        Err(status) => return signed.failed(state, &status),
    };
    let webhook = admin
        .get_webhook(GetWebhookRequest {
            id: d.webhook_id.clone(),
        })
        .await
        .ok()
        .map(tonic::Response::into_inner);
    let (status, problem) = match problem {
        Some((status, text)) => (status, Some(text)),
        None => (StatusCode::OK, None),
    };
    let page = delivery::Page {
        session: &signed.0,
        delivery: d,
        webhook,
        resent,
        problem,
        request_id: uuid::Uuid::new_v4().to_string(),
    };
    html(status, delivery::page(&page))
}

#[derive(serde::Deserialize)]
struct ResendForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    request_id: String,
}

async fn resend(
    State(state): State<AppState>,
    signed: Signed,
    Path(id): Path<String>,
    Form(form): Form<ResendForm>,
) -> Response {
    if let Err(refused) = signed.may_change(&form.csrf) {
        return refused;
    }
    let request_id = request_id_or_new(form.request_id);
    match signed
        .admin(&state)
        .resend_delivery(ResendDeliveryRequest {
            id: id.clone(),
            request_id,
        })
        .await
    {
        Ok(r) => {
            let new = r
                .into_inner()
                .delivery_ids
                .into_iter()
                .next()
                .unwrap_or_default();
            see_other(&format!("/deliveries/{id}?resent={new}"))
        }
        Err(status)
            if matches!(
                status.code(),
                Code::FailedPrecondition | Code::InvalidArgument
            ) =>
        {
            delivery_page(
                &state,
                &signed,
                &id,
                None,
                Some((StatusCode::BAD_REQUEST, status.message().to_owned())),
            )
            .await
        }
        Err(status) => signed.failed(&state, &status),
    }
}

// ---- search --------------------------------------------------------------

#[derive(serde::Deserialize, Default)]
struct SearchQuery {
    #[serde(default)]
    id: String,
}

async fn search(
    State(state): State<AppState>,
    signed: Signed,
    Query(q): Query<SearchQuery>,
) -> Response {
    let text = q.id.trim();
    let Ok(id) = uuid::Uuid::parse_str(text) else {
        return signed.refuse(
            StatusCode::BAD_REQUEST,
            &format!(
                "{text:?} is not a delivery id. A delivery id is a UUID such as \
                 0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b: the Webhook-Id header a receiver got."
            ),
        );
    };
    match signed
        .admin(&state)
        .get_delivery(GetDeliveryRequest { id: id.to_string() })
        .await
    {
        Ok(_) => see_other(&format!("/deliveries/{id}")),
        Err(status) if status.code() == Code::NotFound => signed.refuse(
            StatusCode::NOT_FOUND,
            &format!("No delivery {id} is visible to your key (it may belong to another tenant, or the id is mistyped)."),
        ),
        Err(status) => signed.failed(&state, &status),
    }
}
