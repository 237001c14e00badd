//! gRPC clients that carry an API key, for the tests of an ingest that
//! requires one.

use std::net::SocketAddr;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// Sends a token as `authorization: Bearer` (or `x-api-key`), or none.
#[derive(Clone)]
pub struct Token(Option<(&'static str, MetadataValue<Ascii>)>);

impl Token {
    pub fn bearer(token: &str) -> Token {
        Token(Some((
            "authorization",
            format!("Bearer {token}").parse().expect("ASCII token"),
        )))
    }

    pub fn x_api_key(token: &str) -> Token {
        Token(Some(("x-api-key", token.parse().expect("ASCII token"))))
    }

    /// Any header value, e.g. a credential of the wrong kind.
    pub fn header(name: &'static str, value: &str) -> Token {
        Token(Some((name, value.parse().expect("ASCII value"))))
    }

    pub fn none() -> Token {
        Token(None)
    }
}

impl Interceptor for Token {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some((name, value)) = &self.0 {
            request.metadata_mut().insert(*name, value.clone());
        }
        Ok(request)
    }
}

/// A channel whose calls carry a token.
pub type Authed = InterceptedService<Channel, Token>;

pub async fn channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("ingest reachable")
}
