//! An RPM repository named in a request with its key (`gpgkey`) is
//! verified: `repomd.xml.asc` must be a good signature by that key, as a
//! Debian repository's `Release` must be.

mod common;

use std::path::Path;
use std::process::Command;

use common::{start_with, Backend};
use kiln_composer::AllowEntry;
use kiln_testsupport::rpmrepo::{build_rpms, create_repo, RpmSpec};
use serde_json::{json, Value};

fn gpg(home: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("gpg")
        .env("GNUPGHOME", home)
        .args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gpg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A new signing key in its own GnuPG home; its public key, armoured.
fn key(home: &Path) -> String {
    std::fs::create_dir_all(home).unwrap();
    gpg(
        home,
        &[
            "--quick-gen-key",
            "kiln rpm <rpm@kiln.invalid>",
            "ed25519",
            "sign",
            "never",
        ],
    );
    String::from_utf8(gpg(home, &["--export", "--armor"])).unwrap()
}

fn sign(home: &Path, repo: &Path) {
    let repomd = repo.join("repodata/repomd.xml");
    let asc = repo.join("repodata/repomd.xml.asc");
    let _ = std::fs::remove_file(&asc);
    gpg(
        home,
        &[
            "--detach-sign",
            "--armor",
            "-o",
            &asc.display().to_string(),
            &repomd.display().to_string(),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpm_repositories_with_a_key_are_verified() {
    let dir = tempfile::tempdir().unwrap();
    let rpms = build_rpms(
        dir.path(),
        &[RpmSpec {
            name: "kiln-r",
            evr: "1.0-1",
            arch: "noarch",
            tags: "",
            files: &[],
            scripts: "",
        }],
    )
    .unwrap();
    let (good, tampered) = (dir.path().join("good"), dir.path().join("tampered"));
    create_repo(&rpms, &good, "gz").unwrap();
    create_repo(&rpms, &tampered, "gz").unwrap();
    let (home, other_home) = (dir.path().join("gnupg"), dir.path().join("other"));
    let (pubkey, other_key) = (key(&home), key(&other_home));
    sign(&home, &good);
    sign(&home, &tampered);
    let repomd = tampered.join("repodata/repomd.xml");
    let text = std::fs::read_to_string(&repomd).unwrap();
    std::fs::write(&repomd, text.replacen("<revision>", "<revision>9", 1)).unwrap();

    let c = start_with(Backend::Sqlite, |cfg| {
        cfg.repositories.allow = vec![AllowEntry::Prefix(format!(
            "file://{}",
            std::env::temp_dir().display()
        ))];
    })
    .await;
    let depsolve = |repo: &Path, gpgkey: Option<&str>| {
        let mut r = json!({"baseurl": format!("file://{}", repo.display())});
        if let Some(k) = gpgkey {
            r["gpgkey"] = json!(k);
        }
        json!({"distribution": "rocky-9", "architecture": "x86_64",
               "blueprint": {"name": "t", "packages": [{"name": "kiln-r"}]},
               "repositories": [r]})
    };
    let names = |body: &Value| -> Vec<String> {
        body["packages"]
            .as_array()
            .map(|p| {
                p.iter()
                    .map(|p| p["name"].as_str().unwrap_or("").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };

    let (status, body) = c
        .post("/depsolve/blueprint", &depsolve(&good, Some(&pubkey)))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(names(&body), ["kiln-r"]);

    // Changed after signing, or signed by another key: refused, naming the file.
    for (repo, key) in [(&tampered, &pubkey), (&good, &other_key)] {
        let (status, body) = c
            .post("/depsolve/blueprint", &depsolve(repo, Some(key)))
            .await;
        assert_eq!(status, 502, "{body}");
        let reason = body["reason"].as_str().unwrap();
        assert!(reason.contains("repomd.xml"), "{reason}");
    }
}
