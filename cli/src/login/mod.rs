//! `kiln login` and `kiln logout`: a token from the composer's OpenID
//! provider, kept in the token cache (`cache.rs`) and renewed when a command
//! needs it (`renew.rs`), so that neither people nor scripts paste tokens.
//!
//! A login is the provider (`issuer`), the client (`client_id`) and what to
//! ask for (`resource`, `scope`), from `login.toml` and flags
//! (`config.rs`). With a client secret it is the client credentials grant
//! (scripts, services); without, the device flow (`device.rs`), in which a
//! person approves the login in a browser. Tokens and secrets are
//! [`secret::Secret`]s: never printed, never in an error.

mod cache;
mod config;
mod device;
mod provider;
mod renew;
mod secret;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use chrono::Utc;
use clap::Args;
use serde_json::json;

use crate::compose::Output;
use cache::{CachedLogin, TokenStore};
use config::{Grant, LoginOverrides, CONFIG_ENV};
use provider::{ClientAuth, OpenIdProvider};
use renew::format_time;
use secret::printable;

pub(crate) use renew::{cached_token, TokenError};

const LOGIN_EXAMPLES: &str = "\
Configuration (TOML; --login-config, env KILN_LOGIN_CONFIG, default
$XDG_CONFIG_HOME/kiln/login.toml, else ~/.config/kiln/login.toml):

  issuer = \"https://id.cluster.example/realms/hpc\"
  client_id = \"kiln-cli\"
  resource = \"urn:kiln\"                       # optional: resource= on each request
  scope = \"openid offline_access kiln:read kiln:compose\"   # optional, sent as written
  # client_secret = \"...\"                     # a script's client; the file must be mode 0600

Without a client secret, a person logs in by the device flow: kiln prints a
URL and a code on standard error, you approve in any browser, and kiln
finishes by itself. With one (in the file, or --client-secret-file), the
client credentials grant: no person involved.

The token is cached in $KILN_TOKEN_CACHE, else $XDG_CACHE_HOME/kiln/token.json,
else ~/.cache/kiln/token.json (mode 0600), one entry per issuer and client.
kiln compose and kiln blueprint use it when neither --token nor KILN_TOKEN is
given: the newest login, or the one --login-config describes. A token that
expires within a minute is renewed first, by its refresh token (ask for
offline_access to get one) or, for client credentials, with the secret read
again from its file; the cache never holds the secret.

Examples:
  # A person, with the settings in ~/.config/kiln/login.toml:
  kiln login
  kiln compose list

  # A script, nothing in files but the secret:
  kiln login --issuer https://id.cluster.example/realms/hpc --client-id ci-builder \\
      --client-secret-file /run/secrets/kiln --resource urn:kiln --scope 'kiln:read kiln:compose'

  kiln login --output json     # {issuer, client_id, subject, grant, scope, expires_at, renewable, token_cache}
  kiln logout";

#[derive(Args)]
#[command(after_long_help = LOGIN_EXAMPLES)]
pub(crate) struct LoginArgs {
    /// The login's configuration file (TOML: issuer, client_id, client_secret,
    /// resource, scope). Default: $XDG_CONFIG_HOME/kiln/login.toml, if it exists.
    #[arg(long, env = CONFIG_ENV, value_name = "PATH")]
    login_config: Option<PathBuf>,
    /// The OpenID provider's issuer URL (https; found by discovery).
    #[arg(long, env = "KILN_LOGIN_ISSUER", value_name = "URL")]
    issuer: Option<String>,
    /// The client registered at the provider for kiln.
    #[arg(long, env = "KILN_LOGIN_CLIENT_ID", value_name = "ID")]
    client_id: Option<String>,
    /// A file holding the client's secret (mode 0600); with it, kiln logs in
    /// by client credentials. Never give a secret on the command line.
    #[arg(long, env = "KILN_LOGIN_CLIENT_SECRET_FILE", value_name = "PATH")]
    client_secret_file: Option<PathBuf>,
    /// The resource indicator sent with each request (RFC 8707), e.g. urn:kiln.
    #[arg(long, env = "KILN_LOGIN_RESOURCE", value_name = "URI")]
    resource: Option<String>,
    /// The scopes to ask for, space-separated, e.g. "kiln:read kiln:compose";
    /// add offline_access to get a refresh token.
    #[arg(long, env = "KILN_LOGIN_SCOPE", value_name = "SCOPES")]
    scope: Option<String>,
    /// Log in as a person in a browser (the device flow) even with a client secret.
    #[arg(long)]
    device: bool,
    /// Output format: text for people, json for scripts.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(Args)]
pub(crate) struct LogoutArgs {
    /// Log out of the login this configuration file describes (default: the newest login).
    #[arg(long, env = CONFIG_ENV, value_name = "PATH")]
    login_config: Option<PathBuf>,
    /// Forget every login.
    #[arg(long)]
    all: bool,
    /// Output format: text for people, json for scripts.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

pub(crate) async fn login(args: LoginArgs) -> anyhow::Result<ExitCode> {
    let config = config::config_to_read(args.login_config.as_deref());
    let settings = config::settings(
        config.as_deref(),
        LoginOverrides {
            issuer: args.issuer,
            client_id: args.client_id,
            client_secret_file: args.client_secret_file,
            resource: args.resource,
            scope: args.scope,
            device: args.device,
        },
    )?;
    let provider = OpenIdProvider::discover(&settings.issuer).await?;
    let client = ClientAuth {
        client_id: &settings.client_id,
        secret: settings.client_secret.as_ref().map(|(s, _)| s),
    };
    let resource = settings.resource.as_deref();
    let scope = settings.scope.as_deref();
    let grant = match settings.grant {
        Grant::ClientCredentials => provider
            .client_credentials(&client, resource, scope)
            .await
            .with_context(|| {
                format!(
                    "logging in to {} as {}",
                    provider.issuer, settings.client_id
                )
            })?,
        Grant::DeviceCode => device::login(&provider, &client, resource, scope)
            .await
            .with_context(|| format!("logging in to {}", provider.issuer))?,
    };
    let now = Utc::now();
    let login = CachedLogin {
        issuer: provider.issuer.clone(),
        client_id: settings.client_id.clone(),
        grant: settings.grant,
        resource: settings.resource.clone(),
        scope: settings.scope.clone(),
        client_secret_from: settings.client_secret.map(|(_, source)| source),
        subject: renew::subject(&grant),
        access_token: grant.access_token.clone(),
        expires_at: renew::expires_at(&grant, now),
        refresh_token: grant.refresh_token.clone(),
    };

    let store = TokenStore::open()?;
    let lock = store.lock().await?;
    let mut cache = store.read()?;
    cache.insert(login.clone());
    store.write(&cache, &lock)?;
    drop(lock);

    let renewable = login.refresh_token.is_some()
        || (login.grant == Grant::ClientCredentials && login.client_secret_from.is_some());
    match args.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "issuer": login.issuer,
                "client_id": login.client_id,
                "subject": login.subject,
                "grant": login.grant,
                "scope": login.scope,
                "expires_at": login.expires_at.map(format_time),
                "renewable": renewable,
                "token_cache": store.path(),
            }))?
        ),
        Output::Text => {
            let who = match &login.subject {
                Some(s) => printable(s),
                None => format!("client {}", login.client_id),
            };
            let until = match login.expires_at {
                Some(t) => format!("token valid until {}", format_time(t)),
                None => "token with no stated expiry".into(),
            };
            println!("logged in to {} as {who}, {until}", login.issuer);
            if !renewable {
                eprintln!(
                    "note: no refresh token, so kiln cannot renew this login; run kiln login \
                     again when it expires (or add offline_access to the scope)"
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn logout(args: LogoutArgs) -> anyhow::Result<ExitCode> {
    let store = TokenStore::open()?;
    let lock = store.lock().await?;
    let mut cache = store.read()?;
    let removed: Vec<CachedLogin> = if args.all {
        std::mem::take(&mut cache.logins)
    } else {
        let key = match &args.login_config {
            Some(path) => {
                let file = config::read_login_file(path)?;
                file.issuer.zip(file.client_id)
            }
            None => cache
                .current()
                .map(|l| (l.issuer.clone(), l.client_id.clone())),
        };
        key.and_then(|(issuer, client_id)| cache.remove(&issuer, &client_id))
            .into_iter()
            .collect()
    };
    store.write(&cache, &lock)?;
    drop(lock);
    let name = |l: &CachedLogin| format!("{} (client {})", l.issuer, l.client_id);
    match args.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "logged_out": removed.iter().map(|l| json!({"issuer": l.issuer, "client_id": l.client_id})).collect::<Vec<_>>(),
                "current": cache.current().map(|l| json!({"issuer": l.issuer, "client_id": l.client_id})),
            }))?
        ),
        Output::Text => {
            if removed.is_empty() {
                println!("not logged in");
            }
            for l in &removed {
                println!("logged out of {}", name(l));
            }
            if let Some(l) = cache.current() {
                println!("kiln now uses the login to {}", name(l));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
