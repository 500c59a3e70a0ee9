//! Unsolvable requests on the real bookworm index get explanations a person
//! can act on.

mod common;

use kiln_depsolve::{solve, DepsolveError, Request};

fn problems(packages: &[&str]) -> Vec<String> {
    let index = common::host_bookworm_index();
    let req = Request {
        packages: packages.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    match solve(&index, &req) {
        Err(DepsolveError::Unsolvable { problems }) => problems,
        other => panic!("expected unsolvable, got {other:?}"),
    }
}

#[test]
fn conflict_is_explained() {
    let index = common::host_bookworm_index();
    let version = |n: &str| {
        let id = index.lookup(n).unwrap();
        index
            .version(index.package(index.candidate(id).unwrap()))
            .to_string()
    };
    // Both provide the `module` command and conflict with each other.
    let p = problems(&["openssh-client", "environment-modules", "lmod"]);
    let want = format!(
        "environment-modules ({}) conflicts with lmod ({}), which is also to be installed",
        version("environment-modules"),
        version("lmod")
    );
    eprintln!("{}", p.join("\n"));
    assert!(p.iter().any(|l| l.contains(&want)), "{p:#?}");
}

#[test]
fn missing_package_is_explained() {
    let p = problems(&["openssh-server", "kiln-no-such-package"]);
    assert_eq!(
        p,
        vec!["package kiln-no-such-package is not available in any repository"]
    );
}

#[test]
fn virtual_package_with_several_providers_is_explained() {
    let p = problems(&["mail-transport-agent"]);
    assert_eq!(p.len(), 1);
    assert!(
        p[0].starts_with("mail-transport-agent is a virtual package provided by "),
        "{p:?}"
    );
    assert!(
        p[0].contains("exim4-daemon-light") && p[0].contains("postfix"),
        "{p:?}"
    );
}
