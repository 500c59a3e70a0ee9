//! The reference documents kiln is checked against (OpenCHAMI's swagger
//! files, osbuild's schemas, the Cloud API document) live beside the
//! repository, in `../shared/reference/`, where CI has them; a plain clone
//! does not. Tests still run their behaviour checks without them, and report
//! the reference part they could not check with [`skipped`]: one marker line,
//! [`SKIPPED_MARKER`], that `tools/test.sh` counts as skipped in its summary.

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

/// The start of the line [`skipped`] prints; `tools/test.sh` counts these.
pub const SKIPPED_MARKER: &str = "kiln-test-skipped:";

/// `../shared/reference/<name>` beside the workspace, if it is there.
pub fn dir(name: &str) -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/reference")
        .join(name);
    dir.is_dir().then_some(dir)
}

/// Reports that the running test could not check `what` against its
/// reference. Once per test (libtest names each test's thread after it):
/// a test counts as one skip however many checks it leaves out.
///
/// Written to the process's stderr directly, not through `eprintln!`, so
/// that libtest's output capture does not swallow it for passing tests.
pub fn skipped(what: &str) {
    static REPORTED: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let test = std::thread::current()
        .name()
        .unwrap_or("(unnamed thread)")
        .to_owned();
    let mut reported = REPORTED.lock().unwrap_or_else(|p| p.into_inner());
    if reported
        .get_or_insert_with(HashSet::new)
        .insert(test.clone())
    {
        let line = format!("\n{SKIPPED_MARKER} {test}: {what}\n");
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
}
