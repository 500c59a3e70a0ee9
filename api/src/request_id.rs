//! The request id that follows one compose API call through the composer's
//! logs, its jobs, the worker's logs and the executor's: the caller's
//! `X-Request-Id` when it is a sane token, else a fresh UUID. Every place
//! it enters (the HTTP header, a worker's job, the executor's environment)
//! reads it through [`RequestId::parse`], so no unchecked text reaches a
//! log line or a header.

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The HTTP header, on requests and on every response of the compose API.
pub const HEADER: &str = "x-request-id";
/// The environment variable the worker hands the executor the id in.
pub const ENV: &str = "KILN_REQUEST_ID";
/// The longest id accepted.
pub const MAX_LEN: usize = 128;

/// 1 to [`MAX_LEN`] characters of `[A-Za-z0-9._:-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, pattern = "^[A-Za-z0-9._:-]{1,128}$")]
pub struct RequestId(String);

impl RequestId {
    /// The id, if `s` is one; `None` for anything else (empty, too long,
    /// spaces, control characters, quotes, non-ASCII).
    pub fn parse(s: &str) -> Option<RequestId> {
        let ok = !s.is_empty()
            && s.len() <= MAX_LEN
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        ok.then(|| RequestId(s.to_owned()))
    }

    /// A fresh id: a random UUID.
    pub fn generate() -> RequestId {
        RequestId(uuid::Uuid::new_v4().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for RequestId {
    type Error = String;
    fn try_from(s: String) -> Result<RequestId, String> {
        RequestId::parse(&s).ok_or_else(|| {
            format!(
                "a request id is 1 to {MAX_LEN} characters of A-Z, a-z, 0-9, '.', '_', ':', '-'"
            )
        })
    }
}

impl From<RequestId> for String {
    fn from(id: RequestId) -> String {
        id.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sane_tokens_are_request_ids() {
        for ok in ["a", "req-1", "A.b_c:d-E", &"x".repeat(MAX_LEN)] {
            assert_eq!(RequestId::parse(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "",
            &"x".repeat(MAX_LEN + 1),
            "a b",
            "a\nb",
            "a\"b",
            "a=b",
            "é",
            "a/b",
            "\u{1b}[31m",
        ] {
            assert!(RequestId::parse(bad).is_none(), "{bad:?}");
        }
        let fresh = RequestId::generate();
        assert!(uuid::Uuid::parse_str(fresh.as_str()).is_ok());
        assert!(serde_json::from_str::<RequestId>("\"a b\"").is_err());
        assert_eq!(
            serde_json::from_str::<RequestId>("\"r-1\"").unwrap(),
            RequestId::parse("r-1").unwrap()
        );
    }
}
