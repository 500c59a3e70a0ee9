//! The cached token for a command that talks to the composer, renewed when
//! it is about to expire: by its refresh token, or by client credentials
//! again with the secret read from where the login read it. Never an
//! expired token sent in the hope that it works.

use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};

use super::cache::{CacheError, CachedLogin, TokenStore};
use super::config::{read_login_file, ConfigError, Grant};
use super::provider::{unverified_claims, ClientAuth, OpenIdProvider, TokenGrant};
use super::secret::Secret;

/// A token closer than this to its expiry is renewed first: a compose
/// request must not be refused halfway through a command.
const RENEW_MARGIN_SECS: i64 = 60;

#[derive(Debug, thiserror::Error)]
pub(crate) enum TokenError {
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("not logged in to {issuer} (client {client_id}), which {config} describes: run kiln login --login-config {config}")]
    NotLoggedIn {
        issuer: String,
        client_id: String,
        config: String,
    },
    #[error("the login to {issuer} (client {client_id}) {when} and cannot be renewed: {why}; run kiln login")]
    CannotRenew {
        issuer: String,
        client_id: String,
        when: String,
        why: String,
    },
}

/// The cached token of the login `login_config` describes, else of the
/// newest login; None when there is none (the composer then says what it
/// needs). Renewed first when it expires within a minute.
pub(crate) async fn cached_token(
    login_config: Option<&Path>,
) -> Result<Option<Secret>, TokenError> {
    let store = match TokenStore::open() {
        // No home, no cache: nobody logged in here (a bare container).
        Err(CacheError::NoPath) if login_config.is_none() => return Ok(None),
        other => other?,
    };
    let cache = store.read()?;
    let (issuer, client_id) = match login_config {
        Some(path) => {
            let file = read_login_file(path)?;
            let (Some(issuer), Some(client_id)) = (file.issuer, file.client_id) else {
                return Err(ConfigError::Missing(format!(
                    "{} does not name both issuer and client_id",
                    path.display()
                ))
                .into());
            };
            if cache.find(&issuer, &client_id).is_none() {
                return Err(TokenError::NotLoggedIn {
                    issuer,
                    client_id,
                    config: path.display().to_string(),
                });
            }
            (issuer, client_id)
        }
        None => match cache.current() {
            Some(login) => (login.issuer.clone(), login.client_id.clone()),
            None => return Ok(None),
        },
    };
    let margin = chrono::Duration::seconds(RENEW_MARGIN_SECS);
    if let Some(login) = cache.find(&issuer, &client_id) {
        if login.fresh(Utc::now(), margin) {
            return Ok(Some(login.access_token.clone()));
        }
    }

    // Renew under the lock, reading the cache again: another kiln may have
    // renewed it while this one waited.
    let lock = store.lock().await?;
    let mut cache = store.read()?;
    let Some(login) = cache.find_mut(&issuer, &client_id) else {
        return Ok(None);
    };
    if login.fresh(Utc::now(), margin) {
        return Ok(Some(login.access_token.clone()));
    }
    let grant = renew(login).await.map_err(|why| TokenError::CannotRenew {
        issuer: login.issuer.clone(),
        client_id: login.client_id.clone(),
        when: expiry_words(login.expires_at, Utc::now()),
        why,
    })?;
    update(login, grant, Utc::now());
    let token = login.access_token.clone();
    store.write(&cache, &lock)?;
    Ok(Some(token))
}

/// A new token for `login`, or why there is none.
async fn renew(login: &CachedLogin) -> Result<TokenGrant, String> {
    let provider = OpenIdProvider::discover(&login.issuer)
        .await
        .map_err(|e| e.to_string())?;
    let secret = login
        .client_secret_from
        .as_ref()
        .map(|source| source.read(&login.issuer, &login.client_id));
    let mut why = Vec::new();
    if let Some(refresh_token) = &login.refresh_token {
        match &secret {
            Some(Err(e)) => why.push(format!("the client secret cannot be read ({e})")),
            _ => {
                let client = ClientAuth {
                    client_id: &login.client_id,
                    secret: secret.as_ref().and_then(|s| s.as_ref().ok()),
                };
                match provider
                    .refresh(&client, refresh_token, login.resource.as_deref())
                    .await
                {
                    Ok(grant) => return Ok(grant),
                    Err(e) => why.push(format!("the refresh token was not taken: {e}")),
                }
            }
        }
    }
    match (login.grant, &secret) {
        (Grant::ClientCredentials, Some(Ok(secret))) => {
            let client = ClientAuth {
                client_id: &login.client_id,
                secret: Some(secret),
            };
            match provider
                .client_credentials(&client, login.resource.as_deref(), login.scope.as_deref())
                .await
            {
                Ok(grant) => return Ok(grant),
                Err(e) => why.push(e.to_string()),
            }
        }
        (Grant::ClientCredentials, Some(Err(e))) if login.refresh_token.is_none() => {
            why.push(format!("the client secret cannot be read ({e})"));
        }
        (Grant::ClientCredentials, None) => {
            why.push("no client secret to log in with again".into());
        }
        (Grant::DeviceCode, _) if login.refresh_token.is_none() => why.push(
            "the provider gave no refresh token (add offline_access to the scope to stay \
             logged in)"
                .into(),
        ),
        _ => {}
    }
    Err(why.join("; "))
}

/// The login after a new token: a refresh token not sent again is kept
/// (providers that do not rotate them), as is a subject not stated again.
pub(crate) fn update(login: &mut CachedLogin, grant: TokenGrant, now: DateTime<Utc>) {
    login.expires_at = expires_at(&grant, now);
    if let Some(subject) = subject(&grant) {
        login.subject = Some(subject);
    }
    if let Some(refresh) = grant.refresh_token {
        login.refresh_token = Some(refresh);
    }
    login.access_token = grant.access_token;
}

/// `expires_in` from now; else the access token's own `exp`, when it is a JWT.
pub(crate) fn expires_at(grant: &TokenGrant, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match grant.expires_in {
        Some(secs) => i64::try_from(secs)
            .ok()
            .and_then(chrono::Duration::try_seconds)
            .and_then(|d| now.checked_add_signed(d)),
        None => unverified_claims(grant.access_token.expose())
            .and_then(|c| c.get("exp").and_then(serde_json::Value::as_i64))
            .and_then(|exp| DateTime::from_timestamp(exp, 0)),
    }
}

/// Who logged in: the ID token's `sub`, else the access token's.
pub(crate) fn subject(grant: &TokenGrant) -> Option<String> {
    let from = |claims: Option<serde_json::Map<String, serde_json::Value>>| {
        claims.and_then(|c| c.get("sub").and_then(|s| s.as_str()).map(str::to_owned))
    };
    from(grant.id_claims.clone()).or_else(|| from(unverified_claims(grant.access_token.expose())))
}

pub(crate) fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn expiry_words(expires_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    match expires_at {
        Some(t) if t <= now => format!("expired at {}", format_time(t)),
        Some(t) => format!("expires at {}", format_time(t)),
        None => "has expired".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(expires_in: Option<u64>, refresh: Option<&str>) -> TokenGrant {
        TokenGrant {
            access_token: Secret::new("opaque"),
            expires_in,
            refresh_token: refresh.map(Secret::new),
            id_claims: None,
        }
    }

    #[test]
    fn a_renewal_keeps_a_refresh_token_not_sent_again() {
        let now = Utc::now();
        let mut login = CachedLogin {
            issuer: "https://id".into(),
            client_id: "kiln-cli".into(),
            grant: Grant::DeviceCode,
            resource: None,
            scope: None,
            client_secret_from: None,
            subject: Some("alice".into()),
            access_token: Secret::new("old"),
            expires_at: Some(now),
            refresh_token: Some(Secret::new("r1")),
        };
        update(&mut login, grant(Some(600), None), now);
        assert_eq!(login.refresh_token, Some(Secret::new("r1")));
        assert_eq!(login.subject.as_deref(), Some("alice"));
        assert_eq!(login.expires_at, Some(now + chrono::Duration::seconds(600)));
        assert!(login.fresh(now, chrono::Duration::seconds(60)));
        assert!(!login.fresh(
            now + chrono::Duration::seconds(541),
            chrono::Duration::seconds(60)
        ));
        update(&mut login, grant(None, Some("r2")), now);
        assert_eq!(login.refresh_token, Some(Secret::new("r2")));
        assert_eq!(login.expires_at, None);
    }
}
