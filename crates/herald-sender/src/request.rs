//! Building the request of one attempt from the webhook's current
//! configuration and the fired data: templates in URL, headers and body,
//! the body mode, where GET data goes, and Standard Webhooks signatures.
//!
//! Templates are compiled once per webhook version and reused.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use herald_core::payload::compact_json;
use herald_core::signing::signature_header;
use herald_core::ssrf::AddressPolicy;
use herald_core::template::{CompiledTemplate, EventInfo, TemplateContext, TemplateEngine};
use herald_core::webhook::{BodyMode, url_host_is_empty};
use herald_core::{AttemptError, ErrorKind, Payload, Webhook};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderName, HeaderValue, USER_AGENT};
use http_body_util::Full;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::header_case::{WrittenHeaderName, case_extensions};

const HERALD_USER_AGENT: &str = concat!("Herald/", env!("CARGO_PKG_VERSION"));

/// W3C Trace Context's header (https://www.w3.org/TR/trace-context/).
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// What a delivery carries besides its data, for templates and envelopes.
#[derive(Debug, Clone)]
pub struct DeliveryInfo<'a> {
    pub delivery_id: Uuid,
    pub attempt: u32,
    pub tenant: &'a str,
    pub event: &'a str,
    pub fired_at_unix_ms: i64,
    /// The attempt's W3C `traceparent`, when the sender traces it. Sent only
    /// to webhooks that opted in (`trace_context`).
    pub traceparent: Option<&'a str>,
}

/// A request ready to send, and the URL it goes to (for the record).
pub struct Built {
    pub url: String,
    pub request: http::Request<Full<Bytes>>,
}

/// A webhook's templates, compiled.
struct Compiled {
    updated_at: SystemTime,
    url: CompiledTemplate,
    /// The parsed URL when it is no template: parsed once per webhook
    /// version instead of once per attempt.
    static_uri: Option<http::Uri>,
    headers: Vec<(HeaderName, CompiledTemplate)>,
    body: Option<CompiledTemplate>,
    /// The header carrying the delivery id: the webhook's, else the sender's.
    id_header: HeaderName,
    /// Makes hyper write the configured names as written (HTTP/1.1);
    /// `None` when they are all lower case.
    header_case: Option<http::Extensions>,
}

/// Builds requests; caches compiled templates per webhook version.
pub struct RequestBuilder {
    id_header: WrittenHeaderName,
    attempt_header: WrittenHeaderName,
    addresses: Arc<AddressPolicy>,
    engine: TemplateEngine,
    compiled: Mutex<HashMap<Uuid, Arc<Compiled>>>,
}

fn invalid(message: String) -> AttemptError {
    AttemptError {
        kind: ErrorKind::InvalidRequest,
        message,
    }
}

impl RequestBuilder {
    pub fn new(
        id_header: WrittenHeaderName,
        attempt_header: WrittenHeaderName,
        addresses: Arc<AddressPolicy>,
    ) -> Self {
        Self {
            id_header,
            attempt_header,
            addresses,
            engine: TemplateEngine::new(),
            compiled: Mutex::default(),
        }
    }

    fn compiled(&self, webhook: &Webhook) -> Result<Arc<Compiled>, AttemptError> {
        let mut cache = self.compiled.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(hit) = cache.get(&webhook.id)
            && hit.updated_at == webhook.updated_at
        {
            return Ok(hit.clone());
        }
        let compile = |what: &str, source: &str| {
            self.engine
                .compile(source)
                .map_err(|e| invalid(format!("the {what} template does not parse: {e}")))
        };
        let mut headers =
            Vec::with_capacity(webhook.headers.len() + webhook.secret_headers.0.len());
        for (name, value) in webhook
            .headers
            .iter()
            .chain(webhook.secret_headers.0.iter())
        {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| invalid(format!("custom header name {name:?} is invalid")))?;
            headers.push((name, compile("header", value)?));
        }
        let (id_header, written_id) = match &webhook.id_header {
            Some(name) => (
                HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                    invalid(format!("id_header {name:?} is not a valid header name"))
                })?,
                name.as_str(),
            ),
            None => (self.id_header.name().clone(), self.id_header.as_written()),
        };
        let header_case = case_extensions(
            [written_id, self.attempt_header.as_written()]
                .into_iter()
                .chain(webhook.headers.keys().map(String::as_str))
                .chain(webhook.secret_headers.0.keys().map(String::as_str)),
        );
        let url = compile("URL", &webhook.url)?;
        // A URL that does not parse fails each attempt with its own error
        // (below), as a rendered one does.
        let static_uri = url
            .is_static()
            .then(|| webhook.url.parse::<http::Uri>().ok())
            .flatten();
        let compiled = Arc::new(Compiled {
            updated_at: webhook.updated_at,
            url,
            static_uri,
            headers,
            body: webhook
                .body_template
                .as_deref()
                .map(|b| compile("body", b))
                .transpose()?,
            id_header,
            header_case,
        });
        // Bounded by the number of webhooks; entries of deleted webhooks are
        // few and small, so no eviction is needed.
        cache.insert(webhook.id, compiled.clone());
        Ok(compiled)
    }

    /// Builds the request of one attempt. On error the URL (as far as it
    /// could be rendered) comes back with it, for the attempt record.
    pub fn build(
        &self,
        webhook: &Webhook,
        payload: &Payload,
        info: &DeliveryInfo<'_>,
        now: SystemTime,
    ) -> Result<Built, (String, AttemptError)> {
        let fail = |url: &str, error: AttemptError| (url.to_owned(), error);
        let compiled = self.compiled(webhook).map_err(|e| fail(&webhook.url, e))?;
        let in_query = webhook.method.data_in_query();
        let needs_context = !compiled.url.is_static()
            || compiled.headers.iter().any(|(_, t)| !t.is_static())
            || (!in_query && webhook.body_mode == BodyMode::Template);
        let context = needs_context.then(|| {
            TemplateContext::new(
                payload,
                EventInfo {
                    name: info.event.to_owned(),
                    tenant: info.tenant.to_owned(),
                    delivery_id: info.delivery_id,
                    attempt: info.attempt,
                    fired_at_unix_ms: info.fired_at_unix_ms,
                },
            )
        });
        let render = |template: &CompiledTemplate, source: &str, what: &str| match &context {
            Some(ctx) if !template.is_static() => template
                .render(ctx)
                .map_err(|e| invalid(format!("the {what} template failed: {e}"))),
            _ => Ok(source.to_owned()),
        };

        let mut url =
            render(&compiled.url, &webhook.url, "URL").map_err(|e| fail(&webhook.url, e))?;
        // ASSE: GET/DELETE carry the data in the query string, unless the URL
        // template already placed it.
        let data_in_url = in_query && !compiled.url.uses_data();
        if data_in_url {
            url = payload.append_to_url(&url);
        }
        let uri: http::Uri = match &compiled.static_uri {
            Some(uri) if !data_in_url => uri.clone(),
            // `http` calls `https:///x` a badly formed URI and takes
            // `https://:8443/x` with an empty host; either way the cause is
            // a host the template rendered empty for this data.
            _ if url_host_is_empty(&url) => {
                return Err(fail(
                    &url,
                    invalid(
                        "the rendered URL has an empty host; write the host out in the \
                         webhook's URL instead of taking it from the data"
                            .into(),
                    ),
                ));
            }
            _ => url
                .parse()
                .map_err(|e| fail(&url, invalid(format!("the URL is not valid: {e}"))))?,
        };
        // IP literals never reach the guarded resolver; check them here.
        if let Some(host) = uri.host() {
            self.addresses.check_url_host(host).map_err(|refusal| {
                fail(
                    &url,
                    AttemptError {
                        kind: ErrorKind::Refused,
                        message: refusal.to_string(),
                    },
                )
            })?;
        }

        let (body, default_content_type) = if in_query {
            (Bytes::new(), None)
        } else {
            match webhook.body_mode {
                BodyMode::Raw => (raw_body(payload), Some(payload.content_type())),
                BodyMode::Json => (envelope(payload, info), Some("application/json")),
                BodyMode::Template => {
                    let Some(template) = &compiled.body else {
                        return Err(fail(
                            &url,
                            invalid(
                                "body_mode is template but the webhook has no body_template".into(),
                            ),
                        ));
                    };
                    let source = webhook.body_template.as_deref().unwrap_or_default();
                    let rendered = render(template, source, "body").map_err(|e| fail(&url, e))?;
                    (Bytes::from(rendered), Some(template_content_type(source)))
                }
            }
        };
        let content_type = webhook.content_type.as_deref().or(default_content_type);
        // Bodies made from the fired JSON (validated by ingest at Fire) or
        // serialised here are JSON by construction; parsing them again on
        // every attempt would only cost time.
        let json_by_construction = !in_query
            && match webhook.body_mode {
                BodyMode::Json => true,
                BodyMode::Raw => matches!(payload, Payload::Json(_)),
                BodyMode::Template => false,
            };
        // A body declared JSON must be JSON: better no request than a broken one.
        if let Some(ct) = content_type
            && !json_by_construction
            && !body.is_empty()
            && ct.contains("json")
            && let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&body)
        {
            let excerpt: String = String::from_utf8_lossy(&body).chars().take(200).collect();
            return Err(fail(
                &url,
                invalid(format!(
                    "the rendered body is not valid JSON: {e} (body: {excerpt})"
                )),
            ));
        }

        let delivery_id = info.delivery_id.to_string();
        let mut request = http::Request::builder()
            .method(webhook.method.as_str())
            .uri(uri)
            .body(Full::new(body.clone()))
            .map_err(|e| fail(&url, invalid(format!("the request cannot be built: {e}"))))?;
        let headers = request.headers_mut();
        let header_value = |v: &str, what: &str| {
            HeaderValue::from_str(v)
                .map_err(|_| invalid(format!("{what} is not a valid header value")))
        };
        headers.insert(USER_AGENT, HeaderValue::from_static(HERALD_USER_AGENT));
        // hyper writes no Content-Length for an empty HTTP/1.1 body, and some
        // servers answer a POST, PUT or PATCH without one with 411 Length
        // Required. hyper keeps a Content-Length set here when the body is
        // empty (and HTTP/2 sends the same one itself), so say it outright.
        // GET and DELETE carry no body and stay without it.
        if !in_query && body.is_empty() {
            headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        }
        if let Some(ct) = content_type.filter(|_| !in_query) {
            headers.insert(
                CONTENT_TYPE,
                header_value(ct, "the Content-Type").map_err(|e| fail(&url, e))?,
            );
        }
        for ((name, template), source) in compiled.headers.iter().zip(
            webhook
                .headers
                .values()
                .chain(webhook.secret_headers.0.values()),
        ) {
            let value = render(template, source, "header").map_err(|e| fail(&url, e))?;
            // Never name the value in the error: it may be a secret.
            let value =
                header_value(&value, &format!("header {name}")).map_err(|e| fail(&url, e))?;
            headers.insert(name.clone(), value);
        }
        // After the webhook's own headers, so that the attempt's live trace
        // context replaces a static header of the same name. The value comes
        // from our own tracing, not from the user: should it ever not be a
        // valid header value, the attempt goes out without it rather than
        // fail over a diagnostic.
        if webhook.trace_context
            && let Some(value) = info.traceparent.and_then(|v| HeaderValue::from_str(v).ok())
        {
            headers.insert(TRACEPARENT, value);
        }
        let id_value = header_value(&delivery_id, "the delivery id").map_err(|e| fail(&url, e))?;
        headers.insert(compiled.id_header.clone(), id_value.clone());
        headers.insert(
            self.attempt_header.name().clone(),
            HeaderValue::from(info.attempt),
        );
        let secrets = webhook.signing_secrets(now);
        if !secrets.is_empty() {
            let timestamp = now
                .duration_since(UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
                .unwrap_or(0);
            let signature = signature_header(&secrets, &delivery_id, timestamp, &body);
            headers.insert("webhook-id", id_value);
            headers.insert("webhook-timestamp", HeaderValue::from(timestamp));
            headers.insert(
                "webhook-signature",
                header_value(&signature, "the signature").map_err(|e| fail(&url, e))?,
            );
        }
        if let Some(case) = &compiled.header_case {
            *request.extensions_mut() = case.clone();
        }
        Ok(Built { url, request })
    }
}

/// The data as fired: text exactly, JSON as compact JSON (whitespace
/// between tokens dropped, everything else as the shop wrote it).
fn raw_body(payload: &Payload) -> Bytes {
    match payload {
        Payload::Text(text) => Bytes::copy_from_slice(text.as_bytes()),
        Payload::Json(doc) => match compact_json(doc) {
            Cow::Borrowed(doc) => Bytes::copy_from_slice(doc.as_bytes()),
            Cow::Owned(compact) => Bytes::from(compact),
        },
    }
}

/// PARTS SOFT "send JSON": the whole fired object plus envelope fields.
#[derive(serde::Serialize)]
struct Envelope<'a> {
    event: &'a str,
    tenant: &'a str,
    delivery_id: String,
    fired_at: String,
    /// The fired JSON spliced in as written (compacted), or the text as a
    /// JSON string: no parse into a tree and back per attempt.
    data: Box<RawValue>,
}

fn envelope(payload: &Payload, info: &DeliveryInfo<'_>) -> Bytes {
    let data = match payload {
        Payload::Json(doc) => RawValue::from_string(compact_json(doc).into_owned()),
        Payload::Text(text) => serde_json::value::to_raw_value(text),
    };
    let document = Envelope {
        event: info.event,
        tenant: info.tenant,
        delivery_id: info.delivery_id.to_string(),
        fired_at: herald_core::template::rfc3339_millis(info.fired_at_unix_ms),
        // Ingest only queues valid JSON; should anything else arrive, the
        // envelope says `null` rather than break the JSON around it.
        data: data.unwrap_or_else(|_| RawValue::NULL.to_owned()),
    };
    Bytes::from(serde_json::to_vec(&document).unwrap_or_default())
}

/// The Content-Type a body template implies when none is configured: JSON
/// for templates that look like a JSON document, form encoding for
/// `name=value&...` templates (the PARTS SOFT callback form), else text.
fn template_content_type(source: &str) -> &'static str {
    let trimmed = source.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        "application/json"
    } else if trimmed.split('=').next().is_some_and(|name| {
        !name.is_empty()
            && trimmed.contains('=')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.[]".contains(c))
    }) {
        "application/x-www-form-urlencoded"
    } else {
        "text/plain; charset=utf-8"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> DeliveryInfo<'static> {
        DeliveryInfo {
            delivery_id: Uuid::nil(),
            attempt: 1,
            tenant: "shop",
            event: "order.created",
            fired_at_unix_ms: 0,
            traceparent: None,
        }
    }

    #[test]
    fn raw_bodies_are_the_fired_data_compacted() {
        let pretty = Payload::Json("{\n  \"z\": \"a b\",\n  \"a\": 1E2\n}\n".into());
        assert_eq!(raw_body(&pretty), r#"{"z":"a b","a":1E2}"#);
        let text = Payload::Text("  userid=42 \n".into());
        assert_eq!(raw_body(&text), "  userid=42 \n", "text goes out exactly");
    }

    #[test]
    fn envelopes_carry_the_data_as_fired() {
        let pretty = Payload::Json("{ \"z\": [1, 2], \"a\": \"x \\\" y\" }".into());
        assert_eq!(
            envelope(&pretty, &info()),
            concat!(
                r#"{"event":"order.created","tenant":"shop","#,
                r#""delivery_id":"00000000-0000-0000-0000-000000000000","#,
                r#""fired_at":"1970-01-01T00:00:00.000Z","data":{"z":[1,2],"a":"x \" y"}}"#
            )
        );
        let text = Payload::Text("say \"hi\"".into());
        let body: serde_json::Value = serde_json::from_slice(&envelope(&text, &info())).unwrap();
        assert_eq!(body["data"], "say \"hi\"");
        let broken = Payload::Json("{".into());
        let body: serde_json::Value = serde_json::from_slice(&envelope(&broken, &info())).unwrap();
        assert!(
            body["data"].is_null(),
            "invalid data never breaks the envelope"
        );
    }

    fn webhook(method: herald_core::webhook::Method, url: &str) -> Webhook {
        let now = SystemTime::now();
        Webhook {
            ordered: Default::default(),
            on_failure: Default::default(),
            rate_limit: None,
            breaker: None,
            auto_disable_after: None,
            disabled_reason: None,
            disabled_at: None,
            id: Uuid::nil(),
            tenant: String::new(),
            events: herald_core::subscription::Subscription::parse(&["order.created"]).unwrap(),
            filter: None,
            enabled: true,
            method,
            url: url.into(),
            headers: std::collections::BTreeMap::new(),
            body_template: None,
            timeout_ms: 3000,
            description: String::new(),
            created_at: now,
            updated_at: now,
            body_mode: BodyMode::Raw,
            content_type: None,
            secret_headers: herald_core::webhook::SecretHeaders::default(),
            signing: None,
            id_header: None,
            trace_context: false,
        }
    }

    fn builder() -> RequestBuilder {
        RequestBuilder::new(
            "webhook-id".parse().unwrap(),
            "webhook-attempt".parse().unwrap(),
            Arc::new(AddressPolicy::default()),
        )
    }

    #[test]
    fn the_id_header_is_the_webhooks_own_or_the_senders_default() {
        use herald_core::webhook::Method;
        let requests = builder();
        let json = Payload::Json("{}".into());
        let mut parts = webhook(Method::Post, "https://hooks.example/in");
        parts.id = Uuid::from_u128(1);
        parts.id_header = Some("PS-WEBHOOK_EVENT-ID".into());
        let built = requests
            .build(&parts, &json, &info(), SystemTime::now())
            .unwrap();
        let id = info().delivery_id.to_string();
        let headers = built.request.headers();
        assert_eq!(headers["ps-webhook_event-id"], id.as_str());
        assert!(
            headers.get("webhook-id").is_none(),
            "unsigned: only its own"
        );
        assert!(
            !built.request.extensions().is_empty(),
            "capitals are sent as written"
        );

        let standard = webhook(Method::Post, "https://hooks.example/in");
        let built = requests
            .build(&standard, &json, &info(), SystemTime::now())
            .unwrap();
        assert_eq!(built.request.headers()["webhook-id"], id.as_str());
        assert_eq!(built.request.headers()["webhook-attempt"], "1");
        assert!(
            built.request.extensions().is_empty(),
            "lower-case names need nothing"
        );
    }

    #[test]
    fn traceparent_goes_only_to_webhooks_that_opted_in() {
        use herald_core::webhook::Method;
        const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let requests = builder();
        let json = Payload::Json("{}".into());
        let traced = DeliveryInfo {
            traceparent: Some(PARENT),
            ..info()
        };
        let mut opted_in = webhook(Method::Post, "https://hooks.example/in");
        opted_in.id = Uuid::from_u128(2);
        opted_in.trace_context = true;
        // A static header of the same name loses to the live context.
        opted_in
            .headers
            .insert("traceparent".into(), "00-static".into());
        let built = requests
            .build(&opted_in, &json, &traced, SystemTime::now())
            .unwrap();
        let sent: Vec<_> = built
            .request
            .headers()
            .get_all("traceparent")
            .iter()
            .collect();
        assert_eq!(sent, [PARENT], "the live context, once");

        let mut not_opted_in = webhook(Method::Post, "https://hooks.example/in");
        not_opted_in.id = Uuid::from_u128(3);
        let built = requests
            .build(&not_opted_in, &json, &traced, SystemTime::now())
            .unwrap();
        assert!(built.request.headers().get("traceparent").is_none());

        let mut untraced = webhook(Method::Post, "https://hooks.example/in");
        untraced.id = Uuid::from_u128(4);
        untraced.trace_context = true;
        let built = requests
            .build(&untraced, &json, &info(), SystemTime::now())
            .unwrap();
        assert!(
            built.request.headers().get("traceparent").is_none(),
            "no span, no header"
        );

        let broken = DeliveryInfo {
            traceparent: Some("00-bad\nvalue"),
            ..info()
        };
        let built = requests
            .build(&untraced, &json, &broken, SystemTime::now())
            .expect("an invalid traceparent does not fail the attempt");
        assert!(built.request.headers().get("traceparent").is_none());
    }

    #[test]
    fn static_urls_are_parsed_once_and_still_carry_get_data() {
        use herald_core::webhook::Method;
        let requests = builder();
        let json = Payload::Json(r#"{"a": 1}"#.into());
        let post = webhook(Method::Post, "https://hooks.example/in?x=1");
        for _ in 0..2 {
            let built = requests
                .build(&post, &json, &info(), SystemTime::now())
                .expect("built");
            assert_eq!(built.url, "https://hooks.example/in?x=1");
            assert_eq!(built.request.uri(), "https://hooks.example/in?x=1");
        }
        let compiled = requests.compiled(&post).expect("compiled");
        assert_eq!(
            compiled
                .static_uri
                .as_ref()
                .map(ToString::to_string)
                .as_deref(),
            Some("https://hooks.example/in?x=1"),
            "the parsed URL is kept with the compiled webhook"
        );
        let get = webhook(Method::Get, "https://hooks.example/in");
        let built = requests
            .build(
                &get,
                &Payload::Text("a b".into()),
                &info(),
                SystemTime::now(),
            )
            .expect("built");
        assert_eq!(built.request.uri().path(), "/in");
        assert!(
            built.request.uri().query().is_some_and(|q| !q.is_empty()),
            "GET data goes into the query: {}",
            built.request.uri()
        );
        assert_eq!(built.url, built.request.uri().to_string());
    }

    #[test]
    fn a_url_that_renders_an_empty_host_fails_and_says_so() {
        use herald_core::webhook::Method;
        let requests = builder();
        let json = |doc: &str| Payload::Json(doc.into());
        for (method, url) in [
            (Method::Post, "https://{{ data.host }}/in"),
            (Method::Post, "https://{{ data.host }}:8443/in"),
            // The data appended to the query does not hide it.
            (
                Method::Get,
                "https://{{ event.tenant | remove: 'shop' }}/in",
            ),
        ] {
            let hook = webhook(method, url);
            let Err((sent_to, error)) =
                requests.build(&hook, &json(r#"{"a": 1}"#), &info(), SystemTime::now())
            else {
                panic!("{url}: an empty host must fail the attempt");
            };
            assert_eq!(error.kind, ErrorKind::InvalidRequest, "{url}");
            assert!(
                error
                    .message
                    .starts_with("the rendered URL has an empty host"),
                "{url}: {}",
                error.message
            );
            assert!(sent_to.starts_with("https://"), "{sent_to}");
        }
        // With the host in the data, the same template builds.
        let hook = webhook(Method::Post, "https://{{ data.host }}/in");
        let built = requests
            .build(
                &hook,
                &json(r#"{"host": "hooks.example"}"#),
                &info(),
                SystemTime::now(),
            )
            .expect("built");
        assert_eq!(built.url, "https://hooks.example/in");
    }

    #[test]
    fn only_bodies_that_may_not_be_json_are_checked_against_a_json_content_type() {
        use herald_core::webhook::Method;
        let requests = builder();
        let mut hook = webhook(Method::Post, "https://hooks.example/in");
        hook.content_type = Some("application/json".into());
        let text = Payload::Text("not json".into());
        let Err((_, error)) = requests.build(&hook, &text, &info(), SystemTime::now()) else {
            panic!("a text body declared JSON must be refused");
        };
        assert!(
            error.message.contains("not valid JSON"),
            "{}",
            error.message
        );
        let json = Payload::Json(r#"{ "a": [1, 2] }"#.into());
        let built = requests
            .build(&hook, &json, &info(), SystemTime::now())
            .expect("fired JSON is sent");
        assert_eq!(
            built.request.headers()[CONTENT_TYPE],
            "application/json",
            "the configured Content-Type"
        );
    }

    #[test]
    fn empty_bodies_of_methods_with_a_body_say_content_length_0() {
        use herald_core::webhook::Method;
        let requests = builder();
        let empty = Payload::Text(String::new());
        for method in [Method::Post, Method::Put, Method::Patch] {
            let hook = webhook(method, "https://hooks.example/in");
            let built = requests
                .build(&hook, &empty, &info(), SystemTime::now())
                .expect("built");
            assert_eq!(
                built
                    .request
                    .headers()
                    .get(CONTENT_LENGTH)
                    .map(|v| v.to_str().unwrap()),
                Some("0"),
                "{method}"
            );
        }
        // A template that renders nothing is an empty body too.
        let mut templated = webhook(Method::Post, "https://hooks.example/in");
        templated.body_mode = BodyMode::Template;
        templated.body_template = Some("{{ data.missing }}".into());
        let built = requests
            .build(
                &templated,
                &Payload::Json("{}".into()),
                &info(),
                SystemTime::now(),
            )
            .expect("built");
        assert_eq!(built.request.headers()[CONTENT_LENGTH], "0");
        // A body of its own gets its length from hyper, and GET and DELETE
        // carry no body at all.
        let post = webhook(Method::Post, "https://hooks.example/in");
        let built = requests
            .build(
                &post,
                &Payload::Text("x".into()),
                &info(),
                SystemTime::now(),
            )
            .expect("built");
        assert_eq!(built.request.headers().get(CONTENT_LENGTH), None);
        for method in [Method::Get, Method::Delete] {
            let hook = webhook(method, "https://hooks.example/in");
            let built = requests
                .build(&hook, &empty, &info(), SystemTime::now())
                .expect("built");
            assert_eq!(
                built.request.headers().get(CONTENT_LENGTH),
                None,
                "{method}"
            );
        }
    }

    #[test]
    fn template_content_types() {
        assert_eq!(template_content_type(r#" {"a": 1}"#), "application/json");
        assert_eq!(template_content_type("[1]"), "application/json");
        assert_eq!(
            template_content_type("phone={{ item.phone | url_encode }}&x=1"),
            "application/x-www-form-urlencoded"
        );
        assert!(template_content_type("Order {{ data.id }} = done").starts_with("text/plain"));
    }
}
