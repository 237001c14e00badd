//! gRPC clients that carry an API key, for the tests of an ingest that
//! requires one.

use std::net::SocketAddr;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// Sends a token as `authorization: Bearer` (or `x-api-key`, or any other
/// headers), or none.
#[derive(Clone)]
pub struct Token(Vec<(&'static str, MetadataValue<Ascii>)>);

impl Token {
    pub fn bearer(token: &str) -> Token {
        Token::header("authorization", &format!("Bearer {token}"))
    }

    pub fn x_api_key(token: &str) -> Token {
        Token::header("x-api-key", token)
    }

    /// Any header value, e.g. a credential of the wrong kind.
    pub fn header(name: &'static str, value: &str) -> Token {
        Token::none().and(name, value)
    }

    /// This token with one more header.
    pub fn and(mut self, name: &'static str, value: &str) -> Token {
        self.0.push((name, value.parse().expect("ASCII value")));
        self
    }

    pub fn none() -> Token {
        Token(Vec::new())
    }
}

impl Interceptor for Token {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        for (name, value) in &self.0 {
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
