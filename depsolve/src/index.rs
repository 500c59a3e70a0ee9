//! The in-memory package index: every package of a set of repositories,
//! with interned names, provider lists and the candidate (newest) version
//! of each name, built once and shared read-only between requests.
//!
//! All records are plain-old-data in a few flat vectors (strings in one
//! arena, dependencies, groups, provides), which keeps memory low and lets
//! [`crate::snapshot`] store and load an index as raw bytes.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use bytemuck::{Pod, Zeroable};

use crate::control::Relation;
use crate::version;

/// Interned package name. Ids follow the order in which apt's cache would
/// first meet each name, which apt uses as its last tie-breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Pod, Zeroable)]
#[repr(transparent)]
pub struct NameId(pub u32);

/// A string in the index's arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct StrRef {
    off: u32,
    len: u32,
}

impl StrRef {
    /// "No string" (an absent version), distinct from an empty one.
    pub const NONE: StrRef = StrRef {
        off: u32::MAX,
        len: 0,
    };
    pub fn is_none(self) -> bool {
        self.off == u32::MAX
    }
    pub(crate) fn off(self) -> u32 {
        self.off
    }
    pub(crate) fn end(self) -> usize {
        self.off as usize + self.len as usize
    }
}

/// A run of records in one of the index's flat vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Pod, Zeroable)]
#[repr(C)]
pub struct Span {
    start: u32,
    len: u32,
}

impl Span {
    pub(crate) fn end(self) -> usize {
        self.start as usize + self.len as usize
    }
    fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.end()
    }
}

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct Dependency {
    pub name: NameId,
    arch: u32,
    relation: u32,
    version: StrRef,
}

impl Dependency {
    pub fn new(name: NameId, arch: ArchQualifier, constraint: Option<(Relation, StrRef)>) -> Self {
        let arch = match arch {
            ArchQualifier::Native => 0,
            ArchQualifier::Any => 1,
            ArchQualifier::Foreign => 2,
        };
        let (relation, version) = match constraint {
            None => (0, StrRef::NONE),
            Some((r, v)) => (
                match r {
                    Relation::Less => 1,
                    Relation::LessEq => 2,
                    Relation::Eq => 3,
                    Relation::GreaterEq => 4,
                    Relation::Greater => 5,
                },
                v,
            ),
        };
        Dependency {
            name,
            arch,
            relation,
            version,
        }
    }
    pub fn arch(&self) -> ArchQualifier {
        match self.arch {
            0 => ArchQualifier::Native,
            1 => ArchQualifier::Any,
            _ => ArchQualifier::Foreign,
        }
    }
    pub fn relation(&self) -> Option<(Relation, StrRef)> {
        let r = match self.relation {
            1 => Relation::Less,
            2 => Relation::LessEq,
            3 => Relation::Eq,
            4 => Relation::GreaterEq,
            5 => Relation::Greater,
            _ => return None,
        };
        Some((r, self.version))
    }
}

/// What a package provides (a virtual name, optionally versioned).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct Provide {
    pub name: NameId,
    pub version: StrRef,
}

/// A dependency that applies only while another is met (RPM `(A if B)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct Conditional {
    pub when: Dependency,
    /// Alternatives (into the dependency vector).
    pub then: Span,
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

const ESSENTIAL: u32 = 1;
const IMPORTANT: u32 = 2;

/// One binary package (a name at one version) from one repository.
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
#[repr(C)]
pub struct Package {
    pub name: NameId,
    pub repository: u32,
    pub version: StrRef,
    /// The native architecture, `all` or `noarch`.
    pub arch: StrRef,
    pub filename: StrRef,
    pub sha256: StrRef,
    size: [u32; 2],
    flags: u32,
    /// apt's numbering: required 1, important 2, standard 3, optional 4, extra 5.
    priority: u32,
    multi_arch: u32,
    pub pre_depends: Span,
    pub depends: Span,
    pub recommends: Span,
    pub conflicts: Span,
    pub breaks: Span,
    /// RPM Obsoletes: like Conflicts, but only against package names.
    pub obsoletes: Span,
    pub conditional: Span,
    pub provides: Span,
}

impl Package {
    pub fn essential(&self) -> bool {
        self.flags & ESSENTIAL != 0
    }
    /// `Important: yes` or `Protected: yes`.
    pub fn important(&self) -> bool {
        self.flags & IMPORTANT != 0
    }
    pub fn priority(&self) -> u8 {
        self.priority as u8
    }
    pub fn size(&self) -> u64 {
        u64::from(self.size[0]) | (u64::from(self.size[1]) << 32)
    }
    pub(crate) fn provides_len(&self) -> u32 {
        self.provides.len
    }
    pub fn multi_arch(&self) -> MultiArch {
        match self.multi_arch {
            1 => MultiArch::Same,
            2 => MultiArch::Foreign,
            3 => MultiArch::Allowed,
            _ => MultiArch::No,
        }
    }
}

/// Plain fields of a package being added to a [`Builder`].
pub(crate) struct NewPackage<'s> {
    pub name: NameId,
    pub version: &'s str,
    pub arch: &'s str,
    pub filename: &'s str,
    pub sha256: &'s str,
    pub size: u64,
    pub essential: bool,
    pub important: bool,
    pub priority: u8,
    pub multi_arch: MultiArch,
    pub repository: u32,
}

/// All packages of a set of repositories for one architecture.
pub struct PackageIndex {
    pub(crate) family: Family,
    pub(crate) arch: String,
    pub(crate) strings: String,
    pub(crate) names: Vec<StrRef>,
    /// Name ids sorted by name, for lookups by binary search.
    pub(crate) sorted_names: Vec<NameId>,
    pub(crate) packages: Vec<Package>,
    pub(crate) groups: Vec<Span>,
    pub(crate) deps: Vec<Dependency>,
    pub(crate) provides: Vec<Provide>,
    pub(crate) conditionals: Vec<Conditional>,
    /// Per name (CSR): the real packages of that name.
    pub(crate) version_offsets: Vec<u32>,
    pub(crate) version_list: Vec<u32>,
    /// Per name (CSR): (package, provide index) of every provider.
    pub(crate) provider_offsets: Vec<u32>,
    pub(crate) provider_list: Vec<[u32; 2]>,
    /// Per name: the package apt would pick (highest version), or u32::MAX.
    pub(crate) candidates: Vec<u32>,
    /// Names whose candidate is Essential or Priority: required, sorted.
    pub(crate) essential: Vec<NameId>,
    pub(crate) repositories: Vec<String>,
}

impl std::fmt::Debug for PackageIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackageIndex")
            .field("family", &self.family)
            .field("arch", &self.arch)
            .field("packages", &self.packages.len())
            .field("names", &self.names.len())
            .finish()
    }
}

impl PackageIndex {
    pub fn family(&self) -> Family {
        self.family
    }
    pub fn arch(&self) -> &str {
        &self.arch
    }
    pub fn str(&self, r: StrRef) -> &str {
        if r.is_none() {
            return "";
        }
        self.strings.get(r.off as usize..r.end()).unwrap_or("")
    }
    pub fn name(&self, id: NameId) -> &str {
        self.str(self.names[id.0 as usize])
    }
    pub fn lookup(&self, name: &str) -> Option<NameId> {
        self.sorted_names
            .binary_search_by(|&id| self.name(id).cmp(name))
            .ok()
            .map(|i| self.sorted_names[i])
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
    pub fn version(&self, p: &Package) -> &str {
        self.str(p.version)
    }
    /// The candidate (newest) package of a name, if it has real packages.
    pub fn candidate(&self, id: NameId) -> Option<u32> {
        Some(self.candidates[id.0 as usize]).filter(|&c| c != u32::MAX)
    }
    /// Candidates of all names, indexed by name id (u32::MAX: none).
    pub(crate) fn candidates(&self) -> &[u32] {
        &self.candidates
    }
    /// Names a base system needs (Essential or Priority: required), by name.
    pub fn essential(&self) -> &[NameId] {
        &self.essential
    }
    /// All real packages of a name.
    pub fn versions(&self, id: NameId) -> &[u32] {
        let i = id.0 as usize;
        &self.version_list[self.version_offsets[i] as usize..self.version_offsets[i + 1] as usize]
    }
    /// [package, provide index] of every package providing `id`.
    pub fn providers(&self, id: NameId) -> &[[u32; 2]] {
        let i = id.0 as usize;
        &self.provider_list
            [self.provider_offsets[i] as usize..self.provider_offsets[i + 1] as usize]
    }
    /// Or-groups of a Depends-like field.
    pub fn groups(&self, s: Span) -> impl Iterator<Item = &[Dependency]> + '_ {
        self.groups[s.range()].iter().map(|g| &self.deps[g.range()])
    }
    /// Flat dependency list (Conflicts, Breaks, Obsoletes, a conditional's alternatives).
    pub fn deps(&self, s: Span) -> &[Dependency] {
        &self.deps[s.range()]
    }
    pub fn provides_of(&self, p: &Package) -> &[Provide] {
        &self.provides[p.provides.range()]
    }
    pub fn conditionals_of(&self, p: &Package) -> &[Conditional] {
        &self.conditionals[p.conditional.range()]
    }
    /// Download URL of a package.
    pub fn url(&self, p: &Package) -> String {
        let base = &self.repositories[p.repository as usize];
        format!("{}/{}", base.trim_end_matches('/'), self.str(p.filename))
    }

    /// Orders two versions with the family's rules.
    pub fn compare_versions(&self, a: &str, b: &str) -> Ordering {
        family_compare(self.family, a, b)
    }

    /// Whether package `p` satisfies `dep` directly (by name and version).
    pub fn satisfies_directly(&self, p: &Package, dep: &Dependency) -> bool {
        if p.name != dep.name {
            return false;
        }
        match dep.arch() {
            ArchQualifier::Foreign => return false,
            ArchQualifier::Any if p.multi_arch() != MultiArch::Allowed => return false,
            _ => {}
        }
        match dep.relation() {
            None => true,
            Some((rel, v)) => rel.accepts(self.compare_versions(self.str(p.version), self.str(v))),
        }
    }

    /// Whether provide `pr` of a package satisfies `dep`. Unversioned
    /// provides never satisfy versioned dependencies in Debian (Policy
    /// §7.5); in RPM they satisfy any version.
    pub fn provide_satisfies(&self, pr: &Provide, dep: &Dependency) -> bool {
        if pr.name != dep.name || dep.arch() != ArchQualifier::Native {
            return false;
        }
        match dep.relation() {
            None => true,
            Some(_) if pr.version.is_none() => self.family == Family::Rpm,
            Some((rel, want)) => {
                rel.accepts(self.compare_versions(self.str(pr.version), self.str(want)))
            }
        }
    }

    /// Renders a dependency the way it is written in control files.
    pub fn dep_string(&self, d: &Dependency) -> String {
        let mut s = self.name(d.name).to_string();
        match d.arch() {
            ArchQualifier::Any => s.push_str(":any"),
            ArchQualifier::Foreign => s.push_str(":<foreign>"),
            ArchQualifier::Native => {}
        }
        if let Some((rel, v)) = d.relation() {
            let op = match self.family {
                Family::Deb => rel.as_str(),
                Family::Rpm => rel.as_rpm_str(),
            };
            s.push_str(&format!(" ({op} {})", self.str(v)));
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

pub(crate) fn family_compare(family: Family, a: &str, b: &str) -> Ordering {
    match family {
        Family::Deb => version::compare(a, b),
        Family::Rpm => crate::rpmversion::compare_evr(a, b),
    }
}

/// Accumulates packages into the flat vectors, interning names in
/// first-seen order.
pub(crate) struct Builder {
    pub(crate) arch: String,
    strings: String,
    names: Vec<StrRef>,
    name_ids: HashMap<Box<str>, NameId, BuildHasherDefault<NameHasher>>,
    packages: Vec<Package>,
    groups: Vec<Span>,
    deps: Vec<Dependency>,
    provides: Vec<Provide>,
    conditionals: Vec<Conditional>,
    /// Per name, the packages added so far (also the per-name version lists).
    by_name: Vec<Vec<u32>>,
}

fn span(start: usize, end: usize) -> Span {
    Span {
        start: start as u32,
        len: (end - start) as u32,
    }
}

impl Builder {
    pub(crate) fn new(arch: &str) -> Self {
        Builder {
            arch: arch.to_string(),
            strings: String::new(),
            names: Vec::new(),
            name_ids: HashMap::default(),
            packages: Vec::new(),
            groups: Vec::new(),
            deps: Vec::new(),
            provides: Vec::new(),
            conditionals: Vec::new(),
            by_name: Vec::new(),
        }
    }

    pub(crate) fn string(&mut self, s: &str) -> StrRef {
        let off = self.strings.len() as u32;
        self.strings.push_str(s);
        StrRef {
            off,
            len: s.len() as u32,
        }
    }

    pub(crate) fn intern(&mut self, name: &str) -> NameId {
        if let Some(&id) = self.name_ids.get(name) {
            return id;
        }
        let id = NameId(self.names.len() as u32);
        let r = self.string(name);
        self.names.push(r);
        self.by_name.push(Vec::new());
        self.name_ids.insert(name.into(), id);
        id
    }

    /// Whether this name and version were already added (the same version
    /// in two repositories is one version, as in apt).
    pub(crate) fn is_duplicate(&mut self, name: NameId, version: &str) -> bool {
        let strings = &self.strings;
        let packages = &self.packages;
        self.by_name[name.0 as usize].iter().any(|&p| {
            let v = packages[p as usize].version;
            strings.get(v.off as usize..v.end()) == Some(version)
        })
    }

    pub(crate) fn groups(&mut self, groups: Vec<Vec<Dependency>>) -> Span {
        let start = self.groups.len();
        for g in groups {
            let s = self.deps.len();
            self.deps.extend(g);
            let e = self.deps.len();
            self.groups.push(span(s, e));
        }
        span(start, self.groups.len())
    }

    pub(crate) fn deps(&mut self, deps: Vec<Dependency>) -> Span {
        let s = self.deps.len();
        self.deps.extend(deps);
        span(s, self.deps.len())
    }

    pub(crate) fn provides(&mut self, provides: Vec<Provide>) -> Span {
        let s = self.provides.len();
        self.provides.extend(provides);
        span(s, self.provides.len())
    }

    pub(crate) fn conditionals(&mut self, conds: Vec<(Dependency, Vec<Dependency>)>) -> Span {
        let s = self.conditionals.len();
        for (when, then) in conds {
            let then = self.deps(then);
            self.conditionals.push(Conditional { when, then });
        }
        span(s, self.conditionals.len())
    }

    /// Adds a package whose relation fields were already pushed.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn push(&mut self, p: NewPackage<'_>, rel: [Span; 8]) {
        let version = self.string(p.version);
        let arch = self.string(p.arch);
        let filename = self.string(p.filename);
        let sha256 = self.string(p.sha256);
        let [pre_depends, depends, recommends, conflicts, breaks, obsoletes, conditional, provides] =
            rel;
        self.by_name[p.name.0 as usize].push(self.packages.len() as u32);
        self.packages.push(Package {
            name: p.name,
            repository: p.repository,
            version,
            arch,
            filename,
            sha256,
            size: [p.size as u32, (p.size >> 32) as u32],
            flags: (u32::from(p.essential) * ESSENTIAL) | (u32::from(p.important) * IMPORTANT),
            priority: u32::from(p.priority),
            multi_arch: match p.multi_arch {
                MultiArch::No => 0,
                MultiArch::Same => 1,
                MultiArch::Foreign => 2,
                MultiArch::Allowed => 3,
            },
            pre_depends,
            depends,
            recommends,
            conflicts,
            breaks,
            obsoletes,
            conditional,
            provides,
        });
    }

    /// Computes the per-name tables once all packages are known.
    pub(crate) fn finish(self, family: Family, repositories: Vec<String>) -> Arc<PackageIndex> {
        let n = self.names.len();
        let mut index = PackageIndex {
            family,
            arch: self.arch,
            strings: self.strings,
            names: self.names,
            sorted_names: Vec::new(),
            packages: self.packages,
            groups: self.groups,
            deps: self.deps,
            provides: self.provides,
            conditionals: self.conditionals,
            version_offsets: Vec::new(),
            version_list: Vec::new(),
            provider_offsets: Vec::new(),
            provider_list: Vec::new(),
            candidates: Vec::new(),
            essential: Vec::new(),
            repositories,
        };
        let versions = self.by_name;
        let mut providers = vec![Vec::new(); n];
        for (i, p) in index.packages.iter().enumerate() {
            for (j, pr) in index.provides[p.provides.range()].iter().enumerate() {
                providers[pr.name.0 as usize].push([i as u32, j as u32]);
            }
        }
        index.candidates = versions
            .iter()
            .map(|vs| {
                vs.iter()
                    .copied()
                    .reduce(|best, v| {
                        let (a, b) = (&index.packages[v as usize], &index.packages[best as usize]);
                        if index
                            .compare_versions(index.str(a.version), index.str(b.version))
                            .is_gt()
                        {
                            v
                        } else {
                            best
                        }
                    })
                    .unwrap_or(u32::MAX)
            })
            .collect();
        (index.version_offsets, index.version_list) = csr(versions);
        (index.provider_offsets, index.provider_list) = csr(providers);
        let mut sorted: Vec<NameId> = (0..n as u32).map(NameId).collect();
        sorted.sort_by(|&a, &b| index.name(a).cmp(index.name(b)));
        index.sorted_names = sorted;
        index.essential = index
            .sorted_names
            .iter()
            .copied()
            .filter(|&id| {
                index.candidate(id).is_some_and(|c| {
                    let p = index.package(c);
                    p.essential() || (family == Family::Deb && p.priority() == 1)
                })
            })
            .collect();
        Arc::new(index)
    }
}

fn csr<T: Clone>(lists: Vec<Vec<T>>) -> (Vec<u32>, Vec<T>) {
    let mut offsets = Vec::with_capacity(lists.len() + 1);
    let mut flat = Vec::with_capacity(lists.iter().map(Vec::len).sum());
    offsets.push(0);
    for l in lists {
        flat.extend(l);
        offsets.push(flat.len() as u32);
    }
    (offsets, flat)
}

/// A small multiply-rotate hasher for interning package names: names are
/// not attacker-chosen keys here (they come from verified indexes) and
/// SipHash dominated index building.
#[derive(Default)]
pub(crate) struct NameHasher(u64);

impl Hasher for NameHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut h = self.0;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            h = (h.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
        self.0 = h;
    }
    fn write_u8(&mut self, b: u8) {
        self.write(&[b]);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}
