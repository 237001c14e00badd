//! Authentication of the gRPC API (docs/api.md, "Authentication"): API keys with
//! scopes and tenant limits, the bootstrap admin key, revocation across
//! replicas, TLS and mutual TLS on the listener, the `herald keys` commands,
//! and refusals logged without the token.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use herald_ingest::{AuthMode, BootstrapKey, GrpcTls, IngestConfig};
use herald_proto::v1::{
    CreateApiKeyRequest, CreateWebhookRequest, DeleteWebhookRequest, FireRequest,
    GetDeliveryRequest, GetSigningSecretRequest, GetWebhookRequest, GetWebhookSummaryRequest,
    ListApiKeysRequest, ListDeliveriesRequest, ListEventsRequest, ListWebhooksRequest,
    RevokeApiKeyRequest, SetWebhookEnabledRequest, UpdateWebhookRequest, Webhook,
    admin_client::AdminClient, fire_request, ingest_client::IngestClient,
};
use herald_tests::TestEnv;
use herald_tests::auth::{Authed, Token, channel};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tracing_subscriber::fmt::writer::MakeWriterExt;

/// The bootstrap admin key every test configures.
const ADMIN_KEY: &str = "bootstrap-admin-key-for-tests-0123456789";

/// Every log line of this test binary, to check what refusals log. Tests run
/// in parallel in one process, so each test looks only for its own tokens.
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let capture = Capture(buffer.clone());
        // Installed before TestEnv's own subscriber, whose `try_init` then
        // does nothing; the test writer keeps the usual per-test output.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "warn,herald_ingest=info",
            ))
            .with_ansi(false)
            .with_writer((move || capture.clone()).and(tracing_subscriber::fmt::TestWriter::new))
            .try_init();
        buffer
    })
}

#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn captured() -> String {
    String::from_utf8_lossy(&logs().lock().unwrap()).into_owned()
}

async fn admin(addr: SocketAddr, token: Token) -> AdminClient<Authed> {
    AdminClient::with_interceptor(channel(addr).await, token)
}

async fn ingest(addr: SocketAddr, token: Token) -> IngestClient<Authed> {
    IngestClient::with_interceptor(channel(addr).await, token)
}

fn require_auth(c: &mut IngestConfig) {
    c.auth = AuthMode::Required;
    c.admin_key = Some(BootstrapKey::new(ADMIN_KEY).unwrap());
}

/// A test environment with one ingest that requires API keys.
async fn authed_env() -> (TestEnv, SocketAddr) {
    logs();
    let mut env = TestEnv::new("1h").await.unwrap();
    let addr = env
        .start_ingest(env.queue.clone(), require_auth)
        .await
        .unwrap();
    (env, addr)
}

async fn create_key(
    addr: SocketAddr,
    as_token: &str,
    scopes: &[&str],
    tenant: Option<&str>,
) -> (String, String) {
    let created = admin(addr, Token::bearer(as_token))
        .await
        .create_api_key(CreateApiKeyRequest {
            name: format!("test key {scopes:?} {tenant:?}"),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            tenant: tenant.map(str::to_owned),
        })
        .await
        .expect("key created")
        .into_inner();
    (created.key.unwrap().id, created.token)
}

async fn create_webhook(addr: SocketAddr, tenant: &str, event: &str) -> Webhook {
    admin(addr, Token::bearer(ADMIN_KEY))
        .await
        .create_webhook(CreateWebhookRequest {
            tenant: tenant.into(),
            event: event.into(),
            url: "http://127.0.0.1:9/hook".into(),
            ..Default::default()
        })
        .await
        .expect("webhook created")
        .into_inner()
}

fn fire(tenant: &str, event: &str) -> FireRequest {
    FireRequest {
        tenant: tenant.into(),
        event: event.into(),
        data: Some(fire_request::Data::Json("{}".into())),
        ..Default::default()
    }
}

fn code<T: std::fmt::Debug>(result: Result<tonic::Response<T>, tonic::Status>) -> Code {
    match result {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_a_valid_key_are_refused_and_logged_without_the_token() {
    let (env, addr) = authed_env().await;

    // No key at all.
    let refused = ingest(addr, Token::none())
        .await
        .fire(fire("", "order.created"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert!(
        refused.message().contains("authorization: Bearer"),
        "says what to do: {refused:?}"
    );
    assert_eq!(
        code(
            admin(addr, Token::none())
                .await
                .list_webhooks(ListWebhooksRequest::default())
                .await
        ),
        Code::Unauthenticated
    );

    // A key in Herald's format that does not exist, and some other secret
    // sent by mistake: both refused, neither logged.
    let unknown = format!("hrk_{}", "Q".repeat(43));
    let foreign = format!("some-other-secret-{}", uuid::Uuid::new_v4().simple());
    for token in [&unknown, &foreign] {
        for client_token in [Token::bearer(token), Token::x_api_key(token)] {
            let status = admin(addr, client_token)
                .await
                .list_webhooks(ListWebhooksRequest::default())
                .await
                .unwrap_err();
            assert_eq!(status.code(), Code::Unauthenticated, "{token}");
            assert!(!status.message().contains(token.as_str()));
        }
    }
    // Basic auth is not a bearer token.
    let basic = Token::header("authorization", &format!("Basic {ADMIN_KEY}"));
    assert_eq!(
        code(
            admin(addr, basic)
                .await
                .list_webhooks(ListWebhooksRequest::default())
                .await
        ),
        Code::Unauthenticated
    );

    // Health and reflection stay open for probes and grpcurl.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel(addr).await);
    health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "herald.v1.Admin".into(),
        })
        .await
        .expect("health needs no key");

    // The bootstrap key works, through either header.
    for token in [Token::bearer(ADMIN_KEY), Token::x_api_key(ADMIN_KEY)] {
        admin(addr, token)
            .await
            .list_webhooks(ListWebhooksRequest::default())
            .await
            .expect("bootstrap admin key accepted");
    }

    // The refusals were logged, with the display prefix of a Herald-format
    // token but never a token itself (nor the bootstrap key).
    let logs = captured();
    assert!(logs.contains("call refused: not authenticated"), "{logs}");
    assert!(logs.contains("hrk_QQQQQQQQ"), "{logs}");
    assert!(!logs.contains(&unknown), "the unknown token was logged");
    assert!(!logs.contains(&foreign), "a foreign secret was logged");
    assert!(!logs.contains(ADMIN_KEY), "the bootstrap key was logged");
    drop(env);
}

/// The three accepted forms work for a Herald key and for the bootstrap
/// key; every other form is refused with what was wrong and the forms that
/// work, and a proxy's Basic credentials do not hide an `x-api-key`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_accepted_key_form_works_and_a_wrong_one_is_told_what_is_wrong() {
    let (env, addr) = authed_env().await;
    let (_, key) = create_key(addr, ADMIN_KEY, &["fire", "read"], None).await;
    for (name, token) in [
        ("Bearer key", Token::bearer(&key)),
        ("bare key", Token::header("authorization", &key)),
        ("x-api-key", Token::x_api_key(&key)),
        (
            "bare bootstrap key",
            Token::header("authorization", ADMIN_KEY),
        ),
        (
            "Basic for a proxy and x-api-key",
            Token::header("authorization", "Basic cHJveHk6cGFzcw==").and("x-api-key", &key),
        ),
    ] {
        ingest(addr, token)
            .await
            .list_events(ListEventsRequest::default())
            .await
            .unwrap_or_else(|status| panic!("{name}: refused: {status:?}"));
    }

    let foreign = format!("not-a-herald-key-{}", uuid::Uuid::new_v4().simple());
    let unknown = format!("hrk_{}", "Z".repeat(43));
    for (name, token, problem) in [
        (
            "Basic",
            Token::header("authorization", &format!("Basic {ADMIN_KEY}")),
            "the authorization header uses scheme Basic, which Herald does not accept; ",
        ),
        (
            "bare foreign secret",
            Token::header("authorization", &foreign),
            "the authorization header holds a value without a scheme that is neither a Herald \
             API key (hrk_…) nor the bootstrap admin key; ",
        ),
        (
            "Bearer without a key",
            Token::header("authorization", "Bearer"),
            "the authorization header says Bearer but carries no key; ",
        ),
        (
            "bare unknown Herald key",
            Token::header("authorization", &unknown),
            "unknown or revoked API key; ",
        ),
        ("nothing", Token::none(), "no API key; "),
    ] {
        let status = ingest(addr, token)
            .await
            .list_events(ListEventsRequest::default())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{name}: {status:?}");
        let message = status.message();
        assert!(message.starts_with(problem), "{name}: {message}");
        for form in [
            "`authorization: Bearer <key>`",
            "`authorization: <key>`",
            "`x-api-key: <key>`",
        ] {
            assert!(message.contains(form), "{name}: {message} lacks {form}");
        }
        assert!(!message.contains(ADMIN_KEY) && !message.contains(&foreign));
    }

    // The scope a refusal names: admin needs no "(or admin)" after it.
    let mut keyed_admin = admin(addr, Token::bearer(&key)).await;
    let denied = keyed_admin
        .create_webhook(CreateWebhookRequest {
            event: "order.created".into(),
            url: "http://127.0.0.1:9/hook".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(
        denied.message(),
        "/herald.v1.Admin/CreateWebhook needs an API key with scope \"admin\"; this key has \
         [fire,read]"
    );
    let (_, fire_only) = create_key(addr, ADMIN_KEY, &["fire"], None).await;
    let denied = ingest(addr, Token::header("authorization", &fire_only))
        .await
        .list_events(ListEventsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(
        denied.message(),
        "/herald.v1.Ingest/ListEvents needs an API key with scope \"read\" (or admin); this key \
         has [fire]"
    );

    let logs = captured();
    assert!(!logs.contains(&foreign), "a foreign secret was logged");
    assert!(!logs.contains(&key), "a token was logged");
    drop(env);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_decide_what_a_key_may_call() {
    let (env, addr) = authed_env().await;
    let webhook = create_webhook(addr, "", "order.created").await;
    let (_, fire_key) = create_key(addr, ADMIN_KEY, &["fire"], None).await;
    let (_, read_key) = create_key(addr, ADMIN_KEY, &["read"], None).await;
    let (_, admin_key) = create_key(addr, ADMIN_KEY, &["admin"], None).await;

    // fire: Fire only.
    ingest(addr, Token::bearer(&fire_key))
        .await
        .fire(fire("", "order.created"))
        .await
        .expect("a fire key fires");
    let denied = ingest(addr, Token::bearer(&fire_key))
        .await
        .list_events(ListEventsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(denied.message().contains("\"read\""), "{denied:?}");
    let mut fire_admin = admin(addr, Token::bearer(&fire_key)).await;
    assert_eq!(
        code(
            fire_admin
                .list_webhooks(ListWebhooksRequest::default())
                .await
        ),
        Code::PermissionDenied
    );
    assert_eq!(
        code(
            fire_admin
                .create_webhook(CreateWebhookRequest {
                    event: "x".into(),
                    url: "http://127.0.0.1:9/".into(),
                    ..Default::default()
                })
                .await
        ),
        Code::PermissionDenied
    );
    assert_eq!(
        code(
            fire_admin
                .create_api_key(CreateApiKeyRequest {
                    name: "escalate".into(),
                    scopes: vec!["admin".into()],
                    tenant: None,
                })
                .await
        ),
        Code::PermissionDenied
    );
    // Any valid key may learn what it is (the console shows only what it
    // may do), and nothing more: WhoAmI names no other key.
    let me = fire_admin
        .who_am_i(herald_proto::v1::WhoAmIRequest {})
        .await
        .expect("a fire key may ask who it is")
        .into_inner();
    assert_eq!(me.kind, "api_key");
    assert_eq!(me.scopes, ["fire"]);
    assert_eq!(me.tenant, None);
    assert!(fire_key.starts_with(&me.token_prefix), "{me:?}");
    let bootstrap = admin(addr, Token::bearer(ADMIN_KEY))
        .await
        .who_am_i(herald_proto::v1::WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bootstrap.kind, "bootstrap");
    assert_eq!(bootstrap.scopes, ["fire", "read", "admin"]);
    assert_eq!(
        code(
            admin(addr, Token::none())
                .await
                .who_am_i(herald_proto::v1::WhoAmIRequest {})
                .await
        ),
        Code::Unauthenticated
    );

    // read: the read calls, but neither Fire nor changes nor secrets.
    assert_eq!(
        code(
            ingest(addr, Token::bearer(&read_key))
                .await
                .fire(fire("", "order.created"))
                .await
        ),
        Code::PermissionDenied
    );
    ingest(addr, Token::bearer(&read_key))
        .await
        .list_events(ListEventsRequest::default())
        .await
        .expect("read lists events");
    let mut reader = admin(addr, Token::bearer(&read_key)).await;
    reader
        .list_webhooks(ListWebhooksRequest::default())
        .await
        .expect("read lists webhooks");
    reader
        .get_webhook(GetWebhookRequest {
            id: webhook.id.clone(),
        })
        .await
        .expect("read gets a webhook");
    reader
        .list_deliveries(ListDeliveriesRequest::default())
        .await
        .expect("read lists deliveries");
    for denied in [
        code(
            reader
                .get_signing_secret(GetSigningSecretRequest {
                    id: webhook.id.clone(),
                })
                .await,
        ),
        code(
            reader
                .set_webhook_enabled(SetWebhookEnabledRequest {
                    id: webhook.id.clone(),
                    enabled: false,
                })
                .await,
        ),
        code(reader.list_api_keys(ListApiKeysRequest::default()).await),
    ] {
        assert_eq!(denied, Code::PermissionDenied);
    }

    // admin: everything, Fire included.
    ingest(addr, Token::bearer(&admin_key))
        .await
        .fire(fire("", "order.created"))
        .await
        .expect("admin implies fire");
    admin(addr, Token::bearer(&admin_key))
        .await
        .get_signing_secret(GetSigningSecretRequest { id: webhook.id })
        .await
        .expect("admin reads secrets");
    create_key(addr, &admin_key, &["fire"], None).await;

    let logs = captured();
    assert!(
        logs.contains("call refused: API key lacks the scope"),
        "{logs}"
    );
    for token in [&fire_key, &read_key, &admin_key] {
        assert!(!logs.contains(token.as_str()), "a token was logged");
    }
    drop(env);
}

/// Inserts a delivery row as the sender would have written it.
async fn delivery_row(env: &TestEnv, tenant: &str, webhook: &Webhook) -> String {
    let id = uuid::Uuid::now_v7();
    let webhook_id: uuid::Uuid = webhook.id.parse().unwrap();
    env.db()
        .await
        .execute(
            "INSERT INTO deliveries (id, tenant, event, webhook_id, target_url, method, payload, \
                 payload_kind, fired_at, state) \
             VALUES ($1, $2, $3, $4, $5, 'GET', '{}', 'json', now(), 'pending')",
            &[&id, &tenant, &webhook.event, &webhook_id, &webhook.url],
        )
        .await
        .unwrap();
    id.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_limited_key_sees_and_fires_only_its_tenant() {
    let (env, addr) = authed_env().await;
    let own = create_webhook(addr, "shop-1", "order.created").await;
    let other = create_webhook(addr, "shop-2", "order.created").await;
    let default_tenant = create_webhook(addr, "", "order.created").await;
    let own_delivery = delivery_row(&env, "shop-1", &own).await;
    let other_delivery = delivery_row(&env, "shop-2", &other).await;
    let (_, key) = create_key(addr, ADMIN_KEY, &["fire", "read"], Some("shop-1")).await;

    // Fire and ListEvents: its own tenant only; the empty tenant is the
    // default tenant, not "mine".
    let mut shop = ingest(addr, Token::bearer(&key)).await;
    let fired = shop
        .fire(fire("shop-1", "order.created"))
        .await
        .expect("fires its own tenant")
        .into_inner()
        .delivery_ids;
    for tenant in ["shop-2", ""] {
        let denied = shop.fire(fire(tenant, "order.created")).await.unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied, "{tenant:?}");
        assert!(denied.message().contains("\"shop-1\""), "{denied:?}");
        assert_eq!(
            code(
                shop.list_events(ListEventsRequest {
                    tenant: tenant.into()
                })
                .await
            ),
            Code::PermissionDenied
        );
    }
    let events = shop
        .list_events(ListEventsRequest {
            tenant: "shop-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(events.events.len(), 1);

    // Lists are cut to its tenant; asking for another is refused.
    let mut reader = admin(addr, Token::bearer(&key)).await;
    let listed = reader
        .list_webhooks(ListWebhooksRequest::default())
        .await
        .unwrap()
        .into_inner()
        .webhooks;
    assert_eq!(
        listed.iter().map(|w| w.id.as_str()).collect::<Vec<_>>(),
        [own.id.as_str()]
    );
    assert_eq!(
        code(
            reader
                .list_webhooks(ListWebhooksRequest {
                    tenant: Some("shop-2".into()),
                    event: None
                })
                .await
        ),
        Code::PermissionDenied
    );
    let deliveries = reader
        .list_deliveries(ListDeliveriesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .deliveries;
    // Its own delivery, and the one it just fired once ingest has logged
    // it as scheduled: nothing of another tenant.
    let listed: Vec<&str> = deliveries.iter().map(|d| d.id.as_str()).collect();
    assert!(listed.contains(&own_delivery.as_str()), "{listed:?}");
    assert!(
        listed
            .iter()
            .all(|id| *id == own_delivery || fired.iter().any(|f| f == id)),
        "{listed:?}"
    );
    assert_eq!(
        code(
            reader
                .list_deliveries(ListDeliveriesRequest {
                    tenant: Some(String::new()),
                    ..Default::default()
                })
                .await
        ),
        Code::PermissionDenied
    );

    // By id: its own things answer; another tenant's answer exactly like
    // ids that do not exist, so they cannot even be confirmed.
    reader
        .get_webhook(GetWebhookRequest { id: own.id.clone() })
        .await
        .expect("its own webhook");
    reader
        .get_delivery(GetDeliveryRequest {
            id: own_delivery.clone(),
        })
        .await
        .expect("its own delivery");
    let missing = uuid::Uuid::now_v7().to_string();
    let not_found = |status: tonic::Status, id: &str| {
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
        assert_eq!(status.message(), format!("webhook {id} does not exist"));
    };
    for id in [&other.id, &default_tenant.id, &missing] {
        let status = reader
            .get_webhook(GetWebhookRequest { id: id.clone() })
            .await
            .unwrap_err();
        not_found(status, id);
        let status = reader
            .get_webhook_summary(GetWebhookSummaryRequest {
                webhook_id: id.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        not_found(status, id);
    }
    for id in [&other_delivery, &missing] {
        let status = reader
            .get_delivery(GetDeliveryRequest { id: id.clone() })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
        // The same words whether the delivery is another tenant's or
        // missing: nothing tells the two apart.
        assert!(
            status.message().starts_with(&format!(
                "delivery {id} is not in the log. Its id says it was fired at "
            )),
            "{}",
            status.message()
        );
    }

    // A tenant-limited admin key: manages its tenant and nothing else.
    let (_, shop_admin) = create_key(addr, ADMIN_KEY, &["admin"], Some("shop-1")).await;
    let (unrestricted_id, _) = create_key(addr, ADMIN_KEY, &["read"], None).await;
    let mut manager = admin(addr, Token::bearer(&shop_admin)).await;
    assert_eq!(
        code(
            manager
                .create_webhook(CreateWebhookRequest {
                    tenant: "shop-2".into(),
                    event: "x".into(),
                    url: "http://127.0.0.1:9/".into(),
                    ..Default::default()
                })
                .await
        ),
        Code::PermissionDenied
    );
    assert_eq!(
        code(
            manager
                .update_webhook(UpdateWebhookRequest {
                    id: other.id.clone(),
                    description: Some("mine now".into()),
                    ..Default::default()
                })
                .await
        ),
        Code::NotFound
    );
    assert_eq!(
        code(
            manager
                .delete_webhook(DeleteWebhookRequest {
                    id: other.id.clone()
                })
                .await
        ),
        Code::NotFound
    );
    admin(addr, Token::bearer(ADMIN_KEY))
        .await
        .get_webhook(GetWebhookRequest {
            id: other.id.clone(),
        })
        .await
        .expect("the other tenant's webhook is untouched");
    manager
        .update_webhook(UpdateWebhookRequest {
            id: own.id.clone(),
            description: Some("changed".into()),
            ..Default::default()
        })
        .await
        .expect("updates its own webhook");

    // Keys: only for its tenant (unset means its own), only its tenant's
    // listed, and keys of others cannot be revoked.
    assert_eq!(
        code(
            manager
                .create_api_key(CreateApiKeyRequest {
                    name: "other".into(),
                    scopes: vec!["fire".into()],
                    tenant: Some("shop-2".into()),
                })
                .await
        ),
        Code::PermissionDenied
    );
    let created = manager
        .create_api_key(CreateApiKeyRequest {
            name: "own".into(),
            scopes: vec!["fire".into()],
            tenant: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.key.unwrap().tenant.as_deref(), Some("shop-1"));
    let keys = manager
        .list_api_keys(ListApiKeysRequest::default())
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert!(!keys.is_empty());
    assert!(keys.iter().all(|k| k.tenant.as_deref() == Some("shop-1")));
    assert_eq!(
        code(
            manager
                .revoke_api_key(RevokeApiKeyRequest {
                    id: unrestricted_id
                })
                .await
        ),
        Code::NotFound
    );
    drop(env);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_admin_creates_lists_and_revokes_and_only_hashes_are_stored() {
    let (env, addr) = authed_env().await;
    let mut root = admin(addr, Token::bearer(ADMIN_KEY)).await;
    let created = root
        .create_api_key(CreateApiKeyRequest {
            name: "shop back-end".into(),
            scopes: vec!["fire".into(), "read".into()],
            tenant: Some("shop-1".into()),
        })
        .await
        .unwrap()
        .into_inner();
    let token = created.token.clone();
    let key = created.key.unwrap();
    assert!(token.starts_with("hrk_") && token.len() == 47, "{token}");
    assert_eq!(key.token_prefix, &token[..12]);
    assert_eq!(key.scopes, ["fire", "read"]);

    // Bad requests say what to fix.
    let bad = root
        .create_api_key(CreateApiKeyRequest {
            name: "x".into(),
            scopes: vec!["write".into()],
            tenant: None,
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().starts_with("scopes:"), "{bad:?}");

    // The listing shows the prefix, never a token; neither does the table.
    let listed = root
        .list_api_keys(ListApiKeysRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.keys, std::slice::from_ref(&key));
    assert!(!format!("{listed:?}").contains(&token[12..]));
    let client = env.db().await;
    let rows: Vec<String> = client
        .query("SELECT api_keys::text FROM api_keys", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(rows.len(), 1);
    assert!(!rows[0].contains(&token[12..]), "{rows:?}");
    let hash: Vec<u8> = client
        .query_one("SELECT token_hash FROM api_keys", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        hash,
        herald_core::api_key::TokenHash::of(&token).0,
        "SHA-256 of the token"
    );

    // The key works at once, and is refused at once after revocation on
    // the replica that revoked it.
    let mut shop = ingest(addr, Token::bearer(&token)).await;
    shop.list_events(ListEventsRequest {
        tenant: "shop-1".into(),
    })
    .await
    .expect("new key works at once");
    let revoked = root
        .revoke_api_key(RevokeApiKeyRequest { id: key.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert!(revoked.revoked_at_unix_ms.is_some());
    assert_eq!(
        code(
            shop.list_events(ListEventsRequest {
                tenant: "shop-1".into()
            })
            .await
        ),
        Code::Unauthenticated
    );
    assert!(
        root.list_api_keys(ListApiKeysRequest::default())
            .await
            .unwrap()
            .into_inner()
            .keys
            .is_empty()
    );
    let all = root
        .list_api_keys(ListApiKeysRequest {
            tenant: None,
            include_revoked: true,
        })
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert_eq!(all, [revoked]);
    assert_eq!(
        code(
            root.revoke_api_key(RevokeApiKeyRequest {
                id: uuid::Uuid::now_v7().to_string()
            })
            .await
        ),
        Code::NotFound
    );
    drop(env);
}

/// Polls `call` until it answers `want`; returns how long that took.
async fn until_code<F, Fut>(limit: Duration, want: Code, mut call: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Code>,
{
    let started = Instant::now();
    loop {
        let got = call().await;
        if got == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "still {got:?} instead of {want:?} after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_reaches_another_replica_within_a_second() {
    logs();
    let mut env = TestEnv::new("1h").await.unwrap();
    // An hour between periodic reloads: only the notification can explain a
    // quick reaction on the replica that did not make the change.
    let slow_refresh = |c: &mut IngestConfig| {
        require_auth(c);
        c.config_refresh = Duration::from_secs(3600);
    };
    let a = env
        .start_ingest(env.queue.clone(), slow_refresh)
        .await
        .unwrap();
    let b = env
        .start_ingest(env.queue.clone(), slow_refresh)
        .await
        .unwrap();
    let (id, token) = create_key(a, ADMIN_KEY, &["read"], None).await;

    let mut on_b = ingest(b, Token::bearer(&token)).await;
    let mut list_on_b = move || {
        let mut client = on_b.clone();
        async move { code(client.list_events(ListEventsRequest::default()).await) }
    };
    let seen = until_code(Duration::from_secs(3), Code::Ok, &mut list_on_b).await;
    assert!(
        seen < Duration::from_secs(1),
        "new key seen on B after {seen:?}"
    );

    admin(a, Token::bearer(ADMIN_KEY))
        .await
        .revoke_api_key(RevokeApiKeyRequest { id })
        .await
        .unwrap();
    let refused = until_code(
        Duration::from_secs(3),
        Code::Unauthenticated,
        &mut list_on_b,
    )
    .await;
    assert!(
        refused < Duration::from_secs(1),
        "revoked key still accepted by B after {refused:?}"
    );
    // And it stays refused.
    assert_eq!(list_on_b().await, Code::Unauthenticated);
    on_b = ingest(b, Token::bearer(ADMIN_KEY)).await;
    on_b.list_events(ListEventsRequest::default())
        .await
        .expect("B still serves valid keys");
    drop(env);
}

/// A CA, a server certificate for localhost/127.0.0.1 and a client
/// certificate, all made by rcgen; PEM.
struct Pki {
    ca_pem: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
}

fn make_pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let client = CertificateParams::new(vec!["shop-1.client".to_string()])
        .unwrap()
        .signed_by(&client_key, &issuer)
        .unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        server_cert: server.pem(),
        server_key: server_key.serialize_pem(),
        client_cert: client.pem(),
        client_key: client_key.serialize_pem(),
    }
}

/// Starts an ingest with TLS (and mTLS when `client_ca` is set) and waits
/// until it answers a TLS health check.
async fn tls_env(pki: &Pki, client_ca: Option<&str>) -> (TestEnv, SocketAddr) {
    logs();
    let mut env = TestEnv::new("1h").await.unwrap();
    let mut config = env.ingest_config(env.queue.clone());
    require_auth(&mut config);
    config.tls = Some(GrpcTls {
        cert_pem: pki.server_cert.clone().into_bytes(),
        key_pem: pki.server_key.clone().into_bytes(),
        client_ca_pem: client_ca.map(|ca| ca.as_bytes().to_vec()),
    });
    let addr = env.spawn_ingest(config, None).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ready = async {
            let channel = tls_channel(addr, pki, true).await?;
            tonic_health::pb::health_client::HealthClient::new(channel)
                .check(tonic_health::pb::HealthCheckRequest::default())
                .await?;
            anyhow::Ok(())
        };
        if ready.await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "TLS ingest did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (env, addr)
}

/// A TLS channel trusting the test CA, with the client certificate if asked.
async fn tls_channel(addr: SocketAddr, pki: &Pki, with_cert: bool) -> anyhow::Result<Channel> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca_pem))
        .domain_name("localhost");
    if with_cert {
        tls = tls.identity(Identity::from_pem(&pki.client_cert, &pki.client_key));
    }
    Ok(Endpoint::from_shared(format!("https://{addr}"))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_listener_serves_tls() {
    let pki = make_pki();
    let (env, addr) = tls_env(&pki, None).await;
    let channel = tls_channel(addr, &pki, false).await.expect("TLS connects");
    let mut root = AdminClient::with_interceptor(channel.clone(), Token::bearer(ADMIN_KEY));
    root.list_webhooks(ListWebhooksRequest::default())
        .await
        .expect("an authenticated call over TLS");
    assert_eq!(
        code(
            AdminClient::with_interceptor(channel, Token::none())
                .list_webhooks(ListWebhooksRequest::default())
                .await
        ),
        Code::Unauthenticated,
        "TLS does not replace the API key"
    );
    // Plaintext gRPC to the TLS port gets nowhere.
    let plain = async {
        let channel = Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(2))
            .connect()
            .await?;
        AdminClient::with_interceptor(channel, Token::bearer(ADMIN_KEY))
            .list_webhooks(ListWebhooksRequest::default())
            .await?;
        anyhow::Ok(())
    };
    assert!(
        plain.await.is_err(),
        "plaintext must not work on a TLS port"
    );
    // A client that does not trust the CA refuses the server.
    let untrusting = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(make_pki().ca_pem))
                .domain_name("localhost"),
        )
        .unwrap()
        .connect()
        .await;
    assert!(untrusting.is_err());
    drop(env);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_requires_a_client_certificate_of_the_ca() {
    let pki = make_pki();
    let (env, addr) = tls_env(&pki, Some(&pki.ca_pem)).await;
    // With a certificate of the configured CA (and a key): works.
    let channel = tls_channel(addr, &pki, true).await.expect("mTLS connects");
    AdminClient::with_interceptor(channel, Token::bearer(ADMIN_KEY))
        .list_webhooks(ListWebhooksRequest::default())
        .await
        .expect("a call with a client certificate");

    // Without a certificate the handshake fails, so no call gets through.
    let without = async {
        let channel = tls_channel(addr, &pki, false).await?;
        AdminClient::with_interceptor(channel, Token::bearer(ADMIN_KEY))
            .list_webhooks(ListWebhooksRequest::default())
            .await?;
        anyhow::Ok(())
    };
    assert!(
        without.await.is_err(),
        "a client without a certificate got in"
    );

    // A certificate from another CA is refused too.
    let stranger = make_pki();
    let foreign = async {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&pki.ca_pem))
            .domain_name("localhost")
            .identity(Identity::from_pem(
                &stranger.client_cert,
                &stranger.client_key,
            ));
        let channel = Endpoint::from_shared(format!("https://{addr}"))?
            .tls_config(tls)?
            .connect()
            .await?;
        AdminClient::with_interceptor(channel, Token::bearer(ADMIN_KEY))
            .list_webhooks(ListWebhooksRequest::default())
            .await?;
        anyhow::Ok(())
    };
    assert!(foreign.await.is_err(), "a certificate of another CA got in");
    drop(env);
}

/// The `herald` binary, built in this test's profile (a no-op when fresh).
fn herald_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            herald_tests::process::workspace_binary("herald-cli", "herald")
                .expect("building the herald CLI")
        })
        .clone()
}

/// `vars` and `HERALD_TOKEN=token`.
fn with_token<'a>(vars: &[(&'a str, &'a str)], token: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut vars = vars.to_vec();
    vars.push(("HERALD_TOKEN", token));
    vars
}

/// Runs `herald ARGS` with `env` set; returns (success, stdout, stderr).
async fn herald(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<(bool, String, String)> {
    let binary = herald_binary();
    let mut command = Command::new(&binary);
    command.args(args);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("HERALD_") {
            command.env_remove(&name);
        }
    }
    for (name, value) in env {
        command.env(name, value);
    }
    let out = tokio::task::spawn_blocking(move || command.output())
        .await?
        .with_context(|| format!("running {}", binary.display()))?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_manages_keys_with_a_token_and_over_mutual_tls() {
    let pki = make_pki();
    let (env, addr) = tls_env(&pki, Some(&pki.ca_pem)).await;
    let dir = std::env::temp_dir().join(format!("herald-auth-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, pem: &str| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path.to_string_lossy().into_owned()
    };
    let ca = write("ca.pem", &pki.ca_pem);
    let cert = write("client.pem", &pki.client_cert);
    let key = write("client.key", &pki.client_key);
    // The server certificate names 127.0.0.1 as well as localhost.
    let server = format!("https://127.0.0.1:{}", addr.port());
    let tls_env_vars = [
        ("HERALD_SERVER", server.as_str()),
        ("HERALD_CA_CERT", ca.as_str()),
        ("HERALD_CLIENT_CERT", cert.as_str()),
        ("HERALD_CLIENT_KEY", key.as_str()),
    ];
    let admin_vars = with_token(&tls_env_vars, ADMIN_KEY);

    // Create: the token is printed once.
    let (ok, out, err) = herald(
        &[
            "--json",
            "keys",
            "create",
            "--name",
            "ci",
            "--scope",
            "fire,read",
            "--tenant",
            "shop-1",
        ],
        &admin_vars,
    )
    .await
    .unwrap();
    assert!(ok, "keys create failed: {err}");
    let created: serde_json::Value = serde_json::from_str(&out).unwrap();
    let token = created["token"].as_str().unwrap().to_owned();
    let id = created["key"]["id"].as_str().unwrap().to_owned();
    assert!(token.starts_with("hrk_"));
    assert_eq!(created["key"]["tenant"], "shop-1");

    // List: the prefix, not the token; the token flag works as well as the
    // variable.
    let (ok, out, err) = herald(&["keys", "list", "--token", ADMIN_KEY], &tls_env_vars)
        .await
        .unwrap();
    assert!(ok, "keys list failed: {err}");
    assert!(out.contains(&id) && out.contains(&token[..12]), "{out}");
    assert!(
        !out.contains(&token[12..]),
        "the listing shows the token: {out}"
    );

    // Without a token: refused, and told what to do.
    let (ok, _, err) = herald(&["keys", "list"], &tls_env_vars).await.unwrap();
    assert!(!ok);
    assert!(
        err.contains("Unauthenticated") && err.contains("HERALD_TOKEN"),
        "{err}"
    );

    // The new key is limited to its scopes.
    let key_vars = with_token(&tls_env_vars, &token);
    let (ok, _, err) = herald(&["keys", "list"], &key_vars).await.unwrap();
    assert!(!ok && err.contains("PermissionDenied"), "{err}");
    let (ok, _, err) = herald(&["events", "--tenant", "shop-1"], &key_vars)
        .await
        .unwrap();
    assert!(ok, "events with a read key failed: {err}");

    // Revoke: refused from then on.
    let (ok, out, err) = herald(&["keys", "revoke", &id], &admin_vars).await.unwrap();
    assert!(ok, "keys revoke failed: {err}");
    assert!(out.contains("revoked"), "{out}");
    let (ok, _, err) = herald(&["events", "--tenant", "shop-1"], &key_vars)
        .await
        .unwrap();
    assert!(!ok && err.contains("Unauthenticated"), "{err}");

    // Without the client certificate the server cannot be reached.
    let (ok, _, err) = herald(
        &["keys", "list"],
        &[
            ("HERALD_SERVER", server.as_str()),
            ("HERALD_CA_CERT", ca.as_str()),
            ("HERALD_TOKEN", ADMIN_KEY),
        ],
    )
    .await
    .unwrap();
    assert!(!ok, "reached an mTLS server without a certificate: {err}");
    let _ = std::fs::remove_dir_all(&dir);
    drop(env);
}
