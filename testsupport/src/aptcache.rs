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

/// The host's bookworm `Packages` lists (main, updates, security), as
/// `(base URL, list file)`: what `apt-get update` left in /var/lib/apt/lists.
#[cfg(feature = "debian")]
pub fn host_bookworm_lists() -> Result<Vec<(&'static str, PathBuf)>> {
    const LISTS: &str = "/var/lib/apt/lists";
    [
        (
            "http://deb.debian.org/debian",
            "deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages",
        ),
        (
            "http://deb.debian.org/debian",
            "deb.debian.org_debian_dists_bookworm-updates_main_binary-amd64_Packages",
        ),
        (
            "http://deb.debian.org/debian-security",
            "deb.debian.org_debian-security_dists_bookworm-security_main_binary-amd64_Packages",
        ),
    ]
    .into_iter()
    .map(|(base, stem)| {
        ["", ".lz4", ".xz", ".gz"]
            .iter()
            .map(|ext| Path::new(LISTS).join(format!("{stem}{ext}")))
            .find(|p| p.exists())
            .map(|p| (base, p))
            .ok_or_else(|| {
                format!("{LISTS}/{stem}* is missing: run `apt-get update` on a bookworm host")
            })
    })
    .collect()
}

/// A local Debian mirror (suite `test`) holding exactly the packages apt
/// would install for `names` plus the essential and required set, in the
/// versions of the host's bookworm lists; returns the repository and the
/// set as (name, version).
#[cfg(feature = "debian")]
pub fn debian_mirror(
    dir: &Path,
    names: &[String],
) -> Result<(crate::debrepo::DebRepo, Vec<(String, String)>)> {
    use kiln_depsolve::compression::decompress_to_string;
    use kiln_depsolve::{IndexSource, PackageIndex};
    let mut sources = Vec::new();
    for (base, path) in host_bookworm_lists()? {
        let data = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let label = path.display().to_string();
        sources.push(IndexSource {
            base_url: base.to_owned(),
            text: decompress_to_string(&label, &data).map_err(|e| e.to_string())?,
            label,
        });
    }
    let index = PackageIndex::build("amd64", &sources).map_err(|e| e.to_string())?;
    let request = kiln_depsolve::Request {
        packages: names.to_vec(),
        essential: true,
        recommends: false,
    };
    let set = kiln_depsolve::solve(&index, &request)
        .map_err(|e| format!("depsolve on the host's lists: {e}"))?;
    let wanted: Vec<(String, String, String)> = set
        .packages
        .iter()
        .map(|p| (p.name.clone(), p.version.clone(), p.arch.clone()))
        .collect();
    let files = fetch(&wanted)?;
    let repo = crate::debrepo::DebRepo::new(dir)?;
    for f in &files {
        repo.add_file(f)?;
    }
    repo.index()?;
    Ok((
        repo,
        set.packages
            .into_iter()
            .map(|p| (p.name, p.version))
            .collect(),
    ))
}
