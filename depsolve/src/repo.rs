//! `RepoSet`: the repositories of one request context, loaded into one
//! immutable [`PackageIndex`] shared by all requests. A refresh builds a new
//! index and swaps the `Arc`, so in-flight solves keep the old one.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use crate::compression::decompress_within;
use crate::debindex::IndexSource;
use crate::error::DepsolveError;
use crate::fetch::{sha256_hex, FetchLimits, Fetcher};
use crate::index::PackageIndex;
use crate::policy::RepoPolicy;
use crate::release::{self, Release};
use crate::rpm;
use crate::snapshot;
use crate::solve::{self, Request, Solution, SolvedPackage};
use crate::source::{Source, SourceKind};

/// Where the repositories are and how to trust them.
#[derive(Debug, Clone)]
pub struct RepoConfig {
    /// Debian architecture name (`amd64`).
    pub arch: String,
    /// Sources in apt's order (earlier wins between equal versions).
    pub sources: Vec<Source>,
    /// Disk cache for downloaded metadata.
    pub cache_dir: PathBuf,
    /// Keyring for sources without `signed-by=`.
    pub keyring: Option<PathBuf>,
}

struct Inner {
    config: RepoConfig,
    fetcher: Fetcher,
    index: RwLock<Arc<PackageIndex>>,
}

/// Handle on loaded repositories: `Send + Sync`, cheap to clone.
#[derive(Clone)]
pub struct RepoSet {
    inner: Arc<Inner>,
}

/// A policy allowing exactly the configured sources.
fn own_sources(config: &RepoConfig) -> RepoPolicy {
    RepoPolicy::exactly(config.sources.iter().map(|s| s.url.clone()))
}

/// Downloaded, verified, still compressed index files of one load.
struct Downloaded {
    base_url: String,
    label: String,
    data: Vec<u8>,
    /// SHA-256 of `data`, already checked against the signed metadata.
    sha256: String,
}

impl RepoSet {
    /// Fetches, verifies and parses every source. Parsing runs on a
    /// blocking thread (rayon inside), so this is safe to await anywhere.
    pub async fn open(config: RepoConfig) -> Result<RepoSet, DepsolveError> {
        Self::open_with(config, FetchLimits::default(), None).await
    }

    /// [`RepoSet::open`] with explicit bounds on every fetch and
    /// decompression (also used by later refreshes), and the policy every
    /// URL, redirect and resolved address must pass. Without a policy, the
    /// configured sources are the allowed prefixes (the caller named them;
    /// a redirect elsewhere is still refused).
    pub async fn open_with(
        config: RepoConfig,
        limits: FetchLimits,
        policy: Option<Arc<RepoPolicy>>,
    ) -> Result<RepoSet, DepsolveError> {
        let policy = policy.unwrap_or_else(|| Arc::new(own_sources(&config)));
        let fetcher = Fetcher::new(&config.cache_dir, limits, policy)?;
        let index = load(&fetcher, &config).await?;
        Ok(RepoSet {
            inner: Arc::new(Inner {
                config,
                fetcher,
                index: RwLock::new(index),
            }),
        })
    }

    /// Builds a RepoSet from an index already in memory (e.g. host lists).
    pub fn from_index(
        config: RepoConfig,
        index: Arc<PackageIndex>,
    ) -> Result<RepoSet, DepsolveError> {
        let policy = Arc::new(own_sources(&config));
        let fetcher = Fetcher::new(&config.cache_dir, FetchLimits::default(), policy)?;
        Ok(RepoSet {
            inner: Arc::new(Inner {
                config,
                fetcher,
                index: RwLock::new(index),
            }),
        })
    }

    /// Re-fetches (conditional requests) and atomically swaps the index.
    pub async fn refresh(&self) -> Result<(), DepsolveError> {
        let index = load(&self.inner.fetcher, &self.inner.config).await?;
        let mut guard = self.inner.index.write().unwrap_or_else(|p| p.into_inner());
        *guard = index;
        Ok(())
    }

    /// The current index; requests hold it for their whole solve.
    pub fn index(&self) -> Arc<PackageIndex> {
        self.inner
            .index
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Solves a request on the current index (pure CPU, milliseconds).
    pub fn solve(&self, req: &Request) -> Result<Solution, DepsolveError> {
        solve::solve(&self.index(), req)
    }

    /// [`RepoSet::solve`] on a blocking thread, for handlers that must not
    /// hold an async worker even for a millisecond-scale solve.
    pub async fn solve_async(&self, req: Request) -> Result<Solution, DepsolveError> {
        let set = self.clone();
        tokio::task::spawn_blocking(move || set.solve(&req))
            .await
            .map_err(|e| DepsolveError::Task(e.to_string()))?
    }

    /// Candidate packages whose names match any of the patterns
    /// (`*` and `?` globs), sorted by name.
    pub fn search(&self, patterns: &[String]) -> Vec<SolvedPackage> {
        search(&self.index(), patterns)
    }
}

pub fn search(index: &PackageIndex, patterns: &[String]) -> Vec<SolvedPackage> {
    let mut out: Vec<SolvedPackage> = (0..index.name_count() as u32)
        .map(crate::index::NameId)
        .filter(|&id| {
            patterns
                .iter()
                .any(|p| kiln_api::glob::matches(p, index.name(id)))
        })
        .filter_map(|id| index.candidate(id))
        .map(|c| SolvedPackage::new(index, index.package(c)))
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

async fn load(fetcher: &Fetcher, config: &RepoConfig) -> Result<Arc<PackageIndex>, DepsolveError> {
    let kind = config.sources.first().map_or(SourceKind::Deb, |s| s.kind);
    if let Some(other) = config.sources.iter().find(|s| s.kind != kind) {
        return Err(DepsolveError::BadSource {
            line: other.url.clone(),
            detail: "deb and rpm sources cannot be mixed in one repository set".into(),
        });
    }
    // Sources are fetched concurrently; results keep the configured order,
    // which decides between equal versions as in apt.
    let fetches = config.sources.iter().map(|source| async move {
        match source.kind {
            SourceKind::Deb => fetch_deb(fetcher, source, config).await,
            SourceKind::Rpm => fetch_rpm(fetcher, source).await.map(|d| vec![d]),
        }
    });
    let files: Vec<Downloaded> = futures::future::try_join_all(fetches)
        .await?
        .into_iter()
        .flatten()
        .collect();
    let arch = config.arch.clone();
    let max_index_bytes = fetcher.limits().max_index_bytes;
    // The snapshot of a built index is keyed by exactly what it was built
    // from: the verified files' hashes, their URLs, the arch and the format.
    let mut key = format!("{}\n{:?}\n{arch}\n", env!("CARGO_PKG_VERSION"), kind);
    for f in &files {
        key.push_str(&format!("{} {} {}\n", f.base_url, f.label, f.sha256));
    }
    let snapshot_path = config
        .cache_dir
        .join("index")
        .join(format!("{}.kidx", sha256_hex(key.as_bytes())));
    tokio::task::spawn_blocking(move || {
        if let Some(index) = snapshot::read(&snapshot_path) {
            return Ok(index);
        }
        let index = build_from(kind, &arch, files, max_index_bytes)?;
        if let Err(e) = snapshot::write(&index, &snapshot_path) {
            tracing::warn!(
                "cannot write index snapshot {}: {e}",
                snapshot_path.display()
            );
        }
        Ok(index)
    })
    .await
    .map_err(|e| DepsolveError::Task(e.to_string()))?
}

fn build_from(
    kind: SourceKind,
    arch: &str,
    files: Vec<Downloaded>,
    max_index_bytes: u64,
) -> Result<Arc<PackageIndex>, DepsolveError> {
    {
        use rayon::prelude::*;
        let sources = files
            .into_par_iter()
            .map(|f| {
                Ok(IndexSource {
                    text: decompress_within(&f.label, &f.data, max_index_bytes)?,
                    base_url: f.base_url,
                    label: f.label,
                })
            })
            .collect::<Result<Vec<_>, DepsolveError>>()?;
        if kind == SourceKind::Rpm {
            let sources: Vec<rpm::RpmSource> = sources
                .into_iter()
                .map(|s| rpm::RpmSource {
                    base_url: s.base_url,
                    label: s.label,
                    xml: s.text,
                })
                .collect();
            return rpm::build_index(arch, &sources);
        }
        PackageIndex::build(arch, &sources)
    }
}

/// Fetches and verifies the Release and Packages files of one deb source.
async fn fetch_deb(
    fetcher: &Fetcher,
    source: &Source,
    config: &RepoConfig,
) -> Result<Vec<Downloaded>, DepsolveError> {
    // A flat repository (`deb URL dir/`) keeps Release and Packages in
    // that directory, without components.
    let flat = source.suite.ends_with('/');
    let dists = if flat {
        match source.suite.trim_end_matches('/') {
            "" | "." => source.url.clone(),
            dir => format!("{}/{dir}", source.url),
        }
    } else {
        format!("{}/dists/{}", source.url, source.suite)
    };
    let keyring = source.signed_by.clone().or_else(|| config.keyring.clone());
    let need_keyring = |file: &str| {
        keyring.clone().ok_or_else(|| DepsolveError::Signature {
            file: file.to_string(),
            detail: "no keyring configured (use signed-by= or --keyring, or [trusted=yes])".into(),
        })
    };
    let inrelease_url = format!("{dists}/InRelease");
    let (release_url, release_text) = match fetcher.get(&inrelease_url).await? {
        Some(data) => {
            let text = if source.trusted {
                release::strip_clearsign(&String::from_utf8_lossy(&data))
            } else {
                release::verify_inline(&inrelease_url, &data, &need_keyring(&inrelease_url)?)
                    .await?
            };
            (inrelease_url, text)
        }
        None => {
            let url = format!("{dists}/Release");
            let data = fetcher
                .get(&url)
                .await?
                .ok_or_else(|| DepsolveError::Fetch {
                    url: url.clone(),
                    detail: "neither InRelease nor Release exists".into(),
                })?;
            if !source.trusted {
                let sig_url = format!("{dists}/Release.gpg");
                let sig = fetcher
                    .get(&sig_url)
                    .await?
                    .ok_or_else(|| DepsolveError::Signature {
                        file: url.clone(),
                        detail: format!("{sig_url} is missing"),
                    })?;
                release::verify_detached(&url, &data, &sig, &need_keyring(&url)?).await?;
            }
            (url, String::from_utf8_lossy(&data).into_owned())
        }
    };
    let release = Release::parse(&release_url, &release_text)?;
    if let (Some(until), true) = (release.valid_until, source.check_valid_until) {
        if until < chrono::Utc::now() {
            return Err(DepsolveError::BadRelease {
                file: release_url,
                detail: format!("expired: Valid-Until {until} has passed (use [check-valid-until=no] for archived snapshots)"),
            });
        }
    }
    let mut out = Vec::new();
    let components: Vec<String> = if flat {
        vec![String::new()]
    } else {
        source
            .components
            .iter()
            .map(|c| format!("{c}/binary-{}/", config.arch))
            .collect()
    };
    for component in &components {
        let mut found = false;
        for name in ["Packages.xz", "Packages.gz", "Packages"] {
            let path = format!("{component}{name}");
            let Some((size, sha)) = release.files.get(&path) else {
                continue;
            };
            let url = format!("{dists}/{path}");
            let Some(data) = fetcher.get(&url).await? else {
                continue;
            };
            if data.len() as u64 != *size {
                return Err(DepsolveError::Size {
                    file: url,
                    expected: *size,
                    actual: data.len() as u64,
                });
            }
            let actual = sha256_hex(&data);
            if &actual != sha {
                return Err(DepsolveError::Checksum {
                    file: url,
                    expected: sha.clone(),
                    actual,
                });
            }
            out.push(Downloaded {
                base_url: source.url.clone(),
                label: url,
                data,
                sha256: actual,
            });
            found = true;
            break;
        }
        if !found {
            return Err(DepsolveError::BadRelease {
                file: release_url.clone(),
                detail: format!("no {component}Packages index is listed and available"),
            });
        }
    }
    Ok(out)
}

/// Fetches `repomd.xml` (verified against `repomd.xml.asc` when the source
/// has `signed-by=`) and the primary.xml it lists, checksum checked.
async fn fetch_rpm(fetcher: &Fetcher, source: &Source) -> Result<Downloaded, DepsolveError> {
    let repomd_url = format!("{}/repodata/repomd.xml", source.url);
    let data = fetcher
        .get(&repomd_url)
        .await?
        .ok_or_else(|| DepsolveError::Fetch {
            url: repomd_url.clone(),
            detail: "not found".into(),
        })?;
    if let (Some(keyring), false) = (&source.signed_by, source.trusted) {
        let sig_url = format!("{repomd_url}.asc");
        let sig = fetcher
            .get(&sig_url)
            .await?
            .ok_or_else(|| DepsolveError::Signature {
                file: repomd_url.clone(),
                detail: format!("{sig_url} is missing"),
            })?;
        release::verify_detached(&repomd_url, &data, &sig, keyring).await?;
    }
    let text = String::from_utf8_lossy(&data);
    let primary = rpm::parse_repomd(&repomd_url, &text)?;
    let url = format!("{}/{}", source.url, primary.href);
    let data = fetcher
        .get(&url)
        .await?
        .ok_or_else(|| DepsolveError::Fetch {
            url: url.clone(),
            detail: "listed in repomd.xml but not found".into(),
        })?;
    if let Some(size) = primary.size.filter(|&s| s != data.len() as u64) {
        return Err(DepsolveError::Size {
            file: url,
            expected: size,
            actual: data.len() as u64,
        });
    }
    let actual = sha256_hex(&data);
    if actual != primary.sha256 {
        return Err(DepsolveError::Checksum {
            file: url,
            expected: primary.sha256,
            actual,
        });
    }
    Ok(Downloaded {
        base_url: source.url.clone(),
        label: url,
        data,
        sha256: actual,
    })
}
