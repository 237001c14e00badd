//! Page 2: one webhook: its configuration, the actions on it, and its last
//! 7 days as charts. Also its edit form.

use herald_proto::v1::Webhook;
use maud::{Markup, html};

use super::webhooks::{WebhookForm, events_text, webhook_fields};
use super::{chart, csrf_field, layout, tenant_label};
use crate::session::Session;
use crate::time_fmt;

/// What happened just before, shown on top of the page.
pub enum Notice {
    None,
    Text(String),
    /// A test delivery was queued.
    Sent(String),
    /// A signing secret, shown this once.
    Secret(String),
}

pub struct Page<'a> {
    pub session: &'a Session,
    pub webhook: Webhook,
    pub notice: Notice,
    pub problem: Option<String>,
    /// Now, for the replay form's defaults.
    pub now_ms: i64,
    /// A fresh request id for the replay form (a repeated submit replays once).
    pub request_id: String,
}

pub fn page(p: &Page<'_>) -> Markup {
    let w = &p.webhook;
    let title = format!("Webhook {}", events_text(w));
    layout(
        &title,
        Some(p.session),
        None,
        html! {
            p.crumbs { a href="/webhooks" { "Webhooks" } " › " (w.id) }
            h1 { (title) }
            (notice(&p.notice))
            @if let Some(problem) = &p.problem {
                p.error role="alert" { (problem) }
            }
            p.actions {
                a.button #delivery-log href={ "/webhooks/" (w.id) "/deliveries" } { "Delivery log" }
            }
            (configuration(w))
            @if p.session.is_admin() {
                (actions(p))
            }
            h2 { "Last 7 days" }
            figure #charts {
                img src={ "/webhooks/" (w.id) "/charts.svg" } width="840" height=(chart::HEIGHT)
                    alt="Deliveries per hour by outcome, and attempt durations per hour, over the last 7 days";
            }
        },
    )
}

fn notice(n: &Notice) -> Markup {
    html! {
        @match n {
            Notice::None => {}
            Notice::Text(text) => { p.notice role="status" { (text) } }
            Notice::Sent(id) => {
                p.notice role="status" {
                    "Test delivery queued: " a href={ "/deliveries/" (id) } { (id) }
                }
            }
            Notice::Secret(secret) => {
                div.notice.secret role="status" {
                    p { "The new signing secret, shown this once; copy it to the receiver now:" }
                    code #new-secret { (secret) }
                }
            }
        }
    }
}

fn configuration(w: &Webhook) -> Markup {
    let rows: Vec<(&str, Markup)> = vec![
        ("Id", html! { code { (w.id) } }),
        ("Tenant", html! { (tenant_label(&w.tenant)) }),
        ("Event(s)", html! { (events_text(w)) }),
        (
            "Enabled",
            html! { @if w.enabled { "yes" } @else { span.badge.state-failed #disabled { "disabled" } } },
        ),
        ("Method", html! { (w.method) }),
        ("URL", html! { code.url { (w.url) } }),
        (
            "Body",
            html! { (if w.body_mode.is_empty() { "raw" } else { &w.body_mode }) },
        ),
        (
            "Content-Type",
            html! { @if w.content_type.is_empty() { "(by body)" } @else { (w.content_type) } },
        ),
        ("Headers", headers(w)),
        ("Timeout", html! { (w.timeout_ms) " ms" }),
        ("Breaker", breaker(w)),
        (
            "Breaker opens",
            html! {
                @let own = w.breaker.unwrap_or_default();
                "after "
                @if own.failures > 0 { (own.failures) } @else { "the default number of" }
                " failures in a row, for "
                @if own.cooldown_ms > 0 { (own.cooldown_ms) " ms" } @else { "the default cool-down" }
                "; disabled after "
                @if w.auto_disable_after_s > 0 { (w.auto_disable_after_s) " s" } @else { "the default time" }
                " of failing"
            },
        ),
        (
            "Disabled by Herald",
            html! {
                @if w.disabled_reason.is_empty() { "–" } @else {
                    (w.disabled_reason) " (" (time_fmt::show(w.disabled_at_unix_ms)) ")"
                }
            },
        ),
        (
            "Rate limit",
            html! {
                @if let Some(l) = &w.rate_limit {
                    (l.per_second) "/s, burst " (l.burst)
                } @else { "– (the senders' default)" }
            },
        ),
        (
            "Signing",
            html! { @if w.signing_enabled { "Standard Webhooks signature" } @else { "off" } },
        ),
        (
            "Filter",
            html! { @if w.filter.is_empty() { "–" } @else { code { (w.filter) } } },
        ),
        (
            "Ordered",
            html! { @if w.ordered { "yes, on failure: " (w.ordered_on_failure) } @else { "no" } },
        ),
        ("Description", html! { (w.description) }),
        (
            "Created",
            html! { (time_fmt::show(w.created_at_unix_ms)) " UTC" },
        ),
        (
            "Updated",
            html! { (time_fmt::show(w.updated_at_unix_ms)) " UTC" },
        ),
    ];
    html! {
        table.fields #configuration {
            @for (name, value) in rows {
                tr { th { (name) } td { (value) } }
            }
            @if !w.body_template.is_empty() {
                tr { th { "Template" } td { pre { (w.body_template) } } }
            }
        }
    }
}

/// The configured headers; secret values masked.
pub fn headers(w: &Webhook) -> Markup {
    let mut names: Vec<&String> = w.headers.keys().collect();
    names.sort();
    html! {
        @if w.headers.is_empty() && w.secret_header_names.is_empty() {
            "–"
        } @else {
            ul.plain {
                @for name in names {
                    li { code { (name) ": " (w.headers[name]) } }
                }
                @for name in &w.secret_header_names {
                    li { code { (name) ": ••••••" } " (secret)" }
                }
            }
        }
    }
}

fn actions(p: &Page<'_>) -> Markup {
    let w = &p.webhook;
    let day_ago = p.now_ms - 24 * 3600 * 1000;
    html! {
        h2 { "Actions" }
        div.actions {
            form.inline method="post" action={ "/webhooks/" (w.id) "/enabled" } {
                (csrf_field(p.session))
                @if w.enabled {
                    input type="hidden" name="enabled" value="false";
                    button type="submit" #disable { "Disable" }
                } @else {
                    input type="hidden" name="enabled" value="true";
                    button type="submit" #enable { "Enable" }
                }
            }
            a.button #edit href={ "/webhooks/" (w.id) "/edit" } { "Edit" }
            form.inline method="post" action={ "/webhooks/" (w.id) "/test" } {
                (csrf_field(p.session))
                button type="submit" #test-send { "Send a test event" }
            }
            form.inline method="post" action={ "/webhooks/" (w.id) "/rotate" } {
                (csrf_field(p.session))
                button type="submit" #rotate { "Rotate the signing secret" }
            }
        }
        form.card method="post" action={ "/webhooks/" (w.id) "/replay" } {
            (csrf_field(p.session))
            input type="hidden" name="request_id" value=(p.request_id);
            strong { "Replay failed deliveries" } " fired between (UTC) "
            input type="datetime-local" name="from" value=(time_fmt::input_value(day_ago)) aria-label="from";
            " and "
            input type="datetime-local" name="to" value=(time_fmt::input_value(p.now_ms + 60_000)) aria-label="to";
            " "
            button type="submit" #replay { "Replay" }
        }
    }
}

/// The edit form.
pub fn edit_page(
    session: &Session,
    w: &Webhook,
    form: &WebhookForm,
    problem: Option<&str>,
) -> Markup {
    layout(
        "Edit webhook",
        Some(session),
        None,
        html! {
            p.crumbs { a href="/webhooks" { "Webhooks" } " › " a href={ "/webhooks/" (w.id) } { (w.id) } " › edit" }
            h1 { "Edit webhook" }
            @if let Some(problem) = problem {
                p.error role="alert" { (problem) }
            }
            form.card method="post" action={ "/webhooks/" (w.id) "/edit" } {
                (csrf_field(session))
                (webhook_fields(form))
                p.hint { "Secret headers: leave empty to keep the current ones." }
                button type="submit" #save { "Save" }
            }
        },
    )
}

/// The form filled from a webhook, for editing.
/// The breaker's state, and how long the webhook has been failing.
fn breaker(w: &Webhook) -> Markup {
    let Some(h) = &w.health else {
        return html! { "–" };
    };
    html! {
        @match h.breaker.as_str() {
            "open" | "half_open" => {
                strong { (h.breaker.replace('_', " ")) }
                " since " (time_fmt::show(h.opened_at_unix_ms))
                ", next probe at " (time_fmt::show(h.open_until_unix_ms))
            }
            other => { (other) }
        }
        @if h.failing_since_unix_ms > 0 {
            "; failing since " (time_fmt::show(h.failing_since_unix_ms))
            " (" (h.consecutive_failures) " in a row)"
        }
    }
}

pub fn form_of(w: &Webhook) -> WebhookForm {
    let mut headers: Vec<String> = w.headers.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    headers.sort();
    WebhookForm {
        csrf: String::new(),
        tenant: w.tenant.clone(),
        events: events_text(w),
        method: w.method.clone(),
        url: w.url.clone(),
        body_mode: w.body_mode.clone(),
        body_template: w.body_template.clone(),
        headers: headers.join("\n"),
        secret_headers: String::new(),
        timeout_ms: w.timeout_ms.to_string(),
        rate_limit: w
            .rate_limit
            .map(|l| format!("{}/{}", l.per_second, l.burst))
            .unwrap_or_default(),
        breaker_failures: w
            .breaker
            .filter(|b| b.failures > 0)
            .map(|b| b.failures.to_string())
            .unwrap_or_default(),
        breaker_cooldown_ms: w
            .breaker
            .filter(|b| b.cooldown_ms > 0)
            .map(|b| b.cooldown_ms.to_string())
            .unwrap_or_default(),
        auto_disable_after_s: match w.auto_disable_after_s {
            0 => String::new(),
            seconds => seconds.to_string(),
        },
        description: w.description.clone(),
    }
}
