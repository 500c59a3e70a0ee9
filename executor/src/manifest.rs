//! The osbuild v2 manifest as the executor runs it: parsed from JSON with
//! every error collected under the path that holds it, stage ids computed
//! by `kiln-manifests` exactly as osbuild computes them.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use kiln_api::osbuild::{BuildOutput, ValidationIssue};

use crate::stages;

/// One error of an invalid manifest: where (a JSON path, as osbuild prints
/// it: keys and indexes) and what.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidationError {
    pub path: Vec<Value>,
    pub message: String,
}

impl ValidationError {
    pub fn new(path: &[Value], message: impl Into<String>) -> Self {
        ValidationError {
            path: path.to_vec(),
            message: message.into(),
        }
    }

    /// `pipelines[0].stages[1].options.paths`, for humans.
    pub fn dotted(&self) -> String {
        let mut out = String::new();
        for p in &self.path {
            match p {
                Value::Number(n) => out.push_str(&format!("[{n}]")),
                Value::String(s) if out.is_empty() => out.push_str(s),
                Value::String(s) => {
                    out.push('.');
                    out.push_str(s);
                }
                other => out.push_str(&other.to_string()),
            }
        }
        if out.is_empty() {
            out.push('.');
        }
        out
    }
}

/// The result object osbuild prints for an invalid manifest.
pub fn validation_report(errors: &[ValidationError]) -> BuildOutput {
    BuildOutput::Invalid {
        success: false,
        title: "JSON Schema validation failed".into(),
        errors: errors
            .iter()
            .map(|e| ValidationIssue {
                message: e.message.clone(),
                path: e.path.clone(),
            })
            .collect(),
    }
}

#[derive(Debug, Clone)]
pub struct Manifest {
    /// Source type (`org.osbuild.curl`) to its items (checksum to description).
    pub sources: BTreeMap<String, BTreeMap<String, Value>>,
    pub pipelines: Vec<Pipeline>,
}

#[derive(Debug, Clone)]
pub struct Pipeline {
    pub name: String,
    /// The id of the last stage; `None` for an empty pipeline.
    pub id: Option<String>,
    /// Name of the pipeline whose tree is the build root; `None`: the host.
    pub build: Option<String>,
    pub source_epoch: Option<u64>,
    pub stages: Vec<Stage>,
}

#[derive(Debug, Clone)]
pub struct Stage {
    pub kind: String,
    pub id: String,
    pub options: Value,
    pub inputs: BTreeMap<String, Input>,
    pub devices: BTreeMap<String, Device>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    Source,
    Pipeline,
}

#[derive(Debug, Clone)]
pub struct Input {
    pub kind: String,
    pub origin: Origin,
    /// Reference (a checksum, or `name:PIPELINE`) and its options.
    pub references: Vec<(String, Value)>,
}

#[derive(Debug, Clone)]
pub struct Device {
    pub parent: Option<String>,
    pub options: Value,
}

/// Input and device types the executor knows.
const INPUT_TYPES: &[&str] = &["org.osbuild.files", "org.osbuild.tree"];
const DEVICE_TYPES: &[&str] = &["org.osbuild.loopback"];
pub const SOURCE_TYPES: &[&str] = &["org.osbuild.curl", "org.osbuild.inline"];

struct Parser {
    errors: Vec<ValidationError>,
}

fn key(k: &str) -> Value {
    Value::String(k.to_owned())
}

impl Parser {
    fn fail(&mut self, path: &[Value], message: impl Into<String>) {
        self.errors.push(ValidationError::new(path, message));
    }

    fn object<'v>(
        &mut self,
        v: &'v Value,
        path: &[Value],
        allowed: &[&str],
    ) -> Option<&'v serde_json::Map<String, Value>> {
        let Some(map) = v.as_object() else {
            self.fail(path, format!("{v} is not of type 'object'"));
            return None;
        };
        for k in map.keys() {
            if !allowed.contains(&k.as_str()) {
                self.fail(
                    path,
                    format!("Additional properties are not allowed ('{k}' was unexpected)"),
                );
            }
        }
        Some(map)
    }

    fn string(
        &mut self,
        v: Option<&Value>,
        path: &[Value],
        field: &str,
        required: bool,
    ) -> Option<String> {
        match v {
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                let mut p = path.to_vec();
                p.push(key(field));
                self.fail(&p, format!("{other} is not of type 'string'"));
                None
            }
            None => {
                if required {
                    self.fail(path, format!("'{field}' is a required property"));
                }
                None
            }
        }
    }
}

/// Parses and validates a manifest. Errors carry the JSON path they are at.
pub fn parse(doc: &Value) -> Result<Manifest, Vec<ValidationError>> {
    let mut p = Parser { errors: Vec::new() };
    let root = p.object(doc, &[], &["version", "pipelines", "sources", "metadata"]);
    let Some(root) = root else {
        return Err(p.errors);
    };
    if root.get("version").and_then(Value::as_str) != Some("2") {
        p.fail(
            &[key("version")],
            "'2' was expected: only manifest version 2 is supported",
        );
    }
    let sources = parse_sources(&mut p, root.get("sources"));
    let mut pipelines = Vec::new();
    match root.get("pipelines") {
        Some(Value::Array(list)) => {
            for (i, pl) in list.iter().enumerate() {
                let path = [key("pipelines"), json!(i)];
                if let Some(pl) = parse_pipeline(&mut p, pl, &path, &pipelines) {
                    pipelines.push(pl);
                }
            }
        }
        Some(other) => p.fail(
            &[key("pipelines")],
            format!("{other} is not of type 'array'"),
        ),
        None => p.fail(&[], "'pipelines' is a required property"),
    }
    check_references(&mut p, &sources, &pipelines);
    if !p.errors.is_empty() {
        return Err(p.errors);
    }
    // Stage ids: computed over the same document osbuild would hash.
    match kiln_manifests::ids(doc) {
        Ok(ids) => {
            for (pl, pids) in pipelines.iter_mut().zip(ids.pipelines) {
                pl.id = pids.id;
                for (stage, id) in pl.stages.iter_mut().zip(pids.stages) {
                    stage.id = id;
                }
            }
        }
        Err(e) => p.fail(&[], e.to_string()),
    }
    if p.errors.is_empty() {
        Ok(Manifest { sources, pipelines })
    } else {
        Err(p.errors)
    }
}

fn parse_sources(p: &mut Parser, v: Option<&Value>) -> BTreeMap<String, BTreeMap<String, Value>> {
    let mut out = BTreeMap::new();
    let Some(v) = v else { return out };
    let Some(map) = v.as_object() else {
        p.fail(&[key("sources")], format!("{v} is not of type 'object'"));
        return out;
    };
    for (name, desc) in map {
        let path = [key("sources"), key(name)];
        if !SOURCE_TYPES.contains(&name.as_str()) {
            p.fail(
                &path,
                format!(
                    "unknown source type {name:?}; kiln-osbuild knows {}",
                    SOURCE_TYPES.join(", ")
                ),
            );
            continue;
        }
        let Some(d) = p.object(desc, &path, &["items", "options"]) else {
            continue;
        };
        let mut items = BTreeMap::new();
        match d.get("items").and_then(Value::as_object) {
            Some(list) => {
                for (checksum, item) in list {
                    let ipath = [key("sources"), key(name), key("items"), key(checksum)];
                    if crate::sources::Checksum::parse(checksum).is_none() {
                        p.fail(&ipath, format!("{checksum:?} is not a checksum of the form sha256:<hex> (sha1, sha384 and sha512 too)"));
                        continue;
                    }
                    if let Err(msg) = crate::sources::check_item(name, item) {
                        p.fail(&ipath, msg);
                        continue;
                    }
                    items.insert(checksum.clone(), item.clone());
                }
            }
            None => p.fail(
                &path,
                "'items' is a required property and must be an object",
            ),
        }
        out.insert(name.clone(), items);
    }
    out
}

fn parse_pipeline(
    p: &mut Parser,
    v: &Value,
    path: &[Value],
    earlier: &[Pipeline],
) -> Option<Pipeline> {
    let map = p.object(
        v,
        path,
        &["name", "build", "runner", "source-epoch", "stages"],
    )?;
    let name = p.string(map.get("name"), path, "name", true)?;
    if earlier.iter().any(|e| e.name == name) {
        let mut np = path.to_vec();
        np.push(key("name"));
        p.fail(&np, format!("pipeline {name:?} is defined twice"));
    }
    let build = match p.string(map.get("build"), path, "build", false) {
        Some(b) => {
            let target = b.strip_prefix("name:").unwrap_or(&b).to_owned();
            if !earlier.iter().any(|e| e.name == target) {
                let mut bp = path.to_vec();
                bp.push(key("build"));
                p.fail(
                    &bp,
                    format!("build pipeline {b:?} is not defined before this pipeline"),
                );
            }
            Some(target)
        }
        None => None,
    };
    p.string(map.get("runner"), path, "runner", false);
    let source_epoch = match map.get("source-epoch") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(e) => Some(e),
            None => {
                let mut sp = path.to_vec();
                sp.push(key("source-epoch"));
                p.fail(&sp, format!("{v} is not a non-negative integer"));
                None
            }
        },
    };
    let mut stages = Vec::new();
    match map.get("stages") {
        None => {}
        Some(Value::Array(list)) => {
            for (i, s) in list.iter().enumerate() {
                let mut sp = path.to_vec();
                sp.extend([key("stages"), json!(i)]);
                if let Some(stage) = parse_stage(p, s, &sp) {
                    stages.push(stage);
                }
            }
        }
        Some(other) => {
            let mut sp = path.to_vec();
            sp.push(key("stages"));
            p.fail(&sp, format!("{other} is not of type 'array'"));
        }
    }
    Some(Pipeline {
        name,
        id: None,
        build,
        source_epoch,
        stages,
    })
}

fn parse_stage(p: &mut Parser, v: &Value, path: &[Value]) -> Option<Stage> {
    let map = p.object(v, path, &["type", "options", "inputs", "devices", "mounts"])?;
    let kind = p.string(map.get("type"), path, "type", true)?;
    let options = map.get("options").cloned().unwrap_or_else(|| json!({}));
    let mut opath = path.to_vec();
    opath.push(key("options"));
    match stages::lookup(&kind) {
        None => {
            let mut tp = path.to_vec();
            tp.push(key("type"));
            p.fail(
                &tp,
                format!("unknown stage {kind:?}: kiln-osbuild has no such stage"),
            );
        }
        Some(stage) => {
            for (rel, msg) in stage.check(&options) {
                let mut ep = opath.clone();
                ep.extend(rel);
                p.fail(&ep, msg);
            }
        }
    }
    let mut inputs = BTreeMap::new();
    if let Some(v) = map.get("inputs") {
        let mut ip = path.to_vec();
        ip.push(key("inputs"));
        if let Some(list) = v.as_object() {
            for (name, desc) in list {
                let mut np = ip.clone();
                np.push(key(name));
                if let Some(input) = parse_input(p, desc, &np) {
                    inputs.insert(name.clone(), input);
                }
            }
        } else {
            p.fail(&ip, format!("{v} is not of type 'object'"));
        }
    }
    let mut devices = BTreeMap::new();
    if let Some(v) = map.get("devices") {
        let mut dp = path.to_vec();
        dp.push(key("devices"));
        if let Some(list) = v.as_object() {
            for (name, desc) in list {
                let mut np = dp.clone();
                np.push(key(name));
                let Some(d) = p.object(desc, &np, &["type", "parent", "options"]) else {
                    continue;
                };
                let Some(kind) = p.string(d.get("type"), &np, "type", true) else {
                    continue;
                };
                if !DEVICE_TYPES.contains(&kind.as_str()) {
                    p.fail(&np, format!("unknown device type {kind:?}"));
                    continue;
                }
                let parent = p.string(d.get("parent"), &np, "parent", false);
                let options = d.get("options").cloned().unwrap_or_else(|| json!({}));
                if options.get("filename").and_then(Value::as_str).is_none() {
                    let mut fp = np.clone();
                    fp.push(key("options"));
                    p.fail(&fp, "'filename' is a required property");
                }
                devices.insert(name.clone(), Device { parent, options });
            }
        } else {
            p.fail(&dp, format!("{v} is not of type 'object'"));
        }
    }
    // osbuild mounts a device's file system to fill it; that takes a loop
    // device and a kernel mount, which need privileges on the host that
    // no kiln build has. A file system is made from a tree instead.
    if let Some(v) = map.get("mounts") {
        if v.as_array().is_none_or(|l| !l.is_empty()) {
            let mut mp = path.to_vec();
            mp.push(key("mounts"));
            p.fail(
                &mp,
                "mounts are not supported: a build without privileges has no loop devices \
                 or kernel mounts; make the file system from a tree (kiln.mkfs.ext4 takes a \
                 tree input)",
            );
        }
    }
    for (name, d) in &devices {
        if let Some(parent) = &d.parent {
            if !devices.contains_key(parent) {
                let mut dp = path.to_vec();
                dp.extend([key("devices"), key(name), key("parent")]);
                p.fail(
                    &dp,
                    format!("parent device {parent:?} is not a device of this stage"),
                );
            }
        }
    }
    Some(Stage {
        kind,
        id: String::new(),
        options,
        inputs,
        devices,
    })
}

fn parse_input(p: &mut Parser, v: &Value, path: &[Value]) -> Option<Input> {
    let map = p.object(v, path, &["type", "origin", "references", "options"])?;
    let kind = p.string(map.get("type"), path, "type", true)?;
    if !INPUT_TYPES.contains(&kind.as_str()) {
        let mut tp = path.to_vec();
        tp.push(key("type"));
        p.fail(
            &tp,
            format!(
                "unknown input type {kind:?}; kiln-osbuild knows {}",
                INPUT_TYPES.join(", ")
            ),
        );
        return None;
    }
    let origin = match p.string(map.get("origin"), path, "origin", true)?.as_str() {
        "org.osbuild.source" => Origin::Source,
        "org.osbuild.pipeline" => Origin::Pipeline,
        other => {
            let mut op = path.to_vec();
            op.push(key("origin"));
            p.fail(
                &op,
                format!("{other:?} is not one of ['org.osbuild.source', 'org.osbuild.pipeline']"),
            );
            return None;
        }
    };
    let mut rp = path.to_vec();
    rp.push(key("references"));
    let references: Vec<(String, Value)> = match map.get("references") {
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(|r| match r {
                Value::String(s) => Some((s.clone(), json!({}))),
                Value::Object(o) => o.get("id").and_then(Value::as_str).map(|id| {
                    (
                        id.to_owned(),
                        o.get("options").cloned().unwrap_or_else(|| json!({})),
                    )
                }),
                _ => None,
            })
            .collect(),
        Some(Value::Object(o)) => o.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        _ => {
            p.fail(&rp, "'references' must be a list or an object");
            return None;
        }
    };
    if kind == "org.osbuild.tree" && (origin != Origin::Pipeline || references.len() != 1) {
        p.fail(
            &rp,
            "an org.osbuild.tree input takes exactly one pipeline reference",
        );
    }
    Some(Input {
        kind,
        origin,
        references,
    })
}

/// Every source reference names an item of a source; every pipeline
/// reference names an earlier pipeline.
fn check_references(
    p: &mut Parser,
    sources: &BTreeMap<String, BTreeMap<String, Value>>,
    pipelines: &[Pipeline],
) {
    for (pi, pl) in pipelines.iter().enumerate() {
        for (si, stage) in pl.stages.iter().enumerate() {
            for (name, input) in &stage.inputs {
                let path = [
                    key("pipelines"),
                    json!(pi),
                    key("stages"),
                    json!(si),
                    key("inputs"),
                    key(name),
                    key("references"),
                ];
                for (r, _) in &input.references {
                    let ok = match input.origin {
                        Origin::Source => sources.values().any(|items| items.contains_key(r)),
                        Origin::Pipeline => {
                            let target = r.strip_prefix("name:").unwrap_or(r);
                            pipelines[..pi].iter().any(|e| e.name == target)
                        }
                    };
                    if !ok {
                        p.fail(
                            &path,
                            format!("reference {r:?} names no source item or earlier pipeline"),
                        );
                    }
                }
            }
        }
    }
}
