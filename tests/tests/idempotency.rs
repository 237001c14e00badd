//! Idempotent Fire: a repeat of a tenant's idempotency key within its window
//! answers the first call's delivery ids and publishes nothing new, across
//! concurrent calls, ingest replicas and calls that crashed half-way; a
//! repeat with other data is refused.
//!
//! Most tests run ingest without a sender, so the number of messages in the
//! queues is exactly what was published; a sender started afterwards shows
//! that each webhook receives exactly one request.

use std::time::{Duration, Instant};

use herald_core::Payload;
use herald_core::idempotency::fire_request_hash;
use herald_proto::v1::{
    CreateWebhookRequest, FireRequest, SetWebhookEnabledRequest, fire_request,
    ingest_client::IngestClient,
};
use herald_tests::{Receiver, TcpProxy, TestEnv};
use tonic::transport::Channel;
use uuid::Uuid;

const FINAL: Duration = Duration::from_secs(30);

/// A fresh environment with ingest running and no sender.
async fn ingest_only(tweak: impl FnOnce(&mut herald_ingest::IngestConfig)) -> TestEnv {
    let mut env = TestEnv::new("0s").await.unwrap();
    env.start_ingest(env.queue.clone(), tweak).await.unwrap();
    env
}

async fn fire(
    client: &mut IngestClient<Channel>,
    tenant: &str,
    json: &str,
    key: &str,
) -> Result<Vec<String>, tonic::Status> {
    client
        .fire(FireRequest {
            ordering_key: Default::default(),
            tenant: tenant.into(),
            event: "order.created".into(),
            data: Some(fire_request::Data::Json(json.into())),
            idempotency_key: key.into(),
        })
        .await
        .map(|r| r.into_inner().delivery_ids)
}

async fn webhook(env: &TestEnv, tenant: &str, url: &str) -> String {
    env.admin()
        .await
        .create_webhook(CreateWebhookRequest {
            tenant: tenant.into(),
            event: "order.created".into(),
            method: "POST".into(),
            url: url.into(),
            ..Default::default()
        })
        .await
        .expect("webhook created")
        .into_inner()
        .id
}

/// Starts a sender and waits until every delivery in `ids` is final; then
/// each delivery must have reached its receiver exactly once.
async fn deliver_and_check_once(env: &TestEnv, receivers: &[&Receiver], ids: &[String]) {
    env.start_sender(|_| {}).await.unwrap();
    for id in ids {
        let row = env.wait_final(id, FINAL).await;
        assert_eq!(row.state, "succeeded", "{id}");
    }
    let total: usize = receivers.iter().map(|r| r.requests().len()).sum();
    assert_eq!(total, ids.len(), "one request per delivery, nothing more");
    for id in ids {
        let got: usize = receivers.iter().map(|r| r.for_delivery(id).len()).sum();
        assert_eq!(got, 1, "delivery {id} arrived once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeat_answers_the_same_ids_and_publishes_nothing() {
    let env = ingest_only(|_| {}).await;
    let first = Receiver::ok().await;
    let second = Receiver::ok().await;
    webhook(&env, "", &first.url("/a")).await;
    let second_hook = webhook(&env, "", &second.url("/b")).await;
    let mut client = env.ingest().await;

    let ids = fire(&mut client, "", r#"{"order_id":42}"#, "order-42")
        .await
        .unwrap();
    assert_eq!(ids.len(), 2);
    assert_eq!(env.queued_messages().await, 2);
    for _ in 0..3 {
        let again = fire(&mut client, "", r#"{"order_id":42}"#, "order-42")
            .await
            .unwrap();
        assert_eq!(
            again, ids,
            "a repeat answers the first call's ids, in order"
        );
    }
    assert_eq!(
        env.queued_messages().await,
        2,
        "the repeats published nothing"
    );

    // A repeat after a webhook was disabled still answers the recorded ids:
    // the first call succeeded, the retry must not turn into an error.
    env.admin()
        .await
        .set_webhook_enabled(SetWebhookEnabledRequest {
            id: second_hook.clone(),
            enabled: false,
        })
        .await
        .unwrap();
    let again = fire(&mut client, "", r#"{"order_id":42}"#, "order-42")
        .await
        .unwrap();
    assert_eq!(again, ids);
    env.admin()
        .await
        .set_webhook_enabled(SetWebhookEnabledRequest {
            id: second_hook,
            enabled: true,
        })
        .await
        .unwrap();

    let row = env
        .db()
        .await
        .query_one(
            "SELECT state, confirmed_at IS NOT NULL, cardinality(delivery_ids) FROM fire_idempotency \
             WHERE tenant = '' AND key = 'order-42'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "confirmed");
    assert!(row.get::<_, bool>(1));
    assert_eq!(row.get::<_, i32>(2), 2);

    deliver_and_check_once(&env, &[&first, &second], &ids).await;
    assert_eq!(env.attempt_rows().await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeat_with_other_data_or_event_is_refused() {
    let env = ingest_only(|_| {}).await;
    let receiver = Receiver::ok().await;
    webhook(&env, "", &receiver.url("/a")).await;
    let mut client = env.ingest().await;
    fire(&mut client, "", r#"{"order_id":42}"#, "k-1")
        .await
        .unwrap();

    let err = fire(&mut client, "", r#"{"order_id":43}"#, "k-1")
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists, "{err:?}");
    assert!(
        err.message().contains("\"k-1\" was first used at")
            && err.message().contains("different event or data")
            && err.message().contains("new key"),
        "the message says what happened and what to do: {}",
        err.message()
    );

    // The same data for another event is another request too.
    env.webhook("order.paid", "POST", &receiver.url("/p")).await;
    let err = client
        .fire(FireRequest {
            event: "order.paid".into(),
            data: Some(fire_request::Data::Json(r#"{"order_id":42}"#.into())),
            idempotency_key: "k-1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists, "{err:?}");

    assert_eq!(
        env.queued_messages().await,
        1,
        "refused repeats publish nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_per_tenant() {
    let env = ingest_only(|_| {}).await;
    let receiver = Receiver::ok().await;
    webhook(&env, "shop-1", &receiver.url("/1")).await;
    webhook(&env, "shop-2", &receiver.url("/2")).await;
    let mut client = env.ingest().await;

    let one = fire(&mut client, "shop-1", r#"{"order_id":1}"#, "same-key")
        .await
        .unwrap();
    // Another tenant with the same key, even with other data: independent.
    let two = fire(&mut client, "shop-2", r#"{"order_id":2}"#, "same-key")
        .await
        .unwrap();
    assert_eq!((one.len(), two.len()), (1, 1));
    assert_ne!(one, two);
    assert_eq!(env.queued_messages().await, 2);
    assert_eq!(
        fire(&mut client, "shop-2", r#"{"order_id":2}"#, "same-key")
            .await
            .unwrap(),
        two
    );
    assert_eq!(env.queued_messages().await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_repeats_get_one_set_of_ids() {
    let env = ingest_only(|_| {}).await;
    let first = Receiver::ok().await;
    let second = Receiver::ok().await;
    webhook(&env, "", &first.url("/a")).await;
    webhook(&env, "", &second.url("/b")).await;

    let calls = (0..20).map(|_| {
        let client = env.ingest();
        async move {
            let mut client = client.await;
            fire(&mut client, "", r#"{"order_id":7}"#, "burst").await
        }
    });
    let results = futures_util::future::join_all(calls).await;
    let ids = results[0].as_ref().unwrap().clone();
    assert_eq!(ids.len(), 2);
    for result in results {
        assert_eq!(
            result.unwrap(),
            ids,
            "every concurrent call answers the same ids"
        );
    }
    assert_eq!(env.queued_messages().await, 2, "published once");
    deliver_and_check_once(&env, &[&first, &second], &ids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_replica_answers_the_same_ids() {
    let mut env = ingest_only(|_| {}).await;
    let receiver = Receiver::ok().await;
    webhook(&env, "", &receiver.url("/a")).await;
    let mut first = env.ingest().await;
    let ids = fire(&mut first, "", r#"{"order_id":9}"#, "replica")
        .await
        .unwrap();

    // A second ingest on the same database and broker: what a replica, or
    // the same service after a restart, sees.
    env.start_ingest(env.queue.clone(), |_| {}).await.unwrap();
    let mut second = env.ingest().await;
    assert_eq!(
        fire(&mut second, "", r#"{"order_id":9}"#, "replica")
            .await
            .unwrap(),
        ids
    );
    assert_eq!(env.queued_messages().await, 1);
    deliver_and_check_once(&env, &[&receiver], &ids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_key_fires_anew() {
    let env = ingest_only(|config| config.idempotency_window = Duration::from_secs(1)).await;
    let receiver = Receiver::ok().await;
    webhook(&env, "", &receiver.url("/a")).await;
    let mut client = env.ingest().await;

    let ids = fire(&mut client, "", r#"{"order_id":5}"#, "short")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let later = fire(&mut client, "", r#"{"order_id":5}"#, "short")
        .await
        .unwrap();
    assert_ne!(later, ids, "after the window the key is new again");
    assert_eq!(env.queued_messages().await, 2);
    // Within the new window the new ids hold.
    assert_eq!(
        fire(&mut client, "", r#"{"order_id":5}"#, "short")
            .await
            .unwrap(),
        later
    );
    assert_eq!(env.queued_messages().await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_of_a_crashed_call_publishes_its_recorded_ids() {
    let env = ingest_only(|_| {}).await;
    let receiver = Receiver::ok().await;
    let hook: Uuid = webhook(&env, "", &receiver.url("/a"))
        .await
        .parse()
        .unwrap();
    // What an ingest leaves behind when it dies after recording the key and
    // before every publish was confirmed: a pending row with the ids.
    let recorded = Uuid::now_v7();
    let json = r#"{"order_id":11}"#;
    let hash = fire_request_hash("order.created", &Payload::Json(json.into()));
    env.db()
        .await
        .execute(
            "INSERT INTO fire_idempotency (tenant, key, request_hash, webhook_ids, delivery_ids, \
                 state, created_at, expires_at) \
             VALUES ('', 'crashed', $1, $2, $3, 'pending', now() - interval '10 seconds', \
                 now() + interval '1 hour')",
            &[&hash.as_slice(), &vec![hook], &vec![recorded]],
        )
        .await
        .unwrap();

    let mut client = env.ingest().await;
    let ids = fire(&mut client, "", json, "crashed").await.unwrap();
    assert_eq!(
        ids,
        vec![recorded.to_string()],
        "the recorded id, not a new one"
    );
    assert_eq!(env.queued_messages().await, 1, "published now");
    assert_eq!(
        fire(&mut client, "", json, "crashed").await.unwrap(),
        ids,
        "and confirmed: the next repeat publishes nothing"
    );
    assert_eq!(env.queued_messages().await, 1);
    deliver_and_check_once(&env, &[&receiver], &ids).await;
    let request = &receiver.for_delivery(&ids[0])[0];
    assert_eq!(request.body.as_ref(), json.as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_fire_needs_postgres_unkeyed_does_not() {
    let mut env = TestEnv::new("0s").await.unwrap();
    let upstream = {
        let config: tokio_postgres::Config = env.database_url.parse().unwrap();
        let host = match &config.get_hosts()[0] {
            tokio_postgres::config::Host::Tcp(host) => host.clone(),
            other => panic!("tests need Postgres over TCP, not {other:?}"),
        };
        tokio::net::lookup_host((host.as_str(), config.get_ports()[0]))
            .await
            .unwrap()
            .next()
            .unwrap()
    };
    let proxy = TcpProxy::start(upstream).await;
    let proxied = env.database_url.replacen(
        &format!("{}:{}", upstream.ip(), upstream.port()),
        &proxy.addr.to_string(),
        1,
    );
    assert_ne!(proxied, env.database_url, "the URL names host and port");
    env.start_ingest(env.queue.clone(), |config| {
        config.database_url = proxied.into()
    })
    .await
    .unwrap();
    let receiver = Receiver::ok().await;
    webhook(&env, "", &receiver.url("/a")).await;
    let mut client = env.ingest().await;

    proxy.down();
    let err = fire(&mut client, "", r#"{"order_id":1}"#, "needs-db")
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(
        err.message().contains("idempotency_key needs Postgres"),
        "{}",
        err.message()
    );
    assert_eq!(env.queued_messages().await, 0, "nothing was queued");
    // Without a key Fire serves from the cached configuration.
    let unkeyed = fire(&mut client, "", r#"{"order_id":1}"#, "")
        .await
        .unwrap();
    assert_eq!(unkeyed.len(), 1);

    proxy.up();
    // The pool notices its cut connections and opens new ones.
    let deadline = Instant::now() + Duration::from_secs(20);
    let ids = loop {
        match fire(&mut client, "", r#"{"order_id":1}"#, "needs-db").await {
            Ok(ids) => break ids,
            Err(err) => {
                assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
                assert!(
                    Instant::now() < deadline,
                    "keyed Fire did not recover: {err:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(ids.len(), 1);
    assert_eq!(env.queued_messages().await, 2);
}
