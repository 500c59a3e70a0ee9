//! `POST /depsolve/blueprint` and `POST /search/packages` against a real
//! Debian repository on `file://`, built here with dpkg-deb and apt-ftparchive.

mod common;

use std::path::Path;
use std::process::Command;

use common::{check, reference, start_with, Backend};
use kiln_composer::AllowEntry;
use kiln_testsupport::debrepo::DebRepo;
use serde_json::json;

/// A one-suite repository: kiln-a needs kiln-b (>= 2.0); kiln-c conflicts with kiln-a.
fn repository(dir: &Path) -> DebRepo {
    let repo = DebRepo::new(dir).unwrap();
    repo.add("kiln-a", "1:1.0-1", "Depends: kiln-b (>= 2.0)\n")
        .unwrap();
    repo.add("kiln-b", "2.1-3", "").unwrap();
    repo.add("kiln-c", "0.5", "Conflicts: kiln-a\n").unwrap();
    repo.index().unwrap();
    repo
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap().stdout;
    String::from_utf8_lossy(&out)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn depsolve_and_search_against_a_file_repository() {
    let dir = tempfile::tempdir().unwrap();
    repository(dir.path());
    let repo = json!({"baseurl": format!("file://{}", dir.path().display()), "suite": "test",
                      "components": ["main"], "check_repo_gpg": false});
    // Repositories under /tmp are the ones this test makes (its temporary directories).
    let c = start_with(Backend::Sqlite, |cfg| {
        cfg.repositories.allow = vec![AllowEntry::Prefix(format!(
            "file://{}",
            std::env::temp_dir().display()
        ))];
    })
    .await;
    let request = |names: &[&str]| {
        json!({
            "distribution": "debian-12", "architecture": "x86_64",
            "blueprint": {"name": "t", "packages": names.iter().map(|n| json!({"name": n})).collect::<Vec<_>>()},
            "repositories": [repo.clone()],
        })
    };

    let (status, body) = c.post("/depsolve/blueprint", &request(&["kiln-a"])).await;
    assert_eq!(status, 200, "{body}");
    let pkgs = body["packages"].as_array().unwrap();
    let names: Vec<&str> = pkgs.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["kiln-a", "kiln-b"]);
    let a = &pkgs[0];
    assert_eq!(
        (
            a["epoch"].as_str(),
            a["version"].as_str(),
            a["release"].as_str()
        ),
        (Some("1"), Some("1.0"), Some("1"))
    );
    assert_eq!(a["type"], "deb");
    assert_eq!(a["arch"], "all");
    let file = dir.path().join("pool/main/kiln-a_1:1.0-1_all.deb");
    assert_eq!(a["checksum"], format!("sha256:{}", sha256(&file)));
    assert_eq!(a["size"], std::fs::metadata(&file).unwrap().len());
    assert_eq!(a["url"], format!("file://{}", file.display()));
    check(&reference(), "DepsolveResponse", &body);

    // A conflict and a missing package are explained.
    let (status, err) = c
        .post("/depsolve/blueprint", &request(&["kiln-a", "kiln-c"]))
        .await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["code"], "IMAGE-BUILDER-COMPOSER-21");
    let reason = err["reason"].as_str().unwrap();
    assert!(
        reason.contains("kiln-c") && reason.contains("kiln-a"),
        "{reason}"
    );
    let (status, err) = c
        .post("/depsolve/blueprint", &request(&["no-such-package"]))
        .await;
    assert_eq!(status, 400, "{err}");
    assert!(
        err["reason"].as_str().unwrap().contains("no-such-package"),
        "{err}"
    );

    // Search by pattern.
    let (status, found) = c
        .post(
            "/search/packages",
            &json!({"distribution": "debian-12", "architecture": "x86_64", "packages": ["kiln-*"], "repositories": [repo.clone()]}),
        )
        .await;
    assert_eq!(status, 200, "{found}");
    let names: Vec<&str> = found["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["kiln-a", "kiln-b", "kiln-c"]);
    assert_eq!(found["packages"][2]["version"], "0.5");
    assert_eq!(found["packages"][2]["release"], "");
    check(&reference(), "SearchPackagesResponse", &found);

    // A package published later is found once the composer refreshes.
    let published = DebRepo::new(dir.path()).unwrap();
    published.add("kiln-d", "3.0", "").unwrap();
    published.index().unwrap();
    let search_d = json!({"distribution": "debian-12", "architecture": "x86_64", "packages": ["kiln-d"], "repositories": [repo.clone()]});
    let (_, before) = c.post("/search/packages", &search_d).await;
    assert_eq!(
        before["packages"],
        json!([]),
        "loaded once, not re-read per request"
    );
    assert_eq!(c.state.repos.refresh_all().await, 0);
    let (_, found) = c
        .post(
            "/search/packages",
            &json!({"distribution": "debian-12", "architecture": "x86_64", "packages": ["kiln-d"], "repositories": [repo.clone()]}),
        )
        .await;
    assert_eq!(found["packages"][0]["version"], "3.0", "{found}");

    // A repository kiln cannot trust, or cannot read, is refused by name.
    let mut unsigned = request(&["kiln-a"]);
    unsigned["repositories"][0]
        .as_object_mut()
        .unwrap()
        .remove("check_repo_gpg");
    let (status, err) = c.post("/depsolve/blueprint", &unsigned).await;
    assert_eq!(
        (status, err["details"]["field"].as_str()),
        (400, Some("repositories")),
        "{err}"
    );
    let mut missing = request(&["kiln-a"]);
    missing["repositories"][0]["baseurl"] = json!(format!(
        "file://{}/nonexistent/kiln-repo",
        dir.path().display()
    ));
    let (status, err) = c.post("/depsolve/blueprint", &missing).await;
    assert_eq!(status, 502, "{err}");
    assert_eq!(err["code"], "IMAGE-BUILDER-COMPOSER-22");
    assert!(
        err["reason"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/kiln-repo"),
        "{err}"
    );

    // A tampered Packages file is refused, naming it.
    let tampered = tempfile::tempdir().unwrap();
    repository(tampered.path());
    let packages = tampered
        .path()
        .join("dists/test/main/binary-amd64/Packages");
    let text = std::fs::read_to_string(&packages)
        .unwrap()
        .replace("Version: 2.1-3", "Version: 9.9-9");
    std::fs::write(&packages, text).unwrap();
    let mut bad = request(&["kiln-a"]);
    bad["repositories"][0]["baseurl"] = json!(format!("file://{}", tampered.path().display()));
    let (status, err) = c.post("/depsolve/blueprint", &bad).await;
    assert_eq!(status, 502, "{err}");
    assert!(
        err["reason"].as_str().unwrap().contains("Packages"),
        "{err}"
    );

    // Bad requests name their field.
    let (status, err) = c
        .post(
            "/search/packages",
            &json!({"distribution": "debian-12", "architecture": "x86_64", "packages": ["a b"]}),
        )
        .await;
    assert_eq!(
        (status, err["details"]["field"].as_str()),
        (400, Some("packages[0]")),
        "{err}"
    );
    // Bounded work: at most 64 patterns, at most 17 repositories refused.
    let many: Vec<String> = (0..65).map(|i| format!("p{i}")).collect();
    let (status, err) = c
        .post(
            "/search/packages",
            &json!({"distribution": "debian-12", "architecture": "x86_64", "packages": many}),
        )
        .await;
    assert_eq!(
        (status, err["details"]["field"].as_str()),
        (400, Some("packages")),
        "{err}"
    );
    let (status, err) = c
        .post(
            "/search/packages",
            &json!({"distribution": "debian-12", "architecture": "x86_64", "packages": ["bash"],
                    "repositories": vec![repo.clone(); 17]}),
        )
        .await;
    assert_eq!(
        (status, err["details"]["field"].as_str()),
        (400, Some("repositories")),
        "{err}"
    );
    let (status, err) = c
        .post(
            "/depsolve/blueprint",
            &json!({"distribution": "debian-12", "architecture": "x86_64"}),
        )
        .await;
    assert_eq!(
        (status, err["details"]["field"].as_str()),
        (400, Some("blueprint")),
        "{err}"
    );
    let mut pinned = request(&["kiln-a"]);
    pinned["blueprint"]["packages"][0]["version"] = json!("1.*");
    let (status, err) = c.post("/depsolve/blueprint", &pinned).await;
    assert_eq!(
        (status, err["details"]["field"].as_str()),
        (400, Some("blueprint.packages[0].version")),
        "{err}"
    );
    // An exact pin is honoured; a version the repository lacks is explained.
    pinned["blueprint"]["packages"][0]["version"] = json!("1:1.0-1");
    let (status, body) = c.post("/depsolve/blueprint", &pinned).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["packages"][0]["version"], "1.0");
    pinned["blueprint"]["packages"][0]["version"] = json!("7.0");
    let (status, err) = c.post("/depsolve/blueprint", &pinned).await;
    assert_eq!(status, 400, "{err}");
    assert!(err["reason"].as_str().unwrap().contains("7.0"), "{err}");
}

/// Loaded indexes stay within `[repositories] cache_budget_bytes`: over it,
/// the least recently used set is dropped, and is loaded again when asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loaded_indexes_stay_within_the_budget() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    repository(a.path());
    repository(b.path());
    let start = |budget: usize| {
        start_with(Backend::Sqlite, move |cfg| {
            cfg.repositories.allow = vec![AllowEntry::Prefix(format!(
                "file://{}",
                std::env::temp_dir().display()
            ))];
            cfg.repositories.cache_budget_bytes = budget;
        })
    };
    let request = |dir: &Path| {
        json!({
            "distribution": "debian-12", "architecture": "x86_64",
            "blueprint": {"name": "t", "packages": [{"name": "kiln-a"}]},
            "repositories": [{"baseurl": format!("file://{}", dir.display()), "suite": "test",
                              "components": ["main"], "check_repo_gpg": false}],
        })
    };
    // Room for both.
    let c = start(1 << 30).await;
    for dir in [a.path(), b.path(), a.path()] {
        let (status, body) = c.post("/depsolve/blueprint", &request(dir)).await;
        assert_eq!(status, 200, "{body}");
    }
    let (sets, bytes) = c.state.repos.loaded();
    assert_eq!(sets, 2);
    let one = bytes / 2;
    assert!(one > 0);

    // Room for one: each load drops the other, and both still answer.
    let c = start(one + one / 2).await;
    for dir in [a.path(), b.path(), a.path()] {
        let (status, body) = c.post("/depsolve/blueprint", &request(dir)).await;
        assert_eq!(status, 200, "{body}");
        let (sets, bytes) = c.state.repos.loaded();
        assert_eq!(sets, 1);
        assert!(bytes <= one + one / 2, "{bytes}");
    }
}
