//! The console's only way to Herald: ingest's Admin gRPC API, over one
//! shared channel, with the signed-in person's API key on every call.

use herald_core::secret::Secret;
use herald_proto::v1::admin_client::AdminClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::ConsoleError;

/// The channel to ingest; cheap to clone.
#[derive(Clone, Debug)]
pub struct Api {
    channel: Channel,
}

/// Adds one person's key to every call.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// An Admin client that calls as one person.
pub type Admin = AdminClient<InterceptedService<Channel, Bearer>>;

impl Api {
    /// A lazily connected channel: the console starts even while ingest is
    /// still coming up, and pages say ingest is unavailable until it is.
    pub fn connect(url: &str, ca: Option<&[u8]>) -> Result<Self, ConsoleError> {
        let wrap = |source| ConsoleError::IngestUrl {
            url: url.to_owned(),
            source,
        };
        let mut endpoint = Endpoint::from_shared(url.to_owned()).map_err(wrap)?;
        if url.starts_with("https://") {
            let mut tls = ClientTlsConfig::new().with_native_roots();
            if let Some(ca) = ca {
                tls = tls.ca_certificate(Certificate::from_pem(ca));
            }
            endpoint = endpoint.tls_config(tls).map_err(wrap)?;
        }
        Ok(Self {
            channel: endpoint.connect_lazy(),
        })
    }

    /// An Admin client calling with `token`. A token that cannot be a
    /// header value gets no header, which ingest answers UNAUTHENTICATED.
    pub fn admin(&self, token: &Secret<String>) -> Admin {
        let value = format!("Bearer {}", token.expose()).parse().ok();
        AdminClient::with_interceptor(self.channel.clone(), Bearer(value))
    }
}
