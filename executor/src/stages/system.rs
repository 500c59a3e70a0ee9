//! systemd unit presets and the initramfs, both made by the tree's own
//! tools' rules: `systemctl --root` (offline) and `dracut` run in the tree.

use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

use super::{Ctx, Stage, TREE};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SystemdOptions {
    #[serde(default)]
    enabled_services: Vec<String>,
    #[serde(default)]
    disabled_services: Vec<String>,
    #[serde(default)]
    masked_services: Vec<String>,
    #[serde(default)]
    masked_generators: Vec<String>,
    default_target: Option<String>,
}

pub(super) struct Systemd;

impl Stage for Systemd {
    const NAME: &'static str = "org.osbuild.systemd";
    type Options = SystemdOptions;

    fn run(ctx: &Ctx, o: SystemdOptions) -> Result<Value, String> {
        let systemctl = |verb: &str, units: &[String]| -> Result<(), String> {
            if units.is_empty() {
                return Ok(());
            }
            ctx.run(
                Command::new("systemctl")
                    .args(["--root", TREE, verb, "--"])
                    .args(units),
            )
        };
        systemctl("enable", &o.enabled_services)?;
        systemctl("disable", &o.disabled_services)?;
        systemctl("mask", &o.masked_services)?;
        for g in &o.masked_generators {
            if g.contains('/') {
                return Err(format!("{g:?} is not a generator name"));
            }
            let dir = ctx.in_tree("/etc/systemd/system-generators");
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let link = dir.join(g);
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink("/dev/null", &link)
                .map_err(|e| format!("{}: {e}", link.display()))?;
        }
        if let Some(t) = &o.default_target {
            ctx.run(Command::new("systemctl").args(["--root", TREE, "set-default", "--", t]))?;
        }
        Ok(Value::Null)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DracutOptions {
    kernel: Vec<String>,
    compress: Option<String>,
    #[serde(default)]
    modules: Vec<String>,
    #[serde(default)]
    add_modules: Vec<String>,
    #[serde(default)]
    omit_modules: Vec<String>,
    #[serde(default)]
    drivers: Vec<String>,
    #[serde(default)]
    add_drivers: Vec<String>,
    #[serde(default)]
    omit_drivers: Vec<String>,
    #[serde(default)]
    force_drivers: Vec<String>,
    #[serde(default)]
    filesystems: Vec<String>,
    #[serde(default)]
    install: Vec<String>,
    #[serde(default)]
    early_microcode: bool,
    reproducible: Option<bool>,
}

pub(super) struct Dracut;

impl Stage for Dracut {
    const NAME: &'static str = "org.osbuild.dracut";
    type Options = DracutOptions;

    fn run(ctx: &Ctx, o: DracutOptions) -> Result<Value, String> {
        for kver in &o.kernel {
            check_kernel(kver, &ctx.in_tree(&format!("/lib/modules/{kver}")))?;
            let mut c = ctx.chroot("dracut")?;
            dracut_args(&mut c, kver, &o);
            c.arg(format!("/boot/initramfs-{kver}.img"));
            ctx.run(&mut c)?;
        }
        Ok(Value::Null)
    }
}

fn check_kernel(kver: &str, modules: &std::path::Path) -> Result<(), String> {
    if kver.contains('/') || kver.is_empty() {
        return Err(format!("{kver:?} is not a kernel version"));
    }
    if !modules.is_dir() {
        return Err(format!(
            "kernel {kver} is not installed (no /lib/modules/{kver})"
        ));
    }
    Ok(())
}

/// dracut's arguments for one kernel, from osbuild's dracut options.
fn dracut_args(c: &mut Command, kver: &str, o: &DracutOptions) {
    c.args(["--force", "--no-hostonly", "--kver", kver]);
    let list = |c: &mut Command, flag: &str, items: &[String]| {
        if !items.is_empty() {
            c.arg(flag).arg(items.join(" "));
        }
    };
    list(c, "--modules", &o.modules);
    list(c, "--add", &o.add_modules);
    list(c, "--omit", &o.omit_modules);
    list(c, "--drivers", &o.drivers);
    list(c, "--add-drivers", &o.add_drivers);
    list(c, "--omit-drivers", &o.omit_drivers);
    list(c, "--force-drivers", &o.force_drivers);
    list(c, "--filesystems", &o.filesystems);
    for f in &o.install {
        c.arg("--install").arg(f);
    }
    if let Some(z) = &o.compress {
        c.arg("--compress").arg(z);
    }
    c.arg(if o.early_microcode {
        "--early-microcode"
    } else {
        "--no-early-microcode"
    });
    if o.reproducible.unwrap_or(true) {
        c.arg("--reproducible");
    }
}

/// `kiln.dracut` (schema: `manifests/stages/kiln.dracut.meta.json`):
/// osbuild's dracut options for one kernel (`kernel`, a string), and
/// `filename`, where the initramfs goes; the rest is read as
/// `org.osbuild.dracut`'s options, unknown keys refused.
#[derive(Deserialize)]
#[serde(try_from = "serde_json::Map<String, Value>")]
pub(super) struct DracutBuildRootOptions {
    filename: String,
    kernel: String,
    dracut: DracutOptions,
}

fn take_string(m: &mut serde_json::Map<String, Value>, key: &str) -> Result<String, String> {
    match m.remove(key) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(format!("{key}: {other} is not a string")),
        None => Err(format!("missing field `{key}`")),
    }
}

impl TryFrom<serde_json::Map<String, Value>> for DracutBuildRootOptions {
    type Error = String;

    fn try_from(mut m: serde_json::Map<String, Value>) -> Result<Self, String> {
        let filename = take_string(&mut m, "filename")?;
        let kernel = take_string(&mut m, "kernel")?;
        m.insert("kernel".into(), Value::from(vec![kernel.clone()]));
        let dracut = serde_json::from_value(Value::Object(m)).map_err(|e| e.to_string())?;
        Ok(Self {
            filename,
            kernel,
            dracut,
        })
    }
}

/// The initramfs made by the build root's dracut (the system tree the
/// pipeline names as its `build`, read-only at `/`) into this pipeline's
/// tree: what `org.osbuild.dracut` does in place, as a pipeline of its own,
/// so that it runs beside the other pipelines made from the same tree
/// (squashing the root file system).
pub(super) struct DracutBuildRoot;

impl Stage for DracutBuildRoot {
    const NAME: &'static str = "kiln.dracut";
    type Options = DracutBuildRootOptions;

    fn run(ctx: &Ctx, o: DracutBuildRootOptions) -> Result<Value, String> {
        let mut c = ctx.build_root_tool("dracut")?;
        let out = super::archive::output_file(ctx, &o.filename)?;
        let kver = o.kernel;
        check_kernel(&kver, std::path::Path::new(&format!("/lib/modules/{kver}")))?;
        dracut_args(&mut c, &kver, &o.dracut);
        c.arg(out);
        ctx.run(&mut c)?;
        Ok(Value::Null)
    }
}
