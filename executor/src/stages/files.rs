//! Stages that write files of the tree: directories, copies, modes, owners
//! and the small configuration files (hostname, time zone, locale, fstab,
//! kernel command line).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use serde::Deserialize;
use serde_json::{json, Value};

use super::{Ctx, Stage};

fn io(path: &Path, e: std::io::Error) -> String {
    format!("{}: {e}", path.display())
}

fn write(path: &Path, content: &str) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
    }
    fs::write(path, content).map_err(|e| io(path, e))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MkdirOptions {
    #[serde(default)]
    paths: Vec<MkdirPath>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MkdirPath {
    path: String,
    mode: Option<u32>,
    #[serde(default)]
    parents: bool,
    #[serde(default)]
    exist_ok: bool,
}

pub(super) struct Mkdir;

impl Stage for Mkdir {
    const NAME: &'static str = "org.osbuild.mkdir";
    type Options = MkdirOptions;

    fn run(ctx: &Ctx, o: MkdirOptions) -> Result<Value, String> {
        for p in o.paths {
            let target = if p.path.contains("://") {
                ctx.resolve(&p.path)?
            } else {
                ctx.in_tree(&p.path)
            };
            if p.path.split('/').any(|c| c == "..") {
                return Err(format!("{:?}: '..' is not allowed", p.path));
            }
            let made = if p.parents {
                fs::create_dir_all(&target)
            } else {
                fs::create_dir(&target)
            };
            match made {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && p.exist_ok => {}
                Err(e) => return Err(io(&target, e)),
            }
            // osbuild's default mode is 0777 minus the umask (022).
            let mode = p.mode.unwrap_or(0o755);
            fs::set_permissions(&target, fs::Permissions::from_mode(mode))
                .map_err(|e| io(&target, e))?;
        }
        Ok(Value::Null)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CopyOptions {
    paths: Vec<CopyPath>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CopyPath {
    from: String,
    to: String,
    #[serde(default)]
    remove_destination: bool,
}

/// `org.osbuild.copy` (`Copy` would hide the prelude's trait here).
pub(super) struct CopyFiles;

impl Stage for CopyFiles {
    const NAME: &'static str = "org.osbuild.copy";
    type Options = CopyOptions;

    fn run(ctx: &Ctx, o: CopyOptions) -> Result<Value, String> {
        for p in o.paths {
            let from = ctx.resolve(&p.from)?;
            let to = ctx.resolve(&p.to)?;
            if p.remove_destination && to.is_file() {
                fs::remove_file(&to).map_err(|e| io(&to, e))?;
            }
            // A source ending in '/' means its contents, as with rsync.
            let mut src = from.into_os_string();
            if p.from.ends_with('/') {
                src.push("/.");
            }
            ctx.run(
                Command::new("cp")
                    .args(["--reflink=auto", "-a"])
                    .arg(&src)
                    .arg(&to),
            )?;
        }
        Ok(Value::Null)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ChmodOptions {
    #[serde(default)]
    items: BTreeMap<String, ChmodItem>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChmodItem {
    mode: String,
    #[serde(default)]
    recursive: bool,
}

pub(super) struct Chmod;

impl Stage for Chmod {
    const NAME: &'static str = "org.osbuild.chmod";
    type Options = ChmodOptions;

    fn run(ctx: &Ctx, o: ChmodOptions) -> Result<Value, String> {
        for (path, item) in o.items {
            let mut c = Command::new("chmod");
            if item.recursive {
                c.arg("-R");
            }
            ctx.run(c.arg(&item.mode).arg("--").arg(ctx.in_tree(&path)))?;
        }
        Ok(Value::Null)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ChownOptions {
    #[serde(default)]
    items: BTreeMap<String, ChownItem>,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum Id {
    Name(String),
    Number(u32),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChownItem {
    user: Option<Id>,
    group: Option<Id>,
    #[serde(default)]
    recursive: bool,
}

/// Looks a name up in the tree's `/etc/passwd` or `/etc/group`.
pub(super) fn lookup_id(ctx: &Ctx, db: &str, id: &Id) -> Result<u32, String> {
    match id {
        Id::Number(n) => Ok(*n),
        Id::Name(name) => {
            let path = ctx.in_tree(db);
            let text = fs::read_to_string(&path).map_err(|e| io(&path, e))?;
            text.lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.first() == Some(&name.as_str()))
                .and_then(|f| f.get(2).and_then(|n| n.parse().ok()))
                .ok_or_else(|| format!("{name:?} is not in the tree's {db}"))
        }
    }
}

pub(super) struct Chown;

impl Stage for Chown {
    const NAME: &'static str = "org.osbuild.chown";
    type Options = ChownOptions;

    fn run(ctx: &Ctx, o: ChownOptions) -> Result<Value, String> {
        for (path, item) in o.items {
            let user = item
                .user
                .as_ref()
                .map(|u| lookup_id(ctx, "/etc/passwd", u))
                .transpose()?;
            let group = item
                .group
                .as_ref()
                .map(|g| lookup_id(ctx, "/etc/group", g))
                .transpose()?;
            let spec = format!(
                "{}:{}",
                user.map(|u| u.to_string()).unwrap_or_default(),
                group.map(|g| g.to_string()).unwrap_or_default()
            );
            let mut c = Command::new("chown");
            if item.recursive {
                c.arg("-R");
            }
            ctx.run(
                c.arg("--no-dereference")
                    .arg(spec)
                    .arg("--")
                    .arg(ctx.in_tree(&path)),
            )?;
        }
        Ok(Value::Null)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HostnameOptions {
    hostname: String,
}

pub(super) struct Hostname;

impl Stage for Hostname {
    const NAME: &'static str = "org.osbuild.hostname";
    type Options = HostnameOptions;

    fn run(ctx: &Ctx, o: HostnameOptions) -> Result<Value, String> {
        write(&ctx.in_tree("/etc/hostname"), &format!("{}\n", o.hostname))?;
        Ok(Value::Null)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TimezoneOptions {
    zone: String,
}

pub(super) struct Timezone;

impl Stage for Timezone {
    const NAME: &'static str = "org.osbuild.timezone";
    type Options = TimezoneOptions;

    fn run(ctx: &Ctx, o: TimezoneOptions) -> Result<Value, String> {
        if o.zone.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(format!("{:?} is not a time zone name", o.zone));
        }
        let zoneinfo = format!("/usr/share/zoneinfo/{}", o.zone);
        if !ctx.in_tree(&zoneinfo).exists() {
            return Err(format!(
                "time zone {:?} is not in the tree ({zoneinfo} is missing: is tzdata installed?)",
                o.zone
            ));
        }
        let localtime = ctx.in_tree("/etc/localtime");
        let _ = fs::remove_file(&localtime);
        std::os::unix::fs::symlink(format!("..{zoneinfo}"), &localtime)
            .map_err(|e| io(&localtime, e))?;
        // Debian also reads the zone's name from /etc/timezone.
        if ctx.in_tree("/etc/debian_version").exists() {
            write(&ctx.in_tree("/etc/timezone"), &format!("{}\n", o.zone))?;
        }
        Ok(Value::Null)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LocaleOptions {
    language: String,
}

pub(super) struct Locale;

impl Stage for Locale {
    const NAME: &'static str = "org.osbuild.locale";
    type Options = LocaleOptions;

    fn run(ctx: &Ctx, o: LocaleOptions) -> Result<Value, String> {
        let line = format!("LANG={}\n", o.language);
        write(&ctx.in_tree("/etc/locale.conf"), &line)?;
        if ctx.in_tree("/etc/debian_version").exists() {
            write(&ctx.in_tree("/etc/default/locale"), &line)?;
        }
        Ok(Value::Null)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FstabOptions {
    filesystems: Vec<Filesystem>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Filesystem {
    device: Option<String>,
    uuid: Option<String>,
    label: Option<String>,
    partlabel: Option<String>,
    path: String,
    vfs_type: Option<String>,
    options: Option<String>,
    freq: Option<u32>,
    passno: Option<u32>,
}

pub(super) struct Fstab;

impl Stage for Fstab {
    const NAME: &'static str = "org.osbuild.fstab";
    type Options = FstabOptions;

    fn run(ctx: &Ctx, o: FstabOptions) -> Result<Value, String> {
        let mut out = String::new();
        for fs in o.filesystems {
            let source = match (&fs.device, &fs.uuid, &fs.label, &fs.partlabel) {
                (Some(d), _, _, _) => d.clone(),
                (_, Some(u), _, _) => format!("UUID={u}"),
                (_, _, Some(l), _) => format!("LABEL={l}"),
                (_, _, _, Some(p)) => format!("PARTLABEL={p}"),
                _ => {
                    return Err(format!(
                        "file system for {:?} names no device, uuid, label or partlabel",
                        fs.path
                    ))
                }
            };
            out.push_str(&format!(
                "{source}\t{}\t{}\t{}\t{} {}\n",
                fs.path,
                fs.vfs_type.as_deref().unwrap_or("none"),
                fs.options.as_deref().unwrap_or("defaults"),
                fs.freq.unwrap_or(0),
                fs.passno.unwrap_or(0)
            ));
        }
        write(&ctx.in_tree("/etc/fstab"), &out)?;
        Ok(Value::Null)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KernelCmdlineOptions {
    root_fs_uuid: Option<String>,
    #[serde(default)]
    kernel_opts: String,
    kernel_cmdline_size: Option<u32>,
}

pub(super) struct KernelCmdline;

impl Stage for KernelCmdline {
    const NAME: &'static str = "org.osbuild.kernel-cmdline";
    type Options = KernelCmdlineOptions;

    fn run(ctx: &Ctx, o: KernelCmdlineOptions) -> Result<Value, String> {
        let mut line = String::new();
        if let Some(uuid) = &o.root_fs_uuid {
            line.push_str(&format!("root=UUID={uuid}"));
        }
        if !o.kernel_opts.is_empty() {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(&o.kernel_opts);
        }
        if let Some(max) = o.kernel_cmdline_size {
            if line.len() > max as usize {
                return Err(format!(
                    "the command line is {} bytes, over kernel_cmdline_size {max}",
                    line.len()
                ));
            }
        }
        write(&ctx.in_tree("/etc/kernel/cmdline"), &format!("{line}\n"))?;
        Ok(json!({}))
    }
}
