//! `kiln compose diff`: the packages two builds differ in, from their SBOMs.
//!
//! The SBOMs, not `/metadata`: they list what the install stages found in
//! each image's package database after the build, which is what the image
//! holds; `/metadata` is what the solver chose before anything was built.

use std::process::ExitCode;

use kiln_api::sbom::{ComposeSboms, SpdxDocument};
use kiln_sbom::PackageDiff;
use serde::Serialize;

use crate::compose::Output;
use crate::composer_api::Composer;

/// What `--output json` prints.
#[derive(Serialize)]
struct DiffOutput<'a> {
    old: &'a str,
    new: &'a str,
    image: usize,
    #[serde(flatten)]
    diff: PackageDiff,
}

/// The SBOM documents of image `image` of compose `id`.
async fn sboms(composer: &Composer, id: &str, image: usize) -> anyhow::Result<Vec<SpdxDocument>> {
    let path = format!("/composes/{id}/sboms");
    let answer: ComposeSboms = composer.get(&path).await?;
    let images = answer.items.len();
    let docs = answer.items.into_iter().nth(image).ok_or_else(|| {
        anyhow::anyhow!("compose {id} has {images} images, no image {image} (image)")
    })?;
    if docs.is_empty() {
        anyhow::bail!("compose {id} has no SBOM for image {image}: its build has not succeeded");
    }
    Ok(docs.into_iter().map(|s| s.sbom).collect())
}

pub(crate) async fn diff(
    composer: &Composer,
    output: Output,
    old: &str,
    new: &str,
    image: usize,
) -> anyhow::Result<ExitCode> {
    let (old_docs, new_docs) = (
        sboms(composer, old, image).await?,
        sboms(composer, new, image).await?,
    );
    let diff = kiln_sbom::diff(
        &old_docs.iter().collect::<Vec<_>>(),
        &new_docs.iter().collect::<Vec<_>>(),
    );
    match output {
        Output::Json => {
            let out = DiffOutput {
                old,
                new,
                image,
                diff,
            };
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        Output::Text => print!("{}", text(&diff)),
    }
    Ok(ExitCode::SUCCESS)
}

/// One line per package: `+` added, `-` removed, `~` changed (old -> new),
/// each with its architecture. The names come from the builds' package
/// databases: control characters, which could drive a terminal, become `?`.
fn text(d: &PackageDiff) -> String {
    let t = |s: &str| -> String { crate::term::shown(s).replace('\t', "?") };
    let mut out = String::new();
    for (sign, list) in [('+', &d.added), ('-', &d.removed)] {
        for p in list {
            out.push_str(&format!(
                "{sign} {} {} {}\n",
                t(&p.name),
                t(&p.version),
                t(&p.arch)
            ));
        }
    }
    for p in &d.changed {
        out.push_str(&format!(
            "~ {} {} -> {} {}\n",
            t(&p.name),
            t(&p.old),
            t(&p.new),
            t(&p.arch)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_sbom::{ChangedPackage, PackageVersion};

    #[test]
    fn one_line_per_package() {
        let d = PackageDiff {
            added: vec![PackageVersion {
                name: "zstd".into(),
                arch: "amd64".into(),
                version: "1.5.4+dfsg2-5".into(),
            }],
            removed: vec![PackageVersion {
                name: "less".into(),
                arch: "amd64".into(),
                version: "590-2".into(),
            }],
            changed: vec![ChangedPackage {
                name: "bash".into(),
                arch: "amd64".into(),
                old: "5.2-1".into(),
                new: "5.2-2".into(),
            }],
        };
        assert_eq!(
            text(&d),
            "+ zstd 1.5.4+dfsg2-5 amd64\n- less 590-2 amd64\n~ bash 5.2-1 -> 5.2-2 amd64\n"
        );
        assert_eq!(text(&PackageDiff::default()), "");
        let hostile = PackageDiff {
            added: vec![PackageVersion {
                name: "evil\u{1b}[2J".into(),
                arch: "amd64\n+ fake".into(),
                version: "1".into(),
            }],
            ..Default::default()
        };
        assert_eq!(text(&hostile), "+ evil?[2J 1 amd64?+ fake\n");
    }
}
