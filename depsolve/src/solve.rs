//! Requests and solutions: the public face of the resolver.

use kiln_api::depsolve::{split_evr, DepsolvedPackage};
use serde::{Deserialize, Serialize};

use crate::error::DepsolveError;
use crate::index::{Family, PackageIndex};
use crate::resolve::Marker;

/// What to install.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Request {
    /// Package names, in the order apt would be given them; `name=version`
    /// pins a version.
    pub packages: Vec<String>,
    /// Add every `Essential: yes` and `Priority: required` package (a base image).
    #[serde(default)]
    pub essential: bool,
    /// Follow Recommends (apt's default; off here, as for image builds).
    #[serde(default)]
    pub recommends: bool,
}

/// One package of a solution, ready to become a manifest source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SolvedPackage {
    pub name: String,
    pub version: String,
    pub arch: String,
    pub url: String,
    pub sha256: String,
    pub size: u64,
}

impl SolvedPackage {
    pub fn new(index: &PackageIndex, p: &crate::index::Package) -> Self {
        SolvedPackage {
            name: index.name(p.name).to_string(),
            version: index.str(p.version).to_string(),
            arch: index.str(p.arch).to_string(),
            url: index.url(p),
            sha256: index.str(p.sha256).to_string(),
            size: p.size(),
        }
    }

    /// The package in the API's shape: the depsolve job's result and
    /// `POST /depsolve`'s answer. `family` names the package type.
    pub fn depsolved(&self, family: Family) -> DepsolvedPackage {
        let (epoch, version, release) = split_evr(&self.version);
        DepsolvedPackage {
            package_type: match family {
                Family::Debian => "deb",
                Family::Rpm => "rpm",
            }
            .into(),
            name: self.name.clone(),
            version,
            release,
            epoch,
            arch: self.arch.clone(),
            sigmd5: String::new(),
            checksum: format!("sha256:{}", self.sha256),
            url: self.url.clone(),
            size: self.size,
        }
    }
}

/// The exact package set, sorted by name.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Solution {
    pub packages: Vec<SolvedPackage>,
}

/// Names of the packages a base image needs: `Essential: yes` or
/// `Priority: required` in their candidate version, sorted by name.
pub fn essential_names(index: &PackageIndex) -> Vec<String> {
    index
        .essential()
        .iter()
        .map(|&n| index.name(n).to_string())
        .collect()
}

/// The full, ordered list of names a request installs: the base set first
/// (when asked), then the requested names, without repeats.
pub fn request_names(index: &PackageIndex, req: &Request) -> Vec<String> {
    let mut names = if req.essential {
        essential_names(index)
    } else {
        Vec::new()
    };
    for n in &req.packages {
        // A pinned request replaces, in place, the plain name a base set
        // may already hold.
        let bare = n.split_once('=').map_or(n.as_str(), |(b, _)| b);
        match names.iter().position(|m| m == bare) {
            Some(pos) => names[pos] = n.clone(),
            None if !names.contains(n) => names.push(n.clone()),
            None => {}
        }
    }
    names
}

/// Solves a request against an index. CPU-bound and quick (milliseconds);
/// call it from async code directly or through `spawn_blocking` for big sets.
pub fn solve(index: &PackageIndex, req: &Request) -> Result<Solution, DepsolveError> {
    let names = request_names(index, req);
    let mut marker = Marker::new(index, req.recommends);
    let mut problems = Vec::new();
    let mut ids = Vec::new();
    for request in &names {
        // `name=version` pins a version, as with apt-get.
        let (n, pinned) = match request.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (request.as_str(), None),
        };
        let id = match index.lookup(n) {
            Some(id) if index.candidate(id).is_some() => id,
            Some(id) if !index.providers(id).is_empty() => {
                // A virtual name: apt accepts it only with a single provider.
                let mut owners: Vec<_> = index
                    .providers(id)
                    .iter()
                    .map(|&[p, _]| index.package(p).name)
                    .collect();
                owners.sort();
                owners.dedup();
                if owners.len() == 1 {
                    owners[0]
                } else {
                    let list: Vec<&str> = owners.iter().map(|&o| index.name(o)).collect();
                    problems.push(format!(
                        "{n} is a virtual package provided by {}; request one of them",
                        list.join(", ")
                    ));
                    continue;
                }
            }
            _ => {
                problems.push(format!("package {n} is not available in any repository"));
                continue;
            }
        };
        if let Some(v) = pinned {
            let versions = index.versions(id);
            match versions
                .iter()
                .find(|&&p| index.version(index.package(p)) == v)
            {
                Some(&p) => marker.set_candidate(id, p),
                None => {
                    let have: Vec<&str> = versions
                        .iter()
                        .map(|&p| index.version(index.package(p)))
                        .collect();
                    problems.push(format!(
                        "version {v} of {n} is not available (available: {})",
                        if have.is_empty() {
                            "none".to_string()
                        } else {
                            have.join(", ")
                        }
                    ));
                    continue;
                }
            }
        }
        if marker.request(id) {
            ids.push(id);
        }
    }
    if !problems.is_empty() {
        return Err(DepsolveError::Unsolvable { problems });
    }
    let mut ok = true;
    for &id in &ids {
        ok &= marker.install_requested(id);
    }
    marker.settle_conditionals();
    let problems = marker.check();
    if !ok || !problems.is_empty() {
        // Reasons collected while marking read top-down (requested package
        // first); the final check only adds what they do not already say.
        let mut out: Vec<String> = Vec::new();
        for f in marker.failures.drain(..).rev() {
            if !out.contains(&f) {
                out.push(f);
            }
        }
        if out.is_empty() {
            out = problems;
        } else {
            for p in problems {
                if !p.ends_with("which is not satisfied") && !out.contains(&p) {
                    out.push(p);
                }
            }
        }
        return Err(DepsolveError::Unsolvable { problems: out });
    }
    let mut packages: Vec<SolvedPackage> = marker
        .installed()
        .map(|i| SolvedPackage::new(index, index.package(i)))
        .collect();
    packages.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Solution { packages })
}
