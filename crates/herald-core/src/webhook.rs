//! Webhook configuration and the rules a webhook must satisfy to be saved.
//!
//! Validation happens here, at save time, so that a delivery never discovers
//! a bad configuration. Every error names the field to fix.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use uuid::Uuid;

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
    pub event: String,
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
}

impl Webhook {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(u64::from(self.timeout_ms))
    }
}

/// A webhook to create, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWebhook {
    pub tenant: String,
    pub event: String,
    pub enabled: bool,
    pub method: Method,
    pub url: String,
    pub headers: BTreeMap<String, String>,
    pub body_template: Option<String>,
    pub timeout_ms: u32,
    pub description: String,
}

/// Changes to a webhook; `None` keeps the current value. Validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookPatch {
    pub event: Option<String>,
    pub enabled: Option<bool>,
    pub method: Option<Method>,
    pub url: Option<String>,
    pub headers: Option<BTreeMap<String, String>>,
    /// `Some(None)` removes the template.
    pub body_template: Option<Option<String>>,
    pub timeout_ms: Option<u32>,
    pub description: Option<String>,
}

impl WebhookPatch {
    /// Applies the patch to a copy of `webhook` (timestamps are the store's).
    pub fn apply(&self, webhook: &Webhook) -> Webhook {
        let mut w = webhook.clone();
        if let Some(v) = &self.event {
            w.event.clone_from(v);
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

/// Checks a tenant name (may be empty: the default tenant).
pub fn validate_tenant(tenant: &str) -> Result<(), ValidationError> {
    validate_name("tenant", tenant, true)
}

/// Checks an event name (required).
pub fn validate_event(event: &str) -> Result<(), ValidationError> {
    validate_name("event", event, false)
}

fn validate_name(
    field: &'static str,
    value: &str,
    may_be_empty: bool,
) -> Result<(), ValidationError> {
    if value.is_empty() {
        if may_be_empty {
            return Ok(());
        }
        return Err(ValidationError::new(
            field,
            "is required, e.g. \"order.created\"",
        ));
    }
    if value.len() > MAX_NAME_LEN {
        return Err(ValidationError::new(
            field,
            format!(
                "is {} bytes long; at most {MAX_NAME_LEN} are allowed",
                value.len()
            ),
        ));
    }
    if let Some(c) = value.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(ValidationError::new(
            field,
            format!("must not contain whitespace or control characters (found {c:?})"),
        ));
    }
    Ok(())
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
        if matches!(
            parsed.as_str(),
            "host" | "content-length" | "transfer-encoding" | "connection" | "upgrade" | "te"
        ) {
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

/// Raw fields of a webhook to create, as an API receives them.
#[derive(Debug, Clone, Default)]
pub struct NewWebhookInput {
    pub tenant: String,
    pub event: String,
    pub enabled: Option<bool>,
    pub method: String,
    pub url: String,
    pub headers: BTreeMap<String, String>,
    pub body_template: String,
    pub timeout_ms: Option<u32>,
    pub description: String,
}

impl NewWebhookInput {
    /// Validates every field, applying defaults.
    pub fn validate(self) -> Result<NewWebhook, ValidationError> {
        validate_tenant(&self.tenant)?;
        validate_event(&self.event)?;
        let method = validate_method(&self.method)?;
        validate_url(&self.url)?;
        validate_headers(&self.headers)?;
        validate_body_template(&self.body_template)?;
        let timeout_ms = self.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
        validate_timeout_ms(timeout_ms)?;
        validate_description(&self.description)?;
        Ok(NewWebhook {
            tenant: self.tenant,
            event: self.event,
            enabled: self.enabled.unwrap_or(true),
            method,
            url: self.url,
            headers: self.headers,
            body_template: (!self.body_template.is_empty()).then_some(self.body_template),
            timeout_ms,
            description: self.description,
        })
    }
}

/// Raw fields of a webhook update, as an API receives them.
#[derive(Debug, Clone, Default)]
pub struct WebhookPatchInput {
    pub event: Option<String>,
    pub enabled: Option<bool>,
    pub method: Option<String>,
    pub url: Option<String>,
    pub headers: Option<BTreeMap<String, String>>,
    pub body_template: Option<String>,
    pub timeout_ms: Option<u32>,
    pub description: Option<String>,
}

impl WebhookPatchInput {
    /// Validates every field that is set.
    pub fn validate(self) -> Result<WebhookPatch, ValidationError> {
        if let Some(e) = &self.event {
            validate_event(e)?;
        }
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
        if let Some(u) = &self.url {
            validate_url(u)?;
        }
        if let Some(h) = &self.headers {
            validate_headers(h)?;
        }
        if let Some(t) = &self.body_template {
            validate_body_template(t)?;
        }
        if let Some(t) = self.timeout_ms {
            validate_timeout_ms(t)?;
        }
        if let Some(d) = &self.description {
            validate_description(d)?;
        }
        Ok(WebhookPatch {
            event: self.event,
            enabled: self.enabled,
            method,
            url: self.url,
            headers: self.headers,
            body_template: self.body_template.map(|t| (!t.is_empty()).then_some(t)),
            timeout_ms: self.timeout_ms,
            description: self.description,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> NewWebhookInput {
        NewWebhookInput {
            event: "order.created".into(),
            url: "https://shop.example/hook".into(),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_apply() {
        let w = input().validate().unwrap();
        assert_eq!(w.method, Method::Post);
        assert_eq!(w.timeout_ms, DEFAULT_TIMEOUT_MS);
        assert!(w.enabled);
        assert_eq!(w.tenant, "");
        assert_eq!(w.body_template, None);
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
            let err = case
                .clone()
                .validate()
                .expect_err(&format!("{case:?} must be refused"));
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
            event: "e".into(),
            enabled: true,
            method: Method::Post,
            url: "https://a.example/".into(),
            headers: BTreeMap::new(),
            body_template: Some("{}".into()),
            timeout_ms: 3000,
            description: String::new(),
            created_at: now,
            updated_at: now,
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
    }
}
