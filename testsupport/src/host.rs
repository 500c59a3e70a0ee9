//! Host-side helpers for tests: the cluster's TLS material, and what a
//! build left attached to the machine.

use std::path::Path;
use std::process::{Command, Stdio};

/// Runs `tools/gen-certs.sh --out OUT ARGS...` and asserts it succeeded.
pub fn gen_certs(out: &Path, args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/gen-certs.sh");
    let status = Command::new("bash")
        .arg(&script)
        .arg("--out")
        .arg(out)
        .args(args)
        .stdout(Stdio::null())
        .status()
        .expect("running tools/gen-certs.sh");
    assert!(status.success(), "gen-certs.sh {args:?} failed: {status}");
}

/// Mounts and loop devices that point into `dir`.
pub fn attachments_under(dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().into_owned();
    let mut found: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&prefix))
        .map(|p| format!("mount {p}"))
        .collect();
    for e in std::fs::read_dir("/sys/block")
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(b) = std::fs::read_to_string(e.path().join("loop/backing_file")) {
            if b.trim().starts_with(&prefix) {
                found.push(format!(
                    "{} on {}",
                    e.file_name().to_string_lossy(),
                    b.trim()
                ));
            }
        }
    }
    found
}
