//! Which browser origins may call the JSON door and gRPC-Web from another
//! site (CORS): parsed once from `HERALD_CORS_ORIGINS`, carried out by
//! tower-http's `CorsLayer` in front of every route of the gRPC port.
//!
//! Herald's keys travel in a header (`Authorization` or `x-api-key`), never
//! in a cookie, so allowing an origin lets a page on it *send* a key its
//! user typed in; it never lends that page anyone's credentials. That is
//! why `*` is allowed, and why credentialed CORS is never switched on.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// The origins allowed to make cross-site calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    /// Any origin (`*`).
    Any,
    /// Exactly these, each as a browser writes it: `https://host[:port]`.
    List(Vec<HeaderValue>),
}

/// How long a browser may cache a preflight's answer. Chromium caps it at
/// two hours.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(2 * 3600);

impl CorsOrigins {
    /// Reads `*`, or a comma-separated list of origins such as
    /// `https://admin.shop.example,http://localhost:5173`. The answer to a
    /// wrong value says what to write instead.
    pub fn parse(value: &str) -> Result<Self, String> {
        let value = value.trim();
        if value == "*" {
            return Ok(Self::Any);
        }
        let origins = value
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(origin)
            .collect::<Result<Vec<_>, _>>()?;
        if origins.is_empty() {
            return Err("name at least one origin, e.g. https://admin.shop.example, or *".into());
        }
        Ok(Self::List(origins))
    }

    /// The layer that answers preflights and marks answers for these
    /// origins.
    pub fn layer(&self) -> CorsLayer {
        let allow_origin = match self {
            Self::Any => AllowOrigin::any(),
            Self::List(origins) => AllowOrigin::list(origins.iter().cloned()),
        };
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([Method::POST, Method::GET])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("x-api-key"),
                // What gRPC-Web clients (grpc-web, Connect) send.
                HeaderName::from_static("x-grpc-web"),
                HeaderName::from_static("x-user-agent"),
                HeaderName::from_static("grpc-timeout"),
                HeaderName::from_static("traceparent"),
                HeaderName::from_static("tracestate"),
            ])
            // A gRPC-Web client reads the call's status from these.
            .expose_headers([
                HeaderName::from_static("grpc-status"),
                HeaderName::from_static("grpc-message"),
                HeaderName::from_static("grpc-status-details-bin"),
            ])
            .max_age(PREFLIGHT_MAX_AGE)
    }
}

/// One origin, as the `Origin` header a browser sends for it.
fn origin(text: &str) -> Result<HeaderValue, String> {
    let wrong = |why: &str| {
        format!(
            "{text:?} is not an origin ({why}); write scheme://host[:port], e.g. https://admin.shop.example"
        )
    };
    let uri: http::Uri = text.parse().map_err(|_| wrong("not a URL"))?;
    let scheme = uri
        .scheme_str()
        .filter(|s| matches!(*s, "http" | "https"))
        .ok_or_else(|| wrong("the scheme must be http or https"))?;
    let authority = uri.authority().ok_or_else(|| wrong("there is no host"))?;
    if authority.as_str().contains('@') {
        return Err(wrong("an origin has no user name"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(wrong("an origin has no path"));
    }
    // Browsers write the scheme and host in lower case.
    let origin = format!("{scheme}://{authority}").to_ascii_lowercase();
    HeaderValue::from_str(&origin).map_err(|_| wrong("not a header value"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_read_as_browsers_write_them() {
        let table = [
            ("*", Ok(vec!["*"])),
            (
                "https://Admin.Shop.example, http://localhost:5173/",
                Ok(vec!["https://admin.shop.example", "http://localhost:5173"]),
            ),
            ("https://shop.example/admin", Err("no path")),
            ("ftp://shop.example", Err("http or https")),
            ("shop.example", Err("scheme")),
            ("https://user@shop.example", Err("user name")),
            (" , ", Err("at least one origin")),
        ];
        for (text, expected) in table {
            let parsed = CorsOrigins::parse(text);
            match (parsed, expected) {
                (Ok(CorsOrigins::Any), Ok(list)) => assert_eq!(list, ["*"], "{text}"),
                (Ok(CorsOrigins::List(origins)), Ok(list)) => {
                    let got: Vec<_> = origins.iter().map(|o| o.to_str().unwrap()).collect();
                    assert_eq!(got, list, "{text}");
                }
                (Err(message), Err(hint)) => {
                    assert!(message.contains(hint), "{text}: {message}");
                    assert!(message.contains("scheme://host") || hint == "at least one origin");
                }
                (got, expected) => panic!("{text}: got {got:?}, expected {expected:?}"),
            }
        }
    }
}
