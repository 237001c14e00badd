//! Page 1: a tenant's webhooks, their last day, and the create form.

use herald_proto::v1::{Delivery, Webhook, WebhookSummary};
use maud::{Markup, html};

use super::{csrf_field, layout, state_badge, status_text, tenant_label};
use crate::session::Session;

/// One webhook with its last 24 hours.
pub struct Row {
    pub webhook: Webhook,
    pub day: Option<WebhookSummary>,
    pub last: Option<Delivery>,
}

/// What the create form holds (empty, or as sent when it was refused).
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct WebhookForm {
    #[serde(default)]
    pub csrf: String,
    #[serde(default)]
    pub tenant: String,
    #[serde(default)]
    pub events: String,
    #[serde(default)]
    pub method: String,
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub body_mode: String,
    #[serde(default)]
    pub body_template: String,
    #[serde(default)]
    pub headers: String,
    #[serde(default)]
    pub secret_headers: String,
    #[serde(default)]
    pub timeout_ms: String,
    /// `50` or `50/20` (per second / burst); empty = none.
    #[serde(default)]
    pub rate_limit: String,
    /// Consecutive failures that open the breaker; empty = the default.
    #[serde(default)]
    pub breaker_failures: String,
    /// The breaker's first cool-down in ms; empty = the default.
    #[serde(default)]
    pub breaker_cooldown_ms: String,
    /// Seconds of failing before Herald disables it; empty = the default.
    #[serde(default)]
    pub auto_disable_after_s: String,
    #[serde(default)]
    pub description: String,
}

pub struct Page<'a> {
    pub session: &'a Session,
    /// Tenants an unrestricted key can pick from; empty for a tenant's key.
    pub tenants: Vec<String>,
    /// The tenant shown; `None` = every tenant.
    pub tenant: Option<String>,
    pub rows: Vec<Row>,
    pub form: WebhookForm,
    pub problem: Option<String>,
}

pub fn page(p: &Page<'_>) -> Markup {
    let admin = p.session.is_admin();
    let title = match &p.tenant {
        Some(t) => format!("Webhooks of {}", tenant_label(t)),
        None => "Webhooks".to_owned(),
    };
    layout(
        &title,
        Some(p.session),
        None,
        html! {
            h1 { (title) }
            @if p.session.caller.tenant.is_none() {
                form.filters method="get" action="/webhooks" {
                    label for="tenant" { "Tenant" }
                    select #tenant name="tenant" {
                        option value="*" selected[p.tenant.is_none()] { "every tenant" }
                        @for t in &p.tenants {
                            option value=(t) selected[p.tenant.as_deref() == Some(t.as_str())] {
                                (tenant_label(t))
                            }
                        }
                    }
                    button type="submit" { "Show" }
                }
            }
            @if p.rows.is_empty() {
                p { "No webhooks yet." }
            } @else {
                table.list #webhooks {
                    thead { tr {
                        th { "Event(s)" } th { "Method" } th { "URL" } th { "Enabled" }
                        @if p.tenant.is_none() { th { "Tenant" } }
                        th title="Succeeded ÷ finished, deliveries fired in the last 24 h" { "Success 24 h" }
                        th title="95th percentile of attempt durations, last 24 h" { "p95 24 h" }
                        th { "Last attempt" }
                        th title="Scheduled or waiting for a retry, fired in the last 24 h" { "Pending" }
                    } }
                    tbody {
                        @for row in &p.rows {
                            (webhook_row(row, p.tenant.is_none()))
                        }
                    }
                }
            }
            @if admin {
                (create_form(p))
            }
        },
    )
}

fn webhook_row(row: &Row, show_tenant: bool) -> Markup {
    let w = &row.webhook;
    let events = events_text(w);
    html! {
        tr {
            td { a href={ "/webhooks/" (w.id) } { (events) } }
            td { (w.method) }
            td.url { (w.url) }
            td { @if w.enabled { "yes" } @else { span.badge.state-failed { "disabled" } } }
            @if show_tenant { td { (tenant_label(&w.tenant)) } }
            @match &row.day {
                Some(day) => {
                    td { (success_rate(day)) }
                    td { @if day.p95_attempt_ms > 0 || day.succeeded + day.failed > 0 { (day.p95_attempt_ms) " ms" } @else { "–" } }
                }
                None => { td { "?" } td { "?" } }
            }
            td {
                @match &row.last {
                    Some(d) => {
                        (state_badge(&d.state)) " " (status_text(d.last_status_code))
                    }
                    None => { "–" }
                }
            }
            td { @match &row.day { Some(day) => { (day.pending + day.scheduled) } None => { "?" } } }
        }
    }
}

/// The events a webhook subscribes to, as one line.
pub fn events_text(w: &Webhook) -> String {
    if w.events.is_empty() {
        w.event.clone()
    } else {
        w.events.join(", ")
    }
}

fn success_rate(day: &WebhookSummary) -> String {
    if day.succeeded + day.failed == 0 {
        "–".to_owned()
    } else {
        format!("{:.1} %", day.success_rate * 100.0)
    }
}

/// The fields of a webhook's form, shared by create and edit.
pub fn webhook_fields(form: &WebhookForm) -> Markup {
    let method = if form.method.is_empty() {
        "POST"
    } else {
        form.method.as_str()
    };
    let mode = if form.body_mode.is_empty() {
        "raw"
    } else {
        form.body_mode.as_str()
    };
    html! {
        label for="events" { "Event(s), comma-separated (patterns such as order.* allowed)" }
        input #events name="events" required value=(form.events) size="50";
        label for="method" { "Method" }
        select #method name="method" {
            @for m in ["POST", "PUT", "PATCH", "GET", "DELETE"] {
                option value=(m) selected[m == method] { (m) }
            }
        }
        label for="url" { "URL" }
        input #url name="url" type="url" required value=(form.url) size="70";
        label for="body_mode" { "Body" }
        select #body_mode name="body_mode" {
            option value="raw" selected[mode == "raw"] { "raw: the data as fired" }
            option value="json" selected[mode == "json"] { "json: the data in an envelope" }
            option value="template" selected[mode == "template"] { "template: rendered from the template below" }
        }
        label for="body_template" { "Body template (Liquid), for the template body" }
        textarea #body_template name="body_template" rows="4" cols="70" { (form.body_template) }
        label for="headers" { "Headers, one Name: value per line" }
        textarea #headers name="headers" rows="3" cols="70" { (form.headers) }
        label for="secret_headers" { "Secret headers, one Name: value per line (stored encrypted, never shown again)" }
        textarea #secret_headers name="secret_headers" rows="2" cols="70" { (form.secret_headers) }
        label for="timeout_ms" { "Timeout (ms; empty for the default)" }
        input #timeout_ms name="timeout_ms" inputmode="numeric" value=(form.timeout_ms) size="8";
        label for="rate_limit" { "Rate limit for the whole deployment: requests per second, optionally /burst (50 or 50/20; empty for none)" }
        input #rate_limit name="rate_limit" value=(form.rate_limit) size="10";
        label for="breaker_failures" { "Circuit breaker: consecutive failures that open it (empty for the senders' default, 10)" }
        input #breaker_failures name="breaker_failures" inputmode="numeric" value=(form.breaker_failures) size="6";
        label for="breaker_cooldown_ms" { "Circuit breaker: first cool-down in ms (empty for the senders' default, 30000)" }
        input #breaker_cooldown_ms name="breaker_cooldown_ms" inputmode="numeric" value=(form.breaker_cooldown_ms) size="8";
        label for="auto_disable_after_s" { "Disable after every attempt failed for this many seconds (empty for the senders' default, 5 days)" }
        input #auto_disable_after_s name="auto_disable_after_s" inputmode="numeric" value=(form.auto_disable_after_s) size="8";
        label for="description" { "Description" }
        input #description name="description" value=(form.description) size="70";
    }
}

fn create_form(p: &Page<'_>) -> Markup {
    let tenant = p
        .tenant
        .clone()
        .or_else(|| p.session.caller.tenant.clone())
        .unwrap_or_default();
    let tenant = if p.form.tenant.is_empty() {
        tenant
    } else {
        p.form.tenant.clone()
    };
    html! {
        h2 #create { "Create a webhook" }
        @if let Some(problem) = &p.problem {
            p.error role="alert" { (problem) }
        }
        form.card method="post" action="/webhooks" {
            (csrf_field(p.session))
            label for="new-tenant" { "Tenant (empty: the default tenant)" }
            @if let Some(own) = &p.session.caller.tenant {
                input #new-tenant name="tenant" value=(own) readonly;
            } @else {
                input #new-tenant name="tenant" value=(tenant);
            }
            (webhook_fields(&p.form))
            button type="submit" #create-webhook { "Create" }
        }
    }
}
