//! Repository loading end to end: a signed repository built with
//! apt-ftparchive and gpg, read over file:// and over HTTP on 127.0.0.1,
//! and refused when its Packages file or its signature is wrong.

mod common;

use std::path::Path;

use common::deb_repo::{self, config, DebRepo};
use common::http::HttpServer;
use kiln_depsolve::fetch::sha256_hex;
use kiln_depsolve::{DepsolveError, RepoSet, Request};

fn hello() -> Request {
    Request {
        packages: vec!["hello".into()],
        ..Default::default()
    }
}

/// The solution names the four packages with the exact bytes on disk.
fn assert_exact(repo: &DebRepo, set: &RepoSet, url_prefix: &str) {
    let sol = set.solve(&hello()).unwrap();
    let names: Vec<&str> = sol.packages.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, vec!["gcc-12-base", "hello", "libc6", "libgcc-s1"]);
    for p in &sol.packages {
        let rel = p
            .url
            .strip_prefix(url_prefix)
            .unwrap_or_else(|| panic!("{} not under {url_prefix}", p.url));
        let data = std::fs::read(repo.root.join(rel.trim_start_matches('/'))).unwrap();
        assert_eq!(p.sha256, sha256_hex(&data), "{}", p.name);
        assert_eq!(p.size, data.len() as u64, "{}", p.name);
        assert!(p.arch == "amd64" || p.arch == "all");
    }
}

#[tokio::test]
async fn loads_signed_repo_over_file_and_http_with_cache() {
    let repo = DebRepo::build();
    let cache = tempfile::tempdir().unwrap();

    let line = format!("deb {} stable main", repo.file_url());
    let set = RepoSet::open(config(&line, &repo.keyring, cache.path()))
        .await
        .unwrap();
    assert_exact(&repo, &set, &repo.file_url());

    // Release + Release.gpg instead of InRelease.
    let line = format!("deb {} detached main", repo.file_url());
    let set = RepoSet::open(config(&line, &repo.keyring, cache.path()))
        .await
        .unwrap();
    assert_exact(&repo, &set, &repo.file_url());

    let server = HttpServer::serve(&repo.root);
    let line = format!("deb {} stable main", server.url());
    let set = RepoSet::open(config(&line, &repo.keyring, cache.path()))
        .await
        .unwrap();
    assert_exact(&repo, &set, &server.url());
    let blobs = std::fs::read_dir(cache.path().join("blobs"))
        .unwrap()
        .count();
    assert_eq!(
        blobs, 2,
        "InRelease and Packages.xz are cached by content hash"
    );

    // A refresh revalidates (304) and serves the same bytes from the cache;
    // a concurrent holder of the old index keeps it.
    let before = set.index();
    set.refresh().await.unwrap();
    assert!(!std::sync::Arc::ptr_eq(&before, &set.index()));
    assert_eq!(set.solve(&hello()).unwrap().packages.len(), 4);
    assert_eq!(
        std::fs::read_dir(cache.path().join("blobs"))
            .unwrap()
            .count(),
        2
    );
    let log = server.log();
    assert!(
        log.contains("GET /dists/stable/InRelease HTTP/1.1\" 200"),
        "{log}"
    );
    assert!(
        log.contains("GET /dists/stable/InRelease HTTP/1.1\" 304"),
        "{log}"
    );
    assert!(
        log.contains("GET /dists/stable/main/binary-amd64/Packages.xz HTTP/1.1\" 304"),
        "{log}"
    );

    // The built index was snapshotted; a new RepoSet loads it and answers
    // the same. A damaged snapshot is rebuilt, not trusted.
    let snapshots: Vec<_> = std::fs::read_dir(cache.path().join("index"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "kidx"))
        .collect();
    assert_eq!(
        snapshots.len(),
        3,
        "one per distinct set of index files: {snapshots:?}"
    );
    let again = RepoSet::open(config(&line, &repo.keyring, cache.path()))
        .await
        .unwrap();
    assert_eq!(
        serde_json::to_string(&again.solve(&hello()).unwrap()).unwrap(),
        serde_json::to_string(&set.solve(&hello()).unwrap()).unwrap()
    );
    for s in &snapshots {
        std::fs::write(s, b"KILNIX02 damaged").unwrap();
    }
    let rebuilt = RepoSet::open(config(&line, &repo.keyring, cache.path()))
        .await
        .unwrap();
    assert_exact(&repo, &rebuilt, &server.url());

    // Search by name and glob returns candidates with their sources.
    let found: Vec<String> = set
        .search(&["libgcc*".into(), "hello".into(), "nothing-*".into()])
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(found, ["hello", "libgcc-s1"]);

    // Concurrent requests share one index.
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let s = set.clone();
            tokio::spawn(async move { s.solve_async(hello()).await.map(|x| x.packages.len()) })
        })
        .collect();
    for h in handles {
        assert_eq!(h.await.unwrap().unwrap(), 4);
    }
}

#[tokio::test]
async fn tampered_packages_file_is_refused_naming_it() {
    let repo = DebRepo::build();
    let cache = tempfile::tempdir().unwrap();
    let packages = repo.root.join("dists/stable/main/binary-amd64/Packages");
    let text = std::fs::read_to_string(&packages).unwrap();
    // Point hello at different bytes, keeping the signed Release untouched.
    let tampered = text.replacen("Package: hello", "Package: hello\nEssential: yes", 1);
    std::fs::write(&packages, tampered).unwrap();
    deb_repo::run(
        std::process::Command::new("xz")
            .args(["-k", "-f"])
            .arg(&packages),
    );
    let line = format!("deb {} stable main", repo.file_url());
    let err = RepoSet::open(config(&line, &repo.keyring, cache.path()))
        .await
        .err()
        .expect("must be refused");
    assert!(
        matches!(
            err,
            DepsolveError::Checksum { .. } | DepsolveError::Size { .. }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("dists/stable/main/binary-amd64/Packages.xz"),
        "{err}"
    );
}

#[tokio::test]
async fn bad_signatures_are_refused_naming_the_file() {
    let repo = DebRepo::build();
    let cache = tempfile::tempdir().unwrap();

    // Signed by a key that is not in the keyring.
    let line = format!("deb {} stable main", repo.file_url());
    let err = RepoSet::open(config(&line, &repo.other_keyring, cache.path()))
        .await
        .err()
        .expect("must be refused");
    assert!(matches!(err, DepsolveError::Signature { .. }), "{err}");
    assert!(err.to_string().contains("dists/stable/InRelease"), "{err}");
    assert!(err.to_string().contains("NO_PUBKEY"), "{err}");

    // Release changed after signing: the detached signature no longer matches.
    let suite = repo.root.join("dists/detached");
    let release = std::fs::read_to_string(suite.join("Release")).unwrap();
    std::fs::write(
        suite.join("Release"),
        release.replacen("Suite: detached", "Suite: evil", 1),
    )
    .unwrap();
    let line = format!("deb {} detached main", repo.file_url());
    let err = RepoSet::open(config(&line, &repo.keyring, cache.path()))
        .await
        .err()
        .expect("must be refused");
    assert!(matches!(err, DepsolveError::Signature { .. }), "{err}");
    assert!(err.to_string().contains("dists/detached/Release"), "{err}");
    assert!(err.to_string().contains("BADSIG"), "{err}");

    // InRelease edited after signing.
    let inrel = suite.with_file_name("stable").join("InRelease");
    let text = std::fs::read_to_string(&inrel).unwrap();
    std::fs::write(&inrel, text.replacen("Suite: stable", "Suite: stablE", 1)).unwrap();
    let line = format!("deb {} stable main", repo.file_url());
    let err = RepoSet::open(config(&line, &repo.keyring, cache.path()))
        .await
        .err()
        .expect("must be refused");
    assert!(
        err.to_string().contains("dists/stable/InRelease") && err.to_string().contains("BADSIG"),
        "{err}"
    );
}

#[tokio::test]
async fn host_bookworm_inrelease_verifies_with_debian_keyring() {
    let keyring = Path::new("/usr/share/keyrings/debian-archive-keyring.gpg");
    let file = format!(
        "{}/deb.debian.org_debian_dists_bookworm_InRelease",
        common::LISTS
    );
    let data = std::fs::read(&file).unwrap();
    let text = kiln_depsolve::release::verify_inline(&file, &data, keyring)
        .await
        .unwrap();
    let release = kiln_depsolve::release::Release::parse(&file, &text).unwrap();
    assert!(release.files.contains_key("main/binary-amd64/Packages.xz"));
    // The same bytes with one changed checksum must fail.
    let bad = String::from_utf8_lossy(&data).replacen(
        "main/binary-amd64/Packages.xz",
        "main/binary-amd64/Packages.xy",
        1,
    );
    let err = kiln_depsolve::release::verify_inline(&file, bad.as_bytes(), keyring)
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&file), "{err}");
}

#[tokio::test]
async fn reads_gz_and_plain_packages_files() {
    let repo = DebRepo::build();
    let cache = tempfile::tempdir().unwrap();
    for compression in ["gz", "plain"] {
        deb_repo::index_suite_as(&repo.root, compression, compression);
        let suite = repo.root.join(format!("dists/{compression}"));
        deb_repo::sign_suite(&repo.gnupghome, &suite, true, false);
        let listed = std::fs::read_to_string(suite.join("Release")).unwrap();
        let want = if compression == "gz" {
            "main/binary-amd64/Packages.gz"
        } else {
            "main/binary-amd64/Packages"
        };
        assert!(
            listed.contains(want) && !listed.contains("Packages.xz"),
            "{listed}"
        );
        let line = format!("deb {} {compression} main", repo.file_url());
        let set = RepoSet::open(config(&line, &repo.keyring, cache.path()))
            .await
            .unwrap();
        assert_exact(&repo, &set, &repo.file_url());
    }
}

#[tokio::test]
async fn expired_release_is_refused_unless_asked() {
    let repo = DebRepo::build();
    let cache = tempfile::tempdir().unwrap();
    deb_repo::index_suite(&repo.root, "expired");
    let suite = repo.root.join("dists/expired");
    let release = std::fs::read_to_string(suite.join("Release")).unwrap();
    std::fs::write(
        suite.join("Release"),
        format!("Valid-Until: Thu, 01 Jan 2015 00:00:00 UTC\n{release}"),
    )
    .unwrap();
    deb_repo::sign_suite(&repo.gnupghome, &suite, true, false);
    let line = format!("deb {} expired main", repo.file_url());
    let err = RepoSet::open(config(&line, &repo.keyring, cache.path()))
        .await
        .err()
        .expect("must be refused");
    assert!(
        err.to_string().contains("dists/expired/InRelease") && err.to_string().contains("expired"),
        "{err}"
    );
    let line = format!(
        "deb [check-valid-until=no] {} expired main",
        repo.file_url()
    );
    let set = RepoSet::open(config(&line, &repo.keyring, cache.path()))
        .await
        .unwrap();
    assert_exact(&repo, &set, &repo.file_url());
}

#[tokio::test]
async fn reads_flat_repository() {
    let repo = DebRepo::build();
    let cache = tempfile::tempdir().unwrap();
    // `deb URL ./` with Packages and Release beside the pool.
    let packages = deb_repo::run(
        std::process::Command::new("apt-ftparchive")
            .current_dir(&repo.root)
            .args(["packages", "pool"]),
    );
    std::fs::write(repo.root.join("Packages"), packages).unwrap();
    deb_repo::run(
        std::process::Command::new("xz")
            .args(["-k", "-f"])
            .arg(repo.root.join("Packages")),
    );
    let release = deb_repo::run(
        std::process::Command::new("apt-ftparchive")
            .current_dir(&repo.root)
            .args(["-o", "APT::FTPArchive::Release::Suite=flat", "release", "."]),
    );
    std::fs::write(repo.root.join("Release"), release).unwrap();
    deb_repo::sign_suite(&repo.gnupghome, &repo.root, true, false);
    let line = format!("deb {} ./", repo.file_url());
    let set = RepoSet::open(config(&line, &repo.keyring, cache.path()))
        .await
        .unwrap();
    assert_exact(&repo, &set, &repo.file_url());
}
