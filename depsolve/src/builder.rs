//! Building a [`PackageIndex`]: packages are appended to flat vectors and
//! a string arena, names interned in first-seen order; `finish` computes
//! candidates, provider tables and the essential set.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use crate::index::{
    Conditional, Dependency, Family, MultiArch, NameId, NewPackage, Package, PackageIndex, Provide,
    Span, StrRef, ESSENTIAL, IMPORTANT,
};

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

    /// Appends one alternative to the group being built.
    pub(crate) fn push_dep(&mut self, d: Dependency) {
        self.deps.push(d);
    }
    pub(crate) fn dep_count(&self) -> usize {
        self.deps.len()
    }
    pub(crate) fn group_count(&self) -> usize {
        self.groups.len()
    }
    /// Closes a group made of the dependencies pushed since `start`.
    pub(crate) fn close_group(&mut self, start: usize) {
        let end = self.deps.len();
        self.groups.push(span(start, end));
    }
    pub(crate) fn groups_since(&self, start: usize) -> Span {
        span(start, self.groups.len())
    }
    pub(crate) fn deps_since(&self, start: usize) -> Span {
        span(start, self.deps.len())
    }
    pub(crate) fn push_provide(&mut self, p: Provide) {
        self.provides.push(p);
    }
    pub(crate) fn provides_since(&self, start: usize) -> Span {
        span(start, self.provides.len())
    }
    pub(crate) fn provide_count(&self) -> usize {
        self.provides.len()
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
                    p.essential() || (family == Family::Debian && p.priority() == 1)
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
