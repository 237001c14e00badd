//! The SSRF guard end to end: a real hyper-util client over
//! `guarded_connector` against a local server on 127.0.0.1.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use herald_core::ssrf::{AddressKind, AddressPolicy};
use herald_sender::resolver::{GuardedResolver, guarded_connector, is_refusal};
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// Serves "hello" on 127.0.0.1 until the test ends.
async fn server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = service_fn(|_request| async {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                        b"hello",
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn client(
    policy: AddressPolicy,
) -> Client<hyper_util::client::legacy::connect::HttpConnector<GuardedResolver>, Empty<Bytes>> {
    Client::builder(TokioExecutor::new()).build(guarded_connector(Arc::new(policy)))
}

#[tokio::test]
async fn hostname_resolving_to_loopback_is_refused() {
    let addr = server().await;
    let client = client(AddressPolicy::default());
    let uri: http::Uri = format!("http://localhost:{}/", addr.port())
        .parse()
        .unwrap();
    let error = client
        .get(uri)
        .await
        .expect_err("a hostname that resolves to 127.0.0.1 while not allowlisted");
    let refusal = is_refusal(&error).expect("the error chain carries the refusal");
    assert!(refusal.starts_with("refusing to connect to "), "{refusal}");
    assert!(refusal.contains("(loopback address)"), "{refusal}");
    assert!(refusal.contains("HERALD_SSRF_ALLOW"), "{refusal}");
}

#[tokio::test]
async fn allowlisted_loopback_is_reached() {
    let addr = server().await;
    let client = client(AddressPolicy::parse_allowlist("127.0.0.0/8").unwrap());
    let uri: http::Uri = format!("http://localhost:{}/", addr.port())
        .parse()
        .unwrap();
    let response = client
        .get(uri)
        .await
        .expect("allowlisted target is reached");
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"hello");
}

#[tokio::test]
async fn other_connection_errors_are_not_refusals() {
    // Bind and drop: nothing listens on this port any more.
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().port()
    };
    let client = client(AddressPolicy::parse_allowlist("127.0.0.0/8").unwrap());
    let uri: http::Uri = format!("http://localhost:{port}/").parse().unwrap();
    let error = client.get(uri).await.expect_err("nothing listens");
    assert_eq!(is_refusal(&error), None, "{error:?}");
}

#[tokio::test]
async fn resolver_returns_only_checked_addresses() {
    let policy = Arc::new(AddressPolicy::parse_allowlist("127.0.0.0/8").unwrap());
    let addrs = GuardedResolver::new(policy)
        .resolve("localhost")
        .await
        .unwrap();
    assert!(!addrs.is_empty());
    // `localhost` may also resolve to ::1, which is not allowlisted here.
    assert!(
        addrs.iter().all(|a| a.ip().to_string().starts_with("127.")),
        "{addrs:?}"
    );
}

#[test]
fn ip_literal_hosts_are_checked_before_sending() {
    let policy = AddressPolicy::default();
    assert_eq!(
        policy.check_url_host("127.0.0.1").unwrap_err().reason,
        AddressKind::Loopback
    );
    assert_eq!(
        policy.check_url_host("[::1]").unwrap_err().reason,
        AddressKind::Loopback
    );
    assert_eq!(policy.check_url_host("example.com"), Ok(()));
    let allow = AddressPolicy::parse_allowlist("127.0.0.0/8").unwrap();
    assert_eq!(allow.check_url_host("127.0.0.1"), Ok(()));
}
