//! What the BSS and SMD clients share: their configuration, the bearer token
//! (never printed) and turning an HTTP answer into a value or a [`BootError`].

use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{BootError, Result, Service};

/// A bearer token. `Debug` and `Display` never show it; serialising writes
/// it back (configuration round trips) but kiln never logs configurations.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BearerToken(String);

impl BearerToken {
    pub fn new(token: impl Into<String>) -> BearerToken {
        BearerToken(token.into())
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

/// How to reach one service: `url` is its root, e.g. `http://bss:27778` (the
/// client adds `/boot/v1/...`) or, behind a gateway, `https://gw/apis/bss`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceConfig {
    pub url: String,
    #[serde(default)]
    pub token: Option<BearerToken>,
    /// Seconds per request.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_timeout() -> u64 {
    30
}

impl ServiceConfig {
    pub fn new(url: impl Into<String>) -> ServiceConfig {
        ServiceConfig {
            url: url.into(),
            token: None,
            timeout_secs: default_timeout(),
        }
    }

    pub fn with_token(mut self, token: impl Into<String>) -> ServiceConfig {
        self.token = Some(BearerToken::new(token));
        self
    }
}

/// A configured connection to BSS or SMD.
#[derive(Debug, Clone)]
pub(crate) struct ServiceClient {
    pub service: Service,
    /// The configuration key, for errors (`bss` / `smd`).
    pub key: &'static str,
    base: String,
    token: Option<BearerToken>,
    http: reqwest::Client,
}

impl ServiceClient {
    pub(crate) fn new(service: Service, key: &'static str, config: &ServiceConfig) -> Result<Self> {
        let field = format!("{key}.url");
        let url = url::Url::parse(&config.url).map_err(|e| BootError::InvalidField {
            field: field.clone(),
            reason: format!("{:?} is not a URL: {e}", config.url),
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(BootError::InvalidField {
                field,
                reason: format!("{:?} must be an http(s) URL", config.url),
            });
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.timeout_secs.max(1)))
            .user_agent(concat!("kiln-boot/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| BootError::Http {
                service,
                url: config.url.clone(),
                source,
            })?;
        Ok(ServiceClient {
            service,
            key,
            base: config.url.trim_end_matches('/').to_owned(),
            token: config.token.clone(),
            http,
        })
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(crate) fn request(&self, method: Method, url: &str) -> RequestBuilder {
        let req = self.http.request(method, url);
        match &self.token {
            Some(t) => req.bearer_auth(t.expose()),
            None => req,
        }
    }

    /// Sends `req`; returns the status and body of a 2xx answer, `None` for
    /// 404 when `not_found_ok`, and an error naming the service otherwise.
    pub(crate) async fn send(
        &self,
        method: &Method,
        url: &str,
        req: RequestBuilder,
        not_found_ok: bool,
    ) -> Result<Option<(StatusCode, bytes::Bytes)>> {
        tracing::debug!(service = %self.service, %method, url, "request");
        let resp = req.send().await.map_err(|source| BootError::Http {
            service: self.service,
            url: url.to_owned(),
            source,
        })?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|source| BootError::Http {
            service: self.service,
            url: url.to_owned(),
            source,
        })?;
        if status.is_success() {
            return Ok(Some((status, body)));
        }
        if status == StatusCode::NOT_FOUND && not_found_ok {
            return Ok(None);
        }
        let detail = problem_detail(&body);
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(BootError::Unauthorized {
                service: self.service,
                service_key: self.key,
                method: method.to_string(),
                url: url.to_owned(),
                status: status.as_u16(),
                detail,
            });
        }
        Err(BootError::Status {
            service: self.service,
            method: method.to_string(),
            url: url.to_owned(),
            status: status.as_u16(),
            detail,
        })
    }

    pub(crate) fn decode<T: DeserializeOwned>(&self, url: &str, body: &[u8]) -> Result<T> {
        serde_json::from_slice(body).map_err(|e| BootError::Decode {
            service: self.service,
            url: url.to_owned(),
            reason: e.to_string(),
        })
    }
}

/// The `detail` (or `title`) of an RFC 7807 problem body, the `error` of
/// boot-service's `{"error", "code"}`, else the body's start as text.
fn problem_detail(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Problem {
        title: Option<String>,
        detail: Option<String>,
        error: Option<String>,
    }
    if let Ok(p) = serde_json::from_slice::<Problem>(body) {
        if let Some(d) = p.detail.or(p.error).or(p.title) {
            return d;
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        "no detail given".into()
    } else {
        text.chars().take(300).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_redacted() {
        let c = ServiceConfig::new("http://bss:27778").with_token("s3cr3t-value");
        assert!(!format!("{c:?}").contains("s3cr3t"));
        assert!(format!("{c:?}").contains("redacted"));
    }

    #[test]
    fn problem_details() {
        assert_eq!(
            problem_detail(br#"{"type":"about:blank","title":"Bad Request","detail":"no such host","status":400}"#),
            "no such host"
        );
        assert_eq!(problem_detail(b"Unauthorized\n"), "Unauthorized");
        assert_eq!(
            problem_detail(br#"{"error":"priority must be 0..100","code":400}"#),
            "priority must be 0..100"
        );
        assert_eq!(problem_detail(b""), "no detail given");
    }

    #[test]
    fn urls_are_checked() {
        let e =
            ServiceClient::new(Service::Bss, "bss", &ServiceConfig::new("bss:27778")).unwrap_err();
        assert!(e.to_string().starts_with("bss.url: "), "{e}");
    }
}
