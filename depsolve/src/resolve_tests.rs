//! Resolver behaviour on small hand-written indexes.

use std::sync::Arc;

use crate::debindex::IndexSource;
use crate::error::DepsolveError;
use crate::index::PackageIndex;
use crate::solve::{solve, Request};

fn index(stanzas: &str) -> Arc<PackageIndex> {
    PackageIndex::build(
        "amd64",
        &[IndexSource {
            base_url: "file:///r".into(),
            label: "Packages".into(),
            text: stanzas.into(),
        }],
    )
    .unwrap()
}

fn pkg(name: &str, version: &str, extra: &str) -> String {
    format!("Package: {name}\nVersion: {version}\nArchitecture: amd64\nPriority: optional\nFilename: pool/{name}_{version}.deb\nSize: 10\nSHA256: 00\n{extra}\n")
}

fn names(idx: &PackageIndex, packages: &[&str]) -> Result<Vec<String>, DepsolveError> {
    let req = Request {
        packages: packages.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    solve(idx, &req).map(|s| {
        s.packages
            .into_iter()
            .map(|p| format!("{}={}", p.name, p.version))
            .collect()
    })
}

fn problems(idx: &PackageIndex, packages: &[&str]) -> Vec<String> {
    match names(idx, packages) {
        Err(DepsolveError::Unsolvable { problems }) => problems,
        other => panic!("expected unsolvable, got {other:?}"),
    }
}

#[test]
fn first_installable_alternative_wins() {
    let idx = index(
        &[
            pkg("a", "1", "Depends: b (>= 2) | c"),
            pkg("b", "1", ""),
            pkg("c", "1", ""),
        ]
        .join("\n"),
    );
    assert_eq!(names(&idx, &["a"]).unwrap(), ["a=1", "c=1"]);
    let idx = index(
        &[
            pkg("a", "1", "Depends: b | c"),
            pkg("b", "1", ""),
            pkg("c", "1", ""),
        ]
        .join("\n"),
    );
    assert_eq!(names(&idx, &["a"]).unwrap(), ["a=1", "b=1"]);
}

#[test]
fn already_selected_provider_satisfies_virtual_dependency() {
    let idx = index(
        &[
            pkg("app", "1", "Depends: mta"),
            pkg("exim", "1", "Provides: mta"),
            pkg("postfix", "1", "Provides: mta"),
        ]
        .join("\n"),
    );
    assert_eq!(
        names(&idx, &["postfix", "app"]).unwrap(),
        ["app=1", "postfix=1"]
    );
    assert_eq!(names(&idx, &["app"]).unwrap().len(), 2);
}

#[test]
fn provider_order_prefers_priority_then_essential() {
    let idx = index(
        &[
            pkg("app", "1", "Depends: awk"),
            pkg("mawk", "1", "Provides: awk").replace("optional", "required"),
            pkg("gawk", "1", "Provides: awk"),
        ]
        .join("\n"),
    );
    assert_eq!(names(&idx, &["app"]).unwrap(), ["app=1", "mawk=1"]);
}

#[test]
fn versioned_provides_and_newest_candidate() {
    let idx = index(
        &[
            pkg("a", "1", "Depends: v (>= 2)"),
            pkg("old", "1", "Provides: v (= 1)"),
            pkg("new", "1", "Provides: v (= 3)"),
            pkg("plain", "1", "Provides: v"),
            pkg("x", "1.0", ""),
            pkg("x", "1.0+b1", ""),
        ]
        .join("\n"),
    );
    assert_eq!(
        names(&idx, &["a", "x"]).unwrap(),
        ["a=1", "new=1", "x=1.0+b1"]
    );
}

#[test]
fn pre_depends_and_multiarch_any() {
    let idx = index(
        &[
            pkg("a", "1", "Pre-Depends: p\nDepends: py:any"),
            pkg("p", "1", ""),
            pkg("py", "3", "Multi-Arch: allowed"),
            pkg("b", "1", "Depends: q:any"),
            pkg("q", "1", ""),
        ]
        .join("\n"),
    );
    assert_eq!(names(&idx, &["a"]).unwrap(), ["a=1", "p=1", "py=3"]);
    let p = problems(&idx, &["b"]);
    assert!(
        p.iter().any(|l| l.contains("b (1) depends on q:any")),
        "{p:?}"
    );
}

#[test]
fn breaks_and_conflicts_skip_to_next_alternative() {
    let idx = index(
        &[
            pkg("a", "1", "Depends: b, c | d"),
            pkg("b", "1", "Breaks: c"),
            pkg("c", "1", ""),
            pkg("d", "1", ""),
        ]
        .join("\n"),
    );
    let got = names(&idx, &["a"]).unwrap();
    assert_eq!(got, ["a=1", "b=1", "d=1"]);
}

#[test]
fn unmet_version_is_explained() {
    let idx = index(&[pkg("a", "1", "Depends: b (>= 2)"), pkg("b", "1", "")].join("\n"));
    let p = problems(&idx, &["a"]);
    assert!(
        p == ["a (1) depends on b (>= 2), but b 1 is available, which does not match"],
        "{p:?}"
    );
}

#[test]
fn deep_missing_dependency_is_explained() {
    let idx = index(&[pkg("a", "1", "Depends: b"), pkg("b", "1", "Depends: c | d")].join("\n"));
    let p = problems(&idx, &["a"]);
    assert_eq!(
        p,
        [
            "a (1) depends on b, but b cannot be installed",
            "b (1) depends on c | d, but c is not available in any repository; d is not available in any repository"
        ]
    );
}

#[test]
fn recommends_are_optional() {
    let idx = index(&[pkg("a", "1", "Recommends: r, gone"), pkg("r", "1", "")].join("\n"));
    assert_eq!(names(&idx, &["a"]).unwrap(), ["a=1"]);
    let req = Request {
        packages: vec!["a".into()],
        recommends: true,
        ..Default::default()
    };
    let got: Vec<String> = solve(&idx, &req)
        .unwrap()
        .packages
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(got, ["a", "r"]);
}

#[test]
fn essential_adds_essential_and_required() {
    let idx = index(
        &[
            pkg("base", "1", "Essential: yes"),
            pkg("req", "1", "").replace("optional", "required"),
            pkg("opt", "1", ""),
            pkg("a", "1", ""),
        ]
        .join("\n"),
    );
    let req = Request {
        packages: vec!["a".into()],
        essential: true,
        ..Default::default()
    };
    let got: Vec<String> = solve(&idx, &req)
        .unwrap()
        .packages
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(got, ["a", "base", "req"]);
}

#[test]
fn pinned_versions() {
    let idx = index(
        &[
            pkg("a", "1", ""),
            pkg("a", "2", ""),
            pkg("b", "1", "Depends: a (>= 2)"),
        ]
        .join("\n"),
    );
    assert_eq!(names(&idx, &["a=1"]).unwrap(), ["a=1"]);
    assert_eq!(
        problems(&idx, &["a=3"]),
        ["version 3 of a is not available (available: 1, 2)"]
    );
    let p = problems(&idx, &["a=1", "b"]);
    assert!(
        p.iter()
            .any(|l| l
                .contains("b (1) depends on a (>= 2), but a 1 is available, which does not match")),
        "{p:?}"
    );
}
