//! Header names sent in the case the user wrote them, over HTTP/1.1.
//!
//! Header names are case-insensitive, but some receivers compare them
//! case-sensitively (PHP's `$_SERVER` is fine, hand-written PHP and .NET code
//! reading raw header lines often is not), and PARTS SOFT documents its
//! delivery-id header as `PS-WEBHOOK_EVENT-ID`. `http::HeaderName` is always
//! lower case, and hyper's HTTP/1.1 client writes names as stored unless the
//! request carries hyper's header-case map. That map is a private type: the
//! one public way to obtain it is to let hyper parse a message with
//! `preserve_header_case` on. So [`case_extensions`] lets hyper's own HTTP/1.1
//! server parse a request head naming the headers, in memory and without a
//! runtime, and keeps the request extensions it produced; requests carrying
//! those extensions go out with the names as written. HTTP/2 requires lower
//! case names, and hyper ignores the map there.
//!
//! This module owns only the spelling of names; which headers a request
//! carries is decided in `request`.

use std::convert::Infallible;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::HeaderName;
use http_body_util::Empty;
use hyper::rt::{Read, ReadBufCursor, Write};

/// A header name as the user wrote it, parsed once.
#[derive(Clone, PartialEq, Eq)]
pub struct WrittenHeaderName {
    name: HeaderName,
    written: Box<str>,
}

impl WrittenHeaderName {
    /// The name for `http` (lower case).
    pub fn name(&self) -> &HeaderName {
        &self.name
    }

    /// The name as written.
    pub fn as_written(&self) -> &str {
        &self.written
    }

    /// Whether sending it as written differs from sending it lower case.
    pub fn has_capitals(&self) -> bool {
        self.written.bytes().any(|b| b.is_ascii_uppercase())
    }
}

impl FromStr for WrittenHeaderName {
    type Err = http::header::InvalidHeaderName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self {
            name: HeaderName::from_bytes(s.as_bytes())?,
            written: s.into(),
        })
    }
}

impl fmt::Debug for WrittenHeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.written, f)
    }
}

impl fmt::Display for WrittenHeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.written)
    }
}

/// Request extensions that make hyper's HTTP/1.1 client write each of
/// `names` as given. `None` when every name is lower case already (nothing
/// to preserve) or hyper did not produce the map (then names go out in
/// lower case, which every conforming receiver accepts).
pub fn case_extensions<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<http::Extensions> {
    let mut head = String::from("POST / HTTP/1.1\r\nhost: herald\r\n");
    let mut any = false;
    for name in names {
        // A name that is not a valid token would break the head; such names
        // never reach here (they are refused at save time), but skipping one
        // keeps the rest.
        if HeaderName::from_bytes(name.as_bytes()).is_err() {
            continue;
        }
        any |= name.bytes().any(|b| b.is_ascii_uppercase());
        head.push_str(name);
        head.push_str(": x\r\n");
    }
    if !any {
        return None;
    }
    head.push_str("content-length: 0\r\n\r\n");
    parse_head(head.into_bytes())
}

/// Lets hyper's HTTP/1.1 server parse `head` with `preserve_header_case` and
/// returns the extensions of the request it read.
fn parse_head(head: Vec<u8>) -> Option<http::Extensions> {
    let found: Arc<Mutex<Option<http::Extensions>>> = Arc::default();
    let slot = found.clone();
    let service = hyper::service::service_fn(move |mut request: http::Request<_>| {
        let extensions = std::mem::take(request.extensions_mut());
        *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(extensions);
        std::future::ready(Ok::<_, Infallible>(http::Response::new(
            Empty::<Bytes>::new(),
        )))
    });
    let mut connection = hyper::server::conn::http1::Builder::new()
        .preserve_header_case(true)
        .serve_connection(Scripted { input: head }, service);
    // The input is all there and output is discarded, so every poll makes
    // progress; the connection ends at the end of input. The bound only
    // guards against a hyper change that would wait for something else.
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..64 {
        if Pin::new(&mut connection).poll(&mut cx).is_ready() {
            break;
        }
    }
    found.lock().unwrap_or_else(|e| e.into_inner()).take()
}

/// In-memory connection: reads `input`, then end of stream; writes vanish.
struct Scripted {
    input: Vec<u8>,
}

impl Read for Scripted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let n = self.input.len().min(buf.remaining());
        buf.put_slice(&self.input[..n]);
        self.input.drain(..n);
        Poll::Ready(Ok(()))
    }
}

impl Write for Scripted {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use http_body_util::Full;
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Sends `request` with hyper's HTTP/1.1 client over an in-memory pipe
    /// and returns the request head as it was written.
    async fn wire(request: http::Request<Full<Bytes>>) -> String {
        let (client_io, mut server_io) = tokio::io::duplex(64 * 1024);
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(client_io))
                .await
                .unwrap();
        tokio::spawn(connection);
        let send = tokio::spawn(async move { sender.send_request(request).await });
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = server_io.read(&mut buf).await.unwrap();
            assert!(n > 0, "the client closed before the head ended");
            head.extend_from_slice(&buf[..n]);
        }
        server_io
            .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
            .await
            .unwrap();
        send.await.unwrap().unwrap();
        String::from_utf8(head).unwrap()
    }

    fn request(names: &[&str]) -> http::Request<Full<Bytes>> {
        let mut request = http::Request::post("http://receiver.example/hook")
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap();
        for name in names {
            request.headers_mut().insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                http::HeaderValue::from_static("v"),
            );
        }
        request
    }

    #[tokio::test]
    async fn names_go_out_as_written_over_http1() {
        let names = ["PS-WEBHOOK_EVENT-ID", "X-Shop-Token", "webhook-attempt"];
        let mut req = request(&names);
        *req.extensions_mut() = case_extensions(names).expect("a map for capitals");
        let head = wire(req).await;
        for line in [
            "\r\nPS-WEBHOOK_EVENT-ID: v\r\n",
            "\r\nX-Shop-Token: v\r\n",
            "\r\nwebhook-attempt: v\r\n",
        ] {
            assert!(head.contains(line), "{line:?} missing in {head:?}");
        }
        // Without the extensions hyper writes lower case: the test would see it.
        let plain = wire(request(&names)).await;
        assert!(
            plain.contains("\r\nps-webhook_event-id: v\r\n"),
            "{plain:?}"
        );
    }

    #[test]
    fn lower_case_names_need_no_map() {
        assert!(case_extensions(["webhook-id", "webhook-attempt"]).is_none());
        assert!(case_extensions(["webhook-id", "X-A"]).is_some());
    }

    #[test]
    fn written_names_keep_their_spelling() {
        let n: WrittenHeaderName = "PS-WEBHOOK_EVENT-ID".parse().unwrap();
        assert_eq!(n.name().as_str(), "ps-webhook_event-id");
        assert_eq!(n.as_written(), "PS-WEBHOOK_EVENT-ID");
        assert!(n.has_capitals());
        assert!("bad name".parse::<WrittenHeaderName>().is_err());
    }
}
