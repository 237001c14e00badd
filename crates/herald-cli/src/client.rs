//! The gRPC client plumbing: the connection to herald-ingest (TLS, mutual
//! TLS), the API key on every call, and API errors as readable messages.
//!
//! Every command that talks to Herald's API gets its clients here, so they
//! all authenticate and report errors the same way. This module must never
//! print or know about a particular command.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use herald_proto::v1::{admin_client::AdminClient, ingest_client::IngestClient};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::cli::AuthArgs;

/// Where the API is and how to talk to it.
#[derive(Debug, Clone)]
pub struct Connection {
    pub server: String,
    pub auth: AuthArgs,
}

/// Adds the API key to every call.
#[derive(Debug, Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    pub fn new(token: Option<&str>) -> anyhow::Result<Bearer> {
        let Some(token) = token.map(str::trim).filter(|t| !t.is_empty()) else {
            return Ok(Bearer(None));
        };
        let value = format!("Bearer {token}").parse().map_err(|_| {
            anyhow!("--token / HERALD_TOKEN holds characters a header cannot carry")
        })?;
        Ok(Bearer(Some(value)))
    }
}

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A channel that authenticates every call.
pub type AuthedChannel = InterceptedService<Channel, Bearer>;

/// The API clients, sharing one connection.
pub(crate) struct Clients {
    pub(crate) ingest: IngestClient<AuthedChannel>,
    pub(crate) admin: AdminClient<AuthedChannel>,
}

/// The TLS settings for `server`, or `None` for plaintext.
fn tls_config(server: &str, auth: &AuthArgs) -> anyhow::Result<Option<ClientTlsConfig>> {
    let https = server.starts_with("https://");
    let wants_tls = auth.ca_cert.is_some() || auth.client_cert.is_some();
    if !https {
        if wants_tls {
            bail!("--ca-cert and --client-cert need an https:// --server (got {server:?})");
        }
        return Ok(None);
    }
    let read = |path: &PathBuf, flag: &str| {
        std::fs::read(path).with_context(|| format!("cannot read {flag} {}", path.display()))
    };
    let mut tls = ClientTlsConfig::new();
    tls = match &auth.ca_cert {
        Some(ca) => tls.ca_certificate(Certificate::from_pem(read(ca, "--ca-cert")?)),
        None => tls.with_native_roots(),
    };
    if let (Some(cert), Some(key)) = (&auth.client_cert, &auth.client_key) {
        tls = tls.identity(Identity::from_pem(
            read(cert, "--client-cert")?,
            read(key, "--client-key")?,
        ));
    }
    Ok(Some(tls))
}

/// Opens the channel to `conn`'s server: TLS for https://, the API key on
/// every call.
pub async fn channel(conn: &Connection) -> anyhow::Result<AuthedChannel> {
    let server = &conn.server;
    let bearer = Bearer::new(conn.auth.token.as_deref())?;
    let mut endpoint = Endpoint::from_shared(server.clone())
        .with_context(|| {
            format!("--server {server:?} is not a valid URL, e.g. http://127.0.0.1:50051")
        })?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30));
    if let Some(tls) = tls_config(server, &conn.auth)? {
        endpoint = endpoint
            .tls_config(tls)
            .context("TLS settings (--ca-cert, --client-cert, --client-key)")?;
    }
    let channel = endpoint.connect().await.with_context(|| {
        format!(
            "cannot reach herald-ingest at {server} (is it running? set --server or HERALD_SERVER)"
        )
    })?;
    Ok(InterceptedService::new(channel, bearer))
}

/// Connects to `conn`'s server: both API clients over one channel.
pub(crate) async fn connect(conn: &Connection) -> anyhow::Result<Clients> {
    let channel = channel(conn).await?;
    Ok(Clients {
        ingest: IngestClient::new(channel.clone()),
        admin: AdminClient::new(channel),
    })
}

/// An error from the API, as `message (Code)`, with its cause if it has one.
pub fn status_error(status: &tonic::Status) -> anyhow::Error {
    let code = status.code();
    let mut text = if status.message().is_empty() {
        code.description().to_owned()
    } else {
        status.message().to_owned()
    };
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    anyhow!("{text} ({code:?})")
}

/// The answer of an API call, or its status as an error.
pub(crate) fn api<T>(result: Result<tonic::Response<T>, tonic::Status>) -> anyhow::Result<T> {
    result
        .map(tonic::Response::into_inner)
        .map_err(|s| status_error(&s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_errors_name_message_and_code() {
        let e = status_error(&tonic::Status::not_found("webhook 7 does not exist"));
        assert_eq!(e.to_string(), "webhook 7 does not exist (NotFound)");
        let e = status_error(&tonic::Status::new(tonic::Code::Unavailable, ""));
        assert!(e.to_string().ends_with("(Unavailable)"), "{e}");
    }
}
