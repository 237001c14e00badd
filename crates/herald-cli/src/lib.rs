//! The `herald` command-line tool: configure webhooks, fire events, inspect
//! deliveries, and run a demo HTTP receiver.
//!
//! This crate owns the command line only. It is a client of Herald's public
//! gRPC API (`Ingest` and `Admin` in `proto/herald/v1/herald.proto`) plus a
//! stand-alone demo receiver. It must not touch RabbitMQ or Postgres: anything
//! it shows comes through the API, so it sees exactly what any other client
//! sees.
//!
//! Output is a simple aligned table by default, or with `--json` the proto
//! message as JSON (field names as in the proto file). `--json` goes before
//! the subcommand (`herald --json delivery ID`) or, except for `fire`, after
//! it; `herald fire EVENT --json DOC` gives the data to fire. Errors end the
//! process with `error: <message>` on stderr and exit code 1.

#![allow(clippy::print_stdout, clippy::print_stderr)]

pub mod dead;
pub mod keys;
pub mod log;
pub mod output;
pub mod receiver;

use std::collections::HashMap;
use std::io::{IsTerminal, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::{Args, Parser, Subcommand};
use herald_proto::v1::{
    CreateWebhookRequest, DeleteWebhookRequest, FireRequest, GetDeliveryRequest,
    GetSigningSecretRequest, GetWebhookRequest, Headers, ListEventsRequest, ListWebhooksRequest,
    RotateSigningSecretRequest, SetWebhookEnabledRequest, UpdateWebhookRequest,
    admin_client::AdminClient, fire_request, ingest_client::IngestClient,
};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Talks to Herald's gRPC API (herald-ingest) and runs a demo webhook receiver.
#[derive(Debug, Parser)]
#[command(name = "herald", version, about, propagate_version = true)]
pub struct Cli {
    /// Address of herald-ingest's gRPC API.
    #[arg(
        long,
        env = "HERALD_SERVER",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    pub server: String,

    #[command(flatten)]
    pub auth: AuthArgs,

    /// Print the API's answer as JSON instead of a table (after the
    /// subcommand too, except `fire`, where `--json` is the data).
    #[arg(long)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

/// How the tool authenticates to the API and trusts its TLS certificate.
#[derive(Debug, Args, Default, Clone)]
pub struct AuthArgs {
    /// API key, sent as `authorization: Bearer <key>` on every call (see
    /// `herald keys create`).
    #[arg(long, env = "HERALD_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// PEM CA certificate that signed the server's certificate (for an
    /// https:// --server with a private CA); the platform's roots otherwise.
    #[arg(long, env = "HERALD_CA_CERT", value_name = "PEM", global = true)]
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate, for a server that requires one (mutual TLS).
    #[arg(
        long,
        env = "HERALD_CLIENT_CERT",
        value_name = "PEM",
        global = true,
        requires = "client_key"
    )]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of --client-cert.
    #[arg(
        long,
        env = "HERALD_CLIENT_KEY",
        value_name = "PEM",
        global = true,
        requires = "client_cert"
    )]
    pub client_key: Option<PathBuf>,
}

/// Where the API is and how to talk to it.
#[derive(Debug, Clone)]
pub struct Connection {
    pub server: String,
    pub auth: AuthArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the configured events of a tenant with their webhooks.
    Events {
        /// Tenant (shop or subshop); empty is the default tenant.
        #[arg(long, env = "HERALD_TENANT", default_value = "")]
        tenant: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Create, change, inspect and delete webhooks.
    #[command(subcommand)]
    Webhooks(WebhooksCommand),
    /// Fire an event: one delivery per enabled webhook of the event.
    Fire(FireArgs),
    /// Show a delivery and its attempts.
    Delivery {
        /// Delivery id, as printed by `herald fire`.
        id: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Create, list and revoke API keys.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Run a demo HTTP receiver that prints every request it gets.
    Receive(ReceiveArgs),
    /// List the messages no sender could finish (the dead-letter queue, read
    /// on RabbitMQ), or move them back to be sent again (--requeue).
    DeadLetters(dead::DeadLettersArgs),
    #[command(flatten)]
    Log(log::LogCommand),
}

#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// List webhooks, optionally of one tenant and/or event.
    List {
        /// Only this tenant (empty string: the default tenant).
        #[arg(long, env = "HERALD_TENANT")]
        tenant: Option<String>,
        /// Only this event.
        #[arg(long)]
        event: Option<String>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Show one webhook.
    Get {
        /// Webhook id.
        id: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Create a webhook.
    Create(CreateArgs),
    /// Change a webhook; flags not given keep their value.
    Update(UpdateArgs),
    /// Delete a webhook.
    Delete {
        /// Webhook id.
        id: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Enable a webhook.
    Enable {
        /// Webhook id.
        id: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Disable a webhook: new fires skip it, queued deliveries are cancelled.
    Disable {
        /// Webhook id.
        id: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Show a webhook's signing secret (and the previous one during a
    /// rotation overlap), for configuring the receiver.
    Secret {
        /// Webhook id.
        id: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Install a new signing secret; the previous one keeps signing (a second
    /// signature) until the overlap ends. Also starts signing for a webhook
    /// created with --no-signing.
    RotateSecret(RotateSecretArgs),
}

#[derive(Debug, Args)]
pub struct RotateSecretArgs {
    /// Webhook id.
    pub id: String,
    /// The new secret, whsec_<base64>; generated when not given.
    #[arg(long, value_name = "WHSEC")]
    pub secret: Option<String>,
    /// How long the previous secret keeps signing (default 86400 = 24 h;
    /// 0 ends it at once).
    #[arg(long, value_name = "N")]
    pub overlap_seconds: Option<u32>,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// The body modes the API accepts.
const BODY_MODES: [&str; 3] = ["raw", "template", "json"];

/// `--json` after the subcommand.
#[derive(Debug, Args, Default, Clone, Copy)]
pub struct OutputArgs {
    /// Print the API's answer as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `--body-template` or `--body-template-file`.
#[derive(Debug, Args, Default)]
#[group(multiple = false)]
pub struct BodyTemplateArgs {
    /// Body template: Liquid (`{{ data.x }}`, `{{ event.name }}`) or Ellity
    /// `#x#` syntax; rendered per attempt.
    #[arg(long, value_name = "TEMPLATE")]
    pub body_template: Option<String>,
    /// Read the body template from a file.
    #[arg(long, value_name = "FILE")]
    pub body_template_file: Option<PathBuf>,
}

impl BodyTemplateArgs {
    fn resolve(&self) -> anyhow::Result<Option<String>> {
        match (&self.body_template, &self.body_template_file) {
            (Some(t), _) => Ok(Some(t.clone())),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map(Some)
                .with_context(|| format!("cannot read body template file {}", path.display())),
            (None, None) => Ok(None),
        }
    }
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Event name, e.g. order.created.
    #[arg(long)]
    pub event: String,
    /// Target URL (http:// or https://).
    #[arg(long)]
    pub url: String,
    /// Tenant (shop or subshop); empty is the default tenant.
    #[arg(long, env = "HERALD_TENANT", default_value = "")]
    pub tenant: String,
    /// GET, POST, PUT, PATCH or DELETE. Default (decided by the server): POST
    /// with a body template or --body-mode json, else GET. GET and DELETE
    /// send no body, so the server refuses them with a body template or
    /// --body-mode json.
    #[arg(long)]
    pub method: Option<String>,
    /// Custom header 'Name: value' (value may be a template); repeat for more.
    #[arg(long = "header", value_name = "NAME: VALUE", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
    /// Write-only header 'Name: value' (e.g. Authorization): never shown again,
    /// encrypted at rest; repeat for more.
    #[arg(long = "secret-header", value_name = "NAME: VALUE", value_parser = parse_header)]
    pub secret_headers: Vec<(String, String)>,
    #[command(flatten)]
    pub body: BodyTemplateArgs,
    /// raw (the fired data), template (the body template) or json (the data in
    /// an envelope with event, tenant, delivery_id, fired_at). Default:
    /// template with a body template, else raw.
    #[arg(long, value_name = "MODE", value_parser = BODY_MODES)]
    pub body_mode: Option<String>,
    /// Content-Type of the body; default follows the body mode.
    #[arg(long, value_name = "CT")]
    pub content_type: Option<String>,
    /// Signing secret, whsec_<base64>; generated when not given.
    #[arg(long, value_name = "WHSEC", conflicts_with = "no_signing")]
    pub signing_secret: Option<String>,
    /// Send unsigned requests (no webhook-signature header).
    #[arg(long)]
    pub no_signing: bool,
    /// Header that carries the delivery id, sent in the case written here
    /// (e.g. PS-WEBHOOK_EVENT-ID); default: the senders' HERALD_ID_HEADER.
    #[arg(long, value_name = "NAME")]
    pub id_header: Option<String>,
    /// Request timeout in milliseconds (default 3000).
    #[arg(long)]
    pub timeout_ms: Option<u32>,
    /// Free text for people.
    #[arg(long)]
    pub description: Option<String>,
    /// Create the webhook disabled.
    #[arg(long)]
    pub disabled: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// Webhook id.
    pub id: String,
    /// New event name.
    #[arg(long)]
    pub event: Option<String>,
    /// New target URL.
    #[arg(long)]
    pub url: Option<String>,
    /// New method.
    #[arg(long)]
    pub method: Option<String>,
    /// Replaces ALL custom headers; repeat for more.
    #[arg(long = "header", value_name = "NAME: VALUE", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
    /// Remove all custom headers.
    #[arg(long, conflicts_with = "headers")]
    pub clear_headers: bool,
    /// Replaces ALL secret headers; repeat for more.
    #[arg(long = "secret-header", value_name = "NAME: VALUE", value_parser = parse_header)]
    pub secret_headers: Vec<(String, String)>,
    /// Remove all secret headers.
    #[arg(long, conflicts_with = "secret_headers")]
    pub clear_secret_headers: bool,
    /// New body template (an empty one removes the template).
    #[command(flatten)]
    pub body: BodyTemplateArgs,
    /// New body mode: raw, template or json.
    #[arg(long, value_name = "MODE", value_parser = BODY_MODES)]
    pub body_mode: Option<String>,
    /// New Content-Type; an empty string goes back to the body mode's.
    #[arg(long, value_name = "CT")]
    pub content_type: Option<String>,
    /// New delivery-id header name; an empty string goes back to the
    /// senders' default (HERALD_ID_HEADER).
    #[arg(long, value_name = "NAME")]
    pub id_header: Option<String>,
    /// New request timeout in milliseconds.
    #[arg(long)]
    pub timeout_ms: Option<u32>,
    /// New description.
    #[arg(long)]
    pub description: Option<String>,
    /// Disable the webhook.
    #[arg(long, conflicts_with = "enabled")]
    pub disabled: bool,
    /// Enable the webhook.
    #[arg(long)]
    pub enabled: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct FireArgs {
    /// Event name, e.g. order.created.
    pub event: String,
    /// Tenant (shop or subshop); empty is the default tenant.
    #[arg(long, env = "HERALD_TENANT", default_value = "")]
    pub tenant: String,
    /// The data as a JSON document (here `--json` is the data; for JSON
    /// output write `herald --json fire ...`).
    #[arg(long = "json", value_name = "DOC", group = "source")]
    pub data: Option<String>,
    /// The data as plain text, sent exactly as given.
    #[arg(long, value_name = "TEXT", group = "source")]
    pub text: Option<String>,
    /// Read the data from a file (JSON unless --text-file).
    #[arg(long, value_name = "PATH", group = "source")]
    pub file: Option<PathBuf>,
    /// The file (or standard input) holds plain text, not JSON.
    #[arg(long, conflicts_with_all = ["data", "text"])]
    pub text_file: bool,
    /// Idempotency key: repeating it (same event and data) within the
    /// window (default 24 h) answers the first call's delivery ids and sends
    /// nothing new.
    #[arg(long)]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Args)]
pub struct ReceiveArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub listen: SocketAddr,
    /// Status code to answer with.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u16).range(100..=599))]
    pub status: u16,
    /// Answer 500 to the first N requests (to show retries).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub fail_first: u64,
}

impl Command {
    /// The `--json` given after the subcommand, if it takes one.
    pub fn output(&self) -> OutputArgs {
        match self {
            Self::Events { output, .. } | Self::Delivery { output, .. } => *output,
            Self::Webhooks(w) => match w {
                WebhooksCommand::List { output, .. }
                | WebhooksCommand::Get { output, .. }
                | WebhooksCommand::Delete { output, .. }
                | WebhooksCommand::Enable { output, .. }
                | WebhooksCommand::Disable { output, .. }
                | WebhooksCommand::Secret { output, .. } => *output,
                WebhooksCommand::Create(a) => a.output,
                WebhooksCommand::Update(a) => a.output,
                WebhooksCommand::RotateSecret(a) => a.output,
            },
            Self::Fire(_) | Self::Receive(_) => OutputArgs::default(),
            Self::DeadLetters(a) => a.output,
            Self::Log(command) => command.output(),
            Self::Keys(command) => command.output(),
        }
    }
}

/// Parses a `--header 'Name: value'` argument.
pub fn parse_header(arg: &str) -> Result<(String, String), String> {
    let Some((name, value)) = arg.split_once(':') else {
        return Err(format!("{arg:?} has no ':'; write it as 'Name: value'"));
    };
    let name = name.trim();
    if name.is_empty() {
        return Err(format!(
            "{arg:?} has no header name; write it as 'Name: value'"
        ));
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("header name {name:?} must not contain whitespace"));
    }
    Ok((name.to_owned(), value.trim().to_owned()))
}

/// Turns repeated `--header` values into the API's map, refusing a name given
/// twice (header names are case-insensitive).
pub fn headers_map(headers: &[(String, String)]) -> anyhow::Result<HashMap<String, String>> {
    let mut map = HashMap::with_capacity(headers.len());
    let mut seen = std::collections::HashSet::new();
    for (name, value) in headers {
        if !seen.insert(name.to_ascii_lowercase()) {
            bail!("header {name:?} is given twice; give each header once");
        }
        map.insert(name.clone(), value.clone());
    }
    Ok(map)
}

impl FireArgs {
    /// The data to fire: from a flag, a file or standard input.
    fn data(&self) -> anyhow::Result<fire_request::Data> {
        if let Some(doc) = &self.data {
            return Ok(fire_request::Data::Json(doc.clone()));
        }
        if let Some(text) = &self.text {
            return Ok(fire_request::Data::Text(text.clone()));
        }
        let content = match &self.file {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?,
            None => {
                let stdin = std::io::stdin();
                if stdin.is_terminal() {
                    eprintln!(
                        "reading the data from standard input (end with Ctrl-D); or give --json, --text or --file"
                    );
                }
                let mut content = String::new();
                stdin
                    .lock()
                    .read_to_string(&mut content)
                    .context("cannot read standard input")?;
                content
            }
        };
        Ok(if self.text_file {
            fire_request::Data::Text(content)
        } else {
            fire_request::Data::Json(content)
        })
    }
}

/// Adds the API key to every call.
#[derive(Debug, Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    pub fn new(token: Option<&str>) -> anyhow::Result<Bearer> {
        let Some(token) = token.map(str::trim).filter(|t| !t.is_empty()) else {
            return Ok(Bearer(None));
        };
        let value = format!("Bearer {token}").parse().map_err(|_| {
            anyhow!("--token / HERALD_TOKEN holds characters a header cannot carry")
        })?;
        Ok(Bearer(Some(value)))
    }
}

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

/// A channel that authenticates every call.
pub type AuthedChannel = InterceptedService<Channel, Bearer>;

/// The API clients, sharing one connection.
struct Clients {
    ingest: IngestClient<AuthedChannel>,
    admin: AdminClient<AuthedChannel>,
}

/// The TLS settings for `server`, or `None` for plaintext.
fn tls_config(server: &str, auth: &AuthArgs) -> anyhow::Result<Option<ClientTlsConfig>> {
    let https = server.starts_with("https://");
    let wants_tls = auth.ca_cert.is_some() || auth.client_cert.is_some();
    if !https {
        if wants_tls {
            bail!("--ca-cert and --client-cert need an https:// --server (got {server:?})");
        }
        return Ok(None);
    }
    let read = |path: &PathBuf, flag: &str| {
        std::fs::read(path).with_context(|| format!("cannot read {flag} {}", path.display()))
    };
    let mut tls = ClientTlsConfig::new();
    tls = match &auth.ca_cert {
        Some(ca) => tls.ca_certificate(Certificate::from_pem(read(ca, "--ca-cert")?)),
        None => tls.with_native_roots(),
    };
    if let (Some(cert), Some(key)) = (&auth.client_cert, &auth.client_key) {
        tls = tls.identity(Identity::from_pem(
            read(cert, "--client-cert")?,
            read(key, "--client-key")?,
        ));
    }
    Ok(Some(tls))
}

/// Opens the channel to `conn`'s server: TLS for https://, the API key on
/// every call.
pub async fn channel(conn: &Connection) -> anyhow::Result<AuthedChannel> {
    let server = &conn.server;
    let bearer = Bearer::new(conn.auth.token.as_deref())?;
    let mut endpoint = Endpoint::from_shared(server.clone())
        .with_context(|| {
            format!("--server {server:?} is not a valid URL, e.g. http://127.0.0.1:50051")
        })?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30));
    if let Some(tls) = tls_config(server, &conn.auth)? {
        endpoint = endpoint
            .tls_config(tls)
            .context("TLS settings (--ca-cert, --client-cert, --client-key)")?;
    }
    let channel = endpoint.connect().await.with_context(|| {
        format!(
            "cannot reach herald-ingest at {server} (is it running? set --server or HERALD_SERVER)"
        )
    })?;
    Ok(InterceptedService::new(channel, bearer))
}

async fn connect(conn: &Connection) -> anyhow::Result<Clients> {
    let channel = channel(conn).await?;
    Ok(Clients {
        ingest: IngestClient::new(channel.clone()),
        admin: AdminClient::new(channel),
    })
}

/// An error from the API, as `message (Code)`, with its cause if it has one.
pub fn status_error(status: &tonic::Status) -> anyhow::Error {
    let code = status.code();
    let mut text = if status.message().is_empty() {
        code.description().to_owned()
    } else {
        status.message().to_owned()
    };
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    anyhow!("{text} ({code:?})")
}

/// An error and its causes as one line, `a: b: c`, without the repeats some
/// transport errors have.
pub fn error_message(error: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
    }
    parts.join(": ")
}

fn api<T>(result: Result<tonic::Response<T>, tonic::Status>) -> anyhow::Result<T> {
    result
        .map(tonic::Response::into_inner)
        .map_err(|s| status_error(&s))
}

pub(crate) fn print_json(value: &serde_json::Value) {
    // Serializing a Value cannot fail.
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

/// Runs one command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let json = cli.json || cli.command.output().json;
    let conn = Connection {
        server: cli.server,
        auth: cli.auth,
    };
    match cli.command {
        Command::Receive(args) => receive(args).await,
        Command::DeadLetters(args) => dead::run(json, args).await,
        Command::Events { tenant, .. } => {
            let mut c = connect(&conn).await?;
            let answer = api(c.ingest.list_events(ListEventsRequest { tenant }).await)?;
            if json {
                print_json(&output::list_events_json(&answer));
            } else if answer.events.is_empty() {
                eprintln!("no events configured for this tenant");
            } else {
                print!("{}", output::events_table(&answer.events));
            }
            Ok(())
        }
        Command::Fire(args) => {
            let data = args.data()?;
            let mut c = connect(&conn).await?;
            let answer = api(c
                .ingest
                .fire(FireRequest {
                    tenant: args.tenant.clone(),
                    event: args.event.clone(),
                    data: Some(data),
                    idempotency_key: args.idempotency_key.clone().unwrap_or_default(),
                })
                .await)?;
            if json {
                print_json(&output::fire_json(&answer));
            } else {
                if answer.delivery_ids.is_empty() {
                    eprintln!(
                        "no enabled webhook for event {:?} of tenant {:?}: nothing to deliver",
                        args.event, args.tenant
                    );
                }
                for id in &answer.delivery_ids {
                    println!("{id}");
                }
            }
            Ok(())
        }
        Command::Delivery { id, .. } => {
            let mut c = connect(&conn).await?;
            let delivery = api(c.admin.get_delivery(GetDeliveryRequest { id }).await)?;
            if json {
                print_json(&output::delivery_json(&delivery));
            } else {
                print!("{}", output::delivery_details(&delivery));
            }
            Ok(())
        }
        Command::Webhooks(command) => webhooks(&conn, json, command).await,
        Command::Log(command) => log::run(&conn, json, command).await,
        Command::Keys(command) => keys::run(&conn, json, command).await,
    }
}

async fn webhooks(server: &Connection, json: bool, command: WebhooksCommand) -> anyhow::Result<()> {
    // Validate local input before connecting.
    let request = match command {
        WebhooksCommand::Create(args) => {
            WebhookCall::One(Box::new(OneCall::Create(create_request(args)?)))
        }
        WebhooksCommand::Update(args) => {
            WebhookCall::One(Box::new(OneCall::Update(update_request(args)?)))
        }
        WebhooksCommand::Get { id, .. } => {
            WebhookCall::One(Box::new(OneCall::Get(GetWebhookRequest { id })))
        }
        WebhooksCommand::Enable { id, .. } => {
            WebhookCall::One(Box::new(OneCall::SetEnabled(SetWebhookEnabledRequest {
                id,
                enabled: true,
            })))
        }
        WebhooksCommand::Disable { id, .. } => {
            WebhookCall::One(Box::new(OneCall::SetEnabled(SetWebhookEnabledRequest {
                id,
                enabled: false,
            })))
        }
        WebhooksCommand::List { tenant, event, .. } => {
            WebhookCall::List(ListWebhooksRequest { tenant, event })
        }
        WebhooksCommand::Delete { id, .. } => WebhookCall::Delete(DeleteWebhookRequest { id }),
        WebhooksCommand::Secret { id, .. } => {
            WebhookCall::Secret(SecretCall::Get(GetSigningSecretRequest { id }))
        }
        WebhooksCommand::RotateSecret(args) => {
            WebhookCall::Secret(SecretCall::Rotate(RotateSigningSecretRequest {
                id: args.id,
                new_secret: args.secret.unwrap_or_default(),
                overlap_seconds: args.overlap_seconds,
            }))
        }
    };
    let mut c = connect(server).await?;
    match request {
        WebhookCall::List(req) => {
            let answer = api(c.admin.list_webhooks(req).await)?;
            if json {
                print_json(&output::list_webhooks_json(&answer));
            } else if answer.webhooks.is_empty() {
                eprintln!("no webhooks found");
            } else {
                print!("{}", output::webhooks_table(&answer.webhooks));
            }
        }
        WebhookCall::Delete(req) => {
            let id = req.id.clone();
            api(c.admin.delete_webhook(req).await)?;
            if json {
                print_json(&serde_json::json!({}));
            } else {
                println!("deleted webhook {id}");
            }
        }
        WebhookCall::Secret(call) => {
            let secret = api(match call {
                SecretCall::Get(req) => c.admin.get_signing_secret(req).await,
                SecretCall::Rotate(req) => c.admin.rotate_signing_secret(req).await,
            })?;
            if json {
                print_json(&output::signing_secret_json(&secret));
            } else {
                print!("{}", output::signing_secret_details(&secret));
            }
        }
        WebhookCall::One(call) => {
            let webhook = api(match *call {
                OneCall::Create(req) => c.admin.create_webhook(req).await,
                OneCall::Update(req) => c.admin.update_webhook(req).await,
                OneCall::Get(req) => c.admin.get_webhook(req).await,
                OneCall::SetEnabled(req) => c.admin.set_webhook_enabled(req).await,
            })?;
            if json {
                print_json(&output::webhook_json(&webhook));
            } else {
                print!("{}", output::webhook_details(&webhook));
                // Only CreateWebhook returns the secret: show it once.
                if !webhook.signing_secret.is_empty() {
                    println!("{}", output::created_secret_line(&webhook));
                }
            }
        }
    }
    Ok(())
}

enum WebhookCall {
    List(ListWebhooksRequest),
    Delete(DeleteWebhookRequest),
    Secret(SecretCall),
    // Boxed: a create request is far larger than the other calls.
    One(Box<OneCall>),
}

/// Calls that answer with one `Webhook`.
enum OneCall {
    Create(CreateWebhookRequest),
    Update(UpdateWebhookRequest),
    Get(GetWebhookRequest),
    SetEnabled(SetWebhookEnabledRequest),
}

/// Calls that answer with a `SigningSecret`.
enum SecretCall {
    Get(GetSigningSecretRequest),
    Rotate(RotateSigningSecretRequest),
}

/// Builds the create request. Method, body mode and Content-Type stay empty
/// unless given: the server applies the defaults.
pub fn create_request(args: CreateArgs) -> anyhow::Result<CreateWebhookRequest> {
    Ok(CreateWebhookRequest {
        body_template: args.body.resolve()?.unwrap_or_default(),
        tenant: args.tenant,
        event: args.event,
        enabled: args.disabled.then_some(false),
        method: args.method.unwrap_or_default(),
        url: args.url,
        headers: headers_map(&args.headers)?,
        timeout_ms: args.timeout_ms,
        description: args.description.unwrap_or_default(),
        body_mode: args.body_mode.unwrap_or_default(),
        content_type: args.content_type.unwrap_or_default(),
        secret_headers: headers_map(&args.secret_headers)?,
        signing_secret: args.signing_secret.unwrap_or_default(),
        disable_signing: args.no_signing,
        id_header: args.id_header.unwrap_or_default(),
    })
}

/// Builds the update request: only the flags given are set.
pub fn update_request(args: UpdateArgs) -> anyhow::Result<UpdateWebhookRequest> {
    let headers = if args.clear_headers {
        Some(Headers::default())
    } else if args.headers.is_empty() {
        None
    } else {
        Some(Headers {
            values: headers_map(&args.headers)?,
        })
    };
    let secret_headers = if args.clear_secret_headers {
        Some(Headers::default())
    } else if args.secret_headers.is_empty() {
        None
    } else {
        Some(Headers {
            values: headers_map(&args.secret_headers)?,
        })
    };
    let enabled = match (args.enabled, args.disabled) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    };
    let request = UpdateWebhookRequest {
        id: args.id,
        event: args.event,
        enabled,
        method: args.method,
        url: args.url,
        headers,
        body_template: args.body.resolve()?,
        timeout_ms: args.timeout_ms,
        description: args.description,
        body_mode: args.body_mode,
        content_type: args.content_type,
        secret_headers,
        id_header: args.id_header,
    };
    let unchanged = UpdateWebhookRequest {
        id: request.id.clone(),
        ..Default::default()
    };
    if request == unchanged {
        bail!("nothing to update: give at least one flag, e.g. --url or --header (see --help)");
    }
    Ok(request)
}

async fn receive(args: ReceiveArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let local = listener.local_addr()?;
    let status = hyper::StatusCode::from_u16(args.status)
        .map_err(|_| anyhow!("--status {} is not an HTTP status code", args.status))?;
    if args.fail_first > 0 {
        println!(
            "herald receive: listening on http://{local}; answering 500 to the first {} request(s), then {status}; Ctrl-C stops",
            args.fail_first
        );
    } else {
        println!("herald receive: listening on http://{local}; answering {status}; Ctrl-C stops");
    }
    let options = receiver::ReceiverOptions {
        status,
        fail_first: args.fail_first,
    };
    receiver::serve(
        listener,
        options,
        receiver::stdout_report(),
        shutdown_signal(),
    )
    .await;
    println!("herald receive: stopped");
    Ok(())
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    // Without a handler Ctrl-C would kill the process anyway.
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("herald").chain(args.iter().copied()))
    }

    /// The request `herald webhooks update id-1 <args>` sends.
    fn update(args: &[&str]) -> anyhow::Result<UpdateWebhookRequest> {
        let mut all = vec!["webhooks", "update", "id-1"];
        all.extend_from_slice(args);
        let Command::Webhooks(WebhooksCommand::Update(a)) = parse(&all).unwrap().command else {
            panic!("not an update command: {all:?}")
        };
        update_request(a)
    }

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn header_flags_parse() {
        assert_eq!(
            parse_header("Authorization: Bearer a:b").unwrap(),
            ("Authorization".into(), "Bearer a:b".into())
        );
        assert_eq!(
            parse_header("X-Empty:").unwrap(),
            ("X-Empty".into(), String::new())
        );
        assert_eq!(
            parse_header("  X-A  :  v  ").unwrap(),
            ("X-A".into(), "v".into())
        );
        assert!(parse_header("no colon").is_err());
        assert!(parse_header(": v").is_err());
        assert!(parse_header("Bad Name: v").is_err());
        let dup = [
            ("X-A".to_string(), "1".to_string()),
            ("x-a".to_string(), "2".to_string()),
        ];
        assert!(headers_map(&dup).unwrap_err().to_string().contains("twice"));
    }

    #[test]
    fn create_collects_repeated_headers() {
        let cli = parse(&[
            "webhooks",
            "create",
            "--event",
            "order.created",
            "--url",
            "https://shop.example/h",
            "--header",
            "X-A: 1",
            "--header",
            "X-B: 2",
            "--disabled",
        ])
        .unwrap();
        let Command::Webhooks(WebhooksCommand::Create(args)) = cli.command else {
            panic!("not create: {cli:?}");
        };
        assert_eq!(args.headers.len(), 2);
        assert!(args.disabled);
        assert_eq!(args.tenant, "");
        assert!(!cli.json && !args.output.json);
    }

    #[test]
    fn json_output_goes_before_or_after_the_subcommand() {
        let cli = parse(&["webhooks", "list", "--json", "--server", "http://h:1"]).unwrap();
        assert!(!cli.json && cli.command.output().json);
        assert_eq!(cli.server, "http://h:1");
        let cli = parse(&["--json", "delivery", "abc"]).unwrap();
        assert!(cli.json);
        for args in [
            &["events", "--json"][..],
            &["delivery", "x", "--json"],
            &["webhooks", "get", "x", "--json"],
            &["webhooks", "delete", "x", "--json"],
            &["webhooks", "enable", "x", "--json"],
            &["webhooks", "disable", "x", "--json"],
            &[
                "webhooks",
                "create",
                "--event",
                "e",
                "--url",
                "http://a/",
                "--json",
            ],
            &["webhooks", "update", "x", "--url", "http://a/", "--json"],
        ] {
            assert!(parse(args).unwrap().command.output().json, "{args:?}");
        }
    }

    #[test]
    fn fire_sources_are_exclusive() {
        assert!(parse(&["fire", "e", "--json", "{}", "--text", "x"]).is_err());
        assert!(
            parse(&["fire", "e", "--json"]).is_err(),
            "--json needs the document"
        );
        assert!(parse(&["fire", "e", "--text", "x", "--text-file"]).is_err());
        assert!(parse(&["fire", "e", "--file", "f", "--text-file"]).is_ok());
        let cli = parse(&["--json", "fire", "e", "--json", "{\"a\":1}"]).unwrap();
        assert!(cli.json, "JSON output before the subcommand");
        let Command::Fire(args) = cli.command else {
            panic!()
        };
        assert_eq!(
            args.data().unwrap(),
            fire_request::Data::Json("{\"a\":1}".into())
        );
    }

    #[test]
    fn fire_reads_a_text_file() {
        let path = std::env::temp_dir().join(format!("herald-cli-test-{}.txt", std::process::id()));
        std::fs::write(&path, "userid=42").unwrap();
        let cli = parse(&["fire", "e", "--file", path.to_str().unwrap(), "--text-file"]).unwrap();
        let Command::Fire(args) = cli.command else {
            panic!()
        };
        assert_eq!(
            args.data().unwrap(),
            fire_request::Data::Text("userid=42".into())
        );
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn body_template_flags_conflict() {
        assert!(
            parse(&[
                "webhooks",
                "create",
                "--event",
                "e",
                "--url",
                "http://a/",
                "--body-template",
                "x",
                "--body-template-file",
                "f"
            ])
            .is_err()
        );
    }

    #[test]
    fn update_sets_only_what_is_given() {
        let req = update(&["--url", "https://x.example/"]).unwrap();
        assert_eq!(req.url.as_deref(), Some("https://x.example/"));
        assert_eq!(req.headers, None);
        assert_eq!(req.enabled, None);
        assert_eq!(req.body_template, None);

        let req = update(&["--clear-headers", "--disabled", "--body-template", ""]).unwrap();
        assert_eq!(req.headers, Some(Headers::default()));
        assert_eq!(req.enabled, Some(false));
        assert_eq!(req.body_template.as_deref(), Some(""));

        let req = update(&["--header", "X-A: 1", "--enabled"]).unwrap();
        assert_eq!(req.headers.unwrap().values["X-A"], "1");
        assert_eq!(req.enabled, Some(true));

        assert!(
            update(&[])
                .unwrap_err()
                .to_string()
                .contains("nothing to update")
        );
        assert!(
            parse(&[
                "webhooks",
                "update",
                "i",
                "--clear-headers",
                "--header",
                "A: b"
            ])
            .is_err()
        );
        assert!(parse(&["webhooks", "update", "i", "--enabled", "--disabled"]).is_err());
    }

    fn create(args: &[&str]) -> Result<CreateArgs, clap::Error> {
        let mut all = vec![
            "webhooks",
            "create",
            "--event",
            "order.created",
            "--url",
            "https://shop.example/h",
        ];
        all.extend_from_slice(args);
        match parse(&all)?.command {
            Command::Webhooks(WebhooksCommand::Create(a)) => Ok(a),
            other => panic!("not create: {other:?}"),
        }
    }

    #[test]
    fn create_leaves_defaults_to_the_server() {
        let req = create_request(create(&[]).unwrap()).unwrap();
        assert_eq!(req.method, "", "the server picks GET or POST");
        assert_eq!(req.body_mode, "");
        assert_eq!(req.content_type, "");
        assert!(req.secret_headers.is_empty());
        assert_eq!(req.signing_secret, "");
        assert!(!req.disable_signing);
        assert_eq!(req.enabled, None);
        assert_eq!(req.timeout_ms, None);
    }

    #[test]
    fn create_shapes_the_request() {
        let req = create_request(
            create(&[
                "--method",
                "PUT",
                "--body-mode",
                "json",
                "--content-type",
                "application/vnd.shop+json",
                "--header",
                "X-Shop: 7",
                "--secret-header",
                "Authorization: Bearer s3cr3t",
                "--secret-header",
                "X-Token: t",
                "--signing-secret",
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            ])
            .unwrap(),
        )
        .unwrap();
        assert_eq!(req.method, "PUT");
        assert_eq!(req.body_mode, "json");
        assert_eq!(req.content_type, "application/vnd.shop+json");
        assert_eq!(req.headers["X-Shop"], "7");
        assert_eq!(req.secret_headers.len(), 2);
        assert_eq!(req.secret_headers["Authorization"], "Bearer s3cr3t");
        assert_eq!(req.signing_secret, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");

        let req =
            create_request(create(&["--no-signing", "--body-template", "x"]).unwrap()).unwrap();
        assert!(req.disable_signing);
        assert_eq!(req.body_template, "x");
        assert_eq!(req.method, "");

        assert!(create(&["--no-signing", "--signing-secret", "whsec_x"]).is_err());
        assert!(create(&["--body-mode", "xml"]).is_err());
        let dup = create(&["--secret-header", "A: 1", "--secret-header", "a: 2"]).unwrap();
        assert!(create_request(dup).is_err());
    }

    #[test]
    fn update_shapes_the_request() {
        let req = update(&["--body-mode", "template"]).unwrap();
        assert_eq!(req.body_mode.as_deref(), Some("template"));
        assert_eq!(req.content_type, None);
        assert_eq!(req.secret_headers, None);

        let req = update(&["--content-type", ""]).unwrap();
        assert_eq!(req.content_type.as_deref(), Some(""), "empty clears");

        let req = update(&["--secret-header", "Authorization: Bearer x"]).unwrap();
        assert_eq!(
            req.secret_headers.unwrap().values["Authorization"],
            "Bearer x"
        );
        assert_eq!(req.headers, None, "custom headers untouched");

        let req = update(&["--clear-secret-headers"]).unwrap();
        assert_eq!(req.secret_headers, Some(Headers::default()));

        assert!(
            parse(&[
                "webhooks",
                "update",
                "i",
                "--clear-secret-headers",
                "--secret-header",
                "A: b"
            ])
            .is_err()
        );
        assert!(parse(&["webhooks", "update", "i", "--body-mode", "form"]).is_err());
    }

    #[test]
    fn secret_commands_parse() {
        let cli = parse(&["webhooks", "secret", "w1", "--json"]).unwrap();
        assert!(cli.command.output().json);
        let Command::Webhooks(WebhooksCommand::Secret { id, .. }) = cli.command else {
            panic!()
        };
        assert_eq!(id, "w1");

        let cli = parse(&[
            "webhooks",
            "rotate-secret",
            "w1",
            "--secret",
            "whsec_abc",
            "--overlap-seconds",
            "3600",
        ])
        .unwrap();
        assert!(!cli.command.output().json);
        let Command::Webhooks(WebhooksCommand::RotateSecret(a)) = cli.command else {
            panic!()
        };
        assert_eq!(
            (a.id.as_str(), a.secret.as_deref(), a.overlap_seconds),
            ("w1", Some("whsec_abc"), Some(3600))
        );
        let Command::Webhooks(WebhooksCommand::RotateSecret(a)) =
            parse(&["webhooks", "rotate-secret", "w1"]).unwrap().command
        else {
            panic!()
        };
        assert_eq!((a.secret, a.overlap_seconds), (None, None));
        assert!(parse(&["webhooks", "rotate-secret", "w1", "--overlap-seconds", "-1"]).is_err());
    }

    #[test]
    fn receive_defaults_and_limits() {
        let Command::Receive(a) = parse(&["receive"]).unwrap().command else {
            panic!()
        };
        assert_eq!(a.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(a.status, 200);
        assert_eq!(a.fail_first, 0);
        assert!(parse(&["receive", "--status", "99"]).is_err());
        assert!(parse(&["receive", "--status", "600"]).is_err());
    }

    #[test]
    fn dead_letters_list_by_default_and_requeue_on_request() {
        let Command::DeadLetters(a) = parse(&["dead-letters"]).unwrap().command else {
            panic!()
        };
        assert!(!a.requeue);
        assert_eq!((a.prefix.as_str(), a.limit), ("herald", 100));
        let Command::DeadLetters(a) = parse(&[
            "dead-letters",
            "--requeue",
            "--limit",
            "5",
            "--prefix",
            "shop",
            "--json",
        ])
        .unwrap()
        .command
        else {
            panic!()
        };
        assert!(a.requeue && a.output.json);
        assert_eq!((a.prefix.as_str(), a.limit), ("shop", 5));
    }

    #[test]
    fn error_chains_print_once() {
        let e = anyhow!("c").context("b").context("b").context("a");
        assert_eq!(error_message(&e), "a: b: c");
    }

    #[test]
    fn status_errors_name_message_and_code() {
        let e = status_error(&tonic::Status::not_found("webhook 7 does not exist"));
        assert_eq!(e.to_string(), "webhook 7 does not exist (NotFound)");
        let e = status_error(&tonic::Status::new(tonic::Code::Unavailable, ""));
        assert!(e.to_string().ends_with("(Unavailable)"), "{e}");
    }
}
