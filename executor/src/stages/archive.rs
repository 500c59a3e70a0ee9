//! Stages that pack a tree input into one file of the output tree.

use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

use super::{Ctx, Stage};

/// The single tree input an archive stage packs.
fn tree_input(ctx: &Ctx) -> Result<String, String> {
    Ok(ctx.input("tree")?.path.clone())
}

pub(super) fn output_file(ctx: &Ctx, filename: &str) -> Result<std::path::PathBuf, String> {
    if filename.is_empty() || filename.split('/').any(|c| c == "..") {
        return Err(format!("{filename:?} is not a file name inside the tree"));
    }
    Ok(ctx.in_tree(filename))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TarOptions {
    filename: String,
    #[serde(default = "gnu")]
    format: TarFormat,
    #[serde(default)]
    compression: Option<String>,
    acls: Option<bool>,
    selinux: Option<bool>,
    xattrs: Option<bool>,
    #[serde(rename = "root-node")]
    root_node: Option<RootNode>,
    paths: Option<Vec<String>>,
    #[serde(default)]
    sparse: bool,
    transform: Option<String>,
    #[serde(rename = "numeric-owner")]
    numeric_owner: Option<bool>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum TarFormat {
    Gnu,
    Oldgnu,
    Posix,
    Ustar,
    V7,
}

fn gnu() -> TarFormat {
    TarFormat::Gnu
}

#[derive(Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
enum RootNode {
    Include,
    Omit,
}

pub(super) struct Tar;

impl Stage for Tar {
    const NAME: &'static str = "org.osbuild.tar";
    type Options = TarOptions;

    fn run(ctx: &Ctx, o: TarOptions) -> Result<Value, String> {
        if o.root_node.is_some() && o.paths.is_some() {
            return Err("'root-node' and 'paths' exclude each other".into());
        }
        let input = tree_input(ctx)?;
        let out = output_file(ctx, &o.filename)?;
        let format = match o.format {
            TarFormat::Gnu => "gnu",
            TarFormat::Oldgnu => "oldgnu",
            TarFormat::Posix => "posix",
            TarFormat::Ustar => "ustar",
            TarFormat::V7 => "v7",
        };
        let mut c = Command::new("tar");
        c.arg(format!("--format={format}")).arg("--sort=name");
        match o.compression.as_deref() {
            None | Some("auto") => {
                c.arg("--auto-compress");
            }
            Some("xz") => {
                c.arg("--xz");
            }
            Some("gzip") => {
                c.arg("--gzip");
            }
            Some("zstd") => {
                c.arg("--zstd");
            }
            Some(other) => {
                return Err(format!(
                    "compression {other:?} is not one of auto, xz, gzip, zstd"
                ))
            }
        }
        // Extended attributes travel only in pax archives.
        let pax = matches!(o.format, TarFormat::Posix);
        if o.acls.unwrap_or(true) && pax {
            c.arg("--acls");
        }
        if o.selinux.unwrap_or(true) && pax {
            c.arg("--selinux");
        }
        if o.xattrs.unwrap_or(true) && pax {
            c.arg("--xattrs").arg("--xattrs-include=*");
        }
        if o.sparse {
            c.arg("--sparse");
        }
        if let Some(t) = &o.transform {
            c.arg("--transform").arg(t);
        }
        if o.numeric_owner == Some(true) {
            c.arg("--numeric-owner");
        }
        c.arg("-cf").arg(&out).arg("-C").arg(&input);
        match (&o.paths, &o.root_node) {
            (Some(paths), _) => {
                c.arg("--").args(paths);
            }
            (None, Some(RootNode::Omit)) => {
                let mut names: Vec<String> = std::fs::read_dir(&input)
                    .map_err(|e| format!("{input}: {e}"))?
                    .filter_map(|e| {
                        e.ok()
                            .map(|e| format!("./{}", e.file_name().to_string_lossy()))
                    })
                    .collect();
                names.sort();
                c.arg("--").args(names);
            }
            _ => {
                c.arg(".");
            }
        }
        ctx.run(&mut c)?;
        Ok(Value::Null)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SquashfsOptions {
    filename: String,
    source: Option<String>,
    #[serde(default)]
    exclude_paths: Vec<String>,
    compression: Option<Compression>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Compression {
    method: SquashMethod,
    options: Option<CompressionOptions>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum SquashMethod {
    Gzip,
    Lz4,
    Xz,
    Zstd,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CompressionOptions {
    bcj: Option<Bcj>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Bcj {
    X86,
    Arm,
    Armthumb,
    Powerpc,
    Sparc,
    Ia64,
}

pub(super) struct Squashfs;

impl Stage for Squashfs {
    const NAME: &'static str = "org.osbuild.squashfs";
    type Options = SquashfsOptions;

    fn run(ctx: &Ctx, o: SquashfsOptions) -> Result<Value, String> {
        let source = match &o.source {
            Some(url) => ctx.resolve(url)?.to_string_lossy().into_owned(),
            None => tree_input(ctx)?,
        };
        let out = output_file(ctx, &o.filename)?;
        let mut c = Command::new("mksquashfs");
        c.arg(&source)
            .arg(&out)
            .args(["-noappend", "-quiet", "-no-progress"]);
        if let Some(comp) = &o.compression {
            let method = match comp.method {
                SquashMethod::Gzip => "gzip",
                SquashMethod::Lz4 => "lz4",
                SquashMethod::Xz => "xz",
                SquashMethod::Zstd => "zstd",
            };
            c.arg("-comp").arg(method);
            if let Some(bcj) = comp.options.as_ref().and_then(|o| o.bcj) {
                let filter = match bcj {
                    Bcj::X86 => "x86",
                    Bcj::Arm => "arm",
                    Bcj::Armthumb => "armthumb",
                    Bcj::Powerpc => "powerpc",
                    Bcj::Sparc => "sparc",
                    Bcj::Ia64 => "ia64",
                };
                c.arg("-Xbcj").arg(filter);
            }
        }
        if !o.exclude_paths.is_empty() {
            c.arg("-regex").arg("-e").args(&o.exclude_paths);
        }
        ctx.run(&mut c)?;
        Ok(Value::Null)
    }
}
