//! `tools/gen-certs.sh`: what it issues (usages, names, key modes) and that a
//! second run keeps what exists.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn gen_certs(out: &Path, args: &[&str]) -> std::process::Output {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tools/gen-certs.sh");
    Command::new("bash")
        .arg(script)
        .arg("--out")
        .arg(out)
        .args(args)
        .output()
        .unwrap()
}

/// `openssl x509 -text` of a certificate.
fn text(cert: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(cert)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", cert.display());
    String::from_utf8(out.stdout).unwrap()
}

fn verify(ca: &Path, cert: &Path, purpose: &str) -> bool {
    Command::new("openssl")
        .args(["verify", "-purpose", purpose, "-CAfile"])
        .arg(ca)
        .arg(cert)
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn a_ca_a_server_and_clients_with_their_usages() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = gen_certs(
        d,
        &[
            "--server-san",
            "localhost",
            "--server-san",
            "composer.example",
            "--worker",
            "worker1",
            "--client",
            "kiln-cli",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let ca = text(&d.join("ca.pem"));
    assert!(ca.contains("CA:TRUE"), "{ca}");
    assert!(ca.contains("Certificate Sign, CRL Sign"), "{ca}");
    assert!(ca.contains("prime256v1"), "EC P-256: {ca}");

    let server = text(&d.join("composer.pem"));
    assert!(server.contains("TLS Web Server Authentication"), "{server}");
    assert!(
        !server.contains("TLS Web Client Authentication"),
        "{server}"
    );
    assert!(
        server.contains("IP Address:127.0.0.1, DNS:localhost, DNS:composer.example"),
        "{server}"
    );
    let worker = text(&d.join("worker-worker1.pem"));
    assert!(worker.contains("TLS Web Client Authentication"), "{worker}");
    assert!(
        !worker.contains("TLS Web Server Authentication"),
        "{worker}"
    );
    assert!(worker.contains("DNS:worker1"), "{worker}");
    assert!(text(&d.join("client-kiln-cli.pem")).contains("DNS:kiln-cli"));

    let ca_pem = d.join("ca.pem");
    assert!(verify(&ca_pem, &d.join("composer.pem"), "sslserver"));
    assert!(verify(&ca_pem, &d.join("worker-worker1.pem"), "sslclient"));
    assert!(!verify(&ca_pem, &d.join("worker-worker1.pem"), "sslserver"));

    for key in [
        "ca.key",
        "composer.key",
        "worker-worker1.key",
        "client-kiln-cli.key",
    ] {
        let mode = std::fs::metadata(d.join(key)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }
}

#[test]
fn a_second_run_keeps_the_ca_and_adds_only_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(gen_certs(d, &["--worker", "worker1"]).status.success());
    let ca = std::fs::read(d.join("ca.pem")).unwrap();
    let worker1 = std::fs::read(d.join("worker-worker1.pem")).unwrap();

    let out = gen_certs(d, &["--worker", "worker1", "--worker", "worker2"]);
    assert!(out.status.success());
    assert_eq!(std::fs::read(d.join("ca.pem")).unwrap(), ca);
    assert_eq!(
        std::fs::read(d.join("worker-worker1.pem")).unwrap(),
        worker1
    );
    assert!(verify(
        &d.join("ca.pem"),
        &d.join("worker-worker2.pem"),
        "sslclient"
    ));
    let made = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        made.trim(),
        format!("made {}/worker-worker2.pem (worker2)", d.display())
    );

    // A name that is no DNS name is refused before anything is written.
    let out = gen_certs(d, &["--worker", "bad name"]);
    assert!(!out.status.success());
    assert!(!d.join("worker-bad name.pem").exists());
}
