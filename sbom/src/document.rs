//! One image pipeline's installed packages as an SPDX 2.3 document.

use std::collections::BTreeSet;

use kiln_api::osbuild::InstalledPackage;
use kiln_api::sbom::{
    CreationInfo, ExternalRef, ExtractedLicensingInfo, Relationship, SpdxChecksum, SpdxDocument,
    SpdxPackage, NOASSERTION, SPDX_VERSION,
};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::manifest::ManifestSources;
use crate::CREATOR;

/// Where every kiln document's namespace starts; the rest is the image's
/// name and a digest of the document's inputs. `.invalid` (RFC 2606): a
/// namespace is a unique name, not a place to fetch the document from.
pub const NAMESPACE_PREFIX: &str = "https://kiln.invalid/spdx/";

/// The package manager whose database listed the packages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageFormat {
    Deb,
    Rpm,
}

impl PackageFormat {
    /// The format of the packages an install stage reports: kiln's
    /// `kiln.dpkg` (and osbuild's apt and dpkg stages), osbuild's rpm (and
    /// dnf) stages.
    pub fn of_stage(stage: &str) -> Option<PackageFormat> {
        match stage {
            "kiln.dpkg" | "org.osbuild.apt" | "org.osbuild.dpkg" => Some(PackageFormat::Deb),
            "org.osbuild.rpm" | "org.osbuild.dnf" | "org.osbuild.dnf4" => Some(PackageFormat::Rpm),
            _ => None,
        }
    }

    fn purl_type(self) -> &'static str {
        match self {
            PackageFormat::Deb => "deb",
            PackageFormat::Rpm => "rpm",
        }
    }
}

/// Everything a document is made from. Nothing here may name the build
/// itself (compose, job, worker, time of day): the same image built twice
/// gives the same document.
#[derive(Debug, Clone, Serialize)]
pub struct SbomInputs<'a> {
    /// The image, as the document names it (e.g. `tar x86_64 root.tar`).
    pub image: &'a str,
    /// The pipeline whose tree has the packages installed.
    pub pipeline: &'a str,
    pub format: PackageFormat,
    /// As the install stages read them back from the tree's database
    /// (hashed sorted, so the order they come in does not count).
    #[serde(skip)]
    pub packages: &'a [InstalledPackage],
    /// The manifest's package files and source epochs.
    #[serde(skip)]
    pub sources: &'a ManifestSources,
}

/// The document for `inputs`: one SPDX package per installed package,
/// sorted by name, architecture and version, each described by the
/// document.
pub fn document(inputs: &SbomInputs<'_>) -> SpdxDocument {
    let mut installed: Vec<&InstalledPackage> = inputs.packages.iter().collect();
    installed.sort_by_key(|p| (&p.name, &p.arch, p.full_version()));
    let epoch = inputs
        .sources
        .source_epochs
        .get(inputs.pipeline)
        .copied()
        .unwrap_or(0);

    let mut ids = BTreeSet::new();
    let mut licenses: Vec<ExtractedLicensingInfo> = Vec::new();
    let mut packages = Vec::with_capacity(installed.len());
    for p in &installed {
        let id = unique_id(
            &mut ids,
            &format!(
                "SPDXRef-Package-{}-{}-{}",
                inputs.format.purl_type(),
                p.name,
                p.arch
            ),
        );
        let url = p.checksum.as_ref().and_then(|c| inputs.sources.urls.get(c));
        let (download_location, comment) = match url {
            Some(u) if is_network_url(u) => (u.clone(), None),
            // A file: URL is a path on the build host, no place anyone else
            // can download from (and SPDX tools refuse it as a location).
            Some(u) => (
                NOASSERTION.to_owned(),
                Some(format!("installed from {u} on the build host")),
            ),
            None => (NOASSERTION.to_owned(), None),
        };
        let checksums = p
            .checksum
            .as_deref()
            .and_then(|c| c.strip_prefix("sha256:"))
            .filter(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(|hex| SpdxChecksum {
                algorithm: "SHA256".into(),
                checksum_value: hex.to_ascii_lowercase(),
            })
            .into_iter()
            .collect();
        let license_declared = match p.license.as_deref() {
            Some(text) => {
                let (value, info) = crate::license::declared(text);
                if let Some(info) = info {
                    if !licenses.iter().any(|l| l.license_id == info.license_id) {
                        licenses.push(info);
                    }
                }
                value
            }
            None => NOASSERTION.to_owned(),
        };
        packages.push(SpdxPackage {
            spdx_id: id,
            name: p.name.clone(),
            version_info: Some(p.full_version()),
            supplier: Some(NOASSERTION.into()),
            originator: None,
            download_location,
            files_analyzed: false,
            checksums,
            source_info: p.source.as_ref().map(|s| match &s.version {
                Some(v) => format!("built from the source package {} {v}", s.name),
                None => format!("built from the source package {}", s.name),
            }),
            license_concluded: Some(NOASSERTION.into()),
            license_declared: Some(license_declared),
            copyright_text: Some(NOASSERTION.into()),
            summary: None,
            comment,
            external_refs: vec![ExternalRef {
                reference_category: "PACKAGE-MANAGER".into(),
                reference_type: "purl".into(),
                reference_locator: purl(inputs.format, p),
            }],
            primary_package_purpose: None,
        });
    }
    licenses.sort_by(|a, b| a.license_id.cmp(&b.license_id));
    let relationships = packages
        .iter()
        .map(|p| Relationship {
            spdx_element_id: "SPDXRef-DOCUMENT".into(),
            relationship_type: "DESCRIBES".into(),
            related_spdx_element: p.spdx_id.clone(),
        })
        .collect();

    SpdxDocument {
        spdx_version: SPDX_VERSION.into(),
        data_license: "CC0-1.0".into(),
        spdx_id: "SPDXRef-DOCUMENT".into(),
        name: inputs.image.to_owned(),
        document_namespace: format!(
            "{NAMESPACE_PREFIX}{}-{}",
            sanitise(inputs.image),
            inputs_digest(inputs, epoch, &installed)
        ),
        creation_info: CreationInfo {
            created: created(epoch),
            creators: vec![CREATOR.into()],
        },
        packages,
        relationships,
        has_extracted_licensing_infos: licenses,
    }
}

/// sha256 over the inputs that make the document, the package files' URLs
/// included (a package moved to another mirror is another document).
fn inputs_digest(inputs: &SbomInputs<'_>, epoch: u64, installed: &[&InstalledPackage]) -> String {
    #[derive(Serialize)]
    struct Hashed<'a> {
        creator: &'static str,
        inputs: &'a SbomInputs<'a>,
        epoch: u64,
        packages: Vec<(&'a InstalledPackage, Option<&'a String>)>,
    }
    let hashed = Hashed {
        creator: CREATOR,
        inputs,
        epoch,
        packages: installed
            .iter()
            .map(|p| {
                let url = p.checksum.as_ref().and_then(|c| inputs.sources.urls.get(c));
                (*p, url)
            })
            .collect(),
    };
    // Serialising plain structs, vectors and strings cannot fail.
    let bytes = serde_json::to_vec(&hashed).unwrap_or_default();
    hex::encode(Sha256::digest(&bytes))
}

/// The source epoch as SPDX's `YYYY-MM-DDThh:mm:ssZ`.
fn created(epoch: u64) -> String {
    let at = i64::try_from(epoch)
        .ok()
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        .unwrap_or_default();
    at.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn is_network_url(url: &str) -> bool {
    ["https://", "http://", "ftp://"]
        .iter()
        .any(|s| url.len() > s.len() && url[..s.len()].eq_ignore_ascii_case(s))
}

/// Letters, digits, `.` and `-`: what an SPDX id may hold.
fn sanitise(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// `base` sanitised, with `-2`, `-3`, … when an earlier package took it.
fn unique_id(taken: &mut BTreeSet<String>, base: &str) -> String {
    let base = sanitise(base);
    let mut id = base.clone();
    let mut n = 2;
    while !taken.insert(id.clone()) {
        id = format!("{base}-{n}");
        n += 1;
    }
    id
}

/// purl's percent-encoding: everything but letters, digits and `.-_~`.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"._-~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `pkg:deb/NAME@VERSION?arch=ARCH`, `pkg:rpm/NAME@VERSION-RELEASE?arch=ARCH&epoch=E`.
fn purl(format: PackageFormat, p: &InstalledPackage) -> String {
    let version = match format {
        PackageFormat::Deb => p.version.clone(),
        PackageFormat::Rpm => match p.release.as_deref().filter(|r| !r.is_empty()) {
            Some(r) => format!("{}-{r}", p.version),
            None => p.version.clone(),
        },
    };
    let mut purl = format!(
        "pkg:{}/{}@{}?arch={}",
        format.purl_type(),
        encode(&p.name),
        encode(&version),
        encode(&p.arch)
    );
    if format == PackageFormat::Rpm {
        if let Some(e) = p.epoch.as_deref().filter(|e| !e.is_empty()) {
            purl.push_str(&format!("&epoch={}", encode(e)));
        }
    }
    purl
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_api::osbuild::SourcePackage;
    use std::collections::BTreeMap;

    fn deb(name: &str, version: &str, hex: char) -> InstalledPackage {
        InstalledPackage {
            name: name.into(),
            version: version.into(),
            arch: "amd64".into(),
            source: Some(SourcePackage {
                name: format!("{name}-src"),
                version: Some(version.into()),
            }),
            checksum: Some(format!("sha256:{}", hex.to_string().repeat(64))),
            ..Default::default()
        }
    }

    fn sources() -> ManifestSources {
        ManifestSources {
            urls: BTreeMap::from([
                (
                    format!("sha256:{}", "a".repeat(64)),
                    "https://deb.example/pool/main/libc6_2.36-9_amd64.deb".into(),
                ),
                (
                    format!("sha256:{}", "b".repeat(64)),
                    "file:///srv/mirror/pool/bash_5.2.15-2+b2_amd64.deb".into(),
                ),
            ]),
            source_epochs: BTreeMap::from([("os".into(), 1_700_000_000)]),
        }
    }

    #[test]
    fn the_same_inputs_give_the_same_bytes_in_any_order() {
        let s = sources();
        let a = [deb("libc6", "2.36-9", 'a'), deb("bash", "5.2.15-2+b2", 'b')];
        let b = [a[1].clone(), a[0].clone()];
        let doc = |packages: &[InstalledPackage]| {
            serde_json::to_string(&document(&SbomInputs {
                image: "tar x86_64 root.tar",
                pipeline: "os",
                format: PackageFormat::Deb,
                packages,
                sources: &s,
            }))
            .unwrap()
        };
        assert_eq!(doc(&a), doc(&b));
        // Another version is another document (namespace included).
        let c = [deb("libc6", "2.36-9+deb12u1", 'a'), a[1].clone()];
        let (da, dc): (SpdxDocument, SpdxDocument) = (
            serde_json::from_str(&doc(&a)).unwrap(),
            serde_json::from_str(&doc(&c)).unwrap(),
        );
        assert_ne!(da.document_namespace, dc.document_namespace);
        assert_eq!(da.creation_info, dc.creation_info);
    }

    #[test]
    fn the_document_has_spdx_shape() {
        let s = sources();
        let mut rpm = InstalledPackage {
            name: "bash".into(),
            version: "5.1.8".into(),
            release: Some("6.el9".into()),
            epoch: Some("1".into()),
            arch: "x86_64".into(),
            source: Some(SourcePackage {
                name: "bash".into(),
                version: Some("5.1.8-6.el9".into()),
            }),
            license: Some("GPLv3+".into()),
            checksum: Some(format!("sha256:{}", "a".repeat(64))),
        };
        let mut other = rpm.clone();
        other.name = "libstdc++".into();
        other.license = Some("GPL-3.0-or-later WITH GCC-exception-3.1".into());
        other.checksum = None;
        rpm.source = None;
        let doc = document(&SbomInputs {
            image: "qcow2 x86_64 disk.qcow2",
            pipeline: "os",
            format: PackageFormat::Rpm,
            packages: &[rpm, other],
            sources: &s,
        });
        let v = serde_json::to_value(&doc).unwrap();
        assert_eq!(v["spdxVersion"], "SPDX-2.3");
        assert_eq!(v["dataLicense"], "CC0-1.0");
        assert_eq!(v["SPDXID"], "SPDXRef-DOCUMENT");
        assert_eq!(v["name"], "qcow2 x86_64 disk.qcow2");
        assert_eq!(v["creationInfo"]["created"], "2023-11-14T22:13:20Z");
        assert_eq!(
            v["creationInfo"]["creators"],
            serde_json::json!([format!("Tool: kiln-{}", env!("CARGO_PKG_VERSION"))])
        );
        let ns = v["documentNamespace"].as_str().unwrap();
        assert!(
            ns.starts_with("https://kiln.invalid/spdx/qcow2-x86-64-disk.qcow2-") && ns.len() > 64,
            "{ns}"
        );
        let p = &v["packages"][0];
        assert_eq!(p["SPDXID"], "SPDXRef-Package-rpm-bash-x86-64");
        assert_eq!(p["versionInfo"], "1:5.1.8-6.el9");
        assert_eq!(
            p["downloadLocation"],
            "https://deb.example/pool/main/libc6_2.36-9_amd64.deb"
        );
        assert_eq!(
            p["checksums"],
            serde_json::json!([{"algorithm": "SHA256", "checksumValue": "a".repeat(64)}])
        );
        assert_eq!(p["filesAnalyzed"], false);
        assert_eq!(p["supplier"], "NOASSERTION");
        assert_eq!(p["licenseConcluded"], "NOASSERTION");
        assert!(p.get("sourceInfo").is_none());
        let lref = p["licenseDeclared"].as_str().unwrap();
        assert!(lref.starts_with("LicenseRef-GPLv3--"), "{lref}");
        assert_eq!(v["hasExtractedLicensingInfos"][0]["licenseId"], lref);
        assert_eq!(
            v["hasExtractedLicensingInfos"][0]["extractedText"],
            "GPLv3+"
        );
        assert_eq!(
            p["externalRefs"][0]["referenceLocator"],
            "pkg:rpm/bash@5.1.8-6.el9?arch=x86_64&epoch=1"
        );
        let q = &v["packages"][1];
        assert_eq!(q["SPDXID"], "SPDXRef-Package-rpm-libstdc---x86-64");
        assert_eq!(
            q["licenseDeclared"],
            "GPL-3.0-or-later WITH GCC-exception-3.1"
        );
        assert_eq!(q["downloadLocation"], "NOASSERTION");
        assert!(q.get("checksums").is_none());
        assert_eq!(
            q["sourceInfo"],
            "built from the source package bash 5.1.8-6.el9"
        );
        assert_eq!(
            q["externalRefs"][0]["referenceLocator"],
            "pkg:rpm/libstdc%2B%2B@5.1.8-6.el9?arch=x86_64&epoch=1"
        );
        assert_eq!(doc.packages[1].arch(), Some("x86_64"));
        assert_eq!(
            v["relationships"],
            serde_json::json!([
                {"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES",
                 "relatedSpdxElement": "SPDXRef-Package-rpm-bash-x86-64"},
                {"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES",
                 "relatedSpdxElement": "SPDXRef-Package-rpm-libstdc---x86-64"},
            ])
        );
        // And it reads back as the typed document.
        let back: SpdxDocument = serde_json::from_value(v).unwrap();
        assert_eq!(back, doc);
    }

    #[test]
    fn deb_versions_and_local_files() {
        let s = sources();
        let doc = document(&SbomInputs {
            image: "tar",
            pipeline: "os",
            format: PackageFormat::Deb,
            packages: &[deb("bash", "1:5.2.15-2+b2", 'b')],
            sources: &s,
        });
        let p = &doc.packages[0];
        assert_eq!(p.version_info.as_deref(), Some("1:5.2.15-2+b2"));
        assert_eq!(p.purl(), Some("pkg:deb/bash@1%3A5.2.15-2%2Bb2?arch=amd64"));
        assert_eq!(p.download_location, "NOASSERTION");
        assert_eq!(
            p.comment.as_deref(),
            Some("installed from file:///srv/mirror/pool/bash_5.2.15-2+b2_amd64.deb on the build host")
        );
        assert_eq!(
            p.source_info.as_deref(),
            Some("built from the source package bash-src 1:5.2.15-2+b2")
        );
        assert_eq!(p.license_declared.as_deref(), Some("NOASSERTION"));
        // No source epoch: the epoch itself, still no clock.
        let none = ManifestSources::default();
        let doc = document(&SbomInputs {
            image: "tar",
            pipeline: "os",
            format: PackageFormat::Deb,
            packages: &[],
            sources: &none,
        });
        assert_eq!(doc.creation_info.created, "1970-01-01T00:00:00Z");
    }

    #[test]
    fn ids_are_unique() {
        let mut taken = BTreeSet::new();
        assert_eq!(unique_id(&mut taken, "SPDXRef-a+b"), "SPDXRef-a-b");
        assert_eq!(unique_id(&mut taken, "SPDXRef-a-b"), "SPDXRef-a-b-2");
        assert_eq!(unique_id(&mut taken, "SPDXRef-a_b"), "SPDXRef-a-b-3");
    }
}
