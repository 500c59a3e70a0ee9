//! Stages that make disk images: the image file and its file systems,
//! written through loop devices the executor attaches.

use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

use super::Ctx;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TruncateOptions {
    filename: String,
    size: String,
}

pub fn truncate(ctx: &Ctx) -> Result<Value, String> {
    let o: TruncateOptions = ctx.options()?;
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
pub struct MkfsExt4Options {
    uuid: String,
    label: Option<String>,
    lazy_init: Option<bool>,
    metadata_csum_seed: Option<bool>,
    orphan_file: Option<bool>,
    verity: Option<bool>,
}

pub fn mkfs_ext4(ctx: &Ctx) -> Result<Value, String> {
    let o: MkfsExt4Options = ctx.options()?;
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
