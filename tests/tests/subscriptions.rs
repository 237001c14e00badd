//! Subscriptions (docs/api.md, "Subscriptions and filters"): a webhook
//! listens to a list of event names and patterns (`order.*`, `*`) and may
//! filter on the fired data with a CEL expression. Fire fans out to every
//! enabled webhook whose subscription matches and whose filter is true,
//! each once; a filter that errs means no delivery for its webhook and never
//! a failed Fire; ListEvents names the webhooks each concrete event reaches;
//! wrong subscriptions and filters are refused at save time.

use std::collections::BTreeMap;
use std::time::Duration;

use herald_proto::v1::{
    CreateWebhookRequest, EventList, FireRequest, ListEventsRequest, UpdateWebhookRequest,
    fire_request,
};
use herald_tests::{Receiver, TestEnv, eventually};
use tonic::Code;

const TENANT: &str = "shop-1";

fn webhook(path: &str, receiver: &Receiver, events: &[&str], filter: &str) -> CreateWebhookRequest {
    CreateWebhookRequest {
        tenant: TENANT.into(),
        events: events.iter().map(|e| (*e).to_owned()).collect(),
        filter: filter.into(),
        method: "POST".into(),
        // The JSON envelope names the event, so the receiver can tell.
        body_mode: "json".into(),
        url: receiver.url(path),
        ..Default::default()
    }
}

fn fire(event: &str, json: &str) -> FireRequest {
    FireRequest {
        tenant: TENANT.into(),
        event: event.into(),
        data: Some(fire_request::Data::Json(json.into())),
        ..Default::default()
    }
}

#[tokio::test]
async fn fire_reaches_every_matching_webhook_once_and_filters_decide_on_the_data() {
    let env = TestEnv::start("0s").await.unwrap();
    let receiver = Receiver::ok().await;
    let mut admin = env.admin().await;
    let mut created = BTreeMap::new();
    for (name, events, filter) in [
        ("orders", &["order.created", "order.paid"][..], ""),
        (
            "big-cz",
            &["order.*"][..],
            r#"data.total >= 100 && data.country == "CZ""#,
        ),
        ("all", &["*"][..], ""),
        ("invoices", &["invoice.created"][..], ""),
    ] {
        let id = admin
            .create_webhook(webhook(&format!("/{name}"), &receiver, events, filter))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:?}"))
            .into_inner()
            .id;
        created.insert(name, id);
    }
    // A disabled pattern webhook is reached by nothing.
    let mut disabled = webhook("/disabled", &receiver, &["order.*"], "");
    disabled.enabled = Some(false);
    admin.create_webhook(disabled).await.unwrap();

    let mut ingest = env.ingest().await;
    eventually(
        Duration::from_secs(10),
        "ingest knows the new webhooks",
        || {
            let mut ingest = ingest.clone();
            async move {
                ingest
                    .list_events(ListEventsRequest {
                        tenant: TENANT.into(),
                    })
                    .await
                    .is_ok_and(|r| r.into_inner().events.len() == 3)
            }
        },
    )
    .await;

    // Each Fire reaches exactly the webhooks its event and data select.
    let table: &[(&str, &str, &[&str])] = &[
        (
            "order.created",
            r#"{"total":150,"country":"CZ"}"#,
            &["/orders", "/big-cz", "/all"],
        ),
        (
            "order.created",
            r#"{"total":50,"country":"CZ"}"#,
            &["/orders", "/all"],
        ),
        (
            "order.shipped",
            r#"{"total":500.5,"country":"CZ"}"#,
            &["/big-cz", "/all"],
        ),
        // The filter errs on a missing field: no delivery for it, Fire is OK.
        ("order.paid", r#"{"note":"no total"}"#, &["/orders", "/all"]),
        (
            "invoice.created",
            r#"{"total":150,"country":"CZ"}"#,
            &["/invoices", "/all"],
        ),
        ("newsletter.sent", "{}", &["/all"]),
    ];
    let mut expected = 0;
    for (event, data, paths) in table {
        let ids = ingest
            .fire(fire(event, data))
            .await
            .unwrap_or_else(|e| panic!("{event} {data}: {e:?}"))
            .into_inner()
            .delivery_ids;
        assert_eq!(ids.len(), paths.len(), "{event} {data}: {ids:?}");
        expected += ids.len();
        let mut reached = Vec::new();
        for id in &ids {
            assert_eq!(
                env.wait_final(id, Duration::from_secs(20)).await.state,
                "succeeded"
            );
            let got = receiver.for_delivery(id);
            assert_eq!(
                got.len(),
                1,
                "{event}: delivery {id} arrived {} times",
                got.len()
            );
            let envelope: serde_json::Value = serde_json::from_slice(&got[0].body).unwrap();
            assert_eq!(envelope["event"], *event, "{envelope}");
            reached.push(got[0].uri.clone());
        }
        reached.sort();
        let mut want: Vec<String> = paths.iter().map(|p| (*p).to_owned()).collect();
        want.sort();
        assert_eq!(reached, want, "{event} {data}");
    }
    assert_eq!(
        receiver.requests().len(),
        expected,
        "no other request arrived"
    );

    // A filter that lets nothing through still answers OK, with no ids.
    admin
        .create_webhook(CreateWebhookRequest {
            tenant: "shop-2".into(),
            ..webhook("/never", &receiver, &["order.created"], "data.total > 1000")
        })
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "shop-2's webhook is known", || {
        let mut ingest = ingest.clone();
        async move {
            ingest
                .list_events(ListEventsRequest {
                    tenant: "shop-2".into(),
                })
                .await
                .is_ok_and(|r| !r.into_inner().events.is_empty())
        }
    })
    .await;
    let ids = ingest
        .fire(FireRequest {
            tenant: "shop-2".into(),
            ..fire("order.created", r#"{"total":5}"#)
        })
        .await
        .unwrap()
        .into_inner()
        .delivery_ids;
    assert!(ids.is_empty(), "{ids:?}");
    // An event no subscription matches is still refused as unknown.
    let status = ingest
        .fire(FireRequest {
            tenant: "shop-2".into(),
            ..fire("invoice.created", "{}")
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");

    // ListEvents lists the concrete events with every webhook each reaches.
    let events = ingest
        .list_events(ListEventsRequest {
            tenant: TENANT.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let listed: BTreeMap<String, Vec<String>> = events
        .into_iter()
        .map(|e| {
            let mut ids: Vec<String> = e
                .webhooks
                .into_iter()
                .filter(|w| w.enabled)
                .map(|w| w.id)
                .collect();
            ids.sort();
            (e.event, ids)
        })
        .collect();
    let ids = |names: &[&str]| {
        let mut ids: Vec<String> = names.iter().map(|n| created[n].clone()).collect();
        ids.sort();
        ids
    };
    assert_eq!(listed["order.created"], ids(&["orders", "big-cz", "all"]));
    assert_eq!(listed["invoice.created"], ids(&["invoices", "all"]));
    assert_eq!(listed.len(), 3, "{listed:?}");

    // A changed subscription takes effect: "invoices" now also gets orders.
    let updated = admin
        .update_webhook(UpdateWebhookRequest {
            id: created["invoices"].clone(),
            events: Some(EventList {
                values: vec!["invoice.*".into(), "order.refunded".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.events, ["invoice.*", "order.refunded"]);
    assert_eq!(updated.event, "invoice.*");
    eventually(Duration::from_secs(10), "the change reaches Fire", || {
        let mut ingest = ingest.clone();
        async move {
            ingest
                .fire(fire("order.refunded", r#"{"total":1}"#))
                .await
                .is_ok_and(|r| r.into_inner().delivery_ids.len() == 2)
        }
    })
    .await;
}

#[tokio::test]
async fn wrong_subscriptions_and_filters_are_refused_at_save_time() {
    let env = TestEnv::start("0s").await.unwrap();
    let receiver = Receiver::ok().await;
    let mut admin = env.admin().await;
    let cases: &[(CreateWebhookRequest, &str)] = &[
        (
            webhook("/x", &receiver, &["order*"], ""),
            "events: \"order*\": `*` may only stand alone",
        ),
        (
            webhook("/x", &receiver, &["a.b", "a.b"], ""),
            "listed twice",
        ),
        (
            webhook("/x", &receiver, &["order.created"], "data.total >= "),
            "filter: is not a valid CEL expression",
        ),
        (
            webhook("/x", &receiver, &["order.created"], "order.total > 1"),
            "\"order\", which is not a variable",
        ),
        (
            CreateWebhookRequest {
                event: "order.created".into(),
                ..webhook("/x", &receiver, &["order.paid"], "")
            },
            "is given together with event",
        ),
    ];
    for (request, hint) in cases {
        let status = admin.create_webhook(request.clone()).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{hint}: {status:?}");
        assert!(
            status.message().contains(hint),
            "{hint}: {}",
            status.message()
        );
    }
    let listed = admin
        .list_webhooks(herald_proto::v1::ListWebhooksRequest::default())
        .await
        .unwrap()
        .into_inner()
        .webhooks;
    assert!(listed.is_empty(), "a refused webhook was saved: {listed:?}");

    // A pattern in the single `event` field is a pattern too, and Fire
    // refuses `*` in a fired name.
    admin
        .create_webhook(CreateWebhookRequest {
            event: "order.*".into(),
            ..webhook("/x", &receiver, &[], "")
        })
        .await
        .unwrap();
    let status = env
        .ingest()
        .await
        .fire(fire("order.*", "{}"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("wildcard"),
        "{}",
        status.message()
    );
}
