//! The pages, rendered with maud. Every interpolated value is escaped by
//! maud; nothing here uses `PreEscaped` on data that came from Herald's API
//! (the only pre-escaped text is the console's own SVG geometry).
//!
//! Pages only render: they make no API calls (the handlers do) and decide
//! nothing about permissions beyond hiding actions the handlers refuse
//! anyway.

pub mod chart;
pub mod delivery;
pub mod log;
pub mod login;
pub mod webhook;
pub mod webhooks;

use maud::{DOCTYPE, Markup, html};

use crate::session::Session;

/// The stylesheet, embedded in the binary.
pub const CSS: &str = include_str!("../../static/console.css");

/// The frame around every page: title, navigation, search box, the signed-in
/// key and the sign-out form. `refresh` adds an HTML refresh (works without
/// JavaScript) every that many seconds.
pub fn layout(
    title: &str,
    session: Option<&Session>,
    refresh: Option<u32>,
    body: Markup,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(seconds) = refresh {
                    meta http-equiv="refresh" content=(seconds);
                }
                title { (title) " · Herald Console" }
                link rel="stylesheet" href="/static/console.css";
            }
            body {
                header.top {
                    a.brand href="/webhooks" { "Herald Console" }
                    @if let Some(session) = session {
                        nav {
                            a href="/webhooks" { "Webhooks" }
                        }
                        form.search method="get" action="/search" role="search" {
                            input type="search" name="id" placeholder="Delivery id (Webhook-Id)"
                                aria-label="Find a delivery by id" size="38";
                            button type="submit" { "Find" }
                        }
                        span.who title="The API key you signed in with" {
                            (key_label(session))
                        }
                        form.inline method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(session.csrf);
                            button type="submit" id="sign-out" { "Sign out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// What the header says about the signed-in key.
fn key_label(session: &Session) -> String {
    let c = &session.caller;
    let who = match c.kind.as_str() {
        "api_key" => format!("{} ({})", c.name, c.token_prefix),
        "bootstrap" => "bootstrap admin key".to_owned(),
        _ => "authentication disabled".to_owned(),
    };
    let tenant = match &c.tenant {
        Some(t) => format!("tenant {}", tenant_label(t)),
        None => "every tenant".to_owned(),
    };
    format!("{who} · {} · {tenant}", c.scopes.join(", "))
}

/// The empty tenant is the default tenant.
pub fn tenant_label(tenant: &str) -> String {
    if tenant.is_empty() {
        "(default)".to_owned()
    } else {
        tenant.to_owned()
    }
}

/// A page that only says something went wrong, and what to do.
pub fn error_page(session: Option<&Session>, status: u16, message: &str) -> Markup {
    let title = match status {
        400 => "Not accepted",
        403 => "Not allowed",
        404 => "Not found",
        503 => "Ingest unavailable",
        _ => "Something went wrong",
    };
    layout(
        title,
        session,
        None,
        html! {
            h1 { (title) }
            p.error role="alert" { (message) }
            p { a href="/webhooks" { "Back to the webhooks" } }
        },
    )
}

/// A state as a coloured label.
pub fn state_badge(state: &str) -> Markup {
    html! { span class={ "badge state-" (state) } { (state) } }
}

/// An optional HTTP status.
pub fn status_text(code: Option<u32>) -> String {
    code.map_or_else(|| "–".to_owned(), |c| c.to_string())
}

/// A hidden CSRF field.
pub fn csrf_field(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf); }
}
