//! The HTTP(S) client side of an attempt: building the request from the
//! webhook's current configuration and the fired data, sending it with the
//! webhook's timeout, and reading just enough of the answer to record it.
//!
//! It reports what happened and nothing more: it must not record attempts,
//! publish or decide on retries (herald-core's `retry` does, `process`
//! carries it out).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use herald_core::retry::honours_retry_after;
use herald_core::retry_after::parse_retry_after;
use herald_core::ssrf::AddressPolicy;
use herald_core::{AttemptError, ErrorKind, Payload, Webhook};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::header_case::WrittenHeaderName;
use crate::request::{Built, DeliveryInfo, RequestBuilder};
use crate::resolver::{GuardedResolver, guarded_connector, is_refusal};

/// How much of a response body is kept for the attempt record.
pub const EXCERPT_BYTES: usize = 1024;
/// How much of a response body is read at most; past that the connection is
/// dropped instead of draining it, so a huge answer cannot stall a sender.
const MAX_DRAIN_BYTES: usize = 64 * 1024;

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

/// The outcome of one attempt, ready to be recorded.
#[derive(Debug, Clone)]
pub struct AttemptOutcome {
    pub url: String,
    pub started_at: SystemTime,
    pub duration: Duration,
    pub status_code: Option<u16>,
    pub error: Option<AttemptError>,
    pub response_excerpt: Option<String>,
    /// How long the target asked to be left alone (`Retry-After` on an
    /// answer whose status asks for a pause: see
    /// `herald_core::retry::honours_retry_after`).
    pub retry_after: Option<Duration>,
}

/// Sends webhook requests over one shared, pooled HTTP(S) client whose
/// resolver refuses internal addresses (SSRF guard).
#[derive(Clone)]
pub struct HttpSender {
    client: Client<HttpsConnector<HttpConnector<GuardedResolver>>, Full<Bytes>>,
    requests: Arc<RequestBuilder>,
}

impl HttpSender {
    pub fn new(
        tls: rustls::ClientConfig,
        id_header: WrittenHeaderName,
        attempt_header: WrittenHeaderName,
        addresses: AddressPolicy,
    ) -> Self {
        let addresses = Arc::new(addresses);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            // ALPN offers h2 and http/1.1; the target picks.
            .enable_all_versions()
            .wrap_connector(guarded_connector(addresses.clone()));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Self {
            client,
            requests: Arc::new(RequestBuilder::new(id_header, attempt_header, addresses)),
        }
    }

    /// Sends one attempt of a delivery to `webhook`.
    pub async fn send(
        &self,
        webhook: &Webhook,
        payload: &Payload,
        info: &DeliveryInfo<'_>,
    ) -> AttemptOutcome {
        let started_at = SystemTime::now();
        let clock = Instant::now();
        let Built { url, request } = match self.requests.build(webhook, payload, info, started_at) {
            Ok(built) => built,
            Err((url, error)) => {
                return AttemptOutcome {
                    url,
                    started_at,
                    duration: clock.elapsed(),
                    status_code: None,
                    error: Some(error),
                    response_excerpt: None,
                    retry_after: None,
                };
            }
        };
        let result = tokio::time::timeout(webhook.timeout(), self.exchange(request)).await;
        let duration = clock.elapsed();
        let (status_code, error, response_excerpt, retry_after) = match result {
            Err(_) => (
                None,
                Some(AttemptError {
                    kind: ErrorKind::Timeout,
                    message: format!("no complete answer within {} ms", webhook.timeout_ms),
                }),
                None,
                None,
            ),
            Ok(Err(error)) => (None, Some(error), None, None),
            Ok(Ok(Answer {
                status,
                excerpt,
                retry_after,
            })) => {
                let error = (!(200..300).contains(&status)).then(|| AttemptError {
                    kind: ErrorKind::HttpStatus,
                    message: match retry_after {
                        Some(wait) => format!(
                            "the target answered HTTP {status} and asked to retry after {} s",
                            wait.as_secs()
                        ),
                        None => format!("the target answered HTTP {status}"),
                    },
                });
                (Some(status), error, Some(excerpt), retry_after)
            }
        };
        AttemptOutcome {
            url,
            started_at,
            duration,
            status_code,
            error,
            response_excerpt,
            retry_after,
        }
    }

    /// Sends the request and reads the answer's status, `Retry-After` and a
    /// body excerpt.
    async fn exchange(&self, request: http::Request<Full<Bytes>>) -> Result<Answer, AttemptError> {
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| match is_refusal(&e) {
                // The guarded resolver found only internal addresses.
                Some(refusal) => AttemptError {
                    kind: ErrorKind::Refused,
                    message: refusal,
                },
                None => AttemptError {
                    kind: ErrorKind::Connection,
                    message: error_chain(&e),
                },
            })?;
        let status = response.status().as_u16();
        // Read only where the retry decision would obey it, so that the
        // attempt's error message never mentions a pause that is ignored.
        let retry_after = if honours_retry_after(status) {
            response
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now()))
        } else {
            None
        };
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
        Ok(Answer {
            status,
            excerpt: String::from_utf8_lossy(&excerpt).into_owned(),
            retry_after,
        })
    }
}

/// What was read of an answer.
struct Answer {
    status: u16,
    excerpt: String,
    retry_after: Option<Duration>,
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
