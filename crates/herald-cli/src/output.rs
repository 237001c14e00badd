//! What the CLI prints: aligned tables and key/value blocks for people, and
//! the API's messages as JSON for programs.
//!
//! The JSON is derived: herald-proto's generated types derive
//! `serde::Serialize`, so `--json` prints every field of a message, in proto
//! order, with the proto field names; unset optional fields and messages are
//! `null`, and maps are sorted by key so output is stable. The one thing
//! added here is the order of a webhook's secret header names, sorted
//! without regard to case as the tables show them. This module must never
//! connect to anything or decide what a command does.

use std::fmt::Write as _;

use herald_proto::v1::{
    Attempt, Delivery, EventInfo, ListEventsResponse, ListWebhooksResponse, SigningSecret, Webhook,
};
use serde::Serialize;
use serde_json::Value;

// ---------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------

/// `message` as `--json` prints it.
pub fn to_json<T: Serialize + ?Sized>(message: &T) -> Value {
    // Cannot fail: the messages have string map keys only and no
    // serializer that can refuse a value.
    serde_json::to_value(message).unwrap_or_default()
}

/// Prints `message` as pretty JSON on standard output.
pub fn print_json<T: Serialize + ?Sized>(message: &T) {
    // Serializing a Value cannot fail.
    println!(
        "{}",
        serde_json::to_string_pretty(&to_json(message)).unwrap_or_default()
    );
}

/// Secret header names in the order people read them (case-insensitive);
/// the server sends them in its own map order.
fn sort_secret_header_names(w: &mut Webhook) {
    w.secret_header_names = sorted_names(&w.secret_header_names);
}

/// A webhook as `--json` prints it.
pub fn webhook_json(w: &Webhook) -> Value {
    let mut w = w.clone();
    sort_secret_header_names(&mut w);
    to_json(&w)
}

/// `ListWebhooks`'s answer as `--json` prints it.
pub fn list_webhooks_json(answer: &ListWebhooksResponse) -> Value {
    let mut answer = answer.clone();
    answer
        .webhooks
        .iter_mut()
        .for_each(sort_secret_header_names);
    to_json(&answer)
}

/// `ListEvents`'s answer as `--json` prints it.
pub fn list_events_json(answer: &ListEventsResponse) -> Value {
    let mut answer = answer.clone();
    answer
        .events
        .iter_mut()
        .flat_map(|e| e.webhooks.iter_mut())
        .for_each(sort_secret_header_names);
    to_json(&answer)
}

fn sorted_names(names: &[String]) -> Vec<String> {
    let mut names = names.to_vec();
    names.sort_by_key(|n| n.to_ascii_lowercase());
    names
}

// ---------------------------------------------------------------------------
// Text
// ---------------------------------------------------------------------------

/// Columns padded to their widest cell; the last column is not padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            text.push_str(cell);
            if i + 1 < widths.len() {
                let pad = widths[i].saturating_sub(cell.chars().count());
                text.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// Key/value lines, keys padded to the longest.
fn details(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (key, value) in pairs {
        let _ = writeln!(out, "{key:<width$}  {value}");
    }
    out
}

/// The tenant as people read it: the empty one is the default tenant.
pub fn tenant_label(tenant: &str) -> String {
    if tenant.is_empty() {
        "(default)".to_owned()
    } else {
        tenant.to_owned()
    }
}

fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".to_owned()
    } else {
        s.to_owned()
    }
}

/// One line at most `max` characters long: control characters shown as
/// escapes, the cut marked with `…`.
pub fn one_line(s: &str, max: usize) -> String {
    let mut escaped = String::with_capacity(s.len().min(max * 2));
    for c in s.chars() {
        match c {
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            '\t' => escaped.push_str("\\t"),
            c if c.is_control() => escaped.extend(c.escape_unicode()),
            c => escaped.push(c),
        }
        if escaped.chars().count() > max {
            break;
        }
    }
    if escaped.chars().count() > max {
        let mut cut: String = escaped.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    } else {
        escaped
    }
}

/// Milliseconds since the Unix epoch as RFC 3339 UTC, e.g.
/// `2026-11-23T12:00:00.123Z`.
pub fn format_unix_ms(ms: i64) -> String {
    // Herald never records times before 1970; clamp rather than fail.
    let at =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(at).to_string()
}

fn format_opt_ms(ms: Option<i64>) -> String {
    ms.map_or_else(|| "-".to_owned(), format_unix_ms)
}

/// What a webhook listens to, comma-separated; servers from before
/// subscriptions send only `event`.
fn events_label(w: &Webhook) -> String {
    if w.events.is_empty() {
        w.event.clone()
    } else {
        w.events.join(",")
    }
}

pub fn webhooks_table(webhooks: &[Webhook]) -> String {
    let rows: Vec<Vec<String>> = webhooks
        .iter()
        .map(|w| {
            vec![
                w.id.clone(),
                tenant_label(&w.tenant),
                events_label(w),
                if w.enabled { "yes" } else { "no" }.to_owned(),
                w.method.clone(),
                w.url.clone(),
                or_dash(&w.body_mode),
                if w.signing_enabled { "yes" } else { "no" }.to_owned(),
                w.timeout_ms.to_string(),
                one_line(&w.description, 40),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "TENANT",
            "EVENTS",
            "ENABLED",
            "METHOD",
            "URL",
            "BODY",
            "SIGNED",
            "TIMEOUT_MS",
            "DESCRIPTION",
        ],
        &rows,
    )
}

pub fn events_table(events: &[EventInfo]) -> String {
    let mut rows = Vec::new();
    for e in events {
        if e.webhooks.is_empty() {
            rows.push(vec![
                e.event.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
        }
        for w in &e.webhooks {
            rows.push(vec![
                e.event.clone(),
                w.id.clone(),
                if w.enabled { "yes" } else { "no" }.to_owned(),
                w.method.clone(),
                w.url.clone(),
            ]);
        }
    }
    table(&["EVENT", "WEBHOOK", "ENABLED", "METHOD", "URL"], &rows)
}

/// Continuation lines of a multi-line value in [`webhook_details`]: aligned
/// under the value column (the longest key is 14 characters).
const DETAILS_INDENT: &str = "\n                ";

pub fn webhook_details(w: &Webhook) -> String {
    let mut names: Vec<_> = w.headers.keys().collect();
    names.sort();
    let headers = if names.is_empty() {
        "-".to_owned()
    } else {
        names
            .iter()
            .map(|n| format!("{n}: {}", w.headers[*n]))
            .collect::<Vec<_>>()
            .join(DETAILS_INDENT)
    };
    // Values are write-only: the API returns names only.
    let secret_headers = sorted_names(&w.secret_header_names);
    let secret_headers = if secret_headers.is_empty() {
        "-".to_owned()
    } else {
        secret_headers
            .iter()
            .map(|n| format!("{n}: (hidden)"))
            .collect::<Vec<_>>()
            .join(DETAILS_INDENT)
    };
    let content_type = if w.content_type.is_empty() {
        "(by body mode)".to_owned()
    } else {
        w.content_type.clone()
    };
    details(&[
        ("id", w.id.clone()),
        ("tenant", tenant_label(&w.tenant)),
        ("events", events_label(w)),
        ("filter", or_dash(&w.filter)),
        (
            "enabled",
            match (w.enabled, w.disabled_reason.is_empty()) {
                (true, _) => "yes".to_owned(),
                (false, true) => "no".to_owned(),
                (false, false) => format!(
                    "no: disabled by Herald at {}, {}",
                    format_unix_ms(w.disabled_at_unix_ms),
                    w.disabled_reason
                ),
            },
        ),
        ("method", w.method.clone()),
        ("url", w.url.clone()),
        ("headers", headers),
        ("secret headers", secret_headers),
        ("body mode", or_dash(&w.body_mode)),
        ("content type", content_type),
        ("body template", or_dash(&one_line(&w.body_template, 200))),
        (
            "id header",
            if w.id_header.is_empty() {
                "(senders' default, HERALD_ID_HEADER)".to_owned()
            } else {
                w.id_header.clone()
            },
        ),
        (
            "trace context",
            if w.trace_context {
                "yes (W3C traceparent)"
            } else {
                "no"
            }
            .to_owned(),
        ),
        (
            "ordered",
            if w.ordered {
                format!(
                    "yes, per ordering key; after a final failure: {}",
                    w.ordered_on_failure
                )
            } else {
                "no".to_owned()
            },
        ),
        (
            "rate limit",
            match &w.rate_limit {
                Some(l) => format!("{}/s, burst {}", l.per_second, l.burst),
                None => "(senders' default, HERALD_DEFAULT_RATE_LIMIT)".to_owned(),
            },
        ),
        (
            "signing",
            if w.signing_enabled {
                "yes (Standard Webhooks)"
            } else {
                "no"
            }
            .to_owned(),
        ),
        ("timeout ms", w.timeout_ms.to_string()),
        ("breaker after", breaker_settings(w)),
        (
            "auto-disable",
            match w.auto_disable_after_s {
                0 => "after failing for the senders' default (HERALD_AUTO_DISABLE_AFTER_SECS)"
                    .to_owned(),
                s => format!("after failing for {s} s"),
            },
        ),
        ("breaker", health_line(w.health.as_ref())),
        ("description", or_dash(&w.description)),
        ("created at", format_unix_ms(w.created_at_unix_ms)),
        ("updated at", format_unix_ms(w.updated_at_unix_ms)),
    ])
}

/// The breaker's settings: the webhook's own, or the senders' defaults.
fn breaker_settings(w: &Webhook) -> String {
    let own = w.breaker.unwrap_or_default();
    let failures = match own.failures {
        0 => "(default) failures".to_owned(),
        n => format!("{n} failures"),
    };
    let cooldown = match own.cooldown_ms {
        0 => "cool-down (default)".to_owned(),
        ms => format!("cool-down {ms} ms"),
    };
    format!("{failures} in a row, {cooldown}")
}

/// `closed`, `closed; failing since …`, or `open since … until …`.
fn health_line(health: Option<&herald_proto::v1::WebhookHealth>) -> String {
    let Some(h) = health else {
        return "-".to_owned();
    };
    let failing = (h.failing_since_unix_ms > 0).then(|| {
        format!(
            "failing since {} ({} in a row)",
            format_unix_ms(h.failing_since_unix_ms),
            h.consecutive_failures
        )
    });
    let state = match h.breaker.as_str() {
        "open" | "half_open" => format!(
            "{} since {} until {}",
            h.breaker,
            format_unix_ms(h.opened_at_unix_ms),
            format_unix_ms(h.open_until_unix_ms)
        ),
        other => other.to_owned(),
    };
    match failing {
        Some(failing) => format!("{state}; {failing}"),
        None => state,
    }
}

/// The line `herald webhooks create` prints after the webhook: the signing
/// secret, which the API returns only this once.
pub fn created_secret_line(w: &Webhook) -> String {
    format!(
        "signing secret: {} (configure your receiver with it; shown again by `herald webhooks secret {}`)",
        w.signing_secret, w.id
    )
}

pub fn signing_secret_details(s: &SigningSecret) -> String {
    let mut pairs = vec![
        ("webhook", s.webhook_id.clone()),
        ("secret", s.secret.clone()),
    ];
    // Every earlier secret still in its overlap signs too (one signature
    // each); older servers fill only previous_secret.
    let previous: Vec<(String, Option<i64>)> = if s.previous_secrets.is_empty() {
        (!s.previous_secret.is_empty())
            .then(|| (s.previous_secret.clone(), s.previous_expires_at_unix_ms))
            .into_iter()
            .collect()
    } else {
        s.previous_secrets
            .iter()
            .map(|p| (p.secret.clone(), Some(p.expires_at_unix_ms)))
            .collect()
    };
    for (secret, until) in previous {
        pairs.push(("previous secret", secret));
        pairs.push((
            "previous until",
            until.map_or_else(
                || "-".to_owned(),
                |ms| format!("{} (requests carry its signature too)", format_unix_ms(ms)),
            ),
        ));
    }
    details(&pairs)
}

/// The result of an attempt: status code and/or error.
pub fn attempt_result(a: &Attempt) -> String {
    let error = match (a.error_kind.is_empty(), a.error_message.is_empty()) {
        (true, true) => String::new(),
        (false, true) => a.error_kind.clone(),
        (true, false) => a.error_message.clone(),
        (false, false) => format!("{}: {}", a.error_kind, a.error_message),
    };
    match (a.status_code, error.is_empty()) {
        (Some(code), true) => code.to_string(),
        (Some(code), false) => format!("{code} {error}"),
        (None, false) => error,
        (None, true) => "-".to_owned(),
    }
}

pub fn attempts_table(attempts: &[Attempt]) -> String {
    let rows: Vec<Vec<String>> = attempts
        .iter()
        .map(|a| {
            vec![
                a.attempt.to_string(),
                format_unix_ms(a.started_at_unix_ms),
                a.duration_ms.to_string(),
                one_line(&attempt_result(a), 60),
                or_dash(&one_line(&a.response_excerpt, 40)),
            ]
        })
        .collect();
    table(
        &["ATTEMPT", "STARTED", "DURATION_MS", "RESULT", "EXCERPT"],
        &rows,
    )
}

pub fn delivery_details(d: &Delivery) -> String {
    let mut pairs = vec![
        ("id", d.id.clone()),
        ("tenant", tenant_label(&d.tenant)),
        ("event", d.event.clone()),
        ("webhook", d.webhook_id.clone()),
        ("target", format!("{} {}", d.method, d.target_url)),
        ("state", d.state.clone()),
        ("attempts", d.attempts.to_string()),
        (
            "last status",
            d.last_status_code
                .map_or_else(|| "-".to_owned(), |c| c.to_string()),
        ),
        ("last error", or_dash(&one_line(&d.last_error, 200))),
        ("fired at", format_unix_ms(d.fired_at_unix_ms)),
        ("last attempt", format_opt_ms(d.last_attempt_at_unix_ms)),
        ("next attempt", format_opt_ms(d.next_attempt_at_unix_ms)),
        ("finished at", format_opt_ms(d.finished_at_unix_ms)),
    ];
    if !d.resent_from.is_empty() {
        pairs.push(("resent from", d.resent_from.clone()));
    }
    if !d.resent_as.is_empty() {
        pairs.push(("resent as", d.resent_as.join(", ")));
    }
    if let Some(payload) = &d.payload {
        pairs.push((
            "data",
            format!("({}) {}", d.payload_kind, one_line(payload, 200)),
        ));
    }
    let mut out = details(&pairs);
    out.push('\n');
    if d.attempt_history.is_empty() {
        out.push_str("no attempts yet\n");
    } else {
        out.push_str(&attempts_table(&d.attempt_history));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_proto::v1::FireResponse;
    use serde_json::json;

    fn webhook() -> Webhook {
        Webhook {
            id: "w1".into(),
            tenant: String::new(),
            event: "order.created".into(),
            enabled: true,
            method: "POST".into(),
            url: "https://shop.example/h".into(),
            headers: [
                ("X-B".to_string(), "2".to_string()),
                ("X-A".to_string(), "1".to_string()),
            ]
            .into(),
            body_template: String::new(),
            timeout_ms: 3000,
            description: "d".into(),
            created_at_unix_ms: 0,
            updated_at_unix_ms: 1_700_000_000_123,
            ..Default::default()
        }
    }

    fn delivery() -> Delivery {
        Delivery {
            id: "d1".into(),
            tenant: "shop-1".into(),
            event: "order.created".into(),
            webhook_id: "w1".into(),
            target_url: "http://127.0.0.1:9000/hooks".into(),
            method: "POST".into(),
            state: "succeeded".into(),
            attempts: 2,
            last_status_code: Some(200),
            last_error: String::new(),
            fired_at_unix_ms: 1_700_000_000_000,
            last_attempt_at_unix_ms: Some(1_700_000_003_000),
            next_attempt_at_unix_ms: None,
            finished_at_unix_ms: Some(1_700_000_003_010),
            attempt_history: vec![
                Attempt {
                    attempt: 1,
                    started_at_unix_ms: 1_700_000_001_000,
                    duration_ms: 4,
                    url: "http://127.0.0.1:9000/hooks".into(),
                    status_code: Some(500),
                    error_kind: "http_status".into(),
                    error_message: "500 Internal Server Error".into(),
                    response_excerpt: "failing\non purpose".into(),
                },
                Attempt {
                    attempt: 2,
                    started_at_unix_ms: 1_700_000_003_000,
                    duration_ms: 3,
                    url: "http://127.0.0.1:9000/hooks".into(),
                    status_code: Some(200),
                    error_kind: String::new(),
                    error_message: String::new(),
                    response_excerpt: "ok".into(),
                },
            ],
            // Fields other work adds to the proto keep their defaults here.
            ..Default::default()
        }
    }

    #[test]
    fn webhook_json_uses_proto_names_and_sorted_headers() {
        let v = webhook_json(&webhook());
        let text = serde_json::to_string(&v).unwrap();
        assert!(
            text.contains(r#""headers":{"X-A":"1","X-B":"2"}"#),
            "{text}"
        );
        assert_eq!(v["timeout_ms"], 3000);
        assert_eq!(v["updated_at_unix_ms"], 1_700_000_000_123_i64);
        assert_eq!(v["tenant"], "");
        let list = list_webhooks_json(&ListWebhooksResponse {
            webhooks: vec![webhook()],
        });
        assert_eq!(list["webhooks"][0]["id"], "w1");
        let events = list_events_json(&ListEventsResponse {
            events: vec![EventInfo {
                event: "order.created".into(),
                webhooks: vec![webhook()],
            }],
        });
        assert_eq!(
            events["events"][0]["webhooks"][0]["url"],
            "https://shop.example/h"
        );
    }

    #[test]
    fn delivery_json_keeps_unset_optionals_as_null() {
        let v = to_json(&delivery());
        assert_eq!(v["state"], "succeeded");
        assert_eq!(v["last_status_code"], 200);
        assert!(v["next_attempt_at_unix_ms"].is_null());
        assert_eq!(v["attempt_history"][0]["status_code"], 500);
        assert_eq!(v["attempt_history"][1]["error_kind"], "");
        let fire = to_json(&FireResponse {
            delivery_ids: vec!["a".into(), "b".into()],
        });
        assert_eq!(fire, json!({"delivery_ids": ["a", "b"]}));
    }

    #[test]
    fn tables_align() {
        let t = table(
            &["A", "LONG"],
            &[vec!["xxx".into(), "1".into()], vec!["y".into(), "2".into()]],
        );
        assert_eq!(t, "A    LONG\nxxx  1\ny    2\n");
    }

    #[test]
    fn delivery_details_show_attempts() {
        let text = delivery_details(&delivery());
        assert!(text.contains("state         succeeded"), "{text}");
        assert!(text.contains("tenant        shop-1"), "{text}");
        assert!(text.contains("next attempt  -"), "{text}");
        assert!(
            text.contains("500 http_status: 500 Internal Server Error"),
            "{text}"
        );
        assert!(text.contains("failing\\non purpose"), "{text}");
        assert!(text.contains("2023-11-14T22:13:21.000Z"), "{text}");
        let w = webhook_details(&webhook());
        assert!(w.contains("X-A: 1\n                X-B: 2"), "{w}");
        assert!(w.contains("tenant          (default)"), "{w}");
    }

    fn shaped_webhook() -> Webhook {
        Webhook {
            body_mode: "json".into(),
            content_type: "application/vnd.shop+json".into(),
            secret_header_names: vec!["X-Token".into(), "Authorization".into()],
            signing_enabled: true,
            ..webhook()
        }
    }

    #[test]
    fn webhook_output_shows_shaping_and_secret_header_names_only() {
        let v = webhook_json(&shaped_webhook());
        assert_eq!(v["body_mode"], "json");
        assert_eq!(v["content_type"], "application/vnd.shop+json");
        assert_eq!(
            v["secret_header_names"],
            json!(["Authorization", "X-Token"])
        );
        assert_eq!(v["signing_enabled"], true);
        assert_eq!(v["signing_secret"], "");

        let w = webhook_details(&shaped_webhook());
        assert!(
            w.contains(
                "secret headers  Authorization: (hidden)\n                X-Token: (hidden)"
            ),
            "{w}"
        );
        assert!(w.contains("body mode       json"), "{w}");
        assert!(
            w.contains("content type    application/vnd.shop+json"),
            "{w}"
        );
        assert!(w.contains("signing         yes"), "{w}");
        let plain = webhook_details(&webhook());
        assert!(plain.contains("secret headers  -"), "{plain}");
        assert!(plain.contains("content type    (by body mode)"), "{plain}");
        assert!(plain.contains("signing         no"), "{plain}");
        assert!(plain.contains("trace context   no"), "{plain}");
        let traced = webhook_details(&Webhook {
            trace_context: true,
            ..webhook()
        });
        assert!(
            traced.contains("trace context   yes (W3C traceparent)"),
            "{traced}"
        );

        let t = webhooks_table(&[shaped_webhook()]);
        let header = t.lines().next().unwrap();
        assert!(header.contains("BODY") && header.contains("SIGNED"), "{t}");
        assert!(t.lines().nth(1).unwrap().contains("json  "), "{t}");
        assert!(!t.contains("Authorization"), "{t}");
    }

    #[test]
    fn created_secret_is_shown_once_with_the_way_back() {
        let w = Webhook {
            signing_secret: "whsec_abc".into(),
            ..webhook()
        };
        assert_eq!(
            created_secret_line(&w),
            "signing secret: whsec_abc (configure your receiver with it; shown again by `herald webhooks secret w1`)"
        );
        assert_eq!(webhook_json(&w)["signing_secret"], "whsec_abc");
    }

    #[test]
    fn signing_secret_output_shows_the_overlap() {
        let alone = SigningSecret {
            webhook_id: "w1".into(),
            secret: "whsec_new".into(),
            previous_secret: String::new(),
            previous_expires_at_unix_ms: None,
            previous_secrets: Vec::new(),
        };
        let text = signing_secret_details(&alone);
        assert_eq!(text, "webhook  w1\nsecret   whsec_new\n");
        let v = to_json(&alone);
        assert!(v["previous_expires_at_unix_ms"].is_null());
        assert_eq!(v["secret"], "whsec_new");

        let rotating = SigningSecret {
            previous_secret: "whsec_old".into(),
            previous_expires_at_unix_ms: Some(1_700_000_000_000),
            ..alone
        };
        let text = signing_secret_details(&rotating);
        assert!(text.contains("previous secret  whsec_old"), "{text}");
        assert!(
            text.contains("previous until   2023-11-14T22:13:20.000Z"),
            "{text}"
        );
        let v = to_json(&rotating);
        assert_eq!(v["previous_secret"], "whsec_old");
        assert_eq!(v["previous_expires_at_unix_ms"], 1_700_000_000_000_i64);

        // Two rotations inside one overlap: both earlier secrets are shown,
        // each with its own end.
        let twice = SigningSecret {
            previous_secrets: vec![
                herald_proto::v1::PreviousSigningSecret {
                    secret: "whsec_old".into(),
                    expires_at_unix_ms: 1_700_000_000_000,
                },
                herald_proto::v1::PreviousSigningSecret {
                    secret: "whsec_older".into(),
                    expires_at_unix_ms: 1_600_000_000_000,
                },
            ],
            ..rotating
        };
        let text = signing_secret_details(&twice);
        assert!(text.contains("previous secret  whsec_older"), "{text}");
        assert!(
            text.contains("previous until   2020-09-13T12:26:40.000Z"),
            "{text}"
        );
        let v = to_json(&twice);
        assert_eq!(v["previous_secrets"][1]["secret"], "whsec_older");
    }

    #[test]
    fn times_and_truncation() {
        assert_eq!(format_unix_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_unix_ms(1_700_000_000_123),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(format_unix_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(format_unix_ms(-1), "1970-01-01T00:00:00.000Z");
        assert_eq!(one_line("abcdef", 4), "abc…");
        assert_eq!(one_line("ab", 4), "ab");
        assert_eq!(one_line("a\nb", 10), "a\\nb");
    }
}
