//! `kiln depsolve` run as a process against a signed repository on disk.

#[path = "../../depsolve/tests/common/deb_repo.rs"]
mod deb_repo;

use std::process::Command;

fn kiln(repo: &deb_repo::DebRepo, cache: &std::path::Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("depsolve")
        .args(["--arch", "amd64"])
        .arg("--source")
        .arg(format!(
            "deb [signed-by={}] {} stable main",
            repo.keyring.display(),
            repo.file_url()
        ))
        .arg("--cache-dir")
        .arg(cache)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn depsolve_prints_json_table_and_explains_failures() {
    let repo = deb_repo::DebRepo::build();
    let cache = tempfile::tempdir().unwrap();

    let out = kiln(&repo, cache.path(), &["--output", "json", "hello"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let pkgs = v["packages"].as_array().unwrap();
    let names: Vec<&str> = pkgs.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["gcc-12-base", "hello", "libc6", "libgcc-s1"]);
    for key in ["name", "version", "arch", "url", "sha256", "size"] {
        assert!(pkgs.iter().all(|p| !p[key].is_null()), "missing {key}");
    }
    assert!(pkgs[1]["url"].as_str().unwrap().ends_with(".deb"));

    let out = kiln(&repo, cache.path(), &["hello"]);
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains("4 packages"), "{table}");

    let out = kiln(&repo, cache.path(), &["hello", "no-such-package"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("package no-such-package is not available in any repository"),
        "{err}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args([
            "depsolve",
            "--arch",
            "amd64",
            "--source",
            "deb ftp://x s main",
            "hello",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad source line 'deb ftp://x s main'"));

    // Signed by a key that is not trusted: refused, naming the file.
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["depsolve", "--arch", "amd64", "--cache-dir"])
        .arg(cache.path())
        .arg("--source")
        .arg(format!(
            "deb [signed-by={}] {} stable main",
            repo.other_keyring.display(),
            repo.file_url()
        ))
        .arg("hello")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("dists/stable/InRelease") && err.contains("signature"),
        "{err}"
    );
}
