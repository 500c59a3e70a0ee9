//! Stages that make disk images: the image file and its file systems,
//! written through loop devices the executor attaches.

use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

use super::{Ctx, Stage};

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
pub(super) fn device(ctx: &Ctx) -> Result<String, String> {
    ctx.args
        .devices
        .get("device")
        .cloned()
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

pub(super) struct MkfsExt4;

impl Stage for MkfsExt4 {
    const NAME: &'static str = "org.osbuild.mkfs.ext4";
    type Options = MkfsExt4Options;

    fn run(ctx: &Ctx, o: MkfsExt4Options) -> Result<Value, String> {
        let dev = device(ctx)?;
        let mut c = Command::new("mkfs.ext4");
        c.args(["-q", "-F", "-U"]).arg(&o.uuid);
        if let Some(l) = &o.label {
            c.arg("-L").arg(l);
        }
        let mut ext = Vec::new();
        if let Some(lazy) = o.lazy_init {
            let v = u8::from(lazy);
            ext.push(format!("lazy_itable_init={v},lazy_journal_init={v}"));
        }
        if !ext.is_empty() {
            c.arg("-E").arg(ext.join(","));
        }
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
        // SOURCE_DATE_EPOCH makes mke2fs's timestamps and hash seed repeatable.
        ctx.run(c.arg(&dev))?;
        Ok(Value::Null)
    }
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

/// The sfdisk script for a table; `device` names numbered partitions.
fn sfdisk_script(o: &SfdiskOptions, device: &str) -> Result<String, String> {
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
            script.push_str(&format!("{device}p{n} : "));
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
        let script = sfdisk_script(&o, &dev)?;
        print!("{script}");
        let mut child = Command::new("sfdisk")
            .arg("--quiet")
            .arg(&dev)
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
            return Err(format!("sfdisk {dev} failed: {status}"));
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
        let mut c = Command::new("mkfs.fat");
        // -I: the loop device is the file system, not a disk whose table matters.
        c.arg("-I").arg("-i").arg(&o.volid);
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
        ctx.run(c.arg(&dev))?;
        Ok(Value::Null)
    }
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
        let input = ctx.input("image")?;
        let [file] = input.files.as_slice() else {
            return Err(format!(
                "the image input must name exactly one file, it names {}",
                input.files.len()
            ));
        };
        if file.split('/').any(|c| c == "..") {
            return Err(format!("{file:?} leaves the input"));
        }
        let source = std::path::Path::new(&input.path).join(file.trim_start_matches('/'));
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
