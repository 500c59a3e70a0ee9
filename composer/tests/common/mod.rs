//! A composer on a loopback port, over SQLite in a temp dir or a fresh
//! database on the throwaway PostgreSQL cluster.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kiln_composer::{AppState, ComposerConfig};
use kiln_queue::JobQueue;
use kiln_testsupport::PgCluster;
use serde_json::{json, Value};

/// Runs each named `async fn(Backend)` as two tests, on SQLite and on
/// PostgreSQL (the calling file imports `Backend`).
#[allow(unused_macros)]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() { super::$name(super::Backend::Sqlite).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() { super::$name(super::Backend::Postgres).await }
        }
    )*};
}

pub(crate) struct TestComposer {
    pub base: String,
    pub queue: Arc<dyn JobQueue>,
    pub state: AppState,
    pub http: reqwest::Client,
    _dir: tempfile::TempDir,
    _server: tokio::task::JoinHandle<()>,
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

pub(crate) async fn start(backend: Backend) -> TestComposer {
    start_with(backend, |_| {}).await
}

pub(crate) async fn start_with(
    backend: Backend,
    tweak: impl FnOnce(&mut ComposerConfig),
) -> TestComposer {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ComposerConfig {
        data_dir: dir.path().to_owned(),
        max_body_bytes: 64 * 1024,
        ..Default::default()
    };
    // Tests of the API and the queue watch jobs stay where they are; the
    // tests of the composer's own jobs turn them on with local repositories.
    config.jobs.run_in_composer = false;
    if let Backend::Postgres = backend {
        config.database_url = Some(PgCluster::shared().unwrap().create_database().unwrap());
    }
    tweak(&mut config);
    let state = AppState::open(config).await.unwrap();
    let queue = state.queue.clone();
    let shared = state.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        kiln_composer::serve(state, listener, std::future::pending())
            .await
            .unwrap();
    });
    TestComposer {
        base: format!("http://{addr}/api/image-builder-composer/v2"),
        queue,
        state: shared,
        http: reqwest::Client::new(),
        _dir: dir,
        _server: server,
    }
}

impl TestComposer {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(crate) async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(self.url(path)).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub(crate) async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub(crate) async fn delete(&self, path: &str) -> (u16, Value) {
        let r = self.http.delete(self.url(path)).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

/// A small valid request.
pub(crate) fn pxe_request() -> Value {
    serde_json::json!({
        "distribution": "debian-12",
        "image_request": {
            "architecture": "x86_64",
            "image_type": "pxe",
            "upload_targets": [{"type": "local", "upload_options": {}}]
        },
        "customizations": {"hostname": "node-001", "packages": ["chrony"]}
    })
}

/// The reference Cloud API document (beside the repository, in shared/);
/// None, reported as skipped, when it is absent (a plain clone).
pub(crate) fn reference() -> Option<Value> {
    let Some(dir) = kiln_testsupport::reference::dir("composer-api") else {
        kiln_testsupport::reference::skipped(
            "the Cloud API document (../shared/reference/composer-api) is absent: answers not checked against its schemas",
        );
        return None;
    };
    let path = dir.join("cloudapi-v2.openapi.yml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("the reference Cloud API document {}: {e}", path.display()));
    Some(serde_yaml::from_str(&text).expect("reference YAML"))
}

/// What is wrong with `instance` as `#/components/schemas/<name>` of the reference.
pub(crate) fn violations(reference: &Value, name: &str, instance: &Value) -> Vec<String> {
    let schema = json!({
        "$ref": format!("#/components/schemas/{name}"),
        "components": reference["components"],
    });
    let validator = jsonschema::draft7::new(&schema).expect("reference schema compiles");
    validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

/// Asserts that `instance` is a `<name>` of the reference, when it is there.
pub(crate) fn check(reference: &Option<Value>, name: &str, instance: &Value) {
    let Some(reference) = reference else { return };
    let errors = violations(reference, name, instance);
    assert!(
        errors.is_empty(),
        "{name} does not match the reference:\n{}\n{instance:#}",
        errors.join("\n")
    );
}

/// Stops a composer process with SIGTERM and waits (20 s at most) for it to
/// exit; returns how it exited and what it printed on stdout.
pub(crate) fn stop(mut child: std::process::Child) -> (std::process::ExitStatus, String) {
    use std::io::Read;
    let pid = child.id().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "composer did not stop on SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let mut log = String::new();
    if let Some(mut out) = child.stdout.take() {
        out.read_to_string(&mut log).unwrap();
    }
    (status, log)
}

/// Reads an event stream until `end`; returns what came up to it.
pub(crate) async fn read_until(
    stream: &mut (impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    buf: &mut String,
    end: &str,
) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !buf.contains(end) {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("event in time");
        buf.push_str(&String::from_utf8_lossy(
            &chunk.expect("stream open").unwrap(),
        ));
    }
    let i = buf.find(end).unwrap() + end.len();
    let head = buf[..i].to_owned();
    buf.drain(..i);
    head
}

/// Reads an event stream to its end.
pub(crate) async fn read_to_end(
    stream: &mut (impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    buf: &mut String,
) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("stream ended in time")
        {
            Some(chunk) => buf.push_str(&String::from_utf8_lossy(&chunk.unwrap())),
            None => return std::mem::take(buf),
        }
    }
}
