//! The SBOM of a built image: made from what the install stages read back
//! from the tree's package database and the manifest's package sources
//! (kiln-sbom), written into the export as `<file name>.spdx.json` so that
//! every target uploads it beside the artifacts, and carried in the build's
//! result for the composer's `/composes/{id}/sboms`.

use std::io::Write;
use std::path::Path;

use kiln_api::jobs::{BuildArgs, ManifestResult};
use kiln_api::osbuild::BuildOutput;
use kiln_api::sbom::{ImageSbom, PipelinePurpose, SbomType};
use kiln_sbom::{ManifestSources, PackageFormat, SbomInputs};

/// The SBOM file's name for the image file `filename` (pipeline `None`:
/// the only one), or for one of several package-installing pipelines.
pub(crate) fn file_name(filename: &str, pipeline: Option<&str>) -> String {
    match pipeline {
        None => format!("{filename}.spdx.json"),
        Some(p) => format!("{filename}.{p}.spdx.json"),
    }
}

/// Makes the image's SBOMs (one per pipeline that installed packages; none
/// when the executor reported no packages, as osbuild's own stages may
/// not) and writes each into `exported`.
pub(crate) fn write(
    args: &BuildArgs,
    arch: &str,
    manifest: &ManifestResult,
    result: &BuildOutput,
    exported: &Path,
) -> Result<Vec<ImageSbom>, String> {
    let sets: Vec<_> = result
        .installed_sets()
        .into_iter()
        .filter_map(|s| Some((PackageFormat::of_stage(&s.stage)?, s)))
        .collect();
    if sets.is_empty() {
        return Ok(Vec::new());
    }
    let sources = ManifestSources::from_manifest(&manifest.manifest).map_err(|e| e.to_string())?;
    let image = format!("{} {arch} {}", args.image_type, manifest.filename);
    let mut out = Vec::new();
    for (format, set) in &sets {
        let sbom = kiln_sbom::document(&SbomInputs {
            image: &image,
            pipeline: &set.pipeline,
            format: *format,
            packages: &set.packages,
            sources: &sources,
        });
        let pipeline = (sets.len() > 1).then_some(set.pipeline.as_str());
        // Pipeline names come from the manifest: only a plain one becomes
        // part of a file name.
        if let Some(p) = pipeline {
            if p.is_empty() || p.starts_with('.') || p.contains(['/', '\0']) {
                return Err(format!("pipeline name {p:?} is not a plain name"));
            }
        }
        let path = exported.join(file_name(&manifest.filename, pipeline));
        let mut bytes = serde_json::to_vec_pretty(&sbom).map_err(|e| e.to_string())?;
        bytes.push(b'\n');
        // A new file: never through a link or over a file the build left there.
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .and_then(|mut f| f.write_all(&bytes))
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        out.push(ImageSbom {
            sbom,
            sbom_type: SbomType::Spdx,
            pipeline_name: set.pipeline.clone(),
            pipeline_purpose: PipelinePurpose::Image,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn inputs() -> (BuildArgs, ManifestResult, BuildOutput) {
        let args = BuildArgs {
            image: 0,
            image_type: "tar".into(),
            targets: Vec::new(),
            requested_by: None,
        };
        let manifest = ManifestResult {
            manifest: json!({"version": "2",
                "pipelines": [{"name": "os", "source-epoch": 1700000000}],
                "sources": {"org.osbuild.curl": {"items": {
                    format!("sha256:{}", "a".repeat(64)): "https://deb.example/bash.deb"}}}}),
            export: "archive".into(),
            filename: "root.tar".into(),
            kernel_cmdline: None,
            checkpoints: Vec::new(),
        };
        let result: BuildOutput = serde_json::from_value(json!({
            "type": "result", "success": true,
            "metadata": {"os": {"kiln.dpkg": {"packages": [{"name": "bash", "version": "5.2",
                "arch": "amd64", "checksum": format!("sha256:{}", "a".repeat(64))}]}}},
        }))
        .expect("result");
        (args, manifest, result)
    }

    #[test]
    fn the_sbom_goes_beside_the_image_and_never_through_a_link() {
        let (args, manifest, result) = inputs();
        let export = tempfile::tempdir().expect("export");
        let sboms = write(&args, "x86_64", &manifest, &result, export.path()).expect("written");
        assert_eq!(sboms.len(), 1);
        assert_eq!(sboms[0].pipeline_name, "os");
        let doc = &sboms[0].sbom;
        assert_eq!(doc.name, "tar x86_64 root.tar");
        assert_eq!(
            doc.packages[0].download_location,
            "https://deb.example/bash.deb"
        );
        let file = export.path().join("root.tar.spdx.json");
        let back: kiln_api::sbom::SpdxDocument =
            serde_json::from_slice(&std::fs::read(&file).expect("file")).expect("document");
        assert_eq!(&back, doc);

        // A link the build left under that name is not followed.
        let host = tempfile::tempdir().expect("host");
        let target = host.path().join("shadow");
        std::fs::write(&target, "secret").expect("target");
        let export = tempfile::tempdir().expect("export");
        std::os::unix::fs::symlink(&target, export.path().join("root.tar.spdx.json"))
            .expect("link");
        assert!(write(&args, "x86_64", &manifest, &result, export.path()).is_err());
        assert_eq!(std::fs::read_to_string(&target).expect("target"), "secret");

        // No package-installing stage: no SBOM, no file.
        let bare: BuildOutput =
            serde_json::from_value(json!({"type": "result", "success": true})).expect("bare");
        let export = tempfile::tempdir().expect("export");
        assert!(write(&args, "x86_64", &manifest, &bare, export.path())
            .expect("nothing to write")
            .is_empty());
        assert_eq!(std::fs::read_dir(export.path()).expect("dir").count(), 0);
    }
}
