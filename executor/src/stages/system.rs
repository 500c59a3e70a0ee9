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
            if kver.contains('/') || kver.is_empty() {
                return Err(format!("{kver:?} is not a kernel version"));
            }
            if !ctx.in_tree(&format!("/lib/modules/{kver}")).is_dir() {
                return Err(format!(
                    "kernel {kver} is not installed in the tree (no /lib/modules/{kver})"
                ));
            }
            let mut c = ctx.chroot("dracut")?;
            c.args(["--force", "--no-hostonly", "--kver", kver]);
            let list = |c: &mut Command, flag: &str, items: &[String]| {
                if !items.is_empty() {
                    c.arg(flag).arg(items.join(" "));
                }
            };
            list(&mut c, "--modules", &o.modules);
            list(&mut c, "--add", &o.add_modules);
            list(&mut c, "--omit", &o.omit_modules);
            list(&mut c, "--drivers", &o.drivers);
            list(&mut c, "--add-drivers", &o.add_drivers);
            list(&mut c, "--omit-drivers", &o.omit_drivers);
            list(&mut c, "--force-drivers", &o.force_drivers);
            list(&mut c, "--filesystems", &o.filesystems);
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
            c.arg(format!("/boot/initramfs-{kver}.img"));
            ctx.run(&mut c)?;
        }
        Ok(Value::Null)
    }
}
