//! Real Debian packages for image-build tests, fetched through apt itself
//! (`apt-get download`, with the machine's apt configuration) into a cache
//! outside the repository that every test and every run shares. Tests then
//! index them into a [`crate::debrepo::DebRepo`] on `file://`, so kiln's own
//! code never talks to the network.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Result;

/// `$KILN_DEB_CACHE`, or `~/.cache/kiln-tests/debs`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("KILN_DEB_CACHE") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".cache/kiln-tests/debs")
}

/// The file name apt gives a downloaded package (an epoch's ':' as %3a).
fn file_name(name: &str, version: &str, arch: &str) -> String {
    format!("{name}_{}_{arch}.deb", version.replace(':', "%3a"))
}

/// Makes sure every `(name, version, arch)` is in the cache and returns
/// their paths, downloading the missing ones in one `apt-get download`.
pub fn fetch(packages: &[(String, String, String)]) -> Result<Vec<PathBuf>> {
    let dir = cache_dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // Tests run in parallel: one downloader at a time.
    let lock = File::create(dir.join(".lock")).map_err(|e| format!("{}: {e}", dir.display()))?;
    lock.lock()
        .map_err(|e| format!("locking {}: {e}", dir.display()))?;
    let missing: Vec<String> = packages
        .iter()
        .filter(|(n, v, a)| !dir.join(file_name(n, v, a)).exists())
        .map(|(n, v, a)| format!("{n}:{a}={v}"))
        .collect();
    if !missing.is_empty() {
        download(&dir, &missing)?;
    }
    packages
        .iter()
        .map(|(n, v, a)| {
            let p = dir.join(file_name(n, v, a));
            if p.exists() {
                Ok(p)
            } else {
                Err(format!("apt-get download did not produce {}", p.display()))
            }
        })
        .collect()
}

fn download(dir: &Path, specs: &[String]) -> Result<()> {
    // Into a scratch directory first: a half-downloaded file never enters the cache.
    let scratch = tempfile::tempdir_in(dir).map_err(|e| e.to_string())?;
    for chunk in specs.chunks(200) {
        let out = Command::new("apt-get")
            .arg("download")
            .args(chunk)
            .current_dir(scratch.path())
            .output()
            .map_err(|e| format!("apt-get download: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "apt-get download {} failed (does `apt-get update` need to run?): {}",
                chunk.join(" "),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    for entry in std::fs::read_dir(scratch.path()).map_err(|e| e.to_string())? {
        let entry = entry.map_err(|e| e.to_string())?;
        std::fs::rename(entry.path(), dir.join(entry.file_name())).map_err(|e| e.to_string())?;
    }
    Ok(())
}
