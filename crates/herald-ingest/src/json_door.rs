//! The HTTP/JSON door: `POST /v1/fire` and the other read-only routes of
//! [`ROUTES`], on ingest's gRPC port, for callers with nothing but an HTTP
//! client (PHP, shell scripts, browsers).
//!
//! Each JSON call is transcoded into the gRPC call it names and handed to
//! the same service stack a gRPC client reaches: the same authentication
//! and scopes, the same handlers and validation, the same limits and
//! metrics. The body is the request message in the proto3 canonical JSON
//! mapping (read with `prost-reflect` from the descriptor set gRPC
//! reflection serves), the answer the response message in the same
//! mapping, and a refusal the gRPC status as an HTTP status with a JSON
//! body carrying the same message. Nothing here knows what a call does.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};
use tonic::Code;
use tower::ServiceExt;

/// One JSON route and the gRPC method behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonRoute {
    /// `POST` path of the JSON door.
    pub path: &'static str,
    /// The gRPC method it calls, as `/package.Service/Method`.
    pub grpc_path: &'static str,
    /// Full proto names of the request and response messages.
    pub request: &'static str,
    pub response: &'static str,
}

const fn route(
    path: &'static str,
    grpc_path: &'static str,
    request: &'static str,
    response: &'static str,
) -> JsonRoute {
    JsonRoute {
        path,
        grpc_path,
        request,
        response,
    }
}

/// Every route of the door: Fire, ListEvents and the delivery-log reads.
/// What changes configuration stays gRPC-only (the CLI speaks it).
pub const ROUTES: &[JsonRoute] = &[
    route(
        "/v1/fire",
        "/herald.v1.Ingest/Fire",
        "herald.v1.FireRequest",
        "herald.v1.FireResponse",
    ),
    route(
        "/v1/list_events",
        "/herald.v1.Ingest/ListEvents",
        "herald.v1.ListEventsRequest",
        "herald.v1.ListEventsResponse",
    ),
    route(
        "/v1/get_delivery",
        "/herald.v1.Admin/GetDelivery",
        "herald.v1.GetDeliveryRequest",
        "herald.v1.Delivery",
    ),
    route(
        "/v1/list_deliveries",
        "/herald.v1.Admin/ListDeliveries",
        "herald.v1.ListDeliveriesRequest",
        "herald.v1.ListDeliveriesResponse",
    ),
    route(
        "/v1/get_webhook_summary",
        "/herald.v1.Admin/GetWebhookSummary",
        "herald.v1.GetWebhookSummaryRequest",
        "herald.v1.WebhookSummary",
    ),
    route(
        "/v1/get_webhook_timeline",
        "/herald.v1.Admin/GetWebhookTimeline",
        "herald.v1.GetWebhookTimelineRequest",
        "herald.v1.WebhookTimeline",
    ),
];

/// Herald's messages, from the descriptor set compiled into herald-proto
/// (decoded anew on each call: the door looks its messages up once).
pub fn descriptors() -> DescriptorPool {
    DescriptorPool::decode(herald_proto::v1::FILE_DESCRIPTOR_SET)
        .expect("herald-proto's descriptor set decodes")
}

/// The HTTP status of a gRPC code, as gRPC-HTTP gateways map them.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted | Code::FailedPrecondition => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The screaming-snake name of a code, as in the gRPC spec.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// A refusal as JSON: `{"code": 3, "status": "INVALID_ARGUMENT", "message": …}`.
fn refusal(http: StatusCode, code: Code, message: &str) -> Response {
    let body = serde_json::json!({
        "code": code as i32,
        "status": code_name(code),
        "message": message,
    });
    json_response(http, body.to_string().into())
}

fn json_response(status: StatusCode, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// What a JSON call needs besides its route: the gRPC stack it is handed
/// to, and the largest body it reads.
pub(crate) struct Door<S> {
    grpc: S,
    max_body_bytes: usize,
    /// The request and response descriptors of each route, in `ROUTES`'
    /// order, looked up once.
    messages: Vec<(MessageDescriptor, MessageDescriptor)>,
}

/// The JSON routes in front of `grpc` (the authenticated gRPC services),
/// which gets every other request. A JSON body over `max_body_bytes` is
/// refused before it is read whole. With `cors`, every route (gRPC-Web's
/// too) answers browsers' preflights and marks its answers for the allowed
/// origins.
pub(crate) fn router<S>(
    grpc: S,
    max_body_bytes: usize,
    cors: Option<tower_http::cors::CorsLayer>,
) -> axum::Router
where
    S: tower_service::Service<
            http::Request<Body>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let pool = descriptors();
    let messages = ROUTES
        .iter()
        .map(|r| {
            let message = |name: &str| {
                pool.get_message_by_name(name)
                    .unwrap_or_else(|| panic!("{name} is in herald.proto"))
            };
            (message(r.request), message(r.response))
        })
        .collect();
    let door = Arc::new(Door {
        grpc: grpc.clone(),
        max_body_bytes,
        messages,
    });
    let mut router = axum::Router::new();
    for (index, route) in ROUTES.iter().enumerate() {
        router = router.route(
            route.path,
            axum::routing::post(
                move |State(door): State<Arc<Door<S>>>, request: http::Request<Body>| async move {
                    door.call(index, request).await
                },
            ),
        );
    }
    // Rendered once: the document is fixed for the life of the process.
    let openapi = crate::openapi::document().to_string();
    let router = router
        .route(
            crate::openapi::OPENAPI_PATH,
            axum::routing::get(move || {
                let openapi = openapi.clone();
                async move { json_response(StatusCode::OK, openapi.into()) }
            }),
        )
        .with_state(door)
        .fallback_service(grpc);
    // Layered last, so that it wraps the fallback (gRPC-Web) too.
    match cors {
        Some(cors) => router.layer(cors),
        None => router,
    }
}

impl<S> Door<S>
where
    S: tower_service::Service<
            http::Request<Body>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
        > + Clone,
{
    async fn call(&self, index: usize, request: http::Request<Body>) -> Response {
        let route = ROUTES[index];
        let (request_message, response_message) = &self.messages[index];
        let (parts, body) = request.into_parts();
        let json_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_none_or(|v| v.starts_with("application/json"));
        if !json_type {
            return refusal(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Code::InvalidArgument,
                "send the request as `Content-Type: application/json`",
            );
        }
        let body = match Limited::new(body, self.max_body_bytes).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => {
                return refusal(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    Code::OutOfRange,
                    &format!(
                        "the request body is larger than {} bytes, the most this door reads \
                         (twice gRPC's cap, for JSON's escaping: eight times \
                         HERALD_MAX_PAYLOAD_BYTES plus 128 KiB); send less data or raise \
                         HERALD_MAX_PAYLOAD_BYTES",
                        self.max_body_bytes
                    ),
                );
            }
        };
        let message = match parse(request_message, &body) {
            Ok(message) => message,
            Err(problem) => {
                return refusal(
                    StatusCode::BAD_REQUEST,
                    Code::InvalidArgument,
                    &format!(
                        "the body is not a {} in JSON: {problem}",
                        request_message.full_name()
                    ),
                );
            }
        };
        let grpc_request = grpc_request(route, &parts.headers, &parts.extensions, &message);
        let Ok(response) = self.grpc.clone().oneshot(grpc_request).await;
        match grpc_answer(response).await {
            Ok(payload) => match to_json(response_message, payload) {
                Ok(json) => json_response(StatusCode::OK, json.into()),
                Err(problem) => refusal(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Code::Internal,
                    &format!("the answer could not be written as JSON: {problem}"),
                ),
            },
            Err(status) => refusal(http_status(status.code()), status.code(), status.message()),
        }
    }
}

/// The protobuf bytes of `body`, read as the canonical JSON of `message`.
fn parse(message: &MessageDescriptor, body: &[u8]) -> Result<Vec<u8>, String> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let parsed = DynamicMessage::deserialize(message.clone(), &mut deserializer)
        .map_err(|e| e.to_string())?;
    deserializer.end().map_err(|e| e.to_string())?;
    Ok(parsed.encode_to_vec())
}

/// The canonical JSON of a response message, with every field (a default
/// one too: `"deliveryIds": []` says more than nothing).
fn to_json(message: &MessageDescriptor, payload: Bytes) -> Result<Vec<u8>, String> {
    let decoded = DynamicMessage::decode(message.clone(), payload).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut serializer = serde_json::Serializer::new(&mut out);
    decoded
        .serialize_with_options(
            &mut serializer,
            &SerializeOptions::new().skip_default_fields(false),
        )
        .map_err(|e| e.to_string())?;
    Ok(out)
}

/// Headers of the JSON call that travel on as gRPC metadata: the key and
/// the trace context. Others (cookies, content negotiation) mean nothing to
/// a gRPC handler.
const FORWARDED: [&str; 4] = ["authorization", "x-api-key", "traceparent", "tracestate"];

/// The gRPC call a JSON call stands for: a unary request with one
/// uncompressed message.
fn grpc_request(
    route: JsonRoute,
    headers: &HeaderMap,
    extensions: &http::Extensions,
    message: &[u8],
) -> http::Request<Body> {
    let mut frame = BytesMut::with_capacity(5 + message.len());
    frame.put_u8(0);
    frame.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    frame.put_slice(message);
    let mut request = http::Request::new(Body::from(frame.freeze()));
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = http::Uri::from_static(route.grpc_path);
    *request.version_mut() = http::Version::HTTP_2;
    let grpc_headers = request.headers_mut();
    grpc_headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    grpc_headers.insert(header::TE, HeaderValue::from_static("trailers"));
    for name in FORWARDED {
        for value in headers.get_all(name) {
            grpc_headers.append(name, value.clone());
        }
    }
    // The caller's address, for the log line of a refused call.
    if let Some(info) = extensions.get::<tonic::transport::server::TcpConnectInfo>() {
        request.extensions_mut().insert(info.clone());
    }
    request
}

/// The one message of a unary gRPC answer, or its status.
async fn grpc_answer(response: http::Response<tonic::body::Body>) -> Result<Bytes, tonic::Status> {
    // A trailers-only answer (a refusal before the handler) has its status
    // in the headers.
    if let Some(status) = tonic::Status::from_header_map(response.headers())
        && status.code() != Code::Ok
    {
        return Err(status);
    }
    let collected = response
        .into_body()
        .collect()
        .await
        .map_err(|e| tonic::Status::internal(format!("reading the answer: {e}")))?;
    if let Some(status) = collected
        .trailers()
        .and_then(tonic::Status::from_header_map)
        && status.code() != Code::Ok
    {
        return Err(status);
    }
    let mut body = collected.to_bytes();
    if body.len() < 5 {
        return Err(tonic::Status::internal("the answer holds no message"));
    }
    let compressed = body.get_u8();
    let length = body.get_u32() as usize;
    if compressed != 0 || body.len() < length {
        return Err(tonic::Status::internal("the answer's message is malformed"));
    }
    Ok(body.split_to(length))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_names_messages_and_a_method_of_herald_proto() {
        let pool = descriptors();
        for route in ROUTES {
            let request = pool.get_message_by_name(route.request);
            let response = pool.get_message_by_name(route.response);
            let (service, method) = route
                .grpc_path
                .trim_start_matches('/')
                .split_once('/')
                .unwrap();
            let method = pool
                .get_service_by_name(service)
                .and_then(|s| s.methods().find(|m| m.name() == method))
                .unwrap_or_else(|| panic!("{} is not a method", route.grpc_path));
            assert_eq!(Some(method.input()), request, "{}", route.path);
            assert_eq!(Some(method.output()), response, "{}", route.path);
            assert_ne!(
                crate::auth::required_scope(route.grpc_path),
                crate::auth::Access::Open,
                "{} must need a key",
                route.path
            );
        }
    }

    #[test]
    fn fire_json_reads_canonical_and_proto_field_names() {
        let fire = descriptors()
            .get_message_by_name("herald.v1.FireRequest")
            .unwrap();
        for body in [
            r#"{"event":"order.created","json":"{\"id\":1}","idempotencyKey":"k"}"#,
            r#"{"event":"order.created","json":"{\"id\":1}","idempotency_key":"k"}"#,
        ] {
            let bytes = parse(&fire, body.as_bytes()).unwrap();
            let decoded = herald_proto::v1::FireRequest::decode(bytes.as_slice()).unwrap();
            assert_eq!(decoded.event, "order.created");
            assert_eq!(decoded.idempotency_key, "k");
            assert_eq!(
                decoded.data,
                Some(herald_proto::v1::fire_request::Data::Json(
                    r#"{"id":1}"#.into()
                ))
            );
        }
        let error = parse(&fire, br#"{"event": 7}"#).unwrap_err();
        assert!(
            error.contains("event") || error.contains("string"),
            "{error}"
        );
        assert!(parse(&fire, br#"{"nonsense": 1}"#).is_err());
        assert!(parse(&fire, b"{} trailing").is_err());
    }

    #[test]
    fn responses_print_every_field_in_canonical_names() {
        let response = descriptors()
            .get_message_by_name("herald.v1.FireResponse")
            .unwrap();
        let empty = herald_proto::v1::FireResponse::default().encode_to_vec();
        let json = to_json(&response, empty.into()).unwrap();
        assert_eq!(String::from_utf8(json).unwrap(), r#"{"deliveryIds":[]}"#);
    }

    #[test]
    fn codes_map_to_the_usual_http_statuses() {
        let table = [
            (Code::InvalidArgument, 400),
            (Code::NotFound, 404),
            (Code::FailedPrecondition, 409),
            (Code::AlreadyExists, 409),
            (Code::Unavailable, 503),
            (Code::Unauthenticated, 401),
            (Code::PermissionDenied, 403),
            (Code::OutOfRange, 400),
            (Code::ResourceExhausted, 429),
            (Code::Internal, 500),
        ];
        for (code, http) in table {
            assert_eq!(http_status(code).as_u16(), http, "{code:?}");
        }
    }
}
