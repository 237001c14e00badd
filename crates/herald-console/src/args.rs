//! The console's options: one clap struct with `HERALD_CONSOLE_*`
//! environment variables, documented in docs/configuration.md (generated).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use herald_service::LogFormat;
use tokio_rustls::TlsAcceptor;

use crate::ConsoleError;

/// `herald-console`: the delivery log and webhook configuration in a
/// browser, acting through ingest's Admin API with each person's API key.
#[derive(Debug, Clone, Parser)]
#[command(name = "herald-console", version)]
pub struct ConsoleArgs {
    /// Address the console's web server listens on.
    #[arg(long, env = "HERALD_CONSOLE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Ingest's gRPC address (http:// or https://): every page is built
    /// from Admin API calls made there with the signed-in person's key.
    #[arg(
        long,
        env = "HERALD_CONSOLE_INGEST_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub ingest_url: String,

    /// PEM file of the CA that signed ingest's certificate, for an https
    /// ingest URL whose certificate the system roots do not cover.
    #[arg(long, env = "HERALD_CONSOLE_INGEST_CA")]
    pub ingest_ca: Option<PathBuf>,

    /// PEM certificate chain to serve the console over HTTPS (with
    /// --tls-key). Unset: plain HTTP (put a TLS proxy in front and set
    /// --secure-cookies).
    #[arg(long, env = "HERALD_CONSOLE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "HERALD_CONSOLE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Mark the session cookie Secure although this server speaks plain
    /// HTTP (a TLS proxy in front of it). Always on with --tls-cert.
    #[arg(long, env = "HERALD_CONSOLE_SECURE_COOKIES")]
    pub secure_cookies: bool,

    /// How long a sign-in lasts (s, m, h); after that the person signs in
    /// again. Signing out ends it at once.
    #[arg(long, env = "HERALD_CONSOLE_SESSION_TTL", default_value = "8h",
          value_parser = humantime::parse_duration)]
    pub session_ttl: Duration,

    /// Log format: text or json.
    #[arg(long, env = "HERALD_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// What [`crate::run`] needs, from [`ConsoleArgs`] or built by tests.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    pub ingest_url: String,
    pub ingest_ca: Option<Vec<u8>>,
    /// PEM certificate chain and key.
    pub tls: Option<(Vec<u8>, Vec<u8>)>,
    pub secure_cookies: bool,
    pub session_ttl: Duration,
}

impl ConsoleConfig {
    /// Plain HTTP, ingest at `ingest_url`, default session lifetime.
    pub fn new(ingest_url: impl Into<String>) -> Self {
        Self {
            ingest_url: ingest_url.into(),
            ingest_ca: None,
            tls: None,
            secure_cookies: false,
            session_ttl: Duration::from_secs(8 * 3600),
        }
    }

    /// Reads the files the options name.
    pub fn from_args(args: &ConsoleArgs) -> Result<Self, ConsoleError> {
        let read = |what: &'static str, path: &PathBuf| {
            std::fs::read(path).map_err(|source| ConsoleError::Read {
                what,
                path: path.display().to_string(),
                source,
            })
        };
        let tls = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some((read("--tls-cert", cert)?, read("--tls-key", key)?)),
            _ => None,
        };
        Ok(Self {
            ingest_url: args.ingest_url.clone(),
            ingest_ca: args
                .ingest_ca
                .as_ref()
                .map(|p| read("--ingest-ca", p))
                .transpose()?,
            tls,
            secure_cookies: args.secure_cookies,
            session_ttl: args.session_ttl,
        })
    }

    pub(crate) fn tls_acceptor(&self) -> Result<Option<TlsAcceptor>, ConsoleError> {
        let Some((cert, key)) = &self.tls else {
            return Ok(None);
        };
        use rustls_pki_types::pem::PemObject;
        let certs = rustls_pki_types::CertificateDer::pem_slice_iter(cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ConsoleError::Tls(format!("--tls-cert: {e}")))?;
        let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key)
            .map_err(|e| ConsoleError::Tls(format!("--tls-key: {e}")))?;
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| ConsoleError::Tls(e.to_string()))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Some(TlsAcceptor::from(Arc::new(config))))
    }
}
