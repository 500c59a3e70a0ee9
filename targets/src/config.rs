//! Target configuration, as the worker reads it from `worker.toml`.
//!
//! Credentials and endpoints live only here: an API request names a target,
//! never its secrets. Secrets are [`Secret`]s, whose `Debug` prints
//! `<redacted>`, so a configuration can be logged whole.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// A credential. Its `Debug` and `Display` never show it.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for signing requests. Never log what this returns.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where an artifact goes. In TOML, `type` picks the kind:
/// `type = "local" | "s3" | "azure" | "gcs"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum TargetConfig {
    Local(LocalTarget),
    S3(S3Target),
    Azure(AzureTarget),
    Gcs(GcsTarget),
}

impl TargetConfig {
    /// The kind of target, as it is spelled in the configuration.
    pub fn kind(&self) -> &'static str {
        match self {
            TargetConfig::Local(_) => "local",
            TargetConfig::S3(_) => "s3",
            TargetConfig::Azure(_) => "azure",
            TargetConfig::Gcs(_) => "gcs",
        }
    }
}

/// A directory on the worker's machine (or a mount of it).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalTarget {
    pub path: PathBuf,
}

/// An S3 bucket on AWS or any S3-compatible service.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Target {
    /// Base URL of the service, e.g. `https://s3.eu-west-1.amazonaws.com`.
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: Secret,
    /// `https://endpoint/bucket/key` rather than `https://bucket.endpoint/key`.
    #[serde(default)]
    pub path_style: bool,
    /// Bytes per multipart part; S3 wants at least 5 MiB (but the last).
    #[serde(default = "default_part_size")]
    pub part_size: u64,
    /// Parts in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    #[serde(default)]
    pub retry: RetryPolicy,
}

/// An Azure Blob Storage container, authenticated with the account key.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureTarget {
    pub account: String,
    /// The account key, base64 as the portal shows it.
    pub key: Secret,
    pub container: String,
    /// Blob service URL; defaults to `https://{account}.blob.core.windows.net`.
    /// For Azurite: `http://127.0.0.1:10000/{account}`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Bytes per block.
    #[serde(default = "default_part_size")]
    pub block_size: u64,
    /// Blocks in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    #[serde(default)]
    pub retry: RetryPolicy,
}

impl AzureTarget {
    pub(crate) fn endpoint(&self) -> String {
        match &self.endpoint {
            Some(e) => e.trim_end_matches('/').to_string(),
            None => format!("https://{}.blob.core.windows.net", self.account),
        }
    }
}

/// A Google Cloud Storage bucket, written with resumable uploads.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcsTarget {
    /// Defaults to `https://storage.googleapis.com`.
    #[serde(default)]
    pub endpoint: Option<String>,
    pub bucket: String,
    /// An OAuth2 access token sent as `Authorization: Bearer`. Without one no
    /// credentials are sent at all (emulators, or buckets open for writing):
    /// kiln never asks a metadata server or the environment for one.
    #[serde(default)]
    pub bearer_token: Option<Secret>,
    /// Bytes per chunk of the resumable upload; a multiple of 256 KiB.
    #[serde(default = "default_part_size")]
    pub chunk_size: u64,
    #[serde(default)]
    pub retry: RetryPolicy,
}

impl GcsTarget {
    pub(crate) fn endpoint(&self) -> String {
        match &self.endpoint {
            Some(e) => e.trim_end_matches('/').to_string(),
            None => "https://storage.googleapis.com".to_string(),
        }
    }
}

fn default_part_size() -> u64 {
    16 * 1024 * 1024
}

fn default_concurrency() -> usize {
    4
}

/// How often and how patiently a request is retried after a transient
/// failure (connection refused or reset, timeout, HTTP 5xx, 429 or 408).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Attempts per request, the first included.
    pub max_attempts: u32,
    /// Wait before the first retry; doubled at each further one.
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// Whole-request timeout (a part's or chunk's upload included).
    pub request_timeout_secs: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff_ms: 500,
            max_backoff_ms: 30_000,
            request_timeout_secs: 300,
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1 for the first retry).
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = 1u64
            .checked_shl(retry.saturating_sub(1))
            .unwrap_or(u64::MAX);
        Duration::from_millis(
            self.initial_backoff_ms
                .saturating_mul(factor)
                .min(self.max_backoff_ms),
        )
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_not_in_debug_output() {
        let cfg: TargetConfig = serde_json::from_str(
            r#"{"type":"s3","endpoint":"http://127.0.0.1:1","region":"r","bucket":"b",
                "access_key_id":"AK","secret_access_key":"hunter2-very-secret"}"#,
        )
        .expect("valid config");
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
        let az: TargetConfig = serde_json::from_str(
            r#"{"type":"azure","account":"a","key":"c2VjcmV0c2VjcmV0","container":"c"}"#,
        )
        .expect("valid config");
        assert!(!format!("{az:?}").contains("c2VjcmV0c2VjcmV0"));
        let gcs: TargetConfig = serde_json::from_str(
            r#"{"type":"gcs","bucket":"b","bearer_token":"ya29.secret-token"}"#,
        )
        .expect("valid config");
        assert!(!format!("{gcs:?}").contains("ya29"));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy {
            max_attempts: 10,
            initial_backoff_ms: 100,
            max_backoff_ms: 1000,
            request_timeout_secs: 1,
        };
        let waits: Vec<u64> = (1..=6).map(|n| p.backoff(n).as_millis() as u64).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(p.backoff(200).as_millis(), 1000);
    }
}
