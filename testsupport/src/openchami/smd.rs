//! `SmdTestDouble`: the HSM v2 reads kiln makes, served under `/hsm/v2` as
//! OpenCHAMI SMD serves them: group members, node components (filtered by
//! type and NID) and component Ethernet interfaces (filtered by MAC).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use super::{lock, Answer, DoubleServer, Node, Request, Service};

pub struct SmdTestDouble {
    server: DoubleServer,
    state: Arc<SmdState>,
}

struct SmdState {
    nodes: Vec<Node>,
    groups: Mutex<BTreeMap<String, Vec<String>>>,
}

impl SmdTestDouble {
    /// Starts the double knowing `nodes`; `groups` maps labels to member xnames.
    pub async fn start(
        nodes: &[Node],
        groups: &[(&str, &[&str])],
        token: Option<&str>,
    ) -> Result<SmdTestDouble, String> {
        let state = Arc::new(SmdState {
            nodes: nodes.to_vec(),
            groups: Mutex::new(
                groups
                    .iter()
                    .map(|(l, m)| (l.to_string(), m.iter().map(|s| s.to_string()).collect()))
                    .collect(),
            ),
        });
        let server = DoubleServer::start(
            "SMD",
            "smd-swagger-v2.yaml",
            "/hsm/v2",
            token.map(str::to_owned),
            state.clone(),
        )
        .await?;
        Ok(SmdTestDouble { server, state })
    }

    /// The URL to configure as SMD's root; the API is under `/hsm/v2`.
    pub fn url(&self) -> &str {
        self.server.url()
    }

    /// Whether requests and answers are checked against the swagger (false
    /// without the reference documents).
    pub fn checks_swagger(&self) -> bool {
        self.server.checks_swagger()
    }

    pub fn set_group(&self, label: &str, members: &[&str]) {
        lock(&self.state.groups).insert(
            label.to_owned(),
            members.iter().map(|s| s.to_string()).collect(),
        );
    }

    pub fn requests(&self) -> Vec<String> {
        self.server.requests()
    }

    pub fn violations(&self) -> Vec<String> {
        self.server.violations()
    }

    pub fn take_violations(&self) -> Vec<String> {
        self.server.take_violations()
    }

    pub fn assert_no_violations(&self) {
        self.server.assert_no_violations()
    }
}

fn mac_digits(s: &str) -> Option<String> {
    let digits: String = s.chars().filter(|c| *c != ':' && *c != '-').collect();
    (digits.len() == 12 && digits.chars().all(|c| c.is_ascii_hexdigit()))
        .then(|| digits.to_ascii_lowercase())
}

impl SmdState {
    fn component(n: &Node) -> Value {
        json!({
            "ID": n.xname, "Type": "Node", "State": "Ready", "Flag": "OK",
            "Enabled": true, "Role": "Compute", "NID": n.nid, "NetType": "Sling",
            "Arch": "X86", "Class": "River",
        })
    }

    fn components(&self, req: &Request) -> Answer {
        let mut nids = Vec::new();
        for (k, v) in &req.query {
            match k.as_str() {
                "nid" => match v.parse::<u32>() {
                    Ok(n) => nids.push(n),
                    Err(_) => {
                        return Answer::problem(
                            400,
                            format!("bad query param: Argument was not a valid NID: {v}"),
                        )
                    }
                },
                "type" if v != "Node" && v != "node" => {
                    return Answer::json(200, json!({ "Components": [] }))
                }
                "type" => {}
                other => {
                    return Answer::problem(
                        501,
                        format!("the SMD test double does not filter by {other}"),
                    )
                }
            }
        }
        let found: Vec<Value> = self
            .nodes
            .iter()
            .filter(|n| nids.is_empty() || nids.contains(&n.nid))
            .map(Self::component)
            .collect();
        Answer::json(200, json!({ "Components": found }))
    }

    fn ethernet_interfaces(&self, req: &Request) -> Answer {
        let mut macs = Vec::new();
        for (k, v) in &req.query {
            if k != "MACAddress" {
                return Answer::problem(501, format!("the SMD test double does not filter by {k}"));
            }
            match mac_digits(v) {
                Some(m) => macs.push(m),
                None => {
                    return Answer::problem(
                        400,
                        format!("bad query param: invalid MAC address {v:?}"),
                    )
                }
            }
        }
        let found: Vec<Value> = self
            .nodes
            .iter()
            .filter(|n| {
                let own = mac_digits(&n.mac).unwrap_or_default();
                macs.is_empty() || macs.contains(&own)
            })
            .map(|n| {
                json!({
                    "ID": mac_digits(&n.mac).unwrap_or_default(),
                    "Description": "Ethernet Interface Lan1",
                    "MACAddress": n.mac.to_ascii_lowercase(),
                    "IPAddresses": [],
                    "LastUpdate": "2025-01-01T00:00:00Z",
                    "ComponentID": n.xname,
                    "Type": "Node",
                })
            })
            .collect();
        Answer::json(200, Value::Array(found))
    }
}

impl Service for SmdState {
    fn answer(&self, req: Request) -> Answer {
        let path: Vec<&str> = req.path.iter().map(String::as_str).collect();
        match (req.method.as_str(), path.as_slice()) {
            ("GET", ["groups", label, "members"]) => match lock(&self.groups).get(*label) {
                Some(ids) => Answer::json(200, json!({ "ids": ids })),
                None => Answer::problem(404, "No such group"),
            },
            ("GET", ["State", "Components"]) => self.components(&req),
            ("GET", ["Inventory", "EthernetInterfaces"]) => self.ethernet_interfaces(&req),
            _ => Answer::problem(501, "not implemented by the SMD test double"),
        }
    }
}
