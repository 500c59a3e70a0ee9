//! kiln's stage ids against an independent implementation of osbuild's
//! published algorithm (in Python, whose `json.dumps` the ids hash), and the
//! golden manifest against the reference schemas (`../shared/reference/osbuild`,
//! beside the repository; reported as skipped when they are absent).

use std::io::Write;
use std::process::{Command, Stdio};

mod common;

use common::check_manifest;
use kiln_manifests::{ids, inspect, pyjson};
use serde_json::{json, Value};

fn generic() -> Value {
    serde_json::from_str(include_str!("data/generic.json")).unwrap()
}

/// A manifest with devices, mounts and a pipeline without stages, for the
/// parts of the algorithm the generic one does not reach.
fn with_devices() -> Value {
    json!({
        "version": "2",
        "pipelines": [
            {"name": "empty"},
            {"name": "image", "source-epoch": 0, "stages": [
                {"type": "org.osbuild.truncate", "options": {"filename": "disk.img", "size": "1 GiB"}},
                {"type": "org.osbuild.mkfs.ext4",
                 "devices": {
                     "part": {"type": "org.osbuild.loopback", "parent": "disk", "options": {"start": 2048, "size": 4096}},
                     "disk": {"type": "org.osbuild.loopback", "options": {"filename": "disk.img"}}
                 },
                 "options": {"uuid": "6e4ff95f-f662-45ee-a82a-bdf44a2d0b75", "label": "root ✓"}},
                {"type": "org.osbuild.copy",
                 "devices": {"root": {"type": "org.osbuild.loopback", "options": {"filename": "disk.img", "start": 2048}}},
                 "mounts": [{"name": "root", "type": "org.osbuild.ext4", "source": "root", "target": "/", "partition": 1},
                            {"name": "boot", "type": "org.osbuild.ext4", "source": "root", "target": "/boot", "options": {"readonly": true}}],
                 "inputs": {"t": {"type": "org.osbuild.tree", "origin": "org.osbuild.pipeline",
                                  "references": {"name:image": {}}}},
                 "options": {"paths": [{"from": "input://t/", "to": "mount://root/"}], "ratio": 0.25}}
            ]}
        ]
    })
}

/// osbuild's id algorithm, written from its published description.
const PYTHON_IDS: &str = include_str!("data/osbuild_ids.py");

fn python(script: &str, input: &str) -> String {
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "python failed");
    String::from_utf8(out.stdout).unwrap()
}

fn check_against_python(manifest: &Value) {
    let theirs: Value = serde_json::from_str(&python(PYTHON_IDS, &manifest.to_string())).unwrap();
    let ours = ids(manifest).unwrap();
    let ours: Vec<Value> = ours
        .pipelines
        .iter()
        .map(|p| json!({"name": p.name, "id": p.id, "stages": p.stages}))
        .collect();
    assert_eq!(Value::Array(ours), theirs);
}

#[test]
fn generic_manifest_ids_match_the_published_algorithm() {
    check_against_python(&generic());
}

#[test]
fn devices_mounts_epochs_and_floats_match_too() {
    let m = with_devices();
    // A self-reference needs the pipeline's id before its last stage: osbuild
    // resolves references at load time, to what is defined so far.
    let err = ids(&m).unwrap_err();
    assert_eq!(err.path, "pipelines[1].stages[2].inputs.t.references");
    let mut m = m;
    m["pipelines"][1]["stages"][2]["inputs"]["t"]["references"] = json!({});
    check_against_python(&m);
    assert_eq!(ids(&m).unwrap().pipelines[0].id, None);
}

#[test]
fn ids_change_with_what_they_cover() {
    let base = ids(&generic()).unwrap();
    let mut changed = generic();
    changed["pipelines"][1]["stages"][0]["options"]["paths"][0]["mode"] = json!(448);
    let after = ids(&changed).unwrap();
    // The changed stage and everything after it in that pipeline and the
    // pipelines built from it change; the build pipeline does not.
    assert_eq!(after.pipelines[0].stages, base.pipelines[0].stages);
    assert_ne!(after.pipelines[1].stages[0], base.pipelines[1].stages[0]);
    assert_ne!(after.pipelines[1].stages[1], base.pipelines[1].stages[1]);
    assert_ne!(after.pipelines[2].stages[0], base.pipelines[2].stages[0]);
    let mut epoch = generic();
    epoch["pipelines"][1]["source-epoch"] = json!(1747699201);
    assert_ne!(
        ids(&epoch).unwrap().pipelines[1].stages[0],
        base.pipelines[1].stages[0]
    );
}

#[test]
fn python_json_text_is_reproduced_byte_for_byte() {
    let samples = [
        json!({"b": 1, "a": [true, false, null], "é": "ü\u{1F600}\u{7f}\u{1}\"\\/\t"}),
        json!([
            0.1,
            1.0,
            -2.5,
            1e16,
            1.5e-5,
            123456789.125,
            1e-7,
            5e22,
            18446744073709551615u64,
            -9223372036854775808i64
        ]),
        json!({"nested": {"z": {"y": {}}, "a": []}, "": ""}),
        generic(),
    ];
    let script = "import json,sys\nfor line in sys.stdin:\n    print(json.dumps(json.loads(line), sort_keys=True))";
    let input: String = samples.iter().map(|s| format!("{s}\n")).collect();
    let theirs = python(script, &input);
    for (s, line) in samples.iter().zip(theirs.lines()) {
        assert_eq!(pyjson::dumps(s, true), line);
    }
}

#[test]
fn inspect_shows_every_stage_id_and_resolved_references() {
    let out = inspect(&generic()).unwrap();
    let ids = ids(&generic()).unwrap();
    assert_eq!(out["pipelines"][1]["build"], json!(ids.pipelines[0].id));
    assert_eq!(
        out["pipelines"][1]["stages"][1]["id"],
        json!(ids.pipelines[1].stages[1])
    );
    assert_eq!(
        out["pipelines"][2]["stages"][0]["inputs"]["tree"]["references"],
        json!([ids.pipelines[1].id])
    );
}

#[test]
fn broken_manifests_name_the_place() {
    let mut m = generic();
    m["pipelines"][2]["build"] = json!("name:nosuch");
    assert_eq!(ids(&m).unwrap_err().path, "pipelines[2].build");
    let mut m = generic();
    m["pipelines"][1]["stages"][1]
        .as_object_mut()
        .unwrap()
        .remove("type");
    assert_eq!(ids(&m).unwrap_err().path, "pipelines[1].stages[1]");
    assert_eq!(ids(&json!({"version": "1"})).unwrap_err().path, "version");
}

#[test]
fn golden_generic_manifest_validates_against_the_reference_schemas() {
    let Some(errors) = check_manifest(&generic()) else {
        return;
    };
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    // The validation bites: a wrong option and an unknown one are refused.
    let mut bad = generic();
    bad["pipelines"][2]["stages"][0]["options"]["compression"] = json!("rar");
    bad["pipelines"][1]["stages"][0]["options"]["colour"] = json!("red");
    let errors = check_manifest(&bad).unwrap();
    assert!(
        errors.iter().any(|e| e.contains("pipelines[2].stages[0]")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("pipelines[1].stages[0]")),
        "{errors:?}"
    );
}
