//! Loaded repositories, shared by every request that names the same ones.
//!
//! A set of repositories is fetched, verified and parsed once (kiln-depsolve
//! keeps it as one immutable index, cached on disk by content hash); later
//! requests only pay for their solve. Concurrent first requests for the same
//! set wait for one load.
//!
//! Every repository a request names passes the composer's [`RepoPolicy`]
//! before anything is fetched: `[repositories] allow` and the catalog's own
//! repositories. The same policy goes with the loaded set into its fetcher,
//! so redirects and the addresses a host name resolves to are held to it too.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kiln_api::compose::Repository;
use kiln_api::error::{ErrorKind, FieldError};
use kiln_api::validate::{validate_repository, Family};
use kiln_depsolve::{
    AllowEntry, DepsolveError, PolicyError, RepoConfig, RepoPolicy, RepoSet, Source,
};
use kiln_distro::{Catalog, Distribution};
use tokio::sync::OnceCell;

type Key = (String, Vec<String>);

pub struct RepoCache {
    sets: Mutex<Sets>,
    /// Bounds on every fetch and decompression of a repository's indexes.
    limits: kiln_depsolve::fetch::FetchLimits,
    /// What may be fetched at all.
    policy: Arc<RepoPolicy>,
    /// The most the loaded indexes may hold together, in bytes.
    budget: usize,
}

/// The loaded sets, with the tick each was last asked for.
#[derive(Default)]
struct Sets {
    entries: HashMap<Key, Entry>,
    tick: u64,
}

struct Entry {
    cell: Arc<OnceCell<RepoSet>>,
    used: u64,
}

/// Most sets kept (loaded or failed to load), whatever their size.
const MAX_SETS: usize = 64;

impl Sets {
    /// Drops the least recently used sets, never `keep`, until the loaded
    /// indexes fit in `budget` bytes and there are at most [`MAX_SETS`].
    /// A request still using a dropped set keeps it until it is done.
    fn evict(&mut self, keep: &Key, budget: usize) -> usize {
        let bytes = |e: &Entry| e.cell.get().map_or(0, |s| s.index().heap_bytes());
        let mut total: usize = self.entries.values().map(bytes).sum();
        let mut dropped = 0;
        while total > budget || self.entries.len() > MAX_SETS {
            let Some(oldest) = self
                .entries
                .iter()
                .filter(|(k, _)| *k != keep)
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(e) = self.entries.remove(&oldest) {
                total -= bytes(&e);
                dropped += 1;
            }
        }
        dropped
    }
}

/// The composer's repository policy: the `allow` prefixes of its
/// configuration, and every repository of every distribution in its catalog
/// (written by the administrator, so their hosts may be internal).
pub fn policy(allow: &[AllowEntry], catalog: &Catalog) -> Result<RepoPolicy, PolicyError> {
    let mut entries = allow.to_vec();
    for distro in catalog.iter() {
        for arch in distro.architectures.keys() {
            for r in &distro.repositories {
                entries.push(AllowEntry::Table {
                    prefix: r.baseurl_for(arch),
                    internal: true,
                });
            }
        }
    }
    RepoPolicy::new(&entries)
}

/// How long a request's repository host names may take to resolve.
const RESOLVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Refuses a repository the policy does not allow, naming its `baseurl`
/// under `path`: 403 for a URL outside the allowed prefixes or whose host
/// is (or resolves to) an internal address, 400 for one that is malformed.
pub async fn check_allowed(
    policy: &RepoPolicy,
    r: &Repository,
    path: &str,
) -> Result<(), FieldError> {
    // A repository without a baseurl is refused by `validate_repository`.
    let Some(url) = &r.baseurl else {
        return Ok(());
    };
    let checked = policy.check_resolved(url, RESOLVE_TIMEOUT).await;
    checked.map(|_| ()).map_err(|e| {
        let kind = match e {
            PolicyError::NotAllowed { .. } | PolicyError::Internal { .. } => {
                ErrorKind::RepositoryNotAllowed
            }
            _ => ErrorKind::InvalidRepository,
        };
        let hint = match e {
            PolicyError::NotAllowed { .. } => {
                "; the composer's administrator can add its prefix to [repositories] allow"
            }
            _ => "",
        };
        FieldError::new(kind, format!("{path}.baseurl"), format!("{e}{hint}"))
    })
}

/// Why repositories could not be loaded or a solve failed.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// A repository of the request is not usable as given (the field says which).
    #[error(transparent)]
    Request(#[from] FieldError),
    /// The packages cannot be installed together; the solver says why.
    #[error(transparent)]
    Unsolvable(DepsolveError),
    /// A repository could not be fetched, read or verified.
    #[error(transparent)]
    Unavailable(DepsolveError),
    /// The composer failed, not the repository.
    #[error("{context}: {source}")]
    Internal {
        context: &'static str,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl From<DepsolveError> for RepoError {
    fn from(e: DepsolveError) -> RepoError {
        match e {
            DepsolveError::Unsolvable { .. } => RepoError::Unsolvable(e),
            DepsolveError::BadSource { .. } => RepoError::Request(FieldError::new(
                ErrorKind::InvalidRepository,
                "repositories",
                e.to_string(),
            )),
            DepsolveError::Task(_) => RepoError::Internal {
                context: "depsolving",
                source: Box::new(e),
            },
            _ => RepoError::Unavailable(e),
        }
    }
}

fn internal(context: &'static str) -> impl FnOnce(std::io::Error) -> RepoError {
    move |e| RepoError::Internal {
        context,
        source: Box::new(e),
    }
}

impl RepoCache {
    pub fn new(
        limits: kiln_depsolve::fetch::FetchLimits,
        policy: RepoPolicy,
        budget: usize,
    ) -> Self {
        RepoCache {
            sets: Mutex::default(),
            limits,
            policy: Arc::new(policy),
            budget,
        }
    }

    /// How many sets are loaded, and the bytes their indexes hold.
    pub fn loaded(&self) -> (usize, usize) {
        let sets = self.sets.lock().unwrap_or_else(|e| e.into_inner());
        sets.entries
            .values()
            .filter_map(|e| e.cell.get())
            .fold((0, 0), |(n, b), s| (n + 1, b + s.index().heap_bytes()))
    }

    /// What may be fetched at all.
    pub fn policy(&self) -> &RepoPolicy {
        &self.policy
    }

    /// Re-reads every loaded set (conditional requests; unchanged metadata
    /// costs a 304 or a file stat) and swaps in the new indexes. Returns how
    /// many sets failed to refresh: they keep serving their old index.
    pub async fn refresh_all(&self) -> usize {
        let sets: Vec<RepoSet> = {
            let sets = self.sets.lock().unwrap_or_else(|e| e.into_inner());
            sets.entries
                .values()
                .filter_map(|e| e.cell.get().cloned())
                .collect()
        };
        let mut failed = 0;
        for set in sets {
            if let Err(e) = set.refresh().await {
                tracing::warn!(error = %e, "refreshing repositories; keeping the loaded index");
                failed += 1;
            }
        }
        failed
    }

    /// The loaded repositories for `arch` of `distro`: `repos`, or the
    /// distribution's own when empty, then `payload` (extra repositories for
    /// the image's own packages). `path` names the request field of `repos`.
    pub async fn get(
        &self,
        data_dir: &Path,
        distro: &Distribution,
        arch: &str,
        repos: &[Repository],
        path: &str,
        payload: &[Repository],
    ) -> Result<RepoSet, RepoError> {
        let package_arch = distro
            .architecture(arch)
            .map(|a| a.package_arch.clone())
            .ok_or_else(|| {
                FieldError::new(
                    ErrorKind::UnknownArchitecture,
                    "architecture",
                    format!("{} does not support architecture {arch:?}", distro.name),
                )
            })?;
        let mut lines = Vec::new();
        if repos.is_empty() {
            for r in &distro.repositories {
                lines.push(source_line(
                    distro.family,
                    &r.to_request(arch),
                    r.keyring.as_deref().map(PathBuf::from),
                )?);
            }
        }
        let given = repos.iter().map(|r| (r, path)).chain(
            payload
                .iter()
                .map(|r| (r, "customizations.payload_repositories")),
        );
        for (i, (r, field)) in given.enumerate() {
            let i = if i < repos.len() { i } else { i - repos.len() };
            let field = format!("{field}[{i}]");
            validate_repository(r, &field, distro.family)?;
            check_allowed(&self.policy, r, &field).await?;
            let keyring = match &r.gpgkey {
                Some(key) => Some(dearmor(data_dir, key).await?),
                None => None,
            };
            lines.push(source_line(distro.family, r, keyring)?);
        }
        let key = (package_arch.clone(), lines.clone());
        let cell = {
            let mut sets = self.sets.lock().unwrap_or_else(|e| e.into_inner());
            sets.tick += 1;
            let used = sets.tick;
            let entry = sets.entries.entry(key.clone()).or_insert_with(|| Entry {
                cell: Arc::default(),
                used,
            });
            entry.used = used;
            entry.cell.clone()
        };
        let cache_dir = data_dir.join("repo-cache");
        let limits = self.limits;
        let policy = self.policy.clone();
        let loaded = cell
            .get_or_try_init(|| async move {
                let sources = lines
                    .iter()
                    .map(|l| l.parse::<Source>())
                    .collect::<Result<Vec<_>, _>>()?;
                RepoSet::open_with(
                    RepoConfig {
                        arch: package_arch,
                        sources,
                        cache_dir,
                        keyring: None,
                    },
                    limits,
                    Some(policy),
                )
                .await
                .map_err(RepoError::from)
            })
            .await
            .cloned()?;
        let dropped = self
            .sets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .evict(&key, self.budget);
        if dropped > 0 {
            tracing::info!(
                dropped,
                budget = self.budget,
                "dropped the least recently used repository indexes"
            );
        }
        Ok(loaded)
    }
}

/// A repository as a sources line: `deb [options] URL SUITE COMPONENT...`
/// or `rpm [signed-by=KEYRING] URL`. Without a key, `check_repo_gpg: false` is needed to trust a
/// repository: checksums are still checked, signatures are not.
fn source_line(
    family: Family,
    r: &Repository,
    keyring: Option<PathBuf>,
) -> Result<String, FieldError> {
    let url = r.baseurl.clone().unwrap_or_default();
    let url = url.trim_end_matches('/');
    Ok(match family {
        // An RPM repository is verified (repomd.xml.asc) when it comes with
        // its key, and `check_repo_gpg: false` says not to.
        Family::Rpm => match (keyring, r.check_repo_gpg) {
            (Some(k), None | Some(true)) => format!("rpm [signed-by={}] {url}", k.display()),
            _ => format!("rpm {url}"),
        },
        Family::Debian => {
            let mut opts = Vec::new();
            match (keyring, r.check_repo_gpg) {
                (_, Some(false)) => opts.push("trusted=yes".to_string()),
                (Some(k), _) => opts.push(format!("signed-by={}", k.display())),
                (None, _) => {
                    return Err(FieldError::new(
                        ErrorKind::InvalidRepository,
                        "repositories",
                        format!("{url}: give its signing key (gpgkey) or check_repo_gpg: false"),
                    ))
                }
            }
            format!(
                "deb [{}] {url} {} {}",
                opts.join(" "),
                r.suite.clone().unwrap_or_default(),
                r.components.clone().unwrap_or_default().join(" ")
            )
        }
    })
}

/// Stores an ASCII-armoured key as a keyring file gpgv can read, named by
/// its content.
async fn dearmor(data_dir: &Path, key: &str) -> Result<PathBuf, RepoError> {
    use sha2::Digest;
    let dir = data_dir.join("keys");
    let name = hex::encode(sha2::Sha256::digest(key.as_bytes()));
    let out = dir.join(format!("{name}.gpg"));
    if out.exists() {
        return Ok(out);
    }
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(internal("creating the key directory"))?;
    let armored = dir.join(format!("{name}.asc"));
    tokio::fs::write(&armored, key)
        .await
        .map_err(internal("writing a repository key"))?;
    let tmp = dir.join(format!("{name}.gpg.tmp"));
    let status = tokio::process::Command::new("gpg")
        .args(["--batch", "--yes", "--dearmor", "-o"])
        .arg(&tmp)
        .arg(&armored)
        .status()
        .await
        .map_err(internal("running gpg --dearmor"))?;
    if !status.success() {
        return Err(FieldError::new(
            ErrorKind::InvalidRepository,
            "repositories",
            "gpgkey is not an ASCII-armoured OpenPGP key",
        )
        .into());
    }
    tokio::fs::rename(&tmp, &out)
        .await
        .map_err(internal("storing a repository key"))?;
    Ok(out)
}
