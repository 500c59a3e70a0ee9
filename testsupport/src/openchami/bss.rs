//! `BssTestDouble`: `/boot/v1/bootparameters` as OpenCHAMI BSS answers it.
//! PUT 200 (empty body, `BSS-Referral-Token`), POST 201, PATCH and DELETE
//! 200; GET answers an array, or 404 when nothing matches; errors are RFC 7807
//! problems. Hosts must be node xnames or role tags, MACs well formed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use super::{lock, Answer, DoubleServer, Node, Request, Service};

/// What the double stores for one host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BssEntry {
    pub kernel: Option<String>,
    pub initrd: Option<String>,
    pub params: Option<String>,
    pub cloud_init: Option<Value>,
}

pub struct BssTestDouble {
    server: DoubleServer,
    state: Arc<BssState>,
}

struct BssState {
    nodes: Vec<Node>,
    entries: Mutex<BTreeMap<String, BssEntry>>,
    /// Answer every write with 500 (a fault a test injects).
    failing_writes: AtomicBool,
}

/// Tags BSS accepts in `hosts` besides xnames.
const TAGS: [&str; 7] = [
    "Default",
    "Compute",
    "Service",
    "System",
    "Application",
    "Storage",
    "Management",
];

impl BssTestDouble {
    /// Starts the double; `nodes` map MACs and NIDs in requests to xnames;
    /// with a `token`, every request needs `Authorization: Bearer <token>`.
    pub async fn start(nodes: &[Node], token: Option<&str>) -> Result<BssTestDouble, String> {
        let state = Arc::new(BssState {
            nodes: nodes.to_vec(),
            entries: Mutex::new(BTreeMap::new()),
            failing_writes: AtomicBool::new(false),
        });
        let server = DoubleServer::start(
            "BSS",
            "bss-swagger.yaml",
            "",
            token.map(str::to_owned),
            state.clone(),
        )
        .await?;
        Ok(BssTestDouble { server, state })
    }

    /// From now on (until called with `false`), every PUT, POST, PATCH and
    /// DELETE is answered 500 and changes nothing; reads still work.
    pub fn fail_writes(&self, failing: bool) {
        self.state.failing_writes.store(failing, Ordering::SeqCst);
    }

    /// The URL to configure as BSS's root (`http://127.0.0.1:<port>`).
    pub fn url(&self) -> &str {
        self.server.url()
    }

    /// Whether requests and answers are checked against the swagger (false
    /// without the reference documents).
    pub fn checks_swagger(&self) -> bool {
        self.server.checks_swagger()
    }

    /// The boot parameters stored per host.
    pub fn entries(&self) -> BTreeMap<String, BssEntry> {
        lock(&self.state.entries).clone()
    }

    pub fn entry(&self, host: &str) -> Option<BssEntry> {
        lock(&self.state.entries).get(host).cloned()
    }

    /// Sets a host's entry directly, as another tool would have.
    pub fn set_entry(&self, host: &str, entry: BssEntry) {
        lock(&self.state.entries).insert(host.to_owned(), entry);
    }

    /// Every request so far, as `METHOD /path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.server.requests()
    }

    pub fn violations(&self) -> Vec<String> {
        self.server.violations()
    }

    /// Returns and forgets the violations (for tests that cause them on purpose).
    pub fn take_violations(&self) -> Vec<String> {
        self.server.take_violations()
    }

    pub fn assert_no_violations(&self) {
        self.server.assert_no_violations()
    }
}

pub(super) fn is_node_xname(s: &str) -> bool {
    // x<digits>c<digits>s<digits>b<digits>n<digits>, nothing else.
    let mut chars = s.chars().peekable();
    for letter in ['x', 'c', 's', 'b', 'n'] {
        if chars.next() != Some(letter) {
            return false;
        }
        let mut digits = 0;
        while chars.peek().is_some_and(char::is_ascii_digit) {
            chars.next();
            digits += 1;
        }
        if digits == 0 {
            return false;
        }
    }
    chars.next().is_none()
}

fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

impl BssState {
    /// The hosts a request body names, or the problem to answer.
    fn hosts(&self, body: &Value) -> Result<Vec<String>, Answer> {
        let mut hosts = Vec::new();
        for h in body["hosts"].as_array().into_iter().flatten() {
            let h = h.as_str().unwrap_or_default();
            if !is_node_xname(h) && !TAGS.contains(&h) {
                return Err(Answer::problem(
                    400,
                    format!("Bad Request: invalid xname or tag in hosts: {h:?}"),
                ));
            }
            hosts.push(h.to_owned());
        }
        for m in body["macs"].as_array().into_iter().flatten() {
            let m = m.as_str().unwrap_or_default();
            if !is_mac(m) {
                return Err(Answer::problem(
                    400,
                    format!("Bad Request: invalid MAC address {m:?}"),
                ));
            }
            match self.nodes.iter().find(|n| n.mac.eq_ignore_ascii_case(m)) {
                Some(n) => hosts.push(n.xname.clone()),
                None => return Err(Answer::problem(404, format!("Cannot find MAC {m}"))),
            }
        }
        for n in body["nids"].as_array().into_iter().flatten() {
            let nid = n.as_u64().unwrap_or(u64::MAX);
            match self.nodes.iter().find(|node| u64::from(node.nid) == nid) {
                Some(node) => hosts.push(node.xname.clone()),
                None => return Err(Answer::problem(404, format!("Cannot find NID {n}"))),
            }
        }
        if hosts.is_empty() {
            return Err(Answer::problem(
                400,
                "Bad Request: no hosts, macs or nids given",
            ));
        }
        Ok(hosts)
    }

    fn get(&self, req: &Request) -> Answer {
        let entries = lock(&self.entries);
        let as_json = |host: &str, e: &BssEntry| {
            let mut v = json!({ "hosts": [host] });
            for (k, val) in [
                ("kernel", &e.kernel),
                ("initrd", &e.initrd),
                ("params", &e.params),
            ] {
                if let Some(val) = val {
                    v[k] = json!(val);
                }
            }
            if let Some(c) = &e.cloud_init {
                v["cloud-init"] = c.clone();
            }
            v
        };
        if req.query.is_empty() {
            let all: Vec<Value> = entries.iter().map(|(h, e)| as_json(h, e)).collect();
            return Answer::json(200, Value::Array(all));
        }
        let mut wanted: Vec<String> = Vec::new();
        for (k, v) in &req.query {
            for item in v.split(',').filter(|s| !s.is_empty()) {
                let host = match k.as_str() {
                    "name" => Some(item.to_owned()),
                    "mac" => self
                        .nodes
                        .iter()
                        .find(|n| n.mac.eq_ignore_ascii_case(item))
                        .map(|n| n.xname.clone()),
                    _ => self
                        .nodes
                        .iter()
                        .find(|n| n.nid.to_string() == item)
                        .map(|n| n.xname.clone()),
                };
                wanted.extend(host);
            }
        }
        let found: Vec<Value> = wanted
            .iter()
            .filter_map(|h| entries.get(h).map(|e| as_json(h, e)))
            .collect();
        if found.is_empty() {
            return Answer::problem(404, "Cannot find boot parameters for requested Hosts");
        }
        Answer::json(200, Value::Array(found))
    }

    fn write(&self, req: &Request) -> Answer {
        if self.failing_writes.load(Ordering::SeqCst) {
            return Answer::problem(500, "Internal Server Error: a fault the test injected");
        }
        let Some(body) = &req.body else {
            return Answer::problem(400, "Bad Request: EOF");
        };
        let hosts = match self.hosts(body) {
            Ok(h) => h,
            Err(a) => return a,
        };
        let field = |k: &str| body[k].as_str().map(str::to_owned);
        let mut entries = lock(&self.entries);
        match req.method.as_str() {
            "PUT" | "POST" => {
                if req.method == "POST" {
                    if let Some(h) = hosts.iter().find(|h| entries.contains_key(*h)) {
                        return Answer::problem(400, format!("Bad Request: {h} already exists"));
                    }
                }
                for h in hosts {
                    entries.insert(
                        h,
                        BssEntry {
                            kernel: field("kernel"),
                            initrd: field("initrd"),
                            params: field("params"),
                            cloud_init: body.get("cloud-init").cloned(),
                        },
                    );
                }
                let token = uuid::Uuid::new_v4().to_string();
                let status = if req.method == "POST" { 201 } else { 200 };
                Answer::empty(status).with_header("BSS-Referral-Token", token)
            }
            "PATCH" => {
                if let Some(h) = hosts.iter().find(|h| !entries.contains_key(*h)) {
                    return Answer::problem(404, format!("Not Found: no boot parameters for {h}"));
                }
                for h in hosts {
                    if let Some(e) = entries.get_mut(&h) {
                        for (k, slot) in [
                            ("kernel", &mut e.kernel),
                            ("initrd", &mut e.initrd),
                            ("params", &mut e.params),
                        ] {
                            if let Some(v) = field(k) {
                                *slot = Some(v);
                            }
                        }
                    }
                }
                Answer::empty(200)
            }
            _ => {
                if let Some(h) = hosts.iter().find(|h| !entries.contains_key(*h)) {
                    return Answer::problem(404, format!("Not Found: no boot parameters for {h}"));
                }
                for h in hosts {
                    entries.remove(&h);
                }
                Answer::empty(200)
            }
        }
    }
}

impl Service for BssState {
    fn answer(&self, req: Request) -> Answer {
        let path: Vec<&str> = req.path.iter().map(String::as_str).collect();
        match (req.method.as_str(), path.as_slice()) {
            ("GET", ["boot", "v1", "bootparameters"]) => self.get(&req),
            (_, ["boot", "v1", "bootparameters"]) => self.write(&req),
            ("GET", ["boot", "v1", "service", "status"]) => {
                Answer::json(200, json!({"bss-status": "running"}))
            }
            _ => Answer::problem(501, "not implemented by the BSS test double"),
        }
    }
}
