//! Authentication and authorization of the gRPC API.
//!
//! [`Authenticate`] wraps every gRPC service of ingest. It takes the API key
//! from `authorization: Bearer <token>`, `authorization: <token>` (no
//! scheme) or `x-api-key: <token>`, finds it by the SHA-256 of the token in
//! the in-memory [`ApiKeyCache`] (or matches it against the bootstrap admin
//! key from configuration), checks the scope the called method needs
//! ([`required_scope`]) and hands the caller's [`Principal`] to the handlers
//! in the request extensions. Handlers then check the tenant a call acts on:
//! a key limited to a tenant cannot see or change another tenant's webhooks,
//! deliveries or API keys.
//!
//! A bare `authorization: <token>` counts as a key because clients that
//! cannot add a scheme send it that way; it is looked up like any other
//! token, so it works for Herald's `hrk_` keys and for the bootstrap admin
//! key, whatever that looks like (it has no whitespace, so it can never be
//! mistaken for `<scheme> <credentials>`). A call whose credentials cannot
//! be used is told exactly what was wrong and which forms are accepted.
//!
//! Health checks and server reflection stay open, so that probes and
//! `grpcurl list` work without a key. Refusals are logged with the key's id
//! and display prefix, never with the token.

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::{Either, Ready, ready};
use herald_core::api_key::{
    Scope, Scopes, TOKEN_PREFIX, TokenHash, display_prefix, validate_bootstrap_key,
};
use herald_core::webhook::ValidationError;
use herald_store::{ApiKey, ApiKeyCache};
use tonic::server::NamedService;
use tonic::transport::server::TcpConnectInfo;
use tonic::{Request, Status};
use uuid::Uuid;

/// Whether calls must carry an API key (`HERALD_AUTH`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
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
    /// Any valid key, whatever its scopes (WhoAmI: a key may always learn
    /// what it is).
    AnyKey,
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
        | "/herald.v1.Admin/GetWebhookSummary"
        | "/herald.v1.Admin/GetWebhookTimeline"
        | "/herald.v1.Admin/ListStoppedKeys" => Access::Needs(Scope::Read),
        "/herald.v1.Admin/WhoAmI" => Access::AnyKey,
        _ => Access::Needs(Scope::Admin),
    }
}

/// Decides who a call comes from.
#[derive(Debug, Clone)]
pub(crate) struct Authenticator {
    mode: AuthMode,
    bootstrap: Option<BootstrapKey>,
    api_keys: ApiKeyCache,
    /// Shared by every call they apply to, so that those calls allocate
    /// nothing here.
    disabled: Arc<Principal>,
    bootstrap_principal: Arc<Principal>,
}

/// Why a call was refused, for the log line and the status.
#[derive(Debug)]
enum Refusal {
    /// No usable key, or one Herald does not know (or that was revoked).
    /// `shown` is the display prefix of a token in Herald's format.
    Unauthenticated { shown: String, problem: KeyProblem },
    /// A known key without the scope the method needs.
    Scope(Arc<Principal>, Scope),
}

/// The key of a call as its headers present it.
#[derive(Debug, PartialEq, Eq)]
enum Presented<'a> {
    /// `authorization: Bearer <token>` or `x-api-key: <token>`.
    Key(&'a str),
    /// `authorization: <token>` without a scheme.
    Bare(&'a str),
    /// No usable key, and why.
    Missing(KeyProblem),
}

/// What was wrong with the key of a refused call.
#[derive(Debug, Clone, PartialEq, Eq)]
enum KeyProblem {
    /// Neither `authorization` nor `x-api-key`.
    NoKey,
    /// A header whose value is not visible ASCII text.
    NotText(&'static str),
    /// A header with an empty value.
    Empty(&'static str),
    /// `authorization: <scheme> <credentials>` with a scheme other than
    /// Bearer; holds the scheme as sent when it looks like one.
    Scheme(Option<String>),
    /// `authorization: Bearer` with nothing after it.
    BearerWithoutKey,
    /// A bare `authorization` value that is neither a Herald API key nor
    /// the bootstrap admin key.
    BareNotAKey,
    /// A token Herald does not know, or a revoked key.
    Unknown,
}

/// Longest authentication scheme named back to the caller. Real schemes
/// are short words (Basic, Digest, Negotiate, AWS4-HMAC-SHA256); anything
/// longer in that place is more likely a secret than a scheme.
const MAX_SHOWN_SCHEME_LEN: usize = 20;

impl KeyProblem {
    /// A fixed label for the log line. The scheme is not logged: what a
    /// caller put in its place may be a secret.
    fn label(&self) -> &'static str {
        match self {
            KeyProblem::NoKey => "no API key",
            KeyProblem::NotText(_) => "key header is not visible ASCII",
            KeyProblem::Empty(_) => "key header is empty",
            KeyProblem::Scheme(_) => "authorization scheme is not Bearer",
            KeyProblem::BearerWithoutKey => "Bearer without a key",
            KeyProblem::BareNotAKey => "bare authorization value is not a key",
            KeyProblem::Unknown => "unknown or revoked API key",
        }
    }

    /// `scheme` as it may be named back to the caller.
    fn scheme(scheme: &str) -> KeyProblem {
        let shown = (scheme.len() <= MAX_SHOWN_SCHEME_LEN
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b)))
        .then(|| scheme.to_owned());
        KeyProblem::Scheme(shown)
    }
}

impl std::fmt::Display for KeyProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyProblem::NoKey => f.write_str("no API key"),
            KeyProblem::NotText(header) => {
                write!(f, "the {header} header is not visible ASCII text")
            }
            KeyProblem::Empty(header) => write!(f, "the {header} header is empty"),
            KeyProblem::Scheme(Some(scheme)) => write!(
                f,
                "the authorization header uses scheme {scheme}, which Herald does not accept"
            ),
            KeyProblem::Scheme(None) => f.write_str(
                "the authorization header uses a scheme Herald does not accept (not Bearer)",
            ),
            KeyProblem::BearerWithoutKey => {
                f.write_str("the authorization header says Bearer but carries no key")
            }
            KeyProblem::BareNotAKey => write!(
                f,
                "the authorization header holds a value without a scheme that is neither a \
                 Herald API key ({TOKEN_PREFIX}…) nor the bootstrap admin key"
            ),
            KeyProblem::Unknown => f.write_str("unknown or revoked API key"),
        }
    }
}

/// Who a presented key belongs to.
#[derive(Debug)]
enum Caller {
    Bootstrap,
    Key(Arc<ApiKey>),
}

/// Finds the owner of the key `presented` holds: the bootstrap admin key,
/// or the key `lookup` finds by the token's hash.
fn identify(
    presented: Presented<'_>,
    bootstrap: Option<&BootstrapKey>,
    lookup: impl FnOnce(&TokenHash) -> Option<Arc<ApiKey>>,
) -> Result<Caller, Refusal> {
    let (token, bare) = match presented {
        Presented::Key(token) => (token, false),
        Presented::Bare(token) => (token, true),
        Presented::Missing(problem) => {
            return Err(Refusal::Unauthenticated {
                shown: String::new(),
                problem,
            });
        }
    };
    let hash = TokenHash::of(token);
    if let Some(bootstrap) = bootstrap
        && bootstrap.0.ct_eq(&hash)
    {
        return Ok(Caller::Bootstrap);
    }
    match lookup(&hash) {
        Some(key) => Ok(Caller::Key(key)),
        None => Err(Refusal::Unauthenticated {
            shown: display_prefix(token),
            // Every key in the database starts with the prefix; a bare value
            // without it was most likely meant as something else.
            problem: if bare && !token.starts_with(TOKEN_PREFIX) {
                KeyProblem::BareNotAKey
            } else {
                KeyProblem::Unknown
            },
        }),
    }
}

impl Authenticator {
    pub(crate) fn new(
        mode: AuthMode,
        bootstrap: Option<BootstrapKey>,
        api_keys: ApiKeyCache,
    ) -> Self {
        Self {
            mode,
            bootstrap,
            api_keys,
            disabled: Arc::new(Principal::AuthDisabled),
            bootstrap_principal: Arc::new(Principal::Bootstrap),
        }
    }

    fn authenticate(&self, headers: &http::HeaderMap) -> Result<Arc<Principal>, Refusal> {
        if self.mode == AuthMode::Disabled {
            return Ok(self.disabled.clone());
        }
        match identify(presented(headers), self.bootstrap.as_ref(), |hash| {
            self.api_keys.lookup(hash)
        })? {
            Caller::Bootstrap => Ok(self.bootstrap_principal.clone()),
            Caller::Key(key) => Ok(Arc::new(Principal::Key(key))),
        }
    }

    fn authorize(
        &self,
        path: &str,
        headers: &http::HeaderMap,
    ) -> Result<Option<Arc<Principal>>, Refusal> {
        let scope = match required_scope(path) {
            Access::Open => return Ok(None),
            Access::AnyKey => None,
            Access::Needs(scope) => Some(scope),
        };
        let principal = self.authenticate(headers)?;
        match scope {
            Some(scope) if !principal.scopes().grants(scope) => {
                Err(Refusal::Scope(principal, scope))
            }
            _ => Ok(Some(principal)),
        }
    }
}

/// The key of a call: from `authorization` (`Bearer <token>`, or a bare
/// `<token>`) or else from `x-api-key`. An `authorization` header that holds
/// no key (another scheme, e.g. Basic for a proxy in front of ingest) does
/// not hide an `x-api-key`; when neither header holds a key, the problem
/// of `authorization` is the one reported, as the header the caller most
/// likely meant to use.
fn presented(headers: &http::HeaderMap) -> Presented<'_> {
    let authorization = headers
        .get(http::header::AUTHORIZATION)
        .map(from_authorization);
    if let Some(found @ (Presented::Key(_) | Presented::Bare(_))) = authorization {
        return found;
    }
    let x_api_key = headers
        .get("x-api-key")
        .map(|value| match value.to_str().map(str::trim) {
            Err(_) => Presented::Missing(KeyProblem::NotText("x-api-key")),
            Ok("") => Presented::Missing(KeyProblem::Empty("x-api-key")),
            Ok(token) => Presented::Key(token),
        });
    match (authorization, x_api_key) {
        (_, Some(found @ Presented::Key(_))) => found,
        (Some(problem), _) | (None, Some(problem)) => problem,
        (None, None) => Presented::Missing(KeyProblem::NoKey),
    }
}

fn from_authorization(value: &http::HeaderValue) -> Presented<'_> {
    let Ok(value) = value.to_str().map(str::trim) else {
        return Presented::Missing(KeyProblem::NotText("authorization"));
    };
    match value.split_once([' ', '\t']) {
        _ if value.is_empty() => Presented::Missing(KeyProblem::Empty("authorization")),
        None if value.eq_ignore_ascii_case("bearer") => {
            Presented::Missing(KeyProblem::BearerWithoutKey)
        }
        None => Presented::Bare(value),
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => match token.trim() {
            "" => Presented::Missing(KeyProblem::BearerWithoutKey),
            token => Presented::Key(token),
        },
        Some((scheme, _)) => Presented::Missing(KeyProblem::scheme(scheme)),
    }
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
        Refusal::Unauthenticated { shown, problem } => {
            tracing::warn!(
                method,
                ?peer,
                key_prefix = %shown,
                reason = problem.label(),
                "call refused: not authenticated"
            );
            Status::unauthenticated(format!(
                "{problem}; send the key as `authorization: Bearer <key>`, `authorization: <key>` \
                 or `x-api-key: <key>` (herald --token / HERALD_TOKEN); keys are created with \
                 `herald keys create` or come from HERALD_ADMIN_KEY"
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
            // Admin grants every scope, so say so except where admin is
            // the scope needed anyway.
            let or_admin = if scope == Scope::Admin {
                ""
            } else {
                " (or admin)"
            };
            Status::permission_denied(format!(
                "{method} needs an API key with scope \"{scope}\"{or_admin}; this key has [{}]",
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
        assert_eq!(required_scope("/herald.v1.Admin/WhoAmI"), Access::AnyKey);
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
            "GetWebhookTimeline",
            "ListStoppedKeys",
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
    fn keys_come_from_bearer_a_bare_authorization_or_x_api_key() {
        use KeyProblem::*;
        use Presented::{Bare, Key, Missing};
        let cases: &[(&[(&'static str, &str)], Presented<'static>)] = &[
            (&[("authorization", "Bearer abc")], Key("abc")),
            (&[("authorization", "bearer  abc ")], Key("abc")),
            (&[("authorization", "Bearer\tabc")], Key("abc")),
            (&[("authorization", "hrk_abc")], Bare("hrk_abc")),
            (
                &[("authorization", " some-admin-key ")],
                Bare("some-admin-key"),
            ),
            (&[("x-api-key", "abc")], Key("abc")),
            (&[], Missing(NoKey)),
            (
                &[("authorization", "Basic dXNlcjpwYXNz")],
                Missing(Scheme(Some("Basic".into()))),
            ),
            (
                &[("authorization", "ThisIsFarTooLongForAScheme xyz")],
                Missing(Scheme(None)),
            ),
            (&[("authorization", "Bearer ")], Missing(BearerWithoutKey)),
            (&[("authorization", "BEARER")], Missing(BearerWithoutKey)),
            (&[("authorization", "")], Missing(Empty("authorization"))),
            (&[("x-api-key", " ")], Missing(Empty("x-api-key"))),
            // Another scheme (a proxy's Basic) does not hide x-api-key...
            (
                &[
                    ("authorization", "Basic dXNlcjpwYXNz"),
                    ("x-api-key", "abc"),
                ],
                Key("abc"),
            ),
            // ... but a key in authorization wins over x-api-key,
            (
                &[("authorization", "Bearer abc"), ("x-api-key", "def")],
                Key("abc"),
            ),
            // and when neither holds a key, authorization's problem is told.
            (
                &[("authorization", "Basic x"), ("x-api-key", "")],
                Missing(Scheme(Some("Basic".into()))),
            ),
        ];
        for (pairs, expected) in cases {
            let map = headers(pairs);
            assert_eq!(&presented(&map), expected, "{pairs:?}");
        }
        let mut not_text = http::HeaderMap::new();
        not_text.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_bytes(b"Bearer caf\xc3\xa9").unwrap(),
        );
        assert_eq!(presented(&not_text), Missing(NotText("authorization")));
    }

    fn key(token: &str, scopes: &[&str]) -> Arc<ApiKey> {
        Arc::new(ApiKey {
            id: Uuid::nil(),
            name: "k".into(),
            token_prefix: display_prefix(token),
            scopes: Scopes::parse(scopes).unwrap(),
            tenant: None,
            created_at: std::time::SystemTime::UNIX_EPOCH,
            revoked_at: None,
        })
    }

    /// The problem of a refused key, or `None` when it was accepted.
    fn problem_of(
        presented: Presented<'_>,
        bootstrap: &BootstrapKey,
        known: &str,
    ) -> Option<KeyProblem> {
        let known = (TokenHash::of(known), key(known, &["fire"]));
        let lookup = |hash: &TokenHash| (*hash == known.0).then(|| known.1.clone());
        match identify(presented, Some(bootstrap), lookup) {
            Ok(_) => None,
            Err(Refusal::Unauthenticated { problem, .. }) => Some(problem),
            Err(other) => panic!("not an authentication refusal: {other:?}"),
        }
    }

    #[test]
    fn bare_keys_count_for_herald_keys_and_the_bootstrap_key_only() {
        let admin_key = "0123456789abcdef-admin";
        let bootstrap = BootstrapKey::new(admin_key).unwrap();
        let known = format!("{TOKEN_PREFIX}{}", "K".repeat(43));
        let unknown = format!("{TOKEN_PREFIX}{}", "U".repeat(43));
        for presented in [
            Presented::Bare(&known),
            Presented::Key(&known),
            Presented::Bare(admin_key),
            Presented::Key(admin_key),
        ] {
            let shown = format!("{presented:?}");
            assert_eq!(problem_of(presented, &bootstrap, &known), None, "{shown}");
        }
        assert_eq!(
            problem_of(Presented::Bare(&unknown), &bootstrap, &known),
            Some(KeyProblem::Unknown)
        );
        assert_eq!(
            problem_of(Presented::Key("a-password"), &bootstrap, &known),
            Some(KeyProblem::Unknown)
        );
        assert_eq!(
            problem_of(Presented::Bare("a-password"), &bootstrap, &known),
            Some(KeyProblem::BareNotAKey)
        );
        let Err(Refusal::Unauthenticated { shown, .. }) =
            identify(Presented::Bare(&unknown), None, |_| None)
        else {
            panic!("an unknown key must be refused");
        };
        assert_eq!(shown, display_prefix(&unknown), "Herald's format is shown");
    }

    #[test]
    fn refusals_say_what_was_wrong_and_which_forms_work() {
        let unauthenticated = |problem| {
            let status = refuse(
                "/herald.v1.Ingest/Fire",
                None,
                Refusal::Unauthenticated {
                    shown: String::new(),
                    problem,
                },
            );
            assert_eq!(status.code(), tonic::Code::Unauthenticated);
            status.message().to_owned()
        };
        let basic = unauthenticated(KeyProblem::scheme("Basic"));
        assert!(
            basic.starts_with(
                "the authorization header uses scheme Basic, which Herald does not accept; "
            ),
            "{basic}"
        );
        for form in [
            "`authorization: Bearer <key>`",
            "`authorization: <key>`",
            "`x-api-key: <key>`",
        ] {
            assert!(basic.contains(form), "{basic} lacks {form}");
        }
        assert!(unauthenticated(KeyProblem::NoKey).starts_with("no API key; "));
        assert!(
            unauthenticated(KeyProblem::BareNotAKey).contains("neither a Herald API key (hrk_…)")
        );

        let denied = |scopes: &[&str], needed| {
            let principal = Arc::new(Principal::Key(key("hrk_x", scopes)));
            let status = refuse("/m", None, Refusal::Scope(principal, needed));
            assert_eq!(status.code(), tonic::Code::PermissionDenied);
            status.message().to_owned()
        };
        assert_eq!(
            denied(&["fire"], Scope::Admin),
            "/m needs an API key with scope \"admin\"; this key has [fire]"
        );
        assert_eq!(
            denied(&["fire"], Scope::Read),
            "/m needs an API key with scope \"read\" (or admin); this key has [fire]"
        );
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
