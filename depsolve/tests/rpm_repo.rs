//! RPM repositories built with rpmbuild and createrepo_c in the test:
//! Requires/Provides/Conflicts/Obsoletes, rich dependencies, epochs,
//! file requires, zstd/xz/gz metadata, signed repomd.xml, over file:// and
//! HTTP on 127.0.0.1.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::deb_repo::run;
use common::http::HttpServer;
use kiln_depsolve::{DepsolveError, RepoConfig, RepoSet, Request, Source};
use kiln_testsupport::rpmrepo::{self, RpmSpec};

const fn spec(
    name: &'static str,
    evr: &'static str,
    arch: &'static str,
    tags: &'static str,
) -> RpmSpec<'static> {
    RpmSpec {
        name,
        evr,
        arch,
        tags,
        files: &[],
        scripts: "",
    }
}

const SPECS: &[RpmSpec<'static>] = &[
    spec("app", "1.0-1", "x86_64", "Requires: libfoo >= 2.0\nRequires: virtual-db\nRequires: (gui or tui)\nRequires: (docs if man)\nRequires: /usr/bin/helper-tool\nRequires: libbar >= 1:0"),
    spec("libfoo", "1.5-1", "noarch", ""),
    spec("libfoo", "2.1-1", "noarch", ""),
    spec("libbar", "2.0-1", "noarch", ""),
    spec("libbar", "1:0.9-1", "noarch", ""),
    spec("dbimpl", "1.0-1", "noarch", "Provides: virtual-db = 1.0"),
    spec("gui", "1.0-1", "noarch", ""),
    spec("tui", "1.0-1", "noarch", ""),
    spec("man", "1.0-1", "noarch", ""),
    spec("docs", "1.0-1", "noarch", ""),
    RpmSpec {
        files: &[("/usr/bin/helper-tool", "helper\n")],
        ..spec("helper", "1.0-1", "noarch", "")
    },
    spec("clash", "1.0-1", "noarch", "Conflicts: app"),
    spec("oldtool", "1.0-1", "noarch", ""),
    spec("newtool", "2.0-1", "noarch", "Obsoletes: oldtool < 2.0\nProvides: oldtool = 2.0"),
    spec("needs-oldtool", "1.0-1", "noarch", "Requires: oldtool >= 2.0"),
    spec("both", "1.0-1", "noarch", "Requires: (gui and tui)"),
];

fn make_repo(rpms: &Path, dest: &Path, compress: &str) {
    // Debian's createrepo_c has no zstd: build gz and recompress primary,
    // rewriting repomd.xml as a newer createrepo_c would.
    let native = if compress == "zstd" { "gz" } else { compress };
    rpmrepo::create_repo(rpms, dest, native).unwrap();
    if compress == "zstd" {
        recompress_primary_zstd(&dest.join("repodata"));
    }
}

fn recompress_primary_zstd(repodata: &Path) {
    use std::io::Read;
    let gz = std::fs::read_dir(repodata)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with("primary.xml.gz"))
        .unwrap();
    let compressed = std::fs::read(&gz).unwrap();
    let mut xml = Vec::new();
    flate2::read::GzDecoder::new(&compressed[..])
        .read_to_end(&mut xml)
        .unwrap();
    let zst = zstd::stream::encode_all(&xml[..], 3).unwrap();
    let old_sha = kiln_depsolve::fetch::sha256_hex(&compressed);
    let new_sha = kiln_depsolve::fetch::sha256_hex(&zst);
    std::fs::write(repodata.join(format!("{new_sha}-primary.xml.zst")), &zst).unwrap();
    std::fs::remove_file(&gz).unwrap();
    let repomd = std::fs::read_to_string(repodata.join("repomd.xml")).unwrap();
    let start = repomd.find("<data type=\"primary\">").unwrap();
    let end = start + repomd[start..].find("</data>").unwrap();
    let block = repomd[start..end]
        .replace(&old_sha, &new_sha)
        .replace(
            &format!("{new_sha}-primary.xml.gz"),
            &format!("{new_sha}-primary.xml.zst"),
        )
        .replace(
            &format!("<size>{}</size>", compressed.len()),
            &format!("<size>{}</size>", zst.len()),
        );
    let repomd = format!("{}{}{}", &repomd[..start], block, &repomd[end..]);
    std::fs::write(repodata.join("repomd.xml"), repomd).unwrap();
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    cache: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let rpms = rpmrepo::build_rpms(dir.path(), SPECS).unwrap();
    let root = dir.path().join("repos");
    for c in ["zstd", "xz", "gz"] {
        make_repo(&rpms, &root.join(c), c);
    }
    let cache = dir.path().join("cache");
    Fixture {
        _dir: dir,
        root,
        cache,
    }
}

async fn open(f: &Fixture, line: &str) -> Result<RepoSet, DepsolveError> {
    RepoSet::open(RepoConfig {
        arch: "amd64".into(),
        sources: vec![line.parse::<Source>().unwrap()],
        cache_dir: f.cache.clone(),
        keyring: None,
    })
    .await
}

fn solve(set: &RepoSet, names: &[&str]) -> Result<Vec<String>, DepsolveError> {
    let req = Request {
        packages: names.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    set.solve(&req).map(|s| {
        s.packages
            .into_iter()
            .map(|p| format!("{}-{}.{}", p.name, p.version, p.arch))
            .collect()
    })
}

fn problems(set: &RepoSet, names: &[&str]) -> Vec<String> {
    match solve(set, names) {
        Err(DepsolveError::Unsolvable { problems }) => problems,
        other => panic!("expected unsolvable, got {other:?}"),
    }
}

#[tokio::test]
async fn rpm_dependencies_are_solved_exactly() {
    let f = fixture();
    let set = open(&f, &format!("rpm file://{}", f.root.join("zstd").display()))
        .await
        .unwrap();
    assert_eq!(
        solve(&set, &["app"]).unwrap(),
        [
            "app-1.0-1.x86_64",
            "dbimpl-1.0-1.noarch",
            "gui-1.0-1.noarch",
            "helper-1.0-1.noarch",
            "libbar-1:0.9-1.noarch",
            "libfoo-2.1-1.noarch",
        ]
    );
    // `(docs if man)`: docs comes with man.
    let with_man = solve(&set, &["app", "man"]).unwrap();
    assert!(
        with_man.contains(&"docs-1.0-1.noarch".to_string()),
        "{with_man:?}"
    );
    assert_eq!(
        solve(&set, &["both"]).unwrap(),
        ["both-1.0-1.noarch", "gui-1.0-1.noarch", "tui-1.0-1.noarch"]
    );
    // A versioned Provides of an obsoleting package satisfies the requirement.
    assert_eq!(
        solve(&set, &["needs-oldtool"]).unwrap(),
        ["needs-oldtool-1.0-1.noarch", "newtool-2.0-1.noarch"]
    );

    let p = problems(&set, &["app", "clash"]);
    assert!(
        p.iter()
            .any(|l| l.contains("clash (1.0-1) conflicts with app (1.0-1)")),
        "{p:?}"
    );
    let p = problems(&set, &["newtool", "oldtool"]);
    assert!(
        p.iter()
            .any(|l| l.contains("newtool (2.0-1) obsoletes oldtool (1.0-1)")),
        "{p:?}"
    );

    // URLs, sizes and checksums point at the real files.
    let sol = set
        .solve(&Request {
            packages: vec!["app".into()],
            ..Default::default()
        })
        .unwrap();
    for p in &sol.packages {
        let path = p.url.strip_prefix("file://").unwrap();
        let data = std::fs::read(path).unwrap();
        assert_eq!(
            kiln_depsolve::fetch::sha256_hex(&data),
            p.sha256,
            "{}",
            p.name
        );
        assert_eq!(data.len() as u64, p.size, "{}", p.name);
    }
}

#[tokio::test]
async fn rpm_metadata_in_every_compression_over_http_and_signed() {
    let f = fixture();
    let server = HttpServer::serve(&f.root);
    let mut sets = Vec::new();
    for c in ["zstd", "xz", "gz"] {
        let set = open(&f, &format!("rpm {}/{c}", server.url()))
            .await
            .unwrap();
        sets.push(solve(&set, &["app"]).unwrap());
    }
    assert!(sets.windows(2).all(|w| w[0] == w[1]));

    // Signed repomd.xml: good signature accepted, other key refused.
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("gnupg");
    std::fs::create_dir_all(&home).unwrap();
    let gpg = |args: &[&str]| {
        let mut c = Command::new("gpg");
        c.env("GNUPGHOME", &home)
            .args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""])
            .args(args);
        run(&mut c)
    };
    gpg(&[
        "--quick-gen-key",
        "kiln rpm <rpm@kiln.invalid>",
        "ed25519",
        "sign",
        "never",
    ]);
    let keyring = dir.path().join("rpm-key.gpg");
    std::fs::write(&keyring, gpg(&["--export"])).unwrap();
    let repomd = f.root.join("gz/repodata/repomd.xml");
    gpg(&[
        "--detach-sign",
        "--armor",
        "-o",
        &format!("{}.asc", repomd.display()),
        &repomd.display().to_string(),
    ]);
    let line = format!("rpm [signed-by={}] {}/gz", keyring.display(), server.url());
    let set = open(&f, &line).await.unwrap();
    assert_eq!(solve(&set, &["app"]).unwrap(), sets[0]);

    let text = std::fs::read_to_string(&repomd).unwrap();
    std::fs::write(&repomd, text.replacen("<revision>", "<revision>9", 1)).unwrap();
    // Same second as the first fetch: http.server's Last-Modified would
    // answer 304, so start from an empty cache to really fetch the new file.
    std::fs::remove_dir_all(&f.cache).unwrap();
    let err = open(&f, &line)
        .await
        .err()
        .expect("tampered repomd.xml must be refused");
    assert!(matches!(err, DepsolveError::Signature { .. }), "{err}");
    assert!(err.to_string().contains("gz/repodata/repomd.xml"), "{err}");
}

#[tokio::test]
async fn tampered_primary_is_refused_naming_it() {
    let f = fixture();
    let repodata = f.root.join("xz/repodata");
    let primary = std::fs::read_dir(&repodata)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with("primary.xml.xz"))
        .unwrap();
    let mut data = std::fs::read(&primary).unwrap();
    let last = data.len() - 1;
    data[last] ^= 0xff;
    std::fs::write(&primary, data).unwrap();
    let err = open(&f, &format!("rpm file://{}", f.root.join("xz").display()))
        .await
        .err()
        .expect("must be refused");
    assert!(matches!(err, DepsolveError::Checksum { .. }), "{err}");
    assert!(err.to_string().contains("primary.xml.xz"), "{err}");
}
