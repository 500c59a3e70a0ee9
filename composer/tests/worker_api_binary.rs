//! The `kiln-composer` binary and its worker listener: off (and saying so)
//! without certificates, on with them from the environment, refused to start
//! with half a configuration.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_kiln-composer");

/// Waits until `port` accepts connections.
fn wait_for(port: u16, child: &mut std::process::Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(s) = child.try_wait().unwrap() {
            panic!("composer exited: {s}");
        }
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn stop(child: std::process::Child) -> String {
    let (status, log) = common::stop(child);
    assert!(status.success(), "exit after SIGTERM: {status}\n{log}");
    log
}

#[test]
fn without_certificates_there_is_no_worker_listener() {
    let dir = tempfile::tempdir().unwrap();
    let port = kiln_testsupport::free_port().unwrap();
    let worker_port = kiln_testsupport::free_port().unwrap();
    let mut child = Command::new(BIN)
        // Metrics on a port of their own: tests run side by side.
        .env("KILN_COMPOSER_METRICS__LISTEN", "127.0.0.1:0")
        .current_dir(dir.path())
        .env_remove("KILN_COMPOSER_CONFIG")
        .env("KILN_COMPOSER_LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "KILN_COMPOSER_WORKER_API__LISTEN",
            format!("127.0.0.1:{worker_port}"),
        )
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(port, &mut child);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", worker_port)).is_err(),
        "a worker listener without certificates"
    );
    let log = stop(child);
    assert!(log.contains("no worker API"), "{log}");
}

#[test]
fn with_certificates_from_the_environment_workers_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    kiln_testsupport::host::gen_certs(&certs, &["--worker", "worker1"]);
    let port = kiln_testsupport::free_port().unwrap();
    let worker_port = kiln_testsupport::free_port().unwrap();
    let env = [
        ("KILN_COMPOSER_LISTEN", format!("127.0.0.1:{port}")),
        (
            "KILN_COMPOSER_WORKER_API__LISTEN",
            format!("127.0.0.1:{worker_port}"),
        ),
        (
            "KILN_COMPOSER_WORKER_API__CA",
            certs.join("ca.pem").display().to_string(),
        ),
        (
            "KILN_COMPOSER_WORKER_API__CERT",
            certs.join("composer.pem").display().to_string(),
        ),
        (
            "KILN_COMPOSER_WORKER_API__KEY",
            certs.join("composer.key").display().to_string(),
        ),
        (
            "KILN_COMPOSER_WORKER_API__ALLOWED_DOMAINS",
            "[\"worker1\"]".to_owned(),
        ),
    ];

    // Half a configuration stops the start, naming the missing key.
    let out = Command::new(BIN)
        // Metrics on a port of their own: tests run side by side.
        .env("KILN_COMPOSER_METRICS__LISTEN", "127.0.0.1:0")
        .current_dir(dir.path())
        .env_remove("KILN_COMPOSER_CONFIG")
        .envs(env.iter().filter(|(k, _)| !k.ends_with("__CERT")).cloned())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("worker_api.cert"), "{stderr}");

    let mut child = Command::new(BIN)
        // Metrics on a port of their own: tests run side by side.
        .env("KILN_COMPOSER_METRICS__LISTEN", "127.0.0.1:0")
        .current_dir(dir.path())
        .env_remove("KILN_COMPOSER_CONFIG")
        .envs(env.iter().cloned())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(worker_port, &mut child);

    let ca = std::fs::read(certs.join("ca.pem")).unwrap();
    let mut identity = std::fs::read(certs.join("worker-worker1.key")).unwrap();
    identity.extend(std::fs::read(certs.join("worker-worker1.pem")).unwrap());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = rt.block_on(async {
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .identity(reqwest::Identity::from_pem(&identity).unwrap())
            .build()
            .unwrap();
        // The server certificate carries IP 127.0.0.1 as well as localhost.
        http.post(format!(
            "https://127.0.0.1:{worker_port}/api/worker/v1/jobs"
        ))
        .json(&serde_json::json!({"types": ["build"], "arch": "x86_64"}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
    });
    assert_eq!(status, 204, "no job queued, no wait");
    let log = stop(child);
    assert!(log.contains("worker API ready"), "{log}");
}
