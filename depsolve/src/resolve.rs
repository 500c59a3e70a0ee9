//! apt-compatible package selection.
//!
//! apt's resolver is not a SAT solver: `apt-get install` marks the requested
//! packages, then walks their dependencies depth first, taking for every
//! unsatisfied or-group the first installable solution in apt's provider
//! order. A SAT solver finds *a* solution, often a different one (other
//! alternatives, other providers of a virtual package). Images must contain
//! what the distribution's own tools would install, so this module follows
//! apt's marking algorithm (pkgDepCache::MarkInstall, apt 2.6) step by step,
//! for an empty dpkg status:
//!
//! 1. requested packages are marked for install and protected;
//! 2. each is then auto-installed in request order: Pre-Depends and Depends
//!    (and Recommends when asked) in field order, an or-group that an
//!    already marked package satisfies is skipped;
//! 3. solutions of a group are tried alternative by alternative; within one
//!    alternative the real package and its providers are ordered like apt's
//!    `CompareProviders`: protected, same name as the target, Essential,
//!    Important, Priority, then the later-seen name;
//! 4. a package whose critical dependency cannot be met is discarded and the
//!    next solution is tried.
//!
//! The resulting set is then checked as a whole (every dependency met, no
//! Conflicts/Breaks between members); if it is not consistent the request is
//! reported unsolvable with the reasons collected on the way.

use std::cmp::Ordering;

use crate::index::{Dependency, NameId, Package, PackageIndex};

/// State of one name during a solve (apt's StateCache, reduced).
#[derive(Clone, Copy, Default)]
struct NameState {
    /// Candidate still allowed (apt discards candidates that failed).
    candidate: Option<u32>,
    /// Package marked for install.
    install: Option<u32>,
    protected: bool,
}

pub(crate) struct Marker<'a> {
    idx: &'a PackageIndex,
    state: Vec<NameState>,
    with_recommends: bool,
    /// Human-readable reasons for failed attempts, for error reports.
    pub(crate) failures: Vec<String>,
}

impl<'a> Marker<'a> {
    pub(crate) fn new(idx: &'a PackageIndex, with_recommends: bool) -> Self {
        let state = idx
            .candidates()
            .iter()
            .map(|&c| NameState {
                candidate: Some(c).filter(|&c| c != u32::MAX),
                install: None,
                protected: false,
            })
            .collect();
        Marker {
            idx,
            state,
            with_recommends,
            failures: Vec::new(),
        }
    }

    fn st(&self, n: NameId) -> &NameState {
        &self.state[n.0 as usize]
    }
    fn st_mut(&mut self, n: NameId) -> &mut NameState {
        &mut self.state[n.0 as usize]
    }
    fn pkg(&self, p: u32) -> &'a Package {
        self.idx.package(p)
    }

    /// Marks a requested package for install and protects it (phase 1).
    pub(crate) fn request(&mut self, name: NameId) -> bool {
        let s = self.st_mut(name);
        match s.candidate {
            Some(c) => {
                s.install = Some(c);
                s.protected = true;
                true
            }
            None => false,
        }
    }

    /// Uses a chosen version instead of the newest (apt's `name=version`).
    pub(crate) fn set_candidate(&mut self, name: NameId, package: u32) {
        self.st_mut(name).candidate = Some(package);
    }

    /// Auto-installs the dependencies of a requested package (phase 2).
    pub(crate) fn install_requested(&mut self, name: NameId) -> bool {
        self.mark_install(name, true, true)
    }

    /// Pre-Depends then Depends, apt's order.
    fn critical_groups(&self, p: &'a Package) -> impl Iterator<Item = &'a [Dependency]> + 'a {
        let idx = self.idx;
        idx.groups(p.pre_depends).chain(idx.groups(p.depends))
    }

    pub(crate) fn installed(&self) -> impl Iterator<Item = u32> + '_ {
        self.state.iter().filter_map(|s| s.install)
    }

    /// Whether an or-group is satisfied by packages marked for install.
    fn satisfied_by_installed(&self, group: &[Dependency]) -> bool {
        group
            .iter()
            .any(|d| self.dep_satisfied_by_installed(d, None))
    }

    fn dep_satisfied_by_installed(&self, d: &Dependency, except: Option<NameId>) -> bool {
        if Some(d.name) != except {
            if let Some(p) = self.st(d.name).install {
                if self.idx.satisfies_directly(self.pkg(p), d) {
                    return true;
                }
            }
        }
        self.idx.providers(d.name).iter().any(|&[p, j]| {
            let owner = self.pkg(p);
            Some(owner.name) != except
                && self.st(owner.name).install == Some(p)
                && self
                    .idx
                    .provide_satisfies(&self.idx.provides_of(owner)[j as usize], d)
        })
    }

    /// Marked packages (other than `except`) that satisfy `d`.
    fn installed_matches(&self, d: &Dependency, except: NameId) -> Vec<u32> {
        self.matches(d, Some(except), |s| s.install)
    }

    /// Candidate packages that satisfy one alternative (apt's
    /// `VersionVector::FromDependency` with the CANDIDATE selector).
    fn candidates_for(&self, d: &Dependency, except: Option<NameId>) -> Vec<u32> {
        self.matches(d, except, |s| s.candidate)
    }

    /// The packages `pick` chooses for their names (the marked one, or the
    /// candidate) that satisfy `d`, directly or through a provide, except
    /// those of the name `except`.
    fn matches(
        &self,
        d: &Dependency,
        except: Option<NameId>,
        pick: impl Fn(&NameState) -> Option<u32>,
    ) -> Vec<u32> {
        let mut out = Vec::new();
        if Some(d.name) != except {
            if let Some(p) = pick(self.st(d.name)) {
                if self.idx.satisfies_directly(self.pkg(p), d) {
                    out.push(p);
                }
            }
        }
        for &[p, j] in self.idx.providers(d.name) {
            let owner = self.pkg(p);
            if Some(owner.name) != except
                && pick(self.st(owner.name)) == Some(p)
                && self
                    .idx
                    .provide_satisfies(&self.idx.provides_of(owner)[j as usize], d)
                && !out.contains(&p)
            {
                out.push(p);
            }
        }
        out
    }

    fn compare_providers(&self, target: NameId, a: u32, b: u32) -> Ordering {
        let (pa, pb) = (self.pkg(a), self.pkg(b));
        let (sa, sb) = (self.st(pa.name), self.st(pb.name));
        if sa.protected != sb.protected {
            return if sa.protected {
                Ordering::Less
            } else {
                Ordering::Greater
            };
        }
        if pa.name != pb.name {
            if pa.name == target {
                return Ordering::Less;
            }
            if pb.name == target {
                return Ordering::Greater;
            }
        }
        if pa.essential() != pb.essential() {
            return if pa.essential() {
                Ordering::Less
            } else {
                Ordering::Greater
            };
        }
        if pa.important() != pb.important() {
            return if pa.important() {
                Ordering::Less
            } else {
                Ordering::Greater
            };
        }
        if pa.priority() != pb.priority() {
            return pa.priority().cmp(&pb.priority());
        }
        pb.name.cmp(&pa.name)
    }

    /// All solutions of an or-group in the order apt tries them.
    fn solutions(&self, group: &[Dependency]) -> Vec<u32> {
        let mut all: Vec<u32> = Vec::new();
        for d in group {
            let mut v = self.candidates_for(d, None);
            v.sort_by(|&a, &b| self.compare_providers(d.name, a, b));
            all.extend(v);
        }
        all.dedup();
        all.retain(|&p| {
            let s = self.st(self.pkg(p).name);
            !(s.protected && s.install.is_none())
        });
        all
    }

    /// apt's IsInstallOkDependenciesSatisfiableByCandidates.
    fn dependencies_satisfiable(&mut self, name: NameId, cand: u32) -> bool {
        let p = self.pkg(cand);
        for group in self.critical_groups(p) {
            let ok = group.iter().any(|d| {
                self.dep_satisfied_by_installed(d, None) || !self.candidates_for(d, None).is_empty()
            });
            if !ok {
                self.failures.push(self.explain_group(name, p, group));
                let s = self.st_mut(name);
                if !s.protected {
                    s.candidate = None;
                    s.install = None;
                }
                return false;
            }
        }
        true
    }

    fn mark_install(&mut self, name: NameId, auto_inst: bool, from_user: bool) -> bool {
        let s = *self.st(name);
        let Some(cand) = s.candidate else {
            return false;
        };
        if !s.protected && s.install.is_some() {
            return true;
        }
        if auto_inst && s.install.is_none() && !self.dependencies_satisfiable(name, cand) {
            return false;
        }
        let p = self.pkg(cand);
        let was_protected = s.protected;
        let fail_early = !was_protected && !from_user;

        if !auto_inst {
            self.st_mut(name).install = Some(cand);
            return true;
        }

        // Collect or-groups that still need work, in apt's field order,
        // each with whether it is critical (not a Recommends).
        let idx = self.idx;
        let mut to_install: Vec<(&'a [Dependency], bool)> = Vec::new();
        for g in self.critical_groups(p) {
            if was_protected || !self.satisfied_by_installed(g) {
                to_install.push((g, true));
            }
        }
        // RPM `(A if B)`: A is needed once B is there.
        for c in idx.conditionals_of(p) {
            let then = idx.deps(c.then);
            if self.dep_satisfied_by_installed(&c.when, None) && !self.satisfied_by_installed(then)
            {
                to_install.push((then, true));
            }
        }
        if self.with_recommends {
            for g in idx.groups(p.recommends) {
                if was_protected || !self.satisfied_by_installed(g) {
                    to_install.push((g, false));
                }
            }
        }

        // Conflicts and Breaks against packages already marked: apt un-marks
        // the other side unless it is protected; against candidates of a
        // protected package it discards those candidates.
        let mut failed = false;
        let negative = idx
            .deps(p.conflicts)
            .iter()
            .chain(idx.deps(p.breaks))
            .map(|d| (d, false));
        for (d, real_only) in negative.chain(idx.deps(p.obsoletes).iter().map(|d| (d, true))) {
            let mut matches = self.candidates_for(d, Some(name));
            if real_only {
                matches.retain(|&q| self.pkg(q).name == d.name);
            }
            for q in matches {
                let qn = self.pkg(q).name;
                let qs = *self.st(qn);
                if qs.install.is_some() {
                    if qs.protected {
                        self.failures.push(format!(
                            "{} ({}) conflicts with {} ({}), which is also to be installed",
                            self.idx.name(name),
                            self.idx.version(p),
                            self.idx.name(qn),
                            self.idx.version(self.pkg(q))
                        ));
                        failed = true;
                    } else {
                        self.st_mut(qn).install = None;
                    }
                } else if was_protected {
                    let qs = self.st_mut(qn);
                    qs.candidate = None;
                    qs.protected = true;
                }
            }
            if failed && fail_early {
                return false;
            }
        }

        self.st_mut(name).install = Some(cand);
        self.st_mut(name).protected = true;

        for (group, critical) in to_install {
            if self.satisfied_by_installed(group) {
                if !was_protected || !critical {
                    continue;
                }
                // Spread protection along single-solution dependencies.
                let sols: Vec<u32> = {
                    let mut v: Vec<u32> = group
                        .iter()
                        .flat_map(|d| self.candidates_for(d, None))
                        .collect();
                    v.sort_unstable();
                    v.dedup();
                    v
                };
                if sols.len() != 1 {
                    continue;
                }
                let qn = self.pkg(sols[0]).name;
                if self.st(qn).protected {
                    continue;
                }
                self.st_mut(qn).protected = true;
                if !self.mark_install(qn, true, false) {
                    failed = true;
                }
                continue;
            }
            let sols = self.solutions(group);
            let mut found = false;
            for &q in &sols {
                let qn = self.pkg(q).name;
                if self.st(qn).candidate != Some(q) {
                    continue;
                }
                if was_protected && critical && sols.len() == 1 {
                    if !self.mark_install(qn, false, false) {
                        continue;
                    }
                    self.st_mut(qn).protected = true;
                }
                if !self.mark_install(qn, true, false) {
                    continue;
                }
                found = true;
                break;
            }
            if !found && critical {
                self.failures.push(self.explain_group(name, p, group));
                failed = true;
                if fail_early {
                    break;
                }
            }
        }
        if !was_protected {
            self.st_mut(name).protected = false;
        }
        if failed && fail_early {
            let s = self.st_mut(name);
            s.install = None;
            s.candidate = None;
            return false;
        }
        !failed
    }

    fn explain_group(&self, name: NameId, p: &Package, group: &[Dependency]) -> String {
        let mut why = Vec::new();
        for d in group {
            let n = self.idx.name(d.name);
            let reason = match (self.idx.candidate(d.name), self.st(d.name).candidate) {
                (None, _) if self.idx.providers(d.name).is_empty() => {
                    format!("{n} is not available in any repository")
                }
                (None, _) => format!("no provider of {n} can be installed"),
                (Some(_), Some(c)) if !self.idx.satisfies_directly(self.pkg(c), d) => {
                    format!(
                        "{n} {} is available, which does not match",
                        self.idx.version(self.pkg(c))
                    )
                }
                (Some(_), _) => format!("{n} cannot be installed"),
            };
            why.push(reason);
        }
        format!(
            "{} ({}) depends on {}, but {}",
            self.idx.name(name),
            self.idx.version(p),
            self.idx.group_string(group),
            why.join("; ")
        )
    }

    /// Installs what `(A if B)` dependencies need once B was added after
    /// the package holding them; repeats until nothing changes.
    pub(crate) fn settle_conditionals(&mut self) {
        for _ in 0..64 {
            let mut pending = Vec::new();
            for s in &self.state {
                let Some(i) = s.install else { continue };
                let p = self.pkg(i);
                for c in self.idx.conditionals_of(p) {
                    if self.dep_satisfied_by_installed(&c.when, None)
                        && !self.satisfied_by_installed(self.idx.deps(c.then))
                    {
                        pending.push((p.name, self.idx.deps(c.then)));
                    }
                }
            }
            if pending.is_empty() {
                return;
            }
            for (owner, group) in pending {
                if self.satisfied_by_installed(group) {
                    continue;
                }
                let found = self.solutions(group).into_iter().any(|q| {
                    let qn = self.pkg(q).name;
                    self.mark_install(qn, true, false)
                });
                if !found {
                    if let Some(i) = self.st(owner).install {
                        let msg = self.explain_group(owner, self.pkg(i), group);
                        self.failures.push(msg);
                    }
                    return;
                }
            }
        }
    }

    /// Problems of the marked set: unmet dependencies and conflicts.
    pub(crate) fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for s in &self.state {
            let Some(i) = s.install else { continue };
            let p = self.pkg(i);
            let pname = self.idx.name(p.name);
            for g in self.critical_groups(p) {
                if !self.satisfied_by_installed(g) {
                    problems.push(format!(
                        "{pname} ({}) depends on {}, which is not satisfied",
                        self.idx.version(p),
                        self.idx.group_string(g)
                    ));
                }
            }
            for c in self.idx.conditionals_of(p) {
                if self.dep_satisfied_by_installed(&c.when, None)
                    && !self.satisfied_by_installed(self.idx.deps(c.then))
                {
                    problems.push(format!(
                        "{pname} ({}) requires {} when {} is installed, which is not satisfied",
                        self.idx.version(p),
                        self.idx.group_string(self.idx.deps(c.then)),
                        self.idx.dep_string(&c.when)
                    ));
                }
            }
            for d in self.idx.deps(p.obsoletes) {
                if d.name != p.name {
                    if let Some(q) = self.st(d.name).install {
                        if self.idx.satisfies_directly(self.pkg(q), d) {
                            problems.push(format!(
                                "{pname} ({}) obsoletes {} ({}), which is also to be installed",
                                self.idx.version(p),
                                self.idx.name(d.name),
                                self.idx.version(self.pkg(q))
                            ));
                        }
                    }
                }
            }
            for (kind, list) in [("conflicts with", p.conflicts), ("breaks", p.breaks)] {
                for d in self.idx.deps(list) {
                    for q in self.installed_matches(d, p.name) {
                        let q = self.pkg(q);
                        problems.push(format!(
                            "{pname} ({}) {kind} {} ({}), which is also to be installed",
                            self.idx.version(p),
                            self.idx.name(q.name),
                            self.idx.version(q)
                        ));
                    }
                }
            }
        }
        problems
    }
}
