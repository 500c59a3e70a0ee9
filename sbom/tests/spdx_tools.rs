//! The SPDX tools' own validator (`pyspdxtools -i`, spdx-tools from PyPI in
//! the tools venv that tools/test.sh makes) accepts what kiln-sbom writes
//! for both package formats: rpm licenses as SPDX expressions and as
//! `LicenseRef-`s with their text, network and `file:` URLs, packages
//! without a checksum. The image builds' documents are validated in
//! `worker/tests/e2e.rs`.

use std::collections::BTreeMap;
use std::path::Path;

use kiln_api::osbuild::{InstalledPackage, SourcePackage};
use kiln_sbom::{document, ManifestSources, PackageFormat, SbomInputs};

fn pyspdxtools(file: &Path) -> (bool, String) {
    kiln_testsupport::spdx::validate(file)
}

fn rpm(name: &str, license: &str, checksum: Option<char>) -> InstalledPackage {
    InstalledPackage {
        name: name.into(),
        version: "5.1.8".into(),
        release: Some("6.el9".into()),
        epoch: Some("1".into()),
        arch: "x86_64".into(),
        source: Some(SourcePackage {
            name: name.into(),
            version: Some("5.1.8-6.el9".into()),
        }),
        license: Some(license.into()),
        checksum: checksum.map(|c| format!("sha256:{}", c.to_string().repeat(64))),
    }
}

#[test]
fn pyspdxtools_accepts_kilns_documents() {
    let sources = ManifestSources {
        urls: BTreeMap::from([
            (
                format!("sha256:{}", "a".repeat(64)),
                "https://dl.rockylinux.org/pub/rocky/9/BaseOS/x86_64/os/Packages/b/bash-5.1.8-6.el9.x86_64.rpm".into(),
            ),
            (
                format!("sha256:{}", "b".repeat(64)),
                "file:///srv/mirror/Packages/libstdc++-11.rpm".into(),
            ),
        ]),
        source_epochs: BTreeMap::from([("os".into(), 1_731_974_400)]),
    };
    let packages = [
        rpm("bash", "GPLv3+", Some('a')),
        rpm(
            "libstdc++",
            "GPL-3.0-or-later WITH GCC-exception-3.1",
            Some('b'),
        ),
        rpm(
            "glibc",
            "LGPLv2+ and LGPLv2+ with exceptions and GPLv2+",
            None,
        ),
        rpm("setup", "Public Domain", None),
        rpm("filesystem", "(none)", None),
    ];
    let doc = document(&SbomInputs {
        image: "qcow2 x86_64 disk.qcow2",
        pipeline: "os",
        format: PackageFormat::Rpm,
        packages: &packages,
        sources: &sources,
    });
    assert_eq!(doc.has_extracted_licensing_infos.len(), 3);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("disk.qcow2.spdx.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let (ok, said) = pyspdxtools(&file);
    assert!(ok, "pyspdxtools: {said}");

    // The check bites: a license reference the document does not define.
    let mut broken = doc.clone();
    broken.packages[0].license_declared = Some("LicenseRef-undefined".into());
    std::fs::write(&file, serde_json::to_vec_pretty(&broken).unwrap()).unwrap();
    let (ok, said) = pyspdxtools(&file);
    assert!(!ok && said.contains("LicenseRef-undefined"), "{said}");
}
