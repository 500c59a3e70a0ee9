//! `kiln image diff A B`: why two artifacts of the same manifest differ.
//!
//! Two files, or two export directories (a `pxe` directory: kernel, initrd,
//! squashfs), compared file by file. Identical files are said to be so by
//! their sha256; a pair that differs is explained by diffoscope (Debian's
//! `diffoscope` or `diffoscope-minimal`), which looks inside archives,
//! squashfs, cpio and compressed files down to the lines that changed. A
//! disk image it cannot open without libguestfs is opened here first: a
//! qcow2 is converted to raw (`qemu-img`), a raw disk's partition table
//! read (`sfdisk --json`), the bytes before the first partition compared
//! (the boot loader), and each ext4 partition's superblock (`dumpe2fs -h`)
//! and files (`debugfs rdump`) handed to diffoscope as text and a directory.
//!
//! Exit status: 0 identical, 1 different, 2 the comparison failed.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use sha2::Digest;

#[derive(Args)]
pub(crate) struct ImageArgs {
    #[command(subcommand)]
    command: ImageCommand,
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Explain how two artifacts (files or export directories) of the same manifest differ.
    ///
    /// Exit status: 0 identical, 1 different, 2 the comparison failed.
    Diff(DiffArgs),
}

#[derive(Args)]
struct DiffArgs {
    /// The first artifact: a file, or a directory of them.
    a: PathBuf,
    /// The second artifact, of the same kind.
    b: PathBuf,
    /// Largest report diffoscope writes for one pair of files, in bytes.
    #[arg(long, default_value_t = 400_000)]
    max_report_bytes: u64,
}

pub(crate) fn run(args: ImageArgs) -> ExitCode {
    let ImageCommand::Diff(d) = args.command;
    let mut out = std::io::stdout().lock();
    match diff(&d, &mut out) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            let _ = out.flush();
            eprintln!("kiln: image diff: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Whether the two are identical; the explanation goes to `out`.
fn diff(d: &DiffArgs, out: &mut dyn Write) -> Result<bool> {
    match (d.a.is_dir(), d.b.is_dir()) {
        (true, true) => diff_dirs(d, out),
        (false, false) => diff_files(&d.a, &d.b, Path::new(""), d.max_report_bytes, out),
        _ => bail!(
            "{} and {}: one is a directory and the other is not",
            d.a.display(),
            d.b.display()
        ),
    }
}

/// Files below `dir`, by their path below it.
fn files_below(dir: &Path) -> Result<BTreeSet<PathBuf>> {
    let mut found = BTreeSet::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).with_context(|| d.display().to_string())? {
            let e = e?;
            if e.file_type()?.is_dir() {
                todo.push(e.path());
            } else {
                found.insert(e.path().strip_prefix(dir)?.to_owned());
            }
        }
    }
    Ok(found)
}

fn diff_dirs(d: &DiffArgs, out: &mut dyn Write) -> Result<bool> {
    let (fa, fb) = (files_below(&d.a)?, files_below(&d.b)?);
    let mut same = true;
    for only in fa.difference(&fb) {
        writeln!(out, "only in {}: {}", d.a.display(), only.display())?;
        same = false;
    }
    for only in fb.difference(&fa) {
        writeln!(out, "only in {}: {}", d.b.display(), only.display())?;
        same = false;
    }
    for rel in fa.intersection(&fb) {
        same &= diff_files(&d.a.join(rel), &d.b.join(rel), rel, d.max_report_bytes, out)?;
    }
    Ok(same)
}

fn sha256(path: &Path) -> Result<String> {
    let mut hash = sha2::Sha256::new();
    let mut f = std::fs::File::open(path).with_context(|| path.display().to_string())?;
    std::io::copy(&mut f, &mut hash).with_context(|| path.display().to_string())?;
    Ok(hex::encode(hash.finalize()))
}

fn diff_files(a: &Path, b: &Path, rel: &Path, max: u64, out: &mut dyn Write) -> Result<bool> {
    let name = if rel.as_os_str().is_empty() {
        a.file_name().map(PathBuf::from).unwrap_or_default()
    } else {
        rel.to_owned()
    };
    let (ha, hb) = (sha256(a)?, sha256(b)?);
    if ha == hb {
        writeln!(out, "identical: {} (sha256 {ha})", name.display())?;
        return Ok(true);
    }
    writeln!(
        out,
        "differ: {} (sha256 {ha} and {hb}, {} and {} bytes)",
        name.display(),
        std::fs::metadata(a)?.len(),
        std::fs::metadata(b)?.len()
    )?;
    let scratch = tempfile::tempdir()?;
    match disk_kind(a)? {
        Some(kind) => diff_disks(a, b, kind, scratch.path(), max, out)?,
        None => diffoscope(a, b, max, out)?,
    }
    Ok(false)
}

#[derive(Clone, Copy, PartialEq)]
enum DiskKind {
    Qcow2,
    Raw,
}

/// A qcow2 (its magic), a raw disk with a partition table (what sfdisk
/// reads), or neither.
fn disk_kind(path: &Path) -> Result<Option<DiskKind>> {
    let mut magic = [0u8; 4];
    let mut f = std::fs::File::open(path)?;
    if std::io::Read::read_exact(&mut f, &mut magic).is_ok() && &magic == b"QFI\xfb" {
        return Ok(Some(DiskKind::Qcow2));
    }
    Ok(partitions(path).ok().map(|_| DiskKind::Raw))
}

/// A partition of a raw disk: where it starts and its length, in bytes.
struct Partition {
    start: u64,
    size: u64,
}

fn partitions(path: &Path) -> Result<Vec<Partition>> {
    let text = output(Command::new("sfdisk").arg("--json").arg(path))?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    let table = &v["partitiontable"];
    let sector = table["sectorsize"].as_u64().unwrap_or(512);
    let parts = table["partitions"]
        .as_array()
        .ok_or_else(|| anyhow!("{}: no partitions", path.display()))?;
    parts
        .iter()
        .map(|p| {
            Ok(Partition {
                start: p["start"]
                    .as_u64()
                    .ok_or_else(|| anyhow!("a partition without a start"))?
                    * sector,
                size: p["size"]
                    .as_u64()
                    .ok_or_else(|| anyhow!("a partition without a size"))?
                    * sector,
            })
        })
        .collect()
}

fn diff_disks(
    a: &Path,
    b: &Path,
    kind: DiskKind,
    scratch: &Path,
    max: u64,
    out: &mut dyn Write,
) -> Result<()> {
    let (a, b) = if kind == DiskKind::Qcow2 {
        writeln!(out, "  (qcow2: compared as the raw disks qemu-img gives)")?;
        let raw = |from: &Path, name: &str| -> Result<PathBuf> {
            let to = scratch.join(name);
            output(
                Command::new("qemu-img")
                    .args(["convert", "-O", "raw"])
                    .arg(from)
                    .arg(&to),
            )?;
            Ok(to)
        };
        (raw(a, "a.raw")?, raw(b, "b.raw")?)
    } else {
        (a.to_owned(), b.to_owned())
    };
    let (pa, pb) = (partitions(&a)?, partitions(&b)?);
    let layout = |p: &[Partition]| p.iter().map(|p| (p.start, p.size)).collect::<Vec<_>>();
    if layout(&pa) != layout(&pb) {
        writeln!(
            out,
            "  partition tables differ: {:?} and {:?}",
            layout(&pa),
            layout(&pb)
        )?;
    }
    // The boot area: the partition table and what the boot loader put
    // before the first partition.
    let head = |p: &[Partition]| p.iter().map(|p| p.start).min().unwrap_or(0);
    if read_range(&a, 0, head(&pa))? != read_range(&b, 0, head(&pb))? {
        writeln!(
            out,
            "  the bytes before the first partition differ (partition table, boot loader)"
        )?;
    }
    for (i, (x, y)) in pa.iter().zip(&pb).enumerate() {
        let (fa, fb) = (
            scratch.join(format!("a{i}.img")),
            scratch.join(format!("b{i}.img")),
        );
        copy_range(&a, x, &fa)?;
        copy_range(&b, y, &fb)?;
        if sha256(&fa)? == sha256(&fb)? {
            writeln!(out, "  partition {}: identical", i + 1)?;
            continue;
        }
        writeln!(out, "  partition {}: differs", i + 1)?;
        let (sa, sb) = (superblock(&fa), superblock(&fb));
        let (Ok(sa), Ok(sb)) = (sa, sb) else {
            // Not ext4: diffoscope shows what it can of the bytes.
            diffoscope(&fa, &fb, max, out)?;
            continue;
        };
        let (ta, tb) = (
            scratch.join(format!("a{i}.superblock")),
            scratch.join(format!("b{i}.superblock")),
        );
        std::fs::write(&ta, sa)?;
        std::fs::write(&tb, sb)?;
        writeln!(
            out,
            "  partition {}: its ext4 superblock (dumpe2fs -h)",
            i + 1
        )?;
        diffoscope(&ta, &tb, max, out)?;
        let (da, db) = (
            scratch.join(format!("a{i}.files")),
            scratch.join(format!("b{i}.files")),
        );
        rdump(&fa, &da)?;
        rdump(&fb, &db)?;
        writeln!(out, "  partition {}: its files (debugfs rdump)", i + 1)?;
        diffoscope(&da, &db, max, out)?;
    }
    Ok(())
}

fn read_range(path: &Path, start: u64, len: u64) -> Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    f.take(len).read_to_end(&mut buf)?;
    Ok(buf)
}

/// The partition's bytes into a file of its own (sparse where the disk is).
fn copy_range(disk: &Path, p: &Partition, to: &Path) -> Result<()> {
    output(
        Command::new("dd")
            .arg(format!("if={}", disk.display()))
            .arg(format!("of={}", to.display()))
            .args([
                "bs=1M",
                "iflag=skip_bytes,count_bytes",
                "conv=sparse",
                "status=none",
            ])
            .arg(format!("skip={}", p.start))
            .arg(format!("count={}", p.size)),
    )
    .map(drop)
}

/// The superblock, as `dumpe2fs -h` prints it.
fn superblock(fs: &Path) -> Result<String> {
    output(Command::new("dumpe2fs").arg("-h").arg(fs))
}

fn rdump(fs: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    output(
        Command::new("debugfs")
            .arg("-R")
            .arg(format!("rdump / \"{}\"", to.display()))
            .arg(fs),
    )
    .map(drop)
}

fn diffoscope(a: &Path, b: &Path, max: u64, out: &mut dyn Write) -> Result<()> {
    let run = Command::new("diffoscope")
        .args([
            "--text",
            "-",
            "--no-progress",
            "--exclude-directory-metadata",
            "no",
        ])
        .arg("--max-report-size")
        .arg(max.to_string())
        .arg(a)
        .arg(b)
        .output();
    let o = match run {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("diffoscope is not installed (Debian: apt-get install diffoscope-minimal)")
        }
        Err(e) => return Err(e).context("diffoscope"),
    };
    // 0: no difference, 1: differences; anything else is its failure.
    match o.status.code() {
        Some(0) | Some(1) => {
            out.write_all(&o.stdout)?;
            Ok(())
        }
        _ => bail!(
            "diffoscope failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        ),
    }
}

fn output(cmd: &mut Command) -> Result<String> {
    let shown = format!("{cmd:?}");
    let o = cmd.output().with_context(|| shown.clone())?;
    if !o.status.success() {
        bail!("{shown}: {}", String::from_utf8_lossy(&o.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}
