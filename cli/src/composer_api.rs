//! A client of the composer's compose API (`/api/image-builder-composer/v2`).
//!
//! Every failure says what went wrong in the user's terms: the composer's own
//! `reason` and `details.field` for a refused request, the URL for a
//! composer that cannot be reached or answers something that is not the API.

use std::time::Duration;

use futures::{Stream, StreamExt};
use kiln_api::API_PREFIX;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::sse::{self, SseEvent};

#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// The composer answered with its error shape.
    #[error("{}", refused_message(.reason, .field.as_deref()))]
    Refused {
        status: u16,
        reason: String,
        field: Option<String>,
    },
    /// No answer: connection refused, DNS, TLS, timeout.
    #[error("cannot reach the composer at {url}: {cause}")]
    Unreachable { url: String, cause: String },
    /// An answer that is not the compose API's.
    #[error("{url}: {message}")]
    Unexpected { url: String, message: String },
    /// No usable token from `kiln login`'s cache.
    #[error(transparent)]
    Login(#[from] crate::login::TokenError),
}

/// `<reason> (<field>)`; the composer's reason starts with the field, which
/// the parenthesis names, so it is not said twice.
fn refused_message(reason: &str, field: Option<&str>) -> String {
    match field.filter(|f| !f.is_empty()) {
        Some(f) => {
            let reason = reason
                .strip_prefix(f)
                .and_then(|r| r.strip_prefix(": "))
                .unwrap_or(reason);
            format!("{reason} ({f})")
        }
        None => reason.to_owned(),
    }
}

/// The innermost causes of a reqwest error, which say what happened
/// ("Connection refused") where the outer one only says "error sending request".
fn cause_chain(e: &reqwest::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    // The outer messages repeat the URL; the last one or two say why.
    let tail: Vec<String> = parts.into_iter().rev().take(2).collect();
    let mut tail: Vec<String> = tail.into_iter().rev().collect();
    tail.dedup();
    tail.join(": ")
}

/// How to reach the composer: the options every command that talks to it takes.
#[derive(clap::Args, Clone)]
pub(crate) struct Connection {
    /// The composer's URL; the API path (/api/image-builder-composer/v2) is added.
    #[arg(
        long,
        env = "KILN_COMPOSER_URL",
        default_value = "http://127.0.0.1:8700",
        value_name = "URL",
        global = true,
        help_heading = "Composer"
    )]
    pub(crate) composer: String,
    /// A bearer token for a composer with [auth] (sent as `Authorization:
    /// Bearer`). Without it (or KILN_TOKEN), the token of `kiln login`.
    #[arg(
        long,
        env = "KILN_TOKEN",
        value_name = "TOKEN",
        global = true,
        hide_env_values = true,
        help_heading = "Composer"
    )]
    pub(crate) token: Option<String>,
    /// Use the `kiln login` this configuration file describes, rather than
    /// the newest one (when there is no --token or KILN_TOKEN).
    #[arg(
        long,
        env = "KILN_LOGIN_CONFIG",
        value_name = "PATH",
        global = true,
        help_heading = "Composer"
    )]
    pub(crate) login_config: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("composer", &self.composer)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("login_config", &self.login_config)
            .finish()
    }
}

/// Where the bearer token came from, for the hint on a 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenOrigin {
    None,
    Given,
    Login,
}

pub(crate) struct Composer {
    /// `http://host:port/api/image-builder-composer/v2`, no trailing slash.
    base: String,
    http: reqwest::Client,
    token_origin: TokenOrigin,
}

impl Composer {
    /// A client of the composer `connection` names, with the first token of:
    /// `--token`, `KILN_TOKEN`, `kiln login`'s cache (renewed if it expires
    /// within a minute).
    pub(crate) async fn connect(connection: &Connection) -> Result<Composer, ApiError> {
        let given = connection
            .token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty());
        match given {
            Some(token) => {
                Composer::with_token(&connection.composer, Some(token), TokenOrigin::Given)
            }
            None => match crate::login::cached_token(connection.login_config.as_deref()).await? {
                Some(token) => Composer::with_token(
                    &connection.composer,
                    Some(token.expose()),
                    TokenOrigin::Login,
                ),
                None => Composer::with_token(&connection.composer, None, TokenOrigin::None),
            },
        }
    }

    /// A client of the composer at `url` (`http://127.0.0.1:8700`); a URL
    /// that already ends in the API prefix is taken as it is.
    #[cfg(test)]
    pub(crate) fn new(url: &str) -> Result<Composer, ApiError> {
        Composer::with_token(url, None, TokenOrigin::None)
    }

    fn with_token(
        url: &str,
        token: Option<&str>,
        token_origin: TokenOrigin,
    ) -> Result<Composer, ApiError> {
        let trimmed = url.trim_end_matches('/');
        let parsed = url::Url::parse(trimmed).map_err(|e| ApiError::Unexpected {
            url: url.to_owned(),
            message: format!("not a composer URL: {e}"),
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ApiError::Unexpected {
                url: url.to_owned(),
                message: "not a composer URL: use http:// or https://".into(),
            });
        }
        let base = if trimmed.ends_with(API_PREFIX) {
            trimmed.to_owned()
        } else {
            format!("{trimmed}{API_PREFIX}")
        };
        // No overall timeout: the event stream of a compose lasts as long as
        // its build. The composer sends a keep-alive every 15 s.
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token.map(str::trim).filter(|t| !t.is_empty()) {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| ApiError::Unexpected {
                    url: url.to_owned(),
                    message: "the token is not a header value (--token / KILN_TOKEN)".into(),
                })?;
            // Never shown in a debug print of a request.
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .default_headers(headers)
            .build()
            .map_err(|e| ApiError::Unexpected {
                url: url.to_owned(),
                message: format!("cannot set up HTTP: {e}"),
            })?;
        Ok(Composer {
            base,
            http,
            token_origin,
        })
    }

    /// A 401 says how to get a token the composer takes.
    fn explain(&self, e: ApiError) -> ApiError {
        let hint = match self.token_origin {
            TokenOrigin::None => "log in with kiln login, or give --token",
            TokenOrigin::Login => "the token of kiln login was refused: run kiln login again",
            TokenOrigin::Given => return e,
        };
        match e {
            ApiError::Refused {
                status: 401,
                reason,
                field,
            } => ApiError::Refused {
                status: 401,
                reason: format!("{reason} ({hint})"),
                field,
            },
            other => other,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(crate) async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiError> {
        let url = self.url(path);
        let resp = self.send(&url, self.http.get(&url)).await?;
        decode(&url, resp).await.map_err(|e| self.explain(e))
    }

    pub(crate) async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, ApiError> {
        let url = self.url(path);
        let resp = self.send(&url, self.http.post(&url).json(body)).await?;
        decode(&url, resp).await.map_err(|e| self.explain(e))
    }

    pub(crate) async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiError> {
        let url = self.url(path);
        let resp = self.send(&url, self.http.delete(&url)).await?;
        decode(&url, resp).await.map_err(|e| self.explain(e))
    }

    /// The Server-Sent Events of `path`, parsed; the stream ends when the
    /// composer closes it, or with an error when the connection breaks.
    pub(crate) async fn events(
        &self,
        path: &str,
    ) -> Result<impl Stream<Item = Result<SseEvent, ApiError>> + Unpin, ApiError> {
        let url = self.url(path);
        let resp = self
            .send(
                &url,
                self.http.get(&url).header("accept", "text/event-stream"),
            )
            .await?;
        let resp = check(&url, resp).await.map_err(|e| self.explain(e))?;
        let err_url = url.clone();
        let bytes = resp.bytes_stream().map(move |chunk| {
            chunk.map_err(|e| ApiError::Unreachable {
                url: err_url.clone(),
                cause: cause_chain(&e),
            })
        });
        Ok(Box::pin(sse::events(&url, bytes)))
    }

    async fn send(
        &self,
        url: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ApiError> {
        req.send().await.map_err(|e| ApiError::Unreachable {
            url: url.to_owned(),
            cause: cause_chain(&e),
        })
    }
}

/// The response when it is a success; the composer's error otherwise.
async fn check(url: &str, resp: reqwest::Response) -> Result<reqwest::Response, ApiError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let body = resp.bytes().await.unwrap_or_default();
    match serde_json::from_slice::<kiln_api::error::Error>(&body) {
        Ok(e) => Err(ApiError::Refused {
            status: status.as_u16(),
            field: e.details.and_then(|d| d.field),
            reason: e.reason,
        }),
        Err(_) => Err(ApiError::Unexpected {
            url: url.to_owned(),
            message: format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)]).trim()
            ),
        }),
    }
}

async fn decode<T: DeserializeOwned>(url: &str, resp: reqwest::Response) -> Result<T, ApiError> {
    let resp = check(url, resp).await?;
    let body = resp.bytes().await.map_err(|e| ApiError::Unreachable {
        url: url.to_owned(),
        cause: cause_chain(&e),
    })?;
    serde_json::from_slice(&body).map_err(|e| ApiError::Unexpected {
        url: url.to_owned(),
        message: format!("not an answer of the compose API: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_field_is_named_once() {
        assert_eq!(
            refused_message(
                "image_request.architecture: no such architecture",
                Some("image_request.architecture")
            ),
            "no such architecture (image_request.architecture)"
        );
        assert_eq!(
            refused_message("no compose 1", None),
            "no compose 1".to_string()
        );
        assert_eq!(refused_message("bad", Some("x")), "bad (x)");
    }

    #[test]
    fn base_url_gets_the_api_prefix_once() {
        let c = Composer::new("http://127.0.0.1:8700/").unwrap();
        assert_eq!(
            c.url("/composes/"),
            "http://127.0.0.1:8700/api/image-builder-composer/v2/composes/"
        );
        let c = Composer::new("http://h:1/api/image-builder-composer/v2").unwrap();
        assert_eq!(c.url("/x"), "http://h:1/api/image-builder-composer/v2/x");
        assert!(Composer::new("ftp://h").is_err());
        assert!(Composer::new("not a url").is_err());
    }
}
