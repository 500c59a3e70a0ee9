//! The packages added, removed and changed between two images' SBOMs.

use std::collections::{BTreeMap, BTreeSet};

use kiln_api::sbom::SpdxDocument;
use serde::{Deserialize, Serialize};

/// A package as the diff names it: name and architecture (from its purl;
/// empty when it has none).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PackageKey {
    pub name: String,
    pub arch: String,
}

/// A package only one side has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageVersion {
    pub name: String,
    pub arch: String,
    pub version: String,
}

/// A package both sides have, at other versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangedPackage {
    pub name: String,
    pub arch: String,
    pub old: String,
    pub new: String,
}

/// Sorted by name and architecture.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageDiff {
    pub added: Vec<PackageVersion>,
    pub removed: Vec<PackageVersion>,
    pub changed: Vec<ChangedPackage>,
}

impl PackageDiff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// Versions by package, over all the documents of one side (an rpm tree
/// may hold several versions of one kernel package: they are one entry).
fn versions(docs: &[&SpdxDocument]) -> BTreeMap<PackageKey, BTreeSet<String>> {
    let mut out: BTreeMap<PackageKey, BTreeSet<String>> = BTreeMap::new();
    for doc in docs {
        for p in &doc.packages {
            let key = PackageKey {
                name: p.name.clone(),
                arch: p.arch().unwrap_or_default().to_owned(),
            };
            out.entry(key)
                .or_default()
                .insert(p.version_info.clone().unwrap_or_default());
        }
    }
    out
}

fn joined(v: &BTreeSet<String>) -> String {
    v.iter().cloned().collect::<Vec<_>>().join(", ")
}

/// What `new` has that `old` has not, what it lost, and what it has at
/// another version.
pub fn diff(old: &[&SpdxDocument], new: &[&SpdxDocument]) -> PackageDiff {
    let (old, new) = (versions(old), versions(new));
    let mut d = PackageDiff::default();
    for (key, v) in &new {
        match old.get(key) {
            None => d.added.push(PackageVersion {
                name: key.name.clone(),
                arch: key.arch.clone(),
                version: joined(v),
            }),
            Some(o) if o != v => d.changed.push(ChangedPackage {
                name: key.name.clone(),
                arch: key.arch.clone(),
                old: joined(o),
                new: joined(v),
            }),
            Some(_) => {}
        }
    }
    for (key, v) in &old {
        if !new.contains_key(key) {
            d.removed.push(PackageVersion {
                name: key.name.clone(),
                arch: key.arch.clone(),
                version: joined(v),
            });
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{document, ManifestSources, PackageFormat, SbomInputs};
    use kiln_api::osbuild::InstalledPackage;

    fn doc(packages: &[(&str, &str)]) -> SpdxDocument {
        let packages: Vec<InstalledPackage> = packages
            .iter()
            .map(|(n, v)| InstalledPackage {
                name: (*n).into(),
                version: (*v).into(),
                arch: "amd64".into(),
                ..Default::default()
            })
            .collect();
        document(&SbomInputs {
            image: "tar",
            pipeline: "os",
            format: PackageFormat::Deb,
            packages: &packages,
            sources: &ManifestSources::default(),
        })
    }

    #[test]
    fn added_removed_and_changed() {
        let a = doc(&[("bash", "5.2-1"), ("less", "590-2"), ("zlib1g", "1.2")]);
        let b = doc(&[("bash", "5.2-2"), ("zlib1g", "1.2"), ("zstd", "1.5")]);
        let d = diff(&[&a], &[&b]);
        let pv = |n: &str, v: &str| PackageVersion {
            name: n.into(),
            arch: "amd64".into(),
            version: v.into(),
        };
        assert_eq!(d.added, vec![pv("zstd", "1.5")]);
        assert_eq!(d.removed, vec![pv("less", "590-2")]);
        assert_eq!(
            d.changed,
            vec![ChangedPackage {
                name: "bash".into(),
                arch: "amd64".into(),
                old: "5.2-1".into(),
                new: "5.2-2".into()
            }]
        );
        assert!(diff(&[&a], &[&a]).is_empty());
        assert_eq!(diff(&[&b], &[&a]).added, vec![pv("less", "590-2")]);
    }
}
