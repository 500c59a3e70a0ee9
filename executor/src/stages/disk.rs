//! Stages that make disk images: the image file, its partition table and
//! its file systems, each written straight into the image file at its
//! partition's offset. No loop device and no mount: a file system is made
//! from a tree (`kiln.mkfs.ext4`), or empty (osbuild's `mkfs.*` stages),
//! by tools that take a file and an offset, inside the sandbox's user
//! namespace, so owners, modes and file capabilities land as the tree has
//! them.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

use super::nodes;
use super::{Ctx, DeviceArgs, Stage};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TruncateOptions {
    filename: String,
    size: String,
}

pub(super) struct Truncate;

impl Stage for Truncate {
    const NAME: &'static str = "org.osbuild.truncate";
    type Options = TruncateOptions;

    fn run(ctx: &Ctx, o: TruncateOptions) -> Result<Value, String> {
        if o.filename.split('/').any(|c| c == "..") {
            return Err(format!("{:?} leaves the tree", o.filename));
        }
        ctx.run(
            Command::new("truncate")
                .arg("--size")
                .arg(&o.size)
                .arg("--")
                .arg(ctx.in_tree(&o.filename)),
        )?;
        Ok(Value::Null)
    }
}

/// The device a file-system stage formats: the one named `device`.
pub(super) fn device(ctx: &Ctx) -> Result<&DeviceArgs, String> {
    ctx.args
        .devices
        .get("device")
        .ok_or_else(|| "the stage needs a device named \"device\"".to_owned())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MkfsExt4Options {
    uuid: String,
    label: Option<String>,
    lazy_init: Option<bool>,
    metadata_csum_seed: Option<bool>,
    orphan_file: Option<bool>,
    verity: Option<bool>,
}

/// mke2fs on the device's byte range; with `tree`, the file system is
/// filled from it (`-d`: owners, modes, extended attributes and hard links
/// as the tree has them, directories in name order).
///
/// Reproducible: the directory hash seed is the file system's uuid and
/// the root directory belongs to root, whoever runs mke2fs; with a
/// source epoch, libext2fs takes its clock from it (E2FSPROGS_FAKE_TIME:
/// the superblock's times, and the creation time of every inode).
fn mkfs_ext4(ctx: &Ctx, o: &MkfsExt4Options, tree: Option<&str>) -> Result<(), String> {
    let dev = device(ctx)?;
    let size = kib(dev)?;
    let mut c = Command::new("mkfs.ext4");
    c.args(["-q", "-F", "-U"]).arg(&o.uuid);
    if let Some(l) = &o.label {
        c.arg("-L").arg(l);
    }
    fake_time(ctx, &mut c);
    // nodiscard: discarding would punch holes into the image file.
    let mut ext = vec![
        format!("offset={}", dev.offset),
        "nodiscard".to_owned(),
        "root_owner=0:0".to_owned(),
    ];
    // A uuid other than the words mke2fs takes (`random`, `time`, `null`)
    // seeds the directory hashes too.
    if o.uuid.contains('-') {
        ext.push(format!("hash_seed={}", o.uuid));
    }
    if let Some(lazy) = o.lazy_init {
        let v = u8::from(lazy);
        ext.push(format!("lazy_itable_init={v},lazy_journal_init={v}"));
    }
    c.arg("-E").arg(ext.join(","));
    let mut features = Vec::new();
    for (on, name) in [
        (o.metadata_csum_seed, "metadata_csum_seed"),
        (o.orphan_file, "orphan_file"),
        (o.verity, "verity"),
    ] {
        if let Some(on) = on {
            features.push(if on {
                name.to_owned()
            } else {
                format!("^{name}")
            });
        }
    }
    if !features.is_empty() {
        c.arg("-O").arg(features.join(","));
    }
    if let Some(tree) = tree {
        c.arg("-d").arg(tree);
    }
    ctx.run(c.arg(&dev.file).arg(size))
}

/// The size argument of mke2fs and mkfs.fat: whole KiB of the device.
fn kib(dev: &DeviceArgs) -> Result<String, String> {
    let len = dev.bytes()?;
    if len < 1024 {
        return Err(format!(
            "the device is {len} bytes: too small for a file system"
        ));
    }
    Ok(format!("{}", len / 1024))
}

pub(super) struct MkfsExt4;

impl Stage for MkfsExt4 {
    const NAME: &'static str = "org.osbuild.mkfs.ext4";
    type Options = MkfsExt4Options;

    fn run(ctx: &Ctx, o: MkfsExt4Options) -> Result<Value, String> {
        mkfs_ext4(ctx, &o, None)?;
        Ok(Value::Null)
    }
}

/// kiln's ext4 stage: osbuild's `mkfs.ext4` options, and the file system
/// filled from the `tree` input as it is made, where osbuild would mount
/// the new file system and copy the tree into it.
pub(super) struct MkfsExt4Tree;

impl Stage for MkfsExt4Tree {
    const NAME: &'static str = "kiln.mkfs.ext4";
    type Options = MkfsExt4Options;

    fn run(ctx: &Ctx, o: MkfsExt4Options) -> Result<Value, String> {
        let tree = ctx.input("tree")?;
        mkfs_ext4(ctx, &o, Some(&tree.path))?;
        let mut nodes = nodes::find(std::path::Path::new(&tree.path))?;
        nodes::clamp_mtimes(&mut nodes, ctx.args.source_epoch);
        if !nodes.is_empty() {
            debugfs(ctx, &nodes::debugfs_script(&nodes))?;
            println!("{} device nodes made with debugfs", nodes.len());
        }
        if let Some(epoch) = ctx.args.source_epoch {
            let script = times_script(std::path::Path::new(&tree.path), epoch)?;
            debugfs(ctx, &script)?;
            println!("the file system's times set from the source epoch {epoch}");
        }
        Ok(Value::Null)
    }
}

/// libext2fs's clock (mke2fs's and debugfs's) at the source epoch.
fn fake_time(ctx: &Ctx, c: &mut Command) {
    if let Some(epoch) = ctx.args.source_epoch {
        c.env("E2FSPROGS_FAKE_TIME", epoch.to_string());
    }
}

/// A debugfs script giving every inode made from the tree the times the
/// tree would have after `kiln.reproducible`: its modification time
/// clamped to the epoch, its access time the same, and its change time the
/// epoch (mke2fs copies the change time the kernel gave the tree's file).
/// Names go in double quotes (a quote doubled); a name with a newline
/// cannot be written in a script and fails the stage.
fn times_script(tree: &std::path::Path, epoch: u64) -> Result<String, String> {
    use std::os::unix::fs::MetadataExt;
    let e = i64::try_from(epoch).map_err(|_| format!("source epoch {epoch}: too large"))?;
    let mut s = String::new();
    super::reproducible::each_entry(tree, &mut |path, meta| {
        let rel = path.strip_prefix(tree).map_err(|err| err.to_string())?;
        let name = rel
            .to_str()
            .ok_or_else(|| format!("{}: the name is not UTF-8", rel.display()))?;
        if name.contains('\n') {
            return Err(format!(
                "{name:?}: a name with a newline cannot be given to debugfs"
            ));
        }
        let quoted = format!("\"/{}\"", name.replace('"', "\"\""));
        let (m, _) = super::reproducible::clamp(meta.mtime(), meta.mtime_nsec(), e);
        s.push_str(&format!(
            "sif {quoted} mtime @{m}\nsif {quoted} atime @{m}\nsif {quoted} ctime @{e}\n"
        ));
        Ok(())
    })?;
    Ok(s)
}

/// Runs a debugfs script on the file system's byte range
/// (`FILE?offset=N`). debugfs exits 0 whatever its commands do, so
/// anything it says on standard error but its banner fails the stage.
fn debugfs(ctx: &Ctx, script: &str) -> Result<(), String> {
    let dev = device(ctx)?;
    if dev.file.contains('?') {
        return Err(format!(
            "{}: debugfs cannot open a file whose name has a '?'",
            dev.file
        ));
    }
    let script = super::scratch_file("debugfs script", script.as_bytes())?;
    let mut c = Command::new("debugfs");
    fake_time(ctx, &mut c);
    c.arg("-w")
        .arg("-f")
        .arg(script.path())
        .arg(format!("{}?offset={}", dev.file, dev.offset));
    let shown = format!("{c:?}");
    let out = c.output().map_err(|e| format!("{shown}: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("debugfs "))
        .collect();
    if !out.status.success() || !complaints.is_empty() {
        return Err(format!(
            "{shown} failed ({}): {}",
            out.status,
            complaints.join("; ")
        ));
    }
    Ok(())
}

/// A value that goes into an sfdisk script or a `qemu-img -o` list, where
/// a comma, quote or newline would start another field: letters, digits,
/// `-`, `.` and `:` only.
fn token<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if s.is_empty()
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':'))
    {
        return Err(serde::de::Error::custom(format!(
            "{s:?}: only letters, digits, '-', '.' and ':' are allowed"
        )));
    }
    Ok(s)
}

fn optional_token<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    token(d).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SfdiskOptions {
    #[serde(deserialize_with = "token")]
    uuid: String,
    label: TableLabel,
    #[serde(default)]
    partitions: Vec<SfdiskPartition>,
}

#[derive(Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
enum TableLabel {
    Mbr,
    Dos,
    Gpt,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SfdiskPartition {
    bootable: Option<bool>,
    #[serde(default, deserialize_with = "partition_name")]
    name: Option<String>,
    partnum: Option<u32>,
    size: Option<u64>,
    start: Option<u64>,
    #[serde(rename = "type", default, deserialize_with = "optional_token")]
    kind: Option<String>,
    #[serde(default, deserialize_with = "optional_token")]
    uuid: Option<String>,
    #[serde(default, deserialize_with = "gpt_attrs")]
    attrs: Option<Vec<u8>>,
}

/// A GPT partition name is written quoted: no quotes or control characters.
fn partition_name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    if s.chars().any(|c| c == '"' || c == '\\' || c.is_control()) {
        return Err(serde::de::Error::custom(format!(
            "{s:?}: a partition name cannot hold quotes, backslashes or control characters"
        )));
    }
    Ok(Some(s))
}

/// GPT attribute bits sfdisk can set: 0-2 by name, 48-63 (type-specific).
fn gpt_attrs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
    let bits = Vec::<u8>::deserialize(d)?;
    if let Some(b) = bits.iter().find(|b| !matches!(b, 0..=2 | 48..=63)) {
        return Err(serde::de::Error::custom(format!(
            "attribute bit {b}: only bits 0, 1, 2 and 48-63 can be set"
        )));
    }
    Ok(Some(bits))
}

fn attr_name(bit: u8) -> String {
    match bit {
        0 => "RequiredPartition".into(),
        1 => "NoBlockIOProtocol".into(),
        2 => "LegacyBIOSBootable".into(),
        n => format!("GUID:{n}"),
    }
}

/// The sfdisk script for a table; `device` (the image file) names
/// numbered partitions as sfdisk does: `disk.raw3`, `disk0p3`.
fn sfdisk_script(o: &SfdiskOptions, device: &str) -> Result<String, String> {
    let separator = if device.ends_with(|c: char| c.is_ascii_digit()) {
        "p"
    } else {
        ""
    };
    let gpt = o.label == TableLabel::Gpt;
    let mut script = format!(
        "label: {}\nlabel-id: {}\n",
        if gpt { "gpt" } else { "dos" },
        o.uuid
    );
    for (i, p) in o.partitions.iter().enumerate() {
        let mut fields = Vec::new();
        if let Some(s) = p.start {
            fields.push(format!("start={s}"));
        }
        if let Some(s) = p.size {
            fields.push(format!("size={s}"));
        }
        if let Some(t) = &p.kind {
            fields.push(format!("type={t}"));
        }
        if p.bootable == Some(true) {
            if gpt {
                return Err(format!(
                    "partitions[{i}]: 'bootable' is for dos tables (GPT uses attrs [2])"
                ));
            }
            fields.push("bootable".into());
        }
        let gpt_only = [
            ("uuid", p.uuid.is_some()),
            ("name", p.name.is_some()),
            ("attrs", p.attrs.is_some()),
        ];
        if let Some((field, _)) = gpt_only.iter().find(|(_, set)| *set && !gpt) {
            return Err(format!("partitions[{i}]: '{field}' is for GPT tables"));
        }
        if let Some(u) = &p.uuid {
            fields.push(format!("uuid={u}"));
        }
        if let Some(n) = &p.name {
            fields.push(format!("name=\"{n}\""));
        }
        if let Some(bits) = &p.attrs {
            let names: Vec<String> = bits.iter().map(|b| attr_name(*b)).collect();
            fields.push(format!("attrs=\"{}\"", names.join(",")));
        }
        // sfdisk takes a partition's number from the device name before ':'.
        if let Some(n) = p.partnum {
            script.push_str(&format!("{device}{separator}{n} : "));
        }
        script.push_str(&fields.join(", "));
        script.push('\n');
    }
    Ok(script)
}

pub(super) struct Sfdisk;

impl Stage for Sfdisk {
    const NAME: &'static str = "org.osbuild.sfdisk";
    type Options = SfdiskOptions;

    fn run(ctx: &Ctx, o: SfdiskOptions) -> Result<Value, String> {
        let dev = device(ctx)?;
        if dev.offset != 0 || dev.size != 0 {
            return Err(
                "a partition table goes on the whole image file: the device must \
                 have no start and no size"
                    .into(),
            );
        }
        let script = sfdisk_script(&o, &dev.file)?;
        print!("{script}");
        let mut child = Command::new("sfdisk")
            .arg("--quiet")
            .arg(&dev.file)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("sfdisk: {e}"))?;
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().ok_or("sfdisk: no stdin")?;
            stdin
                .write_all(script.as_bytes())
                .map_err(|e| format!("sfdisk: writing the script: {e}"))?;
        }
        let status = child.wait().map_err(|e| format!("sfdisk: {e}"))?;
        if !status.success() {
            return Err(format!("sfdisk {} failed: {status}", dev.file));
        }
        Ok(Value::Null)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MkfsFatOptions {
    #[serde(deserialize_with = "volume_id")]
    volid: String,
    #[serde(default, deserialize_with = "fat_label")]
    label: Option<String>,
    #[serde(rename = "fat-size", default, deserialize_with = "fat_size")]
    fat_size: Option<u8>,
    geometry: Option<Geometry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Geometry {
    heads: u32,
    #[serde(rename = "sectors-per-track")]
    sectors_per_track: u32,
}

/// A FAT volume id is 32 bits, written as 8 hex digits.
fn volume_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if s.is_empty() || s.len() > 8 || !s.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(serde::de::Error::custom(format!(
            "{s:?} is not a volume id (up to 8 hex digits)"
        )));
    }
    Ok(s)
}

fn fat_label<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    if s.chars().count() > 11 {
        return Err(serde::de::Error::custom(format!(
            "{s:?}: a FAT label has at most 11 characters"
        )));
    }
    Ok(Some(s))
}

fn fat_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u8>, D::Error> {
    match u8::deserialize(d)? {
        n @ (12 | 16 | 32) => Ok(Some(n)),
        n => Err(serde::de::Error::custom(format!(
            "fat-size {n}: one of 12, 16 or 32"
        ))),
    }
}

pub(super) struct MkfsFat;

impl Stage for MkfsFat {
    const NAME: &'static str = "org.osbuild.mkfs.fat";
    type Options = MkfsFatOptions;

    fn run(ctx: &Ctx, o: MkfsFatOptions) -> Result<Value, String> {
        let dev = device(ctx)?;
        let size = kib(dev)?;
        // mkfs.fat --offset sizes clusters by the whole file, not the
        // partition: the file system is made in a file of its own and
        // copied to its place.
        let scratch = tempfile::NamedTempFile::new().map_err(|e| format!("scratch file: {e}"))?;
        let mut c = Command::new("mkfs.fat");
        c.arg("-C").arg("-i").arg(&o.volid);
        if let Some(l) = &o.label {
            c.arg("-n").arg(l);
        }
        if let Some(f) = o.fat_size {
            c.arg("-F").arg(f.to_string());
        }
        if let Some(g) = &o.geometry {
            c.arg("-g")
                .arg(format!("{}/{}", g.heads, g.sectors_per_track));
        }
        let path = scratch.path().to_owned();
        // -C creates the file: it must not exist yet.
        drop(scratch);
        let made = ctx.run(c.arg(&path).arg(size));
        let copied = made.and_then(|()| copy_into(&path, dev));
        let _ = std::fs::remove_file(&path);
        copied?;
        Ok(Value::Null)
    }
}

/// Writes a file's bytes into the device's range of the image file.
fn copy_into(from: &std::path::Path, dev: &DeviceArgs) -> Result<(), String> {
    let err = |e: std::io::Error| format!("{} into {}: {e}", from.display(), dev.file);
    let mut src = File::open(from).map_err(err)?;
    let len = src.metadata().map_err(err)?.len();
    if dev.size > 0 && len > dev.size {
        return Err(format!(
            "the file system is {len} bytes, the device {} bytes",
            dev.size
        ));
    }
    let mut dst = File::options().write(true).open(&dev.file).map_err(err)?;
    dst.seek(SeekFrom::Start(dev.offset)).map_err(err)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = src.read(&mut buf).map_err(err)?;
        if n == 0 {
            break;
        }
        dst.write_all(&buf[..n]).map_err(err)?;
    }
    dst.sync_data().map_err(err)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct QemuOptions {
    filename: String,
    format: ImageFormat,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum ImageFormat {
    Qcow2 {
        compression: Option<bool>,
        #[serde(default, deserialize_with = "optional_token")]
        compat: Option<String>,
    },
    Vdi {},
    Vmdk {
        adapter_type: Option<VmdkAdapter>,
        compat6: Option<bool>,
        compression: Option<bool>,
        subformat: Option<VmdkSubformat>,
    },
    Vpc {
        force_size: Option<bool>,
        subformat: Option<VpcSubformat>,
    },
    Vhdx {},
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum VmdkAdapter {
    Ide,
    Lsilogic,
    Buslogic,
    #[serde(rename = "legacyESX")]
    LegacyEsx,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
enum VmdkSubformat {
    MonolithicSparse,
    MonolithicFlat,
    TwoGbMaxExtentSparse,
    TwoGbMaxExtentFlat,
    StreamOptimized,
}

impl VmdkAdapter {
    fn name(&self) -> &'static str {
        match self {
            VmdkAdapter::Ide => "ide",
            VmdkAdapter::Lsilogic => "lsilogic",
            VmdkAdapter::Buslogic => "buslogic",
            VmdkAdapter::LegacyEsx => "legacyESX",
        }
    }
}

impl VmdkSubformat {
    fn name(&self) -> &'static str {
        match self {
            VmdkSubformat::MonolithicSparse => "monolithicSparse",
            VmdkSubformat::MonolithicFlat => "monolithicFlat",
            VmdkSubformat::TwoGbMaxExtentSparse => "twoGbMaxExtentSparse",
            VmdkSubformat::TwoGbMaxExtentFlat => "twoGbMaxExtentFlat",
            VmdkSubformat::StreamOptimized => "streamOptimized",
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum VpcSubformat {
    Fixed,
    Dynamic,
}

/// `qemu-img convert` arguments after `-O TYPE`, with osbuild's defaults
/// (qcow2 and vmdk compressed, vpc fixed-size with force_size).
fn convert_args(format: &ImageFormat) -> (&'static str, Vec<String>) {
    let mut args = Vec::new();
    let kind = match format {
        ImageFormat::Qcow2 {
            compression,
            compat,
        } => {
            if compression.unwrap_or(true) {
                args.push("-c".into());
            }
            if let Some(c) = compat {
                args.extend(["-o".into(), format!("compat={c}")]);
            }
            "qcow2"
        }
        ImageFormat::Vdi {} => "vdi",
        ImageFormat::Vmdk {
            adapter_type,
            compat6,
            compression,
            subformat,
        } => {
            if compression.unwrap_or(true) {
                args.push("-c".into());
            }
            let mut opts = Vec::new();
            if let Some(a) = adapter_type {
                opts.push(format!("adapter_type={}", a.name()));
            }
            if compat6.unwrap_or(false) {
                opts.push("compat6".into());
            }
            if let Some(s) = subformat {
                opts.push(format!("subformat={}", s.name()));
            }
            if !opts.is_empty() {
                args.extend(["-o".into(), opts.join(",")]);
            }
            "vmdk"
        }
        ImageFormat::Vpc {
            force_size,
            subformat,
        } => {
            let sub = match subformat {
                Some(VpcSubformat::Dynamic) => "dynamic",
                _ => "fixed",
            };
            let mut opts = format!("subformat={sub}");
            if force_size.unwrap_or(true) {
                opts.push_str(",force_size");
            }
            args.extend(["-o".into(), opts]);
            "vpc"
        }
        ImageFormat::Vhdx {} => "vhdx",
    };
    (kind, args)
}

pub(super) struct Qemu;

impl Stage for Qemu {
    const NAME: &'static str = "org.osbuild.qemu";
    type Options = QemuOptions;

    fn run(ctx: &Ctx, o: QemuOptions) -> Result<Value, String> {
        let source = super::archive::input_file(ctx, "image")?;
        let target = super::archive::output_file(ctx, &o.filename)?;
        let (kind, args) = convert_args(&o.format);
        ctx.run(
            Command::new("qemu-img")
                .args(["convert", "-O", kind])
                .args(&args)
                .arg(&source)
                .arg(&target),
        )?;
        Ok(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_times_script_quotes_every_name_and_clamps_to_the_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path();
        std::fs::create_dir(tree.join("a b")).unwrap();
        std::fs::write(tree.join("a b/say \"hi\""), "x").unwrap();
        std::os::unix::fs::symlink("nowhere", tree.join("link")).unwrap();
        for (path, secs) in [("a b/say \"hi\"", 100), ("a b", 300), ("link", 5000)] {
            rustix::fs::utimensat(
                rustix::fs::CWD,
                tree.join(path),
                &rustix::fs::Timestamps {
                    last_access: rustix::fs::Timespec {
                        tv_sec: 0,
                        tv_nsec: 0,
                    },
                    last_modification: rustix::fs::Timespec {
                        tv_sec: secs,
                        tv_nsec: 0,
                    },
                },
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            )
            .unwrap();
        }
        let script = times_script(tree, 1000).unwrap();
        let mut lines: Vec<&str> = script.lines().collect();
        lines.sort();
        assert_eq!(
            lines,
            [
                "sif \"/a b\" atime @300",
                "sif \"/a b\" ctime @1000",
                "sif \"/a b\" mtime @300",
                "sif \"/a b/say \"\"hi\"\"\" atime @100",
                "sif \"/a b/say \"\"hi\"\"\" ctime @1000",
                "sif \"/a b/say \"\"hi\"\"\" mtime @100",
                "sif \"/link\" atime @1000",
                "sif \"/link\" ctime @1000",
                "sif \"/link\" mtime @1000",
            ]
        );
        std::fs::write(tree.join("new\nline"), "x").unwrap();
        assert!(times_script(tree, 1000).unwrap_err().contains("newline"));
    }
}
