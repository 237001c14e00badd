//! Authentication and authorization of the gRPC API.
//!
//! [`Authenticate`] wraps every gRPC service of ingest. It takes the API key
//! from `authorization: Bearer <token>` (or `x-api-key: <token>`), finds it
//! by the SHA-256 of the token in the in-memory [`ApiKeyCache`] (or matches
//! it against the bootstrap admin key from configuration), checks the scope
//! the called method needs ([`required_scope`]) and hands the caller's
//! [`Principal`] to the handlers in the request extensions. Handlers then
//! check the tenant a call acts on: a key limited to a tenant cannot see or
//! change another tenant's webhooks, deliveries or keys.
//!
//! Health checks and server reflection stay open, so that probes and
//! `grpcurl list` work without a key. Refusals are logged with the key's id
//! and display prefix, never with the token.

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::{Either, Ready, ready};
use herald_core::api_key::{Scope, Scopes, TokenHash, display_prefix, validate_bootstrap_key};
use herald_core::webhook::ValidationError;
use herald_store::{ApiKey, ApiKeyCache};
use tonic::server::NamedService;
use tonic::transport::server::TcpConnectInfo;
use tonic::{Request, Status};
use uuid::Uuid;

/// Whether calls must carry an API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Every call except health and reflection needs a valid key.
    Required,
    /// Every call is allowed, as if made with an admin key for every tenant
    /// (development and benchmarks on a closed network only).
    Disabled,
}

impl std::str::FromStr for AuthMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "required" => Ok(AuthMode::Required),
            "disabled" => Ok(AuthMode::Disabled),
            other => Err(format!(
                "{other:?} is not an auth mode; use required or disabled"
            )),
        }
    }
}

/// The bootstrap admin key from configuration, kept only as its hash.
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapKey(TokenHash);

impl BootstrapKey {
    pub fn new(key: &str) -> Result<BootstrapKey, ValidationError> {
        validate_bootstrap_key(key)?;
        Ok(BootstrapKey(TokenHash::of(key)))
    }
}

impl std::fmt::Debug for BootstrapKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BootstrapKey(…)")
    }
}

/// TLS of the gRPC listener, as PEM.
#[derive(Clone)]
pub struct GrpcTls {
    /// Server certificate chain.
    pub cert_pem: Vec<u8>,
    /// The certificate's private key.
    pub key_pem: Vec<u8>,
    /// When set, clients must present a certificate signed by this CA
    /// (mutual TLS); the handshake fails without one.
    pub client_ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for GrpcTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcTls")
            .field("client_ca", &self.client_ca_pem.is_some())
            .finish_non_exhaustive()
    }
}

impl GrpcTls {
    pub(crate) fn server_config(&self) -> tonic::transport::ServerTlsConfig {
        let identity = tonic::transport::Identity::from_pem(&self.cert_pem, &self.key_pem);
        let config = tonic::transport::ServerTlsConfig::new().identity(identity);
        match &self.client_ca_pem {
            Some(ca) => config.client_ca_root(tonic::transport::Certificate::from_pem(ca)),
            None => config,
        }
    }
}

/// Who is calling, as established by [`Authenticate`]. Its `Display` names
/// the caller for log lines: key id, token prefix and name, never the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// Authentication is disabled: every call may do everything.
    AuthDisabled,
    /// The bootstrap admin key from configuration.
    Bootstrap,
    /// An API key from the database.
    Key(Arc<ApiKey>),
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Principal::AuthDisabled => f.write_str("authentication disabled"),
            Principal::Bootstrap => f.write_str("bootstrap admin key"),
            Principal::Key(key) => write!(
                f,
                "API key {} ({}, {:?})",
                key.id, key.token_prefix, key.name
            ),
        }
    }
}

impl Principal {
    /// The API key's id; `None` for the bootstrap key and disabled auth.
    pub fn key_id(&self) -> Option<Uuid> {
        match self {
            Principal::Key(key) => Some(key.id),
            _ => None,
        }
    }

    pub fn scopes(&self) -> Scopes {
        match self {
            Principal::Key(key) => key.scopes,
            _ => Scopes::all(),
        }
    }

    /// The only tenant the caller may act for; `None` = every tenant.
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Principal::Key(key) => key.tenant.as_deref(),
            _ => None,
        }
    }

    /// Whether the caller may see and act on `tenant`'s things.
    pub fn may_access(&self, tenant: &str) -> bool {
        self.tenant().is_none_or(|own| own == tenant)
    }

    /// Refuses a call that names a tenant the caller is not limited to. The
    /// tenant came from the caller, so saying no reveals nothing.
    pub fn require_tenant(&self, tenant: &str) -> Result<(), Status> {
        match self.tenant() {
            Some(own) if own != tenant => {
                tracing::warn!(
                    caller = %self,
                    tenant,
                    own_tenant = %own,
                    "call refused: API key limited to another tenant"
                );
                Err(Status::permission_denied(format!(
                    "this API key is limited to tenant {own:?} and cannot act for tenant {tenant:?} \
                     (the empty tenant is the default tenant); pass tenant {own:?}"
                )))
            }
            _ => Ok(()),
        }
    }

    /// The tenant filter of a list call: a limited caller's own tenant when
    /// it asked for none, refused when it asked for another.
    pub fn list_filter(&self, requested: Option<String>) -> Result<Option<String>, Status> {
        match (self.tenant(), requested) {
            (None, requested) => Ok(requested),
            (Some(own), None) => Ok(Some(own.to_owned())),
            (Some(_), Some(requested)) => {
                self.require_tenant(&requested)?;
                Ok(Some(requested))
            }
        }
    }

    /// Hides a thing of another tenant as if it did not exist, so that ids
    /// of other tenants' things cannot even be confirmed.
    pub fn require_visible(&self, tenant: &str, not_found: Status) -> Result<(), Status> {
        if self.may_access(tenant) {
            Ok(())
        } else {
            tracing::warn!(
                caller = %self,
                tenant,
                "call refused: the object belongs to another tenant (answered NOT_FOUND)"
            );
            Err(not_found)
        }
    }
}

/// The caller of a request that went through [`Authenticate`].
pub(crate) fn principal<T>(request: &Request<T>) -> Result<Arc<Principal>, Status> {
    request
        .extensions()
        .get::<Arc<Principal>>()
        .cloned()
        // Fail closed: a handler reached without authentication (a server
        // assembled without `Authenticate`) must not act as anybody.
        .ok_or_else(|| Status::internal("the call was not authenticated; this is a bug"))
}

/// Refuses a request whose tenant (`tenant` picks it from the message) the
/// caller may not act for.
pub(crate) fn check_request_tenant<T>(
    request: &Request<T>,
    tenant: impl FnOnce(&T) -> &str,
) -> Result<(), Status> {
    principal(request)?.require_tenant(tenant(request.get_ref()))
}

/// What a gRPC method needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Health checks and reflection: no key needed.
    Open,
    Needs(Scope),
}

/// The scope each method needs. Anything not listed needs `admin`, so that a
/// method added later is closed until someone decides otherwise.
pub(crate) fn required_scope(path: &str) -> Access {
    if path.starts_with("/grpc.health.v1.Health/") || path.starts_with("/grpc.reflection.") {
        return Access::Open;
    }
    match path {
        "/herald.v1.Ingest/Fire" => Access::Needs(Scope::Fire),
        "/herald.v1.Ingest/ListEvents"
        | "/herald.v1.Admin/GetWebhook"
        | "/herald.v1.Admin/ListWebhooks"
        | "/herald.v1.Admin/GetDelivery"
        | "/herald.v1.Admin/ListDeliveries"
        | "/herald.v1.Admin/GetWebhookSummary" => Access::Needs(Scope::Read),
        _ => Access::Needs(Scope::Admin),
    }
}

/// Decides who a call comes from.
#[derive(Debug, Clone)]
pub(crate) struct Authenticator {
    mode: AuthMode,
    bootstrap: Option<BootstrapKey>,
    keys: ApiKeyCache,
    /// Shared by every call they apply to, so that those calls allocate
    /// nothing here.
    disabled: Arc<Principal>,
    bootstrap_principal: Arc<Principal>,
}

/// Why a call was refused, for the log line and the status.
#[derive(Debug)]
enum Refusal {
    /// No key, or one Herald does not know (or that was revoked).
    Unauthenticated { shown: String, reason: &'static str },
    /// A known key without the scope the method needs.
    Scope(Arc<Principal>, Scope),
}

impl Authenticator {
    pub(crate) fn new(mode: AuthMode, bootstrap: Option<BootstrapKey>, keys: ApiKeyCache) -> Self {
        Self {
            mode,
            bootstrap,
            keys,
            disabled: Arc::new(Principal::AuthDisabled),
            bootstrap_principal: Arc::new(Principal::Bootstrap),
        }
    }

    fn authenticate(&self, headers: &http::HeaderMap) -> Result<Arc<Principal>, Refusal> {
        if self.mode == AuthMode::Disabled {
            return Ok(self.disabled.clone());
        }
        let Some(token) = token(headers) else {
            return Err(Refusal::Unauthenticated {
                shown: String::new(),
                reason: "no API key",
            });
        };
        let hash = TokenHash::of(token);
        if let Some(bootstrap) = &self.bootstrap
            && bootstrap.0.ct_eq(&hash)
        {
            return Ok(self.bootstrap_principal.clone());
        }
        match self.keys.lookup(&hash) {
            Some(key) => Ok(Arc::new(Principal::Key(key))),
            None => Err(Refusal::Unauthenticated {
                shown: display_prefix(token),
                reason: "unknown or revoked API key",
            }),
        }
    }

    fn authorize(
        &self,
        path: &str,
        headers: &http::HeaderMap,
    ) -> Result<Option<Arc<Principal>>, Refusal> {
        let Access::Needs(scope) = required_scope(path) else {
            return Ok(None);
        };
        let principal = self.authenticate(headers)?;
        if principal.scopes().grants(scope) {
            Ok(Some(principal))
        } else {
            Err(Refusal::Scope(principal, scope))
        }
    }
}

/// The token of a call: `authorization: Bearer <token>` or `x-api-key`.
fn token(headers: &http::HeaderMap) -> Option<&str> {
    if let Some(value) = headers.get(http::header::AUTHORIZATION) {
        let value = value.to_str().ok()?.trim();
        let (scheme, token) = value.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim())
            .filter(|t| !t.is_empty());
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Wraps the gRPC services: authenticates and authorizes every call before
/// it reaches a handler.
#[derive(Debug, Clone)]
pub(crate) struct Authenticate<S> {
    inner: S,
    auth: Arc<Authenticator>,
}

impl<S> Authenticate<S> {
    pub(crate) fn new(inner: S, auth: Authenticator) -> Self {
        Self {
            inner,
            auth: Arc::new(auth),
        }
    }
}

impl<S: NamedService> NamedService for Authenticate<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tower_service::Service<http::Request<B>> for Authenticate<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Either<Ready<Result<Self::Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        match self.auth.authorize(path, request.headers()) {
            Ok(principal) => {
                if let Some(principal) = principal {
                    request.extensions_mut().insert(principal);
                }
                Either::Right(self.inner.call(request))
            }
            Err(refusal) => {
                let peer = request
                    .extensions()
                    .get::<TcpConnectInfo>()
                    .and_then(TcpConnectInfo::remote_addr);
                let status = refuse(path, peer, refusal);
                Either::Left(ready(Ok(status.into_http())))
            }
        }
    }
}

/// Logs a refused call (without its token) and says what to do about it.
fn refuse(method: &str, peer: Option<SocketAddr>, refusal: Refusal) -> Status {
    match refusal {
        Refusal::Unauthenticated { shown, reason } => {
            tracing::warn!(method, ?peer, key_prefix = %shown, reason, "call refused: not authenticated");
            Status::unauthenticated(format!(
                "{reason}; pass `authorization: Bearer <key>` (herald --token / HERALD_TOKEN); \
                 keys are created with `herald keys create` or come from HERALD_ADMIN_KEY"
            ))
        }
        Refusal::Scope(principal, scope) => {
            tracing::warn!(
                method,
                ?peer,
                caller = %principal,
                scopes = %principal.scopes(),
                needed = %scope,
                "call refused: API key lacks the scope"
            );
            Status::permission_denied(format!(
                "{method} needs an API key with scope \"{scope}\" (or admin); this key has [{}]",
                principal.scopes()
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_need_the_documented_scopes() {
        assert_eq!(required_scope("/grpc.health.v1.Health/Check"), Access::Open);
        assert_eq!(
            required_scope("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            Access::Open
        );
        assert_eq!(
            required_scope("/herald.v1.Ingest/Fire"),
            Access::Needs(Scope::Fire)
        );
        for read in [
            "ListEvents",
            "GetWebhook",
            "ListWebhooks",
            "GetDelivery",
            "ListDeliveries",
            "GetWebhookSummary",
        ] {
            let service = if read == "ListEvents" {
                "Ingest"
            } else {
                "Admin"
            };
            assert_eq!(
                required_scope(&format!("/herald.v1.{service}/{read}")),
                Access::Needs(Scope::Read),
                "{read}"
            );
        }
        for admin in [
            "/herald.v1.Admin/CreateWebhook",
            "/herald.v1.Admin/GetSigningSecret",
            "/herald.v1.Admin/SendTestEvent",
            "/herald.v1.Admin/CreateApiKey",
            "/herald.v1.Admin/SomethingNew",
            "/other.Service/Call",
        ] {
            assert_eq!(
                required_scope(admin),
                Access::Needs(Scope::Admin),
                "{admin}"
            );
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn tokens_come_from_bearer_or_x_api_key() {
        assert_eq!(
            token(&headers(&[("authorization", "Bearer abc")])),
            Some("abc")
        );
        assert_eq!(
            token(&headers(&[("authorization", "bearer  abc ")])),
            Some("abc")
        );
        assert_eq!(token(&headers(&[("authorization", "Basic abc")])), None);
        assert_eq!(token(&headers(&[("authorization", "Bearer ")])), None);
        assert_eq!(token(&headers(&[("x-api-key", "abc")])), Some("abc"));
        assert_eq!(token(&headers(&[])), None);
    }

    #[test]
    fn tenant_limits() {
        let limited = Principal::Key(Arc::new(ApiKey {
            id: Uuid::nil(),
            name: "k".into(),
            token_prefix: "hrk_abcdefgh".into(),
            scopes: Scopes::all(),
            tenant: Some("shop-1".into()),
            created_at: std::time::SystemTime::UNIX_EPOCH,
            revoked_at: None,
        }));
        assert!(limited.require_tenant("shop-1").is_ok());
        let denied = limited.require_tenant("").unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        assert!(denied.message().contains("\"shop-1\""), "{denied:?}");
        assert_eq!(
            limited.list_filter(None).unwrap().as_deref(),
            Some("shop-1")
        );
        assert!(limited.list_filter(Some("shop-2".into())).is_err());
        assert!(
            limited
                .require_visible("shop-2", Status::not_found("x"))
                .is_err_and(|s| s.code() == tonic::Code::NotFound)
        );
        let everyone = Principal::Bootstrap;
        assert!(everyone.require_tenant("anything").is_ok());
        assert_eq!(everyone.list_filter(None).unwrap(), None);
    }

    #[test]
    fn auth_modes_parse() {
        assert_eq!("required".parse(), Ok(AuthMode::Required));
        assert_eq!("disabled".parse(), Ok(AuthMode::Disabled));
        assert!("off".parse::<AuthMode>().is_err());
        assert!(BootstrapKey::new("short").is_err());
        let key = BootstrapKey::new("0123456789abcdef-secret").unwrap();
        assert!(!format!("{key:?}").contains("secret"));
    }
}
