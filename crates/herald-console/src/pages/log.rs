//! Page 3: a webhook's delivery log, newest first, with filters and
//! keyset pages (ListDeliveries' cursor).

use herald_proto::v1::{Delivery, Webhook};
use maud::{Markup, html};

use super::webhooks::events_text;
use super::{layout, state_badge, status_text};
use crate::session::Session;
use crate::time_fmt;

/// The log's filters, as the query string carries them.
#[derive(Debug, Default, Clone, serde::Deserialize, serde::Serialize)]
pub struct Filters {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub state: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub event: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub from: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub to: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cursor: String,
    /// `off` stops the auto-refresh of the first page.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub refresh: String,
}

impl Filters {
    /// The query string of these filters with `cursor` instead.
    pub fn with_cursor(&self, cursor: &str) -> String {
        let mut next = self.clone();
        next.cursor = cursor.to_owned();
        serde_urlencoded(&next)
    }

    pub fn auto_refresh(&self) -> bool {
        self.cursor.is_empty() && self.refresh != "off"
    }
}

fn serde_urlencoded(f: &Filters) -> String {
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    let pairs = [
        ("state", &f.state),
        ("event", &f.event),
        ("from", &f.from),
        ("to", &f.to),
        ("cursor", &f.cursor),
        ("refresh", &f.refresh),
    ];
    pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, NON_ALPHANUMERIC)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Seconds between refreshes of the log's first page.
pub const REFRESH_SECONDS: u32 = 5;

pub struct Page<'a> {
    pub session: &'a Session,
    pub webhook: Webhook,
    pub filters: Filters,
    pub deliveries: Vec<Delivery>,
    pub next_cursor: String,
    pub problem: Option<String>,
}

pub fn page(p: &Page<'_>) -> Markup {
    let w = &p.webhook;
    let f = &p.filters;
    let refresh = f.auto_refresh().then_some(REFRESH_SECONDS);
    let base = format!("/webhooks/{}/deliveries", w.id);
    layout(
        "Delivery log",
        Some(p.session),
        refresh,
        html! {
            p.crumbs {
                a href="/webhooks" { "Webhooks" } " › "
                a href={ "/webhooks/" (w.id) } { (events_text(w)) } " › delivery log"
            }
            h1 { "Delivery log" }
            p.hint { "Newest first. Times are UTC. "
                @if f.auto_refresh() {
                    "This page refreshes every " (REFRESH_SECONDS) " s ("
                    a href={ (base) "?" (Filters { refresh: "off".into(), ..f.clone() }.with_cursor("")) } { "stop" } ")."
                } @else if f.cursor.is_empty() {
                    a href=(base) { "Refresh automatically" }
                }
            }
            form.filters method="get" action=(base) {
                label for="state" { "State" }
                select #state name="state" {
                    option value="" selected[f.state.is_empty()] { "any" }
                    @for s in ["scheduled", "pending", "succeeded", "failed", "cancelled"] {
                        option value=(s) selected[f.state == s] { (s) }
                    }
                }
                label for="event" { "Event" }
                input #event name="event" value=(f.event) size="20";
                label for="from" { "Fired from" }
                input #from type="datetime-local" name="from" value=(f.from);
                label for="to" { "to" }
                input #to type="datetime-local" name="to" value=(f.to);
                @if f.refresh == "off" { input type="hidden" name="refresh" value="off"; }
                button type="submit" { "Filter" }
            }
            @if let Some(problem) = &p.problem {
                p.error role="alert" { (problem) }
            }
            @if p.deliveries.is_empty() {
                p #no-deliveries { "No deliveries match." }
            } @else {
                table.list #deliveries {
                    thead { tr {
                        th { "Fired" } th { "Delivery" } th { "Event" } th { "State" }
                        th { "Attempts" } th { "Last status" }
                    } }
                    tbody {
                        @for d in &p.deliveries {
                            tr data-delivery=(d.id) {
                                td.time { (time_fmt::show(d.fired_at_unix_ms)) }
                                td { a href={ "/deliveries/" (d.id) } { code { (d.id) } } }
                                td { (d.event) }
                                td { (state_badge(&d.state)) }
                                td.num { (d.attempts) }
                                td.num { (status_text(d.last_status_code)) }
                            }
                        }
                    }
                }
            }
            p.pages {
                @if !f.cursor.is_empty() {
                    a #newest href={ (base) "?" (f.with_cursor("")) } { "« Newest" }
                    " "
                }
                @if !p.next_cursor.is_empty() {
                    a #older href={ (base) "?" (f.with_cursor(&p.next_cursor)) } { "Older »" }
                }
            }
        },
    )
}
