//! Page 4: one delivery: its data, the request as sent, every attempt, the
//! next one, Resend, and links to the original and its resends.

use herald_proto::v1::{Delivery, Webhook};
use maud::{Markup, html};

use super::{csrf_field, layout, state_badge, status_text, tenant_label};
use crate::session::Session;
use crate::time_fmt;

/// Seconds between refreshes while the delivery is not final.
pub const REFRESH_SECONDS: u32 = 3;

pub struct Page<'a> {
    pub session: &'a Session,
    pub delivery: Delivery,
    /// The webhook as configured now; `None` when it was deleted.
    pub webhook: Option<Webhook>,
    /// Set after Resend: the new delivery's id.
    pub resent: Option<String>,
    pub problem: Option<String>,
    /// A fresh request id for the Resend form (a repeated submit resends
    /// once).
    pub request_id: String,
}

/// Whether the delivery can still change.
fn live(d: &Delivery) -> bool {
    matches!(d.state.as_str(), "scheduled" | "pending")
}

pub fn page(p: &Page<'_>) -> Markup {
    let d = &p.delivery;
    let refresh = live(d).then_some(REFRESH_SECONDS);
    layout(
        "Delivery",
        Some(p.session),
        refresh,
        html! {
            p.crumbs {
                a href="/webhooks" { "Webhooks" } " › "
                a href={ "/webhooks/" (d.webhook_id) } { "webhook" } " › "
                a href={ "/webhooks/" (d.webhook_id) "/deliveries" } { "delivery log" } " › "
                (d.id)
            }
            h1 { "Delivery " code #delivery-id { (d.id) } }
            @if let Some(id) = &p.resent {
                p.notice role="status" #resent {
                    "Resent as " a href={ "/deliveries/" (id) } { code { (id) } }
                }
            }
            @if let Some(problem) = &p.problem {
                p.error role="alert" { (problem) }
            }
            (summary(d))
            @if p.session.is_admin() {
                form.inline method="post" action={ "/deliveries/" (d.id) "/resend" } {
                    (csrf_field(p.session))
                    input type="hidden" name="request_id" value=(p.request_id);
                    button type="submit" #resend { "Resend" }
                }
            }
            h2 { "Data" }
            (payload(d))
            h2 { "Request" }
            (request(d, p.webhook.as_ref()))
            h2 { "Attempts" }
            (attempts(d))
        },
    )
}

fn summary(d: &Delivery) -> Markup {
    let opt = |ms: Option<i64>| {
        ms.map_or_else(
            || "–".to_owned(),
            |ms| format!("{} UTC", time_fmt::show(ms)),
        )
    };
    html! {
        table.fields #summary {
            tr { th { "State" } td #state { (state_badge(&d.state)) } }
            tr { th { "Event" } td { (d.event) } }
            tr { th { "Tenant" } td { (tenant_label(&d.tenant)) } }
            tr { th { "Webhook" } td { a href={ "/webhooks/" (d.webhook_id) } { code { (d.webhook_id) } } } }
            tr { th { "Attempts" } td #attempt-count { (d.attempts) } }
            tr { th { "Last status" } td { (status_text(d.last_status_code)) } }
            @if !d.last_error.is_empty() {
                tr { th { "Last error" } td { (d.last_error) } }
            }
            tr { th { "Fired" } td { (time_fmt::show(d.fired_at_unix_ms)) " UTC" } }
            tr { th { "Next attempt" } td #next-attempt { (opt(d.next_attempt_at_unix_ms)) } }
            tr { th { "Finished" } td { (opt(d.finished_at_unix_ms)) } }
            @if !d.ordering_key.is_empty() {
                tr { th { "Ordering key" } td { code { (d.ordering_key) } } }
            }
            @if !d.resent_from.is_empty() {
                tr { th { "Resends" } td { a #original href={ "/deliveries/" (d.resent_from) } { code { (d.resent_from) } } " (the original)" } }
            }
            @if !d.resent_as.is_empty() {
                tr { th { "Resent as" } td #resent-as {
                    @for id in &d.resent_as {
                        a href={ "/deliveries/" (id) } { code { (id) } } " "
                    }
                } }
            }
        }
    }
}

/// The data: JSON pretty-printed, text as it is.
fn payload(d: &Delivery) -> Markup {
    html! {
        @match &d.payload {
            None => { p { "No data (none was fired, or payload retention removed it)." } }
            Some(text) => {
                @let pretty = if d.payload_kind == "json" {
                    serde_json::from_str::<serde_json::Value>(text)
                        .ok()
                        .and_then(|v| serde_json::to_string_pretty(&v).ok())
                } else {
                    None
                };
                p.hint { "Fired as " (d.payload_kind) "." }
                pre #payload { (pretty.as_deref().unwrap_or(text)) }
            }
        }
    }
}

fn request(d: &Delivery, webhook: Option<&Webhook>) -> Markup {
    let url = d
        .attempt_history
        .last()
        .map_or(d.target_url.as_str(), |a| a.url.as_str());
    html! {
        pre #request { (d.method) " " (url) }
        @match webhook {
            Some(w) => {
                p.hint { "Headers as the webhook is configured now (secret values masked). \
                          Herald adds User-Agent, the delivery id header, the attempt number"
                          @if w.signing_enabled { ", and webhook-id, webhook-timestamp and webhook-signature" }
                          "." }
                (super::webhook::headers(w))
            }
            None => { p.hint { "The webhook was deleted; its headers are not known any more." } }
        }
    }
}

fn attempts(d: &Delivery) -> Markup {
    html! {
        @if d.attempt_history.is_empty() {
            p #no-attempts { "No attempt yet." }
        } @else {
            table.list #attempts {
                thead { tr {
                    th { "#" } th { "Started (UTC)" } th { "Duration" } th { "Status" }
                    th { "Error" } th { "Message" } th { "Response (excerpt)" }
                } }
                tbody {
                    @for a in &d.attempt_history {
                        tr data-attempt=(a.attempt) {
                            td.num { (a.attempt) }
                            td.time { (time_fmt::show(a.started_at_unix_ms)) }
                            td.num { (a.duration_ms) " ms" }
                            td.num.status { (status_text(a.status_code)) }
                            td { (a.error_kind) }
                            td { (a.error_message) }
                            td { pre.excerpt { (a.response_excerpt) } }
                        }
                    }
                }
            }
        }
    }
}
