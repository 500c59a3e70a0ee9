//! The in-memory package index: every package of a set of repositories,
//! with interned names, provider lists and the candidate (newest) version
//! of each name, built once and shared read-only between requests.
//!
//! All records are plain-old-data in a few flat vectors (strings in one
//! arena, dependencies, groups, provides), which keeps memory low and lets
//! [`crate::snapshot`] store and load an index as raw bytes.

use std::cmp::Ordering;

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
    pub(crate) off: u32,
    pub(crate) len: u32,
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
    pub(crate) start: u32,
    pub(crate) len: u32,
}

impl Span {
    pub(crate) fn end(self) -> usize {
        self.start as usize + self.len as usize
    }
    pub(crate) fn range(self) -> std::ops::Range<usize> {
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

/// Which distribution family's version ordering and rules apply: the one
/// definition, kiln-api's, which the catalog and the job contract name too.
pub use kiln_api::validate::Family;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MultiArch {
    No,
    Same,
    Foreign,
    Allowed,
}

pub(crate) const ESSENTIAL: u32 = 1;
pub(crate) const IMPORTANT: u32 = 2;

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
    pub(crate) size: [u32; 2],
    pub(crate) flags: u32,
    /// apt's numbering: required 1, important 2, standard 3, optional 4, extra 5.
    pub(crate) priority: u32,
    pub(crate) multi_arch: u32,
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

impl PackageIndex {
    /// What the index holds on the heap, in bytes: what keeping it loaded
    /// costs (the composer's repository cache budgets by it).
    pub fn heap_bytes(&self) -> usize {
        fn v<T>(v: &Vec<T>) -> usize {
            v.capacity() * std::mem::size_of::<T>()
        }
        self.strings.capacity()
            + self.arch.capacity()
            + v(&self.names)
            + v(&self.sorted_names)
            + v(&self.packages)
            + v(&self.groups)
            + v(&self.deps)
            + v(&self.provides)
            + v(&self.conditionals)
            + v(&self.version_offsets)
            + v(&self.version_list)
            + v(&self.provider_offsets)
            + v(&self.provider_list)
            + v(&self.candidates)
            + v(&self.essential)
            + self
                .repositories
                .iter()
                .map(String::capacity)
                .sum::<usize>()
    }
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
                Family::Debian => rel.as_str(),
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
        Family::Debian => version::compare(a, b),
        Family::Rpm => crate::rpmversion::compare_evr(a, b),
    }
}
