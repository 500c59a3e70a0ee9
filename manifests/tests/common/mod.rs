//! Validation of manifests against osbuild's schemas, composed as osbuild
//! composes them from each module's meta file (JSON Schema draft 4). The
//! reference schemas live beside the repository in shared/; without them
//! the validation is reported as skipped and the tests check the rest.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

fn reference_dir() -> PathBuf {
    kiln_testsupport::reference::dir("osbuild").expect("checked by validate_manifest")
}

fn meta(kind: &str, name: &str) -> Value {
    // kiln's own stages carry their schema in the repository.
    let path = if name.starts_with("kiln.") {
        // `../manifests`: this file is also compiled into kiln-executor's tests.
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../manifests")
            .join(kind)
            .join(format!("{name}.meta.json"))
    } else {
        reference_dir().join(kind).join(format!("{name}.meta.json"))
    };
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// The schema osbuild builds for a module from its meta file.
fn module_schema(kind: &str, name: &str) -> Value {
    let m = meta(kind, name);
    let fragment = m
        .get("schema_2")
        .filter(|v| v.as_object().is_some_and(|o| !o.is_empty()));
    let mut schema = json!({"type": "object", "additionalProperties": false});
    match kind {
        "stages" => {
            let mut props = match fragment {
                Some(f) => f.clone(),
                None => json!({"options": m["schema"]}),
            };
            props["type"] = json!({"enum": [name]});
            if props.get("mounts").is_none() {
                props["mounts"] = json!({"type": "array"});
            }
            schema["properties"] = props;
            schema["required"] = json!(["type"]);
        }
        "devices" => {
            schema["additionalProperties"] = json!(true);
            schema["properties"] = json!({"type": {"enum": [name]}, "options": fragment.cloned().unwrap_or_else(|| m["schema"].clone())});
        }
        _ => {
            for (k, v) in fragment.unwrap_or(&m["schema"]).as_object().unwrap() {
                schema[k] = v.clone();
            }
            if kind == "mounts" {
                schema["properties"]["type"] = json!({"enum": [name]});
            }
        }
    }
    // Definitions live at the top, where the fragments' references expect them.
    let props = schema.get_mut("properties").and_then(Value::as_object_mut);
    let mut hoisted = Vec::new();
    if let Some(props) = props {
        hoisted.extend(props.remove("definitions"));
        hoisted.extend(
            props
                .get_mut("options")
                .and_then(Value::as_object_mut)
                .and_then(|o| o.remove("definitions")),
        );
    }
    for d in hoisted {
        schema["definitions"] = d;
    }
    schema
}

fn violations(schema: &Value, instance: &Value) -> Vec<String> {
    // osbuild validates with JSON Schema draft 4.
    let v = jsonschema::draft4::new(schema).expect("schema compiles");
    v.iter_errors(instance)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect()
}

/// What is wrong with `m` by osbuild's schemas; nothing when the reference
/// schemas are absent (reported as skipped), for tests whose other checks do
/// not depend on it (the executor's tests include this file too).
pub(crate) fn validate_manifest(m: &Value) -> Vec<String> {
    check_manifest(m).unwrap_or_default()
}

/// What is wrong with `m` by osbuild's schemas; None (reported as skipped)
/// when the reference schemas are absent.
pub(crate) fn check_manifest(m: &Value) -> Option<Vec<String>> {
    if kiln_testsupport::reference::dir("osbuild").is_none() {
        kiln_testsupport::reference::skipped(
            "osbuild's schemas (../shared/reference/osbuild) are absent: manifests not validated",
        );
        return None;
    }
    let top: Value = serde_json::from_str(
        &std::fs::read_to_string(reference_dir().join("osbuild2.json")).unwrap(),
    )
    .unwrap();
    let mut errors = violations(&top, m);
    for (name, source) in m["sources"].as_object().into_iter().flatten() {
        errors.extend(
            violations(&module_schema("sources", name), source)
                .into_iter()
                .map(|e| format!("sources.{name}: {e}")),
        );
    }
    for (pi, p) in m["pipelines"].as_array().unwrap().iter().enumerate() {
        for (si, s) in p["stages"].as_array().into_iter().flatten().enumerate() {
            let at = format!("pipelines[{pi}].stages[{si}]");
            errors.extend(
                violations(&module_schema("stages", s["type"].as_str().unwrap()), s)
                    .into_iter()
                    .map(|e| format!("{at}: {e}")),
            );
            for (n, ip) in s["inputs"].as_object().into_iter().flatten() {
                errors.extend(
                    violations(&module_schema("inputs", ip["type"].as_str().unwrap()), ip)
                        .into_iter()
                        .map(|e| format!("{at}.inputs.{n}: {e}")),
                );
            }
            for (n, dev) in s["devices"].as_object().into_iter().flatten() {
                errors.extend(
                    violations(
                        &module_schema("devices", dev["type"].as_str().unwrap()),
                        dev,
                    )
                    .into_iter()
                    .map(|e| format!("{at}.devices.{n}: {e}")),
                );
            }
            for (n, mnt) in s["mounts"].as_array().into_iter().flatten().enumerate() {
                errors.extend(
                    violations(&module_schema("mounts", mnt["type"].as_str().unwrap()), mnt)
                        .into_iter()
                        .map(|e| format!("{at}.mounts[{n}]: {e}")),
                );
            }
        }
    }
    Some(errors)
}
