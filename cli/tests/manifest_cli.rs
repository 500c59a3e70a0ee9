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
