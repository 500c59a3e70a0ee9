//! Building a [`PackageIndex`] from Debian `Packages` texts.

use std::sync::Arc;

use crate::builder::Builder;
use crate::control::{self, Relation};
use crate::error::DepsolveError;
use crate::index::{
    ArchQualifier, Dependency, Family, MultiArch, NewPackage, PackageIndex, Provide, Span,
};

/// One parsed `Packages` file and where its `Filename`s are relative to.
pub struct IndexSource {
    /// Base URL of the archive (`Filename` is relative to it).
    pub base_url: String,
    /// Name used in errors (URL of the Packages file).
    pub label: String,
    pub text: String,
}

impl PackageIndex {
    /// Builds the index from Packages texts, in apt's source order.
    pub fn build(arch: &str, sources: &[IndexSource]) -> Result<Arc<PackageIndex>, DepsolveError> {
        let parsed: Vec<Vec<control::Stanza<'_>>> = sources
            .iter()
            .map(|s| control::parse_stanzas(&s.text))
            .collect();
        let mut b = Builder::new(arch);
        for (repo, (source, stanzas)) in sources.iter().zip(&parsed).enumerate() {
            for st in stanzas {
                let name = b.intern(st.package);
                if !st.architecture.is_empty()
                    && st.architecture != "all"
                    && st.architecture != arch
                {
                    continue;
                }
                add_package(&mut b, name, st, repo as u32).map_err(|detail| {
                    DepsolveError::BadIndex {
                        file: source.label.clone(),
                        package: st.package.to_string(),
                        detail,
                    }
                })?;
            }
        }
        let repos = sources.iter().map(|s| s.base_url.clone()).collect();
        Ok(b.finish(Family::Debian, repos))
    }
}

fn add_package(
    b: &mut Builder,
    name: crate::index::NameId,
    st: &control::Stanza<'_>,
    repo: u32,
) -> Result<(), String> {
    if st.version.is_empty() {
        return Err("missing Version".into());
    }
    // The same version in two repositories is one version to apt, which
    // reads the relations of the first only.
    if b.is_duplicate(name, st.version) {
        return Ok(());
    }
    // Fields in the order apt's cache generator reads them, so that
    // first-seen name ids match apt's package ids. Relations go straight
    // into the builder's vectors.
    let pre_depends = groups(b, st.pre_depends, "Pre-Depends")?;
    let depends = groups(b, st.depends, "Depends")?;
    let conflicts = flat(b, st.conflicts, "Conflicts")?;
    let breaks = flat(b, st.breaks, "Breaks")?;
    let recommends = groups(b, st.recommends, "Recommends")?;
    for (field, text) in [
        ("Suggests", st.suggests),
        ("Replaces", st.replaces),
        ("Enhances", st.enhances),
    ] {
        intern_only(b, text, field)?;
    }
    let provides = provides(b, st.provides)?;
    let size = if st.size.is_empty() {
        0
    } else {
        st.size
            .parse()
            .map_err(|_| format!("bad Size '{}'", st.size))?
    };
    let arch = if st.architecture.is_empty() {
        b.arch.clone()
    } else {
        st.architecture.to_string()
    };
    b.push(
        NewPackage {
            name,
            version: st.version,
            arch: &arch,
            filename: st.filename,
            sha256: st.sha256,
            size,
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
            multi_arch: match st.multi_arch {
                "same" => MultiArch::Same,
                "foreign" => MultiArch::Foreign,
                "allowed" => MultiArch::Allowed,
                _ => MultiArch::No,
            },
            repository: repo,
        },
        [
            pre_depends,
            depends,
            recommends,
            conflicts,
            breaks,
            Span::default(),
            Span::default(),
            provides,
        ],
    );
    Ok(())
}

fn dep(b: &mut Builder, raw: &control::RawDep<'_>) -> Dependency {
    let arch = match raw.arch {
        None | Some("native") => ArchQualifier::Native,
        Some("any") => ArchQualifier::Any,
        Some(a) if a == b.arch || a == "all" => ArchQualifier::Native,
        Some(_) => ArchQualifier::Foreign,
    };
    let name = b.intern(raw.name);
    let constraint = raw.constraint.map(|(r, v)| (r, b.string(v)));
    Dependency::new(name, arch, constraint)
}

/// Calls `f` for every term of a relation field, with whether it starts a
/// new or-group.
fn each_term<'t>(
    text: &'t str,
    field: &str,
    mut f: impl FnMut(bool, control::RawDep<'t>),
) -> Result<(), String> {
    for group in text.split(',') {
        if group.trim().is_empty() {
            continue;
        }
        for (k, term) in group.split('|').enumerate() {
            let raw = control::parse_term(term).map_err(|e| format!("{field}: {}", e.0))?;
            f(k == 0, raw);
        }
    }
    Ok(())
}

fn groups(b: &mut Builder, text: &str, field: &str) -> Result<Span, String> {
    let start = b.group_count();
    let mut open: Option<usize> = None;
    each_term(text, field, |first, raw| {
        if first {
            if let Some(s) = open.take() {
                b.close_group(s);
            }
            open = Some(b.dep_count());
        }
        let d = dep(b, &raw);
        b.push_dep(d);
    })?;
    if let Some(s) = open {
        b.close_group(s);
    }
    Ok(b.groups_since(start))
}

fn flat(b: &mut Builder, text: &str, field: &str) -> Result<Span, String> {
    let start = b.dep_count();
    each_term(text, field, |_, raw| {
        let d = dep(b, &raw);
        b.push_dep(d);
    })?;
    Ok(b.deps_since(start))
}

fn intern_only(b: &mut Builder, text: &str, field: &str) -> Result<(), String> {
    each_term(text, field, |_, raw| {
        b.intern(raw.name);
    })
}

fn provides(b: &mut Builder, text: &str) -> Result<Span, String> {
    let start = b.provide_count();
    each_term(text, "Provides", |_, raw| {
        let name = b.intern(raw.name);
        let version = match raw.constraint {
            Some((Relation::Eq, v)) => b.string(v),
            _ => crate::index::StrRef::NONE,
        };
        b.push_provide(Provide { name, version });
    })?;
    Ok(b.provides_since(start))
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
        assert_eq!(i.version(i.package(c)), "1.0+b1");
        assert_eq!(i.versions(a).len(), 2);
        assert!(i.lookup("b").is_none());
    }

    #[test]
    fn provides_and_urls() {
        let i = idx("Package: mta\nVersion: 2\nArchitecture: all\nProvides: mail-transport-agent, foo (= 3)\nFilename: pool/m/mta.deb\n\nPackage: user\nVersion: 1\nDepends: foo (>= 2), mail-transport-agent (>= 1)\n");
        let v = i.lookup("foo").unwrap();
        assert_eq!(i.providers(v).len(), 1);
        let p = i.package(0);
        assert_eq!(i.url(p), "file:///repo/pool/m/mta.deb");
        let user = i.package(1);
        let deps: Vec<&[Dependency]> = i.groups(user.depends).collect();
        let provides = i.provides_of(p);
        assert!(i.provide_satisfies(&provides[1], &deps[0][0]));
        assert!(!i.provide_satisfies(&provides[0], &deps[1][0]));
        assert_eq!(i.dep_string(&deps[0][0]), "foo (>= 2)");
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
