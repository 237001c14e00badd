//! `herald keys create|list|revoke`: the API keys callers of the gRPC API
//! present (Admin's key calls).
//!
//! "API keys" are bearer tokens; they are not Fire's idempotency keys nor
//! webhook signing secrets (`herald webhooks secret`). A created token is
//! printed once and never again: this module must never store or log it.

use clap::{Args, Subcommand};
use herald_proto::v1::{
    ApiKey, CreateApiKeyRequest, CreatedApiKey, ListApiKeysRequest, RevokeApiKeyRequest,
};

use crate::cli::OutputArgs;
use crate::client::{Connection, api, connect};
use crate::output::{format_unix_ms, print_json, table, tenant_label};

#[derive(Debug, Subcommand)]
pub enum ApiKeysCommand {
    /// Create a key and print its token (shown only this once).
    Create(CreateKeyArgs),
    /// List keys (never their tokens: Herald keeps only hashes).
    List {
        /// Only keys limited to this tenant (empty string: the default
        /// tenant).
        #[arg(long)]
        tenant: Option<String>,
        /// Also list revoked keys.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Revoke a key; every ingest refuses it within about a second.
    Revoke {
        /// Key id, as printed by `herald keys list`.
        id: String,
        #[command(flatten)]
        output: OutputArgs,
    },
}

#[derive(Debug, Args)]
pub struct CreateKeyArgs {
    /// Who or what uses the key, e.g. "shop-1 back-end".
    #[arg(long)]
    pub name: String,
    /// Comma-separated scopes: fire (Fire), read (ListEvents and the
    /// Admin API's read calls), admin (everything).
    #[arg(long = "scope", value_delimiter = ',', required = true, value_name = "SCOPES",
          value_parser = ["fire", "read", "admin"])]
    pub scopes: Vec<String>,
    /// Limit the key to this tenant (empty string: the default tenant);
    /// without it the key acts for every tenant.
    #[arg(long)]
    pub tenant: Option<String>,
    #[command(flatten)]
    pub output: OutputArgs,
}

impl ApiKeysCommand {
    pub fn output(&self) -> OutputArgs {
        match self {
            Self::Create(args) => args.output,
            Self::List { output, .. } | Self::Revoke { output, .. } => *output,
        }
    }
}

pub fn create_request(args: &CreateKeyArgs) -> CreateApiKeyRequest {
    CreateApiKeyRequest {
        name: args.name.clone(),
        scopes: args.scopes.clone(),
        tenant: args.tenant.clone(),
    }
}

pub async fn run(conn: &Connection, json: bool, command: ApiKeysCommand) -> anyhow::Result<()> {
    let mut c = connect(conn).await?;
    match command {
        ApiKeysCommand::Create(args) => {
            let created = api(c.admin.create_api_key(create_request(&args)).await)?;
            if json {
                print_json(&created);
            } else {
                print!("{}", created_details(&created));
            }
        }
        ApiKeysCommand::List { tenant, all, .. } => {
            let answer = api(c
                .admin
                .list_api_keys(ListApiKeysRequest {
                    tenant,
                    include_revoked: all,
                })
                .await)?;
            if json {
                print_json(&answer);
            } else if answer.keys.is_empty() {
                eprintln!("no API keys found");
            } else {
                print!("{}", keys_table(&answer.keys));
            }
        }
        ApiKeysCommand::Revoke { id, .. } => {
            let key = api(c.admin.revoke_api_key(RevokeApiKeyRequest { id }).await)?;
            if json {
                print_json(&key);
            } else {
                println!("revoked API key {} ({})", key.id, key.token_prefix);
            }
        }
    }
    Ok(())
}

fn key_tenant(key: &ApiKey) -> String {
    key.tenant
        .as_deref()
        .map_or_else(|| "(all)".to_owned(), tenant_label)
}

pub fn created_details(created: &CreatedApiKey) -> String {
    let mut out = String::new();
    if let Some(key) = &created.key {
        out.push_str(&format!(
            "id        {}\nname      {}\nscopes    {}\ntenant    {}\n",
            key.id,
            key.name,
            key.scopes.join(","),
            key_tenant(key)
        ));
    }
    out.push_str(&format!(
        "token     {}\n(shown only now: Herald stores only its hash. Use it as \
         HERALD_TOKEN or `authorization: Bearer <token>`)\n",
        created.token
    ));
    out
}

pub fn keys_table(keys: &[ApiKey]) -> String {
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| {
            vec![
                k.id.clone(),
                k.name.clone(),
                k.token_prefix.clone(),
                k.scopes.join(","),
                key_tenant(k),
                format_unix_ms(k.created_at_unix_ms),
                k.revoked_at_unix_ms
                    .map_or_else(|| "-".to_owned(), format_unix_ms),
            ]
        })
        .collect();
    table(
        &[
            "ID", "NAME", "PREFIX", "SCOPES", "TENANT", "CREATED", "REVOKED",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::{Cli, Command};

    fn keys(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(["herald", "keys"].iter().chain(args))
    }

    #[test]
    fn create_takes_comma_separated_scopes() {
        let cli = keys(&[
            "create",
            "--name",
            "shop",
            "--scope",
            "fire,read",
            "--tenant",
            "s1",
        ])
        .unwrap();
        let Command::ApiKeys(ApiKeysCommand::Create(args)) = cli.command else {
            panic!("not keys create");
        };
        let request = create_request(&args);
        assert_eq!(request.scopes, ["fire", "read"]);
        assert_eq!(request.tenant.as_deref(), Some("s1"));
        assert_eq!(request.name, "shop");
        assert!(keys(&["create", "--name", "x", "--scope", "write"]).is_err());
        assert!(
            keys(&["create", "--name", "x"]).is_err(),
            "a scope is required"
        );
    }

    #[test]
    fn token_and_tls_options_are_global() {
        let cli = Cli::try_parse_from([
            "herald",
            "keys",
            "list",
            "--token",
            "hrk_x",
            "--ca-cert",
            "ca.pem",
        ])
        .unwrap();
        assert_eq!(cli.auth.token.as_deref(), Some("hrk_x"));
        assert!(cli.auth.ca_cert.is_some());
        assert!(
            Cli::try_parse_from(["herald", "--client-cert", "c.pem", "keys", "list"]).is_err(),
            "--client-cert needs --client-key"
        );
    }

    #[test]
    fn listings_show_prefixes_and_created_tokens_are_shown_once() {
        let key = ApiKey {
            id: "0193".into(),
            name: "shop".into(),
            token_prefix: "hrk_abcdefgh".into(),
            scopes: vec!["fire".into()],
            tenant: Some(String::new()),
            created_at_unix_ms: 0,
            revoked_at_unix_ms: None,
        };
        let listing = keys_table(std::slice::from_ref(&key));
        assert!(listing.contains("hrk_abcdefgh") && listing.contains("(default)"));
        let created = CreatedApiKey {
            key: Some(ApiKey {
                tenant: None,
                ..key
            }),
            token: "hrk_secret".into(),
        };
        let details = created_details(&created);
        assert!(details.contains("hrk_secret") && details.contains("(all)"));
    }
}
