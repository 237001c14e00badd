//! The SSRF guard's network side: a DNS resolver for hyper-util's
//! `HttpConnector` that resolves each host itself, drops every address the
//! [`AddressPolicy`] refuses and hands the connector only the checked ones.
//! The connector connects to exactly those addresses, so a name cannot be
//! checked against one answer and connected to via another (no DNS
//! rebinding window).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use herald_core::ssrf::{AddressPolicy, Refusal};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;

/// Resolves names and keeps only the addresses the policy allows.
#[derive(Clone)]
pub struct GuardedResolver {
    policy: Arc<AddressPolicy>,
}

impl GuardedResolver {
    pub fn new(policy: Arc<AddressPolicy>) -> Self {
        Self { policy }
    }

    pub fn policy(&self) -> &AddressPolicy {
        &self.policy
    }

    /// Resolves `host` and returns the allowed addresses (port 0; the
    /// connector sets the URL's port). Fails with [`RefusedError`] inside an
    /// `io::Error` of kind `PermissionDenied` when every address is refused.
    pub async fn resolve(&self, host: &str) -> io::Result<Vec<SocketAddr>> {
        let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host, 0)).await?.collect();
        if resolved.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{host} resolves to no address"),
            ));
        }
        let mut allowed = Vec::with_capacity(resolved.len());
        let mut first_refusal = None;
        for addr in resolved {
            match self.policy.check(addr.ip()) {
                Ok(()) => allowed.push(addr),
                Err(refusal) => {
                    tracing::debug!(host, %refusal, "resolved address refused");
                    first_refusal.get_or_insert(refusal);
                }
            }
        }
        match (allowed.is_empty(), first_refusal) {
            (true, Some(refusal)) => Err(RefusedError(refusal).into()),
            _ => Ok(allowed),
        }
    }
}

impl tower_service::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let resolver = self.clone();
        Box::pin(async move {
            let addrs = resolver.resolve(name.as_str()).await?;
            Ok(addrs.into_iter())
        })
    }
}

/// A host resolved only to addresses the SSRF policy refuses. Carried inside
/// an `io::Error` of kind `PermissionDenied`; find it with [`is_refusal`].
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct RefusedError(pub Refusal);

impl RefusedError {
    pub fn refusal(&self) -> &Refusal {
        &self.0
    }
}

impl From<RefusedError> for io::Error {
    fn from(error: RefusedError) -> Self {
        io::Error::new(io::ErrorKind::PermissionDenied, error)
    }
}

/// The refusal text if `err`, or any error in its source chain, is a
/// [`RefusedError`] — that is, the request was not sent because the target
/// address is refused (a final, non-retryable failure).
///
/// `io::Error::source` skips the error it wraps, so each `io::Error` in the
/// chain is also looked into with `get_ref`.
pub fn is_refusal(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current = Some(err);
    while let Some(error) = current {
        if let Some(refused) = error.downcast_ref::<RefusedError>() {
            return Some(refused.to_string());
        }
        if let Some(refused) = error
            .downcast_ref::<io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<RefusedError>())
        {
            return Some(refused.to_string());
        }
        current = error.source();
    }
    None
}

/// An `HttpConnector` that resolves through [`GuardedResolver`], with
/// `enforce_http(false)` (so a TLS connector can wrap it) and `TCP_NODELAY`.
///
/// hyper-util's `HttpConnector` does NOT call the resolver for IP-literal
/// hosts (`http://10.0.0.1/`, `http://[::1]/`): it connects to them
/// directly. The caller must therefore check every URL's host with
/// [`AddressPolicy::check_url_host`] before sending.
pub fn guarded_connector(policy: Arc<AddressPolicy>) -> HttpConnector<GuardedResolver> {
    let mut connector = HttpConnector::new_with_resolver(GuardedResolver::new(policy));
    connector.enforce_http(false);
    connector.set_nodelay(true);
    connector
}
