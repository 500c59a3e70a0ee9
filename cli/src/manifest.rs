//! `kiln manifest`: osbuild v2 manifests.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

#[derive(Args)]
pub struct ManifestArgs {
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
}

pub fn run(args: ManifestArgs) -> anyhow::Result<ExitCode> {
    match args.command {
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
