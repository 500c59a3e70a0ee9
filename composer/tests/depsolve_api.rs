//! `POST /depsolve/blueprint` and `POST /search/packages` against a real
//! Debian repository on `file://`, built here with dpkg-deb and apt-ftparchive.

mod common;

use std::path::Path;
use std::process::Command;

use common::{check, reference, start, Backend};
use serde_json::json;

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn deb(pool: &Path, name: &str, version: &str, relations: &str) {
    let root = pool.join(format!("{name}-build"));
    std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(root.join("usr/share/doc").join(name)).unwrap();
    std::fs::write(
        root.join("usr/share/doc").join(name).join("README"),
        format!("{name} {version}\n"),
    )
    .unwrap();
    std::fs::write(
        root.join("DEBIAN/control"),
        format!(
            "Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: kiln tests <kiln@localhost>\n{relations}Description: kiln test package {name}\n"
        ),
    )
    .unwrap();
    run(Command::new("dpkg-deb")
        .args(["--build", "--root-owner-group"])
        .arg(&root)
        .arg(pool.join(format!("{name}_{version}_all.deb"))));
    std::fs::remove_dir_all(root).unwrap();
}

/// A one-suite repository: kiln-a needs kiln-b (>= 2.0); kiln-c conflicts with kiln-a.
fn repository(dir: &Path) {
    let pool = dir.join("pool/main");
    std::fs::create_dir_all(&pool).unwrap();
    deb(&pool, "kiln-a", "1:1.0-1", "Depends: kiln-b (>= 2.0)\n");
    deb(&pool, "kiln-b", "2.1-3", "");
    deb(&pool, "kiln-c", "0.5", "Conflicts: kiln-a\n");
    index(dir);
}

/// (Re)writes Packages and Release for what the pool holds.
fn index(dir: &Path) {
    let bin = dir.join("dists/test/main/binary-amd64");
    std::fs::create_dir_all(&bin).unwrap();
    let packages = run(Command::new("apt-ftparchive")
        .arg("packages")
        .arg("pool")
        .current_dir(dir));
    std::fs::write(bin.join("Packages"), packages).unwrap();
    let release = run(Command::new("apt-ftparchive")
        .args([
            "-o",
            "APT::FTPArchive::Release::Suite=test",
            "-o",
            "APT::FTPArchive::Release::Codename=test",
            "-o",
            "APT::FTPArchive::Release::Components=main",
            "-o",
            "APT::FTPArchive::Release::Architectures=amd64",
            "release",
            "dists/test",
        ])
        .current_dir(dir));
    std::fs::write(dir.join("dists/test/Release"), release).unwrap();
}

fn sha256(path: &Path) -> String {
    let out = run(Command::new("sha256sum").arg(path));
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
    let c = start(Backend::Sqlite).await;
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
    deb(&dir.path().join("pool/main"), "kiln-d", "3.0", "");
    index(dir.path());
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
    missing["repositories"][0]["baseurl"] = json!("file:///nonexistent/kiln-repo");
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
