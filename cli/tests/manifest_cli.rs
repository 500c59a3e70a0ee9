//! `kiln manifest inspect` as a person or script runs it.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");
const GENERIC: &str = include_str!("../../manifests/tests/data/generic.json");

#[test]
fn inspect_prints_stage_ids_from_a_file_and_from_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.json");
    std::fs::write(&path, GENERIC).unwrap();
    let out = Command::new(KILN)
        .args(["manifest", "inspect"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let from_file: Value = serde_json::from_slice(&out.stdout).unwrap();
    let want = kiln_manifests::ids(&serde_json::from_str(GENERIC).unwrap()).unwrap();
    assert_eq!(
        from_file["pipelines"][2]["stages"][0]["id"],
        want.pipelines[2].stages[0].as_str()
    );

    let mut child = Command::new(KILN)
        .args(["manifest", "inspect", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(GENERIC.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap(),
        from_file
    );
}

#[test]
fn a_broken_manifest_exits_2_naming_the_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.json");
    std::fs::write(&path, GENERIC.replace("name:tree", "name:nosuch")).unwrap();
    let out = Command::new(KILN)
        .args(["manifest", "inspect"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pipelines[2].stages[0].inputs.tree.references")
            && err.contains("name:nosuch"),
        "{err}"
    );
    std::fs::write(&path, "{not json").unwrap();
    let out = Command::new(KILN)
        .args(["manifest", "inspect"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// A distribution whose `tar` image is just `kiln-a`, for a test repository.
fn test_distribution(dir: &std::path::Path, repo_url: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("testdeb.toml"),
        format!(
            r#"name = "testdeb-1"
product = "kiln test"
family = "debian"
os_version = "1"
releasever = "1"
source_epoch = 1700000000

[[repositories]]
id = "test"
baseurl = "{repo_url}"
suite = "test"
components = ["main"]

[architectures.x86_64]
package_arch = "amd64"
image_types = ["tar"]

[image_types.tar]
filename = "root.tar"
mime_type = "application/x-tar"
packages = ["kiln-a"]
"#
        ),
    )
    .unwrap();
}

#[test]
fn generate_depsolves_and_writes_the_manifest() {
    use kiln_testsupport::debrepo::DebRepo;
    let dir = tempfile::tempdir().unwrap();
    let repo = DebRepo::new(&dir.path().join("repo")).unwrap();
    let a = repo.add("kiln-a", "1.0-1", "Depends: kiln-b\n").unwrap();
    repo.add("kiln-b", "2.0-1", "").unwrap();
    repo.add("kiln-c", "1.0-1", "Conflicts: kiln-a\n").unwrap();
    repo.index().unwrap();
    let distros = dir.path().join("distributions");
    test_distribution(&distros, &repo.url());
    let blueprint = dir.path().join("node.toml");
    std::fs::write(
        &blueprint,
        "name = \"node\"\n[customizations]\nhostname = \"node-7\"\n",
    )
    .unwrap();

    let generate = |bp: &std::path::Path| {
        Command::new(KILN)
            .args([
                "manifest",
                "generate",
                "--distribution",
                "testdeb-1",
                "--arch",
                "amd64",
                "--image-type",
                "tar",
            ])
            .arg("--distributions-dir")
            .arg(&distros)
            .arg("--blueprint")
            .arg(bp)
            .args(["--source", &repo.source_line()])
            .arg("--cache-dir")
            .arg(dir.path().join("cache"))
            .output()
            .unwrap()
    };
    let out = generate(&blueprint);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m: Value = serde_json::from_slice(&out.stdout).unwrap();
    let dpkg = &m["pipelines"][0]["stages"][0];
    assert_eq!(dpkg["type"], "kiln.dpkg");
    let names: Vec<&str> = dpkg["options"]["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["kiln-a", "kiln-b"]);
    let sum =
        String::from_utf8(Command::new("sha256sum").arg(&a).output().unwrap().stdout).unwrap();
    let sum = format!("sha256:{}", sum.split_whitespace().next().unwrap());
    assert_eq!(dpkg["options"]["packages"][0]["checksum"], sum.as_str());
    assert_eq!(
        m["sources"]["org.osbuild.curl"]["items"][&sum],
        format!("file://{}", a.display())
    );
    assert_eq!(
        m["pipelines"][0]["source-epoch"], 1700000000,
        "the distribution's snapshot date"
    );
    assert!(m["pipelines"][0]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["type"] == "org.osbuild.hostname" && s["options"]["hostname"] == "node-7"));
    kiln_manifests::ids(&m).unwrap();

    // A blueprint may pin its own source epoch.
    std::fs::write(&blueprint, "name = \"node\"\nsource_epoch = 1234567890\n").unwrap();
    let out = generate(&blueprint);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(m["pipelines"][0]["source-epoch"], 1234567890);

    // A blueprint whose packages cannot go together: exit 2 with the reason.
    std::fs::write(
        &blueprint,
        "name = \"node\"\n[[packages]]\nname = \"kiln-c\"\n",
    )
    .unwrap();
    let out = generate(&blueprint);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("kiln-c"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
