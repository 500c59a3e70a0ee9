//! Fetching repository files over http(s) and file://, with an on-disk
//! cache keyed by content hash and refreshed with conditional requests
//! (ETag / Last-Modified), so an unchanged index costs one 304.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::DepsolveError;
use crate::policy::RepoPolicy;

/// What one repository file may cost: a hostile or broken mirror cannot
/// exhaust the composer's memory or hold a load forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchLimits {
    /// Largest file fetched, in bytes, as served (compressed).
    pub max_fetch_bytes: u64,
    /// Largest index once decompressed, in bytes.
    pub max_index_bytes: u64,
    /// Time for one fetch, from the request to its last byte.
    pub fetch_timeout: Duration,
}

impl Default for FetchLimits {
    /// Sized for Debian main: bookworm's amd64 `Packages` is ~95 MiB
    /// uncompressed (~10 MiB as `.xz`), Rocky's BaseOS/AppStream primary
    /// files ~60 MiB; a mirror may serve the plain file.
    fn default() -> Self {
        FetchLimits {
            max_fetch_bytes: 256 << 20,
            max_index_bytes: 512 << 20,
            fetch_timeout: Duration::from_secs(600),
        }
    }
}

/// Downloads files, keeping a content-addressed copy of each.
#[derive(Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    cache_dir: PathBuf,
    limits: FetchLimits,
    policy: Arc<RepoPolicy>,
}

/// What the cache remembers about a URL.
#[derive(Debug, Serialize, Deserialize)]
struct CacheEntry {
    sha256: String,
    etag: Option<String>,
    last_modified: Option<String>,
}

/// An error and its causes, `: `-separated: reqwest's own message names
/// only the step ("error sending request"), its sources say why.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

impl Fetcher {
    /// A fetcher that reads only what `policy` allows, within `limits`.
    pub fn new(
        cache_dir: impl Into<PathBuf>,
        limits: FetchLimits,
        policy: Arc<RepoPolicy>,
    ) -> Result<Self, DepsolveError> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("kiln-depsolve/", env!("CARGO_PKG_VERSION")))
            // A stalled mirror must fail the request, not hang it.
            .connect_timeout(std::time::Duration::from_secs(20))
            .read_timeout(std::time::Duration::from_secs(60))
            // Addresses are checked where they are resolved, and redirects
            // against the same policy; a proxy from the environment would
            // resolve names itself, out of the policy's sight.
            .dns_resolver(policy.resolver())
            .redirect(policy.redirects(5))
            .no_proxy()
            .build()
            .map_err(|e| DepsolveError::Fetch {
                url: String::new(),
                detail: format!("cannot build HTTP client: {e}"),
            })?;
        Ok(Fetcher {
            client,
            cache_dir: cache_dir.into(),
            limits,
            policy,
        })
    }

    pub fn limits(&self) -> FetchLimits {
        self.limits
    }

    /// Fetches `url`; `Ok(None)` when the server or disk says it does not
    /// exist. Bounded in bytes and in time ([`FetchLimits`]).
    pub async fn get(&self, url: &str) -> Result<Option<Vec<u8>>, DepsolveError> {
        self.policy.check(url)?;
        let limit = self.limits.fetch_timeout;
        match tokio::time::timeout(limit, self.get_unbounded_in_time(url)).await {
            Ok(r) => r,
            Err(_) => Err(DepsolveError::Fetch {
                url: url.to_string(),
                detail: format!("not complete after {} s", limit.as_secs()),
            }),
        }
    }

    fn too_large(&self, url: &str) -> DepsolveError {
        DepsolveError::TooLarge {
            what: url.to_string(),
            limit: self.limits.max_fetch_bytes,
        }
    }

    async fn get_unbounded_in_time(&self, url: &str) -> Result<Option<Vec<u8>>, DepsolveError> {
        if let Some(path) = url.strip_prefix("file://") {
            let io = |source| DepsolveError::Io {
                path: path.to_string(),
                source,
            };
            match tokio::fs::metadata(path).await {
                Ok(m) if m.len() > self.limits.max_fetch_bytes => return Err(self.too_large(url)),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(io(e)),
            }
            return match tokio::fs::read(path).await {
                Ok(d) => Ok(Some(d)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(DepsolveError::Io {
                    path: path.to_string(),
                    source,
                }),
            };
        }
        let fetch_err = |detail: String| DepsolveError::Fetch {
            url: url.to_string(),
            detail,
        };
        let meta_path = self.cache_dir.join("urls").join(sha256_hex(url.as_bytes()));
        let cached: Option<CacheEntry> = tokio::fs::read(&meta_path)
            .await
            .ok()
            .and_then(|d| serde_json::from_slice(&d).ok());
        let mut req = self.client.get(url);
        if let Some(c) = &cached {
            if let Some(etag) = &c.etag {
                req = req.header(reqwest::header::IF_NONE_MATCH, etag);
            }
            if let Some(lm) = &c.last_modified {
                req = req.header(reqwest::header::IF_MODIFIED_SINCE, lm);
            }
        }
        let resp = req.send().await.map_err(|e| fetch_err(error_chain(&e)))?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_MODIFIED {
            if let Some(c) = &cached {
                // A blob that went missing or was altered is fetched again.
                if let Ok(d) = tokio::fs::read(self.blob_path(&c.sha256)).await {
                    if sha256_hex(&d) == c.sha256 {
                        return Ok(Some(d));
                    }
                }
                let _ = tokio::fs::remove_file(&meta_path).await;
                return Box::pin(self.get_unbounded_in_time(url)).await;
            }
        }
        if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::GONE {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(fetch_err(format!("HTTP status {status}")));
        }
        let header = |name| {
            resp.headers()
                .get(name)
                .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
                .map(String::from)
        };
        let etag = header(reqwest::header::ETAG);
        let last_modified = header(reqwest::header::LAST_MODIFIED);
        // Refused by its announced size, else counted as it arrives.
        if resp
            .content_length()
            .is_some_and(|n| n > self.limits.max_fetch_bytes)
        {
            return Err(self.too_large(url));
        }
        let mut resp = resp;
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| fetch_err(error_chain(&e)))? {
            if (body.len() + chunk.len()) as u64 > self.limits.max_fetch_bytes {
                return Err(self.too_large(url));
            }
            body.extend_from_slice(&chunk);
        }
        let entry = CacheEntry {
            sha256: sha256_hex(&body),
            etag,
            last_modified,
        };
        self.store(&meta_path, &entry, &body).await?;
        Ok(Some(body))
    }

    fn blob_path(&self, sha: &str) -> PathBuf {
        self.cache_dir.join("blobs").join(sha)
    }

    async fn store(
        &self,
        meta_path: &Path,
        entry: &CacheEntry,
        body: &[u8],
    ) -> Result<(), DepsolveError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| DepsolveError::Io { path, source }
        };
        let blob = self.blob_path(&entry.sha256);
        for dir in [blob.parent(), meta_path.parent()].into_iter().flatten() {
            tokio::fs::create_dir_all(dir).await.map_err(io(dir))?;
        }
        write_atomic(&blob, body).await.map_err(io(&blob))?;
        let meta = serde_json::to_vec(entry).map_err(|e| DepsolveError::Io {
            path: meta_path.display().to_string(),
            source: std::io::Error::other(e),
        })?;
        write_atomic(meta_path, &meta).await.map_err(io(meta_path))
    }
}

/// Writes through a temporary file and a rename, so concurrent readers never
/// see a half-written cache file.
async fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    tokio::fs::write(&tmp, data).await?;
    tokio::fs::rename(&tmp, path).await
}
