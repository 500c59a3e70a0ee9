//! Test doubles for OpenCHAMI's BSS and SMD (and boot-service, in
//! `boot_service.rs`, which has no swagger to check against): small axum servers on loopback
//! ports that check every request against the services' swagger documents
//! (`../shared/reference/openchami/*.yaml` beside the repository, or
//! `$KILN_OPENCHAMI_REFERENCE`) and answer as the real services do, keeping
//! their state in memory so tests can assert it.
//!
//! Without the swagger documents beside the repository (a plain clone) the
//! doubles still answer as the services do but check nothing against the
//! swagger; starting one then reports the check as skipped
//! ([`crate::reference::skipped`]). A `$KILN_OPENCHAMI_REFERENCE` without
//! them is an error.
//!
//! A request that does not match the swagger is answered 400 with the reason
//! and recorded; an answer of the double's own that does not match is
//! recorded too. Recorded violations fail the test: call
//! `assert_no_violations`, and dropping a double with violations panics.

mod boot_service;
mod bss;
mod smd;
pub mod swagger;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use axum::Router;
use serde_json::{json, Value};

pub use boot_service::{BootScript, BootServiceNode, BootServiceTestDouble};
pub use bss::{BssEntry, BssTestDouble};
pub use smd::SmdTestDouble;
use swagger::Swagger;

/// A node both doubles know: SMD lists it, BSS maps its MAC and NID to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub xname: String,
    pub mac: String,
    pub nid: u32,
}

impl Node {
    pub fn new(xname: &str, mac: &str, nid: u32) -> Node {
        Node {
            xname: xname.into(),
            mac: mac.into(),
            nid,
        }
    }
}

/// The directory holding `bss-swagger.yaml` and `smd-swagger-v2.yaml`.
pub fn reference_dir() -> Result<PathBuf, String> {
    let dir = match std::env::var_os("KILN_OPENCHAMI_REFERENCE") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/reference/openchami"),
    };
    for f in ["bss-swagger.yaml", "smd-swagger-v2.yaml"] {
        if !dir.join(f).is_file() {
            return Err(format!(
                "the OpenCHAMI swagger reference {} is absent; the BSS/SMD test doubles check every \
                 request against it (set KILN_OPENCHAMI_REFERENCE to the directory holding it)",
                dir.join(f).display()
            ));
        }
    }
    Ok(dir)
}

/// An answer before it becomes an HTTP response.
pub(crate) struct Answer {
    status: u16,
    body: Option<Value>,
    problem: bool,
    headers: Vec<(&'static str, String)>,
}

impl Answer {
    pub(crate) fn json(status: u16, body: Value) -> Answer {
        Answer {
            status,
            body: Some(body),
            problem: false,
            headers: Vec::new(),
        }
    }

    pub(crate) fn empty(status: u16) -> Answer {
        Answer {
            status,
            body: None,
            problem: false,
            headers: Vec::new(),
        }
    }

    /// An RFC 7807 problem, as HMS services send them.
    pub(crate) fn problem(status: u16, detail: impl Into<String>) -> Answer {
        let title = StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error");
        Answer {
            status,
            body: Some(json!({
                "type": "about:blank",
                "title": title,
                "detail": detail.into(),
                "status": status,
            })),
            problem: true,
            headers: Vec::new(),
        }
    }

    pub(crate) fn with_header(mut self, name: &'static str, value: String) -> Answer {
        self.headers.push((name, value));
        self
    }
}

/// A request as a double's service logic sees it (already checked).
pub(crate) struct Request {
    pub method: String,
    /// Path segments below the served prefix.
    pub path: Vec<String>,
    pub query: Vec<(String, String)>,
    pub body: Option<Value>,
}

pub(crate) trait Service: Send + Sync + 'static {
    fn answer(&self, request: Request) -> Answer;
}

struct Shared {
    name: &'static str,
    /// None without the reference: nothing is checked against the swagger.
    swagger: Option<Swagger>,
    served_prefix: String,
    token: Option<String>,
    service: Arc<dyn Service>,
    violations: Mutex<Vec<String>>,
    requests: Mutex<Vec<String>>,
}

/// The server part both doubles share.
pub(crate) struct DoubleServer {
    url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl DoubleServer {
    pub(crate) async fn start(
        name: &'static str,
        swagger_file: &str,
        served_prefix: &str,
        token: Option<String>,
        service: Arc<dyn Service>,
    ) -> Result<DoubleServer, String> {
        let swagger = match reference_dir() {
            Ok(dir) => Some(Swagger::load(&dir.join(swagger_file), served_prefix)?),
            // Named and not there: a mistake to say, not a check to skip.
            Err(absent) if std::env::var_os("KILN_OPENCHAMI_REFERENCE").is_some() => {
                return Err(absent)
            }
            Err(absent) => {
                crate::reference::skipped(&format!(
                    "the {name} test double checks nothing against the swagger: {absent}"
                ));
                None
            }
        };
        let shared = Arc::new(Shared {
            name,
            swagger,
            served_prefix: served_prefix.to_owned(),
            token,
            service,
            violations: Mutex::new(Vec::new()),
            requests: Mutex::new(Vec::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("binding the {name} test double: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("reading the {name} test double's address: {e}"))?;
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(DoubleServer {
            url: format!("http://{addr}"),
            shared,
            task,
        })
    }

    pub(crate) fn checks_swagger(&self) -> bool {
        self.shared.swagger.is_some()
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    pub(crate) fn violations(&self) -> Vec<String> {
        lock(&self.shared.violations).clone()
    }

    pub(crate) fn take_violations(&self) -> Vec<String> {
        std::mem::take(&mut *lock(&self.shared.violations))
    }

    pub(crate) fn requests(&self) -> Vec<String> {
        lock(&self.shared.requests).clone()
    }

    pub(crate) fn assert_no_violations(&self) {
        let v = self.violations();
        assert!(
            v.is_empty(),
            "the {} test double saw requests or gave answers that do not match the swagger:\n{}",
            self.shared.name,
            v.join("\n")
        );
    }
}

impl Drop for DoubleServer {
    fn drop(&mut self) {
        self.task.abort();
        if !std::thread::panicking() {
            self.assert_no_violations();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let query: Vec<(String, String)> = uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    lock(&shared.requests).push(match uri.query() {
        Some(q) => format!("{method} {path}?{q}"),
        None => format!("{method} {path}"),
    });
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let checked = match &shared.swagger {
        Some(swagger) => swagger
            .check_request(method.as_str(), &path, &query, content_type, &body)
            .map(Some),
        None => Ok(None),
    };
    if let Err(errors) = &checked {
        lock(&shared.violations).extend(errors.iter().cloned());
    }

    if let Some(token) = &shared.token {
        let sent = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if sent != Some(format!("Bearer {token}").as_str()) {
            let detail = if sent.is_none() {
                "no bearer token"
            } else {
                "the bearer token is not valid"
            };
            return respond(Answer::problem(401, detail));
        }
    }
    let matched = match checked {
        Ok(m) => m,
        Err(errors) => {
            return respond(Answer::problem(
                400,
                format!(
                    "request does not match the {} swagger: {}",
                    shared.name,
                    errors.join("; ")
                ),
            ))
        }
    };
    let rel = path.strip_prefix(&shared.served_prefix).unwrap_or(&path);
    let request = Request {
        method: method.to_string(),
        path: rel
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        query,
        body: serde_json::from_slice(&body).ok(),
    };
    let answer = shared.service.answer(request);
    let own = match (&shared.swagger, &matched) {
        (Some(swagger), Some(matched)) => {
            swagger.check_response(matched, answer.status, answer.body.as_ref())
        }
        _ => Vec::new(),
    };
    if !own.is_empty() {
        let mut v = lock(&shared.violations);
        v.extend(
            own.into_iter()
                .map(|e| format!("{} {path}: the double's own {e}", method)),
        );
    }
    if answer.status == 501 {
        lock(&shared.violations).push(format!(
            "{method} {path}: the {} test double does not implement this operation",
            shared.name
        ));
    }
    respond(answer)
}

fn respond(answer: Answer) -> Response {
    let content_type = if answer.problem {
        "application/problem+json"
    } else {
        "application/json; charset=UTF-8"
    };
    let body = answer
        .body
        .map(|b| Body::from(b.to_string()))
        .unwrap_or_else(Body::empty);
    let mut builder = Response::builder()
        .status(answer.status)
        .header(header::CONTENT_TYPE, content_type);
    for (k, v) in answer.headers {
        builder = builder.header(k, v);
    }
    builder.body(body).unwrap_or_else(|e| {
        let mut r = Response::new(Body::from(format!("building the answer: {e}")));
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        r
    })
}
