//! `herald webhooks ...`: create, change, inspect and delete webhooks, and
//! show or rotate their signing secrets (Admin's webhook calls).
//!
//! Local input (headers, body template files) is checked before connecting,
//! so a typo never costs a round trip. This module must never decide a
//! default the server owns (method, body mode, Content-Type): it sends only
//! what was given.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use herald_proto::v1::{
    CircuitBreaker, CreateWebhookRequest, DeleteWebhookRequest, EventList, GetSigningSecretRequest,
    GetWebhookRequest, Headers, ListStoppedKeysRequest, ListWebhooksRequest, RateLimit,
    ResumeOrderingKeyRequest, RotateSigningSecretRequest, SetWebhookEnabledRequest,
    UpdateWebhookRequest,
};

use crate::cli::OutputArgs;
use crate::client::{Connection, api, connect};
use crate::output::{self, print_json};

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
    /// Let an ordering key that a final failure stopped go on: with
    /// --resend, first send the failed delivery and every one held since
    /// again, in order; without, skip them.
    ResumeKey {
        /// Webhook id.
        id: String,
        /// The stopped ordering key.
        key: String,
        /// Resend the failed and held deliveries, in Fire order.
        #[arg(long)]
        resend: bool,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// List an ordered webhook's stopped ordering keys.
    StoppedKeys {
        /// Webhook id.
        id: String,
        #[command(flatten)]
        output: OutputArgs,
    },
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

/// What an ordered webhook's key may do after a final failure.
const ON_FAILURE: [&str; 2] = ["stop", "continue"];

/// The body modes the API accepts.
const BODY_MODES: [&str; 3] = ["raw", "template", "json"];

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
    /// Event to listen to: a name (order.created), a pattern (order.*) or *
    /// (every event of the tenant); repeat for more.
    #[arg(long = "event", value_name = "EVENT", required = true)]
    pub events: Vec<String>,
    /// Only events whose data passes this CEL expression get a delivery,
    /// e.g. 'data.total >= 100 && data.country == "CZ"'.
    #[arg(long)]
    pub filter: Option<String>,
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
    /// Send W3C traceparent on this webhook's requests, so that the
    /// receiver's spans join Herald's trace (default false).
    #[arg(long, value_name = "true|false")]
    pub trace_context: Option<bool>,
    /// Attempt deliveries fired with the same --ordering-key strictly in
    /// Fire order (docs/ordering.md).
    #[arg(long)]
    pub ordered: bool,
    /// What an ordered key does after a final failure: stop (hold the later
    /// ones until `herald webhooks resume-key`; the default) or continue.
    #[arg(long, value_name = "WHAT", value_parser = ON_FAILURE)]
    pub ordered_on_failure: Option<String>,
    /// Requests per second the whole deployment may send this webhook,
    /// optionally with a burst: 50 or 50/20 (docs/protection.md).
    #[arg(long, value_name = "PER_SECOND[/BURST]", value_parser = parse_rate_limit)]
    pub rate_limit: Option<RateLimit>,
    /// Consecutive failed attempts that open the circuit breaker (default:
    /// the senders' HERALD_BREAKER_FAILURES).
    #[arg(long, value_name = "N")]
    pub breaker_failures: Option<u32>,
    /// The breaker's first cool-down in milliseconds (default: the senders'
    /// HERALD_BREAKER_COOLDOWN_MS).
    #[arg(long, value_name = "MS")]
    pub breaker_cooldown_ms: Option<u32>,
    /// Seconds every attempt may fail before Herald disables the webhook
    /// (default: the senders' HERALD_AUTO_DISABLE_AFTER_SECS, 5 days).
    #[arg(long, value_name = "SECS")]
    pub auto_disable_after: Option<u32>,
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
    /// Replaces what the webhook listens to: a name, a pattern (order.*) or
    /// *; repeat for more.
    #[arg(long = "event", value_name = "EVENT")]
    pub events: Vec<String>,
    /// New CEL filter; '' removes it.
    #[arg(long)]
    pub filter: Option<String>,
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
    /// Send W3C traceparent on this webhook's requests (true) or stop (false).
    #[arg(long, value_name = "true|false")]
    pub trace_context: Option<bool>,
    /// Deliver in order per ordering key (true) or not (false).
    #[arg(long, value_name = "true|false")]
    pub ordered: Option<bool>,
    /// stop or continue: what an ordered key does after a final failure.
    #[arg(long, value_name = "WHAT", value_parser = ON_FAILURE)]
    pub ordered_on_failure: Option<String>,
    /// New rate limit, 50 or 50/20 (per second / burst); none removes it.
    #[arg(long, value_name = "PER_SECOND[/BURST]|none", value_parser = parse_rate_limit)]
    pub rate_limit: Option<RateLimit>,
    /// New breaker settings (with --breaker-cooldown-ms; one given alone
    /// sets the other back to the default; 0 = the default).
    #[arg(long, value_name = "N")]
    pub breaker_failures: Option<u32>,
    /// New first cool-down of the breaker in milliseconds; 0 = the default.
    #[arg(long, value_name = "MS")]
    pub breaker_cooldown_ms: Option<u32>,
    /// New time in seconds every attempt may fail before Herald disables
    /// the webhook; 0 = the senders' default.
    #[arg(long, value_name = "SECS")]
    pub auto_disable_after: Option<u32>,
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
pub fn headers_map(headers: &[(String, String)]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    let mut seen = HashSet::new();
    for (name, value) in headers {
        if !seen.insert(name.to_ascii_lowercase()) {
            bail!("header {name:?} is given twice; give each header once");
        }
        map.insert(name.clone(), value.clone());
    }
    Ok(map)
}

/// Runs one `herald webhooks` subcommand.
pub async fn run(server: &Connection, json: bool, command: WebhooksCommand) -> anyhow::Result<()> {
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
        WebhooksCommand::ResumeKey {
            id, key, resend, ..
        } => WebhookCall::Resume(ResumeOrderingKeyRequest {
            webhook_id: id,
            ordering_key: key,
            resend,
        }),
        WebhooksCommand::StoppedKeys { id, .. } => {
            WebhookCall::StoppedKeys(ListStoppedKeysRequest { webhook_id: id })
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
            let answer = api(c.admin.delete_webhook(req).await)?;
            if json {
                print_json(&answer);
            } else {
                println!("deleted webhook {id}");
            }
        }
        WebhookCall::Resume(req) => {
            let key = req.ordering_key.clone();
            let answer = api(c.admin.resume_ordering_key(req).await)?;
            if json {
                print_json(&answer);
            } else {
                println!(
                    "resumed ordering key {key:?} (stopped by delivery {}); resent {} deliveries",
                    answer.stopped_by,
                    answer.delivery_ids.len()
                );
                for id in &answer.delivery_ids {
                    println!("{id}");
                }
            }
        }
        WebhookCall::StoppedKeys(req) => {
            let answer = api(c.admin.list_stopped_keys(req).await)?;
            if json {
                print_json(&answer);
            } else if answer.keys.is_empty() {
                eprintln!("no stopped ordering keys");
            } else {
                for key in &answer.keys {
                    println!(
                        "{}\tstopped by {} at {}",
                        key.ordering_key,
                        key.stopped_by,
                        herald_core::template::rfc3339_millis(key.stopped_at_unix_ms)
                    );
                }
            }
        }
        WebhookCall::Secret(call) => {
            let secret = api(match call {
                SecretCall::Get(req) => c.admin.get_signing_secret(req).await,
                SecretCall::Rotate(req) => c.admin.rotate_signing_secret(req).await,
            })?;
            if json {
                print_json(&secret);
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
    Resume(ResumeOrderingKeyRequest),
    StoppedKeys(ListStoppedKeysRequest),
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
        event: String::new(),
        events: args.events,
        filter: args.filter.unwrap_or_default(),
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
        trace_context: args.trace_context.unwrap_or_default(),
        ordered: args.ordered,
        ordered_on_failure: args.ordered_on_failure.unwrap_or_default(),
        rate_limit: args.rate_limit,
        breaker: breaker(args.breaker_failures, args.breaker_cooldown_ms),
        auto_disable_after_s: args.auto_disable_after.unwrap_or_default(),
    })
}

/// The breaker settings the flags give, if any (a missing one is 0: the
/// default).
fn breaker(failures: Option<u32>, cooldown_ms: Option<u32>) -> Option<CircuitBreaker> {
    (failures.is_some() || cooldown_ms.is_some()).then(|| CircuitBreaker {
        failures: failures.unwrap_or_default(),
        cooldown_ms: cooldown_ms.unwrap_or_default(),
    })
}

/// Parses `--rate-limit`: `PER_SECOND`, `PER_SECOND/BURST`, or `none`,
/// which an update sends as a rate of 0 to remove the limit. The server
/// checks the ranges.
fn parse_rate_limit(value: &str) -> Result<RateLimit, String> {
    let (per_second, burst) = herald_core::rate_limit::parse_spec(value)?;
    Ok(RateLimit { per_second, burst })
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
        event: None,
        events: (!args.events.is_empty()).then_some(EventList {
            values: args.events,
        }),
        filter: args.filter,
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
        trace_context: args.trace_context,
        ordered: args.ordered,
        ordered_on_failure: args.ordered_on_failure,
        rate_limit: args.rate_limit,
        breaker: breaker(args.breaker_failures, args.breaker_cooldown_ms),
        auto_disable_after_s: args.auto_disable_after,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Command, parse};

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

        assert_eq!(
            update(&["--trace-context", "true"]).unwrap().trace_context,
            Some(true)
        );
        let limit = |value: &str| update(&["--rate-limit", value]).map(|r| r.rate_limit);
        let rate = |per_second, burst| Some(RateLimit { per_second, burst });
        assert_eq!(limit("50").unwrap(), rate(50, 0));
        assert_eq!(limit("50/20").unwrap(), rate(50, 20));
        assert_eq!(limit("none").unwrap(), rate(0, 0), "none removes it");
        assert!(parse_rate_limit("fast").unwrap_err().contains("50/20"));
        assert!(parse_rate_limit("50/x").is_err());
        assert_eq!(update(&["--enabled"]).unwrap().rate_limit, None);
        assert_eq!(
            update(&["--trace-context", "false"]).unwrap().trace_context,
            Some(false)
        );
        assert!(parse(&["webhooks", "update", "i", "--trace-context", "yes"]).is_err());

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
        assert!(!req.trace_context, "off unless asked for");
        let req = create_request(create(&["--trace-context", "true"]).unwrap()).unwrap();
        assert!(req.trace_context);
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
}
