//! How large a gRPC request ingest reads, and Herald's words for a request
//! that is larger.
//!
//! Herald checks the size of a call's `data` itself, after decoding, and
//! answers with the data's size, the limit and the setting that raises it
//! (`HERALD_MAX_PAYLOAD_BYTES`). tonic refuses a request over its decoding
//! limit before Herald sees it, in its own words ("decoded message length
//! too large"). So the decoding limit is a hard cap well above the payload
//! limit ([`max_request_bytes`]): every request up to the cap gets Herald's
//! own message, and only one over it gets tonic's refusal, which
//! [`reword_too_large`] rewrites to name the same setting.

use http::HeaderValue;
use percent_encoding::percent_decode;
use tonic::Status;

/// Room for the fields of a request besides its data (tenant, event,
/// idempotency key, webhook fields), which matters at small payload limits.
const ROOM_FOR_THE_REST: usize = 64 * 1024;

/// The largest request message ingest decodes at all: four times the payload
/// limit plus 64 KiB.
///
/// Up to this size a request is read whole and Herald's own check answers
/// with the exact size of the data; the factor of four covers data a few
/// times over the limit, the usual mistake, without letting one call make
/// ingest buffer an unbounded amount (tonic refuses a larger request from
/// its length prefix, before reading it).
pub fn max_request_bytes(max_payload_bytes: usize) -> usize {
    max_payload_bytes
        .saturating_mul(4)
        .saturating_add(ROOM_FOR_THE_REST)
}

/// The status of a trailers-only gRPC response: in the HTTP headers.
const GRPC_STATUS: &str = "grpc-status";
const GRPC_MESSAGE: &str = "grpc-message";

/// Rewrites tonic's refusal of a request over `cap` (OUT_OF_RANGE, "decoded
/// message length too large: found N bytes, the limit is: CAP bytes") into
/// Herald's words; the code stays OUT_OF_RANGE. Every other response,
/// including a refusal at another limit (health checks and reflection keep
/// tonic's default), passes unchanged.
pub(crate) fn reword_too_large<B>(
    mut response: http::Response<B>,
    cap: usize,
    max_payload_bytes: usize,
) -> http::Response<B> {
    let headers = response.headers_mut();
    // tonic answers a request it cannot decode with a trailers-only
    // response, so the status is among the HTTP headers; an answer from a
    // handler carries it in the trailers and is never looked at here.
    if headers.get(GRPC_STATUS).map(HeaderValue::as_bytes) != Some(b"11") {
        return response;
    }
    let Some(found) = headers
        .get(GRPC_MESSAGE)
        .and_then(|m| percent_decode(m.as_bytes()).decode_utf8().ok())
        .and_then(|m| tonic_too_large(&m).filter(|(_, limit)| *limit == cap))
        .map(|(found, _)| found)
    else {
        return response;
    };
    let status = Status::out_of_range(format!(
        "the request is {found} bytes, more than the {cap} bytes ingest reads of one call \
         (four times HERALD_MAX_PAYLOAD_BYTES plus 64 KiB); data may be at most \
         {max_payload_bytes} bytes: send less data or raise HERALD_MAX_PAYLOAD_BYTES"
    ));
    // `add_header` replaces grpc-status and grpc-message, percent-encoding
    // the message as the gRPC spec asks. It fails only for a message a
    // header cannot hold, which the encoding rules out; it would then leave
    // tonic's message in place, still a valid answer.
    if let Err(e) = status.add_header(headers) {
        tracing::debug!(error = %e, "tonic's too-large message kept");
    }
    response
}

/// The sizes in tonic's message for a request over its decoding limit
/// (tonic::codec::decode): the request's length and the limit.
fn tonic_too_large(message: &str) -> Option<(usize, usize)> {
    let rest = message.strip_prefix("Error, decoded message length too large: found ")?;
    let (found, rest) = rest.split_once(" bytes, the limit is: ")?;
    let limit = rest.strip_suffix(" bytes")?;
    Some((found.parse().ok()?, limit.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trailers_only(status: &Status) -> http::Response<()> {
        let mut response = http::Response::new(());
        status.add_header(response.headers_mut()).unwrap();
        response
    }

    fn status_of(response: &http::Response<()>) -> Status {
        Status::from_header_map(response.headers()).expect("a status")
    }

    fn tonic_refusal(found: usize, limit: usize) -> Status {
        Status::out_of_range(format!(
            "Error, decoded message length too large: found {found} bytes, the limit is: {limit} bytes"
        ))
    }

    #[test]
    fn the_cap_is_four_times_the_payload_limit_and_room_for_the_rest() {
        assert_eq!(max_request_bytes(1024 * 1024), 4 * 1024 * 1024 + 64 * 1024);
        assert_eq!(max_request_bytes(16 * 1024), 128 * 1024);
        assert_eq!(max_request_bytes(usize::MAX), usize::MAX);
    }

    #[test]
    fn tonics_refusal_at_the_cap_is_reworded_with_herald_s_setting() {
        let cap = max_request_bytes(1000);
        let response = reword_too_large(trailers_only(&tonic_refusal(9_000_000, cap)), cap, 1000);
        let status = status_of(&response);
        assert_eq!(status.code(), tonic::Code::OutOfRange);
        assert_eq!(
            status.message(),
            "the request is 9000000 bytes, more than the 69536 bytes ingest reads of one call \
             (four times HERALD_MAX_PAYLOAD_BYTES plus 64 KiB); data may be at most 1000 bytes: \
             send less data or raise HERALD_MAX_PAYLOAD_BYTES"
        );
        // Percent-encoded on the wire, as the gRPC spec says.
        let raw = response.headers()[GRPC_MESSAGE].to_str().unwrap();
        assert!(
            raw.starts_with("the%20request%20is%209000000%20bytes"),
            "{raw}"
        );
    }

    #[test]
    fn every_other_response_passes_unchanged() {
        let cap = max_request_bytes(1000);
        for status in [
            // A refusal at another limit: health and reflection keep tonic's default.
            tonic_refusal(9_000_000, 4 * 1024 * 1024),
            Status::out_of_range("page 7 is out of range"),
            Status::invalid_argument(
                "Error, decoded message length too large: found 1 bytes, the limit is: 69536 bytes",
            ),
            Status::unauthenticated("no API key"),
        ] {
            let response = reword_too_large(trailers_only(&status), cap, 1000);
            let after = status_of(&response);
            assert_eq!(
                (after.code(), after.message()),
                (status.code(), status.message())
            );
        }
        let ok = reword_too_large(http::Response::new(()), cap, 1000);
        assert!(ok.headers().is_empty());
    }
}
