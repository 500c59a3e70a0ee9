//! Checks requests and answers against a Swagger 2.0 document: the path and
//! method must exist, query and path parameters must be declared (and be
//! integers where the document says so), and JSON bodies must validate
//! against the referenced definitions.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

/// One loaded swagger document, served under `served_prefix` (SMD's paths are
/// relative to `/hsm/v2`, BSS's already start with `/boot/v1`).
pub struct Swagger {
    name: String,
    served_prefix: String,
    definitions: Value,
    operations: Vec<Operation>,
    compiled: Mutex<HashMap<String, Arc<jsonschema::Validator>>>,
}

struct Operation {
    method: String,
    template: Vec<String>,
    params: Vec<Value>,
    responses: serde_json::Map<String, Value>,
}

impl Operation {
    fn params_in<'a>(&'a self, place: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.params.iter().filter(move |p| p["in"] == place)
    }
}

/// What matched a request: its operation's index and the path parameters.
pub struct Matched {
    op: usize,
}

impl Swagger {
    pub fn load(path: &Path, served_prefix: &str) -> Result<Swagger, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading the swagger document {}: {e}", path.display()))?;
        let doc: Value = serde_yaml::from_str(&text)
            .map_err(|e| format!("parsing the swagger document {}: {e}", path.display()))?;
        let shared_params = doc["parameters"].clone();
        let resolve = |p: &Value| -> Value {
            match p["$ref"]
                .as_str()
                .and_then(|r| r.strip_prefix("#/parameters/"))
            {
                Some(name) => shared_params[name].clone(),
                None => p.clone(),
            }
        };
        let mut operations = Vec::new();
        let paths = doc["paths"]
            .as_object()
            .ok_or_else(|| format!("{} has no paths", path.display()))?;
        for (template, item) in paths {
            let Some(item) = item.as_object() else {
                continue;
            };
            let common: Vec<Value> = item
                .get("parameters")
                .and_then(Value::as_array)
                .map(|a| a.iter().map(resolve).collect())
                .unwrap_or_default();
            for (method, op) in item {
                if !["get", "put", "post", "patch", "delete", "head", "options"]
                    .contains(&method.as_str())
                {
                    continue;
                }
                let mut params = common.clone();
                if let Some(own) = op["parameters"].as_array() {
                    params.extend(own.iter().map(resolve));
                }
                operations.push(Operation {
                    method: method.to_ascii_uppercase(),
                    template: segments(template),
                    params,
                    responses: op["responses"].as_object().cloned().unwrap_or_default(),
                });
            }
        }
        Ok(Swagger {
            name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            served_prefix: served_prefix.trim_end_matches('/').to_owned(),
            definitions: doc["definitions"].clone(),
            operations,
            compiled: Mutex::new(HashMap::new()),
        })
    }

    /// Checks a request; returns the operation it matched, or what is wrong.
    pub fn check_request(
        &self,
        method: &str,
        path: &str,
        query: &[(String, String)],
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<Matched, Vec<String>> {
        let what = format!("{method} {path}");
        let Some(rel) = path.strip_prefix(&self.served_prefix) else {
            return Err(vec![format!(
                "{what}: not under {} where {} is served",
                self.served_prefix, self.name
            )]);
        };
        let rel = segments(rel);
        let mut on_path: Vec<usize> = (0..self.operations.len())
            .filter(|&i| matches(&self.operations[i].template, &rel))
            .collect();
        // `/State/Components/Query` before `/State/Components/{xname}`.
        on_path.sort_by_key(|&i| {
            let t = &self.operations[i].template;
            std::cmp::Reverse(t.iter().filter(|s| !s.starts_with('{')).count())
        });
        if on_path.is_empty() {
            return Err(vec![format!("{what}: no such path in {}", self.name)]);
        }
        let Some(&i) = on_path
            .iter()
            .find(|&&i| self.operations[i].method == method)
        else {
            return Err(vec![format!(
                "{what}: {} has this path but not the method {method}",
                self.name
            )]);
        };
        let op = &self.operations[i];
        let mut errors = Vec::new();

        for (k, v) in query {
            match op.params_in("query").find(|p| p["name"] == k.as_str()) {
                None => errors.push(format!("{what}: query parameter {k:?} is not declared")),
                Some(p) => check_scalar(&what, "query parameter", k, v, p, &mut errors),
            }
        }
        for (t, actual) in op.template.iter().zip(&rel) {
            if let Some(name) = t.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
                if let Some(p) = op.params_in("path").find(|p| p["name"] == name) {
                    check_scalar(&what, "path parameter", name, actual, p, &mut errors);
                }
            }
        }

        match op.params_in("body").next() {
            None if !body.is_empty() => errors.push(format!(
                "{what}: a body is sent but the operation takes none"
            )),
            None => {}
            Some(p) if body.is_empty() && p["required"] == true => {
                errors.push(format!("{what}: the required body is missing"))
            }
            Some(_) if body.is_empty() => {}
            Some(p) => {
                if !content_type.is_some_and(|c| c.starts_with("application/json")) {
                    errors.push(format!(
                        "{what}: body sent as {content_type:?}, the API consumes application/json"
                    ));
                }
                match serde_json::from_slice::<Value>(body) {
                    Err(e) => errors.push(format!("{what}: the body is not JSON: {e}")),
                    Ok(v) => errors.extend(
                        self.validate(&p["schema"], &v)
                            .into_iter()
                            .map(|e| format!("{what}: body: {e}")),
                    ),
                }
            }
        }
        if errors.is_empty() {
            Ok(Matched { op: i })
        } else {
            Err(errors)
        }
    }

    /// Checks an answer to a matched request: the status must be declared
    /// (or a `default` exist) and a JSON body must match its schema.
    pub fn check_response(&self, m: &Matched, status: u16, body: Option<&Value>) -> Vec<String> {
        let op = &self.operations[m.op];
        let what = format!("answer {status} to {}", op.method);
        let Some(declared) = op
            .responses
            .get(&status.to_string())
            .or_else(|| op.responses.get("default"))
        else {
            return vec![format!("{what}: status not declared in {}", self.name)];
        };
        match (declared.get("schema"), body) {
            (Some(schema), Some(b)) => self
                .validate(schema, b)
                .into_iter()
                .map(|e| format!("{what}: {e}"))
                .collect(),
            (Some(_), None) => vec![format!("{what}: the declared body is missing")],
            _ => Vec::new(),
        }
    }

    /// Validates `instance` against a schema that may `$ref` the definitions.
    pub fn validate(&self, schema: &Value, instance: &Value) -> Vec<String> {
        let key = schema.to_string();
        let validator = {
            let mut cache = self.compiled.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(v) = cache.get(&key) {
                v.clone()
            } else {
                let doc = json!({ "definitions": self.definitions, "allOf": [schema] });
                match jsonschema::draft4::new(&doc) {
                    Ok(v) => {
                        let v = Arc::new(v);
                        cache.insert(key, v.clone());
                        v
                    }
                    Err(e) => return vec![format!("the schema {schema} does not compile: {e}")],
                }
            }
        };
        validator
            .iter_errors(instance)
            .map(|e| format!("{e} at {:?}", e.instance_path().to_string()))
            .collect()
    }
}

fn segments(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn matches(template: &[String], path: &[String]) -> bool {
    template.len() == path.len()
        && template
            .iter()
            .zip(path)
            .all(|(t, p)| (t.starts_with('{') && t.ends_with('}')) || t == p)
}

fn check_scalar(
    what: &str,
    kind: &str,
    name: &str,
    value: &str,
    p: &Value,
    errors: &mut Vec<String>,
) {
    let ok = match p["type"].as_str() {
        Some("integer") => value.parse::<i64>().is_ok(),
        Some("number") => value.parse::<f64>().is_ok(),
        Some("boolean") => value == "true" || value == "false",
        _ => true,
    };
    if !ok {
        errors.push(format!(
            "{what}: {kind} {name}={value:?} is not of type {}",
            p["type"]
        ));
    }
    if let Some(allowed) = p["enum"].as_array() {
        if !allowed.iter().any(|a| a == value) {
            errors.push(format!(
                "{what}: {kind} {name}={value:?} is not one of {p}",
                p = p["enum"]
            ));
        }
    }
}
