//! The HTTP(S) side of an attempt: building the request from the webhook's
//! current configuration and the fired data, sending it with the webhook's
//! timeout, and reading just enough of the answer to record it.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use herald_core::{AttemptError, ErrorKind, Payload, Webhook};
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue, USER_AGENT};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use uuid::Uuid;

/// How much of a response body is kept for the attempt record.
pub const EXCERPT_BYTES: usize = 1024;
/// How much of a response body is read at most; past that the connection is
/// dropped instead of draining it, so a huge answer cannot stall a sender.
const MAX_DRAIN_BYTES: usize = 64 * 1024;

const HERALD_USER_AGENT: &str = concat!("Herald/", env!("CARGO_PKG_VERSION"));

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot read the extra CA file {path}")]
    CaFile {
        path: String,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("the extra CA file {path} holds no usable certificate")]
    NoCertificate { path: String },
    #[error("the TLS configuration is invalid")]
    Rustls(#[from] rustls::Error),
}

/// Builds the TLS client configuration: the platform's root certificates
/// plus, optionally, the certificates of one PEM file.
pub fn tls_config(extra_ca_file: Option<&Path>) -> Result<rustls::ClientConfig, TlsSetupError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::warn!(error = %error, "a platform root certificate could not be loaded");
    }
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    if added == 0 {
        // A minimal container may lack the CA bundle; fall back to the
        // bundled Mozilla roots rather than trusting nothing.
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    if let Some(path) = extra_ca_file {
        let display = path.display().to_string();
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
            .map_err(|source| TlsSetupError::CaFile {
                path: display.clone(),
                source,
            })?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(TlsSetupError::NoCertificate { path: display });
        }
    }
    Ok(rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A request ready to send, with the URL it goes to (for the record).
type Built = (String, http::Request<Full<Bytes>>);

/// The outcome of one attempt, ready to be recorded.
#[derive(Debug, Clone)]
pub struct AttemptOutcome {
    pub url: String,
    pub started_at: SystemTime,
    pub duration: Duration,
    pub status_code: Option<u16>,
    pub error: Option<AttemptError>,
    pub response_excerpt: Option<String>,
}

impl AttemptOutcome {
    pub fn succeeded(&self) -> bool {
        self.error.is_none()
    }
}

/// Sends webhook requests over one shared, pooled HTTP(S) client.
#[derive(Clone)]
pub struct HttpSender {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    id_header: HeaderName,
    attempt_header: HeaderName,
}

impl HttpSender {
    pub fn new(
        tls: rustls::ClientConfig,
        id_header: HeaderName,
        attempt_header: HeaderName,
    ) -> Self {
        let mut http = HttpConnector::new();
        // `https_or_http` below decides per URL; the inner connector must let
        // https URLs through to it.
        http.enforce_http(false);
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            // ALPN offers h2 and http/1.1; the target picks.
            .enable_all_versions()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Self {
            client,
            id_header,
            attempt_header,
        }
    }

    /// Sends attempt `attempt` of delivery `delivery_id` to `webhook`.
    pub async fn send(
        &self,
        webhook: &Webhook,
        payload: &Payload,
        delivery_id: Uuid,
        attempt: u32,
    ) -> AttemptOutcome {
        let started_at = SystemTime::now();
        let clock = Instant::now();
        let (url, request) = match self.build(webhook, payload, delivery_id, attempt) {
            Ok(built) => built,
            Err((url, error)) => {
                return AttemptOutcome {
                    url,
                    started_at,
                    duration: clock.elapsed(),
                    status_code: None,
                    error: Some(error),
                    response_excerpt: None,
                };
            }
        };
        let result = tokio::time::timeout(webhook.timeout(), self.exchange(request)).await;
        let duration = clock.elapsed();
        let (status_code, error, response_excerpt) = match result {
            Err(_) => (
                None,
                Some(AttemptError {
                    kind: ErrorKind::Timeout,
                    message: format!("no complete answer within {} ms", webhook.timeout_ms),
                }),
                None,
            ),
            Ok(Err(error)) => (None, Some(error), None),
            Ok(Ok((status, excerpt))) => {
                let error = (!(200..300).contains(&status)).then(|| AttemptError {
                    kind: ErrorKind::HttpStatus,
                    message: format!("the target answered HTTP {status}"),
                });
                (Some(status), error, Some(excerpt))
            }
        };
        AttemptOutcome {
            url,
            started_at,
            duration,
            status_code,
            error,
            response_excerpt,
        }
    }

    fn build(
        &self,
        webhook: &Webhook,
        payload: &Payload,
        delivery_id: Uuid,
        attempt: u32,
    ) -> Result<Built, (String, AttemptError)> {
        let in_query = webhook.method.data_in_query();
        let url = if in_query {
            payload.append_to_url(&webhook.url)
        } else {
            webhook.url.clone()
        };
        let invalid = |url: &str, message: String| {
            (
                url.to_owned(),
                AttemptError {
                    kind: ErrorKind::InvalidRequest,
                    message,
                },
            )
        };
        let uri: http::Uri = url
            .parse()
            .map_err(|e| invalid(&url, format!("the URL with the data is not valid: {e}")))?;
        let mut builder = http::Request::builder()
            .method(webhook.method.as_str())
            .uri(uri)
            .header(USER_AGENT, HERALD_USER_AGENT)
            .header(&self.id_header, delivery_id.to_string())
            .header(&self.attempt_header, attempt.to_string());
        let body = if in_query {
            Bytes::new()
        } else {
            builder = builder.header(CONTENT_TYPE, payload.content_type());
            Bytes::copy_from_slice(payload.as_str().as_bytes())
        };
        for (name, value) in &webhook.headers {
            // Validated when the webhook was saved.
            match (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                (Ok(name), Ok(value)) => {
                    if let Some(headers) = builder.headers_mut() {
                        headers.insert(name, value);
                    }
                }
                _ => return Err(invalid(&url, format!("custom header {name:?} is invalid"))),
            }
        }
        let request = builder
            .body(Full::new(body))
            .map_err(|e| invalid(&url, format!("the request cannot be built: {e}")))?;
        Ok((url, request))
    }

    /// Sends the request and reads the answer's status and a body excerpt.
    async fn exchange(
        &self,
        request: http::Request<Full<Bytes>>,
    ) -> Result<(u16, String), AttemptError> {
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| AttemptError {
                kind: ErrorKind::Connection,
                message: error_chain(&e),
            })?;
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let mut excerpt = Vec::with_capacity(256);
        let mut read = 0usize;
        // Reading the body to its end returns the connection to the pool;
        // past MAX_DRAIN_BYTES the body (and with it the connection) is
        // dropped instead.
        while read <= MAX_DRAIN_BYTES {
            match body.frame().await {
                None => break,
                Some(Err(e)) => {
                    return Err(AttemptError {
                        kind: ErrorKind::Connection,
                        message: format!("reading the answer failed: {}", error_chain(&e)),
                    });
                }
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        read += data.len();
                        let room = EXCERPT_BYTES.saturating_sub(excerpt.len());
                        excerpt.extend_from_slice(&data[..room.min(data.len())]);
                    }
                }
            }
        }
        Ok((status, String::from_utf8_lossy(&excerpt).into_owned()))
    }
}

/// "outer: inner: innermost", so a recorded error says what really failed.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}
