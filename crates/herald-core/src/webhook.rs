//! Webhook configuration and the rules a webhook must satisfy to be saved.
//!
//! Validation happens here, at save time, so that a delivery never discovers
//! a bad configuration. Every error names the field to fix.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use uuid::Uuid;

use crate::Payload;
use crate::breaker::BreakerSettings;
use crate::filter::Filter;
use crate::name::Tenant;
use crate::ordering::OnFinalFailure;
use crate::rate_limit::RateLimit;
use crate::signing::{SecretError, SigningSecret};
use crate::ssrf::AddressPolicy;
use crate::subscription::Subscription;
use crate::template::{EventInfo, TemplateContext, TemplateEngine};

/// Request timeout of a webhook when none is given (PARTS SOFT: "the receiver
/// must answer within 3 seconds").
pub const DEFAULT_TIMEOUT_MS: u32 = 3_000;
/// Longest timeout a webhook may ask for.
pub const MAX_TIMEOUT_MS: u32 = 60_000;
/// Longest tenant or event name.
pub const MAX_NAME_LEN: usize = 200;
/// Longest target URL.
pub const MAX_URL_LEN: usize = 4_096;
/// Most custom headers per webhook.
pub const MAX_HEADERS: usize = 32;
/// Longest custom header value.
pub const MAX_HEADER_VALUE_LEN: usize = 4_096;
/// Largest body template.
pub const MAX_TEMPLATE_LEN: usize = 64 * 1024;
/// Longest description.
pub const MAX_DESCRIPTION_LEN: usize = 1_000;
/// Most earlier signing secrets kept after rotations, each until its own
/// overlap ends. A Standard Webhooks signature header carries one signature
/// per secret, so this bounds the header and the HMACs of every request.
pub const MAX_PREVIOUS_SECRETS: usize = 5;

/// The HTTP methods a webhook may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Patch => "PATCH",
            Self::Delete => "DELETE",
        }
    }

    /// Parses a method name, case-insensitively.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_uppercase().as_str() {
            "GET" => Self::Get,
            "POST" => Self::Post,
            "PUT" => Self::Put,
            "PATCH" => Self::Patch,
            "DELETE" => Self::Delete,
            _ => return None,
        })
    }

    /// GET and DELETE carry the data in the query string, the others in the body.
    pub fn data_in_query(self) -> bool {
        matches!(self, Self::Get | Self::Delete)
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A saved webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub id: Uuid,
    /// Shop or subshop; empty string = default tenant.
    pub tenant: String,
    /// The events it listens to: names and patterns.
    pub events: Subscription,
    /// Only events whose data passes it get a delivery; `None` = every one.
    pub filter: Option<Filter>,
    pub enabled: bool,
    pub method: Method,
    pub url: String,
    /// Custom request headers, by name.
    pub headers: BTreeMap<String, String>,
    pub body_template: Option<String>,
    pub timeout_ms: u32,
    pub description: String,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
    pub body_mode: BodyMode,
    /// Content-Type override; `None` follows the body mode.
    pub content_type: Option<String>,
    /// Write-only headers (credentials); never returned or logged.
    pub secret_headers: SecretHeaders,
    /// Standard Webhooks signing; `None` = unsigned requests.
    pub signing: Option<Signing>,
    /// The header that carries the delivery id, as the user wrote it (its
    /// case is kept on HTTP/1.1); `None` = the sender's default.
    pub id_header: Option<String>,
    /// Send the attempt's W3C `traceparent`, so that the receiver's spans
    /// join Herald's trace. Off unless the webhook opts in: a receiver that
    /// does not trace gains nothing, and a trace id tells it about the
    /// sender's traffic.
    pub trace_context: bool,
    /// Deliveries that share an ordering key are attempted strictly in
    /// Fire order (`crate::ordering`); off by default.
    pub ordered: bool,
    /// What an ordered webhook's key does after a final failure; kept (and
    /// shown) when the webhook is not ordered, so that turning ordering on
    /// again brings back the operator's choice.
    pub on_failure: OnFinalFailure,
    /// Requests per second the whole deployment may send it; `None` = the
    /// senders' default (no limit unless the operator set one).
    pub rate_limit: Option<RateLimit>,
    /// Its own circuit-breaker settings; `None` = the senders' defaults.
    pub breaker: Option<BreakerSettings>,
    /// How long every attempt may fail before Herald disables it; `None` =
    /// the senders' default.
    pub auto_disable_after: Option<Duration>,
    /// Why Herald disabled it (`None`: enabled, or disabled by a person).
    pub disabled_reason: Option<String>,
    /// When Herald disabled it.
    pub disabled_at: Option<SystemTime>,
}

impl Webhook {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(u64::from(self.timeout_ms))
    }

    /// The secrets that sign a request sent at `now`: the current one, and
    /// every earlier one while its own overlap lasts.
    pub fn signing_secrets(&self, now: SystemTime) -> Vec<&SigningSecret> {
        let Some(signing) = &self.signing else {
            return Vec::new();
        };
        std::iter::once(&signing.secret)
            .chain(signing.previous_at(now).map(|p| &p.secret))
            .collect()
    }
}

/// How the request body is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BodyMode {
    /// The fired data as given (text exactly; JSON as compact JSON).
    Raw,
    /// Rendered from the webhook's body template.
    Template,
    /// "Send JSON" (PARTS SOFT): the whole fired object plus envelope fields
    /// (event, tenant, delivery id, fired at) as one JSON document.
    Json,
}

impl BodyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Template => "template",
            Self::Json => "json",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "raw" => Self::Raw,
            "template" => Self::Template,
            "json" => Self::Json,
            _ => return None,
        })
    }
}

/// Custom headers whose values are secrets. Debug output shows names only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretHeaders(pub BTreeMap<String, String>);

impl fmt::Debug for SecretHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// A webhook's signing secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signing {
    pub secret: SigningSecret,
    /// Secrets replaced by rotations, newest first, each still signing until
    /// its own `expires_at` (at most [`MAX_PREVIOUS_SECRETS`]).
    pub previous: Vec<PreviousSecret>,
}

/// A signing secret replaced by a rotation, and until when it still signs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousSecret {
    pub secret: SigningSecret,
    pub expires_at: SystemTime,
}

impl Signing {
    /// The earlier secrets whose overlap has not ended at `now`, newest first.
    pub fn previous_at(&self, now: SystemTime) -> impl Iterator<Item = &PreviousSecret> {
        self.previous.iter().filter(move |p| now < p.expires_at)
    }

    /// The secrets after rotating to `next` at `now`: the current secret
    /// signs on until `now + overlap`, every earlier one until its own end,
    /// expired ones are dropped, and of the rest only the newest
    /// [`MAX_PREVIOUS_SECRETS`] are kept.
    ///
    /// Each earlier secret keeps its own end, so a second rotation inside the
    /// first one's overlap does not cut short a receiver still verifying with
    /// the oldest secret.
    pub fn rotated(&self, next: SigningSecret, now: SystemTime, overlap: Duration) -> Self {
        let mut previous = Vec::with_capacity(MAX_PREVIOUS_SECRETS);
        previous.push(PreviousSecret {
            secret: self.secret.clone(),
            expires_at: now + overlap,
        });
        previous.extend(self.previous_at(now).cloned());
        previous.truncate(MAX_PREVIOUS_SECRETS);
        Self {
            secret: next,
            previous,
        }
    }
}

/// A webhook to create, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWebhook {
    pub tenant: String,
    pub events: Subscription,
    pub filter: Option<Filter>,
    pub enabled: bool,
    pub method: Method,
    pub url: String,
    pub headers: BTreeMap<String, String>,
    pub body_template: Option<String>,
    pub timeout_ms: u32,
    pub description: String,
    pub body_mode: BodyMode,
    pub content_type: Option<String>,
    pub secret_headers: SecretHeaders,
    pub signing: Option<SigningSecret>,
    pub id_header: Option<String>,
    pub trace_context: bool,
    pub ordered: bool,
    pub on_failure: OnFinalFailure,
    pub rate_limit: Option<RateLimit>,
    pub breaker: Option<BreakerSettings>,
    pub auto_disable_after: Option<Duration>,
}

/// Changes to a webhook; `None` keeps the current value. Validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookPatch {
    pub events: Option<Subscription>,
    /// `Some(None)` removes the filter.
    pub filter: Option<Option<Filter>>,
    pub enabled: Option<bool>,
    pub method: Option<Method>,
    pub url: Option<String>,
    pub headers: Option<BTreeMap<String, String>>,
    /// `Some(None)` removes the template.
    pub body_template: Option<Option<String>>,
    pub timeout_ms: Option<u32>,
    pub description: Option<String>,
    pub body_mode: Option<BodyMode>,
    /// `Some(None)` removes the override.
    pub content_type: Option<Option<String>>,
    pub secret_headers: Option<SecretHeaders>,
    /// `Some(None)` goes back to the sender's default.
    pub id_header: Option<Option<String>>,
    pub trace_context: Option<bool>,
    pub ordered: Option<bool>,
    pub on_failure: Option<OnFinalFailure>,
    /// `Some(None)` removes the webhook's own limit.
    pub rate_limit: Option<Option<RateLimit>>,
    /// `Some(None)` goes back to the senders' defaults.
    pub breaker: Option<Option<BreakerSettings>>,
    /// `Some(None)` goes back to the senders' default.
    pub auto_disable_after: Option<Option<Duration>>,
}

impl WebhookPatch {
    /// Applies the patch to a copy of `webhook` (timestamps are the store's).
    pub fn apply(&self, webhook: &Webhook) -> Webhook {
        let mut w = webhook.clone();
        if let Some(v) = &self.events {
            w.events.clone_from(v);
        }
        if let Some(v) = &self.filter {
            w.filter.clone_from(v);
        }
        if let Some(v) = self.enabled {
            w.enabled = v;
        }
        if let Some(v) = self.method {
            w.method = v;
        }
        if let Some(v) = &self.url {
            w.url.clone_from(v);
        }
        if let Some(v) = &self.headers {
            w.headers.clone_from(v);
        }
        if let Some(v) = &self.body_template {
            w.body_template.clone_from(v);
        }
        if let Some(v) = self.timeout_ms {
            w.timeout_ms = v;
        }
        if let Some(v) = &self.description {
            w.description.clone_from(v);
        }
        if let Some(v) = self.body_mode {
            w.body_mode = v;
        }
        if let Some(v) = &self.content_type {
            w.content_type.clone_from(v);
        }
        if let Some(v) = &self.secret_headers {
            w.secret_headers = v.clone();
        }
        if let Some(v) = &self.id_header {
            w.id_header.clone_from(v);
        }
        if let Some(v) = self.trace_context {
            w.trace_context = v;
        }
        if let Some(v) = self.ordered {
            w.ordered = v;
        }
        if let Some(v) = self.on_failure {
            w.on_failure = v;
        }
        if let Some(v) = self.rate_limit {
            w.rate_limit = v;
        }
        if let Some(v) = self.breaker {
            w.breaker = v;
        }
        if let Some(v) = self.auto_disable_after {
            w.auto_disable_after = v;
        }
        w
    }
}

/// A configuration value that cannot be saved. The message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    pub field: &'static str,
    pub message: String,
}

impl ValidationError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// Checks a method name; empty means the default (POST).
pub fn validate_method(method: &str) -> Result<Method, ValidationError> {
    if method.is_empty() {
        return Ok(Method::Post);
    }
    Method::parse(method).ok_or_else(|| {
        ValidationError::new(
            "method",
            format!("{method:?} is not supported; use GET, POST, PUT, PATCH or DELETE"),
        )
    })
}

/// Whether `url` has an authority (`scheme://…`) whose host is empty, as
/// `https:///x`, `https://:8443/x` and `https://?q=1` have: what a URL
/// template renders to when its host comes from data the event lacks.
/// Neither parser says so: the `url` crate reads `https:///x` as the host
/// `x`, and `http` refuses it as a badly formed URI (or accepts
/// `https://:8443/x` with an empty host).
pub fn url_host_is_empty(url: &str) -> bool {
    let Some((scheme, rest)) = url.split_once("://") else {
        return false;
    };
    let is_scheme = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !is_scheme {
        return false;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_and_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    // An IPv6 literal is never empty, and its colons are not a port's.
    if host_and_port.starts_with('[') {
        return false;
    }
    host_and_port
        .split(':')
        .next()
        .unwrap_or_default()
        .is_empty()
}

/// Checks a target URL: absolute, http or https, with a host.
pub fn validate_url(raw: &str) -> Result<(), ValidationError> {
    if raw.is_empty() {
        return Err(ValidationError::new(
            "url",
            "is required, e.g. \"https://shop.example/hooks/orders\"",
        ));
    }
    if raw.len() > MAX_URL_LEN {
        return Err(ValidationError::new(
            "url",
            format!(
                "is {} bytes long; at most {MAX_URL_LEN} are allowed",
                raw.len()
            ),
        ));
    }
    if url_host_is_empty(raw) {
        return Err(ValidationError::new(
            "url",
            format!("{raw:?} has no host; write it after the \"//\""),
        ));
    }
    let parsed = url::Url::parse(raw)
        .map_err(|e| ValidationError::new("url", format!("{raw:?} is not a valid URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ValidationError::new(
            "url",
            format!(
                "scheme {:?} is not supported; use https:// (or http://)",
                parsed.scheme()
            ),
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(ValidationError::new("url", format!("{raw:?} has no host")));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(ValidationError::new(
            "url",
            "must not carry credentials; put them in a custom header",
        ));
    }
    if parsed.fragment().is_some() {
        return Err(ValidationError::new(
            "url",
            "must not have a #fragment; it is never sent to the server",
        ));
    }
    // The `url` crate repairs what a request line cannot carry (spaces,
    // control and non-ASCII characters); the sender sends the URL as written,
    // so such a URL would fail on every attempt. Suggest the repaired form.
    if raw.parse::<http::Uri>().is_err() {
        return Err(ValidationError::new(
            "url",
            format!(
                "{raw:?} contains characters a request URL cannot carry (spaces, control or \
                 non-ASCII characters); percent-encode them, e.g. {:?}",
                parsed.as_str()
            ),
        ));
    }
    Ok(())
}

/// Header names a webhook cannot configure: HTTP/1.1 framing and routing,
/// which the client sets.
fn is_framing_header(name: &http::HeaderName) -> bool {
    matches!(
        name.as_str(),
        "host" | "content-length" | "transfer-encoding" | "connection" | "upgrade" | "te"
    )
}

/// Checks the name of the header that carries the delivery id.
pub fn validate_id_header(name: &str) -> Result<(), ValidationError> {
    let parsed = http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
        ValidationError::new(
            "id_header",
            format!(
                "{name:?} is not a valid header name (letters, digits and !#$%&'*+-.^_`|~ only), \
                 e.g. \"PS-WEBHOOK_EVENT-ID\" or \"webhook-id\""
            ),
        )
    })?;
    if is_framing_header(&parsed) || parsed == http::header::CONTENT_TYPE {
        return Err(ValidationError::new(
            "id_header",
            format!(
                "{name:?} is set by Herald and cannot carry the delivery id; choose another name"
            ),
        ));
    }
    Ok(())
}

/// Checks custom headers: valid names and values, not ones Herald sets.
pub fn validate_headers(headers: &BTreeMap<String, String>) -> Result<(), ValidationError> {
    if headers.len() > MAX_HEADERS {
        return Err(ValidationError::new(
            "headers",
            format!(
                "{} headers given; at most {MAX_HEADERS} are allowed",
                headers.len()
            ),
        ));
    }
    for (name, value) in headers {
        let parsed = http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            ValidationError::new("headers", format!("{name:?} is not a valid header name"))
        })?;
        if is_framing_header(&parsed) {
            return Err(ValidationError::new(
                "headers",
                format!("{name:?} is set by Herald and cannot be configured"),
            ));
        }
        if value.len() > MAX_HEADER_VALUE_LEN {
            return Err(ValidationError::new(
                "headers",
                format!("the value of {name:?} is longer than {MAX_HEADER_VALUE_LEN} bytes"),
            ));
        }
        http::HeaderValue::from_str(value).map_err(|_| {
            ValidationError::new(
                "headers",
                format!("the value of {name:?} contains characters not allowed in a header"),
            )
        })?;
    }
    Ok(())
}

/// Checks a request timeout in milliseconds.
pub fn validate_timeout_ms(timeout_ms: u32) -> Result<(), ValidationError> {
    if timeout_ms == 0 || timeout_ms > MAX_TIMEOUT_MS {
        return Err(ValidationError::new(
            "timeout_ms",
            format!("{timeout_ms} is out of range; give 1 to {MAX_TIMEOUT_MS} milliseconds"),
        ));
    }
    Ok(())
}

/// Checks a body template (its size; its syntax is checked by the renderer).
pub fn validate_body_template(template: &str) -> Result<(), ValidationError> {
    if template.len() > MAX_TEMPLATE_LEN {
        return Err(ValidationError::new(
            "body_template",
            format!(
                "is {} bytes long; at most {MAX_TEMPLATE_LEN} are allowed",
                template.len()
            ),
        ));
    }
    Ok(())
}

/// Checks a description.
pub fn validate_description(description: &str) -> Result<(), ValidationError> {
    if description.len() > MAX_DESCRIPTION_LEN {
        return Err(ValidationError::new(
            "description",
            format!("is longer than {MAX_DESCRIPTION_LEN} bytes"),
        ));
    }
    Ok(())
}

/// Deployment-wide rules a webhook must meet to be saved.
pub struct SaveRules<'a> {
    /// Accept `http://` targets. Off by default: HTTPS only (WEBSALE ASSE).
    pub allow_http: bool,
    /// Compiles the URL, header and body templates.
    pub templates: &'a TemplateEngine,
    /// Refuses targets whose host is a private or otherwise internal address.
    pub addresses: &'a AddressPolicy,
}

/// Raw fields of a webhook to create, as an API receives them.
#[derive(Debug, Clone, Default)]
pub struct NewWebhookInput {
    pub tenant: String,
    /// One event (the API's `event` field), or empty when `events` is given.
    pub event: String,
    /// Event names and patterns; empty when `event` is given.
    pub events: Vec<String>,
    /// A CEL filter; empty = none.
    pub filter: String,
    pub enabled: Option<bool>,
    pub method: String,
    pub url: String,
    pub headers: BTreeMap<String, String>,
    pub body_template: String,
    pub timeout_ms: Option<u32>,
    pub description: String,
    pub body_mode: String,
    pub content_type: String,
    pub secret_headers: SecretHeaders,
    pub signing_secret: String,
    pub disable_signing: bool,
    /// Empty = the sender's default.
    pub id_header: String,
    /// Send W3C `traceparent`; false unless the webhook opts in.
    pub trace_context: bool,
    /// Attempt deliveries sharing an ordering key in Fire order.
    pub ordered: bool,
    /// `stop` (or empty, the default) or `continue`.
    pub ordered_on_failure: String,
    /// Requests per second; 0 = none.
    pub rate_limit_per_second: u32,
    /// 0 = the default burst ([`RateLimit::default_burst`]).
    pub rate_limit_burst: u32,
    /// Consecutive failures that open the breaker; 0 = the default.
    pub breaker_failures: u32,
    /// The breaker's first cool-down; 0 = the default.
    pub breaker_cooldown_ms: u32,
    /// Seconds every attempt may fail before Herald disables it; 0 = the
    /// default.
    pub auto_disable_after_s: u32,
}

/// The subscription of an API call that gives either one `event` or a
/// list of `events`.
fn subscription(event: String, events: Vec<String>) -> Result<Subscription, ValidationError> {
    match (event.is_empty(), events.is_empty()) {
        (true, true) => Err(ValidationError::new(
            "event",
            "is required, e.g. \"order.created\" (or list names and patterns in events)",
        )),
        // One entry may be a pattern too ("order.*").
        (false, true) => {
            Subscription::parse(&[event]).map_err(|e| ValidationError::new("event", e.message))
        }
        (true, false) => Subscription::parse(&events),
        (false, false) => Err(ValidationError::new(
            "events",
            "is given together with event; give one event, or the whole list in events",
        )),
    }
}

/// Seconds of failing before Herald disables a webhook; 0 = the default.
fn parse_auto_disable_after(seconds: u32) -> Result<Option<Duration>, ValidationError> {
    if seconds > crate::breaker::MAX_AUTO_DISABLE_AFTER_S {
        return Err(ValidationError::new(
            "auto_disable_after_s",
            format!(
                "{seconds} is more than a year ({} s)",
                crate::breaker::MAX_AUTO_DISABLE_AFTER_S
            ),
        ));
    }
    Ok((seconds > 0).then(|| Duration::from_secs(u64::from(seconds))))
}

fn parse_body_mode(mode: &str) -> Result<BodyMode, ValidationError> {
    BodyMode::parse(mode).ok_or_else(|| {
        ValidationError::new(
            "body_mode",
            format!("{mode:?} is not a body mode; use raw, template or json"),
        )
    })
}

fn parse_signing_secret(secret: &str) -> Result<SigningSecret, ValidationError> {
    SigningSecret::parse(secret)
        .map_err(|e: SecretError| ValidationError::new("signing_secret", e.to_string()))
}

impl NewWebhookInput {
    /// Validates every field, applying defaults.
    pub fn validate(self, rules: &SaveRules<'_>) -> Result<NewWebhook, ValidationError> {
        let tenant = Tenant::parse(self.tenant)?;
        let events = subscription(self.event, self.events)?;
        let filter = (!self.filter.is_empty())
            .then(|| Filter::parse(&self.filter))
            .transpose()?;
        let body_template = (!self.body_template.is_empty()).then_some(self.body_template);
        let body_mode = if self.body_mode.is_empty() {
            if body_template.is_some() {
                BodyMode::Template
            } else {
                BodyMode::Raw
            }
        } else {
            parse_body_mode(&self.body_mode)?
        };
        // Ellity's rule: a webhook with a body goes out as POST, one without
        // as GET. An explicit method always wins.
        let method = if self.method.is_empty() {
            if body_template.is_some() || body_mode == BodyMode::Json {
                Method::Post
            } else {
                Method::Get
            }
        } else {
            validate_method(&self.method)?
        };
        let timeout_ms = self.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
        validate_timeout_ms(timeout_ms)?;
        validate_description(&self.description)?;
        let signing = if self.disable_signing {
            if !self.signing_secret.is_empty() {
                return Err(ValidationError::new(
                    "signing_secret",
                    "is given although disable_signing is set; give one or the other",
                ));
            }
            None
        } else if self.signing_secret.is_empty() {
            Some(
                SigningSecret::generate()
                    .map_err(|e| ValidationError::new("signing_secret", e.to_string()))?,
            )
        } else {
            Some(parse_signing_secret(&self.signing_secret)?)
        };
        let new = NewWebhook {
            tenant: tenant.into_string(),
            events,
            filter,
            enabled: self.enabled.unwrap_or(true),
            method,
            url: self.url,
            headers: self.headers,
            body_template,
            timeout_ms,
            description: self.description,
            body_mode,
            content_type: (!self.content_type.is_empty()).then_some(self.content_type),
            secret_headers: self.secret_headers,
            signing,
            id_header: (!self.id_header.is_empty()).then_some(self.id_header),
            trace_context: self.trace_context,
            ordered: self.ordered,
            on_failure: OnFinalFailure::parse(&self.ordered_on_failure)?,
            rate_limit: RateLimit::parse(self.rate_limit_per_second, self.rate_limit_burst)?,
            breaker: BreakerSettings::parse(self.breaker_failures, self.breaker_cooldown_ms)?,
            auto_disable_after: parse_auto_disable_after(self.auto_disable_after_s)?,
        };
        validate_target(
            &Target {
                method: new.method,
                url: &new.url,
                headers: &new.headers,
                secret_headers: &new.secret_headers,
                body_template: new.body_template.as_deref(),
                body_mode: new.body_mode,
                content_type: new.content_type.as_deref(),
                id_header: new.id_header.as_deref(),
            },
            rules,
        )?;
        Ok(new)
    }
}

/// The parts of a webhook that decide what request is sent.
pub struct Target<'a> {
    pub method: Method,
    pub url: &'a str,
    pub headers: &'a BTreeMap<String, String>,
    pub secret_headers: &'a SecretHeaders,
    pub body_template: Option<&'a str>,
    pub body_mode: BodyMode,
    pub content_type: Option<&'a str>,
    pub id_header: Option<&'a str>,
}

impl Webhook {
    pub fn target(&self) -> Target<'_> {
        Target {
            method: self.method,
            url: &self.url,
            headers: &self.headers,
            secret_headers: &self.secret_headers,
            body_template: self.body_template.as_deref(),
            body_mode: self.body_mode,
            content_type: self.content_type.as_deref(),
            id_header: self.id_header.as_deref(),
        }
    }
}

/// Checks everything that shapes the request, as a whole: templates parse,
/// the URL is an allowed target, headers are valid, and a body is only
/// configured for a method that sends one.
pub fn validate_target(target: &Target<'_>, rules: &SaveRules<'_>) -> Result<(), ValidationError> {
    validate_headers(target.headers)?;
    validate_headers(&target.secret_headers.0)
        .map_err(|e| ValidationError::new("secret_headers", e.message))?;
    if target.headers.len() + target.secret_headers.0.len() > MAX_HEADERS {
        return Err(ValidationError::new(
            "headers",
            format!("at most {MAX_HEADERS} headers and secret headers together are allowed"),
        ));
    }
    if let Some(name) = target.headers.keys().find(|n| {
        target
            .secret_headers
            .0
            .keys()
            .any(|s| s.eq_ignore_ascii_case(n))
    }) {
        return Err(ValidationError::new(
            "secret_headers",
            format!("{name:?} is both a header and a secret header; keep one"),
        ));
    }
    if let Some(id_header) = target.id_header {
        validate_id_header(id_header)?;
        if let Some(name) = target
            .headers
            .keys()
            .chain(target.secret_headers.0.keys())
            .find(|n| n.eq_ignore_ascii_case(id_header))
        {
            return Err(ValidationError::new(
                "id_header",
                format!(
                    "{id_header:?} is also configured as the header {name:?}; the delivery id \
                     would replace its value. Remove that header or choose another id_header"
                ),
            ));
        }
    }
    if let Some(content_type) = target.content_type
        && (http::HeaderValue::from_str(content_type).is_err() || content_type.trim().is_empty())
    {
        return Err(ValidationError::new(
            "content_type",
            format!("{content_type:?} is not a valid Content-Type value"),
        ));
    }
    if let Some(template) = target.body_template {
        validate_body_template(template)?;
    }
    if target.body_mode == BodyMode::Template && target.body_template.is_none() {
        return Err(ValidationError::new(
            "body_template",
            "is required when body_mode is template",
        ));
    }
    check_body_fits_method(target)?;
    check_target_templates(target, rules)
}

/// GET and DELETE requests go out without a body (their data goes in the
/// query string), so a body template or a body mode that makes a body would
/// be silently ignored on every attempt; refuse it when it is saved instead.
fn check_body_fits_method(target: &Target<'_>) -> Result<(), ValidationError> {
    if !target.method.data_in_query() {
        return Ok(());
    }
    let method = target.method;
    let no_body = format!("a {method} request carries no body (its data goes in the query string)");
    if target.body_mode == BodyMode::Json {
        return Err(ValidationError::new(
            "body_mode",
            format!(
                "{no_body}; use method POST, PUT or PATCH to send the JSON envelope, or use \
                 body_mode raw"
            ),
        ));
    }
    if target.body_template.is_some() {
        return Err(ValidationError::new(
            "body_template",
            format!(
                "{no_body}; use method POST, PUT or PATCH to send the template, or remove \
                 body_template"
            ),
        ));
    }
    Ok(())
}

/// Compiles every template of the target (so a broken one is refused at
/// save time, with its position) and checks the URL it renders to with no
/// data: scheme (HTTPS unless allowed), host, and no internal IP literal.
fn check_target_templates(
    target: &Target<'_>,
    rules: &SaveRules<'_>,
) -> Result<(), ValidationError> {
    let compile = |field: &'static str, source: &str| {
        rules
            .templates
            .compile(source)
            .map_err(|e| ValidationError::new(field, format!("template does not parse: {e}")))
    };
    let url = compile("url", target.url)?;
    for value in target.headers.values() {
        compile("headers", value)?;
    }
    for value in target.secret_headers.0.values() {
        compile("secret_headers", value)?;
    }
    if let Some(body) = target.body_template {
        compile("body_template", body)?;
    }
    let empty = TemplateContext::new(
        &Payload::Json("{}".into()),
        EventInfo {
            name: String::new(),
            tenant: String::new(),
            delivery_id: Uuid::nil(),
            attempt: 1,
            fired_at_unix_ms: 0,
        },
    );
    let rendered = url
        .render(&empty)
        .map_err(|e| ValidationError::new("url", format!("template does not render: {e}")))?;
    // The URL is validated as it renders without an event, so a host taken
    // from the data is empty here; say that, rather than what the URL
    // parsers make of `https:///x`.
    if !url.is_static() && url_host_is_empty(&rendered) {
        return Err(ValidationError::new(
            "url",
            format!(
                "the host renders empty ({rendered:?}) when the URL is checked with no event \
                 data; write the host out in the URL and let the data fill only the path and query"
            ),
        ));
    }
    validate_url(&rendered)?;
    let parsed = url::Url::parse(&rendered).map_err(|e| {
        ValidationError::new("url", format!("{rendered:?} is not a valid URL: {e}"))
    })?;
    if parsed.scheme() == "http" && !rules.allow_http {
        return Err(ValidationError::new(
            "url",
            "http:// targets are refused: use https:// (a deployment can allow http:// for development with HERALD_ALLOW_HTTP=true)",
        ));
    }
    if let Some(host) = parsed.host_str() {
        rules
            .addresses
            .check_url_host(host)
            .map_err(|refusal| ValidationError::new("url", refusal.to_string()))?;
    }
    Ok(())
}

/// Raw fields of a webhook update, as an API receives them.
#[derive(Debug, Clone, Default)]
pub struct WebhookPatchInput {
    /// Replaces the subscription with this one event.
    pub event: Option<String>,
    /// Replaces the subscription with these names and patterns.
    pub events: Option<Vec<String>>,
    /// `Some("")` removes the filter.
    pub filter: Option<String>,
    pub enabled: Option<bool>,
    pub method: Option<String>,
    pub url: Option<String>,
    pub headers: Option<BTreeMap<String, String>>,
    pub body_template: Option<String>,
    pub timeout_ms: Option<u32>,
    pub description: Option<String>,
    pub body_mode: Option<String>,
    pub content_type: Option<String>,
    pub secret_headers: Option<SecretHeaders>,
    /// `Some("")` goes back to the sender's default.
    pub id_header: Option<String>,
    pub trace_context: Option<bool>,
    pub ordered: Option<bool>,
    /// `stop` or `continue`.
    pub ordered_on_failure: Option<String>,
    /// Requests per second and burst; a rate of 0 removes the limit.
    pub rate_limit: Option<(u32, u32)>,
    /// Failures and cool-down (ms); both 0 = back to the defaults.
    pub breaker: Option<(u32, u32)>,
    /// 0 = back to the default.
    pub auto_disable_after_s: Option<u32>,
}

impl WebhookPatchInput {
    /// Validates every field that is set; the webhook as a whole is checked
    /// with `validate_target` once the patch is applied.
    pub fn validate(self) -> Result<WebhookPatch, ValidationError> {
        let events = match (self.event, self.events) {
            (None, None) => None,
            (event, events) => Some(subscription(
                event.unwrap_or_default(),
                events.unwrap_or_default(),
            )?),
        };
        let filter = self
            .filter
            .map(|f| (!f.is_empty()).then(|| Filter::parse(&f)).transpose())
            .transpose()?;
        let method = match &self.method {
            Some(m) if m.is_empty() => {
                return Err(ValidationError::new(
                    "method",
                    "must not be empty; use GET, POST, PUT, PATCH or DELETE",
                ));
            }
            Some(m) => Some(validate_method(m)?),
            None => None,
        };
        if let Some(t) = self.timeout_ms {
            validate_timeout_ms(t)?;
        }
        if let Some(d) = &self.description {
            validate_description(d)?;
        }
        let body_mode = self.body_mode.as_deref().map(parse_body_mode).transpose()?;
        Ok(WebhookPatch {
            events,
            filter,
            enabled: self.enabled,
            method,
            url: self.url,
            headers: self.headers,
            body_template: self.body_template.map(|t| (!t.is_empty()).then_some(t)),
            timeout_ms: self.timeout_ms,
            description: self.description,
            body_mode,
            content_type: self.content_type.map(|c| (!c.is_empty()).then_some(c)),
            secret_headers: self.secret_headers,
            id_header: self.id_header.map(|h| (!h.is_empty()).then_some(h)),
            trace_context: self.trace_context,
            ordered: self.ordered,
            on_failure: self
                .ordered_on_failure
                .as_deref()
                .map(OnFinalFailure::parse)
                .transpose()?,
            rate_limit: self
                .rate_limit
                .map(|(per_second, burst)| RateLimit::parse(per_second, burst))
                .transpose()?,
            breaker: self
                .breaker
                .map(|(failures, cooldown_ms)| BreakerSettings::parse(failures, cooldown_ms))
                .transpose()?,
            auto_disable_after: self
                .auto_disable_after_s
                .map(parse_auto_disable_after)
                .transpose()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_rules<T>(allow_http: bool, f: impl FnOnce(&SaveRules<'_>) -> T) -> T {
        let templates = TemplateEngine::new();
        let addresses = AddressPolicy::default();
        f(&SaveRules {
            allow_http,
            templates: &templates,
            addresses: &addresses,
        })
    }

    fn check(input: NewWebhookInput) -> Result<NewWebhook, ValidationError> {
        with_rules(false, |rules| input.validate(rules))
    }

    fn input() -> NewWebhookInput {
        NewWebhookInput {
            event: "order.created".into(),
            url: "https://shop.example/hook".into(),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_apply() {
        let w = check(input()).unwrap();
        // Ellity: no body template → GET.
        assert_eq!(w.method, Method::Get);
        assert_eq!(w.body_mode, BodyMode::Raw);
        assert_eq!(w.timeout_ms, DEFAULT_TIMEOUT_MS);
        assert!(w.enabled);
        assert_eq!(w.tenant, "");
        assert_eq!(w.body_template, None);
        assert!(w.signing.is_some(), "a signing secret is generated");
    }

    #[test]
    fn method_follows_the_body_unless_given() {
        let templated = NewWebhookInput {
            body_template: r##"{"email": "#customer.email#"}"##.into(),
            ..input()
        };
        let w = check(templated.clone()).unwrap();
        assert_eq!((w.method, w.body_mode), (Method::Post, BodyMode::Template));
        let explicit = check(NewWebhookInput {
            method: "put".into(),
            ..templated
        })
        .unwrap();
        assert_eq!(explicit.method, Method::Put);
        let json = check(NewWebhookInput {
            body_mode: "json".into(),
            ..input()
        })
        .unwrap();
        assert_eq!(json.method, Method::Post);
    }

    #[test]
    fn https_only_unless_allowed_and_no_internal_literals() {
        let http = NewWebhookInput {
            url: "http://shop.example/hook".into(),
            ..input()
        };
        let err = check(http.clone()).unwrap_err();
        assert_eq!(err.field, "url");
        assert!(err.message.contains("HERALD_ALLOW_HTTP"), "{err}");
        assert!(with_rules(true, |rules| http.validate(rules)).is_ok());
        for internal in [
            "https://127.0.0.1/x",
            "https://10.0.0.7/x",
            "https://[::1]/x",
            "https://169.254.169.254/latest",
        ] {
            let err = check(NewWebhookInput {
                url: internal.into(),
                ..input()
            })
            .unwrap_err();
            assert_eq!(err.field, "url", "{internal}");
        }
    }

    #[test]
    fn templates_are_checked_at_save_time() {
        let err = check(NewWebhookInput {
            body_template: "{{ data.x ".into(),
            ..input()
        })
        .unwrap_err();
        assert_eq!(err.field, "body_template");
        assert!(err.message.contains("line"), "{err}");
        let err = check(NewWebhookInput {
            headers: [("X-Sig".to_string(), "{% if %}".to_string())].into(),
            ..input()
        })
        .unwrap_err();
        assert_eq!(err.field, "headers");
        // Ellity variables in the URL are fine.
        assert!(
            check(NewWebhookInput {
                url: "https://x.example/hook?id=#customer.id#&email=#customer.email#".into(),
                ..input()
            })
            .is_ok()
        );
        let err = check(NewWebhookInput {
            body_mode: "template".into(),
            ..input()
        })
        .unwrap_err();
        assert_eq!(err.field, "body_template");
        let err = check(NewWebhookInput {
            signing_secret: "nope".into(),
            ..input()
        })
        .unwrap_err();
        assert_eq!(err.field, "signing_secret");
        let err = check(NewWebhookInput {
            headers: [("Authorization".to_string(), "a".to_string())].into(),
            secret_headers: SecretHeaders([("authorization".to_string(), "b".to_string())].into()),
            ..input()
        })
        .unwrap_err();
        assert_eq!(err.field, "secret_headers");
    }

    #[test]
    fn get_and_delete_refuse_a_body_when_created() {
        let templated = NewWebhookInput {
            body_template: r#"{"id": {{ data.id }}}"#.into(),
            ..input()
        };
        let err = check(NewWebhookInput {
            method: "GET".into(),
            ..templated.clone()
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "body_template: a GET request carries no body (its data goes in the query string); \
             use method POST, PUT or PATCH to send the template, or remove body_template"
        );
        let err = check(NewWebhookInput {
            method: "delete".into(),
            body_mode: "template".into(),
            ..templated.clone()
        })
        .unwrap_err();
        assert_eq!(err.field, "body_template");
        assert!(
            err.message.starts_with("a DELETE request carries no body"),
            "{err}"
        );
        // A template kept beside body mode raw would be ignored just the same.
        let err = check(NewWebhookInput {
            method: "GET".into(),
            body_mode: "raw".into(),
            ..templated.clone()
        })
        .unwrap_err();
        assert_eq!(err.field, "body_template");
        let err = check(NewWebhookInput {
            method: "GET".into(),
            body_mode: "json".into(),
            ..input()
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "body_mode: a GET request carries no body (its data goes in the query string); use \
             method POST, PUT or PATCH to send the JSON envelope, or use body_mode raw"
        );
        // Without a method a template still means POST, and the methods
        // that send a body take one.
        assert_eq!(check(templated.clone()).unwrap().method, Method::Post);
        for method in ["POST", "PUT", "PATCH"] {
            assert!(
                check(NewWebhookInput {
                    method: method.into(),
                    ..templated.clone()
                })
                .is_ok(),
                "{method}"
            );
        }
        // GET and DELETE without a body are what they are for.
        for method in ["GET", "DELETE"] {
            let w = check(NewWebhookInput {
                method: method.into(),
                body_mode: "raw".into(),
                ..input()
            })
            .unwrap();
            assert!(w.method.data_in_query(), "{method}");
        }
    }

    #[test]
    fn get_and_delete_refuse_a_body_when_updated() {
        let now = SystemTime::now();
        let post = Webhook {
            id: Uuid::nil(),
            tenant: String::new(),
            events: crate::subscription::Subscription::parse(&["e"]).unwrap(),
            filter: None,
            enabled: true,
            method: Method::Post,
            url: "https://a.example/".into(),
            headers: BTreeMap::new(),
            body_template: Some(r#"{"id": {{ data.id }}}"#.into()),
            timeout_ms: 3000,
            description: String::new(),
            created_at: now,
            updated_at: now,
            body_mode: BodyMode::Template,
            content_type: None,
            secret_headers: SecretHeaders::default(),
            signing: None,
            id_header: None,
            trace_context: false,
            ordered: false,
            on_failure: OnFinalFailure::Stop,
            rate_limit: None,
            breaker: None,
            auto_disable_after: None,
            disabled_reason: None,
            disabled_at: None,
        };
        let updated = |webhook: &Webhook, patch: WebhookPatchInput| {
            let changed = patch.validate().unwrap().apply(webhook);
            with_rules(false, |rules| validate_target(&changed.target(), rules))
        };
        assert!(updated(&post, WebhookPatchInput::default()).is_ok());
        // The method changes, the template stays: refused.
        let err = updated(
            &post,
            WebhookPatchInput {
                method: Some("GET".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(err.field, "body_template");
        assert!(err.message.contains("remove body_template"), "{err}");
        // Both change together: accepted.
        assert!(
            updated(
                &post,
                WebhookPatchInput {
                    method: Some("GET".into()),
                    body_template: Some(String::new()),
                    body_mode: Some("raw".into()),
                    ..Default::default()
                },
            )
            .is_ok()
        );
        // A template given to a GET webhook: refused.
        let get = Webhook {
            method: Method::Get,
            body_template: None,
            body_mode: BodyMode::Raw,
            ..post.clone()
        };
        assert!(updated(&get, WebhookPatchInput::default()).is_ok());
        let err = updated(
            &get,
            WebhookPatchInput {
                body_template: Some("{{ data.id }}".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(err.field, "body_template");
        let err = updated(
            &get,
            WebhookPatchInput {
                body_mode: Some("json".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(err.field, "body_mode");
    }

    #[test]
    fn empty_hosts_are_found() {
        for (url, empty) in [
            ("https:///x", true),
            ("https:///x?a=1", true),
            ("https://", true),
            ("https://?q=1", true),
            ("https://#top", true),
            ("https://:8443/x", true),
            ("http://:80", true),
            ("https://user@/x", true),
            ("https://x.example/", false),
            ("https://x.example:8443/a//b", false),
            ("https://[::1]:8443/x", false),
            ("https://a@x.example/", false),
            // Not a URL with an authority: other checks refuse these.
            ("not a url", false),
            ("https:/x", false),
            ("/x?next=https:///y", false),
            ("", false),
        ] {
            assert_eq!(url_host_is_empty(url), empty, "{url:?}");
        }
    }

    #[test]
    fn a_host_that_renders_empty_is_named() {
        let err = check(NewWebhookInput {
            url: "https://{{ data.host }}/x".into(),
            ..input()
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "url: the host renders empty (\"https:///x\") when the URL is checked with no event \
             data; write the host out in the URL and let the data fill only the path and query"
        );
        for url in [
            "https://#shop.host#/hooks",
            "https://{{ data.host }}:8443/x",
            "https://{{ event.tenant }}?q=1",
        ] {
            let err = check(NewWebhookInput {
                url: url.into(),
                ..input()
            })
            .unwrap_err();
            assert_eq!(err.field, "url", "{url}");
            assert!(err.message.starts_with("the host renders empty"), "{err}");
        }
        // A host from the data with a fallback renders without an event,
        // and its value is checked on each attempt.
        assert!(
            check(NewWebhookInput {
                url: r#"https://{{ data.host | default: "hooks.example" }}/x"#.into(),
                ..input()
            })
            .is_ok()
        );
        // A URL written without a host says just that.
        let err = check(NewWebhookInput {
            url: "https:///x".into(),
            ..input()
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "url: \"https:///x\" has no host; write it after the \"//\""
        );
    }

    #[test]
    fn secret_headers_do_not_show_in_debug_output() {
        let w = check(NewWebhookInput {
            secret_headers: SecretHeaders(
                [("Authorization".to_string(), "Bearer s3cret".to_string())].into(),
            ),
            ..input()
        })
        .unwrap();
        let debug = format!("{w:?}");
        assert!(
            debug.contains("Authorization") && !debug.contains("s3cret"),
            "{debug}"
        );
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases: Vec<(NewWebhookInput, &str)> = vec![
            (
                NewWebhookInput {
                    event: String::new(),
                    ..input()
                },
                "event",
            ),
            (
                NewWebhookInput {
                    event: "a b".into(),
                    ..input()
                },
                "event",
            ),
            (
                NewWebhookInput {
                    event: "x".repeat(201),
                    ..input()
                },
                "event",
            ),
            (
                NewWebhookInput {
                    tenant: "t\n".into(),
                    ..input()
                },
                "tenant",
            ),
            (
                NewWebhookInput {
                    method: "TRACE".into(),
                    ..input()
                },
                "method",
            ),
            (
                NewWebhookInput {
                    url: String::new(),
                    ..input()
                },
                "url",
            ),
            (
                NewWebhookInput {
                    url: "not a url".into(),
                    ..input()
                },
                "url",
            ),
            (
                NewWebhookInput {
                    url: "ftp://x.example/".into(),
                    ..input()
                },
                "url",
            ),
            (
                NewWebhookInput {
                    url: "https://u:p@x.example/".into(),
                    ..input()
                },
                "url",
            ),
            // Found by the property tests: `url` accepts these, the
            // sender's request line cannot carry them.
            (
                NewWebhookInput {
                    url: "https://x.example/\0".into(),
                    ..input()
                },
                "url",
            ),
            (
                NewWebhookInput {
                    url: "https://x.example/a b".into(),
                    ..input()
                },
                "url",
            ),
            (
                NewWebhookInput {
                    url: "https://bücher.example/".into(),
                    ..input()
                },
                "url",
            ),
            (
                NewWebhookInput {
                    url: "https://".into(),
                    ..input()
                },
                "url",
            ),
            (
                NewWebhookInput {
                    timeout_ms: Some(0),
                    ..input()
                },
                "timeout_ms",
            ),
            (
                NewWebhookInput {
                    timeout_ms: Some(60_001),
                    ..input()
                },
                "timeout_ms",
            ),
            (
                NewWebhookInput {
                    headers: [("bad header".to_string(), "v".to_string())].into(),
                    ..input()
                },
                "headers",
            ),
            (
                NewWebhookInput {
                    headers: [("X-Ok".to_string(), "line\nbreak".to_string())].into(),
                    ..input()
                },
                "headers",
            ),
            (
                NewWebhookInput {
                    headers: [("Host".to_string(), "evil".to_string())].into(),
                    ..input()
                },
                "headers",
            ),
            (
                NewWebhookInput {
                    body_template: "x".repeat(MAX_TEMPLATE_LEN + 1),
                    ..input()
                },
                "body_template",
            ),
        ];
        for (case, field) in cases {
            let err = check(case.clone()).expect_err(&format!("{case:?} must be refused"));
            assert_eq!(err.field, field, "{case:?}: {err}");
            assert!(err.to_string().starts_with(field));
        }
    }

    #[test]
    fn methods_parse_case_insensitively() {
        for m in ["GET", "post", "Put", "PATCH", "delete"] {
            assert!(Method::parse(m).is_some(), "{m}");
        }
        assert!(Method::Get.data_in_query());
        assert!(Method::Delete.data_in_query());
        assert!(!Method::Patch.data_in_query());
    }

    #[test]
    fn patch_applies_only_what_is_set() {
        let now = SystemTime::now();
        let w = Webhook {
            id: Uuid::nil(),
            tenant: String::new(),
            events: crate::subscription::Subscription::parse(&["e"]).unwrap(),
            filter: None,
            enabled: true,
            method: Method::Post,
            url: "https://a.example/".into(),
            headers: BTreeMap::new(),
            body_template: Some("{}".into()),
            timeout_ms: 3000,
            description: String::new(),
            created_at: now,
            updated_at: now,
            body_mode: BodyMode::Template,
            content_type: None,
            secret_headers: SecretHeaders::default(),
            signing: None,
            id_header: None,
            trace_context: false,
            ordered: false,
            on_failure: OnFinalFailure::Stop,
            rate_limit: None,
            breaker: None,
            auto_disable_after: None,
            disabled_reason: None,
            disabled_at: None,
        };
        let patch = WebhookPatchInput {
            enabled: Some(false),
            body_template: Some(String::new()),
            ..Default::default()
        }
        .validate()
        .unwrap();
        let changed = patch.apply(&w);
        assert!(!changed.enabled);
        assert_eq!(changed.body_template, None);
        assert_eq!(changed.url, w.url);
        assert!(!changed.trace_context, "unset keeps the current value");
        let traced = WebhookPatchInput {
            trace_context: Some(true),
            ..Default::default()
        }
        .validate()
        .unwrap()
        .apply(&w);
        assert!(traced.trace_context);
    }

    #[test]
    fn trace_context_is_off_unless_asked_for() {
        assert!(!check(input()).unwrap().trace_context);
        let w = check(NewWebhookInput {
            trace_context: true,
            ..input()
        })
        .unwrap();
        assert!(w.trace_context);
    }

    #[test]
    fn id_header_is_kept_as_written_and_checked() {
        let w = check(NewWebhookInput {
            id_header: "PS-WEBHOOK_EVENT-ID".into(),
            ..input()
        })
        .unwrap();
        assert_eq!(w.id_header.as_deref(), Some("PS-WEBHOOK_EVENT-ID"));
        assert_eq!(check(input()).unwrap().id_header, None, "empty = default");
        for (name, says) in [
            ("bad name", "not a valid header name"),
            ("Content-Length", "set by Herald"),
            ("content-type", "set by Herald"),
            ("Host", "set by Herald"),
        ] {
            let err = check(NewWebhookInput {
                id_header: name.into(),
                ..input()
            })
            .unwrap_err();
            assert_eq!(err.field, "id_header", "{name}");
            assert!(err.message.contains(says), "{name}: {err}");
        }
        let err = check(NewWebhookInput {
            id_header: "X-Event-Id".into(),
            headers: BTreeMap::from([("x-event-id".into(), "1".into())]),
            ..input()
        })
        .unwrap_err();
        assert_eq!(err.field, "id_header");
        assert!(err.message.contains("also configured"), "{err}");
        let patch = WebhookPatchInput {
            id_header: Some(String::new()),
            ..Default::default()
        }
        .validate()
        .unwrap();
        assert_eq!(patch.id_header, Some(None), "\"\" goes back to the default");
    }

    fn secret(n: u8) -> SigningSecret {
        SigningSecret::parse(&format!(
            "whsec_{}",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [n; 24])
        ))
        .unwrap()
    }

    #[test]
    fn each_earlier_secret_signs_until_its_own_overlap_ends() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let day = Duration::from_secs(86_400);
        let hour = Duration::from_secs(3_600);
        let s = Signing {
            secret: secret(1),
            previous: Vec::new(),
        };
        // Rotation 1 at t0 (overlap a day), rotation 2 an hour later.
        let s = s.rotated(secret(2), t0, day);
        let s = s.rotated(secret(3), t0 + hour, day);
        let at = |t: SystemTime| -> Vec<&SigningSecret> {
            std::iter::once(&s.secret)
                .chain(s.previous_at(t).map(|p| &p.secret))
                .collect()
        };
        // Table: time -> secrets that sign.
        let one = secret(1);
        let two = secret(2);
        let three = secret(3);
        let cases: [(SystemTime, Vec<&SigningSecret>); 4] = [
            (t0 + hour, vec![&three, &two, &one]),
            (t0 + day - Duration::from_secs(1), vec![&three, &two, &one]),
            (t0 + day, vec![&three, &two]),
            (t0 + day + hour, vec![&three]),
        ];
        for (t, want) in cases {
            assert_eq!(at(t), want, "at {t:?}");
        }
    }

    #[test]
    fn at_most_five_earlier_secrets_are_kept_newest_first() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut s = Signing {
            secret: secret(0),
            previous: Vec::new(),
        };
        for n in 1..=7u8 {
            s = s.rotated(
                secret(n),
                t0 + Duration::from_secs(u64::from(n)),
                Duration::from_secs(3_600),
            );
        }
        assert_eq!(s.secret, secret(7));
        let kept: Vec<_> = s.previous.iter().map(|p| p.secret.clone()).collect();
        assert_eq!(
            kept,
            vec![secret(6), secret(5), secret(4), secret(3), secret(2)]
        );
        assert_eq!(kept.len(), MAX_PREVIOUS_SECRETS);
        // An expired secret is dropped at the next rotation.
        let later = t0 + Duration::from_secs(10_000);
        let s = s.rotated(secret(8), later, Duration::from_secs(60));
        assert_eq!(s.previous.len(), 1);
        assert_eq!(s.previous[0].secret, secret(7));
    }
}
