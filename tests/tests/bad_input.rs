//! Bad input over the public gRPC API: one table of wrong calls to Fire,
//! ListEvents and the Admin API, each of which must be answered with the
//! right gRPC status and a message that tells the caller what to fix, and
//! none of which may publish a delivery or write a row. Every case of a
//! method the HTTP/JSON door routes is sent through the door too, as
//! canonical JSON, and must get the same code and message as the usual
//! HTTP status.
//!
//! The ingest under test runs with the production default of HTTPS-only
//! targets and a small payload limit (16 KiB), and without a sender: every
//! message a wrong call published would still sit in the queues at the end.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::{Buf, BufMut};
use herald_ingest::{AuthMode, BootstrapKey, max_request_bytes};
use herald_proto::v1::CreateApiKeyRequest;
use herald_proto::v1::{
    CreateWebhookRequest, DeleteWebhookRequest, EventList, FireRequest, GetDeliveryRequest,
    GetSigningSecretRequest, GetWebhookRequest, GetWebhookSummaryRequest, Headers,
    ListDeliveriesRequest, ListEventsRequest, ReplayFailedRequest, ResendDeliveryRequest,
    RotateSigningSecretRequest, SendTestEventRequest, SetWebhookEnabledRequest,
    UpdateWebhookRequest, admin_client::AdminClient, fire_request, ingest_client::IngestClient,
    send_test_event_request,
};
use herald_tests::auth::{Token, channel};
use herald_tests::{TestEnv, eventually};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

/// The payload limit of the ingest under test.
const MAX_PAYLOAD: usize = 16 * 1024;
/// A UUID no row has.
const UNKNOWN_ID: &str = "0192f0c4-0000-7000-8000-00000000dead";

/// One call of the public API.
enum Rpc {
    Fire(FireRequest),
    ListEvents(ListEventsRequest),
    Create(CreateWebhookRequest),
    Update(UpdateWebhookRequest),
    Get(GetWebhookRequest),
    Delete(DeleteWebhookRequest),
    SetEnabled(SetWebhookEnabledRequest),
    GetSecret(GetSigningSecretRequest),
    Rotate(RotateSigningSecretRequest),
    GetDelivery(GetDeliveryRequest),
    ListDeliveries(ListDeliveriesRequest),
    Summary(GetWebhookSummaryRequest),
    Resend(ResendDeliveryRequest),
    Replay(ReplayFailedRequest),
    TestEvent(SendTestEventRequest),
    /// A hand-encoded request body for a method path: what a generated
    /// client cannot send (invalid UTF-8 in a `string`, a negative varint in
    /// a `uint32`, a truncated message).
    Raw(&'static str, Vec<u8>),
}

struct Case {
    name: &'static str,
    rpc: Rpc,
    code: Code,
    /// Part of the message that tells the caller what to fix.
    hint: &'static str,
}

fn case(name: &'static str, rpc: Rpc, code: Code, hint: &'static str) -> Case {
    Case {
        name,
        rpc,
        code,
        hint,
    }
}

/// The ingest's clients, and the channel for raw calls.
struct Api {
    ingest: IngestClient<Channel>,
    admin: AdminClient<Channel>,
    channel: Channel,
}

impl Api {
    async fn connect(addr: std::net::SocketAddr) -> Self {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect()
            .await
            .expect("ingest reachable");
        Self {
            ingest: IngestClient::new(channel.clone())
                .max_encoding_message_size(usize::MAX)
                .max_decoding_message_size(usize::MAX),
            admin: AdminClient::new(channel.clone()).max_encoding_message_size(usize::MAX),
            channel,
        }
    }

    /// Makes the call; the answer's content does not matter here, only
    /// whether and how it failed.
    async fn call(&mut self, rpc: Rpc) -> Result<(), Status> {
        let (ingest, admin) = (&mut self.ingest, &mut self.admin);
        match rpc {
            Rpc::Fire(r) => ingest.fire(r).await.map(drop),
            Rpc::ListEvents(r) => ingest.list_events(r).await.map(drop),
            Rpc::Create(r) => admin.create_webhook(r).await.map(drop),
            Rpc::Update(r) => admin.update_webhook(r).await.map(drop),
            Rpc::Get(r) => admin.get_webhook(r).await.map(drop),
            Rpc::Delete(r) => admin.delete_webhook(r).await.map(drop),
            Rpc::SetEnabled(r) => admin.set_webhook_enabled(r).await.map(drop),
            Rpc::GetSecret(r) => admin.get_signing_secret(r).await.map(drop),
            Rpc::Rotate(r) => admin.rotate_signing_secret(r).await.map(drop),
            Rpc::GetDelivery(r) => admin.get_delivery(r).await.map(drop),
            Rpc::ListDeliveries(r) => admin.list_deliveries(r).await.map(drop),
            Rpc::Summary(r) => admin.get_webhook_summary(r).await.map(drop),
            Rpc::Resend(r) => admin.resend_delivery(r).await.map(drop),
            Rpc::Replay(r) => admin.replay_failed(r).await.map(drop),
            Rpc::TestEvent(r) => admin.send_test_event(r).await.map(drop),
            Rpc::Raw(path, body) => {
                let mut grpc = tonic::client::Grpc::new(self.channel.clone());
                grpc.ready()
                    .await
                    .map_err(|e| Status::unavailable(format!("channel not ready: {e}")))?;
                grpc.unary(
                    Request::new(body),
                    http::uri::PathAndQuery::from_static(path),
                    RawCodec,
                )
                .await
                .map(drop)
            }
        }
    }
}

/// Sends and receives message bodies as they are, so that a test can put
/// bytes on the wire that prost would never encode.
#[derive(Clone, Copy)]
struct RawCodec;

struct RawEncoder;

struct RawDecoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut body = vec![0; src.remaining()];
        src.copy_to_slice(&mut body);
        Ok(Some(body))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

/// Protobuf wire format, by hand: just enough for the raw cases.
fn varint(mut value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while value >= 0x80 {
        // Truncation intended: the low seven bits with the continuation bit.
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
    out
}

/// A length-delimited field (string, bytes, message).
fn bytes_field(number: u64, value: &[u8]) -> Vec<u8> {
    let mut out = varint(number << 3 | 2);
    out.extend(varint(value.len() as u64));
    out.extend_from_slice(value);
    out
}

/// A varint field (uint32, int64, bool...).
fn varint_field(number: u64, value: u64) -> Vec<u8> {
    let mut out = varint(number << 3);
    out.extend(varint(value));
    out
}

fn fire(event: &str, data: fire_request::Data) -> Rpc {
    Rpc::Fire(FireRequest {
        event: event.into(),
        data: Some(data),
        ..Default::default()
    })
}

fn json(doc: &str) -> fire_request::Data {
    fire_request::Data::Json(doc.into())
}

/// A webhook that would be valid, changed by `change`.
fn create(change: impl FnOnce(&mut CreateWebhookRequest)) -> Rpc {
    let mut request = CreateWebhookRequest {
        event: "order.created".into(),
        url: "https://hooks.example/orders".into(),
        ..Default::default()
    };
    change(&mut request);
    Rpc::Create(request)
}

/// An update of webhook `id`, changed by `change`.
fn update(id: &str, change: impl FnOnce(&mut UpdateWebhookRequest)) -> Rpc {
    let mut request = UpdateWebhookRequest {
        id: id.into(),
        ..Default::default()
    };
    change(&mut request);
    Rpc::Update(request)
}

fn headers(n: usize) -> std::collections::BTreeMap<String, String> {
    (0..n)
        .map(|i| (format!("X-H{i}"), "v".to_string()))
        .collect()
}

fn replay(webhook_id: &str, from: Option<i64>, to: Option<i64>, request_id: &str) -> Rpc {
    Rpc::Replay(ReplayFailedRequest {
        webhook_id: webhook_id.into(),
        from_unix_ms: from,
        to_unix_ms: to,
        request_id: request_id.into(),
        include_cancelled: false,
    })
}

fn test_event(webhook_id: &str, data: send_test_event_request::Data) -> Rpc {
    Rpc::TestEvent(SendTestEventRequest {
        webhook_id: webhook_id.into(),
        data: Some(data),
    })
}

/// The webhooks the cases refer to, created before the snapshot.
struct Fixtures {
    /// Enabled, signed, event `order.created`; GET (created without a
    /// method or a body).
    active: String,
    /// Disabled, the only webhook of event `order.paused`.
    paused: String,
    /// Enabled, unsigned.
    unsigned: String,
}

fn cases(f: &Fixtures) -> Vec<Case> {
    use Code::{FailedPrecondition, Internal, InvalidArgument, NotFound, OutOfRange};
    let long_name = "x".repeat(201);
    let active = f.active.as_str();
    let paused = f.paused.as_str();
    let unsigned = f.unsigned.as_str();
    vec![
        // --- Ingest.Fire -------------------------------------------------
        case(
            "fire: unknown event",
            fire("order.nosuch", json("{}")),
            NotFound,
            "Create a webhook for it first",
        ),
        case(
            "fire: event configured for another tenant only",
            Rpc::Fire(FireRequest {
                tenant: "shop-2".into(),
                event: "order.created".into(),
                ..Default::default()
            }),
            NotFound,
            "Create a webhook for it first",
        ),
        case(
            "fire: every webhook of the event is disabled",
            fire("order.paused", json("{}")),
            FailedPrecondition,
            "enable one to fire it",
        ),
        case(
            "fire: empty event",
            fire("", json("{}")),
            InvalidArgument,
            "event: is required",
        ),
        case(
            "fire: one of Herald's own events",
            fire("herald.delivery.failed", json("{}")),
            InvalidArgument,
            "starts with \"herald.\", which is kept for Herald's own events",
        ),
        case(
            "fire: event over 200 bytes",
            fire(&long_name, json("{}")),
            InvalidArgument,
            "at most 200 are allowed",
        ),
        case(
            "fire: event with whitespace",
            fire("order created", json("{}")),
            InvalidArgument,
            "event: must not contain whitespace",
        ),
        case(
            "fire: event with the subscription wildcard",
            fire("order.*", json("{}")),
            InvalidArgument,
            "contains `*`, the wildcard of webhook subscriptions",
        ),
        case(
            "fire: tenant over 200 bytes",
            Rpc::Fire(FireRequest {
                tenant: long_name.clone(),
                event: "order.created".into(),
                ..Default::default()
            }),
            InvalidArgument,
            "tenant: is 201 bytes long; at most 200",
        ),
        case(
            "fire: tenant with a control character",
            Rpc::Fire(FireRequest {
                tenant: "shop\u{7}".into(),
                event: "order.created".into(),
                ..Default::default()
            }),
            InvalidArgument,
            "tenant: must not contain whitespace or control characters",
        ),
        // Herald's own check answers every request up to the decoding cap
        // (4 × MAX_PAYLOAD + 64 KiB = 128 KiB here), with the data's size.
        case(
            "fire: text just over the payload limit",
            fire(
                "order.created",
                fire_request::Data::Text("x".repeat(MAX_PAYLOAD + 1)),
            ),
            InvalidArgument,
            "data is 16385 bytes; the limit is 16384 bytes: send less data or raise \
             HERALD_MAX_PAYLOAD_BYTES",
        ),
        case(
            "fire: JSON over the payload limit",
            fire(
                "order.created",
                json(&format!("\"{}\"", "x".repeat(MAX_PAYLOAD))),
            ),
            InvalidArgument,
            "data is 16386 bytes; the limit is 16384 bytes: send less data or raise \
             HERALD_MAX_PAYLOAD_BYTES",
        ),
        // Over the decoding limit of before (payload limit + 64 KiB), which
        // answered in tonic's words.
        case(
            "fire: text over the former gRPC message limit",
            fire(
                "order.created",
                fire_request::Data::Text("x".repeat(MAX_PAYLOAD + 100 * 1024)),
            ),
            InvalidArgument,
            "data is 118784 bytes; the limit is 16384 bytes: send less data or raise \
             HERALD_MAX_PAYLOAD_BYTES",
        ),
        // Over the cap tonic refuses the message before Herald decodes it
        // (OUT_OF_RANGE); ingest rewords the refusal.
        case(
            "fire: message over the decoding cap",
            fire(
                "order.created",
                fire_request::Data::Text("x".repeat(max_request_bytes(MAX_PAYLOAD) + 1)),
            ),
            OutOfRange,
            "more than the 131072 bytes ingest reads of one call (four times \
             HERALD_MAX_PAYLOAD_BYTES plus 64 KiB); data may be at most 16384 bytes: send less \
             data or raise HERALD_MAX_PAYLOAD_BYTES",
        ),
        case(
            "fire: invalid JSON",
            fire("order.created", json(r#"{"id": 7,"#)),
            InvalidArgument,
            "use data.text for plain text",
        ),
        case(
            "fire: empty JSON document",
            fire("order.created", json("")),
            InvalidArgument,
            "data.json is not valid JSON",
        ),
        case(
            "fire: JSON with trailing garbage",
            fire("order.created", json("{} {}")),
            InvalidArgument,
            "data.json is not valid JSON",
        ),
        case(
            "fire: idempotency key over 200 bytes",
            Rpc::Fire(FireRequest {
                event: "order.created".into(),
                idempotency_key: long_name.clone(),
                ..Default::default()
            }),
            InvalidArgument,
            "idempotency_key:",
        ),
        case(
            "fire: ordering key over 200 bytes",
            Rpc::Fire(FireRequest {
                event: "order.created".into(),
                ordering_key: long_name.clone(),
                ..Default::default()
            }),
            InvalidArgument,
            "ordering_key: is 201 bytes long; at most 200 are allowed",
        ),
        case(
            "fire: ordering key with a control character",
            Rpc::Fire(FireRequest {
                event: "order.created".into(),
                ordering_key: "order\n42".into(),
                ..Default::default()
            }),
            InvalidArgument,
            "ordering_key: contains a control character",
        ),
        // With an idempotency key Fire records the key in Postgres, but
        // only for a call that passed validation.
        case(
            "fire: idempotency key with invalid JSON",
            Rpc::Fire(FireRequest {
                event: "order.created".into(),
                data: Some(json("{")),
                idempotency_key: "bad-input-fire-1".into(),
                ..Default::default()
            }),
            InvalidArgument,
            "data.json is not valid JSON",
        ),
        case(
            "fire: idempotency key for an unknown event",
            Rpc::Fire(FireRequest {
                event: "order.nosuch".into(),
                data: Some(json("{}")),
                idempotency_key: "bad-input-fire-2".into(),
                ..Default::default()
            }),
            NotFound,
            "Create a webhook for it first",
        ),
        // Protobuf `string` fields must be UTF-8; prost refuses the message
        // while tonic decodes it, and tonic answers INTERNAL (its mapping of
        // every decode error, per the gRPC status code guide) with prost's
        // message naming the field. Herald's code never runs.
        case(
            "fire: invalid UTF-8 in data.text",
            Rpc::Raw(
                "/herald.v1.Ingest/Fire",
                [
                    bytes_field(2, b"order.created"),
                    bytes_field(3, b"caf\xe9 \xff\xfe"),
                ]
                .concat(),
            ),
            Internal,
            "not UTF-8",
        ),
        case(
            "fire: invalid UTF-8 in the event name",
            Rpc::Raw(
                "/herald.v1.Ingest/Fire",
                [bytes_field(2, b"order.\xc3\x28"), bytes_field(4, b"{}")].concat(),
            ),
            Internal,
            "not UTF-8",
        ),
        case(
            "fire: truncated protobuf message",
            Rpc::Raw(
                "/herald.v1.Ingest/Fire",
                [varint(2 << 3 | 2), varint(40), b"order".to_vec()].concat(),
            ),
            Internal,
            "failed to decode Protobuf message",
        ),
        // --- Ingest.ListEvents -------------------------------------------
        case(
            "list events: tenant over 200 bytes",
            Rpc::ListEvents(ListEventsRequest {
                tenant: long_name.clone(),
            }),
            InvalidArgument,
            "tenant: is 201 bytes long",
        ),
        case(
            "list events: tenant with a line break",
            Rpc::ListEvents(ListEventsRequest {
                tenant: "shop\n1".into(),
            }),
            InvalidArgument,
            "tenant: must not contain whitespace",
        ),
        // "Unknown tenant for a scoped key" needs an ingest that requires
        // API keys: see `a_key_limited_to_one_tenant_is_refused_elsewhere`.

        // --- Admin.CreateWebhook -----------------------------------------
        case(
            "create: empty event",
            create(|r| r.event.clear()),
            InvalidArgument,
            "event: is required",
        ),
        case(
            "create: event over 200 bytes",
            create(|r| r.event = "e".repeat(201)),
            InvalidArgument,
            "event: is 201 bytes long; at most 200",
        ),
        case(
            "create: event pattern with a star in the middle",
            create(|r| r.event = "order.*.paid".into()),
            InvalidArgument,
            "event: \"order.*.paid\": `*` may only stand alone",
        ),
        case(
            "create: both event and events",
            create(|r| r.events = vec!["order.paid".into()]),
            InvalidArgument,
            "events: is given together with event",
        ),
        case(
            "create: an events entry twice",
            create(|r| {
                r.event.clear();
                r.events = vec!["order.*".into(), "order.*".into()];
            }),
            InvalidArgument,
            "events: \"order.*\" is listed twice",
        ),
        case(
            "create: filter that does not parse",
            create(|r| r.filter = "data.total >=".into()),
            InvalidArgument,
            "filter: is not a valid CEL expression",
        ),
        case(
            "create: filter with an unknown variable",
            create(|r| r.filter = "payload.total > 1".into()),
            InvalidArgument,
            "filter: uses \"payload\", which is not a variable",
        ),
        case(
            "create: unknown choice after a final failure",
            create(|r| {
                r.ordered = true;
                r.ordered_on_failure = "skip".into();
            }),
            InvalidArgument,
            "ordered_on_failure: \"skip\" is not a choice; use stop (the default) or continue",
        ),
        case(
            "create: rate limit above the maximum",
            create(|r| {
                r.rate_limit = Some(herald_proto::v1::RateLimit {
                    per_second: 100_001,
                    burst: 0,
                });
            }),
            InvalidArgument,
            "rate_limit.per_second: 100001 is above the maximum of 100000",
        ),
        case(
            "create: auto-disable after more than a year",
            create(|r| r.auto_disable_after_s = 31_536_001),
            InvalidArgument,
            "auto_disable_after_s: 31536001 is more than a year",
        ),
        case(
            "create: breaker cool-down over an hour",
            create(|r| {
                r.breaker = Some(herald_proto::v1::CircuitBreaker {
                    failures: 0,
                    cooldown_ms: 3_600_001,
                });
            }),
            InvalidArgument,
            "breaker.cooldown_ms: 3600001 is above the maximum",
        ),
        case(
            "create: burst without a rate",
            create(|r| {
                r.rate_limit = Some(herald_proto::v1::RateLimit {
                    per_second: 0,
                    burst: 5,
                });
            }),
            InvalidArgument,
            "rate_limit.burst: is given without rate_limit.per_second",
        ),
        case(
            "create: tenant with a space",
            create(|r| r.tenant = "shop 1".into()),
            InvalidArgument,
            "tenant: must not contain whitespace",
        ),
        case(
            "create: unsupported method",
            create(|r| r.method = "TRACE".into()),
            InvalidArgument,
            "use GET, POST, PUT, PATCH or DELETE",
        ),
        case(
            "create: empty URL",
            create(|r| r.url.clear()),
            InvalidArgument,
            "url: is required, e.g.",
        ),
        case(
            "create: URL without a scheme",
            create(|r| r.url = "hooks.example/orders".into()),
            InvalidArgument,
            "is not a valid URL",
        ),
        case(
            "create: ftp:// URL",
            create(|r| r.url = "ftp://hooks.example/orders".into()),
            InvalidArgument,
            "use https://",
        ),
        case(
            "create: http:// URL on an HTTPS-only deployment",
            create(|r| r.url = "http://hooks.example/orders".into()),
            InvalidArgument,
            "use https:// (a deployment can allow http:// for development with HERALD_ALLOW_HTTP=true)",
        ),
        case(
            "create: private address",
            create(|r| r.url = "https://10.0.0.7/hook".into()),
            InvalidArgument,
            "(private address); allow it with",
        ),
        case(
            "create: cloud metadata address",
            create(|r| r.url = "https://169.254.169.254/latest/meta-data".into()),
            InvalidArgument,
            "link-local address",
        ),
        case(
            "create: IPv6 unique-local address",
            create(|r| r.url = "https://[fd00::1]/hook".into()),
            InvalidArgument,
            "unique-local address",
        ),
        case(
            "create: credentials in the URL",
            create(|r| r.url = "https://user:pw@hooks.example/orders".into()),
            InvalidArgument,
            "put them in a custom header",
        ),
        case(
            "create: URL with a #fragment",
            create(|r| r.url = "https://hooks.example/orders#top".into()),
            InvalidArgument,
            "must not have a #fragment",
        ),
        case(
            "create: URL over 4096 bytes",
            create(|r| r.url = format!("https://hooks.example/{}", "a".repeat(4096))),
            InvalidArgument,
            "at most 4096 are allowed",
        ),
        case(
            "create: unparsable URL template",
            create(|r| r.url = "https://hooks.example/{{ data.id".into()),
            InvalidArgument,
            "url: template does not parse",
        ),
        case(
            "create: URL whose host comes from the data",
            create(|r| r.url = "https://{{ data.host }}/orders".into()),
            InvalidArgument,
            "url: the host renders empty (\"https:///orders\") when the URL is checked with no \
             event data; write the host out in the URL",
        ),
        case(
            "create: unparsable body template",
            create(|r| r.body_template = "{\"id\": {{ data.id }\n".into()),
            InvalidArgument,
            "body_template: template does not parse: template syntax error at line 1, column 8: \
             \"{{\" is not closed; end the variable with \"}}\"",
        ),
        case(
            "create: unknown filter in the body template",
            create(|r| r.body_template = "{{ data.id | nosuchfilter }}".into()),
            InvalidArgument,
            "nosuchfilter",
        ),
        case(
            "create: unparsable header template",
            create(|r| {
                r.headers = [("X-Order".to_string(), "{% if %}".to_string())].into();
            }),
            InvalidArgument,
            "headers: template does not parse",
        ),
        case(
            "create: oversized body template",
            create(|r| r.body_template = "x".repeat(64 * 1024 + 1)),
            InvalidArgument,
            "body_template: is 65537 bytes long; at most 65536 are allowed",
        ),
        case(
            "create: too many headers",
            create(|r| r.headers = headers(33)),
            InvalidArgument,
            "33 headers given; at most 32 are allowed",
        ),
        case(
            "create: too many headers and secret headers together",
            create(|r| {
                r.headers = headers(20);
                r.secret_headers = (0..20)
                    .map(|i| (format!("X-Secret{i}"), "s".to_string()))
                    .collect();
            }),
            InvalidArgument,
            "at most 32 headers and secret headers together",
        ),
        case(
            "create: invalid header name",
            create(|r| r.headers = [("X Order".to_string(), "1".to_string())].into()),
            InvalidArgument,
            "is not a valid header name",
        ),
        case(
            "create: header value with a line break",
            create(|r| {
                r.headers = [("X-Order".to_string(), "1\r\nX-Evil: 1".to_string())].into();
            }),
            InvalidArgument,
            "contains characters not allowed in a header",
        ),
        case(
            "create: header Herald sets itself",
            create(|r| r.headers = [("Content-Length".to_string(), "1".to_string())].into()),
            InvalidArgument,
            "is set by Herald and cannot be configured",
        ),
        case(
            "create: header value over 4096 bytes",
            create(|r| r.headers = [("X-Big".to_string(), "v".repeat(4097))].into()),
            InvalidArgument,
            "is longer than 4096 bytes",
        ),
        case(
            "create: same name as header and secret header",
            create(|r| {
                r.headers = [("Authorization".to_string(), "a".to_string())].into();
                r.secret_headers = [("authorization".to_string(), "b".to_string())].into();
            }),
            InvalidArgument,
            "is both a header and a secret header; keep one",
        ),
        case(
            "create: invalid secret header value",
            create(|r| {
                r.secret_headers = [("Authorization".to_string(), "a\nb".to_string())].into();
            }),
            InvalidArgument,
            "secret_headers: the value of",
        ),
        case(
            "create: timeout of 0 ms",
            create(|r| r.timeout_ms = Some(0)),
            InvalidArgument,
            "timeout_ms: 0 is out of range; give 1 to 60000 milliseconds",
        ),
        case(
            "create: timeout of an hour",
            create(|r| r.timeout_ms = Some(3_600_000)),
            InvalidArgument,
            "give 1 to 60000 milliseconds",
        ),
        // A negative number in a uint32 field (a client that encoded an
        // int64 -1): prost keeps the low 32 bits, and validation refuses it.
        case(
            "create: negative timeout (raw varint -1)",
            Rpc::Raw(
                "/herald.v1.Admin/CreateWebhook",
                [
                    bytes_field(2, b"order.created"),
                    bytes_field(5, b"https://hooks.example/orders"),
                    varint_field(8, u64::MAX),
                ]
                .concat(),
            ),
            InvalidArgument,
            "timeout_ms: 4294967295 is out of range; give 1 to 60000",
        ),
        case(
            "create: invalid UTF-8 in the URL",
            Rpc::Raw(
                "/herald.v1.Admin/CreateWebhook",
                [
                    bytes_field(2, b"order.created"),
                    bytes_field(5, b"https://hooks.example/\xff"),
                ]
                .concat(),
            ),
            Internal,
            "not UTF-8",
        ),
        case(
            "create: unknown body mode",
            create(|r| r.body_mode = "xml".into()),
            InvalidArgument,
            "use raw, template or json",
        ),
        case(
            "create: body mode template without a template",
            create(|r| r.body_mode = "template".into()),
            InvalidArgument,
            "body_template: is required when body_mode is template",
        ),
        case(
            "create: GET with a body template",
            create(|r| {
                r.method = "GET".into();
                r.body_template = r#"{"id": {{ data.id }}}"#.into();
            }),
            InvalidArgument,
            "body_template: a GET request carries no body (its data goes in the query string); \
             use method POST, PUT or PATCH to send the template, or remove body_template",
        ),
        case(
            "create: DELETE with body mode json",
            create(|r| {
                r.method = "DELETE".into();
                r.body_mode = "json".into();
            }),
            InvalidArgument,
            "body_mode: a DELETE request carries no body",
        ),
        case(
            "create: invalid Content-Type",
            create(|r| r.content_type = "application/json\r\n".into()),
            InvalidArgument,
            "is not a valid Content-Type value",
        ),
        case(
            "create: signing secret without the whsec_ prefix",
            create(|r| r.signing_secret = "s3cret".into()),
            InvalidArgument,
            "must start with \"whsec_\"",
        ),
        case(
            "create: signing secret and disable_signing",
            create(|r| {
                r.signing_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into();
                r.disable_signing = true;
            }),
            InvalidArgument,
            "give one or the other",
        ),
        case(
            "create: description over 1000 bytes",
            create(|r| r.description = "d".repeat(1001)),
            InvalidArgument,
            "description: is longer than 1000 bytes",
        ),
        // --- Admin.UpdateWebhook -----------------------------------------
        case(
            "update: id is not a UUID",
            update("42", |r| r.enabled = Some(false)),
            InvalidArgument,
            "id: \"42\" is not a UUID",
        ),
        case(
            "update: unknown webhook",
            update(UNKNOWN_ID, |r| r.enabled = Some(false)),
            NotFound,
            "does not exist",
        ),
        case(
            "update: unknown choice after a final failure",
            update(active, |r| r.ordered_on_failure = Some("later".into())),
            InvalidArgument,
            "ordered_on_failure: \"later\" is not a choice",
        ),
        case(
            "update: burst over ten seconds of the rate",
            update(active, |r| {
                r.rate_limit = Some(herald_proto::v1::RateLimit {
                    per_second: 5,
                    burst: 51,
                });
            }),
            InvalidArgument,
            "rate_limit.burst: 51 is more than ten seconds' worth of the rate (5/s); use at most 50",
        ),
        case(
            "update: empty method",
            update(active, |r| r.method = Some(String::new())),
            InvalidArgument,
            "method: must not be empty",
        ),
        case(
            "update: event with whitespace",
            update(active, |r| r.event = Some("order created".into())),
            InvalidArgument,
            "event: must not contain whitespace",
        ),
        case(
            "update: an empty events list",
            update(active, |r| r.events = Some(EventList { values: vec![] })),
            InvalidArgument,
            "event: is required",
        ),
        case(
            "update: filter that does not parse",
            update(active, |r| r.filter = Some("data.total >".into())),
            InvalidArgument,
            "filter: is not a valid CEL expression",
        ),
        case(
            "update: http:// URL on an HTTPS-only deployment",
            update(active, |r| {
                r.url = Some("http://hooks.example/orders".into())
            }),
            InvalidArgument,
            "HERALD_ALLOW_HTTP=true",
        ),
        case(
            "update: private address",
            update(active, |r| r.url = Some("https://192.168.1.20/hook".into())),
            InvalidArgument,
            "(private address); allow it with",
        ),
        case(
            "update: unparsable body template",
            // POST: the fixture is a GET webhook, which takes no template.
            update(active, |r| {
                r.method = Some("POST".into());
                r.body_template = Some("{% for %}".into());
            }),
            InvalidArgument,
            "body_template: template does not parse",
        ),
        case(
            "update: body template on a GET webhook",
            update(active, |r| {
                r.body_template = Some(r#"{"id": {{ data.id }}}"#.into())
            }),
            InvalidArgument,
            "body_template: a GET request carries no body",
        ),
        case(
            "update: timeout of 0 ms",
            update(active, |r| r.timeout_ms = Some(0)),
            InvalidArgument,
            "give 1 to 60000 milliseconds",
        ),
        case(
            "update: too many headers",
            update(active, |r| {
                r.headers = Some(Headers {
                    values: headers(40),
                });
            }),
            InvalidArgument,
            "40 headers given; at most 32 are allowed",
        ),
        case(
            "update: body mode template on a webhook without a template",
            update(active, |r| r.body_mode = Some("template".into())),
            InvalidArgument,
            "body_template: is required when body_mode is template",
        ),
        // --- Admin: get, delete, enable, signing secrets -----------------
        case(
            "get: id is not a UUID",
            Rpc::Get(GetWebhookRequest {
                id: "webhook-1".into(),
            }),
            InvalidArgument,
            "id: \"webhook-1\" is not a UUID",
        ),
        case(
            "get: unknown webhook",
            Rpc::Get(GetWebhookRequest {
                id: UNKNOWN_ID.into(),
            }),
            NotFound,
            "does not exist",
        ),
        case(
            "delete: empty id",
            Rpc::Delete(DeleteWebhookRequest { id: String::new() }),
            InvalidArgument,
            "id: \"\" is not a UUID",
        ),
        case(
            "delete: unknown webhook",
            Rpc::Delete(DeleteWebhookRequest {
                id: UNKNOWN_ID.into(),
            }),
            NotFound,
            "does not exist",
        ),
        case(
            "set enabled: unknown webhook",
            Rpc::SetEnabled(SetWebhookEnabledRequest {
                id: UNKNOWN_ID.into(),
                enabled: true,
            }),
            NotFound,
            "does not exist",
        ),
        case(
            "get signing secret: webhook does not sign",
            Rpc::GetSecret(GetSigningSecretRequest {
                id: unsigned.into(),
            }),
            FailedPrecondition,
            "rotate a secret in to start signing",
        ),
        case(
            "get signing secret: unknown webhook",
            Rpc::GetSecret(GetSigningSecretRequest {
                id: UNKNOWN_ID.into(),
            }),
            NotFound,
            "does not exist",
        ),
        case(
            "rotate: new secret without the whsec_ prefix",
            Rpc::Rotate(RotateSigningSecretRequest {
                id: active.into(),
                new_secret: "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
                overlap_seconds: None,
            }),
            InvalidArgument,
            "new_secret: signing_secret must start with \"whsec_\"",
        ),
        case(
            "rotate: new secret too short",
            Rpc::Rotate(RotateSigningSecretRequest {
                id: active.into(),
                new_secret: "whsec_AAAA".into(),
                overlap_seconds: None,
            }),
            InvalidArgument,
            "use 24 to 64",
        ),
        case(
            "rotate: overlap over 30 days",
            Rpc::Rotate(RotateSigningSecretRequest {
                id: active.into(),
                new_secret: String::new(),
                overlap_seconds: Some(31 * 24 * 3600),
            }),
            InvalidArgument,
            "overlap_seconds: at most 2592000 (30 days) is allowed",
        ),
        case(
            "rotate: unknown webhook",
            Rpc::Rotate(RotateSigningSecretRequest {
                id: UNKNOWN_ID.into(),
                new_secret: String::new(),
                overlap_seconds: None,
            }),
            NotFound,
            "does not exist",
        ),
        // --- Admin: delivery log -----------------------------------------
        case(
            "get delivery: id is not a UUID",
            Rpc::GetDelivery(GetDeliveryRequest { id: "7".into() }),
            InvalidArgument,
            "id: \"7\" is not a UUID",
        ),
        case(
            "get delivery: unknown delivery",
            Rpc::GetDelivery(GetDeliveryRequest {
                id: UNKNOWN_ID.into(),
            }),
            NotFound,
            "is not in the log. Its id says it was fired at 2024-11-03T06:43:49.888Z",
        ),
        case(
            "list deliveries: cursor not from ListDeliveries",
            Rpc::ListDeliveries(ListDeliveriesRequest {
                cursor: "not-a-cursor!".into(),
                ..Default::default()
            }),
            InvalidArgument,
            "is not a cursor returned by ListDeliveries",
        ),
        case(
            "list deliveries: base64 cursor of the wrong shape",
            Rpc::ListDeliveries(ListDeliveriesRequest {
                cursor: "AAAA".into(),
                ..Default::default()
            }),
            InvalidArgument,
            "is not a cursor returned by ListDeliveries",
        ),
        case(
            "list deliveries: page size over 1000",
            Rpc::ListDeliveries(ListDeliveriesRequest {
                page_size: 1001,
                ..Default::default()
            }),
            InvalidArgument,
            "page_size: 1001 is too large; at most 1000",
        ),
        case(
            "list deliveries: unknown state",
            Rpc::ListDeliveries(ListDeliveriesRequest {
                state: Some("done".into()),
                ..Default::default()
            }),
            InvalidArgument,
            "is not one of scheduled, pending, succeeded, failed, cancelled",
        ),
        case(
            "list deliveries: webhook_id is not a UUID",
            Rpc::ListDeliveries(ListDeliveriesRequest {
                webhook_id: Some("orders".into()),
                ..Default::default()
            }),
            InvalidArgument,
            "webhook_id: \"orders\" is not a UUID",
        ),
        case(
            "list deliveries: from after to",
            Rpc::ListDeliveries(ListDeliveriesRequest {
                from_unix_ms: Some(2_000),
                to_unix_ms: Some(1_000),
                ..Default::default()
            }),
            InvalidArgument,
            "from_unix_ms: is after to_unix_ms",
        ),
        case(
            "list deliveries: negative time",
            Rpc::ListDeliveries(ListDeliveriesRequest {
                from_unix_ms: Some(-1),
                ..Default::default()
            }),
            InvalidArgument,
            "milliseconds since 1970-01-01 UTC",
        ),
        case(
            "summary: webhook_id is not a UUID",
            Rpc::Summary(GetWebhookSummaryRequest {
                webhook_id: "x".into(),
                ..Default::default()
            }),
            InvalidArgument,
            "webhook_id: \"x\" is not a UUID",
        ),
        case(
            "summary: from after to",
            Rpc::Summary(GetWebhookSummaryRequest {
                webhook_id: active.into(),
                from_unix_ms: Some(i64::MAX),
                to_unix_ms: Some(0),
            }),
            InvalidArgument,
            "the range is [from, to)",
        ),
        case(
            "resend: unknown delivery",
            Rpc::Resend(ResendDeliveryRequest {
                id: UNKNOWN_ID.into(),
                request_id: "bad-input-resend-1".into(),
            }),
            NotFound,
            "is not in the log",
        ),
        case(
            "resend: no request_id",
            Rpc::Resend(ResendDeliveryRequest {
                id: UNKNOWN_ID.into(),
                request_id: String::new(),
            }),
            InvalidArgument,
            "pass any unique string (e.g. a fresh UUID)",
        ),
        case(
            "resend: request_id over 200 bytes",
            Rpc::Resend(ResendDeliveryRequest {
                id: UNKNOWN_ID.into(),
                request_id: long_name.clone(),
            }),
            InvalidArgument,
            "request_id: is 201 bytes long",
        ),
        case(
            "replay: from after to",
            replay(active, Some(2_000), Some(1_000), "bad-input-replay-1"),
            InvalidArgument,
            "the range is [from, to)",
        ),
        case(
            "replay: from equal to to (an empty range)",
            replay(active, Some(1_000), Some(1_000), "bad-input-replay-6"),
            InvalidArgument,
            "from_unix_ms: 1000 is not before to_unix_ms 1000",
        ),
        case(
            "replay: neither from nor to",
            replay(active, None, None, "bad-input-replay-7"),
            InvalidArgument,
            "from_unix_ms and to_unix_ms: are not set; give the range of fired times to replay \
             as Unix milliseconds, from_unix_ms before to_unix_ms",
        ),
        case(
            "replay: no from",
            replay(active, None, Some(1_000), "bad-input-replay-8"),
            InvalidArgument,
            "from_unix_ms: is not set; give the range",
        ),
        case(
            "replay: no to",
            replay(active, Some(0), None, "bad-input-replay-9"),
            InvalidArgument,
            "to_unix_ms: is not set; give the range",
        ),
        case(
            "replay: negative from",
            replay(active, Some(-5), Some(1_000), "bad-input-replay-2"),
            InvalidArgument,
            "from_unix_ms: -5 is not a time",
        ),
        case(
            "replay: huge negative to",
            replay(active, Some(0), Some(i64::MIN), "bad-input-replay-3"),
            InvalidArgument,
            "to_unix_ms: -9223372036854775808 is not a time",
        ),
        case(
            "replay: no request_id",
            replay(active, Some(0), Some(1_000), ""),
            InvalidArgument,
            "request_id: required",
        ),
        case(
            "replay: unknown webhook",
            replay(UNKNOWN_ID, Some(0), Some(i64::MAX), "bad-input-replay-4"),
            NotFound,
            "does not exist",
        ),
        case(
            "replay: disabled webhook",
            replay(paused, Some(0), Some(i64::MAX), "bad-input-replay-5"),
            FailedPrecondition,
            "enable it first",
        ),
        case(
            "test event: unknown webhook",
            test_event(UNKNOWN_ID, send_test_event_request::Data::Json("{}".into())),
            NotFound,
            "does not exist",
        ),
        case(
            "test event: disabled webhook",
            test_event(paused, send_test_event_request::Data::Json("{}".into())),
            FailedPrecondition,
            "enable it to send a test event",
        ),
        case(
            "test event: invalid JSON",
            test_event(
                active,
                send_test_event_request::Data::Json("{'a': 1}".into()),
            ),
            InvalidArgument,
            "data.json is not valid JSON",
        ),
        case(
            "test event: data over the payload limit",
            test_event(
                active,
                send_test_event_request::Data::Text("x".repeat(MAX_PAYLOAD + 1)),
            ),
            InvalidArgument,
            "raise HERALD_MAX_PAYLOAD_BYTES",
        ),
        case(
            "test event: message over the decoding cap",
            test_event(
                active,
                send_test_event_request::Data::Text("x".repeat(max_request_bytes(MAX_PAYLOAD) + 1)),
            ),
            OutOfRange,
            "data may be at most 16384 bytes: send less data or raise HERALD_MAX_PAYLOAD_BYTES",
        ),
        case(
            "test event: webhook_id is not a UUID",
            test_event("", send_test_event_request::Data::Text(String::new())),
            InvalidArgument,
            "webhook_id: \"\" is not a UUID",
        ),
    ]
}

/// Row count and a digest of the content of every table of the schema, so
/// that an update (not only an insert) shows as a difference.
async fn snapshot(env: &TestEnv) -> BTreeMap<String, (i64, String)> {
    let db = env.db().await;
    let tables: Vec<String> = db
        .query(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = 'public' AND table_type = 'BASE TABLE' \
               AND table_name <> 'refinery_schema_history' ORDER BY 1",
            &[],
        )
        .await
        .expect("table list")
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut out = BTreeMap::new();
    for table in tables {
        let row = db
            .query_one(
                &format!(
                    "SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') \
                     FROM \"{table}\" t"
                ),
                &[],
            )
            .await
            .expect("table digest");
        out.insert(table, (row.get(0), row.get(1)));
    }
    out
}

async fn create_fixture(api: &mut Api, request: CreateWebhookRequest) -> String {
    api.admin
        .create_webhook(request)
        .await
        .expect("fixture webhook created")
        .into_inner()
        .id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_a_useful_status_and_changes_nothing() {
    let mut env = TestEnv::new("0s").await.unwrap();
    let addr = env
        .start_ingest(env.queue.clone(), |config| {
            // The production default; TestEnv allows http:// for its
            // loopback receivers.
            config.targets.allow_http = false;
            config.max_payload_bytes = MAX_PAYLOAD;
        })
        .await
        .unwrap();
    let mut api = Api::connect(addr).await;

    // Loopback is on the test allowlist, so these targets are valid; no
    // sender runs, so nothing is ever sent to them.
    let fixtures = Fixtures {
        active: create_fixture(
            &mut api,
            CreateWebhookRequest {
                event: "order.created".into(),
                url: "https://127.0.0.1:9/orders".into(),
                ..Default::default()
            },
        )
        .await,
        paused: create_fixture(
            &mut api,
            CreateWebhookRequest {
                event: "order.paused".into(),
                url: "https://127.0.0.1:9/paused".into(),
                enabled: Some(false),
                ..Default::default()
            },
        )
        .await,
        unsigned: create_fixture(
            &mut api,
            CreateWebhookRequest {
                event: "order.unsigned".into(),
                url: "https://127.0.0.1:9/unsigned".into(),
                disable_signing: true,
                ..Default::default()
            },
        )
        .await,
    };

    let before = snapshot(&env).await;
    for table in [
        "webhooks",
        "deliveries",
        "delivery_attempts",
        "delivery_resends",
    ] {
        assert!(
            before.contains_key(table),
            "table {table} missing: {before:?}"
        );
    }
    assert_eq!(before["webhooks"].0, 3);
    assert_eq!(env.queued_messages().await, 0);

    let table = cases(&fixtures);
    let total = table.len();
    assert!(total >= 35, "only {total} cases");
    let mut failures = Vec::new();
    for Case {
        name,
        rpc,
        code,
        hint,
    } in table
    {
        match api.call(rpc).await {
            Ok(()) => failures.push(format!("{name}: succeeded, expected {code:?}")),
            Err(status) => {
                if status.code() != code || !status.message().contains(hint) {
                    failures.push(format!(
                        "{name}: got {:?} {:?}, expected {code:?} with {hint:?}",
                        status.code(),
                        status.message()
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {total} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // The same table through the JSON door, for every method it routes:
    // the same code and message, as the usual HTTP status.
    let door = json_door_pass(addr, cases(&fixtures)).await;
    eprintln!("{}", door.table);
    assert!(
        door.routed >= 20,
        "only {} cases routed:\n{}",
        door.routed,
        door.table
    );
    assert!(
        door.failures.is_empty(),
        "{} of {} cases differ through the JSON door:\n{}",
        door.failures.len(),
        door.routed,
        door.failures.join("\n")
    );

    // Nothing published, nothing written.
    assert_eq!(env.queued_messages().await, 0, "a refused call published");
    let after = snapshot(&env).await;
    assert_eq!(before, after, "a refused call wrote to the database");

    // Both checks would have seen it: a valid Fire publishes, a valid
    // change writes.
    let fired = api
        .ingest
        .fire(FireRequest {
            event: "order.created".into(),
            data: Some(json(r#"{"id": 1}"#)),
            ..Default::default()
        })
        .await
        .expect("a valid fire succeeds")
        .into_inner();
    assert_eq!(fired.delivery_ids.len(), 1);
    eventually(
        Duration::from_secs(10),
        "the valid fire is queued",
        || async { env.queued_messages().await == 1 },
    )
    .await;
    api.admin
        .set_webhook_enabled(SetWebhookEnabledRequest {
            id: fixtures.paused.clone(),
            enabled: true,
        })
        .await
        .expect("a valid change succeeds");
    let changed = snapshot(&env).await;
    assert_ne!(changed["webhooks"], before["webhooks"]);
}

/// What the JSON door made of the table.
struct DoorPass {
    routed: usize,
    failures: Vec<String>,
    /// case, gRPC code, HTTP status: printed with the test's output.
    table: String,
}

/// The JSON door's path and request message for a call it routes.
fn door_request(rpc: &Rpc) -> Option<(&'static str, Vec<u8>, &'static str)> {
    use prost::Message;
    Some(match rpc {
        Rpc::Fire(r) => ("/v1/fire", r.encode_to_vec(), "herald.v1.FireRequest"),
        Rpc::ListEvents(r) => (
            "/v1/list_events",
            r.encode_to_vec(),
            "herald.v1.ListEventsRequest",
        ),
        Rpc::GetDelivery(r) => (
            "/v1/get_delivery",
            r.encode_to_vec(),
            "herald.v1.GetDeliveryRequest",
        ),
        Rpc::ListDeliveries(r) => (
            "/v1/list_deliveries",
            r.encode_to_vec(),
            "herald.v1.ListDeliveriesRequest",
        ),
        Rpc::Summary(r) => (
            "/v1/get_webhook_summary",
            r.encode_to_vec(),
            "herald.v1.GetWebhookSummaryRequest",
        ),
        _ => return None,
    })
}

/// Sends each case the door routes as canonical JSON (what a JSON client
/// would send for the same message) and compares the refusal with the
/// gRPC one the case expects.
async fn json_door_pass(addr: std::net::SocketAddr, cases: Vec<Case>) -> DoorPass {
    use http_body_util::{BodyExt, Full};
    let pool = herald_ingest::json_door::descriptors();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let mut pass = DoorPass {
        routed: 0,
        failures: Vec::new(),
        table: String::from("JSON door | case | gRPC code | HTTP status\n"),
    };
    for case in cases {
        let Some((path, encoded, message)) = door_request(&case.rpc) else {
            continue;
        };
        pass.routed += 1;
        let descriptor = pool.get_message_by_name(message).expect("routed message");
        let dynamic = prost_reflect::DynamicMessage::decode(descriptor, encoded.as_slice())
            .expect("the request decodes");
        let body = serde_json::to_vec(&dynamic).expect("canonical JSON");
        let request = http::Request::post(format!("http://{addr}{path}"))
            .header("content-type", "application/json")
            .body(Full::new(bytes::Bytes::from(body)))
            .unwrap();
        let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
            .await
            .expect("the door answers in time")
            .expect("HTTP exchange");
        let status = response.status();
        let answer: serde_json::Value =
            serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes())
                .unwrap_or(serde_json::Value::Null);
        let expected = herald_ingest::json_door::http_status(case.code);
        let message = answer["message"].as_str().unwrap_or_default();
        pass.table.push_str(&format!(
            "{} | {:?} | {}\n",
            case.name,
            case.code,
            status.as_u16()
        ));
        if status != expected
            || answer["code"] != serde_json::json!(case.code as i32)
            || !message.contains(case.hint)
        {
            pass.failures.push(format!(
                "{}: got {status} {answer}, expected {expected} ({:?}) with {:?}",
                case.name, case.code, case.hint
            ));
        }
    }
    pass
}

/// The rest of the table for an ingest that requires API keys: a key limited
/// to one tenant, used for another tenant (unknown or existing), or for a
/// scope it does not have, is refused and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_limited_to_one_tenant_is_refused_elsewhere() {
    const ADMIN_KEY: &str = "bad-input-bootstrap-admin-key-0123456789";
    let mut env = TestEnv::new("0s").await.unwrap();
    let addr = env
        .start_ingest(env.queue.clone(), |config| {
            config.auth = AuthMode::Required;
            config.admin_key = Some(BootstrapKey::new(ADMIN_KEY).unwrap());
        })
        .await
        .unwrap();
    let mut admin = AdminClient::with_interceptor(channel(addr).await, Token::bearer(ADMIN_KEY));
    for tenant in ["shop-1", "shop-2"] {
        admin
            .create_webhook(CreateWebhookRequest {
                tenant: tenant.into(),
                event: "order.created".into(),
                url: "https://127.0.0.1:9/orders".into(),
                ..Default::default()
            })
            .await
            .expect("fixture webhook");
    }
    let key = admin
        .create_api_key(CreateApiKeyRequest {
            name: "shop-1 back-end".into(),
            scopes: vec!["fire".into(), "read".into()],
            tenant: Some("shop-1".into()),
        })
        .await
        .expect("scoped key")
        .into_inner()
        .token;
    let before = snapshot(&env).await;

    let mut ingest = IngestClient::with_interceptor(channel(addr).await, Token::bearer(&key));
    let mut scoped_admin = AdminClient::with_interceptor(channel(addr).await, Token::bearer(&key));
    let fire = |tenant: &str| FireRequest {
        tenant: tenant.into(),
        event: "order.created".into(),
        data: Some(json("{}")),
        ..Default::default()
    };
    let results: Vec<(&str, Result<(), Status>, Code, &str)> = vec![
        (
            "fire: unknown tenant",
            ingest.fire(fire("no-such-shop")).await.map(drop),
            Code::PermissionDenied,
            "limited to tenant \"shop-1\"",
        ),
        (
            "fire: another tenant",
            ingest.fire(fire("shop-2")).await.map(drop),
            Code::PermissionDenied,
            "pass tenant \"shop-1\"",
        ),
        (
            "list events: unknown tenant",
            ingest
                .list_events(ListEventsRequest {
                    tenant: "no-such-shop".into(),
                })
                .await
                .map(drop),
            Code::PermissionDenied,
            "limited to tenant \"shop-1\"",
        ),
        (
            "create webhook without the admin scope",
            scoped_admin
                .create_webhook(CreateWebhookRequest {
                    tenant: "shop-1".into(),
                    event: "order.created".into(),
                    url: "https://127.0.0.1:9/more".into(),
                    ..Default::default()
                })
                .await
                .map(drop),
            Code::PermissionDenied,
            "admin",
        ),
        (
            "fire without a key",
            IngestClient::new(channel(addr).await)
                .fire(fire("shop-1"))
                .await
                .map(drop),
            Code::Unauthenticated,
            "authorization: Bearer",
        ),
    ];
    let mut failures = Vec::new();
    for (name, result, code, hint) in results {
        match result {
            Ok(()) => failures.push(format!("{name}: succeeded, expected {code:?}")),
            Err(status) if status.code() != code || !status.message().contains(hint) => failures
                .push(format!(
                    "{name}: got {:?} {:?}, expected {code:?} with {hint:?}",
                    status.code(),
                    status.message()
                )),
            Err(_) => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(env.queued_messages().await, 0, "a refused call published");
    assert_eq!(before, snapshot(&env).await, "a refused call wrote");

    // The key works for its own tenant, so the refusals above were about
    // the tenant and the scope, not a broken key.
    ingest.fire(fire("shop-1")).await.expect("own tenant");
    eventually(
        Duration::from_secs(10),
        "the own fire is queued",
        || async { env.queued_messages().await == 1 },
    )
    .await;
}
