//! Where packages meet manifests: the one conversion from a solved package
//! to the file a manifest lists, and the ids of the stages that install
//! them (the executor's checkpoints).

use kiln_api::depsolve::DepsolvedPackage;
use serde_json::Value;

use crate::generate::PackageFile;
use crate::ManifestError;

/// The stage types that install packages into a tree.
pub const INSTALL_STAGES: &[&str] = &["kiln.dpkg", "org.osbuild.rpm"];

impl From<&DepsolvedPackage> for PackageFile {
    /// The package as a manifest fetches it: the full `[epoch:]version[-release]`
    /// the package manager knows, and the hex SHA-256 of the file.
    fn from(p: &DepsolvedPackage) -> PackageFile {
        let version = match (&p.epoch, p.release.is_empty()) {
            (Some(e), false) => format!("{e}:{}-{}", p.version, p.release),
            (Some(e), true) => format!("{e}:{}", p.version),
            (None, false) => format!("{}-{}", p.version, p.release),
            (None, true) => p.version.clone(),
        };
        PackageFile {
            name: p.name.clone(),
            version,
            arch: p.arch.clone(),
            url: p.url.clone(),
            sha256: p
                .checksum
                .strip_prefix("sha256:")
                .unwrap_or(&p.checksum)
                .to_owned(),
        }
    }
}

/// A solved set as a manifest lists its files.
pub fn package_files(packages: &[DepsolvedPackage]) -> Vec<PackageFile> {
    packages.iter().map(PackageFile::from).collect()
}

/// The ids of the stages that install packages, in manifest order: a
/// worker checkpoints them, so that a build differing only in its
/// customizations starts after them.
pub fn install_stage_ids(manifest: &Value) -> Result<Vec<String>, ManifestError> {
    let ids = crate::ids(manifest)?;
    let pipelines = manifest
        .get("pipelines")
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    let mut out = Vec::new();
    for (p, pids) in pipelines.zip(ids.pipelines) {
        let stages = p
            .get("stages")
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        for (stage, id) in stages.zip(pids.stages) {
            let kind = stage.get("type").and_then(Value::as_str).unwrap_or("");
            if INSTALL_STAGES.contains(&kind) {
                out.push(id);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn solved(epoch: Option<&str>, version: &str, release: &str) -> DepsolvedPackage {
        DepsolvedPackage {
            package_type: "deb".into(),
            name: "libc6".into(),
            version: version.into(),
            release: release.into(),
            epoch: epoch.map(str::to_owned),
            arch: "amd64".into(),
            sigmd5: String::new(),
            checksum: "sha256:ab12".into(),
            url: "http://deb/libc6.deb".into(),
            size: 1,
        }
    }

    #[test]
    fn a_solved_package_keeps_its_full_version() {
        let f = PackageFile::from(&solved(Some("1"), "2.36", "9+deb12u4"));
        assert_eq!(f.version, "1:2.36-9+deb12u4");
        assert_eq!(f.sha256, "ab12");
        assert_eq!(PackageFile::from(&solved(None, "1.0", "")).version, "1.0");
        assert_eq!(
            PackageFile::from(&solved(Some("2"), "1.0", "")).version,
            "2:1.0"
        );
        assert_eq!(
            PackageFile::from(&solved(None, "252.26", "1")).version,
            "252.26-1"
        );
    }

    #[test]
    fn install_stages_are_found_by_id() {
        let m = json!({"version": "2", "pipelines": [{"name": "os", "stages": [
            {"type": "kiln.dpkg", "options": {}},
            {"type": "org.osbuild.hostname", "options": {"hostname": "h"}},
        ]}]});
        let ids = crate::ids(&m).unwrap();
        assert_eq!(
            install_stage_ids(&m).unwrap(),
            vec![ids.pipelines[0].stages[0].clone()]
        );
        assert!(install_stage_ids(&json!({"version": "1"})).is_err());
    }
}
