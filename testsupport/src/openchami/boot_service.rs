//! `BootServiceTestDouble`: OpenCHAMI boot-service (v0.3.2) as its source
//! answers, per `../shared/reference/openchami/boot-service-api.md`: the
//! BootConfiguration resources under `/bootconfigurations` (list, create,
//! read, replace, delete), Node resources under `/nodes` (given at start,
//! as an SMD sync would make them) and `/bootscript`, the iPXE script a node
//! gets, chosen by the service's scoring. The service publishes no OpenAPI
//! file, so the double enforces the reference's rules itself: `kernel`
//! required (an http(s) URL or an absolute path), `initrd` likewise,
//! `priority` 0..100, `hosts` xnames (or `default` and the trailing-`*`
//! forms), MACs well formed; PUT replaces the whole spec; no uniqueness on
//! `metadata.name`; errors `{"error", "code"}`. A request that breaks a rule
//! is answered 400 and recorded as a violation, which fails the test unless
//! taken with [`BootServiceTestDouble::take_violations`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use super::bss::is_node_xname;
use super::{lock, Node};

/// A node as boot-service's Node resource knows it.
#[derive(Debug, Clone)]
pub struct BootServiceNode {
    pub node: Node,
    pub groups: Vec<String>,
}

impl BootServiceNode {
    /// `nodes`, each in the groups `groups_of` gives it.
    pub fn all(nodes: &[Node], groups_of: impl Fn(&Node) -> Vec<String>) -> Vec<BootServiceNode> {
        nodes
            .iter()
            .map(|node| BootServiceNode {
                groups: groups_of(node),
                node: node.clone(),
            })
            .collect()
    }
}

struct State_ {
    nodes: Vec<BootServiceNode>,
    /// uid -> resource, in creation order of uids.
    configs: Mutex<BTreeMap<String, Value>>,
    next: AtomicI64,
    requests: Mutex<Vec<String>>,
    violations: Mutex<Vec<String>>,
    /// Writes left before every write is answered 500 (negative: never).
    writes_left: AtomicI64,
}

type Shared = Arc<State_>;

pub struct BootServiceTestDouble {
    url: String,
    state: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl BootServiceTestDouble {
    pub async fn start(nodes: &[BootServiceNode]) -> Result<BootServiceTestDouble, String> {
        let state = Arc::new(State_ {
            nodes: nodes.to_vec(),
            configs: Mutex::new(BTreeMap::new()),
            next: AtomicI64::new(1),
            requests: Mutex::new(Vec::new()),
            violations: Mutex::new(Vec::new()),
            writes_left: AtomicI64::new(-1),
        });
        let app = Router::new()
            .route("/health", get(health))
            .route("/bootconfigurations", get(list).post(create))
            .route(
                "/bootconfigurations/{uid}",
                get(read).put(replace).delete(delete),
            )
            .route("/nodes", get(nodes_list))
            .route("/bootscript", get(bootscript))
            .fallback(fallback)
            .layer(axum::middleware::from_fn_with_state(state.clone(), record))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("binding the boot-service test double: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("reading the boot-service test double's address: {e}"))?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(BootServiceTestDouble {
            url: format!("http://{addr}"),
            state,
            task,
        })
    }

    /// The service's root, e.g. `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Every BootConfiguration, in uid order.
    pub fn configurations(&self) -> Vec<Value> {
        lock(&self.state.configs).values().cloned().collect()
    }

    /// Adds a resource directly, as a site's own tooling would have.
    pub fn insert(&self, name: &str, spec: Value) -> String {
        let uid = new_uid(&self.state);
        lock(&self.state.configs).insert(uid.clone(), resource(&uid, name, spec, Map::new()));
        uid
    }

    /// After `n` more successful writes, answer every POST, PUT and DELETE
    /// with 500 and change nothing (`None`: never).
    pub fn fail_writes_after(&self, n: Option<u32>) {
        self.state
            .writes_left
            .store(n.map_or(-1, i64::from), Ordering::SeqCst);
    }

    /// What `GET /bootscript?host=<xname>` answers: the script a node
    /// would boot, over HTTP as iPXE asks for it.
    pub async fn boot_script(&self, host: &str) -> BootScript {
        let url = format!("{}/bootscript", self.url);
        let resp = reqwest::Client::new()
            .get(&url)
            .query(&[("host", host)])
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}?host={host}: {e}"));
        assert_eq!(resp.status(), 200, "GET {url}?host={host}");
        let text = resp
            .text()
            .await
            .unwrap_or_else(|e| panic!("reading the boot script of {host}: {e}"));
        BootScript::parse(&text)
    }

    /// Every request so far, as `METHOD /path?query`.
    pub fn requests(&self) -> Vec<String> {
        lock(&self.state.requests).clone()
    }

    pub fn violations(&self) -> Vec<String> {
        lock(&self.state.violations).clone()
    }

    pub fn take_violations(&self) -> Vec<String> {
        std::mem::take(&mut *lock(&self.state.violations))
    }

    pub fn assert_no_violations(&self) {
        let v = self.violations();
        assert!(
            v.is_empty(),
            "the boot-service test double saw requests that break its rules:\n{}",
            v.join("\n")
        );
    }
}

impl Drop for BootServiceTestDouble {
    fn drop(&mut self) {
        self.task.abort();
        if !std::thread::panicking() {
            self.assert_no_violations();
        }
    }
}

async fn record(
    State(state): State<Shared>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let line = match req.uri().query() {
        Some(q) => format!("{} {}?{q}", req.method(), req.uri().path()),
        None => format!("{} {}", req.method(), req.uri().path()),
    };
    lock(&state.requests).push(line);
    next.run(req).await
}

fn error(state: &State_, status: StatusCode, what: &str, text: String) -> Response {
    if status == StatusCode::BAD_REQUEST {
        lock(&state.violations).push(format!("{what}: {text}"));
    }
    (
        status,
        Json(json!({"error": text, "code": status.as_u16()})),
    )
        .into_response()
}

fn new_uid(state: &State_) -> String {
    let n = state.next.fetch_add(1, Ordering::SeqCst);
    format!("bootconfiguration-{n:08x}")
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn resource(uid: &str, name: &str, spec: Value, labels: Map<String, Value>) -> Value {
    let t = now();
    json!({
        "apiVersion": "boot.openchami.io/v1",
        "kind": "BootConfiguration",
        "metadata": {"name": name, "uid": uid, "labels": labels, "createdAt": t, "updatedAt": t},
        "spec": spec,
        "status": {},
    })
}

fn is_url_or_path(s: &str) -> bool {
    s.starts_with('/')
        || s.strip_prefix("http://")
            .or_else(|| s.strip_prefix("https://"))
            .is_some_and(|rest| !rest.is_empty())
}

/// `hosts` entries the service's validator accepts: an xname, `default`,
/// or a trailing-`*` prefix of one (`x*`, `x1c*`, `x1c0s*`, ...).
fn is_host_pattern(s: &str) -> bool {
    if s == "default" || is_node_xname(s) {
        return true;
    }
    let Some(prefix) = s.strip_suffix('*') else {
        return false;
    };
    // The prefix is some leading letter-number pairs of an xname, then the
    // next letter.
    let letters = ['x', 'c', 's', 'b', 'n'];
    let mut chars = prefix.chars().peekable();
    for (i, letter) in letters.iter().enumerate() {
        if chars.next() != Some(*letter) {
            return false;
        }
        if chars.peek().is_none() {
            return true;
        }
        let mut digits = 0;
        while chars.peek().is_some_and(char::is_ascii_digit) {
            chars.next();
            digits += 1;
        }
        if digits == 0 || i == letters.len() - 1 {
            return false;
        }
    }
    false
}

fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// The spec as the service validates it; the error is its reason.
fn validate(spec: &Value) -> Result<Value, String> {
    let Some(obj) = spec.as_object() else {
        return Err("spec must be an object".into());
    };
    let strings = |key: &str| -> Result<Vec<String>, String> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .ok_or(format!("{key}: strings only"))
                })
                .collect(),
            Some(_) => Err(format!("{key} must be an array")),
        }
    };
    for h in strings("hosts")? {
        if !is_host_pattern(&h) {
            return Err(format!("invalid host {h:?}: not an xname"));
        }
    }
    for m in strings("macs")? {
        if !is_mac(&m) {
            return Err(format!("invalid MAC address {m:?}"));
        }
    }
    strings("groups")?;
    if let Some(n) = obj.get("nids").filter(|v| !v.is_null()) {
        let ok = n.as_array().is_some_and(|a| {
            a.iter()
                .all(|v| v.as_i64().is_some_and(|i| i32::try_from(i).is_ok()))
        });
        if !ok {
            return Err("nids must be an array of int32".into());
        }
    }
    match obj.get("kernel").and_then(Value::as_str) {
        Some(k) if !k.is_empty() => {
            if !is_url_or_path(k) {
                return Err(format!(
                    "kernel {k:?} must be an http(s) URL or an absolute path"
                ));
            }
        }
        _ => return Err("kernel is required".into()),
    }
    if let Some(i) = obj.get("initrd").and_then(Value::as_str) {
        if !i.is_empty() && !is_url_or_path(i) {
            return Err(format!(
                "initrd {i:?} must be an http(s) URL or an absolute path"
            ));
        }
    }
    match obj.get("priority") {
        None | Some(Value::Null) => {}
        Some(p) => match p.as_i64() {
            Some(p) if (0..=100).contains(&p) => {}
            _ => return Err(format!("priority {p} must be between 0 and 100")),
        },
    }
    for key in ["params", "profile"] {
        if obj.get(key).is_some_and(|v| !v.is_null() && !v.is_string()) {
            return Err(format!("{key} must be a string"));
        }
    }
    Ok(spec.clone())
}

/// The injected failure's answer when writes fail now, else `None` (and
/// one write fewer left before they do).
fn refuse_write(state: &State_, what: &str) -> Option<Response> {
    let left = state.writes_left.load(Ordering::SeqCst);
    if left == 0 {
        return Some(error(
            state,
            StatusCode::INTERNAL_SERVER_ERROR,
            what,
            "storage failure (injected)".into(),
        ));
    }
    if left > 0 {
        state.writes_left.fetch_sub(1, Ordering::SeqCst);
    }
    None
}

async fn health() -> Json<Value> {
    Json(json!({"status": "ok", "service": "boot-service"}))
}

async fn list(State(state): State<Shared>) -> Json<Value> {
    Json(Value::Array(
        lock(&state.configs).values().cloned().collect(),
    ))
}

fn body_object(
    state: &State_,
    what: &str,
    body: &Bytes,
) -> Result<Map<String, Value>, Box<Response>> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => Ok(o),
        _ => Err(Box::new(error(
            state,
            StatusCode::BAD_REQUEST,
            what,
            "invalid request body".into(),
        ))),
    }
}

fn labels_of(body: &Map<String, Value>) -> Map<String, Value> {
    let mut labels = Map::new();
    for source in [
        body.get("metadata").and_then(|m| m.get("labels")),
        body.get("labels"),
    ] {
        if let Some(Value::Object(l)) = source {
            labels.extend(l.clone());
        }
    }
    labels
}

async fn create(State(state): State<Shared>, body: Bytes) -> Response {
    let what = "POST /bootconfigurations";
    let body = match body_object(&state, what, &body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let (Some(meta), Some(spec)) = (body.get("metadata"), body.get("spec")) else {
        return error(
            &state,
            StatusCode::BAD_REQUEST,
            what,
            "metadata and spec are required".into(),
        );
    };
    let spec = match validate(spec) {
        Ok(s) => s,
        Err(e) => return error(&state, StatusCode::BAD_REQUEST, what, e),
    };
    if let Some(refused) = refuse_write(&state, what) {
        return refused;
    }
    let name = meta.get("name").and_then(Value::as_str).unwrap_or("");
    let uid = new_uid(&state);
    let r = resource(&uid, name, spec, labels_of(&body));
    lock(&state.configs).insert(uid, r.clone());
    (StatusCode::CREATED, Json(r)).into_response()
}

async fn read(State(state): State<Shared>, Path(uid): Path<String>) -> Response {
    match lock(&state.configs).get(&uid) {
        Some(r) => Json(r.clone()).into_response(),
        None => not_found(&uid),
    }
}

fn not_found(uid: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": format!("BootConfiguration {uid} not found"), "code": 404})),
    )
        .into_response()
}

async fn replace(State(state): State<Shared>, Path(uid): Path<String>, body: Bytes) -> Response {
    let what = "PUT /bootconfigurations/{uid}";
    let body = match body_object(&state, what, &body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let spec = match body.get("spec") {
        // The spec is replaced wholesale: what is left out is cleared.
        Some(s) => match validate(s) {
            Ok(s) => Some(s),
            Err(e) => return error(&state, StatusCode::BAD_REQUEST, what, e),
        },
        None => None,
    };
    if !lock(&state.configs).contains_key(&uid) {
        return not_found(&uid);
    }
    if let Some(refused) = refuse_write(&state, what) {
        return refused;
    }
    let mut configs = lock(&state.configs);
    let Some(r) = configs.get_mut(&uid) else {
        return not_found(&uid);
    };
    if let Some(spec) = spec {
        r["spec"] = spec;
    }
    if let Some(name) = body
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    {
        r["metadata"]["name"] = json!(name);
    }
    let labels = labels_of(&body);
    if let Some(Value::Object(existing)) = r["metadata"].get_mut("labels") {
        existing.extend(labels);
    }
    r["metadata"]["updatedAt"] = json!(now());
    Json(r.clone()).into_response()
}

async fn delete(State(state): State<Shared>, Path(uid): Path<String>) -> Response {
    if !lock(&state.configs).contains_key(&uid) {
        return not_found(&uid);
    }
    if let Some(refused) = refuse_write(&state, "DELETE /bootconfigurations/{uid}") {
        return refused;
    }
    lock(&state.configs).remove(&uid);
    Json(json!({"message": "BootConfiguration deleted", "uid": uid})).into_response()
}

async fn nodes_list(State(state): State<Shared>) -> Json<Value> {
    Json(Value::Array(
        state
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                json!({
                    "apiVersion": "boot.openchami.io/v1",
                    "kind": "Node",
                    "metadata": {"name": n.node.xname, "uid": format!("node-{i:08x}")},
                    "spec": {"xname": n.node.xname, "nid": n.node.nid, "bootMac": n.node.mac, "groups": n.groups},
                    "status": {},
                })
            })
            .collect(),
    ))
}

/// Go html/template's escaping of the script's values.
fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '+' => out.push_str("&#43;"),
            '\'' => out.push_str("&#39;"),
            '"' => out.push_str("&#34;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

fn script(body: String) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn bootscript(
    State(state): State<Shared>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let id = ["host", "mac", "nid"]
        .iter()
        .find_map(|k| q.get(*k).filter(|v| !v.is_empty()).map(|v| (*k, v.clone())));
    let Some((kind, value)) = id else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "host, mac or nid is required", "code": 400})),
        )
            .into_response();
    };
    let node = state.nodes.iter().find(|n| match kind {
        "host" => n.node.xname == value,
        "mac" => n.node.mac.eq_ignore_ascii_case(&value),
        _ => value.parse::<u32>().ok() == Some(n.node.nid),
    });
    let Some(node) = node else {
        return script(format!(
            "#!ipxe\necho Node {} not found\nsleep 30\nhalt\n",
            html_escape(&value)
        ));
    };
    // Score every configuration against the node; the highest wins, ties
    // to the higher priority, then the smaller name.
    let configs = lock(&state.configs);
    let mut best: Option<(i64, i64, String, &Value)> = None;
    for r in configs.values() {
        let spec = &r["spec"];
        let list = |k: &str| -> Vec<&Value> {
            spec.get(k)
                .and_then(Value::as_array)
                .map(|a| a.iter().collect())
                .unwrap_or_default()
        };
        let (hosts, macs, nids, groups) =
            (list("hosts"), list("macs"), list("nids"), list("groups"));
        let mut score = 0;
        for h in &hosts {
            if h.as_str() == Some(node.node.xname.as_str()) || h.as_str() == Some("*") {
                score += 50;
            }
        }
        for m in &macs {
            if m.as_str()
                .is_some_and(|m| m.eq_ignore_ascii_case(&node.node.mac))
            {
                score += 100;
            }
        }
        for n in &nids {
            if n.as_i64() == Some(i64::from(node.node.nid)) {
                score += 75;
            }
        }
        for g in &groups {
            for ng in &node.groups {
                if g.as_str() == Some(ng.as_str()) {
                    score += 25;
                }
            }
        }
        if hosts.is_empty() && macs.is_empty() && nids.is_empty() && groups.is_empty() {
            score = 1;
        }
        if score == 0 {
            continue;
        }
        let priority = spec.get("priority").and_then(Value::as_i64).unwrap_or(0);
        let name = r["metadata"]["name"].as_str().unwrap_or("").to_owned();
        let better = match &best {
            None => true,
            Some((s, p, n, _)) => {
                (score, priority) > (*s, *p) || ((score, priority) == (*s, *p) && name < *n)
            }
        };
        if better {
            best = Some((score, priority, name, r));
        }
    }
    let Some((_, _, _, r)) = best else {
        return script("#!ipxe\ndhcp\nboot\n".into());
    };
    let spec = &r["spec"];
    let get = |k: &str| spec.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let mut params = get("params");
    if !params.contains("BOOTIF=") {
        let mac = node.node.mac.to_ascii_lowercase().replace(':', "-");
        params = format!("{params} BOOTIF=01-{mac}").trim().to_owned();
    }
    script(format!(
        "#!ipxe\ndhcp\nset kernel {}\nset initrd {}\nset params {}\nkernel ${{kernel}} ${{params}}\ninitrd ${{initrd}}\nboot\n",
        html_escape(&get("kernel")),
        html_escape(&get("initrd")),
        html_escape(&params)
    ))
}

/// chi's `RedirectSlashes`: a trailing slash is answered with a redirect;
/// anything else the service does not route is 404.
async fn fallback(method: Method, uri: Uri) -> Response {
    let path = uri.path();
    if path.len() > 1 && path.ends_with('/') {
        return (
            StatusCode::MOVED_PERMANENTLY,
            [(header::LOCATION, path.trim_end_matches('/').to_owned())],
        )
            .into_response();
    }
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": format!("{method} {path}: not found"), "code": 404})),
    )
        .into_response()
}

/// What `/bootscript` answered, read back: the `set kernel`, `set initrd`
/// and `set params` values (still HTML-escaped, as iPXE gets them).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BootScript {
    pub kernel: Option<String>,
    pub initrd: Option<String>,
    pub params: Option<String>,
    pub text: String,
}

impl BootScript {
    pub fn parse(text: &str) -> BootScript {
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("set {name} ")))
                .map(str::to_owned)
        };
        BootScript {
            kernel: field("kernel"),
            initrd: field("initrd"),
            params: field("params"),
            text: text.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns_follow_the_validator() {
        for ok in [
            "x1000c0s0b0n0",
            "default",
            "x*",
            "x1c*",
            "x1c0s*",
            "x1c0s0b*",
            "x1c0s0b0n*",
        ] {
            assert!(is_host_pattern(ok), "{ok}");
        }
        for bad in [
            "*",
            "node1",
            "x1c0s0b0n0*",
            "x1*",
            "X1000c0s0b0n0",
            "x1c0s0b0n",
        ] {
            assert!(!is_host_pattern(bad), "{bad}");
        }
    }

    #[test]
    fn specs_are_validated_as_the_service_does() {
        assert!(validate(&json!({"kernel": "http://s/k", "priority": 100})).is_ok());
        assert!(validate(&json!({"kernel": "/boot/k", "hosts": ["x1c0s0b0n0"]})).is_ok());
        for bad in [
            json!({}),
            json!({"kernel": ""}),
            json!({"kernel": "ftp://s/k"}),
            json!({"kernel": "http://s/k", "priority": 101}),
            json!({"kernel": "http://s/k", "priority": -1}),
            json!({"kernel": "http://s/k", "hosts": ["node7"]}),
            json!({"kernel": "http://s/k", "macs": ["02:00"]}),
            json!({"kernel": "http://s/k", "initrd": "relative/i"}),
        ] {
            assert!(validate(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn script_values_are_html_escaped() {
        assert_eq!(
            html_escape("a&b+c'd\"<e>"),
            "a&amp;b&#43;c&#39;d&#34;&lt;e&gt;"
        );
        let s = BootScript::parse(
            "#!ipxe\ndhcp\nset kernel http://k\nset initrd http://i\nset params p q\nboot\n",
        );
        assert_eq!(s.kernel.as_deref(), Some("http://k"));
        assert_eq!(s.params.as_deref(), Some("p q"));
    }

    #[test]
    fn dates_are_rfc3339() {
        let t = now();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'), "{t}");
    }
}
