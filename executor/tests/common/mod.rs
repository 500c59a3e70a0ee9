//! Shared helpers: running `kiln-osbuild`, and Debian 12 manifests built
//! from real packages (fetched with `apt-get download`, indexed into a
//! `file://` mirror, depsolved by kiln-depsolve, written by kiln-manifests).
#![allow(dead_code)]

use std::process::{Command, Output};

use serde_json::Value;

pub(crate) mod bios;
/// Validation against osbuild's reference schemas, as kiln-manifests' tests do it.
#[path = "../../../manifests/tests/common/mod.rs"]
pub(crate) mod osbuild_schema;
pub(crate) mod rpm_repo;

pub(crate) const EXE: &str = env!("CARGO_BIN_EXE_kiln-osbuild");

pub(crate) struct Run {
    pub code: i32,
    pub json: Value,
    pub stderr: String,
}

/// Runs `kiln-osbuild ARGS -` (the manifest on standard input) as the
/// build user: the executor refuses root.
pub(crate) fn run(args: &[&str], manifest: &Value) -> Run {
    run_under(&[], args, manifest)
}

/// [`run`] through a wrapper command: `WRAPPER... kiln-osbuild ARGS -`
/// (`faketime -f +1d`, say).
pub(crate) fn run_under(wrapper: &[&str], args: &[&str], manifest: &Value) -> Run {
    let exe = kiln_testsupport::builduser::binary(EXE);
    let mut cmd = match wrapper.split_first() {
        None => Command::new(&exe),
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(&exe);
            c
        }
    };
    kiln_testsupport::builduser::run_as(&mut cmd);
    let mut child = cmd
        .args(args)
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(manifest.to_string().as_bytes()).unwrap();
    }
    let out: Output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    Run {
        code: out.status.code().unwrap_or(-1),
        json: serde_json::from_str(&stdout).unwrap_or(Value::Null),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `kiln-osbuild --json` with `DIR/store` as its store, `DIR/out` as its
/// output directory, and these pipelines exported.
pub(crate) fn export(dir: &std::path::Path, manifest: &Value, exports: &[&str]) -> Run {
    export_with(dir, manifest, exports, &[])
}

/// [`export`] with more arguments (`--checkpoint ID`, ...).
pub(crate) fn export_with(
    dir: &std::path::Path,
    manifest: &Value,
    exports: &[&str],
    more: &[&str],
) -> Run {
    export_under(&[], dir, manifest, exports, more)
}

/// [`export_with`] through a wrapper command (see [`run_under`]).
pub(crate) fn export_under(
    wrapper: &[&str],
    dir: &std::path::Path,
    manifest: &Value,
    exports: &[&str],
    more: &[&str],
) -> Run {
    // The build user's: the executor makes its store and output there.
    kiln_testsupport::builduser::give(dir);
    let (store, out) = (dir.join("store"), dir.join("out"));
    let mut args = vec![
        "--json",
        "--store",
        store.to_str().unwrap(),
        "--output-directory",
        out.to_str().unwrap(),
    ];
    args.extend(more);
    for e in exports {
        args.extend(["--export", e]);
    }
    run_under(wrapper, &args, manifest)
}

/// A command's standard output; its failure fails the test, with its
/// standard error.
pub(crate) fn output(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The manifest is one osbuild itself would accept: every stage's options
/// valid against osbuild's reference schemas.
pub(crate) fn assert_valid_for_osbuild(manifest: &Value) {
    let errors = osbuild_schema::validate_manifest(manifest);
    assert!(errors.is_empty(), "not valid for osbuild: {errors:#?}");
}

/// Stage types that ran, per pipeline, from a `--json` result.
pub(crate) fn ran(result: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(log) = result["log"].as_object() {
        for (pipeline, stages) in log {
            for s in stages.as_array().into_iter().flatten() {
                out.push((
                    pipeline.clone(),
                    s["type"].as_str().unwrap_or_default().to_owned(),
                ));
            }
        }
    }
    out
}

#[allow(unused_imports)]
pub(crate) use kiln_testsupport::host::attachments_under;

#[allow(unused_imports)]
pub(crate) use kiln_testsupport::package_files;

/// A Debian 12 image request: the distribution's package set for the
/// image type plus `extra`, depsolved against a local mirror.
pub(crate) struct DebianImage {
    pub manifest: Value,
    /// (name, version) of the depsolved set.
    pub packages: Vec<(String, String)>,
    pub mirror: tempfile::TempDir,
    /// The mirror's sources.list line.
    pub source_line: String,
}

pub(crate) fn debian_image(image_type: &str, extra: &[&str], blueprint: Value) -> DebianImage {
    debian_image_with(image_type, extra, blueprint, &[])
}

/// As [`debian_image`], with packages made here (name, postinst script)
/// added to the mirror and to the image.
pub(crate) fn debian_image_with(
    image_type: &str,
    extra: &[&str],
    blueprint: Value,
    made: &[(&str, &str)],
) -> DebianImage {
    let mut images = debian_images(&[image_type], extra, &[], blueprint, made);
    let (_, manifest) = images.manifests.remove(0);
    DebianImage {
        manifest,
        packages: images.packages,
        mirror: images.mirror,
        source_line: images.source_line,
    }
}

/// Debian 12 images of several types from one package set: the union of
/// the types' package sets without `without`, plus `extra` and the
/// packages made here, each type's manifest written from that one set (so
/// their install stages are one stage, built once per store).
pub(crate) struct DebianImages {
    /// (image type, manifest), in the order asked.
    pub manifests: Vec<(String, Value)>,
    pub packages: Vec<(String, String)>,
    pub mirror: tempfile::TempDir,
    pub source_line: String,
}

pub(crate) fn debian_images(
    image_types: &[&str],
    extra: &[&str],
    without: &[&str],
    blueprint: Value,
    made: &[(&str, &str)],
) -> DebianImages {
    let catalog = kiln_distro::Catalog::embedded().unwrap();
    let distro = catalog.get("debian-12").unwrap();
    let (arch, arch_def) = distro.find_architecture("x86_64").unwrap();
    let mut names: Vec<String> = Vec::new();
    for t in image_types {
        for n in distro.packages(arch, t).unwrap() {
            if !names.contains(&n) && !without.contains(&n.as_str()) {
                names.push(n);
            }
        }
    }
    names.extend(extra.iter().map(|s| s.to_string()));
    let request = kiln_depsolve::Request {
        packages: names,
        essential: true,
        recommends: false,
    };
    // 1. Those packages (the host lists' versions), through apt, into a file:// mirror.
    let mirror = tempfile::tempdir().unwrap();
    let (repo, _) =
        kiln_testsupport::aptcache::debian_mirror(mirror.path(), &request.packages).unwrap();
    let mut request = request;
    for (name, postinst) in made {
        repo.add_with_postinst(name, "1.0", "", Some(postinst))
            .unwrap();
        request.packages.push(name.to_string());
    }
    if !made.is_empty() {
        repo.index().unwrap();
    }
    // 2. kiln's depsolve against the mirror, as the composer would.
    let cache = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let set = rt
        .block_on(kiln_depsolve::RepoSet::open(kiln_depsolve::RepoConfig {
            arch: arch_def.package_arch.clone(),
            sources: vec![repo.source_line().parse().unwrap()],
            cache_dir: cache.path().to_owned(),
            keyring: None,
        }))
        .unwrap();
    let solution = set.solve(&request).unwrap();
    let packages = package_files(&solution);
    let blueprint: kiln_api::customizations::Blueprint = serde_json::from_value(blueprint).unwrap();
    let customizations = kiln_manifests::customize::ImageCustomizations::from_blueprint(&blueprint);
    let manifests = image_types
        .iter()
        .map(|image_type| {
            let filename = distro
                .image_type(arch, image_type)
                .unwrap()
                .filename
                .clone();
            let manifest =
                kiln_manifests::generate::manifest(&kiln_manifests::generate::ImageRequest {
                    family: distro.family,
                    arch,
                    image_type,
                    filename: &filename,
                    source_epoch: distro.source_epoch,
                    packages: &packages,
                    customizations: &customizations,
                })
                .unwrap();
            (image_type.to_string(), manifest)
        })
        .collect();
    DebianImages {
        manifests,
        packages: solution
            .packages
            .iter()
            .map(|p| (p.name.clone(), p.version.clone()))
            .collect(),
        source_line: repo.source_line(),
        mirror,
    }
}
