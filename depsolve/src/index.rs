//! The in-memory package index: every package of a set of repositories,
//! with interned names, provider lists and the candidate (newest) version
//! of each name, built once and shared read-only between requests.

use std::collections::HashMap;
use std::sync::Arc;

use crate::control::{self, Relation};
use crate::error::DepsolveError;
use crate::version;

/// Interned package name. Ids follow the order in which apt's cache would
/// first meet each name, which apt uses as its last tie-breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NameId(pub u32);

/// Architecture qualifier on a dependency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchQualifier {
    /// No qualifier, `:native` or the native architecture by name.
    Native,
    /// `:any`: satisfied only by `Multi-Arch: allowed` packages.
    Any,
    /// Another architecture: never satisfiable in a single-arch image.
    Foreign,
}

/// One alternative of a dependency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    pub name: NameId,
    pub arch: ArchQualifier,
    pub constraint: Option<(Relation, Box<str>)>,
}

/// What a package provides (a virtual name, optionally versioned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provide {
    pub name: NameId,
    pub version: Option<Box<str>>,
}

/// A dependency that applies only while another is met (RPM `(A if B)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conditional {
    pub when: Dependency,
    pub then: Box<[Dependency]>,
}

/// Which distribution family's version ordering and rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Deb,
    Rpm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MultiArch {
    No,
    Same,
    Foreign,
    Allowed,
}

/// One binary package (a name at one version) from one repository.
#[derive(Debug, Clone)]
pub struct Package {
    pub name: NameId,
    pub version: Box<str>,
    /// The native architecture or `all`.
    pub arch: Box<str>,
    pub multi_arch: MultiArch,
    pub essential: bool,
    /// `Important: yes` or `Protected: yes`.
    pub important: bool,
    /// apt's numbering: required 1, important 2, standard 3, optional 4, extra 5.
    pub priority: u8,
    pub pre_depends: Box<[Box<[Dependency]>]>,
    pub depends: Box<[Box<[Dependency]>]>,
    pub recommends: Box<[Box<[Dependency]>]>,
    pub conflicts: Box<[Dependency]>,
    pub breaks: Box<[Dependency]>,
    /// RPM Obsoletes: like Conflicts, but only against package names.
    pub obsoletes: Box<[Dependency]>,
    /// RPM `(A if B)` rich dependencies.
    pub conditional: Box<[Conditional]>,
    pub provides: Box<[Provide]>,
    pub filename: Box<str>,
    pub size: u64,
    pub sha256: Box<str>,
    /// Index into [`PackageIndex::repositories`].
    pub repository: u16,
}

/// One parsed `Packages` file and where its `Filename`s are relative to.
pub struct IndexSource {
    /// Base URL of the archive (`Filename` is relative to it).
    pub base_url: String,
    /// Name used in errors (URL of the Packages file).
    pub label: String,
    pub text: String,
}

/// All packages of a set of repositories for one architecture.
#[derive(Debug)]
pub struct PackageIndex {
    family: Family,
    arch: String,
    names: Vec<Box<str>>,
    name_ids: HashMap<Box<str>, NameId>,
    packages: Vec<Package>,
    /// Per name: indexes into `packages` of the real packages of that name.
    versions: Vec<Vec<u32>>,
    /// Per name: (package, provide index) of every package providing it.
    providers: Vec<Vec<(u32, u16)>>,
    /// Per name: the package apt would pick (highest version).
    candidates: Vec<Option<u32>>,
    /// Names whose candidate is Essential or Priority: required, sorted.
    essential: Vec<NameId>,
    repositories: Vec<String>,
}

impl PackageIndex {
    /// Builds the index from Packages texts, in apt's source order.
    pub fn build(arch: &str, sources: &[IndexSource]) -> Result<Arc<PackageIndex>, DepsolveError> {
        let parsed: Vec<Vec<control::Stanza<'_>>> = sources
            .iter()
            .map(|s| control::parse_stanzas(&s.text))
            .collect();
        let mut b = Builder::new(arch);
        let mut packages = Vec::new();
        let mut seen: HashMap<(NameId, Box<str>), ()> = HashMap::new();
        for (repo, (source, stanzas)) in sources.iter().zip(&parsed).enumerate() {
            for st in stanzas {
                let name = b.intern(st.package);
                if !st.architecture.is_empty()
                    && st.architecture != "all"
                    && st.architecture != arch
                {
                    continue;
                }
                let pkg =
                    b.package(name, st, repo as u16)
                        .map_err(|detail| DepsolveError::BadIndex {
                            file: source.label.clone(),
                            package: st.package.to_string(),
                            detail,
                        })?;
                // The same version in two repositories is one version to apt.
                if seen.insert((name, pkg.version.clone()), ()).is_some() {
                    continue;
                }
                packages.push(pkg);
            }
        }
        let repos = sources.iter().map(|s| s.base_url.clone()).collect();
        Ok(Self::finish(Family::Deb, arch, b, packages, repos))
    }

    /// Computes the per-name tables once all packages are known.
    pub(crate) fn finish(
        family: Family,
        arch: &str,
        b: Builder<'_>,
        packages: Vec<Package>,
        repositories: Vec<String>,
    ) -> Arc<PackageIndex> {
        let n = b.names.len();
        let mut versions = vec![Vec::new(); n];
        let mut providers = vec![Vec::new(); n];
        for (i, p) in packages.iter().enumerate() {
            versions[p.name.0 as usize].push(i as u32);
            for (j, pr) in p.provides.iter().enumerate() {
                providers[pr.name.0 as usize].push((i as u32, j as u16));
            }
        }
        let candidates: Vec<Option<u32>> = versions
            .iter()
            .map(|vs| {
                vs.iter().copied().reduce(|best, v| {
                    let ord = family_compare(
                        family,
                        &packages[v as usize].version,
                        &packages[best as usize].version,
                    );
                    if ord.is_gt() {
                        v
                    } else {
                        best
                    }
                })
            })
            .collect();
        let mut essential: Vec<NameId> = (0..n)
            .filter(|&i| {
                candidates[i].is_some_and(|c: u32| {
                    let p = &packages[c as usize];
                    p.essential || (family == Family::Deb && p.priority == 1)
                })
            })
            .map(|i| NameId(i as u32))
            .collect();
        essential.sort_by(|x, y| b.names[x.0 as usize].cmp(&b.names[y.0 as usize]));
        Arc::new(PackageIndex {
            essential,
            family,
            arch: arch.to_string(),
            names: b.names,
            name_ids: b.name_ids,
            packages,
            versions,
            providers,
            candidates,
            repositories,
        })
    }

    pub fn family(&self) -> Family {
        self.family
    }

    /// Orders two versions with the family's rules.
    pub fn compare_versions(&self, a: &str, b: &str) -> std::cmp::Ordering {
        family_compare(self.family, a, b)
    }

    pub fn arch(&self) -> &str {
        &self.arch
    }
    pub fn name(&self, id: NameId) -> &str {
        &self.names[id.0 as usize]
    }
    pub fn lookup(&self, name: &str) -> Option<NameId> {
        self.name_ids.get(name).copied()
    }
    pub fn package(&self, i: u32) -> &Package {
        &self.packages[i as usize]
    }
    pub fn packages(&self) -> &[Package] {
        &self.packages
    }
    pub fn name_count(&self) -> usize {
        self.names.len()
    }
    /// Names a base system needs (Essential or Priority: required), by name.
    pub fn essential(&self) -> &[NameId] {
        &self.essential
    }

    /// Candidates of all names, indexed by name id.
    pub fn candidates(&self) -> &[Option<u32>] {
        &self.candidates
    }

    /// The candidate (newest) package of a name, if it has real packages.
    pub fn candidate(&self, id: NameId) -> Option<u32> {
        self.candidates[id.0 as usize]
    }
    /// All real packages of a name.
    pub fn versions(&self, id: NameId) -> &[u32] {
        &self.versions[id.0 as usize]
    }
    /// (package, provide index) of every package providing `id`.
    pub fn providers(&self, id: NameId) -> &[(u32, u16)] {
        &self.providers[id.0 as usize]
    }
    /// Download URL of a package.
    pub fn url(&self, p: &Package) -> String {
        let base = &self.repositories[p.repository as usize];
        format!("{}/{}", base.trim_end_matches('/'), p.filename)
    }

    /// Whether package `p` satisfies `dep` directly (by name and version).
    pub fn satisfies_directly(&self, p: &Package, dep: &Dependency) -> bool {
        if p.name != dep.name {
            return false;
        }
        match dep.arch {
            ArchQualifier::Foreign => return false,
            ArchQualifier::Any if p.multi_arch != MultiArch::Allowed => return false,
            _ => {}
        }
        match &dep.constraint {
            None => true,
            Some((rel, v)) => rel.accepts(self.compare_versions(&p.version, v)),
        }
    }

    /// Whether provide `pr` of a package satisfies `dep`. Unversioned
    /// provides never satisfy versioned dependencies in Debian (Policy
    /// §7.5); in RPM they satisfy any version.
    pub fn provide_satisfies(&self, pr: &Provide, dep: &Dependency) -> bool {
        if pr.name != dep.name || dep.arch != ArchQualifier::Native {
            return false;
        }
        match (&dep.constraint, &pr.version) {
            (None, _) => true,
            (Some(_), None) => self.family == Family::Rpm,
            (Some((rel, want)), Some(have)) => rel.accepts(self.compare_versions(have, want)),
        }
    }

    /// Renders a dependency the way it is written in control files.
    pub fn dep_string(&self, d: &Dependency) -> String {
        let mut s = self.name(d.name).to_string();
        match d.arch {
            ArchQualifier::Any => s.push_str(":any"),
            ArchQualifier::Foreign => s.push_str(":<foreign>"),
            ArchQualifier::Native => {}
        }
        if let Some((rel, v)) = &d.constraint {
            let op = match self.family {
                Family::Deb => rel.as_str(),
                Family::Rpm => rel.as_rpm_str(),
            };
            s.push_str(&format!(" ({op} {v})"));
        }
        s
    }

    pub fn group_string(&self, g: &[Dependency]) -> String {
        g.iter()
            .map(|d| self.dep_string(d))
            .collect::<Vec<_>>()
            .join(" | ")
    }
}

pub(crate) fn family_compare(family: Family, a: &str, b: &str) -> std::cmp::Ordering {
    match family {
        Family::Deb => version::compare(a, b),
        Family::Rpm => crate::rpmversion::compare_evr(a, b),
    }
}

/// Interns names in first-seen order while packages are added.
pub(crate) struct Builder<'x> {
    pub(crate) arch: &'x str,
    names: Vec<Box<str>>,
    name_ids: HashMap<Box<str>, NameId>,
}

impl<'x> Builder<'x> {
    pub(crate) fn new(arch: &'x str) -> Self {
        Builder {
            arch,
            names: Vec::new(),
            name_ids: HashMap::new(),
        }
    }

    pub(crate) fn intern(&mut self, name: &str) -> NameId {
        if let Some(&id) = self.name_ids.get(name) {
            return id;
        }
        let id = NameId(self.names.len() as u32);
        self.names.push(name.into());
        self.name_ids.insert(name.into(), id);
        id
    }

    fn package(
        &mut self,
        name: NameId,
        st: &control::Stanza<'_>,
        repo: u16,
    ) -> Result<Package, String> {
        if st.version.is_empty() {
            return Err("missing Version".into());
        }
        // Fields in the order apt's cache generator reads them, so that
        // first-seen name ids match apt's package ids.
        let pre_depends = self.groups(st.pre_depends, "Pre-Depends")?;
        let depends = self.groups(st.depends, "Depends")?;
        let conflicts = self.flat(st.conflicts, "Conflicts")?;
        let breaks = self.flat(st.breaks, "Breaks")?;
        let recommends = self.groups(st.recommends, "Recommends")?;
        for (field, text) in [
            ("Suggests", st.suggests),
            ("Replaces", st.replaces),
            ("Enhances", st.enhances),
        ] {
            self.groups(text, field)?;
        }
        let provides = self.provides(st.provides)?;
        let size = if st.size.is_empty() {
            0
        } else {
            st.size
                .parse()
                .map_err(|_| format!("bad Size '{}'", st.size))?
        };
        Ok(Package {
            name,
            version: st.version.into(),
            arch: if st.architecture.is_empty() {
                self.arch
            } else {
                st.architecture
            }
            .into(),
            multi_arch: match st.multi_arch {
                "same" => MultiArch::Same,
                "foreign" => MultiArch::Foreign,
                "allowed" => MultiArch::Allowed,
                _ => MultiArch::No,
            },
            essential: st.essential,
            important: st.important,
            priority: match st.priority {
                "required" => 1,
                "important" => 2,
                "standard" => 3,
                "optional" => 4,
                "extra" => 5,
                _ => 0,
            },
            pre_depends,
            depends,
            recommends,
            conflicts,
            breaks,
            obsoletes: Box::new([]),
            conditional: Box::new([]),
            provides,
            filename: st.filename.into(),
            size,
            sha256: st.sha256.into(),
            repository: repo,
        })
    }

    fn dep(&mut self, raw: &control::RawDep<'_>) -> Dependency {
        let arch = match raw.arch {
            None | Some("native") => ArchQualifier::Native,
            Some("any") => ArchQualifier::Any,
            Some(a) if a == self.arch || a == "all" => ArchQualifier::Native,
            Some(_) => ArchQualifier::Foreign,
        };
        Dependency {
            name: self.intern(raw.name),
            arch,
            constraint: raw.constraint.map(|(r, v)| (r, v.into())),
        }
    }

    fn groups(&mut self, text: &str, field: &str) -> Result<Box<[Box<[Dependency]>]>, String> {
        if text.is_empty() {
            return Ok(Box::new([]));
        }
        let raw = control::parse_relations(text).map_err(|e| format!("{field}: {}", e.0))?;
        Ok(raw
            .iter()
            .map(|g| g.iter().map(|d| self.dep(d)).collect())
            .collect())
    }

    fn flat(&mut self, text: &str, field: &str) -> Result<Box<[Dependency]>, String> {
        Ok(self
            .groups(text, field)?
            .iter()
            .flat_map(|g| g.iter().cloned())
            .collect())
    }

    fn provides(&mut self, text: &str) -> Result<Box<[Provide]>, String> {
        Ok(self
            .groups(text, "Provides")?
            .iter()
            .flat_map(|g| g.iter())
            .map(|d| Provide {
                name: d.name,
                version: match &d.constraint {
                    Some((Relation::Eq, v)) => Some(v.clone()),
                    _ => None,
                },
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(text: &str) -> Arc<PackageIndex> {
        PackageIndex::build(
            "amd64",
            &[IndexSource {
                base_url: "file:///repo".into(),
                label: "test".into(),
                text: text.into(),
            }],
        )
        .unwrap()
    }

    #[test]
    fn candidate_is_newest_and_foreign_arch_is_dropped() {
        let i = idx("Package: a\nVersion: 1.0\nArchitecture: amd64\n\nPackage: a\nVersion: 1.0+b1\nArchitecture: amd64\n\nPackage: a\nVersion: 9\nArchitecture: arm64\n");
        let a = i.lookup("a").unwrap();
        let c = i.candidate(a).unwrap();
        assert_eq!(&*i.package(c).version, "1.0+b1");
        assert_eq!(i.versions(a).len(), 2);
    }

    #[test]
    fn provides_and_urls() {
        let i = idx("Package: mta\nVersion: 2\nArchitecture: all\nProvides: mail-transport-agent, foo (= 3)\nFilename: pool/m/mta.deb\n");
        let v = i.lookup("foo").unwrap();
        assert_eq!(i.providers(v).len(), 1);
        let p = i.package(0);
        assert_eq!(i.url(p), "file:///repo/pool/m/mta.deb");
        let dep = Dependency {
            name: v,
            arch: ArchQualifier::Native,
            constraint: Some((Relation::GreaterEq, "2".into())),
        };
        assert!(i.provide_satisfies(&p.provides[1], &dep));
        let m = i.lookup("mail-transport-agent").unwrap();
        let vdep = Dependency {
            name: m,
            arch: ArchQualifier::Native,
            constraint: Some((Relation::GreaterEq, "1".into())),
        };
        assert!(!i.provide_satisfies(&p.provides[0], &vdep));
    }

    #[test]
    fn bad_field_names_file_and_package() {
        let err = PackageIndex::build(
            "amd64",
            &[IndexSource {
                base_url: "x".into(),
                label: "dists/x/Packages".into(),
                text: "Package: broken\nVersion: 1\nDepends: a (>= )\n".into(),
            }],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("dists/x/Packages") && err.contains("broken"),
            "{err}"
        );
    }
}
