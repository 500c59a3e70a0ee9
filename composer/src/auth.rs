//! Who is calling the compose API: a bearer token (a JWT from the
//! configured OpenID provider) verified against the issuer's keys, and the
//! tenant and scopes it carries.
//!
//! - Keys come from OIDC discovery (`{issuer}/.well-known/openid-configuration`,
//!   whose `issuer` must be the configured one, then its `jwks_uri`), are
//!   cached, and are read again when a token names a key id the cache lacks,
//!   at most once per `jwks_min_refresh_secs` (a flood of made-up key ids
//!   cannot make the composer hammer its provider).
//! - Only asymmetric algorithms are accepted (RSA, RSA-PSS, ECDSA, EdDSA),
//!   each only with a key of its own type and, when the key names one, its
//!   own algorithm: never `none`, never HMAC (whose "secret" would be the
//!   public key).
//! - `iss`, `aud` and `exp` are required; `exp` and `nbf` are checked with
//!   `leeway_secs` of clock skew.
//! - The tenant is the first of `tenant_claims` that is a non-empty string
//!   (and a valid channel name); the scopes are read from `scope_claim`.
//!
//! Nothing of a token is logged or echoed: errors say what was wrong with
//! it, never what it held.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::sync::{Mutex, RwLock};

use crate::config::AuthConfig;

/// The largest discovery document or key set read from the provider.
const MAX_DOCUMENT_BYTES: usize = 1 << 20;
/// One request to the provider.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// The algorithms a token may be signed with.
const ACCEPTED: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Read composes, blueprints, distributions; depsolve and search.
    Read,
    /// Submit, cancel and delete composes.
    Compose,
    /// Store and delete blueprints.
    Blueprint,
    /// Everything, and act in another tenant (`X-Kiln-Channel`).
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Read, Scope::Compose, Scope::Blueprint, Scope::Admin];

    /// The scope's name in a token.
    pub fn name(self) -> &'static str {
        match self {
            Scope::Read => "kiln:read",
            Scope::Compose => "kiln:compose",
            Scope::Blueprint => "kiln:blueprint",
            Scope::Admin => "kiln:admin",
        }
    }

    fn parse(name: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The token's `sub`, for the record (none without authentication).
    pub subject: Option<String>,
    /// The tenant whose composes and blueprints the caller sees and makes.
    pub tenant: String,
    scopes: BTreeSet<Scope>,
}

impl Identity {
    /// The caller of a composer without `[auth]`: the one tenant, allowed
    /// everything but acting in another tenant.
    pub fn unauthenticated(tenant: &str) -> Identity {
        Identity {
            subject: None,
            tenant: tenant.to_owned(),
            scopes: [Scope::Read, Scope::Compose, Scope::Blueprint].into(),
        }
    }

    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&Scope::Admin) || self.scopes.contains(&scope)
    }
}

/// Why a request is not authenticated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error("this API needs a bearer token (Authorization: Bearer <token>)")]
    Missing,
    /// A token that does not verify; the text says why, without its content.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The provider's keys could not be read, so no token can be checked.
    #[error("the token issuer's keys cannot be read: {0}")]
    Unavailable(String),
}

/// A tenant name: what a channel may be called.
pub fn valid_tenant(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[derive(Default)]
struct Keys {
    set: Vec<Jwk>,
    /// When the keys were last asked for (successfully or not).
    asked: Option<Instant>,
}

/// Verifies bearer tokens of one issuer.
pub struct Verifier {
    issuer: String,
    audience: String,
    tenant_claims: Vec<String>,
    scope_claim: String,
    leeway: u64,
    min_refresh: Duration,
    http: reqwest::Client,
    keys: RwLock<Keys>,
    /// One refresh at a time; the others wait for its result.
    refreshing: Mutex<()>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

#[derive(Deserialize)]
struct RawKeySet {
    keys: Vec<Value>,
}

impl Verifier {
    /// A verifier for `[auth]` (already checked by `ComposerConfig::check_auth`).
    pub fn new(config: &AuthConfig) -> Result<Verifier, String> {
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|e| format!("building the HTTP client: {e}"))?;
        Ok(Verifier {
            issuer: config.issuer.clone().unwrap_or_default(),
            audience: config.audience.clone().unwrap_or_default(),
            tenant_claims: config.tenant_claims.clone(),
            scope_claim: config.scope_claim.clone(),
            leeway: config.leeway_secs,
            min_refresh: Duration::from_secs(config.jwks_min_refresh_secs),
            http,
            keys: RwLock::default(),
            refreshing: Mutex::new(()),
        })
    }

    /// A verifier over a fixed key set, for tests of the token rules.
    #[cfg(test)]
    fn with_keys(config: &AuthConfig, set: jsonwebtoken::jwk::JwkSet) -> Verifier {
        let v = Verifier::new(config).expect("verifier");
        *v.keys.try_write().expect("unshared") = Keys {
            set: set.keys,
            asked: Some(Instant::now()),
        };
        v
    }

    /// The identity a token carries, once it verifies.
    pub async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let invalid = |m: &str| AuthError::Invalid(m.to_owned());
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| invalid("not a signed JWT with a known algorithm"))?;
        if !ACCEPTED.contains(&header.alg) {
            return Err(AuthError::Invalid(format!(
                "algorithm {:?} is not accepted (only the issuer's asymmetric keys sign tokens)",
                header.alg
            )));
        }
        let key = self.key(header.kid.as_deref(), header.alg).await?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
            .map_err(|e| AuthError::Invalid(self.describe(&e)))?
            .claims;
        self.identity(&claims)
    }

    fn describe(&self, e: &jsonwebtoken::errors::Error) -> String {
        use jsonwebtoken::errors::ErrorKind as K;
        match e.kind() {
            K::ExpiredSignature => "the token has expired".into(),
            K::ImmatureSignature => "the token is not valid yet (nbf)".into(),
            K::InvalidIssuer => format!("the token was not issued by {}", self.issuer),
            K::InvalidAudience => format!("the token is not for audience {:?}", self.audience),
            K::InvalidSignature => "the signature does not verify".into(),
            K::MissingRequiredClaim(c) => format!("the token has no {c:?} claim"),
            K::InvalidAlgorithm => "the token's algorithm does not fit its key".into(),
            K::InvalidClaimFormat(c) => format!("the token's {c:?} claim is malformed"),
            _ => "the token is malformed".into(),
        }
    }

    fn identity(&self, claims: &Map<String, Value>) -> Result<Identity, AuthError> {
        let tenant = self
            .tenant_claims
            .iter()
            .find_map(|c| {
                claims
                    .get(c)
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(|s| (c, s))
            })
            .ok_or_else(|| {
                AuthError::Invalid(format!(
                    "the token names no tenant (none of the claims {})",
                    self.tenant_claims.join(", ")
                ))
            })?;
        if !valid_tenant(tenant.1) {
            return Err(AuthError::Invalid(format!(
                "claim {:?} is not a tenant name (1 to 64 of A-Z, a-z, 0-9, '-', '_', '.')",
                tenant.0
            )));
        }
        let names: Vec<&str> = match claims.get(&self.scope_claim) {
            Some(Value::String(s)) => s.split_whitespace().collect(),
            Some(Value::Array(v)) => v.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        Ok(Identity {
            subject: claims.get("sub").and_then(Value::as_str).map(str::to_owned),
            tenant: tenant.1.to_owned(),
            scopes: names.into_iter().filter_map(Scope::parse).collect(),
        })
    }

    /// The key a token names, reading the issuer's keys again (rate
    /// limited) when the cache lacks it.
    async fn key(&self, kid: Option<&str>, alg: Algorithm) -> Result<DecodingKey, AuthError> {
        if let Some(k) = self.cached(kid, alg).await? {
            return Ok(k);
        }
        let _one = self.refreshing.lock().await;
        // Another request may have refreshed while this one waited.
        if let Some(k) = self.cached(kid, alg).await? {
            return Ok(k);
        }
        let due = self
            .keys
            .read()
            .await
            .asked
            .is_none_or(|t| t.elapsed() >= self.min_refresh);
        if due {
            self.keys.write().await.asked = Some(Instant::now());
            let set = self.fetch_keys().await?;
            self.keys.write().await.set = set;
            if let Some(k) = self.cached(kid, alg).await? {
                return Ok(k);
            }
        }
        Err(AuthError::Invalid(
            "the token is signed with a key the issuer does not publish".into(),
        ))
    }

    async fn cached(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Option<DecodingKey>, AuthError> {
        let keys = self.keys.read().await;
        let usable = |k: &&Jwk| {
            !matches!(&k.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature)
                && k.common
                    .key_algorithm
                    .is_none_or(|a| format!("{a:?}") == format!("{alg:?}"))
        };
        let found: Vec<&Jwk> = match kid {
            Some(kid) => keys
                .set
                .iter()
                .filter(|k| k.common.key_id.as_deref() == Some(kid))
                .collect(),
            None => keys.set.iter().filter(usable).collect(),
        };
        match found.as_slice() {
            [] => Ok(None),
            [k] if usable(k) => DecodingKey::from_jwk(k).map(Some).map_err(|_| {
                AuthError::Invalid("the issuer's key for this token is unusable".into())
            }),
            [_] => Err(AuthError::Invalid(
                "the token's algorithm does not fit its key".into(),
            )),
            _ => Err(AuthError::Invalid(
                "the token names no key id and the issuer has several keys".into(),
            )),
        }
    }

    async fn fetch_keys(&self) -> Result<Vec<Jwk>, AuthError> {
        let base = self.issuer.trim_end_matches('/');
        let discovery: Discovery = self
            .get_json(&format!("{base}/.well-known/openid-configuration"))
            .await?;
        if discovery.issuer.trim_end_matches('/') != base {
            return Err(AuthError::Unavailable(format!(
                "the discovery document names issuer {:?}, not {:?}",
                discovery.issuer, self.issuer
            )));
        }
        let raw: RawKeySet = self.get_json(&discovery.jwks_uri).await?;
        // Keys kiln cannot use (other types, encryption keys) are skipped,
        // not fatal: the set may hold more than signing keys.
        let keys: Vec<Jwk> = raw
            .keys
            .into_iter()
            .filter_map(|k| serde_json::from_value(k).ok())
            .collect();
        tracing::info!(issuer = %self.issuer, keys = keys.len(), "read the token issuer's keys");
        Ok(keys)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, AuthError> {
        let unavailable = |m: String| AuthError::Unavailable(format!("{url}: {m}"));
        let mut response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        if !response.status().is_success() {
            return Err(unavailable(format!("HTTP {}", response.status())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| unavailable(e.to_string()))?
        {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(unavailable(format!(
                    "larger than {MAX_DOCUMENT_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body)
            .map_err(|e| unavailable(format!("not the JSON expected: {e}")))
    }
}

#[cfg(test)]
mod tests;
