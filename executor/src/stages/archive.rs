//! Stages that pack a tree input into one file of the output tree.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

use super::nodes::{self, Node, TarFlavour};
use super::{scratch_file, Ctx, Stage};

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

/// The one file input `name` names (an `org.osbuild.files` input of a
/// pipeline's file), as a path that stays inside the input.
pub(super) fn input_file(ctx: &Ctx, name: &str) -> Result<PathBuf, String> {
    let input = ctx.input(name)?;
    let [file] = input.files.as_slice() else {
        return Err(format!(
            "the {name} input must name exactly one file, it names {}",
            input.files.len()
        ));
    };
    if file.split('/').any(|c| c == "..") {
        return Err(format!("{file:?} leaves the input"));
    }
    Ok(Path::new(&input.path).join(file.trim_start_matches('/')))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct XzOptions {
    filename: String,
}

/// osbuild's `org.osbuild.xz`: the `file` input compressed with xz's
/// fastest preset (osbuild's choice: what it compresses, disk images and
/// archives of compressed files, gains little from more), in xz's
/// multi-threaded mode. At least two threads, whatever the CPUs: xz's
/// threaded output does not depend on the thread count, but its
/// single-threaded output differs, so every host gives the same bytes.
pub(super) struct Xz;

impl Stage for Xz {
    const NAME: &'static str = "org.osbuild.xz";
    type Options = XzOptions;

    fn run(ctx: &Ctx, o: XzOptions) -> Result<Value, String> {
        let source = input_file(ctx, "file")?;
        let target = output_file(ctx, &o.filename)?;
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .max(2);
        let input = File::open(&source).map_err(|e| format!("{}: {e}", source.display()))?;
        let output = File::create(&target).map_err(|e| format!("{}: {e}", target.display()))?;
        ctx.run(
            Command::new("xz")
                .args(["--stdout", "-0", &format!("--threads={threads}")])
                .stdin(input)
                .stdout(output),
        )?;
        Ok(Value::Null)
    }
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

/// GNU tar's pax options for archives that depend only on the tree.
pub(super) const PAX_REPRODUCIBLE: &str =
    "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime";

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
        // The names tar is given, from which it names the members.
        let names: Vec<String> = match (&o.paths, &o.root_node) {
            (Some(paths), _) => paths.clone(),
            (None, Some(RootNode::Omit)) => {
                let mut names: Vec<String> = std::fs::read_dir(&input)
                    .map_err(|e| format!("{input}: {e}"))?
                    .filter_map(|e| {
                        e.ok()
                            .map(|e| format!("./{}", e.file_name().to_string_lossy()))
                    })
                    .collect();
                names.sort();
                names
            }
            _ => vec![".".to_owned()],
        };
        let mut nodes = nodes::find(Path::new(&input))?;
        nodes::clamp_mtimes(&mut nodes, ctx.args.source_epoch);
        let members = member_names(&nodes, &names);
        let compressor = match o.compression.as_deref() {
            None | Some("auto") => None,
            Some("xz") => Some("xz"),
            Some("gzip") => Some("gzip"),
            Some("zstd") => Some("zstd"),
            Some(other) => {
                return Err(format!(
                    "compression {other:?} is not one of auto, xz, gzip, zstd"
                ))
            }
        };
        let mut c = Command::new("tar");
        c.arg(format!("--format={format}")).arg("--sort=name");
        // Extended attributes travel only in pax archives.
        let pax = matches!(o.format, TarFormat::Posix);
        if pax {
            // The same bytes from the same tree: no process id in the
            // extended headers' names, no access or change times (the
            // kernel's, not the tree's).
            c.arg(PAX_REPRODUCIBLE);
        }
        if let Some(e) = ctx.args.source_epoch {
            c.arg(format!("--mtime=@{e}")).arg("--clamp-mtime");
        }
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
        if members.is_empty() {
            // No device nodes: tar writes (and compresses) the archive.
            match compressor {
                None => c.arg("--auto-compress"),
                Some(z) => c.arg(format!("--{z}")),
            };
            c.arg("-cf").arg(&out).arg("-C").arg(&input);
            c.arg("--").args(&names);
            ctx.run(&mut c)?;
            return Ok(Value::Null);
        }
        // Device nodes: tar leaves their placeholders out, their device
        // entries are appended, and the archive is compressed after.
        if o.transform.is_some() {
            return Err(format!(
                "'transform' cannot rename the tree's device nodes ({} and others): leave it out",
                members[0].0
            ));
        }
        let flavour = match o.format {
            TarFormat::Gnu | TarFormat::Oldgnu => TarFlavour::Gnu,
            TarFormat::Posix => TarFlavour::Pax,
            TarFormat::Ustar => TarFlavour::Ustar,
            TarFormat::V7 => {
                return Err(format!(
                    "the v7 format cannot hold device nodes, and the tree has {}",
                    members[0].0
                ))
            }
        };
        let compressor = match compressor {
            Some(z) => Some(z),
            None => auto_compressor(&o.filename),
        };
        let plain = match compressor {
            None => out.clone(),
            Some(_) => partial(&out),
        };
        let _excluded = exclude_members(&mut c, &members)?;
        c.arg("-cf").arg(&plain).arg("-C").arg(&input);
        c.arg("--").args(&names);
        ctx.run(&mut c)?;
        append_nodes(ctx, &plain, flavour, &members)?;
        if let Some(z) = compressor {
            let compressed = compress(ctx, z, &plain, &out);
            let _ = std::fs::remove_file(&plain);
            compressed?;
        }
        Ok(Value::Null)
    }
}

/// `FILE.kiln-partial`: where an archive is written before it is
/// compressed to `FILE`.
pub(super) fn partial(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".kiln-partial");
    PathBuf::from(name)
}

/// The compressor GNU tar's `--auto-compress` picks for a file name.
fn auto_compressor(filename: &str) -> Option<&'static str> {
    let suffix = filename.rsplit_once('.').map_or("", |(_, s)| s);
    match suffix {
        "gz" | "tgz" | "taz" => Some("gzip"),
        "Z" | "taZ" => Some("compress"),
        "bz2" | "tbz" | "tbz2" | "tz2" => Some("bzip2"),
        "lz" => Some("lzip"),
        "lzma" | "tlz" => Some("lzma"),
        "lzo" => Some("lzop"),
        "xz" | "txz" => Some("xz"),
        "zst" | "tzst" => Some("zstd"),
        _ => None,
    }
}

/// Compresses `from` into `to` with `program` as a filter, as tar runs it
/// (gzip with `-n`: no name or time from the input file).
fn compress(ctx: &Ctx, program: &str, from: &Path, to: &Path) -> Result<(), String> {
    let input = File::open(from).map_err(|e| format!("{}: {e}", from.display()))?;
    let output = File::create(to).map_err(|e| format!("{}: {e}", to.display()))?;
    let mut c = Command::new(program);
    if program == "gzip" {
        c.arg("-n");
    }
    ctx.run(c.stdin(input).stdout(output))
}

/// The member names tar gives the tree's device placeholders when it is
/// given `names` (relative to the tree): `.` gives `./dev/null`, `dev/`
/// gives `dev/null`.
pub(super) fn member_names<'a>(nodes: &'a [Node], names: &[String]) -> Vec<(String, &'a Node)> {
    let mut out = Vec::new();
    for name in names {
        let given = name.trim_end_matches('/');
        let mut within = given;
        while let Some(rest) = within.strip_prefix("./") {
            within = rest;
        }
        let within = within.trim_start_matches('/');
        let within = if within == "." { "" } else { within };
        for node in nodes {
            let member = if within.is_empty() {
                format!(
                    "{}/{}",
                    if given.is_empty() { "." } else { given },
                    node.path
                )
            } else if node.path == within {
                given.to_owned()
            } else if let Some(rest) = node
                .path
                .strip_prefix(within)
                .filter(|r| r.starts_with('/'))
            {
                format!("{given}{rest}")
            } else {
                continue;
            };
            // tar strips a leading '/' from members.
            out.push((member.trim_start_matches('/').to_owned(), node));
        }
    }
    out
}

/// Has tar leave out the placeholders (exact member names); the list
/// file lives as long as the returned handle.
pub(super) fn exclude_members(
    c: &mut Command,
    members: &[(String, &Node)],
) -> Result<tempfile::NamedTempFile, String> {
    let names: String = members
        .iter()
        .map(|(name, _)| format!("{name}\n"))
        .collect();
    let list = scratch_file("exclusion list", names.as_bytes())?;
    c.args(["--anchored", "--no-wildcards", "--no-wildcards-match-slash"])
        .arg("--exclude-from")
        .arg(list.path());
    Ok(list)
}

/// Appends the device entries to an uncompressed archive (GNU tar's
/// `--concatenate` finds its end).
pub(super) fn append_nodes(
    ctx: &Ctx,
    archive: &Path,
    flavour: TarFlavour,
    members: &[(String, &Node)],
) -> Result<(), String> {
    let mut entries = nodes::tar_headers(flavour, members)?;
    entries.resize(entries.len() + 1024, 0);
    let devices = scratch_file("device entries", &entries)?;
    ctx.run(
        Command::new("tar")
            .arg("--concatenate")
            .arg("--file")
            .arg(archive)
            .arg(devices.path()),
    )
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
        // Device nodes: pseudo definitions in place of their
        // placeholders, which are excluded (by whole-name expressions, as
        // -regex makes every exclusion one).
        let nodes = nodes::find(Path::new(&source))?;
        // The lists live until mksquashfs has run.
        let mut _lists = None;
        if !nodes.is_empty() {
            let pseudo = scratch_file("pseudo files", nodes::squashfs_pseudo(&nodes).as_bytes())?;
            let excluded: String = nodes
                .iter()
                .map(|n| nodes::squashfs_exclude(n) + "\n")
                .collect();
            let excluded = scratch_file("exclusion list", excluded.as_bytes())?;
            c.arg("-pf")
                .arg(pseudo.path())
                .arg("-regex")
                .arg("-ef")
                .arg(excluded.path());
            _lists = Some((pseudo, excluded));
        } else if !o.exclude_paths.is_empty() {
            c.arg("-regex");
        }
        // -e takes every argument after it: it comes last.
        if !o.exclude_paths.is_empty() {
            c.arg("-e").args(&o.exclude_paths);
        }
        ctx.run(&mut c)?;
        Ok(Value::Null)
    }
}
