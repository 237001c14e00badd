//! `herald receive` in-process on an ephemeral port, driven by hyper's client:
//! it reports every request and fails the first N with 500.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use herald_cli::cmd::receive::{self, ReceiverOptions};
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

#[tokio::test]
async fn receiver_reports_requests_and_fails_the_first_ones() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let reports = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = Arc::clone(&reports);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(receive::serve(
        listener,
        ReceiverOptions {
            status: StatusCode::ACCEPTED,
            fail_first: 1,
        },
        Arc::new(move |text| sink.lock().unwrap().push(text)),
        async {
            let _ = stopped.await;
        },
    ));

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut answers = Vec::new();
    for i in 0..2 {
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("http://{addr}/hooks/orders?try={i}"))
            .header("content-type", "application/json")
            .header("webhook-id", "d-1")
            .body(Full::new(Bytes::from(r#"{"order_id":42}"#)))
            .unwrap();
        let response = client.request(request).await.unwrap();
        let status = response.status();
        // Read the body to the end so the connection goes back to the pool.
        let body = response.into_body().collect().await.unwrap().to_bytes();
        answers.push((status, String::from_utf8(body.to_vec()).unwrap()));
    }

    assert_eq!(answers[0].0, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(answers[0].1.contains("failing on purpose"), "{answers:?}");
    assert_eq!(answers[1], (StatusCode::ACCEPTED, "ok".to_owned()));

    let reports = reports.lock().unwrap().clone();
    assert_eq!(reports.len(), 2, "{reports:?}");
    assert!(
        reports[0].contains("POST /hooks/orders?try=0 -> answered 500"),
        "{}",
        reports[0]
    );
    assert!(
        reports[1].contains("/hooks/orders?try=1 -> answered 202"),
        "{}",
        reports[1]
    );
    assert!(reports[1].contains("webhook-id: d-1"), "{}", reports[1]);
    assert!(reports[1].contains(r#"{"order_id":42}"#), "{}", reports[1]);

    stop.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), server)
        .await
        .expect("the receiver stops when told")
        .unwrap();
}
