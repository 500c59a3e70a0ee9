//! The token cache: `$KILN_TOKEN_CACHE`, else `$XDG_CACHE_HOME/kiln/token.json`,
//! else `~/.cache/kiln/token.json`. One entry per issuer and client, the
//! newest login last; the last one is the login `kiln` uses unless
//! `--login-config` names another.
//!
//! The file is 0600 in a directory kiln makes 0700; each write goes to a
//! temporary file made 0600 in the same directory, then renamed over it, so
//! a reader sees the old or the new cache and never half of one. Changes
//! (a login, a renewal, a logout) hold an exclusive lock on `<file>.lock`
//! while they read, renew and write: two `kiln` runs renewing at once would
//! otherwise both spend one refresh token, and a provider that rotates them
//! revokes the whole login when one is used twice.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::config::{same_issuer, xdg_dir, Grant, SecretSource};
use super::secret::Secret;

pub(crate) const CACHE_ENV: &str = "KILN_TOKEN_CACHE";
const VERSION: u32 = 1;
const LOCK_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub(crate) enum CacheError {
    #[error("no token cache: set {CACHE_ENV}, XDG_CACHE_HOME or HOME")]
    NoPath,
    #[error("token cache {path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("token cache {path}: {message}; remove it and run kiln login")]
    Invalid { path: PathBuf, message: String },
    #[error("token cache {path}: another kiln has held its lock for {}s", LOCK_WAIT.as_secs())]
    Busy { path: PathBuf },
}

/// One login: the token, and what renewing it needs (never the client
/// secret, only where to read it again).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CachedLogin {
    /// As the provider's discovery document states it.
    pub(crate) issuer: String,
    pub(crate) client_id: String,
    pub(crate) grant: Grant,
    pub(crate) resource: Option<String>,
    pub(crate) scope: Option<String>,
    pub(crate) client_secret_from: Option<SecretSource>,
    /// Who logged in (`sub`), as the provider's tokens say; for messages.
    pub(crate) subject: Option<String>,
    pub(crate) access_token: Secret,
    /// None when the provider gave no lifetime.
    pub(crate) expires_at: Option<DateTime<Utc>>,
    pub(crate) refresh_token: Option<Secret>,
}

impl CachedLogin {
    pub(crate) fn is(&self, issuer: &str, client_id: &str) -> bool {
        same_issuer(&self.issuer, issuer) && self.client_id == client_id
    }

    /// Usable for at least `margin` more.
    pub(crate) fn fresh(&self, now: DateTime<Utc>, margin: chrono::Duration) -> bool {
        self.expires_at.is_none_or(|t| t - now > margin)
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenCache {
    version: u32,
    /// The newest login last.
    pub(crate) logins: Vec<CachedLogin>,
}

impl TokenCache {
    pub(crate) fn find(&self, issuer: &str, client_id: &str) -> Option<&CachedLogin> {
        self.logins.iter().find(|l| l.is(issuer, client_id))
    }

    pub(crate) fn find_mut(&mut self, issuer: &str, client_id: &str) -> Option<&mut CachedLogin> {
        self.logins.iter_mut().find(|l| l.is(issuer, client_id))
    }

    /// The login `kiln` uses when none is named: the newest.
    pub(crate) fn current(&self) -> Option<&CachedLogin> {
        self.logins.last()
    }

    /// Replaces the login of the same issuer and client, and makes it the newest.
    pub(crate) fn insert(&mut self, login: CachedLogin) {
        self.logins
            .retain(|l| !l.is(&login.issuer, &login.client_id));
        self.logins.push(login);
    }

    pub(crate) fn remove(&mut self, issuer: &str, client_id: &str) -> Option<CachedLogin> {
        let at = self.logins.iter().position(|l| l.is(issuer, client_id))?;
        Some(self.logins.remove(at))
    }
}

/// The cache file, at its path.
pub(crate) struct TokenStore {
    path: PathBuf,
}

/// The store's lock, held until dropped.
pub(crate) struct StoreLock {
    _file: std::fs::File,
}

impl TokenStore {
    /// The store at `$KILN_TOKEN_CACHE`, else the XDG cache directory's.
    pub(crate) fn open() -> Result<TokenStore, CacheError> {
        let path = std::env::var_os(CACHE_ENV)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .or_else(|| xdg_dir("XDG_CACHE_HOME", ".cache").map(|d| d.join("kiln/token.json")))
            .ok_or(CacheError::NoPath)?;
        Ok(TokenStore { path })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The cache; empty when there is no file yet.
    pub(crate) fn read(&self) -> Result<TokenCache, CacheError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(TokenCache {
                    version: VERSION,
                    logins: Vec::new(),
                })
            }
            Err(cause) => return Err(self.io(cause)),
        };
        // serde_json's message names a field, and for a wrong type the
        // value: say only where, as a value may be a token.
        let cache: TokenCache =
            serde_json::from_slice(&bytes).map_err(|e| CacheError::Invalid {
                path: self.path.clone(),
                message: format!("unreadable at line {} column {}", e.line(), e.column()),
            })?;
        if cache.version != VERSION {
            return Err(CacheError::Invalid {
                path: self.path.clone(),
                message: format!("version {} (this kiln writes {VERSION})", cache.version),
            });
        }
        Ok(cache)
    }

    /// Writes the whole cache atomically; no logins left removes the file.
    pub(crate) fn write(&self, cache: &TokenCache, _lock: &StoreLock) -> Result<(), CacheError> {
        if cache.logins.is_empty() {
            return match std::fs::remove_file(&self.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(self.io(e)),
                _ => Ok(()),
            };
        }
        let dir = self.dir()?;
        let cache = TokenCache {
            version: VERSION,
            logins: cache.logins.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&cache).map_err(|e| CacheError::Invalid {
            path: self.path.clone(),
            message: format!("cannot serialise: {e}"),
        })?;
        // tempfile creates the file with O_EXCL and mode 0600.
        let mut temp = tempfile::Builder::new()
            .prefix(".token-")
            .suffix(".tmp")
            .permissions(std::fs::Permissions::from_mode(0o600))
            .tempfile_in(&dir)
            .map_err(|e| self.io(e))?;
        temp.write_all(&bytes)
            .and_then(|()| temp.write_all(b"\n"))
            .and_then(|()| temp.as_file().sync_all())
            .map_err(|e| self.io(e))?;
        temp.persist(&self.path).map_err(|e| self.io(e.error))?;
        // The rename itself on disk; a failure here loses nothing that is
        // not already in the page cache.
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Takes the store's lock, waiting up to 30 s for another `kiln`.
    pub(crate) async fn lock(&self) -> Result<StoreLock, CacheError> {
        self.dir()?;
        let mut lock_path = self.path.clone().into_os_string();
        lock_path.push(".lock");
        let lock_path = PathBuf::from(lock_path);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|cause| CacheError::Io {
                path: lock_path.clone(),
                cause,
            })?;
        let started = Instant::now();
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(StoreLock { _file: file }),
                Err(std::fs::TryLockError::WouldBlock) if started.elapsed() < LOCK_WAIT => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(CacheError::Busy { path: lock_path })
                }
                Err(std::fs::TryLockError::Error(cause)) => {
                    return Err(CacheError::Io {
                        path: lock_path,
                        cause,
                    })
                }
            }
        }
    }

    /// The cache's directory, made 0700 if it is missing. An existing one
    /// keeps its mode: `KILN_TOKEN_CACHE` may name a file in a directory
    /// kiln does not own.
    fn dir(&self) -> Result<PathBuf, CacheError> {
        let dir = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        if !dir.is_dir() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|cause| CacheError::Io {
                    path: dir.clone(),
                    cause,
                })?;
        }
        Ok(dir)
    }

    fn io(&self, cause: std::io::Error) -> CacheError {
        CacheError::Io {
            path: self.path.clone(),
            cause,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(issuer: &str, client_id: &str) -> CachedLogin {
        CachedLogin {
            issuer: issuer.into(),
            client_id: client_id.into(),
            grant: Grant::DeviceCode,
            resource: None,
            scope: None,
            client_secret_from: None,
            subject: None,
            access_token: Secret::new("at"),
            expires_at: None,
            refresh_token: None,
        }
    }

    #[test]
    fn one_entry_per_issuer_and_client_the_newest_last() {
        let mut cache = TokenCache::default();
        cache.insert(login("https://a", "c"));
        cache.insert(login("https://b", "c"));
        cache.insert(login("https://a/", "c"));
        assert_eq!(cache.logins.len(), 2);
        assert_eq!(cache.current().unwrap().issuer, "https://a/");
        assert!(cache.remove("https://a", "c").is_some());
        assert_eq!(cache.current().unwrap().issuer, "https://b");
        assert!(cache.find("https://b", "other").is_none());
    }

    #[tokio::test]
    async fn written_private_and_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new/kiln/token.json");
        let store = TokenStore { path: path.clone() };
        let lock = store.lock().await.unwrap();
        let mut cache = store.read().unwrap();
        cache.insert(login("https://a", "c"));
        store.write(&cache, &lock).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(store.read().unwrap().logins.len(), 1);
        // Nothing but the cache and its lock is left in the directory.
        let mut names: Vec<String> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["token.json", "token.json.lock"]);
        cache.remove("https://a", "c");
        store.write(&cache, &lock).unwrap();
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn a_second_lock_waits() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore {
            path: dir.path().join("token.json"),
        };
        let first = store.lock().await.unwrap();
        let second = tokio::time::timeout(Duration::from_millis(200), store.lock()).await;
        assert!(second.is_err(), "the second lock did not wait");
        drop(first);
        store.lock().await.unwrap();
    }
}
