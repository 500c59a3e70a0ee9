//! The `kiln-composer` binary as an operator runs it: defaults, a config
//! file, environment overrides, and a clean stop on SIGTERM.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_kiln-composer");

#[test]
fn with_no_configuration_it_runs_on_one_machine() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        // Metrics on a port of their own: tests run side by side.
        .env("KILN_COMPOSER_METRICS__LISTEN", "127.0.0.1:0")
        .arg("--print-config")
        .current_dir(dir.path())
        .env_remove("KILN_COMPOSER_CONFIG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cfg["listen"], "127.0.0.1:8700");
    assert_eq!(cfg["data_dir"], "kiln-data");
    assert_eq!(
        cfg["database_url"],
        Value::Null,
        "SQLite in the data directory by default"
    );
}

#[test]
fn file_then_environment_then_serves_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = kiln_testsupport::free_port().unwrap();
    let data = dir.path().join("state");
    std::fs::write(
        dir.path().join("composer.toml"),
        format!(
            "listen = \"127.0.0.1:1\"\ndata_dir = \"{}\"\ndefault_channel = \"from-file\"\n[queue]\nmax_retries = 7\n",
            data.display()
        ),
    )
    .unwrap();
    // The file is found in the working directory; the environment wins over it.
    let out = Command::new(BIN)
        // Metrics on a port of their own: tests run side by side.
        .env("KILN_COMPOSER_METRICS__LISTEN", "127.0.0.1:0")
        .arg("--print-config")
        .current_dir(dir.path())
        .env("KILN_COMPOSER_LISTEN", format!("127.0.0.1:{port}"))
        .env("KILN_COMPOSER_QUEUE__MAX_RETRIES", "9")
        .output()
        .unwrap();
    let cfg: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cfg["listen"], format!("127.0.0.1:{port}"));
    assert_eq!(cfg["default_channel"], "from-file");
    assert_eq!(cfg["queue"]["max_retries"], 9);

    // A key the composer does not know is an error that names it.
    let out = Command::new(BIN)
        // Metrics on a port of their own: tests run side by side.
        .env("KILN_COMPOSER_METRICS__LISTEN", "127.0.0.1:0")
        .arg("--print-config")
        .current_dir(dir.path())
        .env("KILN_COMPOSER_LISTN", "x")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("listn"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let child = Command::new(BIN)
        // Metrics on a port of their own: tests run side by side.
        .env("KILN_COMPOSER_METRICS__LISTEN", "127.0.0.1:0")
        .current_dir(dir.path())
        .env("KILN_COMPOSER_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/api/image-builder-composer/v2/distributions");
    let deadline = Instant::now() + Duration::from_secs(30);
    let body: Value = loop {
        if let Ok(r) = reqwest::blocking_get(&url) {
            break r;
        }
        assert!(Instant::now() < deadline, "composer did not come up");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(body.get("debian-12").is_some(), "{body}");
    assert!(
        data.join("kiln.db").exists(),
        "SQLite database in the configured data_dir"
    );

    let (status, _) = common::stop(child);
    assert!(status.success(), "exit after SIGTERM: {status}");
}

/// Without `[auth]` the composer serves loopback only: a network address
/// is refused at start, naming what to do, unless `auth.mode = "none"`
/// says so on purpose (and the log says it is unauthenticated).
#[test]
fn without_auth_it_refuses_a_network_address() {
    let dir = tempfile::tempdir().unwrap();
    let port = kiln_testsupport::free_port().unwrap();
    let run = |extra: &[(&str, &str)]| {
        let mut cmd = Command::new(BIN);
        cmd.env("KILN_COMPOSER_METRICS__LISTEN", "127.0.0.1:0");
        cmd.current_dir(dir.path())
            .env_remove("KILN_COMPOSER_CONFIG")
            .env("KILN_COMPOSER_LISTEN", format!("0.0.0.0:{port}"))
            .env("KILN_COMPOSER_DATA_DIR", dir.path().join("state"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        cmd.spawn().unwrap()
    };
    let out = run(&[]).wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started on 0.0.0.0 without [auth]");
    assert!(
        stderr.contains("not a loopback address") && stderr.contains("auth.mode"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("state").exists(),
        "nothing made before the refusal"
    );

    // An [auth] without issuer and audience cannot authenticate anyone.
    let out = run(&[("KILN_COMPOSER_AUTH__MODE", "oidc")])
        .wait_with_output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("issuer and audience"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let child = run(&[("KILN_COMPOSER_AUTH__MODE", "none")]);
    let url = format!("http://127.0.0.1:{port}/api/image-builder-composer/v2/distributions");
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::blocking_get(&url).is_err() {
        assert!(Instant::now() < deadline, "composer did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, log) = common::stop(child);
    assert!(status.success(), "exit after SIGTERM: {status}");
    assert!(log.contains("unauthenticated on purpose"), "{log}");
}

mod reqwest {
    /// One GET on a fresh runtime, for a synchronous test.
    pub(crate) fn blocking_get(url: &str) -> Result<serde_json::Value, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            let r = ::reqwest::get(url).await.map_err(|e| e.to_string())?;
            r.json().await.map_err(|e| e.to_string())
        })
    }
}
