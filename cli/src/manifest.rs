//! `kiln manifest`: osbuild v2 manifests.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use kiln_api::customizations::Blueprint;
use kiln_api::validate::{check_oci_applies, validate_blueprint, Family};
use kiln_depsolve::Request;
use kiln_distro::Catalog;
use kiln_manifests::customize::ImageCustomizations;
use kiln_manifests::generate::{self, ImageRequest, PackageFile};

#[derive(Args)]
pub(crate) struct ManifestArgs {
    #[command(subcommand)]
    command: ManifestCommand,
}

#[derive(Subcommand)]
enum ManifestCommand {
    /// Print a manifest with the id of every stage, as `osbuild --inspect`
    /// does: pipeline references (build pipelines, pipeline inputs) become
    /// ids. Exits 2 for a manifest that cannot be read, naming the place.
    Inspect {
        /// The manifest file, or `-` for standard input.
        file: PathBuf,
    },
    /// Print the manifest for an image: depsolve the image type's packages
    /// and the blueprint's (same source syntax as `kiln depsolve`), then
    /// write the pipelines. Exits 2 when the packages cannot be installed.
    Generate(GenerateArgs),
}

#[derive(Args)]
pub(crate) struct GenerateArgs {
    /// Distribution, as `GET /distributions` lists it (e.g. debian-12).
    #[arg(long)]
    distribution: String,
    /// Image architecture (x86_64) or its package name (amd64).
    #[arg(long)]
    arch: String,
    /// Image type (tar, pxe, disk, oci).
    #[arg(long)]
    image_type: String,
    /// Blueprint file (TOML, or JSON when named *.json).
    #[arg(long)]
    blueprint: Option<PathBuf>,
    /// Repository lines as for `kiln depsolve`; default: the distribution's.
    #[arg(long = "source")]
    sources: Vec<String>,
    /// Keyring for sources without signed-by=.
    #[arg(long, default_value = crate::depsolve::DEBIAN_KEYRING)]
    keyring: PathBuf,
    /// Metadata cache directory.
    #[arg(long, env = "KILN_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// A directory of distribution files replacing the built-in ones.
    #[arg(long)]
    distributions_dir: Option<PathBuf>,
}

pub(crate) async fn run(args: ManifestArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        ManifestCommand::Generate(g) => generate(g).await,
        ManifestCommand::Inspect { file } => {
            let text = if file.as_os_str() == "-" {
                let mut s = String::new();
                std::io::stdin()
                    .read_to_string(&mut s)
                    .context("reading standard input")?;
                s
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?
            };
            let manifest: serde_json::Value = match serde_json::from_str(&text) {
                Ok(v) => v,
                Err(e) => {
                    eprintln!("kiln: {}: not JSON: {e}", file.display());
                    return Ok(ExitCode::from(2));
                }
            };
            match kiln_manifests::inspect(&manifest) {
                Ok(out) => {
                    println!("{}", serde_json::to_string_pretty(&out)?);
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("kiln: {}: {e}", file.display());
                    Ok(ExitCode::from(2))
                }
            }
        }
    }
}

pub(crate) fn read_blueprint(path: &std::path::Path) -> anyhow::Result<Blueprint> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).with_context(|| format!("{}: not a blueprint", path.display()))
    } else {
        toml::from_str(&text).with_context(|| format!("{}: not a blueprint", path.display()))
    }
}

async fn generate(args: GenerateArgs) -> anyhow::Result<ExitCode> {
    let catalog = match &args.distributions_dir {
        Some(d) => Catalog::from_dir(d)?,
        None => Catalog::embedded()?,
    };
    let distro = catalog.get(&args.distribution).ok_or_else(|| {
        anyhow::anyhow!(
            "unknown distribution {:?}; known: {}",
            args.distribution,
            catalog.names().join(", ")
        )
    })?;
    let (arch, arch_def) = distro
        .find_architecture(&args.arch)
        .ok_or_else(|| anyhow::anyhow!("{} has no architecture {:?}", distro.name, args.arch))?;
    let mut packages = distro.packages(arch, &args.image_type).ok_or_else(|| {
        anyhow::anyhow!(
            "{} has no image type {:?} for {arch}",
            distro.name,
            args.image_type
        )
    })?;
    let blueprint = match &args.blueprint {
        Some(p) => read_blueprint(p)?,
        None => Blueprint {
            name: "default".into(),
            ..Default::default()
        },
    };
    validate_blueprint(&blueprint, "blueprint", distro.family)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    check_oci_applies(
        "blueprint.customizations.oci",
        blueprint
            .customizations
            .as_ref()
            .and_then(|c| c.oci.as_ref()),
        kiln_manifests::generate::base(&args.image_type) == "oci",
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    for (list, name) in [
        (&blueprint.packages, "packages"),
        (&blueprint.modules, "modules"),
    ] {
        for (i, p) in list.iter().flatten().enumerate() {
            packages.push(
                p.request(&format!("blueprint.{name}[{i}].version"))
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
            );
        }
    }
    let customizations = ImageCustomizations::from_blueprint(&blueprint);
    let sources = if args.sources.is_empty() {
        distro.source_lines(arch)
    } else {
        args.sources.clone()
    };
    let request = Request {
        packages,
        essential: distro.family == Family::Debian,
        recommends: false,
    };
    let cache = args
        .cache_dir
        .clone()
        .unwrap_or_else(crate::depsolve::default_cache_dir);
    let solution = match crate::depsolve::solve(
        &sources,
        &arch_def.package_arch,
        &args.keyring,
        cache,
        &request,
    )
    .await?
    {
        Ok(s) => s,
        Err(problems) => return Ok(crate::depsolve::unsolvable(&problems)),
    };
    let files: Vec<PackageFile> = solution
        .packages
        .iter()
        .map(|p| PackageFile::from(&p.depsolved(distro.family)))
        .collect();
    let filename = distro
        .image_type(arch, &args.image_type)
        .map(|t| t.filename.clone())
        .unwrap_or_default();
    let manifest = generate::manifest(&ImageRequest {
        family: distro.family,
        arch,
        image_type: &args.image_type,
        filename: &filename,
        source_epoch: blueprint.source_epoch.unwrap_or(distro.source_epoch),
        packages: &files,
        customizations: &customizations,
    })?;
    println!("{}", serde_json::to_string_pretty(&manifest)?);
    Ok(ExitCode::SUCCESS)
}
