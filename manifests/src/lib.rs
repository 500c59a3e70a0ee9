//! osbuild v2 manifests for kiln.
//!
//! A kiln manifest means the same to kiln's executor and to real osbuild, and
//! its stage ids (the store's cache keys) are the ones osbuild computes. An
//! id is the SHA-256 of Python `json.dumps` text ([`pyjson`]) of, in order:
//! the stage type, the build pipeline's id, the previous stage's id, the
//! options (keys sorted), then the pipeline's source epoch, the map of input
//! names to input ids and the list of mount ids, each only when present.
//! Inputs, devices and mounts have ids of their own, built the same way.
//! A pipeline's id is the id of its last stage; `name:X` references resolve
//! to pipeline X's id, and only pipelines defined earlier can be referenced.

use std::collections::HashMap;

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

pub mod customize;
pub mod generate;
pub mod packages;
pub mod pyjson;

/// A manifest problem, with the JSON path of the part at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ManifestError {
    pub path: String,
    pub message: String,
}

fn err(path: &str, message: impl Into<String>) -> ManifestError {
    ManifestError {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// SHA-256 over the `json.dumps` texts of `parts`, one after another.
fn digest(parts: &[(&Value, bool)]) -> String {
    let mut h = Sha256::new();
    for (v, sort) in parts {
        h.update(pyjson::dumps(v, *sort).as_bytes());
    }
    hex::encode(h.finalize())
}

/// Resolves a `name:` pipeline reference found at a path to that pipeline's
/// id (`None` for a pipeline without stages).
type Resolve<'a> = dyn Fn(&str, &str) -> Result<Option<String>, ManifestError> + 'a;

fn opt_str(v: &Option<String>) -> Value {
    v.as_ref()
        .map(|s| Value::String(s.clone()))
        .unwrap_or(Value::Null)
}

/// Options as osbuild reads them: absent or null means `{}`.
fn options_of(desc: &Value) -> Value {
    match desc.get("options") {
        None | Some(Value::Null) => json!({}),
        Some(v) => v.clone(),
    }
}

fn type_of(desc: &Value, path: &str) -> Result<String, ManifestError> {
    desc.get("type")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| err(path, "missing \"type\""))
}

/// The ids of a v2 manifest: per pipeline, its id and its stages' ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestIds {
    pub pipelines: Vec<PipelineIds>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineIds {
    pub name: String,
    /// `None` for a pipeline without stages.
    pub id: Option<String>,
    pub build: Option<String>,
    pub stages: Vec<String>,
}

/// Computes every stage id of a v2 manifest as osbuild does.
pub fn ids(manifest: &Value) -> Result<ManifestIds, ManifestError> {
    if manifest.get("version").and_then(Value::as_str) != Some("2") {
        return Err(err("version", "only manifest version \"2\" is supported"));
    }
    let pipelines = manifest
        .get("pipelines")
        .and_then(Value::as_array)
        .ok_or_else(|| err("pipelines", "missing or not a list"))?;
    let mut by_name: HashMap<String, Option<String>> = HashMap::new();
    let mut out = Vec::new();
    for (pi, p) in pipelines.iter().enumerate() {
        let ppath = format!("pipelines[{pi}]");
        let name = p
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| err(&ppath, "missing \"name\""))?
            .to_owned();
        if by_name.contains_key(&name) {
            return Err(err(
                &format!("{ppath}.name"),
                format!("pipeline {name:?} is defined twice"),
            ));
        }
        let resolve = |r: &str, path: &str| -> Result<Option<String>, ManifestError> {
            let target = r.strip_prefix("name:").unwrap_or(r);
            by_name
                .get(target)
                .cloned()
                .ok_or_else(|| err(path, format!("unknown pipeline reference {r:?} (only earlier pipelines can be referenced)")))
        };
        let build = match p.get("build").and_then(Value::as_str) {
            Some(b) if b.starts_with("name:") => resolve(b, &format!("{ppath}.build"))?,
            Some(b) => Some(b.to_owned()),
            None => None,
        };
        let source_epoch = p.get("source-epoch").filter(|v| !v.is_null()).cloned();
        let mut base: Option<String> = None;
        let mut stage_ids = Vec::new();
        for (si, stage) in p
            .get("stages")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let spath = format!("{ppath}.stages[{si}]");
            let id = stage_id(
                stage,
                &spath,
                &build,
                &base,
                source_epoch.as_ref(),
                &resolve,
            )?;
            base = Some(id.clone());
            stage_ids.push(id);
        }
        by_name.insert(name.clone(), base.clone());
        out.push(PipelineIds {
            name,
            id: base,
            build,
            stages: stage_ids,
        });
    }
    Ok(ManifestIds { pipelines: out })
}

fn stage_id(
    stage: &Value,
    path: &str,
    build: &Option<String>,
    base: &Option<String>,
    source_epoch: Option<&Value>,
    resolve: &Resolve,
) -> Result<String, ManifestError> {
    let stype = Value::String(type_of(stage, path)?);
    let options = options_of(stage);
    let devices = device_ids(stage, path)?;

    let mut inputs = Map::new();
    if let Some(ips) = stage.get("inputs").and_then(Value::as_object) {
        for (name, desc) in ips {
            let ipath = format!("{path}.inputs.{name}");
            inputs.insert(
                name.clone(),
                Value::String(input_id(desc, &ipath, resolve)?),
            );
        }
    }

    let mut mounts = Vec::new();
    for (mi, m) in stage
        .get("mounts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let mpath = format!("{path}.mounts[{mi}]");
        let mut parts = vec![Value::String(type_of(m, &mpath)?)];
        if let Some(src) = m.get("source").and_then(Value::as_str) {
            let dev = devices.get(src).ok_or_else(|| {
                err(
                    &format!("{mpath}.source"),
                    format!("unknown device {src:?}"),
                )
            })?;
            parts.push(Value::String(dev.clone()));
        }
        for key in ["partition", "target"] {
            // Python skips falsy values: absent, null, 0 and "".
            match m.get(key) {
                None | Some(Value::Null) => {}
                Some(Value::Number(n)) if n.as_f64() == Some(0.0) => {}
                Some(Value::String(s)) if s.is_empty() => {}
                Some(v) => parts.push(v.clone()),
            }
        }
        parts.push(options_of(m));
        let refs: Vec<(&Value, bool)> = parts.iter().map(|v| (v, true)).collect();
        mounts.push(Value::String(digest(&refs)));
    }

    let build = opt_str(build);
    let base = opt_str(base);
    let mut parts: Vec<(&Value, bool)> = vec![
        (&stype, true),
        (&build, true),
        (&base, true),
        (&options, true),
    ];
    if let Some(e) = source_epoch {
        parts.push((e, true));
    }
    let inputs = Value::Object(inputs);
    if inputs.as_object().is_some_and(|m| !m.is_empty()) {
        parts.push((&inputs, true));
    }
    let mounts = Value::Array(mounts);
    if mounts.as_array().is_some_and(|m| !m.is_empty()) {
        parts.push((&mounts, false));
    }
    Ok(digest(&parts))
}

/// Device ids by device name; parents are resolved before their children.
fn device_ids(stage: &Value, path: &str) -> Result<HashMap<String, String>, ManifestError> {
    let mut ids = HashMap::new();
    let Some(devs) = stage.get("devices").and_then(Value::as_object) else {
        return Ok(ids);
    };
    let mut todo: Vec<(&String, &Value)> = devs.iter().collect();
    while !todo.is_empty() {
        let before = todo.len();
        let mut rest = Vec::new();
        for (name, desc) in todo {
            let dpath = format!("{path}.devices.{name}");
            let parent = desc.get("parent").and_then(Value::as_str);
            let parent_id = match parent {
                Some(p) => match ids.get(p) {
                    Some(id) => Some(Value::String(String::clone(id))),
                    None if devs.contains_key(p) => {
                        rest.push((name, desc));
                        continue;
                    }
                    None => {
                        return Err(err(
                            &format!("{dpath}.parent"),
                            format!("unknown parent device {p:?}"),
                        ))
                    }
                },
                None => None,
            };
            let dtype = Value::String(type_of(desc, &dpath)?);
            let options = options_of(desc);
            let mut parts = vec![(&dtype, true)];
            if let Some(p) = &parent_id {
                parts.push((p, true));
            }
            parts.push((&options, true));
            ids.insert(name.clone(), digest(&parts));
        }
        if rest.len() == before {
            return Err(err(
                &format!("{path}.devices"),
                "devices form a cycle through their parents",
            ));
        }
        todo = rest;
    }
    Ok(ids)
}

fn input_id(desc: &Value, path: &str, resolve: &Resolve) -> Result<String, ManifestError> {
    let itype = Value::String(type_of(desc, path)?);
    let origin = desc
        .get("origin")
        .and_then(Value::as_str)
        .ok_or_else(|| err(path, "missing \"origin\""))?;
    let mut refs = Map::new();
    match desc.get("references") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => refs = m.clone(),
        Some(Value::Array(list)) => {
            for (i, r) in list.iter().enumerate() {
                match r {
                    Value::String(s) => {
                        refs.insert(s.clone(), json!({}));
                    }
                    Value::Object(o) => {
                        let id = o.get("id").and_then(Value::as_str).ok_or_else(|| {
                            err(
                                &format!("{path}.references[{i}]"),
                                "reference without \"id\"",
                            )
                        })?;
                        refs.insert(
                            id.to_owned(),
                            o.get("options").cloned().unwrap_or_else(|| json!({})),
                        );
                    }
                    _ => {
                        return Err(err(
                            &format!("{path}.references[{i}]"),
                            "a reference is a string or an object",
                        ))
                    }
                }
            }
        }
        Some(_) => {
            return Err(err(
                &format!("{path}.references"),
                "must be an object or a list",
            ))
        }
    }
    if origin == "org.osbuild.pipeline" {
        let mut resolved = Map::new();
        for (r, opts) in refs {
            if !r.starts_with("name:") {
                continue;
            }
            let id = resolve(&r, &format!("{path}.references"))?.ok_or_else(|| {
                err(
                    &format!("{path}.references"),
                    format!("{r} has no stages, so no tree to reference"),
                )
            })?;
            resolved.insert(id, opts);
        }
        refs = resolved;
    }
    let origin = Value::String(origin.to_owned());
    let refs = Value::Object(refs);
    let options = options_of(desc);
    Ok(digest(&[
        (&itype, true),
        (&origin, true),
        (&refs, true),
        (&options, true),
    ]))
}

/// The manifest as `osbuild --inspect` shows it: every stage with its `id`,
/// and pipeline references (`build`, pipeline inputs) replaced by ids.
pub fn inspect(manifest: &Value) -> Result<Value, ManifestError> {
    let ids = ids(manifest)?;
    let by_name: HashMap<&str, &Option<String>> = ids
        .pipelines
        .iter()
        .map(|p| (p.name.as_str(), &p.id))
        .collect();
    let mut out = manifest.clone();
    if let Some(pipelines) = out.get_mut("pipelines").and_then(Value::as_array_mut) {
        for (p, pid) in pipelines.iter_mut().zip(&ids.pipelines) {
            if let Some(b) = &pid.build {
                p["build"] = Value::String(b.clone());
            }
            for (stage, sid) in p
                .get_mut("stages")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
                .zip(&pid.stages)
            {
                if let Some(obj) = stage.as_object_mut() {
                    obj.insert("id".into(), Value::String(sid.clone()));
                }
                for ip in stage
                    .get_mut("inputs")
                    .and_then(Value::as_object_mut)
                    .into_iter()
                    .flat_map(|m| m.values_mut())
                {
                    if ip.get("origin").and_then(Value::as_str) != Some("org.osbuild.pipeline") {
                        continue;
                    }
                    let rename = |r: &str| {
                        r.strip_prefix("name:")
                            .and_then(|n| by_name.get(n).and_then(|id| (*id).clone()))
                            .unwrap_or_else(|| r.to_owned())
                    };
                    match ip.get_mut("references") {
                        Some(Value::Object(m)) => {
                            let renamed: Map<String, Value> = std::mem::take(m)
                                .into_iter()
                                .map(|(k, v)| (rename(&k), v))
                                .collect();
                            *m = renamed;
                        }
                        Some(Value::Array(list)) => {
                            for r in list.iter_mut() {
                                match r {
                                    Value::String(s) => *s = rename(s),
                                    Value::Object(o) => {
                                        if let Some(Value::String(s)) = o.get_mut("id") {
                                            *s = rename(s);
                                        }
                                    }
                                    _ => {}
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    Ok(out)
}
