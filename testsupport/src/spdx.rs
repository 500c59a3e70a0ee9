//! The SPDX tools' own validator: `pyspdxtools -i FILE` from spdx-tools
//! (PyPI), in the tools venv that tools/test.sh makes.

use std::path::Path;

/// Whether `pyspdxtools -i file` accepts the document, and what it said
/// (stdout, then stderr).
pub fn validate(file: &Path) -> (bool, String) {
    let tool = crate::storage::tools_dir().join("venv/bin/pyspdxtools");
    assert!(
        tool.is_file(),
        "{} is missing: run tools/test.sh, or pip install spdx-tools into that venv",
        tool.display()
    );
    let out = std::process::Command::new(&tool)
        .arg("-i")
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", tool.display()));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}
