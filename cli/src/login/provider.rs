//! The OpenID provider as `kiln login` uses it: discovery, the token
//! endpoint (client credentials, refresh token, device code) and the device
//! authorization endpoint (RFC 8628). Answers are read field by field, so a
//! malformed one is reported by the field's name, never by its value.

use std::time::Duration;

use base64::Engine;
use serde_json::{Map, Value};

use super::config::check_endpoint;
use super::secret::{printable, Secret};

const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

#[derive(Debug, thiserror::Error)]
pub(crate) enum ProviderError {
    #[error("cannot reach the OpenID provider at {url}: {cause}")]
    Unreachable { url: String, cause: String },
    /// An OAuth error answer (`error`, `error_description`).
    #[error("the OpenID provider refused ({}) at {url}", refusal(.error, .description.as_deref()))]
    Refused {
        url: String,
        status: u16,
        error: String,
        description: Option<String>,
    },
    #[error("{url}: {message}")]
    Unexpected { url: String, message: String },
}

fn refusal(error: &str, description: Option<&str>) -> String {
    match description {
        Some(d) => format!("{error}: {d}"),
        None => error.to_owned(),
    }
}

/// How the client proves who it is at the token endpoint.
pub(crate) struct ClientAuth<'a> {
    pub(crate) client_id: &'a str,
    /// None for a public client, which names itself with `client_id=`.
    pub(crate) secret: Option<&'a Secret>,
}

/// A token endpoint's success.
#[derive(Debug)]
pub(crate) struct TokenGrant {
    pub(crate) access_token: Secret,
    pub(crate) expires_in: Option<u64>,
    pub(crate) refresh_token: Option<Secret>,
    /// The ID token's claims (signature unchecked: only for naming the user).
    pub(crate) id_claims: Option<Map<String, Value>>,
}

/// A device authorization's answer: what the person is told, and what the
/// client polls with.
#[derive(Debug)]
pub(crate) struct DeviceAuthorization {
    pub(crate) device_code: Secret,
    pub(crate) user_code: String,
    pub(crate) verification_uri: String,
    pub(crate) verification_uri_complete: Option<String>,
    pub(crate) expires_in: u64,
    pub(crate) interval: Option<u64>,
}

/// A provider found by discovery.
pub(crate) struct OpenIdProvider {
    /// As the discovery document states it.
    pub(crate) issuer: String,
    token_endpoint: String,
    device_authorization_endpoint: Option<String>,
    /// The discovery document offers only `client_secret_post`.
    secret_in_body: bool,
    http: reqwest::Client,
}

impl OpenIdProvider {
    /// Reads `{issuer}/.well-known/openid-configuration`; its `issuer` must
    /// be the one asked for, and its endpoints pass the issuer's rule
    /// (https, or http on loopback).
    pub(crate) async fn discover(issuer: &str) -> Result<OpenIdProvider, ProviderError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            // A redirect would carry a form with a secret in it elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ProviderError::Unexpected {
                url: issuer.to_owned(),
                message: format!("cannot set up HTTP: {e}"),
            })?;
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let resp = http
            .get(&url)
            .send()
            .await
            .map_err(|e| unreachable(&url, &e))?;
        let status = resp.status();
        let doc = read_object(&url, resp).await?;
        if !status.is_success() {
            return Err(refused(&url, status.as_u16(), &doc));
        }
        let field = |name: &str| doc.get(name).and_then(Value::as_str).map(str::to_owned);
        let unexpected = |message: String| ProviderError::Unexpected {
            url: url.clone(),
            message,
        };
        let stated = field("issuer")
            .ok_or_else(|| unexpected("not a discovery document: no issuer".into()))?;
        if !super::config::same_issuer(&stated, issuer) {
            return Err(unexpected(format!(
                "the document is for issuer {}, not {issuer}",
                printable(&stated)
            )));
        }
        let endpoint = |name: &str| -> Result<Option<String>, ProviderError> {
            let Some(value) = field(name) else {
                return Ok(None);
            };
            let parsed = url::Url::parse(&value)
                .map_err(|e| unexpected(format!("{name} is not a URL: {e}")))?;
            check_endpoint(&parsed).map_err(|m| unexpected(format!("{name}: {m}")))?;
            Ok(Some(value))
        };
        let token_endpoint = endpoint("token_endpoint")?
            .ok_or_else(|| unexpected("the discovery document has no token_endpoint".into()))?;
        let device_authorization_endpoint = endpoint("device_authorization_endpoint")?;
        let methods: Vec<&str> = doc
            .get("token_endpoint_auth_methods_supported")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        // Absent, the default is client_secret_basic (OpenID Discovery §3).
        let secret_in_body = !methods.is_empty()
            && !methods.contains(&"client_secret_basic")
            && methods.contains(&"client_secret_post");
        Ok(OpenIdProvider {
            issuer: stated,
            token_endpoint,
            device_authorization_endpoint,
            secret_in_body,
            http,
        })
    }

    pub(crate) async fn client_credentials(
        &self,
        client: &ClientAuth<'_>,
        resource: Option<&str>,
        scope: Option<&str>,
    ) -> Result<TokenGrant, ProviderError> {
        let mut form = vec![("grant_type", "client_credentials")];
        form.extend(resource.map(|r| ("resource", r)));
        form.extend(scope.map(|s| ("scope", s)));
        self.token_request(client, form).await
    }

    /// A new access token from a refresh token; the scope is the grant's own.
    pub(crate) async fn refresh(
        &self,
        client: &ClientAuth<'_>,
        refresh_token: &Secret,
        resource: Option<&str>,
    ) -> Result<TokenGrant, ProviderError> {
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.expose()),
        ];
        form.extend(resource.map(|r| ("resource", r)));
        self.token_request(client, form).await
    }

    /// One poll of the token endpoint for a device code; `authorization_pending`
    /// and `slow_down` come back as [`ProviderError::Refused`].
    pub(crate) async fn device_token(
        &self,
        client: &ClientAuth<'_>,
        device_code: &Secret,
        resource: Option<&str>,
    ) -> Result<TokenGrant, ProviderError> {
        let mut form = vec![
            ("grant_type", DEVICE_GRANT),
            ("device_code", device_code.expose()),
        ];
        form.extend(resource.map(|r| ("resource", r)));
        self.token_request(client, form).await
    }

    pub(crate) async fn device_authorization(
        &self,
        client: &ClientAuth<'_>,
        resource: Option<&str>,
        scope: Option<&str>,
    ) -> Result<DeviceAuthorization, ProviderError> {
        let url = self
            .device_authorization_endpoint
            .as_deref()
            .ok_or_else(|| ProviderError::Unexpected {
                url: self.issuer.clone(),
                message: "this provider offers no device flow (no device_authorization_endpoint \
                          in its discovery document); a client with a secret logs in by client \
                          credentials"
                    .into(),
            })?;
        let mut form = Vec::new();
        form.extend(resource.map(|r| ("resource", r)));
        form.extend(scope.map(|s| ("scope", s)));
        let doc = self.post_form(url, client, form).await?;
        let unexpected = |message: String| ProviderError::Unexpected {
            url: url.to_owned(),
            message,
        };
        let text = |name: &str| doc.get(name).and_then(Value::as_str).map(str::to_owned);
        let required = |name: &str| {
            text(name).ok_or_else(|| unexpected(format!("no {name} in the device authorization")))
        };
        let expires_in = doc
            .get("expires_in")
            .and_then(Value::as_u64)
            .ok_or_else(|| {
                unexpected("no expires_in (seconds) in the device authorization".into())
            })?;
        Ok(DeviceAuthorization {
            device_code: Secret::new(required("device_code")?),
            user_code: required("user_code")?,
            // Some providers (Google's) still say verification_url.
            verification_uri: text("verification_uri")
                .or_else(|| text("verification_url"))
                .ok_or_else(|| {
                    unexpected("no verification_uri in the device authorization".into())
                })?,
            verification_uri_complete: text("verification_uri_complete"),
            expires_in,
            interval: doc.get("interval").and_then(Value::as_u64),
        })
    }

    async fn token_request(
        &self,
        client: &ClientAuth<'_>,
        form: Vec<(&str, &str)>,
    ) -> Result<TokenGrant, ProviderError> {
        let url = &self.token_endpoint;
        let doc = self.post_form(url, client, form).await?;
        let unexpected = |message: &str| ProviderError::Unexpected {
            url: url.clone(),
            message: format!("not a token answer: {message}"),
        };
        let access_token = doc
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| unexpected("no access_token"))?;
        let token_type = doc.get("token_type").and_then(Value::as_str).unwrap_or("");
        if !token_type.eq_ignore_ascii_case("bearer") {
            return Err(unexpected("token_type is not Bearer"));
        }
        Ok(TokenGrant {
            access_token: Secret::new(access_token),
            expires_in: doc.get("expires_in").and_then(Value::as_u64),
            refresh_token: doc
                .get("refresh_token")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
                .map(Secret::new),
            id_claims: doc
                .get("id_token")
                .and_then(Value::as_str)
                .and_then(unverified_claims),
        })
    }

    /// POSTs a form with the client's authentication; the answer's JSON
    /// object on success, its OAuth error otherwise.
    async fn post_form(
        &self,
        url: &str,
        client: &ClientAuth<'_>,
        mut form: Vec<(&str, &str)>,
    ) -> Result<Map<String, Value>, ProviderError> {
        let mut request = self.http.post(url).header("accept", "application/json");
        match client.secret {
            Some(secret) if !self.secret_in_body => {
                // RFC 6749 §2.3.1: both parts form-encoded, then joined.
                request = request.basic_auth(
                    form_encode(client.client_id),
                    Some(form_encode(secret.expose())),
                );
            }
            Some(secret) => {
                form.push(("client_id", client.client_id));
                form.push(("client_secret", secret.expose()));
            }
            None => form.push(("client_id", client.client_id)),
        }
        let resp = request
            .form(&form)
            .send()
            .await
            .map_err(|e| unreachable(url, &e))?;
        let status = resp.status();
        let doc = read_object(url, resp).await?;
        if status.is_success() {
            Ok(doc)
        } else {
            Err(refused(url, status.as_u16(), &doc))
        }
    }
}

/// The answer as a JSON object. A body that is not one is described by its
/// status and, for an error, its first bytes (a token endpoint's success is
/// never echoed: it may hold a token).
async fn read_object(
    url: &str,
    resp: reqwest::Response,
) -> Result<Map<String, Value>, ProviderError> {
    let status = resp.status();
    let body = resp.bytes().await.map_err(|e| unreachable(url, &e))?;
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(map)) => Ok(map),
        _ if status.is_success() => Err(ProviderError::Unexpected {
            url: url.to_owned(),
            message: format!("HTTP {status}, and not a JSON object"),
        }),
        _ => Err(ProviderError::Unexpected {
            url: url.to_owned(),
            message: format!(
                "HTTP {status}: {}",
                printable(String::from_utf8_lossy(&body[..body.len().min(200)]).trim())
            ),
        }),
    }
}

fn refused(url: &str, status: u16, doc: &Map<String, Value>) -> ProviderError {
    match doc.get("error").and_then(Value::as_str) {
        Some(error) => ProviderError::Refused {
            url: url.to_owned(),
            status,
            error: printable(error),
            description: doc
                .get("error_description")
                .and_then(Value::as_str)
                .map(printable),
        },
        None => ProviderError::Unexpected {
            url: url.to_owned(),
            message: format!("HTTP {status} without an OAuth error"),
        },
    }
}

fn unreachable(url: &str, e: &reqwest::Error) -> ProviderError {
    let mut cause = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    ProviderError::Unreachable {
        url: url.to_owned(),
        cause,
    }
}

/// The claims of a JWT, read without checking its signature: kiln uses them
/// only to say who logged in and until when. The composer verifies tokens.
pub(crate) fn unverified_claims(jwt: &str) -> Option<Map<String, Value>> {
    let mut parts = jwt.split('.');
    let (_header, payload) = (parts.next()?, parts.next()?);
    parts.next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// `application/x-www-form-urlencoded` of one value, unreserved characters
/// kept.
fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_of_a_jwt() {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"sub":"alice","exp":1700000000}"#);
        let claims = unverified_claims(&format!("e30.{payload}.sig")).unwrap();
        assert_eq!(claims["sub"], "alice");
        assert!(unverified_claims("opaque-token").is_none());
        assert!(unverified_claims("a.!!!.c").is_none());
    }

    #[test]
    fn basic_auth_parts_are_form_encoded() {
        assert_eq!(form_encode("ci-1_a.~"), "ci-1_a.~");
        assert_eq!(form_encode("a:b c/é"), "a%3Ab%20c%2F%C3%A9");
    }

    #[test]
    fn a_refusal_says_what_the_provider_said() {
        let doc =
            serde_json::json!({"error": "invalid_client", "error_description": "no\nsuch client"});
        let e = refused("https://id/token", 401, doc.as_object().unwrap());
        assert_eq!(
            e.to_string(),
            "the OpenID provider refused (invalid_client: no?such client) at https://id/token"
        );
    }
}
